//! The nginx server blocks OTS ships, reproduced by profile: routes, the Host each location
//! sends, X-Ssl-Cert from mutual TLS, the 80 → https redirect, and TLS reload.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use takgate_tests::certs::{other_ca_client, server_name, TestPki};
use takgate_tests::client::{get, send_tls, within, Got};
use takgate_tests::proxy::{base_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::net::TcpStream;

fn config(upstream: &str, pki: &TestPki) -> String {
    let tls = |auth: &str| {
        format!(
            "[http.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_auth = \"{auth}\"\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca_pem.display()
        )
    };
    format!(
        r#"{base}
[[http]]
name = "web"
listen = "127.0.0.1:0"
profile = "web"
ui_root = "/nonexistent-ui"

[[http]]
name = "web-tls"
listen = "127.0.0.1:0"
profile = "web"
ui_root = "/nonexistent-ui"
{web_tls}
[[http]]
name = "marti"
listen = "127.0.0.1:0"
profile = "marti"
ui_root = "/nonexistent-ui"
{marti_tls}
[[http]]
name = "enroll"
listen = "127.0.0.1:0"
profile = "enroll"
ui_root = "/nonexistent-ui"
{enroll_tls}
[[http]]
name = "redirect"
listen = "127.0.0.1:0"
profile = "redirect"
"#,
        base = base_config(upstream),
        web_tls = tls("none"),
        marti_tls = tls("required"),
        enroll_tls = tls("none"),
    )
}

fn req(path: &str, host: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).unwrap()
}

struct Setup {
    up: FakeUpstream,
    pki: TestPki,
    proxy: TestProxy,
}

async fn setup() -> Setup {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let proxy = TestProxy::start(&config(&up.url(), &pki)).await;
    Setup { up, pki, proxy }
}

impl Setup {
    async fn tls(
        &self,
        listener: &str,
        client: Option<&takgate_tests::certs::IssuedCert>,
        r: Request<Full<Bytes>>,
    ) -> std::io::Result<Got> {
        send_tls(self.proxy.http(listener), self.pki.client_config(client), r).await
    }

    /// Sends and returns the status and, if the upstream got the request, its Host.
    async fn host_seen(&self, listener: &str, path: &str, host: &str) -> (u16, Option<String>) {
        let before = self.up.seen().len();
        let client = self.pki.issue_client("eud1");
        let got = self
            .tls(listener, Some(&client), req(path, host, &[]))
            .await
            .unwrap();
        let seen = self.up.seen();
        let host = (seen.len() > before).then(|| {
            seen.last().unwrap().headers["host"]
                .to_str()
                .unwrap()
                .to_owned()
        });
        (got.status.as_u16(), host)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn marti_listener_forwards_the_verified_certificate_like_nginx() {
    let s = setup().await;
    let client = s.pki.issue_client("eud1");
    let got = s
        .tls(
            "marti",
            Some(&client),
            req(
                "/Marti/api/groups/all",
                "localhost:8443",
                &[("x-ssl-cert", "spoofed")],
            ),
        )
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let seen = s.up.last();
    let header = seen.headers["x-ssl-cert"].to_str().unwrap();
    assert_eq!(header, takgate::http::client_cert::escaped_pem(&client.der));
    assert!(header.starts_with("-----BEGIN%20CERTIFICATE-----%0A"));
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn marti_listener_refuses_clients_without_a_trusted_certificate() {
    let s = setup().await;
    assert!(s
        .tls(
            "marti",
            None,
            req("/Marti/api/version/config", "localhost", &[])
        )
        .await
        .is_err());
    let stranger = other_ca_client("eud1");
    assert!(s
        .tls(
            "marti",
            Some(&stranger),
            req("/Marti/api/version/config", "localhost", &[])
        )
        .await
        .is_err());
    assert!(s.up.seen().is_empty());
    s.proxy
        .wait_metric(
            "takgate_http_connection_errors_total",
            &[("listener", "marti"), ("kind", "tls_handshake")],
            2.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_profile_routes_and_sets_host_as_its_nginx_block() {
    let s = setup().await;
    // ots_https 8443: Marti with Host as sent, /api with :8443, /files with :443, no enrollment.
    assert_eq!(
        s.host_seen("marti", "/Marti/api/version/config", "tak.example")
            .await,
        (200, Some("tak.example".into()))
    );
    assert_eq!(
        s.host_seen("marti", "/api/packages/x", "tak.example").await,
        (200, Some("tak.example:8443".into()))
    );
    assert_eq!(
        s.host_seen("marti", "/api/packages/x", "tak.example:31443")
            .await,
        (200, Some("tak.example:31443".into())),
        "a Host that names its port (a NodePort) is the one the client can reach"
    );
    assert_eq!(
        s.host_seen("marti", "/files/api/config", "tak.example")
            .await,
        (200, Some("tak.example:443".into()))
    );
    assert_eq!(
        s.host_seen("marti", "/Marti/api/tls/config", "t").await,
        (404, None)
    );
    assert_eq!(s.host_seen("marti", "/socket.io/", "t").await.1, None);
    // ots_certificate_enrollment 8446: only /Marti/api/tls and /oauth.
    assert_eq!(
        s.host_seen("enroll", "/Marti/api/tls/config", "tak.example:8446")
            .await,
        (200, Some("tak.example:8446".into()))
    );
    assert_eq!(
        s.host_seen("enroll", "/oauth/token", "tak.example").await,
        (200, Some("tak.example:443".into()))
    );
    assert_eq!(s.host_seen("enroll", "/api/login", "t").await.1, None);
    assert_eq!(
        s.host_seen("enroll", "/Marti/api/version/config", "t")
            .await
            .1,
        None
    );
    // ots_https 443: no Marti, /api with :443, Socket.IO with Host as sent.
    assert_eq!(
        s.host_seen("web-tls", "/Marti/api/version/config", "t")
            .await,
        (404, None)
    );
    assert_eq!(
        s.host_seen("web-tls", "/api/login", "tak.example").await,
        (200, Some("tak.example:443".into()))
    );
    assert_eq!(
        s.host_seen(
            "web-tls",
            "/socket.io/?EIO=4&transport=polling",
            "tak.example"
        )
        .await,
        (200, Some("tak.example".into()))
    );
    // ots_http 8080: Marti open (as OTS ships it), Host as sent.
    let before = s.up.seen().len();
    let got = get(s.proxy.http("web"), "/Marti/api/version/config", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(s.up.seen().len(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn web_tls_listener_sends_no_certificate_and_drops_a_spoofed_one() {
    let s = setup().await;
    let got = s
        .tls(
            "web-tls",
            None,
            req("/api/me", "tak.example", &[("x-ssl-cert", "spoofed")]),
        )
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let seen = s.up.last();
    assert!(!seen.headers.contains_key("x-ssl-cert"));
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn port_80_redirects_to_https() {
    let s = setup().await;
    let got = get(
        s.proxy.http("redirect"),
        "/map?layer=1",
        &[("host", "tak.example:80")],
    )
    .await;
    assert_eq!(got.status, 301);
    assert_eq!(
        got.header("location"),
        Some("https://tak.example/map?layer=1")
    );
    assert!(s.up.seen().is_empty());
}

/// The server certificate a fresh TLS connection to `addr` sees.
async fn served_cert(addr: std::net::SocketAddr, pki: &TestPki) -> Vec<u8> {
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let tls = within(
        tokio_rustls::TlsConnector::from(pki.client_config(None)).connect(server_name(), tcp),
    )
    .await
    .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_swaps_certificates_without_dropping_connections() {
    let s = setup().await;
    let addr = s.proxy.http("web-tls");
    assert_eq!(served_cert(addr, &s.pki).await, s.pki.server_der.to_vec());
    // A keep-alive connection opened before the reload.
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let tls = within(
        tokio_rustls::TlsConnector::from(s.pki.client_config(None)).connect(server_name(), tcp),
    )
    .await
    .unwrap();
    let (mut sender, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(tls)))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = within(sender.send_request(req("/api/a", "t", &[])))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);

    let renewed = s.pki.issue_server(&["localhost", "127.0.0.1"]);
    std::fs::copy(&renewed.cert, &s.pki.server_cert).unwrap();
    std::fs::copy(&renewed.key, &s.pki.server_key).unwrap();
    within(s.proxy.app.reload_tls()).await.unwrap();

    assert_eq!(served_cert(addr, &s.pki).await, renewed.der.to_vec());
    within(sender.ready()).await.unwrap();
    let resp = within(sender.send_request(req("/api/b", "t", &[])))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the old connection still works after the reload"
    );
    // At least one: the file watcher may also have seen the change.
    assert!(
        s.proxy.metric(
            "takgate_tls_reloads_total",
            &[("listener", "web-tls"), ("result", "ok")]
        ) >= 1.0
    );

    // Broken files: the reload fails, is counted, and the previous certificate stays.
    std::fs::write(&s.pki.server_key, "not a key").unwrap();
    within(s.proxy.app.reload_tls()).await.unwrap();
    assert_eq!(served_cert(addr, &s.pki).await, renewed.der.to_vec());
    // At least one: the file watcher may also have seen the change.
    assert!(
        s.proxy.metric(
            "takgate_tls_reloads_total",
            &[("listener", "web-tls"), ("result", "error")]
        ) >= 1.0
    );
}
