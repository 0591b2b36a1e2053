//! File identity: device + inode say which file a name points at now; the fingerprint (a hash of
//! the first line, at most [`FINGERPRINT_BYTES`]) says whether it is still the file we read, so a
//! reused inode or a file truncated and rewritten in place is not taken for the old one.
//!
//! The fingerprint is stable once the first line is complete (or 1 KiB long) and survives
//! renames; it changes when a copytruncate rotation truncates and new lines are written.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::source::FilePosition;

/// How much of the first line the fingerprint covers.
pub(crate) const FINGERPRINT_BYTES: usize = 1024;

/// Rotated copies under these suffixes are compressed: their bytes are not the file's bytes.
const COMPRESSED_SUFFIXES: [&str; 6] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z"];

/// The fingerprint of a file whose first bytes are `prefix` (at most [`FINGERPRINT_BYTES`]
/// read from offset 0): blake3 of the first line including its LF, cut to 1 KiB, truncated
/// to 64 bits. The boolean is false while the first line is still incomplete and shorter than
/// 1 KiB, i.e. while the value may still change as the file grows.
pub fn fingerprint(prefix: &[u8]) -> (u64, bool) {
    let prefix = &prefix[..prefix.len().min(FINGERPRINT_BYTES)];
    let (covered, complete) = match memchr::memchr(b'\n', prefix) {
        Some(i) => (&prefix[..=i], true),
        None => (prefix, prefix.len() == FINGERPRINT_BYTES),
    };
    let hash = blake3::hash(covered);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first), complete)
}

/// Reads up to [`FINGERPRINT_BYTES`] from the start of the file (positional: the handle's
/// offset is untouched).
pub(crate) fn read_prefix(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// What identifies an open file now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    pub(crate) dev: u64,
    pub ino: u64,
    pub(crate) size: u64,
    pub fingerprint: u64,
    /// See [`fingerprint`].
    pub(crate) fingerprint_complete: bool,
    /// Last modification (mtime), to order rotated files by age.
    pub(crate) modified: SystemTime,
}

impl FileFacts {
    pub fn of(file: &File) -> io::Result<FileFacts> {
        let meta = file.metadata()?;
        let (fingerprint, fingerprint_complete) = fingerprint(&read_prefix(file)?);
        Ok(FileFacts {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            fingerprint,
            fingerprint_complete,
            modified: meta.modified()?,
        })
    }
}

/// True when `file` is the file the checkpoint was taken in and still holds everything up to it:
/// reading may continue at `cp.next_offset`.
pub(crate) fn is_checkpointed_file(cp: &FilePosition, file: &FileFacts) -> bool {
    file.dev == cp.dev
        && file.ino == cp.ino
        && file.fingerprint == cp.fingerprint
        && file.size >= cp.next_offset
}

/// Among files that may be rotated copies of the checkpointed one, the one that holds the
/// checkpointed bytes: the same fingerprint and at least `next_offset` bytes. The same device and
/// inode (a rename rotation) is preferred over a mere fingerprint match (a copytruncate copy).
pub(crate) fn pick_rotated<'a>(
    cp: &FilePosition,
    candidates: &'a [(PathBuf, FileFacts)],
) -> Option<&'a (PathBuf, FileFacts)> {
    let holds = |f: &FileFacts| f.fingerprint == cp.fingerprint && f.size >= cp.next_offset;
    candidates
        .iter()
        .find(|(_, f)| holds(f) && f.dev == cp.dev && f.ino == cp.ino)
        .or_else(|| candidates.iter().find(|(_, f)| holds(f)))
}

/// Compressed rotated files this source can read back: gzip (flate2), zstd (ruzstd), xz
/// (lzma-rust2) and bzip2 (bzip2 over libbz2-rs-sys), all pure Rust. `.lz4` and `.Z` are not
/// read.
const READABLE_COMPRESSED: [&str; 4] = [".gz", ".zst", ".xz", ".bz2"];

/// The most memory an xz block's dictionary may take, in KiB: 256 MiB, four times what
/// `xz -9` uses (64 MiB). A file asking for more is reported as unreadable rather than
/// allowed to take the host's memory.
const XZ_MEM_LIMIT_KB: u32 = 256 * 1024;

/// The compressed rotated files beside `path` that can be read back (`messages.1.gz`), by name.
pub(crate) fn compressed_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.len() > name.len()
                && n.starts_with(name.as_ref())
                && READABLE_COMPRESSED.iter().any(|s| n.ends_with(s))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The decompressed bytes of a `.gz`, `.zst`, `.xz` or `.bz2` file. Concatenated streams (as
/// `pzstd` or `pbzip2` write, or `cat a.gz b.gz`) are read through to the last one.
pub(crate) fn decompress(path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
    let file = io::BufReader::new(File::open(path)?);
    let name = path.to_string_lossy();
    if name.ends_with(".gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(file)))
    } else if name.ends_with(".zst") {
        Ok(Box::new(ZstdFrames::new(file)))
    } else if name.ends_with(".xz") {
        Ok(Box::new(lzma_rust2::XzReader::new_mem_limit(
            file,
            true,
            XZ_MEM_LIMIT_KB,
        )))
    } else if name.ends_with(".bz2") {
        Ok(Box::new(bzip2::read::MultiBzDecoder::new(file)))
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not a .gz, .zst, .xz or .bz2 file",
        ))
    }
}

/// Every zstd frame of a file, one after another. ruzstd's `StreamingDecoder` stops after the
/// first frame, which silently dropped the rest of a file that `pzstd` or `cat a.zst b.zst` wrote
/// (one frame per chunk or part); skippable frames are stepped over, as `zstd -d` does.
struct ZstdFrames<R> {
    source: R,
    frame: ruzstd::decoding::FrameDecoder,
    /// `frame` holds a started frame whose bytes may not all have been read yet.
    in_frame: bool,
}

impl<R: io::BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source,
            frame: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: io::BufRead> io::Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.in_frame {
                while self.frame.can_collect() == 0 && !self.frame.is_finished() {
                    self.frame
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(io::Error::other)?;
                }
                let n = self.frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.in_frame = false;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.frame.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let length = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.source).take(length), &mut io::sink())?;
                    if skipped < length {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd skippable frame cut short",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// The fingerprint of a compressed file's decompressed content (see [`fingerprint`]).
pub(crate) fn compressed_fingerprint(path: &Path) -> io::Result<(u64, bool)> {
    let mut r = decompress(path)?;
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(fingerprint(&buf))
}

/// The file a symlinked `path` points at (links followed, at most 8; relative targets taken
/// from the link's directory), even when that file does not exist at the moment (between a
/// rotation's rename and create); `None` when `path` is not a symlink.
pub(crate) fn resolve_link(path: &Path) -> Option<PathBuf> {
    let mut p = path.to_path_buf();
    let mut followed = false;
    for _ in 0..8 {
        let Ok(target) = std::fs::read_link(&p) else {
            break;
        };
        p = match p.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
        followed = true;
    }
    followed.then_some(p)
}

/// Where the file `path` names really is: its symlink's target, or `path` itself. Rotated
/// siblings are looked for there.
pub(crate) fn resolved(path: &Path) -> PathBuf {
    resolve_link(path).unwrap_or_else(|| path.to_path_buf())
}

/// The files beside `path` whose names start with its name (`messages.1`, `messages-20260101`),
/// except compressed ones, with their facts. Unreadable entries are skipped.
pub(crate) fn rotated_candidates(path: &Path) -> Vec<(PathBuf, FileFacts)> {
    rotated_files(path)
        .into_iter()
        .map(|(p, _, facts)| (p, facts))
        .collect()
}

/// [`rotated_candidates`] with the files kept open, so that what is read later is the file the
/// facts describe even if it is renamed again meanwhile. Each file appears once.
///
/// A rotation may be renaming these files while we look: a name read from the directory can name
/// another file by the time it is opened, and a directory read during renames can miss an entry.
/// So the directory is read again until a read shows no file that has not been opened (at most
/// [`MAX_LISTINGS`] reads), and files are kept once by device and inode. Without this a rotation
/// racing the listing could hide a rotated file for good, or offer one twice (seen in
/// `rapid_double_rotations_while_reading_lose_nothing`: whole files lost, lines read twice).
pub fn rotated_files(path: &Path) -> Vec<(PathBuf, File, FileFacts)> {
    use std::os::unix::fs::DirEntryExt;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let is_sibling = |n: &str| {
        n.len() > name.len()
            && n.starts_with(name.as_ref())
            && !COMPRESSED_SUFFIXES.iter().any(|s| n.ends_with(s))
    };
    let mut out: Vec<(PathBuf, File, FileFacts)> = Vec::new();
    // Inodes opened, and inodes listed that turned out not to be regular files or not readable.
    let mut opened: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut passed: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for _ in 0..MAX_LISTINGS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            break;
        };
        let mut unseen = false;
        for e in entries.filter_map(Result::ok) {
            if !is_sibling(&e.file_name().to_string_lossy())
                || opened.contains(&e.ino())
                || passed.contains(&e.ino())
            {
                continue;
            }
            unseen = true;
            let p = e.path();
            let file = match File::open(&p) {
                Ok(file) => file,
                // Renamed away meanwhile: a later read finds it under its new name.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    passed.insert(e.ino());
                    continue;
                }
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            if !meta.is_file() {
                passed.insert(meta.ino());
                continue;
            }
            if !opened.insert(meta.ino()) {
                // Renamed under us to a name already opened.
                continue;
            }
            match FileFacts::of(&file) {
                Ok(facts) => out.push((p, file, facts)),
                Err(_) => {
                    passed.insert(meta.ino());
                }
            }
        }
        if !unseen {
            break;
        }
    }
    // Deterministic order: `.1` before `.2`.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Most directory reads [`rotated_files`] makes while renames keep changing what it sees.
const MAX_LISTINGS: usize = 16;

/// Rotated files (from [`rotated_files`] of `path`) last modified at or after `since` and not
/// `skip`ped, oldest first: a file rotated away before the source could open it at `path`.
///
/// Age is the modification time; on a tie (rotations within the clock's granularity) a short
/// number after the name counts down with age as logrotate numbers them (`.2` is older than
/// `.1`), anything else (dates) sorts up by name.
pub(crate) fn rotated_since(
    path: &Path,
    files: Vec<(PathBuf, File, FileFacts)>,
    since: SystemTime,
    skip: impl Fn(&FileFacts) -> bool,
) -> Vec<(PathBuf, File, FileFacts)> {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out: Vec<_> = files
        .into_iter()
        .filter(|(_, _, f)| f.modified >= since && !skip(f))
        .collect();
    out.sort_by_cached_key(|(p, _, f)| (f.modified, age_by_name(&base, p)));
    out
}

/// Tie-breaker for [`rotated_since`]: smaller is older.
fn age_by_name(base: &str, p: &Path) -> (u8, std::cmp::Reverse<u64>, PathBuf) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let number = name
        .strip_prefix(base)
        .map(|s| s.trim_start_matches(['.', '-', '_']))
        .filter(|s| !s.is_empty() && s.len() < 8 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok());
    match number {
        Some(n) => (0, std::cmp::Reverse(n), p.to_path_buf()),
        None => (1, std::cmp::Reverse(0), p.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(dev: u64, ino: u64, fingerprint: u64, next_offset: u64) -> FilePosition {
        FilePosition {
            path: PathBuf::from("/var/log/messages"),
            dev,
            ino,
            fingerprint,
            offset_of_line: 0,
            next_offset,
        }
    }

    fn facts(dev: u64, ino: u64, size: u64, fingerprint: u64) -> FileFacts {
        FileFacts {
            dev,
            ino,
            size,
            fingerprint,
            fingerprint_complete: true,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn fingerprint_covers_the_first_line_only_and_knows_when_it_is_final() {
        let (a, ca) = fingerprint(b"first line\nsecond");
        let (b, cb) = fingerprint(b"first line\nother second line");
        assert_eq!((a, ca), (b, cb));
        assert!(ca);
        let (c, cc) = fingerprint(b"first li");
        assert!(!cc);
        assert_ne!(a, c);
        let long = vec![b'x'; 3000];
        let (d, cd) = fingerprint(&long[..FINGERPRINT_BYTES]);
        assert!(cd);
        assert_eq!(d, fingerprint(&long).0);
        assert_ne!(fingerprint(b"other first\n").0, a);
    }

    #[test]
    fn continue_only_in_the_same_file_with_enough_bytes() {
        let c = cp(1, 10, 77, 500);
        assert!(is_checkpointed_file(&c, &facts(1, 10, 500, 77)));
        assert!(is_checkpointed_file(&c, &facts(1, 10, 900, 77)));
        // renamed away, a new file at the path
        assert!(!is_checkpointed_file(&c, &facts(1, 11, 900, 77)));
        // inode reused by a different file
        assert!(!is_checkpointed_file(&c, &facts(1, 10, 900, 78)));
        // truncated (copytruncate while stopped)
        assert!(!is_checkpointed_file(&c, &facts(1, 10, 499, 77)));
        assert!(!is_checkpointed_file(&c, &facts(2, 10, 900, 77)));
    }

    #[test]
    fn rotated_file_prefers_the_same_inode_over_a_copy() {
        let c = cp(1, 10, 77, 500);
        let cands = vec![
            (PathBuf::from("messages.0"), facts(1, 20, 600, 77)), // a copy
            (PathBuf::from("messages.1"), facts(1, 10, 800, 77)), // renamed original
            (PathBuf::from("messages.2"), facts(1, 30, 900, 66)),
        ];
        assert_eq!(
            pick_rotated(&c, &cands).unwrap().0,
            PathBuf::from("messages.1")
        );
        assert_eq!(
            pick_rotated(&c, &cands[..1]).unwrap().0,
            PathBuf::from("messages.0")
        );
        // too short to hold the checkpoint, or another file
        assert_eq!(pick_rotated(&cp(1, 10, 77, 1000), &cands), None);
        assert_eq!(pick_rotated(&c, &cands[2..]), None);
    }

    #[test]
    fn rotated_since_orders_by_mtime_then_logrotate_number_and_skips() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("messages");
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let secs = std::time::Duration::from_secs;
        // messages.3 is older than the cut; .1 and .2 tie (rotated within one clock tick).
        for (n, at) in [
            ("messages.3", t0 - secs(10)),
            ("messages.2", t0 + secs(5)),
            ("messages.1", t0 + secs(5)),
            ("messages-20260101", t0),
            ("messages.5", t0 + secs(1)),
        ] {
            let p = d.path().join(n);
            std::fs::write(&p, format!("{n}\n")).unwrap();
            File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        let skip_ino = std::fs::metadata(d.path().join("messages.5"))
            .unwrap()
            .ino();
        let names: Vec<String> =
            rotated_since(&path, rotated_files(&path), t0, |f| f.ino == skip_ino)
                .into_iter()
                .map(|(p, _, _)| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
        assert_eq!(names, vec!["messages-20260101", "messages.2", "messages.1"]);
    }

    /// Every readable suffix decodes what the real tool wrote, through to the last of two
    /// concatenated streams (`cat a.xz b.xz`, as parallel compressors write).
    #[test]
    fn compressed_files_decode_every_concatenated_stream() {
        use std::io::Read;

        let d = tempfile::tempdir().unwrap();
        for (tool, ext) in [
            ("gzip", ".gz"),
            ("zstd", ".zst"),
            ("xz", ".xz"),
            ("bzip2", ".bz2"),
        ] {
            let mut joined = Vec::new();
            for part in ["first stream\n", "second stream\n"] {
                let plain = d.path().join("part");
                std::fs::write(&plain, part).unwrap();
                let out = std::process::Command::new(tool)
                    .args(["-c", "-q"])
                    .arg(&plain)
                    .output()
                    .unwrap_or_else(|e| panic!("{tool} is installed: {e}"));
                assert!(out.status.success(), "{tool}");
                joined.extend(out.stdout);
            }
            let path = d.path().join(format!("messages.1{ext}"));
            std::fs::write(&path, joined).unwrap();
            let mut text = String::new();
            decompress(&path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(text, "first stream\nsecond stream\n", "{ext}");
            assert_eq!(
                compressed_fingerprint(&path).unwrap(),
                fingerprint(b"first stream\n"),
                "{ext}"
            );
        }
        let names: Vec<String> = compressed_files(&d.path().join("messages"))
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "messages.1.bz2",
                "messages.1.gz",
                "messages.1.xz",
                "messages.1.zst"
            ]
        );
    }

    /// A skippable zstd frame (metadata some writers add) between two frames is stepped over.
    #[test]
    fn zstd_skippable_frames_are_stepped_over() {
        use std::io::Read;

        let zstd = |text: &str| {
            let mut child = std::process::Command::new("zstd")
                .args(["-c", "-q"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("zstd is installed");
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
            child.wait_with_output().unwrap().stdout
        };
        let mut bytes = zstd("a\n");
        bytes.extend(0x184D_2A50u32.to_le_bytes());
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(b"xyz");
        bytes.extend(zstd("b\n"));
        let mut text = String::new();
        ZstdFrames::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\nb\n");
    }

    #[test]
    fn candidates_are_name_prefixed_uncompressed_siblings() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "messages",
            "messages.1",
            "messages.2.gz",
            "messages-2026",
            "other",
        ] {
            std::fs::write(d.path().join(n), b"l\n").unwrap();
        }
        let names: Vec<String> = rotated_candidates(&d.path().join("messages"))
            .into_iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["messages-2026", "messages.1"]);
    }
}
