//! Sources: where log lines come from, each line with the position right after it.
//!
//! - `file`: a rotation-safe tailer of files and globs (inotify + a 1 s stat safety net).
//! - `journald`: a `journalctl --follow --output=json` child, restarted with backoff.
//! - `channel`: the byte-bounded channel from the sources to the pipeline's stage.
//! - `checkpoint`: the durable positions sources resume from.
//! - `lines`: splitting bytes into lines (shared by both sources).
//! - `identity`: what makes a file the same file (device, inode, fingerprint) and how a
//!   checkpoint finds its file again after rotation.
//!
//! # Contract
//!
//! A source sends [`SourceLine`]s, in order, on a [`channel::LineSender`] (the pipeline's is
//! bounded in bytes, and carries a line without the `IEC:` marker as its position only): a full
//! channel stops the reading (backpressure from the spool). Each line carries its
//! [`Position`]; the position is where reading resumes if this line is the last one done.
//! The pipeline commits a position to the [`checkpoint::CheckpointStore`] only when every IEM
//! line up to and including that line is durable in the spool (lines without an IEM may move it
//! freely). After a clean stop, restarting from the committed positions re-reads nothing and
//! loses nothing; after a crash, lines after the last commit are read again (at least once).
//!
//! # Adding a source kind
//!
//! The pipeline starts whatever [`SourcesConfig::enabled`] lists and knows no kind (the full
//! checklist, with the schema and the packaged config: `docs/ARCHITECTURE.md`). A kind is:
//!
//! - `config/sources.rs`: its config struct with a `validate`, its section of `SourcesConfig`
//!   (the TOML shape), and one [`SourceConfig`] arm (listed in `enabled`; `name`, `validate`,
//!   `summary`);
//! - its own file here: a [`Source`], and its arm of [`SourceConfig::build`] below;
//! - `alert/mod.rs`: its [`OriginKind`] (its alerts' `origin.kind`), which `dedup::Side::of`
//!   places on one side of cross-source matching;
//! - [`nothing_to_read`], when it can tell at start that there is nothing to read.
//!
//! Its lines carry a [`Position`] of a shape that exists (a file offset, a cursor), so that the
//! checkpoints need no change; a kind with nothing to resume from (a socket) would add that
//! shape to `Position` and to `CheckpointStore::record`.
//!
//! [`SourcesConfig::enabled`]: crate::config::sources::SourcesConfig::enabled
//! [`SourceConfig`]: crate::config::sources::SourceConfig

pub(crate) mod channel;
pub mod checkpoint;
pub mod file;
pub mod identity;
pub mod journald;
pub mod lines;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::alert::{LineSource, OriginKind};
use crate::config::Problem;
use crate::config::sources::SourceConfig;
use crate::shutdown::CancellationToken;
use channel::LineSender;
use checkpoint::CheckpointStore;

/// A place lines come from, ready to run once.
///
/// A supervised source that fails is built again from its [`SourceConfig`] (so that it resumes
/// from the positions committed so far) and run again; `run` therefore takes the source by value.
pub trait Source: Send {
    /// The configured name: the `source` label of its counters and logs, and (for kinds keyed
    /// by name) its checkpoint key.
    fn name(&self) -> Arc<str>;

    /// Its counters, which the pipeline exports (`iemd_lines_read_total{source}`, ...) and reads
    /// for `/health`. A rebuilt source has new ones.
    fn metrics(&self) -> Arc<SourceMetrics>;

    /// Sends lines, each with its position, to `tx` until `token` is cancelled or the receiver
    /// is gone (both `Ok`). An error is a set-up failure: the supervisor logs it and restarts.
    fn run(
        self: Box<Self>,
        tx: LineSender,
        token: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>>;
}

impl SourceConfig {
    /// Validates this source's configuration and makes the source, taking its positions from
    /// `checkpoints` (a file source's first run also records where `start_at` starts there).
    pub(crate) fn build(
        &self,
        checkpoints: &CheckpointStore,
    ) -> Result<Box<dyn Source>, SourceError> {
        let mut problems = Vec::new();
        self.validate(&format!("source {:?}", self.name()), &mut problems);
        if !problems.is_empty() {
            return Err(SourceError::Invalid(problems));
        }
        Ok(match self {
            SourceConfig::File(c) => Box::new(file::FileSource::new(c, checkpoints)),
            SourceConfig::Journald(c) => Box::new(journald::JournaldSource::new(
                c,
                checkpoints.cursor(&c.name),
            )),
        })
    }
}

/// One line from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// The source's configured name (`[[sources.files]] name`, `[sources.journald] name`).
    pub source: Arc<str>,
    /// The kind of source that read it: an alert's `origin.kind` (a line that is a journal
    /// entry's JSON is decoded as one, whatever read it).
    pub(crate) kind: OriginKind,
    /// The line without its terminator (LF, or CR LF), at most `max_line_bytes` long; any bytes,
    /// not necessarily UTF-8. For journald: one JSON object as `journalctl --output=json` prints it.
    pub bytes: Vec<u8>,
    /// The line was longer than `max_line_bytes`: `bytes` is its beginning, the rest was skipped.
    pub truncated: bool,
    pub position: Position,
}

impl SourceLine {
    /// What the decoder needs to know of where the line was read (origin, stable id).
    pub(crate) fn line_source(&self) -> LineSource<'_> {
        let (path, offset, fingerprint) = match &self.position {
            Position::File(p) => (p.path.to_str(), Some(p.offset_of_line), p.fingerprint),
            Position::Cursor(_) => (None, None, 0),
        };
        LineSource {
            kind: self.kind,
            path,
            offset,
            fingerprint,
            truncated: self.truncated,
        }
    }
}

/// Where a line was, and where reading resumes after it. Its arms are shapes of positions, not
/// kinds of sources: a new kind uses the shape that fits it, and the methods below and the
/// [`checkpoint`] store are the only code that looks inside one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Position {
    /// A byte offset in one file of a watched path, which rotation may rename.
    File(FilePosition),
    /// An opaque cursor the source resumes after (journald's `__CURSOR`), one per source name.
    Cursor(CursorPosition),
}

impl Position {
    /// Both positions are in the same stream of lines, where a later one replaces an earlier
    /// one in the checkpoints: the same file (watched path and identity: a rotated file is
    /// read beside its successor and checkpointed apart), or the cursors of one source (callers
    /// compare the source names).
    pub(crate) fn same_stream(&self, other: &Position) -> bool {
        match (self, other) {
            (Position::File(a), Position::File(b)) => {
                (&a.path, a.dev, a.ino, a.fingerprint) == (&b.path, b.dev, b.ino, b.fingerprint)
            }
            (Position::Cursor(_), Position::Cursor(_)) => true,
            _ => false,
        }
    }

    /// Bytes it holds on the heap (its share of the channel's budget).
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Position::File(p) => p.path.capacity(),
            Position::Cursor(j) => j.cursor.capacity(),
        }
    }
}

/// A line's place in a file. `(fingerprint, offset_of_line)` is the same for the same line before
/// and after a rename rotation, so it can seed a stable alert id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The watched path the file was opened as (after a rotation the bytes may now live under
    /// another name, e.g. `messages.1`); the checkpoint key.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// [`identity::fingerprint`] of the file's first line (at most 1 KiB of it).
    pub fingerprint: u64,
    /// Byte offset of the line's first byte.
    pub offset_of_line: u64,
    /// Byte offset just past the line's terminator: where reading resumes.
    pub next_offset: u64,
}

/// A place named by the source's own cursor (a journal entry's `__CURSOR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPosition {
    pub cursor: String,
}

/// Counters of one source; the pipeline exports them as [`SourceMetrics::COUNTERS`] names them
/// (label `source`).
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Lines read and handed to the channel.
    pub(crate) lines_read_total: AtomicU64,
    /// Bytes consumed from files / journalctl stdout, terminators included.
    pub(crate) bytes_read_total: AtomicU64,
    /// Lines cut at `max_line_bytes` (journald: entries dropped as too long).
    pub(crate) lines_truncated_total: AtomicU64,
    /// Rename/create and copytruncate rotations seen.
    pub(crate) rotations_total: AtomicU64,
    /// journalctl children started after the first.
    pub(crate) journalctl_restarts_total: AtomicU64,
    /// Whether each path of the source can be read now (`iemd_source_up{source,path}`).
    paths: Mutex<BTreeMap<String, PathState>>,
}

/// One counter of [`SourceMetrics`].
pub(crate) type SourceCounter = fn(&SourceMetrics) -> &AtomicU64;

/// Whether one path of a source (a file, a glob's directory, a journal) can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathState {
    /// Opened and read.
    Up,
    /// Not there (yet): waited for, not an error (a log file may appear later).
    Missing,
    /// There but cannot be read: the reason, and what the operator should do.
    Unreadable { reason: String, fix: String },
}

/// The state of a path that exists but failed to open or list with `err`: the reason, and the
/// fix an operator can apply.
pub(crate) fn unreadable(path: &std::path::Path, err: &std::io::Error) -> PathState {
    let shown = path.display();
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => PathState::Unreadable {
            reason: format!("permission denied: {err}"),
            fix: format!(
                "let the user iemd runs as read {shown}: the packaged unit grants CAP_DAC_READ_SEARCH \
                 (AmbientCapabilities=); without it, `setfacl -m u:iemd:r {shown}` (and the same in \
                 logrotate's postrotate, since rotation creates a new file) or a group that may read it"
            ),
        },
        _ => PathState::Unreadable {
            reason: err.to_string(),
            fix: format!("check {shown} and the filesystem it is on"),
        },
    }
}

/// A path that cannot be read, as `/health` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathDown {
    pub path: String,
    pub reason: String,
}

impl SourceMetrics {
    /// Each counter as exported: name, help, field. Every kind has them all (a kind that never
    /// rotates shows 0), so that dashboards need not know the kinds.
    pub(crate) const COUNTERS: [(&'static str, &'static str, SourceCounter); 5] = [
        ("iemd_lines_read_total", "Lines read, per source.", |m| {
            &m.lines_read_total
        }),
        ("iemd_bytes_read_total", "Bytes read, per source.", |m| {
            &m.bytes_read_total
        }),
        (
            "iemd_lines_truncated_total",
            "Lines cut at max_line_bytes (journald: entries dropped as too long), per source.",
            |m| &m.lines_truncated_total,
        ),
        (
            "iemd_rotations_total",
            "File rotations (rename, copytruncate, found while stopped) followed, per source.",
            |m| &m.rotations_total,
        ),
        (
            "iemd_journalctl_restarts_total",
            "journalctl children started after the first, per source.",
            |m| &m.journalctl_restarts_total,
        ),
    ];

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records whether `path` of `source` can be read. A change is logged once (an unreadable
    /// path at error level, with the reason and the fix) and sets `iemd_source_up{source,path}`
    /// (1 up, 0 missing or unreadable); the same state again is silent.
    pub(crate) fn set_path(&self, source: &str, path: &str, state: PathState) {
        let previous = {
            let Ok(mut paths) = self.paths.lock() else {
                return;
            };
            match paths.insert(path.to_string(), state.clone()) {
                Some(p) if p == state => return,
                p => p,
            }
        };
        match (&state, previous) {
            (PathState::Up, None) => {}
            (PathState::Up, Some(_)) => {
                tracing::info!(source, path, "source path readable again")
            }
            (PathState::Missing, _) => {
                tracing::warn!(source, path, "source path does not exist; waiting for it")
            }
            (PathState::Unreadable { reason, fix }, _) => {
                tracing::error!(source, path, %reason, %fix, "cannot read source path")
            }
        }
        crate::telemetry::registry()
            .gauge_vec(
                "iemd_source_up",
                "1 while a source's path (file, glob directory, journal) is read, 0 while it is missing or unreadable.",
                &["source", "path"],
            )
            .with(&[source, path])
            .set(f64::from(u8::from(state == PathState::Up)));
    }

    /// Forgets a path no longer watched (a glob match that went away).
    pub(crate) fn forget_path(&self, path: &str) {
        if let Ok(mut paths) = self.paths.lock() {
            paths.remove(path);
        }
    }

    /// The paths that exist but cannot be read now, for `/health`.
    pub fn unreadable(&self) -> Vec<PathDown> {
        let Ok(paths) = self.paths.lock() else {
            return Vec::new();
        };
        paths
            .iter()
            .filter_map(|(path, s)| match s {
                PathState::Unreadable { reason, .. } => Some(PathDown {
                    path: path.clone(),
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            lines_read_total: self.lines_read_total.load(Ordering::Relaxed),
            bytes_read_total: self.bytes_read_total.load(Ordering::Relaxed),
            lines_truncated_total: self.lines_truncated_total.load(Ordering::Relaxed),
            rotations_total: self.rotations_total.load(Ordering::Relaxed),
            journalctl_restarts_total: self.journalctl_restarts_total.load(Ordering::Relaxed),
        }
    }
}

/// The values of [`SourceMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub lines_read_total: u64,
    pub bytes_read_total: u64,
    pub lines_truncated_total: u64,
    pub rotations_total: u64,
    pub journalctl_restarts_total: u64,
}

/// Why a source stopped for good. Bad input never stops a source; only set-up failures do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot watch files: {0}")]
    Watch(#[from] notify::Error),
    #[error("bad file pattern {pattern:?}: {reason}")]
    Pattern { pattern: PathBuf, reason: String },
    #[error("invalid source configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

/// When none of the configured sources exists (no file any path or glob names, and no journald
/// or no `journalctl` to run), the sentence that says so at start; `None` otherwise.
pub(crate) fn nothing_to_read(config: &crate::config::sources::SourcesConfig) -> Option<String> {
    let patterns: Vec<&std::path::Path> = config
        .files
        .iter()
        .flat_map(|f| f.paths.iter().map(PathBuf::as_path))
        .collect();
    let any_file = patterns
        .iter()
        .any(|p| file::expand_pattern(p).is_ok_and(|paths| paths.iter().any(|p| p.exists())));
    let journald = journalctl_program(&config.journald);
    if any_file || journald.is_ok() {
        return None;
    }
    let files = match patterns.is_empty() {
        true => "no file source is configured".to_string(),
        false => format!(
            "none of the files {} exists",
            patterns
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let journal = journald.as_ref().err().cloned().unwrap_or_default();
    Some(format!(
        "no configured source exists: {files}, and {journal}; iemd reads nothing until one of \
         the files appears (it watches for them). Fix [sources] in the config"
    ))
}

/// The `journalctl` the journald source would run, or why there is none.
fn journalctl_program(j: &crate::config::sources::JournaldConfig) -> Result<PathBuf, String> {
    if !j.enabled {
        return Err("journald is disabled".to_string());
    }
    let named = &j.journalctl;
    let found = if named.components().count() > 1 {
        named.is_file().then(|| named.clone())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(named))
                .find(|p| p.is_file())
        })
    };
    found.ok_or_else(|| format!("journalctl {} is not found", named.display()))
}
