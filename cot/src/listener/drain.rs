//! Graceful shutdown: one handle shared by accept loops, connections, sessions and upgraded relays.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Drain {
    /// Stop accepting; let each connection finish its request in flight, then close.
    stop: CancellationToken,
    /// Cut relayed upgrades (WebSockets), which would otherwise live on indefinitely.
    close_upgraded: CancellationToken,
    /// Every connection and relay task, so shutdown can wait for them.
    tracker: TaskTracker,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// The stop signal, for loops that wait on a token (stream relays).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    pub async fn upgrades_closing(&self) {
        self.close_upgraded.cancelled().await;
    }

    /// Runs the shutdown sequence: stop accepting, give WebSockets `websocket_grace` to end by
    /// themselves, then cut them; returns whether everything ended within `grace`.
    pub async fn shutdown(&self, grace: Duration, websocket_grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        let deadline = tokio::time::Instant::now() + grace;
        if tokio::time::timeout(websocket_grace.min(grace), self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.close_upgraded.cancel();
        tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}
