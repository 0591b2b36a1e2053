//! Publishing to RabbitMQ: drains the spool in order, with publisher confirms, and acks the
//! spool only for what the broker confirmed.
//!
//! Delivery rule: a message is delivered when its confirm is `Ack(None)`. With `mandatory` set,
//! an unroutable message comes back as `basic.return` *followed by* an ack; lapin folds the two
//! into `Ack(Some(returned))`, which is therefore a failure, as is a `Nack` or a channel or
//! connection error. On failure the publisher re-sends from the first unconfirmed record, so
//! order is kept and messages after the failed one may be delivered twice (at-least-once; the
//! alert id is the message id for de-duplication).
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
//! - `connect`: URL order (local first, per-host shuffle, failed nodes last), the one
//!   connect-first loop, a session (connection + confirming channel + topology).
//! - `message`: one spooled record as one AMQP message (routing key, body, headers).
//! - `confirm`: the one publish-and-settle loop (confirm order, window, acks) and the
//!   nack/return episodes.
//! - `stats`: the counters and the refusal episode the metrics and `/health` read.
//! - `run`: the daemon's pump ([`run`]) and `iemctl replay --publish` ([`send_records`]).
//!
//! [`Amqp`] is this module's [`Output`]: the pipeline starts it through that seam.
//!
//! # Why lapin, pipelined (issue 20)
//!
//! lapin runs its socket on an I/O thread of its own, and `basic_publish(..).await` resolves
//! only once that thread has written the message. Awaited one message at a time, as iemd did
//! and the plain publisher of the benches still does, every message cost one `sendto` and five
//! futex hand-offs between our task and that thread (`strace -f -c`, 20,000 messages: 20,059
//! `sendto`, 110,765 `futex`; 20-22 us of CPU per message). lapin 4 has no setting that moves
//! its I/O onto the tokio reactor (`Connection::connector` takes an `async_rs` runtime for
//! spawning and connecting, the loop itself stays a thread), and frames are already coalesced
//! by that thread whenever several are queued. So `confirm` keeps the window of publishes *in
//! flight* instead of awaiting each: every publish is polled once when it is made (its frames
//! are queued in spool order), and its write and confirm are awaited together, in order. Same
//! 20,000 messages: 402 `sendto` (about 50 messages a write), 2,743 `futex`, and 6.7-7.4 us of
//! CPU per message, a third of before, with the same client, so confirms, `mandatory`,
//! persistent messages, in-order resend, failover and TLS are unchanged.
//!
//! amqprs (tokio tasks, no thread of its own) was not measured: its confirms, nacks and returns
//! arrive through a `ChannelCallback` (`publish_ack` / `publish_nack` / `publish_return`) rather
//! than per publish, so the in-order settling, "a return followed by its ack is a failure" and
//! the `ca_file`-only trust rule would all be rebuilt on it, for a gain lapin pipelined already
//! gets. A hand-written AMQP publisher is not warranted by these figures
//! (docs/PERFORMANCE.md, "Lean publishing (issue 20)").

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
        reason: lapin::types::ShortStringError,
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
