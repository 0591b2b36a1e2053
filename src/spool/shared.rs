//! What the writer, the reader and the sync thread share: the spool's state under one lock, and
//! the signals between them (space freed, records durable, a sync wanted).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, watch};

use super::SpoolStats;
use crate::config::spool::SpoolConfig;

/// The write buffer in front of the current segment.
pub(super) const WRITE_BUFFER: usize = 256 << 10;

pub(super) struct State {
    /// Seq the next append gets.
    pub(crate) next_seq: u64,
    pub(crate) file: BufWriter<File>,
    pub(crate) file_path: PathBuf,
    pub(crate) file_len: u64,
    /// first seq -> path, every segment on disk.
    pub(crate) segments: BTreeMap<u64, PathBuf>,
    /// Framed bytes of every record appended or recovered as pending; with `acked_bytes` gives
    /// the unacked volume the bound applies to.
    pub(crate) written_bytes: u64,
    pub(crate) acked_bytes: u64,
    pub(crate) acked_seq: u64,
    pub(crate) persisted_ack: u64,
    pub(crate) oldest_pending_ms: Option<i64>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) full_warned: bool,
    /// An append waits for the filesystem to have room.
    pub(crate) disk_full: bool,
}

/// Where appends go on from after recovery.
pub(super) struct Appending {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    /// Where the segment's whole records end.
    pub(crate) len: u64,
}

/// The recovered position `open` starts the state from.
pub(super) struct Start {
    pub(crate) segments: BTreeMap<u64, PathBuf>,
    pub(crate) next_seq: u64,
    pub(crate) acked_seq: u64,
    /// The position in the ack file itself (`acked_seq` may come from its hot copy).
    pub(crate) written_ack: u64,
    pub(crate) pending_bytes: u64,
    pub(crate) oldest_pending_ms: Option<i64>,
}

/// What the writers of the ack file and of its hot copy keep between writes.
#[derive(Default)]
pub(super) struct AckFiles {
    /// The hot copy, opened at its first write.
    pub(crate) hot: Option<File>,
    /// The position last written to the hot copy.
    pub(crate) hot_acked: u64,
    /// When the ack file was last written (`None`: not yet by this process).
    pub(crate) written_at: Option<Instant>,
    /// The last write of the hot copy failed (logged once until it works again).
    pub(crate) hot_failing: bool,
}

pub(super) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) state: Mutex<State>,
    /// Woken when acked records free space.
    pub(crate) space: Notify,
    /// Held for a whole `append_batch`, so that a batch interrupted by a full disk still gets
    /// consecutive seqs when it resumes.
    pub(crate) appending: tokio::sync::Mutex<()>,
    pub(crate) durable_tx: watch::Sender<u64>,
    pub(crate) wake: Arc<(Mutex<bool>, Condvar)>,
    pub(crate) full_waits: AtomicU64,
    /// The ack file and its hot copy; the lock serializes their writers (the sync thread and
    /// explicit `persist` calls).
    pub(crate) ack_file: Mutex<AckFiles>,
    /// Why the sync thread's last sync failed or panicked, while it does.
    pub(crate) sync_failure: Mutex<Option<String>>,
    pub(crate) max_bytes: u64,
    pub(crate) segment_bytes: u64,
    pub(crate) sync_now: bool,
    _lock: File,
}

impl Shared {
    /// The shared state of a spool whose `lock` is held, recovered to `start`, appending to
    /// `to`. Every record recovered is durable; the receiver watches the durable seq.
    pub(crate) fn new(
        config: &SpoolConfig,
        lock: File,
        start: Start,
        to: Appending,
    ) -> (Shared, watch::Receiver<u64>) {
        let (durable_tx, durable_rx) = watch::channel(start.next_seq - 1);
        let shared = Shared {
            dir: config.dir.clone(),
            state: Mutex::new(State {
                next_seq: start.next_seq,
                file: BufWriter::with_capacity(WRITE_BUFFER, to.file),
                file_path: to.path,
                file_len: to.len,
                segments: start.segments,
                written_bytes: start.pending_bytes,
                acked_bytes: 0,
                acked_seq: start.acked_seq,
                persisted_ack: start.written_ack,
                oldest_pending_ms: start.oldest_pending_ms,
                scratch: Vec::new(),
                full_warned: false,
                disk_full: false,
            }),
            space: Notify::new(),
            appending: tokio::sync::Mutex::new(()),
            durable_tx,
            wake: Arc::new((Mutex::new(false), Condvar::new())),
            full_waits: AtomicU64::new(0),
            ack_file: Mutex::new(AckFiles::default()),
            sync_failure: Mutex::new(None),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            sync_now: config.sync_interval_ms == 0,
            _lock: lock,
        };
        (shared, durable_rx)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent at record granularity (the
        // only multi-step update is a write, which recovery handles), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wake_syncer(&self) {
        let (m, cv) = &*self.wake;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }

    pub(crate) fn stats(&self) -> SpoolStats {
        let st = self.lock();
        SpoolStats {
            pending_records: (st.next_seq - 1).saturating_sub(st.acked_seq),
            pending_bytes: st.written_bytes - st.acked_bytes,
            oldest_pending_ms: if st.next_seq - 1 > st.acked_seq {
                st.oldest_pending_ms
            } else {
                None
            },
            full_waits: self.full_waits.load(Ordering::Relaxed),
            full: st.full_warned || st.disk_full,
            sync_failure: self
                .sync_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last_seq: st.next_seq - 1,
            durable_seq: *self.durable_tx.borrow(),
            acked_seq: st.acked_seq,
            segments: st.segments.len(),
        }
    }
}
