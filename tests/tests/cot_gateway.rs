//! The CoT gateway end to end: TLS clients with certificates on one side, a fake OTS CoT port
//! on the other, in each mode.

use std::time::Duration;

use takgate_tests::certs::{other_ca_client, TestPki};
use takgate_tests::client::{read_until, within};
use takgate_tests::cot::{
    assert_refused, closed, read_n, stream_config, tls_connect, CotUpstream, PING, SPOT,
};
use takgate_tests::proxy::{base_config, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const ROUTE: &[u8] = include_bytes!("../../cot/tests/fixtures/cot/route.cot");
const TELESTRATION: &[u8] = include_bytes!("../../cot/tests/fixtures/cot/telestration.cot");

struct Setup {
    pki: TestPki,
    up: std::sync::Arc<CotUpstream>,
    proxy: TestProxy,
}

async fn setup(mode: &str, extra: &str) -> Setup {
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let config = format!(
        "{}\n{}",
        base_config("http://127.0.0.1:1"),
        stream_config("cot", up.addr, mode, &pki, extra)
    );
    let proxy = TestProxy::start(&config).await;
    Setup { pki, up, proxy }
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_relays_framed_cot_both_ways() {
    let s = setup("terminate", "").await;
    let eud = s.pki.issue_client("eud1");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    // Three real ATAK events and a ping, in awkward pieces.
    let mut stream = Vec::new();
    for e in [SPOT, ROUTE, TELESTRATION, PING] {
        stream.extend_from_slice(e);
    }
    for chunk in stream.chunks(777) {
        within(client.write_all(chunk)).await.unwrap();
    }
    let mut upstream = s.up.accept().await;
    assert_eq!(read_n(&mut upstream, stream.len()).await, stream);
    // OTS answers: the client gets it unchanged.
    within(upstream.write_all(PING)).await.unwrap();
    assert_eq!(read_n(&mut client, PING.len()).await, PING);

    s.proxy
        .wait_metric(
            "takgate_cot_frames_total",
            &[("direction", "to_upstream")],
            4.0,
        )
        .await;
    assert_eq!(
        s.proxy.metric(
            "takgate_cot_frames_total",
            &[("direction", "to_upstream"), ("class", "t-x")]
        ),
        1.0
    );
    assert_eq!(
        s.proxy
            .metric("takgate_cot_relay_latency_seconds", &[("listener", "cot")]),
        4.0
    );
    assert_eq!(
        s.proxy
            .metric("takgate_stream_connections_open", &[("listener", "cot")]),
        1.0
    );
    drop(client);
    assert!(
        closed(&mut upstream).await,
        "the client's close reaches OTS"
    );
    s.proxy
        .wait_metric(
            "takgate_stream_connections_open",
            &[("listener", "cot")],
            0.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_that_are_not_good_enough_are_refused_and_counted() {
    let s = setup("terminate", "").await;
    let addr = s.proxy.stream("cot");
    let expired = s.pki.issue_client_with("old", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let future = s.pki.issue_client_with("future", |p| {
        p.not_before = rcgen::date_time_ymd(2090, 1, 1);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    let server_only = s.pki.issue_client_with("srv", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    let stranger = other_ca_client("eud1");
    let cases = [
        (None, "no_cert"),
        (Some(&stranger), "unknown_ca"),
        (Some(&expired), "expired"),
        (Some(&future), "not_yet_valid"),
        (Some(&server_only), "wrong_key_usage"),
    ];
    for (cert, reason) in cases {
        let outcome = tls_connect(addr, &s.pki, cert).await;
        if let Ok(mut tls) = outcome {
            let _ = tls.write_all(PING).await;
            assert!(
                closed(&mut tls).await,
                "{reason}: the connection must be closed"
            );
        }
        s.proxy
            .wait_metric("takgate_stream_refused_total", &[("reason", reason)], 1.0)
            .await;
    }
    assert!(s.up.try_accept().await.is_none(), "nothing reached OTS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_certificate_is_refused_once_the_crl_lists_it() {
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let good = pki.issue_client("good");
    let bad = pki.issue_client("bad");
    let crl = pki.revoke(&bad);
    let extra = format!(
        "[stream.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\ncrl = \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_pem.display(),
        crl.display()
    );
    let config = format!(
        "{}\n[[stream]]\nname = \"cot\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n{extra}",
        base_config("http://127.0.0.1:1"),
        up.addr
    );
    let proxy = TestProxy::start(&config).await;
    let addr = proxy.stream("cot");
    if let Ok(mut tls) = tls_connect(addr, &pki, Some(&bad)).await {
        let _ = tls.write_all(PING).await;
        assert!(closed(&mut tls).await);
    }
    proxy
        .wait_metric(
            "takgate_stream_refused_total",
            &[("reason", "revoked")],
            1.0,
        )
        .await;
    let mut ok = tls_connect(addr, &pki, Some(&good)).await.unwrap();
    within(ok.write_all(PING)).await.unwrap();
    let mut upstream = up.accept().await;
    assert_eq!(read_n(&mut upstream, PING.len()).await, PING);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_handshake_is_closed_at_its_timeout() {
    let s = setup("terminate", "").await;
    let started = tokio::time::Instant::now();
    let mut tcp = within(TcpStream::connect(s.proxy.stream("cot")))
        .await
        .unwrap();
    assert!(closed(&mut tcp).await);
    assert!(started.elapsed() >= Duration::from_millis(500));
    s.proxy
        .wait_metric(
            "takgate_stream_refused_total",
            &[("reason", "timeout")],
            1.0,
        )
        .await;
    // Others are not held up by it.
    let eud = s.pki.issue_client("eud1");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut upstream = s.up.accept().await;
    assert_eq!(read_n(&mut upstream, PING.len()).await, PING);
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_over_the_limit_close_the_connection_and_malformed_ones_are_dropped() {
    let s = setup("terminate", "max_frame = \"2KiB\"\non_malformed = \"drop\"").await;
    let eud = s.pki.issue_client("eud1");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    // A malformed event is dropped; the good one after it goes through.
    within(client.write_all(b"<event><point></event>"))
        .await
        .unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut upstream = s.up.accept().await;
    assert_eq!(read_n(&mut upstream, PING.len()).await, PING);
    s.proxy
        .wait_metric(
            "takgate_cot_frame_errors_total",
            &[("kind", "malformed")],
            1.0,
        )
        .await;
    // An event that never ends within 2 KiB closes the connection.
    let big = format!("<event type=\"a-f-G\"><detail>{}", "x".repeat(4096));
    let _ = within(client.write_all(big.as_bytes())).await;
    assert!(closed(&mut client).await);
    s.proxy
        .wait_metric(
            "takgate_cot_frame_errors_total",
            &[("kind", "too_large")],
            1.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_closes_the_client_and_is_counted() {
    let pki = TestPki::new();
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let config = format!(
        "{}\n{}",
        base_config("http://127.0.0.1:1"),
        stream_config(
            "cot",
            dead_addr,
            "terminate",
            &pki,
            "connect_timeout = \"1s\""
        )
    );
    let proxy = TestProxy::start(&config).await;
    let eud = pki.issue_client("eud1");
    let mut client = tls_connect(proxy.stream("cot"), &pki, Some(&eud))
        .await
        .unwrap();
    assert!(closed(&mut client).await);
    proxy
        .wait_metric("takgate_stream_upstream_connect_failures_total", &[], 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_relays_bytes_untouched() {
    let s = setup("passthrough", "").await;
    let mut client = within(TcpStream::connect(s.proxy.stream("cot")))
        .await
        .unwrap();
    let hello = b"\x16\x03\x01\x00\x05hello-not-really-tls";
    within(client.write_all(hello)).await.unwrap();
    let mut upstream = s.up.accept().await;
    assert_eq!(read_n(&mut upstream, hello.len()).await, hello);
    within(upstream.write_all(b"\x16\x03\x03back"))
        .await
        .unwrap();
    assert_eq!(read_n(&mut client, 7).await, b"\x16\x03\x03back");
    s.proxy
        .wait_metric(
            "takgate_stream_bytes_total",
            &[("direction", "to_upstream")],
            hello.len() as f64,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_protocol_mode_sends_the_client_address_and_cn_first() {
    let s = setup("proxy-protocol", "").await;
    let eud = s.pki.issue_client("eud-7");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let local = client.get_ref().0.local_addr().unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut upstream = s.up.accept().await;
    // The header, then the event.
    let mut got = Vec::new();
    let decoded = loop {
        let mut buf = [0u8; 4096];
        let n = within(upstream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "upstream closed early");
        got.extend_from_slice(&buf[..n]);
        match cot::proxy_protocol::decode_v2(&got) {
            Ok(d) => break d,
            Err(cot::proxy_protocol::ProxyProtocolError::Incomplete { .. }) => continue,
            Err(e) => panic!("bad PROXY header: {e}"),
        }
    };
    let (src, _dst) = decoded.addresses.unwrap();
    assert_eq!(src, local);
    let ssl = decoded.ssl.unwrap();
    assert!(ssl.cert_verified());
    assert_eq!(ssl.verified_cn(), Some("eud-7"));
    let mut rest = got[decoded.header_len..].to_vec();
    if rest.len() < PING.len() {
        rest.extend(read_n(&mut upstream, PING.len() - rest.len()).await);
    }
    assert_eq!(rest, PING);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_mode_terminates_tls_and_relays_anything() {
    let s = setup("raw", "").await;
    let eud = s.pki.issue_client("mqtt");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let mqtt_connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd";
    within(client.write_all(mqtt_connect)).await.unwrap();
    let mut upstream = s.up.accept().await;
    assert_eq!(
        read_n(&mut upstream, mqtt_connect.len()).await,
        mqtt_connect
    );
    within(upstream.write_all(b"\x20\x02\x00\x00"))
        .await
        .unwrap();
    assert_eq!(read_n(&mut client, 4).await, b"\x20\x02\x00\x00");
    assert_eq!(s.proxy.metric("takgate_cot_frames_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn half_close_passes_the_end_of_stream_and_keeps_the_other_way_open() {
    let s = setup("terminate", "").await;
    let eud = s.pki.issue_client("eud1");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    within(client.write_all(PING)).await.unwrap();
    within(client.shutdown()).await.unwrap();
    let mut upstream = s.up.accept().await;
    let got = read_until(&mut upstream, None).await;
    assert_eq!(got, PING, "the event, then end of stream");
    within(upstream.write_all(ROUTE)).await.unwrap();
    assert_eq!(read_n(&mut client, ROUTE.len()).await, ROUTE);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_writes_every_frame_already_read_then_closes() {
    let s = setup("terminate", "").await;
    let eud = s.pki.issue_client("eud1");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let mut burst = Vec::new();
    for _ in 0..200 {
        burst.extend_from_slice(PING);
    }
    within(client.write_all(&burst)).await.unwrap();
    let mut upstream = s.up.accept().await;
    // Wait until takgate has read (and so relayed) the whole burst before stopping it.
    s.proxy
        .wait_metric(
            "takgate_cot_frames_total",
            &[("direction", "to_upstream")],
            200.0,
        )
        .await;
    assert!(within(s.proxy.app.shutdown()).await);
    let got = read_until(&mut upstream, None).await;
    assert_eq!(got.len(), burst.len());
    assert!(closed(&mut client).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_active_ots_users_get_in_and_a_deactivated_user_is_cut_off() {
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let ots = takgate_tests::upstream::FakeUpstream::start().await;
    ots.set_users(&[("alice", true), ("bob", false)]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "admin-token\n").unwrap();
    let extra = format!(
        "[stream.identity]\ntoken_file = \"{}\"\nrefresh = \"1s\"\n",
        token.display()
    );
    let config = format!(
        "{}\n{}",
        base_config(&ots.url()),
        stream_config("cot", up.addr, "terminate", &pki, "")
            .replace("[stream.tls]", &format!("{extra}[stream.tls]"))
    );
    let proxy = TestProxy::start(&config).await;
    let addr = proxy.stream("cot");

    // bob is deactivated; carol does not exist; a certificate without a CN names nobody.
    for (cn, reason) in [("bob", "inactive_user"), ("carol", "unknown_user")] {
        let cert = pki.issue_client(cn);
        if let Ok(mut tls) = tls_connect(addr, &pki, Some(&cert)).await {
            assert!(closed(&mut tls).await, "{cn} must be refused");
        }
        proxy
            .wait_metric("takgate_stream_refused_total", &[("reason", reason)], 1.0)
            .await;
    }
    let no_cn = pki.issue_client_with("x", |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
    });
    if let Ok(mut tls) = tls_connect(addr, &pki, Some(&no_cn)).await {
        assert!(closed(&mut tls).await);
    }
    proxy
        .wait_metric("takgate_stream_refused_total", &[("reason", "no_cn")], 1.0)
        .await;

    // dave is created in OTS: the next refresh lets him in.
    ots.set_users(&[("alice", true), ("bob", false), ("dave", true)]);
    proxy
        .wait_metric("takgate_identity_active_users", &[("listener", "cot")], 2.0)
        .await;
    let dave = pki.issue_client("dave");
    let mut dave_tls = tls_connect(addr, &pki, Some(&dave)).await.unwrap();
    within(dave_tls.write_all(PING)).await.unwrap();
    let mut dave_up = up.accept().await;
    assert_eq!(read_n(&mut dave_up, PING.len()).await, PING);

    // alice is deactivated mid-session: closed at the next refresh (1 s).
    let alice = pki.issue_client("alice");
    let mut alice_tls = tls_connect(addr, &pki, Some(&alice)).await.unwrap();
    within(alice_tls.write_all(PING)).await.unwrap();
    let mut alice_up = up.accept().await;
    assert_eq!(read_n(&mut alice_up, PING.len()).await, PING);
    ots.set_users(&[("alice", false), ("bob", false), ("dave", true)]);
    assert!(
        closed(&mut alice_tls).await,
        "a deactivated user's session must end"
    );
    proxy
        .wait_metric(
            "takgate_stream_sessions_closed_total",
            &[("reason", "user_inactive")],
            1.0,
        )
        .await;
    // dave is still connected.
    within(dave_tls.write_all(PING)).await.unwrap();
    assert_eq!(read_n(&mut dave_up, PING.len()).await, PING);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_listener_waits_for_the_ca_ots_has_not_created_yet() {
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let api = takgate_tests::upstream::FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("opentakserver.pem"),
        dir.path().join("opentakserver.nopass.key"),
        dir.path().join("ca.pem"),
    );
    let config = format!(
        "{}\n[[stream]]\nname = \"cot\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\
         [stream.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        base_config(&api.url()),
        up.addr,
        cert.display(),
        key.display(),
        ca.display()
    );
    let proxy = TestProxy::start(&config).await;
    let addr = proxy.stream("cot");
    let ready = takgate_tests::client::get(proxy.addrs.admin, "/readyz", &[]).await;
    assert_eq!(ready.status, 503);
    let json: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert!(json["tls_waiting_for_files"]["cot"]
        .to_string()
        .contains("ca.pem"));
    assert_eq!(json["stream_upstreams"]["cot"]["ok"], true);
    // Readiness probed the fake OTS once (no session had connected yet): take that
    // connection out of the way. Later readiness checks reuse the outcome of session connects.
    drop(up.accept().await);
    let eud = pki.issue_client("eud1");
    assert!(tls_connect(addr, &pki, Some(&eud)).await.is_err());
    proxy
        .wait_metric(
            "takgate_stream_refused_total",
            &[("reason", "tls_not_ready")],
            1.0,
        )
        .await;

    // OTS creates its CA and server certificate.
    std::fs::copy(&pki.ca_pem, &ca).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        if let Ok(c) = tls_connect(addr, &pki, Some(&eud)).await {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never picked up the files"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    within(client.write_all(PING)).await.unwrap();
    let mut upstream = up.accept().await;
    assert_eq!(read_n(&mut upstream, PING.len()).await, PING);
    let ready = takgate_tests::client::get(proxy.addrs.admin, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    // That answer came from the session's own connect: readiness opened nothing new.
    assert!(up.try_accept().await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_are_closed_and_the_connection_limit_holds() {
    let s = setup("terminate", "idle_timeout = \"400ms\"\nmax_connections = 1").await;
    let eud = s.pki.issue_client("eud1");
    let addr = s.proxy.stream("cot");
    let mut first = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(first.write_all(PING)).await.unwrap();
    let mut upstream = s.up.accept().await;
    assert_eq!(read_n(&mut upstream, PING.len()).await, PING);
    // A second client waits in the accept queue while the first holds the only slot...
    let second = tokio::spawn({
        let pki_client = s.pki.client_config(Some(&eud));
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(pki_client)
                .connect(takgate_tests::certs::server_name(), tcp)
                .await
                .unwrap();
            tls.write_all(PING).await.unwrap();
            tls
        }
    });
    // ...until the first goes idle and is closed.
    let started = tokio::time::Instant::now();
    assert!(closed(&mut first).await);
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.proxy
        .wait_metric(
            "takgate_stream_sessions_closed_total",
            &[("reason", "idle")],
            1.0,
        )
        .await;
    let _second = within(second).await.unwrap();
    let mut upstream2 = s.up.accept().await;
    assert_eq!(read_n(&mut upstream2, PING.len()).await, PING);
}

fn event(cot_type: &str, detail: &str) -> Vec<u8> {
    format!(
        "<event version=\"2.0\" uid=\"proto-1\" type=\"{cot_type}\" how=\"m-g\" \
         time=\"2026-11-26T10:00:00Z\" start=\"2026-11-26T10:00:00Z\" stale=\"2026-11-26T10:01:00Z\">\
         <point lat=\"0\" lon=\"0\" hae=\"0\" ce=\"9999999\" le=\"9999999\"/><detail>{detail}</detail></event>"
    )
    .into_bytes()
}

const GRANT: &str = "<TakControl><TakResponse status=\"true\"/></TakControl>";

/// A client connected through the `terminate` listener that has asked for TAK protocol v1, and
/// the upstream connection that has read the request.
async fn asked_for_protobuf(s: &Setup) -> (TlsStream<TcpStream>, TcpStream) {
    let eud = s.pki.issue_client("eud1");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let request = event(
        "t-x-takp-q",
        "<TakControl><TakRequest version=\"1\"/></TakControl>",
    );
    within(client.write_all(&request)).await.unwrap();
    let mut upstream = s.up.accept().await;
    assert_eq!(read_n(&mut upstream, request.len()).await, request);
    (client, upstream)
}

#[tokio::test(flavor = "multi_thread")]
async fn tak_protocol_v1_frames_flow_once_negotiated() {
    let s = setup("terminate", "").await;
    let (mut client, mut upstream) = asked_for_protobuf(&s).await;
    let response = event("t-x-takp-r", GRANT);
    within(upstream.write_all(&response)).await.unwrap();
    assert_eq!(read_n(&mut client, response.len()).await, response);
    // From here on both sides speak TAK protocol v1: 0xbf, varint length, protobuf payload.
    let mut frame = vec![0xbf, 5];
    frame.extend_from_slice(b"\x0a\x03abc");
    within(client.write_all(&frame)).await.unwrap();
    assert_eq!(read_n(&mut upstream, frame.len()).await, frame);
    within(upstream.write_all(&frame)).await.unwrap();
    assert_eq!(read_n(&mut client, frame.len()).await, frame);
    s.proxy
        .wait_metric(
            "takgate_cot_frames_total",
            &[("direction", "to_upstream")],
            2.0,
        )
        .await;
    assert_eq!(s.proxy.metric("takgate_cot_frame_errors_total", &[]), 0.0);
}

/// OTS relays what clients wrote. An event that hides `</event>` and a grant in CDATA (or a
/// comment, or a nested event) must not switch a waiting client's session to protobuf: if it
/// did, the XML that follows would be read as protobuf and the session cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_grant_smuggled_inside_a_relayed_event_does_not_switch_the_session() {
    let s = setup("terminate", "").await;
    let (mut client, mut upstream) = asked_for_protobuf(&s).await;
    let fake = format!("</event><event type='t-x-takp-r'>{GRANT}</event>");
    let smuggled = [
        event("a-f-G", &format!("<remarks><![CDATA[{fake}]]></remarks>")),
        event("a-f-G", &format!("<!-- {fake} -->")),
        event("a-f-G", &format!("<event type='a-f-G'>{fake}")),
    ];
    let after = event("a-f-G", "<remarks>still XML</remarks>");
    for bytes in smuggled.iter().chain([&after]) {
        within(upstream.write_all(bytes)).await.unwrap();
        assert_eq!(read_n(&mut client, bytes.len()).await, *bytes);
    }
    // OTS's own grant still switches it.
    let response = event("t-x-takp-r", GRANT);
    within(upstream.write_all(&response)).await.unwrap();
    assert_eq!(read_n(&mut client, response.len()).await, response);
    let frame = b"\xbf\x05\x0a\x03abc";
    within(client.write_all(frame)).await.unwrap();
    assert_eq!(read_n(&mut upstream, frame.len()).await, frame);
    s.proxy
        .wait_metric(
            "takgate_cot_frames_total",
            &[("direction", "to_client"), ("class", "t-x")],
            1.0,
        )
        .await;
    assert_eq!(
        s.proxy.metric(
            "takgate_cot_frames_total",
            &[("direction", "to_client"), ("class", "a-f")]
        ),
        4.0
    );
    assert_eq!(s.proxy.metric("takgate_cot_frame_errors_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_ots_cannot_be_asked_fail_closed_refuses_and_says_why() {
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "admin-token").unwrap();
    let extra = format!(
        "[stream.identity]\ntoken_file = \"{}\"\non_unavailable = \"fail-closed\"\n",
        token.display()
    );
    let config = format!(
        "{}\n{}",
        base_config(&format!("http://{dead_addr}")),
        stream_config("cot", up.addr, "terminate", &pki, "")
            .replace("[stream.tls]", &format!("{extra}[stream.tls]"))
    );
    let proxy = TestProxy::start(&config).await;
    let alice = pki.issue_client("alice");
    if let Ok(mut tls) = tls_connect(proxy.stream("cot"), &pki, Some(&alice)).await {
        assert!(closed(&mut tls).await);
    }
    proxy
        .wait_metric(
            "takgate_stream_refused_total",
            &[("reason", "identity_unavailable")],
            1.0,
        )
        .await;
    assert_eq!(
        proxy.metric("takgate_identity_loaded", &[("listener", "cot")]),
        0.0
    );
    assert!(proxy.metric("takgate_identity_refresh_failures_total", &[]) >= 1.0);
    assert!(up.try_accept().await.is_none());
}

/// OTS's plain port (8088) behind takgate: no TLS, but the same framing, validation, control
/// filter and metrics as the TLS modes; OTS sees each connection as its own.
#[tokio::test(flavor = "multi_thread")]
async fn plain_mode_frames_and_checks_cot_over_plain_tcp() {
    let s = setup("plain", "").await;
    let mut client = within(TcpStream::connect(s.proxy.stream("cot")))
        .await
        .unwrap();
    let forged = event(
        "t-x-takp-r",
        "<TakControl><TakResponse status=\"true\"/></TakControl>",
    );
    let mut sent = b"<event><point></event>".to_vec();
    sent.extend_from_slice(&forged);
    sent.extend_from_slice(SPOT);
    sent.extend_from_slice(b"<!DOCTYPE x [<!ENTITY a \"b\">]>");
    sent.extend_from_slice(PING);
    for chunk in sent.chunks(100) {
        within(client.write_all(chunk)).await.unwrap();
    }
    // Only the well-formed events reach OTS, whole and in order.
    let mut upstream = s.up.accept().await;
    let mut want = SPOT.to_vec();
    want.extend_from_slice(PING);
    assert_eq!(read_n(&mut upstream, want.len()).await, want);
    within(upstream.write_all(PING)).await.unwrap();
    assert_eq!(read_n(&mut client, PING.len()).await, PING);
    for kind in ["malformed", "forged_control", "doctype"] {
        s.proxy
            .wait_metric(
                "takgate_cot_frame_errors_total",
                &[("direction", "to_upstream"), ("kind", kind)],
                1.0,
            )
            .await;
    }
    assert_eq!(
        s.proxy.metric(
            "takgate_stream_connections_total",
            &[("listener", "cot"), ("mode", "plain")]
        ),
        1.0
    );
    assert_eq!(
        s.proxy.metric(
            "takgate_cot_frames_total",
            &[("listener", "cot"), ("direction", "to_upstream")]
        ),
        2.0
    );
    drop(client);
    assert!(
        closed(&mut upstream).await,
        "the client's close reaches OTS"
    );
}

/// `n` distinct position reports from `eud`, each about 300 bytes.
fn reports(eud: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "<event version=\"2.0\" uid=\"{eud}\" type=\"a-f-G-U-C\" how=\"m-g\" \
                 time=\"2026-11-26T10:00:00Z\" start=\"2026-11-26T10:00:00Z\" \
                 stale=\"2026-11-26T10:01:00Z\"><point lat=\"{i}\" lon=\"0\" hae=\"0\" ce=\"1\" \
                 le=\"1\"/><detail><contact callsign=\"{eud}\"/></detail></event>"
            )
            .into_bytes()
        })
        .collect()
}

/// Counts the events arriving on `upstream` until `n` have, or `limit` passes.
async fn count_events(upstream: &mut TcpStream, n: usize, limit: Duration) -> usize {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    while memchr_count(&got) < n {
        match tokio::time::timeout_at(deadline, upstream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
        }
    }
    memchr_count(&got)
}

fn memchr_count(bytes: &[u8]) -> usize {
    bytes.windows(8).filter(|w| w == b"</event>").count()
}

/// A device sending as fast as it can is held to its rate: under `drop` the excess is dropped
/// and counted, exactly; another device's events flow meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_client_is_held_to_its_rate_and_the_excess_dropped() {
    let s = setup(
        "terminate",
        "[stream.limits]\nevents_per_second = 10\nevents_burst = 20\non_limit = \"drop\"\n",
    )
    .await;
    let addr = s.proxy.stream("cot");
    let flooder = s.pki.issue_client("flooder");
    let mut flood = tls_connect(addr, &s.pki, Some(&flooder)).await.unwrap();
    let started = tokio::time::Instant::now();
    let sent: Vec<u8> = reports("flooder", 500).concat();
    within(flood.write_all(&sent)).await.unwrap();
    let mut flood_up = s.up.accept().await;
    // The control: a normal device's report arrives at once, beside the flood.
    let normal = s.pki.issue_client("normal");
    let mut client = tls_connect(addr, &s.pki, Some(&normal)).await.unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut normal_up = s.up.accept().await;
    assert_eq!(read_n(&mut normal_up, PING.len()).await, PING);
    // Every report is accounted for: relayed or dropped.
    within(async {
        while s.proxy.metric(
            "takgate_stream_rate_limited_total",
            &[("action", "dropped")],
        ) + s
            .proxy
            .metric("takgate_cot_frames_total", &[("class", "a-f")])
            < 500.0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let delivered = count_events(&mut flood_up, 500, Duration::from_millis(300)).await;
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, and the rate over the time it took (plus one for the edge).
    assert!(delivered >= 20, "the burst passes: {delivered}");
    assert!(
        (delivered as f64) <= 20.0 + 10.0 * elapsed + 1.0,
        "{delivered} events in {elapsed:.2} s"
    );
    assert_eq!(
        s.proxy.metric(
            "takgate_stream_rate_limited_total",
            &[("action", "dropped")]
        ) as usize,
        500 - delivered
    );
}

/// Under `delay` (the default policy) nothing is lost: the client is read no faster than its
/// rate, so its sends slow down, and every event arrives in order.
#[tokio::test(flavor = "multi_thread")]
async fn under_delay_a_fast_client_is_slowed_and_loses_nothing() {
    let s = setup(
        "terminate",
        "read_buffer = \"1KiB\"\n[stream.limits]\nevents_per_second = 200\nevents_burst = 20\n",
    )
    .await;
    let eud = s.pki.issue_client("fast");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let events = reports("fast", 220);
    let started = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        client.write_all(&events.concat()).await.unwrap();
        client
    });
    let mut upstream = s.up.accept().await;
    let all = reports("fast", 220).concat();
    assert_eq!(read_n(&mut upstream, all.len()).await, all);
    // 200 past the burst at 200 a second: about a second (less one read batch).
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert!(
        s.proxy.metric(
            "takgate_stream_rate_limited_total",
            &[("action", "delayed")]
        ) > 0.0
    );
    assert_eq!(s.proxy.metric("takgate_cot_frame_errors_total", &[]), 0.0);
    drop(within(writer).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn under_close_a_client_past_its_rate_is_closed() {
    let s = setup(
        "terminate",
        "[stream.limits]\nevents_per_second = 5\nevents_burst = 5\non_limit = \"close\"\n",
    )
    .await;
    let eud = s.pki.issue_client("flooder");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let _ = within(client.write_all(&reports("flooder", 50).concat())).await;
    assert!(closed(&mut client).await);
    s.proxy
        .wait_metric(
            "takgate_stream_sessions_closed_total",
            &[("reason", "rate_limited")],
            1.0,
        )
        .await;
    assert_eq!(
        s.proxy
            .metric("takgate_stream_rate_limited_total", &[("action", "closed")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cn_at_its_session_limit_is_refused_until_one_ends() {
    let s = setup("terminate", "[stream.limits]\nsessions_per_cn = 2\n").await;
    let addr = s.proxy.stream("cot");
    let eud = s.pki.issue_client("alice");
    let mut first = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    let mut second = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    for c in [&mut first, &mut second] {
        within(c.write_all(PING)).await.unwrap();
        let mut up = s.up.accept().await;
        assert_eq!(read_n(&mut up, PING.len()).await, PING);
    }
    // A third session for alice.
    assert_refused(&s.proxy, addr, &s.pki, &eud, "cn_session_limit", 1.0).await;
    // Another CN is not affected; and once one of alice's sessions ends, she gets in again.
    let bob = s.pki.issue_client("bob");
    let mut b = tls_connect(addr, &s.pki, Some(&bob)).await.unwrap();
    within(b.write_all(PING)).await.unwrap();
    let mut up = s.up.accept().await;
    assert_eq!(read_n(&mut up, PING.len()).await, PING);
    drop(first);
    s.proxy
        .wait_metric(
            "takgate_stream_connections_open",
            &[("listener", "cot")],
            2.0,
        )
        .await;
    let mut again = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(again.write_all(PING)).await.unwrap();
    let mut up = s.up.accept().await;
    assert_eq!(read_n(&mut up, PING.len()).await, PING);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_per_cn_zero_is_no_limit() {
    let s = setup("terminate", "[stream.limits]\nsessions_per_cn = 0\n").await;
    let eud = s.pki.issue_client("alice");
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut c = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
            .await
            .unwrap();
        within(c.write_all(PING)).await.unwrap();
        let mut up = s.up.accept().await;
        assert_eq!(read_n(&mut up, PING.len()).await, PING);
        held.push((c, up));
    }
    assert_eq!(
        s.proxy.metric(
            "takgate_stream_refused_total",
            &[("reason", "cn_session_limit")]
        ),
        0.0
    );
}
