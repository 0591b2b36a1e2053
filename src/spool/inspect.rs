//! A read-only view of a spool for `iemctl replay`: every record of every segment with its
//! state, and every damaged region with its segment and offset. Takes no lock and writes
//! nothing, so it works while the agent runs (the end of the last segment may then be a record
//! still being written, reported as incomplete) or is stopped.

use std::fs;
use std::path::{Path, PathBuf};

use super::{SpoolError, format, io_err, list_segments, read_ack};

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
    segments: Vec<PathBuf>,
    current: Option<(PathBuf, Vec<u8>, usize)>,
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

impl Inspector {
    /// The acked seq from the ack file.
    pub fn acked(&self) -> u64 {
        self.acked
    }
}

impl Iterator for Inspector {
    type Item = Result<Entry, SpoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                if self.segments.is_empty() {
                    return None;
                }
                let path = self.segments.remove(0);
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    // Deleted by the agent after being acked since we listed it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Some(Err(io_err(&path)(e))),
                };
                if let Err(e) = format::parse_segment_header(&bytes) {
                    let len = bytes.len() as u64;
                    return Some(Ok(Entry::Corrupt {
                        segment: path,
                        offset: 0,
                        len,
                        reason: e.to_string(),
                    }));
                }
                self.current = Some((path, bytes, format::SEGMENT_HEADER_LEN as usize));
            }
            let (path, bytes, pos) = self.current.as_mut()?;
            if *pos >= bytes.len() {
                self.current = None;
                continue;
            }
            let start = *pos;
            if let Some((rec, total)) = format::parse_record(&bytes[start..]) {
                *pos += total as usize;
                let state = if rec.seq <= self.acked {
                    RecordState::Acked
                } else {
                    RecordState::Pending
                };
                return Some(Ok(Entry::Record {
                    segment: path.clone(),
                    offset: start as u64,
                    seq: rec.seq,
                    time_ms: rec.time_ms,
                    state,
                    payload: rec.payload,
                }));
            }
            let reason = match format::read_record_in(&bytes[start..]) {
                Ok(format::ReadOutcome::Bad(e)) => e.to_string(),
                _ => "unreadable record".to_string(),
            };
            // Carry on at the next offset where a whole record with a valid checksum starts.
            let resume = (start + 1..bytes.len())
                .find(|&p| format::parse_record(&bytes[p..]).is_some())
                .unwrap_or(bytes.len());
            *pos = resume;
            return Some(Ok(Entry::Corrupt {
                segment: path.clone(),
                offset: start as u64,
                len: (resume - start) as u64,
                reason,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spool::SpoolConfig;

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
