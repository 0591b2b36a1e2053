//! Shutdown is a value passed in: a cancellation token every task watches and a tracker to wait on.

pub(crate) use tokio_util::sync::CancellationToken;
pub(crate) use tokio_util::task::TaskTracker;

/// What a long-running task needs to stop cleanly.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub token: CancellationToken,
    pub tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every task to stop and waits until all tracked tasks have finished.
    pub async fn stop_and_wait(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
