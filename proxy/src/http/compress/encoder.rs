//! Brotli and gzip encoders that hand out what they have after every input chunk, so a streamed
//! body is never held back by the compressor.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::Coding;
use crate::http::body::{Body, BoxError};

/// How hard to work: per response on the fly, or once for a file the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// Brotli 4 / gzip 5: most of the size gain for a small share of the CPU of the top levels.
    Stream,
    /// Brotli 9 / gzip 9, paid once per file version.
    Cached,
}

/// Brotli's window for streamed responses: 2^18 bytes (256 KiB) keeps each encoder's memory
/// under about a megabyte; the cached variants use the full 4 MiB window.
const STREAM_LGWIN: u32 = 18;
const CACHED_LGWIN: u32 = 22;
/// Brotli's internal input buffer.
const BROTLI_BUFFER: usize = 4096;

pub enum Encoder {
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Encoder {
    pub fn new(coding: Coding, effort: Effort) -> Self {
        match (coding, effort) {
            (Coding::Br, Effort::Stream) => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                4,
                STREAM_LGWIN,
            ))),
            (Coding::Br, Effort::Cached) => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                9,
                CACHED_LGWIN,
            ))),
            (Coding::Gzip, effort) => {
                let level = if effort == Effort::Stream { 5 } else { 9 };
                Self::Gzip(flate2::write::GzEncoder::new(
                    Vec::new(),
                    flate2::Compression::new(level),
                ))
            }
        }
    }

    /// Compresses `data` and flushes: the returned bytes decode to everything pushed so far.
    pub fn push(&mut self, data: &[u8]) -> io::Result<Bytes> {
        let out = match self {
            Self::Br(w) => {
                w.write_all(data)?;
                w.flush()?;
                w.get_mut()
            }
            Self::Gzip(w) => {
                w.write_all(data)?;
                w.flush()?;
                w.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// Ends the stream: every byte of the encoding not yet taken by [`Encoder::push`].
    pub fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            Self::Br(w) => w.into_inner(),
            Self::Gzip(w) => w.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// `data` compressed whole at [`Effort::Cached`], for the file cache (blocking: run it off the
/// async workers).
pub fn compress_all(coding: Coding, data: &[u8]) -> io::Result<Bytes> {
    let mut encoder = Encoder::new(coding, Effort::Cached);
    match &mut encoder {
        Encoder::Br(w) => w.write_all(data)?,
        Encoder::Gzip(w) => w.write_all(data)?,
    }
    encoder.finish()
}

/// A response body compressed as it streams: every data frame in gives one flushed frame out.
pub struct Compressed {
    inner: Body,
    encoder: Option<Encoder>,
    /// Trailers held until the encoding's last bytes are out.
    trailers: Option<http::HeaderMap>,
    /// The listener's share of concurrent encoders, returned when the body ends or is dropped.
    _permit: OwnedSemaphorePermit,
}

impl Compressed {
    pub fn new(inner: Body, coding: Coding, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            encoder: Some(Encoder::new(coding, Effort::Stream)),
            trailers: None,
            _permit: permit,
        }
    }
}

impl http_body::Body for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = encoder.push(&data)?;
                        // A chunk too small to move the encoder's output on yields nothing yet;
                        // the flush still put it in the stream, so nothing is held back.
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        return Poll::Ready(this.end().transpose());
                    }
                },
                Some(Err(e)) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => return Poll::Ready(this.end().transpose()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Compressed {
    /// The encoding's last bytes (or the trailers, when those are all there is left).
    fn end(&mut self) -> Result<Option<Frame<Bytes>>, BoxError> {
        let Some(encoder) = self.encoder.take() else {
            return Ok(None);
        };
        let tail = encoder.finish()?;
        if tail.is_empty() {
            return Ok(self.trailers.take().map(Frame::trailers));
        }
        Ok(Some(Frame::data(tail)))
    }
}
