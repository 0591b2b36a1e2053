//! Journal files made with the real `systemd-journal-remote`, for the journald tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The Debian package `systemd-journal-remote` installs this.
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// The pid of every entry written here (`_PID`).
pub const PID: u32 = 42;

/// One entry in journal export format; `message` may hold any bytes (binary encoding).
pub fn export_entry(message: &[u8], ident: &str, usec: u64, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut e = format!("__REALTIME_TIMESTAMP={usec}\n").into_bytes();
    if message.contains(&b'\n') || !message.is_ascii() {
        e.extend_from_slice(b"MESSAGE\n");
        e.extend_from_slice(&(message.len() as u64).to_le_bytes());
        e.extend_from_slice(message);
        e.push(b'\n');
    } else {
        e.extend_from_slice(b"MESSAGE=");
        e.extend_from_slice(message);
        e.push(b'\n');
    }
    for (name, value) in fields {
        e.extend_from_slice(format!("{name}={value}\n").as_bytes());
    }
    e.extend_from_slice(
        format!("SYSLOG_IDENTIFIER={ident}\n_PID={PID}\nPRIORITY=3\n_BOOT_ID=6d13c9bf251f46509ca2f12e99e2c945\n\n")
            .as_bytes(),
    );
    e
}

/// Appends entries to `dir/remote.journal` with the real systemd-journal-remote.
pub fn write_journal(dir: &Path, messages: &[&[u8]]) {
    write_entries(
        dir,
        &messages.iter().map(|m| (*m, &[][..])).collect::<Vec<_>>(),
    );
}

/// One journal entry to write: its message and extra fields.
pub type Entry<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);

/// Appends entries (message and extra fields) to `dir/remote.journal`.
pub fn write_entries(dir: &Path, entries: &[Entry<'_>]) {
    let base = now_usec();
    let mut input = Vec::new();
    for (i, (m, fields)) in entries.iter().enumerate() {
        input.extend(export_entry(m, "s3server", base + i as u64, fields));
    }
    remote(dir, &input);
}

/// Microseconds since the epoch.
pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Appends syslog() calls of `s3server[PID]` on `host` to `dir/remote.journal`, each
/// `(message, time in µs since the epoch)`, as journald stores them.
pub fn write_logged(dir: &Path, host: &str, entries: &[(&str, u64)]) {
    let mut input = Vec::new();
    for (m, usec) in entries {
        input.extend(export_entry(
            m.as_bytes(),
            "s3server",
            *usec,
            &[("_HOSTNAME", host)],
        ));
    }
    remote(dir, &input);
}

/// The line rsyslog writes in /var/log/messages for the same call (its default, RFC 3164 file
/// format: no year, no zone; the agent must read it with `timezone = "UTC"`). `host` as rsyslog
/// names it (the short name).
pub fn rsyslog_line(host: &str, message: &str, usec: u64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(usec as i64).unwrap();
    format!(
        "{} {host} s3server[{PID}]: {message}",
        t.format("%b %e %H:%M:%S")
    )
}

/// Feeds export-format `input` to the real systemd-journal-remote.
fn remote(dir: &Path, input: &[u8]) {
    assert!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} is missing: install the Debian package systemd-journal-remote"
    );
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    assert!(child.wait().unwrap().success());
}
