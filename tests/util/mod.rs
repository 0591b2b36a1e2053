//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod amqp;
pub mod broker_lock;
pub mod daemon;
pub mod fake_sysfs;
pub mod hostile;
pub mod journal;

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The AMQP URL of the test broker (`IEMD_TEST_AMQP_URL`, default the local guest account).
pub fn broker_url() -> String {
    std::env::var("IEMD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// True when the test broker accepts TCP connections. With `IEMD_REQUIRE_BROKER=1` (set by
/// `.ci/run`) an unreachable broker fails the test instead of skipping it; otherwise the test is
/// skipped with a loud message on stderr.
pub fn broker_available(test: &str) -> bool {
    let addr = std::env::var("IEMD_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return true;
    }
    if std::env::var("IEMD_REQUIRE_BROKER").is_ok_and(|v| v == "1") {
        panic!("{test}: no RabbitMQ broker at {addr}, and IEMD_REQUIRE_BROKER=1");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: no RabbitMQ broker at {addr} (set IEMD_REQUIRE_BROKER=1 to make this fail) !!!!!!!!\n"
    );
    false
}

pub mod cluster;

/// Sends `signal` (`rustix::process::Signal::TERM`, `HUP`) to our child `pid`.
pub fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is not 0");
    rustix::process::kill_process(pid, signal).expect("kill(2) our own child");
}
