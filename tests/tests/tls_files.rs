//! TLS files that appear or change after startup: OTS creates its CA on first start, possibly
//! after takgate, and certificates rotate. No restart, no SIGHUP needed.

use std::time::Duration;

use takgate_tests::certs::{server_name, TestPki};
use takgate_tests::client::{get, within};
use takgate_tests::proxy::{web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::net::TcpStream;

async fn served_cert(addr: std::net::SocketAddr, pki: &TestPki) -> Option<Vec<u8>> {
    let tcp = within(TcpStream::connect(addr)).await.ok()?;
    let tls = within(
        tokio_rustls::TlsConnector::from(pki.client_config(None)).connect(server_name(), tcp),
    )
    .await
    .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

/// Polls (bounded) until the listener serves `want`.
async fn until_served(addr: std::net::SocketAddr, pki: &TestPki, want: &[u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_cert(addr, pki).await.as_deref() != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_waits_for_its_files_then_serves_and_follows_rotation() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let tls = format!(
        r#"[[http]]
name = "web-tls"
listen = "127.0.0.1:0"
profile = "web"
ui_root = "/nonexistent-ui"
[http.tls]
cert = "{}"
key = "{}"
"#,
        cert.display(),
        key.display()
    );
    let proxy = TestProxy::start(&web_config(&up.url(), &tls)).await;
    let addr = proxy.http("web-tls");

    // No files yet: handshakes are refused, the plain listener works, readiness says why.
    assert!(served_cert(addr, &pki).await.is_none());
    proxy
        .wait_metric(
            "takgate_http_connection_errors_total",
            &[("listener", "web-tls"), ("kind", "tls_not_ready")],
            1.0,
        )
        .await;
    assert_eq!(get(proxy.http("web"), "/api/x", &[]).await.status, 200);
    let ready = get(proxy.addrs.admin, "/readyz", &[]).await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("server.pem"), "{}", ready.text());

    // OTS writes its certificate: served without a restart.
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    until_served(addr, &pki, &pki.server_der).await;
    assert_eq!(get(proxy.addrs.admin, "/readyz", &[]).await.status, 200);

    // Rotation on disk, no signal.
    let renewed = pki.issue_server(&["localhost", "127.0.0.1"]);
    std::fs::copy(&renewed.key, dir.path().join("new.key")).unwrap();
    std::fs::copy(&renewed.cert, dir.path().join("new.pem")).unwrap();
    // Renames are atomic: the watcher never sees a key and certificate that do not match.
    std::fs::rename(dir.path().join("new.key"), &key).unwrap();
    std::fs::rename(dir.path().join("new.pem"), &cert).unwrap();
    until_served(addr, &pki, &renewed.der).await;
}
