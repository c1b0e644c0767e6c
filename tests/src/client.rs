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

/// Sends one request on a new connection; the body is left to the caller.
pub async fn send_streaming<B>(addr: SocketAddr, req: Request<B>) -> Response<hyper::body::Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = within(TcpStream::connect(addr)).await.expect("connect");
    let (mut sender, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(stream)))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    within(sender.send_request(req)).await.expect("request")
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

/// Sends one request over TLS with `config` (which may present a client certificate).
pub async fn send_tls(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    req: Request<Full<Bytes>>,
) -> std::io::Result<Got> {
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
