//! Connecting: the order in which the broker URLs are tried, the one connect-first loop every
//! caller uses ([`connect_first`]), and a session (a connection with a confirming channel, the
//! topology declared on it).

use std::future::Future;
use std::time::Duration;

use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ExchangeKind};

use super::PublishError;
use super::credentials::{Credentials, credentials};
use super::tls::Tls;
use crate::config::broker::{BrokerConfig, QueueKind, redact_url};

/// The order in which to try the URLs when nothing was lost: with `local_first`, the URLs whose
/// host is this machine (loopback, `localhost`, or this host's name) first; then the others in
/// an order shuffled by a hash of `seed` (the host name) and the URL. The order is stable for a
/// host, and different hosts of a cluster spread over different broker nodes. Ties (the same
/// URL twice) keep the configured order.
pub fn preferred_order(urls: &[String], local_first: bool, seed: &str) -> Vec<usize> {
    let host_name = seed.split('.').next().unwrap_or(seed);
    let key = |i: usize| {
        let url = &urls[i];
        let remote = local_first && !is_local(url, host_name);
        let mut h = blake3::Hasher::new();
        h.update(seed.as_bytes());
        h.update(&[0]);
        h.update(url.as_bytes());
        let mut rank = [0u8; 8];
        rank.copy_from_slice(&h.finalize().as_bytes()[..8]);
        (remote, u64::from_be_bytes(rank), i)
    };
    let mut order: Vec<usize> = (0..urls.len()).collect();
    order.sort_by_key(|&i| key(i));
    order
}

/// True when `url`'s host is this machine: loopback, `localhost`, or `host_name` (short or
/// fully qualified).
fn is_local(url: &str, host_name: &str) -> bool {
    let Ok(uri) = url.parse::<AMQPUri>() else {
        return false;
    };
    let host = uri.authority.host.trim_matches(|c| c == '[' || c == ']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let short = host.split('.').next().unwrap_or(host);
    short.eq_ignore_ascii_case("localhost")
        || (!host_name.is_empty() && short.eq_ignore_ascii_case(host_name))
}

/// The order in which to try the URLs: `preferred` (see [`preferred_order`]), except that the
/// nodes in `given_up` (lost or refusing since the last delivered alert, oldest first) come last,
/// the most recent one last of all: a failover does not bounce straight back to a dying node,
/// nor to a crashed one before the others were tried.
pub(crate) fn connect_order(preferred: &[usize], given_up: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = preferred
        .iter()
        .copied()
        .filter(|i| !given_up.contains(i))
        .collect();
    order.extend(given_up.iter().filter(|i| preferred.contains(i)));
    order
}

/// Tries `urls` in `order`, each through `attempt`, and returns the first that succeeds with its
/// index; else the failures, `<url>: <reason>` (password removed) in the order tried. The one
/// "try each URL until one connects" loop: the publisher, `iemctl replay --publish` and
/// `iemctl tail` all connect through it.
pub(super) async fn connect_first<'u, T, Fut>(
    urls: &'u [String],
    order: &[usize],
    mut attempt: impl FnMut(&'u str) -> Fut,
) -> Result<(usize, T), Vec<String>>
where
    Fut: Future<Output = Result<T, ConnectError>>,
{
    let mut failures = Vec::new();
    for &idx in order {
        let url = &urls[idx];
        match attempt(url).await {
            Ok(t) => return Ok((idx, t)),
            Err(e) => failures.push(format!("{}: {e}", redact_url(url))),
        }
    }
    Err(failures)
}

/// A connection to a broker node with a channel in confirm mode.
pub(super) struct Session {
    pub(super) conn: Connection,
    pub(super) channel: Channel,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("{0}")]
    Lapin(#[from] lapin::Error),
    #[error("timed out")]
    Timeout,
    #[error("invalid URL: {0}")]
    Url(String),
    #[error("{key} {name:?} cannot be sent over AMQP: {reason}")]
    Name {
        key: &'static str,
        name: String,
        reason: lapin::types::ShortStringError,
    },
}

/// The frame size iemd proposes unless the URL sets `frame_max` (the broker may lower it).
const FRAME_MAX: u32 = 16 * 1024;

/// What connecting to the brokers of one config needs: the credentials and TLS, read once.
pub(super) struct Connector<'c> {
    config: &'c BrokerConfig,
    creds: Credentials,
    tls: Tls,
}

impl<'c> Connector<'c> {
    /// Reads the credentials and the TLS files: the errors that retrying cannot fix.
    pub(super) fn new(config: &'c BrokerConfig) -> Result<Self, PublishError> {
        Ok(Connector {
            config,
            creds: credentials(config)?,
            tls: Tls::from_config(config)?,
        })
    }

    /// An AMQP connection to `url`, within `connect_timeout_ms`.
    pub(super) async fn connection(&self, url: &str) -> Result<Connection, ConnectError> {
        self.bounded(self.open(url)).await
    }

    /// A session on `url` (connection, confirming channel, topology declared), within
    /// `connect_timeout_ms` in all.
    pub(super) async fn session(&self, url: &str) -> Result<Session, ConnectError> {
        self.bounded(async {
            let conn = self.open(url).await?;
            let channel = confirming_channel(self.config, &conn, true).await?;
            Ok(Session { conn, channel })
        })
        .await
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, ConnectError>>,
    ) -> Result<T, ConnectError> {
        tokio::time::timeout(Duration::from_millis(self.config.connect_timeout_ms), fut)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    /// An AMQP connection to `url` with the credentials.
    async fn open(&self, url: &str) -> Result<Connection, ConnectError> {
        let mut uri: AMQPUri = url.parse().map_err(ConnectError::Url)?;
        short("broker.urls (virtual host)", &uri.vhost)?;
        uri.authority.userinfo = AMQPUserInfo {
            username: self.creds.user.clone(),
            password: self.creds.password.clone(),
        };
        // lapin keeps a send and a receive buffer of 32 frames each, allocated up front: at
        // RabbitMQ's default 128 KiB frame_max that is 8 MiB resident, a third of the daemon.
        // Alerts are ~1-2 KiB; a larger one is simply sent as several body frames.
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        Ok(self.tls.connect(uri).await?)
    }
}

/// Connects to the first reachable broker URL of `config`, in the configured order, with its
/// credentials and TLS, for tools that consume (`iemctl tail`). Returns the connection and the
/// (redacted) URL used.
pub async fn connect_any(config: &BrokerConfig) -> Result<(Connection, String), PublishError> {
    let connector = Connector::new(config)?;
    let order: Vec<usize> = (0..config.urls.len()).collect();
    let (idx, conn) = connect_first(&config.urls, &order, |url| connector.connection(url))
        .await
        .map_err(|failures| PublishError::Unreachable(failures.join("; ")))?;
    Ok((conn, redact_url(&config.urls[idx])))
}

/// A new channel on `conn` with publisher confirms, after declaring the topology on it when
/// `declare` (and `config.declare`).
async fn confirming_channel(
    config: &BrokerConfig,
    conn: &Connection,
    declare: bool,
) -> Result<Channel, ConnectError> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    if declare {
        declare_topology(config, &channel).await?;
    }
    Ok(channel)
}

impl Session {
    /// Replaces the channel by a fresh one on the same connection (a channel of a node can stay
    /// refusing after its quorum queue's leader crashed, while a new one is served), declaring
    /// the topology again when `declare`. The old channel is closed, bounded.
    pub(super) async fn renew_channel(
        &mut self,
        config: &BrokerConfig,
        declare: bool,
    ) -> Result<(), ConnectError> {
        let fresh = tokio::time::timeout(
            Duration::from_millis(config.connect_timeout_ms),
            confirming_channel(config, &self.conn, declare),
        )
        .await
        .map_err(|_| ConnectError::Timeout)??;
        let old = std::mem::replace(&mut self.channel, fresh);
        // Only its confirms were wanted, and they are given up: a failed close is no news.
        let closed =
            tokio::time::timeout(Duration::from_secs(1), old.close(200, "replaced".into())).await;
        if !matches!(closed, Ok(Ok(()))) {
            tracing::debug!(?closed, "closing a replaced channel failed");
        }
        Ok(())
    }
}

/// `name` as an AMQP short string, for the broker call that needs it.
fn short(key: &'static str, name: &str) -> Result<ShortString, ConnectError> {
    ShortString::try_new(name).map_err(|reason| ConnectError::Name {
        key,
        name: name.to_string(),
        reason,
    })
}

async fn declare_topology(config: &BrokerConfig, channel: &Channel) -> Result<(), ConnectError> {
    if !config.declare {
        return Ok(());
    }
    let exchange = short("broker.exchange", config.exchange_name())?;
    channel
        .exchange_declare(
            exchange.clone(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    if let Some(q) = &config.queue {
        let name = short("broker.queue.name", &q.name)?;
        let binding = short("broker.queue.binding_key", &q.binding_key)?;
        let mut args = FieldTable::default();
        if q.kind == QueueKind::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        channel
            .queue_declare(
                name.clone(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
        channel
            .queue_bind(
                name,
                exchange,
                binding,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_order_puts_the_nodes_given_up_on_last() {
        assert_eq!(connect_order(&[2, 0, 1], &[]), [2, 0, 1]);
        assert_eq!(connect_order(&[2, 0, 1], &[2]), [0, 1, 2]);
        assert_eq!(connect_order(&[2, 0, 1], &[0]), [2, 1, 0]);
        assert_eq!(connect_order(&[0], &[0]), [0]);
        // Node 2 crashed, then node 0 refused: node 1 next, the crashed one before the refusing one.
        assert_eq!(connect_order(&[2, 0, 1], &[2, 0]), [1, 2, 0]);
    }

    fn urls(hosts: &[&str]) -> Vec<String> {
        hosts
            .iter()
            .map(|h| format!("amqp://{h}:5672/%2f"))
            .collect()
    }

    #[test]
    fn preferred_order_is_a_stable_per_host_shuffle() {
        let u = urls(&["b1", "b2", "b3", "b4", "b5", "b6"]);
        let a = preferred_order(&u, false, "node1");
        assert_eq!(a, preferred_order(&u, false, "node1"), "stable");
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5], "a permutation");
        // Hosts spread: over 50 host names, each URL comes first for some of them.
        let mut first = [0u32; 6];
        for h in 0..50 {
            first[preferred_order(&u, false, &format!("node{h}"))[0]] += 1;
        }
        assert!(first.iter().all(|&c| c > 0), "{first:?}");
    }

    #[test]
    fn local_first_puts_this_host_first() {
        let u = urls(&["b1", "127.0.0.1", "b2", "node7.example.com", "b3"]);
        for seed in ["node7", "node7.example.com"] {
            let o = preferred_order(&u, true, seed);
            let mut head = o[..2].to_vec();
            head.sort();
            assert_eq!(head, [1, 3], "{o:?}");
            // The others keep the order they have without local_first.
            let rest: Vec<usize> = preferred_order(&u, false, seed)
                .into_iter()
                .filter(|i| ![1, 3].contains(i))
                .collect();
            assert_eq!(o[2..], rest[..]);
        }
        let o = preferred_order(&urls(&["b1", "[::1]", "b2"]), true, "x");
        assert_eq!(o[0], 1);
        let o = preferred_order(&urls(&["b1", "LOCALHOST", "b2"]), true, "x");
        assert_eq!(o[0], 1);
        assert!(!is_local("amqp://node70:5672/%2f", "node7"));
    }

    #[tokio::test]
    async fn connect_first_stops_at_the_first_success_and_lists_the_failures_before_it() {
        let u = urls(&["b0", "b1", "b2", "b3"]);
        let mut tried = Vec::new();
        let got = connect_first(&u, &[2, 0, 3, 1], |url| {
            tried.push(url.to_string());
            let ok = url.contains("b3");
            async move {
                if ok {
                    Ok(url.len())
                } else {
                    Err(ConnectError::Timeout)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), (3, u[3].len()));
        assert_eq!(tried, [u[2].clone(), u[0].clone(), u[3].clone()]);
        let failed = connect_first(&u, &[1, 0], |_| async {
            Err::<(), _>(ConnectError::Timeout)
        })
        .await
        .unwrap_err();
        assert_eq!(
            failed,
            [
                "amqp://b1:5672/%2f: timed out",
                "amqp://b0:5672/%2f: timed out"
            ]
        );
        let secret = vec!["amqp://u:s3cret@b9:5672/%2f".to_string()];
        let failed = connect_first(&secret, &[0], |_| async {
            Err::<(), _>(ConnectError::Timeout)
        })
        .await
        .unwrap_err();
        assert!(!failed[0].contains("s3cret"), "{failed:?}");
    }
}
