//! Hostile HTTP input through each listener profile (issue 7, point 1): request smuggling, limits,
//! slow clients, malformed request lines, traversal, NUL bytes, absolute-form targets, Host
//! injection and spoofed forwarding headers.
//!
//! Every case checks four things: the answer (a status, or a close without one), the counter that
//! records it, what reached the fake OTS (usually nothing), and that the next good request on a
//! new connection works. TLS handshake failures on the HTTPS listeners are in `hostile_stream.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use takgate_tests::certs::{IssuedCert, TestPki};
use takgate_tests::client::{
    closes, closes_within, connect, read_response, within, RawResponse, Stream,
};
use takgate_tests::proxy::{base_config, TestProxy};
use takgate_tests::upstream::{FakeUpstream, Seen};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// The slow-client tests' timeouts: short enough to keep them quick, long enough for loopback
/// on a busy machine.
const HEADER_TIMEOUT: Duration = Duration::from_millis(600);
const BODY_TIMEOUT: Duration = Duration::from_millis(600);
/// The other tests' timeouts: a connection closed within [`CLOSE_WITHIN`] was closed on purpose,
/// not left to expire.
const RELAXED_TIMEOUT: Duration = Duration::from_secs(8);
const CLOSE_WITHIN: Duration = Duration::from_secs(3);
const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-UI-ROOT";

struct Setup {
    up: FakeUpstream,
    pki: TestPki,
    eud: IssuedCert,
    proxy: TestProxy,
    _ui: tempfile::TempDir,
}

/// The four profiles with relaxed timeouts.
async fn setup() -> Setup {
    setup_with(RELAXED_TIMEOUT, RELAXED_TIMEOUT).await
}

/// The four profiles, as OTS's nginx blocks: web (8080), marti (8443, mutual TLS), enroll (8446,
/// TLS) and redirect (80), with the given head and body timeouts. The UI root sits next to a
/// file that must never be served.
async fn setup_with(header_timeout: Duration, body_timeout: Duration) -> Setup {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let eud = pki.issue_client("eud1");
    let ui = tempfile::tempdir().unwrap();
    let root = ui.path().join("ui");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(
        root.join("index.html"),
        "<!doctype html><div id=root></div>",
    )
    .unwrap();
    std::fs::write(root.join("assets/app-1.js"), "console.log(1)").unwrap();
    std::fs::write(ui.path().join("secret.txt"), SECRET).unwrap();
    let tls = |auth: &str| {
        format!(
            "[http.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_auth = \"{auth}\"\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca_pem.display()
        )
    };
    let listener = |name: &str, profile: &str, tls: &str| {
        format!(
            "[[http]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nprofile = \"{profile}\"\n\
             ui_root = \"{}\"\nheader_read_timeout = \"{}ms\"\nbody_read_timeout = \"{}ms\"\n\
             server_name = \"tak.example\"\n{tls}\n",
            root.display(),
            header_timeout.as_millis(),
            body_timeout.as_millis(),
        )
    };
    let config = format!(
        "{}\n{}{}{}{}",
        base_config(&up.url()),
        listener("web", "web", ""),
        listener("marti", "marti", &tls("required")),
        listener("enroll", "enroll", &tls("none")),
        listener("redirect", "redirect", ""),
    );
    let proxy = TestProxy::start(&config).await;
    Setup {
        up,
        pki,
        eud,
        proxy,
        _ui: ui,
    }
}

/// The counter a case must move by one.
#[derive(Clone, Copy, Debug)]
enum Counted {
    /// `takgate_http_connection_errors_total{kind}`: hyper refused the head.
    Conn(&'static str),
    /// `takgate_proxy_errors_total{route, kind}`: takgate refused the request.
    Proxy(&'static str, &'static str),
    /// `takgate_http_requests_total{route, status_class}`: an answered request.
    Requests(&'static str, &'static str),
}

impl Counted {
    fn series(self, listener: &'static str) -> (&'static str, Vec<(&'static str, &'static str)>) {
        match self {
            Counted::Conn(kind) => (
                "takgate_http_connection_errors_total",
                vec![("listener", listener), ("kind", kind)],
            ),
            Counted::Proxy(route, kind) => (
                "takgate_proxy_errors_total",
                vec![("listener", listener), ("route", route), ("kind", kind)],
            ),
            Counted::Requests(route, class) => (
                "takgate_http_requests_total",
                vec![
                    ("listener", listener),
                    ("route", route),
                    ("status_class", class),
                ],
            ),
        }
    }
}

/// What a hostile request must get.
#[derive(Clone, Copy, Debug)]
struct Want {
    /// `None`: the connection is closed without an answer.
    status: Option<u16>,
    /// The connection must be closed after the answer.
    closes: bool,
    counted: Counted,
    /// Requests the fake OTS may see.
    upstream: usize,
}

/// hyper refused the head: 400 and close, counted as `parse`, nothing upstream.
const PARSE_400: Want = Want {
    status: Some(400),
    closes: true,
    counted: Counted::Conn("parse"),
    upstream: 0,
};

const fn refused(status: u16, route: &'static str, kind: &'static str) -> Want {
    Want {
        status: Some(status),
        closes: true,
        counted: Counted::Proxy(route, kind),
        upstream: 0,
    }
}

const fn forwarded(route: &'static str) -> Want {
    Want {
        status: Some(200),
        closes: false,
        counted: Counted::Requests(route, "2xx"),
        upstream: 1,
    }
}

impl Setup {
    fn addr(&self, listener: &str) -> SocketAddr {
        self.proxy.http(listener)
    }

    /// A new connection to `listener`: marti presents a client certificate, enroll none.
    async fn open(&self, listener: &str) -> Box<dyn Stream> {
        let tls = match listener {
            "marti" => Some(self.pki.client_config(Some(&self.eud))),
            "enroll" => Some(self.pki.client_config(None)),
            _ => None,
        };
        connect(self.addr(listener), tls).await.unwrap()
    }

    /// Writes `bytes` on a new connection and reads one answer.
    async fn send(&self, listener: &str, bytes: &[u8]) -> (Box<dyn Stream>, Option<RawResponse>) {
        let mut conn = self.open(listener).await;
        // takgate may answer and close before it has read everything (431): not an error here.
        let _ = within(conn.write_all(bytes)).await;
        let answer = read_response(&mut conn).await;
        (conn, answer)
    }

    /// Sends one hostile request and checks the answer, the counter, what OTS saw, and that a
    /// good request on a new connection still works. Returns the answer for further checks.
    async fn hostile(
        &self,
        listener: &'static str,
        case: &str,
        bytes: &[u8],
        want: Want,
    ) -> Option<RawResponse> {
        let (metric, labels) = want.counted.series(listener);
        let counted_before = self.proxy.metric(metric, &labels);
        let seen_before = self.up.seen().len();
        let (mut conn, answer) = self.send(listener, bytes).await;
        assert_eq!(
            answer.as_ref().map(|a| a.status),
            want.status,
            "{listener} {case}: answer {answer:?}"
        );
        if want.closes {
            assert!(
                closes_within(&mut conn, CLOSE_WITHIN).await,
                "{listener} {case}: the connection must be closed"
            );
        }
        drop(conn);
        wait_for(&self.proxy, case, metric, &labels, counted_before + 1.0).await;
        let seen: Vec<String> = self.up.seen()[seen_before..]
            .iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect();
        assert_eq!(
            seen.len(),
            want.upstream,
            "{listener} {case}: requests OTS saw: {seen:?}"
        );
        self.good_request_works(listener, case).await;
        answer
    }

    /// The last request OTS saw for `path` (the good request after each case comes later).
    fn seen_at(&self, path: &str) -> Seen {
        self.up
            .seen()
            .into_iter()
            .rev()
            .find(|r| r.uri.path() == path)
            .unwrap_or_else(|| panic!("OTS saw no request for {path}"))
    }

    /// A well-formed request on a new connection gets its usual answer.
    async fn good_request_works(&self, listener: &str, after: &str) {
        let (path, status) = match listener {
            "web" => ("/api/ok", 200),
            "marti" => ("/Marti/api/ok", 200),
            "enroll" => ("/Marti/api/tls/config", 200),
            _ => ("/ok", 301),
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: tak.example\r\nConnection: close\r\n\r\n");
        let (_, answer) = self.send(listener, req.as_bytes()).await;
        assert_eq!(
            answer.map(|a| a.status),
            Some(status),
            "{listener}: a good request after {after}"
        );
    }
}

/// Waits (bounded) for a counter to reach `want`, naming the case if it does not.
async fn wait_for(proxy: &TestProxy, case: &str, metric: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
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

fn post_upload(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /api/upload HTTP/1.1\r\nHost: tak.example\r\n{headers}\r\n{body}").into_bytes()
}

fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\n{headers}\r\n").into_bytes()
}

// === request smuggling ===

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_never_reaches_ots_as_two_requests() {
    let s = setup().await;
    let smuggled = "GET /api/smuggled HTTP/1.1\r\nHost: tak.example\r\n\r\n";
    for listener in ["web", "marti"] {
        // Content-Length and Transfer-Encoding in either order: hyper follows RFC 9112 §6.3
        // (chunked wins, Content-Length is dropped) and closes after the answer, so the request
        // hidden behind the chunked body is never read. takgate re-frames the body: OTS sees one
        // request with the decoded five bytes and no Content-Length.
        for (case, headers) in [
            (
                "CL then TE",
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            ),
            (
                "TE then CL",
                "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n",
            ),
        ] {
            let uploads = s.up.uploaded().len();
            let bytes = post_upload(headers, &format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"));
            let want = Want {
                closes: true,
                ..forwarded("api")
            };
            let answer = s.hostile(listener, case, &bytes, want).await.unwrap();
            assert_eq!(answer.text(), "5", "{case}: OTS read the chunked body");
            assert_eq!(s.up.uploaded()[uploads..], [5]);
            let seen = s.up.seen();
            let upload = seen
                .iter()
                .rev()
                .find(|r| r.uri.path() == "/api/upload")
                .unwrap();
            assert!(!upload.headers.contains_key("content-length"), "{case}");
            assert!(
                seen.iter().all(|r| r.uri.path() != "/api/smuggled"),
                "{case}"
            );
        }
        // The same length twice is one length (RFC 9110 §8.6); different ones are refused.
        let bytes = post_upload("Content-Length: 5\r\nContent-Length: 5\r\n", "hello");
        let answer = s
            .hostile(listener, "CL twice, equal", &bytes, forwarded("api"))
            .await;
        assert_eq!(answer.unwrap().text(), "5");
        for (case, headers) in [
            (
                "CL twice, different",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
            ),
            ("CL list", "Content-Length: 5, 5\r\n"),
            ("CL with a sign", "Content-Length: +5\r\n"),
            ("CL negative", "Content-Length: -1\r\n"),
            ("CL hex", "Content-Length: 0x5\r\n"),
            ("obs-fold", "X-A: 1\r\n folded\r\nContent-Length: 5\r\n"),
            ("obs-fold TE", "Transfer-Encoding:\r\n chunked\r\n"),
            (
                "TE chunked, identity",
                "Transfer-Encoding: chunked, identity\r\n",
            ),
            ("TE not chunked", "Transfer-Encoding: xchunked\r\n"),
            ("TE space before colon", "Transfer-Encoding : chunked\r\n"),
        ] {
            let bytes = post_upload(headers, &format!("hello{smuggled}"));
            s.hostile(listener, case, &bytes, PARSE_400).await;
        }
        let te_10 =
            b"POST /api/upload HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        s.hostile(listener, "TE on HTTP/1.0", te_10, PARSE_400)
            .await;
        // Codings hyper lets through but takgate cannot re-frame faithfully: 501 (RFC 9112 §6.1).
        for (case, headers) in [
            (
                "TE identity, chunked",
                "Transfer-Encoding: identity, chunked\r\n",
            ),
            ("TE gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n"),
            (
                "TE twice",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            ),
        ] {
            let bytes = post_upload(headers, &format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"));
            let answer = s
                .hostile(
                    listener,
                    case,
                    &bytes,
                    refused(501, "api", "transfer_encoding"),
                )
                .await;
            assert_eq!(answer.unwrap().header("connection"), Some("close"));
        }
    }
    assert!(s.up.seen().iter().all(|r| r.uri.path() != "/api/smuggled"));
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_chunked_bodies_are_cut_before_ots_can_take_them_whole() {
    let s = setup().await;
    for listener in ["web", "marti"] {
        for (case, body) in [
            ("chunk size not hex", "zz\r\nhello\r\n0\r\n\r\n"),
            (
                "chunk size overflows",
                "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            ("chunk without its CRLF", "5\r\nhelloXX0\r\n\r\n"),
            ("chunk size with junk", "5 junk\r\nhello\r\n0\r\n\r\n"),
        ] {
            let uploads = s.up.uploaded().len();
            let broken = s.up.broken_uploads();
            let bytes = post_upload("Transfer-Encoding: chunked\r\n", body);
            // The head may or may not have reached OTS before the bad chunk was read; if it
            // did, OTS saw its body break off, never a complete request.
            let (metric, labels) = Counted::Proxy("api", "body").series(listener);
            let before = s.proxy.metric(metric, &labels);
            let (mut conn, answer) = s.send(listener, &bytes).await;
            assert_eq!(answer.map(|a| a.status), Some(400), "{listener} {case}");
            assert!(
                closes_within(&mut conn, CLOSE_WITHIN).await,
                "{listener} {case}"
            );
            wait_for(&s.proxy, case, metric, &labels, before + 1.0).await;
            let got = s.up.uploaded().len() - uploads;
            assert_eq!(
                s.up.broken_uploads() - broken,
                got as u64,
                "{listener} {case}: OTS completed an upload"
            );
            s.good_request_works(listener, case).await;
        }
    }
}

// === limits ===

#[tokio::test(flavor = "multi_thread")]
async fn long_targets_large_heads_and_many_headers_are_refused() {
    let s = setup().await;
    for listener in ["web", "marti", "enroll", "redirect"] {
        let route = match listener {
            "web" | "marti" => "api",
            _ => "static",
        };
        // Over 8 KiB of target (nginx's limit): takgate's 414.
        let long = get(
            &format!("/api/{}", "a".repeat(9 * 1024)),
            "Host: tak.example\r\n",
        );
        s.hostile(
            listener,
            "9 KiB target",
            &long,
            refused(414, route, "uri_too_long"),
        )
        .await;
        // A target longer than the whole head may be (32 KiB): hyper's 431.
        let huge = get(
            &format!("/api/{}", "a".repeat(40 * 1024)),
            "Host: tak.example\r\n",
        );
        let too_large = Want {
            status: Some(431),
            closes: true,
            counted: Counted::Conn("head_too_large"),
            upstream: 0,
        };
        s.hostile(listener, "40 KiB target", &huge, too_large).await;
        let big_header = get(
            "/api/x",
            &format!("Host: tak.example\r\nX-Big: {}\r\n", "b".repeat(40 * 1024)),
        );
        s.hostile(listener, "40 KiB header", &big_header, too_large)
            .await;
        let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
        let many = get("/api/x", &format!("Host: tak.example\r\n{many}"));
        s.hostile(listener, "150 headers", &many, too_large).await;
    }
}

// === slow clients ===

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_heads_are_closed_at_the_header_timeout() {
    let s = setup_with(HEADER_TIMEOUT, BODY_TIMEOUT).await;
    for listener in ["web", "marti"] {
        let seen = s.up.seen().len();
        let (metric, labels) = Counted::Conn("header_timeout").series(listener);
        // One byte every 100 ms: each byte is progress, but the head as a whole has a deadline.
        let before = s.proxy.metric(metric, &labels);
        // Started before connecting: takgate's clock starts while the client connects.
        let started = Instant::now();
        let mut conn = s.open(listener).await;
        let head = b"GET /api/x HTTP/1.1\r\nHost: tak.example\r\nX-Slow: ";
        let mut cut = false;
        for b in head.iter().chain(std::iter::repeat_n(&b'z', 100)) {
            if within(conn.write_all(&[*b])).await.is_err() {
                cut = true;
                break;
            }
            if started.elapsed() > HEADER_TIMEOUT * 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            cut || closes(&mut conn).await,
            "{listener}: a trickled head must be cut"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= HEADER_TIMEOUT && elapsed < HEADER_TIMEOUT * 5,
            "{listener}: cut after {elapsed:?}"
        );
        wait_for(&s.proxy, "trickled head", metric, &labels, before + 1.0).await;

        // A connection that never sends a byte (after its TLS handshake, on marti).
        let before = s.proxy.metric(metric, &labels);
        let started = Instant::now();
        let mut idle = s.open(listener).await;
        assert!(
            closes(&mut idle).await,
            "{listener}: a silent client must be cut"
        );
        assert!(started.elapsed() >= HEADER_TIMEOUT);
        wait_for(&s.proxy, "silent client", metric, &labels, before + 1.0).await;
        assert_eq!(s.up.seen().len(), seen, "{listener}: nothing reached OTS");
        s.good_request_works(listener, "a slow head").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_is_closed_quietly_but_a_stalled_second_head_is_counted() {
    let s = setup_with(HEADER_TIMEOUT, BODY_TIMEOUT).await;
    for listener in ["web", "marti"] {
        let (metric, labels) = Counted::Conn("header_timeout").series(listener);
        let path = if listener == "web" {
            "/api/ok"
        } else {
            "/Marti/api/ok"
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: tak.example\r\n\r\n");
        let before = s.proxy.metric(metric, &labels);

        // A finished request, then silence: a browser's kept-alive connection.
        let mut kept = s.open(listener).await;
        within(kept.write_all(request.as_bytes())).await.unwrap();
        let answer = within(read_response(&mut kept)).await;
        assert_eq!(answer.map(|a| a.status), Some(200), "{listener}");
        let started = Instant::now();
        assert!(
            closes(&mut kept).await,
            "{listener}: idle keep-alive closed"
        );
        assert!(started.elapsed() >= HEADER_TIMEOUT / 2, "{listener}");

        // The same, then half of a second head: that one is a stalled client.
        let mut stalled = s.open(listener).await;
        within(stalled.write_all(request.as_bytes())).await.unwrap();
        let answer = within(read_response(&mut stalled)).await;
        assert_eq!(answer.map(|a| a.status), Some(200), "{listener}");
        within(stalled.write_all(b"GET /api/x HTTP/1.1\r\nHost: tak"))
            .await
            .unwrap();
        assert!(closes(&mut stalled).await, "{listener}: stalled head cut");
        wait_for(
            &s.proxy,
            "stalled second head",
            metric,
            &labels,
            before + 1.0,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_bodies_are_cut_at_the_body_timeout_and_never_complete_upstream() {
    let s = setup_with(HEADER_TIMEOUT, BODY_TIMEOUT).await;
    for listener in ["web", "marti"] {
        for (case, head, part) in [
            (
                "stalled sized body",
                "Content-Length: 100\r\n",
                "0123456789",
            ),
            (
                "stalled chunked body",
                "Transfer-Encoding: chunked\r\n",
                "a\r\n0123456789\r\n",
            ),
        ] {
            let (metric, labels) = Counted::Proxy("api", "body").series(listener);
            let before = s.proxy.metric(metric, &labels);
            let broken = s.up.broken_uploads();
            let started = Instant::now();
            let (mut conn, answer) = s.send(listener, &post_upload(head, part)).await;
            let answer = answer.unwrap();
            assert_eq!(answer.status, 400, "{listener} {case}: {}", answer.text());
            assert!(started.elapsed() >= BODY_TIMEOUT, "{listener} {case}");
            assert!(closes(&mut conn).await, "{listener} {case}");
            wait_for(&s.proxy, case, metric, &labels, before + 1.0).await;
            // OTS got the head and the first bytes, then a body that broke off.
            let deadline = Instant::now() + Duration::from_secs(5);
            while s.up.broken_uploads() == broken {
                assert!(
                    Instant::now() < deadline,
                    "{listener} {case}: OTS kept waiting"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            s.good_request_works(listener, case).await;
        }
    }
}

// === request lines ===

#[tokio::test(flavor = "multi_thread")]
async fn http_09_invalid_methods_and_versions_are_refused() {
    let s = setup().await;
    for listener in ["web", "marti", "enroll", "redirect"] {
        for (case, bytes) in [
            ("HTTP/0.9", &b"GET /api/x\r\n\r\n"[..]),
            ("invalid method", b"G@T /api/x HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("empty method", b" /api/x HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("HTTP/2.0 line", b"GET /api/x HTTP/2.0\r\nHost: h\r\n\r\n"),
            ("HTTP/1.2", b"GET /api/x HTTP/1.2\r\nHost: h\r\n\r\n"),
            (
                "space in target",
                b"GET /api/a b HTTP/1.1\r\nHost: h\r\n\r\n",
            ),
            ("CR in target", b"GET /api/a\rb HTTP/1.1\r\nHost: h\r\n\r\n"),
            (
                "binary junk",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            ),
        ] {
            s.hostile(listener, case, bytes, PARSE_400).await;
        }
        // The HTTP/2 preface is not HTTP/1.1: closed without an answer.
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let want = Want {
            status: None,
            ..PARSE_400
        };
        s.hostile(listener, "h2 preface", h2, want).await;
        // CONNECT's authority-form asks for a forward proxy.
        let connect = b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n";
        s.hostile(
            listener,
            "CONNECT",
            connect,
            refused(400, "static", "bad_request"),
        )
        .await;
    }
    // A method hyper accepts but no static root serves: 405 there, and OTS decides on its
    // routes (as nginx passes any method on).
    let want = Want {
        status: Some(405),
        closes: false,
        counted: Counted::Requests("static", "4xx"),
        upstream: 0,
    };
    s.hostile(
        "web",
        "PROPFIND on the UI",
        b"PROPFIND / HTTP/1.1\r\nHost: h\r\n\r\n",
        want,
    )
    .await;
    s.hostile(
        "web",
        "FOO to OTS",
        b"FOO /api/x HTTP/1.1\r\nHost: h\r\n\r\n",
        forwarded("api"),
    )
    .await;
    assert!(s.up.seen().iter().any(|r| r.method.as_str() == "FOO"));
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_bytes_are_refused_raw_or_encoded() {
    let s = setup().await;
    for listener in ["web", "marti", "enroll", "redirect"] {
        s.hostile(
            listener,
            "raw NUL in target",
            &get("/api/a\0b", "Host: h\r\n"),
            PARSE_400,
        )
        .await;
        s.hostile(
            listener,
            "raw NUL in header",
            &get("/api/x", "Host: h\r\nX-A: a\0b\r\n"),
            PARSE_400,
        )
        .await;
        let route = if matches!(listener, "web" | "marti") {
            "api"
        } else {
            "static"
        };
        s.hostile(
            listener,
            "%00 in target",
            &get("/api/a%00b", "Host: h\r\n"),
            refused(400, route, "bad_request"),
        )
        .await;
    }
}

// === the static roots ===

#[tokio::test(flavor = "multi_thread")]
async fn traversal_in_any_encoding_never_leaves_the_ui_root() {
    let s = setup().await;
    // Climbing above the root, in the forms path normalisation sees: 400 before routing.
    let climbing = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/.%2e/secret.txt",
        "/assets/../../secret.txt",
        "/assets/%2E%2E/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
    ];
    // Forms only the file server decodes (an encoded backslash, overlong UTF-8): its 400.
    let decoded_late = ["/..%5csecret.txt", "/%c0%ae%c0%ae/secret.txt"];
    // Forms that name something inside the root (or nothing): never the secret.
    let inside = [
        "/%252e%252e/secret.txt",
        "//secret.txt",
        "/secret.txt",
        "/ui/../secret.txt",
    ];
    for listener in ["web", "enroll"] {
        let headers = "Host: tak.example\r\n";
        for path in climbing {
            s.hostile(
                listener,
                path,
                &get(path, headers),
                refused(400, "static", "bad_request"),
            )
            .await;
        }
        for path in decoded_late {
            let want = Want {
                status: Some(400),
                closes: false,
                counted: Counted::Requests("static", "4xx"),
                upstream: 0,
            };
            s.hostile(listener, path, &get(path, headers), want).await;
        }
        for path in inside {
            // The web UI falls back to index.html, the enrollment listener's plain root to 404.
            let (status, class) = if listener == "web" {
                (200, "2xx")
            } else {
                (404, "4xx")
            };
            let want = Want {
                status: Some(status),
                closes: false,
                counted: Counted::Requests("static", class),
                upstream: 0,
            };
            let answer = s.hostile(listener, path, &get(path, headers), want).await;
            assert!(
                !answer.unwrap().text().contains(SECRET),
                "{listener} {path}"
            );
        }
    }
}

// === absolute-form and Host ===

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_form_target_is_its_host_and_never_picks_the_upstream() {
    let s = setup().await;
    // Another server on loopback that a client would like takgate to reach.
    let elsewhere = FakeUpstream::start().await;
    let other = elsewhere.addr;
    for (listener, target, want_host) in [
        // RFC 9112 §3.2.2: the target's authority is the host, the Host header is ignored.
        ("web", format!("http://{other}/api/abs"), other.to_string()),
        (
            "web",
            format!("https://{other}/Marti/api/abs"),
            other.to_string(),
        ),
        // The profile's Host rule applies to it as to any Host (`$host:8443` on marti's /api).
        (
            "marti",
            "https://tak.example/api/abs".to_owned(),
            "tak.example:8443".to_owned(),
        ),
        (
            "marti",
            format!("http://{other}/Marti/api/abs"),
            other.to_string(),
        ),
    ] {
        s.hostile(
            listener,
            &target,
            &get(&target, "Host: good.example\r\n"),
            forwarded(if target.contains("/Marti/") {
                "marti"
            } else {
                "api"
            }),
        )
        .await;
        let seen = s.up.seen();
        let last = seen
            .iter()
            .rev()
            .find(|r| r.uri.path().ends_with("/abs"))
            .unwrap();
        assert_eq!(
            last.headers["host"],
            want_host.as_str(),
            "{listener} {target}"
        );
        assert!(
            last.uri.authority().is_none(),
            "OTS gets an origin-form target"
        );
    }
    assert!(elsewhere.seen().is_empty(), "only OTS is ever reached");
    // A static route: the UI, whatever the authority says.
    let want = Want {
        status: Some(200),
        closes: false,
        counted: Counted::Requests("static", "2xx"),
        upstream: 0,
    };
    let ui = get(
        &format!("http://{other}/index.html"),
        "Host: tak.example\r\n",
    );
    s.hostile("web", "absolute-form UI", &ui, want).await;
    // Userinfo has no place in a request target's authority.
    for listener in ["web", "marti"] {
        let target = format!("http://user:pw@{other}/api/abs");
        s.hostile(
            listener,
            "userinfo",
            &get(&target, "Host: h\r\n"),
            refused(400, "api", "bad_request"),
        )
        .await;
    }
    // The redirect is built from the same host.
    let answer = s
        .hostile(
            "redirect",
            "absolute-form redirect",
            &get("http://tak.example:80/map?x=1", "Host: evil.example\r\n"),
            Want {
                status: Some(301),
                closes: false,
                counted: Counted::Requests("static", "3xx"),
                upstream: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        answer.header("location"),
        Some("https://tak.example/map?x=1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_header_injection_is_refused_on_every_listener() {
    let s = setup().await;
    for listener in ["web", "marti", "enroll", "redirect"] {
        let (path, route) = match listener {
            "web" => ("/api/h", "api"),
            "marti" => ("/Marti/api/h", "marti"),
            "enroll" => ("/Marti/api/tls/h", "marti"),
            _ => ("/h", "static"),
        };
        for (case, headers) in [
            ("two Hosts", "Host: tak.example\r\nHost: evil.example\r\n"),
            ("no Host on HTTP/1.1", ""),
            ("Host with userinfo", "Host: tak.example@evil.example\r\n"),
            ("Host with a bad port", "Host: tak.example:99999\r\n"),
            ("Host with a path", "Host: evil.example/x\r\n"),
            ("Host with a space", "Host: tak example\r\n"),
        ] {
            s.hostile(
                listener,
                case,
                &get(path, headers),
                refused(400, route, "bad_request"),
            )
            .await;
        }
        // A Host of control characters or obs-text is refused by hyper's parser.
        s.hostile(
            listener,
            "Host with CR",
            &get(path, "Host: a\rb\r\n"),
            PARSE_400,
        )
        .await;
        // The static UI too: a bad Host is a bad request whatever the route.
        if listener == "web" {
            s.hostile(
                listener,
                "bad Host on the UI",
                &get("/", "Host: u@h\r\n"),
                refused(400, "static", "bad_request"),
            )
            .await;
        }
    }
    // HTTP/1.0 may omit Host: OTS gets the listener's server_name.
    s.hostile(
        "web",
        "HTTP/1.0 without Host",
        b"GET /api/old HTTP/1.0\r\n\r\n",
        forwarded("api"),
    )
    .await;
    assert_eq!(s.seen_at("/api/old").headers["host"], "tak.example");
}

// === spoofed identity and forwarding headers ===

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_certificate_and_forwarding_headers_never_reach_ots() {
    let s = setup().await;
    let spoof = "X-Ssl-Cert: -----BEGIN%20CERTIFICATE-----forged\r\n\
                 x-ssl-cert: second-copy\r\n\
                 X-SSL-CERT: third\r\n\
                 X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n\
                 X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\n\
                 X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\n\
                 X-Forwarded-Prefix: /evil\r\nX-Forwarded-Server: evil\r\n\
                 X-Original-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6;host=evil\r\n";
    let own_cert = takgate::http::client_cert::escaped_pem(&s.eud.der);
    for (listener, path, route, cert, proto) in [
        ("web", "/api/spoof", "api", None, "http"),
        (
            "marti",
            "/Marti/api/spoof",
            "marti",
            Some(own_cert.as_str()),
            "https",
        ),
        ("enroll", "/Marti/api/tls/spoof", "marti", None, "https"),
    ] {
        let bytes = get(path, &format!("Host: tak.example\r\n{spoof}"));
        s.hostile(listener, "spoofed headers", &bytes, forwarded(route))
            .await;
        let seen = s.seen_at(path);
        let all = |n: &str| -> Vec<String> {
            seen.headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        // Only the certificate of a verified mutual-TLS session, exactly once.
        let want_cert: Vec<String> = cert.into_iter().map(str::to_owned).collect();
        assert_eq!(all("x-ssl-cert"), want_cert, "{listener}");
        assert_eq!(all("x-forwarded-for"), ["127.0.0.1"], "{listener}");
        assert_eq!(all("x-real-ip"), ["127.0.0.1"], "{listener}");
        assert_eq!(all("x-forwarded-proto"), [proto], "{listener}");
        for dropped in [
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-original-forwarded-for",
            "forwarded",
        ] {
            assert!(all(dropped).is_empty(), "{listener}: {dropped}");
        }
    }
    // The redirect listener forwards nothing at all.
    let bytes = get("/x", &format!("Host: tak.example\r\n{spoof}"));
    let want = Want {
        status: Some(301),
        closes: false,
        counted: Counted::Requests("static", "3xx"),
        upstream: 0,
    };
    s.hostile("redirect", "spoofed headers", &bytes, want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_upgrade_over_tls_is_plain_http() {
    let s = setup().await;
    for (case, bytes) in [
        (
            "h2c",
            get(
                "/Marti/api/up",
                "Host: tak.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                 HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
            ),
        ),
        (
            "a made-up protocol",
            get(
                "/Marti/api/up",
                "Host: tak.example\r\nConnection: upgrade\r\nUpgrade: takgate-shell/1\r\n",
            ),
        ),
        (
            "websocket on POST",
            post_upload(
                "Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n",
                "",
            ),
        ),
    ] {
        let route = if case.contains("POST") {
            "api"
        } else {
            "marti"
        };
        let answer = s
            .hostile("marti", case, &bytes, forwarded(route))
            .await
            .unwrap();
        assert_ne!(answer.status, 101);
        let path = if route == "api" {
            "/api/upload"
        } else {
            "/Marti/api/up"
        };
        let seen = s.seen_at(path);
        assert!(!seen.headers.contains_key("upgrade"), "{case}");
        assert!(!seen.headers.contains_key("http2-settings"), "{case}");
        assert!(!seen.headers.contains_key("connection"), "{case}");
    }
    assert_eq!(
        s.proxy.metric("takgate_websocket_sessions_open", &[]),
        0.0,
        "nothing was relayed as an upgrade"
    );
}

/// The same hostile set through a second connection must not disturb a request in flight on
/// another: one slow request upstream keeps going while hostile clients come and go.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_flight_is_undisturbed_by_hostile_neighbours() {
    let s = setup().await;
    let addr = s.addr("web");
    let slow = tokio::spawn(async move {
        let req = "GET /api/hold HTTP/1.1\r\nHost: tak.example\r\nConnection: close\r\n\r\n";
        let mut conn = connect(addr, None).await.unwrap();
        conn.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut conn).await
    });
    within(s.up.held()).await;
    for bytes in [
        post_upload("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        get("/api/a\0b", "Host: h\r\n"),
        get("/api/x", "Host: a\r\nHost: b\r\n"),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
    ] {
        let (_, _) = s.send("web", &bytes).await;
    }
    s.up.release();
    let answer = within(slow).await.unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "released");
}
