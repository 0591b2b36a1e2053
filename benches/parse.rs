//! Parser throughput beside a memchr-only ceiling measured in the same run.
//!
//! For each input mix (noise-only RFC 3164 lines, 10% IEM lines, 100% IEM lines) the ceiling is
//! what any parser must at least do: split the buffer into lines and search each for `IEC:`.
//! The parse path splits the same way and calls `iem_parsers::parse_iem_line` on every line, as
//! the agent does: a line without the marker costs the marker scan; a line with it is parsed in
//! full (header, message, classification).
//! Heap allocations on the parse path are counted with a counting global allocator.
//!
//! Then the whole `iemctl parse` (release) on a file of 1,000,000 lines with 0.1% IEM lines,
//! against `grep -F -c IEC:` on the same file as its ceiling: 7 pairs, the order alternating,
//! the median of the per-pair ratios. The file is written to the target's tmp directory and read
//! from the page cache (one unmeasured pair first).
//!
//! Run: `cargo bench --bench parse` (both), `-- lines` or `-- scan` (one of them).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iem_parsers::iem::Classified;

/// Counts every allocation made through the global allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only adds a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Deterministic xorshift generator (the same input every run) and the log's clock.
struct Rng {
    state: u64,
    /// Seconds since the first line: time only moves forward, as in a real log file.
    clock: u64,
}

impl Rng {
    fn new() -> Rng {
        Rng {
            state: 0x9e37_79b9_7f4a_7c15,
            clock: 10 * 86_400,
        }
    }
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Writes `Nov 21 22:50:01 srvnode-1 program[pid]: `; time moves forward as in a real file.
fn header(rng: &mut Rng, out: &mut String, program: &str, pid: bool) {
    use std::fmt::Write;
    rng.clock += rng.below(3) as u64;
    let secs = rng.clock;
    let day = 1 + (secs / 86_400) % 28;
    let month = MONTHS[(secs / (28 * 86_400)) as usize % 12];
    let _ = write!(
        out,
        "{month} {day:>2} {:02}:{:02}:{:02} srvnode-1.data.private.cortx.example.com {program}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
    );
    if pid {
        let _ = write!(out, "[{}]", 1 + rng.below(65_000));
    }
    out.push_str(": ");
}

/// A realistic /var/log/messages line without the marker.
fn noise_line(rng: &mut Rng, out: &mut String) {
    use std::fmt::Write;
    match rng.below(6) {
        0 => {
            header(rng, out, "systemd", true);
            let _ = write!(out, "Started Session {} of user root.", rng.below(100_000));
        }
        1 => {
            header(rng, out, "kernel", false);
            let _ = write!(
                out,
                "[{:>6}.{:06}] sd 0:0:0:{}: [sdb] Synchronizing SCSI cache",
                rng.below(100_000),
                rng.below(1_000_000),
                rng.below(8)
            );
        }
        2 => {
            header(rng, out, "sshd", true);
            let _ = write!(
                out,
                "Accepted publickey for root from 10.230.{}.{} port {} ssh2: RSA SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
                rng.below(256),
                rng.below(256),
                1024 + rng.below(60_000)
            );
        }
        3 => {
            header(rng, out, "CROND", true);
            out.push_str("(root) CMD (/usr/lib64/sa/sa1 1 1)");
        }
        4 => {
            header(rng, out, "rsyslogd", false);
            let _ = write!(
                out,
                "imjournal: {} messages lost due to rate-limiting (20000 allowed within 600 seconds)",
                rng.below(5000)
            );
        }
        _ => {
            header(rng, out, "pacemaker-controld", true);
            let _ = write!(
                out,
                "notice: Result of monitor operation for s3server-c{} on srvnode-{}: ok",
                rng.below(40),
                1 + rng.below(3)
            );
        }
    }
    out.push('\n');
}

/// An IEM line in one of the real producer shapes.
fn iem_line(rng: &mut Rng, out: &mut String) {
    use std::fmt::Write;
    match rng.below(5) {
        0 => {
            header(rng, out, "s3server", true);
            out.push_str("IEC:ES0030010001:S3 server cannot connect to auth server. For more information, refer Troubleshooting Guide.");
        }
        1 => {
            header(rng, out, "m0d", true);
            let _ = write!(
                out,
                "IEC: ES0020020004: RPC_ITEM_FAILED item=0x7f3a2c{:06x} opcode=41 rc=-110",
                rng.below(1 << 24)
            );
        }
        2 => {
            header(rng, out, "m0d", true);
            let _ = write!(
                out,
                "IEC: ES002002000{}: Event count: {:x}, Observed data accessibility issue.",
                rng.pick(&["6", "a", "A"]),
                rng.below(4096)
            );
        }
        3 => {
            header(rng, out, "root", false);
            out.push_str("IEC:WS0080010001:The cluster has lost ssc-vm-1 server. System is running in degraded mode. Extra Info: host=ssc-vm-1; status=lost;\"");
        }
        _ => {
            header(rng, out, "s3server", true);
            let _ = write!(
                out,
                "IEC: AS0030050001: Fatal handler triggered: {{ \"time\": \"2026-11-21 22:50:01\", \"node\": \"srvnode-1\", \"pid\": {}, \"file\": \"s3.cc\", \"line\": 9, \"signal_number\": 11 }}",
                rng.below(65_000)
            );
        }
    }
    out.push('\n');
}

fn dataset(lines: usize, iem_per_mille: usize) -> String {
    let mut rng = Rng::new();
    let mut out = String::with_capacity(lines * 120);
    for _ in 0..lines {
        if rng.below(1000) < iem_per_mille {
            iem_line(&mut rng, &mut out);
        } else {
            noise_line(&mut rng, &mut out);
        }
    }
    out
}

/// Calls `f` on each line of `text` (without its `\n`), split with memchr.
#[inline(always)]
fn for_each_line(text: &str, mut f: impl FnMut(&str)) {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
        // '\n' is ASCII: a char boundary.
        f(&text[start..end]);
        start = end + 1;
    }
    if start < text.len() {
        f(&text[start..]);
    }
}

/// Ceiling: split into lines and search each for the marker.
fn scan(text: &str, finder: &memchr::memmem::Finder<'_>) -> usize {
    let mut found = 0;
    for_each_line(text, |line| {
        found += usize::from(finder.find(line.as_bytes()).is_some());
    });
    found
}

/// The parse path: header, message and IEM classification of every line holding the marker.
fn parse(text: &str) -> usize {
    let mut iems = 0;
    for_each_line(text, |line| {
        let parsed = iem_parsers::parse_iem_line(line);
        iems += usize::from(matches!(parsed, Some(ref p) if matches!(p.iem, Classified::Iem(_))));
        black_box(&parsed);
    });
    iems
}

/// Best time of `rounds` runs of each of `a` and `b`, alternated so that load from other
/// processes hits both alike.
fn best2(
    rounds: usize,
    mut a: impl FnMut() -> usize,
    mut b: impl FnMut() -> usize,
) -> ((Duration, usize), (Duration, usize)) {
    let (mut best_a, mut best_b) = ((Duration::MAX, 0), (Duration::MAX, 0));
    for _ in 0..rounds {
        let t = Instant::now();
        let ra = black_box(a());
        best_a = (best_a.0.min(t.elapsed()), ra);
        let t = Instant::now();
        let rb = black_box(b());
        best_b = (best_b.0.min(t.elapsed()), rb);
    }
    (best_a, best_b)
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|a| a == part);
    if wants("lines") {
        per_line();
    }
    if wants("scan") {
        iemctl_against_grep();
    }
}

fn per_line() {
    const LINES: usize = 50_000;
    const ROUNDS: usize = 60;
    let finder = memchr::memmem::Finder::new(b"IEC:");
    println!(
        "{:<10} {:>10} {:>9} {:>12} {:>10} {:>12} {:>8} {:>12}",
        "input",
        "MB",
        "ceil MB/s",
        "ceil lines/s",
        "parse MB/s",
        "parse lines/s",
        "ratio",
        "allocs/line"
    );
    for (name, per_mille) in [("noise", 0), ("iem-10%", 100), ("iem-100%", 1000)] {
        let text = dataset(LINES, per_mille);
        let mb = text.len() as f64 / 1e6;
        let ((ceil_time, found), (parse_time, iems)) =
            best2(ROUNDS, || scan(&text, &finder), || parse(&text));
        assert_eq!(
            found, iems,
            "{name}: every marker line must classify as an IEM"
        );

        let before = ALLOCATIONS.load(Ordering::Relaxed);
        black_box(parse(&text));
        let allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;

        let rate = |d: Duration| (mb / d.as_secs_f64(), LINES as f64 / d.as_secs_f64());
        let (ceil_mbs, ceil_lps) = rate(ceil_time);
        let (parse_mbs, parse_lps) = rate(parse_time);
        println!(
            "{name:<10} {mb:>10.1} {ceil_mbs:>9.0} {ceil_lps:>12.0} {parse_mbs:>10.0} {parse_lps:>12.0} {:>8.2} {:>12.3}",
            parse_mbs / ceil_mbs,
            allocs as f64 / LINES as f64
        );
    }
}

/// Wall time of one run of `cmd`, which must succeed, and its stdout and stderr.
fn timed(cmd: &mut Command) -> (Duration, String, String) {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (elapsed, text(out.stdout), text(out.stderr))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `iemctl parse FILE > /dev/null` against `grep -F -c IEC: FILE`, paired, on 1,000,000 lines
/// with 0.1% IEM lines.
fn iemctl_against_grep() {
    const LINES: usize = 1_000_000;
    const PAIRS: usize = 7;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parse-scan.log");
    let text = dataset(LINES, 1);
    std::fs::write(&path, &text).expect("write the input");
    let bytes = text.len() as f64;
    drop(text);
    let iemctl = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iemctl"));
        c.arg("parse").arg(&path).stdout(Stdio::null());
        c
    };
    let grep = || {
        let mut c = Command::new("grep");
        c.args(["-F", "-c", "IEC:"]).arg(&path);
        c
    };
    // Warm the page cache and check that both find the same lines.
    let (_, _, summary) = timed(&mut iemctl());
    let (_, count, _) = timed(&mut grep());
    let expected = format!("{}: {LINES} lines, ", path.display());
    assert!(summary.starts_with(&expected), "{summary}");
    let alerts: u64 = summary
        .trim()
        .split(", ")
        .skip(1)
        .map(|part| part.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(alerts, count.trim().parse::<u64>().unwrap(), "{summary}");

    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        let (a, b) = if pair % 2 == 0 {
            let a = timed(&mut iemctl()).0;
            (a, timed(&mut grep()).0)
        } else {
            let b = timed(&mut grep()).0;
            (timed(&mut iemctl()).0, b)
        };
        ours.push(a.as_secs_f64());
        theirs.push(b.as_secs_f64());
        ratios.push(a.as_secs_f64() / b.as_secs_f64());
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split(' ').take(3).collect::<Vec<_>>().join(" ");
    let (ours_s, theirs_s) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "\niemctl parse against grep -F -c IEC: on {:.1} MB, {LINES} lines, {alerts} with the marker",
        bytes / 1e6
    );
    println!(
        "{:<22} {:>9} {:>9} {:>12}   runs s",
        "", "median s", "MB/s", "lines/s"
    );
    for (name, median_s, runs) in [
        ("iemctl parse", ours_s, &ours),
        ("grep -F -c (ceiling)", theirs_s, &theirs),
    ] {
        let runs: Vec<String> = runs.iter().map(|s| format!("{s:.3}")).collect();
        println!(
            "{name:<22} {median_s:>9.3} {:>9.0} {:>12.0}   {}",
            bytes / 1e6 / median_s,
            LINES as f64 / median_s,
            runs.join(" ")
        );
    }
    let ratio_runs: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "iemctl / grep wall time, median of {PAIRS} pairs: {:.2}x (pairs: {}); load average {load}",
        median(ratios),
        ratio_runs.join(" ")
    );
}
