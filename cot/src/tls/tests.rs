use std::path::PathBuf;

use super::*;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

#[test]
fn loads_pkcs1_rsa_and_sec1_ec_keys() {
    for (cert, key) in [
        ("keys/rsa.pem", "keys/rsa-pkcs1.key"),
        ("keys/ec.pem", "keys/ec-sec1.key"),
    ] {
        let key_der = load_key(&fixture(key)).unwrap();
        let expected_kind = if key.contains("rsa") {
            matches!(key_der, PrivateKeyDer::Pkcs1(_))
        } else {
            matches!(key_der, PrivateKeyDer::Sec1(_))
        };
        assert!(expected_kind, "{key}: {key_der:?}");
        let settings = TlsSettings::new(fixture(cert), fixture(key));
        server_config(&settings).unwrap_or_else(|e| panic!("{cert}: {e}"));
    }
}

#[test]
fn rsa_key_does_not_match_ec_cert() {
    let settings = TlsSettings::new(fixture("keys/ec.pem"), fixture("keys/rsa-pkcs1.key"));
    let err = server_config(&settings).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("rsa-pkcs1.key") && msg.contains("ec.pem"),
        "{msg}"
    );
}

#[test]
fn empty_versions_are_refused() {
    let mut settings = TlsSettings::new(fixture("keys/ec.pem"), fixture("keys/ec-sec1.key"));
    settings.versions.clear();
    let err = server_config(&settings).unwrap_err();
    assert!(matches!(err, TlsError::NoVersions), "{err:?}");
}

#[test]
fn client_auth_without_ca_is_refused() {
    for client_auth in [ClientAuth::Required, ClientAuth::Optional] {
        let mut settings = TlsSettings::new(fixture("keys/ec.pem"), fixture("keys/ec-sec1.key"));
        settings.client_auth = client_auth;
        let err = server_config(&settings).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("client_auth = {client_auth} needs client_ca")
        );
    }
}

#[test]
fn client_ca_and_crl_are_not_read_without_client_auth() {
    let mut settings = TlsSettings::new(fixture("keys/ec.pem"), fixture("keys/ec-sec1.key"));
    settings.client_ca = Some(fixture("does-not-exist/ca.pem"));
    settings.crl = Some(fixture("does-not-exist/crl.pem"));
    server_config(&settings).unwrap();
}

#[test]
fn alpn_is_offered() {
    let mut settings = TlsSettings::new(fixture("keys/ec.pem"), fixture("keys/ec-sec1.key"));
    settings.alpn = vec![b"http/1.1".to_vec()];
    let config = server_config(&settings).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
}
