//! Reading the systemd journal through a `journalctl --follow --output=json` child.
//!
//! Each stdout line is one entry as a JSON object; it is sent as is (the pipeline parses it with
//! `iem_parsers::journal`), with its `__CURSOR` as the position. A binary or multi-line `MESSAGE`
//! arrives as a JSON array of byte values, so an entry is always exactly one line.
//!
//! The child is restarted with capped exponential backoff whenever it exits, from the last cursor
//! sent; it is killed when the source stops (`kill_on_drop`). Its stderr is logged, rate-limited.
//!
//! Flags, and why:
//! - `--lines=all`: with `--follow`, journalctl otherwise prints at most the last 10 entries, even
//!   after `--after-cursor` (checked with systemd 252): a restart after a backlog would skip entries.
//! - `--merge`: with `--follow` and no boot filter, journalctl implies `--boot` (this boot only),
//!   which would skip entries of an earlier boot still after the checkpoint, and fails outright on
//!   journals without this boot. `--merge` lifts that; it also includes remote journals
//!   (/var/log/journal/remote), which a storage node does not normally have.
//! - `--all`: long and unprintable fields in full.
//!
//! Permissions: reading the system journal needs root or membership of the `systemd-journal`
//! (or `adm`/`wheel`, depending on the distribution) group; without it journalctl shows only the
//! user's own entries and says so on stderr.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::sources::{JournalStartAt, JournaldConfig};
use crate::source::lines::LineSplitter;
use crate::source::{JournalPosition, Position, SourceError, SourceLine, SourceMetrics};

/// An entry longer than this (as JSON) is dropped, with a warning.
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long was healthy: the next restart starts from the minimum backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// At most this many stderr lines are logged per minute; the rest are counted.
const STDERR_LINES_PER_MINUTE: u32 = 20;

/// The `[sources.journald]` source, ready to run.
pub struct JournaldSource {
    name: Arc<str>,
    journalctl: PathBuf,
    directory: Option<PathBuf>,
    start_at: JournalStartAt,
    cursor: Option<String>,
    metrics: Arc<SourceMetrics>,
}

#[derive(Deserialize)]
struct CursorOnly {
    #[serde(rename = "__CURSOR")]
    cursor: String,
}

impl JournaldSource {
    /// `checkpoint`: e.g. `CheckpointStore::journal(&config.name)`.
    pub fn new(config: &JournaldConfig, checkpoint: Option<JournalPosition>) -> Self {
        JournaldSource {
            name: Arc::from(config.name.as_str()),
            journalctl: config.journalctl.clone(),
            directory: config.directory.clone(),
            start_at: config.start_at,
            cursor: checkpoint.map(|c| c.cursor),
            metrics: Arc::new(SourceMetrics::default()),
        }
    }

    pub fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// journalctl's arguments to continue after `cursor` (or start per `start_at`).
    pub fn args(&self, cursor: Option<&str>) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "--follow",
            "--all",
            "--output=json",
            "--no-pager",
            "--quiet",
            "--merge",
            "--lines=all",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        if let Some(d) = &self.directory {
            let mut s = OsString::from("--directory=");
            s.push(d);
            a.push(s);
        }
        match (cursor, self.start_at) {
            (Some(c), _) => a.push(format!("--after-cursor={c}").into()),
            (None, JournalStartAt::Now) => a.push("--since=now".into()),
            (None, JournalStartAt::Beginning) => {}
        }
        a
    }

    /// Runs until `token` is cancelled or the receiver is dropped.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<SourceLine>,
        token: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut backoff = BACKOFF_MIN;
        let mut started_once = false;
        loop {
            if started_once {
                SourceMetrics::add(&self.metrics.journalctl_restarts_total, 1);
            }
            started_once = true;
            let started = Instant::now();
            let args = self.args(self.cursor.as_deref());
            let spawned = Command::new(&self.journalctl)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            match spawned {
                Ok(child) => {
                    tracing::info!(source = %self.name, cursor = ?self.cursor, "journalctl started");
                    match self.read_child(child, &tx, &token).await {
                        Flow::Stop => return Ok(()),
                        Flow::Exited => {}
                    }
                }
                Err(e) => tracing::warn!(
                    source = %self.name, journalctl = %self.journalctl.display(), error = %e,
                    "cannot start journalctl"
                ),
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_MIN;
            }
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn read_child(
        &mut self,
        mut child: Child,
        tx: &mpsc::Sender<SourceLine>,
        token: &CancellationToken,
    ) -> Flow {
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(self.name.clone(), stderr));
        }
        let Some(mut stdout) = child.stdout.take() else {
            return Flow::Exited;
        };
        let mut splitter = LineSplitter::new(MAX_ENTRY_BYTES, 0);
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = Vec::new();
        loop {
            let n = tokio::select! {
                _ = token.cancelled() => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Flow::Stop;
                }
                r = stdout.read(&mut buf) => r,
            };
            let n = match n {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "reading journalctl failed");
                    break;
                }
            };
            SourceMetrics::add(&self.metrics.bytes_read_total, n as u64);
            splitter.push(&buf[..n], &mut lines);
            for line in lines.drain(..) {
                if line.truncated {
                    SourceMetrics::add(&self.metrics.lines_truncated_total, 1);
                    tracing::warn!(source = %self.name, max = MAX_ENTRY_BYTES, "journal entry too long; dropped");
                    continue;
                }
                let cursor = match serde_json::from_slice::<CursorOnly>(&line.bytes) {
                    Ok(c) => c.cursor,
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "journalctl printed a line without a cursor; skipped");
                        continue;
                    }
                };
                self.cursor = Some(cursor.clone());
                let item = SourceLine {
                    source: self.name.clone(),
                    bytes: line.bytes,
                    truncated: false,
                    position: Position::Journal(JournalPosition { cursor }),
                };
                SourceMetrics::add(&self.metrics.lines_read_total, 1);
                let sent = tokio::select! {
                    biased;
                    _ = token.cancelled() => false,
                    r = tx.send(item) => r.is_ok(),
                };
                if !sent {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Flow::Stop;
                }
            }
        }
        match child.wait().await {
            Ok(status) => {
                tracing::warn!(source = %self.name, %status, "journalctl exited; restarting")
            }
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "journalctl lost; restarting")
            }
        }
        Flow::Exited
    }
}

enum Flow {
    Stop,
    Exited,
}

/// Logs journalctl's stderr, at most [`STDERR_LINES_PER_MINUTE`] lines a minute.
async fn log_stderr(name: Arc<str>, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).split(b'\n');
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut suppressed = 0u64;
    while let Ok(Some(line)) = lines.next_segment().await {
        if window.elapsed() >= Duration::from_secs(60) {
            if suppressed > 0 {
                tracing::warn!(source = %name, suppressed, "journalctl stderr lines not logged");
            }
            window = Instant::now();
            logged = 0;
            suppressed = 0;
        }
        if logged < STDERR_LINES_PER_MINUTE {
            logged += 1;
            let text = String::from_utf8_lossy(&line[..line.len().min(1024)]);
            tracing::warn!(source = %name, stderr = %text, "journalctl");
        } else {
            suppressed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_checkpoint_or_start_at() {
        let mut cfg = JournaldConfig {
            enabled: true,
            directory: Some(PathBuf::from("/tmp/j")),
            ..JournaldConfig::default()
        };
        let s = JournaldSource::new(&cfg, None);
        let a = s.args(None);
        assert!(a.contains(&OsString::from("--since=now")));
        assert!(a.contains(&OsString::from("--directory=/tmp/j")));
        assert!(a.contains(&OsString::from("--lines=all")));
        assert!(a.contains(&OsString::from("--merge")));
        let a = s.args(Some("s=1;i=2"));
        assert!(a.contains(&OsString::from("--after-cursor=s=1;i=2")));
        assert!(!a.contains(&OsString::from("--since=now")));

        cfg.start_at = JournalStartAt::Beginning;
        cfg.directory = None;
        let s = JournaldSource::new(&cfg, Some(JournalPosition { cursor: "c".into() }));
        let a = s.args(None);
        assert!(!a.iter().any(|x| x.to_string_lossy().starts_with("--since")));
        assert!(
            !a.iter()
                .any(|x| x.to_string_lossy().starts_with("--directory"))
        );
        assert_eq!(s.cursor.as_deref(), Some("c"));
    }
}
