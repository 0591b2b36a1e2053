//! Decoding: one raw line (syslog or `journalctl -o json`, detected per line) into an alert,
//! validated against and named by the catalog.

use chrono::{DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use iem_parsers::iem::{Classified, Code};
use iem_parsers::{journal, syslog};

use super::Catalog;
use crate::alert::{self, Alert, Coded, Kind, Named, Origin, OriginKind};

/// Where a line was read: enough to name its origin and to give it a stable id.
#[derive(Debug, Clone, Copy)]
pub struct LineSource<'a> {
    pub kind: OriginKind,
    /// The file path (files) or `-` (stdin).
    pub path: Option<&'a str>,
    /// Byte offset of the line in its file (files and stdin).
    pub offset: Option<u64>,
    /// The file's identity independent of its name (a hash of its first line), so that the same
    /// line keeps its id when the file is rotated; 0 when unknown.
    pub fingerprint: u64,
    /// True when the line was cut at the maximum line length.
    pub truncated: bool,
}

/// How to read times that carry no year or zone (RFC 3164), and the time of lines with no time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The year for RFC 3164 stamps; `None`: the current year, or the previous one for a stamp
    /// more than a day in the future (a December line read in January).
    pub year: Option<i32>,
    pub tz: Tz,
    pub now: DateTime<Utc>,
}

impl Clock {
    pub fn now(tz: Tz) -> Clock {
        Clock {
            year: None,
            tz,
            now: Utc::now(),
        }
    }
}

/// Decodes lines against a catalog.
#[derive(Debug, Clone)]
pub struct Decoder<'c> {
    catalog: &'c Catalog,
}

impl<'c> Decoder<'c> {
    pub fn new(catalog: &'c Catalog) -> Self {
        Decoder { catalog }
    }

    /// The alert for one line, or `None` when the line holds no IEM marker.
    /// A journald line (a JSON object) that cannot be read is treated as plain text.
    pub fn decode(&self, line: &[u8], source: &LineSource<'_>, clock: &Clock) -> Option<Alert> {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if journal::looks_like_json(text)
            && let Ok(entry) = journal::parse(text)
        {
            return self.decode_journal(&entry, source, clock);
        }
        let parsed = iem_parsers::parse_iem_line(text)?;
        if matches!(parsed.iem, Classified::NotIem) {
            return None;
        }
        let h = &parsed.header;
        let origin = Origin {
            kind: source.kind,
            path: source.path.map(str::to_owned),
            cursor: None,
            offset: source.offset,
            program: h.program.map(str::to_owned),
            pid: h.pid.map(str::to_owned),
            host: h.host.map(str::to_owned),
            priority: h.priority,
        };
        let time = h
            .timestamp
            .and_then(|ts| resolve_time(&ts, clock))
            .unwrap_or_else(|| clock.now.fixed_offset());
        let id = stable_id(source, None, text);
        Some(self.alert(id, parsed.iem, time, origin, text, source.truncated))
    }

    /// The alert for one journal entry, or `None` when it holds no IEM. Entries written by
    /// `iemctl emit` carry `IEM_CODE`, which is used when the message itself has no marker.
    pub fn decode_journal(
        &self,
        entry: &journal::Entry<'_>,
        source: &LineSource<'_>,
        clock: &Clock,
    ) -> Option<Alert> {
        let mut classified = iem_parsers::iem::classify(&entry.message);
        let with_code;
        if matches!(classified, Classified::NotIem) {
            let code = entry.iem_code.as_deref()?;
            with_code = format!("IEC:{code}:{}", entry.message);
            classified = iem_parsers::iem::classify(&with_code);
        }
        let origin = Origin {
            kind: OriginKind::Journald,
            path: None,
            cursor: entry.cursor.as_deref().map(str::to_owned),
            offset: None,
            program: entry
                .identifier
                .as_deref()
                .or(entry.comm.as_deref())
                .map(str::to_owned),
            pid: entry.pid.as_deref().map(str::to_owned),
            host: entry.hostname.as_deref().map(str::to_owned),
            priority: entry.priority,
        };
        let time = entry
            .realtime_usec
            .and_then(|us| DateTime::<Utc>::from_timestamp_micros(i64::try_from(us).ok()?))
            .unwrap_or(clock.now)
            .fixed_offset();
        let id = stable_id(source, entry.cursor.as_deref(), &entry.message);
        Some(self.alert(
            id,
            classified,
            time,
            origin,
            &entry.message,
            source.truncated,
        ))
    }

    fn alert(
        &self,
        id: String,
        classified: Classified<'_>,
        time: DateTime<FixedOffset>,
        origin: Origin,
        raw: &str,
        truncated: bool,
    ) -> Alert {
        let mut alert = Alert {
            schema: alert::SCHEMA.into(),
            id,
            kind: Kind::Malformed,
            code: None,
            severity: None,
            alert_type: None,
            source_type: None,
            component: None,
            module: None,
            event: None,
            in_catalog: false,
            message: String::new(),
            impact: None,
            recommendation: None,
            count: None,
            extra: None,
            reason: None,
            time: time.to_rfc3339(),
            origin,
            raw: raw.to_owned(),
            truncated,
            host: None,
            hardware: Vec::new(),
        };
        match classified {
            Classified::NotIem => {}
            Classified::Malformed(m) => {
                alert.reason = Some(m.reason.to_string());
                alert.message = m.text.to_owned();
            }
            Classified::Iem(iem) => {
                self.fill_code(&mut alert, &iem.code);
                alert.kind = Kind::Iem;
                alert.count = iem.count;
                alert.message = iem.description.to_owned();
                if let Some(extra) = iem.extra {
                    match serde_json::from_str(extra) {
                        Ok(value) => alert.extra = Some(value),
                        // Balanced but not JSON: it stays part of the text rather than being lost.
                        Err(_) => {
                            alert.message = format!("{} {extra}", alert.message).trim().to_owned()
                        }
                    }
                }
            }
        }
        alert
    }

    fn fill_code(&self, alert: &mut Alert, code: &Code) {
        let found = self.catalog.lookup(code);
        alert.code = Some(code.to_string());
        alert.severity = Some(Coded {
            code: code.severity.code().into(),
            name: code.severity.name().into(),
        });
        alert.alert_type = Some(code.severity.alert_type().into());
        alert.source_type = Some(Coded {
            code: code.source.code().into(),
            name: code.source.name().into(),
        });
        alert.component = Some(Named {
            id: hex_digits(code.component, 3),
            name: found.component.cloned(),
        });
        alert.module = Some(Named {
            id: hex_digits(code.module, 3),
            name: found.module.cloned(),
        });
        alert.event = Some(Named {
            id: hex_digits(code.event, 4),
            name: found.event.map(|e| e.description.clone()),
        });
        alert.in_catalog = found.event.is_some();
        if let Some(event) = found.event {
            alert.impact = event.impact.clone();
            alert.recommendation = event.recommendation.clone();
        }
    }
}

/// The id of a line: a hash of where it is (file fingerprint and offset, or journal cursor) and
/// what it says. The same line at the same position gives the same id across runs, restarts and
/// rotations, so consumers can de-duplicate what at-least-once delivery repeats.
pub fn stable_id(source: &LineSource<'_>, cursor: Option<&str>, text: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    match cursor {
        Some(cursor) => {
            hasher.update(b"journald\0");
            hasher.update(cursor.as_bytes());
        }
        None => {
            hasher.update(b"file\0");
            hasher.update(&source.fingerprint.to_le_bytes());
            hasher.update(&source.offset.unwrap_or(0).to_le_bytes());
        }
    }
    hasher.update(b"\0");
    hasher.update(text.as_bytes());
    let hash = hasher.finalize();
    hex(&hash.as_bytes()[..16])
}

/// The last `width` lower-case hex digits of `value`, zero-padded (`hex_digits(0xa, 3)` = `00a`).
fn hex_digits(value: u16, width: u32) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..width)
        .rev()
        .map(|i| char::from(DIGITS[usize::from((value >> (4 * i)) & 0xf)]))
        .collect()
}

/// Lower-case hex of `bytes` (a hot path: one allocation, no formatting machinery).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The absolute time of a syslog stamp; RFC 3164 stamps take their year and zone from the clock.
fn resolve_time(ts: &syslog::Timestamp, clock: &Clock) -> Option<DateTime<FixedOffset>> {
    let at = |year: i32| -> Option<DateTime<FixedOffset>> {
        let naive = NaiveDate::from_ymd_opt(year, ts.month.into(), ts.day.into())?
            .and_hms_nano_opt(ts.hour.into(), ts.minute.into(), ts.second.into(), ts.nanos)?;
        match ts.utc_offset_secs {
            Some(secs) => FixedOffset::east_opt(secs)?
                .from_local_datetime(&naive)
                .single(),
            None => match clock.tz.from_local_datetime(&naive) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.fixed_offset()),
                LocalResult::None => None,
            },
        }
    };
    if let Some(year) = ts.year.or(clock.year) {
        return at(year);
    }
    let this_year = clock.now.with_timezone(&clock.tz).year();
    let candidate = at(this_year)?;
    if candidate.signed_duration_since(clock.now) > chrono::Duration::days(1) {
        return at(this_year - 1);
    }
    Some(candidate)
}
