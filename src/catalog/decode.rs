//! Decoding: one raw line (syslog or `journalctl -o json`, detected per line) into an alert,
//! validated against and named by the catalog.

use chrono::{DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use iem_parsers::iem::{Classified, Code};
use iem_parsers::{journal, syslog};

use super::Catalog;
use crate::alert::{Alert, Coded, Kind, LineSource, Named, Origin, OriginKind};

/// How to read times that carry no year or zone (RFC 3164), and the time of lines with no time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The year for RFC 3164 stamps; `None`: the current year, or the previous one for a stamp
    /// more than a day in the future (a December line read in January).
    pub year: Option<i32>,
    pub(crate) tz: Tz,
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
        // Checked first: `from_utf8_lossy` walks the line chunk by chunk even when it is valid.
        let text = match std::str::from_utf8(line) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(line),
        };
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
            path: source.path.map(Into::into),
            cursor: None,
            offset: source.offset,
            program: h.program.map(Into::into),
            pid: h.pid.map(Into::into),
            host: h.host.map(Into::into),
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
    pub(crate) fn decode_journal(
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
                .map(Into::into),
            pid: entry.pid.as_deref().map(Into::into),
            host: entry.hostname.as_deref().map(Into::into),
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
        let mut alert = Alert::bare(id, rfc3339(&time), origin, raw.to_owned(), truncated);
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
        let canonical = code.canonical();
        let (whole, component, module, event) = canonical.parts();
        alert.code = Some(whole.into());
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
            id: component.into(),
            name: found.component.cloned(),
        });
        alert.module = Some(Named {
            id: module.into(),
            name: found.module.cloned(),
        });
        alert.event = Some(Named {
            id: event.into(),
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
pub(crate) fn stable_id(source: &LineSource<'_>, cursor: Option<&str>, text: &str) -> String {
    // The hashed bytes: `file\0` fingerprint offset, or `journald\0` cursor; then `\0` text.
    let mut prefix = [0u8; 22];
    let head: &[u8] = match cursor {
        Some(_) => b"journald\0",
        None => {
            prefix[..5].copy_from_slice(b"file\0");
            prefix[5..13].copy_from_slice(&source.fingerprint.to_le_bytes());
            prefix[13..21].copy_from_slice(&source.offset.unwrap_or(0).to_le_bytes());
            &prefix[..21]
        }
    };
    let parts = [
        head,
        cursor.unwrap_or("").as_bytes(),
        b"\0",
        text.as_bytes(),
    ];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // Most lines fit one stack buffer and one `blake3::hash` call, which is much cheaper for
    // short inputs than feeding a `Hasher` four pieces; the bytes hashed are the same.
    const SHORT: usize = 1024;
    let hash = if len <= SHORT {
        let mut buf = [0u8; SHORT];
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        blake3::hash(&buf[..at])
    } else {
        let mut hasher = blake3::Hasher::new();
        for p in parts {
            hasher.update(p);
        }
        hasher.finalize()
    };
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    hex(&first)
}

/// Lower-case hex of 16 bytes (a hot path: one allocation, no formatting machinery).
fn hex(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&out).unwrap_or_default().to_owned()
}

/// `t.to_rfc3339()`, written without the formatting machinery for the usual case (years
/// 0..=9999, whole-minute offsets, no leap second): one per alert, on the hot path. Anything else
/// is left to chrono. The output is the same (a test compares them).
fn rfc3339(t: &DateTime<FixedOffset>) -> String {
    use chrono::{Offset, Timelike};
    let local = t.naive_local();
    let offset = t.offset().fix().local_minus_utc();
    let nanos = local.nanosecond();
    if !(0..=9999).contains(&local.year()) || offset % 60 != 0 || nanos >= 1_000_000_000 {
        return t.to_rfc3339();
    }
    struct Buf {
        out: [u8; 35],
        at: usize,
    }
    impl Buf {
        fn digits(&mut self, value: u32, width: usize) {
            let mut v = value;
            for i in (0..width).rev() {
                self.out[self.at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            self.at += width;
        }
        fn byte(&mut self, b: u8) {
            self.out[self.at] = b;
            self.at += 1;
        }
    }
    let mut b = Buf {
        out: [0; 35],
        at: 0,
    };
    // The year is in 0..=9999 (checked above).
    b.digits(local.year().unsigned_abs(), 4);
    b.byte(b'-');
    b.digits(local.month(), 2);
    b.byte(b'-');
    b.digits(local.day(), 2);
    b.byte(b'T');
    b.digits(local.hour(), 2);
    b.byte(b':');
    b.digits(local.minute(), 2);
    b.byte(b':');
    b.digits(local.second(), 2);
    // chrono's SecondsFormat::AutoSi: no fraction, or 3, 6 or 9 digits, as few as are exact.
    if nanos != 0 {
        b.byte(b'.');
        if nanos.is_multiple_of(1_000_000) {
            b.digits(nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            b.digits(nanos / 1_000, 6);
        } else {
            b.digits(nanos, 9);
        }
    }
    b.byte(if offset < 0 { b'-' } else { b'+' });
    let minutes = offset.unsigned_abs() / 60;
    b.digits(minutes / 60, 2);
    b.byte(b':');
    b.digits(minutes % 60, 2);
    // Only ASCII digits and punctuation were written.
    std::str::from_utf8(&b.out[..b.at])
        .unwrap_or_default()
        .to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The id as first defined: a `Hasher` fed piece by piece. Ids must never change between
    /// versions (consumers de-duplicate on them), so the one-shot fast path must hash the same bytes.
    fn reference_id(source: &LineSource<'_>, cursor: Option<&str>, text: &str) -> String {
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
        hasher.finalize().as_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn times_are_written_as_chrono_writes_them(
            secs in -70_000_000_000i64..300_000_000_000,
            nanos in 0u32..2_000_000_000,
            nano_kind in 0u8..4,
            offset in -86_399i32..86_399,
            whole_minutes in proptest::bool::ANY,
        ) {
            let nanos = match nano_kind {
                0 => 0,
                1 => nanos / 1_000_000 * 1_000_000 % 1_000_000_000,
                2 => nanos / 1_000 * 1_000 % 1_000_000_000,
                _ => nanos,
            };
            let offset = if whole_minutes { offset / 60 * 60 } else { offset };
            let Some(utc) = DateTime::<Utc>::from_timestamp(secs, nanos) else {
                return Ok(());
            };
            let t = utc.with_timezone(&FixedOffset::east_opt(offset).unwrap());
            proptest::prop_assert_eq!(rfc3339(&t), t.to_rfc3339());
        }
    }

    #[test]
    fn ids_are_the_same_bytes_hashed_the_same_way_for_short_and_long_lines() {
        let source = LineSource {
            kind: OriginKind::File,
            path: Some("/var/log/messages"),
            offset: Some(0x0123_4567_89ab),
            fingerprint: 0xfeed_beef_dead_f00d,
            truncated: false,
        };
        for len in [0, 1, 63, 64, 200, 1002, 1003, 1004, 1024, 5000, 100_000] {
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            assert_eq!(
                stable_id(&source, None, &text),
                reference_id(&source, None, &text),
                "file, {len}"
            );
            let cursor = "s=0b3d;i=42;b=9e;m=1f;t=5f;x=77";
            assert_eq!(
                stable_id(&source, Some(cursor), &text),
                reference_id(&source, Some(cursor), &text),
                "journald, {len}"
            );
        }
        // And one value written down, so a change of the hashed bytes cannot pass unnoticed.
        assert_eq!(
            stable_id(&source, None, "IEC:ES0030010001:x"),
            "1e7419078541f212e001bcfb008445d8"
        );
    }
}
