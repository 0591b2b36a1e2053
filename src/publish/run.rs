//! The publisher's runs: [`run`], the daemon's pump (connect, publish and settle, fail over,
//! forever), and [`send_records`], the one-shot publish of `iemctl replay --publish`. Both
//! connect through [`connect_first`] and publish through [`publish_and_settle`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::confirm::{Ended, Refusals, Settled, publish_and_settle};
use super::connect::{Connector, connect_first, connect_order, preferred_order};
use super::message::exchange;
use super::{PublishError, PublishStats};
use crate::alert::host_name;
use crate::config::broker::{BrokerConfig, redact_url};
use crate::output::RecordList;
use crate::shutdown::Shutdown;
use crate::spool::{Record, SpoolReader};
use crate::supervise::Backoff;
use crate::telemetry::events::RateLimit;

/// The broker's backoff (`backoff_initial_ms` doubling to `backoff_max_ms`).
fn backoff(config: &BrokerConfig) -> Backoff {
    Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    )
}

/// Drains `reader` to the broker until shutdown is requested. A broker that is away is retried
/// forever; returns an error only for bad credentials/TLS files or an unreadable spool.
pub async fn run(
    config: &BrokerConfig,
    mut reader: SpoolReader,
    shutdown: Shutdown,
    stats: Arc<PublishStats>,
) -> Result<(), PublishError> {
    let connector = Connector::new(config)?;
    let exchange = exchange(config)?;
    let mut backoff = backoff(config);
    let mut unreachable_log = RateLimit::new(Duration::from_secs(30));
    let preferred = preferred_order(&config.urls, config.local_first, &host_name());
    // Nodes lost or left since the last delivered alert, oldest first: tried last.
    let mut given_up: Vec<usize> = Vec::new();
    let mut refusals = Refusals::new(&stats);
    let token = shutdown.token.clone();
    loop {
        if token.is_cancelled() {
            reader.persist()?;
            return Ok(());
        }
        let order = connect_order(&preferred, &given_up);
        let attempt = tokio::select! {
            _ = token.cancelled() => continue,
            r = connect_first(&config.urls, &order, |url| connector.session(url)) => r,
        };
        let (idx, mut session) = match attempt {
            Ok(connected) => connected,
            Err(failures) => {
                if let Some(suppressed) = unreachable_log.allow(Instant::now()) {
                    tracing::warn!(errors = ?failures, suppressed,
                        "no broker reachable; alerts stay in the spool and are retried");
                }
                sleep_or_cancel(backoff.step(), &token).await;
                continue;
            }
        };
        let url = redact_url(&config.urls[idx]);
        stats.set_connected(idx, true);
        tracing::info!(
            url = %url,
            frame_max = session.conn.frame_max(),
            heartbeat_s = session.conn.heartbeat().map_or(0, |h| h.as_secs()),
            "connected to broker"
        );
        refusals.new_node();
        let delivered_before = stats.published_total.load(Ordering::Relaxed);
        let ended = loop {
            reader.rewind();
            // Any refusal ends the session's loop: re-sent in order from the first unacked.
            let ended = publish_and_settle(
                config,
                exchange.as_str(),
                &stats,
                &mut session,
                &mut reader,
                &token,
                |_, settled| {
                    if *settled == Settled::Delivered {
                        refusals.delivered();
                        backoff.reset();
                    }
                    false
                },
            )
            .await?;
            let declare = match ended {
                Ended::Nacked => match refusals.nacked(&url) {
                    Some(delay) => {
                        sleep_or_cancel(delay, &token).await;
                        false
                    }
                    None => break Ended::Nacked,
                },
                Ended::Returned(reason) => {
                    refusals.returned(&url, reason.clone(), config);
                    if !config.declare {
                        break Ended::Returned(reason);
                    }
                    sleep_or_cancel(backoff.step(), &token).await;
                    true
                }
                other => break other,
            };
            if token.is_cancelled() {
                break Ended::Shutdown;
            }
            stats.retries_total.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = session.renew_channel(config, declare).await {
                tracing::warn!(url = %url, %error, "cannot open a fresh channel; reconnecting");
                break Ended::Lost;
            }
        };
        stats.set_connected(idx, false);
        // A connection that went silent never answers the close: don't wait long for it
        // (dropping the session drops the socket).
        session
            .conn
            .close("iemd publisher closing", Duration::from_secs(2))
            .await;
        reader.persist()?;
        if matches!(ended, Ended::Shutdown) {
            return Ok(());
        }
        stats.retries_total.fetch_add(1, Ordering::Relaxed);
        if matches!(ended, Ended::Lost) {
            tracing::warn!(url = %url, "lost the broker; failing over");
            refusals.interrupted();
        }
        if stats.published_total.load(Ordering::Relaxed) > delivered_before {
            given_up.clear();
        }
        given_up.retain(|&i| i != idx);
        given_up.push(idx);
        sleep_or_cancel(backoff.step(), &token).await;
    }
}

async fn sleep_or_cancel(d: Duration, token: &CancellationToken) {
    tokio::select! {
        _ = token.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// The outcome of a one-shot publish (`iemctl replay --publish`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    pub delivered: u64,
    /// Seqs the broker did not confirm as delivered (nack, return, or no confirm), in order.
    pub failed: Vec<u64>,
}

/// Publishes `records` (in seq order) once, in order, through the first reachable broker,
/// waiting for every confirm; `progress(done, total)` is called as confirms arrive. A refused
/// record is reported and skipped; a lost connection or `stall_timeout_ms` without a confirm
/// ends the send, and what was not confirmed by then is reported failed. Does not touch any
/// spool.
pub async fn send_records(
    config: &BrokerConfig,
    records: &[Record],
    mut progress: impl FnMut(u64, u64),
) -> Result<SendReport, PublishError> {
    let connector = Connector::new(config)?;
    let exchange = exchange(config)?;
    let preferred = preferred_order(&config.urls, config.local_first, &host_name());
    let order = connect_order(&preferred, &[]);
    let (_, mut session) = connect_first(&config.urls, &order, |url| connector.session(url))
        .await
        .map_err(|failures| PublishError::Url {
            url: config
                .urls
                .iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(", "),
            reason: format!("no broker reachable: {}", failures.join("; ")),
        })?;
    let stats = PublishStats::new(config, None);
    let total = records.len() as u64;
    let (mut done, mut delivered) = (0u64, Vec::new());
    let ended = publish_and_settle(
        config,
        exchange.as_str(),
        &stats,
        &mut session,
        &mut RecordList::new(records),
        // Nothing cancels a one-shot send but its own end.
        &CancellationToken::new(),
        |seq, settled| {
            match settled {
                Settled::Delivered => delivered.push(seq),
                Settled::Nacked => tracing::warn!(seq, "the broker nacked the alert"),
                Settled::Returned(reason) => {
                    tracing::warn!(seq, %reason, "the broker returned the alert as unroutable");
                }
                Settled::Lost => {}
            }
            done += 1;
            progress(done, total);
            true
        },
    )
    .await?;
    if !matches!(ended, Ended::Drained) {
        tracing::warn!(
            ?ended,
            "the broker connection ended before every alert was confirmed"
        );
    }
    session
        .conn
        .close("iemctl replay done", Duration::from_secs(2))
        .await;
    // `delivered` is in publish order, a subsequence of `records`.
    let mut confirmed = delivered.iter().peekable();
    let failed = records
        .iter()
        .map(|r| r.seq)
        .filter(|seq| confirmed.next_if_eq(&seq).is_none())
        .collect();
    Ok(SendReport {
        delivered: delivered.len() as u64,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let cfg = BrokerConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 300,
            ..BrokerConfig::default()
        };
        let mut b = backoff(&cfg);
        let steps: Vec<u64> = (0..4).map(|_| b.step().as_millis() as u64).collect();
        assert_eq!(steps, [100, 200, 300, 300]);
    }
}
