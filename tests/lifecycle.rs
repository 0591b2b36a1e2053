//! The fault lifecycle (issue 17) through the real daemon and broker: a pair across a restart,
//! escalation, a storm coalesced into summaries with the exact count, a flap held down.

// Each test has its own runtime; holding the std broker lock across awaits only blocks it.
#![allow(clippy::await_holding_lock)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::amqp::unique;
use crate::util::daemon::{Daemon, append, collect, config, log_file};
use crate::util::{self, broker_lock};

/// A catalog file for component `0aa`: event 0001 is a fault with `rules`, 0002 resolves it.
fn catalog(dir: &Path, rules: &str) -> std::path::PathBuf {
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("test.toml"),
        format!(
            "id = \"0aa\"\nname = \"t\"\n[modules]\n\"001\" = \"M\"\n[[events]]\nmodule = \"001\"\nevent = \"0001\"\ndescription = \"down\"\n{rules}\n[[events]]\nmodule = \"001\"\nevent = \"0002\"\ndescription = \"up\"\nresolves = [\"0aa0010001\"]\n"
        ),
    )
    .unwrap();
    catalog
}

/// A daemon tailing `dir/messages` with the catalog in `dir/catalog`.
fn start(dir: &Path, name: &str, rules: &str) -> (std::path::PathBuf, Daemon) {
    let catalog = catalog(dir, rules);
    let messages = log_file(dir, "messages");
    let text = format!(
        "catalog_dirs = [\"{}\"]\n{}",
        catalog.display(),
        config(dir, name, &[&messages], "")
    );
    let daemon = Daemon::start(dir, &text);
    daemon.wait_log("iemd running", Duration::from_secs(20));
    (messages, daemon)
}

fn line(code: &str, text: &str) -> String {
    format!("Nov 21 22:50:01 node1 m0d[9]: IEC: {code}: {text}")
}

/// Every body is a valid `iem.alert/v1`, and its SSPL body a valid sensor response.
fn assert_valid(bodies: &[Value]) {
    let schema = |name: &str| {
        let path = format!("{}/schema/{name}", env!("CARGO_MANIFEST_DIR"));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    };
    let (v1, sspl) = (
        schema("iem.alert.v1.json"),
        schema("sspl-sensor-response.json"),
    );
    for b in bodies {
        let errors: Vec<String> = v1
            .iter_errors(b)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{b}: {errors:?}");
        let alert: iemd::alert::Alert = serde_json::from_value(b.clone()).unwrap();
        let body = iemd::sspl::body(&alert);
        let errors: Vec<String> = sspl
            .iter_errors(&body)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{body}: {errors:?}");
    }
}

fn kinds(bodies: &[Value]) -> Vec<&str> {
    bodies.iter().map(|b| b["kind"].as_str().unwrap()).collect()
}

/// `iemctl faults --json` on the daemon's state directory (none before its first checkpoint).
pub(crate) fn faults(dir: &Path) -> Vec<Value> {
    if !dir.join("state/checkpoints.json").exists() {
        return Vec::new();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_iemctl"))
        .arg("faults")
        .arg(dir.join("state"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_and_its_resolution_pair_across_a_restart() {
    if !util::broker_available("a_fault_and_its_resolution_pair_across_a_restart") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("life-pair");
    let (messages, mut daemon) = start(dir.path(), &name, "resource = \"field:host\"");
    append(
        &messages,
        &[
            line("WS0aa0010001", "lost host=vm-1; status=lost"),
            line("WS0aa0010001", "lost host=vm-2; status=lost"),
        ],
    );
    // Recorded with the checkpoints once the faults' alerts are durable.
    let start = std::time::Instant::now();
    while faults(dir.path()).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A clean stop between the fault and its resolution: the ledger comes back at start.
    assert!(daemon.stop().success(), "{}", daemon.log_text());
    let open = faults(dir.path());
    assert_eq!(open.len(), 2, "{open:?}");
    assert_eq!(open[0]["resource"]["id"], "vm-1");
    daemon.restart();
    daemon.wait_log("iemd running", Duration::from_secs(20));
    append(
        &messages,
        &[
            line("IS0aa0010002", "back host=vm-1; status=ok"),
            line("IS0aa0010002", "back host=vm-1; status=ok"),
        ],
    );
    let got = collect(&name, 4, Duration::from_secs(30)).await;
    daemon.stop();
    let b = &got.bodies;
    assert_valid(b);
    assert_eq!(b.len(), 4, "{b:#?}");
    let info = iemd::sspl::body(&serde_json::from_value(b[2].clone()).unwrap());
    let info = &info["message"]["sensor_response_type"]["info"];
    assert_eq!(
        (info["resource_type"].as_str(), info["resource_id"].as_str()),
        (Some("iem:host"), Some("vm-1"))
    );
    assert_eq!(
        (b[0]["alert_type"].as_str(), b[0]["resource"]["id"].as_str()),
        (Some("fault"), Some("vm-1"))
    );
    assert_eq!(b[2]["alert_type"], "fault_resolved");
    assert_eq!(b[2]["resolves"], b[0]["id"]);
    assert_eq!(b[2]["resource"], b[0]["resource"]);
    // Resolved once: the second finds nothing open.
    assert_eq!(b[3]["resolves"], Value::Null);
    assert!(b[3].as_object().unwrap().contains_key("resolves"));
    let open = faults(dir.path());
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["resource"]["id"], "vm-2");
}

/// A SIGKILL at several moments after a fault is read: every fault still pairs with its
/// resolution after the restart, and none is resolved twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_after_a_fault_loses_no_fault_and_resolves_none_twice() {
    if !util::broker_available("a_sigkill_after_a_fault_loses_no_fault_and_resolves_none_twice") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("life-kill9");
    let (messages, mut daemon) = start(dir.path(), &name, "resource = \"field:host\"");
    let pauses = [0u64, 5, 20, 100, 400];
    for (i, pause) in pauses.iter().enumerate() {
        append(
            &messages,
            &[line("ES0aa0010001", &format!("lost host=vm-{i};"))],
        );
        std::thread::sleep(Duration::from_millis(*pause));
        daemon.kill9();
        daemon.restart();
        daemon.wait_log("iemd running", Duration::from_secs(20));
    }
    let resolutions: Vec<String> = (0..pauses.len())
        .map(|i| line("IS0aa0010002", &format!("back host=vm-{i};")))
        .collect();
    append(&messages, &resolutions);
    let got = collect(&name, 2 * pauses.len(), Duration::from_secs(60)).await;
    daemon.kill9();
    let mut faults = std::collections::HashMap::new();
    let mut resolved = std::collections::HashMap::new();
    for b in &got.bodies {
        let host = b["resource"]["id"].as_str().unwrap().to_owned();
        match b["alert_type"].as_str() {
            Some("fault") => {
                faults.insert(host, b["id"].clone());
            }
            Some("fault_resolved") => {
                assert_ne!(b["resolves"], Value::Null, "{host}: no open fault found");
                resolved
                    .entry(b["id"].as_str().unwrap().to_owned())
                    .or_insert((host, b["resolves"].clone()));
            }
            other => panic!("unexpected {other:?}: {b}"),
        }
    }
    assert_eq!(faults.len(), pauses.len(), "{:#?}", got.bodies);
    assert_eq!(resolved.len(), pauses.len(), "one resolution each");
    for (host, fault) in resolved.values() {
        assert_eq!(&faults[host], fault, "{host}");
    }
    assert!(self::faults(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_left_open_escalates_then_repeats() {
    if !util::broker_available("a_fault_left_open_escalates_then_repeats") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("life-escalate");
    let (messages, mut daemon) = start(
        dir.path(),
        &name,
        "escalate_after = \"1s\"\nescalate_every = \"2s\"",
    );
    append(&messages, &[line("ES0aa0010001", "broken")]);
    let got = collect(&name, 3, Duration::from_secs(30)).await;
    daemon.stop();
    let b = &got.bodies;
    assert_valid(b);
    assert!(b.len() >= 3, "{b:#?}");
    assert_eq!(kinds(&b[..3]), ["iem", "escalation", "escalation"]);
    for (i, e) in b[1..3].iter().enumerate() {
        assert_eq!(e["fault"]["fault_id"], b[0]["id"]);
        assert_eq!(e["fault"]["escalation"], i as u64 + 1);
        assert_eq!(e["code"], "ES0aa0010001");
        assert!(e["fault"]["age_secs"].as_u64().unwrap() > 2 * i as u64);
    }
    assert!(daemon.log_text().contains("escalated"));
}

/// Issue 17: 10,000 repeats of an open fault give one summary per window, and the summaries
/// count every repeat exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_repeats_is_one_summary_per_window_with_the_exact_count() {
    if !util::broker_available("a_storm_of_repeats_is_one_summary_per_window_with_the_exact_count")
    {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("life-storm");
    let (messages, mut daemon) = start(dir.path(), &name, "coalesce = \"1s\"");
    let n = 10_000;
    let lines: Vec<String> = (0..n)
        .map(|i| line("ES0aa0010001", &format!("broken n={i}")))
        .collect();
    for chunk in lines.chunks(1000) {
        append(&messages, chunk);
        std::thread::sleep(Duration::from_millis(200));
    }
    // The resolution publishes the last window's summary before itself.
    append(&messages, &[line("IS0aa0010002", "fixed")]);
    let got = collect(&name, 3, Duration::from_secs(60)).await;
    daemon.stop();
    let b = &got.bodies;
    assert_valid(b);
    let k = kinds(b);
    assert_eq!(k.first(), Some(&"iem"));
    assert_eq!(k.last(), Some(&"iem"));
    assert!(k[1..k.len() - 1].iter().all(|k| *k == "summary"), "{k:?}");
    let summaries = &b[1..b.len() - 1];
    // 2 s of writing, 1 s windows: a few summaries, never one per repeat.
    assert!((1..=5).contains(&summaries.len()), "{}", summaries.len());
    let counted: u64 = summaries
        .iter()
        .map(|s| s["fault"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, n - 1, "every repeat after the fault, exactly once");
    assert_eq!(summaries.last().unwrap()["message"], "broken n=9999");
    assert_eq!(b.last().unwrap()["resolves"], b[0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_resolved_within_its_hold_down_is_one_flap() {
    if !util::broker_available("a_fault_resolved_within_its_hold_down_is_one_flap") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("life-flap");
    let (messages, mut daemon) = start(dir.path(), &name, "hold_down = \"30s\"");
    append(
        &messages,
        &[line("ES0aa0010001", "down"), line("IS0aa0010002", "up")],
    );
    let got = collect(&name, 1, Duration::from_secs(30)).await;
    daemon.stop();
    let b = &got.bodies;
    assert_valid(b);
    assert_eq!(kinds(b), ["flap"], "{b:#?}");
    let f = &b[0]["fault"];
    assert_eq!(f["count"], 1);
    assert!(f["fault_id"].is_string() && f["resolution_id"].is_string());
    assert_ne!(f["fault_id"], f["resolution_id"]);
    assert!(faults(dir.path()).is_empty());
}

/// Coalesced repeats are counted exactly across SIGKILLs: a summary made again after a kill has
/// the same id and the same count, and the summaries' counts add up to every repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_across_sigkills_counts_every_repeat_once() {
    if !util::broker_available("a_storm_across_sigkills_counts_every_repeat_once") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("life-storm-kill9");
    let (messages, mut daemon) = start(dir.path(), &name, "coalesce = \"1s\"");
    let n = 6_000u64;
    // Event times one ms apart, so windows are closed by the repeats themselves, too.
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-21T22:50:00+00:00").unwrap();
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let t = start + chrono::Duration::milliseconds(i as i64);
            format!(
                "{} node1 m0d[9]: IEC: ES0aa0010001: broken n={i}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
            )
        })
        .collect();
    for (c, chunk) in lines.chunks(500).enumerate() {
        append(&messages, chunk);
        std::thread::sleep(Duration::from_millis(30 + 20 * (c as u64 % 3)));
        if c % 4 == 3 {
            daemon.kill9();
            daemon.restart();
            daemon.wait_log("iemd running", Duration::from_secs(20));
        }
    }
    append(&messages, &[line("IS0aa0010002", "fixed")]);
    let got = collect(&name, 3, Duration::from_secs(60)).await;
    daemon.kill9();
    let mut by_id: std::collections::BTreeMap<String, &Value> = Default::default();
    for b in &got.bodies {
        let id = b["id"].as_str().unwrap().to_owned();
        if let Some(first) = by_id.get(&id) {
            assert_eq!(*first, b, "the same id with another body");
        }
        by_id.insert(id, b);
    }
    let counted: u64 = by_id
        .values()
        .filter(|b| b["kind"] == "summary")
        .map(|b| b["fault"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, n - 1, "{:#?}", kinds(&got.bodies));
    let faults: Vec<_> = by_id.values().filter(|b| b["kind"] == "iem").collect();
    assert_eq!(faults.len(), 2, "the fault and its resolution");
}
