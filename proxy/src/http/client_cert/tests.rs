use std::path::PathBuf;

use super::*;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

#[test]
fn escaped_pem_matches_nginx_byte_for_byte() {
    let certs = cot::tls::load_certs(&fixture("x-ssl-cert/client.pem")).unwrap();
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
