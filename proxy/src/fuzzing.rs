//! The harnesses of `proxy/fuzz` (see its README): each takes the fuzzer's bytes, runs them
//! through takgate's own code and asserts what must hold for every input, not just "no panic".
//! They live in the library so that the committed seed corpus also runs under `cargo nextest`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Method, Request, Uri, Version};

use crate::config::{Config, ConfigError, HttpListenerConfig, Profile};
use crate::error::ErrorKind;
use crate::http::cors::{self, CorsPolicy, Decision};
use crate::http::forward::{ClientInfo, Forwarder};
use crate::http::router::{Action, HostHeader, ProxyRoute, RouteClass, Router};
use crate::http::{body, head, path, upgrade};

/// What `client_cert_header` is in every harness listener, and a certificate as takgate sends it.
const CERT_HEADER: &str = "x-ssl-cert";
const CERT: &str = "-----BEGIN%20CERTIFICATE-----%0AMIIB%2Bfuzz%0A-----END%20CERTIFICATE-----%0A";
/// The Host used when a request has none, the listener's `server_name`.
const SERVER_NAME: &str = "tak.example";

/// One listener as `App::new` builds it, from a config that went through `Config::parse`.
struct Listener {
    profile: Profile,
    tls: bool,
    router: Router,
    /// `/media` goes to a custom route, whatever the profile.
    custom: bool,
    cors: CorsPolicy,
    credentials: bool,
}

/// The listeners byte 0 of an `http_head` input chooses between: bits 0–1 the profile, bit 2
/// TLS, bits 3–4 the CORS policy, bit 5 a custom route (`/media`, prefix stripped).
fn listeners() -> &'static [Listener] {
    static LISTENERS: OnceLock<Vec<Listener>> = OnceLock::new();
    LISTENERS.get_or_init(|| (0..64).map(listener).collect())
}

fn listener(bits: u8) -> Listener {
    let profile = ["web", "marti", "enroll", "redirect"][usize::from(bits & 3)];
    let mut toml = format!(
        "client_cert_header = \"X-Ssl-Cert\"\n[[http]]\nname = \"l\"\nlisten = \
         \"127.0.0.1:0\"\nprofile = \"{profile}\"\nserver_name = \"{SERVER_NAME}\"\n"
    );
    if bits & 4 != 0 {
        toml.push_str("[http.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
    }
    toml.push_str(match (bits >> 3) & 3 {
        0 => "",
        1 => "[http.cors]\nallowed_origins = [\"*\"]\n",
        2 => "[http.cors]\nallowed_origins = [\"https://*.example.org\"]\nallow_credentials = true\n",
        _ => "[http.cors]\nallowed_origins = [\"https://ui.example.org:8443\", \"http://x.test\"]\nallow_credentials = true\nexpose_headers = [\"X-Total\"]\n",
    });
    if bits & 32 != 0 {
        toml.push_str(
            "[[http.route]]\nprefix = \"/media\"\nupstream = \"http://127.0.0.1:9000/base/\"\nstrip_prefix = true\n",
        );
    }
    let config = match Config::parse(&toml) {
        Ok(c) => c,
        Err(e) => panic!("harness listener {bits}: {e}\n{toml}"),
    };
    let l: &HttpListenerConfig = &config.http[0];
    Listener {
        profile: l.profile,
        tls: l.tls.is_some(),
        router: Router::new(l, &config.upstream.url),
        custom: !l.routes.is_empty(),
        cors: CorsPolicy::new(&l.cors),
        credentials: l.cors.allow_credentials,
    }
}

fn forwarder() -> &'static Forwarder {
    static FORWARDER: OnceLock<Forwarder> = OnceLock::new();
    FORWARDER.get_or_init(|| {
        match Forwarder::new(
            &Config::default().upstream,
            HeaderName::from_static(CERT_HEADER),
        ) {
            Ok(f) => f,
            Err(e) => panic!("building the forwarder: {e}"),
        }
    })
}

/// An HTTP/1.1 request head, parsed by `httparse` (hyper's parser) and converted as hyper does.
///
/// Input: byte 0 picks the listener (see [`listeners`]), byte 1 the client (bit 0: it presented
/// a certificate, bit 1: IPv6 peer); the rest is the head, given the blank line that ends it if
/// it lacks one.
pub fn http_head(data: &[u8]) {
    let [setup, client, head @ ..] = data else {
        return;
    };
    let Some(req) = parse_head(head) else {
        return;
    };
    let listener = &listeners()[usize::from(setup & 63)];
    let client = ClientInfo {
        peer: if client & 2 == 0 {
            SocketAddr::from(([192, 0, 2, 7], 40000))
        } else {
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], 40000))
        },
        scheme: if listener.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        },
        client_cert: (client & 1 != 0).then(|| HeaderValue::from_static(CERT)),
    };
    check_request(listener, &client, req);
}

fn parse_head(head: &[u8]) -> Option<Request<()>> {
    let ended = head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
    let head = if ended {
        Cow::Borrowed(head)
    } else {
        Cow::Owned([head, b"\r\n\r\n"].concat())
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    if parsed.parse(&head).ok()?.is_partial() {
        return None;
    }
    let mut req = Request::builder()
        .method(Method::from_bytes(parsed.method?.as_bytes()).ok()?)
        .uri(Uri::try_from(parsed.path?).ok()?)
        .version(match parsed.version? {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        });
    for h in parsed.headers.iter() {
        req = req.header(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    req.body(()).ok()
}

/// What `HttpService::answer` does before it sends anything anywhere, checked step by step.
fn check_request(listener: &Listener, client: &ClientInfo, mut req: Request<()>) {
    let query = req.uri().query().map(str::to_owned);
    if let Err(e) = head::canonicalize(&mut req).and_then(|()| path::normalize_request(&mut req)) {
        assert!(
            matches!(
                e.kind,
                ErrorKind::BadRequest | ErrorKind::UriTooLong | ErrorKind::TransferEncoding
            ),
            "refused as {:?}: {e}",
            e.kind
        );
        assert!(e.kind.status().is_client_error() || e.kind.status().as_u16() == 501);
        return;
    }
    check_canonical(&req, query.as_deref());
    let path = req.uri().path();
    let action = listener.router.route(path);
    check_route(listener, path, action);
    let upgrade = upgrade::websocket_upgrade(req.method(), req.headers());
    let (parts, ()) = req.into_parts();
    check_cors(listener, client, &parts, upgrade.is_some());
    if let Action::Proxy(route) = action {
        check_forward(route, client, parts, upgrade);
    }
}

/// Origin-form target, normal path, query untouched, at most one Host and a valid one.
fn check_canonical(req: &Request<()>, query: Option<&str>) {
    let uri = req.uri();
    assert!(uri.scheme().is_none() && uri.authority().is_none(), "{uri}");
    assert_eq!(uri.query(), query, "the query must pass untouched");
    let p = uri.path();
    assert!(p.starts_with('/'), "{p:?}");
    assert!(!p.contains("//"), "{p:?} has an empty segment");
    assert!(
        !p.split('/').any(|s| s == "." || s == ".."),
        "{p:?} has a dot segment"
    );
    assert_eq!(
        path::normalize(p).as_deref(),
        Ok(p),
        "normalising is not idempotent"
    );
    assert!(
        upstream_view(p).is_some(),
        "{p:?} climbs above the root once the upstream decodes it"
    );
    let mut hosts = req.headers().get_all(header::HOST).iter();
    if let Some(h) = hosts.next() {
        assert!(hosts.next().is_none(), "two Host headers");
        assert!(
            h.to_str()
                .is_ok_and(|s| s.is_empty() || head::parse_host(s).is_ok()),
            "Host {h:?}"
        );
    } else {
        assert_eq!(req.version(), Version::HTTP_10);
    }
}

/// The path as OTS (werkzeug under gevent) and MediaMTX (Go's net/http) read it: every escape
/// decoded, `%2F` included, then dot segments and empty segments resolved, as nginx does before
/// it matches a `location`. `None` when it climbs above the root.
fn upstream_view(p: &str) -> Option<String> {
    let bytes = p.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match escaped {
            Some(b) => {
                decoded.push(b);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments = Vec::new();
    for s in decoded.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    Some(format!("/{}", segments.join("/")))
}

fn under(p: &str, prefix: &str) -> bool {
    p.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The route is the one the upstream's own reading of the path would get (no escape or dot
/// segment can move a request from one `location` to another), and the nginx rules that guard
/// Marti hold (`ots-contract.md` §1.8).
fn check_route(listener: &Listener, p: &str, action: &Action) {
    let Some(view) = upstream_view(p) else {
        return;
    };
    let seen = listener.router.route(&view);
    assert_eq!(
        action.to_string(),
        seen.to_string(),
        "{p:?} is routed unlike {view:?}, the path the upstream reads"
    );
    let marti = under(&view, "/Marti");
    let enrollment = under(&view, "/Marti/api/tls");
    let class = match action {
        Action::Proxy(r) => Some(r.class),
        _ => None,
    };
    if class == Some(RouteClass::Marti) {
        assert!(marti, "{p:?} proxied as Marti");
    }
    if listener.custom && under(&view, "/media") {
        assert_eq!(class, Some(RouteClass::Other), "{p:?}");
        return;
    }
    match listener.profile {
        Profile::Web if listener.tls && marti => {
            assert!(matches!(action, Action::NotFound), "{p:?}: /Marti on 443")
        }
        Profile::Web if marti => assert_eq!(class, Some(RouteClass::Marti), "{p:?}"),
        Profile::Marti if enrollment => {
            assert!(
                matches!(action, Action::NotFound),
                "{p:?}: enrollment on 8443"
            )
        }
        Profile::Marti if marti => assert_eq!(class, Some(RouteClass::Marti), "{p:?}"),
        Profile::Enroll => assert_eq!(
            class.is_some(),
            enrollment || under(&view, "/oauth"),
            "{p:?}: 8446 proxies enrollment and /oauth only"
        ),
        Profile::Redirect => assert!(matches!(action, Action::Redirect { .. }), "{p:?}"),
        _ => {}
    }
}

/// A cross-origin grant names the request's own Origin and only goes to an allowed, other
/// origin; a cross-origin WebSocket without a grant is refused; the response headers then carry
/// the grant and nothing else.
fn check_cors(listener: &Listener, client: &ClientInfo, parts: &http::request::Parts, ws: bool) {
    let origin = parts.headers.get(header::ORIGIN);
    let same = origin.and_then(|o| o.to_str().ok()).is_some_and(|o| {
        cors::same_origin(o, client.scheme.as_str(), parts.headers.get(header::HOST))
    });
    let decision = listener.cors.decide(parts, client.scheme.as_str(), ws);
    let allow = match decision {
        Decision::Respond(resp) => {
            let preflight = parts.method == Method::OPTIONS
                && parts
                    .headers
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            assert!(origin.is_some() && (preflight || (ws && !same)));
            if !preflight {
                assert_eq!(resp.status(), http::StatusCode::FORBIDDEN);
            }
            return;
        }
        Decision::Proceed { allow } => allow,
    };
    if let Some(a) = &allow {
        assert_eq!(Some(a), origin);
        assert!(!same, "a grant to the same origin");
    } else {
        assert!(
            !ws || origin.is_none() || same,
            "cross-origin WebSocket let through"
        );
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    listener.cors.apply(&mut headers, allow.as_ref());
    let acao = headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    assert_eq!(acao.is_some(), allow.is_some(), "the upstream's grant kept");
    if listener.credentials {
        assert!(acao.is_none_or(|v| v != "*"), "* with credentials");
    }
}

/// The request as it leaves for the upstream: takgate's own X-Forwarded-* and certificate
/// header, nothing hop-by-hop or spoofable from the client, the path it routed.
fn check_forward(
    route: &ProxyRoute,
    client: &ClientInfo,
    parts: http::request::Parts,
    upgrade: Option<HeaderValue>,
) {
    let sent_path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let client_host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or(SERVER_NAME)
        .to_owned();
    let connection_named: Vec<String> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let req = Request::from_parts(parts, body::empty());
    let out = match forwarder().upstream_request(route, client, SERVER_NAME, upgrade.clone(), req) {
        Ok(out) => out,
        Err(e) => panic!("a canonical request could not be forwarded: {e}"),
    };
    let h = out.headers();
    let values = |name: &str| -> Vec<&HeaderValue> { h.get_all(name).iter().collect() };
    let ip = client.peer.ip().to_string();
    assert_eq!(values("x-forwarded-for"), [ip.as_str()]);
    assert_eq!(values("x-real-ip"), [ip.as_str()]);
    assert_eq!(values("x-forwarded-proto"), [client.scheme.as_str()]);
    assert_eq!(
        values(CERT_HEADER),
        client.client_cert.iter().collect::<Vec<_>>(),
        "the certificate header is takgate's alone"
    );
    for name in [
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-original-forwarded-for",
        "forwarded",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "proxy-authorization",
    ] {
        assert!(!h.contains_key(name), "{name} forwarded");
    }
    match &upgrade {
        Some(u) => {
            assert_eq!(values("connection"), ["upgrade"]);
            assert_eq!(values("upgrade"), [u]);
        }
        None => assert!(!h.contains_key("connection") && !h.contains_key("upgrade")),
    }
    let own = [
        "host",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-proto",
        CERT_HEADER,
        "connection",
        "upgrade",
    ];
    for name in connection_named
        .iter()
        .filter(|n| !own.contains(&n.as_str()))
    {
        assert!(
            !h.contains_key(name.as_str()),
            "{name} named in Connection, forwarded"
        );
    }
    let host = values("host");
    assert_eq!(host.len(), 1);
    let host = host[0].to_str().map(head::parse_host);
    let Ok(Ok(host)) = host else {
        panic!("invalid upstream Host {host:?}");
    };
    let client_authority = head::parse_host(&client_host).map(|a| a.to_string()).ok();
    match route.host {
        HostHeader::DefaultPort(p) if host.port().is_none() => panic!("Host {host} without {p}"),
        HostHeader::Verbatim => assert_eq!(Some(host.to_string()), client_authority),
        HostHeader::DefaultPort(_) => {}
    }
    let upstream = &route.upstream.uri;
    assert_eq!(out.uri().scheme(), upstream.scheme());
    assert_eq!(out.uri().authority(), upstream.authority());
    assert_eq!(out.uri().query(), query.as_deref());
    let rest = route
        .strip
        .as_deref()
        .and_then(|s| sent_path.strip_prefix(s))
        .unwrap_or(&sent_path);
    let want = format!(
        "{}{}{rest}",
        upstream.path().trim_end_matches('/'),
        if rest.starts_with('/') { "" } else { "/" }
    );
    assert_eq!(out.uri().path(), want, "forwarded another path than routed");
    assert_eq!(out.version(), Version::HTTP_11);
}

/// TOML text into `Config::parse`, then what `takgate check` builds from it (routers, CORS
/// policies, the warnings), without binding or loading TLS files.
///
/// A refusal names the key at fault; an accepted config holds what validation promises.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text) {
        Ok(c) => c,
        Err(ConfigError::Invalid { key, reason }) => {
            assert!(!reason.is_empty(), "{key}: no reason");
            assert!(
                KEY_ROOTS.iter().any(|r| key.starts_with(r)),
                "unknown key {key:?}: {reason}"
            );
            return;
        }
        Err(e @ ConfigError::Parse { .. }) => {
            assert!(!e.to_string().is_empty());
            return;
        }
        Err(e @ ConfigError::Read { .. }) => panic!("parsing read a file: {e}"),
    };
    assert!(!config.http.is_empty() || !config.stream.is_empty());
    let mut names = std::collections::HashSet::new();
    let listeners = config
        .http
        .iter()
        .map(|l| (&l.name, l.listen))
        .chain(config.stream.iter().map(|l| (&l.name, l.listen)));
    for (name, _) in listeners {
        assert!(names.insert(name), "duplicate listener name {name}");
        assert!(!name.is_empty());
    }
    for l in &config.http {
        let router = Router::new(l, &config.upstream.url);
        for p in ["/", "/Marti/api/tls/config", "/api/health", "/socket.io/"] {
            assert!(!router.route(p).to_string().is_empty());
        }
        assert!(!router.to_string().is_empty());
        CorsPolicy::new(&l.cors);
        assert!(l.max_body.as_u64() > 0 && l.max_connections > 0);
    }
    for l in &config.stream {
        // The typed address is the text as written: a host, a colon, the port.
        let upstream = &l.upstream;
        assert!(!upstream.host().is_empty());
        let port = upstream.as_str()[upstream.host().len()..].strip_prefix(':');
        assert_eq!(port.and_then(|p| p.parse().ok()), Some(upstream.port()));
    }
    let _warnings = config.warnings();
}

/// The top-level keys a validation error can name.
const KEY_ROOTS: [&str; 5] = [
    "client_cert_header",
    "log.level",
    "upstream.",
    "http[",
    "stream[",
];

#[cfg(test)]
mod tests;
