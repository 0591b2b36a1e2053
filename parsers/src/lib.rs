//! Zero-copy parsers for the text iemd reads: syslog headers, journald JSON and IEM payloads.
//!
//! Layout:
//! - `syslog`: the three host syslog header shapes (RFC 3164, RFC 3339 file format, RFC 5424).
//! - `journal`: one `journalctl -o json` object per line.
//! - `iem`: finds the `IEC:` marker and classifies a message as not an IEM, an IEM, or malformed.
//!
//! No I/O, no clock, no allocation on the common path: every output borrows from the input.
//! The caller resolves time (RFC 3164 carries no year or zone) and decides what to do with the result.

pub mod iem;
pub mod journal;
pub mod syslog;

/// One syslog line split into its header, its message, and the IEM classification of the message.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine<'a> {
    pub header: syslog::Header<'a>,
    pub message: &'a str,
    pub iem: iem::Classified<'a>,
}

/// Parses one syslog line (without its line terminator) and classifies its message.
pub fn parse_syslog_line(line: &str) -> ParsedLine<'_> {
    let (header, message) = syslog::parse(line);
    ParsedLine {
        header,
        message,
        iem: iem::classify(message),
    }
}

/// The agent's per-line entry point: a line without the `IEC:` marker costs one marker scan and
/// gives `None` (its header is never parsed: nothing downstream needs it); a line with the marker
/// is parsed as [`parse_syslog_line`] does (its classification may still be `NotIem` when the
/// marker sits in the header).
pub fn parse_iem_line(line: &str) -> Option<ParsedLine<'_>> {
    iem::find_marker(line)?;
    Some(parse_syslog_line(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_without_the_marker_are_not_parsed() {
        assert_eq!(
            parse_iem_line("Nov 21 22:50:01 node1 sshd[1]: Accepted publickey"),
            None
        );
        assert_eq!(parse_iem_line("IEC 60870 is a standard"), None);
        let line = "Nov 21 22:50:01 node1 s3server[1]: IEC:ES0030010001:down";
        assert_eq!(parse_iem_line(line), Some(parse_syslog_line(line)));
    }
}
