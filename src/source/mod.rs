//! Sources: where log lines come from, each line with the position right after it.
//!
//! - `file`: a rotation-safe tailer of files and globs (inotify + a 1 s stat safety net).
//! - `journald`: a `journalctl --follow --output=json` child, restarted with backoff.
//! - `checkpoint`: the durable positions sources resume from.
//! - `lines`: splitting bytes into lines (shared by both sources).
//! - `identity`: what makes a file the same file (device, inode, fingerprint) and how a
//!   checkpoint finds its file again after rotation.
//!
//! # Contract
//!
//! A source sends [`SourceLine`]s, in order, on a bounded `tokio::sync::mpsc` channel: a full
//! channel stops the reading (backpressure from the spool). Each line carries its
//! [`Position`]; the position is where reading resumes if this line is the last one done.
//! The pipeline commits a position to the [`checkpoint::CheckpointStore`] only when every IEM
//! line up to and including that line is durable in the spool (lines without an IEM may move it
//! freely). After a clean stop, restarting from the committed positions re-reads nothing and
//! loses nothing; after a crash, lines after the last commit are read again (at least once).

pub mod checkpoint;
pub mod file;
pub mod identity;
pub mod journald;
pub mod lines;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// One line from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// The source's configured name (`[[sources.files]] name`, `[sources.journald] name`).
    pub source: Arc<str>,
    /// The line without its terminator (LF, or CR LF), at most `max_line_bytes` long; any bytes,
    /// not necessarily UTF-8. For journald: one JSON object as `journalctl --output=json` prints it.
    pub bytes: Vec<u8>,
    /// The line was longer than `max_line_bytes`: `bytes` is its beginning, the rest was skipped.
    pub truncated: bool,
    pub position: Position,
}

/// Where a line was, and where reading resumes after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Position {
    File(FilePosition),
    Journal(JournalPosition),
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

/// A journal entry's place: its `__CURSOR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPosition {
    pub cursor: String,
}

/// Counters of one source, for the pipeline to export (names as exported, label `source`).
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// `source_lines_read_total`: lines read and handed to the channel.
    pub lines_read_total: AtomicU64,
    /// `source_bytes_read_total`: bytes consumed from files / journalctl stdout, terminators included.
    pub bytes_read_total: AtomicU64,
    /// `source_lines_truncated_total`: lines cut at `max_line_bytes` (journald: entries dropped as too long).
    pub lines_truncated_total: AtomicU64,
    /// `source_rotations_total`: rename/create and copytruncate rotations seen.
    pub rotations_total: AtomicU64,
    /// `source_journalctl_restarts_total`: journalctl children started after the first.
    pub journalctl_restarts_total: AtomicU64,
}

impl SourceMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
}
