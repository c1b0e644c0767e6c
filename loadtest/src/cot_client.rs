//! `cot`: N clients over mutual TLS (or plain TCP) sending templated CoT at a rate per client
//! and framing what comes back with takgate's own framer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use cot::framer::{Framer, FramerConfig, MalformedPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::CotArgs;
use crate::cotgen::{CotGen, Payload, Stamp};
use crate::net::{self, BoxIo, OpenGuard, Tls};
use crate::report::{Report, RunInfo};
use crate::schedule::{wait_until, Budget, Rate, Schedule};
use crate::stats::{nanos_since_epoch, ErrorKind, Stats};
use crate::streams::{self, Shared};
use crate::tls::ClientTls;

/// The largest frame the client accepts back.
const MAX_FRAME: usize = 8 << 20;

struct Ctx {
    shared: Shared,
    addr: SocketAddr,
    tls: Option<ClientTls>,
    rate: Rate,
    window: usize,
    budget: Arc<Budget>,
    clients: usize,
    duration: Duration,
    timeout: Duration,
    payload: Payload,
    size: Option<usize>,
    idle: bool,
    spin: bool,
}

impl Ctx {
    fn tls(&self, i: usize) -> Option<Tls> {
        self.tls.as_ref().map(|t| Tls {
            connector: t.connector(i),
            server_name: t.server_name.clone(),
        })
    }

    /// Counts a connection's failure once, whichever half notices it first.
    fn fail(&self, failed: &AtomicBool, kind: ErrorKind) {
        if !self.shared.stopping() && !failed.swap(true, Ordering::Relaxed) {
            self.shared.stats.error(kind);
        }
    }
}

pub async fn run(args: CotArgs) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.idle && args.max_messages.is_some() {
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
    let stats = Arc::new(Stats::default());
    let ctx = Arc::new(Ctx {
        shared: Shared::new(stats.clone(), args.connect_concurrency),
        addr,
        tls,
        rate: args.rate_per_client,
        window: args.window.max(1),
        budget: Arc::new(Budget::new(args.max_messages)),
        clients: args.clients,
        duration: args.run.duration,
        timeout: args.run.timeout,
        payload: args.payload,
        size: args.size,
        idle: args.idle,
        spin: args.run.spin,
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
        args.idle,
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
        ("tls".into(), (!args.plain).into()),
        ("idle".into(), args.idle.into()),
        (
            "rate_per_client".into(),
            args.rate_per_client.to_string().into(),
        ),
        ("duration_s".into(), args.run.duration.as_secs_f64().into()),
        (
            "max_messages".into(),
            args.max_messages
                .map_or(serde_json::Value::Null, Into::into),
        ),
        (
            "payload".into(),
            serde_json::to_value(args.payload).unwrap_or_default(),
        ),
        (
            "size".into(),
            args.size.map_or(serde_json::Value::Null, Into::into),
        ),
        (
            "connect_concurrency".into(),
            args.connect_concurrency.into(),
        ),
    ]);
    if args.rate_per_client == Rate::Max {
        settings.insert("window".into(), args.window.into());
    }
    let mut report = Report::build(
        RunInfo {
            mode: "cot",
            unit: "messages",
            target: format!("{}{}", if args.plain { "tcp://" } else { "tls://" }, addr),
            started_at,
            settings,
            elapsed_s: phases.measured.as_secs_f64(),
            setup_phase_s: phases.setup.as_secs_f64(),
        },
        &stats,
    );
    report.connections.open_at_end = open_at_end;
    Ok(report)
}

async fn client(
    i: usize,
    ctx: Arc<Ctx>,
    connected: mpsc::UnboundedSender<()>,
    mut go: watch::Receiver<Option<Instant>>,
) {
    let conn = {
        let _slot = ctx.shared.connect_slots.acquire().await;
        net::connect(
            ctx.addr,
            ctx.tls(i).as_ref(),
            ctx.timeout,
            &ctx.shared.stats,
        )
        .await
    };
    let _ = connected.send(());
    let Ok((io, open)) = conn else {
        return;
    };
    let Some(go) = streams::wait_go(&mut go).await else {
        return;
    };
    let (r, w) = tokio::io::split(io);
    let failed = AtomicBool::new(false);
    let window = Semaphore::new(ctx.window);
    let reader = read_loop(i, r, open, &ctx, &window, &failed);
    if ctx.idle {
        reader.await;
        return;
    }
    let writer = async {
        write_loop(i, w, go, &ctx, &window, &failed).await;
        ctx.shared.writer_done();
    };
    tokio::join!(reader, writer);
}

async fn write_loop(
    i: usize,
    mut w: WriteHalf<BoxIo>,
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
    let mut gen = CotGen::new(i as u32, ctx.payload, ctx.size);
    let mut buf = Vec::with_capacity(ctx.size.unwrap_or(2048));
    loop {
        if ctx.rate == Rate::Max {
            // At most `window` messages awaiting their echo.
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
        match tokio::time::timeout(ctx.timeout, write).await {
            Ok(Ok(())) => {
                Stats::add(&stats.sent, 1);
                Stats::add(&stats.bytes_sent, buf.len() as u64);
            }
            Ok(Err(e)) => {
                ctx.fail(failed, ErrorKind::of_io(&e));
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
    mut r: ReadHalf<BoxIo>,
    open: OpenGuard,
    ctx: &Ctx,
    window: &Semaphore,
    failed: &AtomicBool,
) {
    let stats = &ctx.shared.stats;
    let mut framer = Framer::new(FramerConfig {
        max_frame: MAX_FRAME,
        malformed: MalformedPolicy::Drop,
    });
    // Idle connections hold little: their buffer grows only if something arrives.
    let chunk = if ctx.idle { 1024 } else { 16 * 1024 };
    loop {
        let n = match r.read_buf(framer.read_buf(chunk)).await {
            Ok(0) => {
                ctx.fail(failed, ErrorKind::Closed);
                break;
            }
            Ok(n) => n,
            Err(e) => {
                ctx.fail(failed, ErrorKind::of_io(&e));
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
                        ctx.shared.echo(now, stamp.intended_ns, stamp.sent_ns);
                        if stamp.client as usize == i && ctx.rate == Rate::Max {
                            window.add_permits(1);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_terminal() => {
                    ctx.fail(failed, ErrorKind::Protocol);
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
