//! The two directions of a session. Each reads a bounded chunk, writes it (or the frames it
//! completes) to the other side, and only then reads again: a slow reader slows its writer
//! down (backpressure) instead of growing a buffer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::metrics::Direction;
use super::{Gateway, Peer};
use crate::framer::{Framer, Negotiation};
use crate::proxy_protocol;

/// How a direction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The reader sent end-of-stream; the other side's write half was shut down.
    Eof,
    /// Shutdown began; frames already read were written first.
    Shutdown,
    /// A frame broke the rules and the policy is to close.
    FrameError,
    /// Reading or writing failed.
    Io,
}

/// What the two directions share.
struct Session {
    /// Milliseconds since `started` of the last byte read either way.
    last_read: AtomicU64,
    started: Instant,
    /// The client asked for TAK protocol v1 (t-x-takp-q).
    proto_requested: AtomicBool,
    /// The server granted it (t-x-takp-r status true): both directions switch to protobuf.
    proto_granted: AtomicBool,
}

impl Session {
    fn new() -> Self {
        Self {
            last_read: AtomicU64::new(0),
            started: Instant::now(),
            proto_requested: AtomicBool::new(false),
            proto_granted: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing was read either way for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_read.load(Ordering::Relaxed));
            let deadline = self.started + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Relays bytes unframed (passthrough and raw modes).
pub(super) async fn copy<C>(gw: &Gateway, client: C, upstream: TcpStream) -> &'static str
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
{
    run(gw, client, upstream, None).await
}

/// Relays CoT framed both ways, closing the session if its user stops being active.
pub(super) async fn framed<C>(
    gw: &Gateway,
    client: C,
    upstream: TcpStream,
    peer: &Peer,
) -> &'static str
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
{
    run(gw, client, upstream, Some(peer)).await
}

/// Writes the PROXY v2 header for `peer` as the first bytes upstream.
pub(super) async fn send_proxy_header(
    upstream: &mut TcpStream,
    peer: &Peer,
) -> std::io::Result<()> {
    let dst = upstream.local_addr()?;
    let src = peer.addr.unwrap_or(dst);
    let ssl = proxy_protocol::SslInfo {
        version: peer.tls_version,
        cn: peer.cn.as_deref(),
        cipher: peer.cipher.as_deref(),
        client_cert_presented: peer.cert_presented,
        // rustls only completes a handshake whose presented certificate verified.
        verified: peer.cert_presented,
    };
    let header = proxy_protocol::encode_v2(src, dst, Some(&ssl))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    upstream.write_all(&header).await
}

async fn run<C>(gw: &Gateway, client: C, upstream: TcpStream, peer: Option<&Peer>) -> &'static str
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
{
    let session = Arc::new(Session::new());
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = upstream.into_split();
    let framers = peer.map(|_| (Framer::new(gw.config.framer), Framer::new(gw.config.framer)));
    let (up_framer, down_framer) = match framers {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let up = pump(
        gw,
        &session,
        Direction::ToUpstream,
        client_r,
        upstream_w,
        up_framer,
    );
    let down = pump(
        gw,
        &session,
        Direction::ToClient,
        upstream_r,
        client_w,
        down_framer,
    );
    tokio::pin!(up, down);
    let cn = peer.and_then(|p| p.cn.as_deref());
    let revoked = revoked(gw, cn);
    tokio::pin!(revoked);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            end = &mut up, if !up_done => match end {
                End::Eof => up_done = true,
                End::Shutdown => return "shutdown",
                End::FrameError => return "frame_error",
                End::Io => return "client_error",
            },
            end = &mut down, if !down_done => match end {
                End::Eof => down_done = true,
                End::Shutdown => return "shutdown",
                End::FrameError => return "upstream_frame_error",
                End::Io => return "upstream_error",
            },
            () = session.idle(gw.config.idle_timeout) => return "idle",
            () = &mut revoked => return "user_inactive",
        }
        if up_done && down_done {
            return "closed";
        }
    }
}

/// Resolves when `cn`'s user is no longer an active OTS user; never without identity checks.
async fn revoked(gw: &Gateway, cn: Option<&str>) {
    let (Some(users), Some(cn)) = (&gw.config.identity, cn) else {
        return std::future::pending().await;
    };
    let mut generation = users.subscribe();
    loop {
        if generation.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !users.is_active(cn) {
            tracing::info!(listener = %gw.config.name, cn, "user no longer active; closing the session");
            return;
        }
    }
}

/// One direction: read a bounded chunk, write what it completes, repeat.
async fn pump<R, W>(
    gw: &Gateway,
    session: &Session,
    direction: Direction,
    mut reader: R,
    mut writer: W,
    mut framer: Option<Framer>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let metrics = &gw.metrics;
    let bytes = metrics.bytes(direction).clone();
    let mut frames = FrameCounters::default();
    let mut buf = vec![0u8; gw.config.read_buffer];
    loop {
        // Shutdown is only heard between reads: a frame being written is always finished.
        let read = if direction == Direction::ToUpstream {
            tokio::select! {
                r = reader.read(&mut buf) => r,
                () = gw.stop.cancelled() => {
                    let _ = writer.shutdown().await;
                    return End::Shutdown;
                }
            }
        } else {
            reader.read(&mut buf).await
        };
        let n = match read {
            Ok(0) => {
                // Half-close: pass the end of stream on, keep the other direction going.
                let _ = writer.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Io,
        };
        session.touch();
        bytes.inc_by(n as u64);
        let Some(framer) = framer.as_mut() else {
            if writer.write_all(&buf[..n]).await.is_err() {
                return End::Io;
            }
            continue;
        };
        let read_at = Instant::now();
        framer.push(&buf[..n]);
        loop {
            if session.proto_granted.load(Ordering::Acquire) {
                framer.switch_to_protobuf();
            }
            let frame = match framer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    metrics.frame_error(direction, e.kind().as_str());
                    tracing::debug!(listener = %gw.config.name, direction = direction.as_str(), error = %e, "CoT frame refused");
                    if e.is_terminal() {
                        return End::FrameError;
                    }
                    continue;
                }
            };
            match (direction, frame.negotiation()) {
                (Direction::ToUpstream, Some(Negotiation::Request)) => {
                    session.proto_requested.store(true, Ordering::Release);
                }
                // Before the grant reaches the client: the client's next bytes are protobuf.
                (Direction::ToClient, Some(Negotiation::Response { accepted: true }))
                    if session.proto_requested.load(Ordering::Acquire) =>
                {
                    session.proto_granted.store(true, Ordering::Release);
                }
                _ => {}
            }
            frames.inc(metrics, direction, frame.class().as_str());
            if writer.write_all(frame.bytes()).await.is_err() {
                return End::Io;
            }
            if direction == Direction::ToUpstream {
                metrics
                    .relay_seconds
                    .observe(read_at.elapsed().as_secs_f64());
            }
        }
    }
}

/// Per-direction cache of frame counters, so the hot path does no label hashing.
#[derive(Default)]
struct FrameCounters(Vec<(&'static str, IntCounter)>);

impl FrameCounters {
    fn inc(&mut self, metrics: &super::ListenerMetrics, direction: Direction, class: &'static str) {
        if let Some((_, c)) = self.0.iter().find(|(k, _)| *k == class) {
            c.inc();
            return;
        }
        let c = metrics.frame_counter(direction, class);
        c.inc();
        self.0.push((class, c));
    }
}
