//! The `[spool]` section: where the durable spool lives, how big it may grow, how often it syncs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problem;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the spool (created 0700).
    pub dir: PathBuf,
    /// Bound on the bytes of records not yet confirmed by the broker. When reached, appends wait
    /// (backpressure to the sources); nothing is dropped or overwritten. Disk use stays below
    /// this plus one segment.
    pub max_bytes: u64,
    /// A new segment file is started when the current one reaches this size.
    pub segment_bytes: u64,
    /// Group commit: records are fsynced together at most this many milliseconds after being
    /// appended. 0 syncs as soon as a record is appended (appends made while a sync runs are
    /// committed together by the next one).
    ///
    /// Default 0: the publisher sends only durable records, so this is latency every alert pays.
    /// Measured (`cargo bench --bench e2e`, docs/PERFORMANCE.md): line to consumer p50 1 ms and
    /// p99 16 ms at 1,000 IEM/s, against p50 15 ms and p99 25-80 ms with a 20 ms timer, with
    /// the same throughput. Fsyncs batch themselves: at most one runs at a time, and it commits
    /// everything appended while the previous one ran. A positive value caps fsyncs at
    /// 1000/value per second, for disks where each fsync is costly; an idle spool does not sync.
    pub sync_interval_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("/var/lib/iemd/spool"),
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            sync_interval_ms: 0,
        }
    }
}

impl SpoolConfig {
    /// The group-commit interval.
    pub(crate) fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }

    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.dir.as_os_str().is_empty() {
            problems.push(Problem::new("spool.dir", "must not be empty"));
        }
        if self.max_bytes < 64 << 10 {
            problems.push(Problem::new("spool.max_bytes", "must be at least 65536"));
        }
        if self.segment_bytes < 4096 {
            problems.push(Problem::new("spool.segment_bytes", "must be at least 4096"));
        }
        if self.sync_interval_ms > 10_000 {
            problems.push(Problem::new(
                "spool.sync_interval_ms",
                "must be at most 10000 (alerts would wait that long before being published)",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        let mut p = Vec::new();
        SpoolConfig::default().validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        let c: SpoolConfig = toml::from_str("max_bytes = 10\nsync_interval_ms = 99999").unwrap();
        c.validate(&mut p);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["spool.max_bytes", "spool.sync_interval_ms"]);
    }
}
