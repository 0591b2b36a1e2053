//! Encoding and decoding of the on-disk structures described in the module documentation.

use std::io::{self, Read};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"IEMSPOOL";
/// First bytes of the ack file.
pub(crate) const ACK_MAGIC: &[u8; 8] = b"IEMSPACK";
/// The only format version this build reads and writes.
pub(crate) const VERSION: u32 = 1;
/// Segment header: magic, version, reserved, first seq.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 24;
/// Record header: length, crc, seq, time.
pub(crate) const RECORD_HEADER_LEN: usize = 24;
/// Ack file: magic, version, crc, acked seq.
pub(crate) const ACK_LEN: usize = 24;
/// The writer refuses payloads longer than this (the pipeline cuts alerts to fit first). When
/// reading, a longer length is believed only if the file holds that many bytes and the checksum
/// matches (records written before the writer checked): a record that passes its checksum is
/// never discarded.
pub(crate) const MAX_RECORD_LEN: u32 = 16 << 20;

/// The segment header's bytes.
pub(crate) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// Why a segment header is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Short,
    BadMagic,
    Version(u32),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => write!(f, "segment header is incomplete"),
            HeaderError::BadMagic => write!(f, "not a spool segment (bad magic)"),
            HeaderError::Version(v) => write!(f, "segment format version {v} is not supported"),
        }
    }
}

/// Parses a segment header, returning the first seq it declares.
pub(crate) fn parse_segment_header(h: &[u8]) -> Result<u64, HeaderError> {
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(HeaderError::Short);
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8])))
}

/// The CRC of a record covers seq, time and payload, so a record moved or re-numbered fails.
fn record_crc(seq: u64, time_ms: i64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &time_ms.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Appends one framed record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, seq: u64, time_ms: i64, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(seq, time_ms, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecord {
    pub(crate) seq: u64,
    pub(crate) time_ms: i64,
    pub(crate) payload: Vec<u8>,
}

/// Why the bytes at some offset are not a complete, valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// The file ends inside the record (a torn write).
    Truncated,
    /// The length field is impossible.
    BadLength(u32),
    /// The checksum does not match.
    BadCrc,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated => write!(f, "record is incomplete (torn write)"),
            RecordError::BadLength(n) => write!(f, "impossible record length {n}"),
            RecordError::BadCrc => write!(f, "record checksum mismatch"),
        }
    }
}

/// The outcome of reading at one position.
pub(crate) enum ReadOutcome {
    /// A valid record and its total framed length.
    Record(RawRecord, u64),
    /// Clean end of data.
    End,
    /// Bytes that are not a valid record.
    Bad(RecordError),
}

/// Reads exactly `buf.len()` bytes, or reports how many were available before EOF.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads the record that starts at the reader's position. `available` says how many bytes the
/// file still holds after the record header; it is asked only for a length over
/// `MAX_RECORD_LEN`, so that a damaged length field never makes us allocate more than the file.
pub(crate) fn read_record<R: Read>(
    r: &mut R,
    available: impl FnOnce(&R) -> io::Result<u64>,
) -> io::Result<ReadOutcome> {
    let mut h = [0u8; RECORD_HEADER_LEN];
    let n = read_full(r, &mut h)?;
    if n == 0 {
        return Ok(ReadOutcome::End);
    }
    if n < RECORD_HEADER_LEN {
        return Ok(ReadOutcome::Bad(RecordError::Truncated));
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8]));
    let time_ms = i64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8]));
    if len > MAX_RECORD_LEN && available(r)? < u64::from(len) {
        return Ok(ReadOutcome::Bad(RecordError::BadLength(len)));
    }
    let mut payload = vec![0u8; len as usize];
    if read_full(r, &mut payload)? < payload.len() {
        return Ok(ReadOutcome::Bad(RecordError::Truncated));
    }
    if record_crc(seq, time_ms, &payload) != crc {
        return Ok(ReadOutcome::Bad(RecordError::BadCrc));
    }
    let total = RECORD_HEADER_LEN as u64 + u64::from(len);
    Ok(ReadOutcome::Record(
        RawRecord {
            seq,
            time_ms,
            payload,
        },
        total,
    ))
}

/// The framed length of the record that starts `buf` (which holds the rest of the file), if it
/// is whole, passes its checksum and carries a seq of at least `min_seq`. Allocates nothing:
/// resynchronizing after damage asks this at every offset.
pub(crate) fn whole_record_at(buf: &[u8], min_seq: u64) -> Option<u64> {
    let h = buf.get(..RECORD_HEADER_LEN)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let seq = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let time_ms = i64::from_le_bytes(h[16..24].try_into().ok()?);
    if seq < min_seq {
        return None;
    }
    let end = RECORD_HEADER_LEN.checked_add(usize::try_from(len).ok()?)?;
    let payload = buf.get(RECORD_HEADER_LEN..end)?;
    (record_crc(seq, time_ms, payload) == crc).then_some(end as u64)
}

/// The ack file's bytes.
pub(crate) fn encode_ack(acked: u64) -> [u8; ACK_LEN] {
    let mut b = [0u8; ACK_LEN];
    b[0..8].copy_from_slice(ACK_MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&crc32c::crc32c(&acked.to_le_bytes()).to_le_bytes());
    b[16..24].copy_from_slice(&acked.to_le_bytes());
    b
}

/// Parses the ack file; `None` when it is not a valid version-1 ack file.
pub(crate) fn parse_ack(b: &[u8]) -> Option<u64> {
    if b.len() != ACK_LEN || &b[0..8] != ACK_MAGIC {
        return None;
    }
    if u32::from_le_bytes([b[8], b[9], b[10], b[11]]) != VERSION {
        return None;
    }
    let crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    let acked = b[16..24].try_into().ok().map(u64::from_le_bytes)?;
    (crc32c::crc32c(&acked.to_le_bytes()) == crc).then_some(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_record(buf: &[u8]) -> Option<(RawRecord, u64)> {
        let available = buf.len().saturating_sub(RECORD_HEADER_LEN) as u64;
        match read_record(&mut &buf[..], |_| Ok(available)) {
            Ok(ReadOutcome::Record(rec, total)) => Some((rec, total)),
            _ => None,
        }
    }

    #[test]
    fn record_round_trips_and_detects_damage() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 1234, b"{\"id\":\"x\"}");
        let (rec, total) = parse_record(&buf).unwrap();
        assert_eq!(rec.seq, 7);
        assert_eq!(rec.time_ms, 1234);
        assert_eq!(rec.payload, b"{\"id\":\"x\"}");
        assert_eq!(total as usize, buf.len());
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(parse_record(&bad).is_none());
        let mut cur = &buf[..buf.len() - 1];
        assert!(matches!(
            read_record(&mut cur, |_| Ok(0)).unwrap(),
            ReadOutcome::Bad(RecordError::Truncated)
        ));
    }

    /// Regression: a record over 16 MiB (written before the writer refused them) was taken for
    /// damage and dropped at recovery although its checksum was right.
    #[test]
    fn a_long_record_with_a_good_checksum_is_read() {
        let payload = vec![b'x'; MAX_RECORD_LEN as usize + 10];
        let mut buf = Vec::new();
        encode_record(&mut buf, 3, 9, &payload);
        let (rec, total) = parse_record(&buf).unwrap();
        assert_eq!((rec.seq, rec.payload.len()), (3, payload.len()));
        assert_eq!(total as usize, buf.len());
        // The same length with the bytes missing is a torn or damaged length, not an allocation.
        let mut short = &buf[..1000];
        assert!(matches!(
            read_record(&mut short, |_| Ok(976)).unwrap(),
            ReadOutcome::Bad(RecordError::BadLength(_))
        ));
    }

    #[test]
    fn whole_record_at_agrees_with_read_record() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 5, 1, b"five");
        encode_record(&mut buf, 6, 2, b"six");
        let first = buf.len() - (RECORD_HEADER_LEN + 3);
        assert_eq!(whole_record_at(&buf, 5), Some(first as u64));
        assert_eq!(whole_record_at(&buf[first..], 6), Some(27));
        // Below the seq asked for, cut short, damaged, or not at a record boundary: none.
        assert_eq!(whole_record_at(&buf, 6), None);
        assert_eq!(whole_record_at(&buf[..first - 1], 5), None);
        assert_eq!(whole_record_at(&buf[1..], 0), None);
        let mut bad = buf.clone();
        bad[RECORD_HEADER_LEN] ^= 1;
        assert_eq!(whole_record_at(&bad, 5), None);
        // Whatever its length, a record that passes its checksum is whole.
        let long = vec![b'x'; MAX_RECORD_LEN as usize + 10];
        let mut buf = Vec::new();
        encode_record(&mut buf, 3, 9, &long);
        assert_eq!(whole_record_at(&buf, 1), Some(buf.len() as u64));
    }

    #[test]
    fn header_and_ack_round_trip() {
        assert_eq!(parse_segment_header(&segment_header(42)), Ok(42));
        assert_eq!(parse_segment_header(b"IEMSPOOL"), Err(HeaderError::Short));
        assert_eq!(parse_ack(&encode_ack(99)), Some(99));
        let mut bad = encode_ack(99);
        bad[20] ^= 1;
        assert_eq!(parse_ack(&bad), None);
    }
}
