//! `link`: a user-space TCP relay that makes loopback behave like a tactical link (cellular,
//! satellite, mesh radio): a one-way delay of half the round trip and a bandwidth per direction,
//! shared by every connection through it, as one radio link is shared by a browser's
//! connections.
//!
//! Each direction is a serial line: a segment (at most `--mtu` bytes) read from one side takes
//! `len × 8 / rate` to leave, after every segment that was read before it in that direction (on
//! any connection), and arrives `rtt / 2` after it left. The line's buffer is bounded
//! (`--queue`): while that many bytes wait to leave, no side is read, so senders feel TCP back
//! pressure instead of filling memory. Nothing is dropped or reordered. A new connection's first
//! byte waits one round trip, as behind a TCP handshake over the link.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::LinkArgs;
use crate::target::resolve_loopback;

/// Bits per second, parsed from `1mbit`, `256kbit`, `9600bit` or a bare number of bits/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth(u64);

impl Bandwidth {
    pub fn bits_per_sec(self) -> u64 {
        self.0
    }

    /// How long `bytes` take to leave at this rate.
    fn serialisation(self, bytes: usize) -> Duration {
        // u128: 10^9 × 8 × bytes does not overflow for any usize.
        let nanos = (bytes as u128 * 8 * 1_000_000_000) / u128::from(self.0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl FromStr for Bandwidth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit() && c != '.') {
            Some(i) => lower.split_at(i),
            None => (lower.as_str(), "bit"),
        };
        let scale = match unit {
            "bit" | "bps" => 1.0,
            "kbit" | "kbps" => 1e3,
            "mbit" | "mbps" => 1e6,
            "gbit" | "gbps" => 1e9,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?} (bit, kbit, mbit, gbit)"
                ))
            }
        };
        match digits.parse::<f64>() {
            Ok(v) if v.is_finite() && v * scale >= 1.0 && v * scale <= 1e12 => {
                Ok(Self((v * scale) as u64))
            }
            _ => Err(format!(
                "{s:?} is not a bandwidth between 1 bit/s and 1000 gbit/s (e.g. 1mbit, 256kbit)"
            )),
        }
    }
}

/// One direction of the link: a serial line with a delay, shared by every connection.
#[derive(Debug)]
pub struct Line {
    rate: Bandwidth,
    delay: Duration,
    /// Longest the line's backlog may be before readers wait (the queue, in time at `rate`).
    max_backlog: Duration,
    /// When the last scheduled segment has left.
    free_at: Mutex<Instant>,
    bytes: AtomicU64,
}

impl Line {
    pub fn new(rate: Bandwidth, delay: Duration, queue_bytes: usize, now: Instant) -> Self {
        Self {
            rate,
            delay,
            max_backlog: rate.serialisation(queue_bytes),
            free_at: Mutex::new(now),
            bytes: AtomicU64::new(0),
        }
    }

    /// When a reader may read again: once the backlog is within the queue's bound.
    pub fn readable_at(&self) -> Instant {
        let free_at = *self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        free_at.checked_sub(self.max_backlog).unwrap_or(free_at)
    }

    /// Puts a segment of `len` bytes read at `now` on the line; returns when it arrives.
    pub fn schedule(&self, len: usize, now: Instant) -> Instant {
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let left = (*free_at).max(now) + self.rate.serialisation(len);
        *free_at = left;
        left + self.delay
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Both directions and the connection counts.
#[derive(Debug)]
pub struct Link {
    /// Client → target.
    pub up: Line,
    /// Target → client.
    pub down: Line,
    mtu: usize,
    rtt: Duration,
    connections: AtomicU64,
    connect_failures: AtomicU64,
}

/// What `link` prints on SIGUSR1 and when it stops: bytes each way so far.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct LinkStats {
    pub event: &'static str,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub connections: u64,
    pub connect_failures: u64,
}

impl Link {
    pub fn new(args: &LinkArgs) -> Self {
        let now = Instant::now();
        let delay = args.rtt / 2;
        Self {
            up: Line::new(args.rate, delay, args.queue, now),
            down: Line::new(args.rate, delay, args.queue, now),
            mtu: args.mtu,
            rtt: args.rtt,
            connections: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    pub fn stats(&self, event: &'static str) -> LinkStats {
        LinkStats {
            event,
            up_bytes: self.up.bytes(),
            down_bytes: self.down.bytes(),
            connections: self.connections.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }
}

/// Segments in flight per connection and direction: the line's delay and queue bound them in
/// time; this bounds them in memory whatever the rate.
const IN_FLIGHT: usize = 1024;

/// Relays one direction: reads segments as the line allows, delivers each at its arrival time,
/// and passes the end of the stream on once everything before it has arrived.
async fn pump<R, W>(mut from: R, mut to: W, line: Arc<Link>, up: bool) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let mtu = line.mtu;
    let reader_link = line.clone();
    let reader = tokio::spawn(async move {
        let line = if up {
            &reader_link.up
        } else {
            &reader_link.down
        };
        let mut buf = vec![0u8; mtu];
        loop {
            tokio::time::sleep_until(line.readable_at()).await;
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let arrives = line.schedule(n, Instant::now());
            if tx
                .send((arrives, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    });
    while let Some((arrives, segment)) = rx.recv().await {
        tokio::time::sleep_until(arrives).await;
        to.write_all(&segment).await?;
    }
    to.shutdown().await?;
    reader.await.unwrap_or(Ok(()))
}

async fn relay(client: TcpStream, target: SocketAddr, link: Arc<Link>, timeout: Duration) {
    // The kernel completed the client's handshake at once; on the emulated link it takes a
    // round trip before the client's first byte can leave (SYN, SYN-ACK).
    let handshake_done = Instant::now() + link.rtt;
    let server = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            link.connect_failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("link: connecting to {target}: {e}");
            return;
        }
        Err(_) => {
            link.connect_failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("link: connecting to {target}: no answer within {timeout:?}");
            return;
        }
    };
    tokio::time::sleep_until(handshake_done).await;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Either direction failing (a reset) ends the connection: dropping both halves closes it.
    let _ = tokio::try_join!(pump(cr, sw, link.clone(), true), pump(sr, cw, link, false));
}

/// The listener, bound and checked: loopback on both sides.
pub struct Relay {
    listener: TcpListener,
    target: SocketAddr,
    pub link: Arc<Link>,
    timeout: Duration,
}

impl Relay {
    pub async fn bind(args: &LinkArgs) -> anyhow::Result<Self> {
        if !args.listen.ip().is_loopback() {
            bail!(
                "refusing --listen {}: link listens on loopback only (127.0.0.0/8 or ::1)",
                args.listen
            );
        }
        if args.mtu == 0 || args.mtu > 65_536 {
            bail!("--mtu {} must be between 1 and 65536 bytes", args.mtu);
        }
        let target = resolve_loopback(&args.target).await?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        Ok(Self {
            listener,
            target,
            link: Arc::new(Link::new(args)),
            timeout: args.timeout,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Accepts and relays until the future is dropped.
    pub async fn serve(&self) {
        loop {
            match self.listener.accept().await {
                Ok((client, _)) => {
                    self.link.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(relay(client, self.target, self.link.clone(), self.timeout));
                }
                Err(e) => {
                    // EMFILE and the like: say so and go on rather than spin.
                    eprintln!("link: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// `loadtest link`: print the address line, relay until a signal (or `--duration`), printing
/// the byte counts on SIGUSR1 and at the end.
pub async fn run(args: LinkArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let relay = Relay::bind(&args).await?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    print(&serde_json::json!({
        "event": "listening",
        "addr": relay.local_addr()?.to_string(),
        "target": relay.target.to_string(),
        "rtt_ms": args.rtt.as_millis() as u64,
        "rate_bits_per_sec": args.rate.bits_per_sec(),
        "queue_bytes": args.queue,
    }))?;
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let serve = relay.serve();
    tokio::pin!(serve);
    loop {
        tokio::select! {
            _ = &mut serve => {}
            _ = usr1.recv() => print(&relay.link.stats("stats"))?,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut until => break,
        }
    }
    print(&relay.link.stats("end"))
}

/// One JSON line on stdout, flushed at once (a test reads it through a pipe).
fn print(v: &impl Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(v)?)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_units() {
        assert_eq!("1mbit".parse::<Bandwidth>(), Ok(Bandwidth(1_000_000)));
        assert_eq!("256kbit".parse::<Bandwidth>(), Ok(Bandwidth(256_000)));
        assert_eq!("1.5Mbit".parse::<Bandwidth>(), Ok(Bandwidth(1_500_000)));
        assert_eq!("9600".parse::<Bandwidth>(), Ok(Bandwidth(9600)));
        for bad in ["", "0", "fast", "1tbit", "-3kbit", "1e9999mbit", "0.1bit"] {
            assert!(bad.parse::<Bandwidth>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn segments_queue_behind_each_other_then_take_the_delay() {
        let t0 = Instant::now();
        // 8 kbit/s: a 1000-byte segment takes one second to leave.
        let line = Line::new(Bandwidth(8000), Duration::from_millis(300), 2000, t0);
        let a = line.schedule(1000, t0);
        assert_eq!(a, t0 + Duration::from_millis(1300));
        // Read at once behind it (another connection, same direction): waits for the first.
        let b = line.schedule(1000, t0);
        assert_eq!(b, t0 + Duration::from_millis(2300));
        // The backlog is now 2 s = the 2000-byte queue: readers may go on once it drains to
        // the bound, which it already is.
        assert_eq!(line.readable_at(), t0);
        let c = line.schedule(500, t0);
        assert_eq!(c, t0 + Duration::from_millis(2800));
        assert_eq!(line.readable_at(), t0 + Duration::from_millis(500));
        // An idle line: a segment read later leaves at once.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(line.schedule(1, later), later + Duration::from_millis(301));
        assert_eq!(line.bytes(), 2501);
    }

    fn args(target: SocketAddr) -> LinkArgs {
        LinkArgs {
            listen: "127.0.0.1:0".parse().expect("addr"),
            target: target.to_string(),
            rtt: Duration::from_millis(2),
            rate: Bandwidth(1_000_000_000),
            queue: 4096,
            mtu: 100,
            timeout: Duration::from_secs(5),
            duration: None,
        }
    }

    /// Bytes arrive whole and in order both ways, across many segments, and a half close is
    /// passed on after the data, so a request/response protocol works through it.
    #[tokio::test]
    async fn relays_both_ways_in_order_with_half_close() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = upstream.local_addr().expect("addr");
        let relay = Relay::bind(&args(target)).await.expect("relay");
        let addr = relay.local_addr().expect("addr");
        let link = relay.link.clone();
        let serving = tokio::spawn(async move { relay.serve().await });
        let request: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let echo = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            got.reverse();
            s.write_all(&got).await.expect("write");
            s.shutdown().await.expect("shutdown");
        });
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(&request).await.expect("write");
        c.shutdown().await.expect("half close");
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut back))
            .await
            .expect("answer in time")
            .expect("read");
        let mut expected = request.clone();
        expected.reverse();
        assert_eq!(back, expected);
        echo.await.expect("echo");
        let stats = link.stats("end");
        assert_eq!((stats.up_bytes, stats.down_bytes), (10_000, 10_000));
        assert_eq!((stats.connections, stats.connect_failures), (1, 0));
        serving.abort();
    }

    #[tokio::test]
    async fn refuses_a_listen_address_off_loopback() {
        let mut a = args("127.0.0.1:9".parse().expect("addr"));
        a.listen = "0.0.0.0:0".parse().expect("addr");
        let err = Relay::bind(&a).await.err().expect("refused");
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
