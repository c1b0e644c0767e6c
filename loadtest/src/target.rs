//! Targets: loopback only. loadtest is for measuring this machine; it refuses to send load
//! anywhere else, whatever a name resolves to.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use http::Uri;

/// Resolves `host:port` and requires every address it names to be loopback.
pub async fn resolve_loopback(target: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving {target:?} (expected host:port)"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        bail!("{target:?} resolves to no address");
    };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing target {target:?}: it resolves to {bad}, which is not a loopback address; \
             loadtest only sends load to this machine (127.0.0.0/8 or ::1)"
        );
    }
    Ok(first)
}

/// A parsed `http`, `https`, `ws` or `wss` URL whose host is loopback.
#[derive(Debug, Clone)]
pub struct UrlTarget {
    pub url: String,
    pub tls: bool,
    pub addr: SocketAddr,
    /// The `Host` header: host and port as written in the URL.
    pub authority: String,
    /// The host as written (for TLS server name).
    pub host: String,
    pub path_and_query: String,
}

/// Parses `url`, whose scheme must be one of `schemes` (the plain one first, then its TLS one).
pub async fn parse_url(url: &str, schemes: [&str; 2]) -> anyhow::Result<UrlTarget> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("parsing URL {url:?}"))?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    let tls = if scheme == schemes[0] {
        false
    } else if scheme == schemes[1] {
        true
    } else {
        bail!(
            "URL {url:?}: the scheme must be {} or {}",
            schemes[0],
            schemes[1]
        );
    };
    let Some(authority) = uri.authority() else {
        bail!("URL {url:?} has no host");
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = resolve_loopback(&if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
    .await?;
    Ok(UrlTarget {
        url: url.to_owned(),
        tls,
        addr,
        authority: authority.as_str().to_owned(),
        host: host.to_owned(),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// A listen address for the sink: loopback only, like the targets.
pub fn check_listen(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        bail!("refusing to listen on {addr}: loadtest's sink binds loopback addresses only");
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_names_and_addresses_pass() {
        assert_eq!(
            resolve_loopback("127.0.0.1:8089").await.unwrap(),
            "127.0.0.1:8089".parse().unwrap()
        );
        assert!(resolve_loopback("127.3.2.1:1").await.is_ok());
        assert!(resolve_loopback("[::1]:80").await.is_ok());
        assert!(resolve_loopback("localhost:80")
            .await
            .unwrap()
            .ip()
            .is_loopback());
    }

    #[tokio::test]
    async fn other_addresses_are_refused_with_a_reason() {
        for t in [
            "10.0.0.1:8089",
            "0.0.0.0:80",
            "192.168.1.1:443",
            "[2001:db8::1]:80",
        ] {
            let e = resolve_loopback(t).await.unwrap_err().to_string();
            assert!(e.contains("not a loopback address"), "{t}: {e}");
        }
        assert!(resolve_loopback("no-port").await.is_err());
        let e = parse_url("http://10.1.2.3:8080/api", ["http", "https"])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a loopback"), "{e}");
        assert!(check_listen("0.0.0.0:0".parse().unwrap()).is_err());
        assert!(check_listen("127.0.0.1:0".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn urls_parse() {
        let u = parse_url(
            "https://localhost:8443/Marti/api/version?x=1",
            ["http", "https"],
        )
        .await
        .unwrap();
        assert!(u.tls);
        assert_eq!(u.authority, "localhost:8443");
        assert_eq!(u.host, "localhost");
        assert_eq!(u.path_and_query, "/Marti/api/version?x=1");
        assert_eq!(u.addr.port(), 8443);
        let w = parse_url("ws://127.0.0.1:9/socket.io/", ["ws", "wss"])
            .await
            .unwrap();
        assert!(!w.tls);
        let plain = parse_url("http://127.0.0.1", ["http", "https"])
            .await
            .unwrap();
        assert_eq!(plain.addr.port(), 80);
        assert_eq!(plain.path_and_query, "/");
        assert!(parse_url("ftp://127.0.0.1/", ["http", "https"])
            .await
            .is_err());
    }
}
