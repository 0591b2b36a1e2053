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
//!   backoff, trying the nodes not given up on first ([`connect_order`]);
//! - `Nack` (the node refuses, e.g. its quorum queue has no leader yet after a crash): a fresh
//!   channel on the same connection after a short delay ([`NACK_RETRY_FIRST`], doubling while
//!   the nacks continue); after [`NACKS_BEFORE_FAILOVER`] nacks in a row, or nacks for longer
//!   than [`NACK_FAILOVER_AFTER`], the next node. A nack is an answer, so the stall timeout
//!   would never end such a run by itself;
//! - return (no queue bound, e.g. the queue was deleted): with `declare = true`, declare the
//!   topology again on a fresh channel after the backoff; without, connect again.
//!
//! A run of nacks or returns is an episode: logged once when it starts and once when an alert is
//! delivered again, and shown by [`PublishStats::refusing`] / [`PublishStats::returning`]
//! (`/health`) meanwhile.
//!
//! Confirms are consumed in publish order, so "every confirm so far was `Ack(None)`" makes the
//! spool's acked position a prefix of the log.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, MAX_SHORT_STRING_LENGTH, ShortString};
use lapin::uri::{AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use serde::Deserialize;

use crate::alert::Alert;
use crate::config::broker::{self, BodyFormat, BrokerConfig, QueueKind, redact_url};
use crate::shutdown::Shutdown;
use crate::spool::{Record, SpoolError, SpoolReader};

mod tls;
use tls::Tls;

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

/// Counters the lead exports as metrics, and the conditions `/health` reports.
pub struct PublishStats {
    pub published_total: AtomicU64,
    pub retries_total: AtomicU64,
    pub nacks_total: AtomicU64,
    pub returns_total: AtomicU64,
    connected: Vec<AtomicBool>,
    urls: Vec<String>,
    latency: Option<LatencyObserver>,
    refusal: Mutex<Option<Refusal>>,
}

/// Called with the time from spooling to broker confirm of each delivered alert.
pub type LatencyObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// The broker refusing alerts: from the first nack or return until an alert is delivered.
#[derive(Debug, Clone)]
struct Refusal {
    since: Instant,
    /// The last return's reason, when alerts are being returned rather than nacked.
    returned: Option<String>,
}

impl PublishStats {
    pub fn new(config: &BrokerConfig, latency: Option<LatencyObserver>) -> Self {
        PublishStats {
            published_total: AtomicU64::new(0),
            retries_total: AtomicU64::new(0),
            nacks_total: AtomicU64::new(0),
            returns_total: AtomicU64::new(0),
            connected: config.urls.iter().map(|_| AtomicBool::new(false)).collect(),
            urls: config.urls.iter().map(|u| redact_url(u)).collect(),
            latency,
            refusal: Mutex::new(None),
        }
    }

    /// (redacted URL, connected) per configured URL.
    pub fn connected(&self) -> Vec<(String, bool)> {
        self.urls
            .iter()
            .zip(&self.connected)
            .map(|(u, c)| (u.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }

    fn set_connected(&self, idx: usize, v: bool) {
        if let Some(c) = self.connected.get(idx) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// How long the broker has been refusing (nacking) alerts, while it does.
    pub fn refusing(&self) -> Option<Duration> {
        let r = self.refusal();
        r.filter(|r| r.returned.is_none())
            .map(|r| r.since.elapsed())
    }

    /// How long alerts have been coming back unroutable, and the last return's reason, while
    /// they do.
    pub fn returning(&self) -> Option<(Duration, String)> {
        self.refusal()
            .and_then(|r| Some((r.since.elapsed(), r.returned?)))
    }

    fn refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_refusal(&self, refusal: Option<Refusal>) {
        *self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = refusal;
    }
}

/// User and password; never printed.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: \"***\" }}",
            self.user
        )
    }
}

/// The user (`IEMD_AMQP_USER`, else `broker.user`) and the password from its source
/// ([`BrokerConfig::password_source`]: `IEMD_AMQP_PASSWORD`, the systemd credential, the password
/// file), else RabbitMQ's default guest/guest when neither is set.
pub fn credentials(config: &BrokerConfig) -> Result<Credentials, PublishError> {
    let user = config.user_name();
    let Some(source) = config.password_source() else {
        return match user {
            Some(user) => Err(PublishError::Credentials(format!(
                "broker user {user:?} has no password: set broker.password_file, the systemd \
                 credential {} or {}",
                broker::CREDENTIAL,
                broker::PASSWORD_ENV
            ))),
            None => Ok(Credentials {
                user: "guest".into(),
                password: "guest".into(),
            }),
        };
    };
    let password = broker::read_password(&source).map_err(PublishError::Credentials)?;
    let user = user.ok_or_else(|| {
        PublishError::Credentials(format!(
            "{source} holds a password but there is no user: set broker.user or {}",
            broker::USER_ENV
        ))
    })?;
    Ok(Credentials { user, password })
}

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

/// This machine's host name, the seed of [`preferred_order`].
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The order in which to try the URLs: `preferred` (see [`preferred_order`]), except that the
/// nodes in `given_up` (lost or refusing since the last delivered alert, oldest first) come last,
/// the most recent one last of all: a failover does not bounce straight back to a dying node,
/// nor to a crashed one before the others were tried.
pub fn connect_order(preferred: &[usize], given_up: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = preferred
        .iter()
        .copied()
        .filter(|i| !given_up.contains(i))
        .collect();
    order.extend(given_up.iter().filter(|i| preferred.contains(i)));
    order
}

/// Capped exponential backoff.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(config: &BrokerConfig) -> Self {
        let initial = Duration::from_millis(config.backoff_initial_ms);
        Backoff {
            initial,
            max: Duration::from_millis(config.backoff_max_ms),
            next: initial,
        }
    }
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Logs a repeating condition at most once per interval.
struct Throttle {
    last: Option<Instant>,
    every: Duration,
    suppressed: u64,
}

impl Throttle {
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= self.every)
        {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// The fields of a spooled alert the publisher needs, borrowed from the payload.
#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    severity: Option<NameRef<'a>>,
    #[serde(borrow, default)]
    component: Option<ComponentRef<'a>>,
}

#[derive(Deserialize)]
struct NameRef<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ComponentRef<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// Appends one word of a routing key: lower case, `[a-z0-9_-]`, anything else `_`.
fn push_key_word(key: &mut String, s: &str) {
    key.extend(s.chars().map(|c| match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
        _ => '_',
    }));
}

/// `iem.<severity name>.<component name or id>`, or `iem.malformed`; cut to AMQP's 255 bytes
/// (the catalog refuses component names that long, but alerts spooled before may carry one).
fn routing_key(meta: &Meta<'_>) -> ShortString {
    if meta.kind.as_deref() == Some("malformed") {
        return ShortString::from("iem.malformed");
    }
    let mut key = String::with_capacity(32);
    key.push_str("iem.");
    push_key_word(
        &mut key,
        meta.severity.as_ref().map_or("unknown", |s| &s.name),
    );
    key.push('.');
    push_key_word(
        &mut key,
        meta.component
            .as_ref()
            .map_or("unknown", |c| c.name.as_deref().unwrap_or(&c.id)),
    );
    short_ascii(key)
}

/// An ASCII string as a short string, cut to its 255 bytes.
fn short_ascii(mut s: String) -> ShortString {
    s.truncate(MAX_SHORT_STRING_LENGTH);
    // Cannot fail once cut: `try_new` only checks the length.
    ShortString::try_new(s).unwrap_or_default()
}

/// The exchange of `config` as an AMQP short string (the config check refuses longer names, so
/// this fails only for a config that skipped validation).
pub fn exchange(config: &BrokerConfig) -> Result<ShortString, PublishError> {
    let name = config.exchange_name();
    ShortString::try_new(name).map_err(|reason| PublishError::AmqpName {
        key: "broker.exchange",
        name: name.to_string(),
        reason,
    })
}

/// A message ready to publish; the body borrows the spooled payload when it is sent as is.
pub struct Outgoing<'r> {
    pub routing_key: ShortString,
    pub body: Cow<'r, [u8]>,
    pub properties: BasicProperties,
}

/// Builds the message for one spooled record. Nothing in a record can make this fail: a payload
/// that cannot be read, or whose id does not fit a message id, goes out as `iem.malformed`.
pub fn message<'r>(config: &BrokerConfig, rec: &'r Record) -> Outgoing<'r> {
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_timestamp(u64::try_from(rec.time_ms / 1000).unwrap_or(0));
    let mut headers = FieldTable::default();
    let meta = serde_json::from_slice::<Meta<'_>>(&rec.payload)
        .ok()
        .and_then(|m| Some((ShortString::try_new(m.id.as_ref()).ok()?, m)));
    let (routing_key, body, schema) = match (config.format, &meta) {
        (BodyFormat::V1, Some((_, m))) => (
            routing_key(m),
            Cow::Borrowed(rec.payload.as_slice()),
            m.schema.as_deref().unwrap_or(crate::alert::SCHEMA),
        ),
        (BodyFormat::Sspl, Some(_)) => {
            let body = serde_json::from_slice::<Alert>(&rec.payload)
                .ok()
                .and_then(|a| serde_json::to_vec(&crate::sspl::body(&a)).ok())
                .map_or(Cow::Borrowed(rec.payload.as_slice()), Cow::Owned);
            (ShortString::from("sensor-key"), body, "sspl/1.0.0")
        }
        // Never dropped: an unreadable payload still goes out, where someone can see it.
        (_, None) => (
            ShortString::from("iem.malformed"),
            Cow::Borrowed(rec.payload.as_slice()),
            "unknown",
        ),
    };
    headers.insert("schema".into(), AMQPValue::LongString(schema.into()));
    // The record's spool seq, unique over the spool's life: a consumer that gets an id twice
    // with the same seq got a publish repeated after a lost confirm; with two seqs, the line was
    // spooled twice (which the chaos test counts apart).
    headers.insert(
        "spool_seq".into(),
        AMQPValue::LongLongInt(i64::try_from(rec.seq).unwrap_or(i64::MAX)),
    );
    props = props.with_headers(headers);
    if let Some((id, _)) = meta {
        props = props.with_message_id(id);
    }
    Outgoing {
        routing_key,
        body,
        properties: props,
    }
}

struct Session {
    conn: Connection,
    channel: Channel,
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
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

/// Connects to the first reachable broker URL of `config`, with its credentials and TLS, for
/// tools that consume (`iemctl tail`). Returns the connection and the (redacted) URL used.
pub async fn connect_any(config: &BrokerConfig) -> Result<(Connection, String), PublishError> {
    let creds = credentials(config)?;
    let tls = Tls::from_config(config)?;
    let mut failures = Vec::new();
    for url in &config.urls {
        let shown = crate::config::broker::redact_url(url);
        let attempt = tokio::time::timeout(
            Duration::from_millis(config.connect_timeout_ms),
            open(url, &creds, &tls),
        )
        .await
        .map_err(|_| ConnectError::Timeout)
        .and_then(|r| r);
        match attempt {
            Ok(conn) => return Ok((conn, shown)),
            Err(err) => failures.push(format!("{shown}: {err}")),
        }
    }
    Err(PublishError::Unreachable(failures.join("; ")))
}

/// An AMQP connection to `url` with the given credentials.
async fn open(url: &str, creds: &Credentials, tls: &Tls) -> Result<Connection, ConnectError> {
    let mut uri: AMQPUri = url.parse().map_err(ConnectError::Url)?;
    short("broker.urls (virtual host)", &uri.vhost)?;
    uri.authority.userinfo = AMQPUserInfo {
        username: creds.user.clone(),
        password: creds.password.clone(),
    };
    // lapin keeps a send and a receive buffer of 32 frames each, allocated up front: at
    // RabbitMQ's default 128 KiB frame_max that is 8 MiB resident, a third of the daemon.
    // Alerts are ~1-2 KiB; a larger one is simply sent as several body frames.
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(tls.connect(uri).await?)
}

async fn connect(
    config: &BrokerConfig,
    url: &str,
    creds: &Credentials,
    tls: &Tls,
) -> Result<Session, ConnectError> {
    let fut = async {
        let conn = open(url, creds, tls).await?;
        let channel = confirming_channel(config, &conn, true).await?;
        Ok::<_, ConnectError>(Session { conn, channel })
    };
    tokio::time::timeout(Duration::from_millis(config.connect_timeout_ms), fut)
        .await
        .map_err(|_| ConnectError::Timeout)?
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
    async fn renew_channel(
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

/// Why a pump over one session ended.
enum Ended {
    Shutdown,
    /// The connection or channel is unusable, or stalled: connect again.
    Lost,
    /// The broker nacked an alert.
    Nacked,
    /// The broker returned an alert as unroutable (the reason, for the log and `/health`).
    Returned(String),
}

/// Retry delay after the first nack on a node; it doubles with each further nack in a row.
pub const NACK_RETRY_FIRST: Duration = Duration::from_millis(25);
/// Nacks in a row on one node after which the next node is tried.
pub const NACKS_BEFORE_FAILOVER: u32 = 3;
/// A node refusing for this long is left for the next one, however few nacks that took.
pub const NACK_FAILOVER_AFTER: Duration = Duration::from_secs(2);

/// The run of nacks and returns in progress: from the first until an alert is delivered. Logs
/// its start (per kind) and its end once, and publishes itself in [`PublishStats`].
struct Refusals<'s> {
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
    fn new(stats: &'s PublishStats) -> Self {
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
    fn new_node(&mut self) {
        self.on_node = 0;
    }

    /// An alert was delivered: the episode, if any, is over.
    fn delivered(&mut self) {
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
    fn interrupted(&mut self) {
        if self.episode.take().is_some() {
            self.stats.set_refusal(None);
        }
    }

    /// The node at `url` nacked an alert. Returns the delay before retrying on a fresh channel,
    /// or `None` when it has refused long enough to move to the next node.
    fn nacked(&mut self, url: &str) -> Option<Duration> {
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
    fn returned(&mut self, url: &str, reason: String, config: &BrokerConfig) {
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

/// Drains `reader` to the broker until shutdown is requested. A broker that is away is retried
/// forever; returns an error only for bad credentials/TLS files or an unreadable spool.
pub async fn run(
    config: &BrokerConfig,
    mut reader: SpoolReader,
    shutdown: Shutdown,
    stats: Arc<PublishStats>,
) -> Result<(), PublishError> {
    let creds = credentials(config)?;
    let tls = Tls::from_config(config)?;
    let exchange = exchange(config)?;
    let mut backoff = Backoff::new(config);
    let mut unreachable_log = Throttle {
        last: None,
        every: Duration::from_secs(30),
        suppressed: 0,
    };
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
        let mut session = None;
        let mut failures = Vec::new();
        for idx in connect_order(&preferred, &given_up) {
            let url = &config.urls[idx];
            let attempt = tokio::select! {
                _ = token.cancelled() => break,
                r = connect(config, url, &creds, &tls) => r,
            };
            match attempt {
                Ok(s) => {
                    session = Some((idx, s));
                    break;
                }
                Err(e) => failures.push(format!("{}: {e}", redact_url(url))),
            }
        }
        let Some((idx, mut session)) = session else {
            if token.is_cancelled() {
                continue;
            }
            if let Some(suppressed) = unreachable_log.ready() {
                tracing::warn!(errors = ?failures, suppressed,
                    "no broker reachable; alerts stay in the spool and are retried");
            }
            sleep_or_cancel(backoff.step(), &token).await;
            continue;
        };
        let url = redact_url(&config.urls[idx]);
        stats.set_connected(idx, true);
        tracing::info!(url = %url, "connected to broker");
        refusals.new_node();
        let delivered_before = stats.published_total.load(Ordering::Relaxed);
        let ended = loop {
            reader.rewind();
            let ended = pump(
                config,
                &exchange,
                &mut reader,
                &session,
                &token,
                &mut backoff,
                &mut refusals,
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
        // A connection that went silent never answers the close: don't wait for it (dropping
        // the session drops the socket).
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            session.conn.close(200, "iemd publisher closing".into()),
        )
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

async fn sleep_or_cancel(d: Duration, token: &tokio_util::sync::CancellationToken) {
    tokio::select! {
        _ = token.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Acks the spool after this many confirms in a row (and whenever nothing is in flight).
const ACK_BATCH: u64 = 64;

async fn pump(
    config: &BrokerConfig,
    exchange: &ShortString,
    reader: &mut SpoolReader,
    session: &Session,
    token: &tokio_util::sync::CancellationToken,
    backoff: &mut Backoff,
    refusals: &mut Refusals<'_>,
) -> Result<Ended, PublishError> {
    let stats = refusals.stats;
    let mut inflight = FuturesOrdered::new();
    let mut confirmed: Option<u64> = None;
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
                // Wait for what is in flight so that it is acked and not re-sent at the next start.
                let wait = Duration::from_millis(config.shutdown_timeout_ms);
                let _ = tokio::time::timeout(wait, async {
                    while let Some((seq, time_ms, res)) = inflight.next().await {
                        if !matches!(settle(seq, time_ms, res, stats, &mut confirmed), Settled::Delivered) {
                            break;
                        }
                    }
                }).await;
                break Ended::Shutdown;
            }
            Some((seq, time_ms, res)) = inflight.next(), if !inflight.is_empty() => {
                match settle(seq, time_ms, res, stats, &mut confirmed) {
                    Settled::Delivered => {}
                    Settled::Nacked if usable() => break Ended::Nacked,
                    Settled::Returned(reason) if usable() => break Ended::Returned(reason),
                    _ => break Ended::Lost,
                }
                refusals.delivered();
                progress = tokio::time::Instant::now();
                backoff.reset();
                unacked += 1;
                if (unacked >= ACK_BATCH || inflight.is_empty())
                    && let Some(c) = confirmed
                {
                    reader.ack(c);
                    unacked = 0;
                }
            }
            rec = reader.next(), if inflight.len() < config.window => {
                let rec = rec?;
                let out = message(config, &rec);
                if inflight.is_empty() {
                    progress = tokio::time::Instant::now();
                }
                let published = tokio::time::timeout(stall, session.channel.basic_publish(
                    exchange.clone(),
                    out.routing_key,
                    mandatory,
                    &out.body,
                    out.properties,
                )).await;
                let Ok(published) = published else {
                    tracing::warn!(seq = rec.seq, "publish blocked for {stall:?}; reconnecting");
                    break Ended::Lost;
                };
                match published {
                    Ok(confirm) => {
                        let (seq, time_ms) = (rec.seq, rec.time_ms);
                        inflight.push_back(async move { (seq, time_ms, confirm.await) });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, seq = rec.seq, "publish failed");
                        break Ended::Lost;
                    }
                }
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
        reader.ack(c);
    }
    Ok(ended)
}

/// What the broker answered to one publish.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    Delivered,
    Nacked,
    /// Returned as unroutable: `<code> <text> (exchange .., routing key ..)`.
    Returned(String),
    /// No answer: the channel or connection failed.
    Lost,
}

/// Accounts for one confirm.
fn settle(
    seq: u64,
    time_ms: i64,
    res: Result<Confirmation, lapin::Error>,
    stats: &PublishStats,
    confirmed: &mut Option<u64>,
) -> Settled {
    match res {
        Ok(Confirmation::Ack(None)) => {
            stats.published_total.fetch_add(1, Ordering::Relaxed);
            if let Some(observe) = &stats.latency {
                let ms = chrono::Utc::now().timestamp_millis() - time_ms;
                observe(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            }
            *confirmed = Some(seq);
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

/// The outcome of a one-shot publish (`iemctl replay --publish`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    pub delivered: u64,
    /// Seqs the broker did not confirm as delivered (nack, return, or no confirm).
    pub failed: Vec<u64>,
}

/// Publishes `records` once, in order, through the first reachable broker, waiting for every
/// confirm; `progress(done, total)` is called as confirms arrive. Does not touch any spool.
pub async fn send_records(
    config: &BrokerConfig,
    records: &[Record],
    mut progress: impl FnMut(u64, u64),
) -> Result<SendReport, PublishError> {
    let creds = credentials(config)?;
    let tls = Tls::from_config(config)?;
    let exchange = exchange(config)?;
    let mut session = None;
    let mut failures = Vec::new();
    let preferred = preferred_order(&config.urls, config.local_first, &host_name());
    for idx in connect_order(&preferred, &[]) {
        match connect(config, &config.urls[idx], &creds, &tls).await {
            Ok(s) => {
                session = Some(s);
                break;
            }
            Err(e) => failures.push(format!("{}: {e}", redact_url(&config.urls[idx]))),
        }
    }
    let Some(session) = session else {
        return Err(PublishError::Url {
            url: config
                .urls
                .iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(", "),
            reason: format!("no broker reachable: {}", failures.join("; ")),
        });
    };
    let stats = PublishStats::new(config, None);
    let mut report = SendReport::default();
    let total = records.len() as u64;
    let mut inflight = FuturesOrdered::new();
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut settle_one = |(seq, time_ms, res), report: &mut SendReport| {
        let mut confirmed = None;
        match settle(seq, time_ms, res, &stats, &mut confirmed) {
            Settled::Delivered => report.delivered += 1,
            Settled::Nacked => {
                tracing::warn!(seq, "the broker nacked the alert");
                report.failed.push(seq);
            }
            Settled::Returned(reason) => {
                tracing::warn!(seq, %reason, "the broker returned the alert as unroutable");
                report.failed.push(seq);
            }
            Settled::Lost => report.failed.push(seq),
        }
        progress(report.delivered + report.failed.len() as u64, total);
    };
    for rec in records {
        if inflight.len() >= config.window
            && let Some(done) = inflight.next().await
        {
            settle_one(done, &mut report);
        }
        let out = message(config, rec);
        let (seq, time_ms) = (rec.seq, rec.time_ms);
        match session
            .channel
            .basic_publish(
                exchange.clone(),
                out.routing_key,
                mandatory,
                &out.body,
                out.properties,
            )
            .await
        {
            Ok(confirm) => inflight.push_back(async move { (seq, time_ms, confirm.await) }),
            Err(e) => {
                tracing::warn!(seq, error = %e, "publish failed");
                report.failed.push(seq);
            }
        }
    }
    while let Some(done) = inflight.next().await {
        settle_one(done, &mut report);
    }
    let _ = session.conn.close(200, "iemctl replay done".into()).await;
    Ok(report)
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

    #[test]
    fn routing_keys() {
        let m: Meta<'_> = serde_json::from_str(
            r#"{"id":"a","kind":"iem","severity":{"code":"E","name":"error"},"component":{"id":"003","name":"s3"}}"#,
        )
        .unwrap();
        assert_eq!(routing_key(&m).as_str(), "iem.error.s3");
        let m: Meta<'_> =
            serde_json::from_str(r#"{"id":"a","kind":"iem","component":{"id":"0F3","name":null}}"#)
                .unwrap();
        assert_eq!(routing_key(&m).as_str(), "iem.unknown.0f3");
        let m: Meta<'_> = serde_json::from_str(r#"{"id":"a","kind":"malformed"}"#).unwrap();
        assert_eq!(routing_key(&m).as_str(), "iem.malformed");
    }

    /// Issue 13: a 300-character component name panicked the publisher (`ShortString exceeds
    /// maximum length`); a record's fields can no longer make building a message fail.
    #[test]
    fn long_names_and_ids_cannot_panic_the_publisher() {
        let long = "n".repeat(300);
        let payload = format!(
            r#"{{"id":"a","kind":"iem","severity":{{"name":"informational"}},"component":{{"id":"0aa","name":"{long}"}}}}"#
        );
        let rec = Record {
            seq: 1,
            time_ms: 0,
            payload: payload.into_bytes(),
        };
        let out = message(&BrokerConfig::default(), &rec);
        assert_eq!(out.routing_key.as_str().len(), 255);
        assert!(
            out.routing_key
                .as_str()
                .starts_with("iem.informational.nnn")
        );
        assert_eq!(
            out.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("a")
        );
        let headers = out.properties.headers().as_ref().unwrap();
        assert_eq!(
            headers.inner().get("spool_seq"),
            Some(&AMQPValue::LongLongInt(1))
        );
        // An id that does not fit a message id: sent as malformed, never dropped.
        let rec = Record {
            seq: 2,
            time_ms: 0,
            payload: format!(r#"{{"id":"{long}","kind":"iem"}}"#).into_bytes(),
        };
        let out = message(&BrokerConfig::default(), &rec);
        assert_eq!(out.routing_key.as_str(), "iem.malformed");
        assert!(out.properties.message_id().is_none());
        let bad = BrokerConfig {
            exchange: Some(long),
            ..BrokerConfig::default()
        };
        assert!(matches!(
            exchange(&bad),
            Err(PublishError::AmqpName {
                key: "broker.exchange",
                ..
            })
        ));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            user: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let cfg = BrokerConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 300,
            ..BrokerConfig::default()
        };
        let mut b = Backoff::new(&cfg);
        let steps: Vec<u64> = (0..4).map(|_| b.step().as_millis() as u64).collect();
        assert_eq!(steps, [100, 200, 300, 300]);
    }
}
