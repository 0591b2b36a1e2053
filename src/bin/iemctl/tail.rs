//! `iemctl tail`: a live view of the alerts iemd publishes.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use futures_util::StreamExt;
use iemd::alert::{Alert, Kind};
use iemd::config::Config;
use iemd::config::broker::BrokerConfig;
use iemd::emit::{escape_json, escape_message};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// Print alerts live, as the broker routes them.
///
/// A temporary queue (exclusive, auto-delete, gone when iemctl exits) is bound to the alert
/// exchange with the binding key.
///
/// The broker comes from the `[broker]` section of --config, else from the environment variable
/// IEMD_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/%2f. Credentials are never taken from
/// the command line.
///
/// Examples:
///   iemctl tail
///   iemctl tail --binding 'ES0030#' --format json | jq .
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The daemon's configuration file, for its broker.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The exchange iemd publishes alerts to.
    #[arg(long, default_value = "iem")]
    exchange: String,
    /// The binding key (topic pattern) of the temporary queue.
    #[arg(long, default_value = "#")]
    binding: String,
    /// `text`: one readable line per alert (coloured by severity on a terminal); `json`: each
    /// message body as received, one per line. Either way control characters, DEL and U+2028/
    /// U+2029 are escaped, as `iemctl emit` escapes them, so an alert cannot drive the terminal.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
    Text,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let broker = broker_config(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(tail(args, broker))
}

/// The broker settings: the daemon's `[broker]` section (credentials from its password file or
/// IEMD_AMQP_USER/IEMD_AMQP_PASSWORD, never from the command line), or the defaults.
fn broker_config(config: Option<&Path>) -> anyhow::Result<BrokerConfig> {
    Ok(match config {
        Some(path) => Config::load(path)?.broker,
        None => Config::for_this_machine().broker,
    })
}

async fn tail(args: Args, broker: BrokerConfig) -> anyhow::Result<ExitCode> {
    let (conn, shown) = iemd::publish::connect_any(&broker).await?;
    let channel = conn
        .create_channel()
        .await
        .context("cannot open a channel")?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("cannot declare the temporary queue")?;
    let queue_name = queue.name().to_string();
    channel
        .queue_bind(
            queue_name.as_str().into(),
            args.exchange.as_str().into(),
            args.binding.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot bind to exchange {:?} (does it exist?)",
                args.exchange
            )
        })?;
    let mut consumer = channel
        .basic_consume(
            queue_name.as_str().into(),
            "iemctl-tail".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("cannot consume")?;
    eprintln!(
        "iemctl tail: {shown} exchange {:?} binding {:?}: waiting for alerts (Ctrl-C to stop)",
        args.exchange, args.binding
    );
    let colour = matches!(args.format, Format::Text)
        && io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let mut out = io::stdout().lock();
    loop {
        let delivery = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            d = consumer.next() => d,
        };
        let Some(delivery) = delivery else {
            anyhow::bail!("the broker closed the consumer");
        };
        let delivery = delivery.context("consumer failed")?;
        let line = match args.format {
            Format::Json => escape_json(String::from_utf8_lossy(&delivery.data).trim_end()),
            Format::Text => text_line(&delivery.data, colour),
        };
        if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(e).context("cannot write to stdout");
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(ExitCode::SUCCESS)
}

/// One readable line for a message body: an `iem.alert/v1` alert, or the body as received.
/// Every text taken from the body is escaped ([`escape_message`]): whoever can publish to the
/// exchange chooses it.
fn text_line(body: &[u8], colour: bool) -> String {
    let Ok(alert) = serde_json::from_slice::<Alert>(body) else {
        return escape_message(String::from_utf8_lossy(body).trim_end());
    };
    let host = alert
        .host
        .as_ref()
        .map(|h| h.hostname.clone())
        .or_else(|| alert.origin.host.as_deref().map(str::to_owned))
        .unwrap_or_else(|| "-".into());
    let name = |n: &Option<iemd::alert::Named>| {
        n.as_ref()
            .map(|n| n.name.as_deref().unwrap_or(&n.id).to_owned())
            .unwrap_or_default()
    };
    let (time, host) = (escape_message(&alert.time), escape_message(&host));
    let (line, severity) = match alert.kind {
        Kind::Iem | Kind::Escalation | Kind::Summary | Kind::Flap => (
            format!(
                "{} {} {}{} {:<13} {}/{}: {}",
                time,
                host,
                match alert.kind {
                    Kind::Escalation => "ESCALATION ",
                    Kind::Summary => "SUMMARY ",
                    Kind::Flap => "FLAP ",
                    _ => "",
                },
                escape_message(alert.code.as_deref().unwrap_or("-")),
                escape_message(alert.severity.as_ref().map_or("-", |s| &*s.name)),
                escape_message(&name(&alert.component)),
                escape_message(&name(&alert.module)),
                escape_message(&alert.message)
            ),
            alert.severity.as_ref().map(|s| s.code.clone()),
        ),
        Kind::Malformed => (
            format!(
                "{} {} MALFORMED    ({}) {}",
                time,
                host,
                escape_message(alert.reason.as_deref().unwrap_or("-")),
                escape_message(&alert.raw)
            ),
            None,
        ),
    };
    if !colour {
        return line;
    }
    let sgr = match severity.as_deref() {
        Some("A" | "X") => "1;31",
        Some("E") => "31",
        Some("W") => "33",
        Some("N" | "C") => "36",
        Some("I") => "32",
        Some(_) => "2",
        None => "35",
    };
    format!("\x1b[{sgr}m{line}\x1b[0m")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert_json(sev: &str) -> String {
        format!(
            r#"{{"schema":"iem.alert/v1","id":"x","kind":"iem","code":"{sev}S0030010001","severity":{{"code":"{sev}","name":"error"}},
            "alert_type":"fault","source_type":null,"component":{{"id":"003","name":"s3"}},"module":{{"id":"001","name":"Connection"}},
            "event":null,"in_catalog":true,"message":"Auth down","time":"2026-01-02T03:04:05Z",
            "origin":{{"kind":"file","program":null,"pid":null,"host":"node1","priority":null}},"raw":"r"}}"#
        )
    }

    #[test]
    fn text_line_shows_time_host_code_and_message() {
        assert_eq!(
            text_line(alert_json("E").as_bytes(), false),
            "2026-01-02T03:04:05Z node1 ES0030010001 error         s3/Connection: Auth down"
        );
    }

    #[test]
    fn colour_follows_severity() {
        assert!(text_line(alert_json("A").as_bytes(), true).starts_with("\x1b[1;31m"));
        assert!(text_line(alert_json("W").as_bytes(), true).starts_with("\x1b[33m"));
        assert!(text_line(alert_json("I").as_bytes(), true).ends_with("\x1b[0m"));
    }

    #[test]
    fn other_bodies_are_printed_as_received() {
        assert_eq!(
            text_line(b"{\"not\":\"an alert\"}\n", true),
            "{\"not\":\"an alert\"}"
        );
        assert_eq!(text_line(b"a\x1b[2Jb\r\n", false), "a\\x1b[2Jb");
    }

    /// Regression (issue 14): `iemctl tail` printed alert text with raw C1 controls, DEL and
    /// U+2028/U+2029, and the host, names and reason with any control at all. Over every code
    /// point, in every field it prints, in both formats: none reaches the terminal raw.
    #[test]
    fn no_code_point_reaches_the_terminal_raw() {
        let raw = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
        let all: String = (0..=0x10_ffff).filter_map(char::from_u32).collect();
        // The other fields get every character that must not reach the terminal raw.
        let bad: String = all.chars().filter(|&c| raw(c)).collect();
        let mut alert: serde_json::Value = serde_json::from_str(&alert_json("E")).unwrap();
        alert["message"] = all.clone().into();
        for field in ["time", "code", "reason"] {
            alert[field] = bad.clone().into();
        }
        alert["origin"]["host"] = bad.clone().into();
        for object in ["severity", "component", "module"] {
            alert[object]["name"] = bad.clone().into();
        }
        let body = serde_json::to_vec(&alert).unwrap();
        let line = text_line(&body, false);
        assert!(
            line.ends_with(&escape_message(&all)),
            "the alert was not shown"
        );
        assert!(!line.chars().any(raw));
        let json = escape_json(&String::from_utf8_lossy(&body));
        assert!(!json.chars().any(raw));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            alert
        );
        alert["kind"] = "malformed".into();
        alert["raw"] = all.clone().into();
        let line = text_line(&serde_json::to_vec(&alert).unwrap(), false);
        assert!(line.contains("MALFORMED") && !line.chars().any(raw));
    }

    #[test]
    fn broker_comes_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iemd.toml");
        std::fs::write(
            &path,
            "[broker]\nurls = [\"amqp://h1/%2f\", \"amqp://h2\"]\nallow_plaintext = true\n",
        )
        .unwrap();
        assert_eq!(broker_config(Some(&path)).unwrap().urls[0], "amqp://h1/%2f");
        assert!(broker_config(Some(&dir.path().join("missing.toml"))).is_err());
        // Credentials in a URL are refused, not used.
        std::fs::write(&path, "[broker]\nurls = [\"amqp://a:b@h1/%2f\"]\n").unwrap();
        assert!(broker_config(Some(&path)).is_err());
    }
}
