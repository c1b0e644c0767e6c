//! Faults on the upstream side (issue 7, point 3, first part): the OTS API going away and coming
//! back, closing or going silent mid-response, hanging under load, and the CoT upstream
//! resetting a session. Each is answered, counted, confined to the requests or session it hit,
//! and healed without a restart.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use takgate_tests::certs::TestPki;
use takgate_tests::client::{connection, get, send_streaming, within};
use takgate_tests::cot::{stream_config, tls_connect, CotUpstream};
use takgate_tests::proxy::{base_config, web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

const PING: &[u8] = b"<event version=\"2.0\" uid=\"p\" type=\"t-x-c-t\" how=\"h-g-i-g-o\" \
time=\"2026-11-26T10:00:00Z\" start=\"2026-11-26T10:00:00Z\" stale=\"2026-11-26T10:00:10Z\">\
<point lat=\"0\" lon=\"0\" hae=\"0\" ce=\"9\" le=\"9\"/><detail/></event>";

fn upstream_errors(proxy: &TestProxy, kind: &str) -> f64 {
    proxy.metric(
        "takgate_proxy_errors_total",
        &[("side", "upstream"), ("kind", kind)],
    )
}

/// Waits until `n` upstream errors of `kind` are counted, with no request left in flight.
async fn wait_upstream_errors(proxy: &TestProxy, kind: &str, n: f64) {
    proxy
        .wait_metric(
            "takgate_proxy_errors_total",
            &[("side", "upstream"), ("kind", kind)],
            n,
        )
        .await;
    assert_eq!(proxy.metric("takgate_http_in_flight_requests", &[]), 0.0);
}

/// A plain `web` listener in front of `upstream` with a short `response_timeout`.
fn with_response_timeout(upstream: &str, timeout: &str) -> String {
    web_config(upstream, "").replace(
        "connect_timeout = \"1s\"",
        &format!("connect_timeout = \"1s\"\nresponse_timeout = \"{timeout}\""),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_upstream_that_restarts_is_used_again_without_restarting_takgate() {
    let up = FakeUpstream::start().await;
    let addr = up.addr;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let web = proxy.http("web");
    // A pooled keep-alive connection to the first OTS process.
    assert_eq!(get(web, "/api/before", &[]).await.status, 200);

    up.stop();
    let down = get(web, "/api/while-down", &[]).await;
    assert_eq!(down.status, 502, "{}", down.text());
    let counted = upstream_errors(&proxy, "connect") + upstream_errors(&proxy, "protocol");
    assert_eq!(
        counted, 1.0,
        "the failure is counted once, on the upstream side"
    );

    // OTS is back on the same port: the very next request works (no stale pooled connection).
    let back = FakeUpstream::start_on(addr).await;
    let got = get(web, "/api/after", &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(back.last().uri.path(), "/api/after");
}

/// An upstream that answers a head and part of the body, then closes.
async fn half_answering_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    .await;
                let _ = s.write_all(&[b'x'; 100]).await;
                // Dropped here: 900 bytes short.
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_upstream_closing_mid_response_cuts_the_body_and_is_counted() {
    let addr = half_answering_upstream().await;
    let proxy = TestProxy::start(&web_config(&format!("http://{addr}"), "")).await;
    let web = proxy.http("web");
    for _ in 0..2 {
        let mut sender = connection(web).await;
        let req = Request::get("/api/download")
            .header("host", web.to_string())
            .body(Full::<Bytes>::default())
            .unwrap();
        // The client must see a broken response, never a short body passed off as complete:
        // either the body errors, or (when the upstream's close wins the race with the head
        // being flushed) the connection ends before a complete response.
        match within(sender.send_request(req)).await {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                assert!(within(resp.into_body().collect()).await.is_err());
            }
            Err(e) => assert!(e.is_incomplete_message(), "{e}"),
        }
    }
    wait_upstream_errors(&proxy, "protocol", 2.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_upstream_going_silent_mid_body_is_cut_at_the_response_timeout_and_counted() {
    let up = FakeUpstream::start().await;
    let toml = with_response_timeout(&up.url(), "300ms");
    let proxy = TestProxy::start(&toml).await;
    let started = Instant::now();
    let resp = send_streaming(
        proxy.http("web"),
        Request::get("/api/trickle?chunks=3&gap_ms=2000")
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert!(within(resp.into_body().collect()).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(1500));
    wait_upstream_errors(&proxy, "response_timeout", 1.0).await;
    assert_eq!(get(proxy.http("web"), "/api/ok", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cot_upstream_resetting_one_session_closes_that_session_only() {
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let config = format!(
        "{}\n{}",
        base_config("http://127.0.0.1:1"),
        stream_config("cot", up.addr, "terminate", &pki, "")
    );
    let proxy = TestProxy::start(&config).await;
    let addr = proxy.stream("cot");
    let eud = pki.issue_client("eud1");
    let mut doomed = tls_connect(addr, &pki, Some(&eud)).await.unwrap();
    within(doomed.write_all(PING)).await.unwrap();
    let doomed_up = up.accept().await;
    let mut other = tls_connect(addr, &pki, Some(&eud)).await.unwrap();
    within(other.write_all(PING)).await.unwrap();
    let mut other_up = up.accept().await;
    let mut buf = vec![0u8; PING.len()];
    within(other_up.read_exact(&mut buf)).await.unwrap();

    // OTS resets the first session (RST, not a clean close).
    doomed_up.set_zero_linger().unwrap();
    drop(doomed_up);
    let mut one = [0u8; 64];
    assert!(matches!(
        within(doomed.read(&mut one)).await,
        Ok(0) | Err(_)
    ));
    proxy
        .wait_metric(
            "takgate_stream_sessions_closed_total",
            &[("listener", "cot"), ("reason", "upstream_error")],
            1.0,
        )
        .await;
    // The other session goes on, both ways.
    within(other.write_all(PING)).await.unwrap();
    within(other_up.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, PING);
    within(other_up.write_all(PING)).await.unwrap();
    within(other.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, PING);
    // And a new session gets in.
    let mut fresh = tls_connect(addr, &pki, Some(&eud)).await.unwrap();
    within(fresh.write_all(PING)).await.unwrap();
    let mut fresh_up = up.accept().await;
    within(fresh_up.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, PING);
}

/// An OTS API that has hung: it accepts connections and reads requests but answers none, each
/// connection held until takgate gives up on it. Once `recovered`, it answers every request.
struct HungUpstream {
    addr: std::net::SocketAddr,
    /// Requests received and left unanswered.
    hung: Arc<AtomicUsize>,
    recovered: Arc<AtomicBool>,
}

impl HungUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hung = Arc::new(AtomicUsize::new(0));
        let recovered = Arc::new(AtomicBool::new(false));
        let (h, r) = (hung.clone(), recovered.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(Self::serve(s, h.clone(), r.clone()));
            }
        });
        Self {
            addr,
            hung,
            recovered,
        }
    }

    /// Bodiless requests only (GETs), which is all the test sends.
    async fn serve(
        mut s: tokio::net::TcpStream,
        hung: Arc<AtomicUsize>,
        recovered: Arc<AtomicBool>,
    ) {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
                continue;
            };
            pending.drain(..end + 4);
            if recovered.load(Ordering::SeqCst) {
                let ok = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                if ok.is_err() {
                    return;
                }
                continue;
            }
            hung.fetch_add(1, Ordering::SeqCst);
            // Held, silent, until takgate closes it.
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_api_upstream_gets_504s_at_the_response_timeout_while_the_rest_stays_responsive() {
    const REQUESTS: usize = 32;
    let timeout = Duration::from_secs(4);
    let up = HungUpstream::start().await;
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(ui.path().join("index.html"), "<html>OTS UI</html>").unwrap();
    let toml = with_response_timeout(&format!("http://{}", up.addr), "4s")
        .replace("/nonexistent-ui", &ui.path().display().to_string());
    let proxy = TestProxy::start(&toml).await;
    let (web, admin) = (proxy.http("web"), proxy.addrs.admin);

    let answered = Arc::new(AtomicUsize::new(0));
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let answered = answered.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let got = get(web, &format!("/api/hung/{i}"), &[]).await;
                answered.fetch_add(1, Ordering::SeqCst);
                (got, started.elapsed())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.hung.load(Ordering::SeqCst) < REQUESTS {
        assert!(
            Instant::now() < deadline,
            "the requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // With every API request stuck, the UI and the admin endpoints still answer, and readiness
    // says why it is not ready.
    let page = get(web, "/", &[]).await;
    assert_eq!(
        (page.status.as_u16(), page.text().as_str()),
        (200, "<html>OTS UI</html>")
    );
    assert_eq!(get(admin, "/healthz", &[]).await.status, 200);
    let ready = get(admin, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    let json: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(json["upstream_ok"], false);
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "the API requests were answered before the response timeout"
    );

    for request in requests {
        let (got, took) = within(request).await.unwrap();
        assert_eq!(got.status, 504, "{}", got.text());
        assert!(got.text().contains("upstream timed out"), "{}", got.text());
        assert!(took >= timeout, "answered after {took:?}");
    }
    wait_upstream_errors(&proxy, "response_timeout", REQUESTS as f64).await;
    let api = [("listener", "web"), ("route", "api"), ("side", "upstream")];
    assert_eq!(
        proxy.metric("takgate_proxy_errors_total", &api),
        REQUESTS as f64
    );

    // OTS recovers: the same takgate serves again, readiness included.
    up.recovered.store(true, Ordering::SeqCst);
    let after: Vec<_> = (0..REQUESTS)
        .map(|i| tokio::spawn(async move { get(web, &format!("/api/after/{i}"), &[]).await }))
        .collect();
    for request in after {
        let got = within(request).await.unwrap();
        assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "ok"));
    }
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_longer_than_the_response_timeout_is_not_cut() {
    // The response timeout is OTS's time to act, as nginx's proxy_read_timeout: it runs once
    // the request is sent, not while a slow client is still uploading, even with pauses longer
    // than it (those are the body's idle timeout's business).
    let up = FakeUpstream::start().await;
    let toml = with_response_timeout(&up.url(), "300ms");
    let proxy = TestProxy::start(&toml).await;
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 4 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(
                b"0123456789",
            ))),
            i + 1,
        ))
    });
    let started = Instant::now();
    let resp = send_streaming(
        proxy.http("web"),
        Request::post("/api/upload")
            .header("content-length", "40")
            .body(http_body_util::StreamBody::new(chunks))
            .unwrap(),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(1800));
    assert_eq!(resp.status(), 200);
    let body = within(resp.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(body, "40");
    assert_eq!(up.uploaded(), vec![40]);
    assert_eq!(upstream_errors(&proxy, "response_timeout"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_stops_taking_an_upload_gets_504_at_the_response_timeout() {
    // Accepts, never reads: once the socket buffers are full, the upload makes no progress.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let toml = with_response_timeout(&format!("http://{addr}"), "500ms");
    let proxy = TestProxy::start(&toml).await;
    let web = proxy.http("web");
    // Far more than the socket buffers hold (and under the body limit), offered as fast as
    // takgate takes it.
    let total: u64 = 96 * 1024 * 1024;
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let upload =
        futures_util::stream::iter((0..total / 65536).map(move |_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
        }));
    let mut sender = connection(web).await;
    let req = Request::post("/api/upload")
        .header("host", web.to_string())
        .header("content-length", total.to_string())
        .body(http_body_util::StreamBody::new(upload))
        .unwrap();
    // The answer is a 504, or (takgate closing the connection on an unread body) a cut
    // connection; either way within a few response timeouts, never a hang.
    if let Ok(resp) = within(sender.send_request(req)).await {
        assert_eq!(resp.status(), 504);
    }
    wait_upstream_errors(&proxy, "response_timeout", 1.0).await;
    drop(within(held).await);
}
