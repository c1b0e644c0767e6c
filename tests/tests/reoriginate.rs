//! The reoriginate mode end to end: TLS clients with certificates on one side, a fake of OTS's
//! own SSL CoT listener on the other (client certificates required against OTS's CA, as
//! `eud_handler --ssl` does), takgate between them issuing a certificate per user.

use std::sync::Arc;

use takgate_tests::certs::{other_ca_client, IssuedCert, TestPki};
use takgate_tests::client::within;
use takgate_tests::cot::{
    assert_refused, closed, read_n, stream_config, tls_connect, TlsCotUpstream, PING, SPOT,
};
use takgate_tests::proxy::{base_config, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    /// OTS's CA: issues the devices' certificates and OTS's server certificate.
    pki: TestPki,
    ots: Arc<TlsCotUpstream>,
    proxy: TestProxy,
}

/// takgate in reoriginate mode in front of a fake OTS SSL listener whose server certificate is
/// `server` (default: OTS's own kind, CN `opentakserver` and no SAN, from OTS's CA).
async fn setup_with(
    pki: TestPki,
    server: Option<(&TestPki, IssuedCert)>,
    extra: &str,
    head: &str,
    tls_extra: &str,
) -> Setup {
    let ots = match server {
        Some((server_pki, cert)) => TlsCotUpstream::start(server_pki, &cert, &pki).await,
        None => TlsCotUpstream::start(&pki, &pki.issue_ots_server("opentakserver"), &pki).await,
    };
    let key = pki.write_ca_key();
    let reoriginate = format!(
        "[stream.reoriginate]\nca = \"{}\"\nsigner_key = \"{}\"\n",
        pki.ca_pem.display(),
        key.display()
    );
    let config = format!(
        "{}\n{}{tls_extra}",
        base_config(head),
        stream_config("cot", ots.addr, "reoriginate", &pki, extra)
            .replace("[stream.tls]", &format!("{reoriginate}[stream.tls]"))
    );
    let proxy = TestProxy::start(&config).await;
    Setup { pki, ots, proxy }
}

async fn setup() -> Setup {
    setup_with(TestPki::new(), None, "", "http://127.0.0.1:1", "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn ots_sees_the_clients_own_cn_and_cot_flows_both_ways() {
    let s = setup().await;
    let addr = s.proxy.stream("cot");
    // An ordinary CN, and one with every character a DN string can make trouble with.
    for cn in ["alice", "Ålice Øster, O=evil+CN=admin \"東京\" \\ #1"] {
        let eud = s.pki.issue_client(cn);
        let mut client = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
        within(client.write_all(SPOT)).await.unwrap();
        let mut at_ots = s.ots.accept().await;
        assert_eq!(at_ots.cn().as_deref(), Some(cn), "OTS reads the same user");
        assert_eq!(
            at_ots.chain.len(),
            1,
            "signed by OTS's CA itself: the leaf alone"
        );
        assert_ne!(
            at_ots.chain[0], eud.der,
            "takgate's own certificate, not the device's"
        );
        assert_eq!(read_n(&mut at_ots.stream, SPOT.len()).await, SPOT);
        within(at_ots.stream.write_all(PING)).await.unwrap();
        assert_eq!(read_n(&mut client, PING.len()).await, PING);
    }
    assert_eq!(
        s.proxy
            .metric("takgate_stream_certs_issued_total", &[("listener", "cot")]),
        2.0
    );
    assert_eq!(
        s.proxy
            .metric("takgate_stream_certs_cached", &[("listener", "cot")]),
        2.0
    );
    // The signer's expiry is published (the test CA is rcgen's default: valid until 4096).
    assert!(
        s.proxy.metric(
            "takgate_stream_signer_expiry_timestamp_seconds",
            &[("listener", "cot")]
        ) > 4.0e9
    );
    assert_eq!(
        s.proxy.metric(
            "takgate_stream_connections_total",
            &[("listener", "cot"), ("mode", "reoriginate")]
        ),
        2.0
    );
    assert_eq!(
        s.proxy
            .metric("takgate_cot_relay_latency_seconds", &[("listener", "cot")]),
        2.0
    );

    // alice again: her certificate comes from the cache (no second issue).
    let eud = s.pki.issue_client("alice");
    let mut first = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(first.write_all(PING)).await.unwrap();
    let a = s.ots.accept().await;
    let mut second = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(second.write_all(PING)).await.unwrap();
    let b = s.ots.accept().await;
    assert_eq!(a.chain[0], b.chain[0], "one certificate per CN, reused");
    assert_eq!(
        s.proxy
            .metric("takgate_stream_certs_issued_total", &[("listener", "cot")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_close_reaches_ots_and_ots_close_reaches_the_client() {
    let s = setup().await;
    let addr = s.proxy.stream("cot");
    let eud = s.pki.issue_client("alice");
    let mut client = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    assert_eq!(read_n(&mut at_ots.stream, PING.len()).await, PING);
    // The device goes away: OTS sees its session end (and marks the EUD disconnected).
    drop(client);
    assert!(
        closed(&mut at_ots.stream).await,
        "the client's close reaches OTS"
    );
    s.proxy
        .wait_metric(
            "takgate_stream_connections_open",
            &[("listener", "cot")],
            0.0,
        )
        .await;

    // OTS closes a session (as it does for a user it does not know): the device sees the end.
    let mut client = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    assert_eq!(read_n(&mut at_ots.stream, PING.len()).await, PING);
    within(at_ots.stream.shutdown()).await.unwrap();
    drop(at_ots);
    assert!(closed(&mut client).await, "OTS's close reaches the client");

    // OTS's own listener (Python's ssl) closes without a close_notify: that is its ordinary
    // close, passed on to the client as a clean one (a close_notify: the read says 0, not an
    // error) and counted as `closed`, not as an upstream error.
    let before = s.proxy.metric(
        "takgate_stream_sessions_closed_total",
        &[("listener", "cot"), ("reason", "closed")],
    );
    let mut client = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    assert_eq!(read_n(&mut at_ots.stream, PING.len()).await, PING);
    let (tcp, _) = at_ots.stream.into_inner();
    drop(tcp);
    let mut buf = [0u8; 16];
    assert_eq!(
        within(client.read(&mut buf)).await.unwrap(),
        0,
        "a clean close"
    );
    within(client.shutdown()).await.unwrap();
    s.proxy
        .wait_metric(
            "takgate_stream_sessions_closed_total",
            &[("listener", "cot"), ("reason", "closed")],
            before + 1.0,
        )
        .await;
    assert_eq!(
        s.proxy.metric(
            "takgate_stream_sessions_closed_total",
            &[("reason", "upstream_error")]
        ),
        0.0
    );
}

/// OTS relays what a client writes to every other client; a client-sent protocol grant would
/// switch another session that waits for OTS's answer. Server-only control messages from a
/// client never reach OTS; a client's own request does.
#[tokio::test(flavor = "multi_thread")]
async fn server_only_negotiation_messages_from_a_client_never_reach_ots() {
    let event = |cot_type: &str, detail: &str| {
        format!(
            "<event version=\"2.0\" uid=\"x-1\" type=\"{cot_type}\" how=\"m-g\" \
             time=\"2026-11-26T10:00:00Z\" start=\"2026-11-26T10:00:00Z\" stale=\"2026-11-26T10:01:00Z\">\
             <point lat=\"0\" lon=\"0\" hae=\"0\" ce=\"9999999\" le=\"9999999\"/><detail>{detail}</detail></event>"
        )
        .into_bytes()
    };
    let grant = event(
        "t-x-takp-r",
        "<TakControl><TakResponse status=\"true\"/></TakControl>",
    );
    let support = event(
        "t-x-takp-v",
        "<TakControl><TakProtocolSupport version=\"1\"/></TakControl>",
    );
    let request = event(
        "t-x-takp-q",
        "<TakControl><TakRequest version=\"1\"/></TakControl>",
    );
    let s = setup().await;
    let eud = s.pki.issue_client("mallory");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let mut sent = Vec::new();
    for frame in [&grant, &support, &SPOT.to_vec(), &request] {
        sent.extend_from_slice(frame);
    }
    within(client.write_all(&sent)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    // What OTS gets: the position report and the request, in order, and nothing else.
    let mut want = SPOT.to_vec();
    want.extend_from_slice(&request);
    assert_eq!(read_n(&mut at_ots.stream, want.len()).await, want);
    assert_eq!(
        s.proxy.metric(
            "takgate_cot_frame_errors_total",
            &[("direction", "to_upstream"), ("kind", "forged_control")]
        ),
        2.0
    );
    // The session goes on.
    within(client.write_all(PING)).await.unwrap();
    assert_eq!(read_n(&mut at_ots.stream, PING.len()).await, PING);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_is_not_ots_is_refused() {
    // A server certificate from another CA, and a device certificate (clientAuth only) from
    // OTS's own CA: neither is OTS's server.
    let pki = TestPki::new();
    let other = TestPki::named("impostor CA");
    let impostor = other.issue_ots_server("opentakserver");
    let s = setup_with(pki, Some((&other, impostor)), "", "http://127.0.0.1:1", "").await;
    refused_at_upstream_tls(&s).await;
    assert_eq!(
        s.proxy.metric(
            "takgate_stream_upstream_connect_failures_total",
            &[("listener", "cot")]
        ),
        1.0
    );

    let pki = TestPki::new();
    let device = pki.issue_client("opentakserver");
    let s = setup_with_server(pki, device).await;
    refused_at_upstream_tls(&s).await;
    // The control: the same takgate setup with OTS's real server certificate gets through.
    let s = setup().await;
    let eud = s.pki.issue_client("alice");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    assert_eq!(read_n(&mut at_ots.stream, PING.len()).await, PING);
}

/// A client of `s` is closed because the upstream's TLS failed, and that is counted.
async fn refused_at_upstream_tls(s: &Setup) {
    let eud = s.pki.issue_client("alice");
    assert_refused(
        &s.proxy,
        s.proxy.stream("cot"),
        &s.pki,
        &eud,
        "upstream_tls",
        1.0,
    )
    .await;
}

/// A fake OTS serving `cert` of `pki` itself.
async fn setup_with_server(pki: TestPki, cert: IssuedCert) -> Setup {
    let ots = TlsCotUpstream::start(&pki, &cert, &pki).await;
    let key = pki.write_ca_key();
    let config = format!(
        "{}\n{}",
        base_config("http://127.0.0.1:1"),
        stream_config("cot", ots.addr, "reoriginate", &pki, "").replace(
            "[stream.tls]",
            &format!(
                "[stream.reoriginate]\nca = \"{}\"\nsigner_key = \"{}\"\n[stream.tls]",
                pki.ca_pem.display(),
                key.display()
            )
        )
    );
    let proxy = TestProxy::start(&config).await;
    Setup { pki, ots, proxy }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_exactly_one_cn_or_from_another_ca_never_reach_ots() {
    let s = setup().await;
    let addr = s.proxy.stream("cot");
    let no_cn = s.pki.issue_client_with("x", |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
    });
    let empty_cn = s.pki.issue_client("");
    let stranger = other_ca_client("alice");
    for (cert, reason, count) in [
        (&no_cn, "no_cn", 1.0),
        (&empty_cn, "no_cn", 2.0),
        (&stranger, "unknown_ca", 1.0),
    ] {
        assert_refused(&s.proxy, addr, &s.pki, cert, reason, count).await;
    }
    // The control: a good client in the same run does reach OTS, and is the first to.
    let eud = s.pki.issue_client("alice");
    let mut client = tls_connect(addr, &s.pki, Some(&eud)).await.unwrap();
    within(client.write_all(PING)).await.unwrap();
    let at_ots = s.ots.accept().await;
    assert_eq!(at_ots.cn().as_deref(), Some("alice"));
    assert!(s.ots.try_accept().await.is_none());
    assert_eq!(
        s.proxy
            .metric("takgate_stream_certs_issued_total", &[("listener", "cot")]),
        1.0,
        "nothing was issued for the refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deactivated_user_is_refused_and_cut_off_mid_session() {
    let api = takgate_tests::upstream::FakeUpstream::start().await;
    api.set_users(&[("alice", true), ("bob", false)]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "admin-token\n").unwrap();
    let identity = format!(
        "[stream.identity]\ntoken_file = \"{}\"\nrefresh = \"1s\"\n",
        token.display()
    );
    let s = setup_with(TestPki::new(), None, &identity, &api.url(), "").await;
    let addr = s.proxy.stream("cot");
    let bob = s.pki.issue_client("bob");
    assert_refused(&s.proxy, addr, &s.pki, &bob, "inactive_user", 1.0).await;
    let alice = s.pki.issue_client("alice");
    let mut client = tls_connect(addr, &s.pki, Some(&alice)).await.unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    assert_eq!(read_n(&mut at_ots.stream, PING.len()).await, PING);
    api.set_users(&[("alice", false), ("bob", false)]);
    assert!(closed(&mut client).await, "alice's session must end");
    assert!(closed(&mut at_ots.stream).await, "and OTS sees it end");
    s.proxy
        .wait_metric(
            "takgate_stream_sessions_closed_total",
            &[("reason", "user_inactive")],
            1.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_frame_or_a_dtd_never_reaches_ots() {
    let s = setup().await;
    let eud = s.pki.issue_client("alice");
    let mut client = tls_connect(s.proxy.stream("cot"), &s.pki, Some(&eud))
        .await
        .unwrap();
    let mut sent = Vec::new();
    sent.extend_from_slice(b"<event><point></event>");
    sent.extend_from_slice(SPOT);
    within(client.write_all(&sent)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    assert_eq!(read_n(&mut at_ots.stream, SPOT.len()).await, SPOT);
    // Under `drop` a DOCTYPE is refused and skipped up to the next `<event`.
    within(client.write_all(b"<!DOCTYPE x [<!ENTITY a \"b\">]><event/>"))
        .await
        .unwrap();
    within(client.write_all(PING)).await.unwrap();
    let mut want = b"<event/>".to_vec();
    want.extend_from_slice(PING);
    assert_eq!(read_n(&mut at_ots.stream, want.len()).await, want);
    for kind in ["doctype", "malformed"] {
        s.proxy
            .wait_metric(
                "takgate_cot_frame_errors_total",
                &[("direction", "to_upstream"), ("kind", kind)],
                1.0,
            )
            .await;
    }
}

/// `takgate check` (and startup) stops on a signer key it cannot use, naming the key, and never
/// prints the password; with the right password (from a file, or OTS's own variable) it passes.
#[test]
fn a_wrong_or_missing_ca_password_stops_check_naming_the_key() {
    let pki = TestPki::new();
    let plain = pki.write_ca_key();
    let dir = pki.dir.path();
    std::fs::write(dir.join("pw"), "s3cret-ca-pass\n").unwrap();
    std::fs::write(dir.join("wrong"), "not-it\n").unwrap();
    // Encrypted as OTS's own `openssl req -passout` writes its CA key (PKCS#8, PBES2).
    let status = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "file:pw",
            "-in",
        ])
        .arg(&plain)
        .args(["-out", "ca-do-not-share.key"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let config = |password: &str| {
        let text = format!(
            "{}\n{}",
            base_config("http://127.0.0.1:1"),
            stream_config(
                "cot",
                "127.0.0.1:9".parse().unwrap(),
                "reoriginate",
                &pki,
                ""
            )
            .replace(
                "[stream.tls]",
                &format!(
                    "[stream.reoriginate]\nca = \"{}\"\n{password}\n[stream.tls]",
                    pki.ca_pem.display()
                )
            )
        );
        let path = dir.join("takgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let check = |path: &std::path::Path, env: Option<&str>| {
        let mut cmd = std::process::Command::new(takgate_tests::process::takgate_bin());
        cmd.arg("check").arg("-c").arg(path);
        cmd.env_remove("OTS_CA_PASSWORD");
        if let Some(v) = env {
            cmd.env("OTS_CA_PASSWORD", v);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains("s3cret-ca-pass") && !text.contains("not-it"),
            "{text}"
        );
        (out.status.success(), text)
    };
    let (ok, text) = check(&config("signer_key_password_file = \"wrong\""), None);
    assert!(!ok);
    assert!(
        text.contains("stream[0].reoriginate.signer_key") && text.contains("wrong password"),
        "{text}"
    );
    let (ok, text) = check(&config(""), None);
    assert!(!ok);
    assert!(text.contains("is encrypted and no password"), "{text}");
    let (ok, text) = check(&config("signer_key_password_file = \"nowhere\""), None);
    assert!(!ok);
    assert!(
        text.contains("stream[0].reoriginate.signer_key_password_file"),
        "{text}"
    );
    // The controls: the right password from a file, or from OTS's own variable.
    let (ok, text) = check(&config("signer_key_password_file = \"pw\""), None);
    assert!(ok, "{text}");
    assert!(
        text.contains("mode=reoriginate") && text.contains("signer_loaded=true"),
        "{text}"
    );
    assert!(text.contains("memory    stream_budget=128.0 MiB"), "{text}");
    let (ok, text) = check(&config(""), Some("s3cret-ca-pass"));
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_certificate_is_refused_before_anything_reaches_ots() {
    let pki = TestPki::new();
    let revoked = pki.issue_client("alice");
    let good = pki.issue_client("carol");
    let crl = pki.revoke(&revoked);
    let s = setup_with(
        pki,
        None,
        "",
        "http://127.0.0.1:1",
        &format!("crl = \"{}\"\n", crl.display()),
    )
    .await;
    let addr = s.proxy.stream("cot");
    assert_refused(&s.proxy, addr, &s.pki, &revoked, "revoked", 1.0).await;
    // The control: a certificate the list does not name gets through, and is the first at OTS.
    let mut ok = tls_connect(addr, &s.pki, Some(&good)).await.unwrap();
    within(ok.write_all(PING)).await.unwrap();
    let mut at_ots = s.ots.accept().await;
    assert_eq!(at_ots.cn().as_deref(), Some("carol"));
    assert_eq!(read_n(&mut at_ots.stream, PING.len()).await, PING);
    assert!(s.ots.try_accept().await.is_none());
}
