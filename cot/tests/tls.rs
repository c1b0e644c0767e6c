//! Server configs from `cot::tls` against real rustls clients over loopback.

// Shared with takgate-tests, which cot cannot depend on (it depends on cot);
// not every helper is used here.
#[allow(dead_code)]
#[path = "../../tests/src/certs.rs"]
mod certs;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use certs::{other_ca_client, server_name, IssuedCert, OpensslCrl, TestPki};
use cot::tls::{
    handshake_failure, peer_leaf, server_config, ClientAuth, ReloadableTls, TlsError, TlsSettings,
    TlsVersion,
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
async fn a_client_whose_ca_no_crl_covers_is_refused() {
    // Both CAs are trusted, but the file only holds the second one's list, so the status of
    // the first one's clients is unknown: refused, as nginx does, rather than waved through.
    // Once with a list webpki checks, once with one takgate checks (version 1).
    let pki = TestPki::new();
    let second = TestPki::named("second test CA");
    let client = pki.issue_client("eud1");
    let mut settings = pki.server_settings(ClientAuth::Required);
    settings.client_ca = Some(bundle(&pki, &[&pki, &second]));
    for crl in [second.write_crl(), second.write_v1_crl()] {
        settings.crl = Some(crl);
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
}

/// `client_ca` holding the certificates of `cas`, written into `pki`'s directory.
#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failure here is the test failing"
)]
fn bundle(pki: &TestPki, cas: &[&TestPki]) -> PathBuf {
    let path = pki.dir.path().join(format!("bundle-{}.pem", cas.len()));
    let pem: String = cas
        .iter()
        .map(|ca| std::fs::read_to_string(&ca.ca_pem).unwrap())
        .collect();
    std::fs::write(&path, pem).unwrap();
    path
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
fn crl_not_signed_by_the_client_ca_is_a_config_error() {
    let pki = TestPki::new();
    let mut settings = pki.server_settings(ClientAuth::Required);
    // Another CA altogether, and one with the very same name but another key; lists of both
    // versions (webpki's and takgate's own checks).
    for other in [TestPki::named("unrelated test CA"), TestPki::new()] {
        for crl in [other.write_v1_crl(), other.write_crl()] {
            settings.crl = Some(crl.clone());
            let err = server_config(&settings).unwrap_err();
            assert!(matches!(err, TlsError::Crl { .. }), "{err:?}");
            assert!(
                err.to_string().starts_with(&format!(
                    "crl {}: signed by no configured CA (",
                    crl.display()
                )),
                "{err}"
            );
        }
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
    assert!(matches!(err, TlsError::Crl { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("crl {}: not a CRL: ", bad.display())),
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

/// What OpenSSL says of `cert`: `openssl verify -crl_check -CAfile ca -CRLfile crl cert`, the
/// check nginx's `ssl_crl` makes. `Ok`, or its error text.
fn openssl_verify(ca: &Path, crl: &Path, cert: &Path) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(ca)
        .arg("-CRLfile")
        .arg(crl)
        .arg(cert)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .replace('\n', " | "))
    }
}

/// takgate's verdict on `cert`, the same over TLS 1.2 and 1.3: `Ok`, or the refusal reason as
/// `takgate_stream_refused_total` counts it.
async fn takgate_verdict(
    pki: &TestPki,
    settings: &TlsSettings,
    cert: &IssuedCert,
) -> Result<(), &'static str> {
    let mut verdicts = Vec::new();
    for version in VERSIONS {
        let outcome = connect(
            acceptor(settings),
            pki.client_config_with_versions(Some(cert), &[version]),
        )
        .await;
        verdicts.push(match outcome.server {
            Ok(leaf) => {
                assert_eq!(leaf.as_ref(), Some(&cert.der));
                Ok(())
            }
            Err(e) => Err(handshake_failure(&e)),
        });
    }
    assert_eq!(verdicts[0], verdicts[1], "TLS 1.2 and 1.3 disagree");
    verdicts.remove(0)
}

/// The lists of `parts` in one file, as PEM (concatenated) and as DER (one after another).
#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failure here is the test failing"
)]
fn crl_files(dir: &Path, name: &str, parts: &[&Path]) -> [PathBuf; 2] {
    let pem = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.der"));
    let mut pem_text = String::new();
    let mut der_bytes = Vec::new();
    for part in parts {
        pem_text.push_str(&std::fs::read_to_string(part).unwrap());
        let out = Command::new("openssl")
            .args(["crl", "-outform", "DER", "-in"])
            .arg(part)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        der_bytes.extend_from_slice(&out.stdout);
    }
    std::fs::write(&pem, pem_text).unwrap();
    std::fs::write(&der, der_bytes).unwrap();
    [pem, der]
}

/// What a case of the CRL matrix must give.
enum Expect {
    /// takgate loads the file, and decides of (revoked, good) as given; OpenSSL agrees.
    Loads(Result<(), &'static str>, Result<(), &'static str>),
    /// takgate refuses the file with this reason; OpenSSL's verdicts on (revoked, good) contain
    /// these texts (`""`: OpenSSL accepts the certificate).
    Refused(&'static str, [&'static str; 2]),
}

/// Issue 13: every CRL OpenSSL accepts for the configured CA loads, and refuses the revoked
/// certificate while the other gets in; every list that cannot be used is named with the
/// reason. Each case as PEM and as DER, against OpenSSL's verdict for the same files.
#[tokio::test]
async fn crl_matrix_matches_openssl() {
    const AKI: &str = "authorityKeyIdentifier = keyid:always";
    const UNKNOWN: &str = "1.3.6.1.4.1.55555.1 = ASN1:UTF8String:takgate";
    const CRITICAL: &str = "1.3.6.1.4.1.55555.1 = critical,ASN1:UTF8String:takgate";
    const PAST: Option<(&str, &str)> = Some(("20240101000000Z", "20250101000000Z"));
    let v1 = OpensslCrl::default();
    let v2 = |crl_number: bool, extensions: Option<&'static str>| OpensslCrl {
        crl_number,
        extensions,
        ..OpensslCrl::default()
    };

    let a = TestPki::new();
    let b = TestPki::named("second test CA");
    let stranger = TestPki::named("unrelated test CA");
    let namesake = TestPki::new();
    let revoked = a.issue_client("lost-phone");
    let good = a.issue_client("eud1");
    // Older lists of `a`, from when `good` was on hold and `revoked` was not yet revoked: of
    // two lists of one CA, the newer is used (not both).
    const OLD: Option<(&str, &str)> = Some(("20230101000000Z", "21000101000000Z"));
    a.set_revoked(&[&good]);
    let a_old_v1 = a.write_openssl_crl("a-old-v1.pem", &OpensslCrl { dates: OLD, ..v1 });
    let a_old_v2 = a.write_openssl_crl(
        "a-old-v2.pem",
        &OpensslCrl {
            dates: OLD,
            ..v2(true, Some(AKI))
        },
    );
    a.set_revoked(&[&revoked]);
    let b_client = b.issue_client("b");
    b.set_revoked(&[&b_client]);
    stranger.set_revoked(&[&revoked]);

    let a_v1 = a.write_openssl_crl("a-v1.pem", &v1);
    let a_py = a.write_python_crl("a-python.pem");
    let a_v2 = a.write_openssl_crl("a-v2.pem", &v2(true, Some(AKI)));
    let b_v2 = b.write_openssl_crl("b-v2.pem", &v2(true, Some(AKI)));
    let b_v1 = b.write_openssl_crl("b-v1.pem", &v1);
    let s_v1 = stranger.write_v1_crl();
    let ok = Ok(());
    let cases: Vec<(&str, Vec<PathBuf>, Expect)> = vec![
        (
            "v1 (openssl ca, no crlnumber: OTS's ca.crl)",
            vec![a_v1.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, cRLNumber and authorityKeyIdentifier (openssl ca)",
            vec![a_v2.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, cRLNumber only (openssl ca)",
            vec![a.write_openssl_crl("v2-number.pem", &v2(true, None))],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, authorityKeyIdentifier, no cRLNumber (openssl ca)",
            vec![a.write_openssl_crl("v2-aki.pem", &v2(false, Some(AKI)))],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, no extensions at all (openssl ca, empty crl_extensions)",
            vec![a.write_openssl_crl("v2-none.pem", &v2(false, Some("")))],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, no extensions at all (Python cryptography's default)",
            vec![a_py.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, cRLNumber and authorityKeyIdentifier (rcgen)",
            vec![a.write_crl()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, unknown non-critical extension and cRLNumber",
            vec![a.write_openssl_crl("v2-unknown-number.pem", &v2(true, Some(UNKNOWN)))],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v2, unknown non-critical extension only",
            vec![a.write_openssl_crl("v2-unknown.pem", &v2(false, Some(UNKNOWN)))],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "several: another trusted CA's v2, then v1",
            vec![b_v2.clone(), a_v1.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "several: another trusted CA's v1, then v2 without extensions (Python)",
            vec![b_v1.clone(), a_py.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "several of one CA (v1): an older list, then the newer",
            vec![a_old_v1.clone(), a_v1.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "several of one CA (v1): the newer list, then an older",
            vec![a_v1.clone(), a_old_v1.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "several of one CA (v2): an older list, then the newer",
            vec![a_old_v2.clone(), b_v2.clone(), a_v2.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "several of one CA: a newer v1 list, then an older v2",
            vec![a_v1.clone(), a_old_v2.clone()],
            Expect::Loads(Err("revoked"), ok),
        ),
        (
            "v1 past its nextUpdate",
            vec![a.write_openssl_crl("v1-expired.pem", &OpensslCrl { dates: PAST, ..v1 })],
            Expect::Loads(Err("crl_expired"), Err("crl_expired")),
        ),
        (
            "v2 with cRLNumber past its nextUpdate",
            vec![a.write_openssl_crl(
                "v2-expired.pem",
                &OpensslCrl {
                    dates: PAST,
                    ..v2(true, Some(AKI))
                },
            )],
            Expect::Loads(Err("crl_expired"), Err("crl_expired")),
        ),
        (
            "v1 signed by a CA not in client_ca",
            vec![s_v1.clone()],
            Expect::Refused(
                "signed by no configured CA (its issuer, CN=unrelated test CA, is not in client_ca)",
                ["unable to get certificate CRL"; 2],
            ),
        ),
        (
            "v2 signed by a CA not in client_ca",
            vec![stranger.write_crl()],
            Expect::Refused(
                "signed by no configured CA (its issuer, CN=unrelated test CA, is not in client_ca)",
                ["unable to get certificate CRL"; 2],
            ),
        ),
        (
            "v1 in the client CA's name, signed with another key",
            vec![namesake.write_v1_crl()],
            Expect::Refused(
                "signed by no configured CA (the signature does not verify with the key of \
                 CN=takgate test CA in client_ca)",
                ["CRL signature failure"; 2],
            ),
        ),
        (
            "v2 with an unknown critical extension",
            vec![a.write_openssl_crl("v2-critical.pem", &v2(true, Some(CRITICAL)))],
            Expect::Refused(
                "critical extension 1.3.6.1.4.1.55555.1 that neither takgate nor OpenSSL can \
                 process (OpenSSL: unhandled critical CRL extension)",
                ["unhandled critical CRL extension"; 2],
            ),
        ),
        (
            // OpenSSL only looks for the list of the certificate's issuer and never reads the
            // stranger's; takgate refuses a file with a list it cannot vouch for.
            "several, the second signed by a CA not in client_ca",
            vec![b_v2.clone(), s_v1.clone(), a_v1.clone()],
            Expect::Refused(
                "CRL 2 of 3: signed by no configured CA (its issuer, CN=unrelated test CA, is \
                 not in client_ca)",
                ["certificate revoked", ""],
            ),
        ),
    ];

    let ca = bundle(&a, &[&a, &b]);
    let mut settings = a.server_settings(ClientAuth::Required);
    settings.client_ca = Some(ca.clone());
    let mut report = Vec::new();
    for (n, (name, parts, expect)) in cases.iter().enumerate() {
        let parts: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
        for file in crl_files(a.dir.path(), &format!("case-{n}"), &parts) {
            let case = format!("{name} [{}]", file.extension().unwrap().to_string_lossy());
            settings.crl = Some(file.clone());
            let openssl = [
                openssl_verify(&ca, &file, &revoked.cert),
                openssl_verify(&ca, &file, &good.cert),
            ];
            match expect {
                Expect::Loads(want_revoked, want_good) => {
                    if let Err(e) = server_config(&settings) {
                        panic!("{case}: not loaded: {e}");
                    }
                    let takgate = [
                        takgate_verdict(&a, &settings, &revoked).await,
                        takgate_verdict(&a, &settings, &good).await,
                    ];
                    assert_eq!(takgate, [*want_revoked, *want_good], "{case}");
                    for (t, o) in takgate.iter().zip(&openssl) {
                        match (t, o) {
                            (Ok(()), Ok(())) => {}
                            (Err("revoked"), Err(o)) if o.contains("certificate revoked") => {}
                            (Err("crl_expired"), Err(o)) if o.contains("CRL has expired") => {}
                            _ => panic!("{case}: takgate {t:?}, OpenSSL {o:?}"),
                        }
                    }
                    report.push(format!(
                        "{case}: loads; takgate {takgate:?}; OpenSSL {openssl:?}"
                    ));
                }
                Expect::Refused(reason, want_openssl) => {
                    let err = server_config(&settings).unwrap_err().to_string();
                    assert_eq!(err, format!("crl {}: {reason}", file.display()), "{case}");
                    for (o, want) in openssl.iter().zip(want_openssl) {
                        match o {
                            Ok(()) => assert!(want.is_empty(), "{case}: OpenSSL accepts"),
                            Err(o) => {
                                assert!(!want.is_empty() && o.contains(want), "{case}: OpenSSL {o}")
                            }
                        }
                    }
                    report.push(format!("{case}: refused: {err}; OpenSSL {openssl:?}"));
                }
            }
        }
    }
    for line in report {
        eprintln!("{line}");
    }
}

#[test]
fn crl_files_that_are_neither_pem_nor_der_lists_are_named() {
    let pki = TestPki::new();
    let mut settings = pki.server_settings(ClientAuth::Required);
    let der = pki.dir.path().join("crl.der");
    let out = Command::new("openssl")
        .args(["crl", "-outform", "DER", "-in"])
        .arg(pki.write_v1_crl())
        .output()
        .unwrap();
    assert!(out.status.success());
    let len = out.stdout.len();
    // Text that is no PEM, and a DER list followed by junk.
    let mut junk_after = out.stdout;
    junk_after.extend_from_slice(b"junk");
    for (bytes, byte) in [(b"not a crl\n".to_vec(), 0), (junk_after, len)] {
        std::fs::write(&der, bytes).unwrap();
        settings.crl = Some(der.clone());
        let err = server_config(&settings).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "crl {}: neither PEM nor DER CRLs (no DER SEQUENCE at byte {byte})",
                der.display()
            )
        );
    }
}
