//! The real binary's lifecycle under load (issue 7, point 3): SIGTERM during a 100 MiB upload
//! and during CoT traffic, SIGHUP certificate reloads while clients keep handshaking, and how a
//! drain ends: SIGINT like SIGTERM, a second signal at once, the grace running out. Each
//! test starts `takgate` as a child process, signals it with kill(1) and checks what the clients
//! and the upstream saw, and how the process ended.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use takgate_tests::certs::{server_name, TestPki};
use takgate_tests::client::{connection, read_response, within};
use takgate_tests::cot::{stream_config, tls_connect, CotUpstream};
use takgate_tests::process::TakgateProcess;
use takgate_tests::proxy::{base_config, web_config};
use takgate_tests::upstream::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The longest any one bulk step may take on a loaded machine (a debug build relaying 100 MiB).
const LONG: Duration = Duration::from_secs(120);
/// The longest wait for something that should follow promptly (a reload, a count, a close).
const WAIT: Duration = Duration::from_secs(30);

/// Waits until connecting to `addr` fails: the listener is closed.
async fn refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while within(TcpStream::connect(addr)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `cond` until it holds; fails the test after `limit`, saying `what`.
async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After SIGTERM: exit 0, the drain having finished within the grace.
async fn exits_cleanly(gate: &mut TakgateProcess, grace: Duration) {
    let status = gate.wait_exit(grace).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gate.log());
    let log = gate.log();
    assert!(log.contains("shutdown complete"), "{log}");
}

// ------------------------------------------------------------------ SIGTERM during an upload

const UPLOAD: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Sends `bytes` of body through `tx`, a chunk at a time (the channel's capacity is the
/// client's only buffer, so this follows the upload's real progress).
async fn feed(tx: &mpsc::Sender<Bytes>, bytes: u64) {
    let chunk = Bytes::from(vec![b'u'; CHUNK]);
    for _ in 0..bytes / CHUNK as u64 {
        tokio::time::timeout(LONG, tx.send(chunk.clone()))
            .await
            .expect("the upload stalled")
            .expect("the connection dropped the upload");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_100_mib_upload_lets_it_finish_then_exits_0() {
    let up = FakeUpstream::start().await;
    let grace = Duration::from_secs(60);
    let mut gate = TakgateProcess::start(&web_config(
        &up.url(),
        "[shutdown]\ngrace = \"60s\"\nwebsocket_grace = \"1s\"",
    ))
    .await;
    let web = gate.http("web");

    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    }));
    let req = Request::post("/api/upload")
        .header("host", web.to_string())
        .header("content-length", UPLOAD)
        .body(body)
        .unwrap();
    let mut sender = connection(web).await;
    let answer = tokio::spawn(async move {
        let resp = tokio::time::timeout(LONG, sender.send_request(req))
            .await
            .expect("no response head")
            .expect("the upload's response");
        let status = resp.status();
        let body = tokio::time::timeout(LONG, resp.into_body().collect())
            .await
            .expect("no response body")
            .expect("response body")
            .to_bytes();
        (status, body)
    });

    // Half the upload is through takgate when the signal comes.
    feed(&tx, UPLOAD / 2).await;
    until(WAIT, "the upload to reach the upstream", || {
        up.upload_progress() >= 8 * 1024 * 1024
    })
    .await;
    let signalled = Instant::now();
    gate.signal("TERM");
    refused(web).await;
    assert!(gate.running(), "takgate exited with an upload in flight");
    assert!(up.upload_progress() < UPLOAD);

    feed(&tx, UPLOAD / 2).await;
    drop(tx);
    let (status, body) = answer.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, UPLOAD.to_string(), "the upstream's byte count");
    assert_eq!(up.uploaded(), vec![UPLOAD]);
    assert_eq!(up.broken_uploads(), 0);
    exits_cleanly(&mut gate, grace.saturating_sub(signalled.elapsed())).await;
}

// ------------------------------------------------------------ SIGTERM during CoT traffic

const EUDS: usize = 6;
/// Each client's bound: it stops at its first failed write, or after this many events (far
/// more than the socket buffers between it and a paused upstream hold).
const MAX_EVENTS: usize = 20_000;

/// Event `seq` of client `eud`: numbered, and of varying length (0.5 to 3.5 KB), so that
/// events straddle takgate's reads and TLS records.
fn event(eud: usize, seq: usize) -> Vec<u8> {
    let pad = "x".repeat(200 + (seq * 733) % 3000);
    format!(
        "<event version=\"2.0\" uid=\"eud{eud}-{seq}\" type=\"a-f-G-U-C\" how=\"m-g\" \
time=\"2026-11-26T10:00:00Z\" start=\"2026-11-26T10:00:00Z\" stale=\"2026-11-26T10:05:00Z\">\
<point lat=\"0\" lon=\"0\" hae=\"0\" ce=\"9\" le=\"9\"/><detail><remarks>{pad}</remarks>\
</detail></event>"
    )
    .into_bytes()
}

/// What the fake OTS read on one connection, and how that connection ended.
#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    /// `Some(true)`: end of stream; `Some(false)`: an error (a reset) or a stall.
    clean_end: Option<bool>,
}

impl Received {
    fn events(&self) -> usize {
        self.bytes.windows(8).filter(|w| w == b"</event>").count()
    }
}

/// Reads one upstream connection to its end, stopping between reads while `paused`.
async fn ots_reader(
    mut conn: TcpStream,
    received: Arc<Mutex<Received>>,
    mut paused: watch::Receiver<bool>,
    parked: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if *paused.borrow() {
            parked.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::time::timeout(LONG, paused.wait_for(|p| !*p)).await;
            parked.fetch_sub(1, Ordering::SeqCst);
        }
        let pausing = async {
            if paused.wait_for(|p| *p).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        // A pause takes effect at once, even while waiting for bytes (a read is cancel-safe).
        let read = tokio::select! {
            read = tokio::time::timeout(LONG, conn.read(&mut buf)) => read,
            () = pausing => continue,
        };
        let mut r = received.lock().unwrap();
        match read {
            Ok(Ok(0)) => {
                r.clean_end = Some(true);
                return;
            }
            Ok(Ok(n)) => r.bytes.extend_from_slice(&buf[..n]),
            Ok(Err(_)) | Err(_) => {
                r.clean_end = Some(false);
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_cot_traffic_relays_every_event_read_and_not_shed_whole_then_exits_0() {
    let pki = TestPki::new();
    let ots = CotUpstream::start().await;
    let grace = Duration::from_secs(30);
    let config = format!(
        "{}\n[shutdown]\ngrace = \"30s\"\n{}",
        base_config("http://127.0.0.1:1"),
        // Clients write as fast as they can, and takgate reads as fast as they write, also
        // while OTS pauses: no rate limits here.
        stream_config(
            "cot",
            ots.addr,
            "terminate",
            &pki,
            "[stream.limits]\nevents_per_second = 0\nbytes_per_second = 0\n"
        )
        .replace(
            "handshake_timeout = \"500ms\"",
            "handshake_timeout = \"10s\""
        )
    );
    let mut gate = TakgateProcess::start(&config).await;
    let cot = gate.stream("cot");

    let stop = Arc::new(AtomicBool::new(false));
    let (pause, paused) = watch::channel(false);
    let parked = Arc::new(AtomicUsize::new(0));
    // Every client connects first, then all start together.
    let (start, started) = watch::channel(false);
    let mut clients = Vec::new();
    let mut sessions = Vec::new();
    for eud in 0..EUDS {
        let cert = pki.issue_client(&format!("eud{eud}"));
        let mut tls = tls_connect(cot, &pki, Some(&cert)).await.unwrap();
        let stop = stop.clone();
        let mut started = started.clone();
        clients.push(tokio::spawn(async move {
            if started.wait_for(|s| *s).await.is_err() {
                return 0;
            }
            let mut written = 0;
            while written < MAX_EVENTS && !stop.load(Ordering::Relaxed) {
                let write = async {
                    tls.write_all(&event(eud, written)).await?;
                    tls.flush().await
                };
                match tokio::time::timeout(LONG, write).await {
                    Ok(Ok(())) => written += 1,
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            written
        }));
        let received = Arc::new(Mutex::new(Received::default()));
        let reader = tokio::spawn(ots_reader(
            ots.accept().await,
            received.clone(),
            paused.clone(),
            parked.clone(),
        ));
        sessions.push((received, reader));
    }
    start.send(true).unwrap();
    until(WAIT, "events from every client at the upstream", || {
        sessions
            .iter()
            .all(|(r, _)| r.lock().unwrap().events() >= 20)
    })
    .await;

    // OTS stops reading: takgate goes on reading events, queues what fits its bound and sheds
    // the rest (counted), so that it holds events read and not yet delivered.
    pause.send(true).unwrap();
    until(WAIT, "the upstream to stop reading", || {
        parked.load(Ordering::SeqCst) == EUDS
    })
    .await;
    let shed = |reason: &'static str| [("listener", "cot"), ("reason", reason)];
    gate.wait_metric(
        "takgate_stream_frames_shed_total",
        &shed("session_queue"),
        "an event shed",
        |v| v > 0.0,
    )
    .await;

    // The clients stop; once takgate's count of events read holds still, every one of them
    // is either queued for OTS or shed.
    stop.store(true, Ordering::Relaxed);
    let labels = [("listener", "cot"), ("direction", "to_upstream")];
    let deadline = Instant::now() + WAIT;
    let (mut read, mut still) = (0, 0);
    while still < 10 {
        let now = gate.metric("takgate_cot_frames_total", &labels).await as usize;
        still = if now == read { still + 1 } else { 0 };
        read = now;
        assert!(Instant::now() < deadline, "takgate never stopped reading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut shed_total = 0;
    for reason in ["session_queue", "memory_budget"] {
        shed_total += gate
            .metric("takgate_stream_frames_shed_total", &shed(reason))
            .await as usize;
    }
    gate.signal("TERM");
    refused(cot).await;
    pause.send(false).unwrap();
    exits_cleanly(&mut gate, grace).await;

    let mut delivered = 0;
    let mut seen = [false; EUDS];
    for (received, reader) in sessions {
        within(reader).await.unwrap();
        let r = received.lock().unwrap();
        assert_eq!(
            r.clean_end,
            Some(true),
            "the upstream side was not closed cleanly"
        );
        // Split into events: nothing may follow the last one (no truncated event).
        let mut events = Vec::new();
        let mut rest = &r.bytes[..];
        while let Some(end) = rest.windows(8).position(|w| w == b"</event>") {
            events.push(&rest[..end + 8]);
            rest = &rest[end + 8..];
        }
        assert!(
            rest.is_empty(),
            "{} bytes of a truncated event reached the upstream",
            rest.len()
        );
        let first = String::from_utf8_lossy(&events[0][..100]).into_owned();
        let eud: usize = first
            .split("uid=\"eud")
            .nth(1)
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no client uid in {first}"));
        assert!(!seen[eud], "two upstream sessions for eud{eud}");
        seen[eud] = true;
        // In order, whole, none repeated: the client's events, some shed.
        let mut seq = 0;
        for got in &events {
            while seq < MAX_EVENTS && *got != event(eud, seq).as_slice() {
                seq += 1;
            }
            assert!(
                seq < MAX_EVENTS,
                "eud{eud}: an event out of order or altered"
            );
            seq += 1;
        }
        delivered += events.len();
    }
    assert!(shed_total > 0);
    assert_eq!(
        delivered + shed_total,
        read,
        "{read} events read, {shed_total} shed, {delivered} delivered"
    );
    for client in clients {
        let written = within(client).await.unwrap();
        assert!(
            written < MAX_EVENTS,
            "a client ran out of events before the test stopped it"
        );
    }
}

// ------------------------------------------------------------------ SIGHUP under load

const HANDSHAKERS: usize = 8;
const ROUNDS: usize = 4;
/// Each client's bound on handshakes; the test normally stops them much sooner.
const MAX_HANDSHAKES: usize = 5000;
const FAILED: [(&str, &str); 1] = [("result", "error")];

const PING: &[u8] = b"<event version=\"2.0\" uid=\"ping\" type=\"t-x-c-t\" how=\"h-g-i-g-o\" \
time=\"2026-11-26T10:00:00Z\" start=\"2026-11-26T10:00:00Z\" stale=\"2026-11-26T10:00:10Z\">\
<point lat=\"0\" lon=\"0\" hae=\"0\" ce=\"9\" le=\"9\"/><detail/></event>";

/// A CoT port that reads each connection to its end, then closes it.
async fn cot_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(Ok(n)) = tokio::time::timeout(LONG, conn.read(&mut buf)).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TLS connection to `addr`, and the certificate the server presented.
async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((tls, served))
}

/// One whole session on the CoT listener: handshake (with a client certificate), an event,
/// and a clean close both ways. Returns the certificate the server presented.
async fn cot_session(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let (mut tls, served) = handshake(addr, config).await?;
    tls.write_all(PING)
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.shutdown().await.map_err(|e| format!("close: {e}"))?;
    // TLS 1.3: a refused client certificate would show here, as an alert instead of the end.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("unexpected bytes from the gateway: {rest:?}"));
    }
    Ok(served)
}

/// One request on the HTTPS listener. Returns the certificate the server presented.
async fn https_request(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let (mut tls, served) = handshake(addr, config).await?;
    tls.write_all(b"GET /api/reload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    match read_response(&mut tls).await {
        Some(r) if r.status == 200 => Ok(served),
        Some(r) => Err(format!("status {}: {}", r.status, r.text())),
        None => Err("no response".to_owned()),
    }
}

/// One client's record: the certificate each successful handshake presented, in order, and
/// every failure.
#[derive(Default)]
struct Handshakes {
    served: Vec<Vec<u8>>,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_certificates_under_load_without_a_failed_handshake() {
    let pki = TestPki::new();
    let ots = FakeUpstream::start().await;
    let sink = cot_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    let tls = format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let config = web_config(
        &ots.url(),
        &format!(
            "[[http]]\nname = \"web-tls\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\n\
ui_root = \"/nonexistent-ui\"\n[http.tls]\n{tls}\n\
[[stream]]\nname = \"cot\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{sink}\"\n\
[stream.tls]\n{tls}client_ca = \"{}\"\n",
            pki.ca_pem.display()
        ),
    );
    let mut gate = TakgateProcess::start(&config).await;
    let (https, cot) = (gate.http("web-tls"), gate.stream("cot"));

    // Half the clients on each listener, half of those on TLS 1.2, half on TLS 1.3.
    let stop = Arc::new(AtomicBool::new(false));
    let records: Vec<Arc<Mutex<Handshakes>>> = (0..HANDSHAKERS)
        .map(|_| Arc::new(Mutex::new(Handshakes::default())))
        .collect();
    let mut clients = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let version = if i % 4 < 2 {
            &rustls::version::TLS12
        } else {
            &rustls::version::TLS13
        };
        let on_cot = i % 2 == 0;
        let eud = pki.issue_client(&format!("eud{i}"));
        let config = pki.client_config_with_versions(on_cot.then_some(&eud), &[version]);
        let (record, stop) = (record.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            for _ in 0..MAX_HANDSHAKES {
                if stop.load(Ordering::Relaxed) || started.elapsed() > LONG {
                    return;
                }
                let attempt = if on_cot {
                    tokio::time::timeout(Duration::from_secs(10), cot_session(cot, config.clone()))
                        .await
                } else {
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        https_request(https, config.clone()),
                    )
                    .await
                };
                let mut r = record.lock().unwrap();
                match attempt {
                    Ok(Ok(served)) => r.served.push(served),
                    Ok(Err(e)) => r.failures.push(e),
                    Err(_) => r.failures.push("timed out".to_owned()),
                }
            }
        }));
    }
    let served_by_all = |der: &[u8], at_least: usize| {
        records.iter().all(|r| {
            let r = r.lock().unwrap();
            r.served.iter().rev().take_while(|s| *s == der).count() >= at_least
        })
    };
    until(WAIT, "every client's first handshakes", || {
        served_by_all(&pki.server_der, 1)
    })
    .await;

    let handshakes = || -> Vec<usize> {
        records
            .iter()
            .map(|r| r.lock().unwrap().served.len())
            .collect()
    };
    let mut generations = vec![pki.server_der.to_vec()];
    for round in 1..=ROUNDS {
        let renewed = pki.issue_server(&["localhost", "127.0.0.1"]);
        // Rewritten in place, as `cp` would, and signalled half-way: that reload meets a key
        // that does not match its certificate, fails, and keeps the pair in force.
        let failed_reloads = gate.metric("takgate_tls_reloads_total", &FAILED).await;
        std::fs::write(&key, std::fs::read(&renewed.key).unwrap()).unwrap();
        gate.signal("HUP");
        let deadline = Instant::now() + WAIT;
        while gate.metric("takgate_tls_reloads_total", &FAILED).await < failed_reloads + 2.0 {
            assert!(
                Instant::now() < deadline,
                "the mismatched reload was never counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counts = handshakes();
        until(WAIT, "handshakes after the failed reload", || {
            handshakes()
                .iter()
                .zip(&counts)
                .all(|(now, then)| now >= &(then + 2))
        })
        .await;
        assert!(served_by_all(generations.last().unwrap(), 2));

        std::fs::write(&cert, std::fs::read(&renewed.cert).unwrap()).unwrap();
        gate.signal("HUP");
        gate.signal("HUP");
        generations.push(renewed.der.to_vec());
        until(
            WAIT,
            &format!("every client to get certificate {round}"),
            || served_by_all(&renewed.der, 2),
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        within(client).await.unwrap();
    }

    let mut total = 0;
    for (i, record) in records.iter().enumerate() {
        let r = record.lock().unwrap();
        assert!(r.failures.is_empty(), "client {i}: {:?}", r.failures);
        // Handshakes follow each other, so none may present an older certificate than the
        // one before it.
        let gens: Vec<usize> = r
            .served
            .iter()
            .map(|der| {
                generations
                    .iter()
                    .position(|g| g == der)
                    .expect("a known certificate")
            })
            .collect();
        assert!(
            gens.windows(2).all(|w| w[0] <= w[1]),
            "client {i}: {gens:?}"
        );
        assert_eq!(gens.last(), Some(&ROUNDS));
        total += gens.len();
    }
    assert!(total >= HANDSHAKERS * (ROUNDS + 1) * 2);
    for listener in ["cot", "web-tls"] {
        let ok = [("listener", listener), ("result", "ok")];
        assert!(gate.metric("takgate_tls_reloads_total", &ok).await >= ROUNDS as f64);
    }
    let refused = gate.metric("takgate_stream_refused_total", &[]).await;
    let http_errors = gate
        .metric(
            "takgate_http_connection_errors_total",
            &[("listener", "web-tls")],
        )
        .await;
    assert_eq!(
        (refused, http_errors),
        (0.0, 0.0),
        "failed handshakes, server side"
    );

    gate.signal("TERM");
    exits_cleanly(&mut gate, Duration::from_secs(30)).await;
}

// ------------------------------------------------------------------ how a drain ends

/// An API upstream that answers its one request only when told to.
struct HeldUpstream {
    url: String,
    arrived: Option<tokio::sync::oneshot::Receiver<()>>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HeldUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "takgate closed before sending the request");
                head.extend_from_slice(&buf[..n]);
            }
            let _ = arrived_tx.send(());
            if release_rx.await.is_ok() {
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld")
                    .await;
            }
            // Holds the connection until takgate lets go of it.
            let _ = conn.read(&mut [0u8; 1]).await;
        });
        Self {
            url,
            arrived: Some(arrived),
            release: Some(release),
        }
    }
}

/// Starts takgate with `shutdown` settings in front of a [`HeldUpstream`], sends one request
/// through it and returns once the upstream holds that request, with the request's task.
async fn one_request_held(
    shutdown: &str,
) -> (
    TakgateProcess,
    HeldUpstream,
    SocketAddr,
    tokio::task::JoinHandle<Option<takgate_tests::client::RawResponse>>,
) {
    let mut up = HeldUpstream::start().await;
    let gate = TakgateProcess::start(&web_config(&up.url, shutdown)).await;
    let web = gate.http("web");
    let mut client = within(TcpStream::connect(web)).await.unwrap();
    let request = tokio::spawn(async move {
        within(client.write_all(b"GET /api/held HTTP/1.1\r\nhost: takgate\r\n\r\n"))
            .await
            .unwrap();
        tokio::time::timeout(LONG, read_response(&mut client))
            .await
            .expect("the held request never ended")
    });
    tokio::time::timeout(WAIT, up.arrived.take().unwrap())
        .await
        .expect("the request never reached the upstream")
        .unwrap();
    (gate, up, web, request)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_drains_like_sigterm() {
    let (mut gate, mut up, web, request) = one_request_held("[shutdown]\ngrace = \"60s\"").await;
    gate.signal("INT");
    refused(web).await;
    assert!(gate.running(), "takgate exited with a request in flight");
    up.release.take().unwrap().send(()).unwrap();
    let response = request.await.unwrap().expect("the held request's response");
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"held"[..])
    );
    exits_cleanly(&mut gate, WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_ends_the_drain_at_once() {
    // A grace far longer than the test may take: only the second signal can end it.
    let (mut gate, _up, web, request) = one_request_held("[shutdown]\ngrace = \"600s\"").await;
    gate.signal("TERM");
    refused(web).await;
    assert!(gate.running(), "takgate exited with a request in flight");
    gate.signal("TERM");
    // Well before the client would give up on the held request (`client::STEP`) and so end
    // the drain itself.
    let status = gate.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gate.log());
    assert!(gate.log().contains("second SIGTERM"), "{}", gate.log());
    // The held request's connection is closed, not left hanging.
    assert!(request.await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_ends_when_the_grace_runs_out() {
    let grace = Duration::from_secs(2);
    let (mut gate, _up, web, request) =
        one_request_held("[shutdown]\ngrace = \"2s\"\nwebsocket_grace = \"1s\"").await;
    let signalled = Instant::now();
    gate.signal("TERM");
    refused(web).await;
    let status = gate.wait_exit(WAIT).await;
    assert!(
        signalled.elapsed() >= grace,
        "exited before the grace ran out"
    );
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gate.log());
    assert!(gate.log().contains("grace expired"), "{}", gate.log());
    assert!(request.await.unwrap().is_none());
}
