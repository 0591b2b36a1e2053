//! The `[enrich]` section: where host identity and hardware context come from.
//!
//! ```toml
//! [enrich]
//! site_id = "dc1"          # copied into every alert's `host` and the SSPL `info`
//! rack_id = "r12"
//! node_id = "srvnode-1"
//! cluster_id = "c-5f1e"
//! # hostname = "node1"     # default: the kernel's hostname
//! # fqdn = "node1.example" # default: derived from /etc/hosts, else the hostname (no DNS at start)
//! cache_ttl = 60           # seconds a resolved device stays cached before sysfs is read again
//! max_refs = 16            # at most this many device references are resolved per alert
//! sysfs_root = "/sys"
//! dev_root = "/dev"
//! etc_root = "/etc"
//! proc_root = "/proc"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Problem;

/// Longest accepted `cache_ttl`: one day. Longer would keep a swapped disk's old serial for days.
pub(crate) const MAX_CACHE_TTL: u64 = 86_400;
/// Most device references resolved per alert (`max_refs` upper bound).
pub(crate) const MAX_REFS_LIMIT: usize = 256;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// When false, alerts get `host` but no `hardware` (no sysfs reads at all).
    pub hardware: bool,
    pub site_id: Option<String>,
    pub rack_id: Option<String>,
    pub node_id: Option<String>,
    pub cluster_id: Option<String>,
    /// Overrides the kernel hostname.
    pub hostname: Option<String>,
    /// Overrides the derived FQDN (the SSPL `host_id`).
    pub fqdn: Option<String>,
    /// Seconds a resolved device (or a miss) stays cached.
    pub cache_ttl: u64,
    pub max_refs: usize,
    pub sysfs_root: PathBuf,
    pub dev_root: PathBuf,
    pub etc_root: PathBuf,
    pub proc_root: PathBuf,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            hardware: true,
            site_id: None,
            rack_id: None,
            node_id: None,
            cluster_id: None,
            hostname: None,
            fqdn: None,
            cache_ttl: 60,
            max_refs: 16,
            sysfs_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            etc_root: PathBuf::from("/etc"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl EnrichConfig {
    /// Reports every bad key under `enrich.`.
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        for (key, value) in [
            ("site_id", &self.site_id),
            ("rack_id", &self.rack_id),
            ("node_id", &self.node_id),
            ("cluster_id", &self.cluster_id),
            ("hostname", &self.hostname),
            ("fqdn", &self.fqdn),
        ] {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    problems.push(Problem::new(
                        format!("enrich.{key}"),
                        "must not be empty (leave it out instead)",
                    ));
                } else if v.chars().any(char::is_control) {
                    problems.push(Problem::new(
                        format!("enrich.{key}"),
                        "must not contain control characters",
                    ));
                }
            }
        }
        if self.cache_ttl == 0 || self.cache_ttl > MAX_CACHE_TTL {
            problems.push(Problem::new(
                "enrich.cache_ttl",
                format!("must be between 1 and {MAX_CACHE_TTL} seconds"),
            ));
        }
        if self.max_refs == 0 || self.max_refs > MAX_REFS_LIMIT {
            problems.push(Problem::new(
                "enrich.max_refs",
                format!("must be between 1 and {MAX_REFS_LIMIT}"),
            ));
        }
        for (key, path) in [
            ("sysfs_root", &self.sysfs_root),
            ("dev_root", &self.dev_root),
            ("etc_root", &self.etc_root),
            ("proc_root", &self.proc_root),
        ] {
            if !path.is_absolute() {
                problems.push(Problem::new(
                    format!("enrich.{key}"),
                    "must be an absolute path",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(cfg: &EnrichConfig) -> Vec<String> {
        let mut p = Vec::new();
        cfg.validate(&mut p);
        p.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(problems(&EnrichConfig::default()).is_empty());
    }

    #[test]
    fn parses_and_reports_every_bad_key() {
        let cfg: EnrichConfig = toml::from_str(
            "site_id = \"\"\ncache_ttl = 0\nmax_refs = 1000\nsysfs_root = \"sys\"\nnode_id = \"n1\"",
        )
        .unwrap();
        assert_eq!(cfg.node_id.as_deref(), Some("n1"));
        assert_eq!(
            problems(&cfg),
            [
                "enrich.site_id",
                "enrich.cache_ttl",
                "enrich.max_refs",
                "enrich.sysfs_root"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<EnrichConfig>("cache_ttl_secs = 3").is_err());
    }
}
