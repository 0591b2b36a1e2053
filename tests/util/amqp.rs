//! Broker helpers shared by the tests: unique names, the plain URL, draining a queue.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

/// A unique name for this test's exchange and queue.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("iemd-test-{name}-{}-{nanos}", std::process::id())
}

/// The broker URL without credentials (the publisher takes those from elsewhere).
pub fn plain_url() -> String {
    let addr = std::env::var("IEMD_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    format!("amqp://{addr}/%2f")
}

/// Every message id in `queue` (consumed with auto-ack until it stays empty for `idle`), then
/// deletes the queue.
pub async fn drain_ids(queue: &str, idle: Duration) -> Vec<String> {
    let conn = lapin::Connection::connect(&super::broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(idle, consumer.next()).await {
        let d = d.unwrap();
        ids.push(d.properties.message_id().as_ref().unwrap().to_string());
    }
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    ids
}
