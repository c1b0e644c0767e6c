//! One listener's request handling: CORS, routing, then static files, a redirect, a 404 or the
//! upstream; every request ends in one access-log line and one metrics record.
//!
//! [`ClientService`] is that handling for one client connection, as a `tower::Service` over any
//! request body: the server drives it with hyper's bodies, tests and fuzz targets with their own.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use http::header::{self, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;

use cot::panics::Panics;

use crate::config::HttpListenerConfig;
use crate::error::{ErrorKind, ProxyError};
use crate::http::access::{Logged, RequestRecord};
use crate::http::body::{self, Body, BoxError, SendProgress};
use crate::http::compress::Compression;
use crate::http::cors::{CorsPolicy, Decision};
use crate::http::engineio;
use crate::http::file_cache::FileCache;
use crate::http::forward::{self, ClientInfo, Forwarder};
use crate::http::head;
use crate::http::heartbeat::{self, Heartbeat};
use crate::http::path;
use crate::http::router::{Action, ProxyRoute, RouteClass, Router};
use crate::http::static_files::StaticFiles;
use crate::http::upgrade;
use crate::metrics::{HttpMetrics, ListenerMetrics};
use cot::listener::Drain;
use cot::listener::GaugeGuard;

/// Everything a listener's requests share.
#[derive(Debug)]
pub struct HttpService {
    name: Arc<str>,
    router: Router,
    spa: StaticFiles,
    files: StaticFiles,
    cors: CorsPolicy,
    /// `None` when the listener has compression off.
    compression: Option<Compression>,
    forwarder: Arc<Forwarder>,
    heartbeat: Arc<Heartbeat>,
    metrics: HttpMetrics,
    /// This listener's per-request series, resolved once.
    requests: Arc<ListenerMetrics>,
    drain: Drain,
    panics: Panics,
    max_body: u64,
    body_read_timeout: Duration,
    default_host: String,
    scheme: Scheme,
    access_log: bool,
}

/// A listener's request handling for one client connection.
#[derive(Clone, Debug)]
pub struct ClientService {
    service: Arc<HttpService>,
    client: Arc<ClientInfo>,
}

/// What a request body must be to go through a [`ClientService`] (hyper's `Incoming`, and any
/// in-memory body).
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B: RequestBody> tower::Service<Request<B>> for ClientService {
    type Response = Response<Body>;
    type Error = Infallible;
    /// Boxed: an `async fn`'s future has no name to give here.
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // No capacity of its own: connections are bounded by their listener's permits.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(self.service.clone().handle(self.client.clone(), req))
    }
}

/// How a request was answered, for the record.
/// A long-polling GET the edge heartbeat reads the answer of.
enum Polling {
    /// Its answer is the OPEN packet.
    Handshake,
    /// A session's: its answer may hold PINGs.
    Session(String),
}

struct Answer {
    response: Response<Body>,
    route: RouteClass,
    upstream_time: Option<Duration>,
}

impl Answer {
    fn local(response: Response<Body>, route: RouteClass) -> Self {
        Self {
            response,
            route,
            upstream_time: None,
        }
    }
}

// === impl HttpService ===

impl HttpService {
    pub fn new(
        config: &HttpListenerConfig,
        router: Router,
        (forwarder, heartbeat): (Arc<Forwarder>, Arc<Heartbeat>),
        metrics: HttpMetrics,
        drain: Drain,
        panics: Panics,
        access_log: bool,
    ) -> Self {
        metrics.init_listener(&config.name);
        panics.init_listener(&config.name);
        let scheme = if config.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        // One cache for both views of the folder: they serve the same files.
        let cache = Arc::new(FileCache::new(
            config.static_cache.as_u64(),
            config.static_cache_max_file.as_u64(),
        ));
        let default_host = config
            .server_name
            .clone()
            .unwrap_or_else(|| config.listen.to_string());
        Self {
            name: Arc::from(config.name.as_str()),
            router,
            spa: StaticFiles::new(&config.ui_root, true, cache.clone()),
            files: StaticFiles::new(&config.ui_root, false, cache),
            cors: CorsPolicy::new(&config.cors),
            compression: Compression::new(&config.compression, config.tls.is_some()),
            forwarder,
            requests: Arc::new(metrics.listener(&config.name)),
            heartbeat,
            metrics,
            drain,
            panics,
            max_body: config.max_body.as_u64(),
            body_read_timeout: config.body_read_timeout,
            default_host,
            scheme,
            access_log,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn metrics(&self) -> &HttpMetrics {
        &self.metrics
    }

    /// The guard of this listener's connection tasks (`server`) and WebSocket relays.
    pub fn panics(&self) -> &Panics {
        &self.panics
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// This listener's request handling for requests from `client`.
    pub fn for_client(self: &Arc<Self>, client: ClientInfo) -> ClientService {
        ClientService {
            service: self.clone(),
            client: Arc::new(client),
        }
    }

    async fn handle<B: RequestBody>(
        self: Arc<Self>,
        client: Arc<ClientInfo>,
        req: Request<B>,
    ) -> Result<Response<Body>, Infallible> {
        let start = Instant::now();
        let in_flight = GaugeGuard::new(self.requests.in_flight().clone());
        let method = req.method().clone();
        // For the access log only: no copy when it is off.
        let path = if self.access_log {
            req.uri().path().to_owned()
        } else {
            String::new()
        };
        let answer = self.answer(&client, req).await;
        let record = RequestRecord {
            listener: self.name.clone(),
            route: answer.route,
            method,
            path,
            client: client.peer,
            status: answer.response.status(),
            start,
            upstream_time: answer.upstream_time,
            access_log: self.access_log,
            metrics: self.requests.clone(),
            in_flight,
        };
        Ok(answer
            .response
            .map(|b| Logged::new(b, record).boxed_unsync()))
    }

    async fn answer<B: RequestBody>(&self, client: &ClientInfo, mut req: Request<B>) -> Answer {
        if let Err(e) =
            head::canonicalize(&mut req).and_then(|()| path::normalize_request(&mut req))
        {
            return self.refuse(client, req.uri().path(), &e);
        }
        // Taken from the normalised head, so `secret_paths` match what the upstream will see.
        let wanted = self.compression.as_ref().map(|c| c.wanted(&req));
        if let Some(wanted) = wanted {
            req.extensions_mut().insert(wanted);
        }
        let upgrade = upgrade::websocket_upgrade(req.method(), req.headers());
        let action = self.router.route(req.uri().path()).clone();
        let route = match (&action, upgrade.is_some()) {
            (Action::Proxy(_), true) => RouteClass::WebSocket,
            (Action::Proxy(r), false) => r.class,
            _ => RouteClass::Static,
        };
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let allow = match self
            .cors
            .decide(&parts, self.scheme.as_str(), upgrade.is_some())
        {
            Decision::Respond(resp) => return Answer::local(resp, route),
            Decision::Proceed { allow } => allow,
        };
        let mut answer = match action {
            Action::Static { spa } => {
                let files = if spa { &self.spa } else { &self.files };
                Answer::local(files.serve(Request::from_parts(parts, ())).await, route)
            }
            Action::NotFound => Answer::local(not_found(), route),
            Action::Redirect { https_port } => {
                Answer::local(self.redirect(&parts, https_port), route)
            }
            Action::Proxy(proxy) => {
                let req = Request::from_parts(parts, incoming);
                match self
                    .proxy(&proxy, client, route, req, upgrade, client_upgrade)
                    .await
                {
                    Ok(answer) => answer,
                    Err(e) => {
                        self.requests.proxy_error(route, e.kind);
                        tracing::warn!(listener = %self.name, client = %client.peer, route = route.as_str(), error = %e, "request failed");
                        Answer::local(e.to_response(), route)
                    }
                }
            }
        };
        if let (Some(compression), Some(wanted)) = (&self.compression, &wanted) {
            compression.apply(wanted, &mut answer.response);
        }
        self.cors
            .apply(answer.response.headers_mut(), allow.as_ref());
        answer
    }

    async fn proxy<B: RequestBody>(
        &self,
        route: &ProxyRoute,
        client: &ClientInfo,
        class: RouteClass,
        req: Request<B>,
        upgrade: Option<HeaderValue>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Result<Answer, ProxyError> {
        if declared_length(&req).is_some_and(|n| n > self.max_body) {
            return Err(ProxyError::new(
                ErrorKind::BodyTooLarge,
                None,
                Some(format!("declared body over the {} byte limit", self.max_body).into()),
            ));
        }
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        let progress = SendProgress::new();
        let mut req =
            req.map(|b| forward::request_body(b, limit, self.body_read_timeout, &progress));
        // Socket.IO with the edge heartbeat: a long-polling request's session, and a WebSocket
        // without permessage-deflate (takgate reads its frames).
        let edge_heartbeat = route.class == RouteClass::SocketIo && self.heartbeat.enabled();
        let poll_sid = edge_heartbeat
            .then(|| engineio::polling_sid(req.uri().query()).map(str::to_owned))
            .flatten();
        let handshake = edge_heartbeat
            && req.method() == http::Method::GET
            && engineio::is_polling_handshake(req.uri().query());
        if edge_heartbeat && upgrade.is_some() {
            req.headers_mut().remove(header::SEC_WEBSOCKET_EXTENSIONS);
        }
        if poll_sid.is_some() || handshake {
            // OTS gzips polling payloads of 1 KiB and more; takgate must read them.
            req.headers_mut().remove(header::ACCEPT_ENCODING);
        }
        if let Some(sid) = poll_sid
            .as_deref()
            .filter(|_| req.method() == http::Method::POST)
        {
            match self.polling_post(sid, req).await? {
                Ok(r) => req = r,
                Err(answered) => return Ok(Answer::local(answered, class)),
            }
        }
        let req =
            self.forwarder
                .upstream_request(route, client, &self.default_host, upgrade, req)?;
        let upstream_uri = req.uri().clone();
        let req_is_get = req.method() == http::Method::GET;
        let forwarded = self.forwarder.send(&route.upstream, req, &progress).await?;
        self.requests
            .upstream_ttfb(class, forwarded.ttfb.as_secs_f64());
        let mut resp = forwarded.response;
        forward::clean_response_headers(&mut resp);
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    Some(route.upstream.uri.to_string()),
                    Some("101 Switching Protocols to a request that asked for no upgrade".into()),
                ));
            };
            // An upstream that still chose an extension gets its bytes relayed untouched.
            let how = if edge_heartbeat
                && !resp
                    .headers()
                    .contains_key(header::SEC_WEBSOCKET_EXTENSIONS)
            {
                upgrade::Relay::Heartbeat(self.heartbeat.clone(), limit)
            } else {
                upgrade::Relay::Bytes
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            upgrade::spawn_relay(
                (client_upgrade, upstream_upgrade),
                how,
                self.metrics.clone(),
                self.name.clone(),
                class,
                self.drain.clone(),
                (self.panics.clone(), client.peer),
            );
            return Ok(Answer {
                response: resp.map(|_| body::empty()),
                route: class,
                upstream_time: Some(forwarded.ttfb),
            });
        }
        let timeout = self.forwarder.response_timeout();
        let mut response = resp.map(|b| forward::response_body(b, timeout));
        let polling = match poll_sid {
            Some(sid) if req_is_get => Some(Polling::Session(sid)),
            _ if handshake => Some(Polling::Handshake),
            _ => None,
        };
        if let Some(polling) = polling.filter(|_| response.status() == StatusCode::OK) {
            response = self
                .polling_answer(polling, route, upstream_uri, response)
                .await?;
        }
        Ok(Answer {
            response,
            route: class,
            upstream_time: Some(forwarded.ttfb),
        })
    }

    /// A browser's long-polling POST: read whole (if small enough to be a heartbeat's), its
    /// PONGs taken out by the edge heartbeat. `Err` is the answer when nothing is left to send.
    async fn polling_post(
        &self,
        sid: &str,
        req: Request<Body>,
    ) -> Result<Result<Request<Body>, Response<Body>>, ProxyError> {
        if declared_length(&req).is_none_or(|n| n > heartbeat::MAX_INSPECTED) {
            return Ok(Ok(req));
        }
        let (mut parts, b) = req.into_parts();
        let payload = b
            .collect()
            .await
            .map_err(|e| ProxyError::new(ErrorKind::DownstreamBody, None, Some(e)))?
            .to_bytes();
        Ok(match self.heartbeat.on_poll_post(sid, payload) {
            Some(rest) => {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(rest.len()));
                Ok(Request::from_parts(parts, body::full(rest)))
            }
            // What python-engineio answers a POST.
            None => Err(Response::builder()
                .header(header::CONTENT_TYPE, "text/html; charset=UTF-8")
                .body(body::full("ok"))
                .map_err(|e| ProxyError::new(ErrorKind::Internal, None, Some(e.into())))?),
        })
    }

    /// OTS's answer to a long-polling GET: read whole (if small enough to hold a heartbeat),
    /// handed to the edge heartbeat (a session's: PINGs answered; a handshake's: the OPEN packet
    /// rewritten), and sent on.
    async fn polling_answer(
        &self,
        polling: Polling,
        route: &ProxyRoute,
        upstream_uri: http::Uri,
        response: Response<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let len = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Encoded despite the request (see `proxy`): not readable, sent on as it is.
        let encoded = response.headers().contains_key(header::CONTENT_ENCODING);
        if encoded || len.is_none_or(|n| n > heartbeat::MAX_INSPECTED) {
            return Ok(response);
        }
        let (mut parts, b) = response.into_parts();
        let mut payload = b
            .collect()
            .await
            .map_err(|e| {
                ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    Some(route.upstream.uri.to_string()),
                    Some(e),
                )
            })?
            .to_bytes();
        match polling {
            Polling::Session(sid) => {
                self.heartbeat
                    .on_poll_answer(&sid, route.upstream.clone(), upstream_uri, &payload)
            }
            Polling::Handshake => {
                if let Some(open) = self.heartbeat.open_packet(&payload) {
                    payload = Bytes::from(open);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(payload.len()));
                }
            }
        }
        Ok(Response::from_parts(parts, body::full(payload)))
    }

    /// Answers a request takgate will not act on: counted, and the connection closed after the
    /// answer, since a client that sends such heads may also mean its next bytes another way.
    fn refuse(&self, client: &ClientInfo, path: &str, e: &ProxyError) -> Answer {
        let route = match self.router.route(path) {
            Action::Proxy(r) => r.class,
            _ => RouteClass::Static,
        };
        self.requests.proxy_error(route, e.kind);
        tracing::debug!(listener = %self.name, client = %client.peer, route = route.as_str(), error = %e, "request refused");
        let mut response = e.to_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Answer::local(response, route)
    }

    /// nginx's `return 301 https://$host$request_uri`.
    fn redirect(&self, parts: &http::request::Parts, https_port: u16) -> Response<Body> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_owned())
            .unwrap_or_else(|| self.default_host.clone());
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let location = if https_port == 443 {
            format!("https://{host}{pq}")
        } else {
            format!("https://{host}:{https_port}{pq}")
        };
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        match HeaderValue::try_from(location) {
            Ok(v) => {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
        }
        resp
    }
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn not_found() -> Response<Body> {
    let mut resp = Response::new(body::full(r#"{"status":404,"error":"not found"}"#));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
