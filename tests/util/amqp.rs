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
    drain(queue, idle)
        .await
        .iter()
        .map(|p| p.message_id().as_ref().unwrap().to_string())
        .collect()
}

/// Consumes `queue` until it stays empty for `idle`, then deletes it; returns each delivery's
/// properties in arrival order.
pub async fn drain(queue: &str, idle: Duration) -> Vec<lapin::BasicProperties> {
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
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(idle, consumer.next()).await {
        got.push(d.unwrap().properties);
    }
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    got
}

/// A free TCP port on 127.0.0.1 that nothing listens on (yet).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Opens `port` as a TCP proxy to the test broker: a broker URL that comes up late, while the
/// real broker stays up for the other tests. Abort the handle to close it.
pub async fn proxy_to_broker(port: u16) -> tokio::task::JoinHandle<()> {
    let target = std::env::var("IEMD_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// A proxy to the test broker whose connections can be frozen: a frozen connection stays open
/// but carries nothing either way (a peer that died without a FIN). Connections accepted after
/// a freeze work.
pub struct FreezableProxy {
    pub task: tokio::task::JoinHandle<()>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FreezableProxy {
    pub async fn start(port: u16) -> FreezableProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let target =
            std::env::var("IEMD_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let frozen_below = Arc::new(AtomicU64::new(0));
        let (acc, frz) = (accepted.clone(), frozen_below.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let id = acc.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut from, mut to) in [(ri, wo), (ro, wi)].map(|(r, w)| {
                    (
                        Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(w) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    )
                }) {
                    let frz = frz.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 << 10];
                        loop {
                            if id < frz.load(Ordering::SeqCst) {
                                // Frozen: hold both ends open, move nothing.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                            match tokio::time::timeout(
                                Duration::from_millis(50),
                                from.read(&mut buf),
                            )
                            .await
                            {
                                Err(_) => continue,
                                Ok(Ok(0)) | Ok(Err(_)) => return,
                                Ok(Ok(n)) => {
                                    if to.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        FreezableProxy {
            task,
            accepted,
            frozen_below,
        }
    }

    /// Freezes every connection accepted so far.
    pub fn freeze(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}
