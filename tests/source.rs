//! Integration tests: source. Real files, real rotations, real journal files and journalctl.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iemd::config::sources::{FileSourceConfig, FileStartAt, JournalStartAt, JournaldConfig};
use iemd::source::checkpoint::CheckpointStore;
use iemd::source::file::FileSource;
use iemd::source::journald::JournaldSource;
use iemd::source::{FilePosition, Position, Source, SourceLine, SourceMetrics};
use tokio::sync::mpsc;

use crate::util::journal::write_journal;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Running {
    rx: mpsc::Receiver<SourceLine>,
    token: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<SourceMetrics>,
}

impl Running {
    /// Receives lines until `n` arrived or `within` passed.
    async fn take(&mut self, n: usize, within: Duration) -> Vec<SourceLine> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(l)) => out.push(l),
                _ => break,
            }
        }
        out
    }

    /// Cancels the source, waits for it, and returns what it had already sent.
    async fn stop(mut self) -> Vec<SourceLine> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("source stops when cancelled")
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(l) = self.rx.try_recv() {
            rest.push(l);
        }
        rest
    }
}

fn file_config(paths: Vec<PathBuf>) -> FileSourceConfig {
    FileSourceConfig {
        name: "test".into(),
        paths,
        start_at: FileStartAt::Beginning,
        partial_line_timeout_ms: 300,
        ..FileSourceConfig::default()
    }
}

/// Starts a file source on checkpoints `cps` (none: the source's first run).
fn start_files(cfg: &FileSourceConfig, cps: Vec<FilePosition>, capacity: usize) -> Running {
    let d = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(d.path()).unwrap();
    for cp in cps {
        store.record("test", &Position::File(cp)).unwrap();
    }
    start_with_store(cfg, &store, capacity)
}

/// Starts a file source on the checkpoints of `store`.
fn start_with_store(cfg: &FileSourceConfig, store: &CheckpointStore, capacity: usize) -> Running {
    let src = FileSource::new(cfg, store);
    let metrics = src.metrics();
    let (tx, rx) = mpsc::channel(capacity);
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move { src.run(tx, t).await.unwrap() });
    Running {
        rx,
        token,
        task,
        metrics,
    }
}

fn text(l: &SourceLine) -> String {
    String::from_utf8_lossy(&l.bytes).into_owned()
}

fn file_pos(l: &SourceLine) -> &FilePosition {
    match &l.position {
        Position::File(f) => f,
        Position::Cursor(_) => panic!("file line expected"),
    }
}

/// Numbers of `seq NNNNNN` lines, checking each arrived once and in order within its file.
fn check_once_in_order(lines: &[SourceLine]) -> Vec<u64> {
    let mut per_file: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for l in lines {
        let t = text(l);
        let n: u64 = t
            .strip_prefix("seq ")
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {t:?}"));
        assert!(seen.insert(n), "line {n} arrived twice");
        let p = file_pos(l);
        per_file.entry((p.ino, p.fingerprint)).or_default().push(n);
    }
    for (file, ns) in &per_file {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "out of order in {file:?}: {ns:?}"
        );
    }
    let mut all: Vec<u64> = seen.into_iter().collect();
    all.sort();
    all
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn line(n: u64) -> String {
    format!("seq {n:06} some syslog text IEC:ES0030010001:S3 server cannot connect\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_under_writes_delivers_every_line_once() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], 64);

    const TOTAL: u64 = 900;
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut f = append(&path);
            for i in 0..TOTAL {
                f.write_all(line(i).as_bytes()).unwrap();
                if i == 300 || i == 600 {
                    // logrotate: shift the old names, rename, create anew. Like rsyslog before its
                    // HUP, the writer goes on writing to the renamed file for a while.
                    let _ = std::fs::rename(d_join(&path, ".1"), d_join(&path, ".2"));
                    std::fs::rename(&path, d_join(&path, ".1")).unwrap();
                    File::create(&path).unwrap();
                }
                if i == 320 || i == 620 {
                    f = append(&path);
                }
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let got = src.take(TOTAL as usize, Duration::from_secs(30)).await;
    writer.join().unwrap();
    let numbers = check_once_in_order(&got);
    assert_eq!(numbers, (0..TOTAL).collect::<Vec<_>>());
    // Three files, and a line keeps its (fingerprint, offset) identity whatever its name now.
    let files: HashSet<u64> = got.iter().map(|l| file_pos(l).ino).collect();
    assert_eq!(files.len(), 3);
    assert_eq!(src.metrics.snapshot().rotations_total, 2);
    assert_eq!(src.metrics.snapshot().lines_read_total, TOTAL);
    let extra = src.take(1, Duration::from_millis(500)).await;
    assert!(extra.is_empty(), "extra lines: {extra:?}");
    src.stop().await;
}

fn d_join(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_under_writes_delivers_what_survives() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("app.log");
    let copy = d_join(&path, ".1");
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], 64);

    const TOTAL: u64 = 1200;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let mut f = append(&path);
            for i in 0..TOTAL {
                f.write_all(line(i).as_bytes()).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // logrotate copytruncate, racing the writer: copy, then truncate.
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::copy(&path, &copy).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    writer.join().unwrap();
    assert!(done.load(Ordering::SeqCst));

    let in_file = |p: &Path| -> HashSet<u64> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter_map(|l| l.get(4..10)?.parse().ok())
            .collect()
    };
    let survived: HashSet<u64> = in_file(&copy).union(&in_file(&path)).copied().collect();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        got.extend(src.take(usize::MAX, Duration::from_millis(700)).await);
        let have: HashSet<u64> = got
            .iter()
            .filter_map(|l| text(l).get(4..10)?.parse().ok())
            .collect();
        if survived.is_subset(&have) {
            break;
        }
    }
    let numbers: HashSet<u64> = check_once_in_order(&got).into_iter().collect();
    let missing: Vec<&u64> = survived.difference(&numbers).collect();
    assert!(
        missing.is_empty(),
        "lines in the copy or the file never arrived: {missing:?}"
    );
    // What neither file holds (written between the copy and the truncation) cannot be read.
    let lost = TOTAL as usize - survived.len();
    eprintln!("copytruncate: {lost} lines were written between the copy and the truncation");
    assert!(src.metrics.snapshot().rotations_total >= 1);
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_rotate_while_stopped_restart_loses_and_repeats_nothing() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let path = d.path().join("messages");
    let store = CheckpointStore::open(&state).unwrap();
    {
        let mut f = append(&path);
        for i in 0..500 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    let cfg = file_config(vec![path.clone()]);
    // A small channel: the source is blocked mid-file when it is stopped.
    let mut src = start_with_store(&cfg, &store, 8);
    let mut got = src.take(120, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 120);
    got.extend(src.stop().await);
    let last = got.last().unwrap();
    store.commit(&last.source, &last.position).unwrap();
    let first_run = got.len();
    assert!(first_run < 500, "the source was stopped mid-stream");

    // While stopped: more lines, rotation by rename, a new file.
    {
        let mut f = append(&path);
        for i in 500..600 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    std::fs::rename(&path, d_join(&path, ".1")).unwrap();
    {
        let mut f = append(&path);
        for i in 600..700 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }

    let store = CheckpointStore::open(&state).unwrap();
    let mut src = start_with_store(&cfg, &store, 8);
    let rest = src.take(700 - first_run, Duration::from_secs(15)).await;
    let extra = src.take(1, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "read twice: {:?}", text(&extra[0]));
    got.extend(rest);
    assert_eq!(check_once_in_order(&got), (0..700).collect::<Vec<_>>());
    assert_eq!(src.metrics.snapshot().rotations_total, 1);
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_in_the_same_file_at_the_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.log");
    std::fs::write(&path, "a\nb\n").unwrap();
    let cfg = file_config(vec![path.clone()]);
    let mut src = start_files(&cfg, vec![], 8);
    let got = src.take(2, Duration::from_secs(5)).await;
    src.stop().await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), vec!["a", "b"]);
    let cp = file_pos(&got[1]).clone();
    assert_eq!((cp.offset_of_line, cp.next_offset), (2, 4));
    append(&path).write_all(b"c\n").unwrap();
    let mut src = start_files(&cfg, vec![cp.clone()], 8);
    let got = src.take(2, Duration::from_secs(2)).await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), vec!["c"]);
    assert_eq!(file_pos(&got[0]).fingerprint, cp.fingerprint);
    src.stop().await;

    // Same inode, different content (rewritten in place): not the checkpointed file, read anew.
    std::fs::write(&path, "other first line\nd\n").unwrap();
    let mut src = start_files(&cfg, vec![cp], 8);
    let got = src.take(3, Duration::from_secs(2)).await;
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        vec!["other first line", "d"]
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_long_and_binary_lines() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("odd.log");
    let mut cfg = file_config(vec![path.clone()]);
    cfg.max_line_bytes = 1024;
    let mut f = append(&path);
    let mut src = start_files(&cfg, vec![], 16);

    // A partial line waits for its newline, and is flushed after the timeout.
    let t0 = Instant::now();
    f.write_all(b"no newline yet").unwrap();
    let got = src.take(1, Duration::from_secs(5)).await;
    let waited = t0.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(text(&got[0]), "no newline yet");
    assert!(!got[0].truncated);
    assert!(
        waited >= Duration::from_millis(250),
        "flushed after {waited:?}"
    );

    // The writer finishes it: the whole line comes too.
    f.write_all(b" now\n").unwrap();
    let got = src.take(1, Duration::from_secs(5)).await;
    assert_eq!(text(&got[0]), "no newline yet now");

    // Too long: cut at the maximum, marked, the rest of the line skipped.
    let long = vec![b'x'; 5000];
    f.write_all(&long).unwrap();
    f.write_all(b"\r\n").unwrap();
    // Binary garbage and NUL pass through; the source goes on.
    f.write_all(b"\x00\xff\xfe\x80garbage\x00\r\n").unwrap();
    f.write_all(b"after\n").unwrap();
    let got = src.take(3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].bytes, vec![b'x'; 1024]);
    assert!(got[0].truncated);
    let p = file_pos(&got[0]);
    assert_eq!(p.next_offset - p.offset_of_line, 5002);
    assert_eq!(got[1].bytes, b"\x00\xff\xfe\x80garbage\x00".to_vec());
    assert!(!got[1].truncated);
    assert_eq!(text(&got[2]), "after");
    let m = src.metrics.snapshot();
    assert_eq!(m.lines_truncated_total, 1);
    assert_eq!(m.lines_read_total, 5);
    assert_eq!(m.bytes_read_total, std::fs::metadata(&path).unwrap().len());
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directory_and_globbed_files_are_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("later");
    let mut cfg = file_config(vec![dir.join("*.log"), dir.join("fixed")]);
    cfg.start_at = FileStartAt::End;
    let mut src = start_files(&cfg, vec![], 16);
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.log"), "first\n").unwrap();
    std::fs::write(dir.join("a.txt"), "not matched\n").unwrap();
    let got = src.take(1, Duration::from_secs(5)).await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), vec!["first"]);
    // Files that appear while running are read from the start, even with start_at = "end".
    std::fs::write(dir.join("fixed"), "one\n").unwrap();
    let got = src.take(1, Duration::from_secs(5)).await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), vec!["one"]);
    // With inotify watching, a new line arrives in milliseconds, not at the 1 s stat.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t0 = Instant::now();
    append(&dir.join("fixed")).write_all(b"two\n").unwrap();
    let got = src.take(1, Duration::from_secs(5)).await;
    let latency = t0.elapsed();
    assert_eq!(text(&got[0]), "two");
    eprintln!("write-to-line latency with inotify: {latency:?}");
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_end_skips_existing_lines() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("old.log");
    std::fs::write(&path, "old 1\nold 2\n").unwrap();
    let mut cfg = file_config(vec![path.clone()]);
    cfg.start_at = FileStartAt::End;
    let mut src = start_files(&cfg, vec![], 16);
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&path).write_all(b"new\n").unwrap();
    let got = src.take(2, Duration::from_secs(2)).await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), vec!["new"]);
    assert_eq!(file_pos(&got[0]).offset_of_line, 12);
    src.stop().await;
}

// ---- journald ----

fn start_journal(dir: &Path, cursor: Option<String>) -> Running {
    let cfg = JournaldConfig {
        enabled: true,
        directory: Some(dir.to_path_buf()),
        start_at: JournalStartAt::Beginning,
        ..JournaldConfig::default()
    };
    let src = JournaldSource::new(
        &cfg,
        cursor.map(|cursor| iemd::source::CursorPosition { cursor }),
    );
    let metrics = src.metrics();
    let (tx, rx) = mpsc::channel(16);
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move { src.run(tx, t).await.unwrap() });
    Running {
        rx,
        token,
        task,
        metrics,
    }
}

fn message(l: &SourceLine) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&l.bytes).unwrap();
    v["MESSAGE"].clone()
}

fn cursor(l: &SourceLine) -> String {
    match &l.position {
        Position::Cursor(j) => j.cursor.clone(),
        Position::File(_) => panic!("journal line expected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_reads_real_journal_files_and_resumes_after_the_cursor() {
    let d = tempfile::tempdir().unwrap();
    let jdir = d.path().join("journal");
    std::fs::create_dir(&jdir).unwrap();
    let store = CheckpointStore::open(&d.path().join("state")).unwrap();
    let binary: &[u8] = b"IEC:ES0030010001:bad \xff\xfe bytes\nsecond line";
    write_journal(
        &jdir,
        &[
            b"IEC:ES0030010001:S3 server cannot connect to auth server.",
            binary,
        ],
    );
    let mut src = start_journal(&jdir, None);
    let got = src.take(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        message(&got[0]),
        "IEC:ES0030010001:S3 server cannot connect to auth server."
    );
    // Not UTF-8 / multi-line: journalctl prints the bytes as an array.
    let bytes: Vec<u8> = message(&got[1])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, binary);
    assert_ne!(cursor(&got[0]), cursor(&got[1]));

    // Followed live: entries appended while running arrive.
    write_journal(&jdir, &[b"live one", b"live two"]);
    let live = src.take(2, Duration::from_secs(10)).await;
    assert_eq!(
        live.iter().map(message).collect::<Vec<_>>(),
        vec!["live one", "live two"]
    );
    let last = live.last().unwrap();
    store.commit(&last.source, &last.position).unwrap();
    src.stop().await;

    // Stopped: more entries (more than journalctl's default 10 of --follow).
    let later: Vec<Vec<u8>> = (0..12).map(|i| format!("later {i}").into_bytes()).collect();
    write_journal(&jdir, &later.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let cp = store.cursor("journald").unwrap().cursor;
    let mut src = start_journal(&jdir, Some(cp));
    let got = src.take(13, Duration::from_secs(10)).await;
    let extra = src.take(1, Duration::from_millis(700)).await;
    assert!(extra.is_empty());
    let texts: Vec<String> = got
        .iter()
        .map(|l| message(l).as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        (0..12).map(|i| format!("later {i}")).collect::<Vec<_>>()
    );
    let m = src.metrics.snapshot();
    assert_eq!(m.lines_read_total, 12);
    assert_eq!(m.journalctl_restarts_total, 0);
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journalctl_that_exits_is_restarted_with_backoff() {
    let cfg = JournaldConfig {
        enabled: true,
        journalctl: PathBuf::from("/bin/false"),
        ..JournaldConfig::default()
    };
    let src = JournaldSource::new(&cfg, None);
    let metrics = src.metrics();
    let (tx, _rx) = mpsc::channel(1);
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move { src.run(tx, t).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let restarts = metrics.snapshot().journalctl_restarts_total;
    // 100 + 200 + 400 ms of backoff fit in a second, 800 more do not; without backoff there
    // would be hundreds.
    assert!((1..=4).contains(&restarts), "{restarts} restarts");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn file_identity_survives_rename() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m");
    std::fs::write(&p, "first\nsecond\n").unwrap();
    let before = iemd::source::identity::FileFacts::of(&File::open(&p).unwrap()).unwrap();
    std::fs::rename(&p, d.path().join("m.1")).unwrap();
    let after =
        iemd::source::identity::FileFacts::of(&File::open(d.path().join("m.1")).unwrap()).unwrap();
    assert_eq!(before.fingerprint, after.fingerprint);
    assert_eq!(
        before.ino,
        std::fs::metadata(d.path().join("m.1")).unwrap().ino()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_behind_the_reader_is_finished_from_the_copy() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("app.log");
    {
        let mut f = append(&path);
        for i in 0..2000 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    // A channel of one: the reader is held back in the first 64 KiB while the file is rotated.
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], 1);
    let mut got = src.take(5, Duration::from_secs(5)).await;
    std::fs::copy(&path, d_join(&path, ".1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    {
        let mut f = append(&path);
        for i in 2000..2010 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    got.extend(src.take(2005, Duration::from_secs(15)).await);
    assert_eq!(check_once_in_order(&got), (0..2010).collect::<Vec<_>>());
    // The copied lines keep the identity they had in the original file.
    let fp0 = file_pos(&got[0]).fingerprint;
    assert!(got[..2000].iter().all(|l| file_pos(l).fingerprint == fp0));
    assert_eq!(src.metrics.snapshot().rotations_total, 1);
    src.stop().await;
}

/// logrotate's rename step as `rotate 2` does it: `messages.1 -> messages.2`,
/// `messages -> messages.1`, a new `messages` holding `lines`.
fn rotate_and_write(path: &Path, lines: std::ops::Range<u64>) {
    let _ = std::fs::rename(d_join(path, ".1"), d_join(path, ".2"));
    std::fs::rename(path, d_join(path, ".1")).unwrap();
    let mut f = File::create(path).unwrap();
    for i in lines {
        f.write_all(line(i).as_bytes()).unwrap();
    }
}

/// Regression, "a whole rotated file is skipped" (agent down across two rotations): the
/// checkpoint is in `messages`; while stopped it becomes `messages.2`, and `messages.1` is a file
/// created and rotated away meanwhile. The restart used to finish `messages.2` and read the new
/// `messages`, never `messages.1`. Older and compressed siblings stay unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_two_rotations_while_stopped_reads_every_generation() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let path = d.path().join("messages");
    // An old rotated file from before the agent ever ran: not ours to read.
    std::fs::write(d_join(&path, ".3"), line(900_000)).unwrap();
    File::options()
        .write(true)
        .open(d_join(&path, ".3"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    {
        let mut f = append(&path);
        for i in 0..300 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    let cfg = file_config(vec![path.clone()]);
    let store = CheckpointStore::open(&state).unwrap();
    let mut src = start_with_store(&cfg, &store, 8);
    let mut got = src.take(100, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 100);
    got.extend(src.stop().await);
    let last = got.last().unwrap();
    store.commit(&last.source, &last.position).unwrap();
    let first_run = got.len();
    assert!(first_run < 300, "the source was stopped mid-stream");

    // While stopped: more lines, then two rotations, each new generation with its own lines.
    {
        let mut f = append(&path);
        for i in 300..350 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    rotate_and_write(&path, 350..450);
    rotate_and_write(&path, 450..550);
    // Compressed by logrotate after the rotations: its bytes are not lines.
    std::fs::write(d_join(&path, ".4.gz"), line(900_001)).unwrap();

    let store = CheckpointStore::open(&state).unwrap();
    let mut src = start_with_store(&cfg, &store, 8);
    let rest = src.take(550 - first_run, Duration::from_secs(15)).await;
    let extra = src.take(1, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "read twice: {:?}", text(&extra[0]));
    // Generation order: the checkpointed file's rest, then messages.1, then messages.
    let order: Vec<u64> = rest
        .iter()
        .map(|l| text(l)[4..10].parse().unwrap())
        .collect();
    let missing: Vec<u64> = (first_run as u64..550)
        .filter(|n| !order.contains(n))
        .collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    assert_eq!(order, (first_run as u64..550).collect::<Vec<_>>());
    got.extend(rest.iter().cloned());
    assert_eq!(check_once_in_order(&got), (0..550).collect::<Vec<_>>());
    // The skipped generation keeps the identity it would have had if read live: the watched
    // path, its own inode and first-line fingerprint, offsets from its start.
    let gen1: Vec<&SourceLine> = rest
        .iter()
        .filter(|l| (350..450).contains(&text(l)[4..10].parse::<u64>().unwrap()))
        .collect();
    let p = file_pos(gen1[0]);
    let meta = std::fs::metadata(d_join(&path, ".1")).unwrap();
    assert_eq!(
        (p.path.clone(), p.dev, p.ino),
        (path.clone(), meta.dev(), meta.ino())
    );
    assert_eq!(p.offset_of_line, 0);
    assert_eq!(
        p.fingerprint,
        iemd::source::identity::fingerprint(line(350).as_bytes()).0
    );
    assert!(gen1.iter().all(|l| file_pos(l).ino == meta.ino()));
    assert_eq!(src.metrics.snapshot().rotations_total, 2);
    src.stop().await;
}

/// Regression, "a whole rotated file is skipped" (two rotations between two polls): a file
/// created at the path and renamed away before the running source opened it used to be skipped.
/// The source is held back by a full channel while the path rotates twice. The live variant is
/// `rapid_double_rotations_while_reading_lose_nothing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_between_two_polls_lose_nothing() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    {
        let mut f = append(&path);
        for i in 0..2000 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], 1);
    let mut got = src.take(5, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 5);
    // The reader is blocked in the first file: both rotations happen before its next poll.
    rotate_and_write(&path, 2000..2010);
    rotate_and_write(&path, 2010..2020);
    got.extend(src.take(2015, Duration::from_secs(15)).await);
    let order: Vec<u64> = got
        .iter()
        .map(|l| text(l)[4..10].parse().unwrap())
        .collect();
    let missing: Vec<u64> = (0..2020).filter(|n| !order.contains(n)).collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in generation order");
    assert_eq!(src.metrics.snapshot().rotations_total, 2);

    src.stop().await;
}

/// Rotates as logrotate does with no generation limit: `.k` -> `.k+1` for every existing `k`, the
/// path -> `.1`, then a new file at the path with `lines`. Nothing is deleted.
fn rotate_keeping_all(path: &Path, generations: &mut u64, lines: std::ops::Range<u64>) {
    for k in (1..=*generations).rev() {
        std::fs::rename(
            d_join(path, &format!(".{k}")),
            d_join(path, &format!(".{}", k + 1)),
        )
        .unwrap();
    }
    std::fs::rename(path, d_join(path, ".1")).unwrap();
    *generations += 1;
    let mut f = File::create(path).unwrap();
    for i in lines {
        f.write_all(line(i).as_bytes()).unwrap();
    }
}

/// Live, not held back: rounds of two rotations back to back, a few lines each, faster than a
/// poll follows an inotify event, with every generation kept (a file deleted by the rotation
/// scheme before anyone opened it is gone for every reader; that is not what this checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_double_rotations_while_reading_lose_nothing() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    {
        let mut f = append(&path);
        for i in 0..20 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], 64);
    let mut got = src.take(20, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 20);
    const ROUNDS: u64 = 30;
    let end = 20 + ROUNDS * 6;
    let rotator = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut generations = 0;
            for r in 0..ROUNDS {
                let at = 20 + r * 6;
                rotate_keeping_all(&path, &mut generations, at..at + 3);
                rotate_keeping_all(&path, &mut generations, at + 3..at + 6);
                std::thread::sleep(Duration::from_millis(r % 4 * 10));
            }
        })
    };
    got.extend(src.take((end - 20) as usize, Duration::from_secs(20)).await);
    rotator.join().unwrap();
    let extra = src.take(1, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "read twice: {:?}", text(&extra[0]));
    let numbers: HashSet<u64> = check_once_in_order(&got).into_iter().collect();
    let missing: Vec<u64> = (0..end).filter(|n| !numbers.contains(n)).collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    src.stop().await;
}

/// Regression, "a whole rotated file is skipped" (the path was missing when the rotation was
/// seen): a poll between a rotation's rename and its create found no file at the path; the file
/// created next was rotated away before the following poll and was never read. The source is
/// held back (a full channel, late writes to the rotated file) while that file comes and goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rotated_away_while_the_path_was_missing_is_read() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    {
        let mut f = append(&path);
        for i in 0..5 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }
    const CAPACITY: usize = 4;
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], CAPACITY);
    let mut got = src.take(5, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 5);
    // The rename half of a rotation, seen by a poll: no file at the path.
    std::fs::rename(&path, d_join(&path, ".1")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while src.metrics.snapshot().rotations_total == 0 {
        assert!(Instant::now() < deadline, "the rotation was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Late writes to the rotated file fill the channel: the source is stuck sending them.
    {
        let mut x = append(&d_join(&path, ".1"));
        for i in 100..200 {
            x.write_all(line(i).as_bytes()).unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while src.rx.len() < CAPACITY {
        assert!(
            Instant::now() < deadline,
            "the source did not fill the channel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Meanwhile a file is created at the path, written and rotated away, and another created.
    let mut b = File::create(&path).unwrap();
    for i in 5..8 {
        b.write_all(line(i).as_bytes()).unwrap();
    }
    drop(b);
    std::fs::rename(d_join(&path, ".1"), d_join(&path, ".2")).unwrap();
    std::fs::rename(&path, d_join(&path, ".1")).unwrap();
    let mut c = File::create(&path).unwrap();
    for i in 8..11 {
        c.write_all(line(i).as_bytes()).unwrap();
    }
    drop(c);
    got.extend(src.take(106, Duration::from_secs(10)).await);
    let numbers: HashSet<u64> = check_once_in_order(&got).into_iter().collect();
    let missing: Vec<u64> = (0..11)
        .chain(100..200)
        .filter(|n| !numbers.contains(n))
        .collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    let extra = src.take(1, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "read twice: {:?}", text(&extra[0]));
    src.stop().await;
}

/// The rotated-file listing while a rotation renames every generation under it: each file once,
/// and every file that was there before the listing started and never left (nothing is deleted
/// here) is found. Before, a name could be opened after it had moved to another file (one file
/// twice, another never) and whole rotated files were skipped or read twice.
#[test]
fn listing_rotated_files_during_renames_finds_each_file_once() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    let mut generations = 0;
    rotate_keeping_all(&path_with_file(&path), &mut generations, 0..1);
    let stop = Arc::new(AtomicBool::new(false));
    let rotator = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                rotate_keeping_all(&path, &mut generations, n..n + 1);
                n += 1;
            }
        })
    };
    let inodes = |dir: &Path| -> HashSet<u64> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("messages."))
            .filter_map(|e| e.metadata().ok().map(|m| m.ino()))
            .collect()
    };
    for _ in 0..300 {
        // Rotated files only ever gain members while nothing is deleted: every inode listed
        // (after settling, by a plain read) before the call must be in its answer.
        let before = inodes(d.path());
        let listed = iemd::source::identity::rotated_files(&path);
        let mut once = HashSet::new();
        for (p, _, f) in &listed {
            assert!(once.insert(f.ino), "{} listed twice", p.display());
        }
        let lost: Vec<&u64> = before.iter().filter(|i| !once.contains(i)).collect();
        assert!(lost.is_empty(), "rotated files not listed: {lost:?}");
    }
    stop.store(true, Ordering::Relaxed);
    rotator.join().unwrap();
}

fn path_with_file(path: &Path) -> PathBuf {
    File::create(path).unwrap();
    path.to_path_buf()
}

// ---- sources that cannot be read (issue 21, item 7) ----

/// The real iemd on `config`, run as `nobody` when the tests run as root (root reads any file),
/// its stderr in `dir/iemd.log`. Killed on drop.
struct Unprivileged {
    child: std::process::Child,
    log: PathBuf,
}

impl Unprivileged {
    fn start(dir: &Path, config: &str) -> Unprivileged {
        use std::os::unix::process::CommandExt;
        let path = dir.join("iemd.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("iemd.log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_iemd"));
        cmd.arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info,lapin=off")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(File::create(&log).unwrap());
        if is_root() {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        Unprivileged {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A directory the daemon (maybe `nobody`) may enter, with a `state` directory it may write.
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = d.path().join("state");
    std::fs::create_dir(&state).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with the metrics endpoint on `port`, a broker nobody listens on (the sources and
/// /health do not need one) and `sources`.
fn endpoint_config(dir: &Path, port: u16, sources: &str) -> String {
    format!(
        "state_dir = \"{}\"\n[telemetry]\nmetrics_listen = \"127.0.0.1:{port}\"\n\
         [broker]\nurls = [\"amqp://127.0.0.1:1/%2f\"]\nbackoff_max_ms = 500\n{sources}",
        dir.join("state").display()
    )
}

/// GETs `path` from the endpoint until `done(status, body)` holds (panics with the daemon's log
/// after 20 s).
async fn wait_endpoint(
    d: &Unprivileged,
    port: u16,
    path: &str,
    done: impl Fn(u16, &str) -> bool,
) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((status, body)) = iemd::telemetry::http::get(&url, Duration::from_secs(2)).await
            && done(status, &body)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never as expected; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Regression, "a log the agent may not open is skipped without a word" (root:root 0600 is the
/// RHEL default for /var/log/messages): the daemon logs one error naming the path, the reason and
/// what to grant, `iemd_source_up{source,path}` is 0 and /health is 503 naming the source, until
/// the file is made readable; then it reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_log_is_named_in_the_log_metrics_and_health_until_readable() {
    use std::os::unix::fs::PermissionsExt;
    let d = shared_dir();
    let path = d.path().join("messages");
    std::fs::write(&path, format!("{}\n", crate::util::daemon::iem_line("n=1"))).unwrap();
    // Root reads anything: as root the daemon runs as nobody; otherwise the file is made
    // unreadable for its owner too.
    let mode = if is_root() { 0o600 } else { 0o000 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let port = free_port();
    let sources = format!(
        "[[sources.files]]\nname = \"messages\"\npaths = [\"{}\"]\nstart_at = \"beginning\"\n",
        path.display()
    );
    let daemon = Unprivileged::start(d.path(), &endpoint_config(d.path(), port, &sources));
    let shown = path.display().to_string();
    let health = wait_endpoint(&daemon, port, "/health", |s, _| s == 503).await;
    assert!(
        health.contains(&format!(
            "source messages cannot read {shown}: permission denied"
        )),
        "{health}"
    );
    let gauge = format!("iemd_source_up{{source=\"messages\",path=\"{shown}\"}}");
    let metrics = wait_endpoint(&daemon, port, "/metrics", |_, b| {
        b.contains(&format!("{gauge} 0"))
    })
    .await;
    // The sources' own counters reach /metrics too.
    for counter in ["iemd_lines_truncated_total", "iemd_rotations_total"] {
        assert!(
            metrics.contains(&format!("{counter}{{source=\"messages\"}} 0")),
            "{counter} missing:\n{metrics}"
        );
    }
    // Several polls later, still one error line, with the reason and the fix.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = daemon.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot read source path"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains(&shown), "{}", errors[0]);
    assert!(errors[0].contains("CAP_DAC_READ_SEARCH"), "{}", errors[0]);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_endpoint(&daemon, port, "/health", |s, _| s == 200).await;
    wait_endpoint(&daemon, port, "/metrics", |_, b| {
        b.contains(&format!("{gauge} 1"))
            && b.contains("iemd_lines_read_total{source=\"messages\"} 1")
    })
    .await;
    assert!(daemon.log_text().contains("source path readable again"));
}

/// When no configured source exists at all, iemd says so at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iemd_says_plainly_when_no_configured_source_exists() {
    let d = shared_dir();
    let missing = d.path().join("nowhere/messages");
    let port = free_port();
    let sources = format!(
        "[[sources.files]]\npaths = [\"{}\"]\n[sources.journald]\nenabled = false\n",
        missing.display()
    );
    let daemon = Unprivileged::start(d.path(), &endpoint_config(d.path(), port, &sources));
    wait_endpoint(&daemon, port, "/metrics", |_, b| {
        b.contains(&format!(
            "iemd_source_up{{source=\"{}\",path=\"{}\"}} 0",
            missing.display(),
            missing.display()
        ))
    })
    .await;
    let log = daemon.log_text();
    assert!(
        log.contains("no configured source exists")
            && log.contains(&format!("none of the files {} exists", missing.display()))
            && log.contains("journald is disabled"),
        "{log}"
    );
}

/// journalctl missing, or no journal it can read: the journald source is not up, with the
/// reason, until it reads an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_without_journalctl_or_a_journal_is_not_up() {
    let missing = JournaldConfig {
        enabled: true,
        journalctl: PathBuf::from("/nonexistent/journalctl"),
        ..JournaldConfig::default()
    };
    let src = JournaldSource::new(&missing, None);
    let metrics = src.metrics();
    let (tx, _rx) = mpsc::channel(1);
    let token = CancellationToken::new();
    let task = tokio::spawn(src.run(tx, token.clone()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.unreadable().is_empty() {
        assert!(Instant::now() < deadline, "journalctl missing but up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = metrics.unreadable();
    assert!(
        down[0]
            .reason
            .contains("cannot start /nonexistent/journalctl"),
        "{down:?}"
    );
    token.cancel();
    task.await.unwrap().unwrap();

    // A directory without journal files: journalctl waits silently; the source says why it
    // reads nothing, until a journal appears and an entry is read.
    let d = tempfile::tempdir().unwrap();
    let jdir = d.path().join("journal");
    std::fs::create_dir(&jdir).unwrap();
    let mut src = start_journal(&jdir, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while src.metrics.unreadable().is_empty() {
        assert!(Instant::now() < deadline, "no journal but up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = src.metrics.unreadable();
    assert_eq!(down[0].path, jdir.display().to_string());
    assert!(down[0].reason.contains("no journal files in"), "{down:?}");
    write_journal(&jdir, &[b"IEC:ES0030010001:now there is a journal"]);
    let got = src.take(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(src.metrics.unreadable().is_empty());
    src.stop().await;
}

// ---- rotated files and first runs (issue 21, items 1 and 2) ----

/// Appends `line(i)` for each `i` of `r` to `p`.
fn write_lines(p: &Path, r: std::ops::Range<u64>) {
    let mut f = append(p);
    for i in r {
        f.write_all(line(i).as_bytes()).unwrap();
    }
}

/// Records every line's position in order and saves them, as the pipeline does once their alerts
/// are durable.
fn commit_all(store: &CheckpointStore, lines: &[SourceLine]) {
    for l in lines {
        store.record(&l.source, &l.position).unwrap();
    }
    store.persist().unwrap();
}

/// Regression, "a line written to a rotated file 7 s after the rename was never delivered": a
/// rotated file used to be dropped 5 s after its last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_written_to_a_rotated_file_long_after_the_rename_is_read() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    let mut writer = append(&path);
    writer.write_all(line(0).as_bytes()).unwrap();
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], 16);
    assert_eq!(src.take(1, Duration::from_secs(5)).await.len(), 1);
    std::fs::rename(&path, d_join(&path, ".1")).unwrap();
    append(&path).write_all(line(1).as_bytes()).unwrap();
    assert_eq!(
        text(&src.take(1, Duration::from_secs(5)).await[0]),
        line(1).trim_end()
    );
    // The writer still holds the rotated file and writes to it 7 s later.
    tokio::time::sleep(Duration::from_secs(7)).await;
    writer.write_all(line(2).as_bytes()).unwrap();
    let got = src.take(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "the late line was not read");
    assert_eq!(text(&got[0]), line(2).trim_end());
    assert_eq!(file_pos(&got[0]).offset_of_line, line(0).len() as u64);
    src.stop().await;
}

/// Regression, "a line appended to messages.1 while the agent was down was lost": a rotated
/// file's progress is checkpointed and resumed, so what its writer added while the agent was
/// stopped is read on restart, and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_appended_to_a_rotated_file_while_stopped_is_read_after_restart() {
    let d = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&d.path().join("state")).unwrap();
    let path = d.path().join("messages");
    write_lines(&path, 0..10);
    let cfg = file_config(vec![path.clone()]);
    let mut src = start_with_store(&cfg, &store, 64);
    let mut got = src.take(10, Duration::from_secs(5)).await;
    std::fs::rename(&path, d_join(&path, ".1")).unwrap();
    write_lines(&path, 10..20);
    got.extend(src.take(10, Duration::from_secs(5)).await);
    got.extend(src.stop().await);
    assert_eq!(check_once_in_order(&got), (0..20).collect::<Vec<_>>());
    commit_all(&store, &got);

    // While stopped, the writer that still holds the rotated file appends to it.
    write_lines(&d_join(&path, ".1"), 20..25);
    write_lines(&path, 25..30);
    let store = CheckpointStore::open(&d.path().join("state")).unwrap();
    let mut src = start_with_store(&cfg, &store, 64);
    let rest = src.take(10, Duration::from_secs(5)).await;
    let extra = src.take(1, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "read twice: {:?}", text(&extra[0]));
    assert_eq!(check_once_in_order(&rest), (20..30).collect::<Vec<_>>());
    src.stop().await;
}

/// Regression, "files created while the agent was down": `start_at = "end"` was applied to every
/// file first seen at start-up, even when the source had run before, so an IEM in a new `b.log`
/// matching the glob (and the lines added to `a.log`, which had no checkpoint yet) were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_end_applies_only_to_the_first_run() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let dir = d.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.log"), "old 1\nold 2\n").unwrap();
    let mut cfg = file_config(vec![dir.join("*.log")]);
    cfg.start_at = FileStartAt::End;
    let store = CheckpointStore::open(&state).unwrap();
    let mut src = start_with_store(&cfg, &store, 16);
    let nothing = src.take(1, Duration::from_millis(1500)).await;
    assert!(
        nothing.is_empty(),
        "start_at = end read {:?}",
        text(&nothing[0])
    );
    assert!(src.stop().await.is_empty());

    // While stopped (no line was read, so no line was checkpointed): more lines, a new file.
    append(&dir.join("a.log")).write_all(b"a new\n").unwrap();
    std::fs::write(dir.join("b.log"), "b first\n").unwrap();
    let store = CheckpointStore::open(&state).unwrap();
    let mut src = start_with_store(&cfg, &store, 16);
    let mut got: Vec<String> = src
        .take(2, Duration::from_secs(5))
        .await
        .iter()
        .map(text)
        .collect();
    got.extend(
        src.take(1, Duration::from_millis(700))
            .await
            .iter()
            .map(text),
    );
    got.sort();
    assert_eq!(got, vec!["a new", "b first"]);
    src.stop().await;
}

// ---- half-written lines (issue 21, item 5) ----

/// Regression, "half-written lines": a block-buffered writer wrote `...IEC:ES0030` and, 2.5 s
/// later, `010001:...`; the first half was taken as a line after 1 s (one malformed alert) and
/// the IEM was lost. With the default timeout the line is read whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_finished_seconds_later_is_read_whole() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    let mut cfg = file_config(vec![path.clone()]);
    cfg.partial_line_timeout_ms = FileSourceConfig::default().partial_line_timeout_ms;
    let mut src = start_files(&cfg, vec![], 16);
    let mut f = append(&path);
    f.write_all(b"Nov 21 22:50:01 node1 s3server[1]: IEC:ES0030")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    f.write_all(b"010001:S3 server cannot connect\n").unwrap();
    let got = src.take(2, Duration::from_secs(3)).await;
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        vec!["Nov 21 22:50:01 node1 s3server[1]: IEC:ES0030010001:S3 server cannot connect"]
    );
    src.stop().await;
}

/// A line taken early (after the timeout) that then goes on: the completed line is still
/// delivered whole, at the same offset, after the early copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_taken_early_is_delivered_whole_once_completed() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("messages");
    std::fs::write(&path, "first\n").unwrap();
    let mut src = start_files(&file_config(vec![path.clone()]), vec![], 16);
    assert_eq!(src.take(1, Duration::from_secs(5)).await.len(), 1);
    let mut f = append(&path);
    f.write_all(b"x IEC:ES0030").unwrap();
    let early = src.take(1, Duration::from_secs(5)).await;
    assert_eq!(
        early.iter().map(text).collect::<Vec<_>>(),
        vec!["x IEC:ES0030"]
    );
    f.write_all(b"010001:done\n").unwrap();
    let whole = src.take(1, Duration::from_secs(5)).await;
    assert_eq!(
        whole.iter().map(text).collect::<Vec<_>>(),
        vec!["x IEC:ES0030010001:done"]
    );
    let (e, w) = (file_pos(&early[0]), file_pos(&whole[0]));
    assert_eq!((e.offset_of_line, w.offset_of_line), (6, 6));
    // A checkpoint on the early copy resumes at the line, so a restart reads it whole.
    assert_eq!(e.next_offset, 6);
    assert_eq!(w.next_offset, std::fs::metadata(&path).unwrap().len());
    assert_eq!(e.fingerprint, w.fingerprint);
    src.stop().await;
}

// ---- a journal cursor the journal no longer holds (issue 21, item 13) ----

/// Regression, "a journal cursor the journal no longer holds": after the journal files were
/// removed (or a volatile journal reset by a reboot), `--after-cursor` with the saved cursor
/// skipped entries already in the new journal. The source now notices and reads from the
/// cursor's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_reads_a_reset_journal_from_the_saved_cursors_time() {
    let d = tempfile::tempdir().unwrap();
    let jdir = d.path().join("journal");
    std::fs::create_dir(&jdir).unwrap();
    write_journal(&jdir, &[b"before 1", b"before 2"]);
    let mut src = start_journal(&jdir, None);
    let got = src.take(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    let saved = cursor(&got[1]);
    src.stop().await;

    // The journal is reset: its files are gone, and new entries are logged before iemd starts.
    std::fs::remove_file(jdir.join("remote.journal")).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    write_journal(&jdir, &[b"IEC:ES0030010001:after the reset", b"after 2"]);
    let mut src = start_journal(&jdir, Some(saved));
    let got = src.take(3, Duration::from_secs(10)).await;
    assert_eq!(
        got.iter().map(message).collect::<Vec<_>>(),
        vec!["IEC:ES0030010001:after the reset", "after 2"]
    );
    // Followed on from there.
    write_journal(&jdir, &[b"live"]);
    let live = src.take(1, Duration::from_secs(10)).await;
    assert_eq!(live.iter().map(message).collect::<Vec<_>>(), vec!["live"]);
    src.stop().await;
}

// ---- IEMs past max_line_bytes (issue 21, item 6) ----

/// Regression, "IEMs past max_line_bytes": a marker after the cut of a long line gave no alert,
/// no log line and no metric. Through the real daemon and broker: the IEM past the cut is
/// published, marked truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iem_past_max_line_bytes_is_published_truncated() {
    use crate::util::daemon::{Daemon, append as append_lines, collect, config};
    if !crate::util::broker_available("an_iem_past_max_line_bytes_is_published_truncated") {
        return;
    }
    let _broker = crate::util::broker_lock::shared();
    let d = tempfile::tempdir().unwrap();
    let name = format!("src-cut-{}", std::process::id());
    let path = d.path().join("messages");
    File::create(&path).unwrap();
    let mut cfg = config(d.path(), &name, &[], "");
    cfg.push_str(&format!(
        "[[sources.files]]\npaths = [\"{}\"]\nstart_at = \"beginning\"\nmax_line_bytes = 1024\n",
        path.display()
    ));
    let mut daemon = Daemon::start(d.path(), &cfg);
    let filler = "word ".repeat(1000);
    append_lines(
        &path,
        &[format!(
            "Nov 21 22:50:01 node1 s3server[1234]: {filler}IEC:ES0030010001:past the cut"
        )],
    );
    let got = collect(&name, 1, Duration::from_secs(30)).await;
    assert!(daemon.stop().success(), "{}", daemon.log_text());
    assert_eq!(got.bodies.len(), 1, "{:?}", got.messages);
    let alert = &got.bodies[0];
    assert_eq!(alert["kind"], "iem", "{alert}");
    assert_eq!(alert["code"], "ES0030010001", "{alert}");
    assert_eq!(alert["truncated"], true, "{alert}");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .starts_with("past the cut"),
        "{alert}"
    );
}

// ---- symlinked log paths (issue 21, item 3) ----

/// Regression, "symlinked log paths": rotated siblings were looked for next to the link, so a
/// rotation of the link's target while the agent was down lost the rest of the rotated file.
/// They are looked for (and watched) where the link points; a link that changes its target is
/// followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_path_is_followed_across_rotations_and_a_new_target() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let real = d.path().join("real");
    let logs = d.path().join("logs");
    std::fs::create_dir(&real).unwrap();
    std::fs::create_dir(&logs).unwrap();
    let target = real.join("syslog");
    let link = logs.join("messages");
    std::os::unix::fs::symlink("../real/syslog", &link).unwrap();
    write_lines(&target, 0..300);
    let cfg = file_config(vec![link.clone()]);
    let store = CheckpointStore::open(&state).unwrap();
    let mut src = start_with_store(&cfg, &store, 8);
    let mut got = src.take(100, Duration::from_secs(10)).await;
    got.extend(src.stop().await);
    let first_run = got.len() as u64;
    assert!(first_run < 300, "the source was stopped mid-stream");
    commit_all(&store, &got);

    // While stopped: more lines, then the target is rotated by rename in its own directory.
    write_lines(&target, 300..350);
    std::fs::rename(&target, real.join("syslog.1")).unwrap();
    write_lines(&target, 350..400);
    let store = CheckpointStore::open(&state).unwrap();
    let mut src = start_with_store(&cfg, &store, 8);
    let rest = src
        .take((400 - first_run) as usize, Duration::from_secs(15))
        .await;
    got.extend(rest);
    assert_eq!(check_once_in_order(&got), (0..400).collect::<Vec<_>>());
    // The link now points at a file in another directory: that file is read.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    write_lines(&other.join("syslog"), 400..410);
    let tmp = logs.join("messages.new");
    std::os::unix::fs::symlink(other.join("syslog"), &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    let moved = src.take(10, Duration::from_secs(10)).await;
    assert_eq!(check_once_in_order(&moved), (400..410).collect::<Vec<_>>());
    let extra = src.take(1, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "read twice: {:?}", text(&extra[0]));
    src.stop().await;
}

// ---- compressed rotated files (issue 21, item 4) ----

/// Rotates `path` with the real logrotate, `compress` without `delaycompress`, through
/// `compresscmd` (gzip, zstd, xz or bzip2), its `uncompresscmd` and its extension.
fn logrotate_compress(path: &Path, compresscmd: &str, uncompresscmd: &str, ext: &str) {
    let dir = path.parent().unwrap();
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 4\n  compress\n  compresscmd {compresscmd}\n  \
             uncompresscmd {uncompresscmd}\n  compressext {ext}\n  \
             create\n  missingok\n}}\n",
            path.display()
        ),
    )
    .unwrap();
    let status = std::process::Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .status()
        .expect("logrotate is installed (Debian package logrotate)");
    assert!(status.success());
    assert!(
        d_join(path, &format!(".1{ext}")).exists(),
        "logrotate did not compress"
    );
}

/// Regression, "compressed rotated files": across a rotation while the agent was down whose
/// rotated file was compressed at once (`compress` without `delaycompress`), the tail of the
/// checkpointed file was lost. It is read through the decompressor from the checkpoint, with the
/// identity it had before compression; gzip, zstd, xz and bzip2, rotated by the real logrotate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_file_compressed_while_stopped_is_finished_through_the_decompressor() {
    for (cmd, uncmd, ext) in [
        ("/usr/bin/gzip", "/usr/bin/gunzip", ".gz"),
        ("/usr/bin/zstd", "/usr/bin/unzstd", ".zst"),
        ("/usr/bin/xz", "/usr/bin/unxz", ".xz"),
        ("/usr/bin/bzip2", "/usr/bin/bunzip2", ".bz2"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let path = d.path().join("messages");
        write_lines(&path, 0..300);
        let cfg = file_config(vec![path.clone()]);
        let store = CheckpointStore::open(&state).unwrap();
        let mut src = start_with_store(&cfg, &store, 8);
        let mut got = src.take(100, Duration::from_secs(10)).await;
        got.extend(src.stop().await);
        let first_run = got.len() as u64;
        assert!(first_run < 300, "the source was stopped mid-stream");
        commit_all(&store, &got);
        let identity = file_pos(&got[0]).clone();

        write_lines(&path, 300..350);
        logrotate_compress(&path, cmd, uncmd, ext);
        write_lines(&path, 350..400);
        let store = CheckpointStore::open(&state).unwrap();
        let mut src = start_with_store(&cfg, &store, 8);
        let rest = src
            .take((400 - first_run) as usize, Duration::from_secs(15))
            .await;
        let extra = src.take(1, Duration::from_millis(700)).await;
        assert!(extra.is_empty(), "{ext}: read twice: {:?}", text(&extra[0]));
        got.extend(rest.iter().cloned());
        assert_eq!(
            check_once_in_order(&got),
            (0..400).collect::<Vec<_>>(),
            "{ext}"
        );
        // The compressed file's lines keep the identity (and so the alert ids) of the file.
        let from_compressed: Vec<&SourceLine> = rest
            .iter()
            .filter(|l| text(l)[4..10].parse::<u64>().unwrap() < 350)
            .collect();
        assert_eq!(from_compressed.len() as u64, 350 - first_run, "{ext}");
        for l in from_compressed {
            let p = file_pos(l);
            assert_eq!(
                (p.dev, p.ino, p.fingerprint),
                (identity.dev, identity.ino, identity.fingerprint),
                "{ext}"
            );
            assert_eq!(
                p.offset_of_line,
                text(l)[4..10].parse::<u64>().unwrap() * line(0).len() as u64
            );
        }
        src.stop().await;
    }
}
