//! The whole agent, end to end: the release `iemd` binary tails a syslog file and publishes to
//! the local RabbitMQ with confirms. Reports, in one table:
//!
//! - throughput: 1,000,000 syslog lines (10% IEM) appended as fast as possible while iemd runs,
//!   alerts/s from the first byte written to the last alert confirmed (`iemd_alerts_published_total`
//!   on /metrics), beside a plain lapin publisher with confirms (the ceiling) sending as many
//!   alert bodies of the same size to the same kind of exchange and queue, with the same window;
//! - latency at 1,000 IEM/s (paced writer, 20 s): line written -> delivered to a consumer of the
//!   queue (measured outside the daemon: it includes the consumer hop), and the daemon's own
//!   `iemd_line_to_confirm_seconds` histogram (spooled -> confirmed), with the default spool
//!   `sync_interval_ms` (0: sync as soon as records are appended) and again with a 20 ms timer
//!   (the old default) to show what batching on a timer costs;
//! - memory: VmRSS sampled during the throughput run, VmHWM, VmRSS afterwards;
//! - idle CPU: utime+stime over 10 s without input.
//!
//! Run (RabbitMQ on 127.0.0.1:5672, guest/guest): `cargo bench --bench e2e`.
//! `IEMD_E2E_LINES` overrides the line count (default 1,000,000), `IEMD_E2E_LATENCY_SECS` the
//! paced run's length (default 20), `IEMD_E2E_SYNC_MS` the first daemon's `sync_interval_ms`
//! (default: the configuration's default).

#[path = "common/ceiling.rs"]
mod ceiling;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
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
        let child = Command::new(env!("CARGO_BIN_EXE_iemd"))
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
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// utime + stime, seconds.
    fn cpu_seconds(&self) -> f64 {
        let text =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
        let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        ticks as f64 / hz as f64
    }
}

/// SIGTERM and wait, also when the bench panics: no daemon outlives its run.
impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
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

/// A durable topic exchange and a durable classic queue bound with `#`, as iemd declares them.
async fn declare(ch: &lapin::Channel, name: &str) {
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        name.into(),
        name.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
}

async fn delete(ch: &lapin::Channel, name: &str) {
    let _ = ch
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch.exchange_delete(name.into(), Default::default()).await;
}

/// The ceiling: a plain lapin publisher with confirms sending `n` of `bodies` (cycled), persistent
/// and mandatory, `WINDOW` in flight, to a fresh exchange+queue like iemd's. Messages/s.
async fn plain_publisher(name: &str, bodies: &[Vec<u8>], n: u64) -> f64 {
    let (conn, ch) = channel().await;
    declare(&ch, name).await;
    let rate = ceiling::publish_confirmed(&ch, name, bodies, n as usize, WINDOW).await;
    delete(&ch, name).await;
    let _ = conn.close(200, "bye".into()).await;
    rate
}

struct Throughput {
    alerts: u64,
    lines: u64,
    write_secs: f64,
    rate: f64,
    /// iemd's utime+stime over the run.
    cpu_secs: f64,
    body_bytes: usize,
    rss_kb: Vec<u64>,
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
        rss_kb.push(d.status("VmRSS:"));
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
        let (conn, ch) = channel().await;
        let name = format!("iemd-e2e-{}", std::process::id());

        // Throughput, memory, idle CPU: default configuration.
        // IEMD_E2E_SYNC_MS runs the first daemon with another interval, for comparisons.
        let default_sync = std::env::var("IEMD_E2E_SYNC_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(iemd::config::spool::SpoolConfig::default().sync_interval_ms);
        let d = Daemon::start(&tmp.path().join("default"), &name, default_sync);
        let tp = throughput(&d, &ch, &name, lines).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_after = d.status("VmRSS:");
        let (anon, file) = (d.status("RssAnon:"), d.status("RssFile:"));
        let cpu0 = d.cpu_seconds();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle_cpu = d.cpu_seconds() - cpu0;
        let lat = latency(&d, &ch, &name, latency_secs).await;
        let rss_after_latency = d.status("VmRSS:");
        drop(d);
        delete(&ch, &name).await;

        let ceiling = plain_publisher(&format!("{name}-ceiling"), &tp.bodies, tp.alerts).await;

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
            "VmHWM after throughput, MB",
            mb(tp.hwm_kb),
            ""
        );
        println!(
            "{:<58} {:>14} {:>10}",
            "VmRSS idle after throughput / after latency, MB",
            format!("{:.1}/{:.1}", mb(rss_after), mb(rss_after_latency)),
            "<= 20"
        );
        println!(
            "{:<58} {:>14} {:>10}",
            "  of which RssAnon/RssFile (binary pages), MB",
            format!("{:.1}/{:.1}", mb(anon), mb(file)),
            ""
        );
        println!(
            "{:<58} {:>14.3} {:>10}",
            "idle CPU: utime+stime over 10 s without input, s", idle_cpu, "~0"
        );
    });
}
