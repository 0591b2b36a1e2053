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
