//! The admin listener: `/metrics`, `/healthz` (the process answers) and `/readyz` (listeners
//! are bound and the OTS API answers its health check). Kept off the public listeners so a
//! NodePort never exposes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::http::body::{self, Body};
use crate::tls_watch::TlsSources;
use cot::gateway::{Gateway, MemoryBudget};
use cot::listener::{Accept, Drain};
use cot::panics::Panics;
use cot::upstream_client::{ClientSettings, UpstreamClient};

/// The `listener` label of the admin listener's connections in `takgate_panics_total`.
pub const ADMIN_LISTENER: &str = "admin";

/// Connections the admin listener serves at once: a scraper and a few probes need a handful; a
/// client that opens many waits in the kernel's queue instead of taking file descriptors.
const MAX_CONNECTIONS: usize = 64;

/// How long `/readyz` waits for the OTS API's health check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Admin {
    registry: Registry,
    probes: Probes,
    listeners_bound: AtomicBool,
    probe: UpstreamClient<Empty<bytes::Bytes>>,
    /// The latest upstream probes and when they finished. Held while probing: `/readyz` calls
    /// that arrive meanwhile wait and share that probe's outcome instead of starting their own
    /// (a monitoring system or a crowd of kubelets cannot multiply the probes OTS receives).
    probed: tokio::sync::Mutex<Option<(tokio::time::Instant, Probed)>>,
    panics: Panics,
}

/// The outcome of one round of upstream probes.
#[derive(Clone, Debug)]
struct Probed {
    upstream: Result<(), String>,
    /// Per stream listener, in `Probes::streams` order.
    streams: Vec<Result<(), String>>,
}

/// What `/readyz` checks besides the listeners being bound.
#[derive(Debug)]
pub struct Probes {
    /// The OTS API's health check.
    health_url: Uri,
    /// The stream listeners, whose upstreams must accept connections.
    streams: Vec<Arc<Gateway>>,
    /// TLS listeners that still wait for their files.
    tls: Arc<TlsSources>,
    /// Stream sessions are refused while it is exhausted.
    memory: Arc<MemoryBudget>,
}

impl Probes {
    pub fn new(
        health_url: Uri,
        streams: Vec<Arc<Gateway>>,
        tls: Arc<TlsSources>,
        memory: Arc<MemoryBudget>,
    ) -> Self {
        Self {
            health_url,
            streams,
            tls,
            memory,
        }
    }
}

// === impl Admin ===

impl Admin {
    pub fn new(registry: Registry, probes: Probes, panics: Panics) -> Result<Self, rustls::Error> {
        let probe = UpstreamClient::new(ClientSettings {
            connect_timeout: PROBE_TIMEOUT,
            pool_idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 1,
            tls: None,
        })?;
        panics.init_listener(ADMIN_LISTENER);
        Ok(Self {
            registry,
            probes,
            listeners_bound: AtomicBool::new(false),
            probe,
            probed: tokio::sync::Mutex::new(None),
            panics,
        })
    }

    /// Called once every listener is bound.
    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Serves admin requests until the drain stops.
    pub async fn serve(self: Arc<Self>, socket: TcpListener, drain: Drain) {
        let accept = Accept {
            name: Arc::from(ADMIN_LISTENER),
            max_connections: MAX_CONNECTIONS,
            open: None,
            panics: self.panics.clone(),
            drain: drain.clone(),
        };
        accept
            .serve(socket, move |stream, _peer| {
                self.clone().connection(stream, drain.clone())
            })
            .await;
    }

    async fn connection(self: Arc<Self>, stream: tokio::net::TcpStream, drain: Drain) {
        let svc = service_fn(move |req| self.clone().handle(req));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(5));
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            () = drain.stopping() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
            }
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
        }
        Ok(match req.uri().path() {
            "/metrics" => self.metrics(),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.ready().await,
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        })
    }

    fn metrics(&self) -> Response<Body> {
        let encoder = TextEncoder::new();
        let mut buf = Vec::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            );
        }
        let mut resp = Response::new(body::full(buf));
        if let Ok(ct) = HeaderValue::try_from(encoder.format_type()) {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        resp
    }

    async fn ready(&self) -> Response<Body> {
        let bound = self.listeners_bound.load(Ordering::Acquire);
        let (probed, waiting) = tokio::join!(self.probe_shared(), self.probes.tls.waiting());
        let upstream = probed.upstream;
        let streams: Vec<_> = self
            .probes
            .streams
            .iter()
            .zip(probed.streams)
            .map(|(g, r)| (&g.config().name, &g.config().upstream, r))
            .collect();
        let waiting: serde_json::Map<String, serde_json::Value> = waiting
            .into_iter()
            .map(|(name, files)| {
                let files = files
                    .iter()
                    .map(|f| serde_json::Value::String(f.display().to_string()))
                    .collect();
                (name, serde_json::Value::Array(files))
            })
            .collect();
        let streams_ok = streams.iter().all(|(_, _, r)| r.is_ok());
        let stream_json: serde_json::Map<String, serde_json::Value> = streams
            .into_iter()
            .map(|(name, addr, r)| {
                let v = serde_json::json!({ "upstream": addr, "ok": r.is_ok(), "error": r.err() });
                (name.clone(), v)
            })
            .collect();
        let memory = &self.probes.memory;
        let exhausted = memory.exhausted();
        let ok =
            bound && upstream.is_ok() && streams_ok && waiting.is_empty() && exhausted.is_none();
        let json = serde_json::json!({
            "ready": ok,
            "listeners_bound": bound,
            "tls_waiting_for_files": waiting,
            "upstream": self.probes.health_url.to_string(),
            "upstream_ok": upstream.is_ok(),
            "upstream_error": upstream.err(),
            "stream_upstreams": stream_json,
            "stream_memory": {
                "used_bytes": memory.used(),
                "budget_bytes": memory.limit(),
                "error": exhausted,
            },
        });
        let mut resp = Response::new(body::full(json.to_string()));
        *resp.status_mut() = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    /// The upstream probes, shared: a call that finds a probe running waits for it and takes
    /// its outcome; only a call that arrives with none running starts one.
    async fn probe_shared(&self) -> Probed {
        let asked = tokio::time::Instant::now();
        let mut probed = self.probed.lock().await;
        if let Some((finished, outcome)) = probed.as_ref() {
            if *finished >= asked {
                return outcome.clone();
            }
        }
        let (upstream, streams) = tokio::join!(
            self.probe_upstream(),
            futures_util::future::join_all(self.probes.streams.iter().map(|g| g.upstream_status()))
        );
        let outcome = Probed { upstream, streams };
        *probed = Some((tokio::time::Instant::now(), outcome.clone()));
        outcome
    }

    async fn probe_upstream(&self) -> Result<(), String> {
        let req = Request::get(self.probes.health_url.clone())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(PROBE_TIMEOUT, self.probe.request(req))
            .await
            .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        // Drain the (tiny) body so the pooled connection can be reused.
        let _ = tokio::time::timeout(PROBE_TIMEOUT, resp.into_body().collect()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("health check answered {status}"))
        }
    }
}

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(msg));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
