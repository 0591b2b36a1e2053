//! `iemctl faults`: the ledger of open faults, as the daemon last recorded it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use iemd::lifecycle::{self, Fault, Ledger, LedgerState};
use iemd::source::checkpoint::{CHECKPOINT_FILE, CheckpointStore};

/// List the faults open on this node: each tracked fault (a catalog event with lifecycle rules,
/// or one that another event resolves) not resolved yet, with its resource, when it was raised,
/// how often it was seen, its escalations and whether it is still held down. Read from the
/// state directory (the checkpoints, where the ledger is recorded with the source positions),
/// so it shows what the daemon has made durable; a running daemon is not disturbed.
///
/// Example:
///   iemctl faults /var/lib/iemd --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The daemon's state directory (`state_dir` in its config).
    #[arg(default_value = "/var/lib/iemd")]
    state_dir: PathBuf,
    /// One JSON array of the open faults instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Opening the store would create a missing directory: a typo must not.
    if !args.state_dir.join(CHECKPOINT_FILE).exists() {
        anyhow::bail!(
            "{} has no {CHECKPOINT_FILE}: not an iemd state directory, or iemd has not run yet",
            args.state_dir.display()
        );
    }
    let store = CheckpointStore::open(&args.state_dir)
        .with_context(|| format!("cannot read {}", args.state_dir.display()))?;
    let state = match store.stage(lifecycle::STAGE) {
        Some(value) => Ledger::parse(value)
            .with_context(|| format!("cannot read the ledger in {}", store.path().display()))?,
        None => LedgerState::default(),
    };
    let now = chrono::Utc::now().timestamp_millis();
    if args.json {
        let rows: Vec<serde_json::Value> = state.faults.iter().map(|f| row(f, now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&state, now));
    }
    Ok(ExitCode::SUCCESS)
}

/// One fault for `--json`.
fn row(f: &Fault, now_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "fault_id": f.alert.id,
        "code": f.alert.code,
        "family": f.family.to_string(),
        "component": f.alert.component.as_ref().and_then(|n| n.name.as_deref()),
        "event": f.alert.event.as_ref().and_then(|n| n.name.as_deref()),
        "resource": f.resource,
        "opened": f.alert.time,
        "age_secs": age_secs(f, now_ms),
        "count": f.count,
        "escalations": f.escalations,
        "held": f.held_until_ms.is_some(),
        "message": f.alert.message,
    })
}

fn age_secs(f: &Fault, now_ms: i64) -> u64 {
    u64::try_from(now_ms - f.opened_ms).unwrap_or(0) / 1000
}

fn table(state: &LedgerState, now_ms: i64) -> String {
    if state.faults.is_empty() {
        return "no open faults\n".into();
    }
    let mut out = format!(
        "{:<12} {:<24} {:<25} {:>8} {:>7} {:>4}  {}\n",
        "CODE", "RESOURCE", "OPENED", "AGE", "COUNT", "ESC", "FAULT ID"
    );
    for f in &state.faults {
        let held = if f.held_until_ms.is_some() {
            " (held)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<12} {:<24} {:<25} {:>7}s {:>7} {:>4}  {}{held}\n",
            f.alert.code.as_deref().unwrap_or("-"),
            format!("{}={}", f.resource.kind, f.resource.id),
            f.alert.time,
            age_secs(f, now_ms),
            f.count,
            f.escalations,
            f.alert.id,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use iemd::alert::LineSource;
    use iemd::catalog::Catalog;
    use iemd::catalog::decode::{Clock, Decoder};

    #[test]
    fn a_table_row_per_open_fault() {
        let catalog = Catalog::builtin();
        let mut stage = lifecycle::Lifecycle::new(&catalog, None).unwrap();
        let line = "Nov 21 22:50:01 node1 cortx-ha[7]: IEC:WS0080010001:lost. Extra Info: host=vm-1; status=lost;";
        let source = LineSource {
            kind: iemd::alert::OriginKind::File,
            path: Some("/var/log/messages"),
            offset: Some(0),
            fingerprint: 1,
            truncated: false,
        };
        let alert = Decoder::new(&catalog)
            .decode(line.as_bytes(), &source, &Clock::now(chrono_tz::UTC))
            .unwrap();
        let id = alert.id.clone();
        stage.observe(alert, 1_000, &mut Vec::new());
        let state = stage.live();
        let text = table(&state, 61_000);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[0].starts_with("CODE"), "{text}");
        assert!(rows[1].starts_with("WS0080010001 host=vm-1"), "{text}");
        assert!(rows[1].contains("     60s"), "{text}");
        assert!(rows[1].ends_with(&id), "{text}");
        assert_eq!(row(&state.faults[0], 61_000)["age_secs"], 60);
        assert_eq!(table(&LedgerState::default(), 0), "no open faults\n");
    }
}
