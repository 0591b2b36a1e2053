//! Connecting: the order in which the broker URLs are tried, the one connect-first loop every
//! caller uses ([`connect_first`]), and a session (a connection with a confirming channel, the
//! topology declared on it).

use std::future::Future;
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use amq_protocol::uri::{AMQPUri, AMQPUserInfo};

use super::PublishError;
use super::credentials::{Credentials, credentials};
use super::tls::Tls;
use super::wire::{self, WireError};
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

/// A connection to a broker node with a channel in confirm mode (the publisher's own client,
/// `wire`).
pub(super) struct Session {
    pub(super) conn: wire::Connection,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("{0}")]
    Wire(#[from] WireError),
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
        reason: amq_protocol::types::ShortStringError,
    },
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        ConnectError::Wire(WireError::Io(e))
    }
}

/// The frame size iemd proposes unless the URL sets `frame_max` (the broker may lower it).
/// Alerts are ~1-2 KiB; a larger one is simply sent as several body frames.
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

    /// A lapin connection to `url` (for `iemctl tail`), within `connect_timeout_ms`.
    pub(super) async fn connection(&self, url: &str) -> Result<lapin::Connection, ConnectError> {
        self.bounded(async {
            let mut uri = self.uri(url)?;
            uri.authority.userinfo = AMQPUserInfo {
                username: self.creds.user.clone(),
                password: self.creds.password.clone(),
            };
            // lapin keeps a send and a receive buffer of 32 frames each, allocated up front.
            uri.query.frame_max.get_or_insert(FRAME_MAX);
            Ok(self.tls.lapin_connection(uri).await?)
        })
        .await
    }

    /// A session on `url` (connection, confirming channel, topology declared), within
    /// `connect_timeout_ms` in all.
    pub(super) async fn session(&self, url: &str) -> Result<Session, ConnectError> {
        self.bounded(async {
            let uri = self.uri(url)?;
            let io = self.tls.stream(&uri).await?;
            let params = wire::Params {
                user: &self.creds.user,
                password: &self.creds.password,
                vhost: &uri.vhost,
                frame_max: uri.query.frame_max.unwrap_or(FRAME_MAX),
                heartbeat: uri.query.heartbeat,
                channel_max: uri.query.channel_max,
            };
            let mut conn = wire::Connection::open(io, params).await?;
            conn.open_channel().await?;
            declare_topology(self.config, &mut conn).await?;
            Ok(Session { conn })
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

    /// `url` parsed, its virtual host checked.
    fn uri(&self, url: &str) -> Result<AMQPUri, ConnectError> {
        let uri: AMQPUri = url.parse().map_err(ConnectError::Url)?;
        short("broker.urls (virtual host)", &uri.vhost)?;
        Ok(uri)
    }
}

/// Connects to the first reachable broker URL of `config`, in the configured order, with its
/// credentials and TLS (the same trust rule as the publisher's), for tools that consume
/// (`iemctl tail`, through lapin). Returns the connection and the (redacted) URL used.
pub async fn connect_any(
    config: &BrokerConfig,
) -> Result<(lapin::Connection, String), PublishError> {
    let connector = Connector::new(config)?;
    let order: Vec<usize> = (0..config.urls.len()).collect();
    let (idx, conn) = connect_first(&config.urls, &order, |url| connector.connection(url))
        .await
        .map_err(|failures| PublishError::Unreachable(failures.join("; ")))?;
    Ok((conn, redact_url(&config.urls[idx])))
}

impl Session {
    /// Replaces the channel by a fresh one on the same connection (a channel of a node can stay
    /// refusing after its quorum queue's leader crashed, while a new one is served), declaring
    /// the topology again when `declare`. The old channel is closed without waiting: only its
    /// confirms were wanted, and they are given up.
    pub(super) async fn renew_channel(
        &mut self,
        config: &BrokerConfig,
        declare: bool,
    ) -> Result<(), ConnectError> {
        tokio::time::timeout(Duration::from_millis(config.connect_timeout_ms), async {
            self.conn.open_channel().await?;
            if declare {
                declare_topology(config, &mut self.conn).await?;
            }
            Ok::<_, ConnectError>(())
        })
        .await
        .map_err(|_| ConnectError::Timeout)?
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

/// Declares the exchange (durable topic) and, with `[broker.queue]`, the queue (durable,
/// quorum when configured) and its binding, when `config.declare`. A broker that refuses
/// (e.g. 406 PRECONDITION_FAILED: the queue exists with other arguments) closes the channel:
/// the error says its code and text.
async fn declare_topology(
    config: &BrokerConfig,
    conn: &mut wire::Connection,
) -> Result<(), ConnectError> {
    if !config.declare {
        return Ok(());
    }
    let exchange = short("broker.exchange", config.exchange_name())?;
    conn.declare_exchange(exchange.clone(), "topic").await?;
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
        conn.declare_queue(name.clone(), args).await?;
        conn.bind_queue(name, exchange, binding).await?;
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
