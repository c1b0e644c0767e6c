//! `[http.http2]`: HTTP/2 on a TLS listener, and its bounds on hostile clients.

use serde::Deserialize;

use super::checks::in_range;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http2Config {
    /// Offer `h2` by ALPN on a TLS listener (plain listeners speak HTTP/1.1 only).
    pub enabled: bool,
    /// Streams one connection may have open at once; more are refused (REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before the server has seen them (the "rapid reset"
    /// attack, CVE-2023-44487); past that the connection is closed (GOAWAY).
    pub max_pending_reset_streams: usize,
    /// Streams the server may reset for a client's protocol errors on one connection; past
    /// that the connection is closed.
    pub max_local_reset_streams: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            enabled: true,
            // What browsers expect at least (RFC 9113 §6.5.2 recommends no fewer than 100).
            max_concurrent_streams: 100,
            // hyper's and the h2 crate's own defaults since the rapid-reset fixes.
            max_pending_reset_streams: 20,
            max_local_reset_streams: 1024,
        }
    }
}

impl Http2Config {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        in_range(
            key,
            "max_concurrent_streams",
            u64::from(self.max_concurrent_streams),
            1,
            10_000,
            "1 and 10000",
        )?;
        in_range(
            key,
            "max_pending_reset_streams",
            self.max_pending_reset_streams as u64,
            1,
            10_000,
            "1 and 10000",
        )?;
        in_range(
            key,
            "max_local_reset_streams",
            self.max_local_reset_streams as u64,
            1,
            100_000,
            "1 and 100000",
        )
    }
}
