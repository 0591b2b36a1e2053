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
//!   segments (except for the gaps recovery leaves where it dropped damaged records); a segment's first record carries the seq in its header and its name. The ack
//!   file keeps the numbering going when every segment has been deleted.
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

mod format;
pub mod inspect;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::spool::SpoolConfig;
use crate::statefile::StateDir;

pub use format::MAX_RECORD_LEN;
pub use format::VERSION as FORMAT_VERSION;

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

/// A part of a segment that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub segment: PathBuf,
    /// Offset of the first byte cut.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    pub reason: String,
}

/// What `open` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Complete records kept, acked or not.
    pub records: u64,
    /// Records kept that the broker has not confirmed yet.
    pub pending: u64,
    pub acked_seq: u64,
    pub next_seq: u64,
    pub cuts: Vec<Cut>,
}

/// A point-in-time view for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub pending_records: u64,
    pub pending_bytes: u64,
    /// Spool time (Unix ms) of the oldest unacked record the publisher has read, if any.
    pub oldest_pending_ms: Option<i64>,
    /// How many appends had to wait because the spool was full.
    pub full_waits: u64,
    /// An append is waiting right now because the spool, or its filesystem, is full.
    pub full: bool,
    /// Why the last sync failed, while it keeps failing (`None` when syncs succeed).
    pub sync_failure: Option<String>,
    pub last_seq: u64,
    pub durable_seq: u64,
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

struct State {
    /// Seq the next append gets.
    next_seq: u64,
    file: BufWriter<File>,
    file_path: PathBuf,
    file_len: u64,
    /// first seq -> path, every segment on disk.
    segments: BTreeMap<u64, PathBuf>,
    /// Framed bytes of every record appended or recovered as pending; with `acked_bytes` gives
    /// the unacked volume the bound applies to.
    written_bytes: u64,
    acked_bytes: u64,
    acked_seq: u64,
    persisted_ack: u64,
    oldest_pending_ms: Option<i64>,
    scratch: Vec<u8>,
    full_warned: bool,
    /// An append waits for the filesystem to have room.
    disk_full: bool,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Woken when acked records free space.
    space: Notify,
    /// Held for a whole `append_batch`, so that a batch interrupted by a full disk still gets
    /// consecutive seqs when it resumes.
    appending: tokio::sync::Mutex<()>,
    durable_tx: watch::Sender<u64>,
    wake: Arc<(Mutex<bool>, Condvar)>,
    full_waits: AtomicU64,
    /// Serializes writers of the ack file (the sync thread and explicit `persist` calls).
    ack_file: Mutex<()>,
    /// Why the sync thread's last sync failed or panicked, while it does.
    sync_failure: Mutex<Option<String>>,
    max_bytes: u64,
    segment_bytes: u64,
    sync_now: bool,
    _lock: File,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent at record granularity (the
        // only multi-step update is a write, which recovery handles), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_syncer(&self) {
        let (m, cv) = &*self.wake;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }

    /// Flushes and fsyncs everything appended so far, then publishes the durable seq; persists
    /// the ack position and deletes fully acked segments, even when the flush failed (a full
    /// disk gets its space back only that way).
    fn sync(&self) -> Result<u64, SpoolError> {
        let synced = self.flush_and_sync();
        let acked = self.persist_ack();
        let last = synced?;
        acked?;
        Ok(last)
    }

    fn flush_and_sync(&self) -> Result<u64, SpoolError> {
        let (fd, path, last) = {
            let mut st = self.lock();
            let path = st.file_path.clone();
            st.file.flush().map_err(io_err(&path))?;
            let fd = st.file.get_ref().try_clone().map_err(io_err(&path))?;
            (fd, path, st.next_seq - 1)
        };
        if last > *self.durable_tx.borrow() {
            fd.sync_data().map_err(io_err(&path))?;
            self.durable_tx.send_replace(last);
        }
        Ok(last)
    }

    /// Writes the ack file if the acked position moved, then deletes fully acked segments.
    fn persist_ack(&self) -> Result<(), SpoolError> {
        let _one_writer = self.ack_file.lock().unwrap_or_else(|p| p.into_inner());
        let (acked, persisted) = {
            let st = self.lock();
            (st.acked_seq, st.persisted_ack)
        };
        let mut written = Ok(());
        if acked != persisted {
            written = write_ack(&self.dir, acked);
            match &written {
                Ok(()) => {}
                // Deleting acked segments is what frees the space: go on (see the invariants).
                Err(SpoolError::Io { source, .. }) if is_disk_full(source) => {}
                Err(_) => return written,
            }
        }
        let doomed: Vec<PathBuf> = {
            let mut st = self.lock();
            if written.is_ok() {
                st.persisted_ack = acked;
            }
            let firsts: Vec<u64> = st.segments.keys().copied().collect();
            let mut doomed = Vec::new();
            // A segment is fully acked when the next one starts at or below acked + 1 (only
            // the persisted position counts); the current segment is never deleted.
            for pair in firsts.windows(2) {
                if pair[1] <= acked + 1
                    && let Some(p) = st.segments.remove(&pair[0])
                {
                    doomed.push(p);
                }
            }
            doomed
        };
        for p in doomed {
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!(segment = %p.display(), error = %e, "cannot delete acked spool segment");
            }
        }
        written
    }
}

/// True for the errors of a full filesystem or quota, which go away when space is freed.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// After a failed `write_all` of one record: `BufWriter` either kept the record out entirely
/// (its buffer still holds earlier whole records, which a later flush completes) or, for a
/// record larger than its buffer, wrote part of it straight to the file after emptying the
/// buffer. In that case the file is cut back to `file_len`, the end of the last whole record.
fn cut_torn_write(st: &mut State) {
    if !st.file.buffer().is_empty() {
        return;
    }
    let len = st.file_len;
    let f = st.file.get_mut();
    // Shrinking needs no space; should it fail anyway, the next write would follow torn bytes
    // and recovery would cut the segment there: say so loudly.
    if let Err(e) = f
        .set_len(len)
        .and_then(|_| f.seek(SeekFrom::Start(len)).map(|_| ()))
    {
        tracing::error!(path = %st.file_path.display(), error = %e,
            "cannot cut a torn spool record; the segment will be cut at recovery");
    }
}

/// A write that failed after `written` records of the batch were appended.
struct WriteFailed {
    written: usize,
    error: SpoolError,
}

/// How often an append blocked by a full filesystem looks again (acks wake it sooner).
const DISK_FULL_RETRY: Duration = Duration::from_millis(250);

/// The writing half: cheap to clone, used by every source task.
#[derive(Clone)]
pub struct SpoolWriter {
    shared: Arc<Shared>,
    durable_rx: watch::Receiver<u64>,
}

/// The reading half, owned by the publisher: records after the acked position, in order.
pub struct SpoolReader {
    shared: Arc<Shared>,
    durable_rx: watch::Receiver<u64>,
    next_seq: u64,
    cur: Option<(u64, PathBuf, BufReader<File>, u64)>,
    /// Records handed out and not acked: seq, cumulative framed bytes up to its end, time.
    handed: VecDeque<(u64, u64, i64)>,
    read_bytes: u64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

/// Parses `seg-<digits>.log` into its first seq.
pub(crate) fn segment_first_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Every segment in `dir`, ordered by first seq.
pub(crate) fn list_segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, SpoolError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(first) = entry.file_name().to_str().and_then(segment_first_seq) {
            out.insert(first, entry.path());
        }
    }
    Ok(out)
}

pub(crate) fn ack_path(dir: &Path) -> PathBuf {
    dir.join("ack")
}

/// Reads the ack file; a missing file is 0, an unreadable one is 0 with a warning (the
/// records are re-sent: duplicates, never loss).
pub(crate) fn read_ack(dir: &Path) -> Result<u64, SpoolError> {
    let path = ack_path(dir);
    match StateDir::at(dir).and_then(|d| d.read("ack")) {
        Ok(b) => Ok(format::parse_ack(&b).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "spool ack file is invalid; re-sending from the start");
            0
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The name of a file in the spool directory (segment paths are made from UTF-8 names).
fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn write_ack(dir: &Path, acked: u64) -> Result<(), SpoolError> {
    StateDir::at(dir)
        .and_then(|d| d.replace("ack", &format::encode_ack(acked)))
        .map_err(io_err(&ack_path(dir)))
}

/// Creates a segment whose first record will be `first_seq`, durably (file and directory).
fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf), SpoolError> {
    let path = segment_path(dir, first_seq);
    let state_dir = StateDir::at(dir).map_err(io_err(dir))?;
    let mut f = state_dir
        .create_new(file_name(&path))
        .map_err(io_err(&path))?;
    if let Err(e) = f
        .write_all(&format::segment_header(first_seq))
        .and_then(|_| f.sync_all())
    {
        // A header cut short by a full disk would be moved aside as corrupt by recovery; the
        // next attempt creates the file again.
        let _ = fs::remove_file(&path);
        return Err(io_err(&path)(e));
    }
    state_dir.sync().map_err(io_err(dir))?;
    Ok((f, path))
}

/// What a scan of one segment found.
struct Scanned {
    first_seq: u64,
    last_seq: Option<u64>,
    records: u64,
    pending: u64,
    pending_bytes: u64,
    oldest_pending_ms: Option<i64>,
    good_len: u64,
    bad: Option<String>,
}

fn scan_segment(path: &Path, acked: u64) -> Result<Result<Scanned, String>, SpoolError> {
    // Not through a link planted at a segment's name (statefile).
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err(path))?;
    let file_len = f.metadata().map_err(io_err(path))?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = [0u8; format::SEGMENT_HEADER_LEN as usize];
    let n = io::Read::read(&mut r, &mut h).map_err(io_err(path))?;
    let first_seq = match format::parse_segment_header(&h[..n]) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut s = Scanned {
        first_seq,
        last_seq: None,
        records: 0,
        pending: 0,
        pending_bytes: 0,
        oldest_pending_ms: None,
        good_len: format::SEGMENT_HEADER_LEN,
        bad: None,
    };
    loop {
        let available = file_len.saturating_sub(s.good_len + format::RECORD_HEADER_LEN as u64);
        match format::read_record(&mut r, |_| Ok(available)).map_err(io_err(path))? {
            format::ReadOutcome::End => break,
            format::ReadOutcome::Bad(e) => {
                s.bad = Some(e.to_string());
                break;
            }
            format::ReadOutcome::Record(rec, total) => {
                // Seqs increase within a segment; gaps are left where a recovery skipped damage.
                let expected = s.last_seq.map_or(first_seq, |l| l + 1);
                if rec.seq < expected {
                    s.bad = Some(format!("seq {} where {expected} was expected", rec.seq));
                    break;
                }
                s.last_seq = Some(rec.seq);
                s.records += 1;
                s.good_len += total;
                if rec.seq > acked {
                    s.pending += 1;
                    s.pending_bytes += total;
                    s.oldest_pending_ms.get_or_insert(rec.time_ms);
                }
            }
        }
    }
    Ok(Ok(s))
}

/// What a salvage found after the first damage in a segment.
struct Salvage {
    /// Byte ranges of whole records to keep, in order.
    kept: Vec<(usize, usize)>,
    /// Damaged regions: offset, length, reason.
    damaged: Vec<(u64, u64, String)>,
}

/// Walks `bytes` (a whole segment) from `scanned.good_len`, where `reason` made the scan stop:
/// skips to the next offset where a whole record with a valid checksum and a higher seq starts,
/// and so on to the end. Adds the records kept to `scanned`.
fn salvage_after(bytes: &[u8], scanned: &mut Scanned, reason: String, acked: u64) -> Salvage {
    let mut out = Salvage {
        kept: Vec::new(),
        damaged: Vec::new(),
    };
    let mut pos = scanned.good_len as usize;
    let mut bad: Option<(usize, String)> = Some((pos, reason));
    while pos < bytes.len() {
        let after = scanned.last_seq.map_or(scanned.first_seq, |l| l + 1);
        // Cheap filters first (a plausible seq), the checksum only then: linear in practice.
        let plausible = |p: usize| {
            let Some(h) = bytes.get(p..p + format::RECORD_HEADER_LEN) else {
                return false;
            };
            let seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8]));
            let max_more = ((bytes.len() - p) / format::RECORD_HEADER_LEN) as u64;
            seq >= after && seq <= after.saturating_add(max_more)
        };
        let found = if bad.is_some() {
            (pos..bytes.len())
                .find(|&p| plausible(p) && format::parse_record(&bytes[p..]).is_some())
        } else {
            Some(pos).filter(|&p| plausible(p))
        };
        let parsed = found.and_then(|p| format::parse_record(&bytes[p..]).map(|r| (p, r)));
        match parsed {
            Some((p, (rec, total))) => {
                if let Some((start, reason)) = bad.take() {
                    out.damaged.push((start as u64, (p - start) as u64, reason));
                }
                let end = p + total as usize;
                out.kept.push((p, end));
                scanned.last_seq = Some(rec.seq);
                scanned.records += 1;
                if rec.seq > acked {
                    scanned.pending += 1;
                    scanned.pending_bytes += total;
                    scanned.oldest_pending_ms.get_or_insert(rec.time_ms);
                }
                pos = end;
            }
            None => {
                if bad.is_none() {
                    let reason = match format::read_record_in(&bytes[pos..]) {
                        Ok(format::ReadOutcome::Bad(e)) => e.to_string(),
                        _ => "seq out of order".to_string(),
                    };
                    bad = Some((pos, reason));
                    continue;
                }
                break;
            }
        }
    }
    if let Some((start, reason)) = bad {
        out.damaged
            .push((start as u64, (bytes.len() - start) as u64, reason));
    }
    out
}

/// Opens (or creates) the spool in `config.dir`, recovers it, and starts its sync thread.
pub fn open(
    config: &SpoolConfig,
) -> Result<(SpoolWriter, SpoolReader, RecoveryReport), SpoolError> {
    let dir = config.dir.clone();
    let state_dir = StateDir::open(&dir).map_err(io_err(&dir))?;
    let lock_path = dir.join("lock");
    let lock = state_dir
        .open_or_create("lock")
        .map_err(io_err(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir)),
        Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
    }

    let acked = read_ack(&dir)?;
    let mut report = RecoveryReport {
        acked_seq: acked,
        ..RecoveryReport::default()
    };
    let mut segments = list_segments(&dir)?;
    if acked == 0
        && !ack_path(&dir).exists()
        && segments.keys().next().is_some_and(|&first| first > 1)
    {
        // Segments were deleted, so an ack file existed: it was lost.
        tracing::warn!(spool = %dir.display(),
            "spool ack file is missing; every spooled record is sent again (duplicates, never loss)");
    }
    let last_key = segments.keys().next_back().copied();
    let mut last_seq = acked;
    let mut pending_bytes = 0;
    let mut oldest = None;
    // The last segment with records, and where its whole records end: appends continue there.
    let mut tail: Option<(PathBuf, u64)> = None;
    for (&first, path) in segments.clone().iter() {
        let is_last = Some(first) == last_key;
        let len = fs::metadata(path).map_err(io_err(path))?.len();
        let mut scanned = match scan_segment(path, acked)? {
            Ok(s) => s,
            Err(reason) => {
                // Without a valid header nothing in the file can be trusted; keep it aside.
                let aside = path.with_extension("log.corrupt");
                state_dir
                    .rename(file_name(path), file_name(&aside))
                    .map_err(io_err(path))?;
                tracing::warn!(segment = %path.display(), %reason, "spool segment unreadable; moved aside");
                report.cuts.push(Cut {
                    segment: path.clone(),
                    offset: 0,
                    bytes: len,
                    reason,
                });
                segments.remove(&first);
                continue;
            }
        };
        if let Some(reason) = scanned.bad.take() {
            let bytes = state_dir.read(file_name(path)).map_err(io_err(path))?;
            let salvage = salvage_after(&bytes, &mut scanned, reason, acked);
            // A torn tail (the usual crash) is simply cut; damage with whole records after it
            // is kept aside for `iemctl replay` and the records after it are kept.
            if !is_last || !salvage.kept.is_empty() {
                let aside = path.with_extension("log.corrupt");
                state_dir
                    .replace(file_name(&aside), &bytes)
                    .map_err(io_err(&aside))?;
            }
            for (offset, len, reason) in salvage.damaged {
                tracing::warn!(segment = %path.display(), offset, bytes = len, %reason,
                    "spool recovery skipped damaged bytes; the records around them are kept");
                report.cuts.push(Cut {
                    segment: path.clone(),
                    offset,
                    bytes: len,
                    reason,
                });
            }
            if salvage.kept.is_empty() {
                let f = state_dir
                    .open_existing(file_name(path), true)
                    .map_err(io_err(path))?;
                f.set_len(scanned.good_len)
                    .and_then(|_| f.sync_all())
                    .map_err(io_err(path))?;
            } else {
                tracing::warn!(segment = %path.display(), records = salvage.kept.len(),
                    "spool recovery kept the whole records found after damage");
                let mut out = bytes[..scanned.good_len as usize].to_vec();
                for (start, end) in &salvage.kept {
                    out.extend_from_slice(&bytes[*start..*end]);
                }
                state_dir
                    .replace(file_name(path), &out)
                    .map_err(io_err(path))?;
                scanned.good_len = out.len() as u64;
            }
        } else {
            // The previous process may have died before its last fsync.
            state_dir
                .open_existing(file_name(path), false)
                .and_then(|f| f.sync_all())
                .map_err(io_err(path))?;
        }
        report.segments += 1;
        report.records += scanned.records;
        report.pending += scanned.pending;
        pending_bytes += scanned.pending_bytes;
        if oldest.is_none() {
            oldest = scanned.oldest_pending_ms;
        }
        last_seq = last_seq.max(
            scanned
                .last_seq
                .unwrap_or(scanned.first_seq.saturating_sub(1)),
        );
        if scanned.records == 0 && is_last {
            fs::remove_file(path).map_err(io_err(path))?;
            segments.remove(&first);
            report.segments -= 1;
        } else if is_last {
            tail = Some((path.clone(), scanned.good_len));
        }
    }
    let next_seq = last_seq + 1;
    report.next_seq = next_seq;
    // Appending to the last segment, rather than starting a new one at every start, lets a
    // spool on a full disk open at all (and so drain).
    let (file, file_path, file_len) = match tail {
        Some((path, len)) if len < config.segment_bytes => {
            let mut f = state_dir
                .open_existing(file_name(&path), true)
                .map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(len)).map_err(io_err(&path))?;
            (f, path, len)
        }
        _ => {
            let (f, path) = create_segment(&dir, next_seq)?;
            segments.insert(next_seq, path.clone());
            (f, path, format::SEGMENT_HEADER_LEN)
        }
    };

    let (durable_tx, durable_rx) = watch::channel(last_seq);
    let wake = Arc::new((Mutex::new(false), Condvar::new()));
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        state: Mutex::new(State {
            next_seq,
            file: BufWriter::with_capacity(256 << 10, file),
            file_path,
            file_len,
            segments,
            written_bytes: pending_bytes,
            acked_bytes: 0,
            acked_seq: acked,
            persisted_ack: acked,
            oldest_pending_ms: oldest,
            scratch: Vec::new(),
            full_warned: false,
            disk_full: false,
        }),
        space: Notify::new(),
        appending: tokio::sync::Mutex::new(()),
        durable_tx,
        wake: wake.clone(),
        full_waits: AtomicU64::new(0),
        ack_file: Mutex::new(()),
        sync_failure: Mutex::new(None),
        max_bytes: config.max_bytes,
        segment_bytes: config.segment_bytes,
        sync_now: config.sync_interval_ms == 0,
        _lock: lock,
    });
    // Segments fully acked by the previous run go now.
    shared.persist_ack()?;
    spawn_syncer(Arc::downgrade(&shared), wake, config.sync_interval())
        .map_err(SpoolError::SyncThread)?;
    if !report.cuts.is_empty() {
        tracing::warn!(
            cuts = report.cuts.len(),
            records = report.records,
            "spool recovered with damage"
        );
    }
    let reader = SpoolReader {
        shared: shared.clone(),
        durable_rx: durable_rx.clone(),
        next_seq: acked + 1,
        cur: None,
        handed: VecDeque::new(),
        read_bytes: 0,
    };
    Ok((SpoolWriter { shared, durable_rx }, reader, report))
}

/// The group-commit thread: syncs every `interval` (or as soon as woken when the interval is
/// zero) until every handle to the spool is gone.
///
/// It supervises itself: a failed sync is logged once and retried at the next round, a panic
/// in a sync is caught, logged and the loop goes on after a backoff (1 s doubling to 60 s).
/// Either way `SpoolStats::sync_failure` says why until a sync succeeds (the pipeline shows it
/// in `/health`): nothing becomes durable meanwhile, so no checkpoint moves and nothing is lost.
fn spawn_syncer(
    shared: Weak<Shared>,
    wake: Arc<(Mutex<bool>, Condvar)>,
    interval: Duration,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("iemd-spool-sync".into())
        .spawn(move || {
            let mut panic_backoff = Duration::from_secs(1);
            loop {
                {
                    let (m, cv) = &*wake;
                    let mut woken = m.lock().unwrap_or_else(|p| p.into_inner());
                    if interval.is_zero() {
                        while !*woken {
                            let (g, t) = cv
                                .wait_timeout(woken, Duration::from_millis(200))
                                .unwrap_or_else(|p| p.into_inner());
                            woken = g;
                            if t.timed_out() {
                                break;
                            }
                        }
                    } else {
                        woken = cv
                            .wait_timeout(woken, interval)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    *woken = false;
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let synced =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.sync()));
                let panicked = synced.is_err();
                let failure = match synced {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(format!("spool sync failed: {e}")),
                    Err(panic) => Some(format!(
                        "spool sync panicked: {}",
                        crate::supervise::panic_message(panic.as_ref())
                    )),
                };
                let mut slot = shared
                    .sync_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match (&failure, slot.is_some()) {
                    (None, true) => tracing::info!("spool sync works again"),
                    (Some(why), false) => tracing::error!(
                        reason = %why,
                        "records stay unconfirmed and checkpoints do not move until a sync succeeds"
                    ),
                    _ => {}
                }
                *slot = failure;
                drop(slot);
                drop(shared);
                if panicked {
                    std::thread::sleep(panic_backoff);
                    panic_backoff = (panic_backoff * 2).min(Duration::from_secs(60));
                }
            }
        })
        .map(|_| ())
}

impl SpoolWriter {
    /// Appends one record; returns its seq. Waits while the spool is full.
    pub async fn append(&self, payload: &[u8]) -> Result<u64, SpoolError> {
        self.append_batch(&[payload]).await
    }

    /// Appends records in order with one lock; returns the seq of the last (or the last seq
    /// so far when `payloads` is empty). Waits while the spool is full, and while its
    /// filesystem is full (retrying the records not yet written, with consecutive seqs).
    pub async fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<u64, SpoolError> {
        let sh = &*self.shared;
        if let Some(p) = payloads
            .iter()
            .find(|p| p.as_ref().len() > format::MAX_RECORD_LEN as usize)
        {
            return Err(SpoolError::TooLarge {
                len: p.as_ref().len(),
                max: format::MAX_RECORD_LEN,
            });
        }
        let _one_batch = sh.appending.lock().await;
        let mut rest = payloads;
        let mut disk_full_warned = false;
        loop {
            let need: u64 = rest
                .iter()
                .map(|p| format::RECORD_HEADER_LEN as u64 + p.as_ref().len() as u64)
                .sum();
            let notified = sh.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let disk_full = {
                let mut st = sh.lock();
                let pending = st.written_bytes - st.acked_bytes;
                if pending == 0 || pending + need <= sh.max_bytes {
                    if st.full_warned {
                        st.full_warned = false;
                        tracing::info!("spool has room again; appends resume");
                    }
                    let written = self.write_locked(&mut st, rest);
                    st.disk_full = matches!(&written, Err(WriteFailed { error: SpoolError::Io { source, .. }, .. }) if is_disk_full(source));
                    drop(st);
                    if sh.sync_now {
                        sh.wake_syncer();
                    }
                    match written {
                        Ok(last) => {
                            if disk_full_warned {
                                tracing::info!("spool filesystem has room again; appends resume");
                            }
                            return Ok(last);
                        }
                        Err(WriteFailed {
                            written,
                            error: SpoolError::Io { path, source },
                        }) if is_disk_full(&source) => {
                            rest = &rest[written..];
                            Some((path, source))
                        }
                        Err(failed) => return Err(failed.error),
                    }
                } else {
                    sh.full_waits.fetch_add(1, Ordering::Relaxed);
                    if !st.full_warned {
                        st.full_warned = true;
                        tracing::warn!(
                            pending_bytes = pending,
                            max_bytes = sh.max_bytes,
                            "spool is full; sources wait until the broker confirms alerts"
                        );
                    }
                    None
                }
            };
            match disk_full {
                None => notified.await,
                Some((path, error)) => {
                    sh.full_waits.fetch_add(1, Ordering::Relaxed);
                    if !disk_full_warned {
                        disk_full_warned = true;
                        tracing::warn!(path = %path.display(), %error,
                            "spool filesystem is full; sources wait until acked segments or an operator free space");
                    }
                    // Acks free space (and wake us); an operator may free it too: look again soon.
                    let _ = tokio::time::timeout(DISK_FULL_RETRY, notified).await;
                }
            }
        }
    }

    /// Writes `payloads` at the end of the current segment. On failure, reports how many were
    /// written and leaves the segment ending on a whole record (or on buffered bytes that
    /// continue one), so that a retry appends right after the last whole record.
    fn write_locked<P: AsRef<[u8]>>(
        &self,
        st: &mut State,
        payloads: &[P],
    ) -> Result<u64, WriteFailed> {
        let sh = &*self.shared;
        let time = now_ms();
        for (written, p) in payloads.iter().enumerate() {
            let failed = |error| WriteFailed { written, error };
            if st.file_len >= sh.segment_bytes {
                // The old segment must be durable before records in the new one can be.
                let old = st.file_path.clone();
                st.file.flush().map_err(io_err(&old)).map_err(failed)?;
                st.file
                    .get_ref()
                    .sync_data()
                    .map_err(io_err(&old))
                    .map_err(failed)?;
                let (f, path) = create_segment(&sh.dir, st.next_seq).map_err(failed)?;
                st.file = BufWriter::with_capacity(256 << 10, f);
                st.segments.insert(st.next_seq, path.clone());
                st.file_path = path;
                st.file_len = format::SEGMENT_HEADER_LEN;
            }
            let mut buf = std::mem::take(&mut st.scratch);
            buf.clear();
            format::encode_record(&mut buf, st.next_seq, time, p.as_ref());
            let res = st.file.write_all(&buf);
            let n = buf.len() as u64;
            st.scratch = buf;
            if let Err(e) = res {
                let path = st.file_path.clone();
                cut_torn_write(st);
                return Err(failed(io_err(&path)(e)));
            }
            st.file_len += n;
            st.written_bytes += n;
            if st.oldest_pending_ms.is_none() {
                st.oldest_pending_ms = Some(time);
            }
            st.next_seq += 1;
        }
        Ok(st.next_seq - 1)
    }

    /// A new reader from the first unacked record, for a publisher restarted after its reader
    /// was lost with it. Only one reader may be in use at a time (acks assume one).
    pub fn reader(&self) -> SpoolReader {
        let st = self.shared.lock();
        SpoolReader {
            shared: self.shared.clone(),
            durable_rx: self.durable_rx.clone(),
            next_seq: st.acked_seq + 1,
            cur: None,
            handed: VecDeque::new(),
            read_bytes: st.acked_bytes,
        }
    }

    /// Watches the highest durable seq.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable_rx.clone()
    }

    /// Waits until every record up to `seq` is fsynced.
    pub async fn wait_durable(&self, seq: u64) {
        let mut rx = self.durable_rx.clone();
        // The sender lives in `Shared`, which `self` keeps alive, so this cannot fail.
        let _ = rx.wait_for(|d| *d >= seq).await;
    }

    /// Flushes and fsyncs now (e.g. at shutdown); returns the durable seq. Blocking I/O.
    pub fn sync(&self) -> Result<u64, SpoolError> {
        self.shared.sync()
    }

    pub fn stats(&self) -> SpoolStats {
        stats(&self.shared)
    }
}

fn stats(sh: &Shared) -> SpoolStats {
    let st = sh.lock();
    SpoolStats {
        pending_records: (st.next_seq - 1).saturating_sub(st.acked_seq),
        pending_bytes: st.written_bytes - st.acked_bytes,
        oldest_pending_ms: if st.next_seq - 1 > st.acked_seq {
            st.oldest_pending_ms
        } else {
            None
        },
        full_waits: sh.full_waits.load(Ordering::Relaxed),
        full: st.full_warned || st.disk_full,
        sync_failure: sh
            .sync_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        last_seq: st.next_seq - 1,
        durable_seq: *sh.durable_tx.borrow(),
        acked_seq: st.acked_seq,
        segments: st.segments.len(),
    }
}

impl SpoolReader {
    /// The next durable record after the acked position (or after the last one handed out).
    /// Cancel-safe: nothing moves until a record is returned.
    pub async fn next(&mut self) -> Result<Record, SpoolError> {
        loop {
            if let Some(rec) = self.try_next()? {
                return Ok(rec);
            }
            // `changed` fails only if the sender is gone, and `self.shared` holds it.
            let _ = self.durable_rx.changed().await;
        }
    }

    /// The next durable record if there is one now.
    pub fn try_next(&mut self) -> Result<Option<Record>, SpoolError> {
        loop {
            let durable = *self.durable_rx.borrow_and_update();
            if self.next_seq > durable {
                return Ok(None);
            }
            if self.cur.is_none() {
                let found = {
                    let st = self.shared.lock();
                    st.segments
                        .range(..=self.next_seq)
                        .next_back()
                        .or_else(|| st.segments.range(self.next_seq..).next())
                        .map(|(f, p)| (*f, p.clone()))
                };
                let Some((first, path)) = found else {
                    return Ok(None);
                };
                let mut f = File::open(&path).map_err(io_err(&path))?;
                f.seek(SeekFrom::Start(format::SEGMENT_HEADER_LEN))
                    .map_err(io_err(&path))?;
                self.cur = Some((
                    first,
                    path,
                    BufReader::with_capacity(256 << 10, f),
                    format::SEGMENT_HEADER_LEN,
                ));
            }
            let Some((first, path, r, offset)) = self.cur.as_mut() else {
                return Ok(None);
            };
            // Asked only for a record over the usual limit (see `format::MAX_RECORD_LEN`).
            let at = *offset + format::RECORD_HEADER_LEN as u64;
            let available =
                |r: &BufReader<File>| Ok(r.get_ref().metadata()?.len().saturating_sub(at));
            match format::read_record(r, available).map_err(io_err(path))? {
                format::ReadOutcome::Record(rec, total) => {
                    *offset += total;
                    if rec.seq < self.next_seq {
                        continue;
                    }
                    self.next_seq = rec.seq + 1;
                    self.read_bytes += total;
                    self.handed
                        .push_back((rec.seq, self.read_bytes, rec.time_ms));
                    return Ok(Some(Record {
                        seq: rec.seq,
                        time_ms: rec.time_ms,
                        payload: rec.payload,
                    }));
                }
                format::ReadOutcome::End => {
                    let first = *first;
                    let later = {
                        let st = self.shared.lock();
                        st.segments.range(first + 1..).next().map(|(f, _)| *f)
                    };
                    match later {
                        Some(next_first) => {
                            self.next_seq = self.next_seq.max(next_first);
                            self.cur = None;
                        }
                        None => return Ok(None),
                    }
                }
                format::ReadOutcome::Bad(e) => {
                    return Err(SpoolError::Corrupt {
                        path: path.clone(),
                        offset: *offset,
                        seq: self.next_seq,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// Makes the next `next()` start again from the first unacked record (after a failed
    /// publish: re-send in order).
    pub fn rewind(&mut self) {
        let st = self.shared.lock();
        self.next_seq = st.acked_seq + 1;
        self.read_bytes = st.acked_bytes;
        self.handed.clear();
        self.cur = None;
    }

    /// Marks every record up to `seq` as confirmed. Only records already handed out count;
    /// the caller acks in order. The ack file is written by the sync thread.
    pub fn ack(&mut self, seq: u64) {
        let mut last = None;
        while let Some(&(s, bytes, _)) = self.handed.front() {
            if s > seq {
                break;
            }
            last = Some((s, bytes));
            self.handed.pop_front();
        }
        let Some((s, bytes)) = last else { return };
        {
            let mut st = self.shared.lock();
            st.acked_seq = s;
            st.acked_bytes = bytes;
            st.oldest_pending_ms = self.handed.front().map(|h| h.2);
        }
        self.shared.space.notify_waiters();
        if self.shared.sync_now {
            self.shared.wake_syncer();
        }
    }

    /// The highest acked seq.
    pub fn acked(&self) -> u64 {
        self.shared.lock().acked_seq
    }

    /// Writes the ack file now (e.g. at shutdown). Blocking I/O.
    pub fn persist(&self) -> Result<(), SpoolError> {
        self.shared.persist_ack()
    }

    pub fn stats(&self) -> SpoolStats {
        stats(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 4096,
            sync_interval_ms: 5,
        }
    }

    #[tokio::test]
    async fn append_read_ack_across_segments_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        {
            let (w, mut r, rep) = open(&cfg(&dir)).unwrap();
            assert_eq!(rep.next_seq, 1);
            for i in 0..100u32 {
                let seq = w
                    .append(format!("payload-{i}-{}", "x".repeat(100)).as_bytes())
                    .await
                    .unwrap();
                assert_eq!(seq, u64::from(i) + 1);
            }
            w.wait_durable(100).await;
            for i in 1..=60u64 {
                let rec = r.next().await.unwrap();
                assert_eq!(rec.seq, i);
            }
            r.ack(40);
            r.rewind();
            assert_eq!(r.next().await.unwrap().seq, 41);
            r.persist().unwrap();
            assert!(w.stats().segments < 5, "acked segments deleted");
            assert_eq!(w.stats().pending_records, 60);
        }
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // The sync thread may still hold the lock for an instant after the handles drop.
        std::thread::sleep(Duration::from_millis(50));
        let (_w, mut r, rep) = open(&cfg(&dir)).unwrap();
        assert_eq!(rep.acked_seq, 40);
        assert_eq!(rep.pending, 60);
        assert!(rep.cuts.is_empty());
        let rec = r.next().await.unwrap();
        assert_eq!(rec.seq, 41);
        assert!(rec.payload.starts_with(b"payload-40-"));
    }

    #[tokio::test]
    async fn second_open_is_refused_while_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = open(&cfg(tmp.path())).unwrap();
        assert!(matches!(open(&cfg(tmp.path())), Err(SpoolError::Locked(_))));
    }

    /// Regression: a flipped byte in the middle of a segment made recovery cut that record and
    /// every record after it in the segment, although they were intact.
    #[tokio::test]
    async fn recovery_keeps_the_whole_records_after_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        {
            let (w, _r, _) = open(&cfg(&dir)).unwrap();
            for i in 0..60u32 {
                w.append(format!("payload-{i:02}-{}", "x".repeat(200)).as_bytes())
                    .await
                    .unwrap();
            }
            w.wait_durable(60).await;
        }
        std::thread::sleep(Duration::from_millis(50));
        let segs: Vec<PathBuf> = list_segments(&dir).unwrap().into_values().collect();
        assert!(segs.len() >= 4, "{segs:?}");
        // Segment header 24 bytes, then records of a 24-byte header and a 211-byte payload.
        let rec_len = 24 + 211;
        let hit = |seg: &Path, nth: usize| {
            let mut b = fs::read(seg).unwrap();
            b[24 + nth * rec_len + 100] ^= 0x55;
            fs::write(seg, &b).unwrap();
        };
        hit(&segs[1], 2); // a middle segment
        hit(&segs[segs.len() - 1], 0); // the last one, first record
        let (_w, mut r, report) = open(&cfg(&dir)).unwrap();
        assert_eq!(report.cuts.len(), 2, "{report:?}");
        assert_eq!(report.cuts[0].offset, 24 + 2 * rec_len as u64);
        assert_eq!(report.cuts[0].bytes, rec_len as u64);
        assert_eq!(report.pending, 58);
        let mut seqs = Vec::new();
        while let Some(rec) = r.try_next().unwrap() {
            assert!(
                rec.payload
                    .starts_with(format!("payload-{:02}-", rec.seq - 1).as_bytes())
            );
            seqs.push(rec.seq);
        }
        assert_eq!(seqs.len(), 58, "{seqs:?}");
        assert!(segs[1].with_extension("log.corrupt").exists());
        drop((_w, r));
        std::thread::sleep(Duration::from_millis(50));
        // The salvaged segments (with their seq gaps) read back clean.
        let (_w, _r, again) = open(&cfg(&dir)).unwrap();
        assert!(again.cuts.is_empty(), "{again:?}");
        assert_eq!(again.pending, 58);
    }

    /// Regression: recovery took a record over 16 MiB (written before the writer refused them)
    /// for damage and cut it, so the IEM was gone even for `iemctl replay`. A record that passes
    /// its checksum is kept whatever its length, and the writer refuses such a record now.
    #[tokio::test]
    async fn recovery_keeps_a_long_record_and_the_writer_refuses_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let long = vec![b'x'; format::MAX_RECORD_LEN as usize + 100];
        {
            let (w, _r, _) = open(&cfg(&dir)).unwrap();
            w.append(b"before").await.unwrap();
            assert!(matches!(
                w.append(&long).await,
                Err(SpoolError::TooLarge { .. })
            ));
            w.wait_durable(1).await;
        }
        std::thread::sleep(Duration::from_millis(50));
        // As an older writer left it: the long record, then one more, at the end of the segment.
        let seg = list_segments(&dir).unwrap().into_values().next().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        format::encode_record(&mut bytes, 2, 7, &long);
        format::encode_record(&mut bytes, 3, 8, b"after");
        fs::write(&seg, &bytes).unwrap();
        let (_w, mut r, report) = open(&cfg(&dir)).unwrap();
        assert!(report.cuts.is_empty(), "{report:?}");
        assert_eq!((report.pending, report.next_seq), (3, 4));
        let payloads: Vec<usize> = std::iter::from_fn(|| r.try_next().unwrap())
            .map(|rec| rec.payload.len())
            .collect();
        assert_eq!(payloads, [6, long.len(), 5]);
    }

    /// A tmpfs of `size` mounted on `dir` for the test's lifetime; `None` (and a loud skip) where
    /// mounting is not permitted.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
            fs::create_dir_all(dir).unwrap();
            let ok = std::process::Command::new("mount")
                // mode=0700: a spool directory others can write is refused (statefile).
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!(
                    "!!!!!!!! SKIPPED: cannot mount a tmpfs (not root?); disk-full not tested !!!!!!!!"
                );
                return None;
            }
            Some(Tmpfs(dir.to_path_buf()))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    /// Regression: a full filesystem (ENOSPC) made `append_batch` fail, which stopped the
    /// pipeline, and a record larger than the write buffer could be left half-written in the
    /// middle of the segment. Now appends wait until acks free space, and nothing is torn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_full_waits_for_space_and_tears_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let Some(_mount) = Tmpfs::mount(&dir, "1m") else {
            return;
        };
        let config = SpoolConfig {
            dir: dir.clone(),
            max_bytes: 64 << 20,
            segment_bytes: 64 << 10,
            sync_interval_ms: 5,
        };
        // Small records, and some larger than the 256 KiB write buffer (written around it).
        let payload = |i: usize| {
            let len = if i % 7 == 3 { 300 << 10 } else { 2000 };
            let mut p = format!("rec-{i}-").into_bytes();
            p.resize(len, b'a' + (i % 26) as u8);
            p
        };
        let n = 40;
        let (w, mut r, _) = open(&config).unwrap();
        let writer = {
            let w = w.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    w.append_batch(&[payload(i)]).await.unwrap();
                }
            })
        };
        // 40 records of about 3.5 MB in all cannot fit in 1 MiB: the writer must be waiting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!writer.is_finished(), "the writer did not wait for space");
        let blocked_at = w.stats().last_seq;
        assert!(blocked_at < n as u64, "{blocked_at}");
        // Consume and ack as a publisher would: that frees segments, and the writer resumes.
        for i in 0..n {
            let rec = tokio::time::timeout(Duration::from_secs(20), r.next())
                .await
                .expect("the writer resumed")
                .unwrap();
            assert_eq!(rec.seq, i as u64 + 1);
            assert_eq!(rec.payload, payload(i), "record {}", rec.seq);
            r.ack(rec.seq);
        }
        writer.await.unwrap();
        drop((w, r));
        std::thread::sleep(Duration::from_millis(50));
        let (_w, _r, report) = open(&config).unwrap();
        assert!(report.cuts.is_empty(), "{report:?}");
        assert_eq!(report.next_seq, n as u64 + 1);
    }

    /// Regression: every open started a new segment, so a spool on a full disk could not open
    /// (ENOSPC) and so could never drain. Now an open appends to the last segment.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopening_appends_to_the_last_segment_even_on_a_full_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let Some(_mount) = Tmpfs::mount(&dir, "256k") else {
            return;
        };
        let config = SpoolConfig {
            dir: dir.clone(),
            max_bytes: 64 << 20,
            segment_bytes: 1 << 20,
            sync_interval_ms: 5,
        };
        {
            let (w, _r, _) = open(&config).unwrap();
            w.append(b"first").await.unwrap();
            w.wait_durable(1).await;
        }
        std::thread::sleep(Duration::from_millis(50));
        // Fill the rest of the filesystem.
        let filler = dir.join("filler");
        let mut f = File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
        drop(f);
        let segments = || {
            fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("seg-")
                })
                .count()
        };
        assert_eq!(segments(), 1);
        let (w, mut r, report) = open(&config).expect("a spool on a full disk opens");
        assert_eq!((report.next_seq, segments()), (2, 1));
        assert_eq!(r.next().await.unwrap().payload, b"first");
        // Space comes back: the next record goes into the same segment, after the first.
        fs::remove_file(&filler).unwrap();
        assert_eq!(w.append(b"second").await.unwrap(), 2);
        w.wait_durable(2).await;
        assert_eq!(r.next().await.unwrap().payload, b"second");
        assert_eq!(segments(), 1);
    }
}
