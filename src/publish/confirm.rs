//! Confirm ordering: the one publish-and-settle loop, shared by the daemon's pump and
//! `iemctl replay --publish`, and what the daemon does about a run of nacks and returns.
//!
//! Confirms are settled in publish order, at most `broker.window` in flight, so "every confirm
//! so far was a plain ack" makes the acked position a prefix of the log: the loop acks the
//! records up to the last delivered one, and never past a record that was not.
//!
//! Publishing is batched (issue 20): every record the spool has ready, as far as the window
//! allows, is appended to the connection's write buffer and then written in one flush; the
//! broker's acks (often `multiple`) are read by the same task. [`Window`] keeps what is in
//! flight, oldest first, and settles it in order as acks, nacks and returns come in.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::connect::Session;
use super::message::message;
use super::wire::{Connection, Event, Returned};
use super::{PublishError, PublishStats, Refusal};
use crate::config::broker::BrokerConfig;
use crate::output::Records;
use crate::spool::Record;

/// Acks after this many confirms in a row (and whenever nothing is in flight).
const ACK_BATCH: u64 = 64;

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
    exchange: &str,
    stats: &PublishStats,
    session: &mut Session,
    records: &mut R,
    token: &CancellationToken,
    mut on_settled: impl FnMut(u64, &Settled) -> bool,
) -> Result<Ended, PublishError> {
    let conn = &mut session.conn;
    let mut window = Window::default();
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
    let ended = loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                let wait = Duration::from_millis(config.shutdown_timeout_ms);
                let _ = tokio::time::timeout(wait, async {
                    while !window.is_empty() {
                        let Ok(event) = conn.next_event().await else { return };
                        if window.apply(event).is_err() {
                            return;
                        }
                        while let Some((seq, time_ms, answer)) = window.pop_settled() {
                            let settled = settle(seq, time_ms, answer, stats);
                            on_settled(seq, &settled);
                            if settled != Settled::Delivered {
                                return;
                            }
                            if !gap {
                                confirmed = Some(seq);
                            }
                        }
                    }
                }).await;
                break Ended::Shutdown;
            }
            // Read also when nothing is in flight: the broker's heartbeats, a close or a
            // block come then too, and a connection read from only while publishing would be
            // taken for silent after twice the heartbeat of idleness.
            event = conn.next_event() => {
                let applied = event.map_err(|e| e.to_string()).and_then(|ev| window.apply(ev));
                if let Err(error) = applied {
                    lost(&window, &error, &mut on_settled);
                    break Ended::Lost;
                }
                let mut refused = None;
                while let Some((seq, time_ms, answer)) = window.pop_settled() {
                    let settled = settle(seq, time_ms, answer, stats);
                    let go_on = on_settled(seq, &settled);
                    match settled {
                        Settled::Delivered => {
                            if !gap {
                                confirmed = Some(seq);
                            }
                            unacked += 1;
                        }
                        _ if go_on => gap = true,
                        Settled::Returned(reason) => {
                            refused = Some(Ended::Returned(reason));
                            break;
                        }
                        Settled::Nacked => {
                            refused = Some(Ended::Nacked);
                            break;
                        }
                        Settled::Lost => {
                            refused = Some(Ended::Lost);
                            break;
                        }
                    }
                }
                if let Some(ended) = refused {
                    break ended;
                }
                progress = tokio::time::Instant::now();
                if (unacked >= ACK_BATCH || window.is_empty())
                    && let Some(c) = confirmed
                {
                    records.ack(c);
                    unacked = 0;
                }
                if drained && window.is_empty() {
                    break Ended::Drained;
                }
            }
            rec = records.next(), if !drained && window.len() < config.window => {
                let Some(rec) = rec? else {
                    drained = true;
                    if window.is_empty() {
                        break Ended::Drained;
                    }
                    continue;
                };
                if window.is_empty() {
                    progress = tokio::time::Instant::now();
                }
                send(config, exchange, conn, &mut window, &rec);
                // Every record that is ready now, as far as the window allows: one write.
                while window.len() < config.window {
                    match records.next().now_or_never() {
                        Some(Ok(Some(rec))) => send(config, exchange, conn, &mut window, &rec),
                        Some(Ok(None)) => {
                            drained = true;
                            break;
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None => break,
                    }
                }
                // A blocked connection (a broker resource alarm) stops reading: the stall
                // timeout bounds the write as it bounds the confirms.
                let error = match tokio::time::timeout(stall, conn.flush()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("could not write to the broker for {stall:?}"),
                };
                lost(&window, &error, &mut on_settled);
                break Ended::Lost;
            }
            _ = tick.tick() => {
                if let Err(error) = conn.keep_alive().await {
                    lost(&window, &error.to_string(), &mut on_settled);
                    break Ended::Lost;
                }
                if !window.is_empty() && progress.elapsed() > stall {
                    tracing::warn!(in_flight = window.len(),
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

/// The connection or channel failed with `error`: logged, and the oldest message in flight, if
/// any, reported [`Settled::Lost`] (it and everything after it stay unacked, to be sent again).
fn lost(window: &Window, error: &str, on_settled: &mut impl FnMut(u64, &Settled) -> bool) {
    match window.oldest() {
        Some(seq) => {
            tracing::warn!(seq, in_flight = window.len(), %error,
                "the broker connection is lost; the alerts not confirmed stay in the spool and are sent again");
            on_settled(seq, &Settled::Lost);
        }
        None => tracing::warn!(%error, "the broker connection is lost"),
    }
}

/// Appends `rec` as a message to the connection's write buffer and puts it in flight.
fn send(
    config: &BrokerConfig,
    exchange: &str,
    conn: &mut Connection,
    window: &mut Window,
    rec: &Record,
) {
    let out = message(config, rec);
    let tag = conn.publish(exchange, &out.routing_key, &out.properties(), &out.body);
    window.sent(tag, rec.seq, rec.time_ms);
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

/// The broker's answer to one message: `Ack(Some(reason))` is an ack that followed a return.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ack(Option<String>),
    Nack,
}

/// One message sent and not settled yet.
#[derive(Debug)]
struct InFlight {
    tag: u64,
    seq: u64,
    time_ms: i64,
    /// The return that came for it (before its ack), as the reason for the log.
    returned: Option<String>,
    answer: Option<Answer>,
}

/// The messages in flight on one channel, oldest first; their delivery tags are consecutive.
/// An answer may come for any of them ([`apply`](Window::apply)), but they are settled in
/// order ([`pop_settled`](Window::pop_settled)): the oldest once it has its answer.
#[derive(Debug, Default)]
struct Window {
    inflight: VecDeque<InFlight>,
}

impl Window {
    fn len(&self) -> usize {
        self.inflight.len()
    }

    fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    fn oldest(&self) -> Option<u64> {
        self.inflight.front().map(|m| m.seq)
    }

    fn sent(&mut self, tag: u64, seq: u64, time_ms: i64) {
        debug_assert!(self.inflight.back().is_none_or(|m| m.tag + 1 == tag));
        self.inflight.push_back(InFlight {
            tag,
            seq,
            time_ms,
            returned: None,
            answer: None,
        });
    }

    /// Takes in one event of the channel; an ack or nack for a tag not in flight is a protocol
    /// error (the channel is then given up).
    fn apply(&mut self, event: Event) -> Result<(), String> {
        let (tag, multiple, nack) = match event {
            Event::Ack { tag, multiple } => (tag, multiple, false),
            Event::Nack { tag, multiple } => (tag, multiple, true),
            Event::Returned(r) => {
                self.returned(r);
                return Ok(());
            }
        };
        let first = self.inflight.front().map_or(u64::MAX, |m| m.tag);
        let last = self.inflight.back().map_or(0, |m| m.tag);
        if !(first..=last).contains(&tag) {
            return Err(format!(
                "the broker answered delivery tag {tag}, not in flight ({first}..={last})"
            ));
        }
        let answered = if multiple {
            0..=(tag - first) as usize
        } else {
            let i = (tag - first) as usize;
            i..=i
        };
        for m in self.inflight.range_mut(answered) {
            if m.answer.is_none() {
                m.answer = Some(if nack {
                    Answer::Nack
                } else {
                    Answer::Ack(m.returned.take())
                });
            }
        }
        Ok(())
    }

    /// A return: matched to its message by the spool seq every message carries; a
    /// return without one (not ours) goes to the oldest message not yet answered or returned.
    fn returned(&mut self, r: Returned) {
        let reason = format!(
            "{} {} (exchange {:?}, routing key {:?})",
            r.code, r.text, r.exchange, r.routing_key
        );
        let seq = r.spool_seq;
        let unanswered = |m: &&mut InFlight| m.answer.is_none() && m.returned.is_none();
        let by_seq = seq.and_then(|seq| {
            self.inflight
                .iter_mut()
                .filter(unanswered)
                .find(|m| m.seq == seq)
        });
        match by_seq {
            Some(m) => m.returned = Some(reason),
            None => {
                if let Some(m) = self.inflight.iter_mut().find(|m| unanswered(m)) {
                    m.returned = Some(reason);
                }
            }
        }
    }

    /// The oldest message, if its answer is in.
    fn pop_settled(&mut self) -> Option<(u64, i64, Answer)> {
        self.inflight.front()?.answer.as_ref()?;
        let m = self.inflight.pop_front()?;
        Some((m.seq, m.time_ms, m.answer?))
    }
}

/// Accounts for one confirm in the counters (and the latency of a delivered alert).
fn settle(seq: u64, time_ms: i64, answer: Answer, stats: &PublishStats) -> Settled {
    match answer {
        Answer::Ack(None) => {
            stats.published_total.fetch_add(1, Ordering::Relaxed);
            if let Some(observe) = &stats.latency {
                let ms = chrono::Utc::now().timestamp_millis() - time_ms;
                observe(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            }
            Settled::Delivered
        }
        Answer::Ack(Some(reason)) => {
            stats.returns_total.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(seq, %reason, "returned");
            Settled::Returned(reason)
        }
        Answer::Nack => {
            stats.nacks_total.fetch_add(1, Ordering::Relaxed);
            Settled::Nacked
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends seqs 10, 11, ... as tags 1, 2, ...
    fn window(n: u64) -> Window {
        let mut w = Window::default();
        for tag in 1..=n {
            w.sent(tag, 9 + tag, 0);
        }
        w
    }

    fn settled(w: &mut Window) -> Vec<(u64, Answer)> {
        std::iter::from_fn(|| w.pop_settled().map(|(seq, _, a)| (seq, a))).collect()
    }

    fn returned(seq: Option<u64>) -> Event {
        Event::Returned(Returned {
            code: 312,
            text: "NO_ROUTE".into(),
            exchange: "iem".into(),
            routing_key: "k".into(),
            spool_seq: seq,
        })
    }

    const ACKED: Answer = Answer::Ack(None);

    #[test]
    fn a_multiple_ack_settles_everything_up_to_its_tag_in_order() {
        let mut w = window(5);
        w.apply(Event::Ack {
            tag: 3,
            multiple: true,
        })
        .unwrap();
        assert_eq!(settled(&mut w), [(10, ACKED), (11, ACKED), (12, ACKED)]);
        assert_eq!(w.len(), 2);
        w.apply(Event::Nack {
            tag: 5,
            multiple: true,
        })
        .unwrap();
        assert_eq!(settled(&mut w), [(13, Answer::Nack), (14, Answer::Nack)]);
        assert!(w.is_empty());
    }

    #[test]
    fn answers_out_of_order_are_settled_in_publish_order() {
        let mut w = window(3);
        w.apply(Event::Ack {
            tag: 2,
            multiple: false,
        })
        .unwrap();
        w.apply(Event::Nack {
            tag: 3,
            multiple: false,
        })
        .unwrap();
        assert_eq!(settled(&mut w), [], "the oldest is not answered yet");
        w.apply(Event::Ack {
            tag: 1,
            multiple: false,
        })
        .unwrap();
        assert_eq!(
            settled(&mut w),
            [(10, ACKED), (11, ACKED), (12, Answer::Nack)]
        );
        // A later multiple ack does not overwrite an answer already in.
        let mut w = window(3);
        w.apply(Event::Nack {
            tag: 2,
            multiple: false,
        })
        .unwrap();
        w.apply(Event::Ack {
            tag: 3,
            multiple: true,
        })
        .unwrap();
        assert_eq!(
            settled(&mut w),
            [(10, ACKED), (11, Answer::Nack), (12, ACKED)]
        );
    }

    #[test]
    fn a_tag_not_in_flight_is_an_error() {
        let mut w = window(2);
        assert!(
            w.apply(Event::Ack {
                tag: 3,
                multiple: false
            })
            .is_err()
        );
        w.apply(Event::Ack {
            tag: 1,
            multiple: false,
        })
        .unwrap();
        settled(&mut w);
        assert!(
            w.apply(Event::Ack {
                tag: 1,
                multiple: false
            })
            .is_err()
        );
        assert!(
            Window::default()
                .apply(Event::Ack {
                    tag: 1,
                    multiple: true
                })
                .is_err()
        );
    }

    #[test]
    fn a_return_goes_to_its_message_by_spool_seq_and_its_ack_makes_it_a_refusal() {
        let mut w = window(4);
        w.apply(returned(Some(12))).unwrap();
        w.apply(Event::Ack {
            tag: 4,
            multiple: true,
        })
        .unwrap();
        let got = settled(&mut w);
        assert_eq!(got.len(), 4);
        assert_eq!(got[..2], [(10, ACKED), (11, ACKED)]);
        assert!(
            matches!(&got[2], (12, Answer::Ack(Some(r))) if r.starts_with("312 NO_ROUTE")),
            "{got:?}"
        );
        assert_eq!(got[3], (13, ACKED));
    }

    #[test]
    fn a_return_without_a_known_seq_goes_to_the_oldest_unanswered_message() {
        let mut w = window(3);
        w.apply(Event::Ack {
            tag: 1,
            multiple: false,
        })
        .unwrap();
        w.apply(returned(None)).unwrap();
        w.apply(returned(Some(99))).unwrap();
        w.apply(Event::Ack {
            tag: 3,
            multiple: true,
        })
        .unwrap();
        let got: Vec<bool> = settled(&mut w)
            .into_iter()
            .map(|(_, a)| matches!(a, Answer::Ack(Some(_))))
            .collect();
        assert_eq!(got, [false, true, true]);
    }

    #[test]
    fn settle_counts_each_answer() {
        let stats = PublishStats::new(&BrokerConfig::default(), None);
        assert_eq!(settle(1, 0, ACKED, &stats), Settled::Delivered);
        assert_eq!(settle(2, 0, Answer::Nack, &stats), Settled::Nacked);
        assert!(matches!(
            settle(3, 0, Answer::Ack(Some("312 NO_ROUTE".into())), &stats),
            Settled::Returned(r) if r == "312 NO_ROUTE"
        ));
        let counts = [
            &stats.published_total,
            &stats.nacks_total,
            &stats.returns_total,
        ]
        .map(|c| c.load(Ordering::Relaxed));
        assert_eq!(counts, [1, 1, 1]);
    }
}
