//! The HTTP/1.1 client takgate uses towards its upstreams (OTS's API for forwarded requests, the
//! identity cache's user list and the admin readiness probe): pooled connections, a connect
//! timeout, TCP_NODELAY, and TLS for `https` upstreams when given a client config.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Uri};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

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

/// A pooled HTTP/1.1 client sending `B` bodies.
#[derive(Clone, Debug)]
pub struct UpstreamClient<B> {
    inner: Client<Connector, B>,
}

/// hyper-rustls's connector; in test builds, one whose connections [`redirect_to`] can divert.
#[derive(Clone, Debug)]
pub struct Connector(HttpsConnector<HttpConnector>);

impl tower::Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = <HttpsConnector<HttpConnector> as tower::Service<Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as tower::Service<Uri>>::Future;

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
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(Connector(connector));
        Ok(Self { inner })
    }

    /// Sends `req`; the caller bounds how long it waits.
    pub fn request(&self, req: Request<B>) -> ResponseFuture {
        self.inner.request(req)
    }
}

/// A client config that trusts no server: `https` fails its certificate check.
fn trust_nothing() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

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
