//! `[stream.reoriginate]`: the signing material and certificate policy of reoriginate mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::checks::invalid;
use super::tls::ots_data_folder;
use super::ConfigError;

/// How reoriginate mode reaches OTS's own SSL listener as each client's user.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReoriginateConfig {
    /// OTS's CA certificate: verifies OTS's server certificate. Default
    /// `$OTS_DATA_FOLDER/ca/ca.pem`.
    pub ca: Option<PathBuf>,
    /// The certificate that signs the per-user certificates: OTS's CA itself (the default), or
    /// an intermediate CA it signed (sent to OTS after each leaf).
    pub signer_cert: Option<PathBuf>,
    /// Its private key, PKCS#8 PEM, encrypted or not. Default: `ca-do-not-share.key` beside
    /// `ca`, as OTS writes it.
    pub signer_key: Option<PathBuf>,
    /// A file holding the key's password.
    pub signer_key_password_file: Option<PathBuf>,
    /// Otherwise, the environment variable holding it.
    pub signer_key_password_env: String,
    /// The name OTS's server certificate carries (a SAN, or the subject CN as OTS's own has).
    pub server_name: String,
    #[serde(with = "humantime_serde")]
    pub cert_lifetime: Duration,
    /// Renewed in the background once less than this is left.
    #[serde(with = "humantime_serde")]
    pub renew_before: Duration,
    pub max_cached_certs: usize,
    /// New certificates per second, and the burst: a flood of new CNs waits or is refused.
    pub issue_rate: u32,
}

impl Default for ReoriginateConfig {
    fn default() -> Self {
        Self {
            ca: None,
            signer_cert: None,
            signer_key: None,
            signer_key_password_file: None,
            signer_key_password_env: "OTS_CA_PASSWORD".to_owned(),
            server_name: "opentakserver".to_owned(),
            cert_lifetime: Duration::from_secs(24 * 3600),
            renew_before: Duration::from_secs(8 * 3600),
            max_cached_certs: 10_000,
            issue_rate: 20,
        }
    }
}

impl ReoriginateConfig {
    /// OTS's CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.ca
            .clone()
            .unwrap_or_else(|| ots_data_folder().join("ca").join("ca.pem"))
    }

    pub fn signer_cert_path(&self) -> PathBuf {
        self.signer_cert.clone().unwrap_or_else(|| self.ca_path())
    }

    pub fn signer_key_path(&self) -> PathBuf {
        self.signer_key.clone().unwrap_or_else(|| {
            self.ca_path()
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf)
                .join("ca-do-not-share.key")
        })
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if rustls::pki_types::ServerName::try_from(self.server_name.as_str()).is_err() {
            return Err(invalid(
                format!("{key}.server_name"),
                "not a DNS name or IP address",
            ));
        }
        if self.cert_lifetime < Duration::from_secs(600) {
            return Err(invalid(
                format!("{key}.cert_lifetime"),
                "must be at least 10m",
            ));
        }
        if self.renew_before >= self.cert_lifetime {
            return Err(invalid(
                format!("{key}.renew_before"),
                "must be shorter than cert_lifetime",
            ));
        }
        if self.max_cached_certs == 0 {
            return Err(invalid(
                format!("{key}.max_cached_certs"),
                "must be at least 1",
            ));
        }
        if !(1..=10_000).contains(&self.issue_rate) {
            return Err(invalid(
                format!("{key}.issue_rate"),
                "must be between 1 and 10000 per second",
            ));
        }
        if self.signer_key_password_env.is_empty() {
            return Err(invalid(
                format!("{key}.signer_key_password_env"),
                "must name an environment variable",
            ));
        }
        Ok(())
    }
}
