//! The body type shared by every response takgate produces: upstream streams, static files and
//! small generated bodies all box into it, so handlers compose without generic plumbing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use tokio::time::{Instant, Sleep};

/// Errors carried inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response (and forwarded request) body type.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with no content.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body whose next frame must arrive within `timeout` of the previous one (or of the start).
/// Bounds both a client trickling an upload and an upstream that stops mid-response, without
/// limiting how long a steadily flowing stream may last.
pub struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    /// When the last frame came (or the body was made).
    last: Instant,
    /// Made the first time the inner body has nothing ready, and moved only then: a body whose
    /// frames are ready when asked for (most responses arrive with their head) never touches
    /// the timer wheel, and a streaming one re-arms once per wait, not once per frame.
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The error an [`IdleTimeout`] body yields when a frame is late.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct IdleTimedOut(pub Duration);

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            last: Instant::now(),
            sleep: None,
        }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.last = Instant::now();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = this.last + this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimedOut(this.timeout).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How far the upstream has got with a request body, shared between the body and the wait for
/// the response: the response timeout is the upstream's time to act, so it runs from the
/// upstream's last progress, and not while the body waits on the client (that wait is bounded
/// by the body's own [`IdleTimeout`]).
#[derive(Debug)]
pub struct SendProgress {
    started: Instant,
    /// Nanoseconds after `started` when the upstream last took a frame (or the body ended).
    last_nanos: AtomicU64,
    /// The upstream asked for more and the client has not sent it yet.
    awaiting_client: AtomicBool,
}

impl SendProgress {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            started: Instant::now(),
            last_nanos: AtomicU64::new(0),
            awaiting_client: AtomicBool::new(false),
        })
    }

    /// When the upstream last took part of the request (its start, if nothing yet).
    pub fn last(&self) -> Instant {
        self.started + Duration::from_nanos(self.last_nanos.load(Ordering::Acquire))
    }

    /// Whether the request is held up by the client rather than by the upstream.
    pub fn awaiting_client(&self) -> bool {
        self.awaiting_client.load(Ordering::Acquire)
    }

    /// `body`, recording its progress here.
    pub fn track<B>(self: &std::sync::Arc<Self>, body: B) -> Tracked<B> {
        Tracked {
            inner: body,
            progress: self.clone(),
        }
    }
}

/// A body that records in a [`SendProgress`] each frame the upstream takes.
pub struct Tracked<B> {
    inner: B,
    progress: std::sync::Arc<SendProgress>,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let progress = &this.progress;
        if polled.is_ready() {
            let nanos = u64::try_from(progress.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            progress.last_nanos.store(nanos, Ordering::Release);
        }
        progress
            .awaiting_client
            .store(polled.is_pending(), Ordering::Release);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
