//! The publisher's counters and conditions: what the metrics export and `/health` reads
//! (connected URLs, a nack or return episode in progress).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::broker::{BrokerConfig, redact_url};

/// Counters the lead exports as metrics, and the conditions `/health` reports.
pub struct PublishStats {
    pub published_total: AtomicU64,
    pub retries_total: AtomicU64,
    pub nacks_total: AtomicU64,
    pub returns_total: AtomicU64,
    connected: Vec<AtomicBool>,
    urls: Vec<String>,
    pub(super) latency: Option<LatencyObserver>,
    refusal: Mutex<Option<Refusal>>,
}

/// Called with the time from spooling to broker confirm of each delivered alert.
pub(crate) type LatencyObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// The broker refusing alerts: from the first nack or return until an alert is delivered.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub(super) since: Instant,
    /// The last return's reason, when alerts are being returned rather than nacked.
    pub(super) returned: Option<String>,
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

    pub(super) fn set_connected(&self, idx: usize, v: bool) {
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

    pub(super) fn set_refusal(&self, refusal: Option<Refusal>) {
        *self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = refusal;
    }
}
