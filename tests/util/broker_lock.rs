//! Tests that stop the broker take `BROKER_LOCK.write()`; every other broker test takes
//! `BROKER_LOCK.read()` for its whole duration, so none runs while the broker is down.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub static BROKER_LOCK: RwLock<()> = RwLock::new(());

/// Held by an ordinary broker test.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    BROKER_LOCK.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by a test that stops and restarts the broker.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    BROKER_LOCK.write().unwrap_or_else(|p| p.into_inner())
}

/// Starts the broker's app again when dropped (also when the test panics while it is stopped),
/// so that no later test finds the broker down.
pub struct StartAppOnDrop;

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("await_startup")
            .output();
    }
}
