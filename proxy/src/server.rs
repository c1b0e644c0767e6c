//! Accept loops: bounded connections, TLS handshakes with a deadline, and HTTP/1.1 served with
//! upgrades, each connection tracked by the drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::counted::{Counted, OnRead};
use crate::drain::Drain;
use crate::http::forward::ClientInfo;
use crate::http::service::HttpService;
use crate::metrics::{ConnectionError, GaugeGuard};

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
}

/// Accepts until the drain stops; each connection is served on its own task, where a panic
/// ends that connection only (counted by the service's `Panics`).
pub async fn serve_http(
    listener: TcpListener,
    service: Arc<HttpService>,
    tls: Option<Arc<ListenerTls>>,
    limits: ConnLimits,
    drain: Drain,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // Waiting for a permit before accepting leaves excess clients in the kernel's queue
        // instead of taking sockets we would have to drop.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = drain.stopping() => return,
        };
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(listener = %service.name(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = drain.stopping() => return,
        };
        let service = service.clone();
        let tls = tls.clone();
        let conn_drain = drain.clone();
        drain.tracker().spawn(async move {
            let _permit = permit;
            let _open = GaugeGuard::new(service.metrics().connections_open(service.name()));
            // Built in place: a named local would keep a second copy of the connection's state
            // in this task for as long as it runs.
            service
                .panics()
                .guard(
                    service.name(),
                    peer,
                    serve_connection(stream, peer, service.clone(), tls, limits, conn_drain),
                )
                .await;
        });
    }
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
    let Some(acceptor) = tls.tls.acceptor() else {
        // The certificate files do not exist yet (OTS creates them on its first start).
        service
            .metrics()
            .connection_error(service.name(), ConnectionError::TlsNotReady);
        return;
    };
    let accept = acceptor.accept(stream);
    let stream = match tokio::time::timeout(tls.handshake_timeout, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = cot::tls::handshake_failure(&e);
            service.metrics().tls_refused(service.name(), reason);
            tracing::info!(listener = %service.name(), client = %peer, reason, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            service
                .metrics()
                .connection_error(service.name(), ConnectionError::TlsHandshakeTimeout);
            tracing::info!(listener = %service.name(), client = %peer, "TLS handshake timed out");
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
    serve_http1(stream, client, service, limits, drain).await;
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
    let client = Arc::new(client);
    let activity = Arc::new(Activity::default());
    let svc = {
        let service = service.clone();
        let activity = activity.clone();
        service_fn(move |req| {
            let (service, client, activity) = (service.clone(), client.clone(), activity.clone());
            activity.mark();
            async move {
                let res = service.handle(client, req).await;
                // Again once the request body has (normally) been read, so that its bytes do not
                // make the idle time after it look like a stalled head.
                activity.mark();
                res
            }
        })
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

    /// At least one request was served and not a byte has come since.
    fn idle_after_request(&self) -> bool {
        self.read.load(Ordering::Relaxed) == self.marked.load(Ordering::Relaxed)
    }
}
