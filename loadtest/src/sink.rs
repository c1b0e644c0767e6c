//! `sink`: the other end of a load run, on loopback.
//!
//! - CoT (default): accepts TCP (or TLS, with client certificates if a CA is given), frames
//!   the stream with takgate's framer and counts frames; with `--echo` writes each frame back
//!   to its sender, so a client can time round trips direct and through takgate. This stands
//!   in for OTS's plain CoT port 8088 (or its TLS port).
//! - OTS's TLS CoT port (`--ots --gen-certs DIR`, with or without `--echo`): the CoT sink over
//!   TLS presenting the PKI's OTS server certificate (subject CN `opentakserver`), client
//!   certificates required from the PKI's CA, recording each client's CN. This stands in for
//!   OTS's `eud_handler --ssl` behind takgate's `reoriginate` mode (and nginx's passthrough).
//! - HTTP (`--http`, alias `--ws`): answers `{"status":"ok"}` to anything, `GET /bytes/N` with
//!   N bytes, POST with the count of bytes received, and echoes WebSocket messages on any path
//!   that asks to upgrade. This stands in for OTS's API and Socket.IO on 8081.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use cot::framer::{Framer, FramerConfig, MalformedPolicy};
use futures_util::{SinkExt as _, StreamExt as _};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::cli::SinkArgs;
use crate::tls::Pki;

/// Distinct client CNs a sink remembers (`--ots`); more are counted, not kept.
const MAX_CNS: usize = 1024;

/// Largest `/bytes/N` body.
const MAX_BYTES: usize = 256 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sink has seen.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub connections: AtomicU64,
    pub open: AtomicU64,
    pub tls_errors: AtomicU64,
    /// TLS sessions resumed rather than fully negotiated.
    pub tls_resumed: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// CoT frames read.
    pub frames: AtomicU64,
    pub frame_errors: AtomicU64,
    pub requests: AtomicU64,
    pub ws_sessions: AtomicU64,
    pub ws_messages: AtomicU64,
    /// `--ots`: TLS sessions whose verified client certificate had a subject CN.
    pub client_cns_seen: AtomicU64,
    /// `--ots`: the distinct CNs (the first [`MAX_CNS`]).
    pub client_cns: Mutex<BTreeSet<String>>,
}

/// A snapshot of [`SinkStats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SinkSummary {
    pub connections: u64,
    pub open: u64,
    pub tls_errors: u64,
    pub tls_resumed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames: u64,
    pub frame_errors: u64,
    pub requests: u64,
    pub ws_sessions: u64,
    pub ws_messages: u64,
    pub client_cns_seen: u64,
    pub client_cns: Vec<String>,
}

impl SinkStats {
    pub fn summary(&self) -> SinkSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkSummary {
            connections: g(&self.connections),
            open: g(&self.open),
            tls_errors: g(&self.tls_errors),
            tls_resumed: g(&self.tls_resumed),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            frames: g(&self.frames),
            frame_errors: g(&self.frame_errors),
            requests: g(&self.requests),
            ws_sessions: g(&self.ws_sessions),
            ws_messages: g(&self.ws_messages),
            client_cns_seen: g(&self.client_cns_seen),
            client_cns: self
                .client_cns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cot { echo: bool, max_frame: usize },
    Http,
}

/// A running sink.
pub struct Sink {
    pub addr: SocketAddr,
    pub stats: Arc<SinkStats>,
    mode: Mode,
    tls: bool,
    ots: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Conn {
    stats: Arc<SinkStats>,
    mode: Mode,
    /// Record the clients' CNs.
    ots: bool,
    stop: watch::Receiver<bool>,
    big: Arc<Mutex<Bytes>>,
}

impl Sink {
    /// Binds and starts serving.
    pub async fn start(args: &SinkArgs) -> anyhow::Result<Self> {
        let listen = crate::target::check_listen(args.listen)?;
        let mode = if args.http {
            if args.echo {
                bail!("--echo is for the CoT sink; the HTTP sink always echoes WebSockets");
            }
            if args.ots {
                bail!("--ots is a CoT sink (OTS's TLS CoT port), not an HTTP one");
            }
            Mode::Http
        } else {
            if args.ots && args.gen_certs.is_none() {
                bail!("--ots takes its certificates from a PKI: --gen-certs DIR");
            }
            Mode::Cot {
                echo: args.echo,
                max_frame: args.max_frame,
            }
        };
        let acceptor = tls_acceptor(args)?;
        let listener = bind(listen).with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(SinkStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let tls = acceptor.is_some();
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Conn {
                stats: stats.clone(),
                mode,
                ots: args.ots,
                stop: stop_rx,
                big: Arc::new(Mutex::new(Bytes::new())),
            },
        ));
        Ok(Self {
            addr,
            stats,
            mode,
            tls,
            ots: args.ots,
            stop,
            task,
        })
    }

    /// The line printed on stdout at start: the bound address and what the sink does.
    pub fn announce(&self) -> serde_json::Value {
        let (mode, echo) = match self.mode {
            Mode::Cot { echo, .. } => ("cot", echo),
            Mode::Http => ("http", true),
        };
        let mut line = serde_json::json!({
            "addr": self.addr.to_string(),
            "mode": mode,
            "tls": self.tls,
            "echo": echo,
        });
        if self.ots {
            line["ots"] = true.into();
            line["server_name"] = crate::tls::OTS_SERVER_NAME.into();
        }
        line
    }

    /// Stops accepting and returns what was seen once every connection has ended: at its
    /// client's close, or at most two seconds later.
    pub async fn shutdown(self) -> SinkSummary {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.stats.summary()
    }
}

/// Listen backlog: std's (and so tokio's) default of 128 overflows when hundreds of clients
/// connect at once, and each overflow costs a client a one-second SYN retransmission.
const BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn tls_acceptor(args: &SinkArgs) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    if !args.tls && args.gen_certs.is_none() {
        return Ok(None);
    }
    let (cert, key, ca) = match &args.gen_certs {
        Some(dir) => {
            let pki = Pki::load_or_generate(dir, 1)?;
            if args.ots {
                for f in [&pki.ots_cert, &pki.ots_key] {
                    if !f.exists() {
                        bail!(
                            "--ots: {} is missing (a PKI from an older loadtest): run \
                             `loadtest certs --out {}` again",
                            f.display(),
                            dir.display()
                        );
                    }
                }
                (pki.ots_cert, pki.ots_key, args.ca.clone().or(Some(pki.ca)))
            } else {
                (
                    pki.server_cert,
                    pki.server_key,
                    args.ca.clone().or(Some(pki.ca)),
                )
            }
        }
        None => match (&args.cert, &args.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), args.ca.clone()),
            _ => bail!("--tls needs --cert and --key (or --gen-certs DIR)"),
        },
    };
    let mut settings = cot::tls::TlsSettings::new(cert, key);
    if let Some(ca) = ca {
        settings.client_ca = Some(ca);
        settings.client_auth = cot::tls::ClientAuth::Required;
    }
    if args.http {
        settings.alpn = vec![b"http/1.1".to_vec()];
    }
    Ok(Some(tokio_rustls::TlsAcceptor::from(
        cot::tls::server_config(&settings)?,
    )))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    conn: Conn,
) {
    use futures_util::FutureExt as _;
    let mut stop = conn.stop.clone();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
            // Reap finished connection tasks as we go.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        match accepted {
            Ok((tcp, _)) => spawn_conn(&mut tasks, tcp, acceptor.clone(), &conn),
            // Out of file descriptors and the like: try again shortly rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    // Connections the kernel has already completed are served too, so that what a client
    // sent before it closed is counted.
    while let Some(Ok((tcp, _))) = listener.accept().now_or_never() {
        spawn_conn(&mut tasks, tcp, acceptor.clone(), &conn);
    }
    drop(listener);
    // Each connection ends at its peer's close, or SHUTDOWN_GRACE after the stop.
    while tasks.join_next().await.is_some() {}
}

/// How long connections may go on after the sink is stopped (to read what their clients
/// sent before closing).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn spawn_conn(
    tasks: &mut tokio::task::JoinSet<()>,
    tcp: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    conn: &Conn,
) {
    let _ = tcp.set_nodelay(true);
    let c = Conn {
        stats: conn.stats.clone(),
        mode: conn.mode,
        ots: conn.ots,
        stop: conn.stop.clone(),
        big: conn.big.clone(),
    };
    add(&c.stats.connections, 1);
    add(&c.stats.open, 1);
    tasks.spawn(async move {
        let mut stop = c.stop.clone();
        let grace = async {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            _ = serve(tcp, acceptor, &c) => {}
            _ = grace => {}
        }
        c.stats.open.fetch_sub(1, Ordering::Relaxed);
    });
}

async fn serve(tcp: tokio::net::TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>, c: &Conn) {
    match acceptor {
        None => serve_io(tcp, c).await,
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                        add(&c.stats.tls_resumed, 1);
                    }
                    if c.ots {
                        record_cn(tls.get_ref().1, &c.stats);
                    }
                    serve_io(tls, c).await
                }
                _ => add(&c.stats.tls_errors, 1),
            }
        }
    }
}

/// Notes the verified client certificate's subject CN.
fn record_cn(conn: &rustls::ServerConnection, stats: &SinkStats) {
    let Some(cn) = cot::tls::peer_leaf(conn).and_then(|der| cot::gateway::common_name(der)) else {
        return;
    };
    add(&stats.client_cns_seen, 1);
    let mut cns = stats.client_cns.lock().unwrap_or_else(|e| e.into_inner());
    if cns.len() < MAX_CNS && !cns.contains(&cn) {
        cns.insert(cn);
    }
}

async fn serve_io<S>(io: S, c: &Conn)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    match c.mode {
        Mode::Cot { echo, max_frame } => serve_cot(io, echo, max_frame, &c.stats).await,
        Mode::Http => serve_http(io, c).await,
    }
}

async fn serve_cot<S>(io: S, echo: bool, max_frame: usize, stats: &SinkStats)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(io);
    let mut framer = Framer::new(FramerConfig {
        max_frame,
        malformed: MalformedPolicy::Drop,
    });
    let mut out = Vec::new();
    loop {
        let n = match r.read_buf(framer.read_buf(16 * 1024)).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        add(&stats.bytes_in, n as u64);
        out.clear();
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    add(&stats.frames, 1);
                    if echo {
                        out.extend_from_slice(frame.bytes());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    add(&stats.frame_errors, 1);
                    if e.is_terminal() {
                        return;
                    }
                }
            }
        }
        if !out.is_empty() {
            if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                return;
            }
            add(&stats.bytes_out, out.len() as u64);
        }
    }
}

async fn serve_http<S>(io: S, c: &Conn)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let stats = c.stats.clone();
    let big = c.big.clone();
    let stop = c.stop.clone();
    let service = hyper::service::service_fn(move |req| {
        let stats = stats.clone();
        let big = big.clone();
        let stop = stop.clone();
        async move { Ok::<_, Infallible>(answer(req, &stats, &big, stop).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
}

/// A JSON array of EUD records, as OTS's `/api/eud` sends them, cut to `n` bytes.
fn eud_list(n: usize) -> String {
    let mut out = String::with_capacity(n + 256);
    out.push('[');
    let mut i = 0u32;
    while out.len() < n {
        out.push_str(&format!(
            r#"{{"uid":"ANDROID-{:016x}","callsign":"UNIT-{i}","device":"SM-G99{}","platform":"ATAK-CIV","os":"34","version":"5.{}.0","phone_number":null,"last_event_time":"2026-12-07T17:{:02}:{:02}Z","last_status":"Connected","team":"Cyan","team_role":"Team Member"}},"#,
            u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i % 10,
            i % 4,
            i % 60,
            (i * 7) % 60
        ));
        i += 1;
    }
    out.truncate(n);
    out
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(
    mut req: Request<Incoming>,
    stats: &Arc<SinkStats>,
    big: &Mutex<Bytes>,
    stop: watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    add(&stats.requests, 1);
    let wants_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_ws {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"no Sec-WebSocket-Key"}"#.into(),
            );
        };
        let upgrade = hyper::upgrade::on(&mut req);
        let stats = stats.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else {
                return;
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let mut stop = stop;
            tokio::select! {
                _ = echo_ws(ws, &stats) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        h.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        if let Ok(accept) = header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        return r;
    }
    if let Some(n) = req.uri().path().strip_prefix("/api/euds/") {
        // OTS's EUD list as its /api answers it: JSON of about n bytes, for the compression
        // workloads (issue 16).
        let Ok(n) = n.parse::<usize>() else {
            return json(StatusCode::BAD_REQUEST, r#"{"error":"bad size"}"#.into());
        };
        if n > MAX_BYTES {
            return json(StatusCode::BAD_REQUEST, r#"{"error":"too large"}"#.into());
        }
        add(&stats.bytes_out, n as u64);
        return json(StatusCode::OK, eud_list(n));
    }
    if let Some(n) = req.uri().path().strip_prefix("/bytes/") {
        let Ok(n) = n.parse::<usize>() else {
            return json(StatusCode::BAD_REQUEST, r#"{"error":"bad size"}"#.into());
        };
        if n > MAX_BYTES {
            return json(StatusCode::BAD_REQUEST, r#"{"error":"too large"}"#.into());
        }
        // One shared buffer of the largest size asked for; bodies are slices of it.
        let body = {
            let mut b = big.lock().unwrap_or_else(|e| e.into_inner());
            if b.len() < n {
                *b = Bytes::from(vec![b'x'; n]);
            }
            b.slice(..n)
        };
        add(&stats.bytes_out, n as u64);
        let mut r = Response::new(Full::new(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        return r;
    }
    if req.method() == Method::POST || req.method() == Method::PUT {
        let n = match req.into_body().collect().await {
            Ok(b) => b.to_bytes().len(),
            Err(_) => return json(StatusCode::BAD_REQUEST, r#"{"error":"body"}"#.into()),
        };
        add(&stats.bytes_in, n as u64);
        return json(StatusCode::OK, format!(r#"{{"received":{n}}}"#));
    }
    json(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

async fn echo_ws<S>(mut ws: WebSocketStream<S>, stats: &SinkStats)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    add(&stats.ws_sessions, 1);
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                add(&stats.ws_messages, 1);
                add(&stats.bytes_in, msg.len() as u64);
                let n = msg.len() as u64;
                if ws.send(msg).await.is_err() {
                    return;
                }
                add(&stats.bytes_out, n);
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// `loadtest sink`: start, print the address line, serve until a signal (or `--duration`),
/// print the summary on stderr.
pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    use tokio::signal::unix::{signal, SignalKind};
    let sink = Sink::start(&args).await?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", sink.announce())?;
        out.flush()?;
    }
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = until => {}
    }
    let summary = sink.shutdown().await;
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
