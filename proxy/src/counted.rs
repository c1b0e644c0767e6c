//! A stream wrapper that reports the bytes read through it as they pass.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told of every read, with the number of bytes it returned.
pub trait OnRead {
    fn on_read(&self, n: usize);
}

impl OnRead for IntCounter {
    fn on_read(&self, n: usize) {
        self.inc_by(n as u64);
    }
}

pin_project_lite::pin_project! {
    /// Reads pass through to `inner` and are reported to `on_read`; writes pass through untouched.
    pub struct Counted<T, C> {
        #[pin]
        inner: T,
        on_read: C,
    }
}

impl<T, C> Counted<T, C> {
    pub fn new(inner: T, on_read: C) -> Self {
        Self { inner, on_read }
    }
}

impl<T: AsyncRead, C: OnRead> AsyncRead for Counted<T, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        this.on_read
            .on_read(buf.filled().len().saturating_sub(before));
        res
    }
}

impl<T: AsyncWrite, C> AsyncWrite for Counted<T, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
