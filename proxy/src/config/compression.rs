//! `[http.compression]`: on-the-fly and cached compression of a listener's answers.

use bytesize::ByteSize;
use serde::Deserialize;

use super::checks::{in_range, invalid};
use super::ConfigError;

/// Paths of OTS whose answers carry secrets in their bodies (README, "Compression and BREACH").
const OTS_SECRET_PATHS: [&str; 16] = [
    "/api/login",
    "/api/ldap_login",
    "/api/logout",
    "/api/me",
    "/api/tf-setup",
    "/api/tf-validate",
    "/api/tf-rescue",
    "/api/password",
    "/api/register",
    "/api/confirm",
    "/api/atak_qr_string",
    "/api/itak_qr_string",
    "/api/certificate",
    "/api/videos",
    "/oauth",
    "/Marti/api/tls",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Compress answers for clients that take brotli or gzip.
    pub enabled: bool,
    /// Bodies declared shorter than this go out as they are.
    pub min_size: ByteSize,
    /// Responses being compressed at once on this listener; more go out identity-encoded.
    pub max_streams: usize,
    /// On a TLS listener, compress answers that may carry secrets too (off: BREACH).
    pub compress_secrets: bool,
    /// Path prefixes (whole segments) whose answers may carry secrets.
    pub secret_paths: Vec<String>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // Below about a kilobyte, headers and framing outweigh what compression saves.
            min_size: ByteSize::kib(1),
            // Each streaming encoder holds up to about a megabyte (brotli's 256 KiB window and
            // its tables): 256 of them bound that memory to a quarter of a gigabyte.
            max_streams: 256,
            compress_secrets: false,
            secret_paths: OTS_SECRET_PATHS.iter().map(|&p| p.to_owned()).collect(),
        }
    }
}

impl CompressionConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        in_range(
            key,
            "min_size",
            self.min_size.as_u64(),
            0,
            1 << 20,
            "0 and 1MiB",
        )?;
        in_range(
            key,
            "max_streams",
            self.max_streams as u64,
            1,
            1 << 16,
            "1 and 65536",
        )?;
        for p in &self.secret_paths {
            if !p.starts_with('/') || (p.len() > 1 && p.ends_with('/')) {
                return Err(invalid(
                    format!("{key}.secret_paths"),
                    format!("{p:?} must start with '/' and not end with '/'"),
                ));
            }
        }
        Ok(())
    }
}
