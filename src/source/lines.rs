//! Splitting a byte stream into lines with their offsets, bounded in memory.
//!
//! Invariants: `line_start <= consumed`; the pending line's kept bytes never exceed `max`
//! (a held-back trailing CR is not counted: a line of exactly `max` bytes ended by CR LF is not
//! truncated); bytes are never interpreted, so NUL, invalid UTF-8 or binary pass through.

/// One complete (or flushed) line and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// Without the LF and a CR right before it; at most `max` bytes.
    pub bytes: Vec<u8>,
    pub truncated: bool,
    /// Offset of the line's first byte.
    pub start: u64,
    /// Offset just past the line's LF (or its last byte, for a flushed partial line).
    pub end: u64,
}

/// Cuts pushed bytes into [`RawLine`]s.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    truncated: bool,
    /// The last byte pushed was a CR, not yet stored: it is dropped if an LF follows.
    pending_cr: bool,
    line_start: u64,
    consumed: u64,
}

impl LineSplitter {
    /// A splitter whose first byte is at `offset` in the stream; lines are cut at `max` bytes.
    pub fn new(max: usize, offset: u64) -> Self {
        LineSplitter {
            max: max.max(1),
            buf: Vec::new(),
            truncated: false,
            pending_cr: false,
            line_start: offset,
            consumed: offset,
        }
    }

    /// Offset of the next byte to push.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Offset of the first byte of the pending (incomplete) line.
    pub fn line_start(&self) -> u64 {
        self.line_start
    }

    /// True when bytes of an incomplete line are pending.
    pub fn has_partial(&self) -> bool {
        self.consumed > self.line_start
    }

    /// Pushes the next bytes of the stream, appending every line they complete to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<RawLine>) {
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.append(&rest[..i]);
            self.consumed += i as u64 + 1;
            // A CR before the LF is part of the terminator.
            self.pending_cr = false;
            out.push(self.take());
            rest = &rest[i + 1..];
        }
        self.append(rest);
        self.consumed += rest.len() as u64;
    }

    /// Emits the pending incomplete line, if any, as a line of its own.
    pub fn flush_partial(&mut self) -> Option<RawLine> {
        if !self.has_partial() {
            return None;
        }
        if self.pending_cr {
            self.pending_cr = false;
            self.store(b"\r");
        }
        Some(self.take())
    }

    fn take(&mut self) -> RawLine {
        let line = RawLine {
            bytes: std::mem::take(&mut self.buf),
            truncated: self.truncated,
            start: self.line_start,
            end: self.consumed,
        };
        self.truncated = false;
        self.line_start = self.consumed;
        line
    }

    fn append(&mut self, mut seg: &[u8]) {
        if seg.is_empty() {
            return;
        }
        if self.pending_cr {
            self.pending_cr = false;
            self.store(b"\r");
        }
        if let [head @ .., b'\r'] = seg {
            self.pending_cr = true;
            seg = head;
        }
        self.store(seg);
    }

    fn store(&mut self, seg: &[u8]) {
        let room = self.max - self.buf.len();
        if seg.len() > room {
            self.buf.extend_from_slice(&seg[..room]);
            self.truncated = true;
        } else {
            self.buf.extend_from_slice(seg);
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
        assert_eq!(s.flush_partial(), Some(line(b"ef", false, 8, 10)));
        assert_eq!(s.flush_partial(), None);
    }

    #[test]
    fn long_lines_are_cut_and_marked_and_the_rest_skipped() {
        let (out, _) = split(4, &[b"abcdefgh\nxy\n"]);
        assert_eq!(
            out,
            vec![line(b"abcd", true, 0, 9), line(b"xy", false, 9, 12)]
        );
        // Exactly max bytes before CR LF is not truncated; a CR in the middle is kept.
        let (out, _) = split(4, &[b"abcd\r\na\rb\n"]);
        assert_eq!(
            out,
            vec![line(b"abcd", false, 0, 6), line(b"a\rb", false, 6, 10)]
        );
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
        assert_eq!(whole_tail, Some(line(b"end\r", false, 30, 34)));
    }

    #[test]
    fn starts_at_the_given_offset() {
        let mut s = LineSplitter::new(10, 100);
        let mut out = Vec::new();
        s.push(b"x\n", &mut out);
        assert_eq!(out, vec![line(b"x", false, 100, 102)]);
    }
}
