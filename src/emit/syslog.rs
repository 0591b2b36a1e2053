//! Syslog shapes of one record: RFC 3164 (the local syslog(3) form) and RFC 5424 datagrams for
//! `/dev/log`, and the line a syslog file holds (rsyslog's `RSYSLOG_FileFormat`) for `--to stdout`.
//!
//! The default datagram is the syslog(3) form `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`, without a
//! host name: it is the only form both local readers of `/dev/log` parse. journald's syslog socket
//! keeps an RFC 5424 header or a host name as part of MESSAGE and loses the identifier (checked
//! against systemd-journald), and rsyslog's imuxsock with its default special parser does the same
//! (rsyslog issue #4749; its docs: "local log sockets do not contain hostnames").

use chrono::{DateTime, FixedOffset};

use super::{Identity, Record, priority};

/// The datagram format for `--to syslog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// `<PRI>Mmm dd hh:mm:ss TAG[PID]: IEC:...`, as syslog(3) writes to `/dev/log`.
    Rfc3164,
    /// `<PRI>1 TIMESTAMP HOST TAG PID CODE - IEC:...` (MSGID is the IEM code), for readers
    /// configured to parse it (rsyslog `useSpecialParser="off"`).
    Rfc5424,
}

impl SyslogFormat {
    #[cfg(test)]
    pub(crate) fn from_name(name: &str) -> Option<SyslogFormat> {
        match name.to_ascii_lowercase().as_str() {
            "rfc5424" | "5424" => Some(SyslogFormat::Rfc5424),
            "rfc3164" | "3164" | "bsd" => Some(SyslogFormat::Rfc3164),
            _ => None,
        }
    }
}

/// A syslog facility (`--facility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    #[cfg(test)]
    pub(crate) const USER: Facility = Facility(1);

    const NAMES: [(&'static str, u8); 20] = [
        ("kern", 0),
        ("user", 1),
        ("mail", 2),
        ("daemon", 3),
        ("auth", 4),
        ("syslog", 5),
        ("lpr", 6),
        ("news", 7),
        ("uucp", 8),
        ("cron", 9),
        ("authpriv", 10),
        ("ftp", 11),
        ("local0", 16),
        ("local1", 17),
        ("local2", 18),
        ("local3", 19),
        ("local4", 20),
        ("local5", 21),
        ("local6", 22),
        ("local7", 23),
    ];

    /// From its name (`user`, `daemon`, `local3`...), either case.
    pub fn from_name(name: &str) -> Option<Facility> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, code)| Facility(code))
    }

    /// The names `from_name` accepts, for error messages.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::NAMES.iter().map(|(n, _)| *n)
    }

    pub(crate) fn code(self) -> u8 {
        self.0
    }
}

fn pri(record: &Record, facility: Facility) -> u8 {
    facility.code() * 8 + priority(record.code.severity)
}

/// RFC 5424: `<PRI>1 2026-11-21T22:50:01.123456+00:00 host tag pid CODE - IEC:CODE:msg`.
pub(crate) fn rfc5424(
    record: &Record,
    identity: &Identity,
    facility: Facility,
    host: &str,
    now: DateTime<FixedOffset>,
) -> String {
    format!(
        "<{}>1 {} {} {} {} {} - {}",
        pri(record, facility),
        now.format("%Y-%m-%dT%H:%M:%S%.6f%:z"),
        host,
        identity.tag,
        identity.pid,
        record.code,
        record.text()
    )
}

/// RFC 3164 as syslog(3) sends it to the local socket, without a host name (the reader adds it):
/// `<PRI>Nov 21 22:50:01 tag[pid]: IEC:CODE:msg`.
pub(crate) fn rfc3164(
    record: &Record,
    identity: &Identity,
    facility: Facility,
    now: DateTime<FixedOffset>,
) -> String {
    format!(
        "<{}>{} {}[{}]: {}",
        pri(record, facility),
        now.format("%b %e %H:%M:%S"),
        identity.tag,
        identity.pid,
        record.text()
    )
}

/// The line a syslog file holds (rsyslog `RSYSLOG_FileFormat`, which keeps the year and zone):
/// `2026-11-21T22:50:01.123456+00:00 host tag[pid]: IEC:CODE:msg`.
pub(crate) fn file_line(
    record: &Record,
    identity: &Identity,
    host: &str,
    now: DateTime<FixedOffset>,
) -> String {
    format!(
        "{} {} {}[{}]: {}",
        now.format("%Y-%m-%dT%H:%M:%S%.6f%:z"),
        host,
        identity.tag,
        identity.pid,
        record.text()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::parse_code;

    fn fixture() -> (Record, Identity, DateTime<FixedOffset>) {
        let record =
            Record::new(parse_code("ES0030010001").unwrap(), "no auth", None, 100).unwrap();
        let identity = Identity::new("s3server", 1234).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-01T02:50:01.123456+01:00").unwrap();
        (record, identity, now)
    }

    #[test]
    fn formats() {
        let (r, id, now) = fixture();
        assert_eq!(
            rfc5424(&r, &id, Facility::USER, "node1", now),
            "<11>1 2026-11-01T02:50:01.123456+01:00 node1 s3server 1234 ES0030010001 - \
             IEC:ES0030010001:no auth"
        );
        let local3 = Facility::from_name("LOCAL3").unwrap();
        assert_eq!(
            rfc3164(&r, &id, local3, now),
            "<155>Nov  1 02:50:01 s3server[1234]: IEC:ES0030010001:no auth"
        );
        assert_eq!(
            file_line(&r, &id, "node1", now),
            "2026-11-01T02:50:01.123456+01:00 node1 s3server[1234]: IEC:ES0030010001:no auth"
        );
    }

    #[test]
    fn names() {
        assert_eq!(Facility::from_name("daemon"), Some(Facility(3)));
        assert_eq!(Facility::from_name("local8"), None);
        assert_eq!(Facility::names().count(), 20);
        assert_eq!(
            SyslogFormat::from_name("RFC3164"),
            Some(SyslogFormat::Rfc3164)
        );
        assert_eq!(SyslogFormat::from_name("json"), None);
    }
}
