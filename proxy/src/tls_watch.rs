//! Every listener's TLS material, reloaded on SIGHUP and whenever its files change on disk
//! (a rotated certificate, a new CRL, or OTS creating its CA after takgate started), without
//! dropping established connections.
//!
//! Reading and parsing the files (and the `stat`s that notice a change) happen on tokio's
//! blocking pool, never on a runtime worker: a slow disk, a network mount that hangs or a FIFO
//! put in a certificate's place stalls the reload, not the requests and sessions.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cot::tls::{ReloadableTls, TlsError};
use tokio::task::JoinHandle;

use crate::metrics::HttpMetrics;
use cot::listener::Drain;

/// How often the files are checked: one `stat` each, so a short interval costs nothing.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct TlsSources {
    sources: Vec<(String, Arc<ReloadableTls>)>,
    metrics: HttpMetrics,
    /// One reload at a time (SIGHUP and the poll may coincide): two interleaved reloads could
    /// leave the older files in force.
    reloading: Mutex<()>,
}

impl TlsSources {
    pub fn new(sources: Vec<(String, Arc<ReloadableTls>)>, metrics: HttpMetrics) -> Self {
        Self {
            sources,
            metrics,
            reloading: Mutex::new(()),
        }
    }

    /// SIGHUP: re-reads every listener's files, on the blocking pool; the handle ends with the
    /// reload. A listener whose new files are broken keeps serving with its old ones.
    pub fn reload_all(self: &Arc<Self>) -> JoinHandle<()> {
        self.reload(|tls| Some(tls.reload()))
    }

    /// Reloads the listeners whose files changed since they were last read, on the blocking
    /// pool; the handle ends with the reload.
    pub fn reload_changed(self: &Arc<Self>) -> JoinHandle<()> {
        self.reload(ReloadableTls::reload_if_changed)
    }

    /// Runs `reload` on each listener, one reload at a time, on the blocking pool, and records
    /// what it did (`None`: nothing to do).
    fn reload(
        self: &Arc<Self>,
        reload: fn(&ReloadableTls) -> Option<Result<(), TlsError>>,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _one = this
                .reloading
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (name, tls) in &this.sources {
                if let Some(result) = reload(tls) {
                    this.record(name, result);
                }
            }
        })
    }

    /// Polls for changed files until shutdown. A poll waits for the one before it: a reload
    /// stuck on a file never piles up blocking threads.
    pub async fn watch(self: Arc<Self>, drain: Drain) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = drain.stopping() => return,
            }
            tokio::select! {
                _ = self.reload_changed() => {}
                () = drain.stopping() => return,
            }
        }
    }

    /// Listeners that cannot complete handshakes yet, and the files they wait for (looked up
    /// on the blocking pool).
    pub async fn waiting(self: &Arc<Self>) -> Vec<(String, Vec<PathBuf>)> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.sources
                .iter()
                .filter(|(_, tls)| !tls.is_ready())
                .map(|(name, tls)| (name.clone(), tls.missing_files()))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    fn record(&self, name: &str, result: Result<(), TlsError>) {
        match result {
            Ok(()) => {
                self.metrics.tls_reload(name, true);
                tracing::info!(listener = %name, "TLS certificates loaded");
            }
            Err(e) if e.is_missing_file() => {
                self.metrics.tls_reload(name, false);
                tracing::warn!(listener = %name, error = %e, "TLS files missing; waiting for them");
            }
            Err(e) => {
                self.metrics.tls_reload(name, false);
                tracing::error!(listener = %name, error = %e, "TLS reload failed; keeping the previous certificates");
            }
        }
    }
}
