use std::path::PathBuf;

use super::*;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

#[test]
fn escaped_pem_matches_nginx_byte_for_byte() {
    let certs = load_certs(&fixture("x-ssl-cert/client.pem")).unwrap();
    assert_eq!(certs.len(), 1);
    let expected = std::fs::read_to_string(fixture("x-ssl-cert/nginx-escaped.txt")).unwrap();
    assert_eq!(escaped_pem(&certs[0]), expected);
}

/// Checks every byte against nginx's NGX_ESCAPE_URI_COMPONENT table: a PEM only
/// holds a few distinct bytes, so the fixture alone would not catch a wrong set.
#[test]
fn escaping_keeps_only_unreserved_bytes() {
    for b in 0u8..=255 {
        let kept = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let escaped = percent_encoding::percent_encode(&[b], URI_COMPONENT).to_string();
        if kept {
            assert_eq!(escaped.as_bytes(), [b], "byte {b:#04x}");
        } else {
            assert_eq!(escaped, format!("%{b:02X}"), "byte {b:#04x}");
        }
    }
}

#[test]
fn escaped_pem_wraps_at_64_and_ends_with_newline() {
    // 100 bytes of DER give 136 base64 characters: lines of 64, 64 and 8.
    let der = [0xfbu8; 100];
    let decoded = percent_encoding::percent_decode_str(&escaped_pem(&der))
        .decode_utf8()
        .unwrap()
        .into_owned();
    let lines: Vec<&str> = decoded.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 5, "{decoded:?}");
    assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----\n");
    assert_eq!(lines[1].len(), 65);
    assert_eq!(lines[2].len(), 65);
    assert_eq!(lines[3].len(), 9);
    assert_eq!(lines[4], "-----END CERTIFICATE-----\n");
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
