//! One journald entry as printed by `journalctl -o json` (one JSON object per line).

use std::borrow::Cow;

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

/// Parses one `journalctl -o json` line.
pub fn parse(line: &str) -> Result<Entry<'_>, Error> {
    let _ = line;
    unimplemented!("journal::parse")
}
