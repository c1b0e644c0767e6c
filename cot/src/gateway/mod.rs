//! Stream listeners: accept TAK clients, complete their TLS handshake within a deadline, decide
//! who may connect, and relay to OTS.
//!
//! Modes:
//! - `terminate`: TLS ends here; CoT is framed and validated on its way to OTS's plain port.
//! - `reoriginate`: as terminate, but on to OTS's own SSL listener over TLS, presenting a
//!   certificate for the client's own CN (`crate::reoriginate`): OTS sees the same user.
//! - `passthrough`: the client's TLS bytes go untouched to OTS's own SSL listener.
//! - `proxy-protocol`: as terminate, with a PROXY v2 header (client address, SSL TLVs, CN) first.
//! - `raw`: TLS ends here, bytes are relayed unframed (MQTT, RTSP, RTMP).
//! - `plain`: no TLS (OTS's plain port 8088): CoT framed and validated, as in terminate.

mod limits;
mod memory;
pub mod metrics;
mod outbox;
mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::framer::FramerConfig;
use crate::identity::{ActiveUsers, Decision};
use crate::listener::{self, Accept, Drain, Refusal};
use crate::reoriginate::Reoriginator;
use crate::tls::ReloadableTls;

pub use limits::{LimitPolicy, SessionLimits};
pub use memory::{MemoryBudget, SessionCost};
pub use metrics::{ListenerMetrics, StreamMetrics};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Terminate,
    Reoriginate,
    Passthrough,
    ProxyProtocol,
    Raw,
    Plain,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Terminate => "terminate",
            Mode::Reoriginate => "reoriginate",
            Mode::Passthrough => "passthrough",
            Mode::ProxyProtocol => "proxy-protocol",
            Mode::Raw => "raw",
            Mode::Plain => "plain",
        }
    }

    /// What a session holds besides its buffers.
    fn session_cost(self) -> SessionCost {
        match self {
            Mode::Passthrough | Mode::Plain => SessionCost::Tcp,
            Mode::Reoriginate => SessionCost::TlsBothWays,
            Mode::Terminate | Mode::ProxyProtocol | Mode::Raw => SessionCost::Tls,
        }
    }

    /// Whether the client's CoT is framed and validated on the way.
    fn framed(self) -> bool {
        matches!(
            self,
            Mode::Terminate | Mode::Reoriginate | Mode::ProxyProtocol | Mode::Plain
        )
    }
}

/// One stream listener's settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub name: String,
    /// `host:port`, resolved at each connect.
    pub upstream: String,
    pub mode: Mode,
    /// Required except in passthrough mode.
    pub tls: Option<Arc<ReloadableTls>>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// A session with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Bytes read from a socket at a time, per direction: with the framer's bound, this is
    /// what one connection can hold in memory.
    pub read_buffer: usize,
    pub framer: FramerConfig,
    /// Refuse client certificates without a subject CN (there is no `<auth>` fallback once
    /// TLS ends here).
    pub require_cn: bool,
    /// Check the CN against OTS's active users, and close sessions of users who become inactive.
    pub identity: Option<ActiveUsers>,
    /// Reoriginate mode: the certificates that reach OTS as each client's user.
    pub reoriginate: Option<Arc<Reoriginator>>,
    /// What one client may send, and how many sessions one CN may hold (framed modes).
    pub limits: SessionLimits,
    /// The kernel's send buffer for each upstream socket (0: the kernel's own, which grows to
    /// megabytes). Small, a stalled OTS leaves frames in takgate's queue, where they are bounded
    /// and shed oldest position first, rather than in the kernel, first in first out.
    pub upstream_send_buffer: usize,
    /// Bytes of a client's frames that may wait for OTS while it is not reading them, behind
    /// the frame being written; past it, frames are shed (framed modes).
    pub upstream_queue: usize,
    /// The process's budget for stream sessions, shared by every stream listener.
    pub memory: Arc<MemoryBudget>,
}

/// A stream listener, shared by its connections.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    metrics: ListenerMetrics,
    drain: Drain,
    /// The drain's stop signal, which the relays wait on.
    stop: CancellationToken,
    panics: crate::panics::Panics,
    /// The outcome of the latest upstream connect, and when: readiness reads it instead of
    /// opening connections of its own (OTS forks a process per connection on 8088).
    upstream_seen: std::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
    cn_sessions: limits::CnSessions,
}

/// How recent an upstream connect outcome must be for readiness to use it as it is.
const UPSTREAM_STATUS_TTL: Duration = Duration::from_secs(30);

/// Who the client is, once its handshake is done.
#[derive(Clone, Debug, Default)]
pub(crate) struct Peer {
    pub addr: Option<SocketAddr>,
    pub cn: Option<String>,
    pub tls_version: Option<&'static str>,
    pub cipher: Option<String>,
    pub cert_presented: bool,
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        metrics: &StreamMetrics,
        drain: Drain,
        panics: crate::panics::Panics,
    ) -> Self {
        let metrics = metrics.listener(&config.name, config.mode.as_str());
        panics.init_listener(&config.name);
        Self {
            config,
            metrics,
            stop: drain.stop_token(),
            drain,
            panics,
            upstream_seen: std::sync::Mutex::new(None),
            cn_sessions: limits::CnSessions::default(),
        }
    }

    /// Whether the upstream accepts connections: the latest session's connect if it is
    /// recent, otherwise one probe connect (so at most one every 30 s, however often
    /// readiness is asked).
    pub async fn upstream_status(&self) -> Result<(), String> {
        let recent = self
            .upstream_seen
            .lock()
            .ok()
            .and_then(|seen| seen.clone())
            .filter(|(at, _)| at.elapsed() < UPSTREAM_STATUS_TTL);
        if let Some((_, outcome)) = recent {
            return outcome;
        }
        let outcome = match tokio::time::timeout(
            self.config.connect_timeout,
            TcpStream::connect(&self.config.upstream),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {:?}",
                self.config.connect_timeout
            )),
        };
        self.record_upstream(outcome.clone());
        outcome
    }

    fn record_upstream(&self, outcome: Result<(), String>) {
        if let Ok(mut seen) = self.upstream_seen.lock() {
            *seen = Some((tokio::time::Instant::now(), outcome));
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Accepts until stopped; each connection runs on a tracked task.
    pub async fn serve(self: Arc<Self>, socket: TcpListener) {
        let accept = Accept {
            name: Arc::from(self.config.name.as_str()),
            max_connections: self.config.max_connections,
            open: Some(self.metrics.connections_open.clone()),
            panics: self.panics.clone(),
            drain: self.drain.clone(),
        };
        accept
            .serve(socket, move |stream, peer| {
                let gw = self.clone();
                async move {
                    // The session's fixed share of the memory budget, before its TLS
                    // handshake allocates anything.
                    let Some(_charge) = gw.config.memory.admit(gw.config.mode.session_cost())
                    else {
                        gw.metrics.refused(Refusal::MemoryBudget);
                        tracing::debug!(listener = %gw.config.name, client = %peer, "stream memory budget exhausted; connection refused");
                        return;
                    };
                    gw.metrics.connections.inc();
                    gw.connection(stream, peer).await
                }
            })
            .await;
    }

    async fn connection(&self, stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        match self.config.mode {
            // passthrough: the client's TLS goes to OTS untouched. plain: no certificate, so
            // nobody to admit; OTS treats the connection as anonymous, as on its own 8088.
            Mode::Passthrough | Mode::Plain => {
                let Some(upstream) = self.connect_upstream(addr).await else {
                    return;
                };
                let peer = Peer {
                    addr: Some(addr),
                    ..Peer::default()
                };
                self.session(stream, upstream, &peer).await;
            }
            _ => self.tls_connection(stream, addr).await,
        }
    }

    async fn tls_connection(&self, stream: TcpStream, addr: SocketAddr) {
        let name = &self.config.name;
        let started = tokio::time::Instant::now();
        let handshake = listener::tls_handshake(
            self.config.tls.as_deref(),
            self.config.handshake_timeout,
            stream,
            name,
            addr,
        );
        let tls = match handshake.await {
            Ok(tls) => tls,
            Err(reason) => return self.metrics.refused(reason),
        };
        self.metrics
            .handshake_seconds
            .observe(started.elapsed().as_secs_f64());
        let peer = peer_of(addr, tls.get_ref().1);
        // Held for as long as the session runs.
        let _cn_session = if self.config.mode.framed() {
            // Boxed: its state is needed only here, and inline it would be part of every
            // session's for as long as the session lasts.
            match Box::pin(self.admit(&peer)).await {
                Ok(held) => held,
                Err(reason) => return self.refuse(&peer, reason),
            }
        } else {
            None
        };
        if let Some(reoriginate) = &self.config.reoriginate {
            // The client config first: a refusal for want of a certificate opens nothing at OTS.
            let upstream_tls = match self.upstream_tls(reoriginate, &peer, tls.get_ref().1).await {
                Ok(config) => config,
                Err(reason) => return self.refuse(&peer, reason),
            };
            let Some(upstream) = self.connect_upstream(addr).await else {
                return;
            };
            let Some(upstream) = self
                .upstream_handshake(reoriginate, upstream_tls, upstream, addr)
                .await
            else {
                return;
            };
            return self.session(tls, upstream, &peer).await;
        }
        let Some(mut upstream) = self.connect_upstream(addr).await else {
            return;
        };
        if self.config.mode == Mode::ProxyProtocol {
            if let Err(e) = relay::send_proxy_header(&mut upstream, &peer).await {
                self.metrics.upstream_connect_failures.inc();
                tracing::warn!(listener = %name, error = %e, "writing the PROXY header");
                return;
            }
        }
        self.session(tls, upstream, &peer).await;
    }

    /// Relays until the session ends (framed or as bytes, by mode), and counts how it ended.
    /// Not an `async fn`, for the reason [`relay::run`] gives.
    fn session<'a, C, U>(
        &'a self,
        client: C,
        upstream: U,
        peer: &'a Peer,
    ) -> impl Future<Output = ()> + Send + 'a
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'a,
        U: relay::Upstream + 'a,
    {
        let (name, addr) = (&self.config.name, peer.addr);
        tracing::debug!(listener = %name, client = ?addr, cn = ?peer.cn, "session started");
        let framed = self.config.mode.framed().then_some(peer);
        relay::run(self, client, upstream, framed).map(move |reason| {
            self.metrics.closed(reason);
            tracing::debug!(listener = %name, client = ?addr, reason, "session ended");
        })
    }

    fn refuse(&self, peer: &Peer, reason: Refusal) {
        self.metrics.refused(reason);
        tracing::info!(listener = %self.config.name, client = ?peer.addr, cn = ?peer.cn, reason = reason.as_str(), "connection refused");
    }

    /// The TLS client config that reaches OTS as the client's own CN.
    async fn upstream_tls(
        &self,
        reoriginate: &Arc<Reoriginator>,
        peer: &Peer,
        conn: &rustls::ServerConnection,
    ) -> Result<Arc<rustls::ClientConfig>, Refusal> {
        // `admit` refused a client without exactly one non-empty CN.
        let cn = peer.cn.as_deref().ok_or(Refusal::NoCn)?;
        let value = crate::tls::peer_leaf(conn)
            .and_then(|der| crate::reoriginate::subject_cn(der))
            .ok_or(Refusal::NoCn)?;
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        reoriginate
            .client_config(cn, &value, deadline)
            .await
            .map_err(|e| e.reason())
    }

    /// The TLS handshake with OTS's SSL listener, within the connect timeout.
    async fn upstream_handshake(
        &self,
        reoriginate: &Reoriginator,
        config: Arc<rustls::ClientConfig>,
        upstream: TcpStream,
        client: SocketAddr,
    ) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(config);
        let server_name = reoriginate.config().server_name.clone();
        let outcome = tokio::time::timeout(
            self.config.connect_timeout,
            connector.connect(server_name, upstream),
        )
        .await;
        let error = match outcome {
            Ok(Ok(tls)) => return Some(tls),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "TLS handshake timed out".to_owned(),
        };
        self.record_upstream(Err(format!("TLS: {error}")));
        self.metrics.upstream_connect_failures.inc();
        self.metrics.refused(Refusal::UpstreamTls);
        tracing::warn!(listener = %self.config.name, client = %client, upstream = %self.config.upstream, error, "TLS to the upstream failed; closing the client");
        None
    }

    /// The identity decision, as OTS's own SSL listener makes it, and stricter.
    /// With a limit on sessions per CN, the client's place among its CN's sessions.
    async fn admit(&self, peer: &Peer) -> Result<Option<limits::CnSession<'_>>, Refusal> {
        // Reoriginating needs a CN to reach OTS with.
        let needs_cn = self.config.require_cn
            || self.config.identity.is_some()
            || self.config.reoriginate.is_some();
        let Some(cn) = peer.cn.as_deref() else {
            return if needs_cn && peer.cert_presented {
                Err(Refusal::NoCn)
            } else if needs_cn {
                Err(Refusal::NoCert)
            } else {
                Ok(None)
            };
        };
        if let Some(users) = &self.config.identity {
            match users.check(cn).await {
                Decision::Allowed => {}
                Decision::Inactive => return Err(Refusal::InactiveUser),
                Decision::Unknown => return Err(Refusal::UnknownUser),
                Decision::Unavailable => return Err(Refusal::IdentityUnavailable),
            }
        }
        match self.config.limits.sessions_per_cn {
            0 => Ok(None),
            max => self
                .cn_sessions
                .enter(cn, max)
                .map(Some)
                .ok_or(Refusal::CnSessionLimit),
        }
    }

    async fn connect_upstream(&self, client: SocketAddr) -> Option<TcpStream> {
        let target = &self.config.upstream;
        match tokio::time::timeout(self.config.connect_timeout, self.open_upstream()).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                self.record_upstream(Ok(()));
                Some(s)
            }
            Ok(Err(e)) => {
                self.record_upstream(Err(e.to_string()));
                self.metrics.upstream_connect_failures.inc();
                tracing::warn!(listener = %self.config.name, client = %client, upstream = %target, error = %e, "upstream connect failed; closing the client");
                None
            }
            Err(_) => {
                self.record_upstream(Err("connect timed out".to_owned()));
                self.metrics.upstream_connect_failures.inc();
                tracing::warn!(listener = %self.config.name, client = %client, upstream = %target, "upstream connect timed out; closing the client");
                None
            }
        }
    }
}

impl Gateway {
    /// A connection to the upstream: each address it resolves to in turn.
    async fn open_upstream(&self) -> std::io::Result<TcpStream> {
        let mut failed = None;
        for addr in tokio::net::lookup_host(&self.config.upstream).await? {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if self.config.upstream_send_buffer > 0 {
                socket.set_send_buffer_size(
                    u32::try_from(self.config.upstream_send_buffer).unwrap_or(u32::MAX),
                )?;
            }
            match socket.connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => failed = Some(e),
            }
        }
        Err(failed.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to no address")
        }))
    }
}

fn peer_of(addr: SocketAddr, conn: &rustls::ServerConnection) -> Peer {
    let leaf = crate::tls::peer_leaf(conn);
    Peer {
        addr: Some(addr),
        cn: leaf.and_then(|der| common_name(der)),
        tls_version: conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "unknown",
        }),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite())),
        cert_presented: leaf.is_some(),
    }
}

/// The subject's common name, if the certificate has exactly one readable CN.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns.next()?.as_str().ok()?.to_owned();
    // Two CNs make "who is this" ambiguous; OTS would take one, takgate takes neither.
    if cns.next().is_some() || cn.is_empty() {
        return None;
    }
    Some(cn)
}
