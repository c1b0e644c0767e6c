//! Forwarding a request to an upstream: the header contract OTS expects (`ots-contract.md` §1.8,
//! §3.3), pooled upstream connections, timeouts, and one classification of what went wrong.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cot::upstream_client::{ClientSettings, UpstreamClient};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};

use crate::config::UpstreamConfig;
use crate::error::{ErrorKind, ProxyError};
use crate::http::body::{Body, BoxError, IdleTimedOut, IdleTimeout, SendProgress};
use crate::http::head;
use crate::http::router::{HostHeader, ProxyRoute, Upstream};
use http_body_util::BodyExt;

type HttpClient = UpstreamClient<Body>;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Client-supplied headers that OTS (through werkzeug's ProxyFix, `x_for=1, x_host=1`) would
/// trust. takgate sets the ones OTS needs itself; the rest must not come from a client.
static SPOOFABLE: [HeaderName; 6] = [
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-original-forwarded-for"),
    header::FORWARDED,
];

/// What takgate knows about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    /// `https` on TLS listeners.
    pub scheme: Scheme,
    /// The verified client certificate, already escaped as nginx's `$ssl_client_escaped_cert`.
    pub client_cert: Option<HeaderValue>,
}

/// Sends requests upstream over pooled HTTP/1.1 connections.
#[derive(Debug)]
pub struct Forwarder {
    verified: HttpClient,
    unverified: HttpClient,
    response_timeout: Duration,
    cert_header: HeaderName,
}

/// A forwarded request's response and the upstream's time to first byte.
pub struct Forwarded {
    pub response: Response<hyper::body::Incoming>,
    pub ttfb: Duration,
}

// === impl Forwarder ===

impl Forwarder {
    pub fn new(config: &UpstreamConfig, cert_header: HeaderName) -> Result<Self, rustls::Error> {
        Ok(Self {
            verified: client(config, verified_tls()?)?,
            unverified: client(config, unverified_tls()?)?,
            response_timeout: config.response_timeout,
            cert_header,
        })
    }

    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Sends `req` (already rewritten by [`Forwarder::upstream_request`], its body tracked by
    /// `progress`) and waits for the head. The upstream gets `response_timeout` from its last
    /// progress: from taking the last of the body to answering, and between two parts of a
    /// body it is taking, however long a slow client takes to upload (nginx's
    /// `proxy_read_timeout` and `proxy_send_timeout`).
    pub async fn send(
        &self,
        upstream: &Upstream,
        req: Request<Body>,
        progress: &SendProgress,
    ) -> Result<Forwarded, ProxyError> {
        let client = if upstream.tls_verify {
            &self.verified
        } else {
            &self.unverified
        };
        let start = tokio::time::Instant::now();
        let request = client.request(req);
        tokio::pin!(request);
        let mut deadline = start + self.response_timeout;
        loop {
            tokio::select! {
                // The response first: no random choice of branch on every poll.
                biased;
                result = &mut request => {
                    return match result {
                        Ok(response) => Ok(Forwarded {
                            response,
                            ttfb: start.elapsed(),
                        }),
                        Err(e) => Err(classify(&upstream.uri, e)),
                    };
                }
                () = tokio::time::sleep_until(deadline) => {
                    let now = tokio::time::Instant::now();
                    deadline = if progress.awaiting_client() {
                        now + self.response_timeout
                    } else {
                        progress.last() + self.response_timeout
                    };
                    if deadline <= now {
                        return Err(ProxyError::new(
                            ErrorKind::UpstreamTimeout,
                            Some(upstream.uri.to_string()),
                            Some(format!("no response within {:?}", self.response_timeout).into()),
                        ));
                    }
                }
            }
        }
    }

    /// Rewrites a client request for `route`: target URI, hop-by-hop headers, Host and the
    /// X-Forwarded family, and the client certificate header. `req` has passed
    /// [`head::canonicalize`], so its Host, if any, is valid.
    pub fn upstream_request(
        &self,
        route: &ProxyRoute,
        client: &ClientInfo,
        default_host: &str,
        upgrade: Option<HeaderValue>,
        mut req: Request<Body>,
    ) -> Result<Request<Body>, ProxyError> {
        let uri = upstream_uri(&route.upstream.uri, route.strip.as_deref(), req.uri())
            .map_err(|e| ProxyError::new(ErrorKind::BadRequest, None, Some(e.into())))?;
        let host = upstream_host(req.headers().get(header::HOST), default_host, route.host)
            .map_err(|e| ProxyError::new(ErrorKind::BadRequest, None, Some(e)))?;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        // Again one pass over the client's names rather than a lookup per name it must not send.
        if headers
            .keys()
            .any(|k| *k == self.cert_header || SPOOFABLE.contains(k))
        {
            headers.remove(&self.cert_header);
            for name in &SPOOFABLE {
                headers.remove(name);
            }
        }
        headers.insert(header::HOST, host);
        let ip = HeaderValue::try_from(client.peer.ip().to_string())
            .map_err(|e| ProxyError::new(ErrorKind::Internal, None, Some(e.into())))?;
        // Overwritten, not appended: OTS trusts exactly one hop (ProxyFix x_for=1), and
        // /api/rabbitmq trusts remote_addr, so a client's own value must never reach it.
        headers.insert(&X_FORWARDED_FOR, ip.clone());
        headers.insert(&X_REAL_IP, ip);
        headers.insert(
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(if client.scheme == Scheme::HTTPS {
                "https"
            } else {
                "http"
            }),
        );
        if let Some(cert) = &client.client_cert {
            headers.insert(&self.cert_header, cert.clone());
        }
        if let Some(protocol) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        Ok(req)
    }
}

/// Removes a response's hop-by-hop headers; a 101 keeps `Connection` and `Upgrade`, which are
/// the switch itself.
pub fn clean_response_headers(resp: &mut Response<impl Sized>) {
    let switching = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    if switching {
        let upgrade = headers.remove(header::UPGRADE);
        strip_hop_by_hop(headers);
        if let Some(u) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, u);
        }
    } else {
        strip_hop_by_hop(headers);
    }
}

/// Wraps an upstream response body so a stalled upstream is cut after `timeout` of silence.
pub fn response_body(body: hyper::body::Incoming, timeout: Duration) -> Body {
    IdleTimeout::new(body, timeout).boxed_unsync()
}

/// The hop-by-hop headers that predate `Connection` (and it).
static HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &PROXY_CONNECTION,
    &KEEP_ALIVE,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHORIZATION,
];

/// RFC 9110 §7.6.1: `Connection` and every header it names, plus the hop-by-hop headers that
/// predate it, apply to one connection only.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over their few names (comparisons, no hashing) spares
    // a lookup per hop-by-hop name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The Host sent upstream (see [`HostHeader`]): the client's, which [`head::canonicalize`] has
/// already checked and is not parsed again, or `default_host` when it sent none or an empty one.
fn upstream_host(
    client: Option<&HeaderValue>,
    default_host: &str,
    rule: HostHeader,
) -> Result<HeaderValue, BoxError> {
    let Some(client) = client.filter(|h| !h.is_empty()) else {
        return host_header(default_host, rule);
    };
    match rule {
        HostHeader::DefaultPort(port) => {
            let host = client.to_str()?;
            // A checked Host names a port when its last ':' is not inside an IPv6 literal.
            let has_port = host.rfind(':').is_some_and(|i| !host[i..].contains(']'));
            if has_port {
                Ok(client.clone())
            } else {
                Ok(HeaderValue::try_from(format!("{host}:{port}"))?)
            }
        }
        HostHeader::Verbatim => Ok(client.clone()),
    }
}

fn host_header(client_host: &str, rule: HostHeader) -> Result<HeaderValue, BoxError> {
    let authority = head::parse_host(client_host)?;
    let value = match rule {
        HostHeader::DefaultPort(port) if authority.port().is_none() => {
            HeaderValue::try_from(format!("{}:{port}", authority.host()))?
        }
        _ => HeaderValue::try_from(authority.as_str())?,
    };
    Ok(value)
}

/// Joins the upstream's base with the request path (less a stripped prefix) and query.
fn upstream_uri(base: &Uri, strip: Option<&str>, req: &Uri) -> Result<Uri, http::Error> {
    let path = req.path();
    let path = match strip {
        Some(prefix) => path.strip_prefix(prefix).unwrap_or(path),
        None => path,
    };
    let base_path = base.path().trim_end_matches('/');
    let mut pq = String::with_capacity(
        base_path.len() + path.len() + 1 + req.query().map_or(0, |q| q.len() + 1),
    );
    pq.push_str(base_path);
    if !path.starts_with('/') {
        pq.push('/');
    }
    pq.push_str(path);
    if let Some(q) = req.query() {
        pq.push('?');
        pq.push_str(q);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq)?);
    Ok(Uri::from_parts(parts)?)
}

/// Sorts a client error into an [`ErrorKind`] by walking its causes.
fn classify(upstream: &Uri, err: cot::upstream_client::Error) -> ProxyError {
    let kind = {
        let mut kind = if err.is_connect() {
            ErrorKind::UpstreamConnect
        } else {
            ErrorKind::UpstreamProtocol
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = cause {
            if e.is::<http_body_util::LengthLimitError>() {
                kind = ErrorKind::BodyTooLarge;
                break;
            }
            if e.is::<ClientBodyError>() {
                kind = ErrorKind::DownstreamBody;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut && err.is_connect() {
                    kind = ErrorKind::UpstreamConnectTimeout;
                }
            }
            cause = e.source();
        }
        kind
    };
    ProxyError::new(kind, Some(upstream.to_string()), Some(Box::new(err)))
}

/// Marks errors that came from the client's request body, so they are not blamed on the upstream.
#[derive(Debug, thiserror::Error)]
#[error("client body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// The client's request body as sent upstream: at most `limit` bytes, each chunk within
/// `idle` of the last, errors marked as the client's, its progress recorded in `progress`.
pub fn request_body<B: crate::http::service::RequestBody>(
    body: B,
    limit: usize,
    idle: Duration,
    progress: &Arc<SendProgress>,
) -> Body {
    let limited = http_body_util::Limited::new(body, limit);
    progress
        .track(IdleTimeout::new(limited, idle))
        .map_err(|e| -> BoxError { Box::new(ClientBodyError(e)) })
        .boxed_unsync()
}

/// Whether a body error came from [`IdleTimeout`].
pub fn is_idle_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<IdleTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn client(config: &UpstreamConfig, tls: rustls::ClientConfig) -> Result<HttpClient, rustls::Error> {
    UpstreamClient::new(ClientSettings {
        connect_timeout: config.connect_timeout,
        pool_idle_timeout: config.pool_idle_timeout,
        // hyper's default: no bound on idle connections per upstream.
        max_idle_per_host: usize::MAX,
        tls: Some(tls),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Upstream TLS verified against the system's roots.
fn verified_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "loading a system root certificate");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        roots = added,
        "system root certificates for https upstreams"
    );
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Upstream TLS without certificate checks, for `tls_verify = false` routes (MediaMTX on
/// loopback with OTS's self-signed certificate, as OTS's nginx does by default).
fn unverified_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(NoVerify(provider.clone()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
