//! Verifies OTS's server certificate: the chain (and `serverAuth`) against OTS's CA as rustls
//! does, and the name either as rustls does (a SAN) or, for the certificates OTS issues itself
//! (no SAN, the name only in the subject CN), by the subject CN.
//!
//! OTS's device certificates carry `extendedKeyUsage = critical, clientAuth` only, so a device
//! certificate cannot pass for OTS's server here even though the same CA signed it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

#[derive(Debug)]
pub struct OtsServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl OtsServerVerifier {
    pub fn new(roots: Arc<RootCertStore>) -> Result<Self, rustls::server::VerifierBuilderError> {
        let inner = WebPkiServerVerifier::builder_with_provider(
            roots,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        Ok(Self { inner })
    }
}

impl ServerCertVerifier for OtsServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // rustls checks the name last, after the chain, validity and usage passed.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if subject_cn_is(end_entity, server_name) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether the certificate has no subjectAltName and its only subject CN is `name`, as OpenSSL's
/// host check falls back to.
fn subject_cn_is(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    if matches!(cert.subject_alternative_name(), Ok(Some(_)) | Err(_)) {
        return false;
    }
    let mut cns = cert.subject().iter_common_name();
    let (Some(cn), None) = (cns.next(), cns.next()) else {
        return false;
    };
    let expected = name.to_str();
    cn.as_str()
        .is_ok_and(|cn| cn.eq_ignore_ascii_case(&expected))
}
