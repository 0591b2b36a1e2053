//! Splitting only the lines that may hold an IEM: the marker is searched in the whole pushed
//! buffer, lines are cut only around its hits, and the lines between hits are only counted.
//!
//! Invariant: [`LineSplitter::push_candidates`] appends exactly the lines [`LineSplitter::push`]
//! would append that pass [`may_hold_iem`], in the same order, with the same offsets, and returns
//! how many lines `push` would have appended; the splitter is left in the same state. Any chunking
//! therefore gives the same candidates, and a line left out is one the decoder gives no alert for:
//! it has no `IEC:` (lossy UTF-8 decoding cannot make one) and is not journald JSON.
//!
//! Why: `iemctl parse` on a syslog file with 0.1% IEM lines spent its time copying and allocating
//! every line to search each for the marker; grep searches the buffer and finds the line of a hit
//! afterwards. Here a line without a hit costs its share of one marker search, one `{` search and
//! two byte counts (LF, CR) over the buffer.
//!
//! The bytes up to the buffer's first LF and after its last go through `push` (they finish the
//! pending line and start the next); between them every line is complete, so each candidate there
//! goes through the same `store`/`take` as in `push`, and truncation, the marker past the cut and
//! the offsets come out the same.

use std::sync::LazyLock;

use memchr::memmem;

use super::{LineSplitter, MARKER, RawLine};

/// A line that may hold an IEM, and where it came among the lines of its push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// How many lines the same push completed before this one (candidates or not).
    pub before: u64,
    pub line: RawLine,
}

/// Built once: building a `Finder` costs more than searching a short buffer.
static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(MARKER));

/// True when a line may give an alert: it holds the marker, or it may be journald JSON (its
/// MESSAGE may hold the marker escaped or as a byte array, or it names the code in `IEM_CODE`).
///
/// JSON is what the decoder takes for it: the first non-blank character is `{`. Any byte of
/// 0x80 and above counts as blank here, since Unicode blanks are not ASCII: a line taken for
/// JSON when it is not costs one decode, never an IEM.
pub(crate) fn may_hold_iem(line: &[u8]) -> bool {
    FINDER.find(line).is_some() || looks_like_json(line)
}

fn looks_like_json(line: &[u8]) -> bool {
    line.iter().find(|&&b| !is_blank(b)) == Some(&b'{')
}

fn is_blank(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | b' ' | 0x80..)
}

/// The lines of a stretch that begins and ends at line boundaries, counted, not cut.
#[derive(Debug, Default, PartialEq, Eq)]
struct Gap {
    lines: u64,
    /// Lines longer than the splitter's `max` (it would have cut them).
    long: u64,
    /// Where the last line begins, if there is one.
    last_start: Option<usize>,
}

/// The lines in `gap`, which begins and ends at line boundaries: LF, CR LF and a lone CR end
/// one.
fn count_lines(gap: &[u8], max: usize) -> Gap {
    let mut g = Gap::default();
    let (mut start, mut lf_of_crlf) = (0, None);
    for i in memchr::memchr2_iter(b'\n', b'\r', gap) {
        if lf_of_crlf == Some(i) {
            continue;
        }
        g.lines += 1;
        g.long += u64::from(i - start > max);
        g.last_start = Some(start);
        start = i + 1;
        if gap[i] == b'\r' && gap.get(i + 1) == Some(&b'\n') {
            start = i + 2;
            lf_of_crlf = Some(i + 1);
        }
    }
    g
}

impl LineSplitter {
    /// Pushes the next bytes of the stream as [`LineSplitter::push`] does, but appends only the
    /// completed lines that [`may_hold_iem`]; returns how many lines the bytes completed.
    pub fn push_candidates(&mut self, data: &[u8], out: &mut Vec<Candidate>) -> u64 {
        let (Some(first), Some(last)) = (memchr::memchr(b'\n', data), memchr::memrchr(b'\n', data))
        else {
            return self.push_filtered(data, 0, out);
        };
        // After an LF is always a line boundary (an LF is never the first half of a terminator).
        let mut lines = self.push_filtered(&data[..=first], 0, out);
        if first < last {
            lines += self.between_boundaries(&data[first + 1..=last], lines, out);
        }
        lines + self.push_filtered(&data[last + 1..], lines, out)
    }

    /// `push`, keeping only the candidates; the number of lines completed.
    fn push_filtered(&mut self, data: &[u8], before: u64, out: &mut Vec<Candidate>) -> u64 {
        let mut lines = Vec::new();
        self.push(data, &mut lines);
        let n = lines.len() as u64;
        out.extend(
            (before..)
                .zip(lines)
                .filter(|(_, line)| may_hold_iem(&line.bytes))
                .map(|(before, line)| Candidate { before, line }),
        );
        n
    }

    /// Counts the lines of `gap`, which starts at offset `at`, as `push` would have completed
    /// them: how many, how many were too long, where the last began.
    fn count_gap(&mut self, gap: &[u8], at: u64) -> u64 {
        let g = count_lines(gap, self.max);
        self.truncated_lines += g.long;
        if let Some(start) = g.last_start {
            self.last_start = at + start as u64;
        }
        g.lines
    }

    /// Lines of `region`, which starts where the splitter is at a line boundary with nothing
    /// pending and ends with an LF; only the lines around a marker or a `{` are cut.
    fn between_boundaries(&mut self, region: &[u8], before: u64, out: &mut Vec<Candidate>) -> u64 {
        debug_assert!(self.buf.is_empty() && !self.cr_ended && !self.cr_taken);
        debug_assert_eq!(self.line_start, self.consumed);
        debug_assert_eq!(region.last(), Some(&b'\n'));
        let base = self.consumed;
        let (mut pos, mut lines) = (0, 0);
        let mut marker = FINDER.find(region);
        let mut brace = memchr::memchr(b'{', region);
        loop {
            if marker.is_some_and(|m| m < pos) {
                marker = FINDER.find(&region[pos..]).map(|m| pos + m);
            }
            if brace.is_some_and(|b| b < pos) {
                brace = memchr::memchr(b'{', &region[pos..]).map(|b| pos + b);
            }
            let hit = match (marker, brace) {
                (Some(m), Some(b)) => m.min(b),
                (Some(h), None) | (None, Some(h)) => h,
                (None, None) => break,
            };
            let start =
                memchr::memrchr2(b'\n', b'\r', &region[pos..hit]).map_or(pos, |i| pos + i + 1);
            if Some(hit) != marker && !region[start..hit].iter().all(|&b| is_blank(b)) {
                // A `{` inside a line: not JSON (a marker later on the line is still found).
                brace = memchr::memchr(b'{', &region[hit + 1..]).map(|b| hit + 1 + b);
                continue;
            }
            // The region ends with an LF: every line in it has its terminator in it (the final
            // LF stands in should that ever not hold, rather than a panic on input).
            let end =
                memchr::memchr2(b'\n', b'\r', &region[hit..]).map_or(region.len() - 1, |i| hit + i);
            let next = match &region[end..] {
                [b'\r', b'\n', ..] => end + 2,
                _ => end + 1,
            };
            lines += self.count_gap(&region[pos..start], base + pos as u64);
            // What `push` does with a complete line.
            self.line_start = base + start as u64;
            self.store(&region[start..end]);
            self.consumed = base + next as u64;
            let line = self.take();
            if may_hold_iem(&line.bytes) {
                out.push(Candidate {
                    before: before + lines,
                    line,
                });
            }
            lines += 1;
            pos = next;
        }
        lines += self.count_gap(&region[pos..], base + pos as u64);
        self.consumed = base + region.len() as u64;
        self.line_start = self.consumed;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `push` over the chunks, keeping the candidates: what `push_candidates` must give.
    /// The candidates, the lines completed, the partial line, and the splitter's count of long
    /// lines and start of the last line.
    type Split = (Vec<Candidate>, u64, Option<RawLine>, u64, u64);

    fn reference(max: usize, chunks: &[&[u8]]) -> Split {
        let mut s = LineSplitter::new(max, 0);
        let (mut out, mut lines) = (Vec::new(), 0);
        for c in chunks {
            let mut pushed = Vec::new();
            s.push(c, &mut pushed);
            for line in pushed {
                if may_hold_iem(&line.bytes) {
                    out.push(Candidate {
                        before: lines,
                        line,
                    });
                }
                lines += 1;
            }
        }
        let (long, last) = (s.truncated_lines(), s.last_start());
        (out, lines, s.flush_partial(), long, last)
    }

    /// `push_candidates` over the chunks, with `before` made relative to the whole input.
    fn scanned(max: usize, chunks: &[&[u8]]) -> Split {
        let mut s = LineSplitter::new(max, 0);
        let (mut out, mut lines) = (Vec::new(), 0);
        for c in chunks {
            let mut pushed = Vec::new();
            let n = s.push_candidates(c, &mut pushed);
            out.extend(pushed.into_iter().map(|c| Candidate {
                before: lines + c.before,
                line: c.line,
            }));
            lines += n;
        }
        let (long, last) = (s.truncated_lines(), s.last_start());
        (out, lines, s.flush_partial(), long, last)
    }

    fn line(bytes: &[u8], start: u64, end: u64) -> RawLine {
        RawLine {
            bytes: bytes.to_vec(),
            truncated: false,
            start,
            end,
        }
    }

    #[test]
    fn only_lines_with_the_marker_or_json_are_cut() {
        let input = b"a\nb IEC:ES0030010001:x\r\nc {\n \t{\"MESSAGE\":\"m\"}\rd\ne IEC:\nf";
        let mut s = LineSplitter::new(100, 0);
        let mut out = Vec::new();
        assert_eq!(s.push_candidates(input, &mut out), 6);
        let lines: Vec<(u64, RawLine)> = out.into_iter().map(|c| (c.before, c.line)).collect();
        assert_eq!(
            lines,
            vec![
                (1, line(b"b IEC:ES0030010001:x", 2, 24)),
                (3, line(b" \t{\"MESSAGE\":\"m\"}", 28, 46)),
                (5, line(b"e IEC:", 48, 55)),
            ]
        );
        assert_eq!(s.flush_partial(), Some(line(b"f", 55, 55)));
    }

    #[test]
    fn blanks_before_a_brace_include_any_non_ascii_byte() {
        assert!(may_hold_iem(b"{}"));
        assert!(may_hold_iem(b"\xc2\x85 {"));
        assert!(!may_hold_iem(b"x{"));
        assert!(!may_hold_iem(b"IEC {"));
        assert!(may_hold_iem(b"x IEC: y"));
        assert!(!may_hold_iem(b""));
    }

    #[test]
    fn counts_lone_cr_and_crlf_as_one_line_each() {
        assert_eq!(count_lines(b"", 10), Gap::default());
        let g = |lines, long, last_start| Gap {
            lines,
            long,
            last_start: Some(last_start),
        };
        assert_eq!(count_lines(b"a\nb\r\nc\rd\n\r\n\n", 10), g(6, 0, 11));
        // Too long: over `max` bytes, terminators not counted.
        assert_eq!(count_lines(b"abc\r\nabcd\rab\n", 3), g(3, 1, 10));
    }

    /// A long line is cut as `push` cuts it, the marker past the cut included.
    #[test]
    fn long_lines_between_boundaries_are_cut_as_push_cuts_them() {
        let mut input = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b" IEC:ES0030010001:deep\nIEC:");
        input.extend(std::iter::repeat_n(b'y', 100));
        input.extend_from_slice(b"\nlast\n");
        for max in [1, 3, 7, 8, 16, 64, 1000] {
            let split = scanned(max, &[&input]);
            assert_eq!(split, reference(max, &[&input]), "max {max}");
            let (out, lines) = (split.0, split.1);
            assert_eq!(lines, 4);
            if max >= 16 {
                assert_eq!(out.len(), 2, "max {max}");
                assert_eq!(out[0].line.truncated, max < 122, "max {max}");
            }
        }
    }

    fn bytes_of_lines() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"IEC:".to_vec()),
            Just(b"IEC".to_vec()),
            Just(b":".to_vec()),
            Just(b"{".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\xc2\x85".to_vec()),
            Just(b"\xff".to_vec()),
            Just(b"some text".to_vec()),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        /// Any chunking gives the lines `push` gives that may hold an IEM, and the same count.
        /// (From 8 bytes: below, `max / 2` cannot hold the marker past the cut, and what `push`
        /// keeps of it depends on the chunking; the daemon takes no limit under 16.)
        #[test]
        fn candidates_are_pushs_lines_that_may_hold_an_iem(
            input in bytes_of_lines(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            max in 8usize..40,
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for a in at {
                chunks.push(&input[from..a]);
                from = a;
            }
            chunks.push(&input[from..]);
            prop_assert_eq!(scanned(max, &chunks), reference(max, &[&input]));
        }
    }
}
