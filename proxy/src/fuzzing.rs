//! The harnesses of `proxy/fuzz` (see its README): each takes the fuzzer's bytes, runs them
//! through takgate's own code and asserts what must hold for every input, not just "no panic".
//! They live in the library so that the committed seed corpus also runs under `cargo nextest`.
//!
//! `http_head` drives the listener's own service, as `App::new` builds it and the server runs
//! it; every upstream is stood in for by one loopback server that records what reaches it
//! (`cot::upstream_client::redirect_to`).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncBufReadExt;
use tower::ServiceExt;

use crate::app::App;
use crate::config::{Config, ConfigError, HttpListenerConfig, Profile};
use crate::http::body::Body;
use crate::http::cors::{self, CorsPolicy};
use crate::http::forward::ClientInfo;
use crate::http::router::{Action, HostHeader, ProxyRoute, RouteClass, Router};
use crate::http::service::HttpService;
use crate::http::{compress, head, path, upgrade};

/// What `client_cert_header` is in every harness listener, and a certificate as takgate sends it.
const CERT_HEADER: &str = "x-ssl-cert";
const CERT: &str = "-----BEGIN%20CERTIFICATE-----%0AMIIB%2Bfuzz%0A-----END%20CERTIFICATE-----%0A";
/// The Host used when a request has none, the listener's `server_name`.
const SERVER_NAME: &str = "tak.example";
/// Ample for one request over loopback; a request that takes longer is a hang.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener as `App::new` builds it, from a config that went through `Config::parse`.
struct Listener {
    profile: Profile,
    tls: bool,
    router: Router,
    /// `/media` goes to a custom route, whatever the profile.
    custom: bool,
    credentials: bool,
    service: Arc<HttpService>,
}

/// A request that reached an upstream: which one (scheme and authority) and its head.
struct Seen {
    upstream: Uri,
    head: http::request::Parts,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    listeners: Vec<Listener>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("building the harness runtime: {e}"),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = rt.block_on(stand_in_upstream(seen.clone()));
        cot::upstream_client::redirect_to(upstream);
        let _runtime = rt.enter();
        let listeners = (0..64).map(listener).collect();
        Harness {
            rt,
            listeners,
            seen,
        }
    })
}

/// Every upstream at once: records each request's head under the URI its connection was opened
/// for (the line `redirect_to` writes first), and answers `200` with no body.
async fn stand_in_upstream(seen: Arc<Mutex<Vec<Seen>>>) -> SocketAddr {
    let socket = match tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await {
        Ok(s) => s,
        Err(e) => panic!("binding the stand-in upstream: {e}"),
    };
    let addr = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("the stand-in upstream's address: {e}"),
    };
    tokio::spawn(async move {
        while let Ok((tcp, _)) = socket.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut io = tokio::io::BufReader::new(tcp);
                let mut line = String::new();
                if io.read_line(&mut line).await.is_err() {
                    return;
                }
                let Ok(upstream) = line.trim_end().parse::<Uri>() else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (head, _) = req.into_parts();
                    let answer = stand_in_answer(&head);
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(Seen {
                            upstream: upstream.clone(),
                            head,
                        });
                    }
                    std::future::ready(Ok::<_, std::convert::Infallible>(answer))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    addr
}

/// A JSON body large enough to compress for a path naming `json`, nothing otherwise: the
/// compression step runs on what the stand-in answers.
const STAND_IN_JSON: &str = r#"{"uid":"ANDROID-0001","callsign":"ALPHA","team":"Cyan"},"#;

fn stand_in_answer(head: &http::request::Parts) -> Response<Full<Bytes>> {
    if !head.uri.path().contains("json") {
        return Response::new(Full::default());
    }
    let mut res = Response::new(Full::new(Bytes::from(STAND_IN_JSON.repeat(40))));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The listeners byte 0 of an `http_head` input chooses between: bits 0–1 the profile, bit 2
/// TLS, bits 3–4 the CORS policy, bit 5 a custom route (`/media`, prefix stripped).
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
    let (profile, tls, custom, credentials) = (
        l.profile,
        l.tls.is_some(),
        !l.routes.is_empty(),
        l.cors.allow_credentials,
    );
    let router = Router::new(l, &config.upstream.url);
    let app = match App::new(config, prometheus::Registry::new()) {
        Ok(app) => app,
        Err(e) => panic!("harness listener {bits}: {e}"),
    };
    let Some(service) = app.http_services().next().cloned() else {
        panic!("harness listener {bits}: no HTTP service");
    };
    Listener {
        profile,
        tls,
        router,
        custom,
        credentials,
        service,
    }
}

/// An HTTP/1.1 request head, parsed by `httparse` (hyper's parser) and converted as hyper does.
///
/// Input: byte 0 picks the listener (see [`listener`]), byte 1 the client (bit 0: it presented
/// a certificate, bit 1: IPv6 peer); the rest is the head, given the blank line that ends it if
/// it lacks one.
pub fn http_head(data: &[u8]) {
    http_head_outcome(data);
}

/// How a request ended, for the seed tests to see that the corpus covers each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Refused before routing (`Connection: close`).
    Refused,
    /// Answered by takgate itself.
    Answered,
    /// Sent to an upstream.
    Forwarded,
}

fn http_head_outcome(data: &[u8]) -> Option<Outcome> {
    let [setup, client, head @ ..] = data else {
        return None;
    };
    let req = parse_head(head)?;
    let listener = &harness().listeners[usize::from(setup & 63)];
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
    Some(check_answer(listener, &client, req))
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

/// The request through the listener's service, then what must hold of its answer and of what
/// reached an upstream.
fn check_answer(listener: &Listener, client: &ClientInfo, req: Request<()>) -> Outcome {
    let h = harness();
    let (parts, ()) = req.into_parts();
    let req = Request::from_parts(parts.clone(), Empty::<Bytes>::new());
    if let Ok(mut seen) = h.seen.lock() {
        seen.clear();
    }
    let service = listener.service.for_client(client.clone());
    let answered =
        h.rt.block_on(async { tokio::time::timeout(ANSWER_TIMEOUT, service.oneshot(req)).await });
    let response = match answered {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => panic!("no answer within {ANSWER_TIMEOUT:?}"),
    };
    let seen = match h.seen.lock() {
        Ok(mut seen) => std::mem::take(&mut *seen),
        Err(_) => panic!("the stand-in upstream panicked"),
    };
    if response
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v == "close")
    {
        // Refused before routing.
        let status = response.status().as_u16();
        assert!(matches!(status, 400 | 414 | 501), "refused with {status}");
        assert!(seen.is_empty(), "a refused request reached an upstream");
        return Outcome::Refused;
    }
    check_cors(listener, client, &parts, &response, !seen.is_empty());
    check_encoding(&parts, response);
    match seen.as_slice() {
        [] => Outcome::Answered,
        [one] => {
            check_forwarded(listener, client, &parts, one);
            Outcome::Forwarded
        }
        more => panic!("one request reached {} upstreams", more.len()),
    }
}

/// An encoded answer is in a coding the client takes, says it varies on `Accept-Encoding`, has
/// no length of the identity body, and decodes to what the stand-in sent.
fn check_encoding(sent: &http::request::Parts, response: Response<Body>) {
    let Some(coding) = response.headers().get(header::CONTENT_ENCODING).cloned() else {
        return;
    };
    let coding = coding.to_str().unwrap_or_default().to_owned();
    let accepted = compress::negotiate(&sent.headers).map(compress::Coding::as_str);
    assert_eq!(
        Some(coding.as_str()),
        accepted,
        "encoded as the client did not ask"
    );
    let vary = response.headers().get_all(header::VARY).iter();
    assert!(
        vary.map(|v| v.as_bytes().to_ascii_lowercase())
            .any(|v| v.windows(15).any(|w| w == b"accept-encoding")),
        "an encoded answer without Vary: Accept-Encoding"
    );
    if sent.method == Method::HEAD {
        return;
    }
    let h = harness();
    let body = h.rt.block_on(async {
        tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect()).await
    });
    let wire = match body {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => panic!("an encoded body failed: {e}"),
        Err(_) => panic!("no encoded body within {ANSWER_TIMEOUT:?}"),
    };
    let mut decoded = Vec::new();
    let read = match coding.as_str() {
        "br" => std::io::Read::read_to_end(
            &mut brotli::Decompressor::new(&wire[..], 4096),
            &mut decoded,
        ),
        _ => std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&wire[..]), &mut decoded),
    };
    assert!(read.is_ok(), "{coding} does not decode");
    assert_eq!(
        decoded,
        STAND_IN_JSON.repeat(40).as_bytes(),
        "{coding} decodes to another body"
    );
}

/// The forwarded request: its path is one the router sends to that upstream, canonical, and as
/// the route rules want; its headers as the contract wants.
fn check_forwarded(
    listener: &Listener,
    client: &ClientInfo,
    sent: &http::request::Parts,
    seen: &Seen,
) {
    let forwarded = seen.head.uri.path();
    let Some((p, route)) = routed_path(&listener.router, &seen.upstream, forwarded) else {
        panic!(
            "{}{forwarded} reached an upstream no route maps it to",
            seen.upstream
        );
    };
    check_canonical(&p, sent.uri.query(), seen.head.uri.query());
    let action = listener.router.route(&p);
    check_route(listener, &p, action);
    check_forward(&route, client, sent, &seen.head);
}

/// The path takgate routed, found back from what reached `upstream`: the route whose upstream
/// it is and whose forwarding of that path gives `forwarded`.
fn routed_path(
    router: &Router,
    upstream: &Uri,
    forwarded: &str,
) -> Option<(String, Arc<ProxyRoute>)> {
    let prefixes = ["", "/media", "/webrtc", "/hls"];
    let bases = ["", "/base"];
    let candidates = prefixes.iter().flat_map(|prefix| {
        bases.iter().filter_map(move |base| {
            let rest = forwarded.strip_prefix(base)?;
            let whole = format!("{prefix}{rest}");
            let bare = (rest == "/" && !prefix.is_empty()).then(|| (*prefix).to_owned());
            Some([Some(whole), bare].into_iter().flatten())
        })
    });
    candidates.flatten().find_map(|p| {
        let Action::Proxy(route) = router.route(&p) else {
            return None;
        };
        let u = &route.upstream.uri;
        let same = u.scheme() == upstream.scheme() && u.authority() == upstream.authority();
        (same && forwarded_path(route, &p) == forwarded).then(|| (p.clone(), route.clone()))
    })
}

/// Where `route` sends path `p`: under its upstream's base, less a stripped prefix.
fn forwarded_path(route: &ProxyRoute, p: &str) -> String {
    let rest = route
        .strip
        .as_deref()
        .and_then(|s| p.strip_prefix(s))
        .unwrap_or(p);
    format!(
        "{}{}{rest}",
        route.upstream.uri.path().trim_end_matches('/'),
        if rest.starts_with('/') { "" } else { "/" }
    )
}

/// The routed path is normal and the query passed untouched.
fn check_canonical(p: &str, sent_query: Option<&str>, seen_query: Option<&str>) {
    assert_eq!(seen_query, sent_query, "the query must pass untouched");
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

/// The Host the request names: an absolute-form target's authority, else its Host header.
fn named_host(sent: &http::request::Parts) -> Option<HeaderValue> {
    match sent.uri.authority() {
        Some(a) => HeaderValue::try_from(a.as_str()).ok(),
        None => sent.headers.get(header::HOST).cloned(),
    }
}

/// A cross-origin grant names the request's own Origin and only goes to an allowed, other
/// origin; a cross-origin WebSocket without a grant never reaches the upstream; never `*` with
/// credentials.
fn check_cors(
    listener: &Listener,
    client: &ClientInfo,
    sent: &http::request::Parts,
    response: &Response<Body>,
    reached: bool,
) {
    let origin = sent.headers.get(header::ORIGIN);
    let host = named_host(sent);
    let same = origin
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| cors::same_origin(o, client.scheme.as_str(), host.as_ref()));
    let ws = upgrade::websocket_upgrade(&sent.method, &sent.headers).is_some();
    let acao = response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    if let Some(a) = acao {
        assert_eq!(
            Some(a),
            origin,
            "a grant to another origin than the request's"
        );
        assert!(!same, "a grant to the same origin");
    } else if reached {
        assert!(
            !ws || origin.is_none() || same,
            "cross-origin WebSocket let through"
        );
    }
    if listener.credentials {
        assert!(acao.is_none_or(|v| v != "*"), "* with credentials");
    }
}

/// The request as it left for the upstream: takgate's own X-Forwarded-* and certificate
/// header, nothing hop-by-hop or spoofable from the client, the Host the route wants.
fn check_forward(
    route: &ProxyRoute,
    client: &ClientInfo,
    sent: &http::request::Parts,
    out: &http::request::Parts,
) {
    let client_host = named_host(sent)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| SERVER_NAME.to_owned());
    let connection_named: Vec<String> = sent
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let upgrade = upgrade::websocket_upgrade(&sent.method, &sent.headers);
    let h: &HeaderMap = &out.headers;
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
    assert_eq!(out.version, Version::HTTP_11);
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
