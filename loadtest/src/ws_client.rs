//! `ws`: WebSocket clients sending stamped messages at a rate and timing their echoes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::bail;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::cli::WsArgs;
use crate::net::{self, BoxIo, OpenGuard, Tls};
use crate::report::{Report, RunInfo};
use crate::schedule::{wait_until, Budget, Rate, Schedule};
use crate::stats::{nanos_since_epoch, ErrorKind, Stats};
use crate::streams::{self, Shared};
use crate::target::{parse_url, UrlTarget};
use crate::tls::ClientTls;

/// Bytes of the stamp at the start of every message: client, sequence, intended and actual
/// send time, in hexadecimal.
pub const STAMP_LEN: usize = 8 + 16 + 16 + 16;

/// The stamp: client, seq, intended_ns, sent_ns.
pub fn write_stamp(out: &mut Vec<u8>, client: u32, seq: u64, intended_ns: u64, sent_ns: u64) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "{client:08x}{seq:016x}{intended_ns:016x}{sent_ns:016x}"
    );
}

/// Parses the stamp at the start of `msg`.
pub fn parse_stamp(msg: &[u8]) -> Option<(u32, u64, u64, u64)> {
    let s = std::str::from_utf8(msg.get(..STAMP_LEN)?).ok()?;
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(s.get(r)?, 16).ok();
    Some((
        u32::try_from(hex(0..8)?).ok()?,
        hex(8..24)?,
        hex(24..40)?,
        hex(40..56)?,
    ))
}

type Ws = WebSocketStream<BoxIo>;

struct Ctx {
    shared: Shared,
    target: UrlTarget,
    tls: Option<Tls>,
    rate: Rate,
    window: usize,
    budget: Arc<Budget>,
    clients: usize,
    size: usize,
    binary: bool,
    duration: Duration,
    timeout: Duration,
    spin: bool,
    status: Mutex<BTreeMap<String, u64>>,
}

impl Ctx {
    fn fail(&self, failed: &AtomicBool, kind: ErrorKind) {
        if !self.shared.stopping() && !failed.swap(true, Ordering::Relaxed) {
            self.shared.stats.error(kind);
        }
    }

    fn status(&self, code: u16) {
        *self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code.to_string())
            .or_default() += 1;
    }
}

fn kind_of(e: &tungstenite::Error) -> ErrorKind {
    match e {
        tungstenite::Error::Io(io) => ErrorKind::of_io(io),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            ErrorKind::Closed
        }
        tungstenite::Error::Http(_) => ErrorKind::Status,
        tungstenite::Error::Tls(_) => ErrorKind::Tls,
        _ => ErrorKind::Protocol,
    }
}

pub async fn run(args: WsArgs) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.size < STAMP_LEN {
        bail!("--size must be at least {STAMP_LEN} bytes (the stamp)");
    }
    let started_at = SystemTime::now();
    let target = parse_url(&args.url, ["ws", "wss"]).await?;
    let tls = if target.tls {
        let c = ClientTls::from_args(&args.tls, args.tls.cert.is_some())?;
        Some(Tls {
            connector: c.connector(0),
            server_name: c.server_name,
        })
    } else {
        None
    };
    net::warn_fd_limit(args.clients);
    let stats = Arc::new(Stats::default());
    let ctx = Arc::new(Ctx {
        shared: Shared::new(stats.clone(), args.connect_concurrency),
        target,
        tls,
        rate: args.rate_per_client,
        window: args.window.max(1),
        budget: Arc::new(Budget::new(args.max_messages)),
        clients: args.clients,
        size: args.size,
        binary: args.binary,
        duration: args.run.duration,
        timeout: args.run.timeout,
        spin: args.run.spin,
        status: Mutex::new(BTreeMap::new()),
    });
    let progress = crate::progress::start(stats.clone(), "messages", args.run.quiet);
    let (go_tx, go_rx) = watch::channel(None);
    let (conn_tx, conn_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for i in 0..args.clients {
        tasks.spawn(client(i, ctx.clone(), conn_tx.clone(), go_rx.clone()));
    }
    drop(conn_tx);
    let phases = streams::run_phases(
        &ctx.shared,
        conn_rx,
        go_tx,
        args.clients,
        false,
        args.run.duration,
        args.drain,
        args.run.timeout,
    )
    .await;
    let open_at_end = Stats::get(&stats.conns_open);
    streams::stop(&mut tasks).await;
    drop(progress);

    let mut settings = BTreeMap::from([
        ("clients".into(), args.clients.into()),
        (
            "rate_per_client".into(),
            args.rate_per_client.to_string().into(),
        ),
        ("size".into(), args.size.into()),
        ("binary".into(), args.binary.into()),
        ("duration_s".into(), args.run.duration.as_secs_f64().into()),
        (
            "max_messages".into(),
            args.max_messages
                .map_or(serde_json::Value::Null, Into::into),
        ),
    ]);
    if args.rate_per_client == Rate::Max {
        settings.insert("window".into(), args.window.into());
    }
    let mut report = Report::build(
        RunInfo {
            mode: "ws",
            unit: "messages",
            target: ctx.target.url.clone(),
            started_at,
            settings,
            elapsed_s: phases.measured.as_secs_f64(),
            setup_phase_s: phases.setup.as_secs_f64(),
        },
        &stats,
    );
    report.connections.open_at_end = open_at_end;
    report.status = ctx.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(report)
}

async fn handshake(i: usize, ctx: &Ctx) -> Option<(Ws, OpenGuard)> {
    let _ = i;
    let stats = &ctx.shared.stats;
    let (io, open) = net::connect(ctx.target.addr, ctx.tls.as_ref(), ctx.timeout, stats)
        .await
        .ok()?;
    let upgrade = tokio_tungstenite::client_async(ctx.target.url.as_str(), io);
    match tokio::time::timeout(ctx.timeout, upgrade).await {
        Ok(Ok((ws, resp))) => {
            ctx.status(resp.status().as_u16());
            Some((ws, open))
        }
        Ok(Err(e)) => {
            if let tungstenite::Error::Http(resp) = &e {
                ctx.status(resp.status().as_u16());
            }
            stats.error(kind_of(&e));
            None
        }
        Err(_) => {
            stats.error(ErrorKind::Timeout);
            None
        }
    }
}

async fn client(
    i: usize,
    ctx: Arc<Ctx>,
    connected: mpsc::UnboundedSender<()>,
    mut go: watch::Receiver<Option<Instant>>,
) {
    let conn = {
        let _slot = ctx.shared.connect_slots.acquire().await;
        handshake(i, &ctx).await
    };
    let _ = connected.send(());
    let Some((ws, open)) = conn else {
        return;
    };
    let Some(go) = streams::wait_go(&mut go).await else {
        return;
    };
    let (w, r) = ws.split();
    let failed = AtomicBool::new(false);
    let window = Semaphore::new(ctx.window);
    let reader = read_loop(i, r, open, &ctx, &window, &failed);
    let writer = async {
        write_loop(i, w, go, &ctx, &window, &failed).await;
        ctx.shared.writer_done();
    };
    tokio::join!(reader, writer);
}

async fn write_loop(
    i: usize,
    mut w: SplitSink<Ws, Message>,
    go: Instant,
    ctx: &Ctx,
    window: &Semaphore,
    failed: &AtomicBool,
) {
    let stats = &ctx.shared.stats;
    let end = go + ctx.duration;
    let sched = Schedule::new(
        ctx.rate,
        go + streams::phase(i, ctx.clients, ctx.rate),
        end,
        ctx.budget.clone(),
    );
    let mut buf = Vec::with_capacity(ctx.size);
    loop {
        if ctx.rate == Rate::Max {
            match tokio::time::timeout_at(end, window.acquire()).await {
                Ok(Ok(p)) => p.forget(),
                _ => break,
            }
        }
        let Some(slot) = sched.claim() else {
            break;
        };
        wait_until(slot.intended, ctx.spin).await;
        if failed.load(Ordering::Relaxed) {
            break;
        }
        let sent = Instant::now();
        buf.clear();
        write_stamp(
            &mut buf,
            i as u32,
            slot.index,
            nanos_since_epoch(slot.intended),
            nanos_since_epoch(sent),
        );
        buf.resize(ctx.size, b'x');
        let msg = if ctx.binary {
            Message::Binary(buf.clone().into())
        } else {
            // The stamp and the padding are ASCII.
            Message::Text(String::from_utf8_lossy(&buf).into_owned().into())
        };
        match tokio::time::timeout(ctx.timeout, w.send(msg)).await {
            Ok(Ok(())) => {
                Stats::add(&stats.sent, 1);
                Stats::add(&stats.bytes_sent, ctx.size as u64);
            }
            Ok(Err(e)) => {
                ctx.fail(failed, kind_of(&e));
                break;
            }
            Err(_) => {
                ctx.fail(failed, ErrorKind::Timeout);
                break;
            }
        }
    }
}

async fn read_loop(
    i: usize,
    mut r: SplitStream<Ws>,
    open: OpenGuard,
    ctx: &Ctx,
    window: &Semaphore,
    failed: &AtomicBool,
) {
    let stats = &ctx.shared.stats;
    while let Some(msg) = r.next().await {
        let (len, stamp) = match &msg {
            Ok(Message::Text(t)) => (t.len(), parse_stamp(t.as_bytes())),
            Ok(Message::Binary(b)) => (b.len(), parse_stamp(b)),
            Ok(Message::Close(_)) => {
                ctx.fail(failed, ErrorKind::Closed);
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                ctx.fail(failed, kind_of(e));
                break;
            }
        };
        let now = Instant::now();
        Stats::add(&stats.received, 1);
        Stats::add(&stats.bytes_received, len as u64);
        if let Some((client, _seq, intended, sent)) = stamp {
            ctx.shared.echo(now, intended, sent);
            if client as usize == i && ctx.rate == Rate::Max {
                window.add_permits(1);
            }
        }
    }
    if !failed.load(Ordering::Relaxed) {
        ctx.fail(failed, ErrorKind::Closed);
    }
    drop(open);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut buf = Vec::new();
        write_stamp(&mut buf, 7, 123_456, u64::MAX - 1, 42);
        assert_eq!(buf.len(), STAMP_LEN);
        buf.extend_from_slice(b"xxxx");
        assert_eq!(parse_stamp(&buf), Some((7, 123_456, u64::MAX - 1, 42)));
        assert_eq!(parse_stamp(b"short"), None);
        assert_eq!(parse_stamp(&[b'z'; 64]), None);
    }
}
