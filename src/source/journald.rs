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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::alert::OriginKind;
use crate::config::sources::{JournalStartAt, JournaldConfig};
use crate::source::channel::LineSender;
use crate::source::lines::LineSplitter;
use crate::source::{CursorPosition, PathState, Position, SourceError, SourceLine, SourceMetrics};
use crate::supervise::Backoff;
use crate::telemetry::events::RateLimit;

/// An entry longer than this (as JSON) is dropped, with a warning.
pub(crate) const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long was healthy: the next restart starts from the minimum backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// At most this many stderr lines are logged per minute; the rest are counted.
const STDERR_LINES_PER_MINUTE: u32 = 20;
/// While the journal is not readable, how often a running child's access is checked again.
const RECHECK: Duration = Duration::from_secs(5);
/// Where journald keeps the system journal (persistent, volatile).
const SYSTEM_JOURNAL_DIRS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];
/// `PATH` of the journalctl child (its environment is otherwise empty).
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `[sources.journald]` source, ready to run.
pub struct JournaldSource {
    name: Arc<str>,
    journalctl: PathBuf,
    directory: Option<PathBuf>,
    start_at: JournalStartAt,
    cursor: Option<String>,
    /// Read from this time (µs since the epoch) when there is no cursor: set when the saved
    /// cursor is no longer in the journal.
    since_usec: Option<u64>,
    metrics: Arc<SourceMetrics>,
}

#[derive(Deserialize)]
struct CursorOnly {
    #[serde(rename = "__CURSOR")]
    cursor: String,
}

impl JournaldSource {
    /// `checkpoint`: e.g. `CheckpointStore::journal(&config.name)`.
    pub fn new(config: &JournaldConfig, checkpoint: Option<CursorPosition>) -> Self {
        JournaldSource {
            name: Arc::from(config.name.as_str()),
            journalctl: config.journalctl.clone(),
            directory: config.directory.clone(),
            start_at: config.start_at,
            cursor: checkpoint.map(|c| c.cursor),
            since_usec: None,
            metrics: Arc::new(SourceMetrics::default()),
        }
    }

    /// journalctl's arguments to continue after `cursor` (or start per `start_at`).
    pub(crate) fn args(&self, cursor: Option<&str>) -> Vec<OsString> {
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
        a.extend(self.directory_arg());
        match (cursor, self.since_usec, self.start_at) {
            (Some(c), _, _) => a.push(format!("--after-cursor={c}").into()),
            (None, Some(t), _) => a.push(since_arg(t).into()),
            (None, None, JournalStartAt::Now) => a.push("--since=now".into()),
            (None, None, JournalStartAt::Beginning) => {}
        }
        a
    }

    /// journalctl with a clean environment: nothing of iemd's (a broker password,
    /// `$CREDENTIALS_DIRECTORY`) reaches the child; it needs no variable to write JSON to a pipe.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.journalctl);
        cmd.env_clear()
            .env("PATH", CHILD_PATH)
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// `--directory=DIR` when the source reads only the journal files there.
    fn directory_arg(&self) -> Option<OsString> {
        self.directory.as_ref().map(|d| {
            let mut s = OsString::from("--directory=");
            s.push(d);
            s
        })
    }

    /// Whether the journal still holds the entry `cursor` names: `journalctl --cursor` seeks to
    /// the nearest entry when it does not, and `--after-cursor` then skips one (or, after a reset,
    /// every entry already there). `None` when journalctl cannot tell (not startable, no output).
    async fn cursor_held(&self, cursor: &str) -> Option<bool> {
        let mut args: Vec<OsString> =
            ["--output=json", "--no-pager", "--quiet", "--merge", "--all"]
                .iter()
                .map(OsString::from)
                .collect();
        args.extend(self.directory_arg());
        args.push(format!("--cursor={cursor}").into());
        let mut child = self
            .command()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let mut first = Vec::new();
        let mut stdout = BufReader::new(stdout);
        let read = stdout.read_until(b'\n', &mut first);
        let n = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .ok()?
            .ok()?;
        let _ = child.start_kill();
        let _ = child.wait().await;
        if n == 0 {
            // An empty journal holds no cursor.
            return Some(false);
        }
        let entry: CursorOnly = serde_json::from_slice(&first).ok()?;
        Some(entry.cursor == cursor)
    }

    /// Before resuming after the saved cursor: if the journal no longer holds it (a volatile
    /// journal after a reboot, journal files removed), read from the cursor's time instead (from
    /// the start of this boot if the cursor has none), with one warning.
    async fn check_cursor(&mut self) {
        let Some(cursor) = self.cursor.clone() else {
            return;
        };
        if self.cursor_held(&cursor).await != Some(false) {
            return;
        }
        let (since, from) = match cursor_time_usec(&cursor) {
            Some(t) => (t, "the cursor's time"),
            None => (boot_time_usec().unwrap_or(0), "the start of this boot"),
        };
        tracing::warn!(
            source = %self.name, %cursor, since = %since_arg(since),
            "the saved journal cursor is no longer in the journal (reset after a reboot, or its \
             files removed); reading from {from} instead"
        );
        self.cursor = None;
        self.since_usec = Some(since);
    }

    /// Runs until `token` is cancelled or the receiver is dropped.
    pub async fn run(
        mut self,
        tx: impl Into<LineSender>,
        token: CancellationToken,
    ) -> Result<(), SourceError> {
        let tx: LineSender = tx.into();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut started_once = false;
        loop {
            if started_once {
                SourceMetrics::add(&self.metrics.journalctl_restarts_total, 1);
            }
            started_once = true;
            let started = Instant::now();
            if let Err(state) = self.check_access() {
                self.set_state(state);
            }
            self.check_cursor().await;
            let args = self.args(self.cursor.as_deref());
            let spawned = self
                .command()
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
                Err(e) => self.set_state(PathState::Unreadable {
                    reason: format!("cannot start {}: {e}", self.journalctl.display()),
                    fix: "install journalctl (package systemd) or set sources.journald.journalctl \
                          to its path"
                        .to_string(),
                }),
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff.reset();
            }
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff.step()) => {}
            }
        }
    }

    async fn read_child(
        &mut self,
        mut child: Child,
        tx: &LineSender,
        token: &CancellationToken,
    ) -> Flow {
        let last_stderr = Arc::new(Mutex::new(None));
        let stderr_task = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(log_stderr(self.name.clone(), stderr, last_stderr.clone())));
        let Some(mut stdout) = child.stdout.take() else {
            return Flow::Exited;
        };
        let mut splitter = LineSplitter::new(MAX_ENTRY_BYTES, 0);
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = Vec::new();
        let spawned = Instant::now();
        let mut recheck = tokio::time::interval(RECHECK);
        loop {
            let n = tokio::select! {
                _ = token.cancelled() => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Flow::Stop;
                }
                r = stdout.read(&mut buf) => r,
                _ = recheck.tick() => {
                    // A child that has run a while on a journal it can read is up, even
                    // before the first new entry arrives.
                    if spawned.elapsed() >= RECHECK {
                        match self.check_access() {
                            Ok(()) => self.set_state(PathState::Up),
                            Err(state) => self.set_state(state),
                        }
                    }
                    continue;
                }
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
                self.set_state(PathState::Up);
                let item = SourceLine {
                    source: self.name.clone(),
                    kind: OriginKind::Journald,
                    bytes: line.bytes,
                    truncated: false,
                    position: Position::Cursor(CursorPosition { cursor }),
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
        let status = child.wait().await;
        if let Some(task) = stderr_task {
            // stderr closes with the child; its last line says why it stopped.
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        let said = last_stderr.lock().ok().and_then(|l| l.clone());
        let reason = match (&status, said) {
            (Ok(st), Some(said)) => format!("journalctl exited ({st}): {said}"),
            (Ok(st), None) => format!("journalctl exited ({st})"),
            (Err(e), _) => format!("journalctl lost: {e}"),
        };
        tracing::warn!(source = %self.name, %reason, "journalctl stopped; restarting");
        self.set_state(PathState::Unreadable {
            reason,
            fix: "see journalctl's message; reading the system journal needs the \
                  systemd-journal group or CAP_DAC_READ_SEARCH (the packaged unit grants it)"
                .to_string(),
        });
        Flow::Exited
    }
}

impl JournaldSource {
    /// What `iemd_source_up` and `/health` call this source's path: its directory, or the
    /// system journal.
    fn label(&self) -> String {
        match &self.directory {
            Some(d) => d.display().to_string(),
            None => "journal".to_string(),
        }
    }

    fn set_state(&self, state: PathState) {
        self.metrics.set_path(&self.name, &self.label(), state);
    }

    /// Whether some journal file this source reads exists and can be opened: journalctl itself
    /// waits silently on a directory without journal files, and reads only the user's own
    /// journal without the right to read the system's.
    fn check_access(&self) -> Result<(), PathState> {
        let dirs: Vec<PathBuf> = match &self.directory {
            Some(d) => vec![d.clone()],
            None => SYSTEM_JOURNAL_DIRS.iter().map(PathBuf::from).collect(),
        };
        let system_only = self.directory.is_none();
        let mut found: Option<(PathBuf, std::io::Error)> = None;
        for dir in &dirs {
            for file in journal_files(dir) {
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                if system_only && !name.is_some_and(|n| n.starts_with("system")) {
                    continue;
                }
                match std::fs::File::open(&file) {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        found.get_or_insert((file, e));
                    }
                }
            }
        }
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Err(match found {
            Some((file, e)) => match super::unreadable(&file, &e) {
                PathState::Unreadable { reason, .. } => PathState::Unreadable {
                    reason: format!("cannot open {}: {reason}", file.display()),
                    fix: "let the user iemd runs as read the journal: the packaged unit grants \
                          CAP_DAC_READ_SEARCH; without it, add the user to group systemd-journal"
                        .to_string(),
                },
                other => other,
            },
            None => PathState::Unreadable {
                reason: format!("no journal files in {}", shown.join(" or ")),
                fix: match &self.directory {
                    Some(_) => "check sources.journald.directory".to_string(),
                    None => "check that systemd-journald runs, or disable [sources.journald]"
                        .to_string(),
                },
            },
        })
    }
}

/// The journal files (`*.journal`, `*.journal~`) in `dir` and its subdirectories one level down
/// (journald keeps them under the machine id).
fn journal_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let is_journal = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy())
            .is_some_and(|n| n.ends_with(".journal") || n.ends_with(".journal~"))
    };
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Ok(inner) = std::fs::read_dir(&p) {
                out.extend(
                    inner
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| is_journal(p)),
                );
            }
        } else if is_journal(&p) {
            out.push(p);
        }
    }
    out
}

/// `--since=@SECONDS.MICROS` for a time in µs since the epoch.
fn since_arg(usec: u64) -> String {
    format!("--since=@{}.{:06}", usec / 1_000_000, usec % 1_000_000)
}

/// The realtime stamp (`t=`, hex µs) of a journal cursor.
fn cursor_time_usec(cursor: &str) -> Option<u64> {
    cursor
        .split(';')
        .find_map(|f| f.strip_prefix("t="))
        .and_then(|t| u64::from_str_radix(t, 16).ok())
}

/// When this boot started (`btime` of /proc/stat), in µs since the epoch.
fn boot_time_usec() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(secs * 1_000_000)
}

enum Flow {
    Stop,
    Exited,
}

/// Logs journalctl's stderr, at most [`STDERR_LINES_PER_MINUTE`] lines a minute, and keeps the
/// last line in `last` (the reason given when the child exits).
async fn log_stderr(
    name: Arc<str>,
    stderr: tokio::process::ChildStderr,
    last: Arc<Mutex<Option<String>>>,
) {
    let mut lines = BufReader::new(stderr).split(b'\n');
    let mut limit = RateLimit::with_burst(Duration::from_secs(60), STDERR_LINES_PER_MINUTE);
    while let Ok(Some(line)) = lines.next_segment().await {
        let text = String::from_utf8_lossy(&line[..line.len().min(1024)]).into_owned();
        if let Ok(mut l) = last.lock() {
            *l = Some(text.clone());
        }
        if let Some(suppressed) = limit.allow(std::time::Instant::now()) {
            // `suppressed`: lines not logged since the last one that was.
            tracing::warn!(source = %name, stderr = %text, suppressed, "journalctl");
        }
    }
}

impl super::Source for JournaldSource {
    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    fn run(
        self: Box<Self>,
        tx: LineSender,
        token: CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(JournaldSource::run(*self, tx, token))
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
        let s = JournaldSource::new(&cfg, Some(CursorPosition { cursor: "c".into() }));
        let a = s.args(None);
        assert!(!a.iter().any(|x| x.to_string_lossy().starts_with("--since")));
        assert!(
            !a.iter()
                .any(|x| x.to_string_lossy().starts_with("--directory"))
        );
        assert_eq!(s.cursor.as_deref(), Some("c"));
    }

    #[test]
    fn a_cursor_gives_its_time() {
        let c = "s=4f35;i=2;b=6d13;m=0;t=6618058e8fee1;x=2b21";
        assert_eq!(cursor_time_usec(c), Some(0x6618058e8fee1));
        assert_eq!(cursor_time_usec("s=1;i=2"), None);
        assert_eq!(
            since_arg(1_796_053_735_000_042),
            "--since=@1796053735.000042"
        );
    }
}
