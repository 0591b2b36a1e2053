//! Publishing to RabbitMQ: drains the spool in order, with publisher confirms, and acks the
//! spool only for what the broker confirmed.
//!
//! Delivery rule: a message is delivered when the broker acks it and did not return it. With
//! `mandatory` set, an unroutable message comes back as `basic.return` *followed by* an ack;
//! `confirm` matches the return to its message (by its spool seq, the `correlation_id`) and
//! counts that ack as a failure, as is a `Nack` or a channel or connection error. On failure the
//! publisher re-sends from the first unconfirmed record, so order is kept and messages after the
//! failed one may be delivered twice (at-least-once; the alert id is the message id for
//! de-duplication).
//!
//! What it does before re-sending depends on the failure:
//! - connection or channel lost, or no confirm for `stall_timeout_ms`: connect again after the
//!   backoff, trying the nodes not given up on first (`connect::connect_order`);
//! - `Nack` (the node refuses, e.g. its quorum queue has no leader yet after a crash): a fresh
//!   channel on the same connection after a short delay (`confirm::NACK_RETRY_FIRST`, doubling
//!   while the nacks continue); after `confirm::NACKS_BEFORE_FAILOVER` nacks in a row, or nacks
//!   for longer than `confirm::NACK_FAILOVER_AFTER`, the next node. A nack is an answer, so the
//!   stall timeout would never end such a run by itself;
//! - return (no queue bound, e.g. the queue was deleted): with `declare = true`, declare the
//!   topology again on a fresh channel after the backoff; without, connect again.
//!
//! A run of nacks or returns is an episode: logged once when it starts and once when an alert is
//! delivered again, and shown by [`PublishStats::refusing`] / [`PublishStats::returning`]
//! (`/health`) meanwhile.
//!
//! Confirms are consumed in publish order, so "every confirm so far was `Ack(None)`" makes the
//! spool's acked position a prefix of the log (the [`Output`] contract).
//!
//! # Layout
//!
//! - `credentials`: the broker user and password, from the environment, systemd or a file.
//! - `tls`: rustls for `amqps://`, trusting only `ca_file` when it is set.
//! - `wire`: the publisher's own AMQP client (handshake, confirming channel, declarations,
//!   publishes appended to one buffer and written per batch, acks/nacks/returns, heartbeats).
//! - `connect`: URL order (local first, per-host shuffle, failed nodes last), the one
//!   connect-first loop, a session (connection + confirming channel + topology); `iemctl
//!   tail`'s lapin connection ([`connect_any`]).
//! - `message`: one spooled record as one AMQP message (routing key, body, headers).
//! - `confirm`: the one publish-and-settle loop (confirm order, window, acks) and the
//!   nack/return episodes.
//! - `stats`: the counters and the refusal episode the metrics and `/health` read.
//! - `run`: the daemon's pump ([`run`]) and `iemctl replay --publish` ([`send_records`]).
//!
//! [`Amqp`] is this module's [`Output`]: the pipeline starts it through that seam.
//!
//! # Why a client of our own (issue 20)
//!
//! lapin runs its socket on an I/O thread of its own: every `basic_publish` is handed to that
//! thread (a futex wake-up each way) and its frames are built in lapin's buffers. Awaited one
//! message at a time, as iemd first did, that cost one `sendto` and five futex hand-offs per
//! message (`strace -f -c`, 20,000 messages: 20,059 `sendto`, 110,765 `futex`; 20-22 us of CPU
//! per message); with the window of publishes kept in flight, 402 `sendto` and 2,743 `futex`,
//! 6.7-7.4 us, and lapin's thread still took a quarter of the daemon's CPU. lapin 4 has no
//! setting that moves that loop onto tokio.
//!
//! So `wire` is a publisher of our own on tokio, driven by the publishing task alone: a publish
//! appends its frames to one reusable buffer (no I/O, no hand-off), the loop in `confirm` takes
//! every record the window allows and writes them in one flush, and acks are read by the same
//! task. The codec is not ours: frames are encoded and parsed by `amq-protocol`, the crate lapin
//! itself uses (the publish frames are written directly for our fixed property set, pinned by
//! tests to its parser). Confirms, `mandatory`, persistent messages, in-order resend, failover
//! and TLS (the same trust rule, one rustls config) behave as before; every publisher test
//! passes unchanged. Measured with `cargo bench --bench lean` (100,000 messages of 1,164 bytes,
//! window 256, each publisher a process of its own): 1.3-1.6 us of CPU per message, against
//! 8.2-8.8 us for lapin pipelined in the same run, and 179 `sendto` per 20,000 messages against
//! 511 (docs/PERFORMANCE.md, "Lean publishing (issue 20)").
//!
//! amqprs (tokio tasks, no thread of its own) was not taken: its confirms, nacks and returns
//! arrive through a `ChannelCallback` rather than per publish, so the in-order settling and the
//! return-then-ack rule would be rebuilt on it anyway, beside a client we do not control.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::broker::BrokerConfig;
use crate::output::{Output, OutputError};
use crate::shutdown::Shutdown;
use crate::spool::{SpoolError, SpoolReader};

mod confirm;
mod connect;
mod credentials;
mod message;
mod run;
mod stats;
mod tls;
mod wire;

pub use connect::{connect_any, preferred_order};
pub use credentials::{Credentials, credentials};
pub use run::{SendReport, run, send_records};
pub(crate) use stats::LatencyObserver;
pub use stats::PublishStats;
use stats::Refusal;

/// Errors that stop the publisher (a broker being away is not one: that is retried forever).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker credentials: {0}")]
    Credentials(String),
    #[error("broker TLS: {0}")]
    Tls(String),
    #[error("broker URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("no broker reachable: {0}")]
    Unreachable(String),
    #[error("{key} {name:?} cannot be sent over AMQP: {reason}")]
    AmqpName {
        key: &'static str,
        name: String,
        reason: amq_protocol::types::ShortStringError,
    },
}

/// The AMQP publisher as an [`Output`]: [`run`] over the spool reader, counting in `stats`.
pub(crate) struct Amqp {
    config: BrokerConfig,
    stats: Arc<PublishStats>,
}

impl Amqp {
    pub(crate) fn new(config: BrokerConfig, stats: Arc<PublishStats>) -> Self {
        Amqp { config, stats }
    }
}

impl Output for Amqp {
    fn name(&self) -> &'static str {
        "publisher"
    }

    fn run(
        &self,
        records: SpoolReader,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), OutputError>> {
        let (config, stats) = (self.config.clone(), self.stats.clone());
        Box::pin(async move { Ok(run(&config, records, shutdown, stats).await?) })
    }
}
