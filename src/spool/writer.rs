//! The writing half: appends records to the current segment, starting a new segment when it is
//! full, and waits while the spool or its filesystem is full.

use std::collections::BTreeMap;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::files::{create_segment, file_name, is_disk_full};
use super::reader::SpoolReader;
use super::shared::{Appending, Shared, State, WRITE_BUFFER};
use super::{SpoolError, SpoolStats, format, io_err};
use crate::statefile::StateDir;

/// The writing half: cheap to clone, used by every source task.
#[derive(Clone)]
pub struct SpoolWriter {
    shared: Arc<Shared>,
    durable_rx: watch::Receiver<u64>,
}

impl SpoolWriter {
    pub(super) fn new(shared: Arc<Shared>, durable_rx: watch::Receiver<u64>) -> SpoolWriter {
        SpoolWriter { shared, durable_rx }
    }

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
                st.file = BufWriter::with_capacity(WRITE_BUFFER, f);
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
    pub(crate) fn reader(&self) -> SpoolReader {
        SpoolReader::new(self.shared.clone(), self.durable_rx.clone())
    }

    /// Watches the highest durable seq.
    pub(crate) fn durable(&self) -> watch::Receiver<u64> {
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
        self.shared.sync(true)
    }

    pub fn stats(&self) -> SpoolStats {
        self.shared.stats()
    }
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where appends go after recovery: on at the end of the last segment's whole records
/// (`tail`), or in a new segment starting at `next_seq` (added to `segments`) when there is
/// none or it is full. Appending to the last segment, rather than starting a new one at every
/// start, lets a spool on a full disk open at all (and so drain).
pub(super) fn continue_appending(
    state_dir: &StateDir,
    tail: Option<(PathBuf, u64)>,
    next_seq: u64,
    segment_bytes: u64,
    segments: &mut BTreeMap<u64, PathBuf>,
) -> Result<Appending, SpoolError> {
    if let Some((path, len)) = tail.filter(|(_, len)| *len < segment_bytes) {
        let mut file = state_dir
            .open_existing(file_name(&path), true)
            .map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(len)).map_err(io_err(&path))?;
        return Ok(Appending { file, path, len });
    }
    let (file, path) = create_segment(state_dir.path(), next_seq)?;
    segments.insert(next_seq, path.clone());
    Ok(Appending {
        file,
        path,
        len: format::SEGMENT_HEADER_LEN,
    })
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::io::Write;
    use std::path::Path;

    use super::*;
    use crate::config::spool::SpoolConfig;
    use crate::spool::open;

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
