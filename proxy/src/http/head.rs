//! Checks on a request head before takgate routes it, for the places where a client could make
//! takgate and OTS read one request two ways. hyper's parser already refuses most malformed heads
//! (bad tokens, obs-fold, NUL bytes, conflicting Content-Length, a Transfer-Encoding whose last
//! coding is not chunked) and answers them itself; these are the rules of RFC 9112 it leaves to
//! the server.
//!
//! After [`canonicalize`] the request target is in origin-form and the request carries at most
//! one Host, a valid one, so routing, the Host rules, CORS and the redirect all read the same host.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Uri, Version};

use crate::error::{ErrorKind, ProxyError};
use crate::http::body::BoxError;

/// nginx's default `large_client_header_buffers` line: longer request targets get 414, as there.
/// Heads longer than `max_header_bytes` never get this far; hyper answers them with 431.
pub const MAX_REQUEST_TARGET: usize = 8 * 1024;

/// Refuses what takgate must not act on and rewrites an absolute-form target to origin-form.
pub fn canonicalize<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    check_target_length(req.uri())?;
    check_transfer_encoding(req.headers())?;
    check_host(req.version(), req.headers())?;
    join_cookies(req);
    absolute_form_to_host(req)
}

/// RFC 9113 §8.2.3: an HTTP/2 client may send each cookie as its own `cookie` field (browsers
/// do, for HPACK's sake); they are joined with `"; "` into the one header an HTTP/1.1 upstream
/// reads, or OTS's Flask would see them comma-joined and lose its session and XSRF cookies.
fn join_cookies<B>(req: &mut Request<B>) {
    if req.version() != Version::HTTP_2
        || req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .nth(1)
            .is_none()
    {
        return;
    }
    let joined: Vec<u8> = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        req.headers_mut().insert(header::COOKIE, value);
    }
}

/// A Host value as RFC 9110 §7.2 allows it: `uri-host [":" port]`, no userinfo, a real port.
pub fn parse_host(value: &str) -> Result<Authority, BoxError> {
    let authority: Authority = value.parse()?;
    // http's parser takes brackets anywhere (`ta[::1]mple`, `[::1]x`); RFC 3986 only around an
    // IPv6 literal that is the whole host.
    let host = authority.host();
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(literal) => literal.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.contains(['[', ']']),
    };
    let port_ok = match authority.as_str().strip_prefix(host) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()),
        None => false,
    };
    if authority.as_str().contains('@') || !host_ok || !port_ok {
        return Err(format!("invalid Host {value:?}").into());
    }
    Ok(authority)
}

fn check_target_length(uri: &Uri) -> Result<(), ProxyError> {
    let len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > MAX_REQUEST_TARGET {
        return Err(refuse(
            ErrorKind::UriTooLong,
            format!("request target of {len} bytes, over {MAX_REQUEST_TARGET}"),
        ));
    }
    Ok(())
}

/// takgate re-frames every body it forwards and understands one transfer coding, `chunked`
/// (hyper checks that it comes last). Another coding before it (`gzip, chunked`) would reach OTS
/// as raw coded bytes with nothing saying so; RFC 9112 §6.1 answers a coding the server does not
/// know with 501, as nginx does. Two `chunked` would be a coding applied twice, which §6.1 forbids.
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(()),
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => Ok(()),
        (Some(v), _) => Err(refuse(
            ErrorKind::TransferEncoding,
            format!("Transfer-Encoding {v:?} is not just chunked"),
        )),
    }
}

/// RFC 9112 §3.2: a request with more than one Host, an invalid one, or (HTTP/1.1) none gets 400.
/// takgate forwards one Host and decides routes and redirects on it; with two, OTS or a cache
/// could read the other. An empty Host is valid and means "use `server_name`".
fn check_host(version: Version, headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(refuse(ErrorKind::BadRequest, "more than one Host")),
        (Some(h), None) if h.is_empty() => Ok(()),
        (Some(h), None) => {
            let value = h
                .to_str()
                .map_err(|e| ProxyError::new(ErrorKind::BadRequest, None, Some(e.into())))?;
            parse_host(value)
                .map(|_| ())
                .map_err(|e| ProxyError::new(ErrorKind::BadRequest, None, Some(e)))
        }
        (None, _) if version == Version::HTTP_11 => Err(refuse(
            ErrorKind::BadRequest,
            "HTTP/1.1 request without Host",
        )),
        (None, _) => Ok(()),
    }
}

/// RFC 9112 §3.2.2: with an absolute-form target (`GET http://h/x`) the target's authority is the
/// request's host and the Host header is ignored. It becomes the Host takgate works with (so the
/// Host rules, CORS and redirects apply to it); the upstream is still chosen by path alone. The
/// authority-form of CONNECT asks for a forward proxy, which takgate is not.
fn absolute_form_to_host<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let uri = req.uri();
    let Some(authority) = uri.authority() else {
        return Ok(());
    };
    if uri.scheme().is_none() {
        return Err(refuse(
            ErrorKind::BadRequest,
            "authority-form request target",
        ));
    }
    let host = parse_host(authority.as_str())
        .and_then(|a| Ok(HeaderValue::try_from(a.as_str())?))
        .map_err(|e| ProxyError::new(ErrorKind::BadRequest, None, Some(e)))?;
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
    req.headers_mut().insert(header::HOST, host);
    Ok(())
}

fn refuse(kind: ErrorKind, why: impl Into<String>) -> ProxyError {
    ProxyError::new(kind, None, Some(why.into().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn kind(target: &str, headers: &[(&str, &str)]) -> Option<ErrorKind> {
        canonicalize(&mut request(target, headers))
            .err()
            .map(|e| e.kind)
    }

    #[test]
    fn a_plain_request_passes_unchanged() {
        let mut req = request("/api/x?y=1", &[("host", "tak.example:8443")]);
        canonicalize(&mut req).unwrap();
        assert_eq!(req.uri(), "/api/x?y=1");
        assert_eq!(req.headers()[header::HOST], "tak.example:8443");
    }

    #[test]
    fn host_must_be_single_valid_and_present_on_http_11() {
        assert_eq!(
            kind("/", &[("host", "a"), ("host", "b")]),
            Some(ErrorKind::BadRequest)
        );
        for bad in ["u@h", "h:99999", "h:x", "h x", "h/x"] {
            assert_eq!(
                kind("/", &[("host", bad)]),
                Some(ErrorKind::BadRequest),
                "{bad}"
            );
        }
        assert_eq!(kind("/", &[]), Some(ErrorKind::BadRequest));
        // Found by proxy/fuzz (http_head): `ta[::1]mple` passed, and went upstream as
        // `ta[::1]mple:443`, which no parser reads as one host.
        for bad in [
            "ta[::1]mple",
            "[::1",
            "a]",
            "[zz]",
            "[::1]x:80",
            "[127.0.0.1]",
            "h:+80",
            "h:",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
        for good in ["[::1]", "[2001:db8::7]:8443", "tak.example", "10.0.0.1:80"] {
            assert_eq!(parse_host(good).unwrap().as_str(), good);
        }
        assert_eq!(kind("/", &[("host", "")]), None);
        let mut old = request("/", &[]);
        *old.version_mut() = Version::HTTP_10;
        assert!(canonicalize(&mut old).is_ok());
    }

    #[test]
    fn http2_cookie_fields_are_joined() {
        let mut req = request("/", &[("cookie", "session=a"), ("cookie", "XSRF-TOKEN=b")]);
        *req.version_mut() = Version::HTTP_2;
        canonicalize(&mut req).unwrap();
        let cookies: Vec<_> = req.headers().get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["session=a; XSRF-TOKEN=b"]);
        // HTTP/1.1 is left as the client sent it (control).
        let mut h1 = request("/", &[("host", "h"), ("cookie", "a=1"), ("cookie", "b=2")]);
        canonicalize(&mut h1).unwrap();
        assert_eq!(h1.headers().get_all(header::COOKIE).iter().count(), 2);
    }

    #[test]
    fn absolute_form_authority_becomes_the_host() {
        let mut req = request("http://tak.example:8443/api/x?y=1", &[("host", "other")]);
        canonicalize(&mut req).unwrap();
        assert_eq!(req.uri(), "/api/x?y=1");
        assert_eq!(req.headers()[header::HOST], "tak.example:8443");
        assert_eq!(
            kind("http://u:p@evil.example/api", &[("host", "h")]),
            Some(ErrorKind::BadRequest)
        );
        assert_eq!(
            kind("evil.example:443", &[("host", "h")]),
            Some(ErrorKind::BadRequest)
        );
    }

    #[test]
    fn only_plain_chunked_transfer_encoding_is_understood() {
        assert_eq!(
            kind("/", &[("host", "h"), ("transfer-encoding", "Chunked")]),
            None
        );
        for te in ["gzip, chunked", "identity, chunked", "chunked, chunked"] {
            assert_eq!(
                kind("/", &[("host", "h"), ("transfer-encoding", te)]),
                Some(ErrorKind::TransferEncoding),
                "{te}"
            );
        }
        assert_eq!(
            kind(
                "/",
                &[
                    ("host", "h"),
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ]
            ),
            Some(ErrorKind::TransferEncoding)
        );
    }

    #[test]
    fn long_targets_get_414() {
        let long = format!("/api/{}", "a".repeat(MAX_REQUEST_TARGET));
        assert_eq!(kind(&long, &[("host", "h")]), Some(ErrorKind::UriTooLong));
        let fits = format!("/{}", "a".repeat(MAX_REQUEST_TARGET - 1));
        assert_eq!(kind(&fits, &[("host", "h")]), None);
    }
}
