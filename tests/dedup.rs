//! One IEM, one alert (issue 19): journald and the syslog file rsyslog feeds from it carry the
//! same lines. The real `iemd`, real journal files made with `systemd-journal-remote`, real files
//! in rsyslog's format, the real broker.

// Each test has its own runtime; holding the std broker lock across awaits only blocks it.
#![allow(clippy::await_holding_lock)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::amqp::unique;
use crate::util::daemon::{Daemon, Received, append, collect, config, log_file};
use crate::util::journal::{now_usec, rsyslog_line, write_logged};
use crate::util::{self, broker_lock};

const HOST: &str = "node1";

/// A directory with an empty journal directory and an empty `messages` file, and the config of an
/// agent that reads both from the beginning (RFC 3164 stamps in UTC, as rsyslog writes them).
fn both_sources(label: &str) -> (tempfile::TempDir, String, PathBuf, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    fs::create_dir(&journal).unwrap();
    let messages = log_file(dir.path(), "messages");
    let name = unique(label);
    let extra = format!(
        "[parse]\ntimezone = \"UTC\"\n[sources.journald]\nenabled = true\ndirectory = \"{}\"\nstart_at = \"beginning\"\n",
        journal.display()
    );
    let text = config(dir.path(), &name, &[&messages], &extra);
    (dir, name, journal, messages, text)
}

/// The same syslog() calls in the journal and, as rsyslog copies them, in the file.
fn log_both(journal: &Path, messages: &Path, calls: &[(&str, u64)]) {
    write_logged(journal, HOST, calls);
    let lines: Vec<String> = calls
        .iter()
        .map(|(m, t)| rsyslog_line(HOST, m, *t))
        .collect();
    append(messages, &lines);
}

/// A time in the middle of the current second, so that lines written a few µs apart share it.
fn mid_second() -> u64 {
    now_usec() / 1_000_000 * 1_000_000 + 500_000
}

/// Waits until the agent's checkpoints have passed the whole file and some journal entry, and
/// `also` holds for the checkpoint text.
fn wait_checkpoints(daemon: &Daemon, messages: &Path, also: impl Fn(&str) -> bool) {
    let path = daemon.dir.join("state/checkpoints.json");
    let len = fs::metadata(messages).unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let file_done = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["files"][messages.to_str().unwrap()]["next_offset"].as_u64())
            .unwrap_or(0)
            == len;
        if file_done && text.contains("cursor") && also(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoints did not pass everything:\n{text}\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Received ids per alert message.
fn ids_by_message(got: &Received) -> HashMap<&str, Vec<&str>> {
    let mut by: HashMap<&str, Vec<&str>> = HashMap::new();
    for (m, id) in got.messages.iter().zip(&got.ids) {
        by.entry(m.as_str()).or_default().push(id.as_str());
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sources_give_one_alert_per_iem_with_repeats_and_one_sided_lines() {
    if !util::broker_available(
        "both_sources_give_one_alert_per_iem_with_repeats_and_one_sided_lines",
    ) {
        return;
    }
    let _broker = broker_lock::shared();
    let (dir, name, journal, messages, text) = both_sources("dedup-both");
    let t = mid_second();
    let repeat = "IEC:ES0030010001:S3 server cannot connect to auth server. repeat";
    // Three identical lines in one second, in both.
    log_both(
        &journal,
        &messages,
        &[(repeat, t), (repeat, t + 1), (repeat, t + 2)],
    );
    // A line only in the file (a producer that writes it there directly) ...
    append(
        &messages,
        &[rsyslog_line(
            HOST,
            "IEC:WS0060010001:SSL certificate is expiring only-file",
            t,
        )],
    );
    // ... and one only in the journal (rsyslog dropped it, e.g. rate-limited).
    write_logged(
        &journal,
        HOST,
        &[("IEC:ES0040010001:Ldap connection failed only-journal", t)],
    );
    // The same text a second later is another IEM.
    log_both(&journal, &messages, &[(repeat, t + 1_000_000)]);
    let port = free_port();
    let text = text.replace(
        "metrics_listen = false",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    );
    let mut daemon = Daemon::start(dir.path(), &text);
    wait_checkpoints(&daemon, &messages, |_| true);
    let got = collect(&name, 6, Duration::from_secs(30)).await;
    let matches = scrape_sum(port, "iemd_cross_source_matches_total");
    assert!(daemon.stop().success());
    let by = ids_by_message(&got);
    assert_eq!(got.ids.len(), 6, "{by:#?}");
    let repeats: HashSet<&str> = by["S3 server cannot connect to auth server. repeat"]
        .iter()
        .copied()
        .collect();
    assert_eq!(
        repeats.len(),
        4,
        "three in one second and one a second later: {by:#?}"
    );
    assert_eq!(by["SSL certificate is expiring only-file"].len(), 1);
    assert_eq!(by["Ldap connection failed only-journal"].len(), 1);
    assert_eq!(got.distinct_ids(), 6);
    // Where each came from: the one-sided lines from their side.
    for body in &got.bodies {
        let kind = body["origin"]["kind"].as_str().unwrap();
        match body["message"].as_str().unwrap() {
            "SSL certificate is expiring only-file" => assert_eq!(kind, "file"),
            "Ldap connection failed only-journal" => assert_eq!(kind, "journald"),
            _ => {}
        }
    }
    // Four twins were dropped, and counted; the counts are kept with the checkpoints.
    assert_eq!(matches, 4.0);
    let state = fs::read_to_string(dir.path().join("state/checkpoints.json")).unwrap();
    assert!(state.contains("cross_source"), "{state}");
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sum of every series of `metric` on the agent's /metrics.
fn scrape_sum(port: u16, metric: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A crash between the journal's sighting and the file's: the file's copy after the restart is
/// dropped (the counts are stored with the checkpoints), or at worst repeats the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_between_the_two_sightings_costs_at_most_a_duplicate_with_the_same_id() {
    if !util::broker_available(
        "a_sigkill_between_the_two_sightings_costs_at_most_a_duplicate_with_the_same_id",
    ) {
        return;
    }
    let _broker = broker_lock::shared();
    let (dir, name, journal, messages, text) = both_sources("dedup-kill");
    let t = mid_second();
    let first = "IEC:ES0030010001:auth failed before-kill";
    write_logged(&journal, HOST, &[(first, t), (first, t)]);
    let mut daemon = Daemon::start(dir.path(), &text);
    // Both journal sightings committed: their counts are stored with the checkpoints.
    wait_checkpoints(&daemon, &messages, |c| c.contains(",2,0]"));
    let before = collect(&name, 2, Duration::from_secs(30)).await;
    assert_eq!(before.distinct_ids(), 2, "{:?}", before.messages);
    daemon.kill9();

    // rsyslog's copies arrive while the agent is down; then a new IEM in both.
    let copies = vec![rsyslog_line(HOST, first, t), rsyslog_line(HOST, first, t)];
    append(&messages, &copies);
    let t2 = mid_second() + 1_000_000;
    log_both(
        &journal,
        &messages,
        &[("IEC:ES0030010001:auth failed after-kill", t2)],
    );
    daemon.restart();
    wait_checkpoints(&daemon, &messages, |_| true);
    let after = collect(&name, 1, Duration::from_secs(30)).await;
    assert!(daemon.stop().success());
    let by = ids_by_message(&after);
    assert_eq!(by["auth failed after-kill"].len(), 1, "{by:#?}");
    // The counts came back with the checkpoints: rsyslog's copies were matched, not published.
    // (Had the journal's lines been read again, they would have repeated their ids: see
    // `dedup::tests::a_restart_from_the_committed_state_keeps_indices_and_drops_the_late_twin`.)
    assert_eq!(by.get("auth failed before-kill"), None, "{by:#?}");
    assert_eq!(after.ids.len(), 1, "{by:#?}");
}

/// The chaos test's question with both sources on, small enough for every CI run: IEMs (with
/// identical repeats) written to the journal and the file in bursts while the agent is SIGKILLed
/// and restarted and the file is rotated. Nothing is lost, and each IEM has exactly one id
/// (alerts may arrive again after a kill, as with one source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_both_sources_loses_nothing_and_gives_each_iem_one_id() {
    if !util::broker_available("chaos_with_both_sources_loses_nothing_and_gives_each_iem_one_id") {
        return;
    }
    let _broker = broker_lock::shared();
    let (dir, name, journal, messages, text) = both_sources("dedup-chaos");
    const BURSTS: usize = 20;
    const PER_BURST: usize = 50;
    let mut daemon = Daemon::start(dir.path(), &text);
    let mut expected: HashMap<String, usize> = HashMap::new();
    for burst in 0..BURSTS {
        let t = now_usec();
        let mut calls: Vec<(String, u64)> = Vec::new();
        for i in 0..PER_BURST {
            let n = burst * PER_BURST + i;
            let message = format!("IEC:ES0030010001:auth failed n={n}");
            // Every tenth IEM three times in the same microsecond: three IEMs, three ids.
            let copies = if n.is_multiple_of(10) { 3 } else { 1 };
            for _ in 0..copies {
                calls.push((message.clone(), t + i as u64));
            }
            expected.insert(format!("auth failed n={n}"), copies);
        }
        let borrowed: Vec<(&str, u64)> = calls.iter().map(|(m, t)| (m.as_str(), *t)).collect();
        // Alternate which side has the burst first.
        if burst % 2 == 0 {
            write_logged(&journal, HOST, &borrowed);
        }
        let lines: Vec<String> = calls
            .iter()
            .map(|(m, t)| rsyslog_line(HOST, m, *t))
            .collect();
        append(&messages, &lines);
        if burst % 2 == 1 {
            write_logged(&journal, HOST, &borrowed);
        }
        if burst == BURSTS / 2 {
            // rsyslog's rotation: rename, then a new file.
            fs::rename(&messages, dir.path().join("messages.1")).unwrap();
            log_file(dir.path(), "messages");
        }
        if burst % 7 == 3 {
            std::thread::sleep(Duration::from_millis(150));
            daemon.kill9();
            daemon.restart();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_checkpoints(&daemon, &messages, |_| true);
    let total: usize = expected.values().sum();
    let got = collect(&name, total, Duration::from_secs(60)).await;
    assert!(daemon.stop().success());
    let by = ids_by_message(&got);
    let mut wrong = Vec::new();
    for (message, copies) in &expected {
        let ids: HashSet<&str> = by
            .get(message.as_str())
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        if ids.len() != *copies {
            wrong.push(format!("{message}: {} ids, {copies} expected", ids.len()));
        }
    }
    wrong.sort();
    eprintln!(
        "dedup chaos: {total} IEMs written to both sources, {} received, {} distinct ids",
        got.ids.len(),
        got.distinct_ids()
    );
    assert!(
        wrong.is_empty(),
        "{} IEMs wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// Both kinds of source configured on purpose: `iemd --check-config` says they are matched. (The
/// no-file default, which reads one of them, is checked in
/// `agent::the_default_config_runs_on_this_machine`.)
#[test]
fn check_config_says_when_both_sources_are_matched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("both.toml");
    fs::write(
        &path,
        "[[sources.files]]\npaths = [\"/var/log/messages\"]\n[sources.journald]\nenabled = true\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iemd"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("# As configured."), "{text}");
    assert!(
        text.contains("# Both journald and files are read: an IEM seen through both"),
        "{text}"
    );
}
