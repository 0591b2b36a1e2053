//! The exchange and queue the publisher benchmarks publish to, declared the way iemd declares
//! them, and iemd's broker configuration for them. Included by path from `benches/e2e.rs`,
//! `benches/publish.rs` and `benches/lean.rs`.

use iemd::config::broker::{BrokerConfig, QueueConfig};
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

/// iemd's broker configuration for the exchange and queue `name` on the local broker (the
/// default guest credentials), with `window` messages in flight.
pub fn broker_config(name: &str, window: usize) -> BrokerConfig {
    BrokerConfig {
        urls: vec!["amqp://127.0.0.1:5672/%2f".into()],
        exchange: Some(name.into()),
        queue: Some(QueueConfig {
            name: name.into(),
            kind: Default::default(),
            binding_key: "#".into(),
        }),
        window,
        ..BrokerConfig::default()
    }
}
