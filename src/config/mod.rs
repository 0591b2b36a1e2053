//! The daemon's configuration: TOML, every key documented in `packaging/iemd.toml`, validated
//! completely up front so that errors name the file, the key (or line) and the reason.
//!
//! Each stage's section lives in its own submodule; this module composes them, loads the file
//! and fills the defaults that depend on the machine (state directory, sources).

pub mod broker;
pub mod enrich;
pub mod sources;
pub mod spool;
pub(crate) mod telemetry;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the package installs its configuration.
pub const DEFAULT_PATH: &str = "/etc/iemd/iemd.toml";

/// One thing wrong with a configuration: the dotted key (`broker.urls[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub(crate) key: String,
    pub(crate) reason: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{path}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// How lines are read and decoded.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ParseConfig {
    /// Time zone of RFC 3164 stamps (which carry none): an IANA name. Default: the machine's zone.
    pub(crate) timezone: String,
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig {
            timezone: iana_time_zone::get_timezone().unwrap_or_else(|_| "UTC".to_owned()),
        }
    }
}

impl ParseConfig {
    pub(crate) fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }

    fn validate(&self, problems: &mut Vec<Problem>) {
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(Problem::new(
                "parse.timezone",
                format!("unknown time zone {:?}", self.timezone),
            ));
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Checkpoints and (unless `spool.dir` is set) the spool live here.
    pub(crate) state_dir: PathBuf,
    /// Catalog directories read after the built-in catalog, in order.
    pub catalog_dirs: Vec<PathBuf>,
    pub(crate) parse: ParseConfig,
    pub(crate) spool: spool::SpoolConfig,
    pub broker: broker::BrokerConfig,
    pub(crate) sources: sources::SourcesConfig,
    pub(crate) enrich: enrich::EnrichConfig,
    pub telemetry: telemetry::TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: default_state_dir(),
            catalog_dirs: vec![
                PathBuf::from("/usr/share/iemd/catalog"),
                PathBuf::from("/etc/iemd/catalog.d"),
            ],
            parse: ParseConfig::default(),
            spool: spool::SpoolConfig::default(),
            broker: broker::BrokerConfig::default(),
            sources: sources::SourcesConfig::default_for_this_machine(),
            enrich: enrich::EnrichConfig::default(),
            telemetry: telemetry::TelemetryConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates a configuration file. A file without `[sources]` gets the sources of
    /// this machine (as with no file at all); without `spool.dir` the spool is `<state_dir>/spool`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` only names it in errors.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| {
            let (line, column) = e.span().map_or((1, 1), |s| line_column(text, s.start));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                reason: e.message().to_owned(),
            }
        };
        let table: toml::Table = text.parse().map_err(syntax)?;
        let mut config: Config = toml::from_str(text).map_err(syntax)?;
        let spool_dir_set = table.get("spool").and_then(|s| s.get("dir")).is_some();
        if !spool_dir_set {
            config.spool.dir = config.state_dir.join("spool");
        }
        config.validated(path)
    }

    /// The effective configuration as TOML, for `--check-config`, after comments that say which
    /// sources will be read and why. It holds no secret (passwords come only from a file or the
    /// environment, and URLs may not carry credentials); URLs are redacted all the same.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.broker.urls = shown
            .broker
            .urls
            .iter()
            .map(|u| broker::redact_url(u))
            .collect();
        let mut out: String = self
            .sources
            .summary()
            .lines()
            .map(|l| format!("# {l}\n"))
            .collect();
        out.push_str(
            &toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n")),
        );
        out
    }

    /// The configuration used when there is no file: works on a fresh machine.
    ///
    /// Besides the machine's sources, it declares a durable queue `iem.alerts` bound to every
    /// alert, so that on a fresh broker alerts are kept rather than returned as unroutable.
    pub fn for_this_machine() -> Config {
        let mut config = Config::default();
        config.spool.dir = config.state_dir.join("spool");
        config.broker.queue = Some(broker::QueueConfig {
            name: "iem.alerts".to_owned(),
            kind: broker::QueueKind::Classic,
            binding_key: "#".to_owned(),
        });
        config
    }

    /// Checks every section; all problems are reported together.
    pub(crate) fn validated(self, path: &Path) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        if self.state_dir.as_os_str().is_empty() {
            problems.push(Problem::new("state_dir", "must not be empty"));
        }
        self.parse.validate(&mut problems);
        self.spool.validate(&mut problems);
        self.broker.validate(&mut problems);
        self.sources.validate(&mut problems);
        self.enrich.validate(&mut problems);
        self.telemetry.validate(&mut problems);
        if self.sources.files.is_empty() && !self.sources.journald.enabled {
            problems.push(Problem::new(
                "sources",
                "no source configured: nothing would be read",
            ));
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// `$STATE_DIRECTORY` when systemd sets it (`StateDirectory=`); else `/var/lib/iemd` as root;
/// otherwise `$XDG_STATE_HOME/iemd`, or `./state`.
pub(crate) fn default_state_dir() -> PathBuf {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = std::env::split_paths(&dirs).next()
        && !first.as_os_str().is_empty()
    {
        return first;
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/iemd");
    }
    match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("iemd"),
        _ => PathBuf::from("state"),
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let column = 1 + before.len() - memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let err = Config::parse(
            Path::new("/etc/iemd/iemd.toml"),
            "state_dir = \"/x\"\n[spool]\nmax_bytes = \"big\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/etc/iemd/iemd.toml:3:13: invalid type: string \"big\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::parse(Path::new("c.toml"), "[parse]\ntimezon = \"UTC\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c.toml:2:1: unknown field `timezon`"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let err = Config::parse(
            Path::new("c.toml"),
            "[parse]\ntimezone = \"Mars/Base\"\n[spool]\nsync_interval_ms = 99999\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "c.toml: parse.timezone: unknown time zone \"Mars/Base\"\n  spool.sync_interval_ms: must be at most 10000 (alerts would wait that long before being published)"
        );
    }

    /// The commented file the package installs must be a valid configuration, and its shown
    /// values the defaults.
    #[test]
    fn the_packaged_config_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../packaging/iemd.toml");
        let packaged = Config::parse(Path::new("packaging/iemd.toml"), text).unwrap();
        let defaults = Config::default();
        assert_eq!(packaged.spool.max_bytes, defaults.spool.max_bytes);
        assert_eq!(
            packaged.spool.sync_interval_ms,
            defaults.spool.sync_interval_ms
        );
        assert_eq!(packaged.broker.urls, defaults.broker.urls);
        assert_eq!(packaged.sources.buffer_bytes, defaults.sources.buffer_bytes);
        assert_eq!(packaged.broker.window, defaults.broker.window);
        assert_eq!(packaged.enrich.cache_ttl, defaults.enrich.cache_ttl);
        assert_eq!(
            packaged.telemetry.spool_warning_records,
            defaults.telemetry.spool_warning_records
        );
        assert_eq!(packaged.spool.dir, packaged.state_dir.join("spool"));
        // The packaged file leaves the choice of sources to the machine (one of journald or the
        // syslog files, so that each IEM is read once).
        assert_eq!(packaged.sources, defaults.sources);
        // Every commented-out key is a real key: uncommented, the file still parses.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut uncommented = uncommented.replace("# [broker.tls]", "[broker.tls]");
        for table in ["[sources]", "[[sources.files]]", "[sources.journald]"] {
            uncommented = uncommented.replace(&format!("# {table}"), table);
        }
        let shown = toml::from_str::<Config>(&uncommented).unwrap();
        // The commented-out sources show their defaults too.
        assert_eq!(
            shown.sources.files,
            vec![sources::FileSourceConfig {
                name: "messages".into(),
                paths: vec![PathBuf::from("/var/log/messages")],
                ..sources::FileSourceConfig::default()
            }]
        );
        assert_eq!(
            shown.sources.journald,
            sources::JournaldConfig {
                enabled: true,
                directory: Some(PathBuf::from("/var/log/journal/remote")),
                ..sources::JournaldConfig::default()
            }
        );
        assert_eq!(
            shown.sources.cross_source_window_secs,
            sources::DEFAULT_CROSS_SOURCE_WINDOW_SECS
        );
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::parse(Path::new("c.toml"), "").unwrap();
        assert_eq!(config.spool.dir, config.state_dir.join("spool"));
        assert!(!config.state_dir.as_os_str().is_empty());
    }
}
