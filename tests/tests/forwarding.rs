//! The header contract and error answers, through a real takgate and a fake OTS on loopback.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use takgate_tests::client::{get, raw, send, send_streaming, within};
use takgate_tests::proxy::{web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread")]
async fn host_and_forwarded_headers_follow_the_contract() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let addr = proxy.http("web");
    let got = get(
        addr,
        "/api/echo?x=1",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-ssl-cert", "-----BEGIN%20CERTIFICATE-----spoofed"),
            ("cookie", "session=abc; XSRF-TOKEN=xyz"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = up.last();
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    // Host verbatim, port included: engine.io compares Origin with scheme://Host.
    assert_eq!(h("host").as_deref(), Some(addr.to_string().as_str()));
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(h("x-forwarded-host"), None);
    assert_eq!(h("forwarded"), None);
    assert_eq!(
        h("x-ssl-cert"),
        None,
        "a client's X-Ssl-Cert must never reach OTS"
    );
    assert_eq!(h("cookie").as_deref(), Some("session=abc; XSRF-TOKEN=xyz"));
    assert_eq!(
        h("x-private"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(h("keep-alive"), None);
    assert_eq!(h("te"), None);
    assert_eq!(seen.uri.path_and_query().unwrap().as_str(), "/api/echo?x=1");
}

#[tokio::test(flavor = "multi_thread")]
async fn set_cookies_pass_unchanged_and_upstream_cors_is_replaced() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let got = get(proxy.http("web"), "/api/cookies", &[]).await;
    assert_eq!(got.status, 200);
    let cookies: Vec<_> = got
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        cookies,
        ["session=abc; HttpOnly; Path=/", "XSRF-TOKEN=xyz; Path=/"]
    );
    assert_eq!(
        got.header("x-hop"),
        None,
        "response hop-by-hop headers stripped"
    );
    // flask-cors echoes any origin; the default policy is same-origin only.
    assert_eq!(got.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_upstream_is_502_with_json_naming_it() {
    // A port that was bound and released: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let proxy = TestProxy::start(&web_config(&format!("http://{dead_addr}"), "")).await;
    let started = std::time::Instant::now();
    let got = get(proxy.http("web"), "/api/status", &[]).await;
    assert_eq!(got.status, 502);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(got.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(json["status"], 502);
    assert_eq!(json["upstream"], format!("http://{dead_addr}/"));
    proxy
        .wait_metric(
            "takgate_proxy_errors_total",
            &[("side", "upstream"), ("kind", "connect")],
            1.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_504() {
    let up = FakeUpstream::start().await;
    let toml = web_config(&up.url(), "").replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nresponse_timeout = \"300ms\"",
    );
    let proxy = TestProxy::start(&toml).await;
    let got = get(proxy.http("web"), "/api/slow?ms=3000", &[]).await;
    assert_eq!(got.status, 504);
    let json: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(json["error"], "upstream timed out");
    proxy
        .wait_metric(
            "takgate_proxy_errors_total",
            &[("kind", "response_timeout")],
            1.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_keeps_flowing_is_not_cut_but_a_stalled_one_is() {
    let up = FakeUpstream::start().await;
    let toml = web_config(&up.url(), "").replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nresponse_timeout = \"400ms\"",
    );
    let proxy = TestProxy::start(&toml).await;
    // 8 chunks 150 ms apart: 1.2 s in all, far beyond the 400 ms timeout, but never idle that long.
    let got = get(proxy.http("web"), "/api/trickle?chunks=8&gap_ms=150", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 8);
    // A gap longer than the timeout cuts the response.
    let resp = send_streaming(
        proxy.http("web"),
        Request::get("/api/trickle?chunks=3&gap_ms=900")
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    let collected = within(resp.into_body().collect()).await;
    assert!(collected.is_err(), "a stalled upstream body must be cut");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_get_413() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "max_body = \"1KiB\"")).await;
    let addr = proxy.http("web");
    // Declared length over the limit: refused before anything reaches OTS.
    let got = send(
        addr,
        Request::post("/api/upload")
            .body(Full::new(Bytes::from(vec![b'a'; 2048])))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 413);
    assert!(up.uploaded().is_empty());
    // Chunked, no declared length: cut when the limit is crossed.
    let chunks = futures_util::stream::iter(
        (0..4)
            .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'a'; 512])))),
    );
    let resp = send_streaming(
        addr,
        Request::post("/api/upload")
            .body(StreamBody::new(chunks))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 413);
    // Under the limit passes.
    let got = send(
        addr,
        Request::post("/api/upload")
            .body(Full::new(Bytes::from(vec![b'a'; 1000])))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "1000");
    proxy
        .wait_metric(
            "takgate_proxy_errors_total",
            &[("side", "downstream"), ("kind", "body_too_large")],
            2.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_heads_get_431_and_the_next_request_works() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "max_header_bytes = \"8KiB\"")).await;
    let addr = proxy.http("web");
    let big = "a".repeat(16 * 1024);
    let req = format!("GET /api/x HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n");
    let answer = raw(addr, req.as_bytes(), None).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    proxy
        .wait_metric(
            "takgate_http_connection_errors_total",
            &[("kind", "head_too_large")],
            1.0,
        )
        .await;
    let got = get(addr, "/api/ok", &[]).await;
    assert_eq!(got.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_counted_by_route_class() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let addr = proxy.http("web");
    get(addr, "/api/a", &[]).await;
    get(addr, "/Marti/api/version/config", &[]).await;
    get(addr, "/socket.io/?EIO=4&transport=polling", &[]).await;
    get(addr, "/map", &[]).await;
    for (route, class) in [
        ("api", "2xx"),
        ("marti", "2xx"),
        ("socketio", "2xx"),
        ("static", "5xx"),
    ] {
        proxy
            .wait_metric(
                "takgate_http_requests_total",
                &[
                    ("listener", "web"),
                    ("route", route),
                    ("status_class", class),
                ],
                1.0,
            )
            .await;
    }
    assert_eq!(
        proxy.metric("takgate_http_request_duration_seconds", &[("route", "api")]),
        1.0
    );
    assert_eq!(
        proxy.metric("takgate_upstream_ttfb_seconds", &[("route", "api")]),
        1.0
    );
    assert_eq!(proxy.metric("takgate_http_in_flight_requests", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_request_head_is_closed_at_its_timeout() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "header_read_timeout = \"300ms\"")).await;
    let started = std::time::Instant::now();
    // Never finishes its head: takgate closes the connection.
    let answer = raw(
        proxy.http("web"),
        b"GET /api/x HTTP/1.1\r\nHost: h\r\nX-Slow: 1",
        None,
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(300),
        "{elapsed:?}"
    );
    assert!(!String::from_utf8_lossy(&answer).contains("200"));
    assert!(up.seen().is_empty());
    proxy
        .wait_metric(
            "takgate_http_connection_errors_total",
            &[("kind", "header_timeout")],
            1.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_is_answered_at_the_edge() {
    let up = FakeUpstream::start().await;
    let cors = r#"[http.cors]
allowed_origins = ["https://ui.example.org"]
allow_credentials = true"#;
    let proxy = TestProxy::start(&web_config(&up.url(), cors)).await;
    let addr = proxy.http("web");
    let preflight = |origin: &'static str| {
        Request::options("/api/login")
            .header("host", addr.to_string())
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-xsrf-token",
            )
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let ok = send(addr, preflight("https://ui.example.org")).await;
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://ui.example.org")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(ok.header("vary").unwrap().contains("Origin"));
    let refused = send(addr, preflight("https://evil.example")).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert!(up.seen().is_empty(), "preflights never reach OTS");

    // An actual request from the allowed origin gets the grant, replacing OTS's own.
    let got = get(
        addr,
        "/api/cookies",
        &[("origin", "https://ui.example.org")],
    )
    .await;
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://ui.example.org")
    );
    let got = get(addr, "/api/cookies", &[("origin", "https://evil.example")]).await;
    assert_eq!(got.header("access-control-allow-origin"), None);
    assert!(got.header("vary").unwrap().contains("Origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_https_routes_verify_the_upstream_unless_told_not_to() {
    let pki = takgate_tests::certs::TestPki::new();
    let settings = pki.server_settings(cot::tls::ClientAuth::None);
    let acceptor = tokio_rustls::TlsAcceptor::from(cot::tls::server_config(&settings).unwrap());
    let media = FakeUpstream::start_tls(acceptor).await;
    let up = FakeUpstream::start().await;
    let routes = format!(
        r#"[[http.route]]
prefix = "/hls"
upstream = "https://{media}"
strip_prefix = true
tls_verify = false
[[http.route]]
prefix = "/verified"
upstream = "https://{media}"
"#,
        media = media.addr
    );
    let proxy = TestProxy::start(&web_config(&up.url(), &routes)).await;
    let addr = proxy.http("web");
    let got = get(addr, "/hls/live/index.m3u8?jwt=t", &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        media.last().uri.path_and_query().unwrap().as_str(),
        "/live/index.m3u8?jwt=t"
    );
    // The test CA is in no system trust store: a verified route refuses the upstream.
    let got = get(addr, "/verified/x", &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(media.seen().len(), 1);
}
