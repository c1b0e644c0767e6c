//! takgate's one typed configuration: parsed from TOML, validated before any port is bound.
//!
//! Every key is documented in README.md. Unknown keys are errors (`deny_unknown_fields`) so a typo
//! cannot silently fall back to a default.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use http::Uri;
use serde::Deserialize;

/// Where the OTS installer puts the web UI; the built-in default `ui_root`.
pub const DEFAULT_UI_ROOT: &str = "/var/www/html/opentakserver";

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

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Header that carries the verified client certificate to OTS (OTS's `OTS_SSL_CERT_HEADER`).
    /// Any copy of it sent by a client is removed on every listener.
    #[serde(default = "default_client_cert_header")]
    pub client_cert_header: String,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    /// With neither `[[http]]` nor `[[stream]]` in the file, the built-in listeners run (those
    /// of `Config::default()`); with either, exactly the listeners the file lists.
    #[serde(default)]
    pub http: Vec<HttpListenerConfig>,
    #[serde(default)]
    pub stream: Vec<StreamListenerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The OTS API (Flask and Socket.IO).
    #[serde(default = "default_upstream_url", with = "uri_serde")]
    pub url: Uri,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long the upstream may take to answer once it has the whole request, to take each
    /// part of a request body, and to send each chunk of a response body.
    /// Must exceed engine.io's 25 s ping interval, or long-polling requests would be cut.
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Path probed by `/readyz`.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Idle pooled connections to an upstream are closed after this long.
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `takgate=debug,info`. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// One line per request at INFO under the target `takgate::access`.
    #[serde(default = "default_true")]
    pub access_log: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace: Duration,
    /// How long open WebSockets are left to close by themselves after SIGTERM before takgate closes them.
    #[serde(default = "default_websocket_grace", with = "humantime_serde")]
    pub websocket_grace: Duration,
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

/// Which nginx server block of OTS a listener reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// ots_http 8080 / ots_https 443: the UI, /api, /socket.io, /webrtc, /hls; /Marti only when plain.
    Web,
    /// ots_https 8443: /Marti, /api, /files with the client certificate; /Marti/api/tls is 404.
    Marti,
    /// ots_certificate_enrollment 8446: /Marti/api/tls and /oauth only.
    Enroll,
    /// ots_http 80: everything redirects to https.
    Redirect,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Web => "web",
            Profile::Marti => "marti",
            Profile::Enroll => "enroll",
            Profile::Redirect => "redirect",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub profile: Profile,
    #[serde(default = "default_ui_root")]
    pub ui_root: PathBuf,
    /// Memory for whole UI files served from RAM instead of disk; 0 turns the cache off.
    #[serde(default = "default_static_cache")]
    pub static_cache: ByteSize,
    /// Files larger than this are always read from disk.
    #[serde(default = "default_static_cache_max_file")]
    pub static_cache_max_file: ByteSize,
    /// Largest request body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Largest request head (request line and headers); larger ones get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Time allowed for a client to send the whole request head.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time allowed between two chunks of a request body.
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections kept open at once; further clients wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `redirect` profile: the https port to send clients to (443 is left out of the URL).
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Host used when a request carries no Host header (HTTP/1.0 clients).
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub cors: CorsConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

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
    #[serde(default = "default_tls_versions")]
    pub versions: Vec<TlsVersionConfig>,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://tak.example.org:8443`) or subdomain patterns
    /// (`https://*.example.org`). Empty: same-origin only.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "default_cors_methods")]
    pub allowed_methods: Vec<String>,
    #[serde(default = "default_cors_headers")]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default = "default_cors_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, matched on whole segments (`/hls` matches `/hls` and `/hls/x`, not `/hlsx`).
    pub prefix: String,
    #[serde(with = "uri_serde")]
    pub upstream: Uri,
    /// Drop the prefix before forwarding, as OTS's `location ~ ^/hls(/?)(.*)$ { proxy_pass .../$2 }`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Verify the upstream's certificate for https upstreams (MediaMTX uses OTS's self-signed one).
    #[serde(default = "default_true")]
    pub tls_verify: bool,
}

/// How a stream listener treats the client's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamMode {
    /// Verify the client certificate (and optionally its CN against OTS's users), frame and
    /// validate CoT, relay to OTS's plain port.
    #[default]
    Terminate,
    /// As terminate, then on to OTS's own SSL listener over TLS with a certificate for the
    /// client's own CN, issued here and signed by OTS's CA: OTS sees the same user.
    Reoriginate,
    /// Relay the client's TLS bytes untouched to OTS's own SSL listener.
    Passthrough,
    /// As terminate, opening the upstream connection with a PROXY v2 header.
    ProxyProtocol,
    /// TLS-terminating byte relay without CoT framing (MQTT, RTSP, RTMP).
    Raw,
    /// No TLS (OTS's plain CoT port 8088): CoT framed and validated, with limits and metrics.
    Plain,
}

/// What to do with a CoT frame that is not well-formed XML.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MalformedConfig {
    /// Drop the frame, count it, and go on with the next one.
    #[default]
    Drop,
    /// Close the connection.
    Close,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// `host:port` of OTS's CoT port (8088 plain for terminate, 8089 for passthrough).
    pub upstream: String,
    #[serde(default)]
    pub mode: StreamMode,
    /// Omitted: OTS's own files under `$OTS_DATA_FOLDER/ca` (see README), client certificates
    /// required.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_frame")]
    pub max_frame: ByteSize,
    #[serde(default = "default_read_buffer")]
    pub read_buffer: ByteSize,
    /// The kernel's send buffer on each upstream socket; 0 leaves it to the kernel.
    #[serde(default = "default_upstream_send_buffer")]
    pub upstream_send_buffer: ByteSize,
    #[serde(default)]
    pub on_malformed: MalformedConfig,
    /// Refuse client certificates without a subject CN.
    #[serde(default = "default_true")]
    pub require_cn: bool,
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    /// Reoriginate mode's signing material and certificate policy (omitted: OTS's CA folder).
    #[serde(default)]
    pub reoriginate: Option<ReoriginateConfig>,
    /// What one client may send, and how many sessions one CN may hold (framed modes).
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// What happens to a client's frames past its rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitPolicyConfig {
    /// Read the client no faster than its rate: nothing lost, its sends slow down.
    #[default]
    Delay,
    /// Drop frames past the rate, counted.
    Drop,
    /// Close the session.
    Close,
}

/// Per-session rates and per-CN sessions; 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// CoT frames a second from one client (a normal ATAK client sends at most about 10).
    pub events_per_second: u32,
    /// Frames a client may send at once above the rate (ATAK sends a few dozen on connect).
    pub events_burst: u32,
    pub bytes_per_second: ByteSize,
    /// At least `max_frame`, so any frame can pass.
    pub bytes_burst: ByteSize,
    /// Sessions at once per certificate CN (a device reconnecting before its old session timed
    /// out holds two for a while).
    pub sessions_per_cn: usize,
    pub on_limit: LimitPolicyConfig,
    /// Bytes of frames that may wait for OTS while it is not reading, per session; past it the
    /// oldest position reports are shed, then the newest frames (counted). Not 0: at least
    /// `read_buffer`, so one read's frames always fit.
    pub upstream_queue: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            events_per_second: 50,
            events_burst: 200,
            bytes_per_second: ByteSize::mib(1),
            bytes_burst: ByteSize::mib(4),
            sessions_per_cn: 8,
            on_limit: LimitPolicyConfig::Delay,
            upstream_queue: ByteSize::kib(128),
        }
    }
}

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

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
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

/// When OTS cannot be asked who is active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnavailableConfig {
    #[default]
    FailClosed,
    LastKnown,
}

/// Check each client certificate's CN against OTS's active users, as OTS's own SSL listener does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The OTS API; defaults to `upstream.url`.
    #[serde(default, with = "uri_serde_opt")]
    pub api: Option<Uri>,
    /// A file holding an administrator's `Authentication-Token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Or a service account to log in with.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_identity_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    #[serde(default)]
    pub on_unavailable: UnavailableConfig,
}

// === defaults ===

fn default_client_cert_header() -> String {
    "X-Ssl-Cert".to_owned()
}
fn default_upstream_url() -> Uri {
    Uri::from_static("http://127.0.0.1:8081")
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_health_path() -> String {
    "/api/health".to_owned()
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9100))
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_websocket_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_ui_root() -> PathBuf {
    PathBuf::from(DEFAULT_UI_ROOT)
}
/// Room for a whole single-page UI build; entries are evicted least recently used first.
fn default_static_cache() -> ByteSize {
    ByteSize::mib(32)
}
/// Above the size of a typical Vite chunk, so a UI's hot files are all cacheable.
fn default_static_cache_max_file() -> ByteSize {
    ByteSize::mib(4)
}
fn default_max_body() -> ByteSize {
    ByteSize::mib(100)
}
fn default_max_header_bytes() -> ByteSize {
    ByteSize::kib(32)
}
fn default_max_headers() -> usize {
    100
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_https_port() -> u16 {
    443
}
fn default_tls_versions() -> Vec<TlsVersionConfig> {
    vec![TlsVersionConfig::Tls12, TlsVersionConfig::Tls13]
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .map(str::to_owned)
        .to_vec()
}
fn default_cors_headers() -> Vec<String> {
    [
        "Authorization",
        "Content-Type",
        "X-XSRF-Token",
        "X-CSRF-Token",
        "Authentication-Token",
        "X-Requested-With",
    ]
    .map(str::to_owned)
    .to_vec()
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_frame() -> ByteSize {
    ByteSize::mib(1)
}
fn default_upstream_send_buffer() -> ByteSize {
    ByteSize::kib(64)
}
fn default_read_buffer() -> ByteSize {
    ByteSize::kib(16)
}
fn default_identity_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_cors_max_age() -> Duration {
    Duration::from_secs(600)
}

fn default_http_listeners() -> Vec<HttpListenerConfig> {
    vec![HttpListenerConfig {
        name: "web".to_owned(),
        listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        profile: Profile::Web,
        ui_root: default_ui_root(),
        static_cache: default_static_cache(),
        static_cache_max_file: default_static_cache_max_file(),
        max_body: default_max_body(),
        max_header_bytes: default_max_header_bytes(),
        max_headers: default_max_headers(),
        header_read_timeout: default_header_read_timeout(),
        body_read_timeout: default_body_read_timeout(),
        max_connections: default_max_connections(),
        https_port: default_https_port(),
        server_name: None,
        tls: None,
        cors: CorsConfig::default(),
        routes: Vec::new(),
    }]
}

/// OTS's CoT TLS port in front of its plain one, the zero-config gateway of an OTS host.
fn default_stream_listeners() -> Vec<StreamListenerConfig> {
    vec![StreamListenerConfig {
        name: "cot-tls".to_owned(),
        listen: SocketAddr::from(([0, 0, 0, 0], 8089)),
        upstream: "127.0.0.1:8088".to_owned(),
        mode: StreamMode::Terminate,
        tls: None,
        connect_timeout: default_connect_timeout(),
        idle_timeout: default_idle_timeout(),
        max_connections: default_max_connections(),
        max_frame: default_max_frame(),
        read_buffer: default_read_buffer(),
        upstream_send_buffer: default_upstream_send_buffer(),
        on_malformed: MalformedConfig::Drop,
        require_cn: true,
        identity: None,
        reoriginate: None,
        limits: LimitsConfig::default(),
    }]
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
        versions: default_tls_versions(),
        handshake_timeout: default_handshake_timeout(),
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: default_upstream_url(),
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            health_path: default_health_path(),
            pool_idle_timeout: default_pool_idle_timeout(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
            access_log: true,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: default_grace(),
            websocket_grace: default_websocket_grace(),
        }
    }
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            allowed_methods: default_cors_methods(),
            allowed_headers: default_cors_headers(),
            expose_headers: Vec::new(),
            max_age: default_cors_max_age(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            client_cert_header: default_client_cert_header(),
            upstream: UpstreamConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            memory: MemoryConfig::default(),
            http: default_http_listeners(),
            stream: default_stream_listeners(),
        }
    }
}

mod uri_serde_opt {
    use http::Uri;
    use serde::Deserializer;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uri>, D::Error> {
        super::uri_serde::deserialize(d).map(Some)
    }
}

mod uri_serde {
    use http::Uri;
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uri, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Uri>()
            .map_err(|e| serde::de::Error::custom(format!("invalid URL {s:?}: {e}")))
    }
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
            config.http = default_http_listeners();
            config.stream = default_stream_listeners();
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
        let fix_tls = |tls: &mut TlsConfig| {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                fix(ca);
            }
            if let Some(crl) = &mut tls.crl {
                fix(crl);
            }
        };
        for l in &mut self.http {
            fix(&mut l.ui_root);
            if let Some(tls) = &mut l.tls {
                fix_tls(tls);
            }
        }
        for l in &mut self.stream {
            if let Some(tls) = &mut l.tls {
                fix_tls(tls);
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
                missing_tls_files(&mut out, &format!("http[{i}].tls"), tls);
            }
            if l.profile == Profile::Marti
                && l.tls
                    .as_ref()
                    .is_none_or(|t| t.client_auth() == ClientAuthConfig::None)
            {
                out.push(format!(
                    "http[{i}]: profile marti without client certificate verification: \
                     OTS will get no {} and certificate-gated Marti endpoints will refuse",
                    self.client_cert_header
                ));
            }
        }
        for (i, l) in self.stream.iter().enumerate() {
            if let Some(tls) = l.effective_tls() {
                missing_tls_files(&mut out, &format!("stream[{i}].tls"), &tls);
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

    fn validate(&self) -> Result<(), ConfigError> {
        http::HeaderName::from_bytes(self.client_cert_header.as_bytes())
            .map_err(|_| invalid("client_cert_header", "not a valid header name"))?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("not a tracing filter: {e}")))?;
        validate_upstream_uri("upstream.url", &self.upstream.url)?;
        if self.upstream.url.scheme_str() != Some("http") {
            return Err(invalid(
                "upstream.url",
                "the OTS API is plain http (OTS listens on 127.0.0.1:8081 without TLS)",
            ));
        }
        if !self.upstream.health_path.starts_with('/') {
            return Err(invalid("upstream.health_path", "must start with '/'"));
        }
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
        for (i, l) in self.stream.iter().enumerate() {
            l.validate(&format!("stream[{i}]"))?;
        }
        Ok(())
    }
}

/// `key.field` must lie in `min..=max` (`between` says so in words).
fn in_range(
    key: &str,
    field: &str,
    value: u64,
    min: u64,
    max: u64,
    between: &str,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            format!("{key}.{field}"),
            format!("must be between {between}"),
        ))
    }
}

/// A listener's connection limit and timeouts must all be above zero.
fn positive(
    key: &str,
    max_connections: usize,
    timeouts: &[(&str, Duration)],
) -> Result<(), ConfigError> {
    if max_connections == 0 {
        return Err(invalid(format!("{key}.max_connections"), "must be > 0"));
    }
    match timeouts.iter().find(|(_, d)| d.is_zero()) {
        Some((name, _)) => Err(invalid(format!("{key}.{name}"), "must be > 0")),
        None => Ok(()),
    }
}

fn validate_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            key,
            "must be non-empty letters, digits, '-' or '_' (it is a metric label)",
        ));
    }
    Ok(())
}

impl StreamListenerConfig {
    /// The TLS this listener terminates with: its own section, or OTS's files.
    pub fn effective_tls(&self) -> Option<TlsConfig> {
        match self.mode {
            StreamMode::Passthrough | StreamMode::Plain => None,
            _ => Some(self.tls.clone().unwrap_or_else(ots_stream_tls)),
        }
    }

    /// Reoriginate mode's settings: its own section, or OTS's CA folder.
    pub fn effective_reoriginate(&self) -> Option<ReoriginateConfig> {
        (self.mode == StreamMode::Reoriginate).then(|| self.reoriginate.clone().unwrap_or_default())
    }

    /// Client certificates are required on stream listeners unless said otherwise.
    pub fn client_auth(tls: &TlsConfig) -> ClientAuthConfig {
        tls.client_auth.unwrap_or(ClientAuthConfig::Required)
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let (host, port) = self.upstream.rsplit_once(':').ok_or_else(|| {
            invalid(
                format!("{key}.upstream"),
                "must be host:port, e.g. 127.0.0.1:8088",
            )
        })?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid(
                format!("{key}.upstream"),
                "must be host:port, e.g. 127.0.0.1:8088",
            ));
        }
        if self.mode == StreamMode::Passthrough && self.tls.is_some() {
            return Err(invalid(
                format!("{key}.tls"),
                "passthrough relays the client's TLS to OTS untouched; it takes no [stream.tls]",
            ));
        }
        if self.mode == StreamMode::Plain && self.tls.is_some() {
            return Err(invalid(
                format!("{key}.tls"),
                "plain is CoT over plain TCP; it takes no [stream.tls]",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{key}.tls"))?;
            if Self::client_auth(tls) != ClientAuthConfig::None && tls.client_ca.is_none() {
                return Err(invalid(
                    format!("{key}.tls.client_ca"),
                    "stream listeners require client certificates by default; give client_ca \
                     or set client_auth = \"none\"",
                ));
            }
        }
        in_range(
            key,
            "max_frame",
            self.max_frame.as_u64(),
            1 << 10,
            64 << 20,
            "1KiB and 64MiB",
        )?;
        in_range(
            key,
            "read_buffer",
            self.read_buffer.as_u64(),
            1 << 10,
            1 << 20,
            "1KiB and 1MiB",
        )?;
        if self.upstream_send_buffer.as_u64() != 0 {
            in_range(
                key,
                "upstream_send_buffer",
                self.upstream_send_buffer.as_u64(),
                4 << 10,
                64 << 20,
                "4KiB and 64MiB (or 0, the kernel's own)",
            )?;
        }
        positive(
            key,
            self.max_connections,
            &[
                ("connect_timeout", self.connect_timeout),
                ("idle_timeout", self.idle_timeout),
            ],
        )?;
        match (&self.reoriginate, self.mode) {
            (Some(r), StreamMode::Reoriginate) => r.validate(&format!("{key}.reoriginate"))?,
            (Some(_), _) => {
                return Err(invalid(
                    format!("{key}.reoriginate"),
                    "only mode = \"reoriginate\" uses it",
                ))
            }
            (None, _) => {}
        }
        if self.limits.bytes_per_second.as_u64() > 0
            && self.limits.bytes_burst.as_u64() < self.max_frame.as_u64()
        {
            return Err(invalid(
                format!("{key}.limits.bytes_burst"),
                format!(
                    "must be at least max_frame ({}), or a frame that size could never pass",
                    self.max_frame
                ),
            ));
        }
        if self.limits.upstream_queue.as_u64() < self.read_buffer.as_u64() {
            return Err(invalid(
                format!("{key}.limits.upstream_queue"),
                format!(
                    "must be at least read_buffer ({}): the frames of one read always wait together",
                    self.read_buffer
                ),
            ));
        }
        if self.mode == StreamMode::Reoriginate && !self.require_cn {
            return Err(invalid(
                format!("{key}.require_cn"),
                "reoriginate reaches OTS as the client's CN: a client without one cannot be relayed",
            ));
        }
        if let Some(id) = &self.identity {
            let key = format!("{key}.identity");
            if !matches!(
                self.mode,
                StreamMode::Terminate | StreamMode::Reoriginate | StreamMode::ProxyProtocol
            ) {
                return Err(invalid(
                    &key,
                    "only terminate, reoriginate and proxy-protocol modes see the client certificate",
                ));
            }
            match (&id.token_file, &id.username, &id.password_file) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                _ => {
                    return Err(invalid(
                        &key,
                        "give either token_file, or username and password_file",
                    ))
                }
            }
            if let Some(api) = &id.api {
                validate_upstream_uri(&format!("{key}.api"), api)?;
            }
            if id.refresh < Duration::from_secs(1) {
                return Err(invalid(format!("{key}.refresh"), "must be at least 1s"));
            }
        }
        Ok(())
    }
}

/// A TLS file that does not exist yet is not an error (OTS may create it later, and the
/// listener waits for it), but `takgate check` says so, since a typo looks the same.
fn missing_tls_files(out: &mut Vec<String>, key: &str, tls: &TlsConfig) {
    let files = [
        ("cert", Some(&tls.cert)),
        ("key", Some(&tls.key)),
        ("client_ca", tls.client_ca.as_ref()),
        ("crl", tls.crl.as_ref()),
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

fn validate_upstream_uri(key: &str, uri: &Uri) -> Result<(), ConfigError> {
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(invalid(key, "must be an http:// or https:// URL")),
    }
    if uri.host().is_none() {
        return Err(invalid(key, "has no host"));
    }
    if uri.query().is_some() {
        return Err(invalid(key, "must not have a query"));
    }
    Ok(())
}

impl HttpListenerConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.max_body.as_u64() == 0 {
            return Err(invalid(format!("{key}.max_body"), "must be > 0"));
        }
        // Under 8 KiB, a browser with OTS's session and XSRF cookies can already be refused.
        in_range(
            key,
            "max_header_bytes",
            self.max_header_bytes.as_u64(),
            8 << 10,
            1 << 20,
            "8KiB and 1MiB",
        )?;
        in_range(
            key,
            "max_headers",
            self.max_headers as u64,
            1,
            1000,
            "1 and 1000",
        )?;
        positive(
            key,
            self.max_connections,
            &[
                ("header_read_timeout", self.header_read_timeout),
                ("body_read_timeout", self.body_read_timeout),
            ],
        )?;
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{key}.tls"))?;
        }
        self.cors.validate(&format!("{key}.cors"))?;
        let mut prefixes = HashSet::new();
        for (j, r) in self.routes.iter().enumerate() {
            let rkey = format!("{key}.route[{j}]");
            if !r.prefix.starts_with('/') || r.prefix.len() < 2 || r.prefix.ends_with('/') {
                return Err(invalid(
                    format!("{rkey}.prefix"),
                    "must start with '/', not end with '/', and not be '/' alone",
                ));
            }
            if !prefixes.insert(r.prefix.as_str()) {
                return Err(invalid(
                    format!("{rkey}.prefix"),
                    format!("duplicate prefix {:?}", r.prefix),
                ));
            }
            validate_upstream_uri(&format!("{rkey}.upstream"), &r.upstream)?;
        }
        Ok(())
    }
}

impl TlsConfig {
    /// The client certificate policy of an `[[http]]` listener.
    pub fn client_auth(&self) -> ClientAuthConfig {
        self.client_auth.unwrap_or(ClientAuthConfig::None)
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
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
}

impl CorsConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for o in &self.allowed_origins {
            if o == "*" {
                if self.allow_credentials {
                    return Err(invalid(
                        format!("{key}.allowed_origins"),
                        "\"*\" cannot be combined with allow_credentials = true",
                    ));
                }
                continue;
            }
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .ok_or_else(|| {
                    invalid(
                        format!("{key}.allowed_origins"),
                        format!("{o:?} must be \"*\" or start with http:// or https://"),
                    )
                })?;
            let host = rest.strip_prefix("*.").unwrap_or(rest);
            if host.is_empty() || host.contains(['/', '*', '?', '#']) {
                return Err(invalid(
                    format!("{key}.allowed_origins"),
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        for m in &self.allowed_methods {
            http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                invalid(
                    format!("{key}.allowed_methods"),
                    format!("{m:?} is not a method"),
                )
            })?;
        }
        for h in self.allowed_headers.iter().chain(&self.expose_headers) {
            http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                invalid(
                    format!("{key}.allowed_headers"),
                    format!("{h:?} is not a header name"),
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
