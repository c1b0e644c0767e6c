//! Loading CRLs, and checking the ones webpki cannot read.
//!
//! Every list in the file is read here first: it must be a CRL that one of the `client_ca`
//! certificates signed, with no critical extension OpenSSL would refuse. Lists that webpki can
//! parse (version 2 with an extensions field) are then handed to it and checked along the whole
//! chain. The others, which OpenSSL accepts but webpki does not, are checked here after webpki
//! has verified the chain, by serial: version 1 lists (`openssl ca -gencrl` without a `crlnumber`
//! file, OpenTAK Server's own `ca/ca.crl` among them) and version 2 lists without extensions
//! (what Python's `cryptography` writes unless told otherwise).
//!
//! For those, only the end-entity certificate is looked up: OTS signs client certificates with
//! its root directly, and a list without extensions says nothing about which part of a chain it
//! covers.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::TlsError;

/// Critical CRL extensions OpenSSL processes (`crypto/x509/x_crl.c`): any other critical
/// extension makes it refuse the list ("unhandled critical CRL extension"), and so does takgate.
const CRITICAL_OK: [&str; 3] = [
    "2.5.29.28", // issuingDistributionPoint
    "2.5.29.35", // authorityKeyIdentifier
    "2.5.29.27", // deltaCRLIndicator
];
/// The one critical entry extension OpenSSL processes: certificateIssuer.
const CERTIFICATE_ISSUER: &str = "2.5.29.29";
/// Extensions that scope a list (a distribution point, a delta, an indirect list): only webpki
/// interprets them, so a list carrying one that webpki cannot read is refused.
const SCOPING: [&str; 2] = ["2.5.29.28", "2.5.29.27"];

/// The CRLs of one file, sorted by who checks them.
#[derive(Debug, Default)]
pub(super) struct Crls {
    /// Lists webpki parses: it checks them at each handshake, along the chain.
    pub(super) webpki: Vec<CertificateRevocationListDer<'static>>,
    /// Lists webpki cannot parse, checked by [`WithOwnCrls`].
    pub(super) own: Vec<OwnCrl>,
    /// The issuer (raw DER name) of every list kept.
    pub(super) covered: Vec<Vec<u8>>,
}

/// The revoked serials of one list webpki cannot read, by the issuer it speaks for.
#[derive(Debug)]
pub(super) struct OwnCrl {
    issuer: Vec<u8>,
    serials: HashSet<Vec<u8>>,
    /// Seconds since the epoch; `None` when the list has no nextUpdate (it never expires,
    /// as with OpenSSL).
    next_update: Option<i64>,
}

/// One list that passed the checks every list must pass.
struct Checked {
    der: Vec<u8>,
    issuer: Vec<u8>,
    issuer_text: String,
    this_update: i64,
    next_update: Option<i64>,
    /// `None` when webpki parses it.
    own: Option<OwnCrl>,
}

/// Reads every CRL in `path` (PEM, one or more; or a single DER list) and checks each against
/// `cas`. Any unusable list is an error naming the file, the list's position and the reason.
pub(super) fn load(path: &Path, cas: &[CertificateDer<'_>]) -> Result<Crls, TlsError> {
    let bytes = std::fs::read(path).map_err(|cause| TlsError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let (ders, der_file) = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let ders = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .map(|r| r.map(|d| d.as_ref().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|cause| TlsError::Pem {
                path: path.to_owned(),
                cause,
            })?;
        (ders, false)
    } else {
        let ders = split_der(&bytes).map_err(|reason| TlsError::Crl {
            path: path.to_owned(),
            index: 1,
            count: 1,
            reason,
        })?;
        (ders, true)
    };
    if ders.is_empty() {
        return Err(TlsError::NoCrl {
            path: path.to_owned(),
        });
    }

    let cas: Vec<X509Certificate<'_>> = cas
        .iter()
        .filter_map(|ca| X509Certificate::from_der(ca.as_ref()).ok().map(|(_, c)| c))
        .collect();
    let count = ders.len();
    let mut checked = Vec::with_capacity(count);
    for (i, der) in ders.into_iter().enumerate() {
        let list = check(der, &cas, der_file).map_err(|reason| TlsError::Crl {
            path: path.to_owned(),
            index: i + 1,
            count,
            reason,
        })?;
        checked.push(list);
    }

    let now = i64::try_from(UnixTime::now().as_secs()).unwrap_or(i64::MAX);
    // Of several lists from one CA, the newest (latest thisUpdate, the first of equals) is used,
    // as OpenSSL picks it; the others are ignored.
    let newer: Vec<Option<usize>> = checked
        .iter()
        .enumerate()
        .map(|(i, list)| {
            checked.iter().enumerate().position(|(j, other)| {
                other.issuer == list.issuer
                    && (other.this_update > list.this_update
                        || (other.this_update == list.this_update && j < i))
            })
        })
        .collect();
    let mut crls = Crls::default();
    for (i, (list, newer)) in checked.into_iter().zip(newer).enumerate() {
        if let Some(j) = newer {
            tracing::info!(
                crl = %path.display(),
                "CRL {} of {count} ({}) is not used: CRL {} of the same CA is newer",
                i + 1,
                list.issuer_text,
                j + 1
            );
            continue;
        }
        if list.next_update.is_some_and(|t| t <= now) {
            tracing::warn!(
                crl = %path.display(),
                "CRL {} of {count} ({}) has expired (past its nextUpdate): clients of this CA are \
                 refused, as OpenSSL and nginx do, until a new list is issued",
                i + 1,
                list.issuer_text
            );
        }
        crls.covered.push(list.issuer);
        match list.own {
            Some(own) => crls.own.push(own),
            None => crls
                .webpki
                .push(CertificateRevocationListDer::from(list.der)),
        }
    }
    Ok(crls)
}

/// A file of DER lists, one after another (as `openssl verify -CRLfile` reads them), cut into
/// its lists by their outer SEQUENCE's length.
fn split_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut ders = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = der_sequence_len(rest).ok_or_else(|| {
            format!(
                "neither PEM nor DER CRLs (no DER SEQUENCE at byte {})",
                bytes.len() - rest.len()
            )
        })?;
        let (der, tail) = rest.split_at(len);
        ders.push(der.to_vec());
        rest = tail;
    }
    if ders.is_empty() {
        return Err("empty file".to_owned());
    }
    Ok(ders)
}

/// The full length (header included) of the DER SEQUENCE `bytes` starts with, if it fits.
fn der_sequence_len(bytes: &[u8]) -> Option<usize> {
    let (&tag, bytes) = bytes.split_first()?;
    let (&first, bytes) = bytes.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (header, content) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes
            .get(..n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (2 + n, len)
    };
    let total = header.checked_add(content)?;
    (total <= bytes.len() + 2).then_some(total)
}

/// The checks every list must pass, then whether webpki can read it.
fn check(der: Vec<u8>, cas: &[X509Certificate<'_>], der_file: bool) -> Result<Checked, String> {
    let (rest, crl) = CertificateRevocationList::from_der(&der).map_err(|e| {
        if der_file {
            format!("not a CRL (read as DER: the file holds no PEM): {e}")
        } else {
            format!("not a CRL: {e}")
        }
    })?;
    if !rest.is_empty() {
        return Err("data after the CRL inside its PEM block".to_owned());
    }

    let issuer = crl.issuer().as_raw();
    let issuer_text = crl.issuer().to_string();
    let mut namesakes = cas.iter().filter(|ca| ca.subject().as_raw() == issuer);
    let first = namesakes.next().ok_or_else(|| {
        format!("signed by no configured CA (its issuer, {issuer_text}, is not in client_ca)")
    })?;
    // A CA may be in the bundle twice under one name (a rollover): any of them may have signed.
    if crl.verify_signature(first.public_key()).is_err()
        && !namesakes.any(|ca| crl.verify_signature(ca.public_key()).is_ok())
    {
        return Err(format!(
            "signed by no configured CA (the signature does not verify with the key of \
             {issuer_text} in client_ca)"
        ));
    }

    for ext in crl.extensions() {
        let oid = ext.oid.to_id_string();
        if ext.critical && !CRITICAL_OK.contains(&oid.as_str()) {
            return Err(format!(
                "critical extension {oid} that neither takgate nor OpenSSL can process \
                 (OpenSSL: unhandled critical CRL extension)"
            ));
        }
    }
    let mut indirect = false;
    for entry in crl.iter_revoked_certificates() {
        for ext in entry.extensions() {
            let oid = ext.oid.to_id_string();
            if oid == CERTIFICATE_ISSUER {
                indirect = true;
            } else if ext.critical {
                return Err(format!(
                    "the entry of serial {} has a critical extension {oid} that neither takgate \
                     nor OpenSSL can process (OpenSSL: unhandled critical CRL extension)",
                    entry.raw_serial_as_string()
                ));
            }
        }
    }

    let this_update = crl.last_update().timestamp();
    let next_update = crl.next_update().map(|t| t.timestamp());
    let own = match webpki::OwnedCertRevocationList::from_der(&der) {
        Ok(_) => None,
        Err(webpki_error) => {
            let scoped = indirect
                || crl
                    .extensions()
                    .iter()
                    .any(|e| SCOPING.contains(&e.oid.to_id_string().as_str()));
            if scoped {
                return Err(format!(
                    "unsupported (webpki: {webpki_error:?}); takgate reads distribution points, \
                     delta and indirect lists only in lists webpki can check"
                ));
            }
            Some(OwnCrl {
                issuer: issuer.to_vec(),
                serials: crl
                    .iter_revoked_certificates()
                    .map(|r| integer(r.raw_serial()).to_vec())
                    .collect(),
                next_update,
            })
        }
    };
    Ok(Checked {
        issuer: issuer.to_vec(),
        issuer_text,
        this_update,
        next_update,
        own,
        der,
    })
}

/// webpki's verifier, then the lists webpki cannot read. `covered` names every issuer some list
/// of the file speaks for (webpki's or takgate's): as with webpki's own policy, a certificate
/// whose issuer no list covers is refused, since its status is unknown.
#[derive(Debug)]
pub(super) struct WithOwnCrls {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) lists: Vec<OwnCrl>,
    pub(super) covered: Vec<Vec<u8>>,
}

impl WithOwnCrls {
    fn check(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let issuer = cert.issuer().as_raw();
        if !self.covered.iter().any(|c| c == issuer) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus,
            ));
        }
        // At most one list per issuer is kept; one webpki reads has been checked already.
        let Some(list) = self.lists.iter().find(|l| l.issuer == issuer) else {
            return Ok(());
        };
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if list.next_update.is_some_and(|t| t <= now) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredRevocationList,
            ));
        }
        if list.serials.contains(integer(cert.raw_serial())) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(())
    }
}

impl ClientCertVerifier for WithOwnCrls {
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
        self.check(end_entity, now)?;
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
