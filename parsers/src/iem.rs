//! The IEM payload: `IEC:<SEV><SRC><COMP:3><MOD:3><EVT:4>:<description>`.

use std::fmt;

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
    /// 0x001..=0x0ff
    pub component: u16,
    /// 0x001..=0x0ff
    pub module: u16,
    /// 0x0001..=0x270f
    pub event: u16,
}

impl fmt::Display for Code {
    /// Canonical form: letters upper case, hex digits lower case (`ES0030010001`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{:03x}{:03x}{:04x}",
            self.severity.letter(),
            self.source.letter(),
            self.component,
            self.module,
            self.event
        )
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
    /// A field outside its range (component 000, event 2710...).
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

/// Finds the first `IEC:` marker at memchr speed.
pub fn find_marker(message: &str) -> Option<usize> {
    memchr::memmem::find(message.as_bytes(), b"IEC:")
}

/// Classifies a message: no `IEC:` marker -> `NotIem`; the first marker followed by a valid code
/// -> `Iem`; otherwise `Malformed` with the reason of the first marker.
pub fn classify(message: &str) -> Classified<'_> {
    let _ = message;
    unimplemented!("iem::classify")
}
