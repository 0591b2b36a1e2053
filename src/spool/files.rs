//! The spool's files by name: the lock, the ack file and the segments (their names, listing and
//! creation). Every file is opened relative to the directory without following links
//! ([`crate::statefile`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{SpoolError, format, io_err};
use crate::statefile::StateDir;

/// Takes the exclusive `flock` on `lock`, held for as long as the returned file is open.
pub(super) fn lock(state_dir: &StateDir, dir: &Path) -> Result<File, SpoolError> {
    let lock_path = dir.join("lock");
    let lock = state_dir
        .open_or_create("lock")
        .map_err(io_err(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(SpoolError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io_err(&lock_path)(e)),
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

/// Parses `seg-<digits>.log` into its first seq.
fn segment_first_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Every segment in `dir`, ordered by first seq.
pub(super) fn list_segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, SpoolError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(first) = entry.file_name().to_str().and_then(segment_first_seq) {
            out.insert(first, entry.path());
        }
    }
    Ok(out)
}

/// Where a damaged segment's original is kept for `iemctl replay`.
pub(super) fn aside_path(segment: &Path) -> PathBuf {
    segment.with_extension("log.corrupt")
}

pub(super) fn ack_path(dir: &Path) -> PathBuf {
    dir.join("ack")
}

/// The hot copy of the ack file (see the module doc of `spool`).
pub(super) const HOT_ACK: &str = "ack.hot";

/// The acked position: the larger of the ack file's and its hot copy's ([`read_acks`]).
pub(super) fn read_ack(dir: &Path) -> Result<u64, SpoolError> {
    read_acks(dir).map(|(written, hot)| written.max(hot))
}

/// The acked positions in the ack file and in its hot copy. A missing ack file is 0, an
/// unreadable one is 0 with a warning (the records are re-sent: duplicates, never loss); a hot
/// copy that is missing, torn or unreadable is 0.
pub(super) fn read_acks(dir: &Path) -> Result<(u64, u64), SpoolError> {
    let path = ack_path(dir);
    let state_dir = match StateDir::at(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let written = match state_dir.read("ack") {
        Ok(b) => format::parse_ack(&b).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "spool ack file is invalid; re-sending from the start");
            0
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(&path)(e)),
    };
    // Every valid value ever written there is a position the broker had confirmed.
    let hot = match state_dir.read(HOT_ACK) {
        Ok(b) => format::parse_ack(&b).unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(path = %dir.join(HOT_ACK).display(), error = %e,
                "cannot read the hot copy of the spool's ack file; using the ack file (duplicates, never loss)");
            0
        }
    };
    Ok((written, hot))
}

pub(super) fn write_ack(dir: &Path, acked: u64) -> Result<(), SpoolError> {
    StateDir::at(dir)
        .and_then(|d| d.replace("ack", &format::encode_ack(acked)))
        .map_err(io_err(&ack_path(dir)))
}

/// Writes `acked` to the hot copy of the ack file in place: one `pwrite`, no fsync. `hot` is
/// the copy opened by an earlier call; the first call creates it anew (tmp + rename, so a link
/// planted at its name is never written through) and opens it.
pub(super) fn write_hot_ack(
    dir: &Path,
    hot: &mut Option<File>,
    acked: u64,
) -> Result<(), SpoolError> {
    let bytes = format::encode_ack(acked);
    let path = dir.join(HOT_ACK);
    if let Some(f) = hot {
        return std::os::unix::fs::FileExt::write_all_at(f, &bytes, 0).map_err(io_err(&path));
    }
    let state_dir = StateDir::at(dir).map_err(io_err(dir))?;
    state_dir.replace(HOT_ACK, &bytes).map_err(io_err(&path))?;
    *hot = Some(
        state_dir
            .open_existing(HOT_ACK, true)
            .map_err(io_err(&path))?,
    );
    Ok(())
}

/// The name of a file in the spool directory (segment paths are made from UTF-8 names).
pub(super) fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Creates a segment whose first record will be `first_seq`, durably (file and directory).
pub(super) fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf), SpoolError> {
    let path = segment_path(dir, first_seq);
    let state_dir = StateDir::at(dir).map_err(io_err(dir))?;
    let mut f = state_dir
        .create_new(file_name(&path))
        .map_err(io_err(&path))?;
    if let Err(e) = f
        .write_all(&format::segment_header(first_seq))
        .and_then(|_| f.sync_all())
    {
        // A header cut short by a full disk would be moved aside as corrupt by recovery; the
        // next attempt creates the file again.
        let _ = fs::remove_file(&path);
        return Err(io_err(&path)(e));
    }
    state_dir.sync().map_err(io_err(dir))?;
    Ok((f, path))
}

/// True for the errors of a full filesystem or quota, which go away when space is freed.
pub(super) fn is_disk_full(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::NOSPC | Errno::DQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_carry_their_first_seq() {
        let path = segment_path(Path::new("/s"), 42);
        assert_eq!(path, Path::new("/s/seg-00000000000000000042.log"));
        assert_eq!(segment_first_seq(file_name(&path)), Some(42));
        assert_eq!(segment_first_seq(file_name(&aside_path(&path))), None);
        assert_eq!(segment_first_seq("seg-x.log"), None);
    }
}
