//! Responses compressed for clients that take brotli or gzip: static files and proxied answers
//! alike, as the last step of a listener's request handling (`service`), so HTTP/1.1, HTTP/2,
//! the tests and the fuzz targets all go through the same code.
//!
//! What is compressed: a 2xx answer (not 204 or 206) with a compressible `Content-Type` (text,
//! JSON, JavaScript, XML, SVG), no `Content-Encoding` of its own (an upstream's gzip or a
//! precompressed `.br` sibling passes through untouched), no `Content-Range`, no
//! `Cache-Control: no-transform`, and a declared length of at least `min_size` (a streamed body
//! of unknown length qualifies). Such an answer always gets `Vary: Accept-Encoding`, compressed
//! or not, so a cache never hands one client's encoding to another. A compressed answer loses
//! `Content-Length` (its length is not known ahead) and `Accept-Ranges` (ranges apply to the
//! identity body, which is what a `Range` request gets), and its strong `ETag` becomes weak, as
//! nginx's gzip does: the bytes differ from the identity body's, and a weak validator still
//! revalidates (`If-None-Match` compares weakly).
//!
//! Streaming: every chunk of the body is compressed and flushed as it arrives
//! ([`encoder::Compressed`]), so a long-poll or a streamed download is never held back by the
//! encoder. WebSocket upgrades (101) are never touched. Encoders are bounded per listener
//! (`max_streams`); past that, answers go out identity-encoded rather than wait.
//!
//! BREACH: on a TLS listener, unless `compress_secrets` is set, an answer that may carry a
//! secret in its body is not compressed: one that sets a cookie, or one for a path under
//! `secret_paths` (README, "Compression and BREACH", has the analysis of OTS's routes).

pub mod encoder;
mod negotiate;

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::config::CompressionConfig;
use crate::http::body::{self, Body};
use crate::http::router::segment_prefix;

pub use negotiate::negotiate;

/// The content codings takgate produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// One listener's compression: its settings and its bound on concurrent encoders.
#[derive(Debug)]
pub struct Compression {
    min_size: u64,
    /// TLS listener without `compress_secrets`: answers that may carry secrets stay identity.
    guard_secrets: bool,
    secret_paths: Vec<String>,
    encoders: Arc<Semaphore>,
}

/// What a request asks of compression, taken from its head once it is normalised. Static files
/// find it in the request's extensions to answer from the cache's compressed copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The coding the client takes best, `None` for identity.
    pub coding: Option<Coding>,
    /// Smallest body worth compressing.
    pub min_size: u64,
    head: bool,
    /// The path is one whose answers may carry secrets, and this listener guards them.
    secret: bool,
}

impl Compression {
    /// `None` when the listener has compression off.
    pub fn new(config: &CompressionConfig, tls: bool) -> Option<Self> {
        config.enabled.then(|| Self {
            min_size: config.min_size.as_u64(),
            guard_secrets: tls && !config.compress_secrets,
            secret_paths: config.secret_paths.clone(),
            encoders: Arc::new(Semaphore::new(config.max_streams)),
        })
    }

    /// What `req` (normalised) asks for.
    pub fn wanted<B>(&self, req: &Request<B>) -> Wanted {
        let path = req.uri().path();
        Wanted {
            coding: negotiate(req.headers()),
            min_size: self.min_size,
            head: req.method() == Method::HEAD,
            secret: self.guard_secrets
                && self
                    .secret_paths
                    .iter()
                    .any(|prefix| segment_prefix(path, prefix)),
        }
    }

    /// Compresses `res` as `wanted` asks, when it qualifies (see the module docs).
    pub fn apply(&self, wanted: &Wanted, res: &mut Response<Body>) {
        if !self.eligible(wanted, res) {
            return;
        }
        add_vary(res.headers_mut());
        let Some(coding) = wanted.coding else {
            return;
        };
        if wanted.head {
            // The headers a GET would get, with no body to encode.
            mark_encoded(res.headers_mut(), coding, None);
            return;
        }
        let Ok(permit) = self.encoders.clone().try_acquire_owned() else {
            tracing::debug!("all compression encoders busy; answering identity");
            return;
        };
        mark_encoded(res.headers_mut(), coding, None);
        let identity = std::mem::replace(res.body_mut(), body::empty());
        *res.body_mut() = encoder::Compressed::new(identity, coding, permit).boxed_unsync();
    }

    fn eligible(&self, wanted: &Wanted, res: &Response<Body>) -> bool {
        let status = res.status();
        if !status.is_success()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::PARTIAL_CONTENT
        {
            return false;
        }
        let headers = res.headers();
        if headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::CONTENT_RANGE)
            || no_transform(headers)
            || !headers.get(header::CONTENT_TYPE).is_some_and(compressible)
        {
            return false;
        }
        if content_length(headers).is_some_and(|n| n < self.min_size) {
            return false;
        }
        // A cookie being set marks a login, a logout or a session refresh: the answers whose
        // bodies carry tokens (README, "Compression and BREACH").
        !(self.guard_secrets && (wanted.secret || headers.contains_key(header::SET_COOKIE)))
    }
}

/// Types whose bodies shrink: text, and the structured formats OTS and its UI send.
pub fn compressible(content_type: &HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    let (kind, sub) = (kind.to_ascii_lowercase(), sub.to_ascii_lowercase());
    match kind.as_str() {
        // An event stream is text too, but each event must go out alone: left as it is.
        "text" => sub != "event-stream",
        "application" => {
            matches!(
                sub.as_str(),
                "json" | "javascript" | "x-javascript" | "ecmascript" | "xml" | "wasm"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        "image" => sub == "svg+xml",
        _ => false,
    }
}

/// Headers of an answer whose body goes out in `coding`; `length` is the encoded length when it
/// is known (a cached copy).
pub fn mark_encoded(headers: &mut HeaderMap, coding: Coding, length: Option<usize>) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    add_vary(headers);
    headers.remove(header::ACCEPT_RANGES);
    match length {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    weaken_etag(headers);
}

/// A strong `ETag` made weak: an encoded body is not byte-for-byte the identity one.
pub fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is there already (or `Vary: *`).
fn add_vary(headers: &mut HeaderMap) {
    let present = headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|name| name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding"));
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
