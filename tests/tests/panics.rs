//! A panic in one connection ends that connection only: it is caught, counted in
//! `takgate_panics_total{listener}`, and every other request and CoT session goes on. The panic
//! is injected with the test-only hook (`Panics::inject_panic`, feature `test-hooks`), which
//! makes the next connection of a listener panic as soon as it has started.

use http::Request;
use http_body_util::Full;
use takgate_tests::certs::TestPki;
use takgate_tests::client::{closes, connection, get, within};
use takgate_tests::cot::{read_n, stream_config, tls_connect, CotUpstream, PING, SPOT};
use takgate_tests::process::{takgate_release_with_hooks, TakgateProcess};
use takgate_tests::proxy::{web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn api(path: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(path)
        .header("host", "takgate.test")
        .body(Full::default())
        .unwrap()
}

fn config(api: &FakeUpstream, cot: &CotUpstream, pki: &TestPki) -> String {
    format!(
        "{}\n{}",
        web_config(&api.url(), ""),
        stream_config("cot", cot.addr, "terminate", pki, "")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_ends_its_own_connection_and_nothing_else() {
    let api_up = FakeUpstream::start().await;
    let cot_up = CotUpstream::start().await;
    let pki = TestPki::new();
    let proxy = TestProxy::start(&config(&api_up, &cot_up, &pki)).await;
    let web = proxy.http("web");
    let panics = |listener: &str| proxy.metric("takgate_panics_total", &[("listener", listener)]);
    assert_eq!(panics("web"), 0.0);
    assert_eq!(panics("cot"), 0.0);

    // A live CoT session, relaying.
    let eud = pki.issue_client("eud1");
    let mut session = tls_connect(proxy.stream("cot"), &pki, Some(&eud))
        .await
        .unwrap();
    within(session.write_all(SPOT)).await.unwrap();
    let mut ots = cot_up.accept().await;
    assert_eq!(read_n(&mut ots, SPOT.len()).await, SPOT);
    // A keep-alive HTTP connection, answered.
    let mut keep_alive = connection(web).await;
    let resp = within(keep_alive.send_request(api("/api/before")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);

    // One HTTP connection panics: it is closed, counted, and the others are served.
    proxy.app.panics().inject_panic("web");
    let mut doomed = within(TcpStream::connect(web)).await.unwrap();
    assert!(
        closes(&mut doomed).await,
        "the panicking connection is closed"
    );
    proxy
        .wait_metric("takgate_panics_total", &[("listener", "web")], 1.0)
        .await;
    within(keep_alive.ready()).await.unwrap();
    let resp = within(keep_alive.send_request(api("/api/after")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the keep-alive connection goes on");
    drop(resp);
    assert_eq!(
        get(web, "/api/new", &[]).await.status,
        200,
        "new connections too"
    );

    // One CoT session panics (mid-handshake): the live session relays both ways still.
    proxy.app.panics().inject_panic("cot");
    let other = pki.issue_client("eud2");
    if let Ok(mut doomed) = tls_connect(proxy.stream("cot"), &pki, Some(&other)).await {
        assert!(closes(&mut doomed).await, "the panicking session is closed");
    }
    proxy
        .wait_metric("takgate_panics_total", &[("listener", "cot")], 1.0)
        .await;
    within(session.write_all(PING)).await.unwrap();
    assert_eq!(read_n(&mut ots, PING.len()).await, PING);
    within(ots.write_all(PING)).await.unwrap();
    assert_eq!(read_n(&mut session, PING.len()).await, PING);
    // Nothing leaked: the open-connection gauges count the live session and connection only.
    proxy
        .wait_metric(
            "takgate_stream_connections_open",
            &[("listener", "cot")],
            1.0,
        )
        .await;
    proxy
        .wait_metric("takgate_http_connections_open", &[("listener", "web")], 1.0)
        .await;
    // A new session after the panic relays too.
    let mut later = tls_connect(proxy.stream("cot"), &pki, Some(&other))
        .await
        .unwrap();
    within(later.write_all(PING)).await.unwrap();
    assert_eq!(relayed_after_a_panic(&cot_up, PING.len()).await, PING);

    // The admin listener's connections run in the same guard.
    proxy.app.panics().inject_panic("admin");
    let mut doomed = within(TcpStream::connect(proxy.addrs.admin)).await.unwrap();
    assert!(closes(&mut doomed).await);
    assert_eq!(get(proxy.addrs.admin, "/healthz", &[]).await.status, 200);
    // The guard counts after the connection's future is dropped, so the close can be seen first.
    proxy
        .wait_metric("takgate_panics_total", &[("listener", "admin")], 1.0)
        .await;
    assert_eq!(panics("web"), 1.0, "one each, nothing else panicked");
    assert_eq!(panics("cot"), 1.0);
}

/// The binary as built for release (`--release`, plus the hook) unwinds: the panic is caught
/// and the process keeps serving. With `panic = "abort"` it would die at the first one.
#[tokio::test(flavor = "multi_thread")]
async fn the_release_binary_survives_a_panic() {
    let bin = tokio::task::spawn_blocking(takgate_release_with_hooks)
        .await
        .unwrap();
    let api_up = FakeUpstream::start().await;
    let cot_up = CotUpstream::start().await;
    let pki = TestPki::new();
    let mut takgate = TakgateProcess::start_bin(
        &bin,
        &[("TAKGATE_TEST_INJECT_PANIC", "web,cot")],
        &config(&api_up, &cot_up, &pki),
    )
    .await;

    let mut doomed = within(TcpStream::connect(takgate.http("web")))
        .await
        .unwrap();
    assert!(closes(&mut doomed).await, "the first web connection panics");
    let eud = pki.issue_client("eud1");
    if let Ok(mut doomed) = tls_connect(takgate.stream("cot"), &pki, Some(&eud)).await {
        assert!(closes(&mut doomed).await, "the first CoT session panics");
    }

    assert!(takgate.running(), "takgate exited:\n{}", takgate.log());
    assert_eq!(get(takgate.http("web"), "/api/x", &[]).await.status, 200);
    let mut session = tls_connect(takgate.stream("cot"), &pki, Some(&eud))
        .await
        .unwrap();
    within(session.write_all(PING)).await.unwrap();
    assert_eq!(relayed_after_a_panic(&cot_up, PING.len()).await, PING);
    for listener in ["web", "cot"] {
        let what = format!("one panic counted on {listener}");
        let got = takgate
            .wait_metric(
                "takgate_panics_total",
                &[("listener", listener)],
                &what,
                |v| v >= 1.0,
            )
            .await;
        assert_eq!(got, 1.0, "{listener}");
    }
    let log = takgate.log();
    assert!(
        log.contains("connection task panicked"),
        "the panic is logged:\n{log}"
    );
    takgate.signal("TERM");
    assert!(takgate
        .wait_exit(std::time::Duration::from_secs(10))
        .await
        .success());
}

/// The first `n` bytes relayed on the next upstream connection that carries any. The session
/// that panicked may have finished its handshake and begun connecting upstream before it first
/// waited (a fast client on another thread): that connection closes without a byte, and is
/// skipped, once.
async fn relayed_after_a_panic(cot_up: &CotUpstream, n: usize) -> Vec<u8> {
    let mut relayed = vec![0u8; n];
    let mut ots = cot_up.accept().await;
    if let Err(e) = within(ots.read_exact(&mut relayed)).await {
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        ots = cot_up.accept().await;
        within(ots.read_exact(&mut relayed)).await.unwrap();
    }
    relayed
}
