//! HTTP listeners: connections accepted by `cot::listener` (permit, TLS handshake with a
//! deadline, drain), then HTTP/1.1 served with upgrades through the listener's `HttpService`,
//! or HTTP/2 (`http2`) when a TLS client chose `h2` by ALPN.

mod http2;

pub use http2::Http2Limits;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::util::Oneshot;
use tower::ServiceExt;

use cot::listener::{self, Accept, Drain, Refusal};

use crate::counted::{Counted, OnRead};
use crate::http::forward::ClientInfo;
use crate::http::service::{ClientService, HttpService};
use crate::metrics::ConnectionError;

/// TLS for one listener: reloadable material and the handshake deadline.
#[derive(Debug)]
pub struct ListenerTls {
    pub tls: Arc<cot::tls::ReloadableTls>,
    pub handshake_timeout: Duration,
}

/// Per-connection limits of the HTTP codec.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// `Some` when `h2` is offered by ALPN (TLS listeners with `[http.http2] enabled`).
    pub http2: Option<Http2Limits>,
}

/// Accepts until the drain stops; each connection is served on its own task, where a panic
/// ends that connection only (counted by the service's `Panics`).
pub async fn serve_http(
    socket: TcpListener,
    service: Arc<HttpService>,
    tls: Option<Arc<ListenerTls>>,
    limits: ConnLimits,
    drain: Drain,
) {
    let accept = Accept {
        name: service.name().clone(),
        max_connections: limits.max_connections,
        open: Some(service.metrics().connections_open(service.name())),
        panics: service.panics().clone(),
        drain: drain.clone(),
    };
    accept
        .serve(socket, move |stream, peer| {
            serve_connection(
                stream,
                peer,
                service.clone(),
                tls.clone(),
                limits,
                drain.clone(),
            )
        })
        .await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: Arc<HttpService>,
    tls: Option<Arc<ListenerTls>>,
    limits: ConnLimits,
    drain: Drain,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        let client = ClientInfo {
            peer,
            scheme: service.scheme().clone(),
            client_cert: None,
        };
        serve_http1(stream, client, service, limits, drain).await;
        return;
    };
    let handshake = listener::tls_handshake(
        Some(&tls.tls),
        tls.handshake_timeout,
        stream,
        service.name(),
        peer,
    );
    let stream = match handshake.await {
        Ok(s) => s,
        Err(refusal) => {
            let (metrics, name) = (service.metrics(), service.name());
            match refusal {
                Refusal::TlsNotReady => {
                    metrics.connection_error(name, ConnectionError::TlsNotReady)
                }
                Refusal::Timeout => {
                    metrics.connection_error(name, ConnectionError::TlsHandshakeTimeout)
                }
                reason => metrics.tls_refused(name, reason),
            }
            return;
        }
    };
    // Escaped once per connection, not per request.
    let client_cert = cot::tls::peer_leaf(stream.get_ref().1)
        .and_then(|der| HeaderValue::try_from(crate::http::client_cert::escaped_pem(der)).ok());
    let client = ClientInfo {
        peer,
        scheme: service.scheme().clone(),
        client_cert,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    match limits.http2 {
        Some(h2_limits) if h2 => {
            http2::serve_http2(stream, client, service, limits, h2_limits, drain).await;
        }
        _ => serve_http1(stream, client, service, limits, drain).await,
    }
}

async fn serve_http1<I>(
    io: I,
    client: ClientInfo,
    service: Arc<HttpService>,
    limits: ConnLimits,
    drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let svc = Marked {
        inner: service.for_client(client),
        activity: activity.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    let conn = builder
        .serve_connection(TokioIo::new(Counted::new(io, activity.clone())), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        () = drain.stopping() => {
            // Finishes the request in flight (if any), then closes.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        let kind = if e.is_parse_too_large() {
            ConnectionError::HeadTooLarge
        } else if e.is_parse() {
            ConnectionError::Parse
        } else if e.is_timeout() {
            if activity.idle_after_request() {
                // hyper's header timeout also ends idle keep-alive connections; closing one that
                // has finished its requests is routine, as nginx's keepalive_timeout is.
                tracing::debug!(listener = %service.name(), "idle keep-alive connection closed");
                return;
            }
            ConnectionError::HeaderTimeout
        } else if e.is_incomplete_message() || e.is_canceled() {
            // A client that closes between requests is not an error worth counting.
            return;
        } else {
            ConnectionError::Io
        };
        service.metrics().connection_error(service.name(), kind);
        tracing::debug!(listener = %service.name(), error = %e, "connection ended with an error");
    }
}

/// The listener's service, telling `activity` when each request starts and ends.
struct Marked {
    inner: ClientService,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Marked {
    type Response = <ClientService as tower::Service<Request<Incoming>>>::Response;
    type Error = <ClientService as tower::Service<Request<Incoming>>>::Error;
    type Future = MarkedFuture<Oneshot<ClientService, Request<Incoming>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.mark();
        MarkedFuture {
            // As hyper-util's `TowerToHyperService`: a clone per request (two `Arc`s), readied
            // then called.
            inner: self.inner.clone().oneshot(req),
            activity: self.activity.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    struct MarkedFuture<F> {
        #[pin]
        inner: F,
        activity: Arc<Activity>,
    }
}

impl<F: Future> Future for MarkedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        // Again once the request body has (normally) been read, so that its bytes do not make
        // the idle time after it look like a stalled head.
        this.activity.mark();
        Poll::Ready(out)
    }
}

/// What a connection has read, to tell an idle keep-alive connection from a stalled request head
/// when hyper's header timeout ends it: both are the same error to hyper.
#[derive(Debug)]
struct Activity {
    read: AtomicU64,
    /// `read` as of the last request start or answer; `u64::MAX` before the first request.
    marked: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            read: AtomicU64::new(0),
            marked: AtomicU64::new(u64::MAX),
        }
    }
}

impl OnRead for Arc<Activity> {
    fn on_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Activity {
    fn mark(&self) {
        self.marked
            .store(self.read.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// At least one request was served and not a byte has come since.
    fn idle_after_request(&self) -> bool {
        self.read.load(Ordering::Relaxed) == self.marked.load(Ordering::Relaxed)
    }
}
