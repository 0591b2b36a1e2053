//! The reading half, owned by the publisher: the durable records after the acked position, in
//! order, and the acks that free them.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::cursor::{SegmentCursor, Step};
use super::shared::Shared;
use super::{Record, SpoolError};

/// The reading half, owned by the publisher: records after the acked position, in order.
pub struct SpoolReader {
    shared: Arc<Shared>,
    durable_rx: watch::Receiver<u64>,
    next_seq: u64,
    /// The segment being read (its first seq as listed) and the cursor in it.
    segment: Option<(u64, SegmentCursor)>,
    /// Records handed out and not acked: seq, cumulative framed bytes up to its end, time.
    handed: VecDeque<(u64, u64, i64)>,
    read_bytes: u64,
}

impl SpoolReader {
    /// A reader from the first unacked record.
    pub(super) fn new(shared: Arc<Shared>, durable_rx: watch::Receiver<u64>) -> SpoolReader {
        let (next_seq, read_bytes) = {
            let st = shared.lock();
            (st.acked_seq + 1, st.acked_bytes)
        };
        SpoolReader {
            shared,
            durable_rx,
            next_seq,
            segment: None,
            handed: VecDeque::new(),
            read_bytes,
        }
    }

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
    pub(crate) fn try_next(&mut self) -> Result<Option<Record>, SpoolError> {
        loop {
            let durable = *self.durable_rx.borrow_and_update();
            if self.next_seq > durable {
                return Ok(None);
            }
            if self.segment.is_none() {
                let Some(found) = self.open_segment()? else {
                    return Ok(None);
                };
                self.segment = Some(found);
            }
            let Some((first, cursor)) = self.segment.as_mut() else {
                return Ok(None);
            };
            match cursor.next()? {
                Step::Record { len, record, .. } => {
                    if record.seq < self.next_seq {
                        continue;
                    }
                    self.next_seq = record.seq + 1;
                    self.read_bytes += len;
                    self.handed
                        .push_back((record.seq, self.read_bytes, record.time_ms));
                    return Ok(Some(Record {
                        seq: record.seq,
                        time_ms: record.time_ms,
                        payload: record.payload,
                    }));
                }
                Step::End => {
                    let first = *first;
                    let later = {
                        let st = self.shared.lock();
                        st.segments.range(first + 1..).next().map(|(f, _)| *f)
                    };
                    match later {
                        Some(next_first) => {
                            self.next_seq = self.next_seq.max(next_first);
                            self.segment = None;
                        }
                        None => return Ok(None),
                    }
                }
                Step::Damaged { offset, damage } => {
                    return Err(SpoolError::Corrupt {
                        path: cursor.path().to_path_buf(),
                        offset,
                        seq: self.next_seq,
                        reason: damage.to_string(),
                    });
                }
            }
        }
    }

    /// A cursor at the start of the segment that holds `next_seq` (or the first one after it).
    fn open_segment(&self) -> Result<Option<(u64, SegmentCursor)>, SpoolError> {
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
        match SegmentCursor::open(&path)? {
            Ok(cursor) => Ok(Some((first, cursor))),
            Err(bad) => Err(SpoolError::Corrupt {
                path,
                offset: 0,
                seq: self.next_seq,
                reason: bad.reason.to_string(),
            }),
        }
    }

    /// Makes the next `next()` start again from the first unacked record (after a failed
    /// publish: re-send in order).
    pub(crate) fn rewind(&mut self) {
        let st = self.shared.lock();
        self.next_seq = st.acked_seq + 1;
        self.read_bytes = st.acked_bytes;
        self.handed.clear();
        self.segment = None;
    }

    /// Marks every record up to `seq` as confirmed. Only records already handed out count;
    /// the caller acks in order. The ack is written by the sync thread.
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
        // The sync thread writes the ack at its next round; not woken for it: under load the
        // appends wake it often enough, idle it looks every 200 ms.
        self.shared.space.notify_waiters();
    }

    /// Writes the ack file now (e.g. at shutdown). Blocking I/O.
    pub fn persist(&self) -> Result<(), SpoolError> {
        self.shared.persist_ack(true)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use crate::spool::files::{HOT_ACK, read_acks};
    use crate::spool::format::encode_ack;
    use crate::spool::{open, test_config};

    #[tokio::test]
    async fn append_read_ack_across_segments_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        {
            let (w, mut r, rep) = open(&test_config(&dir)).unwrap();
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
        let (_w, mut r, rep) = open(&test_config(&dir)).unwrap();
        assert_eq!(rep.acked_seq, 40);
        assert_eq!(rep.pending, 60);
        assert!(rep.cuts.is_empty());
        let rec = r.next().await.unwrap();
        assert_eq!(rec.seq, 41);
        assert!(rec.payload.starts_with(b"payload-40-"));
    }

    /// The ack file is written at most once a second; the acks between two writes go to its hot
    /// copy, which a crash of the process does not lose. A torn hot copy is ignored.
    #[tokio::test]
    async fn acks_only_in_the_hot_copy_survive_a_crash_and_a_torn_copy_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        {
            let (w, mut r, _) = open(&test_config(&dir)).unwrap();
            for i in 0..10u32 {
                w.append(format!("p{i}").as_bytes()).await.unwrap();
            }
            w.wait_durable(10).await;
            for _ in 0..10 {
                r.next().await.unwrap();
            }
            r.ack(3);
            r.persist().unwrap();
            // Not due again for an hour: the sync rounds write only the hot copy.
            r.shared.ack_file.lock().unwrap().written_at =
                Some(std::time::Instant::now() + Duration::from_secs(3600));
            r.ack(7);
            r.shared.persist_ack(false).unwrap();
            assert_eq!(read_acks(&dir).unwrap(), (3, 7));
            // Dropped without a persist: a crash.
        }
        std::thread::sleep(Duration::from_millis(50));
        {
            let (_w, mut r, rep) = open(&test_config(&dir)).unwrap();
            assert_eq!((rep.acked_seq, rep.pending), (7, 3));
            assert_eq!(r.next().await.unwrap().seq, 8);
            // The open wrote the ack file up to its hot copy.
            assert_eq!(read_acks(&dir).unwrap().0, 7);
        }
        std::thread::sleep(Duration::from_millis(50));
        // A hot copy torn by a power loss: its checksum fails, the ack file counts.
        let mut torn = encode_ack(9);
        torn[20] ^= 1;
        fs::write(dir.join(HOT_ACK), torn).unwrap();
        let (_w, mut r, rep) = open(&test_config(&dir)).unwrap();
        assert_eq!(rep.acked_seq, 7);
        assert_eq!(r.next().await.unwrap().seq, 8);
    }
}
