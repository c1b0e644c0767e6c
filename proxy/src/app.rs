//! Everything a config turns into, built before any port is bound so that a bad certificate or
//! key fails `takgate check` and startup alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::Registry;
use serde::Serialize;
use tokio::net::TcpListener;

use cot::gateway::metrics::IdentityCollector;
use cot::gateway::{Gateway, MemoryBudget, StreamMetrics};
use cot::panics::Panics;

use crate::admin::{Admin, Probes};
use crate::config::{Config, HttpListenerConfig, StreamListenerConfig, TlsConfig};
use crate::http::forward::Forwarder;
use crate::http::heartbeat::{Heartbeat, HeartbeatMetrics};
use crate::http::router::Router;
use crate::http::service::HttpService;
use crate::metrics::HttpMetrics;
use crate::server::{self, ConnLimits, Http2Limits, ListenerTls};
use crate::stream::{self, StreamError};
use crate::tls_watch::TlsSources;
use cot::listener::Drain;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{key}: {source}")]
    Tls {
        key: String,
        source: cot::tls::TlsError,
    },
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("upstream TLS client: {0}")]
    UpstreamTls(#[from] rustls::Error),
    #[error("{key}: binding {addr}: {source}")]
    Bind {
        key: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading a bound address: {0}")]
    LocalAddr(std::io::Error),
    #[error(transparent)]
    Stream(#[from] StreamError),
}

#[derive(Debug)]
struct HttpListener {
    config: HttpListenerConfig,
    router_text: String,
    service: Arc<HttpService>,
    tls: Option<Arc<ListenerTls>>,
    limits: ConnLimits,
}

#[derive(Debug)]
pub struct App {
    config: Config,
    tls: Arc<TlsSources>,
    admin: Arc<Admin>,
    listeners: Vec<HttpListener>,
    streams: Vec<Arc<Gateway>>,
    drain: Drain,
    panics: Panics,
    memory: Arc<MemoryBudget>,
}

/// Sockets bound for an [`App`], one per listener in config order.
#[derive(Debug)]
pub struct Bound {
    http: Vec<TcpListener>,
    stream: Vec<TcpListener>,
    admin: TcpListener,
}

/// The addresses actually bound, for `--bound-addrs` and test harnesses.
#[derive(Debug, Clone, Serialize)]
pub struct BoundAddrs {
    pub http: BTreeMap<String, SocketAddr>,
    pub stream: BTreeMap<String, SocketAddr>,
    pub admin: SocketAddr,
}

// === impl App ===

impl App {
    pub fn new(config: Config, registry: Registry) -> Result<Self, AppError> {
        let metrics = HttpMetrics::register(&registry)?;
        let panics = Panics::register(&registry)?;
        let forwarder = Arc::new(Forwarder::new(
            &config.upstream,
            config.client_cert_header.clone(),
        )?);
        let heartbeat = Arc::new(Heartbeat::new(
            config.socketio.clone(),
            HeartbeatMetrics::register(&registry)?,
            forwarder.clone(),
        ));
        let drain = Drain::new();
        let mut listeners = Vec::with_capacity(config.http.len());
        for (i, l) in config.http.iter().enumerate() {
            let tls = l
                .tls
                .as_ref()
                .map(|t| {
                    listener_tls(t, l.http2.enabled).map_err(|source| AppError::Tls {
                        key: format!("http[{i}].tls"),
                        source,
                    })
                })
                .transpose()?
                .map(Arc::new);
            let router = Router::new(l, &config.upstream.url);
            let router_text = router.to_string();
            let service = HttpService::new(
                l,
                router,
                (forwarder.clone(), heartbeat.clone()),
                metrics.clone(),
                drain.clone(),
                panics.clone(),
                config.log.access_log,
            );
            listeners.push(HttpListener {
                config: l.clone(),
                router_text,
                service: Arc::new(service),
                tls,
                limits: ConnLimits {
                    max_connections: l.max_connections,
                    header_read_timeout: l.header_read_timeout,
                    max_header_bytes: usize::try_from(l.max_header_bytes.as_u64())
                        .unwrap_or(usize::MAX),
                    max_headers: l.max_headers,
                    http2: (l.tls.is_some() && l.http2.enabled).then_some(Http2Limits {
                        max_concurrent_streams: l.http2.max_concurrent_streams,
                        max_pending_reset_streams: l.http2.max_pending_reset_streams,
                        max_local_reset_streams: l.http2.max_local_reset_streams,
                    }),
                },
            });
        }
        let stream_metrics = StreamMetrics::register(&registry)?;
        let memory = stream_metrics.memory_budget(
            usize::try_from(config.memory.stream_budget.as_u64()).unwrap_or(usize::MAX),
        );
        let mut streams = Vec::with_capacity(config.stream.len());
        for (i, l) in config.stream.iter().enumerate() {
            let gateway = stream::gateway_config(
                &format!("stream[{i}]"),
                l,
                &config.upstream.url,
                &stream_metrics,
                &memory,
            )?;
            streams.push(Arc::new(Gateway::new(
                gateway,
                &stream_metrics,
                drain.clone(),
                panics.clone(),
            )));
        }
        let caches = streams
            .iter()
            .filter_map(|g| Some((g.config().name.clone(), g.config().identity.clone()?)))
            .collect::<Vec<_>>();
        if !caches.is_empty() {
            registry.register(Box::new(IdentityCollector::new(caches)?))?;
        }
        let http_tls = listeners
            .iter()
            .filter_map(|l| Some((l.config.name.clone(), l.tls.as_ref()?.tls.clone())));
        let stream_tls = streams
            .iter()
            .filter_map(|g| Some((g.config().name.clone(), g.config().tls.clone()?)));
        let tls = Arc::new(TlsSources::new(
            http_tls.chain(stream_tls).collect(),
            metrics,
        ));
        let probes = Probes::new(
            health_url(&config),
            streams.clone(),
            tls.clone(),
            memory.clone(),
        );
        let admin = Arc::new(Admin::new(registry, probes, panics.clone())?);
        Ok(Self {
            config,
            tls,
            admin,
            listeners,
            streams,
            drain,
            panics,
            memory,
        })
    }

    /// The effective listeners and routes, as `takgate check` prints them.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let _ = writeln!(
            out,
            "upstream  {} (health {})",
            c.upstream.url, c.upstream.health_path
        );
        let _ = writeln!(
            out,
            "admin     http://{} (/metrics /healthz /readyz)",
            c.admin.listen
        );
        for l in &self.listeners {
            let cfg = &l.config;
            let tls = match &cfg.tls {
                None => "plain".to_owned(),
                Some(t) => format!(
                    "tls {} client_auth={:?}",
                    t.versions
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("+"),
                    t.client_auth()
                )
                .to_lowercase(),
            };
            let _ = writeln!(
                out,
                "listener  {} {} profile={} {} max_body={} ui_root={}",
                cfg.name,
                cfg.listen,
                cfg.profile,
                tls,
                cfg.max_body,
                cfg.ui_root.display()
            );
            let _ = writeln!(out, "{}", l.router_text);
        }
        for (g, cfg) in self.streams.iter().zip(&self.config.stream) {
            let g = g.config();
            let tls = match cfg.effective_tls() {
                None if cfg.mode == crate::config::StreamMode::Plain => "plain tcp".to_owned(),
                None => "tls passed through".to_owned(),
                Some(t) => format!(
                    "tls {} client_auth={:?} ca={} crl={}",
                    t.cert.display(),
                    StreamListenerConfig::client_auth(&t),
                    t.client_ca
                        .as_deref()
                        .map_or("-".into(), |p| p.display().to_string()),
                    t.crl
                        .as_deref()
                        .map_or("-".into(), |p| p.display().to_string()),
                )
                .to_lowercase(),
            };
            let _ = writeln!(
                out,
                "stream    {} {} mode={} -> {} {} max_frame={} identity={}",
                g.name,
                cfg.listen,
                g.mode.as_str(),
                g.upstream,
                tls,
                cfg.max_frame,
                if g.identity.is_some() {
                    "ots-users"
                } else {
                    "off"
                },
            );
            if let Some(r) = &g.reoriginate {
                let c = r.config();
                let _ = writeln!(
                    out,
                    "          reoriginate ca={} signer={} server_name={} lifetime={:?} renew_before={:?} signer_loaded={}",
                    c.files.ca.display(),
                    c.files.signer_cert.display(),
                    c.server_name.to_str(),
                    c.cert_lifetime,
                    c.renew_before,
                    r.is_ready(),
                );
            }
        }
        if !self.streams.is_empty() {
            let _ = writeln!(
                out,
                "memory    stream_budget={} (new sessions refused from 7/8 of it)",
                self.config.memory.stream_budget
            );
        }
        out
    }

    /// Binds every configured address.
    pub fn bind(&self) -> Result<Bound, AppError> {
        let mut http = Vec::with_capacity(self.listeners.len());
        for (i, l) in self.listeners.iter().enumerate() {
            let addr = l.config.listen;
            let listener = bind(addr).map_err(|source| AppError::Bind {
                key: format!("http[{i}].listen"),
                addr,
                source,
            })?;
            http.push(listener);
        }
        let mut stream = Vec::with_capacity(self.config.stream.len());
        for (i, l) in self.config.stream.iter().enumerate() {
            let listener = bind(l.listen).map_err(|source| AppError::Bind {
                key: format!("stream[{i}].listen"),
                addr: l.listen,
                source,
            })?;
            stream.push(listener);
        }
        let addr = self.config.admin.listen;
        let admin = bind(addr).map_err(|source| AppError::Bind {
            key: "admin.listen".to_owned(),
            addr,
            source,
        })?;
        Ok(Bound {
            http,
            stream,
            admin,
        })
    }

    /// Starts serving on `bound` (one socket per `[[http]]` listener, in config order).
    pub fn start(&self, bound: Bound) -> Result<BoundAddrs, AppError> {
        let addrs = BoundAddrs {
            http: self
                .listeners
                .iter()
                .zip(&bound.http)
                .map(|(l, s)| Ok((l.config.name.clone(), s.local_addr()?)))
                .collect::<std::io::Result<_>>()
                .map_err(AppError::LocalAddr)?,
            stream: self
                .streams
                .iter()
                .zip(&bound.stream)
                .map(|(g, s)| Ok((g.config().name.clone(), s.local_addr()?)))
                .collect::<std::io::Result<_>>()
                .map_err(AppError::LocalAddr)?,
            admin: bound.admin.local_addr().map_err(AppError::LocalAddr)?,
        };
        for (l, socket) in self.listeners.iter().zip(bound.http) {
            tracing::info!(listener = %l.config.name, addr = %socket.local_addr().map_err(AppError::LocalAddr)?, profile = %l.config.profile, tls = l.tls.is_some(), "listening");
            tokio::spawn(server::serve_http(
                socket,
                l.service.clone(),
                l.tls.clone(),
                l.limits,
                self.drain.clone(),
            ));
        }
        for (g, socket) in self.streams.iter().zip(bound.stream) {
            let c = g.config();
            tracing::info!(listener = %c.name, addr = %socket.local_addr().map_err(AppError::LocalAddr)?, mode = c.mode.as_str(), upstream = %c.upstream, "stream listening");
            if let Some(users) = &c.identity {
                let drain = self.drain.clone();
                tokio::spawn(users.clone().run(async move { drain.stopping().await }));
            }
            tokio::spawn(g.clone().serve(socket));
        }
        tracing::info!(addr = %addrs.admin, "admin listening");
        tokio::spawn(self.admin.clone().serve(bound.admin, self.drain.clone()));
        tokio::spawn(self.tls.clone().watch(self.drain.clone()));
        self.admin.set_listeners_bound();
        Ok(addrs)
    }

    /// SIGHUP: re-reads every listener's certificate, key, CA and CRL, off the runtime's
    /// workers. Await the handle to know the reload is done; dropping it leaves it running.
    pub fn reload_tls(&self) -> tokio::task::JoinHandle<()> {
        self.tls.reload_all()
    }

    /// `takgate_panics_total` and, in test builds, the hook that makes a connection panic.
    pub fn panics(&self) -> &Panics {
        &self.panics
    }

    /// The stream memory budget every stream listener shares.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// The services of the `[[http]]` listeners, in config order, for the fuzz targets to drive.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn http_services(&self) -> impl Iterator<Item = &Arc<HttpService>> {
        self.listeners.iter().map(|l| &l.service)
    }

    /// Stops accepting and waits for requests and WebSockets as `[shutdown]` allows.
    pub async fn shutdown(&self) -> bool {
        self.drain
            .shutdown(
                self.config.shutdown.grace,
                self.config.shutdown.websocket_grace,
            )
            .await
    }
}

/// Binds like nginx does: an IPv6 wildcard takes IPv6 only, so `0.0.0.0:P` and `[::]:P` can be
/// two listeners, and a restart is not blocked by connections in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn health_url(config: &Config) -> http::Uri {
    let mut parts = config.upstream.url.clone().into_parts();
    parts.path_and_query = config.upstream.health_path.parse().ok();
    http::Uri::from_parts(parts).unwrap_or_else(|_| config.upstream.url.clone())
}

fn listener_tls(t: &TlsConfig, http2: bool) -> Result<ListenerTls, cot::tls::TlsError> {
    // h2 first when enabled: browsers take it for the UI and the API, and still open HTTP/1.1
    // connections for WebSocket upgrades (no RFC 8441 here), which OTS's Socket.IO needs.
    let mut alpn = Vec::with_capacity(2);
    if http2 {
        alpn.push(b"h2".to_vec());
    }
    alpn.push(b"http/1.1".to_vec());
    let settings = t.settings(t.client_auth(), alpn);
    Ok(ListenerTls {
        tls: Arc::new(cot::tls::ReloadableTls::new_or_wait(settings)?),
        handshake_timeout: t.handshake_timeout,
    })
}
