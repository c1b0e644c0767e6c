//! Server configs from `cot::tls` against real rustls clients over loopback.

// Shared with takgate-tests, which cot cannot depend on (it depends on cot);
// not every helper is used here.
#[allow(dead_code)]
#[path = "../../tests/src/certs.rs"]
mod certs;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use certs::{other_ca_client, server_name, IssuedCert, TestPki};
use cot::tls::{
    peer_leaf, server_config, ClientAuth, ReloadableTls, TlsError, TlsSettings, TlsVersion,
};
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

/// What each side saw of one connection.
struct Outcome {
    /// The client leaf the server saw, or why the server's handshake failed.
    server: io::Result<Option<CertificateDer<'static>>>,
    /// The server leaf the client saw, or why the client failed. The client also
    /// reads what the server sends after its handshake: with TLS 1.3 the client
    /// finishes before the server has checked the client certificate, so only that
    /// read shows a refusal on the client side.
    client: io::Result<CertificateDer<'static>>,
}

async fn connect(acceptor: TlsAcceptor, client: Arc<ClientConfig>) -> Outcome {
    let listener = within("bind", TcpListener::bind("127.0.0.1:0"))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let server = tokio::spawn(async move {
        let (tcp, _) = within("accept", listener.accept()).await?;
        let mut tls = within("server handshake", acceptor.accept(tcp)).await?;
        let leaf = peer_leaf(tls.get_ref().1).cloned();
        within("server write", tls.write_all(b"!")).await?;
        within("server shutdown", tls.shutdown()).await?;
        Ok(leaf)
    });

    let client = async {
        let tcp = within("connect", TcpStream::connect(addr)).await?;
        let mut tls = within(
            "client handshake",
            TlsConnector::from(client).connect(server_name(), tcp),
        )
        .await?;
        let server_leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned()
            .ok_or_else(|| io::Error::other("no server certificate"))?;
        // Reading to the end, rather than just the byte, leaves nothing unread when
        // the client closes, so the server's shutdown never meets a reset.
        let mut received = Vec::new();
        within("client read", tls.read_to_end(&mut received)).await?;
        assert_eq!(received, b"!");
        Ok(server_leaf)
    }
    .await;

    let server = within("server task", server)
        .await
        .unwrap_or_else(|e| panic!("server task: {e}"));
    Outcome { server, client }
}

/// Client-auth outcomes are checked with each version: a TLS 1.3 client learns of a
/// refusal only after its handshake, a TLS 1.2 client during it.
const VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS12, &rustls::version::TLS13];

fn rustls_error(err: &io::Error) -> &rustls::Error {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err:?}"))
}

fn acceptor(settings: &TlsSettings) -> TlsAcceptor {
    TlsAcceptor::from(server_config(settings).unwrap_or_else(|e| panic!("{e}")))
}

#[tokio::test]
async fn required_auth_accepts_a_client_of_the_ca() {
    let pki = TestPki::new();
    let client = pki.issue_client("eud1");
    for version in VERSIONS {
        let outcome = connect(
            acceptor(&pki.server_settings(ClientAuth::Required)),
            pki.client_config_with_versions(Some(&client), &[version]),
        )
        .await;
        assert_eq!(
            outcome.server.unwrap(),
            Some(client.der.clone()),
            "{version:?}"
        );
        assert_eq!(outcome.client.unwrap(), pki.server_der, "{version:?}");
    }
}

#[tokio::test]
async fn peer_leaf_is_the_leaf_of_a_presented_chain() {
    // Clients may send their CA after the leaf; the header must carry the leaf.
    let pki = TestPki::new();
    let client = pki.issue_client("eud1");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![client.der.clone(), pki.ca_der.clone()],
                client.key_der.clone_key(),
            )
            .unwrap();
    let outcome = connect(
        acceptor(&pki.server_settings(ClientAuth::Required)),
        Arc::new(config),
    )
    .await;
    assert_eq!(outcome.server.unwrap(), Some(client.der.clone()));
}

#[tokio::test]
async fn required_auth_refuses_a_client_without_certificate() {
    let pki = TestPki::new();
    for version in VERSIONS {
        let outcome = connect(
            acceptor(&pki.server_settings(ClientAuth::Required)),
            pki.client_config_with_versions(None, &[version]),
        )
        .await;
        let err = outcome.server.unwrap_err();
        assert!(
            matches!(rustls_error(&err), rustls::Error::NoCertificatesPresented),
            "{version:?}: {err}"
        );
        assert!(outcome.client.is_err(), "{version:?}");
    }
}

#[tokio::test]
async fn required_auth_refuses_a_client_of_another_ca() {
    let pki = TestPki::new();
    let stranger = other_ca_client("eud1");
    let outcome = connect(
        acceptor(&pki.server_settings(ClientAuth::Required)),
        pki.client_config(Some(&stranger)),
    )
    .await;
    let err = outcome.server.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err}"
    );
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn optional_auth_accepts_a_client_without_certificate() {
    let pki = TestPki::new();
    let outcome = connect(
        acceptor(&pki.server_settings(ClientAuth::Optional)),
        pki.client_config(None),
    )
    .await;
    assert_eq!(outcome.server.unwrap(), None);
    assert_eq!(outcome.client.unwrap(), pki.server_der);
}

#[tokio::test]
async fn optional_auth_still_verifies_a_presented_certificate() {
    let pki = TestPki::new();
    let settings = pki.server_settings(ClientAuth::Optional);

    let client = pki.issue_client("eud1");
    let outcome = connect(acceptor(&settings), pki.client_config(Some(&client))).await;
    assert_eq!(outcome.server.unwrap(), Some(client.der.clone()));

    let stranger = other_ca_client("eud2");
    let outcome = connect(acceptor(&settings), pki.client_config(Some(&stranger))).await;
    let err = outcome.server.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err}"
    );
}

/// `revoked` is refused as revoked over every TLS version, and `good` gets in.
#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failed handshake here is the test failing"
)]
async fn revoked_refused_good_accepted(
    pki: &TestPki,
    settings: &TlsSettings,
    revoked: &IssuedCert,
    good: &IssuedCert,
) {
    for version in VERSIONS {
        let outcome = connect(
            acceptor(settings),
            pki.client_config_with_versions(Some(revoked), &[version]),
        )
        .await;
        let err = outcome.server.unwrap_err();
        assert!(
            matches!(
                rustls_error(&err),
                rustls::Error::InvalidCertificate(CertificateError::Revoked)
            ),
            "{version:?}: {err}"
        );
        assert!(outcome.client.is_err(), "{version:?}");
    }
    let outcome = connect(acceptor(settings), pki.client_config(Some(good))).await;
    assert_eq!(outcome.server.unwrap(), Some(good.der.clone()));
}

#[tokio::test]
async fn crl_refuses_a_revoked_client_and_accepts_others() {
    let pki = TestPki::new();
    let revoked = pki.issue_client("lost-phone");
    let good = pki.issue_client("eud1");
    let mut settings = pki.server_settings(ClientAuth::Required);
    settings.crl = Some(pki.revoke(&revoked));

    revoked_refused_good_accepted(&pki, &settings, &revoked, &good).await;
}

#[tokio::test]
async fn crl_of_another_ca_refuses_everyone() {
    // No CRL covers the client's issuer, so its revocation status is unknown:
    // refused, as nginx does, rather than waved through.
    let pki = TestPki::new();
    let other = TestPki::named("unrelated test CA");
    let client = pki.issue_client("eud1");
    let mut settings = pki.server_settings(ClientAuth::Required);
    settings.crl = Some(other.write_crl());

    let outcome = connect(acceptor(&settings), pki.client_config(Some(&client))).await;
    let err = outcome.server.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::UnknownRevocationStatus)
        ),
        "{err}"
    );
}

/// OpenTAK Server's `ca/ca.crl` is a version 1 list (`openssl ca -gencrl` without crlnumber),
/// which webpki cannot parse; takgate checks those itself.
#[tokio::test]
async fn v1_crl_from_openssl_refuses_a_revoked_client_and_accepts_others() {
    let pki = TestPki::new();
    let revoked = pki.issue_client("lost-phone");
    let good = pki.issue_client("eud1");
    let mut settings = pki.server_settings(ClientAuth::Required);

    // As OTS leaves it: signed, listing nothing. Everyone of this CA gets in.
    settings.crl = Some(pki.write_v1_crl());
    for client in [&revoked, &good] {
        let outcome = connect(acceptor(&settings), pki.client_config(Some(client))).await;
        assert_eq!(
            outcome.server.unwrap(),
            Some(client.der.clone()),
            "{}",
            client.cn
        );
    }

    pki.revoke(&revoked);
    settings.crl = Some(pki.write_v1_crl());
    revoked_refused_good_accepted(&pki, &settings, &revoked, &good).await;

    // Another CA's client is still refused by the chain check, before any list is read.
    let stranger = other_ca_client("eud2");
    let outcome = connect(acceptor(&settings), pki.client_config(Some(&stranger))).await;
    assert!(outcome.server.is_err());
}

#[test]
fn v1_crl_not_signed_by_the_client_ca_is_a_config_error() {
    let pki = TestPki::new();
    let mut settings = pki.server_settings(ClientAuth::Required);
    // Another CA altogether, and one with the very same name but another key.
    for other in [TestPki::named("unrelated test CA"), TestPki::new()] {
        settings.crl = Some(other.write_v1_crl());
        let err = server_config(&settings).unwrap_err();
        assert!(matches!(err, TlsError::InvalidV1Crl { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&settings.crl.as_ref().unwrap().display().to_string()),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn tls13_only_server_refuses_a_tls12_only_client() {
    let pki = TestPki::new();
    let mut settings = pki.server_settings(ClientAuth::None);
    settings.versions = vec![TlsVersion::Tls13];
    let outcome = connect(
        acceptor(&settings),
        pki.client_config_with_versions(None, &[&rustls::version::TLS12]),
    )
    .await;
    let err = outcome.server.unwrap_err();
    assert!(
        matches!(rustls_error(&err), rustls::Error::PeerIncompatible(_)),
        "{err}"
    );
    assert!(outcome.client.is_err());

    // The same client gets in once the server allows TLS 1.2 as well.
    settings.versions = vec![TlsVersion::Tls12, TlsVersion::Tls13];
    let outcome = connect(
        acceptor(&settings),
        pki.client_config_with_versions(None, &[&rustls::version::TLS12]),
    )
    .await;
    assert_eq!(outcome.client.unwrap(), pki.server_der);
}

#[tokio::test]
async fn reload_serves_the_new_certificate_and_keeps_the_old_on_error() {
    let pki = TestPki::new();
    let served = pki.dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let mut settings = pki.server_settings(ClientAuth::None);
    settings.cert = served.join("server.pem");
    settings.key = served.join("server.key");
    std::fs::copy(&pki.server_cert, &settings.cert).unwrap();
    std::fs::copy(&pki.server_key, &settings.key).unwrap();

    let tls = ReloadableTls::new(settings.clone()).unwrap();
    let outcome = connect(tls.acceptor().unwrap(), pki.client_config(None)).await;
    assert_eq!(outcome.client.unwrap(), pki.server_der);

    let b = pki.issue_server(&["localhost"]);
    std::fs::copy(&b.cert, &settings.cert).unwrap();
    std::fs::copy(&b.key, &settings.key).unwrap();
    tls.reload().unwrap();
    let outcome = connect(tls.acceptor().unwrap(), pki.client_config(None)).await;
    assert_eq!(outcome.client.unwrap(), b.der);

    std::fs::write(&settings.key, "not a key\n").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&settings.key.display().to_string()),
        "{err}"
    );
    let outcome = connect(tls.acceptor().unwrap(), pki.client_config(None)).await;
    assert_eq!(outcome.client.unwrap(), b.der);
}

#[tokio::test]
async fn reload_picks_up_a_new_crl() {
    let pki = TestPki::new();
    let client = pki.issue_client("eud1");
    let mut settings = pki.server_settings(ClientAuth::Required);
    settings.crl = Some(pki.write_crl());
    let tls = ReloadableTls::new(settings).unwrap();

    let outcome = connect(tls.acceptor().unwrap(), pki.client_config(Some(&client))).await;
    assert_eq!(outcome.server.unwrap(), Some(client.der.clone()));

    pki.revoke(&client);
    tls.reload().unwrap();
    let outcome = connect(tls.acceptor().unwrap(), pki.client_config(Some(&client))).await;
    let err = outcome.server.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::Revoked)
        ),
        "{err}"
    );
}

#[test]
fn missing_files_are_named() {
    let pki = TestPki::new();
    let missing = pki.dir.path().join("nope.pem");
    for field in ["cert", "key", "client_ca", "crl"] {
        let mut settings = pki.server_settings(ClientAuth::Required);
        match field {
            "cert" => settings.cert = missing.clone(),
            "key" => settings.key = missing.clone(),
            "client_ca" => settings.client_ca = Some(missing.clone()),
            _ => settings.crl = Some(missing.clone()),
        }
        let err = server_config(&settings).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{field}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("reading {}: ", missing.display())),
            "{field}: {msg}"
        );
    }
}

#[test]
fn files_without_the_expected_pem_are_named() {
    let pki = TestPki::new();
    let settings = pki.server_settings(ClientAuth::Required);

    // A key file where the certificate should be, and the other way round.
    let mut s = settings.clone();
    s.cert = settings.key.clone();
    let err = server_config(&s).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no certificate in {}", settings.key.display())
    );

    let mut s = settings.clone();
    s.key = settings.cert.clone();
    let err = server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("no private key in {}", settings.cert.display())),
        "{err}"
    );

    let mut s = settings.clone();
    s.client_ca = Some(settings.key.clone());
    let err = server_config(&s).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no certificate in {}", settings.key.display())
    );

    let mut s = settings.clone();
    s.crl = Some(pki.ca_pem.clone());
    let err = server_config(&s).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no CRL in {}", pki.ca_pem.display())
    );
}

#[test]
fn broken_pem_is_named() {
    let pki = TestPki::new();
    let broken = pki.dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let mut settings = pki.server_settings(ClientAuth::None);
    settings.cert = broken.clone();
    let err = server_config(&settings).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("parsing PEM in {}: ", broken.display())),
        "{err}"
    );
}

#[test]
fn invalid_crl_is_named() {
    let pki = TestPki::new();
    let bad = pki.dir.path().join("bad-crl.pem");
    // Valid PEM framing around DER that is not a CRL.
    std::fs::write(
        &bad,
        "-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let mut settings = pki.server_settings(ClientAuth::Required);
    settings.crl = Some(bad.clone());
    let err = server_config(&settings).unwrap_err();
    assert!(matches!(err, TlsError::InvalidCrl { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("invalid CRL in {}: ", bad.display())),
        "{err}"
    );
}

#[test]
fn key_of_another_certificate_is_refused() {
    let pki = TestPki::new();
    let other = pki.issue_server(&["localhost"]);
    let mut settings = pki.server_settings(ClientAuth::None);
    settings.key = other.key.clone();
    let err = server_config(&settings).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "key {} does not match certificate in {}",
            other.key.display(),
            pki.server_cert.display()
        )
    );
}

#[test]
fn required_auth_without_client_ca_is_refused() {
    let pki = TestPki::new();
    let mut settings = pki.server_settings(ClientAuth::Required);
    settings.client_ca = None;
    let err = server_config(&settings).unwrap_err();
    assert!(matches!(err, TlsError::ClientCaMissing { .. }), "{err:?}");
    assert_eq!(err.to_string(), "client_auth = required needs client_ca");
}

#[test]
fn reloadable_tls_refuses_bad_settings_up_front() {
    let pki = TestPki::new();
    let mut settings = pki.server_settings(ClientAuth::None);
    settings.key = pki.ca_pem.clone();
    assert!(ReloadableTls::new(settings).is_err());
}
