//! Tailing files: any number of paths and globs, rotation-safe, resumable from checkpoints.
//!
//! # How it reads
//!
//! Every watched path has at most one *current* reader (the file the path names now) and any
//! number of *draining* readers (files renamed away by a rotation, still open). The parent
//! directories are watched with inotify (notify crate); every event, and a stat every second as a
//! safety net, triggers a poll: read each reader to its end through its handle, then compare the
//! path's device+inode with the current reader's.
//!
//! - Rename/create rotation: the path names another inode. The old handle is read to its end and
//!   kept draining for `rotated_keep_ms` (10 min) after its last byte (writers such as rsyslog keep
//!   writing to it until they reopen, a block-buffered writer may flush much later); the new file is
//!   read from its start. Lines of a draining file are checkpointed like any other
//!   ([`checkpoint`](super::checkpoint) keeps a path's older files apart from its newest), so a
//!   restart resumes each rotated file where it was and reads what was appended to it meanwhile.
//!   Rotations faster than our polls: a file can be created at the path and renamed away before
//!   we open it (two rotations between two polls). So when the current file is found rotated,
//!   every uncompressed sibling `<name>*` that this source has not opened (nor closed recently,
//!   nor found already there when it started tracking the path, see `Known`) and that was
//!   modified at or after the rotated file's modification time when we opened it (a file
//!   created at the path later was) is read from its start, oldest first
//!   ([`identity::rotated_since`]), before the new file at the path.
//! - copytruncate: the file is shorter than what we read, or its first line (fingerprint) changed.
//!   Reading restarts at 0. Before that, a sibling `<name>*` with the same fingerprint and more
//!   bytes (the copy) is read from where we were, which recovers the lines written between our
//!   last read and the copy. Lines written between the copy and the truncation exist nowhere any
//!   more and are lost; so are lines if the truncated file regrows past our offset with the same
//!   first line before we look (not detectable).
//! - Restart from a checkpoint: if the path still names the checkpointed file (device, inode,
//!   fingerprint, and at least `next_offset` bytes), continue there. Otherwise finish the rotated
//!   file (a sibling `<name>*`, see [`identity::pick_rotated`]) from the checkpoint; then read from
//!   their start, oldest first, the other uncompressed siblings modified at or after it (rotations
//!   while we were stopped: `messages.1` when the checkpoint is in `messages.2`), except the file
//!   at the path; then the file now at the path from its start. Lines of these files keep the
//!   (fingerprint, offset) identity they would have had if read live. Rotated files still being
//!   read at the stop (the checkpoint's `rotated` positions) are resumed first, where they were.
//!   The source's first run (no checkpoint state for it) never reads rotated siblings (`start_at`
//!   decides about the path only); on later runs a file without a checkpoint is read from its
//!   start. If the checkpointed file was compressed (`compress` without `delaycompress`), the
//!   sibling ending in `.gz`, `.zst`, `.xz` or `.bz2` whose decompressed first line has its
//!   fingerprint is read through the decompressor from the checkpoint, its lines keeping the
//!   file's identity, and the files rotated after it are dated by its time. If it is gone
//!   (deleted, or compressed as `.lz4` or `.Z`, which are not read), the lines after the
//!   checkpoint in it are lost (logged), and files rotated after it are not read either (nothing
//!   dates them against it).
//!
//! A path that exists but cannot be opened (permissions) is reported through
//! [`SourceMetrics::set_path`] (one error with the fix, `iemd_source_up`, `/health`) and retried
//! at every poll.
//!
//! Known limits: Glob patterns should not also match the rotated names (`*.log`, not
//! `*`), or rotated files are tailed as files of their own. A first line taken early by the
//! partial-line timeout gets a fingerprint of its incomplete bytes (the completed line and the
//! lines after it get the final one). A file rotated away unread is
//! found by its modification time: on restart, one whose last write is older than the
//! checkpointed file's last (late) write is not read, and one compressed or deleted (a rotation
//! scheme keeping fewer generations than it rotates between two polls) before we look is lost.
//!
//! Two causes of rotated files skipped under rapid rotations were found and fixed: a poll that
//! found no file at the path (between a rotation's rename and create) forgot to look for missed
//! rotations once a file was back (`Tracked::missed_since`), and a directory listing racing the
//! renames could skip a file or offer one twice ([`identity::rotated_files`]). Tests:
//! `rapid_double_rotations_while_reading_lose_nothing` (live, 30 rounds of two rotations),
//! `a_file_rotated_away_while_the_path_was_missing_is_read` and
//! `listing_rotated_files_during_renames_finds_each_file_once` (both failed before the fixes).
//!
//! Reads are plain blocking reads of at most [`READ_CHUNK`] bytes on local files between awaits.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::alert::OriginKind;
use crate::config::sources::{FileSourceConfig, FileStartAt, has_glob_chars};
use crate::source::channel::LineSender;
use crate::source::checkpoint::CheckpointStore;
use crate::source::identity::{self, FileFacts};
use crate::source::lines::{LineSplitter, RawLine};
use crate::source::{
    FilePosition, PathState, Position, SourceError, SourceLine, SourceMetrics, unreadable,
};

/// The safety-net stat interval (inotify does the fast path).
pub(crate) const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Largest single read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// How many closed files per path are remembered as already read (see [`Known`]).
const KNOWN_FILES: usize = 64;

/// One `[[sources.files]]` entry, ready to run.
pub struct FileSource {
    name: Arc<str>,
    patterns: Vec<PathBuf>,
    start_at: FileStartAt,
    /// No checkpoint state for this source yet: `start_at` applies to the files found at start.
    first_run: bool,
    max_line_bytes: usize,
    partial_timeout: Duration,
    rotated_keep: Duration,
    checkpoints: HashMap<PathBuf, FilePosition>,
    /// Positions in the rotated (older) files of each path, oldest first.
    rotated_checkpoints: HashMap<PathBuf, Vec<FilePosition>>,
    metrics: Arc<SourceMetrics>,
}

impl FileSource {
    /// Takes the committed positions of this source's paths from `store`.
    ///
    /// On the source's first run ever (the store has no trace of it), `start_at` decides where
    /// the files there now are read from; with `start_at = "end"` their ends are recorded in the
    /// store as checkpoints at once, and the source is marked as started, so that a restart before
    /// any line was read neither re-reads those files nor takes a file created meanwhile for one
    /// to skip.
    pub fn new(config: &FileSourceConfig, store: &CheckpointStore) -> Self {
        let name: Arc<str> = Arc::from(config.source_name());
        let mut source = FileSource {
            name: name.clone(),
            patterns: config.paths.clone(),
            start_at: config.start_at,
            first_run: false,
            max_line_bytes: config.max_line_bytes,
            partial_timeout: config.partial_line_timeout(),
            rotated_keep: config.rotated_keep(),
            checkpoints: HashMap::new(),
            rotated_checkpoints: HashMap::new(),
            metrics: Arc::new(SourceMetrics::default()),
        };
        let ours = |p: &Path| source.patterns.iter().any(|pat| matches_pattern(pat, p));
        let checkpoints: HashMap<PathBuf, FilePosition> = store
            .files()
            .into_iter()
            .filter(|c| ours(&c.path))
            .map(|c| (c.path.clone(), c))
            .collect();
        let rotated = checkpoints
            .keys()
            .map(|p| (p.clone(), store.rotated(p)))
            .collect();
        // A source from before `started` existed counts as started when it has checkpoints.
        source.first_run = !store.has_started(&name) && checkpoints.is_empty();
        source.checkpoints = checkpoints;
        source.rotated_checkpoints = rotated;
        if source.first_run {
            source.record_first_run(store);
        }
        source
    }

    /// The first run: checkpoints at the end of the files there now when `start_at = "end"`, and
    /// the mark that the source has run, written at once.
    fn record_first_run(&mut self, store: &CheckpointStore) {
        if self.start_at == FileStartAt::End {
            for path in self.expand() {
                let Ok(Some((_, facts))) = open_with_facts(&path) else {
                    continue;
                };
                if facts.size == 0 || !facts.fingerprint_complete {
                    continue;
                }
                let at_end = FilePosition {
                    path: path.clone(),
                    dev: facts.dev,
                    ino: facts.ino,
                    fingerprint: facts.fingerprint,
                    offset_of_line: facts.size,
                    next_offset: facts.size,
                };
                match store.record(&self.name, &Position::File(at_end.clone())) {
                    Ok(()) => {
                        self.checkpoints.insert(path, at_end);
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "cannot record where start_at = \"end\" starts")
                    }
                }
            }
        }
        store.mark_started(&self.name);
        if let Err(e) = store.persist() {
            tracing::warn!(
                source = %self.name, error = %e,
                "cannot save that the source has started; saved with the first checkpoint"
            );
        }
    }

    /// Reads until `token` is cancelled or the receiver is dropped. Fails only when inotify
    /// cannot be set up at all; missing files and directories are waited for.
    pub async fn run(
        mut self,
        tx: impl Into<LineSender>,
        token: CancellationToken,
    ) -> Result<(), SourceError> {
        let tx: LineSender = tx.into();
        let wake = Arc::new(Notify::new());
        let rescan = Arc::new(AtomicBool::new(true));
        let mut watcher = {
            let (wake, rescan) = (wake.clone(), rescan.clone());
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                let names_changed = match ev {
                    Ok(ev) => matches!(
                        ev.kind,
                        EventKind::Create(_)
                            | EventKind::Remove(_)
                            | EventKind::Modify(notify::event::ModifyKind::Name(_))
                    ),
                    Err(_) => true,
                };
                if names_changed {
                    rescan.store(true, Ordering::Relaxed);
                }
                wake.notify_one();
            })?
        };
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let mut tracked: BTreeMap<PathBuf, Tracked> = BTreeMap::new();
        let mut at_startup = true;
        let mut next_tick = Instant::now();
        let mut out = Sink {
            tx: &tx,
            token: &token,
            metrics: self.metrics.clone(),
        };

        loop {
            let now = Instant::now();
            let tick = now >= next_tick;
            if tick {
                next_tick = now + RESCAN_INTERVAL;
            }
            if tick || rescan.swap(false, Ordering::Relaxed) {
                for path in self.expand() {
                    if let std::collections::btree_map::Entry::Vacant(e) = tracked.entry(path) {
                        let t = self.discover(e.key(), at_startup);
                        e.insert(t);
                    }
                }
                self.watch_dirs(&mut watcher, &mut watched, tracked.keys());
                at_startup = false;
            }
            let mut gone = Vec::new();
            for (path, t) in tracked.iter_mut() {
                if !self.poll(t, &mut out).await {
                    return Ok(());
                }
                if t.current.is_none() && t.draining.is_empty() && t.from_glob && !path.exists() {
                    gone.push(path.clone());
                }
            }
            for p in gone {
                self.metrics.forget_path(&p.to_string_lossy());
                tracked.remove(&p);
            }

            let deadline = tracked
                .values()
                .flat_map(|t| t.current.iter().chain(t.draining.iter()))
                .filter_map(|r| r.deadline(self.partial_timeout))
                .fold(next_tick, Instant::min);
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Watches the parent directory of every pattern, and of the file a symlinked path points
    /// at now (its writes and rotations happen there), that exists and is not watched yet.
    fn watch_dirs<'p>(
        &self,
        watcher: &mut impl Watcher,
        watched: &mut HashSet<PathBuf>,
        tracked: impl Iterator<Item = &'p PathBuf>,
    ) {
        let targets: Vec<PathBuf> = tracked.filter_map(|p| identity::resolve_link(p)).collect();
        for p in self.patterns.iter().chain(targets.iter()) {
            let Some(dir) = p.parent() else { continue };
            if watched.contains(dir) || !dir.is_dir() {
                continue;
            }
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir.to_path_buf());
                }
                Err(e) => tracing::warn!(
                    source = %self.name, dir = %dir.display(), error = %e,
                    "cannot watch directory; relying on the 1 s stat"
                ),
            }
        }
    }

    /// The paths the patterns name now: literal paths always (they may appear later), glob
    /// matches that are regular files.
    fn expand(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in &self.patterns {
            match expand_pattern(p) {
                Ok(paths) => {
                    if is_glob(p) {
                        self.metrics
                            .set_path(&self.name, &p.to_string_lossy(), PathState::Up);
                    }
                    out.extend(paths);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.metrics
                        .set_path(&self.name, &p.to_string_lossy(), PathState::Missing)
                }
                Err(e) => {
                    let dir = p.parent().unwrap_or(p);
                    self.metrics
                        .set_path(&self.name, &p.to_string_lossy(), unreadable(dir, &e));
                }
            }
        }
        out
    }

    /// Opens the file at `path`, recording whether it can be read. `at_discovery`: a missing file
    /// is recorded as missing (later it is a rotation's gap between rename and create).
    fn open_path(&self, path: &Path, at_discovery: bool) -> Option<(File, FileFacts)> {
        let label = path.to_string_lossy();
        match open_with_facts(path) {
            Ok(Some(opened)) => {
                self.metrics.set_path(&self.name, &label, PathState::Up);
                Some(opened)
            }
            Ok(None) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if at_discovery {
                    self.metrics
                        .set_path(&self.name, &label, PathState::Missing);
                }
                None
            }
            Err(e) => {
                self.metrics
                    .set_path(&self.name, &label, unreadable(path, &e));
                None
            }
        }
    }

    /// Starts tracking a path: from its checkpoint, or per `start_at` when found at startup, or
    /// from the beginning when it appeared later.
    fn discover(&mut self, path: &Path, at_startup: bool) -> Tracked {
        let mut t = Tracked {
            path: path.to_path_buf(),
            from_glob: !self.patterns.iter().any(|p| p == path),
            current: None,
            draining: Vec::new(),
            compressed: Vec::new(),
            known: Known::default(),
            missed_since: None,
        };
        let opened = self.open_path(path, true);
        let mut siblings = identity::rotated_files(&identity::resolved(path));
        // Rotated files there now are never taken for rotations missed while running: start_at
        // or the checkpoint decides about them, here.
        siblings.sort_by_key(|(_, _, f)| f.modified);
        for (_, _, f) in &siblings {
            t.known.note(FileId::of_facts(f));
        }
        // Rotated files still read when the source stopped: resumed where they were (their
        // writers may have appended meanwhile), oldest first.
        let mut resumed: Vec<(u64, u64)> = Vec::new();
        for rcp in self.rotated_checkpoints.remove(path).unwrap_or_default() {
            let Some((p, file, facts)) = siblings.iter().find(|(_, _, f)| {
                (f.dev, f.ino, f.fingerprint) == (rcp.dev, rcp.ino, rcp.fingerprint)
                    && f.fingerprint_complete
                    && f.size >= rcp.next_offset
            }) else {
                continue;
            };
            let Ok(file) = file.try_clone() else {
                continue;
            };
            if facts.size > rcp.next_offset {
                tracing::info!(
                    source = %self.name, path = %path.display(), rotated = %p.display(),
                    offset = rcp.next_offset, "reading what was appended to a rotated file while stopped"
                );
            }
            resumed.push((facts.dev, facts.ino));
            t.draining
                .push(self.reader(p, file, facts, rcp.next_offset));
        }
        let Some(cp) = self.checkpoints.remove(path) else {
            if let Some((file, facts)) = opened {
                let offset = match (at_startup && self.first_run, self.start_at) {
                    (true, FileStartAt::End) => facts.size,
                    _ => 0,
                };
                t.current = Some(self.reader(path, file, &facts, offset));
            }
            return t;
        };
        if let Some((file, facts)) = &opened
            && identity::is_checkpointed_file(&cp, facts)
        {
            let file = file.try_clone();
            if let Ok(file) = file {
                t.current = Some(self.reader(path, file, facts, cp.next_offset));
                return t;
            }
        }
        // Rotated (or truncated) while we were stopped: finish the old bytes first, then every file
        // rotated after it, then the file at the path.
        let candidates: Vec<(PathBuf, FileFacts)> =
            siblings.iter().map(|(p, _, f)| (p.clone(), *f)).collect();
        let picked = identity::pick_rotated(&cp, &candidates).map(|(p, f)| (p.clone(), *f));
        // Compressed before we looked (`compress` without `delaycompress`): read through the
        // decompressor; the files rotated after it are dated by the compressed file's time.
        let compressed = match picked {
            Some(_) => None,
            None => self.find_compressed(&cp, &identity::resolved(path)),
        };
        if let Some((stream, modified)) = compressed {
            tracing::info!(
                source = %self.name, path = %path.display(), rotated = %stream.label.display(),
                offset = cp.next_offset, "finishing the compressed rotated file from the checkpoint"
            );
            SourceMetrics::add(&self.metrics.rotations_total, 1);
            t.compressed.push(stream);
            let mut skip = resumed;
            skip.extend(opened.as_ref().map(|(_, f)| (f.dev, f.ino)));
            self.read_rotated_while_stopped(&mut t, siblings, modified, &skip);
            if let Some((file, facts)) = opened {
                t.current = Some(self.reader(path, file, &facts, 0));
            }
            return t;
        }
        match picked {
            Some((old_path, facts)) => {
                let file = siblings
                    .iter()
                    .find(|(p, _, _)| *p == old_path)
                    .map(|(_, file, _)| file.try_clone());
                match file {
                    Some(Ok(file)) => {
                        tracing::info!(
                            source = %self.name, path = %path.display(), rotated = %old_path.display(),
                            offset = cp.next_offset, "finishing the rotated file from the checkpoint"
                        );
                        SourceMetrics::add(&self.metrics.rotations_total, 1);
                        t.draining
                            .push(self.reader(&old_path, file, &facts, cp.next_offset));
                    }
                    Some(Err(e)) => tracing::warn!(
                        source = %self.name, path = %old_path.display(), error = %e,
                        "cannot open the rotated file; lines after the checkpoint in it are lost"
                    ),
                    None => {}
                }
                let mut skip = resumed;
                skip.push((facts.dev, facts.ino));
                skip.extend(opened.as_ref().map(|(_, f)| (f.dev, f.ino)));
                self.read_rotated_while_stopped(&mut t, siblings, facts.modified, &skip);
            }
            None => tracing::warn!(
                source = %self.name, path = %path.display(), offset = cp.next_offset,
                "the checkpointed file is gone (deleted, or compressed in a format iemd cannot read); lines after the checkpoint in it are lost"
            ),
        }
        if let Some((file, facts)) = opened {
            t.current = Some(self.reader(path, file, &facts, 0));
        }
        t
    }

    /// Queues, from their start and oldest first, the rotated files of `t` modified at or after
    /// `since` (rotated after the checkpointed file while the source was stopped), except the
    /// files in `skip` (device, inode).
    fn read_rotated_while_stopped(
        &self,
        t: &mut Tracked,
        siblings: Vec<(PathBuf, File, FileFacts)>,
        since: SystemTime,
        skip: &[(u64, u64)],
    ) {
        let later = identity::rotated_since(&identity::resolved(&t.path), siblings, since, |f| {
            skip.contains(&(f.dev, f.ino))
        });
        for (p, file, f) in later {
            tracing::info!(
                source = %self.name, path = %t.path.display(), rotated = %p.display(),
                "reading a file rotated while stopped from its start"
            );
            SourceMetrics::add(&self.metrics.rotations_total, 1);
            t.draining.push(self.reader(&p, file, &f, 0));
        }
    }

    /// The compressed sibling (`.gz`, `.zst`, `.xz`, `.bz2`) whose decompressed first line is the checkpointed
    /// file's, ready to be read from the checkpoint, and its modification time.
    fn find_compressed(&self, cp: &FilePosition, resolved: &Path) -> Option<(Stream, SystemTime)> {
        for p in identity::compressed_files(resolved) {
            match identity::compressed_fingerprint(&p) {
                Ok((fp, true)) if fp == cp.fingerprint => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(source = %self.name, path = %p.display(), error = %e, "cannot read a compressed rotated file");
                    continue;
                }
            }
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            match identity::decompress(&p) {
                Ok(input) => {
                    return Some((
                        Stream {
                            label: p,
                            input,
                            skip: cp.next_offset,
                            splitter: LineSplitter::new(self.max_line_bytes, cp.next_offset),
                            dev: cp.dev,
                            ino: cp.ino,
                            fingerprint: cp.fingerprint,
                        },
                        modified,
                    ));
                }
                Err(e) => {
                    tracing::warn!(source = %self.name, path = %p.display(), error = %e, "cannot read a compressed rotated file");
                }
            }
        }
        None
    }

    /// Reads a compressed file to its end (it does not grow), sending its lines with the identity
    /// they had in the uncompressed file. False when the source must stop.
    async fn read_stream(&self, path: &Path, s: &mut Stream, out: &mut Sink<'_>) -> bool {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut lines = Vec::new();
        loop {
            let n = match s.input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(source = %self.name, path = %s.label.display(), error = %e, "cannot decompress the rest; lines after this point in it are lost");
                    break;
                }
            };
            // The bytes before the checkpoint were read when the file was not compressed yet.
            let skipped = (s.skip.min(n as u64)) as usize;
            s.skip -= skipped as u64;
            let data = &buf[skipped..n];
            if data.is_empty() {
                continue;
            }
            SourceMetrics::add(&self.metrics.bytes_read_total, data.len() as u64);
            s.splitter.push(data, &mut lines);
            for line in lines.drain(..) {
                if !out
                    .send(s.line(&self.name, path, line, &self.metrics))
                    .await
                {
                    return false;
                }
            }
        }
        match s.splitter.flush_partial() {
            Some(line) => {
                out.send(s.line(&self.name, path, line, &self.metrics))
                    .await
            }
            None => true,
        }
    }

    fn reader(&self, label: &Path, file: File, facts: &FileFacts, offset: u64) -> Reader {
        Reader {
            label: label.to_path_buf(),
            file,
            dev: facts.dev,
            ino: facts.ino,
            // Known now only if final; otherwise computed when the first line is sent.
            fingerprint: facts
                .fingerprint_complete
                .then_some((facts.fingerprint, true)),
            splitter: LineSplitter::new(self.max_line_bytes, offset),
            partial_since: None,
            last_data: Instant::now(),
            modified_at_open: facts.modified,
            copies_read: Vec::new(),
        }
    }

    /// Reads everything available for one path, handling rotation and truncation. False when
    /// the source must stop (cancelled, receiver gone).
    async fn poll(&self, t: &mut Tracked, out: &mut Sink<'_>) -> bool {
        for mut s in std::mem::take(&mut t.compressed) {
            if !self.read_stream(&t.path, &mut s, out).await {
                return false;
            }
        }
        let mut i = 0;
        while i < t.draining.len() {
            let r = &mut t.draining[i];
            if !self.read_available(&t.path, r, out).await {
                return false;
            }
            t.known.extend(r.copies_read.drain(..));
            if r.partial_since
                .is_some_and(|s| s.elapsed() >= self.partial_timeout)
                && !self.flush_partial(&t.path, r, out).await
            {
                return false;
            }
            if r.last_data.elapsed() >= self.rotated_keep {
                let mut r = t.draining.remove(i);
                if !self.flush_partial(&t.path, &mut r, out).await {
                    return false;
                }
                t.known.note(r.id());
                tracing::debug!(source = %self.name, path = %r.label.display(), "closed rotated file");
                continue;
            }
            i += 1;
        }

        if let Some(r) = t.current.as_mut() {
            if !self.read_available(&t.path, r, out).await {
                return false;
            }
            t.known.extend(r.copies_read.drain(..));
            let same = std::fs::metadata(&t.path)
                .map(|m| m.dev() == r.dev && m.ino() == r.ino)
                .unwrap_or(false);
            if !same && let Some(mut old) = t.current.take() {
                tracing::info!(source = %self.name, path = %t.path.display(), "file rotated (renamed or removed)");
                SourceMetrics::add(&self.metrics.rotations_total, 1);
                old.last_data = Instant::now();
                let since = old.modified_at_open;
                t.missed_since = Some(t.missed_since.map_or(since, |s| s.min(since)));
                t.draining.push(old);
            }
        }
        if t.current.is_none()
            && let Some((file, facts)) = self.open_path(&t.path, false)
        {
            t.current = Some(self.reader(&t.path, file, &facts, 0));
        }
        if let Some(since) = t.missed_since {
            if !self.read_missed_rotations(t, since, out).await {
                return false;
            }
            if t.current.is_some() {
                t.missed_since = None;
            }
        }
        if let Some(r) = t.current.as_mut() {
            if !self.read_available(&t.path, r, out).await {
                return false;
            }
            t.known.extend(r.copies_read.drain(..));
            if r.partial_since
                .is_some_and(|s| s.elapsed() >= self.partial_timeout)
                && !self.flush_partial(&t.path, r, out).await
            {
                return false;
            }
        }
        true
    }

    /// After the current file of `t` was found rotated: reads, from their start and oldest first,
    /// the rotated siblings this source never opened that were modified at or after `since` (when
    /// the rotated file was opened). They were created at the path and rotated away between two
    /// polls. They stay draining like any rotated file.
    async fn read_missed_rotations(
        &self,
        t: &mut Tracked,
        since: SystemTime,
        out: &mut Sink<'_>,
    ) -> bool {
        let live: Vec<(u64, u64)> = t
            .current
            .iter()
            .chain(t.draining.iter())
            .map(|r| (r.dev, r.ino))
            .collect();
        let target = identity::resolved(&t.path);
        let missed =
            identity::rotated_since(&target, identity::rotated_files(&target), since, |f| {
                live.contains(&(f.dev, f.ino)) || t.known.contains(f)
            });
        for (p, file, facts) in missed {
            tracing::info!(
                source = %self.name, path = %t.path.display(), rotated = %p.display(),
                "reading a file rotated away before it was opened from its start"
            );
            SourceMetrics::add(&self.metrics.rotations_total, 1);
            let mut r = self.reader(&p, file, &facts, 0);
            if !self.read_available(&t.path, &mut r, out).await {
                return false;
            }
            t.known.extend(r.copies_read.drain(..));
            r.last_data = Instant::now();
            t.draining.push(r);
        }
        true
    }

    /// Reads a reader to the end of its file, sending the complete lines.
    async fn read_available(&self, path: &Path, r: &mut Reader, out: &mut Sink<'_>) -> bool {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut lines = Vec::new();
        loop {
            let size = match r.file.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    tracing::warn!(source = %self.name, path = %r.label.display(), error = %e, "cannot stat open file");
                    return true;
                }
            };
            if self.was_truncated(r, size) {
                if !self.handle_truncation(path, r, out).await {
                    return false;
                }
                continue;
            }
            match self
                .read_chunk(path, r, size, &mut buf, &mut lines, out)
                .await
            {
                Chunk::Read => {}
                Chunk::End => return true,
                Chunk::Stop => return false,
            }
        }
    }

    /// A copytruncate copy: read it to its end once (it does not grow, nor get truncated).
    async fn read_copy(&self, path: &Path, r: &mut Reader, out: &mut Sink<'_>) -> bool {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut lines = Vec::new();
        let Ok(size) = r.file.metadata().map(|m| m.len()) else {
            return true;
        };
        loop {
            match self
                .read_chunk(path, r, size, &mut buf, &mut lines, out)
                .await
            {
                Chunk::Read => {}
                Chunk::End => return self.flush_partial(path, r, out).await,
                Chunk::Stop => return false,
            }
        }
    }

    /// Reads one chunk below `size` and sends the lines it completes.
    async fn read_chunk(
        &self,
        path: &Path,
        r: &mut Reader,
        size: u64,
        buf: &mut [u8],
        lines: &mut Vec<RawLine>,
        out: &mut Sink<'_>,
    ) -> Chunk {
        let at = r.splitter.consumed();
        if size <= at {
            return Chunk::End;
        }
        let want = ((size - at) as usize).min(buf.len());
        let n = loop {
            match r.file.read_at(&mut buf[..want], at) {
                Ok(0) => return Chunk::End,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(source = %self.name, path = %r.label.display(), error = %e, "read failed; retrying later");
                    return Chunk::End;
                }
            }
        };
        SourceMetrics::add(&self.metrics.bytes_read_total, n as u64);
        r.last_data = Instant::now();
        if out.tx.keeps_every_line() {
            r.splitter.push(&buf[..n], lines);
            r.partial_since = r.splitter.has_partial().then(Instant::now);
            for line in lines.drain(..) {
                self.count_truncated(line.truncated);
                let l = self.make_line(path, r, line);
                if !out.send(l).await {
                    return Chunk::Stop;
                }
            }
            return Chunk::Read;
        }
        // The pipeline's channel carries a line that cannot hold an IEM as its position only: such
        // lines are counted, not cut out of the buffer, and one position after the last of them
        // stands for every one since the last line that may hold an IEM (`lines::scan`).
        let (mut candidates, truncated) = (Vec::new(), r.splitter.truncated_lines());
        let done = r.splitter.push_candidates(&buf[..n], &mut candidates);
        r.partial_since = r.splitter.has_partial().then(Instant::now);
        SourceMetrics::add(&self.metrics.lines_read_total, done);
        SourceMetrics::add(
            &self.metrics.lines_truncated_total,
            r.splitter.truncated_lines() - truncated,
        );
        let counted_after = candidates.last().map_or(0, |c| c.before + 1);
        let rest = (done > counted_after).then(|| RawLine {
            bytes: Vec::new(),
            truncated: false,
            start: r.splitter.last_start(),
            end: r.splitter.line_start(),
        });
        for line in candidates.into_iter().map(|c| c.line).chain(rest) {
            let l = self.make_line(path, r, line);
            if !out.send_counted(l).await {
                return Chunk::Stop;
            }
        }
        Chunk::Read
    }

    fn count_truncated(&self, truncated: bool) {
        if truncated {
            SourceMetrics::add(&self.metrics.lines_truncated_total, 1);
        }
    }

    /// The file is shorter than what we read, or its first line is not the one we fingerprinted.
    fn was_truncated(&self, r: &Reader, size: u64) -> bool {
        if size < r.splitter.consumed() {
            return true;
        }
        let Some((fp, true)) = r.fingerprint else {
            return false;
        };
        if size == r.splitter.consumed() {
            return false;
        }
        match identity::read_prefix(&r.file) {
            Ok(prefix) => identity::fingerprint(&prefix).0 != fp,
            Err(_) => false,
        }
    }

    /// copytruncate: recover what the copy holds beyond our offset, then restart at 0.
    async fn handle_truncation(&self, path: &Path, r: &mut Reader, out: &mut Sink<'_>) -> bool {
        tracing::info!(source = %self.name, path = %r.label.display(), offset = r.splitter.consumed(), "file truncated (copytruncate)");
        SourceMetrics::add(&self.metrics.rotations_total, 1);
        let candidates = match r.fingerprint {
            Some(_) => identity::rotated_candidates(&identity::resolved(&r.label)),
            None => Vec::new(),
        };
        // Every copy of this file is known from now on, also one that holds nothing beyond our
        // offset (we had read all it has, the usual case): else the next rename rotation takes it
        // for a file rotated between two polls and reads it again from its start (seen in the
        // chaos test: a copy of 279,108 lines spooled twice).
        if let Some((fp, _)) = r.fingerprint {
            let copies = candidates
                .iter()
                .filter(|(_, f)| f.fingerprint == fp && (f.dev, f.ino) != (r.dev, r.ino));
            r.copies_read
                .extend(copies.map(|(_, f)| FileId::of_facts(f)));
        }
        let copy = r.fingerprint.and_then(|(fp, _)| {
            let cp = FilePosition {
                path: path.to_path_buf(),
                dev: r.dev,
                ino: r.ino,
                fingerprint: fp,
                offset_of_line: r.splitter.line_start(),
                next_offset: r.splitter.consumed() + 1,
            };
            let (p, facts) = identity::pick_rotated(&cp, &candidates)?;
            if (facts.dev, facts.ino) == (r.dev, r.ino) {
                return None;
            }
            Some((p.clone(), File::open(p).ok()?, *facts))
        });
        match copy {
            Some((p, file, facts)) => {
                tracing::info!(source = %self.name, copy = %p.display(), "reading the rest from the copy");
                let mut c = self.reader(&p, file, &facts, r.splitter.line_start());
                if !self.read_copy(path, &mut c, out).await {
                    return false;
                }
                r.copies_read.push(c.id());
            }
            None => {
                if !self.flush_partial(path, r, out).await {
                    return false;
                }
            }
        }
        r.splitter = LineSplitter::new(self.max_line_bytes, 0);
        r.fingerprint = None;
        r.partial_since = None;
        true
    }

    async fn flush_partial(&self, path: &Path, r: &mut Reader, out: &mut Sink<'_>) -> bool {
        r.partial_since = None;
        match r.splitter.flush_partial() {
            Some(line) => {
                self.count_truncated(line.truncated);
                let l = self.make_line(path, r, line);
                out.send(l).await
            }
            None => true,
        }
    }

    fn make_line(&self, path: &Path, r: &mut Reader, line: RawLine) -> SourceLine {
        let fingerprint = match r.fingerprint {
            Some((fp, true)) => fp,
            _ => {
                let (fp, complete) = identity::read_prefix(&r.file)
                    .map(|p| identity::fingerprint(&p))
                    .unwrap_or((0, false));
                // Incomplete only while a first line taken early has no LF yet; computed again
                // for the next line, so the completed line and those after it carry the final one.
                r.fingerprint = Some((fp, complete));
                fp
            }
        };
        SourceLine {
            source: self.name.clone(),
            kind: OriginKind::File,
            bytes: line.bytes,
            truncated: line.truncated,
            position: Position::File(FilePosition {
                path: path.to_path_buf(),
                dev: r.dev,
                ino: r.ino,
                fingerprint,
                offset_of_line: line.start,
                next_offset: line.end,
            }),
        }
    }
}

/// True when `path` is named by `pattern` (the path itself, or a glob match beside it).
fn matches_pattern(pattern: &Path, path: &Path) -> bool {
    if pattern == path {
        return true;
    }
    let (Some(name), Some(pname)) = (
        pattern.file_name().and_then(|n| n.to_str()),
        path.file_name().and_then(|n| n.to_str()),
    ) else {
        return false;
    };
    pattern.parent() == path.parent()
        && has_glob_chars(name)
        && glob::Pattern::new(name).is_ok_and(|g| g.matches_with(pname, GLOB_OPTIONS))
}

const GLOB_OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// True when the pattern's file name has wildcards.
fn is_glob(pattern: &Path) -> bool {
    pattern
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(has_glob_chars)
}

/// The paths a configured pattern names now: a literal path always (it may appear later), the
/// regular files a glob matches. Fails when a glob's directory cannot be listed.
pub(crate) fn expand_pattern(pattern: &Path) -> io::Result<Vec<PathBuf>> {
    let Some(name) = pattern.file_name().and_then(|n| n.to_str()) else {
        return Ok(vec![pattern.to_path_buf()]);
    };
    if !has_glob_chars(name) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let (Some(dir), Ok(pat)) = (pattern.parent(), glob::Pattern::new(name)) else {
        return Ok(Vec::new());
    };
    let entries = std::fs::read_dir(dir)?;
    let opts = GLOB_OPTIONS;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| pat.matches_with(n, opts))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Opens a regular file and reads its identity; `Ok(None)` when the path is not a regular file.
fn open_with_facts(path: &Path) -> io::Result<Option<(File, FileFacts)>> {
    let file = File::open(path)?;
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    let facts = FileFacts::of(&file)?;
    Ok(Some((file, facts)))
}

enum Chunk {
    Read,
    End,
    Stop,
}

/// A watched path and the open files behind it.
struct Tracked {
    path: PathBuf,
    /// Found by a glob: forgotten once gone (a literal path is waited for forever).
    from_glob: bool,
    current: Option<Reader>,
    draining: Vec<Reader>,
    /// Compressed rotated files to finish from a checkpoint, read before the others.
    compressed: Vec<Stream>,
    /// Files of this path not to be read as missed rotations (see [`Known`]).
    known: Known,
    /// Set when the current file was found rotated: rotated siblings modified since then that were
    /// never opened are to be read. Kept until a new file at the path is open, because the path
    /// can be missing when the rotation is seen (between a rotation's rename and create) and
    /// files can be created and rotated away before it reappears.
    missed_since: Option<SystemTime>,
}

/// A file's identity as remembered after closing it: the fingerprint only once final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    fingerprint: Option<u64>,
}

impl FileId {
    fn of_facts(f: &FileFacts) -> FileId {
        FileId {
            dev: f.dev,
            ino: f.ino,
            fingerprint: f.fingerprint_complete.then_some(f.fingerprint),
        }
    }
}

/// The last [`KNOWN_FILES`] files of a path that were read (closed rotated files, copytruncate
/// copies) or deliberately left unread (rotated files already there when the path was first
/// tracked). A rotated sibling not known and not open is one the path named only between two
/// polls, and is read from its start. A reused inode is told apart by its fingerprint when both
/// are final; otherwise the same device+inode counts as known (a re-read is worse than a rare
/// skip of a reused inode, which also needs an evicted entry's file to be newer than the rotation).
#[derive(Debug, Default)]
struct Known(VecDeque<FileId>);

impl Known {
    fn note(&mut self, id: FileId) {
        self.0.retain(|k| (k.dev, k.ino) != (id.dev, id.ino));
        if self.0.len() >= KNOWN_FILES {
            self.0.pop_front();
        }
        self.0.push_back(id);
    }

    fn extend(&mut self, ids: impl IntoIterator<Item = FileId>) {
        for id in ids {
            self.note(id);
        }
    }

    fn contains(&self, f: &FileFacts) -> bool {
        self.0.iter().any(|k| {
            (k.dev, k.ino) == (f.dev, f.ino)
                && match k.fingerprint {
                    Some(fp) => !f.fingerprint_complete || fp == f.fingerprint,
                    None => true,
                }
        })
    }
}

/// An open file being read.
struct Reader {
    /// The name it was opened under (for logs).
    label: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    /// The fingerprint once known, and whether it is final (first line complete).
    fingerprint: Option<(u64, bool)>,
    splitter: LineSplitter,
    /// When the last read left an incomplete line.
    partial_since: Option<Instant>,
    last_data: Instant,
    /// The file's mtime when opened: a file rotated away before we could open it was modified
    /// after this (it was created after this file was at the path, and so after this moment).
    modified_at_open: SystemTime,
    /// copytruncate copies read for this file, for [`Tracked::known`].
    copies_read: Vec<FileId>,
}

impl Reader {
    fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
            fingerprint: match self.fingerprint {
                Some((fp, true)) => Some(fp),
                _ => None,
            },
        }
    }

    fn deadline(&self, partial_timeout: Duration) -> Option<Instant> {
        self.partial_since.map(|s| s + partial_timeout)
    }
}

/// A compressed rotated file read through its decompressor, from a checkpoint to its end. Its
/// lines keep the identity of the file it was before compression (device, inode, fingerprint,
/// offsets), so their alert ids are those a live read would have given.
struct Stream {
    /// The compressed file's name (for logs).
    label: PathBuf,
    input: Box<dyn io::Read + Send>,
    /// Decompressed bytes still to skip to reach the checkpoint.
    skip: u64,
    splitter: LineSplitter,
    dev: u64,
    ino: u64,
    fingerprint: u64,
}

impl Stream {
    fn line(
        &self,
        source: &Arc<str>,
        path: &Path,
        line: RawLine,
        metrics: &SourceMetrics,
    ) -> SourceLine {
        if line.truncated {
            SourceMetrics::add(&metrics.lines_truncated_total, 1);
        }
        SourceLine {
            source: source.clone(),
            kind: OriginKind::File,
            bytes: line.bytes,
            truncated: line.truncated,
            position: Position::File(FilePosition {
                path: path.to_path_buf(),
                dev: self.dev,
                ino: self.ino,
                fingerprint: self.fingerprint,
                offset_of_line: line.start,
                next_offset: line.end,
            }),
        }
    }
}

/// Where lines go: the bounded channel, abandoned on cancellation.
struct Sink<'a> {
    tx: &'a LineSender,
    token: &'a CancellationToken,
    metrics: Arc<SourceMetrics>,
}

impl Sink<'_> {
    /// Sends one line, waiting for room. False when cancelled or the receiver is gone.
    async fn send(&mut self, line: SourceLine) -> bool {
        SourceMetrics::add(&self.metrics.lines_read_total, 1);
        self.send_counted(line).await
    }

    /// [`Self::send`] for a line already counted in `lines_read_total`.
    async fn send_counted(&mut self, line: SourceLine) -> bool {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => false,
            r = self.tx.send(line) => r.is_ok(),
        }
    }
}

impl super::Source for FileSource {
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
        Box::pin(FileSource::run(*self, tx, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::channel;

    /// Into the pipeline's channel, a run of lines that cannot hold an IEM travels as the
    /// position after its last line: each IEM line comes whole with its own position, the last
    /// position is the end of the last complete line, and every line is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pipelines_channel_gets_the_iem_lines_and_the_position_after_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("messages");
        let mut text = String::new();
        for i in 0..2000 {
            text += &match i % 10 {
                9 => format!("host x: IEC:ES0030010001:n={i}\n"),
                _ => format!("host y: noise {i} {}\n", "z".repeat(i % 300)),
            };
        }
        text += &"n".repeat(5000); // cut at max_line_bytes: counted as truncated
        text += "\r\nno terminator yet";
        std::fs::write(&path, &text).unwrap();
        let complete = (text.len() - "no terminator yet".len()) as u64;
        let cfg = FileSourceConfig {
            name: "test".into(),
            paths: vec![path.clone()],
            start_at: FileStartAt::Beginning,
            max_line_bytes: 1024,
            partial_line_timeout_ms: 3_600_000,
            ..FileSourceConfig::default()
        };
        let store = CheckpointStore::open(&d.path().join("state")).unwrap();
        let src = FileSource::new(&cfg, &store);
        let metrics = src.metrics.clone();
        let (tx, mut rx) = channel::channel(8 << 20);
        let token = CancellationToken::new();
        let task = tokio::spawn(src.run(tx, token.clone()));
        let mut got = Vec::new();
        let at = |l: &SourceLine| match &l.position {
            Position::File(p) => (p.offset_of_line, p.next_offset),
            Position::Cursor(_) => panic!("a file position"),
        };
        while got.last().is_none_or(|l| at(l).1 < complete) {
            let mut batch = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(20), rx.recv_many(&mut batch, 64))
                .await
                .expect("the source sends the whole file");
            assert!(n > 0);
            got.extend(batch);
        }
        token.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(at(got.last().unwrap()), (complete - 5002, complete));
        let iems: Vec<&SourceLine> = got.iter().filter(|l| !l.bytes.is_empty()).collect();
        assert_eq!(iems.len(), 200);
        for (k, l) in iems.iter().enumerate() {
            let (start, end) = at(l);
            assert_eq!(l.bytes, text.as_bytes()[start as usize..end as usize - 1]);
            assert!(l.bytes.ends_with(format!("n={}", 10 * k + 9).as_bytes()));
        }
        assert!(got.windows(2).all(|w| at(&w[0]).1 < at(&w[1]).1));
        assert!(got.len() < 500, "{} lines sent", got.len());
        let m = metrics.snapshot();
        assert_eq!((m.lines_read_total, m.lines_truncated_total), (2001, 1));
    }

    #[test]
    fn glob_expansion_matches_file_names_only() {
        let d = tempfile::tempdir().unwrap();
        for n in ["a.log", "b.log", ".hidden.log", "a.log.1", "c.txt"] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        std::fs::create_dir(d.path().join("dir.log")).unwrap();
        let got: Vec<String> = expand_pattern(&d.path().join("*.log"))
            .unwrap()
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, vec!["a.log", "b.log"]);
        // A literal path is named even before it exists; a glob in a missing directory names nothing.
        let missing = d.path().join("later.log");
        assert_eq!(expand_pattern(&missing).unwrap(), vec![missing]);
        let e = expand_pattern(&d.path().join("nope/*.log")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
