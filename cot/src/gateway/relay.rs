//! The two directions of a session. Each reads what has arrived (up to `read_buffer` bytes),
//! writes it (or the frames it completes) to the other side in one write, and only then reads
//! again: a slow reader slows its writer down (backpressure) instead of growing a buffer.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::limits::{LimitPolicy, Pace, Verdict};
use super::memory::Charge;
use super::metrics::Direction;
use super::outbox::{Outbox, ShedReason, Shedding};
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
    /// The client went past its rate and the policy is to close.
    Limited,
    /// Reading or writing failed.
    Io,
    /// The memory budget had no room for the session to go on.
    Memory,
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

/// Relays until the session ends, and says how it ended: CoT framed both ways with `peer` (the
/// session closing if its user stops being active), bytes unframed without (passthrough, raw).
///
/// Not an `async fn`: one taking `client` and `upstream` by value keeps them in its state beside
/// the halves it splits them into, and so did each `async fn` on the way here (a TLS stream is
/// 1.2 KiB); with the callers' copies, 6.8 KiB of every held session (loadtest/bench
/// cot-idle-10k). The streams are split now; the future holds the halves.
pub(super) fn run<'a, C, U>(
    gw: &'a Gateway,
    client: C,
    upstream: U,
    peer: Option<&'a Peer>,
) -> impl Future<Output = &'static str> + Send + 'a
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'a,
    U: Upstream + 'a,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = upstream.split();
    relay::<C, U>(gw, client_r, client_w, upstream_r, upstream_w, peer)
}

async fn relay<C, U>(
    gw: &Gateway,
    client_r: ReadHalf<C>,
    client_w: WriteHalf<C>,
    upstream_r: U::Read,
    upstream_w: U::Write,
    peer: Option<&Peer>,
) -> &'static str
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
    U: Upstream,
{
    let session = Arc::new(Session::new());
    // What OTS sends is only delimited: validating it costs about as much as relaying it, and
    // the client-to-OTS direction, where hostile input comes from, keeps full validation.
    let framers = peer.map(|_| {
        (
            Framer::new(gw.config.framer),
            Framer::trusted(gw.config.framer),
        )
    });
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
                End::Limited => return "rate_limited",
                End::Io => return "client_error",
                End::Memory => return "memory_budget",
            },
            end = &mut down, if !down_done => match end {
                End::Eof => down_done = true,
                End::Shutdown => return "shutdown",
                End::FrameError => return "upstream_frame_error",
                End::Limited => return "rate_limited",
                End::Io => return "upstream_error",
                End::Memory => return "memory_budget",
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

/// One direction: read what has arrived (at most `read_buffer` bytes), write what it completes,
/// repeat. Towards OTS, reading goes on while a write waits (see [`Outbox`]).
async fn pump<R, W>(
    gw: &Gateway,
    session: &Session,
    direction: Direction,
    mut reader: R,
    mut writer: W,
    framer: Option<Framer>,
) -> End
where
    R: Source,
    W: AsyncWrite + Unpin,
{
    let metrics = &gw.metrics;
    let mut inbox = match framer {
        Some(framer) => Inbox::Framed(Unfinished {
            framer,
            metrics,
            direction,
        }),
        None => Inbox::Raw(BytesMut::new()),
    };
    let bytes = metrics.bytes(direction).clone();
    let mut frames = FrameCounters::default();
    // What clients send to OTS, framed: limited, measured, and queued while OTS is slow.
    let to_ots = direction == Direction::ToUpstream && matches!(inbox, Inbox::Framed(_));
    let mut pace = to_ots
        .then(|| Pace::new(&gw.config.limits, Instant::now()))
        .filter(|p| !p.is_off());
    let mut outbox = Outbox::new(
        to_ots.then(|| Shedding {
            bound: gw.config.upstream_queue,
            counters: metrics.frames_shed.clone(),
        }),
        to_ots.then(|| metrics.relay_seconds.clone()),
    );
    let mut memory = gw.config.memory.charge();
    let limit = gw.config.read_buffer.max(1);
    // Set once reading is over: the direction ends once what was read is written.
    let mut ending: Option<Ending> = None;
    // Past its rate under `delay`: no reading until then.
    let mut resume_at: Option<Instant> = None;
    // The budget had no room for a read: none until a write frees some.
    let mut starved = false;
    loop {
        let idle = outbox.is_idle();
        let reading = ending.is_none() && !starved && (idle || outbox.sheds());
        if !reading && idle {
            return finish(ending, direction, &mut writer).await;
        }
        let queued = outbox.bytes();
        // Writes first: a frame read is on its way before the next is read.
        let step = tokio::select! {
            biased;
            wrote = outbox.write(&mut writer), if !idle => Step::Wrote(wrote),
            // Shutdown is heard between reads: frames already read are still written.
            () = gw.stop.cancelled(), if direction == Direction::ToUpstream && ending.is_none() => {
                Step::Stop
            }
            () = sleep_until(resume_at), if reading && resume_at.is_some() => Step::Resume,
            read = fill(&mut reader, &mut inbox, limit, &mut memory, queued),
                if reading && resume_at.is_none() => Step::Read(read),
        };
        match step {
            Step::Wrote(Ok(())) => starved = false,
            Step::Wrote(Err(_)) => return End::Io,
            Step::Stop => ending = Some(Ending::Shutdown),
            Step::Resume => resume_at = None,
            Step::Read((n, closed)) => {
                if n > 0 {
                    session.touch();
                    bytes.inc_by(n as u64);
                }
                let read_at = Instant::now();
                let stalled = !idle;
                match &mut inbox {
                    Inbox::Raw(buf) => {
                        if !buf.is_empty() {
                            outbox.push(buf.split().freeze(), read_at, false, stalled);
                        }
                    }
                    Inbox::Framed(Unfinished { framer, .. }) => {
                        let batch = Batch {
                            read_at,
                            stalled,
                            frames: &mut frames,
                            pace: pace.as_mut(),
                        };
                        if let Some(end) =
                            take_frames(gw, session, direction, framer, batch, &mut outbox)
                        {
                            ending = Some(Ending::Refused(end));
                        }
                    }
                }
                if outbox.sheds() {
                    outbox.shed_to_bound(gw.config.memory.queue_share());
                }
                match closed {
                    None => inbox.release_if_empty(),
                    Some(Closed::OverBudget) => {
                        // Make room from this session's own queue, else wait for its writes;
                        // a session with nothing to give back cannot go on.
                        if !outbox.shed_one(ShedReason::MemoryBudget) {
                            if outbox.is_idle() {
                                ending = Some(Ending::Memory);
                            } else {
                                starved = true;
                            }
                        }
                    }
                    Some(closed) => ending = ending.or(Some(Ending::Read(closed))),
                }
                // Past its rate under `delay`: the client's next bytes wait (in its socket,
                // then in its own sends) until the session is back within it.
                let wait = pace.as_ref().map_or(Duration::ZERO, Pace::wait);
                if wait > Duration::ZERO && ending.is_none() {
                    metrics.rate_limited(LimitPolicy::Delay).inc();
                    resume_at = Some(Instant::now() + wait);
                }
            }
        }
        // What is held now (a read only grew the charge as far as its buffer could grow).
        memory.settle(inbox.capacity() + outbox.bytes());
    }
}

/// What a direction waits for next.
enum Step {
    Read((usize, Option<Closed>)),
    Wrote(io::Result<()>),
    Stop,
    Resume,
}

/// Why a direction stopped reading.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Read(Closed),
    /// A frame error or a rate under `close`.
    Refused(End),
    Shutdown,
    Memory,
}

/// Ends a direction once everything read was written.
async fn finish<W: AsyncWrite + Unpin>(
    ending: Option<Ending>,
    direction: Direction,
    writer: &mut W,
) -> End {
    match ending {
        Some(Ending::Read(Closed::Eof)) => {
            // Half-close: pass the end of stream on, keep the other direction going.
            let _ = writer.shutdown().await;
            End::Eof
        }
        // OTS's own SSL listener (Python's ssl module) closes its sockets without a TLS
        // close_notify, which rustls reports as an unexpected end of file. It is OTS's ordinary
        // close: pass it on as one (the client gets its close_notify). A cut cannot smuggle
        // anything: only whole frames are relayed, and a frame left unfinished is counted as
        // truncated.
        Some(Ending::Read(Closed::Failed(io::ErrorKind::UnexpectedEof)))
            if direction == Direction::ToClient =>
        {
            let _ = writer.shutdown().await;
            End::Eof
        }
        Some(Ending::Read(_)) => End::Io,
        Some(Ending::Refused(end)) => end,
        Some(Ending::Shutdown) => {
            let _ = writer.shutdown().await;
            End::Shutdown
        }
        Some(Ending::Memory) | None => End::Memory,
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// A read's frames, on their way to the outbox.
struct Batch<'a> {
    read_at: Instant,
    /// They queue behind a write that has not finished.
    stalled: bool,
    frames: &'a mut FrameCounters,
    pace: Option<&'a mut Pace>,
}

/// Moves every frame the framer can complete into `out`, in order. `Some` when a frame error
/// ends the direction (the frames before it are still in `out`, to be written).
fn take_frames(
    gw: &Gateway,
    session: &Session,
    direction: Direction,
    framer: &mut Framer,
    batch: Batch<'_>,
    out: &mut Outbox,
) -> Option<End> {
    let Batch {
        read_at,
        stalled,
        frames,
        mut pace,
    } = batch;
    let metrics = &gw.metrics;
    let policy = gw.config.limits.on_limit;
    loop {
        if session.proto_granted.load(Ordering::Acquire) {
            framer.switch_to_protobuf();
        }
        let frame = match framer.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(e) => {
                metrics.frame_error(direction, e.kind().as_str());
                tracing::debug!(listener = %gw.config.name, direction = direction.as_str(), error = %e, "CoT frame refused");
                if e.is_terminal() {
                    return Some(End::FrameError);
                }
                continue;
            }
        };
        match (direction, frame.negotiation()) {
            (Direction::ToUpstream, Some(Negotiation::Request)) => {
                session.proto_requested.store(true, Ordering::Release);
            }
            // Only a server announces versions or answers a request. OTS relays what a client
            // writes to every other client, so a client's forged grant would switch (and break)
            // a session that is waiting for OTS's answer: such frames never reach OTS.
            (Direction::ToUpstream, Some(Negotiation::Support | Negotiation::Response { .. })) => {
                metrics.frame_error(direction, "forged_control");
                tracing::info!(listener = %gw.config.name, kind = frame.negotiation().map(Negotiation::cot_type), "client sent a server's protocol negotiation message; dropped");
                continue;
            }
            // Before the grant reaches the client: the client's next bytes are protobuf.
            (Direction::ToClient, Some(Negotiation::Response { accepted: true }))
                if session.proto_requested.load(Ordering::Acquire) =>
            {
                session.proto_granted.store(true, Ordering::Release);
            }
            _ => {}
        }
        if let Some(pace) = pace.as_deref_mut() {
            if pace.frame(frame.bytes().len(), policy, Instant::now()) == Verdict::Over {
                metrics.rate_limited(policy).inc();
                if policy == LimitPolicy::Close {
                    tracing::info!(listener = %gw.config.name, "client past its rate; closing the session");
                    return Some(End::Limited);
                }
                continue;
            }
        }
        let class = frame.class();
        frames.inc(metrics, direction, class.as_str());
        out.push(frame.into_bytes(), read_at, class.is_atom(), stalled);
    }
}

/// The connection to OTS: plain TCP, or TLS in reoriginate mode.
pub(super) trait Upstream {
    type Read: Source + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn split(self) -> (Self::Read, Self::Write);
}

impl Upstream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;

    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Upstream for tokio_rustls::client::TlsStream<TcpStream> {
    type Read = ReadHalf<Self>;
    type Write = WriteHalf<Self>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// A reader that can wait for bytes without being handed a buffer, so that an idle session
/// holds none.
pub(super) trait Source: AsyncRead + Unpin {
    /// Resolves when a read would not wait; at once when the reader cannot tell.
    fn ready(&self) -> impl Future<Output = ()> + Send;

    /// Bytes to make room for before the first read of a batch.
    fn first_read(&self, limit: usize) -> usize;
}

impl Source for OwnedReadHalf {
    async fn ready(&self) {
        // An error shows up again on the read that follows.
        let _ = self.readable().await;
    }

    fn first_read(&self, limit: usize) -> usize {
        limit
    }
}

impl<C: AsyncRead + Send> Source for ReadHalf<C> {
    fn ready(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn first_read(&self, limit: usize) -> usize {
        // The buffer a waiting read holds: small, and grown once bytes arrive. (Over TLS this
        // costs no extra system call: rustls reads the socket in 4 KiB steps anyway.)
        limit.min(IDLE_READ)
    }
}

/// Room held by a read that waits on a client, in bytes.
const IDLE_READ: usize = 1024;

/// Where a direction's bytes wait to be written on.
// One per direction, inside the session's future: boxing the framer would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Inbox<'a> {
    Raw(BytesMut),
    Framed(Unfinished<'a>),
}

impl Inbox<'_> {
    fn buf(&mut self, room: usize) -> &mut BytesMut {
        match self {
            Inbox::Raw(buf) => {
                buf.reserve(room);
                buf
            }
            Inbox::Framed(f) => f.framer.read_buf(room),
        }
    }

    /// The most the buffer can hold once it has room for `room` more bytes: growing may
    /// double it.
    fn capacity_for(&self, room: usize) -> usize {
        let (len, capacity) = match self {
            Inbox::Raw(buf) => (buf.len(), buf.capacity()),
            Inbox::Framed(f) => (f.framer.buffered_len(), f.framer.capacity()),
        };
        if capacity - len >= room {
            capacity
        } else {
            (len + room).max(2 * capacity)
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Inbox::Raw(buf) => buf.capacity(),
            Inbox::Framed(f) => f.framer.capacity(),
        }
    }

    /// Lets go of the buffer when it holds nothing, so an idle session keeps no memory.
    fn release_if_empty(&mut self) {
        match self {
            Inbox::Raw(buf) => {
                if buf.is_empty() {
                    *buf = BytesMut::new();
                }
            }
            Inbox::Framed(f) => f.framer.release_if_empty(),
        }
    }
}

/// How a batch of reads ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    Eof,
    Failed(io::ErrorKind),
    /// The memory budget had no room for the buffer a read needs.
    OverBudget,
}

/// Reads what `reader` has: waits for the first bytes, then takes whatever else it can hand over
/// without waiting, up to `limit` bytes, so the frames they complete go out in one write. An end
/// of stream or error after some bytes is reported with them. The buffer grows only as far as
/// `memory` (charged for it and for `queued` bytes besides) has room.
async fn fill<R: Source>(
    reader: &mut R,
    inbox: &mut Inbox<'_>,
    limit: usize,
    memory: &mut Charge,
    queued: usize,
) -> (usize, Option<Closed>) {
    reader.ready().await;
    let first = reader.first_read(limit);
    let mut total = 0;
    std::future::poll_fn(|cx| loop {
        let room = limit.saturating_sub(total);
        if room == 0 {
            return Poll::Ready((total, None));
        }
        let room = if total == 0 { first } else { room };
        if !memory.resize(queued + inbox.capacity_for(room)) {
            return Poll::Ready((total, Some(Closed::OverBudget)));
        }
        let buf = inbox.buf(room);
        let mut limited = buf.limit(room);
        let read = std::pin::pin!(reader.read_buf(&mut limited));
        match read.poll(cx) {
            Poll::Ready(Ok(0)) => return Poll::Ready((total, Some(Closed::Eof))),
            Poll::Ready(Ok(n)) => total += n,
            Poll::Ready(Err(e)) => return Poll::Ready((total, Some(Closed::Failed(e.kind())))),
            Poll::Pending if total > 0 => return Poll::Ready((total, None)),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// A direction's framer. When the session ends, however it ends (end of stream, idle, shutdown,
/// an error), a frame the peer began and never finished is counted as `truncated`: its bytes are
/// never relayed, and nothing else would say so.
struct Unfinished<'a> {
    framer: Framer,
    metrics: &'a super::ListenerMetrics,
    direction: Direction,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        // After `next_frame` returned `Ok(None)` the framer holds only a frame in progress
        // (whitespace between frames is dropped, and a failed stream holds nothing).
        if self.framer.buffered_len() > 0 {
            self.metrics.frame_error(self.direction, "truncated");
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn unlimited() -> Charge {
        super::super::memory::MemoryBudget::unlimited().charge()
    }

    fn within<F: Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(5), f)
    }

    #[tokio::test]
    async fn fill_takes_everything_waiting_in_one_batch_up_to_the_limit() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let (mut reader, _w) = tokio::io::split(ours);
        for chunk in [&b"<event/>"[..], b"<event>", b"</event>"] {
            peer.write_all(chunk).await.unwrap();
        }
        let mut inbox = Inbox::Raw(BytesMut::new());
        let (n, closed) = within(fill(&mut reader, &mut inbox, 1024, &mut unlimited(), 0))
            .await
            .unwrap();
        assert_eq!((n, closed), (23, None));
        assert_eq!(&inbox.buf(0)[..], b"<event/><event></event>");

        // The limit bounds a batch; the rest waits for the next one.
        let mut inbox = Inbox::Raw(BytesMut::new());
        peer.write_all(&[b'x'; 3000]).await.unwrap();
        let (n, closed) = within(fill(&mut reader, &mut inbox, 2000, &mut unlimited(), 0))
            .await
            .unwrap();
        assert_eq!((n, closed), (2000, None));
        let (n, _) = within(fill(&mut reader, &mut inbox, 2000, &mut unlimited(), 0))
            .await
            .unwrap();
        assert_eq!(n, 1000);
    }

    #[tokio::test]
    async fn fill_reports_the_end_of_stream_with_the_bytes_before_it() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let (mut reader, _w) = tokio::io::split(ours);
        peer.write_all(b"last words").await.unwrap();
        drop(peer);
        let mut inbox = Inbox::Raw(BytesMut::new());
        let (n, closed) = within(fill(&mut reader, &mut inbox, 1024, &mut unlimited(), 0))
            .await
            .unwrap();
        assert_eq!((n, closed), (10, Some(Closed::Eof)));
        let (n, closed) = within(fill(&mut reader, &mut inbox, 1024, &mut unlimited(), 0))
            .await
            .unwrap();
        assert_eq!((n, closed), (0, Some(Closed::Eof)));
    }
}
