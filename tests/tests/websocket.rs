//! WebSocket upgrades through takgate: raw bytes, a real client, origin checks, metrics.

use futures_util::{SinkExt, StreamExt};
use takgate_tests::client::{raw, read_until, within};
use takgate_tests::proxy::{web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn config(upstream: &str, cors: &str) -> String {
    let echo_route = format!(
        "[[http.route]]\nprefix = \"/echo\"\nupstream = \"{upstream}\"\nstrip_prefix = true\n"
    );
    web_config(upstream, &format!("{cors}\n{echo_route}"))
}

/// A masked client text frame (RFC 6455 §5.3), short payload.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | u8::try_from(payload.len()).unwrap()];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_upgrade_relays_bytes_both_ways() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&config(&up.url(), "")).await;
    let addr = proxy.http("web");
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    let req = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: http://{addr}\r\n\r\n"
    );
    within(s.write_all(req.as_bytes())).await.unwrap();
    let head = read_until(&mut s, Some(b"\r\n\r\n")).await;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"));
    within(s.write_all(&client_frame(b"hello"))).await.unwrap();
    // The echo server's unmasked reply: 0x81, length 5, "hello".
    let echoed = read_until(&mut s, Some(b"hello")).await;
    assert_eq!(&echoed[echoed.len() - 7..], b"\x81\x05hello");
    let seen = up.last();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["connection"], "upgrade");
    assert_eq!(seen.headers["host"], addr.to_string().as_str());
    proxy
        .wait_metric(
            "takgate_websocket_sessions_open",
            &[("route", "websocket")],
            1.0,
        )
        .await;
    drop(s);
    proxy
        .wait_metric(
            "takgate_websocket_sessions_open",
            &[("route", "websocket")],
            0.0,
        )
        .await;
    assert!(
        proxy.metric(
            "takgate_websocket_bytes_total",
            &[("direction", "to_client")]
        ) >= 7.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_client_talks_through_a_custom_route() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&config(&up.url(), "")).await;
    let url = format!("ws://{}/echo/ws", proxy.http("web"));
    let (mut ws, resp) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let msg = format!("message {i}");
        within(ws.send(Message::text(msg.clone()))).await.unwrap();
        let got = within(ws.next()).await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), msg);
    }
    let big = vec![7u8; 256 * 1024];
    within(ws.send(Message::binary(big.clone()))).await.unwrap();
    let got = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(got.into_data().as_ref(), big.as_slice());
    // The prefix was stripped on the way.
    assert_eq!(up.last().uri.path(), "/ws");
    within(ws.close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_origin_upgrades_are_refused_unless_allowed() {
    let up = FakeUpstream::start().await;
    let cors = r#"[http.cors]
allowed_origins = ["https://*.example.org"]"#;
    let proxy = TestProxy::start(&config(&up.url(), cors)).await;
    let addr = proxy.http("web");
    let upgrade = |origin: &str| {
        format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Origin: {origin}\r\n\r\n"
        )
    };
    let before = up.seen().len();
    let answer = raw(
        addr,
        upgrade("http://evil.example").as_bytes(),
        Some(b"\r\n\r\n"),
    )
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 403"));
    assert_eq!(
        up.seen().len(),
        before,
        "a refused upgrade never reaches OTS"
    );
    let answer = raw(
        addr,
        upgrade("https://map.example.org").as_bytes(),
        Some(b"\r\n\r\n"),
    )
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 101"));
    let answer = raw(
        addr,
        upgrade(&format!("http://{addr}")).as_bytes(),
        Some(b"\r\n\r\n"),
    )
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 101"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_upgrade_is_plain_http() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&config(&up.url(), "")).await;
    let addr = proxy.http("web");
    let req = format!(
        "GET /api/x HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    );
    let answer = raw(addr, req.as_bytes(), Some(b"echo")).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(!up.last().headers.contains_key("upgrade"));
}
