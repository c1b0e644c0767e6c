//! `[http.tls]` and `[stream.tls]`, and the files OTS itself serves CoT TLS with.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::checks::invalid;
use super::ConfigError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthConfig {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersionConfig {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl fmt::Display for TlsVersionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersionConfig::Tls12 => "1.2",
            TlsVersionConfig::Tls13 => "1.3",
        })
    }
}

/// `cert` and `key` are required, so the optional keys name their defaults one by one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Defaults to `none` on `[[http]]` listeners and `required` on `[[stream]]` listeners.
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
    #[serde(default = "default_versions")]
    pub versions: Vec<TlsVersionConfig>,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_versions() -> Vec<TlsVersionConfig> {
    vec![TlsVersionConfig::Tls12, TlsVersionConfig::Tls13]
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TlsConfig {
    /// The client certificate policy of an `[[http]]` listener.
    pub fn client_auth(&self) -> ClientAuthConfig {
        self.client_auth.unwrap_or(ClientAuthConfig::None)
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.versions.is_empty() {
            return Err(invalid(format!("{key}.versions"), "must not be empty"));
        }
        if self
            .client_auth
            .is_some_and(|a| a != ClientAuthConfig::None)
            && self.client_ca.is_none()
        {
            return Err(invalid(
                format!("{key}.client_ca"),
                "client_auth = optional/required needs a client_ca",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(invalid(format!("{key}.handshake_timeout"), "must be > 0"));
        }
        Ok(())
    }

    /// Relative paths are taken relative to `base`, the config file's folder.
    pub(super) fn resolve_paths(&mut self, fix: impl Fn(&mut PathBuf)) {
        fix(&mut self.cert);
        fix(&mut self.key);
        for p in [&mut self.client_ca, &mut self.crl].into_iter().flatten() {
            fix(p);
        }
    }

    /// A TLS file that does not exist yet is not an error (OTS may create it later, and the
    /// listener waits for it), but `takgate check` says so, since a typo looks the same.
    pub(super) fn missing_files(&self, out: &mut Vec<String>, key: &str) {
        let files = [
            ("cert", Some(&self.cert)),
            ("key", Some(&self.key)),
            ("client_ca", self.client_ca.as_ref()),
            ("crl", self.crl.as_ref()),
        ];
        for (field, path) in files {
            if let Some(path) = path.filter(|p| !p.exists()) {
                out.push(format!(
                    "{key}.{field}: {} does not exist yet; the listener refuses connections until it does",
                    path.display()
                ));
            }
        }
    }
}

/// OTS's data folder: `$OTS_DATA_FOLDER`, else `~/ots`.
pub fn ots_data_folder() -> PathBuf {
    if let Some(dir) = std::env::var_os("OTS_DATA_FOLDER") {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join("ots")
}

/// The TLS files OTS itself uses on 8089: its server certificate and CA.
pub fn ots_stream_tls() -> TlsConfig {
    let ca = ots_data_folder().join("ca");
    let server = ca.join("certs").join("opentakserver");
    TlsConfig {
        cert: server.join("opentakserver.pem"),
        key: server.join("opentakserver.nopass.key"),
        client_ca: Some(ca.join("ca.pem")),
        // None, as OTS's nginx and OTS itself: OTS writes ca/ca.crl once, empty, and never
        // revokes. An operator who revokes with `openssl ca` sets `crl` to it; until the file
        // exists, a listener with a `crl` refuses every client.
        crl: None,
        client_auth: Some(ClientAuthConfig::Required),
        versions: default_versions(),
        handshake_timeout: default_handshake_timeout(),
    }
}
