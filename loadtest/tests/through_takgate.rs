//! loadtest through a real takgate, in process: CoT over mutual TLS through a `[[stream]]`
//! terminate listener to the loadtest echo sink, and HTTP and WebSocket through a `web`
//! listener to the HTTP sink. Counts on both sides must agree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use loadtest::tls::Pki;
use takgate_tests::proxy::{web_config, TestProxy};

mod common;

use common::{run_ok, sink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_http_and_ws_through_takgate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), 3).unwrap();
    let cot_sink = sink("--echo").await;
    let http_sink = sink("--http").await;
    let config = format!(
        r#"{}
[[stream]]
name = "cot"
listen = "127.0.0.1:0"
upstream = "{}"
mode = "terminate"
[stream.tls]
cert = "{}"
key = "{}"
client_ca = "{}"
"#,
        web_config(&format!("http://{}", http_sink.addr), ""),
        cot_sink.addr,
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display(),
    );
    let proxy = TestProxy::start(&config).await;

    // CoT: 12 clients over mutual TLS (three certificates in turn), echoed by the sink
    // behind takgate.
    let cot = proxy.stream("cot");
    let r = run_ok(&format!(
        "cot --target {cot} --gen-certs {} -n 12 --rate-per-client 50 --max-messages 600 \
         --duration 30s --drain 20s -q",
        dir.path().display()
    ))
    .await;
    assert_eq!(r.errors_total, 0, "{}", r.table());
    assert_eq!((r.ops.sent, r.ops.received, r.ops.ok), (600, 600, 600));
    assert_eq!(r.bytes.sent, r.bytes.received);
    assert_eq!(r.connections.established, 12);
    proxy
        .wait_metric(
            "takgate_cot_frames_total",
            &[("direction", "to_upstream")],
            600.0,
        )
        .await;
    proxy
        .wait_metric(
            "takgate_cot_frames_total",
            &[("direction", "to_client")],
            600.0,
        )
        .await;
    assert_eq!(
        proxy.metric("takgate_stream_connections_total", &[("listener", "cot")]),
        12.0
    );

    // /api through the web listener.
    let web = proxy.http("web");
    let r = run_ok(&format!(
        "http --url http://{web}/api/health --rate 200 -c 4 --max-requests 100 --duration 30s -q"
    ))
    .await;
    assert_eq!(r.errors_total, 0, "{}", r.table());
    assert_eq!((r.ops.ok, r.status["200"]), (100, 100));

    // Socket.IO's WebSocket through the web listener, echoed by the sink.
    let r = run_ok(&format!(
        "ws --url ws://{web}/socket.io/?EIO=4&transport=websocket -c 4 --rate-per-client 50 \
         --max-messages 200 --duration 30s --drain 20s -q"
    ))
    .await;
    assert_eq!(r.errors_total, 0, "{}", r.table());
    assert_eq!((r.ops.sent, r.ops.ok), (200, 200));
    assert_eq!(r.status["101"], 4);

    let seen = cot_sink.shutdown().await;
    assert_eq!(seen.frames, 600);
    let seen = http_sink.shutdown().await;
    assert_eq!(seen.ws_messages, 200);
}

/// The bench's reorig-* setup in miniature: OTS's TLS CoT port stood in for by `sink --ots`
/// (certificate CN opentakserver from loadtest's CA, client certificates required), behind a
/// takgate `reoriginate` listener signing with loadtest's CA key. OTS sees each client's own
/// CN, and every event comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cot_through_takgate_reoriginate_to_the_ots_sink() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), 3).unwrap();
    let ots = sink(&format!(
        "--echo --ots --gen-certs {}",
        dir.path().display()
    ))
    .await;
    let config = format!(
        r#"{}
[[stream]]
name = "cot-reorig"
listen = "127.0.0.1:0"
upstream = "{}"
mode = "reoriginate"
[stream.tls]
cert = "{}"
key = "{}"
client_ca = "{}"
[stream.reoriginate]
ca = "{}"
signer_key = "{}"
server_name = "opentakserver"
"#,
        web_config("http://127.0.0.1:9", ""),
        ots.addr,
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display(),
        pki.ca.display(),
        pki.ca_key.display(),
    );
    let proxy = TestProxy::start(&config).await;
    let cot = proxy.stream("cot-reorig");
    let r = run_ok(&format!(
        "cot --target {cot} --gen-certs {} -n 9 --rate-per-client 50 --max-messages 450 \
         --duration 30s --drain 20s -q",
        dir.path().display()
    ))
    .await;
    assert_eq!(r.errors_total, 0, "{}", r.table());
    assert_eq!((r.ops.sent, r.ops.received, r.ops.ok), (450, 450, 450));
    assert_eq!(r.connections.established, 9);
    // One certificate per CN, issued by takgate; the rest from its cache.
    assert_eq!(
        proxy.metric(
            "takgate_stream_certs_issued_total",
            &[("listener", "cot-reorig")]
        ),
        3.0
    );
    let seen = ots.shutdown().await;
    assert_eq!(seen.frames, 450);
    assert_eq!(seen.client_cns_seen, 9);
    assert_eq!(
        seen.client_cns,
        ["loadtest-1", "loadtest-2", "loadtest-3"].map(String::from)
    );
}

/// Issue 16's bench workloads in miniature: the sink's EUD list through takgate, with fewer
/// bytes on the wire when compression is asked for (control: the same without), and HTTP/2
/// over TLS (`--http2` offers only `h2` by ALPN, so a run without errors was spoken in h2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_h2_through_takgate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), 1).unwrap();
    let http_sink = sink("--http").await;
    let config = format!(
        "{}\n[[http]]\nname = \"web-tls\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\n\
         ui_root = \"/nonexistent-ui\"\n[http.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        web_config(&format!("http://{}", http_sink.addr), ""),
        pki.server_cert.display(),
        pki.server_key.display(),
    );
    let proxy = TestProxy::start(&config).await;
    let web = proxy.http("web");
    let run = |extra: &str| {
        format!(
            "http --url http://{web}/api/euds/65536 -c 2 --max-requests 20 --duration 30s -q {extra}"
        )
    };
    let plain = run_ok(&run("")).await;
    let br = run_ok(&run("-H Accept-Encoding:br")).await;
    for r in [&plain, &br] {
        assert_eq!((r.errors_total, r.ops.ok), (0, 20), "{}", r.table());
    }
    assert_eq!(plain.bytes.received, 20 * 65536);
    assert!(
        br.bytes.received * 4 < plain.bytes.received,
        "{} bytes compressed",
        br.bytes.received
    );

    let tls = proxy.http("web-tls");
    let h2 = run_ok(&format!(
        "http --http2 --ca {} --url https://{tls}/api/euds/4096 -c 2 --max-requests 20 \
         --duration 30s -q",
        pki.ca.display()
    ))
    .await;
    assert_eq!((h2.errors_total, h2.ops.ok), (0, 20), "{}", h2.table());
    assert_eq!(h2.bytes.received, 20 * 4096);
}
