//! The client certificate as OTS expects it in `client_cert_header`: nginx's
//! `$ssl_client_escaped_cert`, which OTS URL-decodes and parses as PEM.

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// The bytes nginx's `ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT)` leaves alone:
/// ASCII letters, digits and `-` `.` `_` `~`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// nginx's `$ssl_client_escaped_cert` for a DER certificate: PEM as OpenSSL writes
/// it (base64 in 64-character lines, LF endings, trailing newline), then escaped
/// with uppercase `%XX`. OTS URL-decodes the `X-Ssl-Cert` header and parses the
/// PEM, so the value must be byte-identical to what nginx sent.
pub fn escaped_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = Vec::with_capacity(b64.len() + b64.len() / 64 + 64);
    pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.extend_from_slice(line);
        pem.push(b'\n');
    }
    pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    percent_encoding::percent_encode(&pem, URI_COMPONENT).to_string()
}

#[cfg(test)]
mod tests;
