//! Request paths normalised before routing (RFC 3986 §6.2.2), so that `/Marti/api/%74ls` or
//! `/x/../Marti/api/tls` cannot slip past a location block that nginx, which normalises the same
//! way, would have applied. The normalised path is also the one forwarded: the route was chosen
//! for it, and an upstream must not read a different path than takgate routed.

use std::borrow::Cow;

use http::Request;

use crate::error::{ErrorKind, ProxyError};

/// A path that cannot be normalised: it climbs above the root or encodes a NUL byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request path")]
pub struct InvalidPath;

/// Decodes percent-encoded unreserved characters and `%2F`, merges repeated slashes and resolves
/// `.` and `..` segments. Other escapes (`%20`, `%3F`, …) stay as they are.
///
/// `%2F` is a `/` here because it is one to the upstreams (gevent decodes it before werkzeug
/// routes, Go's net/http before MediaMTX does) and to nginx's `location` matching: kept
/// encoded, `/Marti/api%2Ftls` would pass the `/Marti/api/tls` 404 and reach enrollment.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_for_routing(path)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(InvalidPath)?;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    // A trailing slash (or a trailing `.`/`..`) names a directory: keep it.
    let dir = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if out.is_empty() || dir {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Replaces a request's path by its normal form, the one takgate routes and forwards.
pub fn normalize_request<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let invalid = |e: InvalidPath| ProxyError::new(ErrorKind::BadRequest, None, Some(e.into()));
    if let Cow::Owned(normal) = normalize(req.uri().path()).map_err(invalid)? {
        *req.uri_mut() = with_path(req.uri(), &normal).map_err(invalid)?;
    }
    Ok(())
}

/// `uri` with its path replaced by `path`, query kept.
fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, InvalidPath> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| InvalidPath)?);
    http::Uri::from_parts(parts).map_err(|_| InvalidPath)
}

fn needs_work(path: &str) -> bool {
    path.contains('%') || path.contains("//") || path.contains("/.") || !path.starts_with('/')
}

fn decode_for_routing(path: &str) -> Result<String, InvalidPath> {
    let bytes = path.as_bytes();
    // Bytes, not chars: a multi-byte UTF-8 character is copied as it came, not byte by byte.
    let mut out = Vec::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(InvalidPath)?;
            // Two hex digits, nothing else: `u8::from_str_radix` would also take a sign, so
            // `%+f` would decode as `%0F` where nginx (and RFC 3986) see a malformed escape.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(InvalidPath);
            }
            let hex = std::str::from_utf8(hex).map_err(|_| InvalidPath)?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| InvalidPath)?;
            if byte == 0 {
                return Err(InvalidPath);
            }
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
                out.push(byte);
            } else {
                // Uppercase hex, as RFC 3986 §6.2.2.1 recommends.
                out.push(b'%');
                out.extend(hex.to_ascii_uppercase().bytes());
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only whole characters and ASCII were written, so this cannot fail.
    String::from_utf8(out).map_err(|_| InvalidPath)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_are_borrowed() {
        assert!(matches!(normalize("/api/login").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalize("/").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn encoded_unreserved_characters_and_dot_segments_are_resolved() {
        for (input, want) in [
            ("/Marti/api/%74ls/config", "/Marti/api/tls/config"),
            ("/Marti/api/%54LS", "/Marti/api/TLS"),
            ("/x/../Marti/api/tls", "/Marti/api/tls"),
            ("/x/%2e%2e/Marti/api/tls", "/Marti/api/tls"),
            ("//Marti//api/./tls", "/Marti/api/tls"),
            ("/assets/", "/assets/"),
            ("/assets/.", "/assets/"),
            ("/a/b/..", "/a/"),
            ("/a%2fb", "/a/b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%20b", "/a%20b"),
            ("/.", "/"),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    /// Found by `proxy/fuzz` (http_head): each byte of a multi-byte character was pushed as a
    /// char of its own, so `Ñ¡` became `Ã\u{91}Â¡`, and again on every pass.
    #[test]
    fn non_ascii_characters_survive_normalisation() {
        assert_eq!(normalize("/media~a/..Ñ¡/%7Ec").unwrap(), "/media~a/..Ñ¡/~c");
        assert_eq!(normalize("/ünï/./çödé%2D").unwrap(), "/ünï/çödé-");
        let once = normalize("/a//é").unwrap().into_owned();
        assert_eq!(normalize(&once).unwrap(), once);
    }

    /// Found by `proxy/fuzz` (http_head): `%2F` stayed encoded, so the route was chosen for
    /// another path than the upstream reads.
    #[test]
    fn encoded_slashes_are_segment_separators() {
        for (input, want) in [
            ("/Marti/api%2Ftls/config", "/Marti/api/tls/config"),
            (
                "/%2FMarti/api/clientEndPoints",
                "/Marti/api/clientEndPoints",
            ),
            ("/api%2F..%2FMarti/api/tls", "/Marti/api/tls"),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        assert_eq!(normalize("/api%2F..%2F..%2Fetc"), Err(InvalidPath));
    }

    #[test]
    fn climbing_above_root_or_bad_escapes_are_invalid() {
        for bad in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%",
            "/%4",
            "/%zz",
            "/a%00b",
            // A sign is not a hex digit, though `u8::from_str_radix` accepts one.
            "/%+f",
            "/a%+1b",
            "/%-1",
            "/%-0",
            "/% f",
        ] {
            assert_eq!(normalize(bad), Err(InvalidPath), "{bad}");
        }
    }
}
