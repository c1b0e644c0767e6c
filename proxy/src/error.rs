//! One classification of everything that can make a request fail inside takgate. The same
//! [`ErrorKind`] picks the HTTP status the client sees and the metric label that counts it.

use http::{header, Response, StatusCode};

use crate::http::body::{self, Body, BoxError};

/// Which side of the proxy a failure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Upstream,
    Downstream,
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Upstream => "upstream",
            Side::Downstream => "downstream",
            Side::Internal => "internal",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The upstream refused or could not be reached.
    UpstreamConnect,
    /// Connecting to the upstream took longer than `connect_timeout`.
    UpstreamConnectTimeout,
    /// The upstream sent no response head within `response_timeout`.
    UpstreamTimeout,
    /// The upstream closed or broke the connection, or sent something that is not HTTP.
    UpstreamProtocol,
    /// The request body was larger than the listener's `max_body`.
    BodyTooLarge,
    /// The client stopped sending its body, or sent a broken one.
    DownstreamBody,
    /// A request takgate cannot express upstream, or refuses to act on (bad path, Host or
    /// request target).
    BadRequest,
    /// The request target is longer than takgate accepts (414).
    UriTooLong,
    /// A transfer coding other than `chunked` (501, RFC 9112 §6.1).
    TransferEncoding,
    /// A bug or resource failure inside takgate.
    Internal,
}

impl ErrorKind {
    pub fn side(self) -> Side {
        match self {
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamConnectTimeout
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamProtocol => Side::Upstream,
            ErrorKind::BodyTooLarge
            | ErrorKind::DownstreamBody
            | ErrorKind::BadRequest
            | ErrorKind::UriTooLong
            | ErrorKind::TransferEncoding => Side::Downstream,
            ErrorKind::Internal => Side::Internal,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamConnectTimeout | ErrorKind::UpstreamTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::DownstreamBody | ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::TransferEncoding => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UpstreamConnect => "connect",
            ErrorKind::UpstreamConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamTimeout => "response_timeout",
            ErrorKind::UpstreamProtocol => "protocol",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::DownstreamBody => "body",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::TransferEncoding => "transfer_encoding",
            ErrorKind::Internal => "internal",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ErrorKind::UpstreamConnect => "upstream unavailable",
            ErrorKind::UpstreamConnectTimeout => "upstream connect timed out",
            ErrorKind::UpstreamTimeout => "upstream timed out",
            ErrorKind::UpstreamProtocol => "upstream connection failed",
            ErrorKind::BodyTooLarge => "request body too large",
            ErrorKind::DownstreamBody => "request body incomplete",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::UriTooLong => "request target too long",
            ErrorKind::TransferEncoding => "transfer coding not implemented",
            ErrorKind::Internal => "internal error",
        }
    }
}

/// A failed request: its kind, the upstream involved (if any) and the cause for the log.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {}", kind.message(), upstream.as_deref().map(|u| format!(" ({u})")).unwrap_or_default(), cause_text(.source.as_ref()))]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub upstream: Option<String>,
    #[source]
    pub source: Option<BoxError>,
}

fn cause_text(source: Option<&BoxError>) -> String {
    let Some(mut err) = source.map(|e| &**e as &(dyn std::error::Error + 'static)) else {
        return "-".to_owned();
    };
    let mut text = err.to_string();
    while let Some(next) = err.source() {
        text.push_str(": ");
        text.push_str(&next.to_string());
        err = next;
    }
    text
}

impl ProxyError {
    pub fn new(kind: ErrorKind, upstream: Option<String>, source: Option<BoxError>) -> Self {
        Self {
            kind,
            upstream,
            source,
        }
    }

    /// The short JSON answer the client gets: status, what failed and which upstream.
    pub fn to_response(&self) -> Response<Body> {
        let status = self.kind.status();
        let mut json = serde_json::json!({
            "status": status.as_u16(),
            "error": self.kind.message(),
        });
        if let Some(u) = &self.upstream {
            json["upstream"] = serde_json::Value::String(u.clone());
        }
        let mut resp = Response::new(body::full(json.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        resp
    }
}
