use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, StatusCode, Uri};

use super::*;
use crate::config::UpstreamConfig;
use crate::error::ErrorKind;
use crate::http::body;
use crate::http::router::{HostHeader, ProxyRoute, RouteClass, Upstream};

fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}

fn join(base: &str, strip: Option<&str>, req: &str) -> String {
    upstream_uri(&uri(base), strip, &uri(req))
        .unwrap()
        .to_string()
}

// === upstream_uri ===

#[test]
fn upstream_uri_strips_the_prefix_and_keeps_the_query() {
    assert_eq!(
        join("https://127.0.0.1:8889", Some("/webrtc"), "/webrtc/a/b?x=1"),
        "https://127.0.0.1:8889/a/b?x=1"
    );
}

#[test]
fn upstream_uri_bare_prefix_becomes_root() {
    assert_eq!(
        join("https://127.0.0.1:8889", Some("/webrtc"), "/webrtc"),
        "https://127.0.0.1:8889/"
    );
    assert_eq!(
        join("https://127.0.0.1:8889", Some("/webrtc"), "/webrtc/"),
        "https://127.0.0.1:8889/"
    );
    // nginx: ^/webrtc(/?)(.*)$ with $2 empty, then $is_args$args.
    assert_eq!(
        join("https://127.0.0.1:8889", Some("/webrtc"), "/webrtc?token=t"),
        "https://127.0.0.1:8889/?token=t"
    );
}

#[test]
fn upstream_uri_without_strip_keeps_the_path() {
    assert_eq!(
        join(
            "http://127.0.0.1:8081",
            None,
            "/socket.io/?EIO=4&transport=polling&t=x"
        ),
        "http://127.0.0.1:8081/socket.io/?EIO=4&transport=polling&t=x"
    );
    assert_eq!(
        join("http://127.0.0.1:8081", None, "/api/login"),
        "http://127.0.0.1:8081/api/login"
    );
}

#[test]
fn upstream_uri_joins_the_base_path() {
    assert_eq!(
        join("http://up:9000/base", None, "/x/y?q=1"),
        "http://up:9000/base/x/y?q=1"
    );
    assert_eq!(
        join("http://up:9000/base/", None, "/x"),
        "http://up:9000/base/x"
    );
    assert_eq!(
        join(
            "http://up:9000/base",
            Some("/grafana"),
            "/grafana/d/1?orgId=1"
        ),
        "http://up:9000/base/d/1?orgId=1"
    );
    assert_eq!(
        join("http://up:9000/base", Some("/grafana"), "/grafana"),
        "http://up:9000/base/"
    );
}

#[test]
fn upstream_uri_takes_scheme_and_authority_from_the_base() {
    // An absolute-form request target must not redirect the request elsewhere.
    assert_eq!(
        join("http://127.0.0.1:8081", None, "http://evil.example/api/x?y"),
        "http://127.0.0.1:8081/api/x?y"
    );
}

#[test]
fn upstream_uri_keeps_encoded_characters() {
    assert_eq!(
        join("http://127.0.0.1:8081", None, "/api/files/a%20b%2Fc?q=%26"),
        "http://127.0.0.1:8081/api/files/a%20b%2Fc?q=%26"
    );
}

// === host_header ===

/// The Host sent upstream for a client Host that passed `head::canonicalize`: the value reused
/// without a second parse is the one the parse gives, and the default host gives it too.
fn host(client: &str, rule: HostHeader) -> String {
    let parsed = host_header(client, rule).unwrap();
    let checked = HeaderValue::from_str(client).unwrap();
    assert_eq!(
        upstream_host(Some(&checked), "unused", rule).unwrap(),
        parsed
    );
    assert_eq!(upstream_host(None, client, rule).unwrap(), parsed);
    let empty = HeaderValue::from_static("");
    assert_eq!(upstream_host(Some(&empty), client, rule).unwrap(), parsed);
    parsed.to_str().unwrap().to_owned()
}

#[test]
fn host_verbatim_keeps_the_port() {
    assert_eq!(
        host("tak.example.org:8080", HostHeader::Verbatim),
        "tak.example.org:8080"
    );
    assert_eq!(
        host("tak.example.org", HostHeader::Verbatim),
        "tak.example.org"
    );
    assert_eq!(
        host("10.0.0.5:31080", HostHeader::Verbatim),
        "10.0.0.5:31080"
    );
}

#[test]
fn host_default_port_is_added_only_without_a_port() {
    assert_eq!(
        host("tak.example.org", HostHeader::DefaultPort(443)),
        "tak.example.org:443"
    );
    assert_eq!(
        host("tak.example.org", HostHeader::DefaultPort(8443)),
        "tak.example.org:8443"
    );
    assert_eq!(
        host("tak.example.org:31443", HostHeader::DefaultPort(443)),
        "tak.example.org:31443"
    );
    assert_eq!(
        host("tak.example.org:443", HostHeader::DefaultPort(443)),
        "tak.example.org:443"
    );
}

#[test]
fn host_ipv6_literals() {
    assert_eq!(host("[::1]:8080", HostHeader::Verbatim), "[::1]:8080");
    assert_eq!(
        host("[::1]:8080", HostHeader::DefaultPort(443)),
        "[::1]:8080"
    );
    assert_eq!(host("[::1]", HostHeader::DefaultPort(443)), "[::1]:443");
    assert_eq!(host("[fd00::5]", HostHeader::Verbatim), "[fd00::5]");
}

#[test]
fn host_that_is_not_an_authority_is_an_error() {
    for bad in ["a b", "tak.example.org/path", "[::1", "", "h?x", "h#x"] {
        assert!(host_header(bad, HostHeader::Verbatim).is_err(), "{bad}");
        assert!(
            host_header(bad, HostHeader::DefaultPort(443)).is_err(),
            "{bad}"
        );
    }
}

// === strip_hop_by_hop ===

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn strip_hop_by_hop_removes_standard_and_connection_listed_headers() {
    let mut h = headers(&[
        ("connection", "keep-alive, X-Hop, x-other-hop"),
        ("connection", "X-Second-Line"),
        ("x-hop", "1"),
        ("x-other-hop", "2"),
        ("x-second-line", "3"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "Expires"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("cookie", "session=abc; XSRF-TOKEN=t"),
        ("authorization", "Bearer t"),
        ("x-xsrf-token", "t"),
        ("content-type", "application/json"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]);
    strip_hop_by_hop(&mut h);
    for gone in [
        "connection",
        "x-hop",
        "x-other-hop",
        "x-second-line",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert!(!h.contains_key(gone), "{gone} kept: {h:?}");
    }
    assert_eq!(h["cookie"], "session=abc; XSRF-TOKEN=t");
    assert_eq!(h["authorization"], "Bearer t");
    assert_eq!(h["x-xsrf-token"], "t");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(h.len(), 5, "{h:?}");
}

#[test]
fn strip_hop_by_hop_keeps_every_set_cookie() {
    let mut h = headers(&[
        (
            "set-cookie",
            "session=abc; HttpOnly; Path=/; SameSite=Strict",
        ),
        ("set-cookie", "XSRF-TOKEN=t; Path=/"),
        ("set-cookie", "remember_token=r; Path=/"),
        ("connection", "close"),
        ("vary", "Origin"),
    ]);
    strip_hop_by_hop(&mut h);
    let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(
        cookies,
        [
            "session=abc; HttpOnly; Path=/; SameSite=Strict",
            "XSRF-TOKEN=t; Path=/",
            "remember_token=r; Path=/"
        ]
    );
    assert_eq!(h["vary"], "Origin");
    assert!(!h.contains_key(header::CONNECTION));
}

#[test]
fn strip_hop_by_hop_ignores_junk_connection_tokens() {
    let mut h = headers(&[
        ("connection", " , bad token ,X-Hop"),
        ("x-hop", "1"),
        ("x-keep", "1"),
    ]);
    strip_hop_by_hop(&mut h);
    assert!(!h.contains_key("x-hop"));
    assert_eq!(h["x-keep"], "1");
}

#[test]
fn clean_response_headers_keeps_the_switch_on_101_only() {
    let mut switching = Response::new(());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *switching.headers_mut() = headers(&[
        ("connection", "Upgrade, X-Hop"),
        ("upgrade", "websocket"),
        ("x-hop", "1"),
        ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("keep-alive", "timeout=5"),
    ]);
    clean_response_headers(&mut switching);
    let h = switching.headers();
    assert_eq!(h[header::CONNECTION], "upgrade");
    assert_eq!(h[header::UPGRADE], "websocket");
    assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert!(!h.contains_key("x-hop"));
    assert!(!h.contains_key("keep-alive"));

    let mut ok = Response::new(());
    *ok.headers_mut() = headers(&[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("content-type", "text/plain"),
    ]);
    clean_response_headers(&mut ok);
    assert!(!ok.headers().contains_key(header::CONNECTION));
    assert!(!ok.headers().contains_key(header::UPGRADE));
    assert_eq!(ok.headers()["content-type"], "text/plain");
}

// === Forwarder::upstream_request ===

const CERT_ESCAPED: &str =
    "-----BEGIN%20CERTIFICATE-----%0AMIIB%2Babc%0A-----END%20CERTIFICATE-----%0A";

fn forwarder() -> Forwarder {
    forwarder_with("x-ssl-cert")
}

fn forwarder_with(cert_header: &'static str) -> Forwarder {
    Forwarder::new(
        &UpstreamConfig::default(),
        HeaderName::from_static(cert_header),
    )
    .unwrap()
}

fn api_route(host: HostHeader) -> ProxyRoute {
    ProxyRoute {
        class: RouteClass::Api,
        upstream: Arc::new(Upstream {
            uri: uri("http://127.0.0.1:8081"),
            tls_verify: true,
        }),
        strip: None,
        host,
    }
}

fn media_route() -> ProxyRoute {
    ProxyRoute {
        class: RouteClass::Other,
        upstream: Arc::new(Upstream {
            uri: uri("https://127.0.0.1:8889"),
            tls_verify: false,
        }),
        strip: Some("/webrtc".to_owned()),
        host: HostHeader::Verbatim,
    }
}

fn tls_client(cert: Option<&str>) -> ClientInfo {
    ClientInfo {
        peer: "203.0.113.7:51234".parse().unwrap(),
        scheme: Scheme::HTTPS,
        client_cert: cert.map(|c| HeaderValue::from_str(c).unwrap()),
    }
}

fn plain_client() -> ClientInfo {
    ClientInfo {
        peer: "198.51.100.9:40000".parse().unwrap(),
        scheme: Scheme::HTTP,
        client_cert: None,
    }
}

/// A request as a hostile or confused client might send it.
fn spoofing_request(target: &str, host: &str) -> Request<body::Body> {
    let mut req = Request::builder()
        .method("POST")
        .uri(target)
        .version(http::Version::HTTP_10)
        .body(body::full("{}"))
        .unwrap();
    *req.headers_mut() = headers(&[
        ("host", host),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/evil"),
        ("x-forwarded-server", "evil"),
        ("x-original-forwarded-for", "127.0.0.1"),
        ("forwarded", "for=127.0.0.1;host=evil.example;proto=https"),
        ("x-ssl-cert", "-----BEGIN%20CERTIFICATE-----%0AFORGED"),
        ("x-ssl-cert", "second-forged"),
        ("cookie", "session=abc.def; XSRF-TOKEN=tok"),
        ("x-xsrf-token", "tok"),
        ("content-type", "application/json"),
        ("connection", "keep-alive, X-Hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
    ]);
    req
}

fn one(h: &HeaderMap, name: &str) -> String {
    let values: Vec<_> = h.get_all(name).iter().collect();
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn upstream_request_sets_the_ots_header_contract_on_tls() {
    let f = forwarder();
    let req = spoofing_request("/api/login?include_auth_token", "tak.example.org");
    let out = f
        .upstream_request(
            &api_route(HostHeader::DefaultPort(443)),
            &tls_client(Some(CERT_ESCAPED)),
            "0.0.0.0:443",
            None,
            req,
        )
        .unwrap();
    assert_eq!(
        out.uri().to_string(),
        "http://127.0.0.1:8081/api/login?include_auth_token"
    );
    assert_eq!(out.version(), http::Version::HTTP_11);
    assert_eq!(out.method(), http::Method::POST);
    let h = out.headers();
    assert_eq!(one(h, "host"), "tak.example.org:443");
    assert_eq!(one(h, "x-forwarded-for"), "203.0.113.7");
    assert_eq!(one(h, "x-real-ip"), "203.0.113.7");
    assert_eq!(one(h, "x-forwarded-proto"), "https");
    assert_eq!(one(h, "x-ssl-cert"), CERT_ESCAPED);
    assert_eq!(one(h, "cookie"), "session=abc.def; XSRF-TOKEN=tok");
    assert_eq!(one(h, "x-xsrf-token"), "tok");
    assert_eq!(one(h, "content-type"), "application/json");
    for gone in [
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-original-forwarded-for",
        "forwarded",
        "connection",
        "upgrade",
        "x-hop",
        "keep-alive",
        "te",
    ] {
        assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
    }
}

#[tokio::test]
async fn upstream_request_on_plain_http_drops_a_client_sent_cert() {
    let f = forwarder();
    let req = spoofing_request("/Marti/api/clientEndPoints", "tak.example.org:8080");
    let out = f
        .upstream_request(
            &api_route(HostHeader::Verbatim),
            &plain_client(),
            "0.0.0.0:8080",
            None,
            req,
        )
        .unwrap();
    let h = out.headers();
    assert!(
        !h.contains_key("x-ssl-cert"),
        "forged cert forwarded: {h:?}"
    );
    assert_eq!(one(h, "host"), "tak.example.org:8080");
    assert_eq!(one(h, "x-forwarded-for"), "198.51.100.9");
    assert_eq!(one(h, "x-real-ip"), "198.51.100.9");
    assert_eq!(one(h, "x-forwarded-proto"), "http");
}

#[tokio::test]
async fn upstream_request_on_tls_without_a_client_cert_sends_none() {
    let f = forwarder();
    let req = spoofing_request("/api/x", "tak.example.org");
    let out = f
        .upstream_request(
            &api_route(HostHeader::DefaultPort(443)),
            &tls_client(None),
            "0.0.0.0:443",
            None,
            req,
        )
        .unwrap();
    assert!(!out.headers().contains_key("x-ssl-cert"));
}

#[tokio::test]
async fn upstream_request_uses_the_configured_cert_header() {
    let f = forwarder_with("x-client-cert");
    let mut req = spoofing_request("/Marti/api/x", "tak.example.org");
    req.headers_mut()
        .insert("x-client-cert", HeaderValue::from_static("forged"));
    let out = f
        .upstream_request(
            &api_route(HostHeader::Verbatim),
            &tls_client(Some(CERT_ESCAPED)),
            "0.0.0.0:8443",
            None,
            req,
        )
        .unwrap();
    assert_eq!(one(out.headers(), "x-client-cert"), CERT_ESCAPED);
}

#[tokio::test]
async fn upstream_request_ipv6_peer_and_host() {
    let f = forwarder();
    let mut req = spoofing_request("/socket.io/?EIO=4&transport=polling", "[::1]:8080");
    req.headers_mut().remove("x-ssl-cert");
    let client = ClientInfo {
        peer: "[2001:db8::7]:50000".parse().unwrap(),
        scheme: Scheme::HTTP,
        client_cert: None,
    };
    let out = f
        .upstream_request(
            &api_route(HostHeader::Verbatim),
            &client,
            "[::]:8080",
            None,
            req,
        )
        .unwrap();
    let h = out.headers();
    assert_eq!(one(h, "host"), "[::1]:8080");
    assert_eq!(one(h, "x-forwarded-for"), "2001:db8::7");
    assert_eq!(one(h, "x-real-ip"), "2001:db8::7");
}

#[tokio::test]
async fn upstream_request_without_host_uses_the_default() {
    let f = forwarder();
    let mut req = spoofing_request("/api/health", "x");
    req.headers_mut().remove(header::HOST);
    let out = f
        .upstream_request(
            &api_route(HostHeader::DefaultPort(8443)),
            &tls_client(None),
            "tak.example.org",
            None,
            req,
        )
        .unwrap();
    assert_eq!(one(out.headers(), "host"), "tak.example.org:8443");

    // An empty Host counts as absent.
    let mut req = spoofing_request("/api/health", "x");
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static(""));
    let out = f
        .upstream_request(
            &api_route(HostHeader::Verbatim),
            &plain_client(),
            "0.0.0.0:8080",
            None,
            req,
        )
        .unwrap();
    assert_eq!(one(out.headers(), "host"), "0.0.0.0:8080");
}

/// A bad Host never reaches `upstream_request`: `head::canonicalize` answers 400 first, which is
/// why the forwarder reuses a client's Host without parsing it again.
#[tokio::test]
async fn a_bad_host_is_a_bad_request_before_forwarding() {
    let mut req = spoofing_request("/api/x", "bad host");
    let err = crate::http::head::canonicalize(&mut req).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert_eq!(err.kind.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn upstream_request_upgrade_sets_connection_and_upgrade() {
    let f = forwarder();
    let mut req = spoofing_request(
        "/socket.io/?EIO=4&transport=websocket&sid=abc",
        "tak.example.org:8080",
    );
    req.headers_mut().insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    req.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    let out = f
        .upstream_request(
            &api_route(HostHeader::Verbatim),
            &plain_client(),
            "0.0.0.0:8080",
            Some(HeaderValue::from_static("websocket")),
            req,
        )
        .unwrap();
    let h = out.headers();
    assert_eq!(one(h, "connection"), "upgrade");
    assert_eq!(one(h, "upgrade"), "websocket");
    assert_eq!(one(h, "sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(one(h, "sec-websocket-version"), "13");
    assert_eq!(one(h, "host"), "tak.example.org:8080");
    assert_eq!(one(h, "cookie"), "session=abc.def; XSRF-TOKEN=tok");
    assert!(!h.contains_key("keep-alive"));
}

#[tokio::test]
async fn upstream_request_without_upgrade_sends_no_upgrade_headers() {
    let f = forwarder();
    let mut req = spoofing_request("/socket.io/?EIO=4", "h:8080");
    req.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let out = f
        .upstream_request(
            &api_route(HostHeader::Verbatim),
            &plain_client(),
            "0.0.0.0:8080",
            None,
            req,
        )
        .unwrap();
    assert!(!out.headers().contains_key(header::UPGRADE));
    assert!(!out.headers().contains_key(header::CONNECTION));
}

#[tokio::test]
async fn upstream_request_strips_the_media_prefix() {
    let f = forwarder();
    let req = spoofing_request("/webrtc/live/cam1/whep?token=t", "tak.example.org");
    let out = f
        .upstream_request(&media_route(), &tls_client(None), "0.0.0.0:443", None, req)
        .unwrap();
    assert_eq!(
        out.uri().to_string(),
        "https://127.0.0.1:8889/live/cam1/whep?token=t"
    );
    assert_eq!(one(out.headers(), "host"), "tak.example.org");
}

#[tokio::test]
async fn forwarder_reports_its_response_timeout() {
    let config = UpstreamConfig {
        response_timeout: Duration::from_secs(77),
        ..UpstreamConfig::default()
    };
    let f = Forwarder::new(&config, HeaderName::from_static("x-ssl-cert")).unwrap();
    assert_eq!(f.response_timeout(), Duration::from_secs(77));
}

// === body helpers ===

#[test]
fn is_idle_timeout_finds_the_cause_in_a_chain() {
    let direct = IdleTimedOut(Duration::from_secs(1));
    assert!(is_idle_timeout(&direct));
    let wrapped = ClientBodyError(Box::new(IdleTimedOut(Duration::from_secs(1))));
    assert!(is_idle_timeout(&wrapped));
    let other = ClientBodyError("reset".into());
    assert!(!is_idle_timeout(&other));
}

#[test]
fn host_with_userinfo_or_a_bad_port_is_an_error() {
    for bad in ["u@h", "user:pw@tak.example", "h:99999", "h:", "tak:port"] {
        assert!(
            host_header(bad, HostHeader::Verbatim).is_err(),
            "{bad} must be refused"
        );
        assert!(
            host_header(bad, HostHeader::DefaultPort(443)).is_err(),
            "{bad}"
        );
    }
}
