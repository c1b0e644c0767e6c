//! The admin listener: liveness, readiness that follows the OTS API, metrics exposition.

use takgate_tests::client::get;
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
