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

/// A certificate read that blocks (here a FIFO renamed over the certificate, read by the 2 s
/// file poll) stalls the reload only: takgate, alone on a single-threaded runtime, goes on
/// answering requests and `/readyz`, because files are read on the blocking pool. Then the
/// FIFO delivers the certificate and the reload completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_certificate_read_stalls_no_request() {
    use std::io::Write;
    use takgate_tests::process::metric_value;

    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    let tls = format!(
        "[[http]]\nname = \"web-tls\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\n\
         ui_root = \"/nonexistent-ui\"\n[http.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let toml = web_config(&up.url(), &tls);

    // takgate on a current_thread runtime of its own thread: one worker, which a read on it
    // would stall. The test's own runtime stays free to time out.
    let (addrs_tx, addrs_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let takgate = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let proxy = TestProxy::start(&toml).await;
            let _ = addrs_tx.send(proxy.addrs.clone());
            let _ = stop_rx.await;
        });
        // A read still blocked must not hold the thread's exit up.
        rt.shutdown_timeout(Duration::from_secs(1));
    });
    let addrs = within(addrs_rx).await.unwrap();
    let (web, admin) = (addrs.http["web"], addrs.admin);
    let reloads_ok = || async move {
        let text = get(admin, "/metrics", &[]).await.text();
        metric_value(
            &text,
            "takgate_tls_reloads_total",
            &[("listener", "web-tls"), ("result", "ok")],
        )
    };
    let before = reloads_ok().await;

    // The FIFO in the certificate's place. Opening its writing end returns once a reader (the
    // reload) has opened it; the reader then blocks in read() until the test writes.
    let fifo = dir.path().join("fifo.pem");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    std::fs::rename(&fifo, &cert).unwrap();
    let writer = {
        let fifo = cert.clone();
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(fifo))
    };
    let mut writer = match tokio::time::timeout(Duration::from_secs(10), writer).await {
        Ok(opened) => opened.unwrap().unwrap(),
        Err(_) => {
            // Let the blocked open return, so the runtime can end, then fail.
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&cert);
            panic!("the file poll never opened the certificate");
        }
    };

    // The reload is stuck in read(); requests, handshakes and readiness are not.
    for path in ["/api/one", "/api/two"] {
        assert_eq!(get(web, path, &[]).await.status, 200);
    }
    assert_eq!(
        served_cert(addrs.http["web-tls"], &pki).await.as_deref(),
        Some(&pki.server_der[..]),
        "handshakes go on with the certificate in force"
    );
    let ready = get(admin, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    // A regular file back in place for the next polls, then the certificate through the FIFO:
    // the stuck reload completes.
    std::fs::copy(&pki.server_cert, dir.path().join("next.pem")).unwrap();
    std::fs::rename(dir.path().join("next.pem"), &cert).unwrap();
    writer
        .write_all(&std::fs::read(&pki.server_cert).unwrap())
        .unwrap();
    drop(writer);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reloads_ok().await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    tokio::task::spawn_blocking(move || takgate.join().unwrap())
        .await
        .unwrap();
}
