//! The admin listener: liveness, readiness that follows the OTS API, metrics exposition.

use takgate_tests::certs::TestPki;
use takgate_tests::client::{get, within};
use takgate_tests::cot::{stream_config, CotUpstream};
use takgate_tests::proxy::{web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_the_api_and_healthz_does_not() {
    // The upstream's socket is bound by the test and handed to the fake OTS later, so the same
    // address goes from refusing to answering.
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    drop(socket);
    let proxy = TestProxy::start(&web_config(&format!("http://{addr}"), "")).await;
    let admin = proxy.addrs.admin;

    assert_eq!(get(admin, "/healthz", &[]).await.status, 200);
    let down = get(admin, "/readyz", &[]).await;
    assert_eq!(down.status, 503);
    let json: serde_json::Value = serde_json::from_slice(&down.body).unwrap();
    assert_eq!(json["listeners_bound"], true);
    assert_eq!(json["upstream_ok"], false);

    let _up = FakeUpstream::serve(TcpListener::bind(addr).await.unwrap());
    let up = get(admin, "/readyz", &[]).await;
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(get(admin, "/nope", &[]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_exposed_in_prometheus_text_format() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    get(proxy.http("web"), "/api/x", &[]).await;
    proxy
        .wait_metric("takgate_http_requests_total", &[("route", "api")], 1.0)
        .await;
    let got = get(proxy.addrs.admin, "/metrics", &[]).await;
    assert_eq!(got.status, 200);
    assert!(got
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = got.text();
    for needle in [
        "# TYPE takgate_http_request_duration_seconds histogram",
        r#"takgate_http_request_duration_seconds_bucket{listener="web",method="GET",route="api",status_class="2xx",le="0.001"}"#,
        r#"le="30"}"#,
        "# TYPE takgate_upstream_ttfb_seconds histogram",
        r#"takgate_http_in_flight_requests{listener="web"} 0"#,
        r#"takgate_build_info{version=""#,
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
}

/// Concurrent `/readyz` calls share one upstream probe: eight calls, one health request at
/// the OTS API and one connect to a stream listener's upstream. The API probe is held by the
/// upstream (its health path is a `/hold`), so every call after the first arrives while it
/// runs; held past `/readyz`'s 1 s probe timeout, it fails them all alike.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_readyz_calls_share_one_upstream_probe() {
    let up = FakeUpstream::start().await;
    let cot = CotUpstream::start().await;
    let pki = TestPki::new();
    let config = format!(
        "{}\n{}",
        web_config(&up.url(), "").replace(
            "connect_timeout = \"1s\"",
            "connect_timeout = \"1s\"\nhealth_path = \"/api/health/hold\"",
        ),
        stream_config("cot", cot.addr, "terminate", &pki, "")
    );
    let proxy = TestProxy::start(&config).await;
    let admin = proxy.addrs.admin;
    let probes = || {
        up.seen()
            .iter()
            .filter(|s| s.uri.path() == "/api/health/hold")
            .count()
    };

    let first = tokio::spawn(async move { get(admin, "/readyz", &[]).await });
    within(up.held()).await;
    let others: Vec<_> = (0..7)
        .map(|_| tokio::spawn(async move { get(admin, "/readyz", &[]).await }))
        .collect();
    let mut answers = vec![first.await.unwrap()];
    for other in others {
        answers.push(other.await.unwrap());
    }
    for got in &answers {
        assert_eq!(got.status, 503, "{}", got.text());
        let json: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(json["upstream_error"], "no answer within 1s");
        assert_eq!(json["stream_upstreams"]["cot"]["ok"], true);
    }
    assert_eq!(probes(), 1, "one API probe for eight concurrent calls");
    drop(cot.accept().await);

    // A call after that probe has finished starts a new API probe; the stream upstream's
    // outcome is still recent (30 s), so it is not connected to again.
    let _ = get(admin, "/readyz", &[]).await;
    assert_eq!(probes(), 2);
    assert!(
        cot.try_accept().await.is_none(),
        "one connect to the CoT upstream in all"
    );
}
