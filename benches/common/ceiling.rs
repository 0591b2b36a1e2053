//! The ceiling the publisher benchmarks measure iemd against: a plain lapin publisher with
//! confirms, persistent and mandatory messages, a window of confirms in flight. Included by path
//! from `benches/publish.rs` and `benches/e2e.rs`, so both compare with the same thing.

use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

/// Publishes `n` messages, cycling through `bodies`, to `exchange` with routing key
/// `iem.error.s3`, at most `window` unconfirmed; every confirm must be a plain ack. Messages/s.
pub async fn publish_confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    bodies: &[Vec<u8>],
    n: usize,
    window: usize,
) -> f64 {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let t = Instant::now();
    let mut inflight = FuturesOrdered::new();
    for i in 0..n {
        if inflight.len() >= window {
            let c: lapin::Result<lapin::Confirmation> = inflight.next().await.expect("confirm");
            assert!(matches!(
                c.expect("confirm"),
                lapin::Confirmation::Ack(None)
            ));
        }
        let props = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let confirm = ch
            .basic_publish(
                exchange.into(),
                "iem.error.s3".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &bodies[i % bodies.len()],
                props,
            )
            .await
            .expect("publish");
        inflight.push_back(confirm);
    }
    while let Some(c) = inflight.next().await {
        assert!(matches!(
            c.expect("confirm"),
            lapin::Confirmation::Ack(None)
        ));
    }
    n as f64 / t.elapsed().as_secs_f64()
}
