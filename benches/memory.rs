//! Memory under a full spool (issue 21 item 9): the release `iemd` binary tails a file of long
//! IEM lines (64 KiB, the default `max_line_bytes`) while its broker is down and its spool is
//! full, so everything it has read waits in memory. Reports the daemon's peak RSS (VmHWM) once
//! it has stopped reading, as a ratio to the 32 MB ceiling the issue sets (before the channel
//! was bounded in bytes, this scenario took 285 MB).
//!
//! Run: `cargo bench --bench memory`. `IEMD_MEM_LINES` sets the number of 64 KiB lines written
//! (default 2,000: 128 MiB, more than the 8 MiB budget and the 4 MiB spool hold many times).
//! No broker is needed: the daemon's broker is a port nobody listens on.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The ceiling the issue sets for this scenario.
const CEILING_MB: f64 = 32.0;
const LINE_BYTES: usize = 65_000;

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let lines: usize = std::env::var("IEMD_MEM_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("messages");
    std::fs::File::create(&input).expect("input");
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = format!(
        r#"state_dir = "{state}"
[telemetry]
metrics_listen = false
[spool]
max_bytes = 4194304
[broker]
urls = ["amqp://127.0.0.1:{closed_port}/%2f"]
[[sources.files]]
paths = ["{input}"]
start_at = "beginning"
[sources.journald]
enabled = false
"#,
        state = dir.path().join("state").display(),
        input = input.display(),
    );
    let path = dir.path().join("iemd.toml");
    std::fs::write(&path, config).expect("config");
    let log = dir.path().join("iemd.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iemd"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn,lapin=off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start iemd");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(1));
    let idle_kb = status_kb(pid, "VmRSS:");

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("open input");
    for i in 0..lines {
        let mut line =
            format!("Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:n={i} ").into_bytes();
        line.resize(LINE_BYTES, b'a' + (i % 26) as u8);
        line.push(b'\n');
        f.write_all(&line).expect("write");
    }
    drop(f);
    // Reading stops once the spool and the channel are full; wait until RSS has been steady
    // for 3 s (at most 60 s).
    let start = Instant::now();
    let (mut last, mut steady_since) = (0, Instant::now());
    while start.elapsed() < Duration::from_secs(60)
        && steady_since.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(200));
        let now = status_kb(pid, "VmRSS:");
        if now.abs_diff(last) > 256 {
            last = now;
            steady_since = Instant::now();
        }
    }
    let hwm_kb = status_kb(pid, "VmHWM:");
    let rss_kb = status_kb(pid, "VmRSS:");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let full = text.contains("spool is full");
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = child.wait();

    let mb = |kb: u64| kb as f64 / 1024.0;
    println!(
        "memory under a full spool, broker down, {lines} IEM lines of {LINE_BYTES} bytes ({:.0} MiB written)",
        (lines * (LINE_BYTES + 1)) as f64 / (1 << 20) as f64
    );
    println!("| figure | MB |");
    println!("|---|---|");
    println!("| VmRSS idle (before the lines) | {:.1} |", mb(idle_kb));
    println!("| VmRSS, reading stopped | {:.1} |", mb(rss_kb));
    println!("| VmHWM (peak) | {:.1} |", mb(hwm_kb));
    println!("| ceiling | {CEILING_MB:.1} |");
    println!(
        "peak / ceiling = {:.2} ({}); spool full: {full}",
        mb(hwm_kb) / CEILING_MB,
        if mb(hwm_kb) <= CEILING_MB {
            "within"
        } else {
            "OVER"
        }
    );
    assert!(full, "the spool never filled:\n{text}");
}
