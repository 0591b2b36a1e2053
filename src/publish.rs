//! Publishing to RabbitMQ: drains the spool in order, with publisher confirms, and acks the
//! spool only for what the broker confirmed.
//!
//! Delivery rule: a message is delivered when its confirm is `Ack(None)`. With `mandatory` set,
//! an unroutable message comes back as `basic.return` *followed by* an ack; lapin folds the two
//! into `Ack(Some(returned))`, which is therefore a failure, as is a `Nack` or a channel or
//! connection error. On failure the publisher waits (capped exponential backoff) and re-sends
//! from the first unconfirmed record, so order is kept and messages after the failed one may be
//! delivered twice (at-least-once; the alert id is the message id for de-duplication).
//!
//! Confirms are consumed in publish order, so "every confirm so far was `Ack(None)`" makes the
//! spool's acked position a prefix of the log.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPUri, AMQPUserInfo};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde::Deserialize;

use crate::alert::Alert;
use crate::config::broker::{self, BodyFormat, BrokerConfig, QueueKind, redact_url};
use crate::shutdown::Shutdown;
use crate::spool::{Record, SpoolError, SpoolReader};

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
}

/// Counters the lead exports as metrics.
pub struct PublishStats {
    pub published_total: AtomicU64,
    pub retries_total: AtomicU64,
    pub nacks_total: AtomicU64,
    pub returns_total: AtomicU64,
    connected: Vec<AtomicBool>,
    urls: Vec<String>,
    latency: Option<LatencyObserver>,
}

/// Called with the time from spooling to broker confirm of each delivered alert.
pub type LatencyObserver = Arc<dyn Fn(Duration) + Send + Sync>;

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

fn tls_config(config: &BrokerConfig) -> Result<OwnedTLSConfig, PublishError> {
    let Some(tls) = &config.tls else {
        return Ok(OwnedTLSConfig::default());
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| PublishError::Tls(format!("{}: {e}", p.display())))
    };
    let cert_chain = match &tls.ca_file {
        Some(p) => Some(
            String::from_utf8(read(p)?)
                .map_err(|_| PublishError::Tls(format!("{}: not PEM text", p.display())))?,
        ),
        None => None,
    };
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => Some(OwnedIdentity::PKCS8 {
            pem: read(c)?,
            key: read(k)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
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

/// The order in which to try the URLs: `preferred` (see [`preferred_order`]), with the one just
/// lost tried last so that a failover does not bounce straight back to a dying node.
pub fn connect_order(preferred: &[usize], just_lost: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = preferred
        .iter()
        .copied()
        .filter(|&i| Some(i) != just_lost)
        .collect();
    if let Some(l) = just_lost.filter(|l| preferred.contains(l)) {
        order.push(l);
    }
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

/// `iem.<severity name>.<component name or id>`, or `iem.malformed`.
fn routing_key(meta: &Meta<'_>) -> String {
    if meta.kind.as_deref() == Some("malformed") {
        return "iem.malformed".into();
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
    key
}

/// A message ready to publish; the body borrows the spooled payload when it is sent as is.
pub struct Outgoing<'r> {
    pub exchange: &'r str,
    pub routing_key: String,
    pub body: Cow<'r, [u8]>,
    pub properties: BasicProperties,
}

/// Builds the message for one spooled record.
pub fn message<'r>(config: &'r BrokerConfig, rec: &'r Record) -> Outgoing<'r> {
    let exchange = config.exchange_name();
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_timestamp(u64::try_from(rec.time_ms / 1000).unwrap_or(0));
    let mut headers = FieldTable::default();
    let meta = serde_json::from_slice::<Meta<'_>>(&rec.payload);
    let (routing_key, body, schema) = match (config.format, &meta) {
        (BodyFormat::V1, Ok(m)) => (
            routing_key(m),
            Cow::Borrowed(rec.payload.as_slice()),
            m.schema.as_deref().unwrap_or(crate::alert::SCHEMA),
        ),
        (BodyFormat::Sspl, Ok(_)) => {
            let body = serde_json::from_slice::<Alert>(&rec.payload)
                .ok()
                .and_then(|a| serde_json::to_vec(&crate::sspl::body(&a)).ok())
                .map_or(Cow::Borrowed(rec.payload.as_slice()), Cow::Owned);
            ("sensor-key".into(), body, "sspl/1.0.0")
        }
        // Never dropped: an unreadable payload still goes out, where someone can see it.
        (_, Err(_)) => (
            "iem.malformed".into(),
            Cow::Borrowed(rec.payload.as_slice()),
            "unknown",
        ),
    };
    if let Ok(m) = &meta {
        props = props.with_message_id(m.id.as_ref().into());
    }
    headers.insert("schema".into(), AMQPValue::LongString(schema.into()));
    props = props.with_headers(headers);
    Outgoing {
        exchange,
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
}

/// The frame size iemd proposes unless the URL sets `frame_max` (the broker may lower it).
const FRAME_MAX: u32 = 16 * 1024;

/// Connects to the first reachable broker URL of `config`, with its credentials and TLS, for
/// tools that consume (`iemctl tail`). Returns the connection and the (redacted) URL used.
pub async fn connect_any(config: &BrokerConfig) -> Result<(Connection, String), PublishError> {
    let creds = credentials(config)?;
    let tls = tls_config(config)?;
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
async fn open(
    url: &str,
    creds: &Credentials,
    tls: &OwnedTLSConfig,
) -> Result<Connection, ConnectError> {
    let mut uri: AMQPUri = url.parse().map_err(ConnectError::Url)?;
    uri.authority.userinfo = AMQPUserInfo {
        username: creds.user.clone(),
        password: creds.password.clone(),
    };
    // lapin keeps a send and a receive buffer of 32 frames each, allocated up front: at
    // RabbitMQ's default 128 KiB frame_max that is 8 MiB resident, a third of the daemon.
    // Alerts are ~1-2 KiB; a larger one is simply sent as several body frames.
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_uri_with_config(
        uri,
        ConnectionProperties::default(),
        tls.clone(),
        runtime,
    )
    .await?)
}

async fn connect(
    config: &BrokerConfig,
    url: &str,
    creds: &Credentials,
    tls: &OwnedTLSConfig,
) -> Result<Session, ConnectError> {
    let fut = async {
        let conn = open(url, creds, tls).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare(config, &channel).await?;
        Ok::<_, ConnectError>(Session { conn, channel })
    };
    tokio::time::timeout(Duration::from_millis(config.connect_timeout_ms), fut)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn declare(config: &BrokerConfig, channel: &Channel) -> Result<(), lapin::Error> {
    if !config.declare {
        return Ok(());
    }
    let exchange = config.exchange_name();
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    if let Some(q) = &config.queue {
        let mut args = FieldTable::default();
        if q.kind == QueueKind::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        channel
            .queue_declare(
                q.name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
        channel
            .queue_bind(
                q.name.as_str().into(),
                exchange.into(),
                q.binding_key.as_str().into(),
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
    /// Something was not confirmed; `reconnect` when the connection or channel is unusable.
    Failed {
        reconnect: bool,
    },
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
    let tls = tls_config(config)?;
    let mut backoff = Backoff::new(config);
    let mut unreachable_log = Throttle {
        last: None,
        every: Duration::from_secs(30),
        suppressed: 0,
    };
    let preferred = preferred_order(&config.urls, config.local_first, &host_name());
    let mut just_lost = None;
    let token = shutdown.token.clone();
    loop {
        if token.is_cancelled() {
            reader.persist()?;
            return Ok(());
        }
        let mut session = None;
        let mut failures = Vec::new();
        for idx in connect_order(&preferred, just_lost) {
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
        let Some((idx, session)) = session else {
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
        stats.set_connected(idx, true);
        tracing::info!(url = %redact_url(&config.urls[idx]), "connected to broker");
        let ended = loop {
            reader.rewind();
            let ended = pump(config, &mut reader, &session, &token, &stats, &mut backoff).await?;
            match ended {
                Ended::Failed { reconnect: false } if !token.is_cancelled() => {
                    stats.retries_total.fetch_add(1, Ordering::Relaxed);
                    sleep_or_cancel(backoff.step(), &token).await;
                }
                other => break other,
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
        match ended {
            Ended::Shutdown => return Ok(()),
            Ended::Failed { .. } => {
                stats.retries_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %redact_url(&config.urls[idx]), "lost the broker; failing over");
                just_lost = Some(idx);
                sleep_or_cancel(backoff.step(), &token).await;
            }
        }
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
    reader: &mut SpoolReader,
    session: &Session,
    token: &tokio_util::sync::CancellationToken,
    stats: &PublishStats,
    backoff: &mut Backoff,
) -> Result<Ended, PublishError> {
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
    let ended = loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                // Wait for what is in flight so that it is acked and not re-sent at the next start.
                let wait = Duration::from_millis(config.shutdown_timeout_ms);
                let _ = tokio::time::timeout(wait, async {
                    while let Some((seq, time_ms, res)) = inflight.next().await {
                        if !settle(seq, time_ms, res, stats, &mut confirmed) {
                            break;
                        }
                    }
                }).await;
                break Ended::Shutdown;
            }
            Some((seq, time_ms, res)) = inflight.next(), if !inflight.is_empty() => {
                if !settle(seq, time_ms, res, stats, &mut confirmed) {
                    break Ended::Failed { reconnect: !session.conn.status().connected() || !session.channel.status().connected() };
                }
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
                    out.exchange.into(),
                    out.routing_key.as_str().into(),
                    mandatory,
                    &out.body,
                    out.properties,
                )).await;
                let Ok(published) = published else {
                    tracing::warn!(seq = rec.seq, "publish blocked for {stall:?}; reconnecting");
                    break Ended::Failed { reconnect: true };
                };
                match published {
                    Ok(confirm) => {
                        let (seq, time_ms) = (rec.seq, rec.time_ms);
                        inflight.push_back(async move { (seq, time_ms, confirm.await) });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, seq = rec.seq, "publish failed");
                        break Ended::Failed { reconnect: true };
                    }
                }
            }
            _ = tick.tick() => {
                if !session.conn.status().connected() || !session.channel.status().connected() {
                    break Ended::Failed { reconnect: true };
                }
                if !inflight.is_empty() && progress.elapsed() > stall {
                    tracing::warn!(in_flight = inflight.len(),
                        "no confirm from the broker for {stall:?}; reconnecting and sending again");
                    break Ended::Failed { reconnect: true };
                }
            }
        }
    };
    if let Some(c) = confirmed {
        reader.ack(c);
    }
    Ok(ended)
}

/// Accounts for one confirm; true when the message was delivered.
fn settle(
    seq: u64,
    time_ms: i64,
    res: Result<Confirmation, lapin::Error>,
    stats: &PublishStats,
    confirmed: &mut Option<u64>,
) -> bool {
    match res {
        Ok(Confirmation::Ack(None)) => {
            stats.published_total.fetch_add(1, Ordering::Relaxed);
            if let Some(observe) = &stats.latency {
                let ms = chrono::Utc::now().timestamp_millis() - time_ms;
                observe(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            }
            *confirmed = Some(seq);
            true
        }
        Ok(Confirmation::Ack(Some(returned))) => {
            stats.returns_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(seq, reply_code = returned.reply_code, reply_text = %returned.reply_text,
                exchange = %returned.delivery.exchange, routing_key = %returned.delivery.routing_key,
                "broker returned an alert (unroutable); it stays in the spool and is retried");
            false
        }
        Ok(Confirmation::Nack(_)) => {
            stats.nacks_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                seq,
                "broker nacked an alert; it stays in the spool and is retried"
            );
            false
        }
        Ok(Confirmation::NotRequested) => {
            tracing::error!(seq, "publisher confirms are not active on the channel");
            false
        }
        Err(e) => {
            tracing::warn!(seq, error = %e, "no confirm for an alert; it stays in the spool and is retried");
            false
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
    let tls = tls_config(config)?;
    let mut session = None;
    let mut failures = Vec::new();
    let preferred = preferred_order(&config.urls, config.local_first, &host_name());
    for idx in connect_order(&preferred, None) {
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
        if settle(seq, time_ms, res, &stats, &mut confirmed) {
            report.delivered += 1;
        } else {
            report.failed.push(seq);
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
                out.exchange.into(),
                out.routing_key.as_str().into(),
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
    fn connect_order_puts_the_lost_url_last() {
        assert_eq!(connect_order(&[2, 0, 1], None), [2, 0, 1]);
        assert_eq!(connect_order(&[2, 0, 1], Some(2)), [0, 1, 2]);
        assert_eq!(connect_order(&[2, 0, 1], Some(0)), [2, 1, 0]);
        assert_eq!(connect_order(&[0], Some(0)), [0]);
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
        assert_eq!(routing_key(&m), "iem.error.s3");
        let m: Meta<'_> =
            serde_json::from_str(r#"{"id":"a","kind":"iem","component":{"id":"0F3","name":null}}"#)
                .unwrap();
        assert_eq!(routing_key(&m), "iem.unknown.0f3");
        let m: Meta<'_> = serde_json::from_str(r#"{"id":"a","kind":"malformed"}"#).unwrap();
        assert_eq!(routing_key(&m), "iem.malformed");
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
