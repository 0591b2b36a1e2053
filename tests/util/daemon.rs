//! Runs the real `iemd` binary as a child process with a config in a temporary directory, and
//! reads what it published from a queue of its own.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;

/// A running (or stopped) iemd with its own state directory, log file and broker topology.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// A config for `dir` that tails `files`, publishes to a fresh exchange and declares the queue
/// `name` bound to it. `extra` is appended (more sections or keys at the end of the file).
pub fn config(dir: &Path, name: &str, files: &[&Path], extra: &str) -> String {
    let mut text = format!(
        "state_dir = \"{}\"\n[telemetry]\nmetrics_listen = false\n[spool]\nsync_interval_ms = 5\n",
        dir.join("state").display()
    );
    text.push_str(&format!(
        "[broker]\nurls = [\"{}\"]\nexchange = \"{name}\"\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n\
         connect_timeout_ms = 2000\n[broker.queue]\nname = \"{name}\"\n",
        super::amqp::plain_url()
    ));
    for f in files {
        text.push_str(&format!(
            "[[sources.files]]\npaths = [\"{}\"]\nstart_at = \"beginning\"\n",
            f.display()
        ));
    }
    text.push_str(extra);
    text
}

impl Daemon {
    /// Writes `config` to `dir/iemd.toml` and starts iemd on it; its stderr goes to `dir/iemd.log`.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        let path = dir.join("iemd.toml");
        std::fs::write(&path, config).unwrap();
        let mut daemon = Daemon {
            child: None,
            dir: dir.to_path_buf(),
            config: path,
            log: dir.join("iemd.log"),
        };
        daemon.restart();
        daemon
    }

    /// Starts iemd again on the same config (after `stop` or `kill9`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "iemd is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_iemd"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,lapin=warn,lapin::returned_messages=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no flush, no checkpoint save.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (at most 30 s) for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        super::signal(child.id(), rustix::process::Signal::TERM);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!(
                    "iemd did not stop within 30 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `text` (panics with the log after `within`).
    pub fn wait_log(&self, text: &str, within: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(text) {
            assert!(
                start.elapsed() < within,
                "no {text:?} in the log after {within:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Appends `lines` to `path` (one write per line, as a logger does).
pub fn append(path: &Path, lines: &[String]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

/// An IEM line in RFC 3164 form whose message carries `tag` (e.g. `n=42`), so tests can tell
/// which line an alert came from.
pub fn iem_line(tag: &str) -> String {
    format!("Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:auth failed {tag}")
}

/// What a test consumed: every delivery's message id, alert message and whole body, in arrival
/// order.
#[derive(Debug, Default)]
pub struct Received {
    pub ids: Vec<String>,
    /// Each delivery's spool seq (`correlation_id`: the record it was published from).
    pub seqs: Vec<Option<u64>>,
    pub messages: Vec<String>,
    pub bodies: Vec<serde_json::Value>,
}

impl Received {
    pub fn distinct_ids(&self) -> usize {
        self.ids
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// The deliveries of an id already delivered, split by cause: `(republished, respooled)`.
    /// A repeat of the same spool record is a publish sent again after its confirm was lost
    /// (bounded by the publish window); a second record of the same id is a line the agent
    /// spooled twice.
    pub fn duplicates(&self) -> (usize, usize) {
        let mut seen: std::collections::HashMap<&str, std::collections::HashSet<Option<u64>>> =
            std::collections::HashMap::new();
        let (mut republished, mut respooled) = (0, 0);
        for (id, seq) in self.ids.iter().zip(&self.seqs) {
            let seqs = seen.entry(id.as_str()).or_default();
            match (seqs.is_empty(), seqs.insert(*seq)) {
                (true, _) => {}
                (false, false) => republished += 1,
                (false, true) => respooled += 1,
            }
        }
        (republished, respooled)
    }
}

/// The spool seq of a delivery: its `correlation_id`, in decimal.
pub fn spool_seq(properties: &lapin::BasicProperties) -> Option<u64> {
    properties.correlation_id().as_ref()?.as_str().parse().ok()
}

/// Waits until `queue` holds at least `n` messages (or `within` passes), then consumes them all
/// and deletes the queue and the exchange of the same name.
pub async fn collect(queue: &str, n: usize, within: Duration) -> Received {
    let conn = lapin::Connection::connect(&super::broker_url(), Default::default())
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        // A passive declare of a queue that does not exist yet closes its channel: one each time.
        let probe = conn.create_channel().await.unwrap();
        let q = probe
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let count = q.map(|q| q.message_count() as usize).unwrap_or(0);
        let _ = probe.close(200, "done".into()).await;
        if count >= n || start.elapsed() > within {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "collect".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Received::default();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        let d = d.unwrap();
        got.ids.push(
            d.properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
        got.seqs.push(spool_seq(&d.properties));
        let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        got.messages
            .push(body["message"].as_str().unwrap_or_default().to_owned());
        got.bodies.push(body);
    }
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(queue.into(), ExchangeDeleteOptions::default())
        .await;
    got
}

/// A file to tail inside `dir`, created empty.
pub fn log_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap();
    path
}
