//! Integration tests: ops (metrics and health endpoint, iemctl stats/tail/completions/man, RPM).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iemd::config::broker::redact_url;
use iemd::shutdown::Shutdown;
use iemd::telemetry::Metrics;
use iemd::telemetry::http::{self, HealthInputs, StageHealth};
use iemd::telemetry::metrics::{Registry, parse_text};

use crate::util;

const IEMCTL: &str = env!("CARGO_BIN_EXE_iemctl");

/// A telemetry endpoint on an ephemeral port with its own registry.
struct Endpoint {
    url: String,
    metrics: Metrics,
    health: Arc<Mutex<HealthInputs>>,
    shutdown: Shutdown,
}

async fn start_endpoint() -> Endpoint {
    let registry = Arc::new(Registry::new());
    let metrics = Metrics::register(&registry);
    let health = Arc::new(Mutex::new(HealthInputs {
        stages: vec![StageHealth {
            name: "source messages".into(),
            running: true,
            reason: String::new(),
        }],
        broker_connected: true,
        spool_pending_records: 0,
        spool_warning_records: 100,
        stall_timeout_ms: 30_000,
        ..HealthInputs::default()
    }));
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let inputs = health.clone();
    shutdown.tracker.spawn(http::serve(
        listener,
        registry,
        Arc::new(move || inputs.lock().unwrap().clone()),
        shutdown.clone(),
    ));
    Endpoint {
        url,
        metrics,
        health,
        shutdown,
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_the_bumped_counters() {
    let ep = start_endpoint().await;
    let m = &ep.metrics;
    m.lines_read.with(&["messages"]).add(1234);
    m.bytes_read.with(&["messages"]).add(98765);
    m.iems.with(&["messages"]).add(17);
    m.malformed.with(&["journal"]).add(3);
    m.alerts_published.add(16);
    m.publish_retries.inc();
    m.spool_pending_records.set(4.0);
    m.line_to_confirm_seconds.observe(0.003);
    m.broker_connected
        .with(&[&redact_url("amqp://guest:pw@10.0.0.1:5672/%2f")])
        .set(1.0);

    let (status, body) = http::get(&format!("{}/metrics", ep.url), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let samples = parse_text(&body).unwrap();
    let get = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|s| s.name == name && label.is_none_or(|(n, v)| s.label(n) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} missing in\n{body}"))
            .value
    };
    assert_eq!(
        get("iemd_lines_read_total", Some(("source", "messages"))),
        1234.0
    );
    assert_eq!(
        get("iemd_bytes_read_total", Some(("source", "messages"))),
        98765.0
    );
    assert_eq!(get("iemd_iems_total", Some(("source", "messages"))), 17.0);
    assert_eq!(
        get("iemd_malformed_total", Some(("source", "journal"))),
        3.0
    );
    assert_eq!(get("iemd_alerts_published_total", None), 16.0);
    assert_eq!(get("iemd_publish_retries_total", None), 1.0);
    assert_eq!(get("iemd_spool_pending_records", None), 4.0);
    assert_eq!(
        get(
            "iemd_line_to_confirm_seconds_bucket",
            Some(("le", "0.0025"))
        ),
        0.0
    );
    assert_eq!(
        get("iemd_line_to_confirm_seconds_bucket", Some(("le", "0.005"))),
        1.0
    );
    assert_eq!(
        get(
            "iemd_broker_connected",
            Some(("url", "amqp://guest@10.0.0.1:5672/%2f"))
        ),
        1.0
    );
    assert!(!body.contains("pw@"), "password leaked:\n{body}");

    // A plain HTTP/1.0 client gets the 0.0.4 content type.
    let addr = ep.url.trim_start_matches("http://").to_string();
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{raw}"
    );

    let (status, _) = http::get(&format!("{}/nope", ep.url), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 404);
    ep.shutdown.stop_and_wait().await;
}

#[tokio::test]
async fn health_is_503_with_reasons_when_a_source_stops_or_the_spool_backs_up() {
    let ep = start_endpoint().await;
    let health_url = format!("{}/health", ep.url);
    let get = || http::get(&health_url, Duration::from_secs(5));

    let (status, body) = get().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok");

    // Broker down but the spool below its warning level: still healthy.
    {
        let mut h = ep.health.lock().unwrap();
        h.broker_connected = false;
        h.spool_pending_records = 99;
    }
    assert_eq!(get().await.unwrap().0, 200);

    // Backlog reaches the warning level while the broker is down.
    ep.health.lock().unwrap().spool_pending_records = 100;
    let (status, body) = get().await.unwrap();
    assert_eq!(status, 503);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "unhealthy");
    assert_eq!(json["reasons"][0]["rule"], "broker_backlog", "{body}");
    assert!(
        json["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("broker not connected"),
        "{body}"
    );

    // Broker back, one source stopped.
    {
        let mut h = ep.health.lock().unwrap();
        h.broker_connected = true;
        h.stages.push(StageHealth {
            name: "source journal".into(),
            running: false,
            reason: "journalctl gone; restarting in 1 s".into(),
        });
    }
    let (status, body) = get().await.unwrap();
    assert_eq!(status, 503);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["reasons"],
        serde_json::json!([{"rule": "stage_stopped",
            "reason": "source journal is not running: journalctl gone; restarting in 1 s"}])
    );
    assert_eq!(
        json["stages"][1],
        serde_json::json!({"name": "source journal", "running": false,
            "reason": "journalctl gone; restarting in 1 s"})
    );
    ep.shutdown.stop_and_wait().await;
}

/// Regression: 32 idle sockets held by a local user took every connection slot, and /health
/// failed for about 5 s at a time. Now a new connection closes the oldest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_idle_sockets_are_held_open() {
    let ep = start_endpoint().await;
    let addr = ep.url.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Each held socket is accepted (the server sees it) before /health is asked.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let (status, body) = http::get(&format!("{}/health", ep.url), Duration::from_secs(2))
            .await
            .expect("/health answers within 2 s while 40 idle sockets are open");
        assert_eq!(status, 200, "{body}");
    }
    // Idle sockets beyond the limit were closed to make room (the oldest first).
    let mut closed = 0;
    for s in &idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(100), s.peek(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert!(closed >= 40 - http::MAX_CONNECTIONS, "{closed} closed");
    drop(idle);
    ep.shutdown.stop_and_wait().await;
}

#[tokio::test]
async fn endpoint_stops_on_shutdown() {
    let ep = start_endpoint().await;
    let addr = ep.url.trim_start_matches("http://").to_string();
    tokio::time::timeout(Duration::from_secs(5), ep.shutdown.stop_and_wait())
        .await
        .expect("endpoint did not stop within 5 s");
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iemctl_stats_prints_the_table() {
    let ep = start_endpoint().await;
    ep.metrics.lines_read.with(&["messages"]).add(500);
    ep.metrics.iems.with(&["messages"]).add(7);
    ep.metrics.malformed.with(&["messages"]).add(2);
    ep.metrics.alerts_published.add(9);
    ep.metrics.spool_pending_records.set(3.0);
    ep.metrics
        .broker_connected
        .with(&["amqp://guest@127.0.0.1:5672/%2f"])
        .set(0.0);
    let endpoint = format!("{}/metrics", ep.url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(IEMCTL)
            .args(["stats", "--endpoint", &endpoint])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("messages "))
        .unwrap_or_else(|| panic!("no messages row in\n{stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["messages", "500", "0", "7", "2"], "{stdout}");
    assert!(stdout.contains("published 9 "), "{stdout}");
    assert!(stdout.contains("pending 3 records"), "{stdout}");
    assert!(
        stdout.contains("broker amqp://guest@127.0.0.1:5672/%2f: NOT connected"),
        "{stdout}"
    );
    ep.shutdown.stop_and_wait().await;

    // Nothing listening any more: a clear error, exit status 1.
    let endpoint = format!("{}/metrics", ep.url);
    let out = Command::new(IEMCTL)
        .args(["stats", "--endpoint", &endpoint])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{out:?}"
    );
}

#[test]
fn iemctl_tail_prints_published_alerts() {
    if !util::broker_available("ops::iemctl_tail_prints_published_alerts") {
        return;
    }
    let _broker = util::broker_lock::shared();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let exchange = format!("iemd-test-tail-{}-{}", std::process::id(), rand_suffix());
    let (conn, channel) = rt.block_on(async {
        let conn =
            lapin::Connection::connect(&util::broker_url(), lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        (conn, channel)
    });

    let dir = tempfile::tempdir().unwrap();
    let tail_config = dir.path().join("iemd.toml");
    std::fs::write(
        &tail_config,
        format!("[broker]\nurls = [\"{}\"]\n", util::amqp::plain_url()),
    )
    .unwrap();
    let mut child = Command::new(IEMCTL)
        .args([
            "tail",
            "--exchange",
            &exchange,
            "--binding",
            "ES0030010001",
            "--format",
            "text",
        ])
        .arg("--config")
        .arg(&tail_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    // Publish only once the queue is bound (tail says so on stderr).
    let ready = err_rx.recv_timeout(Duration::from_secs(15));
    let ready = ready.unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("iemctl tail did not get ready")
    });
    assert!(ready.contains("waiting for alerts"), "{ready}");
    assert!(!ready.contains("guest:guest"), "password shown: {ready}");

    let alert = serde_json::json!({
        "schema": "iem.alert/v1", "id": "t1", "kind": "iem", "code": "ES0030010001",
        "severity": {"code": "E", "name": "error"}, "alert_type": "fault",
        "source_type": {"code": "S", "name": "software"},
        "component": {"id": "003", "name": "s3"}, "module": {"id": "001", "name": "Connection"},
        "event": {"id": "0001", "name": "Auth server connection failed"}, "in_catalog": true,
        "message": "S3 server cannot connect to auth server.", "time": "2026-11-21T22:50:01Z",
        "origin": {"kind": "file", "path": "/var/log/messages", "offset": 0, "program": "s3server",
                   "pid": "1234", "host": "node1", "priority": 3},
        "raw": "Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:S3 server cannot connect to auth server."
    });
    rt.block_on(async {
        for key in ["WS0060010001", "ES0030010001"] {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    key.into(),
                    lapin::options::BasicPublishOptions::default(),
                    alert.to_string().as_bytes(),
                    lapin::BasicProperties::default(),
                )
                .await
                .unwrap();
        }
    });
    let line = out_rx.recv_timeout(Duration::from_secs(15));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no alert printed within 15 s");
    // Not a terminal: no colour codes. The WS... key does not match the binding.
    assert_eq!(
        line,
        "2026-11-21T22:50:01Z node1 ES0030010001 error         s3/Connection: S3 server cannot connect to auth server."
    );
    assert!(
        out_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "unexpected second line"
    );
    rt.block_on(async {
        let _ = conn.close(200, "done".into()).await;
    });
}

#[test]
fn iemctl_writes_completions_and_man_pages() {
    let out = Command::new(IEMCTL)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_iemctl") && script.contains("tail") && script.contains("stats"),
        "{script}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(IEMCTL)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in [
        "iemctl.1",
        "iemctl-tail.1",
        "iemctl-stats.1",
        "iemctl-parse.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not a man page"
        );
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Builds the RPM with packaging/build-rpm.sh and checks it with `rpm`. Needs a release build,
/// so it runs only with IEMD_TEST_RPM=1 (CI sets it); otherwise it says loudly that it skipped.
#[test]
fn rpm_package_has_every_file_with_the_right_modes_and_scriptlets() {
    if std::env::var("IEMD_TEST_RPM").ok().as_deref() != Some("1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED ops::rpm_package_has_every_file_with_the_right_modes_and_scriptlets: set IEMD_TEST_RPM=1 to build and check the RPM !!!!!!!!\n"
        );
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let build = Command::new("sh")
        .arg(format!("{root}/packaging/build-rpm.sh"))
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "build-rpm.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let stdout = String::from_utf8_lossy(&build.stdout);
    let rpm_path = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(".rpm"))
        .unwrap_or_else(|| panic!("no .rpm named in\n{stdout}"))
        .to_string();
    let rpm_path = format!("{root}/{rpm_path}");
    let query = |args: &[&str]| {
        let out = Command::new("rpm")
            .args(args)
            .arg(&rpm_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rpm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // path -> (mode, user, group, file flags)
    let listing = query(&[
        "-qp",
        "--qf",
        "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
    ]);
    let files: std::collections::HashMap<&str, (&str, &str, &str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            (f.len() == 5).then(|| (f[4], (f[0], f[1], f[2], f[3])))
        })
        .collect();
    let expect = |path: &str, perms: &str, user: &str, group: &str| {
        let (p, u, g, _) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the package:\n{listing}"));
        assert_eq!((*p, *u, *g), (perms, user, group), "{path}");
    };
    expect("/usr/bin/iemd", "-rwxr-xr-x", "root", "root");
    expect("/usr/bin/iemctl", "-rwxr-xr-x", "root", "root");
    expect(
        "/usr/lib/systemd/system/iemd.service",
        "-rw-r--r--",
        "root",
        "root",
    );
    expect(
        "/usr/lib/systemd/system-preset/90-iemd.preset",
        "-rw-r--r--",
        "root",
        "root",
    );
    expect("/etc/iemd/iemd.toml", "-rw-r-----", "root", "iemd");
    expect("/etc/logrotate.d/iemd", "-rw-r--r--", "root", "root");
    expect("/usr/share/iemd/iem-emit.sh", "-rwxr-xr-x", "root", "root");
    expect("/usr/share/man/man1/iemctl.1", "-rw-r--r--", "root", "root");
    expect(
        "/usr/share/man/man1/iemctl-tail.1",
        "-rw-r--r--",
        "root",
        "root",
    );
    expect(
        "/usr/share/bash-completion/completions/iemctl",
        "-rw-r--r--",
        "root",
        "root",
    );
    expect(
        "/usr/share/zsh/site-functions/_iemctl",
        "-rw-r--r--",
        "root",
        "root",
    );
    expect(
        "/usr/share/fish/vendor_completions.d/iemctl.fish",
        "-rw-r--r--",
        "root",
        "root",
    );
    for entry in std::fs::read_dir(format!("{root}/iem-catalog")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") {
            expect(
                &format!("/usr/share/iemd/catalog/{name}"),
                "-rw-r--r--",
                "root",
                "root",
            );
        }
    }
    // %config(noreplace): flags c (config) and n (noreplace).
    for config in ["/etc/iemd/iemd.toml", "/etc/logrotate.d/iemd"] {
        let flags = files[config].3;
        assert!(
            flags.contains('c') && flags.contains('n'),
            "{config} flags {flags:?}"
        );
    }
    let configs = query(&["-qpc"]);
    assert!(
        configs.lines().any(|l| l == "/etc/iemd/iemd.toml"),
        "{configs}"
    );

    let scripts = query(&["-qp", "--scripts"]);
    for needle in [
        "groupadd -r iemd",
        "install -d -m 0750 -o root -g iemd /etc/iemd /etc/iemd/catalog.d",
        "useradd -r -g iemd",
        "systemctl preset iemd.service",
        "systemctl --no-reload disable --now iemd.service",
        "try-restart iemd.service",
        "\"$1\" -ge 1",
    ] {
        assert!(
            scripts.contains(needle),
            "scriptlets lack {needle:?}:\n{scripts}"
        );
    }
    let requires = query(&["-qp", "--requires"]);
    assert!(requires.contains("/bin/sh"), "{requires}");
}

/// A real iemd whose broker is a port that opens only when the test says so, with its
/// `/health` on an ephemeral port.
struct HealthDaemon {
    daemon: util::daemon::Daemon,
    dir: tempfile::TempDir,
    health: String,
    port: u16,
    name: String,
    messages: std::path::PathBuf,
}

impl HealthDaemon {
    /// `settings` are `(after, added)`: `added` is inserted after the line `after` of the
    /// shared test config.
    fn start(test: &str, settings: &[(&str, &str)]) -> HealthDaemon {
        let port = util::amqp::free_port();
        let dir = tempfile::tempdir().unwrap();
        let name = util::amqp::unique(test);
        let messages = util::daemon::log_file(dir.path(), "messages");
        let mut text = util::daemon::config(dir.path(), &name, &[&messages], "")
            .replace(
                &util::amqp::plain_url(),
                &format!("amqp://127.0.0.1:{port}/%2f"),
            )
            .replace("metrics_listen = false", "metrics_listen = \"127.0.0.1:0\"");
        for (after, added) in settings {
            text = text.replace(after, &format!("{after}{added}"));
        }
        let daemon = util::daemon::Daemon::start(dir.path(), &text);
        daemon.wait_log("iemd running", Duration::from_secs(20));
        let log = daemon.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("serving /metrics and /health"))
            .expect("the endpoint's address is logged");
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .unwrap();
        HealthDaemon {
            health: format!("http://{addr}/health"),
            daemon,
            dir,
            port,
            name,
            messages,
        }
    }

    /// Polls `/health` until it answers `status` (and, for 503, names `rule`); returns the body.
    async fn wait(&self, status: u16, rule: Option<&str>, within: Duration) -> serde_json::Value {
        let deadline = std::time::Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Ok((got, body)) = http::get(&self.health, Duration::from_secs(5)).await {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                let named = rule.is_none_or(|r| {
                    json["reasons"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x["rule"] == r))
                });
                if got == status && named {
                    return json;
                }
                last = format!("HTTP {got} {body}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/health never answered {status} {rule:?}; last: {last}\nlog:\n{}",
                self.daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn append_iems(&self, from: usize, n: usize) {
        let lines: Vec<String> = (from..from + n)
            .map(|i| util::daemon::iem_line(&format!("n={i}")))
            .collect();
        util::daemon::append(&self.messages, &lines);
    }
}

fn reason_of(json: &serde_json::Value, rule: &str) -> String {
    json["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .unwrap()
}

/// Rule `stalled` (and `broker_backlog`): alerts pending and no confirm for
/// `stall_timeout_ms` turns /health 503; the broker coming back turns it 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_alerts_are_pending_without_a_confirm() {
    if !util::broker_available("ops::health_is_503_while_alerts_are_pending_without_a_confirm") {
        return;
    }
    let _broker = util::broker_lock::shared();
    let d = HealthDaemon::start(
        "ops-stall",
        &[
            ("connect_timeout_ms = 2000\n", "stall_timeout_ms = 1000\n"),
            ("[telemetry]\n", "spool_warning_records = 3\n"),
        ],
    );
    d.wait(200, None, Duration::from_secs(10)).await;
    d.append_iems(0, 5);
    let json = d.wait(503, Some("stalled"), Duration::from_secs(20)).await;
    assert!(
        reason_of(&json, "stalled").contains("5 alerts pending and none confirmed"),
        "{json}"
    );
    assert!(
        reason_of(&json, "broker_backlog").contains("broker not connected"),
        "{json}"
    );
    let proxy = util::amqp::proxy_to_broker(d.port).await;
    // The first confirm ends the stall (the rest may still be in flight).
    d.wait(200, None, Duration::from_secs(30)).await;
    let got = util::daemon::collect(&d.name, 5, Duration::from_secs(20)).await;
    assert_eq!(got.distinct_ids(), 5);
    drop(d);
    proxy.abort();
}

/// Rule `spool_full`: a full spool (the sources wait) turns /health 503 until the broker
/// drains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_spool_is_full() {
    if !util::broker_available("ops::health_is_503_while_the_spool_is_full") {
        return;
    }
    let _broker = util::broker_lock::shared();
    let d = HealthDaemon::start(
        "ops-full",
        &[(
            "sync_interval_ms = 5\n",
            "max_bytes = 65536\nsegment_bytes = 8192\n",
        )],
    );
    d.wait(200, None, Duration::from_secs(10)).await;
    // About 1.3 kB a record: 300 records cannot fit in 64 KiB.
    d.append_iems(0, 300);
    let json = d
        .wait(503, Some("spool_full"), Duration::from_secs(20))
        .await;
    assert!(
        reason_of(&json, "spool_full").starts_with("spool full ("),
        "{json}"
    );
    assert_eq!(json["spool_full"], true);
    let proxy = util::amqp::proxy_to_broker(d.port).await;
    d.wait(200, None, Duration::from_secs(60)).await;
    let got = util::daemon::collect(&d.name, 300, Duration::from_secs(30)).await;
    assert_eq!(got.distinct_ids(), 300);
    drop(d);
    proxy.abort();
}

/// Rule `stage_stopped`. Regression: the publisher's task ended on a spool read error and
/// nobody noticed (broker gauge 1, /health ok) while alerts piled up. Now it is restarted with
/// backoff, and /health names it until it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_publisher_is_down_and_it_is_restarted() {
    if !util::broker_available("ops::health_is_503_while_the_publisher_is_down_and_it_is_restarted")
    {
        return;
    }
    let _broker = util::broker_lock::shared();
    let d = HealthDaemon::start("ops-stage", &[]);
    d.wait(200, None, Duration::from_secs(10)).await;
    d.append_iems(0, 3);
    // The alerts wait for the broker; their segment is then taken away from the publisher.
    let spool = d.dir.path().join("state/spool");
    let segment = loop {
        let seg = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"));
        if let Some(seg) = seg
            && std::fs::metadata(&seg).unwrap().len() > 24
        {
            break seg;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let aside = segment.with_extension("away");
    std::fs::rename(&segment, &aside).unwrap();
    let proxy = util::amqp::proxy_to_broker(d.port).await;
    let json = d
        .wait(503, Some("stage_stopped"), Duration::from_secs(30))
        .await;
    let reason = reason_of(&json, "stage_stopped");
    assert!(
        reason.starts_with("publisher is not running: spool "),
        "{reason}"
    );
    assert!(reason.contains("restarting in"), "{reason}");
    // A stopped publisher shows no broker connection.
    let metrics = http::get(
        &d.health.replace("/health", "/metrics"),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .1;
    let samples = parse_text(&metrics).unwrap();
    let value = |name: &str, label: (&str, &str)| {
        samples
            .iter()
            .find(|s| s.name == name && s.label(label.0) == Some(label.1))
            .map(|s| s.value)
    };
    assert_eq!(value("iemd_stage_up", ("stage", "publisher")), Some(0.0));
    assert!(
        samples
            .iter()
            .filter(|s| s.name == "iemd_broker_connected")
            .all(|s| s.value == 0.0),
        "{metrics}"
    );
    std::fs::rename(&aside, &segment).unwrap();
    d.wait(200, None, Duration::from_secs(30)).await;
    let got = util::daemon::collect(&d.name, 3, Duration::from_secs(20)).await;
    assert_eq!(got.distinct_ids(), 3);
    assert!(
        d.daemon.log_text().contains("task stopped; restarting it"),
        "the failure is logged"
    );
    drop(d);
    proxy.abort();
}

/// Issue 13: a closed stderr (the journal stream, after journald restarted on a systemd that does
/// not keep services' streams) made every log call panic in the task that logged, through
/// tracing-subscriber's `eprintln!` of the failed write. iemd now goes on and stops cleanly.
#[test]
fn a_closed_stderr_does_not_end_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let messages = util::daemon::log_file(dir.path(), "messages");
    let port = util::amqp::free_port();
    // No broker there: the publisher logs a warning at every retry.
    let text = util::daemon::config(dir.path(), "ops-closed-stderr", &[&messages], "").replace(
        &util::amqp::plain_url(),
        &format!("amqp://127.0.0.1:{port}/%2f"),
    );
    let config = dir.path().join("iemd.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_iemd"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    util::daemon::append(&messages, &[util::daemon::iem_line("n=0")]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "iemd ended: {:?}",
        child.try_wait()
    );
    crate::util::signal(child.id(), rustix::process::Signal::TERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Declares what an iemd with `declare = false` expects: the durable topic exchange `name`, and
/// the durable queue `name` with `args`, bound to it with `#`.
async fn declare_topology(ch: &lapin::Channel, name: &str, args: lapin::types::FieldTable) {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.queue_bind(
        name.into(),
        name.into(),
        "#".into(),
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
}

/// Rule `broker_returning` with the whole daemon: the queue deleted under a running iemd that
/// does not declare its topology (`declare = false`) makes the broker return its alerts; /health
/// is 503 naming the rule, the exchange and the routing key, and 200 again once the queue is
/// back, with every alert delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_broker_returns_alerts() {
    if !util::broker_available("ops::health_is_503_while_the_broker_returns_alerts") {
        return;
    }
    let _broker = util::broker_lock::shared();
    let d = HealthDaemon::start(
        "ops-return",
        &[("connect_timeout_ms = 2000\n", "declare = false\n")],
    );
    let conn = lapin::Connection::connect(&util::broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_topology(&ch, &d.name, Default::default()).await;
    let proxy = util::amqp::proxy_to_broker(d.port).await;
    d.wait(200, None, Duration::from_secs(10)).await;
    ch.queue_delete(d.name.as_str().into(), Default::default())
        .await
        .unwrap();
    d.append_iems(0, 3);
    let json = d
        .wait(503, Some("broker_returning"), Duration::from_secs(20))
        .await;
    let reason = reason_of(&json, "broker_returning");
    assert!(
        reason.starts_with("alerts are being returned by the broker: "),
        "{reason}"
    );
    assert!(reason.contains(&d.name), "the exchange is named: {reason}");
    assert!(
        reason.contains("iem."),
        "the routing key is named: {reason}"
    );
    declare_topology(&ch, &d.name, Default::default()).await;
    d.wait(200, None, Duration::from_secs(30)).await;
    let got = util::daemon::collect(&d.name, 3, Duration::from_secs(20)).await;
    assert_eq!(got.distinct_ids(), 3);
    let _ = conn.close(200, "done".into()).await;
    drop(d);
    proxy.abort();
}

/// Rule `broker_refusing` with the whole daemon: a queue that is full and rejects publishes
/// (`x-max-length` 2, `x-overflow` `reject-publish`) makes the broker nack the third alert;
/// /health is 503 naming the rule, and 200 again once a consumer makes room, with every alert
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_broker_refuses_alerts() {
    use futures_util::StreamExt;
    use lapin::types::{AMQPValue, FieldTable};
    if !util::broker_available("ops::health_is_503_while_the_broker_refuses_alerts") {
        return;
    }
    let _broker = util::broker_lock::shared();
    let d = HealthDaemon::start(
        "ops-refuse",
        &[("connect_timeout_ms = 2000\n", "declare = false\n")],
    );
    let conn = lapin::Connection::connect(&util::broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(2));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    declare_topology(&ch, &d.name, args).await;
    let proxy = util::amqp::proxy_to_broker(d.port).await;
    d.wait(200, None, Duration::from_secs(10)).await;
    d.append_iems(0, 5);
    let json = d
        .wait(503, Some("broker_refusing"), Duration::from_secs(20))
        .await;
    let reason = reason_of(&json, "broker_refusing");
    assert!(reason.starts_with("broker refuses alerts for "), "{reason}");
    // Make room: a consumer takes everything as it comes.
    let mut consumer = ch
        .basic_consume(
            d.name.as_str().into(),
            "ops-refuse".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids = std::collections::HashSet::new();
    while ids.len() < 5 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("every alert arrives once there is room")
            .unwrap()
            .unwrap();
        ids.insert(
            delivery
                .properties
                .message_id()
                .clone()
                .unwrap()
                .to_string(),
        );
    }
    d.wait(200, None, Duration::from_secs(30)).await;
    let _ = ch
        .queue_delete(d.name.as_str().into(), Default::default())
        .await;
    let _ = ch
        .exchange_delete(d.name.as_str().into(), Default::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    drop(d);
    proxy.abort();
}
