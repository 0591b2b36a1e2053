//! Tests that stop the broker take [`exclusive`]; every other broker test takes [`shared`] for its
//! whole duration, so none runs while the broker is down. The lock is held twice: a `RwLock`
//! between the tests of this process, and `flock` on a file in the temporary directory between
//! processes (two `cargo test` runs on one machine share its broker).

use std::fs::File;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use rustix::fs::{FlockOperation, flock};

pub static BROKER_LOCK: RwLock<()> = RwLock::new(());

/// The file whose `flock` the test processes of this machine share.
fn lock_file() -> Option<File> {
    let path = std::env::temp_dir().join("iemd-tests-broker.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    match file {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!(
                "!!!!!!!! cannot open {}: {e}; the broker lock covers this process only",
                path.display()
            );
            None
        }
    }
}

fn locked(op: FlockOperation) -> Option<File> {
    let file = lock_file()?;
    // Blocks until the other processes' holders are done; the lock goes with the file.
    flock(&file, op).ok()?;
    Some(file)
}

/// Held by an ordinary broker test.
pub struct Shared {
    _file: Option<File>,
    _guard: RwLockReadGuard<'static, ()>,
}

/// Held by a test that stops and restarts the broker.
pub struct Exclusive {
    _file: Option<File>,
    _guard: RwLockWriteGuard<'static, ()>,
}

pub fn shared() -> Shared {
    let guard = BROKER_LOCK.read().unwrap_or_else(|p| p.into_inner());
    Shared {
        _file: locked(FlockOperation::LockShared),
        _guard: guard,
    }
}

pub fn exclusive() -> Exclusive {
    let guard = BROKER_LOCK.write().unwrap_or_else(|p| p.into_inner());
    Exclusive {
        _file: locked(FlockOperation::LockExclusive),
        _guard: guard,
    }
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
