//! Small HTTP/1.1 clients for tests: a hyper client for well-formed requests and raw TCP for
//! byte-exact ones. Every await has a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The deadline for any one network step in a test.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `f` or fails the test after [`STEP`].
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .expect("network step timed out")
}

/// A collected response.
pub struct Got {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request on a new connection and collects the whole response.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    let resp = send_streaming(addr, req).await;
    let (parts, body) = resp.into_parts();
    let body = within(body.collect()).await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends one request on a new connection; the body is left to the caller. A request without
/// Host gets `addr` as its Host, as any real client would send (HTTP/1.1 requires one).
pub async fn send_streaming<B>(
    addr: SocketAddr,
    mut req: Request<B>,
) -> Response<hyper::body::Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    with_host(&mut req, addr);
    let mut sender = connection(addr).await;
    within(sender.send_request(req)).await.expect("request")
}

/// A new HTTP/1.1 client connection to `addr`, for a test that paces its request itself (the
/// request sets its own Host).
pub async fn connection<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = within(TcpStream::connect(addr)).await.expect("connect");
    let (sender, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(stream)))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    sender
}

/// `GET path` with extra headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", addr.to_string());
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(addr, b.body(Full::default()).expect("request")).await
}

/// Writes `raw` bytes and reads until the peer closes or `until` appears in the answer.
pub async fn raw(addr: SocketAddr, raw: &[u8], until: Option<&[u8]>) -> Vec<u8> {
    let mut s = within(TcpStream::connect(addr)).await.expect("connect");
    within(s.write_all(raw)).await.expect("write");
    read_until(&mut s, until).await
}

/// Reads until EOF, or until `until` appears.
pub async fn read_until(s: &mut TcpStream, until: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = within(s.read(&mut buf)).await.unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
        if let Some(pat) = until {
            if out.windows(pat.len()).any(|w| w == pat) {
                return out;
            }
        }
    }
}

/// Sends one request over TLS with `config` (which may present a client certificate); a
/// request without Host gets `addr`.
pub async fn send_tls(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    mut req: Request<Full<Bytes>>,
) -> std::io::Result<Got> {
    with_host(&mut req, addr);
    let tcp = within(TcpStream::connect(addr)).await?;
    let tls =
        within(tokio_rustls::TlsConnector::from(config).connect(crate::certs::server_name(), tcp))
            .await?;
    let (mut sender, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(tls)))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let resp = within(sender.send_request(req))
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = resp.into_parts();
    let body = within(body.collect())
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Adds `Host: addr` unless the request names a Host (hyper's connection-level client does not).
fn with_host<B>(req: &mut Request<B>, addr: SocketAddr) {
    if !req.headers().contains_key(http::header::HOST) {
        if let Ok(v) = http::HeaderValue::try_from(addr.to_string()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
}

/// A client connection for byte-exact requests: plain TCP or TLS.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to `addr`, over TLS with `tls` if given (the handshake is part of connecting).
pub async fn connect(
    addr: SocketAddr,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> std::io::Result<Box<dyn Stream>> {
    let tcp = within(TcpStream::connect(addr)).await?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let mut tls =
        within(tokio_rustls::TlsConnector::from(config).connect(crate::certs::server_name(), tcp))
            .await?;
    // TLS 1.3: the server's verdict on a client certificate comes after the client's side of
    // the handshake; flushing and the first read surface it.
    within(tls.flush()).await?;
    Ok(Box::new(tls))
}

/// One response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response: its head, then a body framed by Content-Length or chunked, or running to
/// the end of the stream. `None` when the peer closed (or reset) before sending a whole head.
/// Every read has a deadline.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(s, &mut buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf.split_off(head_end);
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body = if matches!(status, 100..=199 | 204 | 304) {
        Vec::new()
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len {
            if !read_more(s, &mut rest).await {
                break;
            }
        }
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(s, rest).await
    } else {
        while read_more(s, &mut rest).await {}
        rest
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Whether the peer closes (or resets) the connection within [`STEP`], reading away whatever
/// else it sends first.
pub async fn closes<S: tokio::io::AsyncRead + Unpin + ?Sized>(s: &mut S) -> bool {
    closes_within(s, STEP).await
}

/// Whether the peer closes (or resets) the connection within `limit`: shorter than an idle
/// timeout, it tells a deliberate close from a connection merely left to expire.
pub async fn closes_within<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    limit: Duration,
) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    // Bounded: each round either reads bytes or ends; the deadline caps a chatty peer.
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn read_more<S: tokio::io::AsyncRead + Unpin + ?Sized>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match within(s.read(&mut chunk)).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn dechunk<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    mut rest: Vec<u8>,
) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&rest, b"\r\n") {
                break i;
            }
            if !read_more(s, &mut rest).await {
                return body;
            }
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return body;
        };
        // The chunk, its CRLF (for the last chunk: the empty trailer section's CRLF).
        let need = line_end + 2 + size + 2;
        while rest.len() < need {
            if !read_more(s, &mut rest).await {
                return body;
            }
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest.drain(..need);
        if size == 0 {
            return body;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
