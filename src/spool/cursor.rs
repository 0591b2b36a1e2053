//! [`SegmentCursor`]: the one walk over the records of a segment, for everyone who walks them:
//! recovery, the reader and the inspector (`iemctl replay`).
//!
//! What it promises, whoever walks:
//!
//! - `next` returns the record at the current offset only if it is whole, passes its checksum
//!   and is in order: its seq is at least the header's first seq (for the first record), or
//!   above the seq of the record before it (gaps are where a recovery dropped damage). Anything
//!   else is [`Step::Damaged`] at that offset, and the cursor stays there: a walk never steps
//!   over bytes without saying so.
//! - `resync` moves from a damaged offset to the next offset where such a record starts, or to
//!   the end of the file, and says how many bytes it skipped. A record that passes its checksum
//!   and is in order is never skipped, whatever its length (see `format::MAX_RECORD_LEN`) and
//!   however far its seq jumps.
//! - [`Step::End`] is a clean end: the file ends where the last record does. The writer's
//!   current segment may grow after that; a later `next` returns the records added.
//! - It only reads.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{self, HeaderError, RawRecord, ReadOutcome, RecordError};
use super::{SpoolError, io_err};

/// Read buffer: large enough that a walk costs few system calls.
const BUFFER: usize = 256 << 10;

/// A position in one segment file, between records.
pub(super) struct SegmentCursor {
    path: PathBuf,
    file: BufReader<File>,
    first_seq: u64,
    /// Where the next record starts.
    offset: u64,
    /// The lowest seq the next record may carry.
    min_seq: u64,
}

/// What is at the cursor.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A record, `len` framed bytes from `offset`; the cursor is now after it.
    Record {
        offset: u64,
        len: u64,
        record: RawRecord,
    },
    /// Bytes at `offset` that are not the next record; the cursor stays at `offset`.
    Damaged { offset: u64, damage: Damage },
    /// The file ends after the last record.
    End,
}

/// Why the bytes at an offset are not the next record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Damage {
    Record(RecordError),
    /// A whole record whose seq is not above the one before it.
    OutOfOrder {
        seq: u64,
        expected: u64,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Record(e) => e.fmt(f),
            Damage::OutOfOrder { seq, expected } => {
                write!(f, "seq {seq} where {expected} was expected")
            }
        }
    }
}

/// A segment whose header is not valid: nothing in it can be placed in order.
#[derive(Debug)]
pub(super) struct BadHeader {
    /// The file's length.
    pub(crate) len: u64,
    pub(crate) reason: HeaderError,
}

impl SegmentCursor {
    /// Opens `path` (never through a link planted at a segment's name) and reads its header;
    /// the cursor is then at the first record.
    pub(crate) fn open(path: &Path) -> Result<Result<SegmentCursor, BadHeader>, SpoolError> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(io_err(path))?;
        let mut file = BufReader::with_capacity(BUFFER, f);
        let mut header = Vec::with_capacity(format::SEGMENT_HEADER_LEN as usize);
        (&mut file)
            .take(format::SEGMENT_HEADER_LEN)
            .read_to_end(&mut header)
            .map_err(io_err(path))?;
        let first_seq = match format::parse_segment_header(&header) {
            Ok(first_seq) => first_seq,
            Err(reason) => {
                let len = file.get_ref().metadata().map_err(io_err(path))?.len();
                return Ok(Err(BadHeader { len, reason }));
            }
        };
        Ok(Ok(SegmentCursor {
            path: path.to_path_buf(),
            file,
            first_seq,
            offset: format::SEGMENT_HEADER_LEN,
            min_seq: first_seq,
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The first seq the header declares.
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Where the next record starts.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads what is at the cursor.
    pub(crate) fn next(&mut self) -> Result<Step, SpoolError> {
        // Asked only for a record over the usual limit (see `format::MAX_RECORD_LEN`).
        let at = self.offset + format::RECORD_HEADER_LEN as u64;
        let available = |r: &BufReader<File>| Ok(r.get_ref().metadata()?.len().saturating_sub(at));
        let outcome = format::read_record(&mut self.file, available).map_err(io_err(&self.path))?;
        let damage = match outcome {
            ReadOutcome::End => return Ok(Step::End),
            ReadOutcome::Record(record, len) if record.seq >= self.min_seq => {
                let offset = self.offset;
                self.offset += len;
                self.min_seq = record.seq.saturating_add(1);
                return Ok(Step::Record {
                    offset,
                    len,
                    record,
                });
            }
            ReadOutcome::Record(record, _) => Damage::OutOfOrder {
                seq: record.seq,
                expected: self.min_seq,
            },
            ReadOutcome::Bad(e) => Damage::Record(e),
        };
        self.seek(self.offset)?;
        Ok(Step::Damaged {
            offset: self.offset,
            damage,
        })
    }

    /// Moves past damage at the cursor to the next offset where a whole record with a valid
    /// checksum and a seq in order starts, or to the end of the file. Returns how many bytes it
    /// skipped. Reads the rest of the file into memory (damage is rare; a segment is bounded).
    pub(crate) fn resync(&mut self) -> Result<u64, SpoolError> {
        self.seek(self.offset)?;
        let mut rest = Vec::new();
        self.file
            .read_to_end(&mut rest)
            .map_err(io_err(&self.path))?;
        let skip = (1..rest.len())
            .find(|&p| format::whole_record_at(&rest[p..], self.min_seq).is_some())
            .unwrap_or(rest.len()) as u64;
        self.seek(self.offset + skip)?;
        Ok(skip)
    }

    fn seek(&mut self, offset: u64) -> Result<(), SpoolError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(io_err(&self.path))?;
        self.offset = offset;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HEADER: u64 = format::SEGMENT_HEADER_LEN;

    /// A segment file starting at `first` holding `records` (seq, payload), and each record's
    /// (offset, len).
    fn segment(
        dir: &Path,
        first: u64,
        records: &[(u64, &[u8])],
    ) -> (PathBuf, Vec<u8>, Vec<(u64, u64)>) {
        let mut bytes = format::segment_header(first).to_vec();
        let mut at = Vec::new();
        for (seq, payload) in records {
            let start = bytes.len() as u64;
            format::encode_record(&mut bytes, *seq, *seq as i64 * 10, payload);
            at.push((start, bytes.len() as u64 - start));
        }
        let path = dir.join("seg.log");
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes, at)
    }

    fn open(path: &Path) -> SegmentCursor {
        SegmentCursor::open(path).unwrap().unwrap()
    }

    /// Walks to the end, resyncing after damage: what a walker sees, in short.
    fn walk(path: &Path) -> Vec<String> {
        let mut c = open(path);
        let mut out = Vec::new();
        loop {
            match c.next().unwrap() {
                Step::Record { offset, record, .. } => out.push(format!("{}@{offset}", record.seq)),
                Step::Damaged { offset, damage } => {
                    let skipped = c.resync().unwrap();
                    out.push(format!("damaged@{offset}+{skipped}: {damage}"));
                }
                Step::End => return out,
            }
        }
    }

    #[test]
    fn walks_good_records_and_sees_the_ones_appended_after_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _, at) = segment(tmp.path(), 7, &[(7, b"seven"), (8, b""), (9, b"nine")]);
        let mut c = open(&path);
        assert_eq!((c.first_seq(), c.offset()), (7, HEADER));
        for (seq, payload) in [(7, &b"seven"[..]), (8, b""), (9, b"nine")] {
            let (offset, len) = at[(seq - 7) as usize];
            let record = RawRecord {
                seq,
                time_ms: seq as i64 * 10,
                payload: payload.to_vec(),
            };
            assert_eq!(
                c.next().unwrap(),
                Step::Record {
                    offset,
                    len,
                    record
                }
            );
            assert_eq!(c.offset(), offset + len);
        }
        assert_eq!(c.next().unwrap(), Step::End);
        assert_eq!(c.next().unwrap(), Step::End);
        // The writer appends to the segment: the same cursor goes on.
        let mut more = Vec::new();
        format::encode_record(&mut more, 12, 0, b"after a gap");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&more).unwrap();
        assert!(matches!(c.next().unwrap(), Step::Record { record, .. } if record.seq == 12));
        assert_eq!(c.next().unwrap(), Step::End);
    }

    #[test]
    fn a_torn_tail_is_damage_to_the_end_of_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, bytes, at) = segment(tmp.path(), 1, &[(1, b"one"), (2, b"two")]);
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let mut c = open(&path);
        assert!(matches!(c.next().unwrap(), Step::Record { .. }));
        let torn = Step::Damaged {
            offset: at[1].0,
            damage: Damage::Record(RecordError::Truncated),
        };
        assert_eq!(c.next().unwrap(), torn);
        // It stays at the damage until told to move.
        assert_eq!(c.next().unwrap(), torn);
        assert_eq!(c.resync().unwrap(), at[1].1 - 2);
        assert_eq!(c.next().unwrap(), Step::End);
        // A header cut short: not even a first seq.
        std::fs::write(&path, &bytes[..10]).unwrap();
        let Err(bad) = SegmentCursor::open(&path).unwrap() else {
            panic!("a header of 10 bytes was taken");
        };
        assert_eq!((bad.len, bad.reason), (10, HeaderError::Short));
    }

    #[test]
    fn checksum_damage_is_skipped_and_the_records_after_it_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let records: [(u64, &[u8]); 4] = [(1, b"one"), (2, b"two"), (3, b"three"), (4, b"four")];
        let (path, mut bytes, at) = segment(tmp.path(), 1, &records);
        bytes[(at[1].0 + at[1].1 - 1) as usize] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            walk(&path),
            [
                format!("1@{}", at[0].0),
                format!("damaged@{}+{}: record checksum mismatch", at[1].0, at[1].1),
                format!("3@{}", at[2].0),
                format!("4@{}", at[3].0),
            ]
        );
    }

    #[test]
    fn a_record_out_of_order_is_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _, at) = segment(tmp.path(), 5, &[(5, b"a"), (5, b"again"), (6, b"b")]);
        assert_eq!(
            walk(&path),
            [
                format!("5@{}", at[0].0),
                format!(
                    "damaged@{}+{}: seq 5 where 6 was expected",
                    at[1].0, at[1].1
                ),
                format!("6@{}", at[2].0),
            ]
        );
    }

    /// Regression (recovery's old salvage loop): after damage, a record whose seq jumped further
    /// than the bytes left could hold records was taken for garbage, although its checksum was
    /// right. A record that passes its checksum and is in order is never discarded: not after
    /// damage, not when longer than the writer allows, not next to a flipped byte anywhere.
    #[test]
    fn a_record_that_passes_its_checksum_is_never_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let long = vec![b'x'; format::MAX_RECORD_LEN as usize + 1];
        let (path, mut bytes, at) = segment(
            tmp.path(),
            1,
            &[(1, b"one"), (2, b"two"), (5000, b"far"), (5001, &long)],
        );
        bytes[at[1].0 as usize + 25] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let seqs: Vec<String> = walk(&path)
            .into_iter()
            .map(|s| s.split('@').next().unwrap().to_owned())
            .collect();
        assert_eq!(seqs, ["1", "damaged", "5000", "5001"]);

        // Any one byte damaged: every record it is not part of is still walked.
        let payloads: Vec<String> = (1..=5).map(|i| format!("{{\"n\":{i}}}")).collect();
        let records: Vec<(u64, &[u8])> = (1..=5u64)
            .zip(&payloads)
            .map(|(s, p)| (s, p.as_bytes()))
            .collect();
        let (path, bytes, at) = segment(tmp.path(), 1, &records);
        for pos in HEADER as usize..bytes.len() {
            let mut hit = bytes.clone();
            hit[pos] ^= 0xff;
            std::fs::write(&path, &hit).unwrap();
            let walked = walk(&path);
            for (i, (offset, len)) in at.iter().enumerate() {
                let touched = (*offset..offset + len).contains(&(pos as u64));
                let seen = walked.contains(&format!("{}@{offset}", i + 1));
                assert_eq!(seen, !touched, "byte {pos} flipped: {walked:?}");
            }
        }
    }
}
