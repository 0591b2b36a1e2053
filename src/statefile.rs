//! Files in iemd's state directories (the checkpoint file, the spool), created and replaced so
//! that a link planted in the directory is never followed.
//!
//! iemd may run with more privilege than the account that owns its state (as root, or as `iemd`
//! with read access to every log). Whoever can write a state directory could plant a symbolic or
//! hard link at a name iemd is about to write (`checkpoints.json.tmp`, `spool/ack.tmp`) and make
//! it overwrite a file they cannot touch. Two rules close that:
//!
//! - A state directory must be owned by this process's user or by root and writable by nobody
//!   else ([`StateDir::open`]); iemd refuses to start otherwise, with an error that says which
//!   directory and why. One it owns is made 0700.
//! - Every file is opened relative to the directory's descriptor with `O_NOFOLLOW`, and a new file
//!   (a temporary file, a spool segment) with `O_CREAT | O_EXCL`, so an existing name is never
//!   written through. A temporary file left by a crash (a regular file of ours, one link) is
//!   removed and created again; anything else at that name (a symbolic link, a file of another
//!   user, a second link to some file) is refused with an error naming it, and left alone.
//!
//! Replacing a file is write `<name>.tmp`, fsync, rename over `<name>`, fsync the directory, so a
//! crash leaves the old file or the new one, never a mix.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Why a state directory or a file in it is refused. It travels inside an [`io::Error`] (kind
/// `PermissionDenied` for a directory, `AlreadyExists` or `InvalidData` for a file), so the
/// stores report it with their usual `<file>: <reason>` errors; `get_ref()` downcasts to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "state directory {path} is {problem}: whoever can write it can plant links iemd would \
         write through, so iemd refuses to use it; {fix}"
    )]
    Directory {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error(
        "{path} is {what}, which iemd never leaves there: refusing to write or read through it; \
         find out who made it, remove it and start iemd again"
    )]
    Planted { path: PathBuf, what: String },
}

impl Refused {
    fn into_io(self) -> io::Error {
        let kind = match &self {
            Refused::Directory { .. } => io::ErrorKind::PermissionDenied,
            Refused::Planted { .. } => io::ErrorKind::AlreadyExists,
        };
        io::Error::new(kind, self)
    }
}

/// An open state directory: the files below are opened relative to its descriptor.
pub(crate) struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl fmt::Debug for StateDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StateDir").field(&self.path).finish()
    }
}

impl StateDir {
    /// Creates `path` (mode 0700, missing parents too) if it is missing, checks that it is a
    /// directory owned by this user or root and writable by nobody else, and makes it 0700 when
    /// this user owns it. For the daemon's start; see the module's rules.
    pub(crate) fn open(path: &Path) -> io::Result<StateDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        let dir = StateDir::at(path)?;
        let st = rustix::fs::fstat(&dir.fd)?;
        let me = rustix::process::geteuid().as_raw();
        let (owner, mode) = (st.st_uid, st.st_mode & 0o7777);
        let refuse = |problem: String, fix: String| {
            Refused::Directory {
                path: path.to_path_buf(),
                problem,
                fix,
            }
            .into_io()
        };
        if owner != me && owner != 0 {
            return Err(refuse(
                format!("owned by uid {owner}, not by this user (uid {me}) or root"),
                format!("chown {me} it, or set state_dir / spool.dir to a directory of this user"),
            ));
        }
        if mode & 0o022 != 0 {
            return Err(refuse(
                format!("writable by group or others (mode {mode:o})"),
                "chmod 700 it".into(),
            ));
        }
        if owner == me && mode & 0o077 != 0 {
            rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(0o700))?;
        }
        Ok(dir)
    }

    /// Opens an existing directory for the file operations below, without the checks of
    /// [`StateDir::open`] (done once at start), e.g. for a read-only look at a spool.
    pub(crate) fn at(path: &Path) -> io::Result<StateDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(StateDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `name` (0600) for reading and writing; fails if anything exists at that name.
    pub(crate) fn create_new(&self, name: &str) -> io::Result<File> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::EXIST) => Err(match self.inspect(name)? {
                Some(planted) => planted.into_io(),
                None => io::Error::from(io::ErrorKind::AlreadyExists),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens `name` (0600, created if missing, never truncated) for writing: a lock file.
    pub(crate) fn open_or_create(&self, name: &str) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        self.checked(
            name,
            rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)),
        )
    }

    /// Opens the existing regular file `name` for reading, or reading and writing.
    pub(crate) fn open_existing(&self, name: &str, write: bool) -> io::Result<File> {
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        // NONBLOCK: a FIFO planted at the name must not hang the open (no effect on files).
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        self.checked(
            name,
            rustix::fs::openat(&self.fd, name, flags, Mode::empty()),
        )
    }

    /// The whole content of the existing regular file `name`.
    pub(crate) fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_existing(name, false)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Replaces `name` with `bytes` atomically and durably: `<name>.tmp` is created new (a
    /// crash's leftover of ours removed first), written, fsynced, renamed over `name`, and the
    /// directory fsynced.
    pub(crate) fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!("{name}.tmp");
        let mut f = match self.create_new(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && e.get_ref().is_none() => {
                // A regular file of ours with one link: the previous process died before its
                // rename. Removing a name never touches what it points to.
                rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty())?;
                self.create_new(&tmp)?
            }
            other => other?,
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
        self.sync()
    }

    /// Renames `from` to `to` within the directory (whatever `to` was is replaced, not followed).
    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Makes the directory's entries durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// An open that followed no link must still have found a regular file: a FIFO, a device or
    /// a directory at a state file's name was planted.
    fn checked(&self, name: &str, opened: rustix::io::Result<OwnedFd>) -> io::Result<File> {
        let file = match opened {
            Ok(fd) => File::from(fd),
            // ELOOP: the name is a symbolic link (O_NOFOLLOW).
            Err(rustix::io::Errno::LOOP) => {
                return Err(match self.inspect(name)? {
                    Some(planted) => planted.into_io(),
                    None => io::Error::from(rustix::io::Errno::LOOP),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(Refused::Planted {
                path: self.path.join(name),
                what: describe(FileType::from_raw_mode(meta.mode())).into(),
            }
            .into_io());
        }
        Ok(file)
    }

    /// What is at `name`, when it is something iemd never makes there: anything but a regular
    /// file of this user with one link. `None` for such a file (or nothing at all).
    fn inspect(&self, name: &str) -> io::Result<Option<Refused>> {
        let st = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        let me = rustix::process::geteuid().as_raw();
        let what = if kind != FileType::RegularFile {
            format!("{} (owner uid {})", describe(kind), st.st_uid)
        } else if st.st_uid != me {
            format!("a file of uid {}, not of this user (uid {me})", st.st_uid)
        } else if st.st_nlink != 1 {
            format!(
                "a file with {} links (a hard link to another file)",
                st.st_nlink
            )
        } else {
            return Ok(None);
        };
        Ok(Some(Refused::Planted {
            path: self.path.join(name),
            what,
        }))
    }
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Unknown => "an unknown kind of file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn replace_writes_atomically_with_private_modes() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a/state");
        let dir = StateDir::open(&path).unwrap();
        assert_eq!(mode(&path), 0o700);
        dir.replace("f", b"one").unwrap();
        dir.replace("f", b"two").unwrap();
        assert_eq!(std::fs::read(path.join("f")).unwrap(), b"two");
        assert_eq!(mode(&path.join("f")), 0o600);
        assert!(!path.join("f.tmp").exists());
        // A crash's leftover temporary file is ours: removed, and the write goes through.
        std::fs::write(path.join("f.tmp"), b"half").unwrap();
        dir.replace("f", b"three").unwrap();
        assert_eq!(dir.read("f").unwrap(), b"three");
    }

    #[test]
    fn an_existing_directory_of_ours_is_made_private() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(d.path()).unwrap();
        assert_eq!(mode(d.path()), 0o700);
    }

    /// Regression (issue 14): a state directory writable by others let anyone plant links.
    #[test]
    fn a_directory_writable_by_others_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = StateDir::open(d.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let shown = err.to_string();
        assert!(
            shown.contains("writable by group or others (mode 770)") && shown.contains("chmod 700"),
            "{shown}"
        );
        assert_eq!(
            mode(d.path()),
            0o770,
            "a refused directory is left as it is"
        );
    }

    #[test]
    fn links_and_other_files_at_a_name_are_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&d.path().join("s")).unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        symlink(&target, d.path().join("s/f.tmp")).unwrap();
        let err = dir.replace("f", b"x").unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<Refused>()),
            Some(Refused::Planted { .. })
        ));
        symlink(&target, d.path().join("s/g")).unwrap();
        assert!(
            dir.read("g")
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(dir.open_or_create("g").is_err());
        assert!(dir.create_new("g").is_err());
        std::fs::hard_link(&target, d.path().join("s/h.tmp")).unwrap();
        let err = dir.replace("h", b"x").unwrap_err();
        assert!(err.to_string().contains("2 links"), "{err}");
        rustix::fs::mkfifoat(&dir.fd, "p", Mode::from_raw_mode(0o600)).unwrap();
        let err = dir.read("p").unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(d.path().join("s/f.tmp").is_symlink());
    }
}
