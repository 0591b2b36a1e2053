//! The `[telemetry]` section: the metrics/health endpoint, the log filter, the spool warning level.
//!
//! ```toml
//! [telemetry]
//! metrics_listen = "127.0.0.1:9177"   # "" or false: no endpoint; true: the default address
//! log_level = "info"                  # a tracing filter; RUST_LOG wins when set
//! spool_warning_records = 10000       # /health turns 503 at this backlog while the broker is down
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Problem;

/// Default of `spool_warning_records`.
pub(crate) const DEFAULT_SPOOL_WARNING_RECORDS: u64 = 10_000;

/// `metrics_listen` as written: an address, `""`, or a boolean.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum Listen {
    Enabled(bool),
    Address(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub(crate) metrics_listen: Listen,
    pub log_level: Option<String>,
    pub(crate) spool_warning_records: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics_listen: Listen::Address(crate::telemetry::http::DEFAULT_LISTEN.to_string()),
            log_level: None,
            spool_warning_records: DEFAULT_SPOOL_WARNING_RECORDS,
        }
    }
}

impl TelemetryConfig {
    /// Where to serve `/metrics` and `/health`; `None` when turned off (or invalid, which
    /// `validate` reports first).
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        match &self.metrics_listen {
            Listen::Enabled(false) => None,
            Listen::Enabled(true) => crate::telemetry::http::DEFAULT_LISTEN.parse().ok(),
            Listen::Address(a) if a.trim().is_empty() => None,
            Listen::Address(a) => a.trim().parse().ok(),
        }
    }

    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if let Listen::Address(a) = &self.metrics_listen
            && !a.trim().is_empty()
            && a.trim().parse::<SocketAddr>().is_err()
        {
            problems.push(Problem::new(
                "telemetry.metrics_listen",
                format!("{a:?} is not an IP:port address (e.g. \"127.0.0.1:9177\"); use \"\" or false to turn the endpoint off"),
            ));
        }
        if let Some(level) = &self.log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            problems.push(Problem::new(
                "telemetry.log_level",
                format!("{level:?} is not a log filter: {e}"),
            ));
        }
        if self.spool_warning_records == 0 {
            problems.push(Problem::new(
                "telemetry.spool_warning_records",
                "must be at least 1",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> TelemetryConfig {
        toml::from_str(text).unwrap()
    }

    fn problems(c: &TelemetryConfig) -> Vec<Problem> {
        let mut p = Vec::new();
        c.validate(&mut p);
        p
    }

    #[test]
    fn defaults_listen_on_localhost_9177() {
        let c = parse("");
        assert_eq!(c, TelemetryConfig::default());
        assert_eq!(c.metrics_addr(), Some("127.0.0.1:9177".parse().unwrap()));
        assert!(problems(&c).is_empty());
    }

    #[test]
    fn endpoint_can_be_turned_off_or_moved() {
        assert_eq!(parse("metrics_listen = \"\"").metrics_addr(), None);
        assert_eq!(parse("metrics_listen = false").metrics_addr(), None);
        assert_eq!(
            parse("metrics_listen = true").metrics_addr(),
            Some("127.0.0.1:9177".parse().unwrap())
        );
        assert_eq!(
            parse("metrics_listen = \"[::1]:9000\"").metrics_addr(),
            Some("[::1]:9000".parse().unwrap())
        );
    }

    #[test]
    fn bad_values_are_reported_with_their_keys() {
        let c = parse(
            "metrics_listen = \"localhost\"\nlog_level = \"info,[\"\nspool_warning_records = 0",
        );
        let keys: Vec<String> = problems(&c).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "telemetry.metrics_listen",
                "telemetry.log_level",
                "telemetry.spool_warning_records"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<TelemetryConfig>("metrics_port = 1").is_err());
    }
}
