//! Replays every fuzz corpus input and crasher through all entry points: a crash found once
//! stays fixed.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn replay_corpus_and_artifacts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    files(&root.join("corpus"), &mut inputs);
    files(&root.join("artifacts"), &mut inputs);
    assert!(
        !inputs.is_empty(),
        "no inputs under {}/corpus: the committed corpus is missing",
        root.display()
    );
    for path in &inputs {
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let parsed = iem_parsers::parse_syslog_line(&text);
        // The message is always a suffix of the line without its trailing '\r'.
        let line = text.strip_suffix('\r').unwrap_or(&text);
        assert!(line.ends_with(parsed.message), "{}", path.display());
        let _ = iem_parsers::journal::parse(&text);
        let _ = iem_parsers::iem::classify(&text);
    }
}
