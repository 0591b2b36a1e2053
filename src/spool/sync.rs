//! Group commit: flushing and fsyncing what was appended, publishing the durable seq, writing
//! the ack file and deleting fully acked segments; and the thread that does it.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::files::{is_disk_full, write_ack, write_hot_ack};
use super::shared::Shared;
use super::{SpoolError, io_err};

/// How often the ack file itself is written while the acked position moves; in between, the
/// sync rounds write only its hot copy (see the module doc of `spool`).
pub(super) const ACK_PERSIST_EVERY: Duration = Duration::from_secs(1);

impl Shared {
    /// Flushes and fsyncs everything appended so far, then publishes the durable seq; persists
    /// the ack position (the ack file itself when `durably`, or when it is due) and deletes fully
    /// acked segments, even when the flush failed (a full disk gets its space back only that
    /// way).
    pub(super) fn sync(&self, durably: bool) -> Result<u64, SpoolError> {
        let synced = self.flush_and_sync();
        let acked = self.persist_ack(durably);
        let last = synced?;
        acked?;
        Ok(last)
    }

    fn flush_and_sync(&self) -> Result<u64, SpoolError> {
        let (fd, path, last) = {
            let mut st = self.lock();
            let last = st.next_seq - 1;
            if last <= *self.durable_tx.borrow() {
                return Ok(last);
            }
            let path = st.file_path.clone();
            st.file.flush().map_err(io_err(&path))?;
            let fd = st.file.get_ref().try_clone().map_err(io_err(&path))?;
            (fd, path, last)
        };
        fd.sync_data().map_err(io_err(&path))?;
        self.durable_tx.send_replace(last);
        Ok(last)
    }

    /// Persists the acked position if it moved, then deletes fully acked segments.
    ///
    /// The ack file (tmp, fsync, rename, fsync the directory) is written when `durably`, when
    /// a segment is fully acked (a segment is deleted only once the ack file says so), or once
    /// [`ACK_PERSIST_EVERY`] has passed since its last write; otherwise only the hot copy is
    /// written (one `pwrite`, no fsync): a SIGKILL loses neither, a power loss at worst the hot
    /// copy, which costs duplicates, never an alert.
    pub(super) fn persist_ack(&self, durably: bool) -> Result<(), SpoolError> {
        let mut files = self.ack_file.lock().unwrap_or_else(|p| p.into_inner());
        let (acked, persisted, segment_done) = {
            let st = self.lock();
            let second = st.segments.keys().nth(1).copied();
            (
                st.acked_seq,
                st.persisted_ack,
                second.is_some_and(|s| s <= st.acked_seq + 1),
            )
        };
        let due = durably
            || segment_done
            || files
                .written_at
                .is_none_or(|at| at.elapsed() >= ACK_PERSIST_EVERY);
        let mut written = Ok(());
        // The position segments may be deleted up to.
        let mut covered = persisted;
        if acked != persisted && due {
            written = write_ack(&self.dir, acked);
            files.written_at = Some(Instant::now());
            match &written {
                Ok(()) => {}
                // Deleting acked segments is what frees the space: go on (see the invariants).
                Err(SpoolError::Io { source, .. }) if is_disk_full(source) => {}
                Err(_) => return written,
            }
            covered = acked;
        } else if acked != persisted && acked != files.hot_acked {
            let files = &mut *files;
            match write_hot_ack(&self.dir, &mut files.hot, acked) {
                Ok(()) => {
                    files.hot_acked = acked;
                    if std::mem::take(&mut files.hot_failing) {
                        tracing::info!("hot copy of the spool's ack file written again");
                    }
                }
                Err(err) if !files.hot_failing => {
                    files.hot_failing = true;
                    files.hot = None;
                    tracing::warn!(%err, "cannot write the hot copy of the spool's ack file; \
                        after a crash up to a second of alerts may be published twice (never \
                        lost); check the spool directory");
                }
                Err(_) => files.hot = None,
            }
        }
        let doomed: Vec<PathBuf> = {
            let mut st = self.lock();
            if written.is_ok() {
                st.persisted_ack = covered;
            }
            let firsts: Vec<u64> = st.segments.keys().copied().collect();
            let mut doomed = Vec::new();
            // A segment is fully acked when the next one starts at or below covered + 1 (only
            // the written position counts); the current segment is never deleted.
            for pair in firsts.windows(2) {
                if pair[1] <= covered + 1
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

/// The group-commit thread: syncs every `interval` (or as soon as woken when the interval is
/// zero) until every handle to the spool is gone.
///
/// It supervises itself: a failed sync is logged once and retried at the next round, a panic
/// in a sync is caught, logged and the loop goes on after a backoff (1 s doubling to 60 s).
/// Either way `SpoolStats::sync_failure` says why until a sync succeeds (the pipeline shows it
/// in `/health`): nothing becomes durable meanwhile, so no checkpoint moves and nothing is lost.
pub(super) fn spawn_syncer(
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
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.sync(false)));
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
