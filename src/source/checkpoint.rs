//! Durable source positions.
//!
//! # On disk
//!
//! One file, `<state_dir>/checkpoints.json` (0600, directory 0700), versioned JSON:
//!
//! ```json
//! {"version": 1,
//!  "files":   {"/var/log/messages": {"path": "/var/log/messages", "dev": 2049, "ino": 131,
//!                                     "fingerprint": 123, "offset_of_line": 4000, "next_offset": 4100}},
//!  "journal": {"journald": {"cursor": "s=...;i=2a;..."}}}
//! ```
//!
//! File positions are keyed by watched path (one checkpoint per path, whichever source tails it),
//! journal positions by source name. A checkpoint is the position after the last line that is
//! done: reading resumes at `next_offset` / after `cursor`.
//!
//! Written by write-tmp, fsync, rename, fsync-the-directory, so a crash leaves the old file or the
//! new one, never a mix. A file that does not parse is an error naming it, never silently reset.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::source::{FilePosition, JournalPosition, Position};

/// The file name inside the state directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.json";
const VERSION: u32 = 1;

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateV1 {
    version: u32,
    files: BTreeMap<String, FilePosition>,
    journal: BTreeMap<String, JournalPosition>,
}

#[derive(Deserialize)]
struct Versioned {
    version: u64,
}

#[derive(Debug)]
struct Inner {
    state: StateV1,
    dirty: bool,
}

/// The checkpoints of every source; shared (`Arc`) between the sources, which read it once at
/// start, and the pipeline, which commits.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    file: PathBuf,
    inner: Mutex<Inner>,
}

impl CheckpointStore {
    /// Opens the store in `state_dir` (created 0700 if missing), loading the checkpoint file
    /// if there is one.
    pub fn open(state_dir: &Path) -> Result<Self, CheckpointError> {
        let file = state_dir.join(CHECKPOINT_FILE);
        let io = |source| CheckpointError::Io {
            path: file.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io)?;
        let state = match std::fs::read(&file) {
            Ok(bytes) => parse(&file, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateV1 {
                version: VERSION,
                ..StateV1::default()
            },
            Err(e) => return Err(io(e)),
        };
        Ok(CheckpointStore {
            dir: state_dir.to_path_buf(),
            file,
            inner: Mutex::new(Inner {
                state,
                dirty: false,
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
    pub fn file(&self, path: &Path) -> Option<FilePosition> {
        let key = path.to_str()?;
        self.lock().state.files.get(key).cloned()
    }

    /// Every file checkpoint.
    pub fn files(&self) -> Vec<FilePosition> {
        self.lock().state.files.values().cloned().collect()
    }

    /// The checkpoint of the journald source named `source`.
    pub fn journal(&self, source: &str) -> Option<JournalPosition> {
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
                inner.state.files.insert(key.to_string(), f.clone());
            }
            Position::Journal(j) => {
                inner.state.journal.insert(source.to_string(), j.clone());
            }
        }
        inner.dirty = true;
        Ok(())
    }

    /// Writes the recorded positions durably if any changed since the last write.
    pub fn persist(&self) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        if !inner.dirty {
            return Ok(());
        }
        self.write(&inner.state)?;
        inner.dirty = false;
        Ok(())
    }

    /// [`Self::record`] then [`Self::persist`].
    pub fn commit(&self, source: &str, position: &Position) -> Result<(), CheckpointError> {
        self.record(source, position)?;
        self.persist()
    }

    fn write(&self, state: &StateV1) -> Result<(), CheckpointError> {
        let tmp = self.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        let bytes = serde_json::to_vec(state).map_err(|e| CheckpointError::Corrupt {
            path: self.file.clone(),
            reason: e.to_string(),
        })?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &self.file).map_err(io(&self.file))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<StateV1, CheckpointError> {
    let corrupt = |e: serde_json::Error| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let v: Versioned = serde_json::from_slice(bytes).map_err(corrupt)?;
    if v.version != u64::from(VERSION) {
        return Err(CheckpointError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: v.version,
        });
    }
    serde_json::from_slice(bytes).map_err(corrupt)
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
            &Position::Journal(JournalPosition {
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
        assert_eq!(again.journal("journald").unwrap().cursor, "s=1;i=2");
        assert_eq!(again.journal("other"), None);

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(again.path()), 0o600);
        assert!(!state.join("checkpoints.json.tmp").exists());
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
