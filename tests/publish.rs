//! The publisher against the real broker: order, no loss across a broker restart, unroutable
//! alerts, failover, and credentials kept out of logs.

// The broker lock is held for a whole test on purpose; each test has its own runtime, so
// blocking its thread while waiting for the lock is harmless.
#![allow(clippy::await_holding_lock)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iemd::config::broker::{BrokerConfig, QueueConfig};
use iemd::config::spool::SpoolConfig;
use iemd::publish::{self, PublishStats};
use iemd::shutdown::Shutdown;
use iemd::spool::{self, SpoolWriter};

use crate::util;
use crate::util::amqp::{drain, drain_ids, plain_url, unique};

/// A realistic alert (about 600 bytes of JSON) with id `id-<i>`.
pub fn alert_json(i: u64) -> Vec<u8> {
    let v = serde_json::json!({
        "schema": "iem.alert/v1", "id": format!("id-{i}"), "kind": "iem", "code": "ES0030010001",
        "severity": {"code": "E", "name": "error"}, "alert_type": "fault",
        "source_type": {"code": "S", "name": "software"},
        "component": {"id": "003", "name": "s3"}, "module": {"id": "001", "name": "Connection"},
        "event": {"id": "0001", "name": "Auth server connection failed"}, "in_catalog": true,
        "message": "S3 server cannot connect to auth server. For more information, refer Troubleshooting Guide.",
        "time": "2026-11-21T22:50:01.123456+00:00",
        "origin": {"kind": "file", "path": "/var/log/messages", "offset": i * 160, "program": "s3server",
                   "pid": "1234", "host": "node1", "priority": 3},
        "raw": "Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:S3 server cannot connect to auth server. For more information, refer Troubleshooting Guide.",
        "host": {"hostname": "node1", "fqdn": "node1.example.com", "machine_id": null, "boot_id": null,
                 "site_id": "1", "rack_id": "1", "node_id": "1", "cluster_id": null}
    });
    serde_json::to_vec(&v).unwrap()
}

pub fn broker_config(name: &str) -> BrokerConfig {
    let n = unique(name);
    BrokerConfig {
        urls: vec![plain_url()],
        exchange: Some(n.clone()),
        queue: Some(QueueConfig {
            name: n,
            kind: Default::default(),
            binding_key: "#".into(),
        }),
        backoff_initial_ms: 50,
        backoff_max_ms: 1000,
        connect_timeout_ms: 3000,
        ..BrokerConfig::default()
    }
}

pub fn spool_config(dir: &std::path::Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.join("spool"),
        ..SpoolConfig::default()
    }
}

/// A running publisher over a fresh spool.
pub struct Running {
    pub writer: SpoolWriter,
    pub stats: Arc<PublishStats>,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), publish::PublishError>>,
    pub _dir: tempfile::TempDir,
}

pub fn start(
    broker: &BrokerConfig,
    spool_cfg: impl FnOnce(&std::path::Path) -> SpoolConfig,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader, _) = spool::open(&spool_cfg(dir.path())).unwrap();
    let stats = Arc::new(PublishStats::new(broker, None));
    let shutdown = Shutdown::new();
    let task = tokio::spawn({
        let (broker, stats, shutdown) = (broker.clone(), stats.clone(), shutdown.clone());
        async move { publish::run(&broker, reader, shutdown, stats).await }
    });
    Running {
        writer,
        stats,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Running {
    /// Waits until the spool's acked position reaches `seq`.
    pub async fn wait_acked(&self, seq: u64, within: Duration) {
        let start = Instant::now();
        while self.writer.stats().acked_seq < seq {
            assert!(
                start.elapsed() < within,
                "acked {} of {seq} after {within:?}",
                self.writer.stats().acked_seq
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.token.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| format!("id-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_alerts_arrive_once_in_order() {
    if !util::broker_available("ten_thousand_alerts_arrive_once_in_order") {
        return;
    }
    let _b = util::broker_lock::shared();
    let broker = broker_config("10k");
    let run = start(&broker, spool_config);
    for chunk in (1..=10_000u64).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Vec<u8>> = chunk.iter().map(|&i| alert_json(i)).collect();
        run.writer.append_batch(&batch).await.unwrap();
    }
    run.wait_acked(10_000, Duration::from_secs(60)).await;
    assert_eq!(
        run.stats
            .published_total
            .load(std::sync::atomic::Ordering::Relaxed),
        10_000
    );
    let queue = broker.queue.clone().unwrap().name;
    run.stop().await;
    let ids = drain_ids(&queue, Duration::from_secs(1)).await;
    assert_eq!(ids, expected(1..=10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_alert_stays_pending() {
    if !util::broker_available("unroutable_alert_stays_pending") {
        return;
    }
    let _b = util::broker_lock::shared();
    // No queue bound: every message is returned as NO_ROUTE.
    let broker = BrokerConfig {
        queue: None,
        ..broker_config("noroute")
    };
    let run = start(&broker, spool_config);
    run.writer.append(&alert_json(1)).await.unwrap();
    let start_t = Instant::now();
    while run
        .stats
        .returns_total
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(
            start_t.elapsed() < Duration::from_secs(20),
            "no return seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Issue 13 item 3: `/health` was "ok" meanwhile; the publisher now says why.
    let (_, why) = run.stats.returning().expect("returns are reported");
    assert!(why.starts_with("312 NO_ROUTE (exchange "), "{why}");
    assert_eq!(run.stats.refusing(), None);
    let s = run.writer.stats();
    assert_eq!(s.acked_seq, 0);
    assert_eq!(s.pending_records, 1);
    assert_eq!(
        run.stats
            .published_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_second_url() {
    if !util::broker_available("fails_over_to_the_second_url") {
        return;
    }
    let _b = util::broker_lock::shared();
    let mut broker = broker_config("failover");
    // Nothing listens on the first URL's port (yet).
    let port = crate::util::amqp::free_port();
    broker.urls = vec![format!("amqp://127.0.0.1:{port}/%2f"), plain_url()];
    let run = start(&broker, spool_config);
    for i in 1..=200 {
        run.writer.append(&alert_json(i)).await.unwrap();
    }
    run.wait_acked(200, Duration::from_secs(30)).await;
    let connected = run.stats.connected();
    assert!(!connected[0].1);
    assert!(connected[1].1);
    // The first URL comes back: nothing is lost, nothing repeated.
    let proxy = crate::util::amqp::proxy_to_broker(port).await;
    for i in 201..=400 {
        run.writer.append(&alert_json(i)).await.unwrap();
    }
    run.wait_acked(400, Duration::from_secs(30)).await;
    let queue = broker.queue.clone().unwrap().name;
    run.stop().await;
    proxy.abort();
    assert_eq!(
        drain_ids(&queue, Duration::from_secs(1)).await,
        expected(1..=400)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing_and_keeps_order() {
    if !util::broker_available("broker_restart_loses_nothing_and_keeps_order") {
        return;
    }
    let _b = util::broker_lock::exclusive();
    let broker = broker_config("restart");
    let run = start(&broker, spool_config);
    // Alerts keep coming (20 every 20 ms, at least 3,000) until the broker is back: on a
    // loaded machine `stop_app` alone can take longer than a fixed batch.
    let back = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = run.writer.clone();
    let feeder = tokio::spawn({
        let back = back.clone();
        async move {
            let mut i = 0u64;
            while i < 3000 || !back.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                writer.append(&alert_json(i)).await.unwrap();
                if i.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            i
        }
    });
    run.wait_acked(300, Duration::from_secs(30)).await;
    let ctl = |arg: &str| {
        let st = tokio::task::block_in_place(|| {
            std::process::Command::new("rabbitmqctl")
                .arg(arg)
                .status()
                .unwrap()
        });
        assert!(st.success(), "rabbitmqctl {arg}");
    };
    let _back = util::broker_lock::StartAppOnDrop;
    ctl("stop_app");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = run.writer.stats();
    ctl("start_app");
    ctl("await_startup");
    back.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = feeder.await.unwrap();
    run.wait_acked(n, Duration::from_secs(120)).await;
    assert!(
        during.acked_seq < during.last_seq,
        "alerts were spooled while the broker was down: {during:?}"
    );
    assert!(
        run.stats
            .retries_total
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let queue = broker.queue.clone().unwrap().name;
    run.stop().await;
    let ids = drain_ids(&queue, Duration::from_secs(1)).await;
    // At-least-once: re-sends after the outage may duplicate; the first occurrences must be
    // every id, in order.
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<String> = ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    assert_eq!(firsts, expected(1..=n));
}

/// A `MakeWriter` collecting everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn credentials_never_reach_the_log() {
    if !util::broker_available("credentials_never_reach_the_log") {
        return;
    }
    let _b = util::broker_lock::shared();
    let captured = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let c = captured.clone();
            move || c.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    let dir = tempfile::tempdir().unwrap();
    let canary = "canary-Pw-7731";
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{canary}\n")).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let broker = BrokerConfig {
        user: Some("guest".into()),
        password_file: Some(pw.clone()),
        urls: vec![plain_url(), format!("amqp://127.0.0.1:1/%2f")],
        ..broker_config("creds")
    };
    tracing::info!(config = ?broker, "effective config");
    // The current-thread runtime keeps the publisher on this thread, under the subscriber.
    let run = start(&broker, spool_config);
    run.writer.append(&alert_json(1)).await.unwrap();
    let start_t = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
        if text.contains("no broker reachable") {
            assert!(!text.contains(canary), "password in log:\n{text}");
            assert!(
                text.contains("ACCESS_REFUSED")
                    || text.contains("refused")
                    || text.contains("auth"),
                "the failure is logged:\n{text}"
            );
            break;
        }
        assert!(
            start_t.elapsed() < Duration::from_secs(20),
            "no failure logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run.writer.stats().acked_seq, 0);
    run.stop().await;
    // A password file others can read is refused.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = publish::credentials(&broker).unwrap_err().to_string();
    assert!(
        err.contains("readable by group or others") && !err.contains(canary),
        "{err}"
    );
}

/// iemd proposes a 16 KiB frame_max (lapin's buffers are 32 frames each): an alert several
/// frames long must still arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_larger_than_a_frame_arrives_whole() {
    if !util::broker_available("alert_larger_than_a_frame_arrives_whole") {
        return;
    }
    let _b = util::broker_lock::shared();
    let broker = broker_config("big");
    let run = start(&broker, spool_config);
    let mut v: serde_json::Value = serde_json::from_slice(&alert_json(1)).unwrap();
    v["message"] = serde_json::Value::String("x".repeat(100_000));
    let big = serde_json::to_vec(&v).unwrap();
    run.writer.append(&big).await.unwrap();
    run.wait_acked(1, Duration::from_secs(30)).await;
    run.stop().await;
    let queue = broker.queue.clone().unwrap().name;
    let conn = lapin::Connection::connect(&util::broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the big alert is in the queue");
    assert_eq!(got.delivery.data, big);
    let _ = ch
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
}

/// Regression: after a broker restart the publisher could sit forever on a session that no
/// longer delivered confirms (seen in CI: "acked 764 of 3000 after 120s"). A session with alerts
/// in flight and no confirm for `stall_timeout_ms` is now given up and everything unconfirmed
/// is sent again on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_silent_is_replaced_and_nothing_is_lost() {
    if !util::broker_available("a_connection_that_goes_silent_is_replaced_and_nothing_is_lost") {
        return;
    }
    let _b = util::broker_lock::shared();
    let port = crate::util::amqp::free_port();
    let proxy = crate::util::amqp::FreezableProxy::start(port).await;
    let mut broker = broker_config("silent");
    broker.urls = vec![format!("amqp://127.0.0.1:{port}/%2f")];
    broker.stall_timeout_ms = 2000;
    let run = start(&broker, spool_config);
    for i in 1..=200 {
        run.writer.append(&alert_json(i)).await.unwrap();
    }
    run.wait_acked(200, Duration::from_secs(30)).await;
    // The connection goes silent: no FIN, no confirms.
    proxy.freeze();
    for i in 201..=400 {
        run.writer.append(&alert_json(i)).await.unwrap();
    }
    run.wait_acked(400, Duration::from_secs(30)).await;
    let queue = broker.queue.clone().unwrap().name;
    run.stop().await;
    proxy.task.abort();
    let mut ids = drain_ids(&queue, Duration::from_secs(1)).await;
    ids.sort_by_key(|id| id.trim_start_matches("id-").parse::<u64>().unwrap());
    ids.dedup();
    assert_eq!(ids, expected(1..=400));
}

/// A channel to the test broker.
async fn channel() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(&util::broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Waits until `cond` holds, polling every 20 ms; panics with `what` after `within`.
async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 18: a nacked alert was retried on the same channel with a backoff doubling to 30 s,
/// and a nack never counted as a stall. A queue that takes 3 messages and nacks the rest
/// (`x-overflow: reject-publish`): the publisher keeps trying on fresh channels and connections
/// without losing or reordering anything, reports the refusal while it lasts, and delivers the
/// rest as soon as there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_alerts_are_retried_on_fresh_channels_until_the_broker_takes_them() {
    if !util::broker_available(
        "nacked_alerts_are_retried_on_fresh_channels_until_the_broker_takes_them",
    ) {
        return;
    }
    let _b = util::broker_lock::shared();
    let broker = BrokerConfig {
        declare: false,
        ..broker_config("nack")
    };
    let (exchange, queue) = (
        broker.exchange_name().to_string(),
        broker.queue.clone().unwrap().name,
    );
    let (conn, ch) = channel().await;
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-max-length".into(),
        lapin::types::AMQPValue::LongLongInt(3),
    );
    args.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(queue.as_str().into(), Default::default(), args)
        .await
        .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let run = start(&broker, spool_config);
    for i in 1..=6 {
        run.writer.append(&alert_json(i)).await.unwrap();
    }
    run.wait_acked(3, Duration::from_secs(30)).await;
    let nacks = || {
        run.stats
            .nacks_total
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // More than NACKS_BEFORE_FAILOVER: the node was left and connected to again.
    wait_until("nacks", Duration::from_secs(30), || nacks() >= 6).await;
    assert!(run.stats.refusing().is_some(), "the refusal is reported");
    assert_eq!(run.stats.returning(), None);
    assert_eq!(
        run.writer.stats().acked_seq,
        3,
        "nothing acked past the refused alert"
    );
    // Room again: the three others arrive, once, in order, and the refusal is over.
    let mut first = Vec::new();
    while first.len() < 3 {
        let got = ch
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .expect("three alerts are in the queue");
        first.push(
            got.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(first, expected(1..=3));
    run.wait_acked(6, Duration::from_secs(30)).await;
    assert_eq!(run.stats.refusing(), None);
    run.stop().await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    assert_eq!(
        drain_ids(&queue, Duration::from_secs(1)).await,
        expected(4..=6)
    );
}

/// Issue 13 item 3: after the queue was deleted under the agent, a returned alert (NO_ROUTE)
/// was retried on the same channel forever without declaring again. With `declare = true` the
/// publisher now declares the topology again, and the alert arrives in the new queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queue_is_declared_again_after_a_return() {
    if !util::broker_available("a_deleted_queue_is_declared_again_after_a_return") {
        return;
    }
    let _b = util::broker_lock::shared();
    let broker = broker_config("deleted");
    let queue = broker.queue.clone().unwrap().name;
    let run = start(&broker, spool_config);
    run.writer.append(&alert_json(1)).await.unwrap();
    run.wait_acked(1, Duration::from_secs(30)).await;
    let (conn, ch) = channel().await;
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    for i in 2..=3 {
        run.writer.append(&alert_json(i)).await.unwrap();
    }
    run.wait_acked(3, Duration::from_secs(30)).await;
    assert!(
        run.stats
            .returns_total
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1,
        "the broker returned the alert sent while the queue was gone"
    );
    assert_eq!(run.stats.returning(), None, "over once delivered");
    run.stop().await;
    let _ = ch
        .exchange_delete(broker.exchange_name().into(), Default::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    assert_eq!(
        drain_ids(&queue, Duration::from_secs(1)).await,
        expected(2..=3)
    );
}

/// `iemctl replay --publish` runs the daemon's publish-and-settle loop once over a list:
/// everything arrives in order with its own id, and nothing is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_records_delivers_a_list_once_in_order() {
    if !util::broker_available("send_records_delivers_a_list_once_in_order") {
        return;
    }
    let _b = util::broker_lock::shared();
    let broker = BrokerConfig {
        // A window smaller than the list: the loop waits for confirms before sending more.
        window: 8,
        ..broker_config("replay")
    };
    let records: Vec<spool::Record> = (1..=300u64)
        .map(|i| spool::Record {
            seq: i + 1000,
            time_ms: 0,
            payload: alert_json(i),
        })
        .collect();
    let mut calls = Vec::new();
    let report = publish::send_records(&broker, &records, |done, total| calls.push((done, total)))
        .await
        .unwrap();
    assert_eq!(
        report,
        publish::SendReport {
            delivered: 300,
            failed: vec![]
        }
    );
    assert_eq!(calls.len(), 300);
    assert_eq!(calls.last(), Some(&(300, 300)));
    let queue = broker.queue.clone().unwrap().name;
    let got = drain(&queue, Duration::from_secs(1)).await;
    let ids: Vec<String> = got
        .iter()
        .map(|p| p.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected(1..=300));
    // Every message's properties: persistent JSON, the alert id and the spool seq as
    // `correlation_id`, and nothing more (issue 20: a property block over 64 bytes costs the
    // broker a fifth to a third of one channel's rate).
    for (i, p) in (1..=300u64).zip(&got) {
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        let seq = (i + 1000).to_string();
        assert_eq!(
            p.correlation_id().as_ref().map(|s| s.as_str()),
            Some(seq.as_str())
        );
        assert_eq!(util::daemon::spool_seq(p), Some(i + 1000));
        assert_eq!(p.timestamp(), &None);
        assert_eq!(p.kind(), &None);
        assert_eq!(p.headers(), &None);
    }
}

/// A refused record is reported by seq and skipped; the others still go out (the daemon, with
/// the same loop, would instead re-send from the first refused one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_records_reports_unroutable_records_by_seq() {
    if !util::broker_available("send_records_reports_unroutable_records_by_seq") {
        return;
    }
    let _b = util::broker_lock::shared();
    // No queue bound: every message is returned as NO_ROUTE.
    let broker = BrokerConfig {
        queue: None,
        ..broker_config("replay-noroute")
    };
    let records: Vec<spool::Record> = [4u64, 7, 9]
        .iter()
        .map(|&seq| spool::Record {
            seq,
            time_ms: 0,
            payload: alert_json(seq),
        })
        .collect();
    let report = publish::send_records(&broker, &records, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        report,
        publish::SendReport {
            delivered: 0,
            failed: vec![4, 7, 9]
        }
    );
}

/// Mandatory publishes to a routing key no queue is bound to come back (`basic.return`, then
/// the ack): in one batch of routable and unroutable alerts, exactly the unroutable ones are
/// reported, by seq (the return is matched to its message by its spool seq, the `correlation_id`), and the
/// others are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_in_a_batch_are_matched_to_their_records() {
    if !util::broker_available("returns_in_a_batch_are_matched_to_their_records") {
        return;
    }
    let _b = util::broker_lock::shared();
    let mut broker = broker_config("replay-mixed");
    if let Some(q) = broker.queue.as_mut() {
        q.binding_key = "iem.error.#".into();
    }
    let records: Vec<spool::Record> = (1..=6u64)
        .map(|seq| {
            let mut v: serde_json::Value = serde_json::from_slice(&alert_json(seq)).unwrap();
            if seq % 2 == 1 {
                v["severity"]["name"] = "warning".into();
            }
            spool::Record {
                seq,
                time_ms: 0,
                payload: serde_json::to_vec(&v).unwrap(),
            }
        })
        .collect();
    let report = publish::send_records(&broker, &records, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        report,
        publish::SendReport {
            delivered: 3,
            failed: vec![1, 3, 5]
        }
    );
    let queue = broker.queue.clone().unwrap().name;
    assert_eq!(
        drain_ids(&queue, Duration::from_secs(1)).await,
        ["id-2", "id-4", "id-6"]
    );
}

/// The publisher takes `frame_max` from the URL (4096, the least a broker accepts) and cuts a
/// body five times larger into body frames within it: a frame over the agreed size would make
/// the broker close the connection (FRAME_ERROR), so the alert arriving whole shows both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_frame_max_from_the_url_still_delivers_a_larger_body_whole() {
    if !util::broker_available("a_small_frame_max_from_the_url_still_delivers_a_larger_body_whole")
    {
        return;
    }
    let _b = util::broker_lock::shared();
    let mut broker = broker_config("frame4k");
    broker.urls = vec![format!("{}?frame_max=4096", plain_url())];
    let mut v: serde_json::Value = serde_json::from_slice(&alert_json(1)).unwrap();
    v["message"] = serde_json::Value::String("y".repeat(20_000));
    let big = serde_json::to_vec(&v).unwrap();
    let rec = spool::Record {
        seq: 1,
        time_ms: 0,
        payload: big.clone(),
    };
    let report = publish::send_records(&broker, &[rec], |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.failed, Vec::<u64>::new());
    let queue = broker.queue.clone().unwrap().name;
    let conn = lapin::Connection::connect(&util::broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the alert is in the queue");
    assert_eq!(got.delivery.data, big);
    let _ = ch
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
}

/// The publisher reads its connection while idle too: with a 1 s heartbeat from the URL, an
/// idle publisher answers and is answered, so it is not taken for silent (nothing read for two
/// heartbeats) and keeps its connection; a publisher that read only while alerts were in flight
/// reconnected every 2 s of idleness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_publisher_keeps_its_connection_through_heartbeats() {
    if !util::broker_available("an_idle_publisher_keeps_its_connection_through_heartbeats") {
        return;
    }
    let _b = util::broker_lock::shared();
    let mut broker = broker_config("idle");
    broker.urls = vec![format!("{}?heartbeat=1", plain_url())];
    let run = start(&broker, spool_config);
    run.writer.append(&alert_json(1)).await.unwrap();
    run.wait_acked(1, Duration::from_secs(30)).await;
    // Five heartbeats of idleness.
    tokio::time::sleep(Duration::from_secs(5)).await;
    run.writer.append(&alert_json(2)).await.unwrap();
    run.wait_acked(2, Duration::from_secs(30)).await;
    let retries = run
        .stats
        .retries_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(retries, 0, "the idle connection was given up");
    run.stop().await;
    let queue = broker.queue.clone().unwrap().name;
    assert_eq!(
        drain_ids(&queue, Duration::from_secs(1)).await,
        expected(1..=2)
    );
}

/// No broker reachable: an error that names every URL (without its password), not a hang.
#[tokio::test]
async fn send_records_without_a_broker_names_the_urls() {
    let port = crate::util::amqp::free_port();
    let broker = BrokerConfig {
        urls: vec![format!("amqp://127.0.0.1:{port}/%2f")],
        connect_timeout_ms: 2000,
        ..BrokerConfig::default()
    };
    let rec = spool::Record {
        seq: 1,
        time_ms: 0,
        payload: alert_json(1),
    };
    let err = publish::send_records(&broker, &[rec], |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("no broker reachable"), "{err}");
}
