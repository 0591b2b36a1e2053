//! Publisher drain rate from a full spool, beside a plain lapin publisher with confirms sending
//! the same messages to the same broker in the same run (the ceiling).
//!
//! Run (RabbitMQ on 127.0.0.1:5672, guest/guest): `cargo bench --bench publish`

#[path = "common/ceiling.rs"]
mod ceiling;
#[path = "common/topology.rs"]
mod topology;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iemd::config::broker::BrokerConfig;
use iemd::config::spool::SpoolConfig;
use iemd::publish::PublishStats;
use iemd::shutdown::Shutdown;
use lapin::options::{QueueDeleteOptions, QueuePurgeOptions};

const N: u64 = 50_000;
const WINDOW: usize = 256;

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!(
        r#"{{"schema":"iem.alert/v1","id":"{i:032x}","kind":"iem","severity":{{"code":"E","name":"error"}},"component":{{"id":"003","name":"s3"}},"message":"S3 server cannot connect to auth server.","time":"2026-11-21T22:50:01+00:00"}}"#
    )
    .into_bytes();
    p.resize(600, b' ');
    p
}

async fn plain(url: &str, exchange: &str, payloads: &[Vec<u8>]) -> f64 {
    let conn = lapin::Connection::connect(url, Default::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let rate = ceiling::publish_confirmed(&ch, exchange, payloads, payloads.len(), WINDOW).await;
    let _ = conn.close(200, "bye".into()).await;
    rate
}

/// Alternated rounds of (ceiling, iemd).
const ROUNDS: usize = 3;

/// iemd's publisher draining a spool filled with `payloads` before it starts: msg/s.
async fn drain_full_spool(broker: &BrokerConfig, payloads: &[Vec<u8>]) -> f64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (w, reader, _) = iemd::spool::open(&SpoolConfig {
        dir: tmp.path().join("spool"),
        max_bytes: 4 << 30,
        ..SpoolConfig::default()
    })
    .expect("spool");
    for chunk in payloads.chunks(256) {
        w.append_batch(chunk).await.expect("append");
    }
    let n = payloads.len() as u64;
    w.wait_durable(n).await;
    let stats = Arc::new(PublishStats::new(broker, None));
    let shutdown = Shutdown::new();
    let t = Instant::now();
    let task = tokio::spawn({
        let (broker, stats, shutdown) = (broker.clone(), stats.clone(), shutdown.clone());
        async move { iemd::publish::run(&broker, reader, shutdown, stats).await }
    });
    while w.stats().acked_seq < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    shutdown.token.cancel();
    task.await.expect("join").expect("publisher");
    assert_eq!(stats.published_total.load(Ordering::Relaxed), n);
    rate
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let name = format!("iemd-bench-{}", std::process::id());
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
        let conn = lapin::Connection::connect(url, Default::default())
            .await
            .expect("no broker at 127.0.0.1:5672");
        let admin = conn.create_channel().await.expect("channel");
        topology::declare(&admin, &name, true).await;
        let payloads: Vec<Vec<u8>> = (0..N).map(payload).collect();
        let broker = topology::broker_config(&name, WINDOW);
        let purge = || async {
            admin
                .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
                .await
                .expect("purge");
        };
        // Rounds alternate ceiling and iemd, so that load from other processes hits both alike;
        // the best of each counts.
        let (mut ceiling, mut drain) = (0f64, 0f64);
        for round in 1..=ROUNDS {
            let c = plain(url, &name, &payloads).await;
            purge().await;
            let d = drain_full_spool(&broker, &payloads).await;
            purge().await;
            println!(
                "round {round}: ceiling {c:>8.0} msg/s, iemd {d:>8.0} msg/s ({:.0}%)",
                100.0 * d / c
            );
            ceiling = ceiling.max(c);
            drain = drain.max(d);
        }
        println!("best of {ROUNDS} rounds:");
        println!("plain lapin publisher with confirms (ceiling): {ceiling:>8.0} msg/s");
        println!("iemd publisher draining a full spool:          {drain:>8.0} msg/s");
        println!("ratio: {:.0}% (target >= 90%)", 100.0 * drain / ceiling);
        let _ = admin
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = admin
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    });
}
