//! Draining: in-flight requests finish, new connections are refused, WebSockets are cut after
//! their grace.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use takgate_tests::client::{get, within};
use takgate_tests::proxy::{web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn config(upstream: &str) -> String {
    web_config(
        upstream,
        "[shutdown]\ngrace = \"5s\"\nwebsocket_grace = \"300ms\"",
    )
}

/// Waits until connecting to `addr` fails: the listener is closed.
async fn refused(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_request_finishes_while_new_connections_are_refused() {
    let up = FakeUpstream::start().await;
    let proxy = std::sync::Arc::new(TestProxy::start(&config(&up.url())).await);
    let addr = proxy.http("web");
    let in_flight = tokio::spawn(async move { get(addr, "/api/hold", &[]).await });
    within(up.held()).await;

    let p = proxy.clone();
    let shutdown = tokio::spawn(async move { p.app.shutdown().await });
    refused(addr).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown must wait for the request in flight"
    );

    up.release();
    let got = within(in_flight).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "released");
    assert!(within(shutdown).await.unwrap(), "drained within the grace");
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_are_closed_after_their_grace() {
    let up = FakeUpstream::start().await;
    let proxy = std::sync::Arc::new(TestProxy::start(&config(&up.url())).await);
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        proxy.http("web")
    );
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    within(ws.send(Message::text("ping"))).await.unwrap();
    assert_eq!(
        within(ws.next())
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "ping"
    );

    let started = tokio::time::Instant::now();
    let p = proxy.clone();
    let shutdown = tokio::spawn(async move { p.app.shutdown().await });
    // The relay is cut: the client sees the stream end (no close frame can be injected into a
    // byte relay), no sooner than the grace.
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(within(shutdown).await.unwrap());
    proxy
        .wait_metric("takgate_websocket_sessions_open", &[], 0.0)
        .await;
}
