//! Journal files made with the real `systemd-journal-remote`, for the journald tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The Debian package `systemd-journal-remote` installs this.
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

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
        format!("SYSLOG_IDENTIFIER={ident}\n_PID=42\nPRIORITY=3\n_BOOT_ID=6d13c9bf251f46509ca2f12e99e2c945\n\n")
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

/// Appends entries (message and extra fields) to `dir/remote.journal`.
pub fn write_entries(dir: &Path, entries: &[(&[u8], &[(&str, &str)])]) {
    assert!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} is missing: install the Debian package systemd-journal-remote"
    );
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut input = Vec::new();
    for (i, (m, fields)) in entries.iter().enumerate() {
        input.extend(export_entry(m, "s3server", base + i as u64, fields));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    assert!(child.wait().unwrap().success());
}
