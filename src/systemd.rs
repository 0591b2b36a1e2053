//! systemd integration for `Type=notify`: readiness, status text, stopping, and the watchdog.
//!
//! Hand-written rather than the `sd-notify` crate: the protocol is one datagram of
//! `KEY=VALUE` lines to the socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace), a dozen lines with std; and taking the socket explicitly lets tests receive
//! the messages on a real datagram socket without touching the process environment.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset (not started by systemd). Send errors are
//! returned for the caller to log; they must never stop the daemon.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use crate::shutdown::Shutdown;

/// Sends notifications to the service manager.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `None`: not under systemd, every call does nothing.
    socket: Option<String>,
}

/// The process's notifier, from `NOTIFY_SOCKET` as systemd set it for this `Type=notify`
/// service: the one place that reads it (the daemon's binary and its pipeline both use this).
pub fn notifier() -> &'static Notifier {
    static NOTIFIER: std::sync::OnceLock<Notifier> = std::sync::OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env)
}

/// Logs a failed notification: worth a log line, never a stop.
pub fn notify(result: io::Result<()>) {
    if let Err(err) = result {
        tracing::warn!(%err, "cannot notify systemd");
    }
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, as systemd sets it for `Type=notify` services.
    fn from_env() -> Self {
        Notifier::with_socket(
            std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        )
    }

    /// A notifier for an explicit socket (`/run/...` or `@abstract`); `None` disables it.
    pub(crate) fn with_socket(socket: Option<String>) -> Self {
        Notifier { socket }
    }

    #[cfg(test)]
    pub(crate) fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Start-up is complete: sources open, spool recovered.
    pub(crate) fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// A one-line status shown by `systemctl status` (newlines are replaced).
    pub(crate) fn status(&self, text: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", text.replace('\n', " ")))
    }

    /// The daemon is reloading its configuration (after SIGHUP); send `ready()` when done.
    pub fn reloading(&self) -> io::Result<()> {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
    }

    /// The daemon is shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// Keep-alive for `WatchdogSec=`.
    pub(crate) fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    fn send(&self, message: &str) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        // systemd busy with a full queue: an error to log, not a runtime thread blocked.
        sock.set_nonblocking(true)?;
        let addr = match socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(PathBuf::from(socket))?,
        };
        let sent = sock.send_to_addr(message.as_bytes(), &addr)?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short notify datagram",
            ));
        }
        Ok(())
    }
}

/// The shortest interval between watchdog pings.
const MIN_PING: Duration = Duration::from_millis(1);

/// The watchdog ping interval: half of `WATCHDOG_USEC`, when systemd set it for this process
/// (`WATCHDOG_PID` absent or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        pid.as_deref(),
        std::process::id(),
    )
}

/// `watchdog_interval` with its inputs explicit.
pub(crate) fn watchdog_interval_from(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = watchdog_pid
        && pid.trim().parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    // Never below MIN_PING: `WATCHDOG_USEC=1` would make a zero period, on which
    // `tokio::time::interval` panics.
    Some(Duration::from_micros(usec / 2).max(MIN_PING))
}

/// Pings `WATCHDOG=1` every `interval` until `shutdown.token` is cancelled; `iemd` runs it under
/// `supervise`, which restarts it should it ever end on its own.
///
/// The pings come from the runtime: a wedged runtime stops them and systemd restarts iemd.
pub async fn run_watchdog(notifier: Notifier, interval: Duration, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(interval.max(MIN_PING));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.token.cancelled() => break,
            _ = ticks.tick() => {
                if let Err(error) = notifier.watchdog() {
                    tracing::warn!(%error, "cannot notify the systemd watchdog");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_arrive_on_a_real_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::with_socket(Some(path.to_string_lossy().into_owned()));
        n.ready().unwrap();
        n.status("reading 2 sources\nbroker up").unwrap();
        n.watchdog().unwrap();
        n.reloading().unwrap();
        n.stopping().unwrap();
        assert_eq!(recv(&sock), "READY=1");
        assert_eq!(recv(&sock), "STATUS=reading 2 sources broker up");
        assert_eq!(recv(&sock), "WATCHDOG=1");
        let reloading = recv(&sock);
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn abstract_socket_names_start_with_at() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("iemd-test-{}", std::process::id());
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::with_socket(Some(format!("@{name}")))
            .ready()
            .unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn disabled_notifier_does_nothing() {
        let n = Notifier::with_socket(None);
        assert!(!n.is_enabled());
        n.ready().unwrap();
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let n = Notifier::with_socket(Some("/nonexistent/iemd/notify".into()));
        assert!(n.ready().is_err());
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_our_pid() {
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 7), None);
        // Regression: WATCHDOG_USEC=1 gave a zero period, which panicked the watchdog task.
        assert_eq!(watchdog_interval_from(Some("1"), None, 7), Some(MIN_PING));
    }

    /// A zero interval, however it came about, does not panic the task.
    #[tokio::test]
    async fn watchdog_task_survives_a_zero_interval() {
        let shutdown = Shutdown::new();
        let n = Notifier::with_socket(None);
        let task = tokio::spawn(run_watchdog(n, Duration::ZERO, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.token.cancel();
        task.await.expect("the watchdog task did not panic");
    }

    /// A notify socket whose queue is full (systemd busy) is an error to log, never a send
    /// that blocks the runtime's thread.
    #[test]
    fn a_full_notify_socket_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.sock");
        let _sock = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::with_socket(Some(path.to_string_lossy().into_owned()));
        // Nobody reads: the queue fills (net.unix.max_dgram_qlen, 10 by default) and sends fail.
        let failed = (0..10_000).find(|_| n.watchdog().is_err());
        assert!(failed.is_some());
    }

    #[tokio::test]
    async fn watchdog_task_pings_until_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wd.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let shutdown = Shutdown::new();
        let n = Notifier::with_socket(Some(path.to_string_lossy().into_owned()));
        shutdown.tracker.spawn(run_watchdog(
            n,
            Duration::from_millis(100),
            shutdown.clone(),
        ));
        // Pings at 0, 100, 200, 300 ms; a loaded machine may delay the last one.
        tokio::time::sleep(Duration::from_millis(350)).await;
        shutdown.stop_and_wait().await;
        let mut count = 0;
        let mut buf = [0u8; 64];
        while let Ok(n) = sock.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            count += 1;
        }
        assert!((3..=4).contains(&count), "{count} pings");
        // Cancelled: no more pings.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(sock.recv(&mut buf).is_err());
    }
}
