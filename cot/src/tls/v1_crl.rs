//! Version 1 CRLs: what `openssl ca -gencrl` writes without a `crlnumber` file, and so what
//! OpenTAK Server's own `ca/ca.crl` is. webpki parses only version 2, so these are checked here,
//! after webpki has verified the chain: the list's signature against a trusted CA when it is
//! loaded, and the client certificate's serial at each handshake.
//!
//! Only the end-entity certificate is looked up: a v1 list carries no extensions to say which
//! part of a chain it covers, and OTS signs client certificates with its root directly.

use std::collections::HashSet;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// The revoked serials of one v1 list, by the issuer it speaks for.
#[derive(Debug)]
pub(super) struct V1Crl {
    issuer: Vec<u8>,
    serials: HashSet<Vec<u8>>,
}

/// The issuer (raw DER name) of a CRL, and whether it is version 1; `None` when the bytes are
/// not a CRL at all, which webpki then reports.
pub(super) fn inspect(der: &CertificateRevocationListDer<'_>) -> Option<(Vec<u8>, bool)> {
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).ok()?;
    Some((crl.issuer().as_raw().to_vec(), crl.version().is_none()))
}

/// Parses a v1 list and checks that one of `cas` signed it.
pub(super) fn parse(
    der: &CertificateRevocationListDer<'_>,
    cas: &[CertificateDer<'_>],
) -> Result<V1Crl, String> {
    let (_, crl) =
        CertificateRevocationList::from_der(der.as_ref()).map_err(|e| format!("parse: {e}"))?;
    let issuer = crl.issuer().as_raw();
    let signer = cas
        .iter()
        .filter_map(|ca| X509Certificate::from_der(ca.as_ref()).ok().map(|(_, c)| c))
        .find(|ca| ca.subject().as_raw() == issuer)
        .ok_or_else(|| format!("issued by {}, which is not in client_ca", crl.issuer()))?;
    crl.verify_signature(signer.public_key())
        .map_err(|e| format!("signature does not verify with {}: {e}", signer.subject()))?;
    Ok(V1Crl {
        issuer: issuer.to_vec(),
        serials: crl
            .iter_revoked_certificates()
            .map(|r| integer(r.raw_serial()).to_vec())
            .collect(),
    })
}

/// webpki's verifier, then the v1 lists. `covered` names every issuer some CRL of the file
/// speaks for (v1 or v2): as with webpki's own policy, a certificate whose issuer no list covers
/// is refused, since its status is unknown.
#[derive(Debug)]
pub(super) struct WithV1Crls {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) lists: Vec<V1Crl>,
    pub(super) covered: Vec<Vec<u8>>,
}

impl WithV1Crls {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let issuer = cert.issuer().as_raw();
        if !self.covered.iter().any(|c| c == issuer) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus,
            ));
        }
        let revoked = self
            .lists
            .iter()
            .any(|l| l.issuer == issuer && l.serials.contains(integer(cert.raw_serial())));
        if revoked {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(())
    }
}

impl ClientCertVerifier for WithV1Crls {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A serial as the number it is: DER wants minimal integers, but some issuers pad serials with
/// zero bytes, and a list and a certificate must still agree on the same number.
fn integer(raw: &[u8]) -> &[u8] {
    let zeros = raw.iter().take_while(|&&b| b == 0).count();
    raw.get(zeros..).unwrap_or_default()
}
