//! `ws`: WebSocket clients sending stamped messages at a rate and timing their echoes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::bail;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::cli::WsArgs;
use crate::net::{self, BoxIo, OpenGuard, Tls};
use crate::report::Report;
use crate::stats::{nanos_since_epoch, ErrorKind, Stats};
use crate::streams::{self, Link, Plan, Shared, Start};
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
    size: usize,
    binary: bool,
    status: Mutex<BTreeMap<String, u64>>,
}

impl Ctx {
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
    let plan = Plan::new(
        args.clients,
        args.rate_per_client,
        false,
        &args.stream,
        &args.run,
    );
    let mut settings = plan.settings();
    let ctx = Arc::new(Ctx {
        shared: Shared::new(plan),
        target,
        tls,
        size: args.size,
        binary: args.binary,
        status: Mutex::new(BTreeMap::new()),
    });
    let phases = streams::run_clients(&ctx.shared, |i, start| client(i, ctx.clone(), start)).await;

    settings.extend([
        ("size".into(), args.size.into()),
        ("binary".into(), args.binary.into()),
    ]);
    let target = ctx.target.url.clone();
    let mut report = phases.report("ws", target, started_at, settings, &ctx.shared.stats);
    report.status = ctx.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(report)
}

async fn handshake(ctx: &Ctx) -> Option<(Ws, OpenGuard)> {
    let stats = &ctx.shared.stats;
    let timeout = ctx.shared.plan.timeout;
    let (io, open) = net::connect(ctx.target.addr, ctx.tls.as_ref(), timeout, stats)
        .await
        .ok()?;
    let upgrade = tokio_tungstenite::client_async(ctx.target.url.as_str(), io);
    match tokio::time::timeout(timeout, upgrade).await {
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

async fn client(i: usize, ctx: Arc<Ctx>, start: Start) {
    let shared = &ctx.shared;
    let Some(((ws, open), go)) = start.connect(shared, handshake(&ctx)).await else {
        return;
    };
    let (w, r) = ws.split();
    let link = Link::new(shared, i);
    tokio::join!(read_loop(r, open, &link), write_loop(i, w, go, &ctx, &link));
}

async fn write_loop(
    i: usize,
    mut w: SplitSink<Ws, Message>,
    go: Instant,
    ctx: &Ctx,
    link: &Link<'_>,
) {
    let pacer = link.pacer(go);
    let mut buf = Vec::with_capacity(ctx.size);
    while let Some((slot, sent)) = pacer.next().await {
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
        if !pacer.send(ctx.size, w.send(msg), kind_of).await {
            break;
        }
    }
}

async fn read_loop(mut r: SplitStream<Ws>, open: OpenGuard, link: &Link<'_>) {
    let stats = link.stats();
    while let Some(msg) = r.next().await {
        let (len, stamp) = match &msg {
            Ok(Message::Text(t)) => (t.len(), parse_stamp(t.as_bytes())),
            Ok(Message::Binary(b)) => (b.len(), parse_stamp(b)),
            Ok(Message::Close(_)) => {
                link.fail(ErrorKind::Closed);
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                link.fail(kind_of(e));
                break;
            }
        };
        let now = Instant::now();
        Stats::add(&stats.received, 1);
        Stats::add(&stats.bytes_received, len as u64);
        if let Some((client, _seq, intended, sent)) = stamp {
            link.echo(now, client, intended, sent);
        }
    }
    if !link.failed() {
        link.fail(ErrorKind::Closed);
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
