//! A read-only view of a spool for `iemctl replay`: every record of every segment with its
//! state, and every damaged region with its segment and offset. Takes no lock and writes
//! nothing, so it works while the agent runs (the end of the last segment may then be a record
//! still being written, reported as incomplete) or is stopped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::SpoolError;
use super::cursor::{SegmentCursor, Step};
use super::files::{list_segments, read_ack};

/// Whether the broker has confirmed a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    Pending,
    Acked,
}

/// One thing found while walking the segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Record {
        segment: PathBuf,
        offset: u64,
        seq: u64,
        time_ms: i64,
        state: RecordState,
        payload: Vec<u8>,
    },
    /// Bytes that are not valid records, from `offset`, `len` bytes long.
    Corrupt {
        segment: PathBuf,
        offset: u64,
        len: u64,
        reason: String,
    },
}

/// Iterates the entries of a spool directory in seq order.
pub struct Inspector {
    acked: u64,
    segments: VecDeque<PathBuf>,
    current: Option<SegmentCursor>,
}

/// Opens `dir` for inspection.
pub fn inspect(dir: &Path) -> Result<Inspector, SpoolError> {
    let acked = read_ack(dir)?;
    let segments = list_segments(dir)?.into_values().collect();
    Ok(Inspector {
        acked,
        segments,
        current: None,
    })
}

/// Opens `dir` for inspection of what may follow seq `after`: the segments that hold only
/// records up to it (the next segment starts at or before `after + 1`) are left unread. Used at
/// start to find the alerts spooled after the last recorded position, without reading a large
/// backlog twice.
pub(crate) fn inspect_after(dir: &Path, after: u64) -> Result<Inspector, SpoolError> {
    let acked = read_ack(dir)?;
    let all = list_segments(dir)?;
    let firsts: Vec<u64> = all.keys().copied().collect();
    let segments = all
        .into_values()
        .enumerate()
        .filter(|(i, _)| firsts.get(i + 1).is_none_or(|next| *next > after + 1))
        .map(|(_, path)| path)
        .collect();
    Ok(Inspector {
        acked,
        segments,
        current: None,
    })
}

impl Inspector {
    /// The next entry, or `None` at the end of the current segment.
    fn next_in_segment(&mut self) -> Result<Option<Entry>, SpoolError> {
        let Some(cursor) = self.current.as_mut() else {
            return Ok(None);
        };
        let segment = cursor.path().to_path_buf();
        Ok(match cursor.next()? {
            Step::Record { offset, record, .. } => Some(Entry::Record {
                segment,
                offset,
                seq: record.seq,
                time_ms: record.time_ms,
                state: if record.seq <= self.acked {
                    RecordState::Acked
                } else {
                    RecordState::Pending
                },
                payload: record.payload,
            }),
            Step::Damaged { offset, damage } => Some(Entry::Corrupt {
                segment,
                offset,
                // Carry on where the next whole record in order starts.
                len: cursor.resync()?,
                reason: damage.to_string(),
            }),
            Step::End => None,
        })
    }
}

impl Iterator for Inspector {
    type Item = Result<Entry, SpoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let path = self.segments.pop_front()?;
                match SegmentCursor::open(&path) {
                    Ok(Ok(cursor)) => self.current = Some(cursor),
                    Ok(Err(bad)) => {
                        return Some(Ok(Entry::Corrupt {
                            segment: path,
                            offset: 0,
                            len: bad.len,
                            reason: bad.reason.to_string(),
                        }));
                    }
                    // Deleted by the agent after being acked since we listed it.
                    Err(SpoolError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            match self.next_in_segment() {
                Ok(Some(entry)) => return Some(Ok(entry)),
                Ok(None) => self.current = None,
                Err(e) => {
                    // Not read again: the walk goes on with the next segment.
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spool::SpoolConfig;
    use std::fs;

    /// `inspect_after` leaves out the segments holding only records up to the seq, and no
    /// record after it.
    #[tokio::test]
    async fn inspect_after_skips_segments_before_the_seq() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig {
            dir: tmp.path().to_path_buf(),
            sync_interval_ms: 1,
            segment_bytes: 4096,
            ..SpoolConfig::default()
        };
        let (w, _r, _) = crate::spool::open(&cfg).unwrap();
        for i in 0..100 {
            w.append(format!("{i:0>200}").as_bytes()).await.unwrap();
        }
        w.wait_durable(100).await;
        let seqs = |after| -> Vec<u64> {
            inspect_after(tmp.path(), after)
                .unwrap()
                .filter_map(|e| match e.unwrap() {
                    Entry::Record { seq, .. } => Some(seq),
                    Entry::Corrupt { .. } => None,
                })
                .collect()
        };
        assert!(list_segments(tmp.path()).unwrap().len() > 3);
        assert_eq!(seqs(0), (1..=100).collect::<Vec<_>>());
        let tail = seqs(60);
        assert!(tail.first().is_some_and(|s| *s <= 61), "{tail:?}");
        assert!(tail.len() < 60, "earlier segments were read: {tail:?}");
        assert_eq!(tail.last(), Some(&100));
        // Past the end: only the last segment is read.
        let last = seqs(100);
        assert!(last.len() < 20 && last.last() == Some(&100), "{last:?}");
    }

    #[tokio::test]
    async fn reports_states_and_carries_on_after_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig {
            dir: tmp.path().to_path_buf(),
            sync_interval_ms: 1,
            ..SpoolConfig::default()
        };
        let (w, mut r, _) = crate::spool::open(&cfg).unwrap();
        for i in 0..5 {
            w.append(format!("rec{i}").as_bytes()).await.unwrap();
        }
        w.wait_durable(5).await;
        r.next().await.unwrap();
        r.next().await.unwrap();
        r.ack(2);
        r.persist().unwrap();
        // Flip a payload byte of record 3 (header 24 + 3 records of 24 + 4 bytes before it).
        let seg = list_segments(tmp.path())
            .unwrap()
            .into_values()
            .next()
            .unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        let off = 24 + 2 * 28 + 24;
        bytes[off] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        let entries: Vec<Entry> = inspect(tmp.path()).unwrap().map(|e| e.unwrap()).collect();
        let summary: Vec<String> = entries
            .iter()
            .map(|e| match e {
                Entry::Record { seq, state, .. } => format!("{seq}:{state:?}"),
                Entry::Corrupt { offset, len, .. } => format!("corrupt@{offset}+{len}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "1:Acked",
                "2:Acked",
                "corrupt@80+28",
                "4:Pending",
                "5:Pending"
            ]
        );
    }
}
