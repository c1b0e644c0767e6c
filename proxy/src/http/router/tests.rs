use http::Uri;

use super::*;
use crate::config::Config;

const API: &str = "http://127.0.0.1:8081";

/// The paths every profile is checked against.
const PATHS: [&str; 13] = [
    "/",
    "/index.html",
    "/map/1",
    "/api",
    "/api/login",
    "/apix",
    "/Marti/api/version/config",
    "/Marti/api/tls/config",
    "/socket.io/?EIO=4",
    "/webrtc/x",
    "/hls/x",
    "/files/api/config",
    "/oauth/token",
];

/// What a path should do, in a form that can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    Spa,
    Files,
    NotFound,
    Redirect(u16),
    /// Proxied to the OTS API.
    Ots(RouteClass, HostHeader),
    /// Proxied to MediaMTX with the prefix stripped and the certificate unchecked.
    Media(&'static str, &'static str),
}

use Want::*;

fn describe(action: &Action) -> Want {
    match action {
        Action::Static { spa: true } => Spa,
        Action::Static { spa: false } => Files,
        Action::NotFound => NotFound,
        Action::Redirect { https_port } => Redirect(*https_port),
        Action::Proxy(r) if r.upstream.uri == API => {
            assert!(r.upstream.tls_verify, "OTS upstream: {action}");
            assert_eq!(r.strip, None, "OTS routes keep the path: {action}");
            Ots(r.class, r.host)
        }
        Action::Proxy(r) => {
            assert_eq!(r.class, RouteClass::Other, "{action}");
            assert_eq!(r.host, HostHeader::Verbatim, "{action}");
            assert!(!r.upstream.tls_verify, "MediaMTX is self-signed: {action}");
            let upstream = match r.upstream.uri.to_string().as_str() {
                "https://127.0.0.1:8889/" => "https://127.0.0.1:8889",
                "https://127.0.0.1:8888/" => "https://127.0.0.1:8888",
                other => panic!("unexpected upstream {other}"),
            };
            let strip = match r.strip.as_deref() {
                Some("/webrtc") => "/webrtc",
                Some("/hls") => "/hls",
                other => panic!("unexpected strip {other:?}"),
            };
            Media(upstream, strip)
        }
    }
}

fn listener_toml(profile: &str, tls: bool, extra: &str) -> String {
    let mut text = format!(
        "[[http]]\nname = \"l\"\nlisten = \"0.0.0.0:8000\"\nprofile = \"{profile}\"\n{extra}\n"
    );
    if tls {
        text.push_str(
            "[http.tls]\ncert = \"/c/server.pem\"\nkey = \"/c/server.key\"\n\
             client_ca = \"/c/ca.pem\"\nclient_auth = \"optional\"\n",
        );
    }
    text
}

fn router_from(toml: &str) -> Router {
    let config = Config::parse(toml).unwrap();
    Router::new(&config.http[0], &config.upstream.url)
}

fn router(profile: &str, tls: bool) -> Router {
    router_from(&listener_toml(profile, tls, ""))
}

fn route<'r>(router: &'r Router, target: &str) -> &'r Action {
    let uri: Uri = target.parse().unwrap();
    router.route(uri.path())
}

#[track_caller]
fn check_table(router: &Router, want: [Want; 13]) {
    let mut wrong = Vec::new();
    for (path, want) in PATHS.iter().zip(want) {
        let got = describe(route(router, path));
        if got != want {
            wrong.push(format!("{path}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}\nrouter:\n{router}", wrong.join("\n"));
}

const WEBRTC: Want = Media("https://127.0.0.1:8889", "/webrtc");
const HLS: Want = Media("https://127.0.0.1:8888", "/hls");

// === the nginx table, profile by profile ===

/// ots_http 8080: /api and /Marti (unauthenticated) to OTS, socket.io, media, SPA fallback.
#[test]
fn web_plain_matches_ots_http_8080() {
    check_table(
        &router("web", false),
        [
            Spa,
            Spa,
            Spa,
            Ots(RouteClass::Api, HostHeader::Verbatim),
            Ots(RouteClass::Api, HostHeader::Verbatim),
            Spa,
            Ots(RouteClass::Marti, HostHeader::Verbatim),
            Ots(RouteClass::Marti, HostHeader::Verbatim),
            Ots(RouteClass::SocketIo, HostHeader::Verbatim),
            WEBRTC,
            HLS,
            Spa,
            Spa,
        ],
    );
}

/// ots_https 443: /Marti is 404, /api gets `Host $host:443`.
#[test]
fn web_tls_matches_ots_https_443() {
    check_table(
        &router("web", true),
        [
            Spa,
            Spa,
            Spa,
            Ots(RouteClass::Api, HostHeader::DefaultPort(443)),
            Ots(RouteClass::Api, HostHeader::DefaultPort(443)),
            Spa,
            NotFound,
            NotFound,
            Ots(RouteClass::SocketIo, HostHeader::Verbatim),
            WEBRTC,
            HLS,
            Spa,
            Spa,
        ],
    );
}

/// ots_https 8443: /Marti (not /Marti/api/tls), /api with :8443, /files with :443, plain static.
#[test]
fn marti_matches_ots_https_8443() {
    check_table(
        &router("marti", true),
        [
            Files,
            Files,
            Files,
            Ots(RouteClass::Api, HostHeader::DefaultPort(8443)),
            Ots(RouteClass::Api, HostHeader::DefaultPort(8443)),
            Files,
            Ots(RouteClass::Marti, HostHeader::Verbatim),
            NotFound,
            Files,
            Files,
            Files,
            Ots(RouteClass::Api, HostHeader::DefaultPort(443)),
            Files,
        ],
    );
}

/// ots_certificate_enrollment 8446: only /Marti/api/tls and /oauth reach OTS.
#[test]
fn enroll_matches_ots_certificate_enrollment_8446() {
    check_table(
        &router("enroll", true),
        [
            Files,
            Files,
            Files,
            Files,
            Files,
            Files,
            Files,
            Ots(RouteClass::Marti, HostHeader::Verbatim),
            Files,
            Files,
            Files,
            Files,
            Ots(RouteClass::Api, HostHeader::DefaultPort(443)),
        ],
    );
}

/// ots_http 80: everything is a 301 to https.
#[test]
fn redirect_sends_everything_to_https() {
    check_table(&router("redirect", false), [const { Redirect(443) }; 13]);
    let custom = router_from(&listener_toml("redirect", false, "https_port = 8443"));
    check_table(&custom, [const { Redirect(8443) }; 13]);
}

/// The routing decision does not depend on TLS for the profiles that are always TLS in OTS.
#[test]
fn marti_and_enroll_route_the_same_without_tls() {
    for profile in ["marti", "enroll"] {
        let with = router(profile, true);
        let without = router(profile, false);
        for path in PATHS {
            assert_eq!(
                describe(route(&with, path)),
                describe(route(&without, path)),
                "{profile} {path}"
            );
        }
    }
}

// === matching details ===

#[test]
fn prefixes_match_whole_segments_only() {
    let web = router("web", false);
    for path in [
        "/apix",
        "/api.json",
        "/Martix",
        "/socket.iox",
        "/hlsx",
        "/webrtc2",
    ] {
        assert_eq!(describe(route(&web, path)), Spa, "{path}");
    }
    for path in ["/api/", "/Marti/", "/socket.io", "/socket.io/"] {
        assert!(matches!(route(&web, path), Action::Proxy(_)), "{path}");
    }
    assert_eq!(describe(route(&web, "/hls")), HLS);
    assert_eq!(describe(route(&web, "/webrtc")), WEBRTC);
}

#[test]
fn marti_api_tls_is_blocked_on_marti_only_under_that_prefix() {
    let marti = router("marti", true);
    assert_eq!(describe(route(&marti, "/Marti/api/tls")), NotFound);
    assert_eq!(
        describe(route(&marti, "/Marti/api/tls/signClient/v2")),
        NotFound
    );
    // Segment match: a sibling that merely starts with "tls" is still the Marti API.
    assert_eq!(
        describe(route(&marti, "/Marti/api/tlsx")),
        Ots(RouteClass::Marti, HostHeader::Verbatim)
    );
    assert_eq!(
        describe(route(&marti, "/Marti/api")),
        Ots(RouteClass::Marti, HostHeader::Verbatim)
    );
}

#[test]
fn matching_is_case_sensitive_like_nginx() {
    let web = router("web", false);
    assert_eq!(describe(route(&web, "/API/login")), Spa);
    assert_eq!(describe(route(&web, "/marti/api/version")), Spa);
}

#[test]
fn proxied_routes_use_the_configured_upstream() {
    let r = router_from(&format!(
        "[upstream]\nurl = \"http://ots.internal:9000\"\n{}",
        listener_toml("web", false, "")
    ));
    let Action::Proxy(api) = route(&r, "/api/login") else {
        panic!("not proxied");
    };
    assert_eq!(api.upstream.uri, "http://ots.internal:9000");
}

// === custom routes ===

#[test]
fn custom_route_replaces_the_default_for_the_same_prefix() {
    let r = router_from(&listener_toml(
        "web",
        false,
        "[[http.route]]\nprefix = \"/hls\"\nupstream = \"http://mediamtx:8888\"\n",
    ));
    let Action::Proxy(hls) = route(&r, "/hls/stream/index.m3u8") else {
        panic!("not proxied");
    };
    assert_eq!(hls.upstream.uri, "http://mediamtx:8888");
    assert_eq!(hls.class, RouteClass::Other);
    assert_eq!(hls.strip, None, "strip_prefix defaults to false");
    assert!(hls.upstream.tls_verify, "tls_verify defaults to true");
    assert_eq!(hls.host, HostHeader::Verbatim);
    // Only one /hls route: the default is gone, not shadowed.
    let hls_routes = r.routes.iter().filter(|(p, _)| p == "/hls").count();
    assert_eq!(hls_routes, 1);
    // The other default media route is untouched.
    assert_eq!(describe(route(&r, "/webrtc/x")), WEBRTC);
}

#[test]
fn custom_route_keeps_strip_and_tls_settings() {
    let r = router_from(&listener_toml(
        "web",
        false,
        "[[http.route]]\nprefix = \"/grafana\"\nupstream = \"https://grafana:3000/base\"\n\
         strip_prefix = true\ntls_verify = false\n",
    ));
    let Action::Proxy(g) = route(&r, "/grafana/d/1") else {
        panic!("not proxied");
    };
    assert_eq!(g.class, RouteClass::Other);
    assert_eq!(g.strip.as_deref(), Some("/grafana"));
    assert!(!g.upstream.tls_verify);
    assert_eq!(g.upstream.uri, "https://grafana:3000/base");
    assert_eq!(describe(route(&r, "/grafanax")), Spa);
}

#[test]
fn custom_route_can_replace_a_profile_route() {
    let r = router_from(&listener_toml(
        "marti",
        true,
        "[[http.route]]\nprefix = \"/Marti/api/tls\"\nupstream = \"http://enroll:9000\"\n",
    ));
    let Action::Proxy(t) = route(&r, "/Marti/api/tls/config") else {
        panic!("custom route did not replace the 404");
    };
    assert_eq!(t.upstream.uri, "http://enroll:9000");
    assert_eq!(t.class, RouteClass::Other);
    assert_eq!(
        describe(route(&r, "/Marti/api/version")),
        Ots(RouteClass::Marti, HostHeader::Verbatim)
    );
}

#[test]
fn longest_prefix_wins_regardless_of_config_order() {
    let r = router_from(&listener_toml(
        "web",
        false,
        "[[http.route]]\nprefix = \"/api/special\"\nupstream = \"http://special:1\"\n",
    ));
    let Action::Proxy(s) = route(&r, "/api/special/x") else {
        panic!("not proxied");
    };
    assert_eq!(s.upstream.uri, "http://special:1");
    assert_eq!(
        describe(route(&r, "/api/login")),
        Ots(RouteClass::Api, HostHeader::Verbatim)
    );
    assert_eq!(
        describe(route(&r, "/api/specialx")),
        Ots(RouteClass::Api, HostHeader::Verbatim)
    );
}

#[test]
fn custom_routes_on_a_redirect_listener_are_proxied() {
    let r = router_from(&listener_toml(
        "redirect",
        false,
        "[[http.route]]\nprefix = \"/.well-known\"\nupstream = \"http://certbot:80\"\n",
    ));
    assert!(matches!(
        route(&r, "/.well-known/acme-challenge/t"),
        Action::Proxy(_)
    ));
    assert_eq!(describe(route(&r, "/")), Redirect(443));
}

#[test]
fn upstreams_lists_every_proxied_upstream() {
    let mut web: Vec<String> = router("web", false)
        .upstreams()
        .map(|u| u.uri.to_string())
        .collect();
    web.sort();
    web.dedup();
    assert_eq!(
        web,
        [
            "http://127.0.0.1:8081/",
            "https://127.0.0.1:8888/",
            "https://127.0.0.1:8889/"
        ]
    );
    assert_eq!(router("redirect", false).upstreams().count(), 0);
    // 404 routes have no upstream.
    let marti: Vec<String> = router("marti", true)
        .upstreams()
        .map(|u| u.uri.to_string())
        .collect();
    assert_eq!(marti.len(), 3, "{marti:?}");
}

#[test]
fn display_lists_routes_longest_first() {
    let text = router("marti", true).to_string();
    let tls = text.find("/Marti/api/tls").unwrap();
    let marti = text.find("/Marti ").unwrap();
    assert!(tls < marti, "{text}");
    assert!(text.contains("404"), "{text}");
    assert!(text.contains("(Host with default port 8443)"), "{text}");
    assert!(text.trim_end().ends_with("static files"), "{text}");
}

#[test]
fn route_class_labels_are_distinct() {
    let all = RouteClass::ALL;
    let labels: std::collections::HashSet<_> = all.iter().map(|c| c.as_str()).collect();
    assert_eq!(labels.len(), all.len());
}
