//! HTTP/2 for a TLS connection whose client chose `h2` by ALPN: the same `HttpService` as
//! HTTP/1.1 (routing, header contract, limits, compression, metrics), with hyper's h2 codec
//! bounded by the listener's `[http.http2]` settings. WebSocket stays on HTTP/1.1: browsers open
//! a separate HTTP/1.1 connection for an upgrade, since takgate does not announce RFC 8441.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;

use cot::listener::Drain;

use super::{Activity, ConnLimits};
use crate::counted::Counted;
use crate::http::body::Body;
use crate::http::forward::ClientInfo;
use crate::http::service::{ClientService, HttpService};
use crate::metrics::ConnectionError;

/// A listener's bounds on one HTTP/2 connection (`[http.http2]`).
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    pub max_pending_reset_streams: usize,
    pub max_local_reset_streams: usize,
}

pub(super) async fn serve_http2<I>(
    io: I,
    client: ClientInfo,
    service: Arc<HttpService>,
    limits: ConnLimits,
    h2: Http2Limits,
    drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let streams = Arc::new(AtomicUsize::new(0));
    let svc = Streams {
        inner: service.for_client(client),
        open: streams.clone(),
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        // The listener's head limit, as HTTP/1.1 applies it; h2 answers a larger header block
        // with 431, and a CONTINUATION sequence past it ends the connection.
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(h2.max_pending_reset_streams)
        .max_local_error_reset_streams(h2.max_local_reset_streams);
    let conn = builder.serve_connection(TokioIo::new(Counted::new(io, activity.clone())), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        () = drain.stopping() => {
            // GOAWAY: streams in flight finish, no new ones start.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
        () = idle(&activity, &streams, limits.header_read_timeout) => {
            tracing::debug!(listener = %service.name(), "idle HTTP/2 connection closed");
            // GOAWAY, then as long again for the client to take it (h2 waits for a PING's
            // answer, which a stalled client never sends) before the connection is dropped.
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(limits.header_read_timeout, conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        let Some(kind) = classify(&e) else {
            return;
        };
        service.metrics().connection_error(service.name(), kind);
        tracing::debug!(listener = %service.name(), error = %e, "HTTP/2 connection ended with an error");
    }
}

/// Returns once a whole `every` has passed with no stream open and not a byte read: hyper's h2
/// has no header timeout, and without this a client could hold a connection slot (or trickle a
/// header block) forever. The same time as HTTP/1.1's idle keep-alive.
async fn idle(activity: &Activity, streams: &AtomicUsize, every: Duration) {
    let mut last = activity.bytes_read();
    loop {
        tokio::time::sleep(every).await;
        let now = activity.bytes_read();
        if now == last && streams.load(Ordering::Relaxed) == 0 {
            return;
        }
        last = now;
    }
}

/// What an h2 connection's error says about the client: `None` for an ordinary end.
fn classify(e: &hyper::Error) -> Option<ConnectionError> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.is_io() || h2.is_remote() {
                // The client went away, or closed with its own GOAWAY.
                return None;
            }
            return match h2.reason() {
                Some(h2::Reason::NO_ERROR) | None => None,
                // What h2 sends for rapid reset, too many local resets, CONTINUATION floods.
                Some(h2::Reason::ENHANCE_YOUR_CALM) => Some(ConnectionError::Http2Abuse),
                Some(_) => Some(ConnectionError::Http2Protocol),
            };
        }
        source = s.source();
    }
    (!e.is_canceled() && !e.is_incomplete_message()).then_some(ConnectionError::Io)
}

/// The listener's service, counting the streams whose answers are not finished.
#[derive(Clone)]
struct Streams {
    inner: ClientService,
    open: Arc<AtomicUsize>,
}

/// One open stream, until its answer's body is done or dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl hyper::service::Service<Request<Incoming>> for Streams {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Self::Error>> + Send>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(self.open.clone());
        let answer = self.inner.clone().oneshot(req);
        Box::pin(async move {
            let res = answer.await?;
            Ok(res.map(|body| {
                body.map_frame(move |frame| {
                    // Held by the body, so the stream counts as open until the body goes.
                    let _ = &open;
                    frame
                })
                .boxed_unsync()
            }))
        })
    }
}
