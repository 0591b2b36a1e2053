//! `iemctl replay`: list (and optionally re-publish) the records of a spool directory.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use iemd::spool::Record;
use iemd::spool::inspect::{Entry, RecordState, inspect};

/// Lists the alerts in a spool directory, read-only; works while the agent runs or is stopped.
///
/// Each record is printed with its sequence number, state (pending: not yet confirmed by the
/// broker; acked: confirmed), spool time and the alert. Damaged regions are reported on stderr
/// with their segment and offset, and listing carries on (exit status 2 when any were found).
///
/// Example: re-send what the agent has not delivered yet, through the broker of its config:
///
///     iemctl replay /var/lib/iemd/spool --pending --publish --config /etc/iemd/iemd.toml
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The spool directory (`[spool] dir` in the daemon's config).
    spool_dir: PathBuf,
    /// Only records not yet confirmed by the broker (the default).
    #[arg(long, conflicts_with = "all")]
    pending: bool,
    /// Acked records too.
    #[arg(long)]
    all: bool,
    /// Start at this sequence number.
    #[arg(long, value_name = "SEQ")]
    from: Option<u64>,
    /// One JSON object per line: {"seq", "state", "time", "alert"}.
    #[arg(long)]
    json: bool,
    /// Re-send the selected records through the broker configured in --config, with confirms.
    /// The spool itself is never modified.
    #[arg(long, requires = "config")]
    publish: bool,
    /// The daemon's TOML configuration (only its [broker] section is used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let entries = inspect(&args.spool_dir)
        .with_context(|| format!("cannot read spool {}", args.spool_dir.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut damaged = false;
    let mut selected = Vec::new();
    for entry in entries {
        match entry? {
            Entry::Corrupt {
                segment,
                offset,
                len,
                reason,
            } => {
                damaged = true;
                eprintln!(
                    "iemctl: damaged spool data in {} offset {offset} ({len} bytes): {reason}",
                    segment.display()
                );
            }
            Entry::Record {
                seq,
                time_ms,
                state,
                payload,
                ..
            } => {
                if (!args.all && state == RecordState::Acked) || args.from.is_some_and(|f| seq < f)
                {
                    continue;
                }
                let alert: serde_json::Value =
                    serde_json::from_slice(&payload).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&payload).into())
                    });
                let state_word = match state {
                    RecordState::Pending => "pending",
                    RecordState::Acked => "acked",
                };
                if args.json {
                    let line = serde_json::json!({"seq": seq, "state": state_word, "time": time_text(time_ms), "alert": alert});
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "{seq} {state_word} {} {alert}", time_text(time_ms))?;
                }
                if args.publish {
                    selected.push(Record {
                        seq,
                        time_ms,
                        payload,
                    });
                }
            }
        }
    }
    out.flush()?;
    if let (true, Some(path)) = (args.publish, &args.config) {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: iemd::config::Config =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let tty = std::io::stderr().is_terminal();
        let rt = tokio::runtime::Runtime::new()?;
        let report = rt.block_on(iemd::publish::send_records(
            &config.broker,
            &selected,
            |done, total| {
                if tty {
                    eprint!("\rpublished {done}/{total}");
                }
            },
        ))?;
        if tty {
            eprintln!();
        }
        eprintln!(
            "iemctl: {} delivered, {} not delivered{}",
            report.delivered,
            report.failed.len(),
            if report.failed.is_empty() {
                String::new()
            } else {
                format!(" (seq {:?})", report.failed)
            }
        );
        if !report.failed.is_empty() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(if damaged {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
