//! Observable events, in one place: each function logs structurally and bumps its counter in
//! the process-wide metrics (`telemetry::metrics()`), with a fixed, low-cardinality label set.
//!
//! Stages call these rather than touching counters or logging the same facts themselves: this is
//! the one way an event is counted. (A stage that keeps counters of its own for `/health`, the
//! sources' `SourceMetrics`, the publisher's `PublishStats`, the spool's `SpoolStats`, has them
//! read at scrape time by `pipeline`, through `Registry::counter_fn`: those figures are not events
//! and have no function here.) Per-line events (`iem`) log at debug level only; `malformed` logs a
//! warning at most once per `MALFORMED_LOG_INTERVAL` per source, with the number suppressed.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::metrics;

/// How often a malformed-line warning may be logged per source.
pub(crate) const MALFORMED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A well-formed IEM with `code` was found in a line from `source`.
pub(crate) fn iem(source: &str, code: &str) {
    metrics().iems.with(&[source]).inc();
    tracing::debug!(source, code, "IEM found");
}

/// A line from `source` carried an `IEC:` marker without a valid code.
pub(crate) fn malformed(source: &str, reason: &str) {
    metrics().malformed.with(&[source]).inc();
    static LIMITS: LazyLock<Mutex<HashMap<String, RateLimit>>> = LazyLock::new(Default::default);
    let Ok(mut limits) = LIMITS.lock() else {
        return;
    };
    let limit = limits
        .entry(source.to_string())
        .or_insert_with(|| RateLimit::new(MALFORMED_LOG_INTERVAL));
    if let Some(suppressed) = limit.allow(Instant::now()) {
        tracing::warn!(
            source,
            reason,
            suppressed,
            "malformed IEM (further ones within 10 s are counted, not logged)"
        );
    }
}

/// A line from `source` was the twin of an alert already read from the other side (journald /
/// files), and was dropped.
pub(crate) fn cross_source_match(source: &str) {
    metrics().cross_source_matches.with(&[source]).inc();
    tracing::debug!(source, "cross-source twin dropped");
}

/// A lifecycle event: a fault opened or resolved, an escalation, a coalesced repeat, a flap;
/// `open` is the number of faults open after it.
pub(crate) fn lifecycle(what: Lifecycle<'_>, open: usize) {
    let m = metrics();
    m.faults_open.set(open as f64);
    match what {
        Lifecycle::Opened { family, resource } => {
            tracing::debug!(family, resource, open, "fault opened")
        }
        Lifecycle::Resolved { family, resource } => {
            tracing::debug!(family, resource, open, "fault resolved")
        }
        Lifecycle::Escalated {
            family,
            resource,
            age_secs,
        } => {
            m.escalations.inc();
            tracing::info!(family, resource, age_secs, "fault still open: escalated");
        }
        Lifecycle::Coalesced => m.repeats_coalesced.inc(),
        Lifecycle::Flapped { family, resource } => {
            m.flaps.inc();
            tracing::info!(
                family,
                resource,
                "fault resolved within its hold-down: flap"
            );
        }
        Lifecycle::Restored => {}
    }
}

/// What happened in the fault lifecycle (`lifecycle`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lifecycle<'a> {
    Opened {
        family: &'a str,
        resource: &'a str,
    },
    Resolved {
        family: &'a str,
        resource: &'a str,
    },
    Escalated {
        family: &'a str,
        resource: &'a str,
        age_secs: u64,
    },
    Coalesced,
    Flapped {
        family: &'a str,
        resource: &'a str,
    },
    Restored,
}

/// `n` alerts were appended to the spool in one batch.
pub(crate) fn alerts_spooled(n: usize) {
    metrics().alerts_spooled.add(n as u64);
}

/// The broker confirmed an alert; `since_read` is the time since its line was read.
pub(crate) fn alert_published(since_read: Duration) {
    let m = metrics();
    m.alerts_published.inc();
    m.line_to_confirm_seconds.observe(since_read.as_secs_f64());
}

/// The checkpoints (every source's position, with the later stages' state) were saved.
pub(crate) fn checkpoints_saved() {
    metrics().checkpoint_writes.inc();
    tracing::trace!("checkpoints saved");
}

/// A supervised task ended while it should run; it is restarted after `restart_in`.
pub(crate) fn stage_failed(stage: &str, reason: &str, restart_in: Duration) {
    metrics().stage_restarts.with(&[stage]).inc();
    tracing::error!(
        stage,
        reason,
        restart_in_s = restart_in.as_secs(),
        "task stopped; restarting it (see /health and docs/OPERATIONS.md)"
    );
}

/// An alert too large for a spool record had its message and raw line cut from `from` to
/// `to` bytes of JSON (logged at most once per `MALFORMED_LOG_INTERVAL`).
pub(crate) fn alert_cut(source: &str, from: usize, to: usize) {
    metrics().alerts_cut.inc();
    static LIMIT: LazyLock<Mutex<RateLimit>> =
        LazyLock::new(|| Mutex::new(RateLimit::new(MALFORMED_LOG_INTERVAL)));
    let Ok(mut limit) = LIMIT.lock() else {
        return;
    };
    if let Some(suppressed) = limit.allow(Instant::now()) {
        tracing::warn!(
            source,
            from,
            to,
            suppressed,
            "alert too large for a spool record: its message and raw line were cut (truncated: true)"
        );
    }
}

/// The one rate limit for logs: lets `burst` events through per interval (a window opened by the
/// first event let through after the last window ended) and counts the ones held back, so the
/// next line logged can say how many were not.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    burst: u32,
    /// When the current window opened, and how many events it let through.
    window: Option<(Instant, u32)>,
    suppressed: u64,
}

impl RateLimit {
    /// One event per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimit::with_burst(interval, 1)
    }

    /// `burst` events per `interval`.
    pub(crate) fn with_burst(interval: Duration, burst: u32) -> Self {
        RateLimit {
            interval,
            burst,
            window: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the event at `now` should be logged, `n` being how many were held back
    /// since the last logged one; `None` when it should be counted only.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match &mut self.window {
            Some((opened, _)) if now.saturating_duration_since(*opened) >= self.interval => {
                self.window = Some((now, 1));
            }
            Some((_, let_through)) if *let_through >= self.burst => {
                self.suppressed += 1;
                return None;
            }
            Some((_, let_through)) => *let_through += 1,
            None => self.window = Some((now, 1)),
        }
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_logs_once_per_interval_and_reports_the_suppressed() {
        let mut r = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn rate_limit_with_a_burst_lets_that_many_through_per_window() {
        let mut r = RateLimit::with_burst(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(r.allow(at(0)), Some(0));
        assert_eq!(r.allow(at(1)), Some(0));
        assert_eq!(r.allow(at(2)), None);
        assert_eq!(r.allow(at(59)), None);
        assert_eq!(r.allow(at(60)), Some(2));
        assert_eq!(r.allow(at(61)), Some(0));
        assert_eq!(r.allow(at(62)), None);
    }

    #[test]
    fn events_bump_the_process_metrics() {
        // Unique label values: other tests in this process share the global metrics.
        let src = "events-unit-test-src";
        iem(src, "ES0030010001");
        malformed(src, "bad code");
        malformed(src, "bad code");
        let m = metrics();
        assert_eq!(m.iems.with(&[src]).get(), 1);
        assert_eq!(m.malformed.with(&[src]).get(), 2);
        let (spooled, saved) = (m.alerts_spooled.get(), m.checkpoint_writes.get());
        alerts_spooled(3);
        checkpoints_saved();
        assert!(m.alerts_spooled.get() >= spooled + 3);
        assert!(m.checkpoint_writes.get() > saved);
    }
}
