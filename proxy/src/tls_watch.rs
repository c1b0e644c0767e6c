//! Every listener's TLS material, reloaded on SIGHUP and whenever its files change on disk
//! (a rotated certificate, a new CRL, or OTS creating its CA after takgate started), without
//! dropping established connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cot::tls::{ReloadableTls, TlsError};

use crate::drain::Drain;
use crate::metrics::HttpMetrics;

/// How often the files are checked: one `stat` each, so a short interval costs nothing.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct TlsSources {
    sources: Vec<(String, Arc<ReloadableTls>)>,
    metrics: HttpMetrics,
}

impl TlsSources {
    pub fn new(sources: Vec<(String, Arc<ReloadableTls>)>, metrics: HttpMetrics) -> Self {
        Self { sources, metrics }
    }

    /// SIGHUP: re-reads every listener's files. A listener whose new files are broken keeps
    /// serving with its old ones.
    pub fn reload_all(&self) {
        for (name, tls) in &self.sources {
            self.record(name, tls.reload());
        }
    }

    /// Reloads the listeners whose files changed since they were last read.
    pub fn reload_changed(&self) {
        for (name, tls) in &self.sources {
            if let Some(result) = tls.reload_if_changed() {
                self.record(name, result);
            }
        }
    }

    /// Polls for changed files until shutdown.
    pub async fn watch(self: Arc<Self>, drain: Drain) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.reload_changed(),
                () = drain.stopping() => return,
            }
        }
    }

    /// Listeners that cannot complete handshakes yet, and the files they wait for.
    pub fn waiting(&self) -> Vec<(String, Vec<PathBuf>)> {
        self.sources
            .iter()
            .filter(|(_, tls)| !tls.is_ready())
            .map(|(name, tls)| (name.clone(), tls.missing_files()))
            .collect()
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
