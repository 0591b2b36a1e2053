//! A real three-node RabbitMQ cluster on this machine, for failover tests.
//!
//! Two extra nodes (`rabbit2@<host>` on 5673 and `rabbit3@<host>` on 5674, distribution ports
//! +20000) join the broker already running on 5672, as /work/shared/rabbitmq-cluster.md (and
//! docs/CLUSTER.md) describe. [`Cluster`] holds the exclusive broker lock for its whole life: it
//! may stop the shared node, so no other broker test (of this or another test process) runs meanwhile.
//!
//! Nothing may outlive the test process: `Drop` (also during a panic) takes the extra nodes out
//! of the cluster and stops them; a watchdog process does the same if the test process dies
//! without unwinding (SIGKILL, abort); and `start` first removes nodes a killed run left behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::broker_lock;

/// The node already running (node number 1).
pub const MAIN_PORT: u16 = 5672;
/// The extra nodes: (node number, AMQP port). Distribution port = AMQP port + 20000.
const EXTRA: [(usize, u16); 2] = [(2, 5673), (3, 5674)];
/// Temp dirs of the extra nodes start with this, so a later run can find stale ones.
const DIR_PREFIX: &str = "iemd-cluster-";

pub struct Cluster {
    /// Host part of the node names (`localhost` or `hostname -s`), taken from the running node.
    host: String,
    main: String,
    dirs: Vec<PathBuf>,
    watchdog: Option<Child>,
    _lock: broker_lock::Exclusive,
}

/// Output of a command run with a time limit.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `rabbitmqctl args...` under `timeout(1)` (rabbitmqctl may hang on a half-dead node).
fn ctl(limit_s: u32, args: &[&str]) -> Out {
    let out = Command::new("timeout")
        .args(["-k", "5", &limit_s.to_string(), "rabbitmqctl"])
        .args(args)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        },
        Err(e) => Out {
            ok: false,
            stdout: String::new(),
            stderr: format!("cannot run rabbitmqctl: {e}"),
        },
    }
}

/// Runs rabbitmqctl and panics with its output when it fails.
fn ctl_ok(limit_s: u32, args: &[&str]) -> String {
    let o = ctl(limit_s, args);
    assert!(
        o.ok,
        "rabbitmqctl {}: {}\n{}",
        args.join(" "),
        o.stdout,
        o.stderr
    );
    o.stdout
}

/// The name of the node answering `rabbitmqctl` by default (the one on 5672).
fn main_node_name() -> String {
    let name = ctl_ok(30, &["-q", "eval", "node()."]);
    assert!(name.contains('@'), "odd node name {name:?}");
    name
}

/// Waits until `node` has booted; `await_startup` fails at once until the node has registered
/// with epmd, hence the bounded retry loop.
fn await_startup(node: &str, limit: Duration) {
    let t = Instant::now();
    loop {
        let o = ctl(30, &["-q", "-n", node, "await_startup"]);
        if o.ok {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "{node} did not start within {limit:?}: {}",
            o.stderr
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `rabbitmqctl -n <node> stop_app` (usable from another thread: `Cluster` is not `Send`).
pub fn stop_app(node: &str) {
    ctl_ok(60, &["-q", "-n", node, "stop_app"]);
}

/// `rabbitmqctl -n <node> start_app`, then waits until the node has booted.
pub fn start_app(node: &str) {
    ctl_ok(120, &["-q", "-n", node, "start_app"]);
    await_startup(node, Duration::from_secs(60));
}

pub fn is_running(node: &str) -> bool {
    ctl(30, &["-q", "-n", node, "eval", "rabbit:is_running()."]).stdout == "true"
}

/// Pids of the Erlang VMs started with `RABBITMQ_NODENAME=<node>`.
fn beams_of(node: &str) -> Vec<u32> {
    let want = format!("RABBITMQ_NODENAME={node}");
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "beam.smp" {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Takes `node` out of the cluster and stops it, however far it got; never panics.
fn remove_node(main: &str, node: &str) {
    if !beams_of(node).is_empty() {
        // A node stopped with stop_app still runs its VM: reset needs the app stopped.
        ctl(60, &["-q", "-n", node, "stop_app"]);
        ctl(60, &["-q", "-n", node, "reset"]);
        ctl(60, &["-q", "-n", node, "stop"]);
        let t = Instant::now();
        while !beams_of(node).is_empty() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(200));
        }
        for pid in beams_of(node) {
            eprintln!("cluster: killing leftover VM {pid} of {node}");
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    // Not an error when `reset` already did it ("not_a_cluster_node").
    let o = ctl(60, &["-q", "-n", main, "forget_cluster_node", node]);
    if !o.ok && !o.stderr.contains("not_a_cluster_node") {
        eprintln!("cluster: forget_cluster_node {node}: {}", o.stderr);
    }
}

/// Deletes the queues of cluster tests (named `iemd-test-cluster-...`) that are still there,
/// e.g. because a test failed before its own cleanup.
fn delete_test_queues() {
    let out = ctl(30, &["-q", "list_queues", "name"]).stdout;
    for q in out.lines().map(str::trim) {
        if q.starts_with("iemd-test-cluster-") {
            let o = ctl(60, &["-q", "delete_queue", q]);
            if !o.ok {
                eprintln!("cluster: delete_queue {q}: {}", o.stderr);
            }
        }
    }
}

/// Makes sure the main node runs its app (a test may have stopped it).
fn main_up(main: &str) {
    if !is_running(main) {
        eprintln!("cluster: starting {main} again");
        ctl(120, &["-q", "-n", main, "start_app"]);
        await_startup(main, Duration::from_secs(120));
    }
}

fn stale_dirs() -> Vec<PathBuf> {
    let tmp = std::env::temp_dir();
    std::fs::read_dir(&tmp)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

impl Cluster {
    /// Starts rabbit2 and rabbit3, joins them to the running node and waits until all three run.
    /// Panics (after cleaning up) when that fails.
    pub fn start() -> Cluster {
        let lock = broker_lock::exclusive();
        let main = main_node_name();
        let host = main.split_once('@').map_or("", |(_, h)| h).to_string();
        let mut c = Cluster {
            host,
            main,
            dirs: Vec::new(),
            watchdog: None,
            _lock: lock,
        };
        let t = Instant::now();
        c.clean_stale();
        c.spawn_watchdog();
        for (n, port) in EXTRA {
            let dir = tempfile::Builder::new()
                .prefix(&format!("{DIR_PREFIX}rabbit{n}-"))
                .tempdir()
                .expect("temp dir")
                .keep();
            c.dirs.push(dir.clone());
            c.launch(n, port, &dir);
        }
        for (n, _) in EXTRA {
            let node = c.node(n);
            await_startup(&node, Duration::from_secs(90));
            ctl_ok(60, &["-q", "-n", &node, "stop_app"]);
            ctl_ok(60, &["-q", "-n", &node, "join_cluster", &c.main]);
            ctl_ok(60, &["-q", "-n", &node, "start_app"]);
            await_startup(&node, Duration::from_secs(60));
        }
        let running = ctl_ok(30, &["-q", "eval", "length(rabbit_nodes:all_running())."]);
        assert_eq!(running, "3", "nodes running after the joins");
        eprintln!(
            "cluster: {}, {}, {} up in {:.1} s",
            c.main,
            c.node(2),
            c.node(3),
            t.elapsed().as_secs_f64()
        );
        c
    }

    /// Starts node `n` detached, owned by the rabbitmq user (the server drops to it).
    fn launch(&self, n: usize, port: u16, dir: &Path) {
        let mnesia = dir.join("mnesia");
        let log = dir.join("log");
        std::fs::create_dir_all(&mnesia).expect("mnesia dir");
        std::fs::create_dir_all(&log).expect("log dir");
        std::fs::write(dir.join("plugins"), "[].\n").expect("plugins file");
        // Its own config file: the system one pins the listener to 5672.
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .expect("config file");
        let st = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(st.success(), "chown -R rabbitmq {}", dir.display());
        let st = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", self.node(n))
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", (u32::from(port) + 20000).to_string())
            .env("RABBITMQ_MNESIA_BASE", &mnesia)
            .env("RABBITMQ_LOG_BASE", &log)
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", dir.join("ff"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .stdin(Stdio::null())
            .status()
            .expect("rabbitmq-server");
        assert!(
            st.success(),
            "rabbitmq-server -detached for {}",
            self.node(n)
        );
    }

    /// Removes what a killed earlier run left: extra nodes still running or still members of
    /// the cluster, and their directories.
    fn clean_stale(&self) {
        main_up(&self.main);
        delete_test_queues();
        let members = ctl(30, &["-q", "eval", "rabbit_nodes:all()."]).stdout;
        for (n, _) in EXTRA {
            let node = self.node(n);
            if !beams_of(&node).is_empty() || members.contains(&node) {
                eprintln!("cluster: removing stale {node}");
                remove_node(&self.main, &node);
            }
        }
        for d in stale_dirs() {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// A process that removes the extra nodes if this process dies without running `Drop`.
    fn spawn_watchdog(&mut self) {
        let mut script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done\n\
             r() {{ timeout -k 5 60 rabbitmqctl -q \"$@\" >/dev/null 2>&1; }}\n\
             [ \"$(timeout 30 rabbitmqctl -q eval 'rabbit:is_running().')\" = true ] || r start_app\n",
            pid = std::process::id()
        );
        for (n, _) in EXTRA {
            let node = self.node(n);
            script.push_str(&format!(
                "r -n {node} stop_app; r -n {node} reset; r -n {node} stop; r forget_cluster_node {node}\n"
            ));
        }
        script.push_str(&format!(
            "rm -rf {}/{DIR_PREFIX}*\n",
            std::env::temp_dir().display()
        ));
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C to the test does not reach it.
            .process_group(0)
            .spawn();
        match child {
            Ok(c) => self.watchdog = Some(c),
            Err(e) => eprintln!("cluster: no watchdog: {e}"),
        }
    }

    /// Node name of node `n` (1 = the main node, 2 and 3 the extra ones).
    pub fn node(&self, n: usize) -> String {
        if n == 1 {
            self.main.clone()
        } else {
            format!("rabbit{n}@{}", self.host)
        }
    }

    /// AMQP port of node `n`.
    pub fn port(n: usize) -> u16 {
        match n {
            1 => MAIN_PORT,
            _ => EXTRA
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, p)| *p)
                .unwrap_or_else(|| panic!("no node {n}")),
        }
    }

    /// URL of node `n`, without credentials (guest/guest is the default).
    pub fn url(n: usize) -> String {
        format!("amqp://127.0.0.1:{}/%2f", Self::port(n))
    }

    /// The node whose AMQP port is `port`.
    pub fn node_of_port(port: u16) -> Option<usize> {
        (1..=3).find(|&n| Self::port(n) == port)
    }

    /// Stops the RabbitMQ application of node `n` (the VM keeps running, as after a crash of
    /// the broker but not of the machine); its clients lose their connections.
    pub fn stop_node(&self, n: usize) {
        stop_app(&self.node(n));
    }

    /// Starts node `n`'s application again and waits until it has booted.
    pub fn start_node(&self, n: usize) {
        start_app(&self.node(n));
    }

    /// Crashes node `n` (2 or 3: the main node is shared and never killed): `kill -9` of its
    /// Erlang VM, so its clients' sockets are reset and its quorum queue members vanish without
    /// a leader hand-off. Returns once the VM is gone.
    pub fn kill_node(&self, n: usize) {
        assert_ne!(n, 1, "the main broker node is never killed");
        let node = self.node(n);
        let pids = beams_of(&node);
        assert!(!pids.is_empty(), "{node} has no VM to kill");
        for pid in &pids {
            let st = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(st.success(), "kill -9 {pid} ({node})");
        }
        let t = Instant::now();
        while !beams_of(&node).is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{node} survived kill -9"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a killed node `n` again on its data directory and waits until it has booted and
    /// rejoined the cluster (it does so by itself).
    pub fn restart_node(&self, n: usize) {
        assert_ne!(n, 1, "the main broker node is not restarted here");
        let dir = &self.dirs[n - 2];
        self.launch(n, Self::port(n), dir);
        await_startup(&self.node(n), Duration::from_secs(90));
        let t = Instant::now();
        while ctl(30, &["-q", "eval", "length(rabbit_nodes:all_running())."]).stdout != "3" {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} did not rejoin the cluster",
                self.node(n)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// True while node `n`'s Erlang VM runs.
    pub fn vm_running(&self, n: usize) -> bool {
        !beams_of(&self.node(n)).is_empty()
    }

    /// The node numbers client connections go to, one entry per connection (cluster-wide).
    pub fn connection_nodes(&self) -> Vec<usize> {
        let out = ctl(30, &["-q", "list_connections", "port"]).stdout;
        out.lines()
            .filter_map(|l| l.trim().parse::<u16>().ok())
            .filter_map(Self::node_of_port)
            .collect()
    }
}

/// The nodes hosting a member of quorum queue `queue` (`list_queues name members`).
pub fn quorum_members(queue: &str) -> Vec<String> {
    let out = ctl_ok(30, &["-q", "list_queues", "name", "members"]);
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(name, _)| *name == queue)
        .map(|(_, members)| {
            members
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The node leading quorum queue `queue` (`list_queues name leader`), if it has one.
pub fn quorum_leader(queue: &str) -> Option<String> {
    let out = ctl(30, &["-q", "list_queues", "name", "leader"]).stdout;
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(name, _)| *name == queue)
        .map(|(_, leader)| leader.trim().to_string())
        .filter(|l| l.contains('@'))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let t = Instant::now();
        // The leaving nodes tell the main node, so it must run.
        main_up(&self.main);
        delete_test_queues();
        for (n, _) in EXTRA {
            remove_node(&self.main, &self.node(n));
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
        main_up(&self.main);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let left = ctl(30, &["-q", "eval", "rabbit_nodes:all()."]).stdout;
        eprintln!(
            "cluster: torn down in {:.1} s; members now {left}",
            t.elapsed().as_secs_f64()
        );
    }
}
