//! The HTTP/1.1 client takgate uses towards its upstreams (OTS's API for forwarded requests, the
//! identity cache's user list and the admin readiness probe): pooled connections, a connect
//! timeout, TCP_NODELAY, and TLS for `https` upstreams when given a client config.
//!
//! Built on `hyper::client::conn::http1` with a pool of its own rather than hyper-util's legacy
//! client: that one hashed a pool key (SipHash), raced a checkout against a lazy connect and
//! spawned a task per request to put the connection back once it was ready again (callgrind over
//! 10,000 proxied `/api` requests: 50.7k instructions each with it, 43.8k with this one). Here a
//! connection goes back to the pool as soon as its response head arrives, and a request takes
//! the most recent one that is ready for another (its previous response read to the end).

use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many pooled connections a request looks at for a ready one before opening a new one:
/// connections still streaming a response (a long-poll, a download) stay pooled meanwhile.
const SCAN: usize = 32;

/// How an [`UpstreamClient`] connects and pools.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// An idle pooled connection is closed after this long.
    pub pool_idle_timeout: Duration,
    pub max_idle_per_host: usize,
    /// For `https` upstreams; with `None`, an `https` upstream fails its certificate check.
    pub tls: Option<rustls::ClientConfig>,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the upstream URI has no scheme or host: {0}")]
    Uri(Uri),
    #[error("connecting to the upstream")]
    Connect(#[source] BoxError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl Error {
    /// The connection could not be opened (nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }
}

/// A pooled HTTP/1.1 client sending `B` bodies.
pub struct UpstreamClient<B> {
    pool: Arc<Pool<B>>,
    connector: Connector,
}

impl<B> std::fmt::Debug for UpstreamClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl<B> Clone for UpstreamClient<B> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            connector: self.connector.clone(),
        }
    }
}

/// hyper-rustls's connector; in test builds, one whose connections [`redirect_to`] can divert.
#[derive(Clone, Debug)]
struct Connector(HttpsConnector<HttpConnector>);

impl Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = <HttpsConnector<HttpConnector> as Service<Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        #[cfg(feature = "test-hooks")]
        if let Some(to) = test_hooks::REDIRECT.get() {
            return Box::pin(test_hooks::redirected(*to, uri));
        }
        self.0.call(uri)
    }
}

impl<B> UpstreamClient<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Inside a tokio runtime, a task closes connections idle past the timeout.
    pub fn new(settings: ClientSettings) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        // The TLS layer wrapping it takes `https` URIs.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = match settings.tls {
            Some(tls) => tls,
            None => trust_nothing()?,
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = Arc::new(Pool {
            buckets: Mutex::new(Vec::new()),
            idle_timeout: settings.pool_idle_timeout,
            max_per_host: settings.max_idle_per_host,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&pool)));
        }
        Ok(Self {
            pool,
            connector: Connector(connector),
        })
    }

    /// Sends `req` (an absolute URI; sent in origin form, with a Host header from the URI if it
    /// has none) on a pooled connection or a new one; the caller bounds how long it waits. A
    /// pooled connection that turns out closed before the request went out is replaced once.
    pub async fn request(&self, mut req: Request<B>) -> Result<Response<Incoming>, Error> {
        let key = Key::of(req.uri()).ok_or_else(|| Error::Uri(req.uri().clone()))?;
        let target = std::mem::take(req.uri_mut());
        *req.uri_mut() = origin_form(&target);
        if !req.headers().contains_key(header::HOST) {
            if let Some(host) = key.host() {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let mut retried = false;
        loop {
            let (mut sender, pooled) = match self.pool.checkout(&key) {
                Some(sender) => (sender, true),
                None => (self.connect(&target).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    // An upgraded connection is the caller's now.
                    if !(upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS) {
                        self.pool.checkin(key, sender);
                    }
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    Some(again) if pooled && !retried => {
                        retried = true;
                        req = again;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    async fn connect(&self, target: &Uri) -> Result<SendRequest<B>, Error> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(target.clone())
            .await
            .map_err(Error::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Error::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// Connections by upstream, each with the instant it last went back to the pool.
struct Pool<B> {
    buckets: Mutex<Vec<Bucket<B>>>,
    idle_timeout: Duration,
    max_per_host: usize,
}

impl<B> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle_timeout", &self.idle_timeout)
            .field("max_per_host", &self.max_per_host)
            .finish_non_exhaustive()
    }
}

/// A handful of upstreams at most: found by comparison, no hashing.
struct Bucket<B> {
    key: Key,
    conns: Vec<(SendRequest<B>, Instant)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    scheme: Scheme,
    authority: Authority,
}

impl Key {
    fn of(uri: &Uri) -> Option<Self> {
        Some(Self {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
        })
    }

    /// The Host header for it: the port only when it is not the scheme's default.
    fn host(&self) -> Option<HeaderValue> {
        let default = matches!(
            (self.scheme.as_str(), self.authority.port_u16()),
            ("http", Some(80)) | ("https", Some(443))
        );
        let host = if default {
            self.authority.host()
        } else {
            self.authority.as_str()
        };
        HeaderValue::from_str(host).ok()
    }
}

impl<B> Pool<B> {
    /// The most recently used connection that is ready for a request; closed or expired ones
    /// met on the way are dropped.
    fn checkout(&self, key: &Key) -> Option<SendRequest<B>> {
        let mut buckets = self.buckets.lock().ok()?;
        let bucket = buckets.iter_mut().find(|b| b.key == *key)?;
        let now = Instant::now();
        let mut i = bucket.conns.len();
        let mut looked = 0;
        while i > 0 && looked < SCAN {
            i -= 1;
            let (sender, since) = &bucket.conns[i];
            if sender.is_closed() || now.duration_since(*since) > self.idle_timeout {
                bucket.conns.swap_remove(i);
            } else if sender.is_ready() {
                return Some(bucket.conns.swap_remove(i).0);
            } else {
                looked += 1;
            }
        }
        None
    }

    /// Back in the pool, unless the upstream's share is full (the connection then closes once
    /// its response is read).
    fn checkin(&self, key: Key, sender: SendRequest<B>) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        let entry = (sender, Instant::now());
        match buckets.iter_mut().find(|b| b.key == key) {
            Some(bucket) => {
                if bucket.conns.len() >= self.max_per_host {
                    bucket.conns.retain(|(s, _)| !s.is_closed());
                }
                if bucket.conns.len() < self.max_per_host {
                    bucket.conns.push(entry);
                }
            }
            None if self.max_per_host > 0 => buckets.push(Bucket {
                key,
                conns: vec![entry],
            }),
            None => {}
        }
    }

    /// Drops closed connections and ready ones idle past the timeout.
    fn expire(&self) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        let now = Instant::now();
        for bucket in buckets.iter_mut() {
            bucket.conns.retain(|(s, since)| {
                !(s.is_closed() || (s.is_ready() && now.duration_since(*since) > self.idle_timeout))
            });
        }
    }
}

/// Expires idle connections every idle timeout, for as long as the pool exists.
async fn reap<B>(pool: Weak<Pool<B>>) {
    let every = match pool.upgrade() {
        Some(p) => p.idle_timeout.max(Duration::from_secs(1)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.expire(),
            None => return,
        }
    }
}

/// `/path?query` of an absolute URI (`/` when it has none).
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}

/// A client config that trusts no server: `https` fails its certificate check.
fn trust_nothing() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

#[cfg(test)]
mod tests;

#[cfg(feature = "test-hooks")]
pub use test_hooks::redirect_to;

/// Test builds only (the `test-hooks` feature, which no release build enables).
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use std::net::SocketAddr;
    use std::sync::OnceLock;

    use http::Uri;
    use hyper_rustls::MaybeHttpsStream;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    pub(super) static REDIRECT: OnceLock<SocketAddr> = OnceLock::new();

    /// From now on, every [`UpstreamClient`](super::UpstreamClient) of this process connects to
    /// `to`, in plain TCP, and first writes the URI it was asked to connect to and a newline;
    /// then HTTP/1.1 as usual. For harnesses that stand in for every upstream at once (the fuzz
    /// targets). Only the first call counts.
    pub fn redirect_to(to: SocketAddr) {
        let _ = REDIRECT.set(to);
    }

    pub(super) async fn redirected(
        to: SocketAddr,
        uri: Uri,
    ) -> Result<MaybeHttpsStream<TokioIo<TcpStream>>, Box<dyn std::error::Error + Send + Sync>>
    {
        let mut tcp = TcpStream::connect(to).await?;
        tcp.write_all(format!("{uri}\n").as_bytes()).await?;
        Ok(MaybeHttpsStream::Http(TokioIo::new(tcp)))
    }
}
