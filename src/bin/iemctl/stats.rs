//! `iemctl stats`: a compact view of a running iemd's metrics endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use iemd::telemetry::http::Reason;
use iemd::telemetry::metrics::{Sample, parse_text};

/// Print a running iemd's counters: per source lines, bytes, IEMs and malformed lines; alerts
/// spooled and published; publish retries, nacks and returns; the spool backlog; whether each
/// broker URL is connected; and its health (`/health` next to the metrics URL), with each
/// failing rule and its reason (docs/OPERATIONS.md says what to do about each).
///
/// Example:
///   iemctl stats --endpoint http://127.0.0.1:9177/metrics
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The daemon's metrics URL (`telemetry.metrics_listen` + `/metrics`).
    #[arg(long, default_value = "http://127.0.0.1:9177/metrics")]
    endpoint: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, body) = runtime.block_on(iemd::telemetry::http::get(
        &args.endpoint,
        Duration::from_secs(5),
    ))?;
    if status != 200 {
        anyhow::bail!("{} answered HTTP {status}", args.endpoint);
    }
    let samples = parse_text(&body)
        .with_context(|| format!("{} did not return Prometheus text", args.endpoint))?;
    print!("{}", render(&samples));
    let health_url = match args.endpoint.strip_suffix("/metrics") {
        Some(base) => format!("{base}/health"),
        None => format!("{}/health", args.endpoint.trim_end_matches('/')),
    };
    let health = runtime.block_on(iemd::telemetry::http::get(
        &health_url,
        Duration::from_secs(5),
    ));
    print!("{}", render_health(&health_url, health));
    Ok(ExitCode::SUCCESS)
}

/// The health lines: `health: ok`, or `health: UNHEALTHY` and one line per failing rule.
fn render_health(
    url: &str,
    health: Result<(u16, String), iemd::telemetry::TelemetryError>,
) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        status: String,
        #[serde(default)]
        reasons: Vec<Reason>,
    }
    let (status, body) = match health {
        Ok(answer) => answer,
        Err(err) => return format!("health: unknown ({err})\n"),
    };
    let Ok(body) = serde_json::from_str::<Body>(&body) else {
        return format!("health: unknown ({url} answered HTTP {status} without a health body)\n");
    };
    let mut out = String::new();
    if body.status == "ok" {
        out.push_str("health: ok\n");
    } else {
        out.push_str("health: UNHEALTHY\n");
    }
    for r in body.reasons {
        let _ = writeln!(out, "  {}: {}", r.rule, r.reason);
    }
    out
}

fn value(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// The table: one row per source, then the publish, spool and broker lines.
fn render(samples: &[Sample]) -> String {
    let mut sources: BTreeMap<&str, [f64; 4]> = BTreeMap::new();
    for s in samples {
        let column = match s.name.as_str() {
            "iemd_lines_read_total" => 0,
            "iemd_bytes_read_total" => 1,
            "iemd_iems_total" => 2,
            "iemd_malformed_total" => 3,
            _ => continue,
        };
        if let Some(source) = s.label("source") {
            sources.entry(source).or_default()[column] += s.value;
        }
    }
    let mut out = String::new();
    let width = sources.keys().map(|k| k.len()).max().unwrap_or(0).max(6);
    let _ = writeln!(
        out,
        "{:<width$} {:>12} {:>14} {:>10} {:>10}",
        "SOURCE", "LINES", "BYTES", "IEMS", "MALFORMED"
    );
    for (source, [lines, bytes, iems, malformed]) in &sources {
        let _ = writeln!(
            out,
            "{source:<width$} {lines:>12} {bytes:>14} {iems:>10} {malformed:>10}"
        );
    }
    let v = |name| value(samples, name);
    let _ = writeln!(
        out,
        "alerts: spooled {} published {} | publish retries {} nacks {} returns {}",
        v("iemd_alerts_spooled_total"),
        v("iemd_alerts_published_total"),
        v("iemd_publish_retries_total"),
        v("iemd_publish_nacks_total"),
        v("iemd_publish_returns_total"),
    );
    let _ = writeln!(
        out,
        "spool: pending {} records {} bytes, oldest {:.1} s | full waits {} | checkpoints written {}",
        v("iemd_spool_pending_records"),
        v("iemd_spool_pending_bytes"),
        v("iemd_spool_oldest_pending_age_seconds"),
        v("iemd_spool_full_waits_total"),
        v("iemd_checkpoint_writes_total"),
    );
    let count = v("iemd_line_to_confirm_seconds_count");
    if count > 0.0 {
        let _ = writeln!(
            out,
            "line to confirm: {} alerts, mean {:.3} s",
            count,
            v("iemd_line_to_confirm_seconds_sum") / count
        );
    }
    for s in samples.iter().filter(|s| s.name == "iemd_broker_connected") {
        let state = if s.value >= 1.0 {
            "connected"
        } else {
            "NOT connected"
        };
        let _ = writeln!(out, "broker {}: {state}", s.label("url").unwrap_or("-"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_per_source_and_lists_brokers() {
        let text = "iemd_lines_read_total{source=\"messages\"} 10\niemd_iems_total{source=\"messages\"} 2\n\
                    iemd_lines_read_total{source=\"journal\"} 5\niemd_alerts_published_total 2\n\
                    iemd_broker_connected{url=\"amqp://h1/\"} 1\niemd_broker_connected{url=\"amqp://h2/\"} 0\n";
        let table = render(&parse_text(text).unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["journal", "5", "0", "0", "0"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["messages", "10", "0", "2", "0"]
        );
        assert!(table.contains("published 2 "), "{table}");
        assert!(
            table.contains("broker amqp://h1/: connected\nbroker amqp://h2/: NOT connected\n"),
            "{table}"
        );
    }

    #[test]
    fn render_health_lists_each_failing_rule() {
        let body = r#"{"status":"unhealthy","reasons":[{"rule":"spool_full","reason":"spool full (9 alerts pending)"},{"rule":"stalled","reason":"9 alerts pending"}],"stages":[]}"#;
        assert_eq!(
            render_health("u", Ok((503, body.into()))),
            "health: UNHEALTHY\n  spool_full: spool full (9 alerts pending)\n  stalled: 9 alerts pending\n"
        );
        assert_eq!(
            render_health("u", Ok((200, r#"{"status":"ok","reasons":[]}"#.into()))),
            "health: ok\n"
        );
    }
}
