//! The whole agent, end to end: the release `iemd` binary tails a syslog file and publishes to
//! the local RabbitMQ with confirms. Reports, in one table:
//!
//! - throughput: 1,000,000 syslog lines (10% IEM) appended as fast as possible while iemd runs,
//!   alerts/s from the first byte written to the last alert confirmed (`iemd_alerts_published_total`
//!   on /metrics), beside its peers, each its own process, with its CPU seconds and peak RSS:
//!   - the plain publisher: lapin with confirms (`common/ceiling.rs`), sending as many alert
//!     bodies of the same size to the same kind of exchange and queue, with the same window;
//!   - two plain publishers in parallel, half the messages each, to the same queue: the broker's
//!     capacity for that queue;
//!   - iemd's own client alone (`iemd::publish::send_records`) with the same alerts ready in
//!     memory: what one channel takes from it without the pipeline and the spool before it;
//!   - syslog-ng's `amqp()` with flow-control on the same file, when `syslog-ng` is installed
//!     (`syslog-ng-core`, `syslog-ng-mod-amqp`): no confirms, no fsync; its `amqp()` declares
//!     its exchange non-durable, so the bench declares it so, with a durable queue bound to it;
//!     twice: with its file source's windows at their defaults, as a new user configures it, and
//!     tuned for throughput (`log-fetch-limit(1000) log-iw-size(10000)`);
//! - latency at 1,000 IEM/s (paced writer, 20 s): line written -> delivered to a consumer of the
//!   queue (measured outside the daemon: it includes the consumer hop), and the daemon's own
//!   `iemd_line_to_confirm_seconds` histogram (spooled -> confirmed), with the default spool
//!   `sync_interval_ms` (0: sync as soon as records are appended) and again with a 20 ms timer
//!   (the old default) to show what batching on a timer costs;
//! - memory: VmRSS sampled every 20 ms during the throughput run with its anonymous and file-backed
//!   parts (RssAnon: heap, stacks, relocated data; RssFile: the binary's and libraries' pages),
//!   VmHWM (the peak, the headline figure), and VmRSS afterwards;
//! - idle CPU: utime+stime over 10 s without input.
//!
//! Run (RabbitMQ on 127.0.0.1:5672, guest/guest): `cargo bench --bench e2e`.
//! `IEMD_E2E_LINES` overrides the line count (default 1,000,000), `IEMD_E2E_LATENCY_SECS` the
//! paced run's length (default 20), `IEMD_E2E_SYNC_MS` the first daemon's `sync_interval_ms`
//! (default: the configuration's default), `IEMD_E2E_BIN` the daemon's binary (default: this
//! build's `iemd`; another build's, to compare two builds on the same machine minutes apart).

#[path = "common/ceiling.rs"]
mod ceiling;
#[path = "common/topology.rs"]
mod topology;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use iemd::spool::Record;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The publisher's default window (`broker.window`), used by the ceiling too.
const WINDOW: usize = 256;

/// Deterministic xorshift: the same file every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const HOST: &str = "srvnode-1.data.private.cortx.example.com";

/// A realistic /var/log/messages line without the marker.
fn noise_line(rng: &mut Rng, i: u64, out: &mut String) {
    use std::fmt::Write;
    let t = format!(
        "Nov 21 {:02}:{:02}:{:02}",
        i / 3_600_000 % 24,
        i / 60_000 % 60,
        i / 1000 % 60
    );
    let _ = match rng.below(5) {
        0 => writeln!(
            out,
            "{t} {HOST} systemd[1]: Started Session {} of user root.",
            rng.below(100_000)
        ),
        1 => writeln!(
            out,
            "{t} {HOST} kernel: [{:>6}.{:06}] sd 0:0:0:{}: [sdb] Synchronizing SCSI cache",
            rng.below(100_000),
            rng.below(1_000_000),
            rng.below(8)
        ),
        2 => writeln!(
            out,
            "{t} {HOST} sshd[{}]: Accepted publickey for root from 10.230.{}.{} port {} ssh2",
            rng.below(65_000),
            rng.below(256),
            rng.below(256),
            1024 + rng.below(60_000)
        ),
        3 => writeln!(
            out,
            "{t} {HOST} CROND[{}]: (root) CMD (/usr/lib64/sa/sa1 1 1)",
            rng.below(65_000)
        ),
        _ => writeln!(
            out,
            "{t} {HOST} pacemaker-controld[{}]: notice: Result of monitor operation for s3server-c{} on srvnode-{}: ok",
            rng.below(65_000),
            rng.below(40),
            1 + rng.below(3)
        ),
    };
}

/// An IEM line in one of the real producer shapes; `tag` ends its message.
fn iem_line(rng: &mut Rng, tag: &str, out: &mut String) {
    use std::fmt::Write;
    let t = "Nov 21 22:50:01";
    let _ = match rng.below(4) {
        0 => writeln!(
            out,
            "{t} {HOST} s3server[{}]: IEC:ES0030010001:S3 server cannot connect to auth server. {tag}",
            rng.below(65_000)
        ),
        1 => writeln!(
            out,
            "{t} {HOST} m0d[{}]: IEC: ES0020020004: RPC_ITEM_FAILED item=0x7f3a2c{:06x} opcode=41 rc=-110 {tag}",
            rng.below(65_000),
            rng.below(1 << 24)
        ),
        2 => writeln!(
            out,
            "{t} {HOST} root: IEC:WS0080010001:The cluster has lost ssc-vm-1 server. System is running in degraded mode. {tag}"
        ),
        _ => writeln!(
            out,
            "{t} {HOST} csm_agent[{}]: IEC:WS0060010001:SSL certificate is expiring {tag}",
            rng.below(65_000)
        ),
    };
}

/// `lines` lines, one in ten an IEM.
fn dataset(lines: u64) -> (String, u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::with_capacity(lines as usize * 130);
    let mut iems = 0;
    for i in 0..lines {
        if i % 10 == 9 {
            iem_line(&mut rng, &format!("n={iems}"), &mut out);
            iems += 1;
        } else {
            noise_line(&mut rng, i, &mut out);
        }
    }
    (out, iems)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The running daemon under test.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
    input: PathBuf,
}

/// The group-commit timer compared with the default: the default before 2026-11-22.
const TIMER_SYNC_MS: u64 = 20;

impl Daemon {
    fn start(dir: &Path, name: &str, sync_ms: u64) -> Daemon {
        std::fs::create_dir_all(dir).expect("dir");
        let input = dir.join("messages");
        std::fs::File::create(&input).expect("input");
        let port = free_port();
        let config = format!(
            r#"state_dir = "{state}"
catalog_dirs = []
[telemetry]
metrics_listen = "127.0.0.1:{port}"
[spool]
sync_interval_ms = {sync_ms}
[broker]
urls = ["amqp://127.0.0.1:5672/%2f"]
exchange = "{name}"
window = {WINDOW}
[broker.queue]
name = "{name}"
[[sources.files]]
paths = ["{input}"]
start_at = "beginning"
[sources.journald]
enabled = false
"#,
            state = dir.join("state").display(),
            input = input.display(),
        );
        let path = dir.join("iemd.toml");
        std::fs::write(&path, config).expect("config");
        let log = dir.join("iemd.log");
        let bin = std::env::var_os("IEMD_E2E_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_iemd")), PathBuf::from);
        let child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn,lapin=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn iemd");
        let d = Daemon {
            child,
            port,
            log,
            input,
        };
        let start = Instant::now();
        while d.metric("iemd_broker_connected") < 1.0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "iemd not connected after 30 s:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn metrics(&self) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ =
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    }

    /// The sum of every series of `name` (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        sum_series(&self.metrics(), name)
    }

    fn status(&self, field: &str) -> u64 {
        proc_status(self.child.id(), field).unwrap_or(0)
    }

    /// utime + stime, seconds.
    fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.child.id()).unwrap_or(0.0)
    }
}

/// SIGTERM and wait, also when the bench panics: no daemon outlives its run.
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sum_series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative bucket counts of a histogram, by upper bound.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once('"')?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket upper bound that holds quantile `q` of the observations made between two scrapes.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let base: HashMap<u64, f64> = before.iter().map(|(le, c)| (le.to_bits(), *c)).collect();
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| (*le, c - base.get(&le.to_bits()).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    delta
        .iter()
        .find(|(_, c)| *c >= q * total && total > 0.0)
        .map_or(f64::NAN, |d| d.0)
}

async fn channel() -> (lapin::Connection, lapin::Channel) {
    // Other suites on this machine stop and restart the broker: wait for it a while.
    let start = Instant::now();
    let conn = loop {
        match lapin::Connection::connect(URL, Default::default()).await {
            Ok(conn) => break conn,
            Err(e) if start.elapsed() > Duration::from_secs(120) => {
                panic!("no broker at 127.0.0.1:5672: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

async fn message_count(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_or(0, |q| q.message_count())
}

async fn delete(ch: &lapin::Channel, name: &str) {
    let _ = ch
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch.exchange_delete(name.into(), Default::default()).await;
}

/// What one peer of iemd did: its messages, the wall time of its publishing, its own CPU
/// (utime+stime) and peak RSS.
#[derive(Clone, Copy, Default)]
struct Peer {
    messages: u64,
    /// Publishing's start and end, UNIX ns (so that parallel peers' span can be taken).
    start_ns: u128,
    end_ns: u128,
    cpu_secs: f64,
    hwm_kb: u64,
}

impl Peer {
    fn rate(&self) -> f64 {
        self.messages as f64 / ((self.end_ns - self.start_ns) as f64 / 1e9)
    }

    fn line(&self) -> String {
        format!(
            "messages={} start_ns={} end_ns={} cpu_secs={} hwm_kb={}",
            self.messages, self.start_ns, self.end_ns, self.cpu_secs, self.hwm_kb
        )
    }

    fn parse(line: &str) -> Option<Peer> {
        let mut p = Peer::default();
        for kv in line.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "messages" => p.messages = v.parse().ok()?,
                "start_ns" => p.start_ns = v.parse().ok()?,
                "end_ns" => p.end_ns = v.parse().ok()?,
                "cpu_secs" => p.cpu_secs = v.parse().ok()?,
                "hwm_kb" => p.hwm_kb = v.parse().ok()?,
                _ => {}
            }
        }
        Some(p)
    }

    /// Several peers run in parallel, as one: their messages over the span of all of them.
    fn together(peers: &[Peer]) -> Peer {
        Peer {
            messages: peers.iter().map(|p| p.messages).sum(),
            start_ns: peers.iter().map(|p| p.start_ns).min().unwrap_or(0),
            end_ns: peers.iter().map(|p| p.end_ns).max().unwrap_or(0),
            cpu_secs: peers.iter().map(|p| p.cpu_secs).sum(),
            hwm_kb: peers.iter().map(|p| p.hwm_kb).max().unwrap_or(0),
        }
    }
}

/// This process's own utime+stime (s) and peak RSS (kB). The peak is VmHWM, not getrusage's
/// `ru_maxrss`, which Linux carries across execve (it would be this bench's, with its dataset).
fn own_usage() -> (f64, u64) {
    let pid = std::process::id();
    (
        proc_cpu_seconds(pid).unwrap_or(0.0),
        proc_status(pid, "VmHWM:").unwrap_or(0),
    )
}

/// The child side of [`publishers`]: publishes `IEMD_E2E_N` of the bodies in `IEMD_E2E_BODIES`
/// (one a line) as `role` to the exchange `IEMD_E2E_EXCHANGE` and prints a [`Peer`].
fn publisher_child(role: Role) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let exchange = var("IEMD_E2E_EXCHANGE");
    let n: u64 = var("IEMD_E2E_N").parse().expect("IEMD_E2E_N");
    let bodies: Vec<Vec<u8>> = std::fs::read(var("IEMD_E2E_BODIES"))
        .expect("bodies")
        .split(|&b| b == b'\n')
        .filter(|b| !b.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (start_ns, end_ns) = rt.block_on(async {
        match role {
            Role::Plain => {
                let (conn, ch) = channel().await;
                let start_ns = now_ns();
                let rate =
                    ceiling::publish_confirmed(&ch, &exchange, &bodies, n as usize, WINDOW).await;
                let end_ns = now_ns();
                let _ = conn.close(200, "bye".into()).await;
                assert!(rate > 0.0);
                (start_ns, end_ns)
            }
            Role::Client => {
                let records: Vec<Record> = bodies
                    .iter()
                    .cycle()
                    .take(n as usize)
                    .enumerate()
                    .map(|(i, b)| Record {
                        seq: i as u64 + 1,
                        time_ms: 0,
                        payload: b.clone(),
                    })
                    .collect();
                let config = topology::broker_config(&exchange, WINDOW);
                let start_ns = now_ns();
                let report = iemd::publish::send_records(&config, &records, |_, _| {})
                    .await
                    .expect("send_records");
                let end_ns = now_ns();
                assert_eq!(report.delivered, n, "not every alert was confirmed");
                (start_ns, end_ns)
            }
        }
    });
    let (cpu_secs, hwm_kb) = own_usage();
    let peer = Peer {
        messages: n,
        start_ns,
        end_ns,
        cpu_secs,
        hwm_kb,
    };
    println!("{}", peer.line());
}

/// Who publishes in a child process of this bench.
#[derive(Clone, Copy)]
enum Role {
    /// The plain publisher: lapin with confirms (`common/ceiling.rs`).
    Plain,
    /// iemd's own client alone, through `iemd::publish::send_records` (the daemon's publishing
    /// loop, `iemctl replay --publish`'s), with the alerts ready in memory: what one channel takes
    /// from it without the pipeline, the spool and its fsyncs before it.
    Client,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Plain => "plain",
            Role::Client => "client",
        }
    }
}

/// `k` publishers of `role` (confirms, persistent, mandatory, `WINDOW` in flight), each its own
/// process (this bench binary again), started together, sending `n / k` of `bodies` each to a
/// fresh exchange+queue like iemd's; the queue must hold all of them after. An error when a
/// publisher failed (the broker restarted under it: the caller tries again).
async fn publishers(
    role: Role,
    ch: &lapin::Channel,
    dir: &Path,
    name: &str,
    bodies: &[Vec<u8>],
    n: u64,
    k: u64,
) -> Result<Vec<Peer>, String> {
    topology::declare(ch, name, true).await;
    let file = dir.join(format!("{name}.bodies"));
    let mut text = Vec::new();
    for b in bodies {
        assert!(!b.contains(&b'\n'), "a body with a newline");
        text.extend_from_slice(b);
        text.push(b'\n');
    }
    std::fs::write(&file, text).expect("bodies");
    let exe = std::env::current_exe().expect("current_exe");
    let children: Vec<Child> = (0..k)
        .map(|_| {
            Command::new(&exe)
                .env("IEMD_E2E_ROLE", role.name())
                .env("IEMD_E2E_EXCHANGE", name)
                .env("IEMD_E2E_BODIES", &file)
                .env("IEMD_E2E_N", (n / k).to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a publisher")
        })
        .collect();
    let peers: Result<Vec<Peer>, String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("a publisher");
            let text = String::from_utf8_lossy(&out.stdout);
            Peer::parse(text.lines().last().unwrap_or(""))
                .filter(|_| out.status.success())
                .ok_or_else(|| format!("{} publisher failed: {}", role.name(), out.status))
        })
        .collect();
    let count = message_count(ch, name).await as u64;
    delete(ch, name).await;
    let peers = peers?;
    if count != n / k * k {
        return Err(format!(
            "the {} publishers' queue holds {count} of {}",
            role.name(),
            n / k * k
        ));
    }
    Ok(peers)
}

/// Runs a peer until it is not interrupted by a broker restart, at most five times, each on a
/// fresh channel and with its attempt number (for fresh queue names: an interrupted run's
/// persistent messages survive the restart).
async fn retried<T, F: Future<Output = Result<T, String>>>(
    mut run: impl FnMut(lapin::Channel, u32) -> F,
) -> T {
    let mut failures = Vec::new();
    for attempt in 0..5 {
        let (conn, ch) = channel().await;
        let res = run(ch, attempt).await;
        let _ = conn.close(200, "bye".into()).await;
        match res {
            Ok(t) => return t,
            Err(e) => {
                eprintln!("interrupted, trying again: {e}");
                failures.push(e);
            }
        }
    }
    panic!("interrupted five times: {failures:?}");
}

/// How the bench configures syslog-ng's file source.
#[derive(Clone, Copy)]
enum Windows {
    /// As a new user writes it: `log-fetch-limit()` and `log-iw-size()` left at their defaults
    /// (`log-iw-size()`'s is 100). The issue tried syslog-ng as a new user would; its configuration is not on
    /// record.
    Default,
    /// Tuned for throughput: 1,000 lines fetched at a time, a window of 10,000 messages.
    Tuned,
}

/// syslog-ng's `amqp()` destination with flow-control, reading `lines` from a file written in
/// full before it starts, IEM lines only, persistent messages to a topic exchange bound to a
/// durable queue. An error when the run was interrupted (other suites on this machine restart
/// the broker: the caller tries again).
async fn syslog_ng(
    bin: &str,
    ch: &lapin::Channel,
    dir: &Path,
    name: &str,
    lines: u64,
    windows: Windows,
) -> Result<Peer, String> {
    let (text, alerts) = dataset(lines);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let input = dir.join("messages");
    std::fs::write(&input, text).expect("input");
    // Its amqp() declares the exchange with durable=false: declare it the same way first, then
    // a durable queue bound to it.
    topology::declare(ch, name, false).await;
    let conf = dir.join("syslog-ng.conf");
    std::fs::write(
        &conf,
        format!(
            r#"@version: 3.35
options {{ stats_freq(0); }};
source s_file {{ file("{input}" follow-freq(0.1){windows}); }};
filter f_iem {{ message("IEC:" type(string) flags(substring)); }};
destination d_amqp {{
  amqp(host("127.0.0.1") port(5672) vhost("/") username("guest") password("guest")
       exchange("{name}") exchange-declare(yes) exchange-type("topic")
       routing-key("iem.error.s3") persistent(yes) time-reopen(1)
       body("$(format-json --scope rfc3164 --key ISODATE)"));
}};
log {{ source(s_file); filter(f_iem); destination(d_amqp); flags(flow-control); }};
"#,
            input = input.display(),
            windows = match windows {
                Windows::Default => "",
                Windows::Tuned => " log-fetch-limit(1000) log-iw-size(10000)",
            }
        ),
    )
    .expect("syslog-ng.conf");
    let start_ns = now_ns();
    let mut child = Command::new(bin)
        .arg("-F")
        .arg("-e")
        .arg("-f")
        .arg(&conf)
        .arg("-R")
        .arg(dir.join("syslog-ng.persist"))
        .arg("-p")
        .arg(dir.join("syslog-ng.pid"))
        .arg("-c")
        .arg(dir.join("syslog-ng.ctl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("syslog-ng.log")).expect("log"))
        .spawn()
        .expect("spawn syslog-ng");
    let pid = child.id();
    let mut last = (Instant::now(), 0);
    let (mut cpu_secs, mut hwm_kb) = (0.0, 0);
    loop {
        let count = message_count(ch, name).await as u64;
        if let (Some(cpu), Some(hwm)) = (proc_cpu_seconds(pid), proc_status(pid, "VmHWM:")) {
            (cpu_secs, hwm_kb) = (cpu, hwm);
        }
        if count >= alerts {
            break;
        }
        if count > last.1 {
            last = (Instant::now(), count);
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || last.0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = ch
                .queue_delete(name.into(), QueueDeleteOptions::default())
                .await;
            return Err(format!(
                "syslog-ng: exited ({exited:?}) or no progress for 30 s at {count} of {alerts}:\n{}",
                std::fs::read_to_string(dir.join("syslog-ng.log")).unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end_ns = now_ns();
    let _ = child.kill();
    let _ = child.wait();
    let _ = ch
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch.exchange_delete(name.into(), Default::default()).await;
    Ok(Peer {
        messages: alerts,
        start_ns,
        end_ns,
        cpu_secs,
        hwm_kb,
    })
}

/// The syslog-ng binary, when it is installed.
fn syslog_ng_bin() -> Option<&'static str> {
    ["/usr/sbin/syslog-ng", "/usr/bin/syslog-ng"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Field `field` of /proc/<pid>/status, kB.
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One reading of a process's resident memory, kB: the total and its anonymous and file-backed
/// parts (`RssShmem`, the third part, is 0 for iemd).
#[derive(Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

impl Rss {
    /// The three fields from one read of /proc/<pid>/status, so that they add up.
    fn of(pid: u32) -> Rss {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |field: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Rss {
            total: kb("VmRSS:"),
            anon: kb("RssAnon:"),
            file: kb("RssFile:"),
        }
    }
}

/// utime + stime of a process, seconds.
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(ticks as f64 / hz as f64)
}

struct Throughput {
    alerts: u64,
    lines: u64,
    write_secs: f64,
    rate: f64,
    /// iemd's utime+stime over the run.
    cpu_secs: f64,
    body_bytes: usize,
    /// VmRSS every 20 ms, kB.
    rss_kb: Vec<u64>,
    /// The highest of those samples, with its anonymous and file-backed parts.
    rss_peak: Rss,
    hwm_kb: u64,
    bodies: Vec<Vec<u8>>,
}

/// Appends the whole dataset while the daemon runs and waits for the last confirm.
async fn throughput(d: &Daemon, ch: &lapin::Channel, name: &str, lines: u64) -> Throughput {
    let (text, alerts) = dataset(lines);
    let input = d.input.clone();
    let cpu0 = d.cpu_seconds();
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut f = OpenOptions::new().append(true).open(input).expect("open");
        for chunk in text.as_bytes().chunks(64 * 1024) {
            f.write_all(chunk).expect("write");
        }
        t0.elapsed().as_secs_f64()
    });
    let mut rss_kb = Vec::new();
    let mut rss_peak = Rss::default();
    let mut last = (Instant::now(), 0.0);
    loop {
        let published = d.metric("iemd_alerts_published_total");
        if published as u64 >= alerts {
            break;
        }
        if published > last.1 {
            last = (Instant::now(), published);
        }
        assert!(
            last.0.elapsed() < Duration::from_secs(60),
            "no progress for 60 s at {published} of {alerts}:\n{}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        let rss = Rss::of(d.child.id());
        rss_kb.push(rss.total);
        if rss.total > rss_peak.total {
            rss_peak = rss;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_secs = d.cpu_seconds() - cpu0;
    let write_secs = writer.join().expect("writer");
    assert_eq!(message_count(ch, name).await as u64, alerts, "queue count");
    // Real bodies, to give the ceiling the same messages.
    let mut bodies = Vec::new();
    for _ in 0..64 {
        match ch
            .basic_get(name.into(), BasicGetOptions { no_ack: true })
            .await
        {
            Ok(Some(m)) => bodies.push(m.delivery.data),
            Ok(None) => break,
            Err(e) => panic!("basic.get: {e}"),
        }
    }
    let body_bytes = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1);
    Throughput {
        alerts,
        lines,
        write_secs,
        rate: alerts as f64 / secs,
        cpu_secs,
        body_bytes,
        rss_kb,
        rss_peak,
        hwm_kb: d.status("VmHWM:"),
        bodies,
    }
}

struct Latency {
    sent: usize,
    received: usize,
    external: [f64; 3],
    histogram: [f64; 2],
}

fn percentiles(mut v: Vec<f64>) -> [f64; 3] {
    if v.is_empty() {
        return [f64::NAN; 3];
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), v[v.len() - 1]]
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// 1,000 IEM lines/s for `secs`, each carrying its write time; a consumer on the queue computes
/// delivery time - write time.
async fn latency(d: &Daemon, ch: &lapin::Channel, name: &str, secs: u64) -> Latency {
    ch.queue_purge(name.into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
    let mut consumer = ch
        .basic_consume(
            name.into(),
            "e2e-latency".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let before = buckets(&d.metrics(), "iemd_line_to_confirm_seconds");
    let input = d.input.clone();
    let n = secs * 1000;
    let writer = std::thread::spawn(move || {
        let mut f = OpenOptions::new().append(true).open(input).expect("open");
        let mut rng = Rng(7);
        let start = Instant::now();
        let mut line = String::new();
        for i in 0..n {
            let due = start + Duration::from_millis(i);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            line.clear();
            iem_line(&mut rng, &format!("t={}", now_ns()), &mut line);
            f.write_all(line.as_bytes()).expect("write");
        }
    });
    let mut lat = Vec::with_capacity(n as usize);
    while lat.len() < n as usize {
        let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(10), consumer.next()).await
        else {
            break;
        };
        let received = now_ns();
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
        let written = body["message"]
            .as_str()
            .and_then(|m| m.rsplit_once("t="))
            .and_then(|(_, t)| t.parse::<u128>().ok());
        if let Some(w) = written {
            lat.push(received.saturating_sub(w) as f64 / 1e6);
        }
    }
    writer.join().expect("writer");
    let after = buckets(&d.metrics(), "iemd_line_to_confirm_seconds");
    let received = lat.len();
    Latency {
        sent: n as usize,
        received,
        external: percentiles(lat),
        histogram: [
            bucket_quantile(&before, &after, 0.5) * 1000.0,
            bucket_quantile(&before, &after, 0.99) * 1000.0,
        ],
    }
}

fn main() {
    match std::env::var("IEMD_E2E_ROLE").as_deref() {
        Ok("plain") => return publisher_child(Role::Plain),
        Ok("client") => return publisher_child(Role::Client),
        _ => {}
    }
    let lines: u64 = std::env::var("IEMD_E2E_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let latency_secs: u64 = std::env::var("IEMD_E2E_LATENCY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Under target/, not /tmp: the spool's fsyncs must hit a real disk.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    rt.block_on(async {
        let (conn0, ch) = channel().await;
        let name = format!("iemd-e2e-{}", std::process::id());

        // Throughput, memory, idle CPU: default configuration.
        // IEMD_E2E_SYNC_MS runs the first daemon with another interval, for comparisons.
        let default_sync = std::env::var("IEMD_E2E_SYNC_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(iemd::config::spool::SpoolConfig::default().sync_interval_ms);
        let d = Daemon::start(&tmp.path().join("default"), &name, default_sync);
        let tp = throughput(&d, &ch, &name, lines).await;
        let _ = conn0.close(200, "bye".into()).await;
        // The peers, right after iemd, on the same alerts (the plain publishers) or the same
        // file (syslog-ng). A fresh channel for each phase: other suites on this machine
        // restart the broker.
        let (dir, bodies, alerts, base) = (tmp.path(), &tp.bodies, tp.alerts, name.as_str());
        let plain = retried(|ch, n| async move {
            let name = format!("{base}-plain{n}");
            publishers(Role::Plain, &ch, dir, &name, bodies, alerts, 1).await
        })
        .await[0];
        let two = Peer::together(
            &retried(|ch, n| async move {
                let name = format!("{base}-two{n}");
                publishers(Role::Plain, &ch, dir, &name, bodies, alerts, 2).await
            })
            .await,
        );
        let client = retried(|ch, n| async move {
            let name = format!("{base}-client{n}");
            publishers(Role::Client, &ch, dir, &name, bodies, alerts, 1).await
        })
        .await[0];
        let syslog_ng_dir = dir.join("syslog-ng");
        let syslog_ng = |windows: Windows, tag: &'static str| {
            let syslog_ng_dir = &syslog_ng_dir;
            async move {
                match syslog_ng_bin() {
                    Some(bin) => Some(
                        retried(|ch, n| {
                            let dir = syslog_ng_dir.clone();
                            async move {
                                let name = format!("{base}-syslog-ng-{tag}{n}");
                                syslog_ng(bin, &ch, &dir, &name, lines, windows).await
                            }
                        })
                        .await,
                    ),
                    None => None,
                }
            }
        };
        let syslog_ng_default = syslog_ng(Windows::Default, "default").await;
        let syslog_ng_tuned = syslog_ng(Windows::Tuned, "tuned").await;
        // Printed now: a broker restart by another suite may end the latency runs below.
        println!();
        println!(
            "{:<44} {:>9} {:>9} {:>7} {:>9} {:>10}",
            "same run, each its own process", "msg/s", "iemd is", "CPU s", "us/msg", "peak RSS MB"
        );
        let iemd = Peer {
            messages: tp.alerts,
            start_ns: 0,
            end_ns: (1e9 * tp.alerts as f64 / tp.rate) as u128,
            cpu_secs: tp.cpu_secs,
            hwm_kb: tp.hwm_kb,
        };
        let rows = [
            ("iemd (spool fsynced, 10 lines read per alert)", Some(iemd)),
            ("plain lapin publisher, confirms", Some(plain)),
            ("two plain publishers in parallel (broker)", Some(two)),
            ("iemd's client alone, alerts in memory", Some(client)),
            (
                "syslog-ng amqp(), flow-control, no confirms",
                syslog_ng_default,
            ),
            ("  the same, source windows 1000/10000", syslog_ng_tuned),
        ];
        for (label, peer) in rows {
            let Some(p) = peer else {
                println!("{label:<44} {:>9}", "not installed");
                continue;
            };
            println!(
                "{label:<44} {:>9.0} {:>8.2}x {:>7.2} {:>9.1} {:>10.1}",
                p.rate(),
                tp.rate / p.rate(),
                p.cpu_secs,
                1e6 * p.cpu_secs / p.messages as f64,
                p.hwm_kb as f64 / 1024.0
            );
        }
        println!(
            "targets: iemd >= 1.0x plain, >= 1.5x syslog-ng (as configured by default), \
             >= 0.8x two in parallel; \
             iemd <= 12 us CPU per alert (with its nine noise lines), peak RSS <= 20 MB"
        );
        let ceiling = plain.rate();
        let (conn, ch) = channel().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_after = Rss::of(d.child.id());
        let cpu0 = d.cpu_seconds();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle_cpu = d.cpu_seconds() - cpu0;
        let lat = latency(&d, &ch, &name, latency_secs).await;
        let rss_after_latency = d.status("VmRSS:");
        drop(d);
        delete(&ch, &name).await;

        // What a group commit on a timer costs: the same paced run with a 20 ms sync interval.
        let name1 = format!("{name}-sync20");
        let d = Daemon::start(&tmp.path().join("sync20"), &name1, TIMER_SYNC_MS);
        let lat1 = latency(&d, &ch, &name1, latency_secs / 2).await;
        drop(d);
        delete(&ch, &name1).await;
        let _ = conn.close(200, "bye".into()).await;

        let mut rss = tp.rss_kb.clone();
        rss.sort_unstable();
        let steady = rss.get(rss.len() / 2).copied().unwrap_or(0);
        let max = rss.last().copied().unwrap_or(0);
        let mb = |kb: u64| kb as f64 / 1024.0;

        println!();
        println!("{:<58} {:>14} {:>10}", "end to end", "value", "target");
        println!(
            "{:<58} {:>14} {:>10}",
            format!(
                "lines written ({} IEM), avg alert body {} B",
                tp.alerts, tp.body_bytes
            ),
            tp.lines,
            ""
        );
        println!(
            "{:<58} {:>14.0} {:>10}",
            "writer: lines/s appended to the file",
            tp.lines as f64 / tp.write_secs,
            ""
        );
        println!(
            "{:<58} {:>14.0} {:>10}",
            "iemd: alerts/s, first line written -> last confirm", tp.rate, ""
        );
        println!(
            "{:<58} {:>14.1} {:>10}",
            "iemd: CPU seconds (utime+stime) over the run", tp.cpu_secs, ""
        );
        println!(
            "{:<58} {:>14.0} {:>10}",
            "ceiling: plain lapin publisher with confirms, msg/s", ceiling, ""
        );
        println!(
            "{:<58} {:>13.0}% {:>10}",
            "ratio iemd / ceiling",
            100.0 * tp.rate / ceiling,
            ">= 80%"
        );
        for (label, l, sync) in [
            ("default", &lat, default_sync),
            ("20 ms timer", &lat1, TIMER_SYNC_MS),
        ] {
            println!(
                "{:<58} {:>14} {:>10}",
                format!("latency @1000 IEM/s, sync_interval_ms={sync} ({label}): received"),
                format!("{}/{}", l.received, l.sent),
                ""
            );
            println!(
                "{:<58} {:>14} {:>10}",
                "  line written -> consumer delivery, p50/p99/max ms",
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    l.external[0], l.external[1], l.external[2]
                ),
                if label == "default" { "p99 <= 50" } else { "" }
            );
            println!(
                "{:<58} {:>14} {:>10}",
                "  iemd histogram spooled -> confirm, p50/p99 bucket <= ms",
                format!("{}/{}", l.histogram[0], l.histogram[1]),
                ""
            );
        }
        println!(
            "{:<58} {:>14} {:>10}",
            "VmRSS during throughput, median/max MB",
            format!("{:.1}/{:.1}", mb(steady), mb(max)),
            "<= 20"
        );
        println!(
            "{:<58} {:>14.1} {:>10}",
            "VmHWM (peak RSS) after throughput, MB",
            mb(tp.hwm_kb),
            "<= 20"
        );
        println!(
            "{:<58} {:>14} {:>10}",
            "  highest sample: VmRSS = RssAnon + RssFile, MB",
            format!(
                "{:.1}={:.1}+{:.1}",
                mb(tp.rss_peak.total),
                mb(tp.rss_peak.anon),
                mb(tp.rss_peak.file)
            ),
            ""
        );
        println!(
            "{:<58} {:>14} {:>10}",
            "VmRSS idle after throughput / after latency, MB",
            format!("{:.1}/{:.1}", mb(rss_after.total), mb(rss_after_latency)),
            "<= 20"
        );
        println!(
            "{:<58} {:>14} {:>10}",
            "  idle after throughput: RssAnon/RssFile, MB",
            format!("{:.1}/{:.1}", mb(rss_after.anon), mb(rss_after.file)),
            ""
        );
        println!(
            "{:<58} {:>14.3} {:>10}",
            "idle CPU: utime+stime over 10 s without input, s", idle_cpu, "~0"
        );
    });
}
