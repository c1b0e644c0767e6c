use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};

use super::*;
use crate::config::CorsConfig;
use crate::http::body::Body;

fn parts(method: Method, host: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder()
        .method(method)
        .uri("/api/login")
        .header(header::HOST, host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(host: &str, origin: &str) -> Parts {
    parts(Method::GET, host, &[("origin", origin)])
}

fn preflight(host: &str, origin: &str, request_headers: Option<&str>) -> Parts {
    let mut h = vec![
        ("origin", origin),
        ("access-control-request-method", "POST"),
    ];
    if let Some(rh) = request_headers {
        h.push(("access-control-request-headers", rh));
    }
    parts(Method::OPTIONS, host, &h)
}

fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
    CorsPolicy::new(&CorsConfig {
        allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        allow_credentials: credentials,
        ..CorsConfig::default()
    })
}

#[track_caller]
fn proceed(d: Decision) -> Option<HeaderValue> {
    match d {
        Decision::Proceed { allow } => allow,
        Decision::Respond(r) => panic!("expected Proceed, got {} {:?}", r.status(), r.headers()),
    }
}

#[track_caller]
fn respond(d: Decision) -> Response<Body> {
    match d {
        Decision::Respond(r) => r,
        Decision::Proceed { allow } => {
            panic!("expected Respond, got Proceed {{ allow: {allow:?} }}")
        }
    }
}

/// The headers a response ends up with after `apply`, starting from `upstream`.
fn applied(p: &CorsPolicy, upstream: &[(&str, &str)], allow: Option<&HeaderValue>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in upstream {
        h.append(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    p.apply(&mut h, allow);
    h
}

fn vary_tokens(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::VARY)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

// === default policy: same origin only ===

#[test]
fn default_no_origin_proceeds_without_grant() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let req = parts(Method::GET, "h:8080", &[]);
    assert_eq!(proceed(p.decide(&req, "http", false)), None);
    assert_eq!(proceed(p.decide(&req, "http", true)), None);
}

#[test]
fn default_same_origin_passes_without_acao() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let allow = proceed(p.decide(&get("h:8080", "http://h:8080"), "http", false));
    assert_eq!(allow, None);
    let h = applied(&p, &[], allow.as_ref());
    assert!(
        !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{h:?}"
    );
    assert!(
        !h.contains_key(header::VARY),
        "closed policy adds no Vary: {h:?}"
    );
}

#[test]
fn default_foreign_origin_gets_no_acao() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let allow = proceed(p.decide(&get("h:8080", "http://evil.example"), "http", false));
    assert_eq!(allow, None);
    // Even if OTS's flask-cors echoed the origin, the client never sees it.
    let h = applied(
        &p,
        &[
            ("access-control-allow-origin", "http://evil.example"),
            ("access-control-allow-credentials", "true"),
        ],
        allow.as_ref(),
    );
    assert!(
        !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{h:?}"
    );
    assert!(
        !h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        "{h:?}"
    );
}

#[test]
fn default_foreign_websocket_upgrade_is_refused() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let r = respond(p.decide(&get("h:8080", "http://evil.example"), "http", true));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[test]
fn default_same_origin_websocket_upgrade_proceeds() {
    let p = CorsPolicy::new(&CorsConfig::default());
    assert_eq!(
        proceed(p.decide(&get("h:8080", "http://h:8080"), "http", true)),
        None
    );
    // Different port is a different origin.
    let r = respond(p.decide(&get("h:8080", "http://h:8081"), "http", true));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Different scheme is a different origin: an http page cannot open the https socket.
    let r = respond(p.decide(&get("h", "http://h"), "https", true));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[test]
fn https_default_port_is_the_same_origin() {
    let p = CorsPolicy::new(&CorsConfig::default());
    for (host, origin) in [
        ("h:443", "https://h"),
        ("h", "https://h:443"),
        ("h", "https://h"),
        ("H:443", "https://h"),
    ] {
        assert_eq!(
            proceed(p.decide(&get(host, origin), "https", true)),
            None,
            "{host} {origin}"
        );
    }
    assert!(same_origin(
        "http://h",
        "http",
        Some(&HeaderValue::from_static("h:80"))
    ));
    assert!(!same_origin(
        "https://h",
        "https",
        Some(&HeaderValue::from_static("h:8443"))
    ));
    assert!(!same_origin(
        "https://h:80",
        "https",
        Some(&HeaderValue::from_static("h"))
    ));
}

#[test]
fn same_origin_ipv6_and_missing_host() {
    let v6 = HeaderValue::from_static("[::1]:8080");
    assert!(same_origin("http://[::1]:8080", "http", Some(&v6)));
    assert!(!same_origin("http://[::1]", "http", Some(&v6)));
    assert!(same_origin(
        "https://[::1]",
        "https",
        Some(&HeaderValue::from_static("[::1]:443"))
    ));
    assert!(!same_origin("http://h", "http", None));
    assert!(!same_origin(
        "null",
        "http",
        Some(&HeaderValue::from_static("h"))
    ));
}

#[test]
fn default_foreign_preflight_is_refused_with_vary() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let r = respond(p.decide(
        &preflight("h:8080", "http://evil.example", None),
        "http",
        false,
    ));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert!(
        vary_tokens(r.headers()).contains(&"origin".to_owned()),
        "{r:?}"
    );
}

#[test]
fn options_without_request_method_is_not_a_preflight() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let req = parts(Method::OPTIONS, "h", &[("origin", "http://evil.example")]);
    assert_eq!(proceed(p.decide(&req, "http", false)), None);
}

// === configured origins ===

#[test]
fn exact_origin_is_granted() {
    let p = policy(&["https://tak.example.org:8443"], false);
    let origin = "https://tak.example.org:8443";
    let allow = proceed(p.decide(&get("ots:8080", origin), "http", false));
    assert_eq!(allow.as_ref().map(|v| v.to_str().unwrap()), Some(origin));
    // Other ports, schemes and hosts are not.
    for other in [
        "https://tak.example.org",
        "http://tak.example.org:8443",
        "https://evil.example.org:8443",
    ] {
        assert_eq!(
            proceed(p.decide(&get("ots:8080", other), "http", false)),
            None,
            "{other}"
        );
    }
    // A granted origin may open a WebSocket.
    assert!(proceed(p.decide(&get("ots:8080", origin), "http", true)).is_some());
}

#[test]
fn exact_origin_match_ignores_case_and_config_trailing_slash() {
    let p = policy(&["https://TAK.example.org/"], false);
    assert!(proceed(p.decide(&get("ots", "https://tak.EXAMPLE.org"), "http", false)).is_some());
}

#[test]
fn subdomain_pattern() {
    let p = policy(&["https://*.example.org"], false);
    for ok in [
        "https://a.example.org",
        "https://a.b.example.org:8443",
        "https://A.Example.Org",
    ] {
        assert!(
            proceed(p.decide(&get("ots:8080", ok), "http", false)).is_some(),
            "{ok} refused"
        );
    }
    for bad in [
        "https://example.org",
        "https://evil-example.org",
        "http://a.example.org",
        "https://a.example.org.evil.com",
        "https://.example.org",
        "null",
    ] {
        assert_eq!(
            proceed(p.decide(&get("ots:8080", bad), "http", false)),
            None,
            "{bad} granted"
        );
        let r = respond(p.decide(&get("ots:8080", bad), "http", true));
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad} websocket");
    }
}

#[test]
fn credentials_echo_the_origin_never_a_wildcard() {
    let p = policy(&["https://*.example.org"], true);
    let origin = HeaderValue::from_static("https://app.example.org");
    let h = applied(&p, &[], Some(&origin));
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.org"
    );
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(
        h.get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .iter()
            .count(),
        1
    );
}

#[test]
fn wildcard_without_credentials_grants_star() {
    let p = policy(&["*"], false);
    let allow = proceed(p.decide(&get("ots:8080", "https://anything.example"), "http", false));
    let allow = allow.expect("'*' grants every origin");
    let h = applied(&p, &[], Some(&allow));
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
}

#[test]
fn no_credentials_header_without_allow_credentials() {
    let p = policy(&["https://tak.example.org"], false);
    let origin = HeaderValue::from_static("https://tak.example.org");
    let h = applied(&p, &[], Some(&origin));
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://tak.example.org"
    );
    assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
}

#[test]
fn expose_headers_only_on_granted_responses() {
    let p = CorsPolicy::new(&CorsConfig {
        allowed_origins: vec!["https://tak.example.org".to_owned()],
        expose_headers: vec!["X-Total-Count".to_owned(), "ETag".to_owned()],
        ..CorsConfig::default()
    });
    let origin = HeaderValue::from_static("https://tak.example.org");
    let h = applied(&p, &[], Some(&origin));
    assert_eq!(
        h[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "X-Total-Count, ETag"
    );
    let h = applied(&p, &[("access-control-expose-headers", "Secret")], None);
    assert!(
        !h.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS),
        "{h:?}"
    );
}

// === preflight ===

#[test]
fn preflight_with_disallowed_header_is_refused() {
    let p = policy(&["https://tak.example.org"], true);
    let r = respond(p.decide(
        &preflight(
            "ots",
            "https://tak.example.org",
            Some("Content-Type, X-Evil"),
        ),
        "http",
        false,
    ));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert!(vary_tokens(r.headers()).contains(&"origin".to_owned()));
}

#[test]
fn allowed_preflight_is_answered_204() {
    let p = CorsPolicy::new(&CorsConfig {
        allowed_origins: vec!["https://tak.example.org".to_owned()],
        allow_credentials: true,
        max_age: Duration::from_secs(1234),
        ..CorsConfig::default()
    });
    let r = respond(p.decide(
        &preflight(
            "ots",
            "https://tak.example.org",
            Some("content-type,X-XSRF-TOKEN , authorization"),
        ),
        "http",
        false,
    ));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let h = r.headers();
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://tak.example.org"
    );
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
    assert!(allowed.contains("X-XSRF-Token"), "{allowed}");
    assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "1234");
    assert!(vary_tokens(h).contains(&"origin".to_owned()));
}

#[test]
fn preflight_without_requested_headers_is_allowed() {
    let p = policy(&["https://tak.example.org"], false);
    let r = respond(p.decide(
        &preflight("ots", "https://tak.example.org", None),
        "http",
        false,
    ));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[test]
fn preflight_from_a_non_allowed_origin_is_refused_even_with_good_headers() {
    let p = policy(&["https://tak.example.org"], false);
    let r = respond(p.decide(
        &preflight("ots", "https://evil.example.org", Some("content-type")),
        "http",
        false,
    ));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[test]
fn same_origin_preflight_is_allowed_by_default() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let r = respond(p.decide(
        &preflight("h:8080", "http://h:8080", Some("X-XSRF-Token")),
        "http",
        false,
    ));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

// === apply ===

#[test]
fn apply_replaces_upstream_cors_headers() {
    let p = policy(&["https://tak.example.org"], false);
    // What flask-cors (origins="*", supports_credentials) adds for any Origin.
    let upstream = [
        ("access-control-allow-origin", "https://evil.example"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "DELETE"),
        ("access-control-allow-headers", "X-Evil"),
        ("access-control-expose-headers", "Set-Cookie"),
        ("access-control-max-age", "99999"),
        ("content-type", "application/json"),
    ];
    let h = applied(&p, &upstream, None);
    for gone in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
    ] {
        assert!(!h.contains_key(gone), "{gone} kept: {h:?}");
    }
    assert_eq!(h["content-type"], "application/json");

    let origin = HeaderValue::from_static("https://tak.example.org");
    let h = applied(&p, &upstream, Some(&origin));
    assert_eq!(
        h.get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .iter()
            .count(),
        1
    );
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://tak.example.org"
    );
    assert!(
        !h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        "{h:?}"
    );
    assert!(
        !h.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS),
        "{h:?}"
    );
}

#[test]
fn apply_adds_vary_origin_when_the_policy_can_grant() {
    let p = policy(&["https://tak.example.org"], false);
    // Also on responses with no grant: a cache must not reuse them for an allowed origin.
    let h = applied(&p, &[], None);
    assert_eq!(vary_tokens(&h), ["origin"]);
    let h = applied(&p, &[("vary", "Accept-Encoding")], None);
    assert_eq!(vary_tokens(&h), ["accept-encoding", "origin"]);
}

#[test]
fn apply_does_not_duplicate_vary_origin() {
    let p = policy(&["https://tak.example.org"], false);
    let origin = HeaderValue::from_static("https://tak.example.org");
    for existing in ["Origin", "origin", "Accept-Encoding, Origin", "*"] {
        let h = applied(&p, &[("vary", existing)], Some(&origin));
        let tokens = vary_tokens(&h);
        assert!(
            tokens.iter().filter(|t| *t == "origin").count() <= 1,
            "{existing}: {tokens:?}"
        );
        assert_eq!(
            h.get_all(header::VARY).iter().count(),
            1,
            "{existing}: {h:?}"
        );
    }
    let h = applied(&p, &[("vary", "Accept-Encoding"), ("vary", "Origin")], None);
    assert_eq!(vary_tokens(&h), ["accept-encoding", "origin"]);
}

#[test]
fn apply_adds_no_vary_for_a_same_origin_only_policy() {
    let p = CorsPolicy::new(&CorsConfig::default());
    let h = applied(&p, &[("vary", "Accept-Encoding")], None);
    assert_eq!(vary_tokens(&h), ["accept-encoding"]);
}

#[test]
fn a_configured_default_port_matches_what_browsers_send() {
    let p = policy(
        &["https://ui.example.org:443", "http://ui.example.org:80"],
        true,
    );
    assert!(proceed(p.decide(&get("tak:8080", "https://ui.example.org"), "http", false)).is_some());
    assert!(proceed(p.decide(&get("tak:8080", "http://ui.example.org"), "http", false)).is_some());
    assert!(proceed(p.decide(
        &get("tak:8080", "https://ui.example.org:8443"),
        "http",
        false
    ))
    .is_none());
}
