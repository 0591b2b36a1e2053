//! One journald entry as printed by `journalctl -o json` (one JSON object per line).

//!
//! The JSON scanner reads only what iemd needs: member names, strings (decoded only when they hold
//! escapes and belong to a wanted field), numbers, literals; nested arrays and objects are skipped
//! with a depth counter, not recursion, so a deeply nested line cannot overflow the stack.

use std::borrow::Cow;

use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while_m_n, take_while1};
use nom::character::complete::{char, one_of};
use nom::combinator::{opt, recognize};

/// The fields iemd uses from one journal entry. Strings borrow from the line unless they had
/// JSON escapes or `MESSAGE` was an array of bytes (then they are decoded, lossily for bad UTF-8).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry<'a> {
    pub message: Cow<'a, str>,
    pub identifier: Option<Cow<'a, str>>,
    pub pid: Option<Cow<'a, str>>,
    pub comm: Option<Cow<'a, str>>,
    pub priority: Option<u8>,
    pub hostname: Option<Cow<'a, str>>,
    /// `__REALTIME_TIMESTAMP`: microseconds since the Unix epoch.
    pub realtime_usec: Option<u64>,
    pub cursor: Option<Cow<'a, str>>,
    /// Fields written by `iemctl emit --to journald` (IEM_CODE, IEM_COMPONENT, IEM_MODULE, IEM_EVENT).
    pub iem_code: Option<Cow<'a, str>>,
}

/// Why a line is not a journal entry iemd can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not a JSON object; `at` is the byte offset where parsing stopped.
    Syntax { at: usize },
    /// A JSON object without a `MESSAGE` field.
    NoMessage,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Syntax { at } => write!(f, "invalid journal JSON at byte {at}"),
            Error::NoMessage => f.write_str("journal entry has no MESSAGE"),
        }
    }
}

impl std::error::Error for Error {}

/// True when the line looks like a JSON object (first non-blank byte is `{`): used to auto-detect
/// journald JSON among syslog lines.
pub fn looks_like_json(line: &str) -> bool {
    line.trim_start().starts_with('{')
}

/// Parses one `journalctl -o json` line (a trailing `\r` and blanks around the object are allowed).
pub fn parse(line: &str) -> Result<Entry<'_>, Error> {
    let syntax = |rest: &str| Error::Syntax {
        at: line.len() - rest.len(),
    };
    let (rest, entry) = match object(line) {
        Ok(parsed) => parsed,
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => return Err(syntax(e.input)),
        Err(nom::Err::Incomplete(_)) => return Err(syntax("")),
    };
    let (rest, _) = ws(rest).map_err(|_| syntax(rest))?;
    if !rest.is_empty() {
        return Err(syntax(rest));
    }
    entry.ok_or(Error::NoMessage)
}

/// A JSON string as written between its quotes, and whether it holds escapes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RawStr<'a> {
    raw: &'a str,
    escaped: bool,
}

/// One JSON value, decoded only as far as iemd needs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Str(RawStr<'a>),
    /// A number as written.
    Num(&'a str),
    Null,
    /// An array as written, brackets included.
    Array(&'a str),
    /// `true`, `false` or an object.
    Other,
}

/// The whole object; `None` when it has no `MESSAGE`.
fn object(input: &str) -> IResult<&str, Option<Entry<'_>>> {
    let (mut input, _) = ws(input)?;
    (input, _) = char('{')(input)?;
    (input, _) = ws(input)?;
    let mut message: Option<Cow<'_, str>> = None;
    let mut entry = Entry::default();
    if let Ok((rest, _)) = char::<_, nom::error::Error<&str>>('}')(input) {
        return Ok((rest, None));
    }
    loop {
        let (rest, (name, value)) = member(input)?;
        // Multi-valued fields arrive as arrays and repeated names keep their first value.
        match name.raw {
            "MESSAGE" if message.is_none() => {
                message = Some(text(value).unwrap_or(Cow::Borrowed("")));
            }
            "SYSLOG_IDENTIFIER" => first(&mut entry.identifier, value),
            "_PID" => first(&mut entry.pid, value),
            "_COMM" => first(&mut entry.comm, value),
            "_HOSTNAME" => first(&mut entry.hostname, value),
            "__CURSOR" => first(&mut entry.cursor, value),
            "IEM_CODE" => first(&mut entry.iem_code, value),
            "PRIORITY" if entry.priority.is_none() => {
                entry.priority = text(value).and_then(|t| t.trim().parse().ok());
            }
            "__REALTIME_TIMESTAMP" if entry.realtime_usec.is_none() => {
                entry.realtime_usec = text(value).and_then(|t| t.trim().parse().ok());
            }
            _ => {}
        }
        let (rest, _) = ws(rest)?;
        let (rest, sep) = one_of(",}")(rest)?;
        if sep == '}' {
            return Ok((rest, message.map(|message| Entry { message, ..entry })));
        }
        (input, _) = ws(rest)?;
    }
}

/// Sets a field from a value unless it already has one.
fn first<'a>(slot: &mut Option<Cow<'a, str>>, value: Value<'a>) {
    if slot.is_none() {
        *slot = text(value);
    }
}

/// `"name": value`.
fn member(input: &str) -> IResult<&str, (RawStr<'_>, Value<'_>)> {
    let (input, name) = string(input)?;
    let (input, _) = ws(input)?;
    let (input, _) = char(':')(input)?;
    let (input, _) = ws(input)?;
    let (input, value) = value(input)?;
    Ok((input, (name, value)))
}

/// JSON blanks.
fn ws(input: &str) -> IResult<&str, &str> {
    take_while(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))(input)
}

/// Any JSON value; arrays are kept raw, objects skipped.
fn value(input: &str) -> IResult<&str, Value<'_>> {
    match input.as_bytes().first() {
        Some(b'"') => string(input).map(|(r, s)| (r, Value::Str(s))),
        Some(b'[') => nested(input).map(|(r, raw)| (r, Value::Array(raw))),
        Some(b'{') => nested(input).map(|(r, _)| (r, Value::Other)),
        Some(b'n') => tag("null")(input).map(|(r, _)| (r, Value::Null)),
        Some(b't' | b'f') => alt((tag("true"), tag("false")))
            .parse(input)
            .map(|(r, _)| (r, Value::Other)),
        _ => number(input).map(|(r, n)| (r, Value::Num(n))),
    }
}

/// A string, checked for valid escapes but not decoded.
fn string(input: &str) -> IResult<&str, RawStr<'_>> {
    let (body, _) = char('"')(input)?;
    let b = body.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    while let Some(off) = memchr::memchr2(b'"', b'\\', &b[i..]) {
        let at = i + off;
        if b[at] == b'"' {
            // '"' is ASCII: both slices fall on char boundaries.
            return Ok((
                &body[at + 1..],
                RawStr {
                    raw: &body[..at],
                    escaped,
                },
            ));
        }
        escaped = true;
        // The backslash is ASCII, so `at + 1` is a char boundary.
        let (rest, _) = escape(&body[at + 1..])?;
        i = body.len() - rest.len();
    }
    Err(nom::Err::Error(nom::error::Error::new(
        &body[b.len()..],
        nom::error::ErrorKind::Char,
    )))
}

/// The part of an escape after its backslash: one of `"\/bfnrt` or `u` and four hex digits.
fn escape(input: &str) -> IResult<&str, &str> {
    alt((
        recognize(one_of("\"\\/bfnrt")),
        recognize((char('u'), hex4)),
    ))
    .parse(input)
}

/// Four hex digits.
fn hex4(input: &str) -> IResult<&str, &str> {
    take_while_m_n(4, 4, |c: char| c.is_ascii_hexdigit())(input)
}

/// A JSON number, as written.
fn number(input: &str) -> IResult<&str, &str> {
    let digits = || take_while1(|c: char| c.is_ascii_digit());
    recognize((
        opt(char('-')),
        digits(),
        opt((char('.'), digits())),
        opt((one_of("eE"), opt(one_of("+-")), digits())),
    ))
    .parse(input)
}

/// An array or object, skipped with a depth counter (strings inside are scanned, so brackets in
/// them do not count); returns its raw text.
fn nested(input: &str) -> IResult<&str, &str> {
    let b = input.as_bytes();
    let mut depth: usize = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                // '"' is ASCII: a char boundary.
                let (rest, _) = string(&input[i..])?;
                i = input.len() - rest.len();
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&input[i + 1..], &input[..=i]));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(nom::Err::Error(nom::error::Error::new(
        &input[b.len()..],
        nom::error::ErrorKind::Char,
    )))
}

/// The text of a value: a string (decoded), a number as written, the first string of an array
/// (a multi-valued field), or an array of byte numbers decoded lossily. `None` otherwise.
fn text(value: Value<'_>) -> Option<Cow<'_, str>> {
    match value {
        Value::Str(s) => Some(decode(s)),
        Value::Num(n) => Some(Cow::Borrowed(n)),
        Value::Array(raw) => array_text(raw),
        Value::Null | Value::Other => None,
    }
}

/// The text of an array: its first element if that is a string or an array (the first value of
/// a multi-valued binary field), else the elements read as bytes.
fn array_text(raw: &str) -> Option<Cow<'_, str>> {
    let (rest, _) = char::<_, nom::error::Error<&str>>('[')(raw).ok()?;
    let (rest, _) = ws(rest).ok()?;
    match value(rest).ok()?.1 {
        Value::Str(s) => Some(decode(s)),
        Value::Array(inner) => array_text(inner),
        Value::Num(_) => Some(Cow::Owned(
            String::from_utf8_lossy(&bytes(rest)).into_owned(),
        )),
        Value::Null | Value::Other => None,
    }
}

/// The numbers of an array body (after `[`) as bytes; values above 255 or not numbers end it.
fn bytes(mut input: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 3);
    while let Ok((rest, n)) = number(input) {
        match n.parse::<u8>() {
            Ok(byte) => out.push(byte),
            Err(_) => break,
        }
        let Ok((rest, _)) = ws(rest) else { break };
        let Ok((rest, _)) = char::<_, nom::error::Error<&str>>(',')(rest) else {
            break;
        };
        let Ok((rest, _)) = ws(rest) else { break };
        input = rest;
    }
    out
}

/// Decodes a string's escapes; borrows when it has none.
fn decode(s: RawStr<'_>) -> Cow<'_, str> {
    if !s.escaped {
        return Cow::Borrowed(s.raw);
    }
    let mut out = String::with_capacity(s.raw.len());
    let mut rest = s.raw;
    while let Some(at) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        // `string` checked every escape, so each backslash has a valid tail.
        let tail = &rest[at + 1..];
        let (after, c) = match tail.as_bytes().first() {
            Some(b'u') => unicode_escape(tail),
            Some(&e) => (
                &tail[1..],
                match e {
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    // '"', '\\', '/'
                    other => char::from(other),
                },
            ),
            None => ("", '\u{fffd}'),
        };
        out.push(c);
        rest = after;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `uXXXX`, or a surrogate pair `uD83D\uDE00`; a lone surrogate becomes U+FFFD.
fn unicode_escape(input: &str) -> (&str, char) {
    fn unit(s: &str) -> Option<(&str, u32)> {
        let (rest, _) = char::<_, nom::error::Error<&str>>('u')(s).ok()?;
        let (rest, hex) = hex4(rest).ok()?;
        Some((rest, u32::from_str_radix(hex, 16).ok()?))
    }
    let Some((rest, hi)) = unit(input) else {
        return (input.get(1..).unwrap_or(""), '\u{fffd}');
    };
    if (0xD800..0xDC00).contains(&hi) {
        if let Some(after) = rest.strip_prefix('\\')
            && let Some((rest2, lo)) = unit(after)
            && (0xDC00..0xE000).contains(&lo)
        {
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return (rest2, char::from_u32(c).unwrap_or('\u{fffd}'));
        }
        return (rest, '\u{fffd}');
    }
    (rest, char::from_u32(hi).unwrap_or('\u{fffd}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journalctl_line() {
        let line = r#"{ "__CURSOR" : "s=abc;i=1", "__REALTIME_TIMESTAMP" : "1763765401123456", "PRIORITY" : "3", "_HOSTNAME" : "node1", "SYSLOG_IDENTIFIER" : "m0d", "_PID" : "42", "_COMM" : "m0d", "MESSAGE" : "IEC: ES0020020004: RPC_ITEM_FAILED", "_SOURCE_REALTIME_TIMESTAMP" : "1", "X" : {"a":[1,{"b":"]"}]}, "Y": true, "Z": -1.5e3 }"#;
        assert_eq!(
            parse(line),
            Ok(Entry {
                message: Cow::Borrowed("IEC: ES0020020004: RPC_ITEM_FAILED"),
                identifier: Some(Cow::Borrowed("m0d")),
                pid: Some(Cow::Borrowed("42")),
                comm: Some(Cow::Borrowed("m0d")),
                priority: Some(3),
                hostname: Some(Cow::Borrowed("node1")),
                realtime_usec: Some(1_763_765_401_123_456),
                cursor: Some(Cow::Borrowed("s=abc;i=1")),
                iem_code: None,
            })
        );
    }

    #[test]
    fn escapes_allocate_only_when_present() {
        let e = parse(
            r#"{"MESSAGE":"a\"b\\c\/\n\u00e9\ud83d\ude00\ud800x","IEM_CODE":"ES0030010001"}"#,
        )
        .unwrap();
        assert_eq!(e.message, "a\"b\\c/\né😀\u{fffd}x");
        assert!(matches!(e.message, Cow::Owned(_)));
        assert!(matches!(e.iem_code, Some(Cow::Borrowed("ES0030010001"))));
    }

    #[test]
    fn message_shapes() {
        let e = parse(r#"{"MESSAGE":[73,69,67,58,255,10]}"#).unwrap();
        assert_eq!(e.message, "IEC:\u{fffd}\n");
        let e = parse(r#"{"MESSAGE":null}"#).unwrap();
        assert_eq!(e.message, "");
        // Multi-valued fields: first string wins; repeated names keep the first.
        let e =
            parse(r#"{"MESSAGE":["one","two"],"_PID":["1","2"],"_PID":"3","PRIORITY":6}"#).unwrap();
        assert_eq!(
            (e.message.as_ref(), e.pid.as_deref(), e.priority),
            ("one", Some("1"), Some(6))
        );
        let e = parse(r#"{"MESSAGE":[[104,105],[0]]}"#).unwrap();
        assert_eq!(e.message, "hi");
    }

    #[test]
    fn errors() {
        assert_eq!(parse(r#"{"A":"b"}"#), Err(Error::NoMessage));
        assert_eq!(parse("{}\r"), Err(Error::NoMessage));
        assert_eq!(parse(r#"{"MESSAGE":"x"} y"#), Err(Error::Syntax { at: 16 }));
        assert_eq!(parse(r#"{"MESSAGE":"x"#), Err(Error::Syntax { at: 13 }));
        assert_eq!(parse(r#"{"MESSAGE":"\q"}"#), Err(Error::Syntax { at: 13 }));
        assert_eq!(parse("Nov 21 x"), Err(Error::Syntax { at: 0 }));
        assert_eq!(parse(""), Err(Error::Syntax { at: 0 }));
        let deep = format!(
            r#"{{"MESSAGE":"m","D":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(parse(&deep).map(|e| e.message), Ok(Cow::Borrowed("m")));
    }

    #[test]
    fn named_parsers() {
        assert_eq!(ws(" \t\n x"), Ok(("x", " \t\n ")));
        assert_eq!(
            string(r#""a\"b" x"#),
            Ok((
                " x",
                RawStr {
                    raw: r#"a\"b"#,
                    escaped: true
                }
            ))
        );
        assert_eq!(escape("u00e9x"), Ok(("x", "u00e9")));
        assert_eq!(hex4("00Ffz"), Ok(("z", "00Ff")));
        assert_eq!(number("-1.5e+3,"), Ok((",", "-1.5e+3")));
        assert_eq!(nested(r#"[1,"]",[2]] x"#), Ok((" x", r#"[1,"]",[2]]"#)));
        assert_eq!(value("null,"), Ok((",", Value::Null)));
        assert_eq!(
            member(r#""K" : 12}"#),
            Ok((
                "}",
                (
                    RawStr {
                        raw: "K",
                        escaped: false
                    },
                    Value::Num("12")
                )
            ))
        );
        assert_eq!(unicode_escape(r"ud83d\ude00!"), ("!", '😀'));
        assert_eq!(bytes("104, 105]"), vec![104, 105]);
    }
}
