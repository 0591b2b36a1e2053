//! Observability: the metrics iemd exports, the observable events that bump them and log,
//! the `/metrics` + `/health` HTTP endpoint, and tracing set-up.
//!
//! - `metrics`: the registry (atomics) and the Prometheus text format.
//! - `events`: one small function per observable event (log + counter), the only place stages
//!   touch the metrics below.
//! - `http`: the endpoint and the health rule.
//! - `logging`: `init_logging`, with syslog level prefixes under systemd.

pub(crate) mod events;
pub mod http;
pub(crate) mod logging;
pub mod metrics;

use std::sync::{Arc, LazyLock};

pub use logging::init_logging;
use metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, Registry};

/// Errors of the telemetry endpoint and its client.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics endpoint URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("HTTP request to {url} failed: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("HTTP request to {url} timed out")]
    Timeout { url: String },
    #[error("bad log filter {filter:?}: {reason}")]
    LogFilter { filter: String, reason: String },
    #[error("tracing is already set up")]
    LoggingAlreadySet,
}

/// Buckets of `iemd_line_to_confirm_seconds`: 1 ms to 10 s.
pub(crate) const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The metrics iemd exports. Labels are low-cardinality: `source` is a configured source name,
/// `url` a configured broker URL without its password.
pub struct Metrics {
    pub lines_read: CounterVec,
    pub bytes_read: CounterVec,
    pub iems: CounterVec,
    pub malformed: CounterVec,
    pub(crate) alerts_spooled: Counter,
    pub alerts_published: Counter,
    pub publish_retries: Counter,
    pub publish_nacks: Counter,
    pub publish_returns: Counter,
    pub publish_refused_seconds: GaugeVec,
    pub spool_pending_records: Gauge,
    pub spool_pending_bytes: Gauge,
    pub spool_oldest_pending_age_seconds: Gauge,
    pub spool_full_waits: Counter,
    pub(crate) checkpoint_writes: Counter,
    pub(crate) cross_source_matches: CounterVec,
    pub broker_connected: GaugeVec,
    pub line_to_confirm_seconds: Histogram,
    pub(crate) stage_restarts: CounterVec,
    pub(crate) alerts_cut: Counter,
    pub(crate) faults_open: Gauge,
    pub(crate) escalations: Counter,
    pub(crate) repeats_coalesced: Counter,
    pub(crate) flaps: Counter,
}

impl Metrics {
    /// Registers every iemd metric in `r`.
    pub fn register(r: &Registry) -> Metrics {
        let src = &["source"];
        Metrics {
            lines_read: r.counter_vec(
                "iemd_lines_read_total",
                "Lines (or journal entries) read, per source.",
                src,
            ),
            bytes_read: r.counter_vec("iemd_bytes_read_total", "Bytes read, per source.", src),
            iems: r.counter_vec(
                "iemd_iems_total",
                "Well-formed IEMs found, per source.",
                src,
            ),
            malformed: r.counter_vec(
                "iemd_malformed_total",
                "Lines with an IEC: marker but no valid code, per source.",
                src,
            ),
            alerts_spooled: r.counter("iemd_alerts_spooled_total", "Alerts written to the spool."),
            alerts_published: r.counter(
                "iemd_alerts_published_total",
                "Alerts confirmed by the broker.",
            ),
            publish_retries: r.counter(
                "iemd_publish_retries_total",
                "Publish attempts repeated after a failure.",
            ),
            publish_nacks: r.counter("iemd_publish_nacks_total", "Publishes the broker nacked."),
            publish_returns: r.counter(
                "iemd_publish_returns_total",
                "Publishes the broker returned as unroutable.",
            ),
            publish_refused_seconds: r.gauge_vec(
                "iemd_publish_refused_seconds",
                "Seconds the broker has been refusing (nack) or returning alerts; 0 when it takes them.",
                &["reason"],
            ),
            spool_pending_records: r.gauge(
                "iemd_spool_pending_records",
                "Alerts in the spool not yet confirmed.",
            ),
            spool_pending_bytes: r.gauge(
                "iemd_spool_pending_bytes",
                "Bytes of the spool not yet confirmed.",
            ),
            spool_oldest_pending_age_seconds: r.gauge(
                "iemd_spool_oldest_pending_age_seconds",
                "Age of the oldest unconfirmed alert (0 when none).",
            ),
            spool_full_waits: r.counter(
                "iemd_spool_full_waits_total",
                "Times a writer waited because the spool was full.",
            ),
            checkpoint_writes: r.counter(
                "iemd_checkpoint_writes_total",
                "Source checkpoints written.",
            ),
            cross_source_matches: r.counter_vec(
                "iemd_cross_source_matches_total",
                "Sightings dropped as the twin of one already read from the other side (journald / files), per source of the dropped one.",
                src,
            ),
            broker_connected: r.gauge_vec(
                "iemd_broker_connected",
                "1 when connected to this broker URL (password removed), else 0.",
                &["url"],
            ),
            line_to_confirm_seconds: r.histogram(
                "iemd_line_to_confirm_seconds",
                "Time from reading a line to the broker confirming its alert.",
                &LATENCY_BUCKETS,
            ),
            stage_restarts: r.counter_vec(
                "iemd_stage_restarts_total",
                "Times a supervised task (publisher, source, metrics server) ended and was restarted.",
                &["stage"],
            ),
            alerts_cut: r.counter(
                "iemd_alerts_cut_total",
                "Alerts whose message and raw line were shortened to fit a spool record.",
            ),
            faults_open: r.gauge(
                "iemd_faults_open",
                "Faults open in the lifecycle ledger (iemctl faults lists them).",
            ),
            escalations: r.counter(
                "iemd_escalations_total",
                "Escalation alerts for faults open past their escalate_after.",
            ),
            repeats_coalesced: r.counter(
                "iemd_repeats_coalesced_total",
                "Repeats of open faults counted into a summary instead of an alert each.",
            ),
            flaps: r.counter(
                "iemd_flaps_total",
                "Faults resolved within their hold_down, published as one flap alert.",
            ),
        }
    }
}

static REGISTRY: LazyLock<Arc<Registry>> = LazyLock::new(|| Arc::new(Registry::new()));
static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics::register(&REGISTRY));

/// The process-wide registry the endpoint serves (the iemd metrics are registered in it on
/// first use of `metrics()`; add bridge series with `registry().gauge_fn(..)`).
pub(crate) fn registry() -> Arc<Registry> {
    LazyLock::force(&METRICS);
    REGISTRY.clone()
}

/// The process-wide iemd metrics.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_iemd_metric_is_exported() {
        let r = Registry::new();
        let m = Metrics::register(&r);
        m.lines_read.with(&["messages"]).inc();
        m.cross_source_matches.with(&["messages"]).inc();
        m.broker_connected.with(&["amqp://h/"]).set(1.0);
        m.stage_restarts.with(&["publisher"]).inc();
        m.publish_refused_seconds.with(&["nack"]).set(0.0);
        let text = r.encode();
        for name in [
            "iemd_lines_read_total",
            "iemd_bytes_read_total",
            "iemd_iems_total",
            "iemd_malformed_total",
            "iemd_alerts_spooled_total",
            "iemd_alerts_published_total",
            "iemd_publish_retries_total",
            "iemd_publish_nacks_total",
            "iemd_publish_returns_total",
            "iemd_publish_refused_seconds",
            "iemd_spool_pending_records",
            "iemd_spool_pending_bytes",
            "iemd_spool_oldest_pending_age_seconds",
            "iemd_spool_full_waits_total",
            "iemd_checkpoint_writes_total",
            "iemd_cross_source_matches_total",
            "iemd_broker_connected",
            "iemd_line_to_confirm_seconds",
            "iemd_stage_restarts_total",
            "iemd_alerts_cut_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing in\n{text}"
            );
        }
        assert!(
            text.contains("iemd_line_to_confirm_seconds_bucket{le=\"10\"} 0\n"),
            "{text}"
        );
    }
}
