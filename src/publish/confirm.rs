//! Confirm ordering: the one publish-and-settle loop, shared by the daemon's pump and
//! `iemctl replay --publish`, and what the daemon does about a run of nacks and returns.
//!
//! Confirms are consumed in publish order (`FuturesOrdered`), at most `broker.window` in flight,
//! so "every confirm so far was `Ack(None)`" makes the acked position a prefix of the log: the
//! loop acks the records up to the last delivered one, and never past a record that was not.
//!
//! Publishes are pipelined, not awaited one by one: lapin writes on its own I/O thread, and
//! `basic_publish(..).await` returns only once that thread has written the frames, so awaiting
//! each publish before the next cost a `sendto` and about five futex hand-offs per message
//! (issue 20). Each publish is polled once as it is made, which queues its frames behind the
//! previous record's (the wire order is the spool order), and then waits in `inflight` for its
//! write and its confirm together; the I/O thread writes whatever has queued in one `sendto`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use tokio_util::sync::CancellationToken;

use super::connect::Session;
use super::message::message;
use super::{PublishError, PublishStats, Refusal};
use crate::config::broker::BrokerConfig;
use crate::output::Records;

/// Acks after this many confirms in a row (and whenever nothing is in flight).
const ACK_BATCH: u64 = 64;

/// One publish, from queuing its frames to the broker's confirm.
type Confirming<'s> = Pin<Box<dyn Future<Output = Result<Confirmation, lapin::Error>> + Send + 's>>;

/// Why a publish-and-settle loop over one session ended.
#[derive(Debug)]
pub(super) enum Ended {
    Shutdown,
    /// The records ended and every confirm is in (only a list ends; the spool does not).
    Drained,
    /// The connection or channel is unusable, or stalled: connect again.
    Lost,
    /// The broker nacked an alert.
    Nacked,
    /// The broker returned an alert as unroutable (the reason, for the log and `/health`).
    Returned(String),
}

/// Publishes the records of `records` on `session`, mandatory and persistent, at most
/// `config.window` unconfirmed, and settles their confirms in publish order, acking `records`
/// up to the last delivered one (every [`ACK_BATCH`] confirms, when nothing is in flight, and at
/// the end).
///
/// `on_settled(seq, answer)` is told of every confirm, in order. After a refusal (nack or
/// return) it says whether to go on: `false` ends the loop ([`Ended::Nacked`] /
/// [`Ended::Returned`]), so the caller re-sends from the first record not acked (the daemon);
/// `true` skips the record (`iemctl replay`, which sends each record once), and nothing after
/// it is acked. A lost channel or connection, or no confirm for `stall_timeout_ms` (also when
/// the publishes cannot even be written: a blocked connection) end the loop ([`Ended::Lost`]).
/// At shutdown, what is in flight gets `shutdown_timeout_ms` to be confirmed, so that it is
/// acked and not re-sent at the next start.
pub(super) async fn publish_and_settle<R: Records>(
    config: &BrokerConfig,
    exchange: &ShortString,
    stats: &PublishStats,
    session: &Session,
    records: &mut R,
    token: &CancellationToken,
    mut on_settled: impl FnMut(u64, &Settled) -> bool,
) -> Result<Ended, PublishError> {
    let mut inflight = FuturesOrdered::new();
    // The last record delivered with every record before it: what may be acked.
    let mut confirmed: Option<u64> = None;
    // A refused record was skipped: nothing after it may be acked.
    let mut gap = false;
    let mut drained = false;
    let mut unacked = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The last time a confirm came back (or the window was empty): a session with alerts in
    // flight and no confirm for `stall_timeout_ms` is given up, whatever its status says.
    let mut progress = tokio::time::Instant::now();
    // A broker that holds confirms (a quorum queue without quorum) costs a reconnect and
    // duplicates (same ids) every stall timeout; a connection that died silently costs no more.
    let stall = Duration::from_millis(config.stall_timeout_ms);
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let usable = || session.conn.status().connected() && session.channel.status().connected();
    let ended = loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                let wait = Duration::from_millis(config.shutdown_timeout_ms);
                let _ = tokio::time::timeout(wait, async {
                    while let Some((seq, time_ms, res)) = inflight.next().await {
                        let settled = settle(seq, time_ms, res, stats);
                        on_settled(seq, &settled);
                        if settled != Settled::Delivered {
                            break;
                        }
                        if !gap {
                            confirmed = Some(seq);
                        }
                    }
                }).await;
                break Ended::Shutdown;
            }
            Some((seq, time_ms, res)) = inflight.next(), if !inflight.is_empty() => {
                let settled = settle(seq, time_ms, res, stats);
                let go_on = on_settled(seq, &settled);
                match settled {
                    Settled::Delivered => {
                        if !gap {
                            confirmed = Some(seq);
                        }
                        unacked += 1;
                    }
                    Settled::Lost => break Ended::Lost,
                    _ if !usable() => break Ended::Lost,
                    _ if go_on => gap = true,
                    Settled::Nacked => break Ended::Nacked,
                    Settled::Returned(reason) => break Ended::Returned(reason),
                }
                progress = tokio::time::Instant::now();
                if (unacked >= ACK_BATCH || inflight.is_empty())
                    && let Some(c) = confirmed
                {
                    records.ack(c);
                    unacked = 0;
                }
                if drained && inflight.is_empty() {
                    break Ended::Drained;
                }
            }
            rec = records.next(), if !drained && inflight.len() < config.window => {
                let Some(rec) = rec? else {
                    drained = true;
                    if inflight.is_empty() {
                        break Ended::Drained;
                    }
                    continue;
                };
                if inflight.is_empty() {
                    progress = tokio::time::Instant::now();
                }
                let (seq, time_ms) = (rec.seq, rec.time_ms);
                // The record moves in, so that the body is borrowed from it, not copied.
                let mut publish: Confirming<'_> = Box::pin(async move {
                    let out = message(config, &rec);
                    let (key, props) = (out.routing_key, out.properties);
                    let channel = &session.channel;
                    let confirm = channel
                        .basic_publish(exchange.clone(), key, mandatory, &out.body, props)
                        .await?;
                    confirm.await
                });
                // Polled once here, so that its frames are queued now, behind the previous
                // record's: the wire order is the spool order. Not awaited: see the module doc.
                let first = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx)))
                    .await;
                inflight.push_back(async move {
                    let res = match first {
                        Poll::Ready(res) => res,
                        Poll::Pending => publish.await,
                    };
                    (seq, time_ms, res)
                });
            }
            _ = tick.tick() => {
                if !usable() {
                    break Ended::Lost;
                }
                if !inflight.is_empty() && progress.elapsed() > stall {
                    tracing::warn!(in_flight = inflight.len(),
                        "no confirm from the broker for {stall:?}; reconnecting and sending again");
                    break Ended::Lost;
                }
            }
        }
    };
    if let Some(c) = confirmed {
        records.ack(c);
    }
    Ok(ended)
}

/// What the broker answered to one publish.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    Delivered,
    Nacked,
    /// Returned as unroutable: `<code> <text> (exchange .., routing key ..)`.
    Returned(String),
    /// No answer: the channel or connection failed.
    Lost,
}

/// Accounts for one confirm in the counters (and the latency of a delivered alert).
fn settle(
    seq: u64,
    time_ms: i64,
    res: Result<Confirmation, lapin::Error>,
    stats: &PublishStats,
) -> Settled {
    match res {
        Ok(Confirmation::Ack(None)) => {
            stats.published_total.fetch_add(1, Ordering::Relaxed);
            if let Some(observe) = &stats.latency {
                let ms = chrono::Utc::now().timestamp_millis() - time_ms;
                observe(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            }
            Settled::Delivered
        }
        Ok(Confirmation::Ack(Some(returned))) => {
            stats.returns_total.fetch_add(1, Ordering::Relaxed);
            Settled::Returned(format!(
                "{} {} (exchange {:?}, routing key {:?})",
                returned.reply_code,
                returned.reply_text,
                returned.delivery.exchange.as_str(),
                returned.delivery.routing_key.as_str()
            ))
        }
        Ok(Confirmation::Nack(_)) => {
            stats.nacks_total.fetch_add(1, Ordering::Relaxed);
            Settled::Nacked
        }
        Ok(Confirmation::NotRequested) => {
            tracing::error!(seq, "publisher confirms are not active on the channel");
            Settled::Lost
        }
        Err(e) => {
            tracing::warn!(seq, error = %e, "no confirm for an alert; it stays in the spool and is retried");
            Settled::Lost
        }
    }
}

/// Retry delay after the first nack on a node; it doubles with each further nack in a row.
pub(super) const NACK_RETRY_FIRST: Duration = Duration::from_millis(25);
/// Nacks in a row on one node after which the next node is tried.
pub(super) const NACKS_BEFORE_FAILOVER: u32 = 3;
/// A node refusing for this long is left for the next one, however few nacks that took.
pub(super) const NACK_FAILOVER_AFTER: Duration = Duration::from_secs(2);

/// The run of nacks and returns in progress: from the first until an alert is delivered. Logs
/// its start (per kind) and its end once, and publishes itself in [`PublishStats`].
pub(super) struct Refusals<'s> {
    stats: &'s PublishStats,
    episode: Option<Episode>,
    /// Nacks in a row on the current node, and when the first of them came.
    on_node: u32,
    node_since: Instant,
}

struct Episode {
    since: Instant,
    nacks: u64,
    returns: u64,
    nack_logged: bool,
    return_logged: bool,
    failover_logged: bool,
}

impl<'s> Refusals<'s> {
    pub(super) fn new(stats: &'s PublishStats) -> Self {
        Refusals {
            stats,
            episode: None,
            on_node: 0,
            node_since: Instant::now(),
        }
    }

    fn episode(&mut self) -> &mut Episode {
        self.episode.get_or_insert_with(|| Episode {
            since: Instant::now(),
            nacks: 0,
            returns: 0,
            nack_logged: false,
            return_logged: false,
            failover_logged: false,
        })
    }

    /// Connected to another node (or the same one again).
    pub(super) fn new_node(&mut self) {
        self.on_node = 0;
    }

    /// An alert was delivered: the episode, if any, is over.
    pub(super) fn delivered(&mut self) {
        if let Some(ep) = self.episode.take() {
            tracing::info!(
                after_ms = ep.since.elapsed().as_millis() as u64,
                nacks = ep.nacks,
                returns = ep.returns,
                "the broker accepts alerts again"
            );
            self.stats.set_refusal(None);
        }
    }

    /// The connection was lost: what follows is an unreachable broker (its own health rule),
    /// not a refusal.
    pub(super) fn interrupted(&mut self) {
        if self.episode.take().is_some() {
            self.stats.set_refusal(None);
        }
    }

    /// The node at `url` nacked an alert. Returns the delay before retrying on a fresh channel,
    /// or `None` when it has refused long enough to move to the next node.
    pub(super) fn nacked(&mut self, url: &str) -> Option<Duration> {
        if self.on_node == 0 {
            self.node_since = Instant::now();
        }
        self.on_node += 1;
        let (on_node, node_for) = (self.on_node, self.node_since.elapsed());
        let ep = self.episode();
        ep.nacks += 1;
        let since = ep.since;
        if !ep.nack_logged {
            ep.nack_logged = true;
            tracing::warn!(
                url,
                "the broker refuses alerts (nack); sending them again on a fresh \
                channel, and through the next node if it keeps refusing"
            );
        }
        let fail_over = on_node >= NACKS_BEFORE_FAILOVER || node_for >= NACK_FAILOVER_AFTER;
        if fail_over {
            let first = !std::mem::replace(&mut ep.failover_logged, true);
            let (nacks, for_ms) = (on_node, node_for.as_millis() as u64);
            if first {
                tracing::warn!(
                    url,
                    nacks,
                    for_ms,
                    "broker node keeps refusing alerts; failing over to the next node"
                );
            } else {
                tracing::debug!(
                    url,
                    nacks,
                    for_ms,
                    "broker node keeps refusing alerts; failing over to the next node"
                );
            }
        }
        self.stats.set_refusal(Some(Refusal {
            since,
            returned: None,
        }));
        (!fail_over).then(|| NACK_RETRY_FIRST * 2u32.pow(on_node.saturating_sub(1).min(6)))
    }

    /// The node at `url` returned an alert as unroutable for `reason`.
    pub(super) fn returned(&mut self, url: &str, reason: String, config: &BrokerConfig) {
        let ep = self.episode();
        ep.returns += 1;
        let since = ep.since;
        if !ep.return_logged {
            ep.return_logged = true;
            let exchange = config.exchange_name();
            match (config.declare, &config.queue) {
                (true, Some(q)) => tracing::warn!(url, %reason, queue = %q.name,
                    "the broker returns alerts as unroutable (was the queue deleted?); declaring \
                     the exchange and queue again and sending them again"),
                (true, None) => tracing::warn!(url, %reason, exchange,
                    "the broker returns alerts as unroutable: no queue is bound to the exchange \
                     for them; bind one (or set [broker.queue]); retrying with backoff"),
                (false, _) => tracing::warn!(url, %reason, exchange,
                    "the broker returns alerts as unroutable: no queue is bound to the exchange \
                     for them (declare = false: iemd does not create it); reconnecting and \
                     retrying with backoff"),
            }
        }
        self.stats.set_refusal(Some(Refusal {
            since,
            returned: Some(reason),
        }));
    }
}
