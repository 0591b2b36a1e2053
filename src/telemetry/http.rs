//! The telemetry endpoint: `GET /metrics` (Prometheus text format 0.0.4) and `GET /health`
//! (200 or 503 with a JSON body naming each failing rule), served with hyper's HTTP/1 connection
//! API, plus the small client `iemctl stats` uses.
//!
//! Bounds, because this port must not become a way to hurt the daemon: request heads are read
//! within 5 s and at most 16 KiB are buffered per connection; at most `MAX_CONNECTIONS` are open
//! at once, and a new connection beyond that closes the *oldest* one instead of being refused, so
//! idle sockets held open by a local user cannot starve `/health` (each costs one accept, and is
//! gone as soon as newer connections arrive); only GET and HEAD are answered.
//!
//! # Health rules
//!
//! `/health` is the list [`RULES`]: each rule is a name and a function that reads
//! [`HealthInputs`] and says why work is stopped, if it is. To add a rule: add the fact it needs
//! to `HealthInputs` (the pipeline fills it at each request), write the function, list it in
//! `RULES`, and describe it with the operator's fix in docs/OPERATIONS.md.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::TelemetryError;
use super::metrics::Registry;
use crate::shutdown::Shutdown;

/// Default listen address of the endpoint.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9177";
/// Content type of the Prometheus text format 0.0.4.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections open at once; the next one closes the oldest.
pub const MAX_CONNECTIONS: usize = 32;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BUF: usize = 16 * 1024;

/// What the daemon knows about its own health at one moment; the pipeline fills it at each
/// request. Every field is shown in the `/health` body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthInputs {
    /// Every supervised long-running task (publisher, each source, the spool's sync thread, the
    /// metrics server) and whether it runs.
    pub stages: Vec<StageHealth>,
    /// True when a publishing connection to some broker is up.
    pub broker_connected: bool,
    /// Alerts in the spool not yet confirmed.
    pub spool_pending_records: u64,
    /// `telemetry.spool_warning_records`.
    pub spool_warning_records: u64,
    /// The spool (or its filesystem) is full: appends wait, so the sources do not read.
    pub spool_full: bool,
    /// Alerts are pending and the broker has confirmed none of them for this long (ms); `None`
    /// when nothing is pending.
    pub unconfirmed_for_ms: Option<u64>,
    /// `broker.stall_timeout_ms`.
    pub stall_timeout_ms: u64,
    /// Source paths that exist but cannot be read (file, glob directory, journal):
    /// `(source, path, reason)`.
    pub unreadable: Vec<(String, String, String)>,
    /// How long (ms) the broker has been refusing (nacking) alerts, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_refusing_ms: Option<u64>,
    /// How long (ms) alerts have been coming back unroutable, while they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_returning_ms: Option<u64>,
    /// The broker's reason for the last return (`312 NO_ROUTE (exchange .., routing key ..)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_return_reason: Option<String>,
}

/// One supervised task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageHealth {
    /// `publisher`, `source <name>`, `spool sync`, `metrics server`.
    pub name: String,
    pub running: bool,
    /// Why it stopped and when it is restarted (empty while running).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Computes the inputs at each `/health` request.
pub(crate) type HealthFn = Arc<dyn Fn() -> HealthInputs + Send + Sync>;

/// A health rule: pushes a reason for each way it finds work stopped.
pub(crate) struct Rule {
    /// Shown with each reason (`/health`, `iemctl stats`); docs/OPERATIONS.md lists them.
    pub(crate) name: &'static str,
    pub(crate) check: fn(&HealthInputs, &mut Vec<String>),
}

/// Every health rule, in the order their reasons are listed.
pub(crate) const RULES: &[Rule] = &[
    Rule {
        name: "stage_stopped",
        check: stage_stopped,
    },
    Rule {
        name: "source_unreadable",
        check: source_unreadable,
    },
    Rule {
        name: "stalled",
        check: stalled,
    },
    Rule {
        name: "spool_full",
        check: spool_full,
    },
    Rule {
        name: "broker_backlog",
        check: broker_backlog,
    },
    Rule {
        name: "broker_refusing",
        check: broker_refusing,
    },
    Rule {
        name: "broker_returning",
        check: broker_returning,
    },
];

/// A supervised task is not running (it is restarted with backoff; the reason says why it ended).
fn stage_stopped(i: &HealthInputs, out: &mut Vec<String>) {
    for s in i.stages.iter().filter(|s| !s.running) {
        out.push(format!("{} is not running: {}", s.name, s.reason));
    }
}

/// A source path exists but cannot be read (permissions, a journal journalctl cannot open).
fn source_unreadable(i: &HealthInputs, out: &mut Vec<String>) {
    for (source, path, reason) in &i.unreadable {
        out.push(format!("source {source} cannot read {path}: {reason}"));
    }
}

/// Alerts are pending and none was confirmed for `stall_timeout_ms`.
fn stalled(i: &HealthInputs, out: &mut Vec<String>) {
    if let Some(ms) = i.unconfirmed_for_ms
        && ms >= i.stall_timeout_ms
    {
        out.push(format!(
            "{} alerts pending and none confirmed by the broker for {} s (stall_timeout_ms {})",
            i.spool_pending_records,
            ms / 1000,
            i.stall_timeout_ms
        ));
    }
}

/// The spool is full: the sources wait, new lines are not read.
fn spool_full(i: &HealthInputs, out: &mut Vec<String>) {
    if i.spool_full {
        out.push(format!(
            "spool full ({} alerts pending): sources are paused until the broker confirms alerts",
            i.spool_pending_records
        ));
    }
}

/// The broker is away and the backlog reached its warning level (a short outage is what the
/// spool is for).
fn broker_backlog(i: &HealthInputs, out: &mut Vec<String>) {
    if !i.broker_connected && i.spool_pending_records >= i.spool_warning_records {
        out.push(format!(
            "broker not connected and {} alerts pending in the spool (warning level {})",
            i.spool_pending_records, i.spool_warning_records
        ));
    }
}

/// The broker answers alerts with nacks (e.g. its quorum queue has no leader): the publisher
/// retries on fresh channels and other nodes meanwhile.
fn broker_refusing(i: &HealthInputs, out: &mut Vec<String>) {
    if let Some(ms) = i.broker_refusing_ms {
        out.push(format!(
            "broker refuses alerts for {} s (nack); iemd retries on fresh channels and other nodes",
            ms / 1000
        ));
    }
}

/// The broker returns alerts as unroutable (no queue bound, e.g. it was deleted).
fn broker_returning(i: &HealthInputs, out: &mut Vec<String>) {
    if let Some(ms) = i.broker_returning_ms {
        out.push(format!(
            "alerts are being returned by the broker: {}, for {} s",
            i.broker_return_reason
                .as_deref()
                .unwrap_or("no reason given"),
            ms / 1000
        ));
    }
}

/// The verdict `/health` returns.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Health {
    /// `"ok"` or `"unhealthy"`.
    pub(crate) status: &'static str,
    /// Why it is unhealthy (empty when ok), each with the rule that found it.
    pub(crate) reasons: Vec<Reason>,
    #[serde(flatten)]
    pub(crate) inputs: HealthInputs,
}

/// One failing rule and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Reason {
    pub rule: String,
    pub reason: String,
}

impl Health {
    pub(crate) fn is_ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Runs every rule of [`RULES`] on `inputs`.
pub(crate) fn evaluate(inputs: HealthInputs) -> Health {
    let mut reasons = Vec::new();
    let mut found = Vec::new();
    for rule in RULES {
        (rule.check)(&inputs, &mut found);
        reasons.extend(found.drain(..).map(|reason| Reason {
            rule: rule.name.to_string(),
            reason,
        }));
    }
    Health {
        status: if reasons.is_empty() {
            "ok"
        } else {
            "unhealthy"
        },
        reasons,
        inputs,
    }
}

/// Binds the endpoint's listener (separate from `serve` so start-up fails early on a taken port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TelemetryError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown.token` is cancelled; open
/// connections are then closed gracefully. Run it with `shutdown.tracker.spawn(serve(..))`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: HealthFn,
    shutdown: Shutdown,
) {
    // Open connections, oldest first: each one's eviction token and whether it has ended.
    let mut open: VecDeque<(CancellationToken, Arc<AtomicBool>)> = VecDeque::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        open.retain(|(_, ended)| !ended.load(Ordering::Relaxed));
        if open.len() >= MAX_CONNECTIONS
            && let Some((oldest, _)) = open.pop_front()
        {
            tracing::debug!("metrics endpoint: too many connections; closing the oldest");
            oldest.cancel();
        }
        let (evict, ended) = (CancellationToken::new(), Arc::new(AtomicBool::new(false)));
        open.push_back((evict.clone(), ended.clone()));
        let (registry, health, token) = (registry.clone(), health.clone(), shutdown.token.clone());
        shutdown.tracker.spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &registry, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                // Evicted by a newer connection: dropped at once.
                _ = evict.cancelled() => Ok(()),
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            ended.store(true, Ordering::Relaxed);
            if let Err(error) = result {
                tracing::debug!(%error, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    registry: &Registry,
    health: &HealthFn,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, METRICS_CONTENT_TYPE, registry.encode())
        }
        (&Method::GET | &Method::HEAD, "/health") => {
            let verdict = evaluate(health());
            let status = if verdict.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_string(&verdict).unwrap_or_else(|_| "{}".into());
            (status, "application/json", body + "\n")
        }
        (_, "/metrics" | "/health") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /health\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

/// `GET url` (plain `http://` only), returning the status code and the body; the whole exchange
/// must finish within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), TelemetryError> {
    tokio::time::timeout(timeout, get_inner(url))
        .await
        .map_err(|_| TelemetryError::Timeout {
            url: url.to_string(),
        })?
}

async fn get_inner(url: &str) -> Result<(u16, String), TelemetryError> {
    let bad = |reason| TelemetryError::Url {
        url: url.to_string(),
        reason,
    };
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    let host = uri.host().ok_or(bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().ok_or(bad("no host"))?.as_str();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream =
        TcpStream::connect((host, port))
            .await
            .map_err(|source| TelemetryError::Connect {
                url: url.to_string(),
                source,
            })?;
    let http_err = |source| TelemetryError::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let driver = tokio::spawn(conn);
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = path.parse().map_err(|_| bad("bad path"))?;
    req.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(authority).map_err(|_| bad("bad host"))?,
    );
    let result = async {
        let response = sender.send_request(req).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    .await
    .map_err(http_err);
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> HealthInputs {
        HealthInputs {
            stages: vec![StageHealth {
                name: "publisher".into(),
                running: true,
                reason: String::new(),
            }],
            broker_connected: true,
            spool_pending_records: 0,
            spool_warning_records: 100,
            spool_full: false,
            unconfirmed_for_ms: None,
            stall_timeout_ms: 30_000,
            unreadable: Vec::new(),
            ..HealthInputs::default()
        }
    }

    fn rules(h: &Health) -> Vec<&str> {
        h.reasons.iter().map(|r| r.rule.as_str()).collect()
    }

    #[test]
    fn healthy_when_stages_run_and_broker_up_or_spool_low() {
        assert!(evaluate(inputs()).is_ok());
        let mut i = inputs();
        i.broker_connected = false;
        i.spool_pending_records = 99;
        i.unconfirmed_for_ms = Some(29_999);
        assert!(evaluate(i).is_ok());
    }

    #[test]
    fn unhealthy_names_each_rule_and_reason() {
        let mut i = inputs();
        i.stages.push(StageHealth {
            name: "source journal".into(),
            running: false,
            reason: "journalctl gone; restarting in 2 s".into(),
        });
        i.broker_connected = false;
        i.spool_pending_records = 100;
        i.spool_full = true;
        i.unconfirmed_for_ms = Some(30_000);
        let h = evaluate(i);
        assert_eq!(h.status, "unhealthy");
        assert_eq!(
            rules(&h),
            ["stage_stopped", "stalled", "spool_full", "broker_backlog"]
        );
        assert!(RULES.iter().any(|r| r.name == "source_unreadable"));
        assert_eq!(
            h.reasons[0].reason,
            "source journal is not running: journalctl gone; restarting in 2 s"
        );
        assert_eq!(
            h.reasons[3].reason,
            "broker not connected and 100 alerts pending in the spool (warning level 100)"
        );
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["reasons"][1]["rule"], "stalled");
        assert_eq!(json["spool_full"], true);
        assert_eq!(json["stages"][1]["running"], false);
    }

    #[test]
    fn an_unreadable_source_path_is_unhealthy_and_named() {
        let mut i = inputs();
        i.unreadable = vec![(
            "messages".into(),
            "/var/log/messages".into(),
            "permission denied".into(),
        )];
        let h = evaluate(i);
        assert_eq!(
            h.reasons,
            vec![Reason {
                rule: "source_unreadable".into(),
                reason: "source messages cannot read /var/log/messages: permission denied".into()
            }]
        );
    }

    /// Issue 18 and issue 13 item 3: a broker that nacks every alert, or returns it unroutable,
    /// was "ok" while nothing was delivered.
    #[test]
    fn refused_and_returned_alerts_are_unhealthy() {
        let mut i = inputs();
        i.broker_refusing_ms = Some(7_400);
        let h = evaluate(i.clone());
        assert_eq!(
            h.reasons,
            [Reason {
                rule: "broker_refusing".into(),
                reason: "broker refuses alerts for 7 s (nack); iemd retries on fresh channels and other nodes".into()
            }]
        );
        i.broker_refusing_ms = None;
        i.broker_returning_ms = Some(12_000);
        i.broker_return_reason =
            Some("312 NO_ROUTE (exchange \"iem\", routing key \"iem.error.s3\")".into());
        let h = evaluate(i.clone());
        assert_eq!(
            h.reasons,
            [Reason {
                rule: "broker_returning".into(),
                reason: "alerts are being returned by the broker: 312 NO_ROUTE (exchange \"iem\", routing key \"iem.error.s3\"), for 12 s".into()
            }]
        );
        i.broker_returning_ms = None;
        assert!(evaluate(i).is_ok());
    }
}
