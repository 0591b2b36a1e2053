//! The `[sources]` section: files to tail (`[[sources.files]]`) and the journal (`[sources.journald]`).
//!
//! ```toml
//! [sources]
//! cross_source_window_secs = 60        # when both journald and files are read: see below
//!
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
//!
//! # Reading each IEM once
//!
//! On a systemd host rsyslog copies the journal into /var/log/messages, so the same IEM is in
//! both. Without a `[sources]` table iemd therefore reads one of them: journald when the system
//! journal is readable (it carries the pid, the exact time and messages of services that log to
//! stdout, which rsyslog may rate-limit or drop), else the syslog files. When both kinds are
//! configured on purpose, the pipeline matches their sightings (`dedup`): an IEM seen through
//! both within `cross_source_window_secs` is one alert with one id.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Problem;

/// Lines longer than this are cut (and marked) by default.
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// A last line with no newline is emitted after this long without one, by default: long enough
/// for a block-buffered writer to finish its line.
pub(crate) const DEFAULT_PARTIAL_LINE_TIMEOUT_MS: u64 = 30_000;
/// A rotated file is read until it has had no new byte for this long, by default (writers such as
/// rsyslog keep appending to it until they reopen their file).
pub(crate) const DEFAULT_ROTATED_KEEP_MS: u64 = 10 * 60 * 1000;
const ROTATED_KEEP_RANGE_MS: std::ops::RangeInclusive<u64> = 1000..=7 * 24 * 3600 * 1000;
/// The spool's record limit (`spool::MAX_RECORD_LEN`; a test keeps the two equal).
pub(crate) const SPOOL_RECORD_LIMIT: usize = 16 << 20;
/// What an alert holds besides its line's text, at most: code and names, catalog texts, origin,
/// host, hardware.
pub(crate) const ALERT_OVERHEAD_BYTES: usize = 64 << 10;
/// The longest line whose worst-case alert fits one spool record: each byte of the line may
/// become six bytes of JSON (`\u0001`) in both `raw` and `message`. (An alert that does not fit
/// anyway, from journald, is cut before it is spooled.)
pub(crate) const MAX_LINE_BYTES_CEILING: usize = (SPOOL_RECORD_LIMIT - ALERT_OVERHEAD_BYTES) / 12;
/// Bound that keeps the flush timer sane.
const PARTIAL_LINE_TIMEOUT_CEILING_MS: u64 = 10 * 60 * 1000;

/// How long a sighting from one side waits for its twin from the other, by default (seconds of
/// event time).
pub(crate) const DEFAULT_CROSS_SOURCE_WINDOW_SECS: u64 = 60;
const CROSS_SOURCE_WINDOW_CEILING_SECS: u64 = 3600;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SourcesConfig {
    /// When both journald and files are read: seconds a (line, second) is remembered for its twin.
    pub(crate) cross_source_window_secs: u64,
    /// Bytes of lines in flight between the sources and the spool (lines without the `IEC:`
    /// marker count their position only); when it is full, reading waits.
    pub(crate) buffer_bytes: usize,
    pub(crate) files: Vec<FileSourceConfig>,
    pub(crate) journald: JournaldConfig,
    /// Why these sources were chosen, when they are the machine's defaults (for `--check-config`).
    #[serde(skip)]
    pub(crate) chosen: Option<String>,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            cross_source_window_secs: DEFAULT_CROSS_SOURCE_WINDOW_SECS,
            buffer_bytes: crate::source::channel::DEFAULT_BUFFER_BYTES,
            files: Vec::new(),
            journald: JournaldConfig::default(),
            chosen: None,
        }
    }
}

/// Bounds of `sources.buffer_bytes`: room for a few lines, and no more than memory allows.
const BUFFER_BYTES_RANGE: std::ops::RangeInclusive<usize> = (64 << 10)..=(1 << 30);

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
    pub(crate) fn source_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        match self.paths.first() {
            Some(p) => p.display().to_string(),
            None => "files".to_string(),
        }
    }

    pub(crate) fn partial_line_timeout(&self) -> Duration {
        Duration::from_millis(self.partial_line_timeout_ms)
    }

    pub(crate) fn rotated_keep(&self) -> Duration {
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
/// Where journald keeps the system journal (`<dir>/<machine-id>/system*.journal`): persistent,
/// then volatile.
const JOURNAL_DIRS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

impl SourcesConfig {
    /// The sources of a fresh machine: journald when `journalctl` is installed and the system
    /// journal is readable, else the host syslog files that exist (rsyslog's copy of the same
    /// lines: reading both would see each IEM twice). Journald also when neither is there.
    pub(crate) fn default_for_this_machine() -> Self {
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
        let journal = readable_system_journal(root);
        let (read_files, read_journal, why) = match (&journalctl, &journal) {
            (Some(_), Some(journal)) if !files.is_empty() => (
                false,
                true,
                format!(
                    "the system journal ({}) is readable, so journald is read and not {} \
                     (rsyslog's copy of the journal: reading both would see each IEM twice)",
                    journal.display(),
                    shown_paths(&files)
                ),
            ),
            (Some(_), Some(journal)) => (
                false,
                true,
                format!("the system journal ({}) is readable", journal.display()),
            ),
            (_, _) if !files.is_empty() => (
                true,
                false,
                format!(
                    "{}, so the syslog files are read",
                    match (&journalctl, &journal) {
                        (None, _) => "journalctl is not installed".to_string(),
                        _ => format!(
                            "no readable system journal under {} (iemd needs root or the \
                             systemd-journal group to read it)",
                            JOURNAL_DIRS.join(" or ")
                        ),
                    }
                ),
            ),
            (Some(_), None) => (
                false,
                true,
                "there is no syslog file, and journalctl is installed (the system journal is \
                 not readable yet)"
                    .to_string(),
            ),
            (None, _) => (
                false,
                false,
                "neither a syslog file nor journalctl was found".to_string(),
            ),
        };
        SourcesConfig {
            files: if read_files {
                vec![FileSourceConfig {
                    name: "syslog".to_string(),
                    paths: files,
                    ..FileSourceConfig::default()
                }]
            } else {
                Vec::new()
            },
            journald: JournaldConfig {
                enabled: read_journal,
                journalctl: journalctl.unwrap_or_else(|| PathBuf::from("journalctl")),
                ..JournaldConfig::default()
            },
            chosen: Some(format!("no [sources] configured: {why}.")),
            ..SourcesConfig::default()
        }
    }

    /// True when both journald and files are read: their sightings are matched (`dedup`).
    pub(crate) fn matches_across(&self) -> bool {
        self.journald.enabled && !self.files.is_empty()
    }

    /// Which sources are read, and why: for `--check-config` and the start-up log.
    pub(crate) fn summary(&self) -> String {
        let read: Vec<String> = self
            .enabled()
            .iter()
            .map(|(_, source)| source.summary())
            .collect();
        let mut out = format!("Sources read: {}.\n", read.join(", "));
        out.push_str(match &self.chosen {
            Some(why) => why,
            None => "As configured.",
        });
        out.push('\n');
        if self.matches_across() {
            out.push_str(&format!(
                "Both journald and files are read: an IEM seen through both (same host, program, \
                 pid, message and second, +-1 s, within {} s) is one alert with one id.\n",
                self.cross_source_window_secs
            ));
        }
        out
    }

    /// Appends every problem of this section, keys starting with `sources.`.
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.cross_source_window_secs == 0
            || self.cross_source_window_secs > CROSS_SOURCE_WINDOW_CEILING_SECS
        {
            problems.push(Problem::new(
                "sources.cross_source_window_secs",
                format!("must be between 1 and {CROSS_SOURCE_WINDOW_CEILING_SECS}"),
            ));
        }
        if !BUFFER_BYTES_RANGE.contains(&self.buffer_bytes) {
            problems.push(Problem::new(
                "sources.buffer_bytes",
                format!(
                    "must be between {} and {}",
                    BUFFER_BYTES_RANGE.start(),
                    BUFFER_BYTES_RANGE.end()
                ),
            ));
        }
        let mut names: Vec<String> = Vec::new();
        for (key, source) in self.enabled() {
            source.validate(&key, problems);
            names.push(source.name());
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

/// One source to read, whichever its kind: the config enum the pipeline builds its sources from
/// (`SourceConfig::build`, in `source`, so that this module holds no source code). A new kind is
/// one more arm here, its own section in [`SourcesConfig`], and its [`crate::source::Source`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SourceConfig {
    File(FileSourceConfig),
    Journald(JournaldConfig),
}

impl SourcesConfig {
    /// The sources to read, in the order of the file, each with the key its problems are
    /// reported under (`sources.files[1]`).
    pub(crate) fn enabled(&self) -> Vec<(String, SourceConfig)> {
        let files = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("sources.files[{i}]"), SourceConfig::File(f.clone())));
        let journald = self.journald.enabled.then(|| {
            (
                "sources.journald".to_string(),
                SourceConfig::Journald(self.journald.clone()),
            )
        });
        files.chain(journald).collect()
    }
}

impl SourceConfig {
    /// The name used in counters, logs and `/health`.
    pub(crate) fn name(&self) -> String {
        match self {
            SourceConfig::File(f) => f.source_name(),
            SourceConfig::Journald(j) => j.name.clone(),
        }
    }

    /// Appends every problem of this source, keys starting with `key`.
    pub(crate) fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        match self {
            SourceConfig::File(f) => f.validate(key, problems),
            SourceConfig::Journald(j) => j.validate(key, problems),
        }
    }

    /// What is read, for `--check-config` and the start-up log.
    fn summary(&self) -> String {
        match self {
            SourceConfig::File(f) => {
                format!("files {:?} ({})", f.source_name(), shown_paths(&f.paths))
            }
            SourceConfig::Journald(j) => match &j.directory {
                Some(d) => format!("journald {:?} ({})", j.name, d.display()),
                None => format!("journald {:?} (the system journal)", j.name),
            },
        }
    }
}

impl FileSourceConfig {
    /// Appends every problem of this `[[sources.files]]` entry, keys starting with `key`.
    fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        if self.paths.is_empty() {
            problems.push(Problem::new(format!("{key}.paths"), "no path given"));
        }
        for (j, p) in self.paths.iter().enumerate() {
            if let Err(reason) = check_file_pattern(p) {
                problems.push(Problem::new(format!("{key}.paths[{j}]"), reason));
            }
        }
        if self.max_line_bytes < 16 || self.max_line_bytes > MAX_LINE_BYTES_CEILING {
            problems.push(Problem::new(
                format!("{key}.max_line_bytes"),
                format!(
                    "must be between 16 and {MAX_LINE_BYTES_CEILING}: a line's alert may take 12 times \
                     its length in JSON (raw and message, every byte escaped), and an alert must \
                     fit a spool record ({SPOOL_RECORD_LIMIT} bytes)"
                ),
            ));
        }
        if self.partial_line_timeout_ms == 0
            || self.partial_line_timeout_ms > PARTIAL_LINE_TIMEOUT_CEILING_MS
        {
            problems.push(Problem::new(
                format!("{key}.partial_line_timeout_ms"),
                format!("must be between 1 and {PARTIAL_LINE_TIMEOUT_CEILING_MS}"),
            ));
        }
        if !ROTATED_KEEP_RANGE_MS.contains(&self.rotated_keep_ms) {
            problems.push(Problem::new(
                format!("{key}.rotated_keep_ms"),
                format!(
                    "must be between {} and {}",
                    ROTATED_KEEP_RANGE_MS.start(),
                    ROTATED_KEEP_RANGE_MS.end()
                ),
            ));
        }
    }
}

impl JournaldConfig {
    /// Appends every problem of `[sources.journald]` (read only when enabled), keys starting
    /// with `key`.
    fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        if self.name.is_empty() {
            problems.push(Problem::new(format!("{key}.name"), "must not be empty"));
        }
        if self.journalctl.as_os_str().is_empty() {
            problems.push(Problem::new(
                format!("{key}.journalctl"),
                "must not be empty",
            ));
        }
        if let Some(d) = &self.directory
            && !d.is_absolute()
        {
            problems.push(Problem::new(
                format!("{key}.directory"),
                "must be an absolute path",
            ));
        }
    }
}

fn shown_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A system journal file this process can open, if any.
fn readable_system_journal(root: &Path) -> Option<PathBuf> {
    for dir in JOURNAL_DIRS {
        let Ok(machines) = std::fs::read_dir(root.join(dir.trim_start_matches('/'))) else {
            continue;
        };
        for machine in machines.flatten() {
            let Ok(files) = std::fs::read_dir(machine.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("system")
                    && name.ends_with(".journal")
                    && std::fs::File::open(file.path()).is_ok()
                {
                    return Some(Path::new(dir).join(machine.file_name()).join(&*name));
                }
            }
        }
    }
    None
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
pub(crate) fn has_glob_chars(s: &str) -> bool {
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
            buffer_bytes: 100,
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
            cross_source_window_secs: 0,
            chosen: None,
        };
        let keys: Vec<String> = problems(&c).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "sources.cross_source_window_secs",
                "sources.buffer_bytes",
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
    fn machine_defaults_read_the_journal_when_readable_else_the_syslog_files() {
        let root = tempfile::tempdir().unwrap();
        let none = SourcesConfig::default_for(root.path());
        assert!(none.files.is_empty());
        assert!(!none.journald.enabled);

        // journalctl and /var/log/syslog, but no journal: the file.
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::write(root.path().join("var/log/syslog"), b"").unwrap();
        std::fs::write(root.path().join("usr/bin/journalctl"), b"").unwrap();
        let files = SourcesConfig::default_for(root.path());
        assert_eq!(files.files.len(), 1);
        assert_eq!(files.files[0].paths, vec![PathBuf::from("/var/log/syslog")]);
        assert!(!files.journald.enabled);
        assert!(!files.matches_across());
        assert!(
            files.summary().contains("no readable system journal"),
            "{}",
            files.summary()
        );
        assert_eq!(problems(&files), vec![]);

        // A host with both (a real journal file, as journald names it): the journal only.
        let machine = root
            .path()
            .join("run/log/journal/6d13c9bf251f46509ca2f12e99e2c945");
        std::fs::create_dir_all(&machine).unwrap();
        let journal = machine.join("system.journal");
        let mut remote = std::process::Command::new("/lib/systemd/systemd-journal-remote")
            .arg(format!("--output={}", journal.display()))
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("systemd-journal-remote (Debian package systemd-journal-remote)");
        std::io::Write::write_all(
            &mut remote.stdin.take().unwrap(),
            b"__REALTIME_TIMESTAMP=1\nMESSAGE=x\n\n",
        )
        .unwrap();
        assert!(remote.wait().unwrap().success());
        let both = SourcesConfig::default_for(root.path());
        assert!(both.files.is_empty());
        assert!(both.journald.enabled);
        assert_eq!(
            both.journald.journalctl,
            PathBuf::from("/usr/bin/journalctl")
        );
        let summary = both.summary();
        assert!(
            summary.contains("/run/log/journal/6d13c9bf251f46509ca2f12e99e2c945/system.journal")
                && summary.contains("not /var/log/syslog"),
            "{summary}"
        );
        assert_eq!(problems(&both), vec![]);
    }
}
