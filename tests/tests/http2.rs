//! HTTP/2 on TLS listeners (issue #16, point 5): ALPN `h2` with HTTP/1.1 beside it, the same
//! routing and header contract as HTTP/1.1 (curl as the client), WebSocket upgrades still on
//! HTTP/1.1, and h2's hostile input (rapid reset, CONTINUATION floods, oversized header lists,
//! too many streams) bounded and counted, sent as raw frames.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use takgate_tests::certs::TestPki;
use takgate_tests::client::{connect, read_response, within, Stream};
use takgate_tests::proxy::{tls_web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ui() -> tempfile::TempDir {
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(
        ui.path().join("index.html"),
        "<!doctype html><div id=root></div>",
    )
    .unwrap();
    std::fs::create_dir_all(ui.path().join("assets")).unwrap();
    let js: String = (0..2000)
        .map(|i| format!("export const marker{i} = L.marker([51.5, -0.12]);\n"))
        .collect();
    std::fs::write(ui.path().join("assets/index-AbC123.js"), js).unwrap();
    ui
}

async fn start(
    up: &FakeUpstream,
    pki: &TestPki,
    ui: &Path,
    extra: &str,
) -> (TestProxy, SocketAddr) {
    let proxy = TestProxy::start(&tls_web_config(&up.url(), pki, ui, extra)).await;
    let addr = proxy.http("web-tls");
    (proxy, addr)
}

/// curl over TLS: `(http_version, status, body)`.
fn curl(pki: &TestPki, addr: SocketAddr, path: &str, args: &[&str]) -> (String, u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("body");
    let res = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&pki.ca_pem)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(args)
        .arg(format!("https://127.0.0.1:{}{path}", addr.port()))
        .output()
        .expect("curl runs");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let w = String::from_utf8_lossy(&res.stdout).into_owned();
    let (version, code) = w.split_once(' ').unwrap();
    (
        version.to_owned(),
        code.parse().unwrap(),
        std::fs::read(&out).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_gets_the_ui_and_the_api_over_h2_with_the_http1_contract() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let ui = ui();
    let js = std::fs::read(ui.path().join("assets/index-AbC123.js")).unwrap();
    let (proxy, addr) = start(&up, &pki, ui.path(), "").await;

    let (version, status, body) = curl(
        &pki,
        addr,
        "/assets/index-AbC123.js",
        &["--http2", "--compressed"],
    );
    assert_eq!((version.as_str(), status), ("2", 200));
    assert_eq!(body, js);
    let (version, status, body) = curl(&pki, addr, "/map/track/1", &["--http2"]);
    assert_eq!((version.as_str(), status), ("2", 200), "the SPA fallback");
    assert!(String::from_utf8_lossy(&body).contains("id=root"));

    // The upstream sees the same head from an h2 client as from an HTTP/1.1 one.
    let mut heads = Vec::new();
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (version, status, body) = curl(
            &pki,
            addr,
            "/api/eud?json=5000",
            &[
                flag,
                "--compressed",
                "-H",
                "cookie: session=a; XSRF-TOKEN=b",
            ],
        );
        assert_eq!((version.as_str(), status), (want, 200));
        assert_eq!(body.len(), 5000);
        heads.push(up.last().headers);
    }
    for name in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
        "cookie",
        "accept-encoding",
    ] {
        let values = |i: usize| heads[i].get_all(name).iter().cloned().collect::<Vec<_>>();
        assert_eq!(values(0), values(1), "{name}");
        assert!(!values(0).is_empty(), "{name} sent");
    }
    assert_eq!(
        heads[0]["host"],
        format!("127.0.0.1:{}", addr.port()).as_str()
    );
    assert_eq!(heads[0]["x-forwarded-proto"], "https");

    // Counted as any request is.
    let h2_requests = proxy.metric(
        "takgate_http_requests_total",
        &[
            ("listener", "web-tls"),
            ("route", "api"),
            ("status_class", "2xx"),
        ],
    );
    assert!(h2_requests >= 2.0, "{h2_requests}");

    // `[http.http2] enabled = false`: ALPN offers HTTP/1.1 only (control).
    let (_off, off_addr) = start(&up, &pki, ui.path(), "[http.http2]\nenabled = false\n").await;
    let (version, status, _) = curl(&pki, off_addr, "/assets/index-AbC123.js", &["--http2"]);
    assert_eq!((version.as_str(), status), ("1.1", 200));
}

/// A header list over `max_header_bytes` gets 431 on that stream, as HTTP/1.1 gets it.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_header_list_gets_431() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let ui = ui();
    let (_proxy, addr) = start(&up, &pki, ui.path(), "max_header_bytes = \"8KiB\"\n").await;
    let big = format!("x-big: {}", "a".repeat(9000));
    let (version, status, _) = curl(&pki, addr, "/api/health", &["--http2", "-H", &big]);
    assert_eq!((version.as_str(), status), ("2", 431));
    let small = format!("x-big: {}", "a".repeat(4000));
    let (_, status, _) = curl(&pki, addr, "/api/health", &["--http2", "-H", &small]);
    assert_eq!(status, 200, "under the limit (control)");
}

fn tls_client(pki: &TestPki, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = (*pki.client_config(None)).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A browser opens its WebSocket on an HTTP/1.1 connection (takgate announces no RFC 8441);
/// the listener that speaks h2 to it still upgrades that one.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_stay_on_http1() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let ui = ui();
    let (_proxy, addr) = start(&up, &pki, ui.path(), "").await;

    // Offered both, a client gets h2 (its preface is answered with SETTINGS).
    let mut h2 = connect(addr, Some(tls_client(&pki, &[b"h2", b"http/1.1"])))
        .await
        .unwrap();
    within(h2.write_all(&preface())).await.unwrap();
    let (kind, _, _, _) = read_frame(&mut h2).await.expect("a frame");
    assert_eq!(kind, SETTINGS);

    let mut ws = connect(addr, Some(tls_client(&pki, &[b"http/1.1"])))
        .await
        .unwrap();
    let req = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        addr.port()
    );
    within(ws.write_all(req.as_bytes())).await.unwrap();
    let resp = read_response(&mut ws).await.expect("a response");
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("upgrade"), Some("websocket"));
}

// --- raw HTTP/2 frames -------------------------------------------------------------------

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The client preface and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// An HPACK integer with an `n`-bit prefix, its first byte or-ed with `flags`.
fn hpack_int(flags: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal field without indexing: `name` a static-table index, or a new name.
fn literal(name: Result<usize, &str>, value: &str, out: &mut Vec<u8>) {
    match name {
        Ok(index) => hpack_int(0, 4, index, out),
        Err(name) => {
            out.push(0);
            hpack_int(0, 7, name.len(), out);
            out.extend_from_slice(name.as_bytes());
        }
    }
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

/// The header block of a request: GET or POST, `https`, `path`, `:authority` localhost.
fn request_block(post: bool, path: &str) -> Vec<u8> {
    let mut out = vec![if post { 0x83 } else { 0x82 }, 0x87];
    literal(Ok(4), path, &mut out);
    literal(Ok(1), "localhost", &mut out);
    out
}

/// The next frame, or `None` once the server has closed.
async fn read_frame(s: &mut Box<dyn Stream>) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    within(s.read_exact(&mut head)).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    within(s.read_exact(&mut payload)).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Reads until a GOAWAY (its error code) or a response HEADERS frame on `stream` (`Ok`);
/// RST_STREAMs seen on the way are collected.
async fn read_until(s: &mut Box<dyn Stream>, stream: u32) -> (Result<(), u32>, Vec<(u32, u32)>) {
    let mut resets = Vec::new();
    loop {
        let Some((kind, _, id, payload)) = read_frame(s).await else {
            panic!("closed without GOAWAY; resets {resets:?}");
        };
        match kind {
            GOAWAY => {
                let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                return (Err(code), resets);
            }
            RST_STREAM => resets.push((id, u32::from_be_bytes(payload[..4].try_into().unwrap()))),
            HEADERS if id == stream => return (Ok(()), resets),
            _ => {}
        }
    }
}

async fn h2_connection(pki: &TestPki, addr: SocketAddr) -> Box<dyn Stream> {
    let mut s = connect(addr, Some(tls_client(pki, &[b"h2"])))
        .await
        .unwrap();
    within(s.write_all(&preface())).await.unwrap();
    s
}

async fn abuse_count(proxy: &TestProxy) -> f64 {
    proxy.metric(
        "takgate_http_connection_errors_total",
        &[("listener", "web-tls"), ("kind", "http2_abuse")],
    )
}

/// CVE-2023-44487: streams opened and reset at once. A few are a client changing its mind
/// (control: the next request is answered); a flood ends the connection with ENHANCE_YOUR_CALM,
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_is_cut_off_and_counted() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let ui = ui();
    let (proxy, addr) = start(&up, &pki, ui.path(), "").await;
    let pairs = |from: u32, n: u32| {
        let mut out = Vec::new();
        for i in 0..n {
            let id = from + 2 * i;
            out.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &request_block(false, "/api/health"),
            ));
            out.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        out
    };

    let mut calm = h2_connection(&pki, addr).await;
    let mut burst = pairs(1, 5);
    burst.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        11,
        &request_block(false, "/api/health"),
    ));
    within(calm.write_all(&burst)).await.unwrap();
    assert_eq!(
        read_until(&mut calm, 11).await.0,
        Ok(()),
        "answered after a few resets"
    );
    assert_eq!(abuse_count(&proxy).await, 0.0);

    let mut flood = h2_connection(&pki, addr).await;
    // The server may close before the whole flood is written.
    let _ = within(flood.write_all(&pairs(1, 500))).await;
    assert_eq!(
        read_until(&mut flood, u32::MAX).await.0,
        Err(ENHANCE_YOUR_CALM)
    );
    proxy
        .wait_metric(
            "takgate_http_connection_errors_total",
            &[("listener", "web-tls"), ("kind", "http2_abuse")],
            1.0,
        )
        .await;
}

/// CONTINUATION frames past the header list limit end the connection (ENHANCE_YOUR_CALM),
/// counted, instead of being buffered.
#[tokio::test(flavor = "multi_thread")]
async fn a_continuation_flood_is_cut_off_and_counted() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let ui = ui();
    let (proxy, addr) = start(&up, &pki, ui.path(), "").await;
    let mut s = h2_connection(&pki, addr).await;
    let mut flood = frame(HEADERS, 0, 1, &request_block(false, "/api/health"));
    let mut field = Vec::new();
    literal(Err("x-flood"), &"a".repeat(1000), &mut field);
    for _ in 0..2000 {
        flood.extend(frame(CONTINUATION, 0, 1, &field));
    }
    let _ = within(s.write_all(&flood)).await;
    assert_eq!(read_until(&mut s, 1).await.0, Err(ENHANCE_YOUR_CALM));
    proxy
        .wait_metric(
            "takgate_http_connection_errors_total",
            &[("listener", "web-tls"), ("kind", "http2_abuse")],
            1.0,
        )
        .await;
}

/// Streams past `max_concurrent_streams` are refused (REFUSED_STREAM, nothing allocated for
/// them) while the open ones go on; a client that keeps opening them is closed with a GOAWAY,
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn streams_past_the_limit_are_refused_then_counted() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let ui = ui();
    let (proxy, addr) = start(
        &up,
        &pki,
        ui.path(),
        "[http.http2]\nmax_concurrent_streams = 2\nmax_local_reset_streams = 4\n",
    )
    .await;
    let mut s = h2_connection(&pki, addr).await;
    // Two uploads left open (no END_STREAM), then one stream too many.
    let mut frames = Vec::new();
    for id in [1, 3, 5] {
        frames.extend(frame(
            HEADERS,
            END_HEADERS,
            id,
            &request_block(true, "/api/upload"),
        ));
    }
    within(s.write_all(&frames)).await.unwrap();
    let mut resets = Vec::new();
    while resets.is_empty() {
        let (kind, _, id, payload) = read_frame(&mut s).await.expect("a frame");
        if kind == RST_STREAM {
            resets.push((id, u32::from_be_bytes(payload[..4].try_into().unwrap())));
        }
        assert_ne!(kind, GOAWAY);
    }
    assert_eq!(
        resets,
        [(5, REFUSED_STREAM)],
        "only the stream past the limit"
    );
    // The open ones still work: finish stream 1's upload and get its answer.
    within(s.write_all(&frame(DATA, END_STREAM, 1, b"abc")))
        .await
        .unwrap();
    assert_eq!(read_until(&mut s, 1).await.0, Ok(()));
    assert_eq!(abuse_count(&proxy).await, 0.0);

    // Insisting: stream 3 still holds a slot, and every new stream past it is refused.
    let mut more = Vec::new();
    for i in 0..20 {
        more.extend(frame(
            HEADERS,
            END_HEADERS,
            7 + 2 * i,
            &request_block(true, "/api/upload"),
        ));
        more.extend(frame(
            HEADERS,
            END_HEADERS,
            9 + 2 * i,
            &request_block(true, "/api/upload"),
        ));
    }
    let _ = within(s.write_all(&more)).await;
    let (end, refused) = read_until(&mut s, u32::MAX).await;
    assert!(end.is_err(), "closed with a GOAWAY; refused {refused:?}");
    assert!(
        refused.iter().all(|&(_, code)| code == REFUSED_STREAM),
        "{refused:?}"
    );
    proxy
        .wait_metric(
            "takgate_http_connection_errors_total",
            &[("listener", "web-tls"), ("kind", http2_kind(end))],
            1.0,
        )
        .await;
}

/// The `kind` label takgate counts a GOAWAY of ours under.
fn http2_kind(goaway: Result<(), u32>) -> &'static str {
    match goaway {
        Err(ENHANCE_YOUR_CALM) => "http2_abuse",
        _ => "http2_protocol",
    }
}

/// hyper's h2 has no header timeout: an idle connection, or one trickling a header block, is
/// closed after `header_read_timeout` without progress (as HTTP/1.1's idle keep-alive is), while
/// a stream in flight keeps its connection open however long it takes (control).
#[tokio::test(flavor = "multi_thread")]
async fn idle_and_stalled_connections_are_closed() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let ui = ui();
    let (_proxy, addr) = start(&up, &pki, ui.path(), "header_read_timeout = \"300ms\"\n").await;

    let mut held = h2_connection(&pki, addr).await;
    within(held.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block(false, "/api/hold"),
    )))
    .await
    .unwrap();
    let mut idle = h2_connection(&pki, addr).await;
    let mut stalled = h2_connection(&pki, addr).await;
    within(stalled.write_all(&frame(HEADERS, 0, 1, &request_block(false, "/api/health"))))
        .await
        .unwrap();
    for s in [&mut idle, &mut stalled] {
        while read_frame(s).await.is_some() {}
    }
    // Both closed; the held request is still answered once the upstream lets it go.
    within(up.held()).await;
    up.release();
    assert_eq!(read_until(&mut held, 1).await.0, Ok(()));
}
