//! A fake OTS API on `127.0.0.1:0`: it echoes what it received, streams, stalls, upgrades to a
//! WebSocket echo, and records every request head so tests can assert on what takgate sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Body = BoxBody<Bytes, Infallible>;

/// A request head as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// Released by tests to let `/hold` requests answer.
    release: Notify,
    /// Signalled when a `/hold` request has arrived.
    held: Notify,
    /// Bytes received by `/upload` (counted, not stored).
    uploaded: Mutex<Vec<u64>>,
    /// Bytes of `/upload` bodies received so far, finished or not.
    upload_progress: AtomicU64,
    /// `/upload` bodies that ended in an error rather than at their end: cut by takgate.
    broken_uploads: Mutex<u64>,
    /// Cancelled by [`FakeUpstream::stop`]: the accept loop and every connection end.
    stop: tokio_util::sync::CancellationToken,
    /// What `/api/users/all` answers: OTS's user list, `(username, active)`.
    users: Mutex<Vec<(String, bool)>>,
}

/// A running fake upstream.
#[derive(Clone, Debug)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeUpstream {
    /// Binds `127.0.0.1:0` and serves until the test's runtime ends.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener)
    }

    /// Serves on an already bound listener.
    pub fn serve(listener: TcpListener) -> Self {
        Self::serve_with(listener, None)
    }

    /// Serves https with `tls` (MediaMTX-style upstreams) on `127.0.0.1:0`.
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve_with(listener, Some(tls))
    }

    /// Binds `addr` (say, the port of a stopped upstream: OTS coming back) and serves on it.
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        Self::serve(listener)
    }

    /// Stops as a process exit would: no more accepts, every open connection closed.
    pub fn stop(&self) {
        self.state.stop.cancel();
    }

    fn serve_with(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = st.stop.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else {
                    return;
                };
                let st = st.clone();
                let tls = tls.clone();
                let stop = st.stop.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    let serve = async move {
                        match tls {
                            None => {
                                builder
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .with_upgrades()
                                    .await
                            }
                            Some(tls) => {
                                let Ok(stream) = tls.accept(stream).await else {
                                    return Ok(());
                                };
                                builder
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .with_upgrades()
                                    .await
                            }
                        }
                    };
                    // Dropping the connection closes it, as the end of a process would.
                    tokio::select! {
                        _ = serve => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// The last request head received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }

    /// Waits until a `/hold` request has arrived.
    pub async fn held(&self) {
        self.state.held.notified().await;
    }

    /// Lets one waiting `/hold` request answer.
    pub fn release(&self) {
        self.state.release.notify_one();
    }

    /// Sets the users `/api/users/all` lists, as OTS's administrators would.
    pub fn set_users(&self, users: &[(&str, bool)]) {
        *self.state.users.lock().expect("lock") =
            users.iter().map(|(u, a)| ((*u).to_owned(), *a)).collect();
    }

    pub fn uploaded(&self) -> Vec<u64> {
        self.state.uploaded.lock().expect("lock").clone()
    }

    /// Bytes of `/upload` bodies received so far, including those still arriving.
    pub fn upload_progress(&self) -> u64 {
        self.state.upload_progress.load(Ordering::Relaxed)
    }

    /// How many `/upload` bodies broke off (an error instead of their end), so a test can tell
    /// a request OTS would have processed from one it would have failed.
    pub fn broken_uploads(&self) -> u64 {
        *self.state.broken_uploads.lock().expect("lock")
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

fn query_u64(uri: &http::Uri, key: &str) -> Option<u64> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    state.seen.lock().expect("lock").push(Seen {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    if let Some(bytes) = query_u64(req.uri(), "json") {
        return Ok(json_answer(req.uri(), bytes));
    }
    let resp = match path.as_str() {
        "/api/health" => full(StatusCode::OK, r#"{"status":"healthy"}"#),
        "/api/users/all" => {
            if req
                .headers()
                .get("authentication-token")
                .map(|v| v.as_bytes())
                != Some(b"admin-token")
            {
                full(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#)
            } else {
                let users: Vec<String> = state
                    .users
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|(u, a)| format!(r#"{{"username":"{u}","active":{a},"roles":[]}}"#))
                    .collect();
                full(StatusCode::OK, format!("[{}]", users.join(",")))
            }
        }
        p if p.ends_with("/cookies") => {
            let mut r = full(StatusCode::OK, "cookies");
            r.headers_mut().append(
                "set-cookie",
                "session=abc; HttpOnly; Path=/".parse().expect("hv"),
            );
            r.headers_mut()
                .append("set-cookie", "XSRF-TOKEN=xyz; Path=/".parse().expect("hv"));
            r.headers_mut().insert(
                "access-control-allow-origin",
                "http://evil.example".parse().expect("hv"),
            );
            r.headers_mut()
                .insert("connection", "x-hop".parse().expect("hv"));
            r.headers_mut().insert("x-hop", "1".parse().expect("hv"));
            r
        }
        p if p.ends_with("/upload") => {
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        let len = f.data_ref().map_or(0, |d| d.len() as u64);
                        n += len;
                        state.upload_progress.fetch_add(len, Ordering::Relaxed);
                    }
                    Err(_) => {
                        *state.broken_uploads.lock().expect("lock") += 1;
                        break;
                    }
                }
            }
            state.uploaded.lock().expect("lock").push(n);
            full(StatusCode::OK, n.to_string())
        }
        p if p.ends_with("/download") => {
            let total = query_u64(req.uri(), "bytes").unwrap_or(1024);
            stream_body(total, 64 * 1024, Duration::ZERO)
        }
        p if p.ends_with("/trickle") => {
            // Chunks every `gap_ms`; tests use it to check idle timeouts and that nothing is buffered.
            let n = query_u64(req.uri(), "chunks").unwrap_or(3);
            let gap = Duration::from_millis(query_u64(req.uri(), "gap_ms").unwrap_or(100));
            stream_body(n, 1, gap)
        }
        p if p.ends_with("/slow") => {
            let ms = query_u64(req.uri(), "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(StatusCode::OK, "slow")
        }
        p if p.ends_with("/poll") => {
            // An engine.io long-poll: held until released, then a batch of packets as OTS's
            // polling transport sends it.
            state.held.notify_one();
            state.release.notified().await;
            let mut r = full(StatusCode::OK, engineio_batch(4096));
            r.headers_mut().insert(
                "content-type",
                "text/plain; charset=UTF-8".parse().expect("hv"),
            );
            r
        }
        p if p.ends_with("/lockstep") => {
            // Two JSON chunks; the second only once the test has seen the first and releases.
            let state = state.clone();
            let chunks = futures_util::stream::unfold(0u8, move |n| {
                let state = state.clone();
                async move {
                    let data = match n {
                        0 => Bytes::from(engineio_batch(2048)),
                        1 => {
                            state.release.notified().await;
                            Bytes::from_static(b"\"end\"")
                        }
                        _ => return None,
                    };
                    Some((Ok::<_, Infallible>(Frame::data(data)), n + 1))
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("hv"));
            r
        }
        p if p.ends_with("/hold") => {
            state.held.notify_one();
            state.release.notified().await;
            full(StatusCode::OK, "released")
        }
        p if p.ends_with("/ws") || p.starts_with("/socket.io") && is_upgrade(&req) => {
            websocket_echo(&mut req)
        }
        _ => full(StatusCode::OK, "echo"),
    };
    Ok(resp)
}

/// JSON of about `bytes` bytes, as OTS's EUD lists are: `application/json`, and with
/// `cookie=1` a `Set-Cookie` as a login sets, `encoded=gzip` already gzip-encoded (as an
/// upstream that compresses its own answers sends it), `no_transform=1` with
/// `Cache-Control: no-transform`.
fn json_answer(uri: &http::Uri, bytes: u64) -> Response<Body> {
    let mut json = String::from("[");
    let mut i = 0u64;
    while (json.len() as u64) < bytes {
        json.push_str(&format!(
            r#"{{"uid":"ANDROID-{i:08}","callsign":"ALPHA-{i}","team":"Cyan","role":"Team Member"}},"#
        ));
        i += 1;
    }
    json.truncate(usize::try_from(bytes).expect("fits").max(1));
    let query = uri.query().unwrap_or_default();
    let gzip = query.contains("encoded=gzip");
    let body = if gzip {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(json.as_bytes()).expect("gzip");
        Bytes::from(e.finish().expect("gzip"))
    } else {
        Bytes::from(json)
    };
    let mut r = full(StatusCode::OK, body);
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().expect("hv"));
    if gzip {
        h.insert("content-encoding", "gzip".parse().expect("hv"));
    }
    if query.contains("cookie=1") {
        h.insert(
            "set-cookie",
            "session=s3cr3t; HttpOnly; Path=/".parse().expect("hv"),
        );
    }
    if query.contains("no_transform=1") {
        h.insert("cache-control", "no-transform".parse().expect("hv"));
    }
    r
}

/// engine.io v4 polling packets (`4` message, `\x1e` separated) of about `bytes` bytes.
fn engineio_batch(bytes: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < bytes {
        if !out.is_empty() {
            out.push('\u{1e}');
        }
        out.push_str(&format!(
            r#"42["cot",{{"uid":"ANDROID-{i:04}","lat":51.5,"lon":-0.12,"type":"a-f-G-U-C"}}]"#
        ));
        i += 1;
    }
    out
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
}

/// `total` bytes in chunks of `chunk`, `gap` apart.
fn stream_body(total: u64, chunk: u64, gap: Duration) -> Response<Body> {
    let stream = futures_util::stream::unfold(total, move |left| async move {
        if left == 0 {
            return None;
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let n = left.min(chunk);
        let data = Bytes::from(vec![b'x'; usize::try_from(n).expect("chunk fits")]);
        Some((Ok::<_, Infallible>(Frame::data(data)), left - n))
    });
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

/// Answers a WebSocket handshake and echoes every message.
fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return full(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut tx, mut rx) = ws.split();
        while let Some(Ok(msg)) = rx.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert("connection", "Upgrade".parse().expect("hv"));
    h.insert("upgrade", "websocket".parse().expect("hv"));
    h.insert("sec-websocket-accept", accept.parse().expect("hv"));
    r
}
