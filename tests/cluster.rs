//! Integration tests: cluster. Publishing to a real three-node RabbitMQ cluster (see
//! `util::cluster`) while the node the publisher is connected to goes away.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::util::{self, cluster, cluster::Cluster};

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("iemd-test-cluster-{name}-{}-{nanos}", std::process::id())
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// A confirming channel on node `n`.
async fn open(n: usize) -> Result<(Connection, Channel), lapin::Error> {
    let conn = Connection::connect(&Cluster::url(n), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

/// Message ids read from `queue` (through node `n`) until `want` distinct ids arrived or the
/// queue stayed silent for `quiet`; returns the count of every id.
async fn drain(n: usize, queue: &str, want: usize, quiet: Duration) -> HashMap<String, u32> {
    let (conn, ch) = open(n).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < want {
        match tokio::time::timeout(quiet, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let id = d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                *seen.entry(id).or_default() += 1;
            }
            Ok(Some(Err(e))) => panic!("consumer: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = conn.close(200, "drained".into()).await;
    seen
}

/// The harness and the broker behaviour without iemd: a quorum queue keeps taking confirmed
/// publishes when the node the publisher is connected to stops; the publisher re-sends what was
/// not confirmed through another node, and every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_keeps_every_message_when_the_connected_node_stops() {
    if !util::broker_available("quorum_queue_keeps_every_message_when_the_connected_node_stops") {
        return;
    }
    let t0 = Instant::now();
    let cluster = Cluster::start();
    let name = unique("raw");
    let (mut conn, mut ch) = open(2).await.unwrap();
    ch.exchange_declare(
        name.as_str().into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        quorum_args(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        name.as_str().into(),
        name.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let members = cluster::quorum_members(&name);
    assert_eq!(members.len(), 3, "quorum queue members: {members:?}");

    const N: usize = 6000;
    const BATCH: usize = 50;
    let mut node = 2;
    let mut next = 0; // first id not yet confirmed
    let mut failovers = 0;
    let mut resent = 0;
    let mut stopper = None;
    while next < N {
        // Stop node 2 in the background once a third is through, while batches are in flight.
        if next >= N / 3 && stopper.is_none() {
            let n2 = cluster.node(2);
            stopper = Some(std::thread::spawn(move || cluster::stop_app(&n2)));
        }
        if stopper.is_some() && failovers == 0 {
            // Keep the stream going (slowly) until the stop takes effect.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let end = (next + BATCH).min(N);
        let mut confirms = Vec::new();
        let mut ok = true;
        for i in next..end {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(format!("m{i}").into());
            match ch
                .basic_publish(
                    name.as_str().into(),
                    "k".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    format!("{i}").as_bytes(),
                    props,
                )
                .await
            {
                Ok(c) => confirms.push(c),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        for c in confirms {
            if !matches!(c.await, Ok(Confirmation::Ack(None))) {
                ok = false;
            }
        }
        if ok {
            next = end;
            continue;
        }
        // Everything from `next` on is re-sent (same ids) through another node.
        resent += end - next;
        failovers += 1;
        assert!(failovers < 20, "no failover succeeded");
        let _ = conn.close(200, "failing over".into()).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let candidates = [3, 1].into_iter().filter(|&m| m != node);
            let mut opened = None;
            for m in candidates.chain([node]) {
                if let Ok(o) = open(m).await {
                    opened = Some((m, o));
                    break;
                }
            }
            if let Some((m, o)) = opened {
                eprintln!("raw publisher: node {node} lost at id {next}, now on node {m}");
                node = m;
                (conn, ch) = o;
                break;
            }
            assert!(Instant::now() < deadline, "no node reachable");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stopper
        .expect("node 2 was stopped")
        .join()
        .expect("stop_app");
    assert!(failovers >= 1, "the publisher never saw node 2 go");
    assert_ne!(node, 2);
    let _ = conn.close(200, "done".into()).await;

    let seen = drain(3, &name, N, Duration::from_secs(5)).await;
    let missing: Vec<usize> = (0..N)
        .filter(|i| !seen.contains_key(&format!("m{i}")))
        .collect();
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "raw publisher: {N} ids, {failovers} failover(s), {resent} re-sent, {duplicates} duplicate(s), {} missing, {:.1} s",
        missing.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(missing.is_empty(), "missing ids: {missing:?}");
    assert_eq!(seen.len(), N);

    let (c, ch) = open(1).await.unwrap();
    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let _ = c.close(200, "cleanup".into()).await;
    drop(cluster);
}
