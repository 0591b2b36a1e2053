//! The IEM payload: `IEC:<SEV><SRC><COMP:3><MOD:3><EVT:4>:<description>`.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::LazyLock;

use memchr::memmem;
use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_till, take_while, take_while_m_n};
use nom::character::complete::{char, space0};
use nom::combinator::map_res;

/// IEM severity letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Configuration,
    Informational,
    Detail,
    Debug,
}

impl Severity {
    pub const ALL: [Severity; 9] = [
        Severity::Alert,
        Severity::Critical,
        Severity::Error,
        Severity::Warning,
        Severity::Notice,
        Severity::Configuration,
        Severity::Informational,
        Severity::Detail,
        Severity::Debug,
    ];

    /// From the code letter, either case.
    pub fn from_letter(c: u8) -> Option<Severity> {
        Some(match c.to_ascii_uppercase() {
            b'A' => Severity::Alert,
            b'X' => Severity::Critical,
            b'E' => Severity::Error,
            b'W' => Severity::Warning,
            b'N' => Severity::Notice,
            b'C' => Severity::Configuration,
            b'I' => Severity::Informational,
            b'D' => Severity::Detail,
            b'B' => Severity::Debug,
            _ => return None,
        })
    }

    pub fn letter(self) -> char {
        match self {
            Severity::Alert => 'A',
            Severity::Critical => 'X',
            Severity::Error => 'E',
            Severity::Warning => 'W',
            Severity::Notice => 'N',
            Severity::Configuration => 'C',
            Severity::Informational => 'I',
            Severity::Detail => 'D',
            Severity::Debug => 'B',
        }
    }

    /// The code letter as a string.
    pub fn code(self) -> &'static str {
        match self {
            Severity::Alert => "A",
            Severity::Critical => "X",
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Notice => "N",
            Severity::Configuration => "C",
            Severity::Informational => "I",
            Severity::Detail => "D",
            Severity::Debug => "B",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Alert => "alert",
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Configuration => "configuration",
            Severity::Informational => "informational",
            Severity::Detail => "detail",
            Severity::Debug => "debug",
        }
    }

    /// The SSPL `alert_type`: A, X, E -> fault; I -> fault_resolved; the rest -> get.
    pub fn alert_type(self) -> &'static str {
        match self {
            Severity::Alert | Severity::Critical | Severity::Error => "fault",
            Severity::Informational => "fault_resolved",
            _ => "get",
        }
    }
}

/// IEM source letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Hardware,
    Software,
    Firmware,
    Os,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Hardware,
        Source::Software,
        Source::Firmware,
        Source::Os,
    ];

    /// From the code letter, either case.
    pub fn from_letter(c: u8) -> Option<Source> {
        Some(match c.to_ascii_uppercase() {
            b'H' => Source::Hardware,
            b'S' => Source::Software,
            b'F' => Source::Firmware,
            b'O' => Source::Os,
            _ => return None,
        })
    }

    pub fn letter(self) -> char {
        match self {
            Source::Hardware => 'H',
            Source::Software => 'S',
            Source::Firmware => 'F',
            Source::Os => 'O',
        }
    }

    /// The code letter as a string.
    pub fn code(self) -> &'static str {
        match self {
            Source::Hardware => "H",
            Source::Software => "S",
            Source::Firmware => "F",
            Source::Os => "O",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Hardware => "hardware",
            Source::Software => "software",
            Source::Firmware => "firmware",
            Source::Os => "os",
        }
    }
}

/// A validated IEM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    pub severity: Severity,
    pub source: Source,
    /// 0x001..=0x100 (`Field::Component.range()`)
    pub component: u16,
    /// 0x001..=0x100 (`Field::Module.range()`)
    pub module: u16,
    /// 0x0001..=0x2710 (`Field::Event.range()`)
    pub event: u16,
}

impl Code {
    /// Parses a code on its own (`ES0030010001`, letters and hex digits in either case), with the
    /// same checks and reasons as a code after an `IEC:` marker.
    pub fn parse(text: &str) -> Result<Code, Reason> {
        if text.len() != CODE_LEN {
            return Err(Reason::CodeLength {
                found: text.chars().count(),
            });
        }
        validate_code(text)
    }
}

impl Code {
    /// The canonical form (`ES0030010001`: letters upper case, hex digits lower case) without the
    /// formatting machinery: the agent builds one per alert. Bytes 2..5, 5..8 and 8..12 are the
    /// component, module and event ids.
    pub fn canonical(&self) -> CanonicalCode {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 12];
        out[0] = self.severity.letter() as u8;
        out[1] = self.source.letter() as u8;
        for (range, value) in [
            (2..5, self.component),
            (5..8, self.module),
            (8..12, self.event),
        ] {
            let width = range.len();
            for (i, slot) in out[range].iter_mut().enumerate() {
                let shift = 4 * (width - 1 - i);
                *slot = DIGITS[usize::from((value >> shift) & 0xf)];
            }
        }
        CanonicalCode(out)
    }
}

/// A code in canonical form (see `Code::canonical`): twelve ASCII bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonicalCode([u8; 12]);

impl CanonicalCode {
    pub fn as_str(&self) -> &str {
        // Only ASCII letters and hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The whole code and its component, module and event ids (one UTF-8 check for all four).
    pub fn parts(&self) -> (&str, &str, &str, &str) {
        let s = self.as_str();
        (s, &s[2..5], &s[5..8], &s[8..12])
    }
}

impl fmt::Display for Code {
    /// Canonical form: letters upper case, hex digits lower case (`ES0030010001`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical().as_str())
    }
}

/// A well-formed IEM found in a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Iem<'a> {
    pub code: Code,
    /// Motr's running count (`Event count: 2a, ...`, hex), when present.
    pub count: Option<u64>,
    /// The description text, with the count prefix, a trailing JSON object and a stray
    /// trailing quote removed, and surrounding blanks trimmed.
    pub description: &'a str,
    /// The trailing JSON object after the description, as written (not validated beyond balance).
    pub extra: Option<&'a str>,
    /// Byte offset of the `IEC:` marker in the message.
    pub marker_at: usize,
}

/// Why text after an `IEC:` marker is not a valid IEM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The code between the marker and the next `:` (or end) has the wrong length.
    CodeLength {
        found: usize,
    },
    /// No `:` after the code.
    MissingSeparator,
    UnknownSeverity(char),
    UnknownSource(char),
    /// A field that must be hex digits is not.
    NotHex {
        field: Field,
    },
    /// A field outside its range (component 000 or 101, event 2711...).
    OutOfRange {
        field: Field,
        value: u16,
    },
}

/// The numeric fields of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Component,
    Module,
    Event,
}

impl Field {
    /// The ids the old sensor accepted, both ends included: component and module 0x001..=0x100,
    /// event 0x0001..=0x2710. Every reader and writer of codes (parser, catalog, `iemctl emit`)
    /// checks against this one range.
    pub const fn range(self) -> RangeInclusive<u16> {
        match self {
            Field::Component | Field::Module => 0x001..=0x100,
            Field::Event => 0x0001..=0x2710,
        }
    }

    /// Hex digits the field takes in a code: 3, or 4 for the event.
    pub const fn width(self) -> usize {
        match self {
            Field::Component | Field::Module => 3,
            Field::Event => 4,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Component => "component",
            Field::Module => "module",
            Field::Event => "event",
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::CodeLength { found } => write!(f, "code has {found} characters, expected 12"),
            Reason::MissingSeparator => f.write_str("no ':' after the code"),
            Reason::UnknownSeverity(c) => write!(f, "unknown severity '{}'", c.escape_default()),
            Reason::UnknownSource(c) => write!(f, "unknown source '{}'", c.escape_default()),
            Reason::NotHex { field } => write!(f, "{field} is not hexadecimal"),
            Reason::OutOfRange { field, value } => match field {
                Field::Event => write!(f, "event {value:04x} out of range"),
                _ => write!(f, "{field} {value:03x} out of range"),
            },
        }
    }
}

/// An `IEC:` marker followed by something that is not a valid code.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed<'a> {
    pub reason: Reason,
    /// Byte offset of the `IEC:` marker in the message.
    pub marker_at: usize,
    /// The text from the marker to the end of the message.
    pub text: &'a str,
}

/// The classification of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified<'a> {
    NotIem,
    Iem(Iem<'a>),
    Malformed(Malformed<'a>),
}

/// The marker searcher, built once: building a `Finder` per call would cost more than the scan
/// of a typical line.
static MARKER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"IEC:"));

/// Length of the marker `IEC:`.
const MARKER_LEN: usize = 4;

/// Finds the first `IEC:` marker at memchr speed.
pub fn find_marker(message: &str) -> Option<usize> {
    MARKER.find(message.as_bytes())
}

/// Classifies a message: no `IEC:` marker -> `NotIem`; the first marker followed by a valid code
/// -> `Iem`; otherwise `Malformed` with the reason of the first marker.
///
/// Linear in the message length however many markers it holds: each marker's code scan stops at
/// the next `:`, which is at the latest the next marker's own colon, and only the winning marker's
/// description is scanned further.
pub fn classify(message: &str) -> Classified<'_> {
    let bytes = message.as_bytes();
    // The common case, a line without the marker, costs one search.
    let Some(mut at) = MARKER.find(bytes) else {
        return Classified::NotIem;
    };
    let mut first_bad: Option<Malformed<'_>> = None;
    loop {
        // `at` is the start of the ASCII marker, so `at + MARKER_LEN` is a char boundary.
        let after = &message[at + MARKER_LEN..];
        match code_after_marker(after) {
            Ok((description, code)) => {
                return Classified::Iem(iem_from(code, description, at));
            }
            Err(reason) => {
                if first_bad.is_none() {
                    first_bad = Some(Malformed {
                        reason,
                        marker_at: at,
                        text: &message[at..],
                    });
                }
            }
        }
        match MARKER.find(&bytes[at + MARKER_LEN..]) {
            Some(next) => at += MARKER_LEN + next,
            None => break,
        }
    }
    match first_bad {
        Some(bad) => Classified::Malformed(bad),
        None => Classified::NotIem,
    }
}

/// Reads the code after a marker and its `:` separator; returns the raw description text.
fn code_after_marker(after: &str) -> Result<(&str, Code), Reason> {
    let (rest, _) = blanks(after).map_err(|_| Reason::MissingSeparator)?;
    match memchr::memchr(b':', rest.as_bytes()) {
        Some(colon) => {
            // ':' is ASCII, so both slices fall on char boundaries.
            let token = rest[..colon].trim_end_matches([' ', '\t']);
            if token.len() == CODE_LEN {
                return Ok((&rest[colon + 1..], validate_code(token)?));
            }
            // A valid code followed by blank-separated text and a later colon.
            if token.len() > CODE_LEN
                && rest.as_bytes()[CODE_LEN].is_ascii_whitespace()
                && validate_code(&rest[..CODE_LEN]).is_ok()
            {
                return Err(Reason::MissingSeparator);
            }
            Err(Reason::CodeLength {
                found: token.chars().count(),
            })
        }
        None => {
            let (_, word) = word(rest).map_err(|_| Reason::MissingSeparator)?;
            if word.len() == CODE_LEN {
                validate_code(word)?;
                return Err(Reason::MissingSeparator);
            }
            Err(Reason::CodeLength {
                found: word.chars().count(),
            })
        }
    }
}

/// Length of a code: severity, source, component (3), module (3), event (4).
const CODE_LEN: usize = 12;

/// Checks a 12-byte code token field by field, reporting the first bad field.
fn validate_code(token: &str) -> Result<Code, Reason> {
    let first = |s: &str| s.chars().next().unwrap_or('\0');
    let bytes = token.as_bytes();
    let severity = Severity::from_letter(bytes[0]).ok_or(Reason::UnknownSeverity(first(token)))?;
    let source = Source::from_letter(bytes[1]).ok_or_else(|| {
        // Byte 0 was an ASCII letter, so index 1 is a char boundary.
        Reason::UnknownSource(first(&token[1..]))
    })?;
    let component = hex_field(&bytes[2..5], Field::Component)?;
    let module = hex_field(&bytes[5..8], Field::Module)?;
    let event = hex_field(&bytes[8..12], Field::Event)?;
    Ok(Code {
        severity,
        source,
        component,
        module,
        event,
    })
}

/// Decodes one fixed-width hex field and checks it lies in the field's range.
fn hex_field(digits: &[u8], field: Field) -> Result<u16, Reason> {
    let mut value: u16 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Reason::NotHex { field }),
        };
        // At most 4 digits: fits in u16.
        value = (value << 4) | u16::from(v);
    }
    if !field.range().contains(&value) {
        return Err(Reason::OutOfRange { field, value });
    }
    Ok(value)
}

/// Builds the IEM from the text after the code's separator.
fn iem_from(code: Code, raw: &str, marker_at: usize) -> Iem<'_> {
    let raw = raw.trim();
    let (text, count) = match event_count(raw) {
        Ok((rest, count)) => (rest, Some(count)),
        Err(_) => (raw, None),
    };
    let (description, extra) = split_extra(text);
    let description = if extra.is_none() {
        strip_stray_quote(description)
    } else {
        description
    };
    Iem {
        code,
        count,
        description,
        extra,
        marker_at,
    }
}

/// Blanks (spaces, tabs) between the marker and the code.
fn blanks(input: &str) -> IResult<&str, &str> {
    space0(input)
}

/// A run of non-blank characters (the code when no `:` follows it).
fn word(input: &str) -> IResult<&str, &str> {
    take_till(|c: char| c.is_ascii_whitespace())(input)
}

/// Motr's running count prefix `Event count: 2a, ` (hex), returning the count.
fn event_count(input: &str) -> IResult<&str, u64> {
    let (input, _) = tag("Event count:")(input)?;
    let (input, _) = space0(input)?;
    let (input, count) = map_res(
        take_while_m_n(1, 16, |c: char| c.is_ascii_hexdigit()),
        |h: &str| u64::from_str_radix(h, 16),
    )
    .parse(input)?;
    let (input, _) = char(',')(input)?;
    let (input, _) = take_while(|c: char| c.is_whitespace())(input)?;
    Ok((input, count))
}

/// Splits a trailing balanced JSON object off the description; the text before it loses its
/// trailing blanks and one `:` separator (`TEXT: {JSON}`).
fn split_extra(text: &str) -> (&str, Option<&str>) {
    match json_object_start(text) {
        Some(start) => {
            let before = text[..start].trim_end();
            let before = before.strip_suffix(':').unwrap_or(before).trim_end();
            (before, Some(&text[start..]))
        }
        None => (text, None),
    }
}

/// When `text` ends with `}`, the offset of the `{` that balances it, skipping braces inside
/// JSON strings. Scans backwards once, so it is linear in the text.
fn json_object_start(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    if b.last() != Some(&b'}') {
        return None;
    }
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut i = b.len();
    while i > 0 {
        i -= 1;
        let c = b[i];
        if in_string {
            if c == b'"' && !escaped(b, i) {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'}' => depth += 1,
            b'{' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// True when the byte at `i` is preceded by an odd number of backslashes.
fn escaped(b: &[u8], i: usize) -> bool {
    let run = b[..i].iter().rev().take_while(|&&c| c == b'\\').count();
    run % 2 == 1
}

/// Removes one trailing `"` that has no partner (cortx-ha's `logger "..."` quoting slip).
fn strip_stray_quote(text: &str) -> &str {
    match text.strip_suffix('"') {
        Some(stripped) if memchr::memchr_iter(b'"', text.as_bytes()).count() % 2 == 1 => {
            stripped.trim_end()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #[test]
        fn the_canonical_code_is_the_formatted_one(
            sev in 0usize..9, src in 0usize..4, component in 0u16..=0xfff, module in 0u16..=0xfff,
            event in proptest::num::u16::ANY,
        ) {
            let code = super::Code {
                severity: super::Severity::ALL[sev],
                source: super::Source::ALL[src],
                component, module, event,
            };
            let c = code.canonical();
            let want = format!(
                "{}{}{:03x}{:03x}{:04x}",
                code.severity.letter(), code.source.letter(), component, module, event
            );
            let (whole, component_id, module_id, event_id) = c.parts();
            proptest::prop_assert_eq!(c.as_str(), want.as_str());
            proptest::prop_assert_eq!(whole, want.as_str());
            proptest::prop_assert_eq!(component_id, &want[2..5]);
            proptest::prop_assert_eq!(module_id, &want[5..8]);
            proptest::prop_assert_eq!(event_id, &want[8..12]);
        }
    }

    #[test]
    fn a_code_on_its_own() {
        assert_eq!(
            super::Code::parse("eS002002000A").map(|c| c.to_string()),
            Ok("ES002002000a".to_owned())
        );
        assert_eq!(
            super::Code::parse("ES00200200"),
            Err(super::Reason::CodeLength { found: 10 })
        );
        assert_eq!(
            super::Code::parse("TS0020020002"),
            Err(super::Reason::UnknownSeverity('T'))
        );
        assert_eq!(
            super::Code::parse("ES002002000é"),
            Err(super::Reason::CodeLength { found: 12 })
        );
    }

    use super::*;

    fn code(s: &str) -> Code {
        match validate_code(s) {
            Ok(c) => c,
            Err(r) => panic!("{s}: {r}"),
        }
    }

    fn iem(msg: &str) -> Iem<'_> {
        match classify(msg) {
            Classified::Iem(i) => i,
            other => panic!("{msg:?}: {other:?}"),
        }
    }

    fn reason(msg: &str) -> Reason {
        match classify(msg) {
            Classified::Malformed(m) => m.reason,
            other => panic!("{msg:?}: {other:?}"),
        }
    }

    /// Regression (issue 21 item 11): ES1000010001 and ES0010012710 were reported malformed
    /// ("component 100 out of range"), while the old sensor accepted both ends of each range.
    #[test]
    fn both_ends_of_every_range_are_accepted() {
        for (text, component, module, event) in [
            ("ES0010010001", 0x001, 0x001, 0x0001),
            ("ES1000010001", 0x100, 0x001, 0x0001),
            ("ES0011000001", 0x001, 0x100, 0x0001),
            ("ES0010012710", 0x001, 0x001, 0x2710),
            ("ES1001002710", 0x100, 0x100, 0x2710),
        ] {
            assert_eq!(
                (Code::parse(text), classify(&format!("IEC:{text}:x"))),
                (
                    Ok(Code {
                        severity: Severity::Error,
                        source: Source::Software,
                        component,
                        module,
                        event,
                    }),
                    Classified::Iem(Iem {
                        code: code(text),
                        count: None,
                        description: "x",
                        extra: None,
                        marker_at: 0,
                    })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn s3server_no_space() {
        let m = "IEC:ES0030010001:S3 server cannot connect to auth server.";
        assert_eq!(
            classify(m),
            Classified::Iem(Iem {
                code: Code {
                    severity: Severity::Error,
                    source: Source::Software,
                    component: 3,
                    module: 1,
                    event: 1
                },
                count: None,
                description: "S3 server cannot connect to auth server.",
                extra: None,
                marker_at: 0,
            })
        );
    }

    #[test]
    fn motr_spaces_and_hex_either_case() {
        let i = iem("prefix IEC: ES0020020004: RPC_ITEM_FAILED item=0x7f opcode=41 rc=-110");
        assert_eq!(i.code.to_string(), "ES0020020004");
        assert_eq!(i.description, "RPC_ITEM_FAILED item=0x7f opcode=41 rc=-110");
        assert_eq!(i.marker_at, 7);
        assert_eq!(iem("IEC: es002002000A: x").code.to_string(), "ES002002000a");
        assert_eq!(iem("IEC: ES002002000a: x").code.event, 10);
    }

    #[test]
    fn motr_event_count() {
        let i = iem("IEC: ES0020020006: Event count: 2a, Observed data accessibility issue.");
        assert_eq!(i.count, Some(42));
        assert_eq!(i.description, "Observed data accessibility issue.");
        // Older releases: no count, the colon inside the text is part of the description.
        let i = iem("IEC: ES0020020006: IO error (42): Observed data accessibility issue.");
        assert_eq!(i.count, None);
        assert_eq!(
            i.description,
            "IO error (42): Observed data accessibility issue."
        );
    }

    #[test]
    fn trailing_json_moves_to_extra() {
        let i = iem(
            r#"IEC: ES0030050001: Fatal handler triggered: { "time": "a}b", "pid": 42, "q": "x\"}" }"#,
        );
        assert_eq!(i.description, "Fatal handler triggered");
        assert_eq!(
            i.extra,
            Some(r#"{ "time": "a}b", "pid": 42, "q": "x\"}" }"#)
        );
        let i = iem(r#"IEC:ES0030010001:text {"a":{"b":[1,2]}}"#);
        assert_eq!(
            (i.description, i.extra),
            ("text", Some(r#"{"a":{"b":[1,2]}}"#))
        );
        // Unbalanced: stays in the description.
        let i = iem("IEC:ES0030010001:text }");
        assert_eq!((i.description, i.extra), ("text }", None));
    }

    #[test]
    fn cortx_ha_stray_quote() {
        let i = iem(
            r#"IEC:WS0080010001:The cluster has lost ssc-vm-1 server. Extra Info: host=ssc-vm-1; status=lost;""#,
        );
        assert_eq!(
            i.description,
            "The cluster has lost ssc-vm-1 server. Extra Info: host=ssc-vm-1; status=lost;"
        );
        // A balanced quote stays.
        assert_eq!(
            iem(r#"IEC:WS0080010001:say "hi""#).description,
            r#"say "hi""#
        );
    }

    #[test]
    fn malformed_reasons() {
        assert_eq!(
            reason("IEC: 020001002: Drive removed"),
            Reason::CodeLength { found: 9 }
        );
        assert_eq!(
            reason("IEC: 0030050001: Fatal"),
            Reason::CodeLength { found: 10 }
        );
        assert_eq!(
            reason("IEC: TS0020010001: test"),
            Reason::UnknownSeverity('T')
        );
        assert_eq!(
            reason("IEC: EZ0020010001: test"),
            Reason::UnknownSource('Z')
        );
        assert_eq!(
            reason("IEC:ES0000010001:x"),
            Reason::OutOfRange {
                field: Field::Component,
                value: 0
            }
        );
        assert_eq!(
            reason("IEC:ES0010012711:x"),
            Reason::OutOfRange {
                field: Field::Event,
                value: 0x2711
            }
        );
        assert_eq!(
            reason("IEC:ES1010010001:x"),
            Reason::OutOfRange {
                field: Field::Component,
                value: 0x101
            }
        );
        assert_eq!(
            reason("IEC:ES0011010001:x"),
            Reason::OutOfRange {
                field: Field::Module,
                value: 0x101
            }
        );
        assert_eq!(
            reason("IEC: ES  2  2   6: RPC"),
            Reason::NotHex {
                field: Field::Component
            }
        );
        assert_eq!(
            reason("IEC:ES0030010001 no colon"),
            Reason::MissingSeparator
        );
        assert_eq!(reason("IEC:ES0030010001"), Reason::MissingSeparator);
        assert_eq!(
            reason("IEC:ES0030010001 text: more"),
            Reason::MissingSeparator
        );
        assert_eq!(reason("IEC:"), Reason::CodeLength { found: 0 });
    }

    #[test]
    fn not_iem() {
        assert_eq!(classify("IEC 60870 link up"), Classified::NotIem);
        assert_eq!(classify("host iec:es0030010001:x"), Classified::NotIem);
        assert_eq!(classify(""), Classified::NotIem);
    }

    #[test]
    fn first_valid_marker_wins() {
        let m = "IEC: 020001002: old IEC:ES0030010001:new IEC:EH0010010001:third";
        let i = iem(m);
        assert_eq!(
            (i.code.to_string().as_str(), i.marker_at),
            ("ES0030010001", 20)
        );
        assert_eq!(i.description, "new IEC:EH0010010001:third");
        let bad = "IEC: 020001002: a IEC:TS0010010001:b";
        assert_eq!(
            classify(bad),
            Classified::Malformed(Malformed {
                reason: Reason::CodeLength { found: 9 },
                marker_at: 0,
                text: bad
            })
        );
    }

    #[test]
    fn many_markers_stay_linear() {
        let line = "IEC:".repeat(10_000) + &"IEC: x".repeat(10_000);
        let t = std::time::Instant::now();
        assert!(matches!(classify(&line), Classified::Malformed(_)));
        // Quadratic behaviour would take seconds here; this is a generous bound.
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(code("es002002000A").to_string(), "ES002002000a");
    }

    #[test]
    fn named_parsers() {
        assert_eq!(event_count("Event count: 2a, text"), Ok(("text", 42)));
        assert!(event_count("Event count: zz, text").is_err());
        assert_eq!(blanks("  \tES"), Ok(("ES", "  \t")));
        assert_eq!(word("ES0030010001 x"), Ok((" x", "ES0030010001")));
        assert_eq!(json_object_start(r#"a {"k":"{"}"#), Some(2));
        assert_eq!(
            split_extra(r#"TEXT: {"a":1}"#),
            ("TEXT", Some(r#"{"a":1}"#))
        );
        assert_eq!(strip_stray_quote(r#"x;""#), "x;");
    }
}
