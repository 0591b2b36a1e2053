//! Recovery at `open`: every segment walked with the [`SegmentCursor`], damage cut out and
//! reported, and the position appends and reads go on from.
//!
//! What it keeps and cuts (the invariants in the module documentation):
//! - A segment whose header is not valid is moved aside whole (`<name>.corrupt`).
//! - Damage at the end of the last segment with no whole record after it (a torn tail, the usual
//!   crash) is cut off.
//! - Any other damage is cut out of the segment, which keeps every whole record in order after
//!   it; the original is kept aside as `<name>.corrupt` for `iemctl replay`.
//! - A last segment left without records is deleted (appends start a new one).

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::cursor::{BadHeader, SegmentCursor, Step};
use super::files::{ack_path, aside_path, file_name, list_segments, read_acks};
use super::format::RawRecord;
use super::{SpoolError, io_err};
use crate::statefile::StateDir;

/// A part of a segment that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub segment: PathBuf,
    /// Offset of the first byte cut.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    pub(crate) reason: String,
}

/// What `open` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub(crate) segments: usize,
    /// Complete records kept, acked or not.
    pub records: u64,
    /// Records kept that the broker has not confirmed yet.
    pub pending: u64,
    pub(crate) acked_seq: u64,
    pub(crate) next_seq: u64,
    pub cuts: Vec<Cut>,
}

/// The spool as recovery left it.
pub(super) struct Recovered {
    pub(crate) report: RecoveryReport,
    pub(crate) segments: BTreeMap<u64, PathBuf>,
    /// Framed bytes of the records kept that are not acked.
    pub(crate) pending_bytes: u64,
    pub(crate) oldest_pending_ms: Option<i64>,
    /// The last segment and where its whole records end: appends go on there.
    pub(crate) tail: Option<(PathBuf, u64)>,
    /// The acked position in the ack file itself (the report's is the larger of it and its hot
    /// copy's).
    pub(crate) written_ack: u64,
}

/// The records of one segment, as recovery counts them.
#[derive(Default)]
struct Tally {
    records: u64,
    pending: u64,
    pending_bytes: u64,
    oldest_pending_ms: Option<i64>,
    last_seq: Option<u64>,
}

impl Tally {
    fn count(&mut self, record: &RawRecord, len: u64, acked: u64) {
        self.last_seq = Some(record.seq);
        self.records += 1;
        if record.seq > acked {
            self.pending += 1;
            self.pending_bytes += len;
            self.oldest_pending_ms.get_or_insert(record.time_ms);
        }
    }
}

/// A segment recovery kept.
struct Kept {
    first_seq: u64,
    tally: Tally,
    /// Where its whole records end.
    len: u64,
}

/// Recovers every segment of the spool in `dir` (whose lock is held).
pub(super) fn recover(state_dir: &StateDir, dir: &Path) -> Result<Recovered, SpoolError> {
    let (written_ack, hot_ack) = read_acks(dir)?;
    let acked = written_ack.max(hot_ack);
    let mut segments = list_segments(dir)?;
    if acked == 0
        && !ack_path(dir).exists()
        && segments.keys().next().is_some_and(|&first| first > 1)
    {
        // Segments were deleted, so an ack file existed: it was lost.
        tracing::warn!(spool = %dir.display(),
            "spool ack file is missing; every spooled record is sent again (duplicates, never loss)");
    }
    let mut out = Recovered {
        report: RecoveryReport {
            acked_seq: acked,
            ..RecoveryReport::default()
        },
        segments: BTreeMap::new(),
        pending_bytes: 0,
        oldest_pending_ms: None,
        tail: None,
        written_ack,
    };
    let mut last_seq = acked;
    let last_key = segments.keys().next_back().copied();
    while let Some((first, path)) = segments.pop_first() {
        let is_last = Some(first) == last_key;
        let Some(kept) = recover_segment(state_dir, &path, acked, is_last, &mut out.report.cuts)?
        else {
            continue;
        };
        let tally = kept.tally;
        last_seq = last_seq.max(tally.last_seq.unwrap_or(kept.first_seq.saturating_sub(1)));
        if tally.records == 0 && is_last {
            fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        out.report.segments += 1;
        out.report.records += tally.records;
        out.report.pending += tally.pending;
        out.pending_bytes += tally.pending_bytes;
        if out.oldest_pending_ms.is_none() {
            out.oldest_pending_ms = tally.oldest_pending_ms;
        }
        if is_last {
            out.tail = Some((path.clone(), kept.len));
        }
        out.segments.insert(first, path);
    }
    out.report.next_seq = last_seq + 1;
    Ok(out)
}

/// Walks one segment, cuts out what is damaged (see the module documentation) and says what is
/// kept; `None` when the whole segment was moved aside.
fn recover_segment(
    state_dir: &StateDir,
    path: &Path,
    acked: u64,
    is_last: bool,
    cuts: &mut Vec<Cut>,
) -> Result<Option<Kept>, SpoolError> {
    let mut cursor = match SegmentCursor::open(path)? {
        Ok(cursor) => cursor,
        Err(bad) => {
            move_aside(state_dir, path, bad, cuts)?;
            return Ok(None);
        }
    };
    let mut tally = Tally::default();
    // Where the first damage starts, the whole records after it, and the damage.
    let mut good_len = None;
    let mut after_damage: Vec<Range<usize>> = Vec::new();
    let mut damaged = Vec::new();
    loop {
        match cursor.next()? {
            Step::Record {
                offset,
                len,
                record,
            } => {
                tally.count(&record, len, acked);
                if good_len.is_some() {
                    after_damage.push(offset as usize..(offset + len) as usize);
                }
            }
            Step::End => break,
            Step::Damaged { offset, damage } => {
                good_len.get_or_insert(offset);
                let bytes = cursor.resync()?;
                damaged.push(Cut {
                    segment: path.to_path_buf(),
                    offset,
                    bytes,
                    reason: damage.to_string(),
                });
            }
        }
    }
    let len = match good_len {
        None => {
            // The previous process may have died before its last fsync.
            state_dir
                .open_existing(file_name(path), false)
                .and_then(|f| f.sync_all())
                .map_err(io_err(path))?;
            cursor.offset()
        }
        Some(good_len) => {
            cut_damage(state_dir, path, good_len, &after_damage, is_last, &damaged)?;
            cuts.extend(damaged);
            good_len + after_damage.iter().map(|r| r.len() as u64).sum::<u64>()
        }
    };
    Ok(Some(Kept {
        first_seq: cursor.first_seq(),
        tally,
        len,
    }))
}

/// Without a valid header nothing in the file can be trusted: keeps it aside, whole.
fn move_aside(
    state_dir: &StateDir,
    path: &Path,
    bad: BadHeader,
    cuts: &mut Vec<Cut>,
) -> Result<(), SpoolError> {
    let reason = bad.reason.to_string();
    state_dir
        .rename(file_name(path), file_name(&aside_path(path)))
        .map_err(io_err(path))?;
    tracing::warn!(segment = %path.display(), %reason, "spool segment unreadable; moved aside");
    cuts.push(Cut {
        segment: path.to_path_buf(),
        offset: 0,
        bytes: bad.len,
        reason,
    });
    Ok(())
}

/// Rewrites a damaged segment as its whole records before the damage (`..good_len`) and the
/// ranges `after` it.
fn cut_damage(
    state_dir: &StateDir,
    path: &Path,
    good_len: u64,
    after: &[Range<usize>],
    is_last: bool,
    damaged: &[Cut],
) -> Result<(), SpoolError> {
    let bytes = state_dir.read(file_name(path)).map_err(io_err(path))?;
    // A torn tail (the usual crash) is simply cut; damage with whole records after it is kept
    // aside for `iemctl replay` and the records after it are kept.
    if !is_last || !after.is_empty() {
        let aside = aside_path(path);
        state_dir
            .replace(file_name(&aside), &bytes)
            .map_err(io_err(&aside))?;
    }
    for cut in damaged {
        tracing::warn!(segment = %path.display(), offset = cut.offset, bytes = cut.bytes,
            reason = %cut.reason,
            "spool recovery skipped damaged bytes; the records around them are kept");
    }
    if after.is_empty() {
        let f = state_dir
            .open_existing(file_name(path), true)
            .map_err(io_err(path))?;
        return f
            .set_len(good_len)
            .and_then(|_| f.sync_all())
            .map_err(io_err(path));
    }
    tracing::warn!(segment = %path.display(), records = after.len(),
        "spool recovery kept the whole records found after damage");
    let mut out = bytes[..good_len as usize].to_vec();
    for range in after {
        out.extend_from_slice(&bytes[range.clone()]);
    }
    state_dir
        .replace(file_name(path), &out)
        .map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::spool::format;
    use crate::spool::{SpoolError, open, test_config};

    /// Regression: a flipped byte in the middle of a segment made recovery cut that record and
    /// every record after it in the segment, although they were intact.
    #[tokio::test]
    async fn recovery_keeps_the_whole_records_after_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        {
            let (w, _r, _) = open(&test_config(&dir)).unwrap();
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
        let (_w, mut r, report) = open(&test_config(&dir)).unwrap();
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
        let (_w, _r, again) = open(&test_config(&dir)).unwrap();
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
            let (w, _r, _) = open(&test_config(&dir)).unwrap();
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
        let (_w, mut r, report) = open(&test_config(&dir)).unwrap();
        assert!(report.cuts.is_empty(), "{report:?}");
        assert_eq!((report.pending, report.next_seq), (3, 4));
        let payloads: Vec<usize> = std::iter::from_fn(|| r.try_next().unwrap())
            .map(|rec| rec.payload.len())
            .collect();
        assert_eq!(payloads, [6, long.len(), 5]);
    }

    /// Regression: after damage, recovery took a whole record whose seq jumped further than the
    /// bytes left in the segment could hold records (the gap an earlier recovery leaves) for
    /// garbage, and cut it although its checksum was right.
    #[tokio::test]
    async fn recovery_keeps_a_record_after_damage_whatever_its_seq_jump() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        drop(open(&test_config(&dir)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let seg = list_segments(&dir).unwrap().into_values().next().unwrap();
        let mut bytes = format::segment_header(1).to_vec();
        format::encode_record(&mut bytes, 1, 7, b"one");
        let damage = bytes.len() as u64;
        bytes.extend_from_slice(b"not a record at all");
        format::encode_record(&mut bytes, 5000, 8, b"far");
        fs::write(&seg, &bytes).unwrap();
        let (_w, mut r, report) = open(&test_config(&dir)).unwrap();
        assert_eq!(report.cuts.len(), 1, "{report:?}");
        assert_eq!((report.cuts[0].offset, report.cuts[0].bytes), (damage, 19));
        assert_eq!((report.pending, report.next_seq), (2, 5001));
        let seqs: Vec<u64> = std::iter::from_fn(|| r.try_next().unwrap())
            .map(|rec| rec.seq)
            .collect();
        assert_eq!(seqs, [1, 5000]);
    }
}
