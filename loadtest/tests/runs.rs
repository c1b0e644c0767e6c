#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
//! Each subcommand, bounded, against in-process servers on loopback port 0: the loadtest sink
//! (CoT, CoT over mutual TLS, WebSocket echo), a tiny hyper server for `http`/`static`, and a
//! refused port. Counts must add up exactly and errors must be counted by kind, never hang.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use loadtest::cli::Command;
use loadtest::report::Report;
use loadtest::sink::Sink;

mod common;

use common::{command, run, run_ok, sink};

/// A loopback port with nothing listening.
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn assert_no_errors(r: &Report) {
    assert_eq!(r.errors_total, 0, "errors: {:?}\n{}", r.errors, r.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_plain_echo_counts_every_message() {
    let s = sink("--echo").await;
    let addr = s.addr.to_string();
    let r = run_ok(&format!(
        "cot --plain --target {addr} -n 5 --rate-per-client 200 --max-messages \
        300 --duration 30s --drain 20s -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!(r.mode, "cot");
    assert_eq!(r.ops.sent, 300);
    assert_eq!(r.ops.received, 300);
    assert_eq!(r.ops.ok, 300);
    assert_eq!(r.bytes.sent, r.bytes.received);
    assert!(
        r.bytes.sent > 300 * 700,
        "realistic sizes: {}",
        r.bytes.sent
    );
    let lat = r.latency.as_ref().unwrap();
    assert_eq!(lat.count, 300);
    assert!(lat.p50_ms <= lat.p99_ms && lat.p99_ms <= lat.max_ms);
    assert_eq!(r.service.as_ref().unwrap().count, 300);
    assert_eq!(r.connections.attempted, 5);
    assert_eq!(r.connections.established, 5);
    assert_eq!(r.connections.open_at_end, 5);
    assert_eq!(r.connections.setup.as_ref().unwrap().count, 5);
    let seen = s.shutdown().await;
    assert_eq!(seen.frames, 300);
    assert_eq!(seen.frame_errors, 0);
    assert_eq!(seen.bytes_in, r.bytes.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_mutual_tls_with_generated_certificates() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path().to_str().unwrap();
    // The sink generates the PKI (and requires client certificates from its CA); the clients
    // reuse it.
    let s = sink(&format!("--echo --gen-certs {dir}")).await;
    assert_eq!(s.announce()["tls"], true);
    let addr = s.addr.to_string();
    let r = run_ok(&format!(
        "cot --target {addr} --gen-certs {dir} -n 8 --connect-concurrency 3 \
        --rate-per-client 100 --max-messages 160 --duration 30s --drain 20s \
        --payload pli --size 1024 -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!(r.target, format!("tls://{addr}"));
    assert_eq!((r.ops.sent, r.ops.received, r.ops.ok), (160, 160, 160));
    assert_eq!(r.bytes.sent, 160 * 1024, "--size pads every event exactly");
    assert_eq!(r.connections.established, 8);
    assert!(r.connections.handshakes_per_s > 0.0);
    assert!(r.connections.setup.as_ref().unwrap().p50_ms > 0.0);
    let seen = s.shutdown().await;
    assert_eq!((seen.frames, seen.tls_errors), (160, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_max_rate_keeps_a_window_per_client() {
    let s = sink("--echo").await;
    let addr = s.addr.to_string();
    let r = run_ok(&format!(
        "cot --plain --target {addr} -n 4 --rate-per-client max --window 4 \
        --max-messages 2000 --duration 30s -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!((r.ops.sent, r.ops.ok), (2000, 2000));
    assert_eq!(r.settings["window"], 4);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_settle_holds_the_connections_before_the_send_phase() {
    let s = sink("--echo").await;
    let addr = s.addr.to_string();
    let t0 = std::time::Instant::now();
    let r = run_ok(&format!(
        "cot --plain --target {addr} -n 3 --rate-per-client 100 --max-messages 30 \
        --settle 400ms --duration 30s -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!((r.ops.sent, r.ops.ok), (30, 30));
    assert_eq!(r.settings["settle_s"], 0.4);
    // The settle is in the run's wall time, not in its measured time.
    assert!(
        t0.elapsed().as_secs_f64() >= 0.4 + r.elapsed_s,
        "{}",
        r.elapsed_s
    );
    assert!(r.elapsed_s < 0.4, "{}", r.elapsed_s);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_without_echo_is_counted_by_the_sink() {
    let s = sink("").await;
    let addr = s.addr.to_string();
    let r = run_ok(&format!(
        "cot --plain --target {addr} -n 3 --rate-per-client 100 --max-messages \
        90 --duration 30s --payload fixtures -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!((r.ops.sent, r.ops.received), (90, 0));
    assert!(r.latency.is_none());
    // The sink has framed every event once the clients have closed.
    let seen = s.shutdown().await;
    assert_eq!(seen.frames, 90);
    assert_eq!(seen.frame_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_idle_holds_connections_for_the_duration() {
    let s = sink("").await;
    let addr = s.addr.to_string();
    let r = run_ok(&format!(
        "cot --plain --idle --target {addr} -n 200 --duration 300ms -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!(r.connections.established, 200);
    assert_eq!(r.connections.open_at_end, 200);
    assert_eq!(r.ops.sent, 0);
    assert!(r.elapsed_s >= 0.3, "held for the duration: {}", r.elapsed_s);
    assert_eq!(s.shutdown().await.connections, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_refused_target_counts_connect_errors() {
    let target = format!("127.0.0.1:{}", refused_port());
    let r = run_ok(&format!(
        "cot --plain --target {target} -n 7 --duration 200ms -q"
    ))
    .await;
    assert_eq!(r.errors["connect"], 7);
    assert_eq!(r.errors_total, 7);
    assert_eq!(r.connections.established, 0);
    assert_eq!(r.connections.failed, 7);
    assert_eq!(r.ops.sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_untrusted_server_counts_tls_errors() {
    let server_pki = tempfile::tempdir().unwrap();
    let client_pki = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = (
        server_pki.path().to_str().unwrap(),
        client_pki.path().to_str().unwrap(),
    );
    let s = sink(&format!("--gen-certs {server_dir}")).await;
    let addr = s.addr.to_string();
    let r = run_ok(&format!(
        "cot --target {addr} --gen-certs {client_dir} -n 4 --duration 200ms -q"
    ))
    .await;
    assert_eq!(r.errors["tls"], 4, "{:?}", r.errors);
    assert_eq!(r.connections.established, 0);
    // The sink may not have read every client's alert yet when it is shut down; it never
    // served a frame.
    let seen = s.shutdown().await;
    assert!(seen.tls_errors <= 4);
    assert_eq!(seen.frames, 0);
}

/// A plain TCP relay to `upstream` (what nginx's `stream { proxy_pass; }` without `ssl` does):
/// TLS goes through it end to end.
async fn tcp_relay(upstream: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_to_an_ots_tls_sink_directly_and_through_a_tcp_relay() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path().to_str().unwrap();
    loadtest::tls::Pki::generate(pki.path(), 3).unwrap();
    // OTS's TLS CoT port: its own certificate (CN opentakserver), client certificates from
    // the same CA required, the clients' CNs recorded.
    let s = sink(&format!("--echo --ots --gen-certs {dir}")).await;
    let announce = s.announce();
    assert_eq!(
        (&announce["tls"], &announce["ots"], &announce["server_name"]),
        (&true.into(), &true.into(), &"opentakserver".into())
    );
    let addr = s.addr;
    let relay = tcp_relay(addr).await;
    for target in [addr, relay] {
        let r = run_ok(&format!(
            "cot --target {target} --gen-certs {dir} --server-name opentakserver -n 6 \
            --rate-per-client 100 --max-messages 120 --duration 30s --drain 20s -q"
        ))
        .await;
        assert_no_errors(&r);
        assert_eq!((r.ops.sent, r.ops.received, r.ops.ok), (120, 120, 120));
        assert_eq!(r.connections.established, 6);
    }
    // The certificate is OTS's, not localhost's: a client checking for localhost refuses it.
    let r = run_ok(&format!(
        "cot --target {addr} --gen-certs {dir} -n 2 --duration 200ms -q"
    ))
    .await;
    assert_eq!(r.errors["tls"], 2, "{:?}", r.errors);
    // A client without a certificate from the CA is refused by the sink.
    let other = tempfile::tempdir().unwrap();
    let other_pki = loadtest::tls::Pki::generate(other.path(), 1).unwrap();
    let r = run_ok(&format!(
        "cot --target {addr} --ca {} --cert {} --key {} --server-name opentakserver -n 2 \
        --rate-per-client 10 --duration 300ms -q",
        pki.path().join("ca.pem").display(),
        other_pki.clients[0].cert.display(),
        other_pki.clients[0].key.display(),
    ))
    .await;
    assert_eq!(r.ops.ok, 0, "{:?}", r.errors);
    assert!(r.errors_total >= 2, "{:?}", r.errors);
    let seen = s.shutdown().await;
    assert_eq!(seen.frames, 240);
    // 12 sessions with a verified certificate, three CNs taken in turn.
    assert_eq!(seen.client_cns_seen, 12);
    assert_eq!(
        seen.client_cns,
        ["loadtest-1", "loadtest-2", "loadtest-3"].map(String::from)
    );
    assert!(seen.tls_errors >= 2, "{seen:?}");
    // loadtest's clients do full handshakes unless --resume.
    assert_eq!(seen.tls_resumed, 0);
}

#[tokio::test]
async fn the_ots_sink_needs_a_pki_and_cot() {
    let argv = ["loadtest", "sink", "--ots"];
    assert!(<loadtest::cli::Cli as clap::Parser>::try_parse_from(argv).is_err());
    let dir = tempfile::tempdir().unwrap();
    let Command::Sink(a) = command(&format!(
        "sink --http --ots --gen-certs {}",
        dir.path().display()
    )) else {
        unreachable!()
    };
    let e = Sink::start(&a).await.err().unwrap().to_string();
    assert!(e.contains("--ots"), "{e}");
}

#[tokio::test]
async fn non_loopback_targets_are_refused() {
    for args in [
        "cot --plain --target 192.0.2.1:8089 -q",
        "http --url http://192.0.2.1/ -q",
        "static --url http://10.0.0.1:8080/index.html -q",
        "ws --url ws://198.51.100.7:8080/socket.io/ -q",
    ] {
        let e = run(args).await.unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{args}: {e}");
    }
    let Command::Sink(a) = command("sink --listen 0.0.0.0:0") else {
        unreachable!()
    };
    assert!(Sink::start(&a).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_echo_round_trips() {
    let s = sink("--ws").await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    let r = run_ok(&format!(
        "ws --url {url} -c 4 --rate-per-client 100 --size 512 --max-messages \
        200 --duration 30s --drain 20s -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!((r.ops.sent, r.ops.received, r.ops.ok), (200, 200, 200));
    assert_eq!(r.bytes.sent, 200 * 512);
    assert_eq!(r.bytes.received, 200 * 512);
    assert_eq!(r.status["101"], 4);
    // Binary, at maximum rate.
    let r = run_ok(&format!(
        "ws --url {url} -c 2 --rate-per-client max --binary --max-messages 500 \
        --duration 30s -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!(r.ops.ok, 500);
    let seen = s.shutdown().await;
    assert_eq!(seen.ws_sessions, 6);
    assert_eq!(seen.ws_messages, 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_refused_and_rejected_upgrades_are_counted() {
    let url = format!("ws://127.0.0.1:{}/", refused_port());
    let r = run_ok(&format!("ws --url {url} -c 3 --duration 200ms -q")).await;
    assert_eq!(r.errors["connect"], 3);
    // A server that answers the upgrade with a plain 200: a status error per client.
    let (addr, _) = http_server().await;
    let url = format!("ws://{addr}/small");
    let r = run_ok(&format!("ws --url {url} -c 2 --duration 200ms -q")).await;
    assert_eq!(r.errors["status"], 2, "{:?}", r.errors);
    assert_eq!(r.status["200"], 2);
}

/// What the tiny server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    body_bytes: AtomicU64,
}

const SMALL: usize = 2048;
const LARGE: usize = 1 << 20;

/// A tiny hyper server: `/small` (2 KiB), `/large` (1 MiB), anything else 404; POST bodies are
/// counted.
async fn http_server() -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let large = Bytes::from(vec![b'L'; LARGE]);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let s = s.clone();
            let large = large.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        let large = large.clone();
                        async move {
                            s.requests.fetch_add(1, Ordering::Relaxed);
                            let path = req.uri().path().to_owned();
                            let n = req.into_body().collect().await.unwrap().to_bytes().len();
                            s.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
                            let (status, body) = match path.as_str() {
                                "/small" => (200, Bytes::from(vec![b's'; SMALL])),
                                "/large" => (200, large),
                                _ => (404, Bytes::from_static(b"not found")),
                            };
                            let mut resp = http::Response::new(Full::new(body));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fixed_rate_counts_every_request() {
    let (addr, seen) = http_server().await;
    let url = format!("http://{addr}/small");
    let r = run_ok(&format!(
        "http --url {url} --rate 400 -c 4 --max-requests 200 --duration 30s -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!(r.mode, "http");
    assert_eq!((r.ops.sent, r.ops.received, r.ops.ok), (200, 200, 200));
    assert_eq!(r.bytes.received, 200 * SMALL as u64);
    assert_eq!(r.status["200"], 200);
    assert_eq!(r.latency.as_ref().unwrap().count, 200);
    // Keep-alive: four connections for 200 requests.
    assert_eq!(r.connections.established, 4);
    assert_eq!(r.connections.open_at_end, 4);
    assert_eq!(seen.requests.load(Ordering::Relaxed), 200);
    // At 400/s the 200 requests take about half a second: the schedule paced them.
    assert!(r.elapsed_s >= 0.45, "{}", r.elapsed_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_sends_bodies_and_counts_status_errors() {
    let (addr, seen) = http_server().await;
    let small = format!("http://{addr}/small");
    let missing = format!("http://{addr}/missing");
    let r = run_ok(&format!(
        "http --url {small} --url {missing} --method post --body-size 100 -H \
        Content-Type:application/json -c 2 --max-requests 50 --duration 30s -q"
    ))
    .await;
    assert_eq!(r.ops.sent, 50);
    assert_eq!(r.ops.ok, 25);
    assert_eq!(r.errors["status"], 25);
    assert_eq!(r.errors_total, 25);
    assert_eq!((r.status["200"], r.status["404"]), (25, 25));
    assert_eq!(r.bytes.sent, 5000);
    assert_eq!(seen.body_bytes.load(Ordering::Relaxed), 5000);
    assert_eq!(r.urls.len(), 2);
    assert_eq!((r.urls[0].ok, r.urls[1].ok), (25, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_small_and_large_report_throughput() {
    let (addr, _) = http_server().await;
    let small = format!("http://{addr}/small");
    let large = format!("http://{addr}/large");
    let r = run_ok(&format!(
        "static --url {small} --url {large} -c 2 --max-requests 40 --duration \
        30s -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!(r.mode, "static");
    assert_eq!(r.ops.ok, 40);
    assert_eq!(r.bytes.received, 20 * (SMALL + LARGE) as u64);
    assert!(r.bytes.received_mb_per_s > 0.0);
    assert_eq!(r.urls[0].bytes_received, 20 * SMALL as u64);
    assert_eq!(r.urls[1].bytes_received, 20 * LARGE as u64);
    assert!(r.urls[1].received_mb_per_s > r.urls[0].received_mb_per_s);
    assert!(r.table().contains("MB/s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refused_target_counts_connect_errors() {
    let url = format!("http://127.0.0.1:{}/", refused_port());
    let r = run_ok(&format!(
        "http --url {url} -c 2 --rate 50 --duration 300ms -q"
    ))
    .await;
    assert_eq!(r.ops.ok, 0);
    assert!(r.errors["connect"] >= 2, "{:?}", r.errors);
    assert_eq!(r.errors_total, r.errors["connect"] + r.errors["timeout"]);
    assert_eq!(r.connections.established, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_answers_json_bytes_and_posts() {
    let s = sink("--http").await;
    let api = format!("http://{}/api/health", s.addr);
    let bytes = format!("http://{}/bytes/5000", s.addr);
    let r = run_ok(&format!(
        "http --url {api} --url {bytes} -c 2 --max-requests 10 --duration 30s \
        -q"
    ))
    .await;
    assert_no_errors(&r);
    assert_eq!(
        r.urls[0].bytes_received,
        5 * br#"{"status":"ok"}"#.len() as u64
    );
    assert_eq!(r.urls[1].bytes_received, 5 * 5000);
    assert_eq!(s.shutdown().await.requests, 10);
}
