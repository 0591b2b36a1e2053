//! Formats and writes one IEM, the one way services produce them (`iemctl emit`).
//!
//! Layout:
//! - this file: validating the code and the fields, escaping the message, the [`Record`] and the
//!   [`Emitter`] that writes records through one [`Transport`];
//! - `journal`: the native journald protocol (datagram, binary values, sealed memfd for large ones);
//! - `syslog`: RFC 3164 (syslog(3) form) / RFC 5424 datagrams for `/dev/log` and the file line for stdout.
//!
//! What one emit writes is always one record: the message is escaped (see [`escape_message`]) so
//! that no newline, carriage return, NUL, control character or ANSI escape survives into the log
//! line, and a message can never forge a second line or rewrite the terminal. The text is
//! `IEC:<code>:<escaped message>`, followed by ` {json}` when extra data is given; the JSON holds
//! no raw control, DEL or line separator either ([`escape_json`]). `iemctl tail` prints alerts
//! through the same two functions.

pub(crate) mod journal;
pub(crate) mod syslog;

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use iem_parsers::iem::{Code, Field, Reason, Severity, Source};

pub use syslog::{Facility, SyslogFormat};

/// The default journald native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The default syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// The default limit on the escaped message, in bytes.
pub const DEFAULT_MAX_LENGTH: usize = 8192;

/// Why an IEM could not be emitted. [`EmitError::exit_code`] gives the CLI's exit status.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("invalid IEM code {code:?}: {reason}")]
    Code { code: String, reason: Reason },
    #[error("invalid {field} {value:?}: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("message is empty")]
    EmptyMessage,
    #[error("message is {len} bytes after escaping, more than the maximum of {max} (--max-length)")]
    MessageTooLong { len: usize, max: usize },
    #[error("IEM code {code} is not in the catalog (--strict)")]
    NotInCatalog { code: String },
    #[error("cannot write to {}: {source}", socket.display())]
    Transport {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] io::Error),
}

impl EmitError {
    /// 2 for usage and validation errors, 3 when the transport is unavailable.
    pub fn exit_code(&self) -> u8 {
        match self {
            EmitError::Transport { .. } | EmitError::Stdout(_) => 3,
            _ => 2,
        }
    }
}

/// Parses a severity given as a letter (`E`, `e`) or a name (`error`, `Error`).
pub fn parse_severity(s: &str) -> Result<Severity, EmitError> {
    let found = match s.as_bytes() {
        [c] => Severity::from_letter(*c),
        _ => Severity::ALL
            .into_iter()
            .find(|sev| sev.name().eq_ignore_ascii_case(s)),
    };
    found.ok_or_else(|| EmitError::Field {
        field: "severity",
        value: s.to_string(),
        reason: "expected one of A X E W N C I D B or alert, critical, error, warning, notice, \
                 configuration, informational, detail, debug"
            .into(),
    })
}

/// Parses a source given as a letter (`S`) or a name (`software`).
pub fn parse_source(s: &str) -> Result<Source, EmitError> {
    let found = match s.as_bytes() {
        [c] => Source::from_letter(*c),
        _ => Source::ALL
            .into_iter()
            .find(|src| src.name().eq_ignore_ascii_case(s)),
    };
    found.ok_or_else(|| EmitError::Field {
        field: "source",
        value: s.to_string(),
        reason: "expected one of H S F O or hardware, software, firmware, os".into(),
    })
}

/// Checks a numeric field's range; `value` is already parsed.
fn check_range(field: Field, value: u16) -> Result<u16, Reason> {
    if field.range().contains(&value) {
        Ok(value)
    } else {
        Err(Reason::OutOfRange { field, value })
    }
}

/// Parses a 12-character IEM code (`ES0030010001`, letters in either case, hex in either case).
pub fn parse_code(code: &str) -> Result<Code, EmitError> {
    Code::parse(code).map_err(|reason| EmitError::Code {
        code: code.to_string(),
        reason,
    })
}

/// Parses a component, module or event number given on its own: hex digits, optionally `0x`-prefixed
/// (`003`, `0x3`, `270f`), at most the field's width.
pub fn parse_field(field: Field, s: &str) -> Result<u16, EmitError> {
    let name = match field {
        Field::Component => "component",
        Field::Module => "module",
        Field::Event => "event",
    };
    let fail = |reason: String| EmitError::Field {
        field: name,
        value: s.to_string(),
        reason,
    };
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let width = field.width();
    if digits.is_empty() || digits.len() > width || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail(format!("expected 1 to {width} hex digits")));
    }
    let value = u16::from_str_radix(digits, 16).map_err(|e| fail(e.to_string()))?;
    check_range(field, value).map_err(|_| {
        let (lo, hi) = field.range().into_inner();
        fail(format!("out of range {lo:#x}..={hi:#x}"))
    })
}

/// Escapes a message so that it stays one line and holds no terminal control sequence.
///
/// The scheme (reversible, every output byte is printable or an ordinary space):
/// - `\` becomes `\\`;
/// - newline, carriage return and tab become `\n`, `\r`, `\t`;
/// - every other C0 control (NUL, ESC...) and DEL become `\xNN` (`\x00`, `\x1b`, `\x7f`);
/// - C1 controls (U+0080..U+009F, which include the 8-bit CSI U+009B) and the Unicode line and
///   paragraph separators U+2028/U+2029 become `\u{NNNN}`.
///
/// An ANSI sequence such as ESC `[31m` therefore appears as the harmless text `\x1b[31m`.
pub fn escape_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Makes JSON text safe for a log line or a terminal without changing what it means: DEL, the C1
/// controls (U+0080..U+009F) and U+2028/U+2029, which JSON allows raw inside strings, become
/// `\uNNNN` escapes, and so does any raw C0 control (valid JSON has none inside strings); a
/// newline, carriage return or tab, which valid JSON has only between tokens, becomes a space.
/// Text that is not JSON comes out with no such character either.
pub fn escape_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Validates `--json-extra`: a JSON object, re-serialized compactly on one line, with no raw
/// control character, DEL or line separator ([`escape_json`]).
pub fn compact_json_object(text: &str) -> Result<String, EmitError> {
    let fail = |reason: String| EmitError::Field {
        field: "json-extra",
        value: text.to_string(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
    if !value.is_object() {
        return Err(fail("expected a JSON object".into()));
    }
    // serde_json escapes the C0 controls inside strings but writes DEL, C1 and U+2028/U+2029
    // raw: escape_json writes those as \u escapes too.
    serde_json::to_string(&value)
        .map(|json| escape_json(&json))
        .map_err(|e| fail(e.to_string()))
}

/// Who emits: the syslog tag / `SYSLOG_IDENTIFIER` and the pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tag: String,
    pub pid: u32,
}

impl Identity {
    /// A tag given on the command line: 1 to 48 printable ASCII characters other than space,
    /// `[`, `]` and `:` (RFC 5424 APP-NAME, and what an RFC 3164 tag parser accepts).
    pub fn new(tag: &str, pid: u32) -> Result<Identity, EmitError> {
        let ok = !tag.is_empty()
            && tag.len() <= 48
            && tag
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b':'));
        if !ok {
            return Err(EmitError::Field {
                field: "tag",
                value: tag.to_string(),
                reason: "expected 1 to 48 printable ASCII characters, no space, '[', ']' or ':'"
                    .into(),
            });
        }
        Ok(Identity {
            tag: tag.to_string(),
            pid,
        })
    }

    /// The parent process: its name from `/proc/<ppid>/comm` (made a valid tag) and its pid.
    pub fn parent() -> Identity {
        let pid = std::os::unix::process::parent_id();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let tag: String = comm
            .trim_end_matches('\n')
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && !matches!(c, '[' | ']' | ':') {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        Identity {
            tag: if tag.is_empty() { "iemctl".into() } else { tag },
            pid,
        }
    }
}

/// One IEM ready to write: the code, the escaped message, the compact extra JSON, and the exact
/// (unescaped) description for the journal's `IEM_DESCRIPTION` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) raw_message: String,
    pub(crate) extra: Option<String>,
}

impl Record {
    /// Escapes `message` and checks it is not empty and at most `max_length` bytes once escaped.
    /// `extra` must already be compact JSON ([`compact_json_object`]).
    pub fn new(
        code: Code,
        message: &str,
        extra: Option<String>,
        max_length: usize,
    ) -> Result<Record, EmitError> {
        if message.trim().is_empty() {
            return Err(EmitError::EmptyMessage);
        }
        let escaped = escape_message(message);
        if escaped.len() > max_length {
            return Err(EmitError::MessageTooLong {
                len: escaped.len(),
                max: max_length,
            });
        }
        Ok(Record {
            code,
            message: escaped,
            raw_message: message.to_string(),
            extra,
        })
    }

    /// The one-line text: `IEC:<code>:<message>` and ` {json}` when there is extra data.
    pub(crate) fn text(&self) -> String {
        match &self.extra {
            Some(json) => format!("IEC:{}:{} {}", self.code, self.message, json),
            None => format!("IEC:{}:{}", self.code, self.message),
        }
    }
}

/// The syslog/journald priority of a severity: A->1, X->2, E->3, W->4, N,C->5, I->6, D,B->7.
pub(crate) fn priority(severity: Severity) -> u8 {
    match severity {
        Severity::Alert => 1,
        Severity::Critical => 2,
        Severity::Error => 3,
        Severity::Warning => 4,
        Severity::Notice | Severity::Configuration => 5,
        Severity::Informational => 6,
        Severity::Detail | Severity::Debug => 7,
    }
}

/// The journal `MESSAGE_ID` of a code: 128 bits of BLAKE3 over a fixed prefix and the canonical
/// code, in lower-case hex. Stable across hosts and releases (changing the prefix would break
/// `journalctl MESSAGE_ID=...` filters).
pub(crate) fn message_id(code: &Code) -> String {
    let hash = blake3::hash(format!("iemd.message_id.v1:{code}").as_bytes());
    hash.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the code against the catalog: `Ok(true)` known, `Ok(false)` unknown (the caller warns),
/// `Err` unknown with `strict`. `known` takes the canonical 12-character code.
pub fn check_catalog(code: &Code, in_catalog: bool, strict: bool) -> Result<bool, EmitError> {
    let canonical = code.to_string();
    if in_catalog {
        Ok(true)
    } else if strict {
        Err(EmitError::NotInCatalog { code: canonical })
    } else {
        Ok(false)
    }
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The native journal protocol on this socket.
    Journald { socket: PathBuf },
    /// Syslog datagrams on this socket.
    Syslog {
        socket: PathBuf,
        format: SyslogFormat,
        facility: Facility,
    },
    /// The line a syslog file would hold (RFC 3339 high-precision timestamp), on stdout.
    Stdout,
}

impl Transport {
    /// `--to auto`: journald when its default socket exists, else syslog on `/dev/log`.
    pub fn auto(format: SyslogFormat, facility: Facility) -> Transport {
        if Path::new(JOURNAL_SOCKET).exists() {
            Transport::Journald {
                socket: JOURNAL_SOCKET.into(),
            }
        } else {
            Transport::Syslog {
                socket: SYSLOG_SOCKET.into(),
                format,
                facility,
            }
        }
    }
}

/// Writes records through one transport, reusing its socket.
pub struct Emitter {
    transport: Transport,
    identity: Identity,
    host: String,
    socket: Option<UnixDatagram>,
}

impl Emitter {
    pub fn new(transport: Transport, identity: Identity) -> Emitter {
        Emitter {
            transport,
            identity,
            host: hostname(),
            socket: None,
        }
    }

    fn socket(&mut self, path: &Path) -> Result<&UnixDatagram, EmitError> {
        if self.socket.is_none() {
            let socket = UnixDatagram::unbound().map_err(|source| EmitError::Transport {
                socket: path.to_path_buf(),
                source,
            })?;
            self.socket = Some(socket);
        }
        self.socket.as_ref().ok_or_else(|| EmitError::Transport {
            socket: path.to_path_buf(),
            source: io::Error::other("socket not open"),
        })
    }

    /// Writes one record, stamped now.
    pub fn emit(&mut self, record: &Record) -> Result<(), EmitError> {
        let now: DateTime<FixedOffset> = chrono::Local::now().fixed_offset();
        match self.transport.clone() {
            Transport::Journald { socket } => {
                let payload = journal::encode(&journal::fields(record, &self.identity));
                let sock = self.socket(&socket)?;
                journal::send(sock, &socket, &payload).map_err(|source| EmitError::Transport {
                    socket: socket.clone(),
                    source,
                })
            }
            Transport::Syslog {
                socket,
                format,
                facility,
            } => {
                let line = match format {
                    SyslogFormat::Rfc5424 => {
                        syslog::rfc5424(record, &self.identity, facility, &self.host, now)
                    }
                    SyslogFormat::Rfc3164 => syslog::rfc3164(record, &self.identity, facility, now),
                };
                let sock = self.socket(&socket)?;
                sock.send_to(line.as_bytes(), &socket)
                    .map(|_| ())
                    .map_err(|source| EmitError::Transport { socket, source })
            }
            Transport::Stdout => {
                let line = syslog::file_line(record, &self.identity, &self.host, now);
                let mut out = io::stdout().lock();
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .map_err(EmitError::Stdout)
            }
        }
    }
}

/// This host's name as syslog writes it: the node name up to the first dot, or `localhost`.
pub(crate) fn hostname() -> String {
    let name = crate::alert::host_name();
    let short = name.split('.').next().unwrap_or("");
    if short.is_empty() || !short.bytes().all(|b| b.is_ascii_graphic()) {
        "localhost".into()
    } else {
        short.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> Code {
        parse_code(s).unwrap()
    }

    #[test]
    fn parse_code_canonicalises_case() {
        let c = code("es003001000A");
        assert_eq!(c.to_string(), "ES003001000a");
        assert_eq!(c.severity, Severity::Error);
        assert_eq!(c.source, Source::Software);
        assert_eq!((c.component, c.module, c.event), (3, 1, 10));
    }

    #[test]
    fn parse_code_reasons() {
        let reason = |s: &str| match parse_code(s) {
            Err(EmitError::Code { reason, .. }) => reason,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(reason("ES003001001"), Reason::CodeLength { found: 11 });
        assert_eq!(reason("0030010001"), Reason::CodeLength { found: 10 });
        assert_eq!(reason("ZS0030010001"), Reason::UnknownSeverity('Z'));
        assert_eq!(reason("EQ0030010001"), Reason::UnknownSource('Q'));
        assert_eq!(
            reason("ES00g0010001"),
            Reason::NotHex {
                field: Field::Component
            }
        );
        assert_eq!(
            reason("ES0000010001"),
            Reason::OutOfRange {
                field: Field::Component,
                value: 0
            }
        );
        assert_eq!(
            reason("ES1010010001"),
            Reason::OutOfRange {
                field: Field::Component,
                value: 0x101
            }
        );
        assert_eq!(
            reason("ES0030000001"),
            Reason::OutOfRange {
                field: Field::Module,
                value: 0
            }
        );
        assert_eq!(
            reason("ES0030012711"),
            Reason::OutOfRange {
                field: Field::Event,
                value: 0x2711
            }
        );
        assert_eq!(
            reason("ES003001+001"),
            Reason::NotHex {
                field: Field::Event
            }
        );
        assert_eq!(reason("ES003001000é"), Reason::CodeLength { found: 12 });
        assert_eq!(code("AS0ff0ff270f").to_string(), "AS0ff0ff270f");
        assert_eq!(code("AS1001002710").to_string(), "AS1001002710");
    }

    #[test]
    fn severity_and_source_by_letter_or_name() {
        assert_eq!(parse_severity("e").unwrap(), Severity::Error);
        assert_eq!(parse_severity("Warning").unwrap(), Severity::Warning);
        assert_eq!(parse_severity("B").unwrap(), Severity::Debug);
        assert!(matches!(
            parse_severity("fatal"),
            Err(EmitError::Field {
                field: "severity",
                ..
            })
        ));
        assert_eq!(parse_source("s").unwrap(), Source::Software);
        assert_eq!(parse_source("OS").unwrap(), Source::Os);
        assert!(parse_source("Z").is_err());
    }

    #[test]
    fn parse_field_widths_and_ranges() {
        assert_eq!(parse_field(Field::Component, "003").unwrap(), 3);
        assert_eq!(parse_field(Field::Component, "0xff").unwrap(), 0xff);
        assert_eq!(parse_field(Field::Event, "2710").unwrap(), 0x2710);
        assert!(parse_field(Field::Event, "2711").is_err());
        assert_eq!(parse_field(Field::Module, "100").unwrap(), 0x100);
        assert!(parse_field(Field::Module, "101").is_err());
        assert!(parse_field(Field::Module, "000").is_err());
        assert!(parse_field(Field::Module, "0100").is_err());
        assert!(parse_field(Field::Module, "").is_err());
        assert!(parse_field(Field::Module, "-1").is_err());
    }

    #[test]
    fn escape_scheme() {
        assert_eq!(escape_message("plain text é"), "plain text é");
        assert_eq!(
            escape_message("a\nb\rc\td\0e\x1b[31mf\x7f\\g"),
            "a\\nb\\rc\\td\\x00e\\x1b[31mf\\x7f\\\\g"
        );
        assert_eq!(
            escape_message("x\u{9b}1m\u{85}\u{2028}y"),
            "x\\u{009b}1m\\u{0085}\\u{2028}y"
        );
    }

    /// Nothing that ends a line or drives a terminal: C0 and C1 controls, DEL, U+2028, U+2029.
    fn raw_control(c: char) -> bool {
        c.is_control() || c == '\u{2028}' || c == '\u{2029}'
    }

    /// Undoes [`escape_message`] (the test's witness that the escaping is reversible).
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let code = match chars.next() {
                Some('n') => '\n' as u32,
                Some('r') => '\r' as u32,
                Some('t') => '\t' as u32,
                Some('\\') => '\\' as u32,
                Some('x') => {
                    u32::from_str_radix(&chars.by_ref().take(2).collect::<String>(), 16).unwrap()
                }
                Some('u') => {
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').skip(1).collect();
                    u32::from_str_radix(&hex, 16).unwrap()
                }
                other => panic!("bad escape {other:?} in {s:?}"),
            };
            out.push(char::from_u32(code).unwrap());
        }
        out
    }

    /// Regression (issue 14): `--json-extra` passed raw C1 controls, DEL and U+2028/U+2029 into
    /// the log line. Over every code point: the escaped message and the compact JSON extra hold
    /// none of them, the message escaping is reversible, and the JSON means the same.
    #[test]
    fn no_code_point_reaches_the_line_raw() {
        let all: String = (0..=0x10_ffff).filter_map(char::from_u32).collect();
        let message = escape_message(&all);
        assert!(!message.chars().any(raw_control));
        assert_eq!(unescape(&message), all);
        // Everything else passes unchanged, in order.
        let printable: String = (' '..='~').filter(|&c| c != '\\').collect();
        assert_eq!(escape_message(&printable), printable);
        let kept = |c: &char| !c.is_ascii() && !raw_control(*c);
        assert!(message.chars().filter(kept).eq(all.chars().filter(kept)));
        let value = serde_json::json!({"all": all, "key\u{85}\u{2028}": [all]});
        let extra = compact_json_object(&value.to_string()).unwrap();
        assert!(!extra.chars().any(raw_control));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&extra).unwrap(),
            value
        );
        let record = Record::new(code("ES0030010001"), &all, Some(extra), usize::MAX).unwrap();
        assert!(!record.text().chars().any(raw_control));
        // Text that is not JSON (a body received from elsewhere) comes out clean too.
        assert!(!escape_json(&all).chars().any(raw_control));
        assert_eq!(
            escape_json("{\"a\":\n1,\t\"b\":\"\u{9b}\u{7f}\"}"),
            r#"{"a": 1, "b":"\u009b\u007f"}"#
        );
    }

    #[test]
    fn record_text_and_limits() {
        let r = Record::new(code("ES0030010001"), "a\nb", None, 100).unwrap();
        assert_eq!(r.text(), "IEC:ES0030010001:a\\nb");
        assert_eq!(r.raw_message, "a\nb");
        let extra = compact_json_object("{ \"host\" : \"n1\",\n \"n\": [1, 2] }").unwrap();
        let r = Record::new(code("WS0080010001"), "lost", Some(extra), 100).unwrap();
        assert_eq!(r.text(), r#"IEC:WS0080010001:lost {"host":"n1","n":[1,2]}"#);
        assert!(matches!(
            Record::new(code("ES0030010001"), " \t", None, 100),
            Err(EmitError::EmptyMessage)
        ));
        // The limit counts bytes after escaping: "ab" and 4 newlines are 10 bytes.
        assert!(Record::new(code("ES0030010001"), "ab\n\n\n\n", None, 10).is_ok());
        assert!(matches!(
            Record::new(code("ES0030010001"), "ab\n\n\n\n", None, 9),
            Err(EmitError::MessageTooLong { len: 10, max: 9 })
        ));
    }

    #[test]
    fn json_extra_must_be_an_object() {
        assert!(compact_json_object("[1]").is_err());
        assert!(compact_json_object("{\"a\":").is_err());
        assert_eq!(
            compact_json_object("{\"a\":\"x\\ny\"}").unwrap(),
            r#"{"a":"x\ny"}"#
        );
    }

    #[test]
    fn identity_tag_rules() {
        assert!(Identity::new("s3server", 1).is_ok());
        for bad in ["", "a b", "a:b", "a[1]", "x\n", &"t".repeat(49)] {
            assert!(Identity::new(bad, 1).is_err(), "{bad:?}");
        }
        let parent = Identity::parent();
        assert_eq!(parent.pid, std::os::unix::process::parent_id());
        assert!(Identity::new(&parent.tag, parent.pid).is_ok());
    }

    #[test]
    fn priorities_and_message_ids() {
        let p: Vec<u8> = Severity::ALL.into_iter().map(priority).collect();
        // A X E W N C I D B
        assert_eq!(p, [1, 2, 3, 4, 5, 5, 6, 7, 7]);
        let a = message_id(&code("ES0030010001"));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, message_id(&code("es0030010001")));
        assert_ne!(a, message_id(&code("AS0030010001")));
    }

    #[test]
    fn catalog_check() {
        let c = code("ES0030010001");
        assert!(check_catalog(&c, true, true).unwrap());
        assert!(!check_catalog(&c, false, false).unwrap());
        let err = check_catalog(&c, false, true).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("ES0030010001"));
    }
}
