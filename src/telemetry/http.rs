//! The telemetry endpoint: `GET /metrics` (Prometheus text format 0.0.4) and `GET /health`
//! (200 or 503 with a JSON body saying why), served with hyper's HTTP/1 connection API, plus the
//! small client `iemctl stats` uses.
//!
//! Bounds, because this port must not become a way to hurt the daemon: request heads are read
//! within 5 s and at most 16 KiB are buffered per connection; at most 32 connections are served
//! at once (more are closed at accept); only GET and HEAD are answered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
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
use tokio::sync::Semaphore;

use super::TelemetryError;
use super::metrics::Registry;
use crate::shutdown::Shutdown;

/// Default listen address of the endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9177";
/// Content type of the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const MAX_CONNECTIONS: usize = 32;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BUF: usize = 16 * 1024;

/// What the daemon knows about its own health at one moment; the lead's pipeline fills it.
#[derive(Debug, Clone, Default)]
pub struct HealthInputs {
    /// Each configured source by name, and whether its task is running.
    pub sources: Vec<(String, bool)>,
    /// True when a publishing connection to some broker is up.
    pub broker_connected: bool,
    /// Alerts in the spool not yet confirmed.
    pub spool_pending_records: u64,
    /// `telemetry.spool_warning_records`.
    pub spool_warning_records: u64,
    /// Source paths that exist but cannot be read (file, glob directory, journal):
    /// `(source, path, reason)`.
    pub unreadable: Vec<(String, String, String)>,
}

/// Computes the inputs at each `/health` request.
pub type HealthFn = Arc<dyn Fn() -> HealthInputs + Send + Sync>;

/// The verdict `/health` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `"ok"` or `"unhealthy"`.
    pub status: &'static str,
    /// Why it is unhealthy (empty when ok).
    pub reasons: Vec<String>,
    pub sources: Vec<SourceHealth>,
    pub broker_connected: bool,
    pub spool_pending_records: u64,
    pub spool_warning_records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    pub name: String,
    pub running: bool,
}

impl Health {
    pub fn is_ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The health rule: healthy when every source runs, and the broker is connected or the spool
/// backlog is still below its warning level (a short broker outage is what the spool is for).
pub fn evaluate(inputs: &HealthInputs) -> Health {
    let mut reasons = Vec::new();
    for (name, running) in &inputs.sources {
        if !running {
            reasons.push(format!("source {name} is not running"));
        }
    }
    for (source, path, reason) in &inputs.unreadable {
        reasons.push(format!("source {source} cannot read {path}: {reason}"));
    }
    if !inputs.broker_connected && inputs.spool_pending_records >= inputs.spool_warning_records {
        reasons.push(format!(
            "broker not connected and {} alerts pending in the spool (warning level {})",
            inputs.spool_pending_records, inputs.spool_warning_records
        ));
    }
    Health {
        status: if reasons.is_empty() {
            "ok"
        } else {
            "unhealthy"
        },
        reasons,
        sources: inputs
            .sources
            .iter()
            .map(|(name, running)| SourceHealth {
                name: name.clone(),
                running: *running,
            })
            .collect(),
        broker_connected: inputs.broker_connected,
        spool_pending_records: inputs.spool_pending_records,
        spool_warning_records: inputs.spool_warning_records,
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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint: too many connections; closing one");
            continue;
        };
        let (registry, health, token) = (registry.clone(), health.clone(), shutdown.token.clone());
        shutdown.tracker.spawn(async move {
            let _permit = permit;
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
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
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
            let verdict = evaluate(&health());
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

    fn inputs(sources: &[(&str, bool)], broker: bool, pending: u64) -> HealthInputs {
        HealthInputs {
            sources: sources.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
            broker_connected: broker,
            spool_pending_records: pending,
            spool_warning_records: 100,
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn healthy_when_sources_run_and_broker_up_or_spool_low() {
        assert!(evaluate(&inputs(&[("a", true)], true, 5000)).is_ok());
        assert!(evaluate(&inputs(&[("a", true)], false, 99)).is_ok());
        assert!(evaluate(&inputs(&[], false, 0)).is_ok());
    }

    #[test]
    fn unhealthy_names_each_reason() {
        let h = evaluate(&inputs(&[("a", true), ("journal", false)], false, 100));
        assert_eq!(h.status, "unhealthy");
        assert_eq!(
            h.reasons,
            vec![
                "source journal is not running".to_string(),
                "broker not connected and 100 alerts pending in the spool (warning level 100)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn an_unreadable_source_path_is_unhealthy_and_named() {
        let mut i = inputs(&[("messages", true)], true, 0);
        i.unreadable = vec![(
            "messages".into(),
            "/var/log/messages".into(),
            "permission denied".into(),
        )];
        let h = evaluate(&i);
        assert_eq!(
            h.reasons,
            vec!["source messages cannot read /var/log/messages: permission denied".to_string()]
        );
    }
}
