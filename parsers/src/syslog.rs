//! Syslog header parsers: RFC 3164 (`Nov 21 22:50:01 host tag[pid]: msg`), the RFC 3339
//! high-precision file format (`2026-11-21T22:50:01.123456+00:00 host tag[pid]: msg`) and
//! RFC 5424 (`<PRI>1 TS HOST APP PROCID MSGID [SD] MSG`).
//!
//! Dispatch is on the first bytes: `<` starts a priority (then RFC 5424 when a version follows,
//! else one of the other two shapes), a digit starts an RFC 3339 timestamp, a letter an RFC 3164
//! month. Anything that does not match completely is `Format::Unknown` with the whole line as the
//! message, so no text is ever lost to a header parser.

use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::character::complete::{char, one_of};
use nom::combinator::{eof, map, opt, recognize, value, verify};
use nom::multi::many1_count;

/// Which header shape a line had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc3164,
    Rfc3339,
    Rfc5424,
    /// No recognisable header: the whole line is the message.
    Unknown,
}

/// A timestamp as written in the line. RFC 3164 has no year and no zone: the caller supplies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub year: Option<i32>,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub nanos: u32,
    /// Offset east of UTC in seconds, when the line says it (`Z` is `Some(0)`).
    pub utc_offset_secs: Option<i32>,
}

/// The header fields of one syslog line; every string borrows from the line.
#[derive(Debug, Clone, PartialEq)]
pub struct Header<'a> {
    pub format: Format,
    /// `<PRI>` when present (facility * 8 + severity).
    pub priority: Option<u8>,
    pub timestamp: Option<Timestamp>,
    pub host: Option<&'a str>,
    /// The tag / APP-NAME (`s3server`, `kernel`, ...).
    pub program: Option<&'a str>,
    /// The pid / PROCID as written (RFC 5424 allows non-numeric values).
    pub pid: Option<&'a str>,
    /// RFC 5424 MSGID.
    pub msgid: Option<&'a str>,
    /// RFC 5424 structured data, raw (`[id k="v"]...`), when present.
    pub structured_data: Option<&'a str>,
}

impl Header<'_> {
    /// The header of a line that had none.
    pub const fn unknown() -> Self {
        Header {
            format: Format::Unknown,
            priority: None,
            timestamp: None,
            host: None,
            program: None,
            pid: None,
            msgid: None,
            structured_data: None,
        }
    }
}

/// Splits a line into its header and message. Never fails: a line with no recognisable header
/// gives `Header::unknown()` and the whole line as the message. A trailing `\r` is dropped.
pub fn parse(line: &str) -> (Header<'_>, &str) {
    let line = line.strip_suffix('\r').unwrap_or(line);
    match header(line) {
        Ok((message, header)) => (header, message),
        Err(_) => (Header::unknown(), line),
    }
}

/// Any of the three header shapes; the rest is the message.
fn header(input: &str) -> IResult<&str, Header<'_>> {
    let (after_pri, priority) = opt(pri).parse(input)?;
    if let Some(priority) = priority
        && let Ok(parsed) = rfc5424(after_pri, priority)
    {
        return Ok(parsed);
    }
    match after_pri.as_bytes().first() {
        Some(b'0'..=b'9') => file_header(after_pri, priority, Format::Rfc3339, rfc3339_timestamp),
        _ => file_header(after_pri, priority, Format::Rfc3164, rfc3164_timestamp),
    }
}

/// `<PRI>`: facility * 8 + severity, at most 191.
fn pri(input: &str) -> IResult<&str, u8> {
    let (input, _) = char('<')(input)?;
    let (input, value) = verify(number(1, 3), |v| *v <= 191).parse(input)?;
    let (input, _) = char('>')(input)?;
    // Checked above: at most 191.
    Ok((input, value as u8))
}

/// The shape rsyslog writes to files: `TIMESTAMP HOST TAG[PID]: MSG`. A line whose tag cannot be
/// read keeps its timestamp and host, and the message starts right after the host.
#[inline]
fn file_header<'a>(
    input: &'a str,
    priority: Option<u8>,
    format: Format,
    timestamp: impl Fn(&str) -> IResult<&str, Timestamp>,
) -> IResult<&'a str, Header<'a>> {
    let (input, ts) = timestamp(input)?;
    let Some(input) = input.strip_prefix(' ') else {
        return fail(input, nom::error::ErrorKind::Char);
    };
    let (input, host) = hostname(input)?;
    let (message, (program, pid)) = match tag_pid(input) {
        Ok((rest, (program, pid))) => (rest, (Some(program), pid)),
        Err(_) => (input, (None, None)),
    };
    Ok((
        message,
        Header {
            format,
            priority,
            timestamp: Some(ts),
            host: Some(host),
            program,
            pid,
            msgid: None,
            structured_data: None,
        },
    ))
}

/// The host name and the blank after it (or the end of the line).
#[inline]
fn hostname(input: &str) -> IResult<&str, &str> {
    // Host names run to tens of bytes: memchr beats a byte loop.
    let end = memchr::memchr(b' ', input.as_bytes()).unwrap_or(input.len());
    if end == 0 {
        return fail(input, nom::error::ErrorKind::TakeTill1);
    }
    // ' ' is ASCII: a char boundary; the blank itself is skipped when present.
    let (host, rest) = input.split_at(end);
    Ok((rest.get(1..).unwrap_or(rest), host))
}

/// The RFC 3164 TAG, read as rsyslog reads it (pmrfc3164): everything up to a `:` (taken, with
/// one blank after it) or a blank (skipped). The program is the TAG up to its first `[`, the pid
/// the text between that `[` and the next `]` (none without both). So `sshd(pam_unix)[19939]:`
/// gives `sshd(pam_unix)` / 19939, `kernel:` gives no pid, and a TAG ended by a blank still names
/// its sender: `sandboxd[129] ([31376]): ...` gives `sandboxd` / 129, `syslogd 1.4.1: restart.`
/// gives `syslogd`. An empty TAG (two blanks after the host) gives none. A TAG ending in `IEC:`
/// is not taken: that is the IEM marker of a message logged without a tag, and it must stay in
/// the message.
#[inline]
fn tag_pid(input: &str) -> IResult<&str, (&str, Option<&str>)> {
    let end = memchr::memchr2(b':', b' ', input.as_bytes()).unwrap_or(input.len());
    // ':' and ' ' are ASCII, and so are '[' and ']': every split below is on a char boundary.
    let (tag, rest) = input.split_at(end);
    let rest = match rest.as_bytes() {
        [b':', ..] if tag.ends_with("IEC") => {
            return fail(input, nom::error::ErrorKind::Verify);
        }
        [b':', b' ', ..] => &rest[2..],
        [b':' | b' ', ..] => &rest[1..],
        _ => rest,
    };
    let (program, pid) = match memchr::memchr(b'[', tag.as_bytes()) {
        Some(open) => {
            let inside = &tag[open + 1..];
            let pid = memchr::memchr(b']', inside.as_bytes()).map(|close| &inside[..close]);
            (&tag[..open], pid.filter(|p| !p.is_empty()))
        }
        None => (tag, None),
    };
    if program.is_empty() {
        return fail(input, nom::error::ErrorKind::TakeTill1);
    }
    Ok((rest, (program, pid)))
}

/// RFC 3164 timestamp `Nov 21 22:50:01` (day may be padded with a blank: `Nov  1`).
#[inline]
fn rfc3164_timestamp(input: &str) -> IResult<&str, Timestamp> {
    let (input, month) = month(input)?;
    let (input, day) = padded_day(input)?;
    let (input, _) = char(' ')(input)?;
    let (input, (hour, minute, second)) = clock(input)?;
    let mut ts = Timestamp {
        // Written whole and then cleared: leaving the payload of `None` undefined made the
        // compiler store the tag alone and reload all 8 bytes, a store-forwarding stall that
        // cost a third of the header parse.
        year: Some(0),
        month,
        day,
        hour,
        minute,
        second,
        nanos: 0,
        utc_offset_secs: Some(0),
    };
    ts.year = None;
    ts.utc_offset_secs = None;
    Ok((input, check(input, ts)?))
}

/// The day after an RFC 3164 month with its blank: ` 21`, `  1` (rsyslog's padding) or ` 1`.
#[inline]
fn padded_day(input: &str) -> IResult<&str, u8> {
    let digit = |d: u8| d.is_ascii_digit();
    let (len, day) = match *input.as_bytes() {
        [b' ', b' ', d, ..] if digit(d) => (3, d - b'0'),
        [b' ', d1, d2, ..] if digit(d1) && digit(d2) => (3, (d1 - b'0') * 10 + d2 - b'0'),
        [b' ', d, ..] if digit(d) => (2, d - b'0'),
        _ => return fail(input, nom::error::ErrorKind::Digit),
    };
    // ASCII bytes only: a char boundary.
    Ok((&input[len..], day))
}

/// English month abbreviation, as 1..=12.
#[inline]
fn month(input: &str) -> IResult<&str, u8> {
    let m = match input.as_bytes().get(..3) {
        Some(b"Jan") => 1,
        Some(b"Feb") => 2,
        Some(b"Mar") => 3,
        Some(b"Apr") => 4,
        Some(b"May") => 5,
        Some(b"Jun") => 6,
        Some(b"Jul") => 7,
        Some(b"Aug") => 8,
        Some(b"Sep") => 9,
        Some(b"Oct") => 10,
        Some(b"Nov") => 11,
        Some(b"Dec") => 12,
        _ => return fail(input, nom::error::ErrorKind::Tag),
    };
    // Three ASCII letters: a char boundary.
    Ok((&input[3..], m))
}

/// `HH:MM:SS`.
#[inline]
fn clock(input: &str) -> IResult<&str, (u8, u8, u8)> {
    let two = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| (a - b'0') * 10 + b - b'0')
    };
    if let [h1, h2, b':', m1, m2, b':', s1, s2, ..] = *input.as_bytes()
        && let (Some(h), Some(m), Some(s)) = (two(h1, h2), two(m1, m2), two(s1, s2))
    {
        // Eight ASCII bytes: a char boundary.
        return Ok((&input[8..], (h, m, s)));
    }
    fail(input, nom::error::ErrorKind::Digit)
}

/// RFC 3339 timestamp `2026-11-21T22:50:01.123456+00:00` (fraction optional, `Z` allowed).
fn rfc3339_timestamp(input: &str) -> IResult<&str, Timestamp> {
    let (input, year) = number(4, 4)(input)?;
    let (input, _) = char('-')(input)?;
    let (input, month) = digits2(input)?;
    let (input, _) = char('-')(input)?;
    let (input, day) = digits2(input)?;
    let (input, _) = one_of("Tt")(input)?;
    let (input, (hour, minute, second)) = clock(input)?;
    let (input, nanos) = opt(fraction).parse(input)?;
    let (input, offset) = utc_offset(input)?;
    let ts = Timestamp {
        // Four digits: fits in i32.
        year: Some(year as i32),
        month,
        day,
        hour,
        minute,
        second,
        nanos: nanos.unwrap_or(0),
        utc_offset_secs: Some(offset),
    };
    Ok((input, check(input, ts)?))
}

/// `.123456` as nanoseconds; digits past the ninth are read and dropped.
fn fraction(input: &str) -> IResult<&str, u32> {
    let (input, _) = char('.')(input)?;
    let (input, digits) = till1(input, |c| !c.is_ascii_digit())?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let d = digits.as_bytes().get(i).map_or(0, |b| b - b'0');
        nanos = nanos * 10 + u32::from(d);
    }
    Ok((input, nanos))
}

/// `Z` or `+HH:MM` / `-HH:MM`, as seconds east of UTC.
fn utc_offset(input: &str) -> IResult<&str, i32> {
    alt((
        value(0, one_of("Zz")),
        map(
            (one_of("+-"), digits2, char(':'), digits2),
            |(sign, h, _, m)| {
                let secs = i32::from(h) * 3600 + i32::from(m) * 60;
                if sign == '-' { -secs } else { secs }
            },
        ),
    ))
    .parse(input)
}

/// RFC 5424 after its `<PRI>`: `1 TS HOST APP PROCID MSGID SD [BOM]MSG`.
fn rfc5424(input: &str, priority: u8) -> IResult<&str, Header<'_>> {
    let (input, _) = number(1, 3)(input)?;
    let (input, _) = char(' ')(input)?;
    let (input, timestamp) =
        alt((value(None, char('-')), map(rfc3339_timestamp, Some))).parse(input)?;
    let (input, _) = char(' ')(input)?;
    let (input, host) = nil_or_word(input)?;
    let (input, program) = nil_or_word(input)?;
    let (input, pid) = nil_or_word(input)?;
    let (input, msgid) = nil_or_word(input)?;
    let (input, structured_data) = structured_data(input)?;
    let (input, _) = alt((tag(" "), eof)).parse(input)?;
    let (message, _) = opt(char('\u{feff}')).parse(input)?;
    Ok((
        message,
        Header {
            format: Format::Rfc5424,
            priority: Some(priority),
            timestamp,
            host,
            program,
            pid,
            msgid,
            structured_data,
        },
    ))
}

/// One space-terminated RFC 5424 header field; `-` is nil.
fn nil_or_word(input: &str) -> IResult<&str, Option<&str>> {
    let (input, word) = till1(input, |c| c == b' ')?;
    let (input, _) = char(' ')(input)?;
    Ok((input, if word == "-" { None } else { Some(word) }))
}

/// `-` or one or more `[id name="value" ...]` elements, returned raw.
fn structured_data(input: &str) -> IResult<&str, Option<&str>> {
    alt((
        value(None, char('-')),
        map(recognize(many1_count(sd_element)), Some),
    ))
    .parse(input)
}

/// One `[id name="value" ...]` element.
fn sd_element(input: &str) -> IResult<&str, ()> {
    let (input, _) = char('[')(input)?;
    let (input, _) = sd_name(input)?;
    let (input, _) = nom::multi::many0_count(sd_param).parse(input)?;
    let (input, _) = char(']')(input)?;
    Ok((input, ()))
}

/// An SD-ID or PARAM-NAME: printable ASCII except `=`, blank, `]`, `"`.
fn sd_name(input: &str) -> IResult<&str, &str> {
    till1(input, |c| {
        matches!(c, b'=' | b' ' | b']' | b'"') || !c.is_ascii_graphic()
    })
}

/// ` name="value"`, the value with `\"`, `\]` and `\\` escapes, returned raw.
fn sd_param(input: &str) -> IResult<&str, (&str, &str)> {
    let (input, _) = char(' ')(input)?;
    let (input, name) = sd_name(input)?;
    let (input, _) = char('=')(input)?;
    let (input, _) = char('"')(input)?;
    let (input, raw) = sd_value(input)?;
    let (input, _) = char('"')(input)?;
    Ok((input, (name, raw)))
}

/// The raw text of a PARAM-VALUE up to its closing unescaped `"`.
fn sd_value(input: &str) -> IResult<&str, &str> {
    let b = input.as_bytes();
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'"', b'\\', &b[i..]) {
        let at = i + off;
        if b[at] == b'"' {
            // '"' is ASCII: a char boundary.
            return Ok((&input[at..], &input[..at]));
        }
        // A backslash escapes the next byte; if that byte starts a multi-byte char, the
        // continuation bytes are never '"' or '\\', so the scan stays on char boundaries.
        i = at + 2;
        if i > b.len() {
            break;
        }
    }
    Err(nom::Err::Error(nom::error::Error::new(
        input,
        nom::error::ErrorKind::Char,
    )))
}

/// A decimal number of `min..=max` digits (at most 9, so it fits in `u32`).
fn number(min: usize, max: usize) -> impl Fn(&str) -> IResult<&str, u32> {
    move |input| {
        let b = input.as_bytes();
        let mut value: u32 = 0;
        let mut n = 0;
        while n < max && n < b.len() && b[n].is_ascii_digit() {
            value = value * 10 + u32::from(b[n] - b'0');
            n += 1;
        }
        if n < min {
            return fail(input, nom::error::ErrorKind::Digit);
        }
        // Digits are ASCII: `n` is a char boundary.
        Ok((&input[n..], value))
    }
}

/// Exactly two decimal digits.
#[inline]
fn digits2(input: &str) -> IResult<&str, u8> {
    // At most 99: fits in u8.
    number(2, 2)(input).map(|(rest, v)| (rest, v as u8))
}

/// A non-empty run of bytes up to the first byte matching `stop` (always an ASCII byte, so the
/// split falls on a char boundary).
#[inline]
fn till1(input: &str, stop: impl Fn(u8) -> bool) -> IResult<&str, &str> {
    let n = input.bytes().position(stop).unwrap_or(input.len());
    if n == 0 {
        return fail(input, nom::error::ErrorKind::TakeTill1);
    }
    Ok((&input[n..], &input[..n]))
}

/// A recoverable nom error at `input`.
#[inline]
fn fail<T>(input: &str, kind: nom::error::ErrorKind) -> IResult<&str, T> {
    Err(nom::Err::Error(nom::error::Error::new(input, kind)))
}

/// Rejects timestamps whose fields are out of range (a line starting `Nov 99` has no header).
fn check(input: &str, ts: Timestamp) -> Result<Timestamp, nom::Err<nom::error::Error<&str>>> {
    let ok = (1..=12).contains(&ts.month)
        && (1..=31).contains(&ts.day)
        && ts.hour < 24
        && ts.minute < 60
        && ts.second <= 60
        && ts.utc_offset_secs.is_none_or(|o| o.abs() < 24 * 3600);
    if ok {
        Ok(ts)
    } else {
        Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::Verify,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts3164(month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Timestamp {
        Timestamp {
            year: None,
            month,
            day,
            hour,
            minute,
            second,
            nanos: 0,
            utc_offset_secs: None,
        }
    }

    fn bsd<'a>(
        host: &'a str,
        program: Option<&'a str>,
        pid: Option<&'a str>,
        ts: Timestamp,
    ) -> Header<'a> {
        Header {
            format: Format::Rfc3164,
            priority: None,
            timestamp: Some(ts),
            host: Some(host),
            program,
            pid,
            msgid: None,
            structured_data: None,
        }
    }

    #[test]
    fn rfc3164_messages_file() {
        assert_eq!(
            parse("Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:x"),
            (
                bsd(
                    "node1",
                    Some("s3server"),
                    Some("1234"),
                    ts3164(11, 21, 22, 50, 1)
                ),
                "IEC:ES0030010001:x"
            )
        );
        assert_eq!(
            parse("Nov  1 02:03:04 node1 cron: job\r"),
            (
                bsd("node1", Some("cron"), None, ts3164(11, 1, 2, 3, 4)),
                "job"
            )
        );
        let mut with_pri = bsd("h", Some("t"), None, ts3164(1, 2, 3, 4, 5));
        with_pri.priority = Some(13);
        assert_eq!(parse("<13>Jan  2 03:04:05 h t: m"), (with_pri, "m"));
    }

    #[test]
    fn rfc3164_odd_tags_and_kernel() {
        let ts = ts3164(11, 21, 22, 50, 1);
        for (line, program, pid, msg) in [
            (
                "Nov 21 22:50:01 h /usr/sbin/cron[7]: a",
                "/usr/sbin/cron",
                Some("7"),
                "a",
            ),
            (
                "Nov 21 22:50:01 h python3.6[8]: b",
                "python3.6",
                Some("8"),
                "b",
            ),
            (
                "Nov 21 22:50:01 h systemd-logind[9]: c",
                "systemd-logind",
                Some("9"),
                "c",
            ),
            (
                "Nov 21 22:50:01 h (sd-pam)[10]: d",
                "(sd-pam)",
                Some("10"),
                "d",
            ),
            (
                "Nov 21 22:50:01 h kernel: [  12.345] sd 0:0: x",
                "kernel",
                None,
                "[  12.345] sd 0:0: x",
            ),
        ] {
            assert_eq!(
                parse(line),
                (bsd("h", Some(program), pid, ts), msg),
                "{line}"
            );
        }
        // A bare IEC: is never eaten as a tag, with or without a blank after it.
        for msg in [
            "IEC:ES0030010001:x",
            "IEC: ES0020020004: x",
            "x,IEC:ES0030010001:y",
        ] {
            assert_eq!(
                parse(&format!("Nov 21 22:50:01 h {msg}")),
                (bsd("h", None, None, ts), msg)
            );
        }
        // An empty TAG (two blanks after the host): no program, the message keeps the rest.
        assert_eq!(
            parse("Nov 21 22:50:01 h  -- root[2421]: ROOT LOGIN"),
            (bsd("h", None, None, ts), " -- root[2421]: ROOT LOGIN")
        );
    }

    /// Regression (issue 21 item 12): a TAG ended by a blank instead of a colon gave no program
    /// and no pid on 139 lines of real /var/log/messages and system.log excerpts (loghub).
    /// rsyslog ends the TAG at the blank; the program and pid come from the TAG as usual.
    #[test]
    fn rfc3164_tag_ended_by_a_blank_as_rsyslog_reads_it() {
        let ts = ts3164(7, 1, 9, 1, 5);
        for (line, program, pid, msg) in [
            (
                "Jul  1 09:01:05 h sandboxd[129] ([31376]): Deny x",
                "sandboxd",
                Some("129"),
                "([31376]): Deny x",
            ),
            (
                "Jul  1 09:01:05 h com.apple.xpc.launchd[1] (com.apple.x[9]): Service exited",
                "com.apple.xpc.launchd",
                Some("1"),
                "(com.apple.x[9]): Service exited",
            ),
            (
                "Jul  1 09:01:05 h syslogd 1.4.1: restart.",
                "syslogd",
                None,
                "1.4.1: restart.",
            ),
            (
                "Jul  1 09:01:05 h Microsoft Word[14463]: x",
                "Microsoft",
                None,
                "Word[14463]: x",
            ),
            (
                "Jul  1 09:01:05 h sshd(pam_unix)[19939]: session opened",
                "sshd(pam_unix)",
                Some("19939"),
                "session opened",
            ),
            ("Jul  1 09:01:05 h kernel[0]: x", "kernel", Some("0"), "x"),
            (
                "Jul  1 09:01:05 h logrotate: ALERT",
                "logrotate",
                None,
                "ALERT",
            ),
            (
                "Jul  1 09:01:05 h last message repeated 2 times",
                "last",
                None,
                "message repeated 2 times",
            ),
            ("Jul  1 09:01:05 h t[]: x", "t", None, "x"),
            ("Jul  1 09:01:05 h t[12: x", "t", None, "x"),
        ] {
            assert_eq!(
                parse(line),
                (bsd("h", Some(program), pid, ts), msg),
                "{line}"
            );
        }
    }

    #[test]
    fn rfc3339_file_format() {
        let header = |nanos, offset| Header {
            format: Format::Rfc3339,
            priority: None,
            timestamp: Some(Timestamp {
                year: Some(2026),
                month: 11,
                day: 21,
                hour: 22,
                minute: 50,
                second: 1,
                nanos,
                utc_offset_secs: Some(offset),
            }),
            host: Some("node1"),
            program: Some("s3server"),
            pid: Some("1234"),
            msgid: None,
            structured_data: None,
        };
        assert_eq!(
            parse("2026-11-21T22:50:01.123456+00:00 node1 s3server[1234]: msg"),
            (header(123_456_000, 0), "msg")
        );
        assert_eq!(
            parse("2026-11-21T22:50:01Z node1 s3server[1234]: msg"),
            (header(0, 0), "msg")
        );
        assert_eq!(
            parse("2026-11-21T22:50:01.5-05:30 node1 s3server[1234]: msg"),
            (header(500_000_000, -(5 * 3600 + 30 * 60)), "msg")
        );
    }

    #[test]
    fn rfc5424() {
        let line = r#"<165>1 2026-11-21T22:50:01.003Z node1 s3server 1234 ID47 [ex@1 a="x\"y\]z\\" b="2"][meta seq="1"] "#.to_string()
            + "\u{feff}IEC:ES0030010001:msg";
        let (h, msg) = parse(&line);
        assert_eq!(msg, "IEC:ES0030010001:msg");
        assert_eq!(
            h,
            Header {
                format: Format::Rfc5424,
                priority: Some(165),
                timestamp: Some(Timestamp {
                    year: Some(2026),
                    month: 11,
                    day: 21,
                    hour: 22,
                    minute: 50,
                    second: 1,
                    nanos: 3_000_000,
                    utc_offset_secs: Some(0)
                }),
                host: Some("node1"),
                program: Some("s3server"),
                pid: Some("1234"),
                msgid: Some("ID47"),
                structured_data: Some(r#"[ex@1 a="x\"y\]z\\" b="2"][meta seq="1"]"#),
            }
        );
        let (h, msg) = parse("<13>1 - - - - - -");
        assert_eq!(
            (
                h.format,
                h.timestamp,
                h.host,
                h.program,
                h.structured_data,
                msg
            ),
            (Format::Rfc5424, None, None, None, None, "")
        );
    }

    #[test]
    fn unknown_keeps_whole_line() {
        for line in [
            "",
            "hello world",
            "Nov 99 22:50:01 h t: m",
            "<999>1 - - - - - - x",
            "Nov 21 22:50:01",
            "\0\0\0",
        ] {
            assert_eq!(parse(line), (Header::unknown(), line));
        }
        assert_eq!(parse("plain\r"), (Header::unknown(), "plain"));
    }

    #[test]
    fn named_parsers() {
        assert_eq!(pri("<34>x"), Ok(("x", 34)));
        assert!(pri("<192>x").is_err());
        assert_eq!(month("Dec 1"), Ok((" 1", 12)));
        assert_eq!(clock("01:02:03 h"), Ok((" h", (1, 2, 3))));
        assert_eq!(fraction(".1234567891 h"), Ok((" h", 123_456_789)));
        assert_eq!(utc_offset("+01:00 h"), Ok((" h", 3600)));
        assert_eq!(hostname("h t"), Ok(("t", "h")));
        assert_eq!(tag_pid("t[1]: m"), Ok(("m", ("t", Some("1")))));
        assert_eq!(tag_pid("t[1] (x): m"), Ok(("(x): m", ("t", Some("1")))));
        assert_eq!(tag_pid("t"), Ok(("", ("t", None))));
        assert_eq!(nil_or_word("- x"), Ok(("x", None)));
        assert_eq!(sd_value(r#"a\"b" x"#), Ok((r#"" x"#, r#"a\"b"#)));
        assert_eq!(sd_param(r#" k="v"]"#), Ok(("]", ("k", "v"))));
        assert_eq!(sd_element(r#"[id k="v"] m"#), Ok((" m", ())));
        assert_eq!(structured_data("[a][b] m"), Ok((" m", Some("[a][b]"))));
        assert_eq!(sd_name("id@1 k"), Ok((" k", "id@1")));
    }
}
