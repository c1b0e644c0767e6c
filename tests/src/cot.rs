//! CoT-side helpers: a fake OTS CoT port that hands each accepted connection to the test, and
//! TLS clients with certificates.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};
use tokio_rustls::client::TlsStream;

use crate::certs::{server_name, IssuedCert, TestPki};
use crate::client::within;

/// A real ATAK marker event.
pub const SPOT: &[u8] = include_bytes!("../../cot/tests/fixtures/cot/marker-spot.cot");
/// A TAK ping (`t-x-c-t`).
pub const PING: &[u8] =
    b"<event version=\"2.0\" uid=\"ANDROID-1-ping\" type=\"t-x-c-t\" how=\"h-g-i-g-o\" \
time=\"2026-11-26T10:00:00Z\" start=\"2026-11-26T10:00:00Z\" stale=\"2026-11-26T10:00:10Z\">\
<point lat=\"0\" lon=\"0\" hae=\"0\" ce=\"9999999\" le=\"9999999\"/><detail/></event>";

/// Reads exactly `n` bytes.
pub async fn read_n(s: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within(s.read_exact(&mut buf)).await.unwrap();
    buf
}

/// Whether the peer closed (or reset) the stream, reading with a deadline.
pub async fn closed(s: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 64];
    matches!(within(s.read(&mut buf)).await, Ok(0) | Err(_))
}

/// A fake OTS CoT port (8088) on `127.0.0.1:0`; each connection takgate opens is handed over.
pub struct CotUpstream {
    pub addr: SocketAddr,
    conns: Mutex<mpsc::UnboundedReceiver<TcpStream>>,
}

impl CotUpstream {
    pub async fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        Arc::new(Self {
            addr,
            conns: Mutex::new(rx),
        })
    }

    /// The next connection takgate opened upstream.
    pub async fn accept(&self) -> TcpStream {
        within(async { self.conns.lock().await.recv().await })
            .await
            .expect("upstream channel closed")
    }

    /// A connection if one was opened, without waiting.
    pub async fn try_accept(&self) -> Option<TcpStream> {
        self.conns.lock().await.try_recv().ok()
    }
}

/// A fake of OTS's own SSL CoT listener (`eud_handler --ssl`): TLS with client certificates
/// required and verified against `ca`, as OTS does. Each completed handshake is handed over
/// with the certificate chain the client presented.
pub struct TlsCotUpstream {
    pub addr: SocketAddr,
    conns: Mutex<mpsc::UnboundedReceiver<TlsSession>>,
}

/// A connection to the fake OTS SSL listener, and who it says the client is.
pub struct TlsSession {
    pub stream: tokio_rustls::server::TlsStream<TcpStream>,
    pub chain: Vec<CertificateDer<'static>>,
}

impl TlsSession {
    /// The subject CN of the presented certificate, as OTS reads it.
    pub fn cn(&self) -> Option<String> {
        cot::gateway::common_name(self.chain.first()?)
    }
}

impl TlsCotUpstream {
    /// Serves `server` (a certificate of `server_pki`), requiring client certificates of `ca`.
    pub async fn start(server_pki: &TestPki, server: &IssuedCert, ca: &TestPki) -> Arc<Self> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server.der.clone(), server_pki.ca_der.clone()],
                server.key_der.clone_key(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    // A refused handshake hands nothing over: the test sees no session.
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(s))
                            .await
                    {
                        let chain = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let _ = tx.send(TlsSession { stream, chain });
                    }
                });
            }
        });
        Arc::new(Self {
            addr,
            conns: Mutex::new(rx),
        })
    }

    /// The next session takgate opened upstream.
    pub async fn accept(&self) -> TlsSession {
        within(async { self.conns.lock().await.recv().await })
            .await
            .expect("upstream channel closed")
    }

    /// A session if one was opened, without waiting.
    pub async fn try_accept(&self) -> Option<TlsSession> {
        self.conns.lock().await.try_recv().ok()
    }
}

/// A TLS client to `addr`, presenting `client` if given.
pub async fn tls_connect(
    addr: SocketAddr,
    pki: &TestPki,
    client: Option<&IssuedCert>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = within(TcpStream::connect(addr)).await?;
    let mut tls = within(
        tokio_rustls::TlsConnector::from(pki.client_config(client)).connect(server_name(), tcp),
    )
    .await?;
    // With TLS 1.3 the server's verdict on the client certificate arrives after the client's
    // handshake completes; a read surfaces it (a refusal reads as an error or end of stream).
    use tokio::io::AsyncWriteExt;
    tls.flush().await?;
    Ok(tls)
}

/// A `[[stream]]` listener section in `mode` with the test PKI's files.
pub fn stream_config(
    name: &str,
    upstream: SocketAddr,
    mode: &str,
    pki: &TestPki,
    extra: &str,
) -> String {
    let tls = if mode == "passthrough" || mode == "plain" {
        String::new()
    } else {
        format!(
            "[stream.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nhandshake_timeout = \"500ms\"\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca_pem.display()
        )
    };
    format!(
        "[[stream]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\nmode = \"{mode}\"\n{extra}\n{tls}"
    )
}

/// A client presenting `cert` to `addr` is refused: its handshake fails, or the session is
/// closed before anything is relayed; and `takgate_stream_refused_total{reason}` reaches `count`.
pub async fn assert_refused(
    proxy: &crate::proxy::TestProxy,
    addr: SocketAddr,
    pki: &TestPki,
    cert: &IssuedCert,
    reason: &str,
    count: f64,
) {
    if let Ok(mut tls) = tls_connect(addr, pki, Some(cert)).await {
        use tokio::io::AsyncWriteExt;
        let _ = tls.write_all(PING).await;
        assert!(
            closed(&mut tls).await,
            "{} must be refused ({reason})",
            cert.cn
        );
    }
    proxy
        .wait_metric("takgate_stream_refused_total", &[("reason", reason)], count)
        .await;
}
