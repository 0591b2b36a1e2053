//! The spool on real files: torn-tail recovery, backpressure at the cap with a real publisher
//! draining it, and `iemctl replay` run as a process.

// The broker lock is held for a whole test on purpose; each test has its own runtime, so
// blocking its thread while waiting for the lock is harmless.
#![allow(clippy::await_holding_lock)]

use std::sync::Arc;
use std::time::Duration;

use iemd::config::spool::SpoolConfig;
use iemd::publish::{self, PublishStats};
use iemd::shutdown::Shutdown;
use iemd::spool;

use crate::publish::{alert_json, broker_config};
use crate::util;
use crate::util::amqp::drain_ids;

fn cfg(dir: &std::path::Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        sync_interval_ms: 2,
        ..SpoolConfig::default()
    }
}

/// Lets the previous instance's sync thread let go of the lock.
async fn released() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    segs.remove(0)
}

#[tokio::test]
async fn torn_record_is_cut_and_complete_records_kept() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (w, _r, _) = spool::open(&cfg(tmp.path())).unwrap();
        for i in 1..=100 {
            w.append(&alert_json(i)).await.unwrap();
        }
        w.sync().unwrap();
    }
    released().await;
    let seg = only_segment(tmp.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last record in the middle, as a crash mid-write would.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let (w, mut r, report) = spool::open(&cfg(tmp.path())).unwrap();
    assert_eq!(report.records, 99);
    assert_eq!(report.pending, 99);
    assert_eq!(report.cuts.len(), 1, "{report:?}");
    let framed = |i| 24 + alert_json(i).len() as u64;
    assert_eq!(
        report.cuts[0].offset,
        24 + (1..=99).map(framed).sum::<u64>()
    );
    assert_eq!(report.cuts[0].bytes, framed(100) - 100);
    assert_eq!(report.cuts[0].segment, seg);
    for i in 1..=99u64 {
        let rec = r.next().await.unwrap();
        assert_eq!(rec.seq, i);
        assert_eq!(rec.payload, alert_json(i));
    }
    assert_eq!(w.append(b"after").await.unwrap(), 100);
    assert_eq!(r.next().await.unwrap().payload, b"after");
    // The file mode is private.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&seg).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_makes_the_writer_wait_until_the_publisher_drains_it() {
    if !util::broker_available("full_spool_makes_the_writer_wait_until_the_publisher_drains_it") {
        return;
    }
    let _b = util::broker_lock::shared();
    let tmp = tempfile::tempdir().unwrap();
    let rec = alert_json(1).len() as u64 + 24;
    let config = SpoolConfig {
        max_bytes: rec * 10,
        segment_bytes: rec * 4,
        ..cfg(tmp.path())
    };
    let (w, reader, _) = spool::open(&config).unwrap();
    let feeder = tokio::spawn({
        let w = w.clone();
        async move {
            for i in 1..=300 {
                w.append(&alert_json(i)).await.unwrap();
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = w.stats();
    assert!(!feeder.is_finished());
    assert!(
        (8..=10).contains(&s.last_seq),
        "the writer stops at the cap: {s:?}"
    );
    assert!(s.pending_bytes <= config.max_bytes);
    assert!(s.full_waits > 0);
    let broker = broker_config("cap");
    let stats = Arc::new(PublishStats::new(&broker, None));
    let shutdown = Shutdown::new();
    let task = tokio::spawn({
        let (broker, stats, shutdown) = (broker.clone(), stats.clone(), shutdown.clone());
        async move { publish::run(&broker, reader, shutdown, stats).await }
    });
    tokio::time::timeout(Duration::from_secs(60), feeder)
        .await
        .unwrap()
        .unwrap();
    while w.stats().acked_seq < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.token.cancel();
    task.await.unwrap().unwrap();
    let ids = drain_ids(&broker.queue.unwrap().name, Duration::from_secs(1)).await;
    assert_eq!(
        ids,
        (1..=300).map(|i| format!("id-{i}")).collect::<Vec<_>>()
    );
    assert!(
        w.stats().segments <= 3,
        "acked segments are deleted: {:?}",
        w.stats()
    );
}

#[tokio::test]
async fn iemctl_replay_lists_records_and_reports_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (w, mut r, _) = spool::open(&cfg(tmp.path())).unwrap();
        for i in 1..=5 {
            w.append(&alert_json(i)).await.unwrap();
        }
        w.wait_durable(5).await;
        r.next().await.unwrap();
        r.next().await.unwrap();
        r.ack(2);
        r.persist().unwrap();
    }
    released().await;
    let seg = only_segment(tmp.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec_len = (bytes.len() - 24) / 5;
    let damaged = 24 + 3 * rec_len; // record 4
    bytes[damaged + 40] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_iemctl"))
            .arg("replay")
            .arg(tmp.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = run(&["--all"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}\n{err}");
    assert!(
        lines[0].starts_with("1 acked ") && lines[0].contains("id-1"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("3 pending ") && lines[2].contains("id-3"),
        "{out}"
    );
    assert!(lines[3].starts_with("5 pending "), "{out}");
    assert!(
        err.contains(&format!("{} offset {damaged}", seg.display())),
        "{err}"
    );
    assert_eq!(code, Some(2), "corruption gives exit status 2");

    let (_, out, _) = run(&["--json"]);
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [3, 5], "pending only by default");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["state"], "pending");
    assert_eq!(first["alert"]["id"], "id-3");

    let (_, out, _) = run(&["--all", "--from", "5"]);
    assert_eq!(out.lines().count(), 1);
    // Read-only: the spool is unchanged.
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}
