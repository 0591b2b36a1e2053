//! The exchange and queue the publisher benchmarks publish to, declared the way iemd declares
//! them. Included by path from `benches/e2e.rs`, `benches/publish.rs` and `benches/lean.rs`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// A topic exchange `name` (durable when `durable_exchange`: syslog-ng's `amqp()` declares its
/// exchange non-durable, and a second declaration must match) and a durable classic queue of
/// the same name bound to it with `#`.
pub async fn declare(ch: &lapin::Channel, name: &str, durable_exchange: bool) {
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: durable_exchange,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        name.into(),
        name.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
}
