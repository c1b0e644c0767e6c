//! The end of a request: one access-log line and the request metrics, written when the response
//! body is finished or dropped, so duration and bytes cover the whole response (a streamed
//! download or a long-poll), not only its head.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Instant;

use crate::error::ErrorKind;
use crate::http::body::{Body, BoxError};
use crate::http::forward;
use crate::http::router::RouteClass;
use crate::metrics::ListenerMetrics;
use cot::listener::GaugeGuard;

/// What is known about a request when its response head is ready.
#[derive(Debug)]
pub struct RequestRecord {
    pub listener: Arc<str>,
    pub route: RouteClass,
    pub method: Method,
    pub path: String,
    pub client: SocketAddr,
    pub status: StatusCode,
    pub start: Instant,
    pub upstream_time: Option<Duration>,
    pub access_log: bool,
    pub metrics: Arc<ListenerMetrics>,
    pub in_flight: GaugeGuard,
}

/// A response body that reports the request when it ends.
pub struct Logged {
    inner: Body,
    bytes: u64,
    /// The body's declared length: hyper stops polling once that many bytes are out, so
    /// reaching it is completion even without an end-of-stream poll.
    expected: Option<u64>,
    error: Option<String>,
    record: Option<RequestRecord>,
}

impl Logged {
    pub fn new(inner: Body, record: RequestRecord) -> Self {
        let expected = inner.size_hint().exact();
        Self {
            inner,
            bytes: 0,
            expected,
            error: None,
            record: Some(record),
        }
    }

    fn completed(&self) -> bool {
        self.inner.is_end_stream() || self.expected == Some(self.bytes)
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if this.error.is_none() {
                    this.count_broken_body(e.as_ref());
                }
                this.error = Some(e.to_string());
            }
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Logged {
    /// A body that breaks off after its head went out is a failed request its status class
    /// cannot show (the client saw 200): count it by what broke. A proxied body breaks because
    /// the upstream went silent (`response_timeout`) or closed or broke its stream (`protocol`).
    fn count_broken_body(&self, err: &(dyn std::error::Error + 'static)) {
        let Some(r) = &self.record else {
            return;
        };
        let kind = if r.upstream_time.is_none() {
            ErrorKind::Internal
        } else if forward::is_idle_timeout(err) {
            ErrorKind::UpstreamTimeout
        } else {
            ErrorKind::UpstreamProtocol
        };
        r.metrics.proxy_error(r.route, kind);
    }

    fn finish(&mut self) {
        let Some(r) = self.record.take() else {
            return;
        };
        let elapsed = r.start.elapsed();
        r.metrics
            .request_done(r.route, &r.method, r.status, elapsed.as_secs_f64());
        if r.access_log {
            let upstream_ms = r.upstream_time.map(|d| d.as_secs_f64() * 1000.0);
            tracing::info!(
                target: "takgate::access",
                listener = %r.listener,
                client = %r.client,
                method = %r.method,
                path = %r.path,
                route = r.route.as_str(),
                status = r.status.as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                upstream_ms,
                bytes = self.bytes,
                error = self.error.as_deref(),
                "request"
            );
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // A client that goes away mid-body still gets its line, with the bytes it received.
        if self.record.is_some() && self.error.is_none() && !self.completed() {
            self.error = Some("response not completed".to_owned());
        }
        self.finish();
    }
}
