//! Splitting a byte stream into lines with their offsets, bounded in memory.
//!
//! Invariants: `line_start <= consumed`; the pending line's kept bytes never exceed `max` (line
//! terminators are not counted: a line of exactly `max` bytes ended by CR LF is not truncated);
//! LF, CR LF and a lone CR end a line; other bytes are never interpreted, so NUL, invalid UTF-8
//! or binary pass through.
//!
//! The bytes of a line past `max` are skipped without being kept, but scanned for the IEM marker
//! (`IEC:`, also across the cut and across pushes): when the kept part has no marker and the
//! skipped part has one, the line is emitted as its beginning, ` [...] `, and the skipped part from
//! the marker on (at most `max / 2` bytes), still at most `max` bytes and marked truncated, so the
//! IEM is found (an alert with `truncated: true`) instead of being silently cut off.
//!
//! A pending line taken early ([`LineSplitter::flush_partial`]: a writer that stopped mid-line)
//! stays pending: if it goes on, the completed line is emitted whole, from its first byte, as if
//! it had never been taken. The early copy's `end` is its `start`, so a checkpoint on it resumes
//! at the line and a restart reads it whole.
//!
//! [`scan`]: the same lines, but only those that may hold an IEM are cut out of the buffer; the
//! rest are counted (`iemctl parse`).

pub mod scan;

/// One complete (or flushed) line and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// Without the LF and a CR right before it; at most `max` bytes.
    pub bytes: Vec<u8>,
    pub truncated: bool,
    /// Offset of the line's first byte.
    pub start: u64,
    /// Offset just past the line's LF; for a partial line taken early, `start` (see above).
    pub(crate) end: u64,
}

/// The IEM marker looked for in the skipped part of a long line.
const MARKER: &[u8] = b"IEC:";
/// Put between a long line's beginning and the part from a marker found past the cut.
const CUT: &[u8] = b" [...] ";

/// Cuts pushed bytes into [`RawLine`]s.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    truncated: bool,
    /// The last byte pushed was a CR that ended the pending line; it is emitted with the next
    /// push (which also takes an LF right after the CR into the terminator) or flush.
    cr_ended: bool,
    line_start: u64,
    consumed: u64,
    /// `consumed` when the pending line was last taken early: nothing new to take until it grows.
    flushed_at: Option<u64>,
    /// A line ended by a CR was taken by `flush_partial`: an LF right after it is its terminator.
    cr_taken: bool,
    /// Past the cut of the pending line: the last bytes seen (to find a marker across pushes),
    /// and the bytes from a marker on once one is found (when the kept part has none).
    skip: Option<Skipped>,
    /// Offset of the first byte of the last line completed (`line_start` before any).
    last_start: u64,
    /// Lines completed so far that were longer than `max` (emitted or, by `push_candidates`,
    /// only counted).
    truncated_lines: u64,
}

#[derive(Debug, Default)]
struct Skipped {
    /// The kept part already holds a marker: nothing to look for.
    head_has_marker: bool,
    /// The last `MARKER.len() - 1` bytes before the next skipped byte.
    window: Vec<u8>,
    /// From the marker on, at most `max / 2` bytes; empty until a marker is found.
    tail: Vec<u8>,
}

impl LineSplitter {
    /// A splitter whose first byte is at `offset` in the stream; lines are cut at `max` bytes.
    pub fn new(max: usize, offset: u64) -> Self {
        LineSplitter {
            max: max.max(1),
            buf: Vec::new(),
            truncated: false,
            cr_ended: false,
            line_start: offset,
            consumed: offset,
            flushed_at: None,
            cr_taken: false,
            skip: None,
            last_start: offset,
            truncated_lines: 0,
        }
    }

    /// Offset of the next byte to push.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Offset of the first byte of the pending (incomplete) line.
    pub(crate) fn line_start(&self) -> u64 {
        self.line_start
    }

    /// Offset of the first byte of the last line completed; with [`Self::line_start`] (where
    /// it ended) the position of a line that was only counted.
    pub(crate) fn last_start(&self) -> u64 {
        self.last_start
    }

    /// How many of the lines completed so far were longer than `max`.
    pub(crate) fn truncated_lines(&self) -> u64 {
        self.truncated_lines
    }

    /// True when bytes of an incomplete line are pending that were not taken early yet.
    pub(crate) fn has_partial(&self) -> bool {
        self.consumed > self.line_start && self.flushed_at != Some(self.consumed)
    }

    /// Pushes the next bytes of the stream, appending every line they complete to `out`.
    /// LF, CR LF and a lone CR each end a line: a file written with CR-only line ends must not
    /// fold several IEMs into one line.
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<RawLine>) {
        let mut rest = data;
        if rest.is_empty() {
            return;
        }
        if std::mem::take(&mut self.cr_taken)
            && let [b'\n', tail @ ..] = rest
        {
            self.consumed += 1;
            self.line_start = self.consumed;
            rest = tail;
        }
        if std::mem::take(&mut self.cr_ended) {
            // The previous push ended on a CR that ended a line: an LF right after it belongs
            // to the same terminator.
            if let [b'\n', tail @ ..] = rest {
                self.consumed += 1;
                rest = tail;
            }
            out.push(self.take());
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
            self.store(&rest[..i]);
            self.consumed += i as u64 + 1;
            if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => {
                        self.consumed += 1;
                        rest = &rest[i + 2..];
                    }
                    Some(_) => rest = &rest[i + 1..],
                    None => {
                        // Whether an LF follows is known only with the next bytes.
                        self.cr_ended = true;
                        return;
                    }
                }
            } else {
                rest = &rest[i + 1..];
            }
            out.push(self.take());
        }
        self.store(rest);
        self.consumed += rest.len() as u64;
    }

    /// Takes a copy of the pending incomplete line, if it has bytes not taken before; the line
    /// stays pending (see the module's invariants). A line ended by a CR whose LF may follow is
    /// complete: it is emitted for good.
    pub fn flush_partial(&mut self) -> Option<RawLine> {
        if !self.has_partial() {
            return None;
        }
        if std::mem::take(&mut self.cr_ended) {
            self.cr_taken = true;
            return Some(self.take());
        }
        self.flushed_at = Some(self.consumed);
        Some(RawLine {
            bytes: self.bytes(self.buf.clone()),
            truncated: self.truncated,
            start: self.line_start,
            end: self.line_start,
        })
    }

    fn take(&mut self) -> RawLine {
        let kept = std::mem::take(&mut self.buf);
        let line = RawLine {
            bytes: self.bytes(kept),
            truncated: self.truncated,
            start: self.line_start,
            end: self.consumed,
        };
        self.last_start = self.line_start;
        self.truncated_lines += u64::from(self.truncated);
        self.truncated = false;
        self.skip = None;
        self.flushed_at = None;
        self.line_start = self.consumed;
        line
    }

    /// The line's bytes: the kept part, with a marker found past the cut joined at its end.
    fn bytes(&self, mut kept: Vec<u8>) -> Vec<u8> {
        let Some(tail) = self
            .skip
            .as_ref()
            .map(|s| &s.tail)
            .filter(|t| !t.is_empty())
        else {
            return kept;
        };
        kept.truncate(self.max.saturating_sub(tail.len() + CUT.len()));
        kept.extend_from_slice(CUT);
        kept.extend_from_slice(tail);
        kept.truncate(self.max);
        kept
    }

    fn store(&mut self, seg: &[u8]) {
        let room = self.max - self.buf.len();
        if seg.len() > room {
            self.buf.extend_from_slice(&seg[..room]);
            if !self.truncated {
                self.truncated = true;
                let kept = &self.buf;
                self.skip = Some(Skipped {
                    head_has_marker: memchr::memmem::find(kept, MARKER).is_some(),
                    window: kept[kept.len().saturating_sub(MARKER.len() - 1)..].to_vec(),
                    tail: Vec::new(),
                });
            }
            self.scan_skipped(&seg[room..]);
        } else {
            self.buf.extend_from_slice(seg);
        }
    }

    /// Looks for the marker in skipped bytes, and keeps the bytes from it on (up to `max / 2`).
    fn scan_skipped(&mut self, skipped: &[u8]) {
        let cap = self.max / 2;
        let Some(s) = self.skip.as_mut().filter(|s| !s.head_has_marker) else {
            return;
        };
        let keep = MARKER.len() - 1;
        let from = if !s.tail.is_empty() {
            Some(0)
        } else {
            // A marker that begins in the bytes before these.
            let mut edge = s.window.clone();
            edge.extend_from_slice(&skipped[..skipped.len().min(keep)]);
            match memchr::memmem::find(&edge, MARKER) {
                Some(i) if i < s.window.len() => {
                    s.tail.extend_from_slice(&s.window[i..]);
                    Some(0)
                }
                _ => memchr::memmem::find(skipped, MARKER),
            }
        };
        match from {
            Some(j) => {
                let room = cap.saturating_sub(s.tail.len());
                let rest = &skipped[j..];
                s.tail.extend_from_slice(&rest[..rest.len().min(room)]);
            }
            None => {
                let mut w = std::mem::take(&mut s.window);
                w.extend_from_slice(&skipped[skipped.len().saturating_sub(keep)..]);
                s.window = w[w.len().saturating_sub(keep)..].to_vec();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<RawLine>, LineSplitter) {
        let mut s = LineSplitter::new(max, 0);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        (out, s)
    }

    fn line(bytes: &[u8], truncated: bool, start: u64, end: u64) -> RawLine {
        RawLine {
            bytes: bytes.to_vec(),
            truncated,
            start,
            end,
        }
    }

    #[test]
    fn lines_with_offsets_crlf_stripped_partial_kept() {
        let (out, mut s) = split(100, &[b"ab\ncd\r\n\nef"]);
        assert_eq!(
            out,
            vec![
                line(b"ab", false, 0, 3),
                line(b"cd", false, 3, 7),
                line(b"", false, 7, 8)
            ]
        );
        assert!(s.has_partial());
        assert_eq!((s.line_start(), s.consumed()), (8, 10));
        assert_eq!(s.flush_partial(), Some(line(b"ef", false, 8, 8)));
        assert_eq!(s.flush_partial(), None);
    }

    /// Regression, "half-written lines": a block-buffered writer's `...IEC:ES0030` taken early
    /// and its `010001:...` later gave a malformed alert and lost the IEM. The completed line is
    /// emitted whole; taking it early again only when it grew.
    #[test]
    fn a_line_taken_early_is_still_emitted_whole_when_completed() {
        let mut s = LineSplitter::new(100, 0);
        let mut out = Vec::new();
        s.push(b"a\nIEC:ES0030", &mut out);
        assert_eq!(s.flush_partial(), Some(line(b"IEC:ES0030", false, 2, 2)));
        assert!(!s.has_partial());
        s.push(b"0100", &mut out);
        assert_eq!(
            s.flush_partial(),
            Some(line(b"IEC:ES00300100", false, 2, 2))
        );
        s.push(b"01:text\nb", &mut out);
        assert_eq!(
            out,
            vec![
                line(b"a", false, 0, 2),
                line(b"IEC:ES0030010001:text", false, 2, 24)
            ]
        );
        assert_eq!(s.flush_partial(), Some(line(b"b", false, 24, 24)));
    }

    #[test]
    fn long_lines_are_cut_and_marked_and_the_rest_skipped() {
        let (out, _) = split(4, &[b"abcdefgh\nxy\n"]);
        assert_eq!(
            out,
            vec![line(b"abcd", true, 0, 9), line(b"xy", false, 9, 12)]
        );
        // Exactly max bytes before CR LF is not truncated; a lone CR ends a line too.
        let (out, _) = split(4, &[b"abcd\r\na\rb\n"]);
        assert_eq!(
            out,
            vec![
                line(b"abcd", false, 0, 6),
                line(b"a", false, 6, 8),
                line(b"b", false, 8, 10)
            ]
        );
    }

    /// Regression, "IEMs past max_line_bytes": a marker after the cut of a long line gave no
    /// alert. The part from the marker on is joined to the kept beginning, whatever the chunking
    /// (the marker split across the cut or across pushes included).
    #[test]
    fn a_marker_past_the_cut_is_kept() {
        let mut input = b"Nov 21 node1 s3server[1]: ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 50));
        input.extend_from_slice(b"IEC:ES0030010001:deep in the line and more text\nnext\n");
        let (whole, _) = split(64, &[&input]);
        let mut expected = input[..64 - 32 - CUT.len()].to_vec();
        expected.extend_from_slice(CUT);
        expected.extend_from_slice(b"IEC:ES0030010001:deep in the lin");
        assert_eq!(whole[0].bytes, expected);
        assert_eq!(whole[0].bytes.len(), 64);
        assert!(whole[0].truncated);
        assert_eq!((whole[0].start, whole[0].end), (0, input.len() as u64 - 5));
        assert_eq!(whole[1].bytes, b"next");
        for a in 0..=input.len() {
            for b in (a..=input.len()).step_by(3) {
                let (out, _) = split(64, &[&input[..a], &input[a..b], &input[b..]]);
                assert_eq!(out, whole, "split at {a},{b}");
            }
        }
        // The marker across the cut itself.
        let mut at_cut = vec![b'y'; 62];
        at_cut.extend_from_slice(b"IEC:ES0030010001:x\n");
        let (out, _) = split(64, &[&at_cut]);
        assert!(
            out[0].bytes.ends_with(b" [...] IEC:ES0030010001:x"),
            "{:?}",
            out[0]
        );
        // A marker in the kept part: the line is the kept part only.
        let mut kept = b"IEC:ES0030010001:".to_vec();
        kept.extend(std::iter::repeat_n(b'z', 100));
        kept.extend_from_slice(b"IEC:ES0030010002:second\n");
        let (out, _) = split(64, &[&kept]);
        assert_eq!(out[0].bytes, kept[..64].to_vec());
    }

    #[test]
    fn binary_and_nul_pass_through() {
        let (out, _) = split(100, &[b"\x00\xff\xfe\n"]);
        assert_eq!(out, vec![line(b"\x00\xff\xfe", false, 0, 4)]);
    }

    #[test]
    fn any_chunking_gives_the_same_lines() {
        let input: &[u8] = b"one\r\ntwo\n\rthree is long\r\n\r\n\x00\xff\nend\r";
        let (whole, mut ws) = split(6, &[input]);
        let whole_tail = ws.flush_partial();
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (out, mut s) = split(6, &[&input[..a], &input[a..b], &input[b..]]);
                assert_eq!(out, whole, "split at {a},{b}");
                assert_eq!(s.flush_partial(), whole_tail, "split at {a},{b}");
            }
        }
        assert_eq!(
            whole,
            vec![
                line(b"one", false, 0, 5),
                line(b"two", false, 5, 9),
                line(b"", false, 9, 10),
                line(b"three ", true, 10, 25),
                line(b"", false, 25, 27),
                line(b"\x00\xff", false, 27, 30),
            ]
        );
        assert_eq!(whole_tail, Some(line(b"end", false, 30, 34)));
        // An early take of a line that is then completed changes none of the lines.
        for a in 0..input.len() {
            let mut s = LineSplitter::new(6, 0);
            let mut out = Vec::new();
            s.push(&input[..a], &mut out);
            // A copy (start == end) is repeated whole later; a line ended by a CR is final.
            if let Some(e) = s.flush_partial()
                && e.start != e.end
            {
                out.push(e);
            }
            s.push(&input[a..], &mut out);
            // (A line ended by a CR and taken before its LF came ends before that LF.)
            let seen = |v: &[RawLine]| -> Vec<(Vec<u8>, bool, u64)> {
                v.iter()
                    .map(|l| (l.bytes.clone(), l.truncated, l.start))
                    .collect()
            };
            assert_eq!(seen(&out), seen(&whole), "taken early at {a}");
        }
    }

    #[test]
    fn starts_at_the_given_offset() {
        let mut s = LineSplitter::new(10, 100);
        let mut out = Vec::new();
        s.push(b"x\n", &mut out);
        assert_eq!(out, vec![line(b"x", false, 100, 102)]);
    }
}
