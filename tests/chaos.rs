//! The chaos test: 100,000 IEMs in every producer shape, among 900,000 ordinary syslog lines,
//! written to a file the real `iemd` (debug build) tails, while the agent is SIGKILLed and
//! restarted, the broker is stopped and started, the file is rotated (rename and copytruncate) and
//! the spool fills to its cap. Everything published is consumed; the test fails on any lost IEM
//! and prints one line of figures (written, received, duplicates split into republished and spooled
//! twice, largest delay, seed).
//!
//! The fault lifecycle (issue 17) runs through it: every sixth IEM is cortx-ha's `WS0080010001`
//! (server lost) or `IS0080010002` (server back) for one of many hosts (the catalog's resource
//! `field:host`), after a script the seed draws ([`ha_script`]): faults opened, repeated, resolved
//! and resolved again, some left open. From what the broker received the test asserts that no
//! fault is lost, that every resolution of an open fault is published as `fault_resolved` with
//! `resolves` equal to that fault's alert id (so none is resolved twice, and none by another's
//! resolution), that a resolution with nothing open says `resolves: null`, and that the ledger
//! (`iemctl faults`) lists at the end exactly the faults the script left open.
//!
//! Reproduce a run with `IEMD_CHAOS_SEED=<seed> cargo test --test tests chaos:: -- --nocapture`.
//!
//! What is not modelled: logrotate's `copytruncate` copies and then truncates, and lines a logger
//! writes between the two are lost by design (they are in neither file). Here the writer thread
//! itself copies and truncates between two of its writes, so no line falls into that window; the
//! agent is tested on everything that can be recovered.

// Each test has its own runtime; holding the std broker lock across awaits only blocks it.
#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use serde_json::Value;

use crate::util::amqp::unique;
use crate::util::daemon::{Daemon, config, log_file, spool_seq};
use crate::util::{self, broker_lock};

/// IEM lines written; each is followed or preceded by [`NOISE_PER_IEM`] ordinary lines.
const IEMS: usize = 100_000;
const NOISE_PER_IEM: usize = 9;
const LINES: usize = IEMS * (1 + NOISE_PER_IEM);
/// How long the writer spreads the lines over. A debug iemd reads about 25k lines/s on this
/// 2-core machine with everything else running (see the report), so 1M lines in 60 s keeps it
/// busy without leaving it hours behind.
const WRITE_WINDOW: Duration = Duration::from_secs(60);
const KILLS: usize = 5;
const BROKER_OUTAGES: usize = 2;
const BROKER_OUTAGE: Duration = Duration::from_secs(5);
const RENAME_ROTATIONS: usize = 3;
/// Small enough that a broker outage fills it (about 1 KB per alert, ~1,700 alerts/s).
const SPOOL_MAX_BYTES: u64 = 2 << 20;
/// After the writer is done, how long everything may take to arrive.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(75);
/// The marker in each IEM's text: `chaos#<index>`.
const TAG: &str = "chaos#";
/// Every `HA_EVERY`-th IEM (from the fourth) is a server lost or back ([`ha_script`]).
const HA_EVERY: usize = 6;
/// At most this many servers lost at once (the ledger is recorded with every checkpoint).
const MAX_OPEN: usize = 32;

/// xorshift64*: tiny, seeded, good enough to place events.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// `n` points in `lo..hi`, sorted, at least `gap` apart (re-drawn until they are).
fn spread(rng: &mut Rng, n: usize, lo: u64, hi: u64, gap: u64) -> Vec<u64> {
    loop {
        let mut v: Vec<u64> = (0..n).map(|_| rng.range(lo, hi)).collect();
        v.sort_unstable();
        if v.windows(2).all(|w| w[1] - w[0] >= gap) {
            return v;
        }
    }
}

/// One cortx-ha IEM of the lifecycle script.
#[derive(Clone, Copy, Debug)]
enum Ha {
    /// `WS0080010001`, server `host` lost: it opens a fault, or (`opens: false`) repeats the
    /// open one.
    Lost { host: u32, opens: bool },
    /// `IS0080010002`, server `host` back: it resolves the fault opened by IEM `of`, or, with
    /// none open, nothing.
    Back { host: u32, of: Option<u32> },
}

/// What the writer's cortx-ha IEMs are, and the faults they leave open.
struct HaScript {
    /// By IEM index / [`HA_EVERY`].
    lines: Vec<Ha>,
    /// Host -> the IEM that opened its fault, for those still open at the end.
    open: BTreeMap<u32, u32>,
}

impl HaScript {
    /// The script entry of IEM `i`, if it is a cortx-ha one.
    fn get(&self, i: usize) -> Option<Ha> {
        (i % HA_EVERY == 3).then(|| self.lines[i / HA_EVERY])
    }
}

/// The server name of host `n` (the fault's resource id).
fn host_name(n: u32) -> String {
    format!("ssc-vm-{n}")
}

/// Draws the lifecycle script: 45% of the lines lose a new server (while fewer than
/// [`MAX_OPEN`] are lost; else they bring one back), 10% repeat an open one, 40% bring an open
/// one back, 5% bring back one already back (nothing to resolve). One server in eight is slow to
/// come back (a tenth of the time it is picked), so that faults stay open across kills and
/// outages (the median fault lives ~0.2 s, the longest ~15 s) and some to the end. Per run:
/// ~4,500 faults, ~4,500 resolutions, ~6,700 repeats, ~800 stray resolutions, ~32 left open.
fn ha_script(seed: u64) -> HaScript {
    let mut rng = Rng::new(seed ^ 0x00a1_11fe);
    let mut open: Vec<(u32, u32)> = Vec::new();
    let mut back: Vec<u32> = Vec::new();
    let mut next_host = 1u32;
    let lines = (3..IEMS)
        .step_by(HA_EVERY)
        .map(|i| {
            let tag = i as u32;
            let roll = rng.range(0, 100);
            if open.is_empty() || (open.len() < MAX_OPEN && roll < 45) {
                let host = next_host;
                next_host += 1;
                open.push((host, tag));
                return Ha::Lost { host, opens: true };
            }
            let k = rng.range(0, open.len() as u64) as usize;
            let slow = open[k].0.is_multiple_of(8) && rng.range(0, 100) >= 10;
            if (45..55).contains(&roll) || (roll < 95 && slow) {
                Ha::Lost {
                    host: open[k].0,
                    opens: false,
                }
            } else if roll < 95 || back.is_empty() {
                let (host, of) = open.swap_remove(k);
                back.push(host);
                Ha::Back { host, of: Some(of) }
            } else {
                let host = back[rng.range(0, back.len() as u64) as usize];
                Ha::Back { host, of: None }
            }
        })
        .collect();
    HaScript {
        lines,
        open: open.into_iter().collect(),
    }
}

/// Milliseconds since the Unix epoch (shared clock of the writer and the consumer).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Syslog header stamps, re-formatted only when the second changes.
struct Stamps {
    second: i64,
    rfc3164: String,
    rfc3339_secs: String,
}

impl Stamps {
    fn new() -> Stamps {
        Stamps {
            second: -1,
            rfc3164: String::new(),
            rfc3339_secs: String::new(),
        }
    }
    fn refresh(&mut self) -> u32 {
        let now = chrono::Utc::now();
        if now.timestamp() != self.second {
            self.second = now.timestamp();
            self.rfc3164 = now.format("%b %e %H:%M:%S").to_string();
            self.rfc3339_secs = now.format("%Y-%m-%dT%H:%M:%S").to_string();
        }
        now.timestamp_subsec_micros()
    }
}

/// A syslog line in one of the three header shapes the agent reads.
fn header_line(st: &mut Stamps, shape: u64, prog: &str, pid: u64, pri: u8, msg: &str) -> String {
    let micros = st.refresh();
    match shape % 3 {
        0 => format!("{} node1 {prog}[{pid}]: {msg}", st.rfc3164),
        1 => format!(
            "{}.{micros:06}+00:00 node1 {prog}[{pid}]: {msg}",
            st.rfc3339_secs
        ),
        _ => format!(
            "<{pri}>1 {}.{micros:06}Z node1.cluster.local {prog} {pid} - [meta sequenceId=\"{pid}\"] {msg}",
            st.rfc3339_secs
        ),
    }
}

/// IEM number `i`, in the producer shape and header shape `i` selects (all 18 pairs occur); the
/// cortx-ha ones as `ha` says.
fn iem_line(st: &mut Stamps, rng: &mut Rng, i: usize, ha: Option<Ha>) -> String {
    let pid = rng.range(1000, 60000);
    let (prog, pri, msg) = match i % 6 {
        // s3server: no space after the marker.
        0 => (
            "s3server",
            11,
            format!(
                "IEC:ES0030010001:S3 server cannot connect to auth server {TAG}{i}. For more information, refer Troubleshooting Guide."
            ),
        ),
        // Motr: spaces after the colons, hex letters in the code.
        1 => (
            "m0d",
            11,
            format!(
                "IEC: ES002002000a: RPC_ITEM_FAILED {TAG}{i} item=0x7f3a2c01a2b0 opcode=41 rc=-110"
            ),
        ),
        // Motr, newer releases: a running count in hex before the description.
        2 => (
            "m0d",
            11,
            format!(
                "IEC: ES0020020006: Event count: {:x}, Observed data accessibility issue {TAG}{i}.",
                rng.range(1, 300)
            ),
        ),
        // cortx-ha through logger(1): a stray quote at the end.
        3 => (
            "cortx-ha",
            155,
            match ha.expect("every cortx-ha IEM is in the script") {
                Ha::Lost { host, .. } => {
                    let h = host_name(host);
                    format!(
                        "IEC:WS0080010001:The cluster has lost {h} server. System is running in degraded mode. Extra Info: host={h}; status=lost; {TAG}{i};\""
                    )
                }
                Ha::Back { host, .. } => {
                    let h = host_name(host);
                    format!(
                        "IEC:IS0080010002:Server {h} has joined back the cluster. System is restored. Extra Info: host={h}; status=online; {TAG}{i};\""
                    )
                }
            },
        ),
        // A trailing JSON object after the description.
        4 => (
            "s3server",
            10,
            format!(
                "IEC:ES0030050001:Fatal handler triggered {TAG}{i}: {{ \"time\": \"2026-11-21T22:50:01Z\", \"node\": \"node1\", \"pid\": {pid}, \"file\": \"s3.cc\", \"line\": 9, \"signal_number\": 11 }}"
            ),
        ),
        // CSM.
        _ => (
            "csm_agent",
            12,
            format!("IEC:WS0060010001:SSL certificate is expiring {TAG}{i}"),
        ),
    };
    header_line(st, (i / 6) as u64, prog, pid, pri, &msg)
}

/// An ordinary syslog line (no `IEC:` marker; some mention "IEC" the way real text does).
fn noise_line(st: &mut Stamps, rng: &mut Rng) -> String {
    let a = rng.next();
    let pid = 1000 + a % 50000;
    let n = (a >> 20) % 100_000;
    let (prog, msg) = match (a >> 40) % 12 {
        0 => (
            "kernel",
            format!(
                "[{n}.{:06}] sd 2:0:0:1: [sdc] tag#{} uas_eh_abort_handler 0 uas-tag 1 inflight: CMD",
                pid % 999_999,
                n % 32
            ),
        ),
        1 => ("systemd", format!("Started Session {n} of user root.")),
        2 => (
            "sshd",
            format!(
                "Accepted publickey for root from 10.230.{}.{} port {pid} ssh2: RSA SHA256:q8fjR2x{n}",
                n % 255,
                pid % 255
            ),
        ),
        3 => (
            "CROND",
            format!("(root) CMD (/usr/lib64/sa/sa1 1 1) run {n}"),
        ),
        4 => (
            "rsyslogd",
            format!(
                "imjournal: {n} messages lost due to rate-limiting (20000 allowed within 600 seconds)"
            ),
        ),
        5 => (
            "haproxy",
            format!(
                "10.230.246.{}:{pid} [21/Nov/2026:22:50:01.{:03}] s3-main s3-backend/s3-instance-{} 0/0/0/12/12 200 {n} - - ---- 12/12/0/0/0 0/0",
                n % 255,
                n % 1000,
                n % 8
            ),
        ),
        6 => (
            "s3server",
            format!(
                "S3 PUT object request id={n:x} bucket=bkt-{pid} key=obj-{n} completed in {} ms",
                n % 900
            ),
        ),
        7 => (
            "m0d",
            format!("motr[{pid}]: fom={n:x} state=FOPH_QUEUE_REPLY rc=0"),
        ),
        8 => (
            "scada-gw",
            format!("IEC 60870-5-104 link {n} up; IEC-61850 goose seen (not an event)"),
        ),
        9 => (
            "NetworkManager",
            format!(
                "<info>  [{n}.{pid}] device (eth{}): state change: activated -> activated",
                n % 4
            ),
        ),
        10 => (
            "chronyd",
            format!(
                "Selected source 10.0.{}.{} (pool.ntp.org) offset {}us",
                n % 255,
                pid % 255,
                n % 500
            ),
        ),
        _ => (
            "consul",
            format!(
                "2026-11-21T22:50:01.{:03}Z [INFO]  agent: Synced check: check=service:s3server-{}",
                n % 1000,
                n % 8
            ),
        ),
    };
    header_line(st, a >> 60, prog, pid, 14, &msg)
}

/// What the writer thread does besides writing, at a given line index.
#[derive(Clone, Copy, Debug)]
enum FileEvent {
    /// Rename the file away, keep writing `late` lines to the old handle (as rsyslog does until
    /// logrotate's postrotate HUP reopens it), then create a new file.
    Rename { late: usize },
    /// Copy the file, then truncate it, with no write in between.
    CopyTruncate,
}

/// Write times of every IEM (ms since epoch), filled by the writer.
type Times = Arc<Vec<AtomicU64>>;

/// Writes all lines to `path` at a steady pace, performing the file events at their indices.
fn write_all(
    path: &Path,
    seed: u64,
    events: Vec<(usize, FileEvent)>,
    ha: &HaScript,
    written: Times,
) {
    let mut rng = Rng::new(seed ^ 0x005e_ed0f_11e5);
    let mut st = Stamps::new();
    let open = |p: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    };
    let mut file = open(path);
    let mut events = events.into_iter().peekable();
    let mut late_until: Option<usize> = None;
    let mut rotated = 0;
    let start = Instant::now();
    let mut iem = 0usize;
    let mut iem_slot = rng.range(0, 10) as usize;
    for j in 0..LINES {
        if j % 1000 == 0 {
            let due = WRITE_WINDOW.mul_f64(j as f64 / LINES as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if late_until == Some(j) {
            late_until = None;
            file = open(path);
        }
        if let Some((_, ev)) = events.next_if(|(at, _)| *at == j) {
            match ev {
                FileEvent::Rename { late } => {
                    rotated += 1;
                    fs::rename(path, path.with_extension(format!("{rotated}"))).unwrap();
                    if late == 0 {
                        file = open(path);
                    } else {
                        late_until = Some(j + late);
                    }
                }
                FileEvent::CopyTruncate => {
                    fs::copy(path, path.with_extension("ct")).unwrap();
                    file.set_len(0).unwrap();
                }
            }
            eprintln!(
                "chaos: t={:.1}s line {j}: {ev:?}",
                start.elapsed().as_secs_f64()
            );
        }
        let line = if j % 10 == iem_slot {
            let l = iem_line(&mut st, &mut rng, iem, ha.get(iem));
            written[iem].store(now_ms(), Ordering::Relaxed);
            iem += 1;
            l
        } else {
            noise_line(&mut st, &mut rng)
        };
        if j % 10 == 9 {
            iem_slot = rng.range(0, 10) as usize;
        }
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        file.write_all(&bytes).unwrap();
    }
    assert_eq!(iem, IEMS);
    eprintln!(
        "chaos: writer done, {LINES} lines ({IEMS} IEMs) in {:.1}s",
        start.elapsed().as_secs_f64()
    );
}

fn rabbitmqctl(arg: &str) {
    let out = Command::new("rabbitmqctl").arg(arg).output().unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the broker's app again when dropped (also on panic), so that no other test finds the
/// broker stopped. `stopping` stops the controller from taking it down again.
struct BrokerBack {
    stopping: Arc<AtomicBool>,
}

impl Drop for BrokerBack {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
        let _ = Command::new("rabbitmqctl").arg("await_startup").output();
    }
}

/// What happened to the agent and the broker, at times in ms after the writer started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Chaos {
    Kill9,
    BrokerStop,
    BrokerStart,
}

/// Runs the timed events against the daemon and the broker; returns the daemon.
fn control(
    mut daemon: Daemon,
    plan: Vec<(u64, Chaos)>,
    start: Instant,
    stopping: Arc<AtomicBool>,
) -> Daemon {
    for (at, what) in plan {
        let due = Duration::from_millis(at);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = start.elapsed().as_secs_f64();
        match what {
            Chaos::Kill9 => {
                daemon.kill9();
                daemon.restart();
            }
            Chaos::BrokerStop => {
                if stopping.load(Ordering::SeqCst) {
                    continue;
                }
                rabbitmqctl("stop_app");
            }
            Chaos::BrokerStart => {
                rabbitmqctl("start_app");
                rabbitmqctl("await_startup");
            }
        }
        eprintln!(
            "chaos: t={t:.1}s {what:?} (done at {:.1}s)",
            start.elapsed().as_secs_f64()
        );
    }
    daemon
}

/// Everything the consumer saw.
#[derive(Default)]
struct Seen {
    deliveries: u64,
    /// Deliveries the broker marked as redelivered (our consumer's unacked ones after a broker
    /// restart): not the agent's duplicates.
    redelivered: u64,
    /// Deliveries of an id already seen, first delivered by the broker: the agent's duplicates.
    duplicates: u64,
    /// Of those, deliveries of a spool record already delivered (same spool seq, `correlation_id`): publishes
    /// repeated because their confirm was lost with the connection (a kill, a broker stop).
    republished: u64,
    /// Of those, deliveries of a second spool record of the same id: a line spooled twice.
    respooled: u64,
    /// id -> the tag of its message.
    ids: HashMap<String, u32>,
    /// id -> the spool records it was delivered from.
    seqs: HashMap<String, Vec<Option<u64>>>,
    /// Ids whose tag differed between deliveries, and deliveries without a tag.
    inconsistent: Vec<String>,
    /// Distinct tags seen.
    tags: u64,
    /// Tag -> what a cortx-ha IEM was published as (the same at every delivery, or
    /// `inconsistent`).
    ha: HashMap<u32, Published>,
}

/// What a cortx-ha IEM was published as.
#[derive(Debug, PartialEq)]
struct Published {
    id: String,
    alert_type: Option<String>,
    /// Absent: `None`; `null`: `Some(None)`.
    resolves: Option<Option<String>>,
    resource: Option<String>,
}

impl Published {
    fn of(id: &str, body: &Value) -> Published {
        Published {
            id: id.to_owned(),
            alert_type: body["alert_type"].as_str().map(str::to_owned),
            resolves: body.get("resolves").map(|r| r.as_str().map(str::to_owned)),
            resource: body["resource"]["id"].as_str().map(str::to_owned),
        }
    }
}

/// Consumes `queue` (manual acks, reconnecting across broker restarts) until `stop` is set and
/// the queue has been idle for a second. First receive times go to `received`.
async fn consume(queue: String, seen: Arc<Mutex<Seen>>, received: Times, stop: Arc<AtomicBool>) {
    // Every broker call has a time limit: a broker that is starting accepts TCP connections
    // before it answers the AMQP handshake.
    const CALL: Duration = Duration::from_secs(5);
    'connect: loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let conn = match tokio::time::timeout(
            CALL,
            lapin::Connection::connect(&util::broker_url(), Default::default()),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(Ok(ch)) = tokio::time::timeout(CALL, conn.create_channel()).await else {
            continue;
        };
        let _ = tokio::time::timeout(CALL, ch.basic_qos(2000, BasicQosOptions::default())).await;
        let Ok(Ok(mut consumer)) = tokio::time::timeout(
            CALL,
            ch.basic_consume(
                queue.as_str().into(),
                "chaos".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        else {
            // The queue is declared by iemd when it first connects.
            let _ = tokio::time::timeout(CALL, conn.close(200, "retry".into())).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut idle_since = Instant::now();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
            let d = match next {
                Err(_) => {
                    if stop.load(Ordering::SeqCst) && idle_since.elapsed() > Duration::from_secs(1)
                    {
                        let _ = tokio::time::timeout(CALL, conn.close(200, "done".into())).await;
                        return;
                    }
                    // A connection that died without ending the stream: start again (unacked
                    // deliveries come back marked redelivered).
                    if !conn.status().connected() || idle_since.elapsed() > Duration::from_secs(10)
                    {
                        continue 'connect;
                    }
                    continue;
                }
                Ok(Some(Ok(d))) => d,
                Ok(_) => continue 'connect,
            };
            idle_since = Instant::now();
            let at = now_ms();
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let seq = spool_seq(&d.properties);
            let body = serde_json::from_slice::<Value>(&d.data).unwrap_or_default();
            let tag = body["message"].as_str().and_then(tag_of);
            let ha = tag
                .filter(|t| *t as usize % HA_EVERY == 3)
                .map(|_| Published::of(&id, &body));
            {
                let mut s = seen.lock().unwrap();
                s.deliveries += 1;
                s.redelivered += u64::from(d.redelivered);
                match (tag, s.ids.get(&id).copied()) {
                    (None, _) => s
                        .inconsistent
                        .push(format!("no tag: {}", String::from_utf8_lossy(&d.data))),
                    (Some(t), Some(prev)) => {
                        if prev != t {
                            s.inconsistent.push(format!("id {id}: tags {prev} and {t}"));
                        } else if let Some(ha) = ha
                            && s.ha.get(&t) != Some(&ha)
                        {
                            let first = format!("{:?}", s.ha.get(&t));
                            s.inconsistent
                                .push(format!("id {id}: published as {first}, then as {ha:?}"));
                        } else if !d.redelivered {
                            s.duplicates += 1;
                            let seqs = s.seqs.entry(id).or_default();
                            let again = seqs.contains(&seq);
                            seqs.push(seq);
                            if again {
                                s.republished += 1;
                            } else {
                                s.respooled += 1;
                            }
                        }
                    }
                    (Some(t), None) => {
                        if let Some(ha) = ha {
                            s.ha.insert(t, ha);
                        }
                        s.seqs.insert(id.clone(), vec![seq]);
                        s.ids.insert(id, t);
                        if (t as usize) < IEMS {
                            if received[t as usize].load(Ordering::Relaxed) == 0 {
                                received[t as usize].store(at, Ordering::Relaxed);
                                s.tags += 1;
                            }
                        } else {
                            s.inconsistent.push(format!("tag {t} out of range"));
                        }
                    }
                }
            }
            // An ack lost with the connection only makes the broker redeliver.
            let _ = tokio::time::timeout(CALL, d.acker.ack(BasicAckOptions::default())).await;
        }
    }
}

/// The lifecycle's figures, from the script and what the broker received.
#[derive(Default)]
struct LifecycleFigures {
    /// Faults opened by the script, and of those, received as `fault`.
    faults: u64,
    faults_published: u64,
    /// Repeats of an open fault.
    repeats: u64,
    /// Resolutions of an open fault, and of those, received with `resolves` equal to its id.
    resolutions: u64,
    resolved: u64,
    /// Resolutions with no fault open (`resolves: null`).
    stray: u64,
    /// Faults the script left open, and faults listed by the ledger at the end.
    open: usize,
    ledger: usize,
    /// Everything that did not go as the script says.
    problems: Vec<String>,
}

/// Checks every cortx-ha IEM received against the script, and the ledger (`iemctl faults
/// --json`) against the faults the script left open. IEMs not received are reported as lost.
fn check_lifecycle(script: &HaScript, seen: &Seen, ledger: &[Value]) -> LifecycleFigures {
    let mut f = LifecycleFigures {
        open: script.open.len(),
        ledger: ledger.len(),
        ..LifecycleFigures::default()
    };
    let id_of = |tag: u32| seen.ha.get(&tag).map(|p| p.id.clone());
    // Fault id -> the resolutions received with it.
    let mut resolutions: HashMap<&str, Vec<u32>> = HashMap::new();
    for (k, &ha) in script.lines.iter().enumerate() {
        let tag = (k * HA_EVERY + 3) as u32;
        match ha {
            Ha::Lost { opens: true, .. } => f.faults += 1,
            Ha::Lost { opens: false, .. } => f.repeats += 1,
            Ha::Back { of: Some(_), .. } => f.resolutions += 1,
            Ha::Back { of: None, .. } => f.stray += 1,
        }
        let Some(p) = seen.ha.get(&tag) else {
            continue;
        };
        let (host, alert_type, resolves) = match ha {
            Ha::Lost { host, .. } => (host, "fault", None),
            Ha::Back { host, of: Some(j) } => match id_of(j) {
                Some(id) => (host, "fault_resolved", Some(Some(id))),
                None => {
                    f.problems.push(format!(
                        "IEM {tag} resolves IEM {j}, which was not received"
                    ));
                    continue;
                }
            },
            Ha::Back { host, of: None } => (host, "fault_resolved", Some(None)),
        };
        if let Some(Some(fault)) = &p.resolves {
            resolutions.entry(fault).or_default().push(tag);
        }
        let want = Published {
            id: p.id.clone(),
            alert_type: Some(alert_type.into()),
            resolves,
            resource: Some(host_name(host)),
        };
        if *p != want {
            f.problems.push(format!(
                "IEM {tag} ({ha:?}): published as {p:?}, not {want:?}"
            ));
            continue;
        }
        match ha {
            Ha::Lost { opens: true, .. } => f.faults_published += 1,
            Ha::Back { of: Some(_), .. } => f.resolved += 1,
            _ => {}
        }
    }
    for (fault, tags) in resolutions {
        if tags.len() > 1 {
            f.problems
                .push(format!("fault {fault} resolved by IEMs {tags:?}"));
        }
    }
    let listed: BTreeMap<String, String> = ledger
        .iter()
        .map(|r| {
            (
                r["resource"]["id"].as_str().unwrap_or_default().to_owned(),
                r["fault_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let open: BTreeMap<String, String> = script
        .open
        .iter()
        .map(|(&host, &tag)| (host_name(host), id_of(tag).unwrap_or_default()))
        .collect();
    if listed != open || ledger.len() != open.len() {
        f.problems.push(format!(
            "the ledger lists {listed:?}, the script left open {open:?}"
        ));
    }
    f
}

/// The `<n>` of `chaos#<n>` in an alert message.
fn tag_of(message: &str) -> Option<u32> {
    let at = message.find(TAG)? + TAG.len();
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_broker_outages_rotations_and_a_full_spool_lose_nothing() {
    if !util::broker_available("chaos_kills_broker_outages_rotations_and_a_full_spool_lose_nothing")
    {
        return;
    }
    let _broker = broker_lock::exclusive();
    let seed = std::env::var("IEMD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()) << 32);
    eprintln!("chaos: seed={seed} (IEMD_CHAOS_SEED={seed} repeats this run's plan)");
    let mut rng = Rng::new(seed);

    let dir = tempfile::tempdir().unwrap();
    let name = unique("chaos");
    let messages = log_file(dir.path(), "messages");
    let text = config(dir.path(), &name, &[&messages], "").replace(
        "[spool]\n",
        &format!("[spool]\nmax_bytes = {SPOOL_MAX_BYTES}\nsegment_bytes = 262144\n"),
    );
    let daemon = Daemon::start(dir.path(), &text);
    daemon.wait_log("iemd running", Duration::from_secs(30));
    let log_path = daemon.log.clone();

    // The plan, all from the seed.
    let window = WRITE_WINDOW.as_millis() as u64;
    let outages = spread(
        &mut rng,
        BROKER_OUTAGES,
        window / 10,
        window * 7 / 10,
        BROKER_OUTAGE.as_millis() as u64 + 8000,
    );
    let mut plan: Vec<(u64, Chaos)> = outages
        .iter()
        .flat_map(|&t| {
            [
                (t, Chaos::BrokerStop),
                (t + BROKER_OUTAGE.as_millis() as u64, Chaos::BrokerStart),
            ]
        })
        .collect();
    plan.extend(
        spread(&mut rng, KILLS, window / 20, window * 19 / 20, 3000)
            .into_iter()
            .map(|t| (t, Chaos::Kill9)),
    );
    plan.sort();
    let rotations = spread(
        &mut rng,
        RENAME_ROTATIONS + 1,
        LINES as u64 / 20,
        LINES as u64 * 19 / 20,
        LINES as u64 / 10,
    );
    let truncate_at = rng.range(0, rotations.len() as u64) as usize;
    let file_events: Vec<(usize, FileEvent)> = rotations
        .iter()
        .enumerate()
        .map(|(k, &j)| {
            let ev = if k == truncate_at {
                FileEvent::CopyTruncate
            } else {
                FileEvent::Rename {
                    late: rng.range(0, 300) as usize,
                }
            };
            (j as usize, ev)
        })
        .collect();
    eprintln!("chaos: plan {plan:?}, file events {file_events:?}");

    let ha = Arc::new(ha_script(seed));
    let written: Times = Arc::new((0..IEMS).map(|_| AtomicU64::new(0)).collect());
    let received: Times = Arc::new((0..IEMS).map(|_| AtomicU64::new(0)).collect());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(
        name.clone(),
        seen.clone(),
        received.clone(),
        stop_consumer.clone(),
    ));

    let stopping = Arc::new(AtomicBool::new(false));
    let broker_back = BrokerBack {
        stopping: stopping.clone(),
    };
    let start = Instant::now();
    let writer = {
        let (path, written, ha) = (messages.clone(), written.clone(), ha.clone());
        std::thread::spawn(move || write_all(&path, seed, file_events, &ha, written))
    };
    let controller = {
        let stopping = stopping.clone();
        std::thread::spawn(move || control(daemon, plan, start, stopping))
    };
    let (writer, controller) = tokio::task::spawn_blocking(move || {
        let joined = (writer.join(), controller.join());
        drop(broker_back);
        joined
    })
    .await
    .unwrap();
    if let Err(p) = writer {
        std::panic::resume_unwind(p);
    }
    let mut daemon = match controller {
        Ok(d) => d,
        Err(p) => std::panic::resume_unwind(p),
    };
    let written_at = start.elapsed();

    // Everything must arrive; then a clean stop flushes what is in flight, and the consumer
    // takes the last (duplicate) deliveries.
    let deadline = Instant::now() + ARRIVAL_DEADLINE;
    let mut report = Instant::now();
    while seen.lock().unwrap().tags < IEMS as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if report.elapsed() > Duration::from_secs(10) {
            report = Instant::now();
            let s = seen.lock().unwrap();
            eprintln!(
                "chaos: t={:.1}s waiting: {} of {IEMS} IEMs received, {} deliveries",
                start.elapsed().as_secs_f64(),
                s.tags,
                s.deliveries
            );
        }
    }
    let arrived_at = start.elapsed();
    let stopped = daemon.stop();
    stop_consumer.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("the consumer stops within 30 s")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), cleanup(&name))
        .await
        .expect("queue and exchange deleted within 10 s");

    let s = seen.lock().unwrap();
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let spool_full = log.matches("spool is full").count();
    let mut lost = Vec::new();
    let mut max_delay = 0u64;
    for i in 0..IEMS {
        let (w, r) = (
            written[i].load(Ordering::Relaxed),
            received[i].load(Ordering::Relaxed),
        );
        if r == 0 {
            lost.push(i);
        } else {
            max_delay = max_delay.max(r.saturating_sub(w));
        }
    }
    let distinct_ids = s.ids.len();
    let ledger = crate::lifecycle::faults(dir.path());
    let life = check_lifecycle(&ha, &s, &ledger);
    eprintln!(
        "chaos: written={IEMS} received_distinct={} distinct_ids={distinct_ids} deliveries={} \
         duplicates={} ({:.3}%): republished={} ({:.3}%) spooled_twice={} ({:.3}%) \
         consumer_redeliveries={} lost={} max_delay={max_delay}ms \
         spool_full_warnings={spool_full} kills={KILLS} broker_outages={BROKER_OUTAGES} \
         rotations={RENAME_ROTATIONS}+1ct writer={:.1}s all_arrived={:.1}s \
         lifecycle: faults={} published={} repeats={} resolutions={} resolved={} stray={} \
         open={} ledger={} problems={} seed={seed}",
        s.tags,
        s.deliveries,
        s.duplicates,
        s.duplicates as f64 * 100.0 / IEMS as f64,
        s.republished,
        s.republished as f64 * 100.0 / IEMS as f64,
        s.respooled,
        s.respooled as f64 * 100.0 / IEMS as f64,
        s.redelivered,
        lost.len(),
        written_at.as_secs_f64(),
        arrived_at.as_secs_f64(),
        life.faults,
        life.faults_published,
        life.repeats,
        life.resolutions,
        life.resolved,
        life.stray,
        life.open,
        life.ledger,
        life.problems.len(),
    );
    assert!(
        lost.is_empty(),
        "{} IEMs lost (seed {seed}), first: {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        tail(&log, 60)
    );
    assert!(
        s.inconsistent.is_empty(),
        "{} inconsistent deliveries, first: {:?}",
        s.inconsistent.len(),
        &s.inconsistent[..s.inconsistent.len().min(5)]
    );
    assert_eq!(
        distinct_ids, IEMS,
        "one id per IEM line: {distinct_ids} distinct ids for {IEMS} lines"
    );
    // Issue 21 item 8: after a SIGKILL the sources resume after the last line whose alert is
    // durable, so lines spooled twice stay under 1%; the rest of the duplicates are publishes
    // whose confirm was lost with the connection (at most the publish window each time).
    assert!(
        s.respooled * 100 <= IEMS as u64,
        "{} lines spooled twice ({:.3}%), over the 1% target",
        s.respooled,
        s.respooled as f64 * 100.0 / IEMS as f64
    );
    // Issue 17: no fault lost, none resolved twice or by another's resolution, and the ledger
    // holds exactly what is still open.
    assert!(
        life.problems.is_empty(),
        "{} lifecycle problems (seed {seed}), first: {:#?}",
        life.problems.len(),
        &life.problems[..life.problems.len().min(10)]
    );
    assert!(
        stopped.success(),
        "iemd did not stop cleanly:\n{}",
        tail(&log, 40)
    );
    assert!(
        spool_full > 0,
        "the spool never reached its cap ({SPOOL_MAX_BYTES} bytes); the test did not test it"
    );
    let killed = log.matches("iemd running").count();
    assert_eq!(killed, KILLS + 1, "iemd started once plus once per kill");
}

/// The last `n` lines of the daemon's log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Deletes the test's queue and exchange.
async fn cleanup(name: &str) {
    let Ok(conn) = lapin::Connection::connect(&util::broker_url(), Default::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await;
        let _ = ch
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}
