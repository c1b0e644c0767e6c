//! takgate's one typed configuration: parsed from TOML, validated before any port is bound.
//!
//! Every key is documented in README.md. Unknown keys are errors (`deny_unknown_fields`) so a typo
//! cannot silently fall back to a default. A section whose keys are all optional takes its
//! defaults from its one `impl Default` (`#[serde(default)]` on the struct); a table with
//! required keys (a listener, its TLS, a route) names a default function per optional key.
//! The few keys whose text is parsed into another type (`client_cert_header`, `log.level`,
//! `stream[i].upstream`) are parsed by [`Config::parse`]'s validation, which reports a bad one
//! under its full key, and the app uses the parsed value.
//!
//! Layout: `upstream`, `log`, `http`, `tls`, `stream`, `identity`, `reoriginate` hold one part
//! of the file each with its checks; `checks` the checks they share; `into_cot` the mapping of
//! config values onto the `cot` library's.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::http::HeaderName;
use bytesize::ByteSize;
use serde::Deserialize;

mod checks;
mod compression;
mod http;
mod http2;
mod identity;
mod into_cot;
mod log;
mod reoriginate;
mod socketio;
mod stream;
mod tls;
mod upstream;

pub use self::compression::CompressionConfig;
pub use self::http::{CorsConfig, HttpListenerConfig, Profile, RouteConfig, DEFAULT_UI_ROOT};
pub use self::http2::Http2Config;
pub use self::identity::{IdentityConfig, UnavailableConfig};
pub use self::log::{LogConfig, LogFilter, LogFormat};
pub use self::reoriginate::ReoriginateConfig;
pub use self::socketio::SocketIoConfig;
pub use self::stream::{
    LimitPolicyConfig, LimitsConfig, MalformedConfig, StreamListenerConfig, StreamMode,
    UpstreamAddr,
};
pub use self::tls::{
    ots_data_folder, ots_stream_tls, ClientAuthConfig, TlsConfig, TlsVersionConfig,
};
pub use self::upstream::UpstreamConfig;

use self::checks::{invalid, validate_name};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `client_cert_header` as written; `validate` parses it into `client_cert_header`.
    #[serde(rename = "client_cert_header")]
    client_cert_header_text: String,
    /// Header that carries the verified client certificate to OTS (OTS's `OTS_SSL_CERT_HEADER`).
    /// Any copy of it sent by a client is removed on every listener.
    #[serde(skip)]
    pub client_cert_header: HeaderName,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub memory: MemoryConfig,
    pub socketio: SocketIoConfig,
    /// With neither `[[http]]` nor `[[stream]]` in the file, the built-in listeners run (those
    /// of `Config::default()`); with either, exactly the listeners the file lists.
    #[serde(default)]
    pub http: Vec<HttpListenerConfig>,
    #[serde(default)]
    pub stream: Vec<StreamListenerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            client_cert_header_text: "X-Ssl-Cert".to_owned(),
            client_cert_header: HeaderName::from_static("x-ssl-cert"),
            upstream: UpstreamConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            memory: MemoryConfig::default(),
            socketio: SocketIoConfig::default(),
            http: vec![HttpListenerConfig::builtin()],
            stream: vec![StreamListenerConfig::builtin()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How long open WebSockets are left to close by themselves after SIGTERM before takgate closes them.
    #[serde(with = "humantime_serde")]
    pub websocket_grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            websocket_grace: Duration::from_secs(5),
        }
    }
}

/// What the process may hold in memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Every stream session together: a fixed share per session for its sockets and TLS state,
    /// and the buffers it holds. New sessions are refused from 7/8 of it; sized for a pod with
    /// a 256 MiB limit.
    pub stream_budget: ByteSize,
}

impl MemoryConfig {
    pub const MIN_STREAM_BUDGET: ByteSize = ByteSize::mib(1);
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            stream_budget: ByteSize::mib(128),
        }
    }
}

// Defaults that tables with required keys share (see the module docs).

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_true() -> bool {
    true
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })?;
        Ok(config.resolve_paths(path.parent().unwrap_or(Path::new("."))))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            source: Box::new(source),
        })?;
        if config.http.is_empty() && config.stream.is_empty() {
            let builtin = Config::default();
            config.http = builtin.http;
            config.stream = builtin.stream;
        }
        config.validate()?;
        Ok(config)
    }

    /// Relative file paths in the config are taken relative to the config file, as nginx does
    /// with its prefix, so a config and its certificates can move together.
    fn resolve_paths(mut self, base: &Path) -> Self {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for l in &mut self.http {
            fix(&mut l.ui_root);
            if let Some(tls) = &mut l.tls {
                tls.resolve_paths(fix);
            }
        }
        for l in &mut self.stream {
            if let Some(tls) = &mut l.tls {
                tls.resolve_paths(fix);
            }
            if let Some(r) = &mut l.reoriginate {
                for p in [
                    &mut r.ca,
                    &mut r.signer_cert,
                    &mut r.signer_key,
                    &mut r.signer_key_password_file,
                ]
                .into_iter()
                .flatten()
                {
                    fix(p);
                }
            }
            if let Some(id) = &mut l.identity {
                for p in [&mut id.token_file, &mut id.password_file]
                    .into_iter()
                    .flatten()
                {
                    fix(p);
                }
            }
        }
        self
    }

    /// Settings that are valid but probably not what the operator wants; `takgate check` prints
    /// them and startup logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.upstream.response_timeout <= Duration::from_secs(25) {
            out.push(format!(
                "upstream.response_timeout = {:?} is not longer than engine.io's 25 s ping interval: \
                 Socket.IO long-polling requests will be cut",
                self.upstream.response_timeout
            ));
        }
        for (i, l) in self.http.iter().enumerate() {
            if l.profile != Profile::Redirect && !l.ui_root.is_dir() {
                out.push(format!(
                    "http[{i}].ui_root: {} is not a folder yet; takgate answers with a page \
                     saying so until it appears",
                    l.ui_root.display()
                ));
            }
            if let Some(tls) = &l.tls {
                tls.missing_files(&mut out, &format!("http[{i}].tls"));
            }
            if l.profile == Profile::Marti
                && l.tls
                    .as_ref()
                    .is_none_or(|t| t.client_auth() == ClientAuthConfig::None)
            {
                out.push(format!(
                    "http[{i}]: profile marti without client certificate verification: \
                     OTS will get no {} and certificate-gated Marti endpoints will refuse",
                    self.client_cert_header_text
                ));
            }
        }
        for (i, l) in self.stream.iter().enumerate() {
            if let Some(tls) = l.effective_tls() {
                tls.missing_files(&mut out, &format!("stream[{i}].tls"));
            }
            if let Some(r) = l.effective_reoriginate() {
                let files = [
                    ("ca", r.ca_path()),
                    ("signer_cert", r.signer_cert_path()),
                    ("signer_key", r.signer_key_path()),
                ];
                for (field, path) in files.into_iter().filter(|(_, p)| !p.exists()) {
                    out.push(format!(
                        "stream[{i}].reoriginate.{field}: {} does not exist yet; the listener \
                         refuses connections until it does",
                        path.display()
                    ));
                }
            }
        }
        out
    }

    /// Checks every key, and parses the ones the app uses in another form than their text.
    fn validate(&mut self) -> Result<(), ConfigError> {
        self.client_cert_header =
            HeaderName::from_bytes(self.client_cert_header_text.as_bytes())
                .map_err(|_| invalid("client_cert_header", "not a valid header name"))?;
        self.log.validate()?;
        self.upstream.validate()?;
        self.socketio.validate()?;
        if self.memory.stream_budget.as_u64() < MemoryConfig::MIN_STREAM_BUDGET.as_u64() {
            return Err(invalid(
                "memory.stream_budget",
                format!(
                    "must be at least {}: a budget smaller than a few sessions' buffers refuses everyone",
                    MemoryConfig::MIN_STREAM_BUDGET
                ),
            ));
        }
        let http = self
            .http
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("http[{i}]"), l.name.as_str(), l.listen));
        let stream = self
            .stream
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("stream[{i}]"), l.name.as_str(), l.listen));
        let mut names = HashSet::new();
        let mut addrs = HashSet::from([self.admin.listen]);
        for (key, name, listen) in http.chain(stream) {
            validate_name(&format!("{key}.name"), name)?;
            if !names.insert(name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate listener name {name:?}"),
                ));
            }
            if listen.port() != 0 && !addrs.insert(listen) {
                return Err(invalid(
                    format!("{key}.listen"),
                    format!("{listen} is used twice"),
                ));
            }
        }
        for (i, l) in self.http.iter().enumerate() {
            l.validate(&format!("http[{i}]"))?;
        }
        for (i, l) in self.stream.iter_mut().enumerate() {
            l.validate(&format!("stream[{i}]"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
