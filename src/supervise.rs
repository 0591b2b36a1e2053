//! Supervision of the daemon's long-running tasks: a task that ends while it should run is
//! noticed, logged with its reason, counted (`iemd_stage_restarts_total{stage}`), shown in
//! `/health` (rule `stage_stopped`, gauge `iemd_stage_up{stage}` 0) and restarted with backoff.
//!
//! # Restart in place, or exit
//!
//! The publisher, each source and the metrics server are restarted here, with a capped
//! exponential backoff (1 s doubling to 60 s, back to 1 s after a run of a minute). They hold no
//! state that a restart could lose: the publisher starts again from the spool's acked position
//! (its unconfirmed alerts are sent again, same ids), a source from its recorded checkpoint
//! (lines after it are read again, same ids), the metrics server binds its address again. A
//! restart in place keeps the healthy parts working (a failing file source does not stop
//! journald) and keeps `/health` up to say what is wrong, which an exit would not.
//!
//! The stage that appends to the spool and records checkpoints, and the pipeline around it, are
//! not restarted in place: an error there (the spool's files cannot be written) ends
//! `pipeline::run` with the error, and `iemd` exits non-zero so that systemd restarts it
//! (`Restart=on-failure`). A fresh process re-opens the spool through recovery, which is the one
//! way to rebuild that state that is tested against crashes. The spool's sync thread restarts
//! its loop itself after a panic (see `spool`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::telemetry::{self, events, http::StageHealth};

/// First wait before a restart.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait before a restart.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The supervised tasks of one pipeline run, for `/health` and the metrics.
#[derive(Clone, Default)]
pub struct Stages(Arc<Mutex<Vec<Arc<StageState>>>>);

struct StageState {
    name: String,
    running: Arc<AtomicBool>,
    reason: Mutex<String>,
}

/// One supervised task's entry in [`Stages`].
#[derive(Clone)]
pub struct Stage(Arc<StageState>);

impl Stages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task, running, and exports its `iemd_stage_up{stage}` gauge.
    pub fn add(&self, name: impl Into<String>) -> Stage {
        let state = Arc::new(StageState {
            name: name.into(),
            running: Arc::new(AtomicBool::new(true)),
            reason: Mutex::new(String::new()),
        });
        let running = state.running.clone();
        telemetry::registry().gauge_fn(
            "iemd_stage_up",
            "1 while this supervised task (publisher, source, spool sync, metrics server) runs.",
            &[("stage", &state.name)],
            Box::new(move || f64::from(u8::from(running.load(Ordering::Relaxed)))),
        );
        if let Ok(mut all) = self.0.lock() {
            all.push(state.clone());
        }
        Stage(state)
    }

    /// Every task and whether it runs.
    pub(crate) fn health(&self) -> Vec<StageHealth> {
        let Ok(all) = self.0.lock() else {
            return Vec::new();
        };
        all.iter()
            .map(|s| StageHealth {
                name: s.name.clone(),
                running: s.running.load(Ordering::Relaxed),
                reason: s.reason.lock().map(|r| r.clone()).unwrap_or_default(),
            })
            .collect()
    }
}

impl Stage {
    pub(crate) fn name(&self) -> &str {
        &self.0.name
    }

    /// True while the task runs; gauges fed by the task read it so that a stopped task's
    /// gauges fall to zero.
    pub(crate) fn running_flag(&self) -> Arc<AtomicBool> {
        self.0.running.clone()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.0.running.load(Ordering::Relaxed)
    }

    /// Marks the task stopped for `reason` (also used by tasks that supervise themselves, such
    /// as the spool's sync thread).
    pub(crate) fn stopped(&self, reason: String) {
        if let Ok(mut r) = self.0.reason.lock() {
            *r = reason;
        }
        self.0.running.store(false, Ordering::Relaxed);
    }

    pub(crate) fn running(&self) {
        self.0.running.store(true, Ordering::Relaxed);
        if let Ok(mut r) = self.0.reason.lock() {
            r.clear();
        }
    }
}

/// The one backoff: capped exponential, doubling from `initial` to `max`, without jitter, for
/// ever, and reset when the caller sees a healthy run or a success. Used by the supervisor, the
/// journalctl child's restarts and the publisher's reconnects.
///
/// Not `backon` (in the tree through lapin): its iterator cannot be reset (a new one is built),
/// it gives up after three tries unless told not to, and taking it as a dependency of our own
/// would tie our code to the version lapin picks. This is the whole of what we need.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next try; the one after it is twice as long, up to `max`.
    pub(crate) fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The next wait is `initial` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Runs the task `start()` makes, and again with backoff each time it ends before `token` is
/// cancelled (an error, a panic, or a return it should not make), until `token` is cancelled.
pub async fn supervise<F, Fut, E>(stage: Stage, token: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        stage.running();
        let started = Instant::now();
        // Its own task, so that a panic is caught here; aborted with the supervisor.
        let ended = AbortOnDropHandle::new(tokio::spawn(start())).await;
        if token.is_cancelled() {
            // Asked to stop: whatever it returned, it is not restarted (errors were its own to log).
            if let Ok(Err(err)) = &ended {
                tracing::warn!(stage = stage.name(), %err, "stopped with an error");
            }
            return;
        }
        let why = match ended {
            Ok(Ok(())) => "ended without being asked to stop".to_string(),
            Ok(Err(err)) => err.to_string(),
            Err(join) => match join.try_into_panic() {
                Ok(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
                Err(join) => format!("was cancelled: {join}"),
            },
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let wait = backoff.step();
        events::stage_failed(stage.name(), &why, wait);
        stage.stopped(format!("{why}; restarting in {} s", wait.as_secs()));
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The text a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that fails, then panics, then runs: the stage shows each reason while it is down
    /// and runs again after each backoff; the restarts are counted.
    #[tokio::test(start_paused = true)]
    async fn failed_and_panicked_tasks_are_restarted_with_backoff() {
        let stages = Stages::new();
        let stage = stages.add("unit-test-stage");
        let token = CancellationToken::new();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let task = {
            let (stage, token, runs) = (stage.clone(), token.clone(), runs.clone());
            tokio::spawn(supervise(stage, token.clone(), move || {
                let (n, token) = (runs.fetch_add(1, Ordering::SeqCst), token.clone());
                async move {
                    match n {
                        0 => Err("cannot open the thing"),
                        1 => panic!("bad state"),
                        _ => {
                            token.cancelled().await;
                            Ok(())
                        }
                    }
                }
            }))
        };
        let restarts = || {
            telemetry::metrics()
                .stage_restarts
                .with(&["unit-test-stage"])
                .get()
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!stage.is_running());
        assert_eq!(
            stages.health()[0].reason,
            "cannot open the thing; restarting in 1 s"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            stages.health()[0].reason,
            "panicked: bad state; restarting in 2 s"
        );
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(stage.is_running());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(restarts(), 2);
        token.cancel();
        task.await.unwrap();
        assert_eq!(restarts(), 2, "a stop on request is not a failure");
    }
}
