//! `[[stream]]` listeners: mode, upstream, TLS, framing limits and per-client limits.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::checks::{in_range, invalid, positive};
use super::identity::IdentityConfig;
use super::reoriginate::ReoriginateConfig;
use super::tls::{ots_stream_tls, ClientAuthConfig, TlsConfig};
use super::{default_connect_timeout, default_max_connections, default_true, ConfigError};

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

/// `name`, `listen` and `upstream` are required, so the optional keys name their defaults one
/// by one; `StreamListenerConfig::builtin` takes the same ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// `upstream` as written; `validate` parses it into `upstream`, so a bad one is reported
    /// under its key.
    #[serde(rename = "upstream")]
    upstream_text: String,
    /// `host:port` of OTS's CoT port (8088 plain for terminate, 8089 for passthrough).
    #[serde(skip)]
    pub upstream: UpstreamAddr,
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

fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_frame() -> ByteSize {
    ByteSize::mib(1)
}
fn default_read_buffer() -> ByteSize {
    ByteSize::kib(16)
}
fn default_upstream_send_buffer() -> ByteSize {
    ByteSize::kib(64)
}

/// A stream listener's `upstream`: `host:port`, the host a name or an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamAddr {
    text: String,
    port: u16,
}

impl UpstreamAddr {
    fn new(host: &str, port: u16) -> Self {
        Self {
            text: format!("{host}:{port}"),
            port,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        if host.is_empty() {
            return None;
        }
        Some(Self {
            text: text.to_owned(),
            port: port.parse().ok()?,
        })
    }

    /// The name or address before the port, as written.
    pub fn host(&self) -> &str {
        self.text
            .rsplit_once(':')
            .map_or(self.text.as_str(), |(host, _)| host)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` as written, which `TcpStream::connect` resolves.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<&str> for UpstreamAddr {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
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

impl StreamListenerConfig {
    /// OTS's CoT TLS port in front of its plain one, the zero-config gateway of an OTS host.
    pub(super) fn builtin() -> Self {
        let upstream = UpstreamAddr::new("127.0.0.1", 8088);
        Self {
            name: "cot-tls".to_owned(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8089)),
            upstream_text: upstream.text.clone(),
            upstream,
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
        }
    }

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

    pub(super) fn validate(&mut self, key: &str) -> Result<(), ConfigError> {
        self.upstream = UpstreamAddr::parse(&self.upstream_text).ok_or_else(|| {
            invalid(
                format!("{key}.upstream"),
                "must be host:port, e.g. 127.0.0.1:8088",
            )
        })?;
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
            id.validate(&format!("{key}.identity"), self.mode)?;
        }
        Ok(())
    }
}
