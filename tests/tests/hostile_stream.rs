//! Hostile TLS and CoT input (issue 7, point 2): plaintext, garbage and old-version ClientHellos,
//! certificates that are not good enough and stalled handshakes on the HTTPS marti listener and
//! a CoT stream listener; oversized, unterminated, mis-encoded, entity-laden, deeply nested and
//! junk CoT; a stream fed a byte at a time; and 10,000 connections held at once. Each is refused
//! and counted while another client's session keeps flowing.
//!
//! Certificate refusals already covered on the stream listener (no certificate, unknown CA,
//! expired, not yet valid, server-only key usage, revoked) are in `cot_gateway.rs`; on the HTTPS
//! listener, no certificate and unknown CA are in `profiles.rs`.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use takgate_tests::certs::{IssuedCert, TestPki};
use takgate_tests::client::{closes, connect, read_response, within};
use takgate_tests::cot::{read_n, stream_config, tls_connect, CotUpstream, PING, SPOT};
use takgate_tests::process::raise_fd_limit;
use takgate_tests::proxy::{base_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The stream listeners' frame limit here: small, so oversized frames are quick to send.
const MAX_FRAME: usize = 64 * 1024;

// === shared helpers ===

/// Waits (bounded) for a counter to reach `want`, naming the case if it does not.
async fn wait_for(proxy: &TestProxy, case: &str, metric: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = proxy.metric(metric, labels);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: {metric}{labels:?} = {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A ClientHello offering `legacy` as its version and, if given, exactly `supported` in a
/// supported_versions extension: how TLS 1.0 and 1.1 clients (and a 1.2-era client that knows
/// only those) open a handshake. rustls speaks neither, so this is built by hand.
fn client_hello(legacy: u16, supported: Option<&[u16]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&legacy.to_be_bytes());
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
                  // ECDHE-RSA-AES128-SHA, ECDHE-ECDSA-AES128-SHA, AES128-SHA: TLS 1.0-era suites.
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x13, 0xc0, 0x09, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut extensions = Vec::new();
    if let Some(versions) = supported {
        extensions.extend_from_slice(&[0x00, 0x2b]);
        let len = versions.len() * 2;
        extensions.extend_from_slice(&((len + 1) as u16).to_be_bytes());
        extensions.push(len as u8);
        for v in versions {
            extensions.extend_from_slice(&v.to_be_bytes());
        }
    }
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `bytes` on a raw TCP connection and returns what came back before the close.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = within(TcpStream::connect(addr)).await.unwrap();
    let _ = within(tcp.write_all(bytes)).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded by the step deadline of each read; a refused handshake ends in a close.
    loop {
        match within(tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// True if `answer` is a fatal TLS alert refusing the handshake (RFC 8446 §6):
/// handshake_failure (rustls, for a client offering nothing it speaks) or protocol_version.
fn is_refusal_alert(answer: &[u8]) -> bool {
    answer.len() >= 7 && answer[0] == 0x15 && answer[5] == 2 && matches!(answer[6], 40 | 70)
}

/// Hostile ClientHellos and pre-TLS bytes: `(case, bytes, whether the server must answer with
/// a fatal alert before closing)`.
fn bad_hellos() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut garbage = client_hello(0x0303, None);
    // Same record and handshake lengths, but the body after the version is noise.
    for (i, b) in garbage.iter_mut().enumerate().skip(11) {
        *b = (i as u8).wrapping_mul(37) ^ 0xa5;
    }
    vec![
        (
            "plaintext HTTP",
            b"GET /Marti/api/version HTTP/1.1\r\nHost: tak.example\r\n\r\n".to_vec(),
            false,
        ),
        ("garbage ClientHello", garbage, false),
        (
            "oversized TLS record",
            [&[0x16, 0x03, 0x01, 0xff, 0xff][..], &[0u8; 64]].concat(),
            false,
        ),
        ("TLS 1.0 ClientHello", client_hello(0x0301, None), true),
        ("TLS 1.1 ClientHello", client_hello(0x0302, None), true),
        (
            "only TLS 1.0/1.1 in supported_versions",
            client_hello(0x0303, Some(&[0x0302, 0x0301])),
            true,
        ),
    ]
}

/// Runs `openssl s_client` forced to TLS 1.0 or 1.1 against `addr`; returns its output.
/// OpenSSL 3 only offers those versions at security level 0, so that is asked for.
async fn openssl_old_version(addr: SocketAddr, flag: &str) -> String {
    let child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            flag,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed (tests/run installs it)");
    let mut child = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "openssl s_client {flag} hung");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut out = String::new();
    for pipe in [
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut p = pipe;
        let _ = p.read_to_string(&mut out);
    }
    out
}

/// Kills (by its own id) a child process this test started, however the test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// === the HTTPS marti listener ===

struct Https {
    up: FakeUpstream,
    pki: TestPki,
    good: IssuedCert,
    revoked: IssuedCert,
    proxy: TestProxy,
}

async fn https_marti() -> Https {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let good = pki.issue_client("eud1");
    let revoked = pki.issue_client("stolen");
    let crl = pki.revoke(&revoked);
    let config = format!(
        "{}\n[[http]]\nname = \"marti\"\nlisten = \"127.0.0.1:0\"\nprofile = \"marti\"\n\
         ui_root = \"/nonexistent-ui\"\n[http.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         client_auth = \"required\"\ncrl = \"{}\"\nhandshake_timeout = \"500ms\"\n",
        base_config(&up.url()),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_pem.display(),
        crl.display()
    );
    let proxy = TestProxy::start(&config).await;
    Https {
        up,
        pki,
        good,
        revoked,
        proxy,
    }
}

impl Https {
    fn addr(&self) -> SocketAddr {
        self.proxy.http("marti")
    }

    fn handshake_errors(&self, kind: &str) -> f64 {
        self.proxy.metric(
            "takgate_http_connection_errors_total",
            &[("listener", "marti"), ("kind", kind)],
        )
    }

    async fn wait_errors(&self, case: &str, kind: &str, want: f64) {
        let labels = [("listener", "marti"), ("kind", kind)];
        wait_for(
            &self.proxy,
            case,
            "takgate_http_connection_errors_total",
            &labels,
            want,
        )
        .await;
    }

    /// A request with `cert` gets no answer: the handshake fails, or the connection closes
    /// before one (TLS 1.3 reports the client certificate's refusal after the client finished).
    fn refused(&self, reason: &str) -> f64 {
        self.proxy.metric(
            "takgate_http_tls_refused_total",
            &[("listener", "marti"), ("reason", reason)],
        )
    }

    /// `reasons`: the label the refusal may be counted under (the forged and CA cases may be
    /// reported either way, depending on which check fails first).
    async fn refused_with(&self, case: &str, cert: Option<&IssuedCert>, reasons: &[&str]) {
        let before = self.handshake_errors("tls_handshake");
        let reasons_before: f64 = reasons.iter().map(|r| self.refused(r)).sum();
        let req = b"GET /Marti/api/refused HTTP/1.1\r\nHost: tak.example\r\n\r\n";
        if let Ok(mut conn) = connect(self.addr(), Some(self.pki.client_config(cert))).await {
            let _ = within(conn.write_all(req)).await;
            let answer = read_response(&mut conn).await;
            assert!(answer.is_none(), "{case}: got {answer:?}");
        }
        self.wait_errors(case, "tls_handshake", before + 1.0).await;
        let counted: f64 = reasons.iter().map(|r| self.refused(r)).sum();
        assert_eq!(
            counted,
            reasons_before + 1.0,
            "{case}: counted under {reasons:?}"
        );
        self.good_request_works(case).await;
    }

    async fn good_request_works(&self, after: &str) {
        let req = b"GET /Marti/api/ok HTTP/1.1\r\nHost: tak.example\r\nConnection: close\r\n\r\n";
        let mut conn = connect(self.addr(), Some(self.pki.client_config(Some(&self.good))))
            .await
            .unwrap();
        within(conn.write_all(req)).await.unwrap();
        let answer = read_response(&mut conn).await;
        assert_eq!(
            answer.map(|a| a.status),
            Some(200),
            "a good request after {after}"
        );
    }

    fn upstream_saw_no_refused_request(&self) {
        assert!(self
            .up
            .seen()
            .iter()
            .all(|r| r.uri.path() != "/Marti/api/refused" && r.uri.path() != "/Marti/api/version"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_refuses_non_tls_old_tls_and_garbage_and_counts_them() {
    let s = https_marti().await;
    for (case, bytes, alert) in bad_hellos() {
        let before = s.handshake_errors("tls_handshake");
        let answer = raw_exchange(s.addr(), &bytes).await;
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
            "{case}: an HTTP answer on a TLS port"
        );
        if alert {
            assert!(is_refusal_alert(&answer), "{case}: answer {answer:02x?}");
        }
        s.wait_errors(case, "tls_handshake", before + 1.0).await;
        s.good_request_works(case).await;
    }
    // A real TLS 1.0 and 1.1 client: OpenSSL, allowed to offer them, gets a fatal alert
    // (handshake_failure) and no cipher, rather than a session.
    for flag in ["-tls1", "-tls1_1"] {
        let before = s.handshake_errors("tls_handshake");
        let out = openssl_old_version(s.addr(), flag).await;
        assert!(
            (out.contains("alert handshake failure") || out.contains("alert protocol version"))
                && out.contains("Cipher is (NONE)"),
            "openssl {flag}: {out}"
        );
        s.wait_errors(flag, "tls_handshake", before + 1.0).await;
    }
    s.upstream_saw_no_refused_request();
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_refuses_certificates_that_are_not_good_enough() {
    let s = https_marti().await;
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
    let ca_flagged = s.pki.issue_client_with("sub-ca", |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    // A CA with the very same name as the real one: only the signature tells them apart.
    let forger = TestPki::named("takgate test CA");
    let forged = forger.issue_client("eud1");
    let either: &[&str] = &["bad_cert", "unknown_ca"];
    for (case, cert, reasons) in [
        ("expired", &expired, &["expired"][..]),
        ("not yet valid", &future, &["not_yet_valid"]),
        ("server-only key usage", &server_only, &["wrong_key_usage"]),
        ("revoked", &s.revoked, &["revoked"]),
        (
            "a CA certificate as client certificate",
            &ca_flagged,
            either,
        ),
        ("a same-name forged CA", &forged, either),
    ] {
        s.refused_with(case, Some(cert), reasons).await;
    }
    s.refused_with("no certificate", None, &["no_cert"]).await;
    s.upstream_saw_no_refused_request();
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_closes_stalled_handshakes_at_their_timeout() {
    let s = https_marti().await;
    let hello = client_hello(0x0303, Some(&[0x0304, 0x0303]));
    for (case, sent) in [
        ("no byte at all", &b""[..]),
        ("half a record header", &hello[..3]),
        ("a ClientHello cut short", &hello[..hello.len() / 2]),
    ] {
        let before = s.handshake_errors("tls_handshake_timeout");
        let started = Instant::now();
        let mut tcp = within(TcpStream::connect(s.addr())).await.unwrap();
        within(tcp.write_all(sent)).await.unwrap();
        assert!(closes(&mut tcp).await, "{case}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(5),
            "{case}: closed after {elapsed:?}"
        );
        s.wait_errors(case, "tls_handshake_timeout", before + 1.0)
            .await;
        s.good_request_works(case).await;
    }
}

// === a CoT stream listener ===

struct Cot {
    pki: TestPki,
    up: Arc<CotUpstream>,
    proxy: TestProxy,
    /// A client whose session stays up through every hostile case.
    bystander: tokio_rustls::client::TlsStream<TcpStream>,
    bystander_up: TcpStream,
}

/// Three terminate listeners on one fake OTS: `cot` drops malformed frames, `cot-strict` closes
/// on them, `cot-idle` closes sessions idle for 500 ms.
async fn cot() -> Cot {
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let frame = format!("max_frame = \"{}KiB\"", MAX_FRAME / 1024);
    let config = format!(
        "{}\n{}\n{}\n{}",
        base_config("http://127.0.0.1:1"),
        stream_config(
            "cot",
            up.addr,
            "terminate",
            &pki,
            &format!("{frame}\non_malformed = \"drop\"")
        ),
        stream_config(
            "cot-strict",
            up.addr,
            "terminate",
            &pki,
            &format!("{frame}\non_malformed = \"close\"")
        ),
        stream_config(
            "cot-idle",
            up.addr,
            "terminate",
            &pki,
            &format!("{frame}\nidle_timeout = \"500ms\"")
        ),
    );
    let proxy = TestProxy::start(&config).await;
    let eud = pki.issue_client("bystander");
    let mut bystander = tls_connect(proxy.stream("cot"), &pki, Some(&eud))
        .await
        .unwrap();
    within(bystander.write_all(PING)).await.unwrap();
    let mut bystander_up = up.accept().await;
    assert_eq!(read_n(&mut bystander_up, PING.len()).await, PING);
    Cot {
        pki,
        up,
        proxy,
        bystander,
        bystander_up,
    }
}

/// Everything `s` sends until it closes (bounded by the step deadline of each read).
async fn read_to_close(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match within(s.read(&mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

impl Cot {
    fn frame_errors(&self, listener: &str, kind: &str) -> f64 {
        self.proxy.metric(
            "takgate_cot_frame_errors_total",
            &[
                ("listener", listener),
                ("direction", "to_upstream"),
                ("kind", kind),
            ],
        )
    }

    async fn wait_frame_errors(&self, case: &str, listener: &str, kind: &str, want: f64) {
        let labels = [
            ("listener", listener),
            ("direction", "to_upstream"),
            ("kind", kind),
        ];
        wait_for(
            &self.proxy,
            case,
            "takgate_cot_frame_errors_total",
            &labels,
            want,
        )
        .await;
    }

    /// A new mutual-TLS session on `listener` and its upstream side.
    async fn session(
        &self,
        listener: &str,
    ) -> (tokio_rustls::client::TlsStream<TcpStream>, TcpStream) {
        let eud = self.pki.issue_client("eud1");
        let client = tls_connect(self.proxy.stream(listener), &self.pki, Some(&eud))
            .await
            .unwrap();
        let upstream = self.up.accept().await;
        (client, upstream)
    }

    /// The bystander's session still relays both ways, promptly.
    async fn bystander_unaffected(&mut self, after: &str) {
        let started = Instant::now();
        within(self.bystander.write_all(PING)).await.unwrap();
        assert_eq!(
            read_n(&mut self.bystander_up, PING.len()).await,
            PING,
            "after {after}"
        );
        within(self.bystander_up.write_all(PING)).await.unwrap();
        assert_eq!(
            read_n(&mut self.bystander, PING.len()).await,
            PING,
            "after {after}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the bystander waited {:?} after {after}",
            started.elapsed()
        );
    }

    fn refused(&self, listener: &str, reason: &str) -> f64 {
        self.proxy.metric(
            "takgate_stream_refused_total",
            &[("listener", listener), ("reason", reason)],
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_listener_refuses_non_tls_old_tls_and_garbage_and_counts_them() {
    let mut s = cot().await;
    let addr = s.proxy.stream("cot");
    for (case, bytes, alert) in bad_hellos() {
        let before = s.refused("cot", "protocol");
        let answer = raw_exchange(addr, &bytes).await;
        if alert {
            assert!(is_refusal_alert(&answer), "{case}: answer {answer:02x?}");
        }
        wait_for(
            &s.proxy,
            case,
            "takgate_stream_refused_total",
            &[("listener", "cot"), ("reason", "protocol")],
            before + 1.0,
        )
        .await;
        s.bystander_unaffected(case).await;
    }
    for flag in ["-tls1", "-tls1_1"] {
        let before = s.refused("cot", "protocol");
        let out = openssl_old_version(addr, flag).await;
        assert!(
            (out.contains("alert handshake failure") || out.contains("alert protocol version"))
                && out.contains("Cipher is (NONE)"),
            "openssl {flag}: {out}"
        );
        wait_for(
            &s.proxy,
            flag,
            "takgate_stream_refused_total",
            &[("listener", "cot"), ("reason", "protocol")],
            before + 1.0,
        )
        .await;
        s.bystander_unaffected(flag).await;
    }
    // A handshake that starts and stops: closed at the 500 ms handshake timeout.
    let hello = client_hello(0x0303, Some(&[0x0304, 0x0303]));
    let before = s.refused("cot", "timeout");
    let started = Instant::now();
    let mut tcp = within(TcpStream::connect(addr)).await.unwrap();
    within(tcp.write_all(&hello[..hello.len() / 2]))
        .await
        .unwrap();
    assert!(closes(&mut tcp).await);
    assert!(started.elapsed() >= Duration::from_millis(500));
    wait_for(
        &s.proxy,
        "stalled ClientHello",
        "takgate_stream_refused_total",
        &[("listener", "cot"), ("reason", "timeout")],
        before + 1.0,
    )
    .await;
    s.bystander_unaffected("a stalled ClientHello").await;
    assert!(s.up.try_accept().await.is_none(), "nothing reached OTS");
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_listener_refuses_ca_and_forged_certificates() {
    let mut s = cot().await;
    let addr = s.proxy.stream("cot");
    let ca_flagged = s.pki.issue_client_with("sub-ca", |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    let forger = TestPki::named("takgate test CA");
    let forged = forger.issue_client("eud1");
    for (case, cert) in [
        ("a CA certificate", &ca_flagged),
        ("a same-name forged CA", &forged),
    ] {
        let before = s.refused("cot", "bad_cert") + s.refused("cot", "unknown_ca");
        if let Ok(mut tls) = tls_connect(addr, &s.pki, Some(cert)).await {
            let _ = tls.write_all(PING).await;
            assert!(closes(&mut tls).await, "{case}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.refused("cot", "bad_cert") + s.refused("cot", "unknown_ca") != before + 1.0 {
            assert!(Instant::now() < deadline, "{case} was not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.bystander_unaffected(case).await;
    }
    assert!(s.up.try_accept().await.is_none(), "nothing reached OTS");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_cot_closes_the_session_and_nothing_of_it_reaches_ots() {
    let mut s = cot().await;
    let body = "x".repeat(MAX_FRAME + 1024);
    for (case, frame) in [
        (
            "a whole event over the limit",
            format!("<event type=\"a-f-G\"><detail><remarks>{body}</remarks></detail></event>"),
        ),
        // 30,000 levels, 7 bytes each: over the limit before the first end tag.
        (
            "nesting past the limit",
            format!("<event type=\"a-f-G\">{}", "<a>".repeat(30_000)),
        ),
    ] {
        let before = s.frame_errors("cot", "too_large");
        let (mut client, mut upstream) = s.session("cot").await;
        let _ = within(client.write_all(frame.as_bytes())).await;
        assert!(closes(&mut client).await, "{case}");
        assert!(
            read_to_close(&mut upstream).await.is_empty(),
            "{case}: OTS got bytes"
        );
        s.wait_frame_errors(case, "cot", "too_large", before + 1.0)
            .await;
        s.bystander_unaffected(case).await;
    }
    // Deep nesting that fits is one well-formed frame: relayed whole (the depth costs memory
    // only within max_frame).
    let depth = 5_000;
    let deep = format!(
        "<event type=\"a-f-G\"><detail>{}{}</detail></event>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    );
    let (mut client, mut upstream) = s.session("cot").await;
    within(client.write_all(deep.as_bytes())).await.unwrap();
    assert_eq!(read_n(&mut upstream, deep.len()).await, deep.as_bytes());
    s.bystander_unaffected("deep nesting").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unterminated_events_are_never_relayed_and_are_counted() {
    let mut s = cot().await;
    let partial = &SPOT[..SPOT.len() - 10];
    // The client ends its stream mid-event: OTS sees the end of stream, not the fragment.
    let before = s.frame_errors("cot", "truncated");
    let (mut client, mut upstream) = s.session("cot").await;
    within(client.write_all(PING)).await.unwrap();
    within(client.write_all(partial)).await.unwrap();
    within(client.shutdown()).await.unwrap();
    assert_eq!(
        read_to_close(&mut upstream).await,
        PING,
        "only the whole event"
    );
    s.wait_frame_errors(
        "unterminated at end of stream",
        "cot",
        "truncated",
        before + 1.0,
    )
    .await;
    s.bystander_unaffected("an unterminated event").await;
    // The client just stops mid-event: closed when idle, the fragment counted.
    let before = s.frame_errors("cot-idle", "truncated");
    let (mut client, mut upstream) = s.session("cot-idle").await;
    within(client.write_all(partial)).await.unwrap();
    let started = Instant::now();
    assert!(closes(&mut client).await);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(read_to_close(&mut upstream).await.is_empty());
    s.wait_frame_errors(
        "unterminated, then idle",
        "cot-idle",
        "truncated",
        before + 1.0,
    )
    .await;
    wait_for(
        &s.proxy,
        "idle close",
        "takgate_stream_sessions_closed_total",
        &[("listener", "cot-idle"), ("reason", "idle")],
        1.0,
    )
    .await;
    s.bystander_unaffected("an idle fragment").await;
}

/// Malformed CoT of every kind: dropped and counted on `cot` (the good event after it still
/// arrives, alone), the session closed on `cot-strict`.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_cot_is_dropped_or_closes_and_never_reaches_ots() {
    let mut s = cot().await;
    let mut laughs =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    laughs.push_str("]>\n<event type=\"a-f-G\"><detail>&lol9;</detail></event>");
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "invalid UTF-8 in text",
            b"<event type=\"a-f-G\"><detail><remarks>\xff\xfe</remarks></detail></event>".to_vec(),
            "malformed",
        ),
        (
            "invalid UTF-8 in an attribute",
            b"<event type=\"a-f-G\" uid=\"\xc3\x28\"><detail/></event>".to_vec(),
            "malformed",
        ),
        (
            "overlong UTF-8 for '<'",
            b"<event type=\"a-f-G\"><detail>\xc0\xbcevent</detail></event>".to_vec(),
            "malformed",
        ),
        (
            "NUL and escape bytes",
            b"<event type=\"a-f-G\"><detail>\x00\x1b[2J</detail></event>".to_vec(),
            "malformed",
        ),
        ("billion laughs", laughs.into_bytes(), "doctype"),
        (
            "external entity",
            b"<?xml version=\"1.0\"?><!DOCTYPE event [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
              <event type=\"a-f-G\"><detail>&xxe;</detail></event>"
                .to_vec(),
            "doctype",
        ),
        (
            "undeclared entity",
            b"<event type=\"a-f-G\"><detail>&xxe;</detail></event>".to_vec(),
            "malformed",
        ),
        ("binary junk", junk, "malformed"),
        (
            "a foreign root element",
            b"<html><body>hello</body></html>".to_vec(),
            "malformed",
        ),
    ];
    for (case, bad, kind) in &cases {
        // Drop: the bad frame is skipped, the next good one relayed unchanged.
        let before = s.frame_errors("cot", kind);
        let (mut client, mut upstream) = s.session("cot").await;
        within(client.write_all(bad)).await.unwrap();
        within(client.write_all(PING)).await.unwrap();
        within(client.shutdown()).await.unwrap();
        assert_eq!(
            read_to_close(&mut upstream).await,
            PING,
            "{case}: what OTS got"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.frame_errors("cot", kind) < before + 1.0 {
            assert!(Instant::now() < deadline, "{case}: not counted as {kind}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Close: the session ends at the bad frame, counted the same way.
        let before = s.frame_errors("cot-strict", kind);
        let (mut client, mut upstream) = s.session("cot-strict").await;
        within(client.write_all(PING)).await.unwrap();
        let _ = within(client.write_all(bad)).await;
        assert!(
            closes(&mut client).await,
            "{case}: strict session must close"
        );
        assert_eq!(
            read_to_close(&mut upstream).await,
            PING,
            "{case}: strict, what OTS got"
        );
        s.wait_frame_errors(case, "cot-strict", kind, before + 1.0)
            .await;
        s.bystander_unaffected(case).await;
    }
    wait_for(
        &s.proxy,
        "strict closes",
        "takgate_stream_sessions_closed_total",
        &[("listener", "cot-strict"), ("reason", "frame_error")],
        cases.len() as f64,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_fed_one_byte_at_a_time_frames_exactly() {
    let mut s = cot().await;
    let (mut client, mut upstream) = s.session("cot").await;
    let mut stream = SPOT.to_vec();
    stream.extend_from_slice(b"<!DOCTYPE x [<!ENTITY a \"b\">]><event/>");
    stream.extend_from_slice(PING);
    // One TLS record per byte: the worst chunking a client can choose.
    for b in &stream {
        within(client.write_all(std::slice::from_ref(b)))
            .await
            .unwrap();
        within(client.flush()).await.unwrap();
    }
    // Under `drop` the DOCTYPE is refused and skipped up to the next `<event`: the empty event
    // after it is a frame of its own, with no entity in it.
    let mut want = SPOT.to_vec();
    want.extend_from_slice(b"<event/>");
    want.extend_from_slice(PING);
    assert_eq!(read_n(&mut upstream, want.len()).await, want);
    s.wait_frame_errors("one byte at a time", "cot", "doctype", 1.0)
        .await;
    s.bystander_unaffected("a byte-at-a-time stream").await;
}

// === 10,000 connections held at once ===

const FLOOD: usize = 10_000;

/// The other side of `ten_thousand_held_connections_do_not_disturb_a_session`: run by it in a
/// child process (so the 10,000 client sockets do not count against this process's descriptor
/// limit), it opens `TAKGATE_HOLD_COUNT` TCP connections to `TAKGATE_HOLD_ADDR`, says `held N`,
/// and holds them until its standard input closes.
#[test]
#[ignore = "a helper process for the flood test, not a test of its own"]
fn hold_connections_child() {
    let (Ok(addr), Ok(count)) = (
        std::env::var("TAKGATE_HOLD_ADDR"),
        std::env::var("TAKGATE_HOLD_COUNT"),
    ) else {
        return;
    };
    let addr: SocketAddr = addr.parse().unwrap();
    let count: usize = count.parse().unwrap();
    raise_fd_limit(count);
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "held {}", held.len()).unwrap();
    out.flush().unwrap();
    drop(out);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_held_connections_do_not_disturb_a_session() {
    // This process holds takgate's side of every connection.
    raise_fd_limit(FLOOD + 512);
    let pki = TestPki::new();
    let up = CotUpstream::start().await;
    let stream = stream_config(
        "cot",
        up.addr,
        "terminate",
        &pki,
        &format!("max_connections = {}", FLOOD + 100),
    )
    .replace(
        "handshake_timeout = \"500ms\"",
        "handshake_timeout = \"120s\"",
    );
    // Each connection takes a TLS session's share of the memory budget (24 KiB): 10,000 need
    // more than the default budget, sized for a small pod, admits.
    let memory = "[memory]\nstream_budget = \"512MiB\"\n";
    let proxy = TestProxy::start(&format!(
        "{}\n{memory}{stream}",
        base_config("http://127.0.0.1:1")
    ))
    .await;
    let addr = proxy.stream("cot");
    let eud = pki.issue_client("eud1");
    let mut session = tls_connect(addr, &pki, Some(&eud)).await.unwrap();
    within(session.write_all(PING)).await.unwrap();
    let mut session_up = up.accept().await;
    assert_eq!(read_n(&mut session_up, PING.len()).await, PING);

    // 10,000 connections that never say a word, each waiting on its handshake.
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "hold_connections_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("TAKGATE_HOLD_ADDR", addr.to_string())
            .env("TAKGATE_HOLD_COUNT", FLOOD.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let held = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.starts_with("held "))
        }),
    )
    .await
    .expect("the child did not open its connections in time")
    .unwrap();
    assert_eq!(held, Some(format!("held {FLOOD}")));
    wait_for(
        &proxy,
        "flood",
        "takgate_stream_connections_open",
        &[("listener", "cot")],
        (FLOOD + 1) as f64,
    )
    .await;

    // While they are held, the established session flows both ways without delay...
    for i in 0..20 {
        let started = Instant::now();
        within(session.write_all(PING)).await.unwrap();
        assert_eq!(read_n(&mut session_up, PING.len()).await, PING);
        within(session_up.write_all(PING)).await.unwrap();
        assert_eq!(read_n(&mut session, PING.len()).await, PING);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "round trip {i} took {:?}",
            started.elapsed()
        );
    }
    // ...and a new client still gets in.
    let mut late = tls_connect(addr, &pki, Some(&eud)).await.unwrap();
    within(late.write_all(PING)).await.unwrap();
    let mut late_up = up.accept().await;
    assert_eq!(read_n(&mut late_up, PING.len()).await, PING);

    // The flood lets go: every one of them is refused (end of stream before a ClientHello)
    // and counted, and takgate is back to the two real sessions.
    drop(child.0.stdin.take());
    wait_for(
        &proxy,
        "flood released",
        "takgate_stream_refused_total",
        &[("listener", "cot"), ("reason", "io")],
        FLOOD as f64,
    )
    .await;
    wait_for(
        &proxy,
        "flood released",
        "takgate_stream_connections_open",
        &[("listener", "cot")],
        2.0,
    )
    .await;
    within(session.write_all(PING)).await.unwrap();
    assert_eq!(read_n(&mut session_up, PING.len()).await, PING);
}
