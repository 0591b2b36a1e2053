//! The `[sources]` section: files to tail (`[[sources.files]]`) and the journal (`[sources.journald]`).
//!
//! ```toml
//! [[sources.files]]
//! name = "syslog"                      # optional; names the source in counters and logs
//! paths = ["/var/log/messages", "/var/log/cortx/*.log"]   # globs only in the last component
//! start_at = "end"                     # "beginning" | "end": the source's first run only
//! max_line_bytes = 65536
//! partial_line_timeout_ms = 30000
//! rotated_keep_ms = 600000              # a rotated file is read until this long after its last byte
//!
//! [sources.journald]
//! enabled = true
//! start_at = "now"                     # "now" | "beginning": first start, no checkpoint
//! directory = "/var/log/journal"       # optional: read only the journal files there
//! journalctl = "journalctl"
//! ```
//!
//! Lines end at LF, CR LF or a lone CR (so a file with CR-only line ends still gives one alert
//! per IEM). A line longer than `max_line_bytes` is cut there and marked `truncated`; the rest of
//! it is skipped without being buffered, but still scanned for the IEM marker (see
//! `source::lines`). A last line with no LF yet is taken as it is when its file is finished
//! (rotated file closed, truncation) or after `partial_line_timeout_ms` without a new byte; if the
//! writer finishes it later, the whole completed line is delivered too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Problem;

/// Lines longer than this are cut (and marked) by default.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// A last line with no newline is emitted after this long without one, by default: long enough
/// for a block-buffered writer to finish its line.
pub const DEFAULT_PARTIAL_LINE_TIMEOUT_MS: u64 = 30_000;
/// A rotated file is read until it has had no new byte for this long, by default (writers such as
/// rsyslog keep appending to it until they reopen their file).
pub const DEFAULT_ROTATED_KEEP_MS: u64 = 10 * 60 * 1000;
const ROTATED_KEEP_RANGE_MS: std::ops::RangeInclusive<u64> = 1000..=7 * 24 * 3600 * 1000;
/// The spool's record limit (`spool::MAX_RECORD_LEN`; a test keeps the two equal).
pub const SPOOL_RECORD_LIMIT: usize = 16 << 20;
/// What an alert holds besides its line's text, at most: code and names, catalog texts, origin,
/// host, hardware.
pub const ALERT_OVERHEAD_BYTES: usize = 64 << 10;
/// The longest line whose worst-case alert fits one spool record: each byte of the line may
/// become six bytes of JSON (`\u0001`) in both `raw` and `message`. (An alert that does not fit
/// anyway, from journald, is cut before it is spooled.)
pub const MAX_LINE_BYTES_CEILING: usize = (SPOOL_RECORD_LIMIT - ALERT_OVERHEAD_BYTES) / 12;
/// Bound that keeps the flush timer sane.
const PARTIAL_LINE_TIMEOUT_CEILING_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    pub files: Vec<FileSourceConfig>,
    pub journald: JournaldConfig,
}

/// Where to start reading a file present at the source's first run ever (no checkpoint state for
/// the source yet). Files that appear later, and files first seen on a later run (created while
/// the agent was down), are always read from the beginning: everything in them is new.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileStartAt {
    Beginning,
    #[default]
    End,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileSourceConfig {
    /// Name of the source in counters and logs; the first path when empty.
    pub name: String,
    /// Absolute paths; `*`, `?` and `[..]` are allowed in the last component only.
    pub paths: Vec<PathBuf>,
    pub start_at: FileStartAt,
    pub max_line_bytes: usize,
    pub partial_line_timeout_ms: u64,
    /// A rotated file is read until it has had no new byte for this long.
    pub rotated_keep_ms: u64,
}

impl Default for FileSourceConfig {
    fn default() -> Self {
        FileSourceConfig {
            name: String::new(),
            paths: Vec::new(),
            start_at: FileStartAt::default(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            partial_line_timeout_ms: DEFAULT_PARTIAL_LINE_TIMEOUT_MS,
            rotated_keep_ms: DEFAULT_ROTATED_KEEP_MS,
        }
    }
}

impl FileSourceConfig {
    /// The name used in counters and logs.
    pub fn source_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        match self.paths.first() {
            Some(p) => p.display().to_string(),
            None => "files".to_string(),
        }
    }

    pub fn partial_line_timeout(&self) -> Duration {
        Duration::from_millis(self.partial_line_timeout_ms)
    }

    pub fn rotated_keep(&self) -> Duration {
        Duration::from_millis(self.rotated_keep_ms)
    }
}

/// Where journald reading starts when there is no checkpoint cursor.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JournalStartAt {
    #[default]
    Now,
    Beginning,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JournaldConfig {
    pub enabled: bool,
    /// Name of the source in counters, logs and the checkpoint file.
    pub name: String,
    /// Read only the journal files in this directory (`journalctl --directory`).
    pub directory: Option<PathBuf>,
    pub start_at: JournalStartAt,
    /// The `journalctl` program: a bare name is looked up in `PATH`.
    pub journalctl: PathBuf,
}

impl Default for JournaldConfig {
    fn default() -> Self {
        JournaldConfig {
            enabled: false,
            name: "journald".to_string(),
            directory: None,
            start_at: JournalStartAt::default(),
            journalctl: PathBuf::from("journalctl"),
        }
    }
}

/// Where `journalctl` is usually installed.
const JOURNALCTL_CANDIDATES: [&str; 2] = ["/usr/bin/journalctl", "/bin/journalctl"];
/// The host syslog files rsyslog writes (RHEL/CentOS, Debian/Ubuntu).
const SYSLOG_CANDIDATES: [&str; 2] = ["/var/log/messages", "/var/log/syslog"];

impl SourcesConfig {
    /// The sources of a fresh machine: the host syslog files that exist, and journald when
    /// `journalctl` is installed.
    pub fn default_for_this_machine() -> Self {
        Self::default_for(Path::new("/"))
    }

    /// [`Self::default_for_this_machine`] with every probed path taken under `root` (for tests).
    fn default_for(root: &Path) -> Self {
        let under = |p: &str| root.join(p.trim_start_matches('/'));
        let files: Vec<PathBuf> = SYSLOG_CANDIDATES
            .iter()
            .filter(|p| under(p).is_file())
            .map(|p| PathBuf::from(*p))
            .collect();
        let journalctl = JOURNALCTL_CANDIDATES
            .iter()
            .find(|p| under(p).is_file())
            .map(PathBuf::from);
        SourcesConfig {
            files: if files.is_empty() {
                Vec::new()
            } else {
                vec![FileSourceConfig {
                    name: "syslog".to_string(),
                    paths: files,
                    ..FileSourceConfig::default()
                }]
            },
            journald: JournaldConfig {
                enabled: journalctl.is_some(),
                journalctl: journalctl.unwrap_or_else(|| PathBuf::from("journalctl")),
                ..JournaldConfig::default()
            },
        }
    }

    /// Appends every problem of this section, keys starting with `sources.`.
    pub fn validate(&self, problems: &mut Vec<Problem>) {
        let mut names: Vec<String> = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let key = format!("sources.files[{i}]");
            if f.paths.is_empty() {
                problems.push(Problem::new(format!("{key}.paths"), "no path given"));
            }
            for (j, p) in f.paths.iter().enumerate() {
                let pkey = format!("{key}.paths[{j}]");
                if let Err(reason) = check_file_pattern(p) {
                    problems.push(Problem::new(pkey, reason));
                }
            }
            if f.max_line_bytes < 16 || f.max_line_bytes > MAX_LINE_BYTES_CEILING {
                problems.push(Problem::new(
                    format!("{key}.max_line_bytes"),
                    format!(
                        "must be between 16 and {MAX_LINE_BYTES_CEILING}: a line's alert may take 12 times \
                         its length in JSON (raw and message, every byte escaped), and an alert must \
                         fit a spool record ({SPOOL_RECORD_LIMIT} bytes)"
                    ),
                ));
            }
            if f.partial_line_timeout_ms == 0
                || f.partial_line_timeout_ms > PARTIAL_LINE_TIMEOUT_CEILING_MS
            {
                problems.push(Problem::new(
                    format!("{key}.partial_line_timeout_ms"),
                    format!("must be between 1 and {PARTIAL_LINE_TIMEOUT_CEILING_MS}"),
                ));
            }
            if !ROTATED_KEEP_RANGE_MS.contains(&f.rotated_keep_ms) {
                problems.push(Problem::new(
                    format!("{key}.rotated_keep_ms"),
                    format!(
                        "must be between {} and {}",
                        ROTATED_KEEP_RANGE_MS.start(),
                        ROTATED_KEEP_RANGE_MS.end()
                    ),
                ));
            }
            names.push(f.source_name());
        }
        let j = &self.journald;
        if j.enabled {
            if j.name.is_empty() {
                problems.push(Problem::new("sources.journald.name", "must not be empty"));
            }
            names.push(j.name.clone());
            if j.journalctl.as_os_str().is_empty() {
                problems.push(Problem::new(
                    "sources.journald.journalctl",
                    "must not be empty",
                ));
            }
            if let Some(d) = &j.directory
                && !d.is_absolute()
            {
                problems.push(Problem::new(
                    "sources.journald.directory",
                    "must be an absolute path",
                ));
            }
        }
        names.sort();
        for w in names.windows(2) {
            if w[0] == w[1] {
                problems.push(Problem::new(
                    "sources",
                    format!("two sources are named {:?}: names must be unique", w[0]),
                ));
            }
        }
    }
}

/// A file path or glob must be absolute, name a file, and have wildcards only in its last
/// component (the directory is watched with inotify, so it must be a literal path).
fn check_file_pattern(p: &Path) -> Result<(), String> {
    if !p.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return Err("must name a file (UTF-8)".into());
    };
    if let Some(dir) = p.parent()
        && has_glob_chars(&dir.to_string_lossy())
    {
        return Err("wildcards are allowed in the file name only, not in directories".into());
    }
    if has_glob_chars(name) {
        glob::Pattern::new(name).map_err(|e| {
            format!(
                "bad pattern {name:?} (character {} of the file name): {}",
                e.pos + 1,
                e.msg
            )
        })?;
    }
    Ok(())
}

/// True when the text has a glob metacharacter.
pub fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &SourcesConfig) -> Vec<Problem> {
        let mut p = Vec::new();
        c.validate(&mut p);
        p
    }

    #[test]
    fn parses_a_full_section_and_fills_defaults() {
        let c: SourcesConfig = toml::from_str(
            r#"
            [[files]]
            paths = ["/var/log/messages", "/var/log/cortx/*.log"]
            start_at = "beginning"
            [[files]]
            name = "motr"
            paths = ["/var/log/motr.log"]
            max_line_bytes = 1024
            [journald]
            enabled = true
            directory = "/run/log/journal"
            start_at = "beginning"
            "#,
        )
        .unwrap();
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.files[0].start_at, FileStartAt::Beginning);
        assert_eq!(c.files[0].max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert_eq!(c.files[0].source_name(), "/var/log/messages");
        assert_eq!(c.files[1].start_at, FileStartAt::End);
        assert_eq!(c.files[1].source_name(), "motr");
        assert_eq!(c.journald.start_at, JournalStartAt::Beginning);
        assert_eq!(c.journald.journalctl, PathBuf::from("journalctl"));
        assert_eq!(problems(&c), vec![]);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: Result<SourcesConfig, _> = toml::from_str("[[files]]\npath = [\"/x\"]\n");
        assert!(r.is_err());
    }

    #[test]
    fn validation_names_each_bad_key() {
        let c = SourcesConfig {
            files: vec![FileSourceConfig {
                name: "a".into(),
                paths: vec![
                    PathBuf::from("relative.log"),
                    PathBuf::from("/var/*/x.log"),
                    PathBuf::from("/var/log/[.log"),
                ],
                max_line_bytes: 0,
                partial_line_timeout_ms: 0,
                ..FileSourceConfig::default()
            }],
            journald: JournaldConfig {
                enabled: true,
                name: "a".into(),
                directory: Some(PathBuf::from("rel")),
                ..JournaldConfig::default()
            },
        };
        let keys: Vec<String> = problems(&c).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "sources.files[0].paths[0]",
                "sources.files[0].paths[1]",
                "sources.files[0].paths[2]",
                "sources.files[0].max_line_bytes",
                "sources.files[0].partial_line_timeout_ms",
                "sources.journald.directory",
                "sources",
            ]
        );
    }

    #[test]
    fn machine_defaults_take_only_what_exists() {
        let root = tempfile::tempdir().unwrap();
        let none = SourcesConfig::default_for(root.path());
        assert!(none.files.is_empty());
        assert!(!none.journald.enabled);

        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::write(root.path().join("var/log/syslog"), b"").unwrap();
        std::fs::write(root.path().join("usr/bin/journalctl"), b"").unwrap();
        let some = SourcesConfig::default_for(root.path());
        assert_eq!(some.files.len(), 1);
        assert_eq!(some.files[0].paths, vec![PathBuf::from("/var/log/syslog")]);
        assert!(some.journald.enabled);
        assert_eq!(
            some.journald.journalctl,
            PathBuf::from("/usr/bin/journalctl")
        );
        assert_eq!(problems(&some), vec![]);
    }
}
