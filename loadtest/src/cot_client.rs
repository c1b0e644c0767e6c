//! `cot`: N clients over mutual TLS (or plain TCP) sending templated CoT at a rate per client
//! and framing what comes back with takgate's own framer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::bail;
use cot::framer::{Framer, FramerConfig, MalformedPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::cli::CotArgs;
use crate::cotgen::{CotGen, Payload, Stamp};
use crate::net::{self, BoxIo, OpenGuard, Tls};
use crate::report::Report;
use crate::stats::{nanos_since_epoch, ErrorKind, Stats};
use crate::streams::{self, Link, Plan, Shared, Start};
use crate::tls::ClientTls;

/// The largest frame the client accepts back.
const MAX_FRAME: usize = 8 << 20;

struct Ctx {
    shared: Shared,
    addr: SocketAddr,
    tls: Option<ClientTls>,
    payload: Payload,
    size: Option<usize>,
}

impl Ctx {
    fn tls(&self, i: usize) -> Option<Tls> {
        self.tls.as_ref().map(|t| Tls {
            connector: t.connector(i),
            server_name: t.server_name.clone(),
        })
    }
}

pub async fn run(args: CotArgs) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.idle && args.stream.max_messages.is_some() {
        bail!("--idle sends nothing; --max-messages does not apply");
    }
    let started_at = SystemTime::now();
    let addr = crate::target::resolve_loopback(&args.target).await?;
    let tls = if args.plain {
        None
    } else {
        Some(ClientTls::from_args(&args.tls, true)?)
    };
    net::warn_fd_limit(args.clients);
    let plan = Plan::new(
        args.clients,
        args.rate_per_client,
        args.idle,
        &args.stream,
        &args.run,
    );
    let mut settings = plan.settings();
    let ctx = Arc::new(Ctx {
        shared: Shared::new(plan),
        addr,
        tls,
        payload: args.payload,
        size: args.size,
    });
    let phases = streams::run_clients(&ctx.shared, |i, start| client(i, ctx.clone(), start)).await;

    settings.extend([
        ("tls".into(), (!args.plain).into()),
        ("idle".into(), args.idle.into()),
        (
            "payload".into(),
            serde_json::to_value(args.payload).unwrap_or_default(),
        ),
        (
            "size".into(),
            args.size.map_or(serde_json::Value::Null, Into::into),
        ),
    ]);
    let target = format!("{}{}", if args.plain { "tcp://" } else { "tls://" }, addr);
    Ok(phases.report("cot", target, started_at, settings, &ctx.shared.stats))
}

async fn client(i: usize, ctx: Arc<Ctx>, start: Start) {
    let shared = &ctx.shared;
    let tls = ctx.tls(i);
    // Built during setup, not when sending starts: it parses its templates.
    let gen = (!shared.plan.idle).then(|| CotGen::new(i as u32, ctx.payload, ctx.size));
    let connect = async {
        net::connect(ctx.addr, tls.as_ref(), shared.plan.timeout, &shared.stats)
            .await
            .ok()
    };
    let Some(((io, open), go)) = start.connect(shared, connect).await else {
        return;
    };
    let (r, w) = tokio::io::split(io);
    let link = Link::new(shared, i);
    let reader = read_loop(r, open, &link, shared.plan.idle);
    let Some(gen) = gen else {
        reader.await;
        return;
    };
    tokio::join!(reader, write_loop(i, w, go, gen, &ctx, &link));
}

async fn write_loop(
    i: usize,
    mut w: WriteHalf<BoxIo>,
    go: Instant,
    mut gen: CotGen,
    ctx: &Ctx,
    link: &Link<'_>,
) {
    let pacer = link.pacer(go);
    let mut buf = Vec::with_capacity(ctx.size.unwrap_or(2048));
    while let Some((slot, sent)) = pacer.next().await {
        let stamp = Stamp {
            client: i as u32,
            seq: slot.index,
            intended_ns: nanos_since_epoch(slot.intended),
            sent_ns: nanos_since_epoch(sent),
        };
        gen.event(&stamp, SystemTime::now(), &mut buf);
        let write = async {
            w.write_all(&buf).await?;
            w.flush().await
        };
        if !pacer.send(buf.len(), write, ErrorKind::of_io).await {
            break;
        }
    }
}

async fn read_loop(mut r: ReadHalf<BoxIo>, open: OpenGuard, link: &Link<'_>, idle: bool) {
    let stats = link.stats();
    let mut framer = Framer::new(FramerConfig {
        max_frame: MAX_FRAME,
        malformed: MalformedPolicy::Drop,
    });
    // Idle connections hold little: their buffer grows only if something arrives.
    let chunk = if idle { 1024 } else { 16 * 1024 };
    loop {
        let n = match r.read_buf(framer.read_buf(chunk)).await {
            Ok(0) => {
                link.fail(ErrorKind::Closed);
                break;
            }
            Ok(n) => n,
            Err(e) => {
                link.fail(ErrorKind::of_io(&e));
                break;
            }
        };
        let now = Instant::now();
        Stats::add(&stats.bytes_received, n as u64);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    Stats::add(&stats.received, 1);
                    if let Some(stamp) = frame.uid().and_then(Stamp::parse) {
                        link.echo(now, stamp.client, stamp.intended_ns, stamp.sent_ns);
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_terminal() => {
                    link.fail(ErrorKind::Protocol);
                    drop(open);
                    return;
                }
                // A malformed frame was skipped; the stream goes on.
                Err(_) => stats.error(ErrorKind::Protocol),
            }
        }
    }
    drop(open);
}
