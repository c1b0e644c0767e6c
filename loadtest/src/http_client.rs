//! `http` and `static`: keep-alive HTTP/1.1 (or, with `--http2`, HTTP/2) connections taking the
//! slots of one open-model schedule (or going as fast as they can), reading every body to the end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, USER_AGENT};
use http::{Method as HttpMethod, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use crate::cli::{HttpArgs, Method};
use crate::net::{self, OpenGuard, Tls};
use crate::report::{Percentiles, Report, RunInfo, UrlReport};
use crate::schedule::{drive, Budget, Operation, Outcome, Schedule, Slot};
use crate::stats::{ErrorKind, Recorder, Stats};
use crate::target::{parse_url, UrlTarget};
use crate::tls::ClientTls;

/// Per-URL counts.
#[derive(Default)]
struct UrlStats {
    requests: std::sync::atomic::AtomicU64,
    ok: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    latency: Recorder,
}

struct Shared {
    urls: Vec<UrlTarget>,
    per_url: Vec<UrlStats>,
    /// Index of each URL's endpoint (address, scheme and host).
    endpoint_of: Vec<usize>,
    endpoints: usize,
    tls: Option<Tls>,
    method: HttpMethod,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    http2: bool,
    timeout: std::time::Duration,
    stats: Arc<Stats>,
    status: Mutex<BTreeMap<String, u64>>,
}

struct Conn {
    sender: Sender,
    _open: OpenGuard,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::Http2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// One keep-alive worker: a connection per endpoint, opened on first use and again after a
/// failure.
struct Worker {
    shared: Arc<Shared>,
    conns: Vec<Option<Conn>>,
}

impl Worker {
    async fn connect(&mut self, endpoint: usize, url: usize) -> Result<(), ErrorKind> {
        let s = &self.shared;
        let target = &s.urls[url];
        let tls = if target.tls { s.tls.as_ref() } else { None };
        let (io, open) = net::connect(target.addr, tls, s.timeout, &s.stats).await?;
        let sender = if s.http2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|_| ErrorKind::Protocol)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::Http2(sender)
        } else {
            let (sender, conn) = http1::handshake(TokioIo::new(io))
                .await
                .map_err(|_| ErrorKind::Protocol)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::Http1(sender)
        };
        self.conns[endpoint] = Some(Conn {
            sender,
            _open: open,
        });
        Ok(())
    }

    async fn request(&mut self, url: usize) -> Result<(), ErrorKind> {
        let shared = self.shared.clone();
        let s = &*shared;
        let endpoint = s.endpoint_of[url];
        if self.conns[endpoint]
            .as_ref()
            .is_none_or(|c| c.sender.is_closed())
        {
            self.conns[endpoint] = None;
            if let Err(kind) = self.connect(endpoint, url).await {
                // Do not spin on a refused target at maximum rate.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                return Err(kind);
            }
        }
        let Some(conn) = self.conns[endpoint].as_mut() else {
            return Err(ErrorKind::Connect);
        };
        let target = &s.urls[url];
        // HTTP/2 carries the host in `:authority`, taken from an absolute URI.
        let req = if s.http2 {
            Request::builder().uri(format!(
                "https://{}{}",
                target.authority, target.path_and_query
            ))
        } else {
            Request::builder()
                .uri(target.path_and_query.as_str())
                .header(HOST, target.authority.as_str())
        };
        let mut req = req
            .method(s.method.clone())
            .header(USER_AGENT, concat!("loadtest/", env!("CARGO_PKG_VERSION")));
        if s.method == HttpMethod::POST || !s.body.is_empty() {
            req = req.header(CONTENT_LENGTH, s.body.len());
        }
        let mut req = req
            .body(Full::new(s.body.clone()))
            .map_err(|_| ErrorKind::Protocol)?;
        for (k, v) in &s.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        Stats::add(&s.stats.sent, 1);
        Stats::add(&s.stats.bytes_sent, s.body.len() as u64);
        s.per_url[url]
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let exchange = async {
            let resp = conn.sender.send(req).await.map_err(|e| {
                if e.is_canceled() || e.is_incomplete_message() {
                    ErrorKind::Closed
                } else if e.is_parse() {
                    ErrorKind::Protocol
                } else {
                    ErrorKind::Io
                }
            })?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| ErrorKind::Io)?;
                if let Some(data) = frame.data_ref() {
                    n += data.len() as u64;
                }
            }
            Ok::<_, ErrorKind>((status, n))
        };
        let result = tokio::time::timeout(s.timeout, exchange)
            .await
            .unwrap_or(Err(ErrorKind::Timeout));
        let (status, n) = match result {
            Ok(r) => r,
            Err(kind) => {
                self.conns[endpoint] = None;
                return Err(kind);
            }
        };
        Stats::add(&s.stats.received, 1);
        Stats::add(&s.stats.bytes_received, n);
        s.per_url[url]
            .bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        *s.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status.as_u16().to_string())
            .or_default() += 1;
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(ErrorKind::Status)
        }
    }
}

impl Operation for Worker {
    async fn run(&mut self, slot: Slot) -> Outcome {
        let url = (slot.index % self.shared.urls.len() as u64) as usize;
        let sent = Instant::now();
        let result = self.request(url).await;
        if result.is_ok() {
            let u = &self.shared.per_url[url];
            u.ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            u.latency
                .record(Instant::now().saturating_duration_since(slot.intended));
        }
        Outcome { sent, result }
    }
}

/// Runs `http` (or `static`, as `mode`).
pub async fn run(args: HttpArgs, mode: &'static str) -> anyhow::Result<Report> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let started_at = SystemTime::now();
    let mut urls = Vec::with_capacity(args.urls.len());
    for u in &args.urls {
        urls.push(parse_url(u, ["http", "https"]).await?);
    }
    if args.http2 && urls.iter().any(|u| !u.tls) {
        bail!("--http2 takes https:// URLs only (h2 is chosen by ALPN)");
    }
    let tls = if urls.iter().any(|u| u.tls) {
        let client = ClientTls::from_args(&args.tls, false)?;
        let connector = if args.http2 {
            let mut config = (*client.config(0)).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        } else {
            client.connector(0)
        };
        Some(Tls {
            connector,
            server_name: client.server_name,
        })
    } else {
        None
    };
    // URLs on the same address, scheme and host share a connection.
    let mut keys: Vec<(std::net::SocketAddr, bool, String)> = Vec::new();
    let endpoint_of = urls
        .iter()
        .map(|u| {
            let key = (u.addr, u.tls, u.authority.clone());
            keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                keys.push(key);
                keys.len() - 1
            })
        })
        .collect();
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("--header {h:?}: expected `Name: value`");
        };
        headers.push((
            HeaderName::from_bytes(k.trim().as_bytes()).with_context(|| format!("header {h:?}"))?,
            HeaderValue::from_str(v.trim()).with_context(|| format!("header {h:?}"))?,
        ));
    }
    let stats = Arc::new(Stats::default());
    let shared = Arc::new(Shared {
        per_url: urls.iter().map(|_| UrlStats::default()).collect(),
        endpoint_of,
        endpoints: keys.len(),
        urls,
        tls,
        method: match args.method {
            Method::Get => HttpMethod::GET,
            Method::Post => HttpMethod::POST,
        },
        body: Bytes::from(vec![b'x'; args.body_size]),
        headers,
        http2: args.http2,
        timeout: args.run.timeout,
        stats: stats.clone(),
        status: Mutex::new(BTreeMap::new()),
    });
    net::warn_fd_limit(args.connections * shared.endpoints);
    let progress = crate::progress::start(stats.clone(), "requests", args.run.quiet);

    // Setup: every worker opens its connection to the first URL's endpoint, all at once.
    let setup_start = Instant::now();
    let mut workers = Vec::with_capacity(args.connections);
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let mut w = Worker {
            shared: shared.clone(),
            conns: (0..shared.endpoints).map(|_| None).collect(),
        };
        opening.spawn(async move {
            let _ = w.connect(w.shared.endpoint_of[0], 0).await;
            w
        });
    }
    while let Some(w) = opening.join_next().await {
        workers.push(w.context("a connecting task failed")?);
    }
    let setup_phase = setup_start.elapsed();

    let go = Instant::now();
    let end = go + args.run.duration;
    let rate = args.rate;
    let spin = args.run.spin;
    // One schedule shared by every worker: whoever is free takes the next slot.
    let sched = Arc::new(
        Schedule::new(rate, go, end, Arc::new(Budget::new(args.max_requests)))
            .with_late_limit(args.run.timeout),
    );
    let mut running = tokio::task::JoinSet::new();
    for mut w in workers {
        let sched = sched.clone();
        let stats = stats.clone();
        running.spawn(async move {
            drive(&sched, &mut w, &stats, spin).await;
            w
        });
    }
    // Every request is bounded by the timeout, so this ends; the extra second is slack.
    let hard_stop = end + args.run.timeout + std::time::Duration::from_secs(1);
    let mut finished = Vec::new();
    loop {
        match tokio::time::timeout_at(hard_stop, running.join_next()).await {
            Ok(Some(Ok(w))) => finished.push(w),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                running.abort_all();
                break;
            }
        }
    }
    let elapsed = go.elapsed();
    let open_at_end = Stats::get(&stats.conns_open);
    drop(progress);

    let mut report = Report::build(
        RunInfo {
            mode,
            unit: "requests",
            target: shared
                .urls
                .first()
                .map(|u| u.url.clone())
                .unwrap_or_default(),
            started_at,
            settings: BTreeMap::from([
                ("rate".into(), rate.to_string().into()),
                ("connections".into(), args.connections.into()),
                ("duration_s".into(), args.run.duration.as_secs_f64().into()),
                (
                    "max_requests".into(),
                    args.max_requests
                        .map_or(serde_json::Value::Null, Into::into),
                ),
                (
                    "method".into(),
                    format!("{:?}", args.method).to_uppercase().into(),
                ),
                ("body_size".into(), args.body_size.into()),
                ("urls".into(), args.urls.clone().into()),
            ]),
            elapsed_s: elapsed.as_secs_f64(),
            setup_phase_s: setup_phase.as_secs_f64(),
        },
        &stats,
    );
    report.connections.open_at_end = open_at_end;
    report.status = shared
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let secs = elapsed.as_secs_f64().max(1e-9);
    report.urls = shared
        .urls
        .iter()
        .zip(&shared.per_url)
        .map(|(u, s)| {
            let bytes = s.bytes.load(std::sync::atomic::Ordering::Relaxed);
            UrlReport {
                url: u.url.clone(),
                requests: s.requests.load(std::sync::atomic::Ordering::Relaxed),
                ok: s.ok.load(std::sync::atomic::Ordering::Relaxed),
                bytes_received: bytes,
                received_mb_per_s: (bytes as f64 / secs / 1e6 * 1000.0).round() / 1000.0,
                latency: Percentiles::of(&s.latency.snapshot()),
            }
        })
        .collect();
    drop(finished);
    Ok(report)
}
