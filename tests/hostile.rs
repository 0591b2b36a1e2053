//! Adversarial input against the real `iemd` process: hostile log lines, malformed configs, a
//! corrupted spool and a full disk. The agent must keep running, lose no valid IEM and say what
//! it could not use.

// Each test has its own runtime; holding the std broker lock across awaits only blocks it.
#![allow(clippy::await_holding_lock)]

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::amqp::unique;
use crate::util::daemon::{Daemon, append, config, iem_line, log_file};
use crate::util::hostile::{Tmpfs, alive, collect_bodies, run_for, vm_kb};
use crate::util::{self, broker_lock};

/// Writes raw bytes to the end of `path` in one write.
fn write_raw(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// The `n=<i>` tag a test line ends with.
fn tag(message: &str) -> &str {
    message.rsplit(' ').next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_leave_the_agent_running_bounded_and_lose_no_valid_iem() {
    if !util::broker_available(
        "hostile_lines_leave_the_agent_running_bounded_and_lose_no_valid_iem",
    ) {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("hostile-lines");
    let messages = log_file(dir.path(), "messages");
    let text = config(dir.path(), &name, &[&messages], "").replace(
        "start_at = \"beginning\"\n",
        "start_at = \"beginning\"\npartial_line_timeout_ms = 500\n",
    );
    let mut daemon = Daemon::start(dir.path(), &text);
    daemon.wait_log("iemd running", Duration::from_secs(20));
    let pid = daemon.pid();
    let (hwm_before, rss_before) = (vm_kb(pid, "VmHWM"), vm_kb(pid, "VmRSS"));

    let header = "Nov 21 22:50:01 node1 s3server[1234]: ";
    let valid = |i: usize| iem_line(&format!("n={i}"));
    append(&messages, &[valid(0)]);
    // Binary garbage: every byte value but LF, pseudo-random, 64 KiB.
    let mut x: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match (x >> 24) as u8 {
                b'\n' => 0,
                b => b,
            }
        })
        .chain(*b"\n")
        .collect();
    write_raw(&messages, &garbage);
    append(&messages, &[valid(1)]);
    // A 10 MB line whose IEM marker comes first: an IEM, cut at max_line_bytes and marked.
    let mut huge = format!("{header}IEC:ES0030010001:huge ").into_bytes();
    huge.resize(10 << 20, b'x');
    huge.push(b'\n');
    write_raw(&messages, &huge);
    append(&messages, &[valid(2)]);
    // NUL bytes and invalid UTF-8 inside valid IEMs.
    write_raw(
        &messages,
        format!("{header}IEC:ES0030010001:nul \0\0\0 inside n=3\n").as_bytes(),
    );
    let mut bad_utf8 = format!("{header}IEC:ES0030010001:bad utf8 \u{0}").into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe\xc3\x28\xed\xa0\x80 n=4\n");
    write_raw(&messages, &bad_utf8);
    // 10,000 markers in one line (malformed), then 10,000 markers before a valid code (an IEM).
    let markers = "IEC:".repeat(10_000);
    append(
        &messages,
        &[
            format!("{header}{markers}"),
            format!("{header}{markers}IEC:ES0030010001:after markers n=5"),
        ],
    );
    // Malformed: a bad severity letter.
    append(
        &messages,
        &[format!("{header}IEC:ZS0030010001:bad severity m=1")],
    );
    // An IEM written in two halves, well within the partial-line timeout: one line.
    let split = valid(6);
    let (a, b) = split.split_at(split.len() / 2);
    write_raw(&messages, a.as_bytes());
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_raw(&messages, format!("{b}\n").as_bytes());
    // One whose second half comes after the partial-line timeout (500 ms): the first half is
    // taken as a line (the IEM, its description cut short), and the completed line is delivered
    // too, whole (issue 21, item 5). Documented in src/config/sources.rs.
    write_raw(
        &messages,
        format!("{header}IEC:ES0030010001:late half ").as_bytes(),
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    write_raw(&messages, b"comes later n=7\n");
    // CR-only line ends: a lone CR ends a line, so these are three IEMs.
    write_raw(
        &messages,
        format!("{}\r{}\r{}\n", valid(8), valid(98), valid(99)).as_bytes(),
    );
    append(&messages, &[valid(9)]);

    // 14 IEMs: n=0..9 (n=7 twice: taken early, then whole), n=98, n=99 and the huge line;
    // 2 malformed.
    let got = collect_bodies(&name, 16, Duration::from_secs(60)).await;
    let (hwm_after, rss_after) = (vm_kb(pid, "VmHWM"), vm_kb(pid, "VmRSS"));
    assert!(alive(pid), "iemd died:\n{}", daemon.log_text());
    eprintln!(
        "hostile lines: VmHWM {hwm_before} -> {hwm_after} kB, VmRSS {rss_before} -> {rss_after} kB"
    );
    assert!(
        hwm_after < 64 * 1024,
        "peak RSS {hwm_after} kB with a 10 MB line (bound 64 MB)"
    );
    assert!(daemon.stop().success(), "{}", daemon.log_text());

    let iems: Vec<&Value> = got.iter().filter(|a| a["kind"] == "iem").collect();
    let malformed: Vec<&Value> = got.iter().filter(|a| a["kind"] == "malformed").collect();
    let summary: Vec<String> = got
        .iter()
        .map(|a| format!("{} {:.60}", a["kind"], a["message"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(got.len(), 16, "{summary:#?}");
    let tags: HashSet<&str> = iems
        .iter()
        .map(|a| tag(a["message"].as_str().unwrap()))
        .collect();
    for i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 98, 99] {
        assert!(
            tags.contains(format!("n={i}").as_str()),
            "n={i}: {summary:#?}"
        );
    }
    let huge = iems
        .iter()
        .find(|a| a["message"].as_str().unwrap().starts_with("huge "))
        .expect("the 10 MB line's IEM");
    assert_eq!(huge["truncated"], true);
    assert!(huge["raw"].as_str().unwrap().len() <= 64 * 1024 + 64);
    let late: Vec<&str> = iems
        .iter()
        .map(|a| a["raw"].as_str().unwrap())
        .filter(|raw| raw.contains("late half"))
        .collect();
    assert_eq!(
        late.len(),
        2,
        "the early copy and the whole line: {late:#?}"
    );
    assert!(late.iter().any(|raw| !raw.contains("n=7")), "{late:#?}");
    assert!(
        late.iter()
            .any(|raw| raw.contains("late half comes later n=7")),
        "{late:#?}"
    );
    let nul = iems
        .iter()
        .find(|a| tag(a["message"].as_str().unwrap()) == "n=3")
        .unwrap();
    assert!(nul["message"].as_str().unwrap().contains('\0'), "{nul}");
    let bad = iems
        .iter()
        .find(|a| tag(a["message"].as_str().unwrap()) == "n=4")
        .unwrap();
    assert!(
        bad["message"].as_str().unwrap().contains('\u{fffd}'),
        "{bad}"
    );

    assert_eq!(malformed.len(), 2, "{summary:#?}");
    for m in &malformed {
        assert!(m["reason"].as_str().is_some_and(|r| !r.is_empty()), "{m}");
        assert!(m["raw"].as_str().unwrap().contains("IEC:"), "{m}");
    }
    assert!(
        malformed
            .iter()
            .any(|m| m["reason"].as_str().unwrap().contains("severity")),
        "{malformed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_holds_the_sources_back_and_loses_nothing() {
    disk_full(
        "a_full_spool_disk_holds_the_sources_back_and_loses_nothing",
        false,
    )
    .await;
}

/// The default layout: the spool under the state directory, next to the checkpoints, all on
/// the full filesystem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_holds_the_sources_back_and_loses_nothing() {
    disk_full(
        "a_full_state_disk_holds_the_sources_back_and_loses_nothing",
        true,
    )
    .await;
}

/// Fills a 2 MiB tmpfs holding the spool (and with `whole_state` the checkpoints too) while the
/// broker is unreachable, then lets the broker in: every IEM must arrive.
async fn disk_full(test: &str, whole_state: bool) {
    if !util::broker_available(test) {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let mount = dir
        .path()
        .join(if whole_state { "state" } else { "spoolfs" });
    let spool = if whole_state {
        mount.join("spool")
    } else {
        mount.clone()
    };
    let Some(fs_guard) = Tmpfs::mount(&mount, "2m") else {
        if std::env::var("IEMD_REQUIRE_BROKER").is_ok_and(|v| v == "1") {
            panic!("{test}: cannot mount a tmpfs: the disk-full test cannot run");
        }
        eprintln!("\n!!!!!!!! SKIPPED {test}: mount -t tmpfs not permitted (not root?) !!!!!!!!\n");
        return;
    };
    let port = util::amqp::free_port();
    let name = unique(if whole_state {
        "hostile-statefull"
    } else {
        "hostile-diskfull"
    });
    let messages = log_file(dir.path(), "messages");
    let text = config(dir.path(), &name, &[&messages], "")
        .replace(
            "[spool]\n",
            &format!(
                "[spool]\ndir = \"{}\"\nsegment_bytes = 16384\n",
                spool.display()
            ),
        )
        .replace(
            &util::amqp::plain_url(),
            &format!("amqp://127.0.0.1:{port}/%2f"),
        );
    let mut daemon = Daemon::start(dir.path(), &text);
    daemon.wait_log("iemd running", Duration::from_secs(20));
    let pid = daemon.pid();
    // About 1 kB per alert: 4000 do not fit in 2 MiB.
    let n = 4000;
    let lines: Vec<String> = (0..n).map(|i| iem_line(&format!("n={i}"))).collect();
    append(&messages, &lines);
    daemon.wait_log("spool filesystem is full", Duration::from_secs(60));
    let checkpoints = dir.path().join("state/checkpoints.json");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = fs::read_to_string(&checkpoints).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        alive(pid),
        "iemd died on a full disk:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        held,
        fs::read_to_string(&checkpoints).unwrap_or_default(),
        "the source kept advancing on a full disk"
    );
    eprintln!(
        "disk full: tmpfs used {} bytes of 2 MiB while held back",
        fs_guard.used()
    );

    let proxy = util::amqp::proxy_to_broker(port).await;
    let got = collect_bodies(&name, n, Duration::from_secs(120)).await;
    daemon.wait_log("spool filesystem has room again", Duration::from_secs(5));
    assert!(alive(pid));
    assert!(daemon.stop().success(), "{}", daemon.log_text());
    proxy.abort();
    let tags: HashSet<&str> = got
        .iter()
        .map(|a| tag(a["message"].as_str().unwrap()))
        .collect();
    let missing: Vec<usize> = (0..n)
        .filter(|i| !tags.contains(format!("n={i}").as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {n} IEMs lost after a full disk, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let log = daemon.log_text();
    assert!(!log.contains("torn records were cut"), "{log}");
    drop(fs_guard);
}

/// Runs `iemd` with `args`, expecting the refusal of a bad config: exit 2.
fn iemd_refuses(args: &[&str], config: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iemd"));
    cmd.args(args).arg("--config").arg(config);
    let out = run_for(cmd, Duration::from_secs(15));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?} {config:?}: {err}");
    err
}

#[test]
fn malformed_and_hostile_configs_are_refused_naming_the_file_the_key_and_the_reason() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pw = d.join("password");
    fs::write(&pw, "hunter2\n").unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o644)).unwrap();
    let not_pem = d.join("cert.pem");
    fs::write(&not_pem, "hunter2").unwrap();
    // (config text, what stderr must hold besides the file name)
    let cases: Vec<(String, Vec<&str>)> = vec![
        // wrong types: the line and column, and what was expected
        ("[spool]\nmax_bytes = \"big\"\n".into(), vec![":2:13: invalid type: string \"big\", expected u64"]),
        ("state_dir = 5\n".into(), vec![":1:13: invalid type: integer `5`"]),
        ("[broker]\nurls = \"amqp://node\"\n".into(), vec![":2:8: invalid type", "expected a sequence"]),
        ("[[sources.files]]\npaths = [\"/var/log/messages\"]\nmax_line_bytes = -1\n".into(), vec![":3:"]),
        ("[telemetry]\nmetrics_listen = 12\n".into(), vec![":2:"]),
        // unknown keys at the top level and in every section
        ("bogus = 1\n".into(), vec![":1:1: unknown field `bogus`"]),
        ("[parse]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        ("[spool]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        ("[broker]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        ("[broker.queue]\nname = \"q\"\nbogus = 1\n".into(), vec![":3:1: unknown field `bogus`"]),
        ("[broker.tls]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        ("[[sources.files]]\npaths = [\"/var/log/x\"]\nbogus = 1\n".into(), vec![":3:1: unknown field `bogus`"]),
        ("[sources.journald]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        ("[sources]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        ("[enrich]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        ("[telemetry]\nbogus = 1\n".into(), vec![":2:1: unknown field `bogus`"]),
        // invalid globs and paths
        ("[[sources.files]]\npaths = [\"/var/log/[abc\"]\n".into(), vec!["sources.files[0].paths[0]: bad pattern \"[abc\""]),
        ("[[sources.files]]\npaths = [\"/var/*/messages\"]\n".into(), vec!["sources.files[0].paths[0]: wildcards are allowed in the file name only"]),
        ("[[sources.files]]\npaths = [\"/var/log/m\", \"relative.log\"]\n".into(), vec!["sources.files[0].paths[1]: must be an absolute path"]),
        // credentials where they must not be, never echoed
        ("[broker]\nurls = [\"amqp://bob:hunter2@node:5672/%2f\"]\n".into(), vec!["broker.urls[0]: must not contain credentials"]),
        ("[broker]\nurls = [\"amqp://node\", \"amqps://bob:hunter2@node2/%2f\"]\n".into(), vec!["broker.urls[1]: must not contain credentials"]),
        ("[broker]\nurls = [\"amqp://bob:hunter2@node:port\"]\n".into(), vec!["broker.urls[0]: invalid port number"]),
        (format!("[broker]\nuser = \"bob\"\npassword_file = \"{}\"\n", pw.display()), vec!["broker.password_file: ", "readable by group or others (mode 644)"]),
        ("[broker]\nuser = \"bob\"\npassword_file = \"/nonexistent/pw\"\n".into(), vec!["broker.password_file: /nonexistent/pw: No such file"]),
        // bad TLS files
        ("[broker]\nurls = [\"amqps://node/%2f\"]\n[broker.tls]\nca_file = \"/nonexistent/ca.pem\"\n".into(), vec!["broker.tls.ca_file: /nonexistent/ca.pem: No such file"]),
        (format!("[broker]\nurls = [\"amqps://node/%2f\"]\n[broker.tls]\ncert_file = \"{}\"\nkey_file = \"/nonexistent/k\"\n", not_pem.display()), vec!["broker.tls.cert_file: ", "not a PEM file", "broker.tls.key_file: /nonexistent/k: No such file"]),
        ("[broker]\nurls = [\"amqps://node/%2f\"]\n[broker.tls]\ncert_file = \"/etc/hostname\"\n".into(), vec!["broker.tls.key_file: cert_file and key_file go together"]),
    ];
    let path = d.join("bad.toml");
    for (text, expected) in &cases {
        fs::write(&path, text).unwrap();
        for args in [&["--check-config"][..], &[][..]] {
            let err = iemd_refuses(args, &path);
            assert!(
                err.contains(&format!("{}:", path.display())),
                "{args:?} {text:?}: the file is not named: {err}"
            );
            for e in expected {
                assert!(err.contains(e), "{args:?} {text:?}: no {e:?} in: {err}");
            }
            assert!(
                !err.contains("hunter2"),
                "a secret reached the output: {err}"
            );
        }
    }

    // An unreadable file, checked as an unprivileged user (root reads anything).
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&path, "").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    for args in [&["--check-config"][..], &[][..]] {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_iemd"))
            .args(args)
            .arg("--config")
            .arg(&path);
        let out = run_for(cmd, Duration::from_secs(15));
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) && err.contains("setpriv") {
            eprintln!(
                "\n!!!!!!!! SKIPPED the unreadable-config case: setpriv cannot switch users here: {err} !!!!!!!!\n"
            );
            break;
        }
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!(
                "{}: cannot read: Permission denied",
                path.display()
            )),
            "{err}"
        );
    }
}

/// Every record of a segment file: (offset, total length).
fn records_of(segment: &Path) -> Vec<(usize, usize)> {
    let b = fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut p = 24;
    while p + 24 <= b.len() {
        let len = u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
        out.push((p, 24 + len));
        p += 24 + len;
    }
    out
}

/// `iemctl replay DIR --json`: the tags of the records it could read, and its stderr.
fn replay(spool: &Path) -> (Vec<String>, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_iemctl"))
        .arg("replay")
        .arg(spool)
        .arg("--json")
        .output()
        .unwrap();
    let tags = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            tag(v["alert"]["message"].as_str().unwrap()).to_owned()
        })
        .collect();
    (
        tags,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_spool_is_recovered_around_the_damage_and_reported() {
    if !util::broker_available("a_corrupted_spool_is_recovered_around_the_damage_and_reported") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("hostile-spool");
    let messages = log_file(dir.path(), "messages");
    let good = config(dir.path(), &name, &[&messages], "")
        .replace("[spool]\n", "[spool]\nsegment_bytes = 4096\n");
    let port = util::amqp::free_port();
    let unreachable = good.replace(
        &util::amqp::plain_url(),
        &format!("amqp://127.0.0.1:{port}/%2f"),
    );
    // Fill a spool of small segments with nobody to publish to.
    let mut daemon = Daemon::start(dir.path(), &unreachable);
    daemon.wait_log("iemd running", Duration::from_secs(20));
    let n = 80;
    let lines: Vec<String> = (0..n).map(|i| iem_line(&format!("n={i}"))).collect();
    append(&messages, &lines);
    let spool = dir.path().join("state/spool");
    let start = Instant::now();
    while replay(&spool).0.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.stop().success(), "{}", daemon.log_text());

    let mut segments: Vec<_> = fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 8, "{segments:?}");
    // Flip bytes in the payload of a record in the middle of a segment that has records after it.
    let flipped = segments
        .iter()
        .skip(2)
        .find(|s| records_of(s).len() >= 3)
        .unwrap()
        .clone();
    let (off, len) = records_of(&flipped)[1];
    let mut b = fs::read(&flipped).unwrap();
    for x in &mut b[off + len / 2..off + len / 2 + 8] {
        *x ^= 0xa5;
    }
    fs::write(&flipped, &b).unwrap();
    // Truncate a later (not the last) segment in the middle of its second record.
    let truncated = segments[segments.len() - 3].clone();
    let truncated_records = records_of(&truncated).len();
    let (toff, tlen) = records_of(&truncated)[1];
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len((toff + tlen / 2) as u64)
        .unwrap();
    // A garbage ack file.
    fs::write(spool.join("ack"), b"\x00garbage, not an ack file at all").unwrap();

    // iemctl replay reads around the damage and names segment and offset.
    let (readable, err, code) = replay(&spool);
    eprintln!("iemctl replay on the corrupted spool:\n{err}");
    assert_eq!(code, Some(2), "{err}");
    let flip_note = format!("{} offset {off} ", flipped.display());
    let trunc_note = format!("{} offset {toff} ", truncated.display());
    assert!(err.contains(&flip_note), "{err}");
    assert!(err.contains(&trunc_note), "{err}");
    let lost: Vec<String> = (0..n)
        .map(|i| format!("n={i}"))
        .filter(|t| !readable.contains(t))
        .collect();
    // The flipped record, the half record and those cut off after it (nothing else) are gone.
    assert_eq!(lost.len(), truncated_records, "unreadable: {lost:?}");

    // The agent, now with a broker: recovery keeps every intact record and says what it skipped.
    fs::write(&daemon.config, &good).unwrap();
    daemon.restart();
    let start = Instant::now();
    while daemon.log_text().matches("iemd running").count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = daemon.log_text();
    // Regression: the log went to a file with terminal colour codes around every field.
    assert!(!log.contains('\x1b'), "colour codes in a log file: {log}");
    assert!(log.contains("spool ack file is invalid"), "{log}");
    for (seg, offset) in [(&flipped, off), (&truncated, toff)] {
        let line = log
            .lines()
            .find(|l| {
                l.contains("skipped damaged bytes") && l.contains(&*seg.display().to_string())
            })
            .unwrap_or_else(|| panic!("no recovery line for {}:\n{log}", seg.display()));
        assert!(line.contains(&format!("offset={offset}")), "{line}");
    }
    let got = collect_bodies(&name, n - lost.len(), Duration::from_secs(60)).await;
    assert!(daemon.stop().success(), "{}", daemon.log_text());
    let published: HashSet<String> = got
        .iter()
        .map(|a| tag(a["message"].as_str().unwrap()).to_owned())
        .collect();
    let readable: HashSet<String> = readable.into_iter().collect();
    assert_eq!(
        published, readable,
        "published (left) and readable (right) differ"
    );
}
