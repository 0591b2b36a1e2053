//! Durable source positions.
//!
//! # On disk
//!
//! One file, `<state_dir>/checkpoints.json` (0600, directory 0700), versioned JSON:
//!
//! ```json
//! {"version": 2,
//!  "files":   {"/var/log/messages": {"path": "/var/log/messages", "dev": 2049, "ino": 131,
//!                                     "fingerprint": 123, "offset_of_line": 4000, "next_offset": 4100}},
//!  "rotated": {"/var/log/messages": [{"path": "/var/log/messages", "dev": 2049, "ino": 97, ...}]},
//!  "journal": {"journald": {"cursor": "s=...;i=2a;..."}},
//!  "started": ["syslog"],
//!  "stages":  {"cross_source": {"version": 1, "counts": [[1764500000, "9f..", 1, 1]]}}}
//! ```
//!
//! File positions are keyed by watched path (whichever source tails it), cursor positions
//! (journald's, and any other kind whose place is an opaque cursor) by source name in `journal`.
//! The store knows the shapes of positions ([`Position`]), not the kinds of sources. A
//! checkpoint is the position after the last line that is done: reading resumes at
//! `next_offset` / after `cursor`. `files` holds the position in the newest file of a path
//! (the one whose first line was recorded last); `rotated` the positions in its older files
//! (rotated away but still read, since writers may go on appending to them), oldest first, at
//! most [`ROTATED_PER_PATH`]: a file is one device + inode + fingerprint. `started` names the file
//! sources that have run before: `start_at` applies only to a source's first run.
//! `stages` (absent when empty) holds state of later stages that must agree with the positions
//! (see `dedup`): it is written in the same file, so a crash cannot separate them.
//! Version 1 (no `rotated`, no `started`) is read as well.
//!
//! Written by write-tmp, fsync, rename, fsync-the-directory, so a crash leaves the old file or the
//! new one, never a mix; relative to the directory, never through a planted link, and only in a
//! directory nobody else can write ([`crate::statefile`]). A file that does not parse is an
//! error naming it, never silently reset.
//!
//! # The hot copy (`checkpoints.hot`)
//!
//! The file above is persisted once a second (two fsyncs). Alone, a SIGKILL would make the sources
//! read again up to a second of lines whose alerts are already durable in the spool, and spool
//! them twice. So whenever the pipeline records positions after a spool sync, the whole state is
//! also written to `checkpoints.hot` (0600) with one `pwrite` and **no fsync**: into the page
//! cache, which a crash of the process does not lose (a crash of the kernel may). It is a few
//! hundred bytes plus the lifecycle ledger, which keeps each open fault's whole alert (about 1-2 KB
//! each: some tens of KB with the 30 or so open faults of the chaos run). Its layout:
//!
//! `magic "IEMDHOT1" (8) | len u32 LE | crc32c(base | json) u32 LE | base u32 LE | json (len bytes)`
//!
//! where `json` is the same versioned state as the checkpoint file and `base` the crc32c of the
//! checkpoint file's bytes the state grew from (what was read at open or last persisted). At open
//! the hot copy replaces the state read from the checkpoint file only when its checksum holds and
//! its `base` is the checkpoint file as found: it was then written after the last persist, so it
//! is at least as far along. A stale copy (the usual case after a clean stop or a persist), a
//! torn one or none (after a power loss) is ignored, and the checkpoint file counts as before.
//! Either way nothing is lost: every position in either file was recorded only once the alerts
//! of the lines up to it were durable in the spool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::source::{CursorPosition, FilePosition, Position};
use crate::statefile::StateDir;

/// The file name inside the state directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.json";
const VERSION: u32 = 2;
/// The hot copy's file name inside the state directory (see the module doc).
pub(crate) const HOT_FILE: &str = "checkpoints.hot";
const HOT_MAGIC: &[u8; 8] = b"IEMDHOT1";
/// Magic, length, checksum and base.
const HOT_HEADER_LEN: usize = 8 + 4 + 4 + 4;
/// Versions this iemd reads (version 1 lacks `rotated` and `started`).
const READS: [u64; 2] = [1, 2];
/// Positions in rotated files kept per path; the oldest go first.
pub(crate) const ROTATED_PER_PATH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint file {path} has version {version}, this iemd reads version {VERSION}")]
    UnsupportedVersion { path: PathBuf, version: u64 },
    #[error("checkpoint for {path} cannot be stored: the path is not UTF-8")]
    PathNotUtf8 { path: PathBuf },
}

/// The file's content, versions 1 and 2 (2 added `rotated` and `started`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateV1 {
    version: u32,
    files: BTreeMap<String, FilePosition>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    rotated: BTreeMap<String, Vec<FilePosition>>,
    /// Cursor positions by source name, whatever the kind (named for journald, the first).
    journal: BTreeMap<String, CursorPosition>,
    #[serde(default)]
    started: BTreeSet<String>,
    /// State of a later stage that must move with the positions (the cross-source matcher's
    /// counts, `dedup`), by name; written in the same file so that it never disagrees with them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    stages: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Versioned {
    version: u64,
}

#[derive(Debug)]
struct Inner {
    state: StateV1,
    dirty: bool,
    /// The state changed since the hot copy was last written.
    hot_dirty: bool,
    /// crc32c of the checkpoint file's bytes as last read or written (the hot copy's `base`).
    base: u32,
    /// The hot copy, opened at its first write.
    hot: Option<std::fs::File>,
}

/// The checkpoints of every source; shared (`Arc`) between the sources, which read it once at
/// start, and the pipeline, which commits.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: StateDir,
    file: PathBuf,
    inner: Mutex<Inner>,
}

impl CheckpointStore {
    /// Opens the store in `state_dir` (created 0700 if missing; refused when someone else can
    /// write it), loading the checkpoint file if there is one.
    pub fn open(state_dir: &Path) -> Result<Self, CheckpointError> {
        let file = state_dir.join(CHECKPOINT_FILE);
        let dir = StateDir::open(state_dir).map_err(|source| CheckpointError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let io = |source| CheckpointError::Io {
            path: file.clone(),
            source,
        };
        let (state, base) = match dir.read(CHECKPOINT_FILE) {
            Ok(bytes) => (parse(&file, &bytes)?, crc32c::crc32c(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (StateV1::default(), crc32c::crc32c(b""))
            }
            Err(e) => return Err(io(e)),
        };
        let hot = read_hot(&dir, base);
        if hot.is_some() {
            tracing::info!(
                path = %dir.path().join(HOT_FILE).display(),
                "resuming from the checkpoints recorded after the last persist (iemd did not stop cleanly)"
            );
        }
        Ok(CheckpointStore {
            dir,
            file,
            inner: Mutex::new(Inner {
                // Persisted at the next opportunity, so that the hot copy may go stale.
                dirty: hot.is_some(),
                state: hot.unwrap_or(state),
                hot_dirty: false,
                base,
                hot: None,
            }),
        })
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> &Path {
        &self.file
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The checkpoint of the file watched at `path`.
    #[cfg(test)]
    pub(crate) fn file(&self, path: &Path) -> Option<FilePosition> {
        let key = path.to_str()?;
        self.lock().state.files.get(key).cloned()
    }

    /// Every file checkpoint (the newest file of each path).
    pub(crate) fn files(&self) -> Vec<FilePosition> {
        self.lock().state.files.values().cloned().collect()
    }

    /// The positions in the rotated (older) files of the path watched at `path`, oldest first.
    pub(crate) fn rotated(&self, path: &Path) -> Vec<FilePosition> {
        let Some(key) = path.to_str() else {
            return Vec::new();
        };
        self.lock()
            .state
            .rotated
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// True when the file source named `source` has run before (see [`Self::mark_started`]).
    pub(crate) fn has_started(&self, source: &str) -> bool {
        self.lock().state.started.contains(source)
    }

    /// Records that the file source `source` has run; [`Self::persist`] writes it.
    pub(crate) fn mark_started(&self, source: &str) {
        let mut inner = self.lock();
        if inner.state.started.insert(source.to_string()) {
            inner.dirty = true;
            inner.hot_dirty = true;
        }
    }

    /// The cursor checkpoint of the source named `source` (journald's).
    pub fn cursor(&self, source: &str) -> Option<CursorPosition> {
        self.lock().state.journal.get(source).cloned()
    }

    /// Records a position in memory; [`Self::persist`] writes it.
    pub fn record(&self, source: &str, position: &Position) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        match position {
            Position::File(f) => {
                let key = f
                    .path
                    .to_str()
                    .ok_or_else(|| CheckpointError::PathNotUtf8 {
                        path: f.path.clone(),
                    })?;
                let state = &mut inner.state;
                record_file(&mut state.files, &mut state.rotated, key, f);
            }
            Position::Cursor(c) => {
                inner.state.journal.insert(source.to_string(), c.clone());
            }
        }
        inner.dirty = true;
        inner.hot_dirty = true;
        Ok(())
    }

    /// The state recorded under `name` with [`Self::record_stage`].
    pub fn stage(&self, name: &str) -> Option<serde_json::Value> {
        self.lock().state.stages.get(name).cloned()
    }

    /// Records a stage's state in memory, to be written with the positions by [`Self::persist`].
    pub(crate) fn record_stage(&self, name: &str, value: serde_json::Value) {
        let mut inner = self.lock();
        inner.state.stages.insert(name.to_string(), value);
        inner.dirty = true;
        inner.hot_dirty = true;
    }

    /// Writes the hot copy (see the module doc) if the state changed since its last write: one
    /// `pwrite`, no fsync. A failure costs only duplicates after a crash, never a position.
    pub(crate) fn write_hot(&self) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        if !inner.hot_dirty {
            return Ok(());
        }
        let path = self.dir.path().join(HOT_FILE);
        let json = serde_json::to_vec(&inner.state).map_err(|e| CheckpointError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let len = u32::try_from(json.len()).map_err(|_| CheckpointError::Corrupt {
            path: path.clone(),
            reason: format!(
                "{} bytes of checkpoints do not fit the hot copy",
                json.len()
            ),
        })?;
        let base = inner.base.to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&base), &json);
        let mut buf = Vec::with_capacity(HOT_HEADER_LEN + json.len());
        buf.extend_from_slice(HOT_MAGIC);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&base);
        buf.extend_from_slice(&json);
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        if inner.hot.is_none() {
            inner.hot = Some(self.dir.open_or_create(HOT_FILE).map_err(io)?);
        }
        if let Some(f) = &inner.hot {
            // In place: a shorter copy leaves old bytes after `len`, which are never read.
            std::os::unix::fs::FileExt::write_all_at(f, &buf, 0).map_err(io)?;
        }
        inner.hot_dirty = false;
        Ok(())
    }

    /// Writes the recorded positions durably if any changed since the last write.
    pub fn persist(&self) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        if !inner.dirty {
            return Ok(());
        }
        inner.base = self.write(&inner.state)?;
        inner.dirty = false;
        Ok(())
    }

    /// [`Self::record`] then [`Self::persist`].
    pub fn commit(&self, source: &str, position: &Position) -> Result<(), CheckpointError> {
        self.record(source, position)?;
        self.persist()
    }

    /// Writes the checkpoint file durably; returns the crc32c of its bytes.
    fn write(&self, state: &StateV1) -> Result<u32, CheckpointError> {
        let bytes = serde_json::to_vec(state).map_err(|e| CheckpointError::Corrupt {
            path: self.file.clone(),
            reason: e.to_string(),
        })?;
        self.dir
            .replace(CHECKPOINT_FILE, &bytes)
            .map_err(|source| CheckpointError::Io {
                path: self.file.clone(),
                source,
            })?;
        Ok(crc32c::crc32c(&bytes))
    }
}

/// The state in the hot copy, when it is whole and grew from the checkpoint file whose crc32c is
/// `base`; otherwise `None` (stale, torn or missing: see the module doc).
fn read_hot(dir: &StateDir, base: u32) -> Option<StateV1> {
    let path = dir.path().join(HOT_FILE);
    let bytes = match dir.read(HOT_FILE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "cannot read the hot copy of the checkpoints; resuming from the checkpoint file (lines may be read twice)");
            return None;
        }
    };
    let header = bytes.get(..HOT_HEADER_LEN)?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (len, crc, written_base) = (word(8) as usize, word(12), word(16));
    let json = bytes.get(HOT_HEADER_LEN..HOT_HEADER_LEN + len)?;
    let whole = &header[..8] == HOT_MAGIC
        && crc32c::crc32c_append(crc32c::crc32c(&header[16..20]), json) == crc;
    if !whole || written_base != base {
        tracing::debug!(path = %path.display(), whole, "hot copy of the checkpoints not used");
        return None;
    }
    // Its checksum held, so it is what an iemd wrote: one it cannot read (a version written by a
    // newer iemd, say) is worth a warning, though the checkpoint file still counts.
    parse(&path, json)
        .inspect_err(|err| {
            tracing::warn!(%err, "the hot copy of the checkpoints cannot be used; resuming from the checkpoint file (lines may be read twice)");
        })
        .ok()
}

impl Default for StateV1 {
    fn default() -> Self {
        StateV1 {
            version: VERSION,
            files: BTreeMap::new(),
            rotated: BTreeMap::new(),
            journal: BTreeMap::new(),
            started: BTreeSet::new(),
            stages: BTreeMap::new(),
        }
    }
}

/// The same file: device, inode and first-line fingerprint.
fn same_file(a: &FilePosition, b: &FilePosition) -> bool {
    (a.dev, a.ino, a.fingerprint) == (b.dev, b.ino, b.fingerprint)
}

/// Records `f` for the path `key`: it updates the position of its own file, newest or rotated; a
/// file not seen before is the newest, and the previous newest becomes the latest rotated one.
fn record_file(
    files: &mut BTreeMap<String, FilePosition>,
    rotated: &mut BTreeMap<String, Vec<FilePosition>>,
    key: &str,
    f: &FilePosition,
) {
    let Some(newest) = files.get_mut(key) else {
        files.insert(key.to_string(), f.clone());
        return;
    };
    if same_file(newest, f) {
        *newest = f.clone();
        return;
    }
    let older = rotated.entry(key.to_string()).or_default();
    if let Some(r) = older.iter_mut().find(|r| same_file(r, f)) {
        *r = f.clone();
        return;
    }
    older.push(std::mem::replace(newest, f.clone()));
    if older.len() > ROTATED_PER_PATH {
        older.remove(0);
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<StateV1, CheckpointError> {
    let corrupt = |e: serde_json::Error| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let v: Versioned = serde_json::from_slice(bytes).map_err(corrupt)?;
    if !READS.contains(&v.version) {
        return Err(CheckpointError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: v.version,
        });
    }
    let mut state: StateV1 = serde_json::from_slice(bytes).map_err(corrupt)?;
    state.version = VERSION;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_pos(path: &str, next: u64) -> Position {
        Position::File(FilePosition {
            path: PathBuf::from(path),
            dev: 1,
            ino: 2,
            fingerprint: u64::MAX,
            offset_of_line: next - 10,
            next_offset: next,
        })
    }

    #[test]
    fn round_trip_through_the_file_with_private_permissions() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let s = CheckpointStore::open(&state).unwrap();
        assert_eq!(s.file(Path::new("/var/log/messages")), None);
        s.commit("syslog", &file_pos("/var/log/messages", 100))
            .unwrap();
        s.commit("syslog", &file_pos("/var/log/messages", 200))
            .unwrap();
        s.commit(
            "journald",
            &Position::Cursor(CursorPosition {
                cursor: "s=1;i=2".into(),
            }),
        )
        .unwrap();

        let again = CheckpointStore::open(&state).unwrap();
        assert_eq!(
            again
                .file(Path::new("/var/log/messages"))
                .map(Position::File),
            Some(file_pos("/var/log/messages", 200))
        );
        assert_eq!(again.files().len(), 1);
        assert_eq!(again.cursor("journald").unwrap().cursor, "s=1;i=2");
        assert_eq!(again.cursor("other"), None);

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(again.path()), 0o600);
        assert!(!state.join("checkpoints.json.tmp").exists());
    }

    #[test]
    fn a_new_file_of_a_path_keeps_the_older_ones_as_rotated() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(d.path()).unwrap();
        let at = |ino: u64, next: u64| {
            Position::File(FilePosition {
                path: PathBuf::from("/m"),
                dev: 1,
                ino,
                fingerprint: ino * 10,
                offset_of_line: 0,
                next_offset: next,
            })
        };
        let next =
            |v: Vec<FilePosition>| v.iter().map(|f| (f.ino, f.next_offset)).collect::<Vec<_>>();
        s.record("x", &at(1, 10)).unwrap();
        s.record("x", &at(2, 5)).unwrap(); // rotated: file 2 is new
        s.record("x", &at(1, 20)).unwrap(); // a late write to the rotated file
        s.record("x", &at(2, 8)).unwrap();
        s.record("x", &at(3, 1)).unwrap();
        assert_eq!(next(s.files()), vec![(3, 1)]);
        assert_eq!(next(s.rotated(Path::new("/m"))), vec![(1, 20), (2, 8)]);
        s.mark_started("x");
        s.persist().unwrap();
        let again = CheckpointStore::open(d.path()).unwrap();
        assert_eq!(next(again.rotated(Path::new("/m"))), vec![(1, 20), (2, 8)]);
        assert!(again.has_started("x") && !again.has_started("y"));
        for i in 4..(4 + ROTATED_PER_PATH as u64) {
            s.record("x", &at(i, 1)).unwrap();
        }
        assert_eq!(s.rotated(Path::new("/m")).len(), ROTATED_PER_PATH);
    }

    #[test]
    fn version_1_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(CHECKPOINT_FILE),
            br#"{"version":1,"files":{},"journal":{"journald":{"cursor":"c"}}}"#,
        )
        .unwrap();
        let s = CheckpointStore::open(d.path()).unwrap();
        assert_eq!(s.cursor("journald").unwrap().cursor, "c");
        assert!(!s.has_started("syslog"));
    }

    /// A version 2 file exactly as iemd wrote it before the sources became a trait (issue 16)
    /// loads, and is written back byte for byte: the format did not move with the code.
    #[test]
    fn a_version_2_file_from_an_earlier_iemd_loads_and_is_written_back_unchanged() {
        let earlier = concat!(
            r#"{"version":2,"#,
            r#""files":{"/var/log/messages":{"path":"/var/log/messages","dev":2049,"ino":131,"#,
            r#""fingerprint":123,"offset_of_line":4000,"next_offset":4100}},"#,
            r#""rotated":{"/var/log/messages":[{"path":"/var/log/messages","dev":2049,"ino":97,"#,
            r#""fingerprint":77,"offset_of_line":10,"next_offset":20}]},"#,
            r#""journal":{"journald":{"cursor":"s=ab;i=2a"}},"#,
            r#""started":["syslog"],"#,
            r#""stages":{"cross_source":{"counts":[],"version":1}}}"#
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(CHECKPOINT_FILE), earlier).unwrap();
        let s = CheckpointStore::open(d.path()).unwrap();
        let messages = Path::new("/var/log/messages");
        assert_eq!(s.file(messages).unwrap().next_offset, 4100);
        assert_eq!(s.rotated(messages)[0].ino, 97);
        assert_eq!(s.cursor("journald").unwrap().cursor, "s=ab;i=2a");
        assert!(s.has_started("syslog"));
        assert_eq!(
            s.stage("cross_source"),
            Some(serde_json::json!({"version": 1, "counts": []}))
        );
        // The same journal position again: the state is rewritten as it was read.
        let cursor = s.cursor("journald").unwrap();
        s.commit("journald", &Position::Cursor(cursor)).unwrap();
        assert_eq!(std::fs::read_to_string(s.path()).unwrap(), earlier);
    }

    #[test]
    fn stage_state_is_written_with_the_positions() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(d.path()).unwrap();
        s.record("x", &file_pos("/a", 50)).unwrap();
        s.record_stage("cross_source", serde_json::json!({"version": 1}));
        s.persist().unwrap();
        let again = CheckpointStore::open(d.path()).unwrap();
        assert_eq!(again.files().len(), 1);
        assert_eq!(
            again.stage("cross_source"),
            Some(serde_json::json!({"version": 1}))
        );
        // A file written before stages existed still loads.
        std::fs::write(again.path(), br#"{"version":1,"files":{},"journal":{}}"#).unwrap();
        assert_eq!(
            CheckpointStore::open(d.path())
                .unwrap()
                .stage("cross_source"),
            None
        );
    }

    #[test]
    fn record_is_not_durable_until_persisted() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(d.path()).unwrap();
        s.record("x", &file_pos("/a", 50)).unwrap();
        assert_eq!(CheckpointStore::open(d.path()).unwrap().files(), vec![]);
        s.persist().unwrap();
        assert_eq!(CheckpointStore::open(d.path()).unwrap().files().len(), 1);
    }

    fn next_offset(store: &CheckpointStore) -> Option<u64> {
        store.file(Path::new("/a")).map(|f| f.next_offset)
    }

    /// Regression (issue 21 item 8): after a SIGKILL the sources went back to the position
    /// persisted up to a second earlier, and spooled the alerts of that second again.
    #[test]
    fn a_crash_resumes_from_the_hot_copy_written_after_the_last_persist() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(d.path()).unwrap();
        s.commit("x", &file_pos("/a", 50)).unwrap();
        s.record("x", &file_pos("/a", 80)).unwrap();
        s.write_hot().unwrap();
        // No persist: as if killed here. The hot copy is ahead of the checkpoint file.
        drop(s);
        let again = CheckpointStore::open(d.path()).unwrap();
        assert_eq!(next_offset(&again), Some(80));
        let mode = std::fs::metadata(d.path().join(HOT_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // And it is persisted at the next opportunity.
        again.persist().unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert!(text.contains("\"next_offset\":80"), "{text}");
    }

    #[test]
    fn a_stale_or_torn_hot_copy_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(d.path()).unwrap();
        s.record("x", &file_pos("/a", 50)).unwrap();
        s.write_hot().unwrap();
        // Persisted after the hot copy was written: the checkpoint file is the newer one, even
        // though the hot copy is whole (after a power loss the order on disk may be anything).
        s.record("x", &file_pos("/a", 90)).unwrap();
        s.persist().unwrap();
        drop(s);
        assert_eq!(
            next_offset(&CheckpointStore::open(d.path()).unwrap()),
            Some(90)
        );

        let s = CheckpointStore::open(d.path()).unwrap();
        s.record("x", &file_pos("/a", 120)).unwrap();
        s.write_hot().unwrap();
        drop(s);
        let hot = d.path().join(HOT_FILE);
        let mut bytes = std::fs::read(&hot).unwrap();
        bytes[HOT_HEADER_LEN + 5] ^= 1;
        std::fs::write(&hot, &bytes).unwrap();
        assert_eq!(
            next_offset(&CheckpointStore::open(d.path()).unwrap()),
            Some(90)
        );
        std::fs::write(&hot, &bytes[..10]).unwrap();
        assert_eq!(
            next_offset(&CheckpointStore::open(d.path()).unwrap()),
            Some(90)
        );
    }

    #[test]
    fn corrupt_or_foreign_files_are_errors_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(CHECKPOINT_FILE);
        std::fs::write(&f, b"{\"version\":1,\"files\":{").unwrap();
        let e = CheckpointStore::open(d.path()).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(f.to_str().unwrap()), "{e}");

        std::fs::write(&f, b"{\"version\":7}").unwrap();
        let e = CheckpointStore::open(d.path()).unwrap_err();
        assert!(
            matches!(e, CheckpointError::UnsupportedVersion { version: 7, .. }),
            "{e}"
        );
    }
}
