//! The durable spool: an ordered, segmented, append-only log on disk between the sources and the
//! publisher. An alert leaves the spool only when the broker has confirmed it.
//!
//! # On-disk format (version 1)
//!
//! A spool is one directory (mode 0700, refused when anyone else can write it); every file in it
//! is mode 0600, created and replaced relative to the directory without following links
//! ([`crate::statefile`]).
//!
//! - `lock`: empty; an exclusive `flock` on it is held by the one process writing the spool.
//! - `ack`: the acknowledged position, 24 bytes, replaced atomically (write `ack.tmp`, fsync,
//!   rename, fsync the directory):
//!   `magic "IEMSPACK" (8) | version u32 LE = 1 | crc32c(acked) u32 LE | acked seq u64 LE`.
//!   Every record with `seq <= acked` has been confirmed by the broker. Missing file = 0.
//!   Written at most once a second while the acked position moves (and at once when a segment
//!   becomes fully acked, at open and at shutdown): two fsyncs per write.
//! - `ack.hot`: the same 24 bytes, written in place with one `pwrite` and no fsync by the sync
//!   rounds between two writes of `ack`, so that a SIGKILL does not make a second of confirmed
//!   records be published again. The acked position is the larger of the two valid values: each
//!   is a position the broker had confirmed. A power loss may lose or tear the hot copy (a torn
//!   one fails its checksum and is ignored): duplicates, never loss. Segments are deleted only
//!   on the position `ack` holds.
//! - `seg-<first seq, 20 digits>.log`: segments, in seq order. A segment starts with a header
//!   `magic "IEMSPOOL" (8) | version u32 LE = 1 | reserved u32 = 0 | first seq u64 LE`
//!   followed by records, each
//!   `len u32 LE | crc32c u32 LE | seq u64 LE | time_ms i64 LE | payload (len bytes)`,
//!   where the crc covers `seq | time_ms | payload` and `time_ms` is the wall-clock time the
//!   record was spooled (Unix milliseconds). The payload is opaque to the spool (the pipeline
//!   stores the alert JSON).
//!
//! # Invariants
//!
//! - Sequence numbers start at 1 and increase by exactly one from record to record, across
//!   segments (except for the gaps recovery leaves where it dropped damaged records); a
//!   segment's first record carries the seq in its header and its name. The ack file keeps the
//!   numbering going when every segment has been deleted.
//! - A record is *durable* once fsynced; `SpoolWriter::durable()` publishes the highest durable
//!   seq. Sources advance their checkpoints only up to lines whose records are durable.
//! - The reader hands out only durable records, so nothing reaches the broker that a crash
//!   could take back out of the spool.
//! - The acked position only moves forward and only over records the broker confirmed, in
//!   order. A segment is deleted once every record in it is acked and the ack file says so.
//! - A torn tail (crash mid-write) is cut at the first record that is incomplete or fails its
//!   checksum; every complete record before it is kept. Damage with whole records after it (a
//!   flipped byte in the middle of a segment, a truncated older segment) drops only the damaged
//!   bytes: recovery skips to the next whole record with a valid checksum and a higher seq, keeps
//!   every such record, and preserves the original as `<name>.corrupt` for `iemctl replay`.
//! - When the unacked records reach `max_bytes`, appends wait; nothing is dropped or overwritten.
//! - When the filesystem is full (ENOSPC, EDQUOT), appends wait and retry too: a record whose
//!   write failed half-way is cut off the segment before anything else is written, so the file
//!   stays a sequence of whole records. Sync keeps deleting fully acked segments even when the
//!   ack file cannot be written for lack of space (the current segment's header keeps the
//!   numbering; a stale ack file only means duplicates after a crash), so acks free the space.
//!
//! # Layout
//!
//! - `format`: the bytes of segment headers, records and the ack file.
//! - `files`: the lock, the ack file and the segment files by name.
//! - `cursor`: [`SegmentCursor`](cursor::SegmentCursor), the one walk over a segment's records
//!   (recovery, the reader and `inspect` all use it).
//! - `recovery`: what `open` keeps and cuts of the segments it finds.
//! - `shared`: the state the writer, the reader and the sync thread share.
//! - `sync`: group commit (fsync, the durable seq, the ack file, deleting acked segments) and the
//!   thread that runs it.
//! - `writer`, `reader`: the two handles `open` returns.
//! - `inspect`: a read-only view for `iemctl replay`.

mod cursor;
mod files;
mod format;
pub mod inspect;
mod reader;
mod recovery;
mod shared;
mod sync;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::spool::SpoolConfig;
use crate::statefile::StateDir;

pub(crate) use format::MAX_RECORD_LEN;
pub(crate) use reader::SpoolReader;
pub(crate) use recovery::RecoveryReport;
pub use writer::SpoolWriter;

/// Something went wrong with the spool's files.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool {0} is in use by another process (lock held)")]
    Locked(PathBuf),
    #[error("spool {path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("spool record of {len} bytes refused: the limit is {max} bytes")]
    TooLarge { len: usize, max: u32 },
    #[error("cannot start the spool sync thread: {0}")]
    SyncThread(io::Error),
    #[error("spool record {seq} is unreadable at {path} offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        seq: u64,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A point-in-time view for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub pending_records: u64,
    pub pending_bytes: u64,
    /// Spool time (Unix ms) of the oldest unacked record the publisher has read, if any.
    pub(crate) oldest_pending_ms: Option<i64>,
    /// How many appends had to wait because the spool was full.
    pub full_waits: u64,
    /// An append is waiting right now because the spool, or its filesystem, is full.
    pub(crate) full: bool,
    /// Why the last sync failed, while it keeps failing (`None` when syncs succeed).
    pub(crate) sync_failure: Option<String>,
    pub last_seq: u64,
    pub(crate) durable_seq: u64,
    pub acked_seq: u64,
    pub segments: usize,
}

/// One record handed to the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// When it was spooled (Unix milliseconds).
    pub time_ms: i64,
    pub payload: Vec<u8>,
}

/// Opens (or creates) the spool in `config.dir`, recovers it, and starts its sync thread.
pub fn open(
    config: &SpoolConfig,
) -> Result<(SpoolWriter, SpoolReader, RecoveryReport), SpoolError> {
    let dir = &config.dir;
    let state_dir = StateDir::open(dir).map_err(io_err(dir))?;
    let lock = files::lock(&state_dir, dir)?;
    let recovered = recovery::recover(&state_dir, dir)?;
    let report = recovered.report;
    let mut segments = recovered.segments;
    let to = writer::continue_appending(
        &state_dir,
        recovered.tail,
        report.next_seq,
        config.segment_bytes,
        &mut segments,
    )?;
    let start = shared::Start {
        segments,
        next_seq: report.next_seq,
        acked_seq: report.acked_seq,
        written_ack: recovered.written_ack,
        pending_bytes: recovered.pending_bytes,
        oldest_pending_ms: recovered.oldest_pending_ms,
    };
    let (shared, durable_rx) = shared::Shared::new(config, lock, start, to);
    let shared = Arc::new(shared);
    // The ack file catches up with its hot copy, and segments fully acked by the previous run
    // go now.
    shared.persist_ack(true)?;
    sync::spawn_syncer(
        Arc::downgrade(&shared),
        shared.wake.clone(),
        config.sync_interval(),
    )
    .map_err(SpoolError::SyncThread)?;
    if !report.cuts.is_empty() {
        tracing::warn!(
            cuts = report.cuts.len(),
            records = report.records,
            "spool recovered with damage"
        );
    }
    let reader = SpoolReader::new(shared.clone(), durable_rx.clone());
    Ok((SpoolWriter::new(shared, durable_rx), reader, report))
}

/// A small spool in `dir` that syncs often, for the unit tests.
#[cfg(test)]
fn test_config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        sync_interval_ms: 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_open_is_refused_while_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = open(&test_config(tmp.path())).unwrap();
        assert!(matches!(
            open(&test_config(tmp.path())),
            Err(SpoolError::Locked(_))
        ));
    }
}
