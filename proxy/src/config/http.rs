//! `[[http]]` listeners: profile, limits, TLS, CORS and custom routes.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use http::Uri;
use serde::Deserialize;

use super::checks::{in_range, invalid, positive};
use super::compression::CompressionConfig;
use super::http2::Http2Config;
use super::tls::TlsConfig;
use super::upstream::{uri_serde, validate_upstream_uri};
use super::{default_max_connections, default_true, ConfigError};

/// Where the OTS installer puts the web UI; the built-in default `ui_root`.
pub const DEFAULT_UI_ROOT: &str = "/var/www/html/opentakserver";

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

/// `name`, `listen` and `profile` are required, so the optional keys name their defaults one
/// by one; `HttpListenerConfig::builtin` takes the same ones.
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
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub http2: Http2Config,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
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
fn default_https_port() -> u16 {
    443
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://tak.example.org:8443`) or subdomain patterns
    /// (`https://*.example.org`). Empty: same-origin only.
    pub allowed_origins: Vec<String>,
    pub allow_credentials: bool,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let owned = |list: &[&str]| list.iter().map(|&s| s.to_owned()).collect();
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            allowed_methods: owned(&["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            allowed_headers: owned(&[
                "Authorization",
                "Content-Type",
                "X-XSRF-Token",
                "X-CSRF-Token",
                "Authentication-Token",
                "X-Requested-With",
            ]),
            expose_headers: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
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

impl HttpListenerConfig {
    /// The web UI and API on 8080, the listener of a config without `[[http]]` or `[[stream]]`.
    pub(super) fn builtin() -> Self {
        Self {
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
            compression: CompressionConfig::default(),
            http2: Http2Config::default(),
            routes: Vec::new(),
        }
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
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
        self.compression.validate(&format!("{key}.compression"))?;
        self.http2.validate(&format!("{key}.http2"))?;
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
