//! The signing material of the reoriginate mode, and the one thing it does: issue a short-lived
//! client certificate for a subject CN, signed by OTS's CA (or an intermediate under it).
//!
//! Private keys live in memory only: the signer's key is decrypted here and kept inside rcgen's
//! key pair, each issued key goes straight into a rustls `ClientConfig`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pkcs8::der::Decode;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData as _, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::RootCertStore;
use x509_parser::der_parser::asn1_rs::Tag;
use zeroize::Zeroizing;

/// Where the CA key's password comes from. Never the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPassword {
    /// A file holding it (a trailing newline is not part of it).
    File(PathBuf),
    /// An environment variable holding it (OTS's own is `OTS_CA_PASSWORD`).
    Env(String),
}

/// The files the signer is made from.
#[derive(Clone, Debug)]
pub struct SignerFiles {
    /// OTS's CA: the trust anchor for OTS's server certificate and for what is issued here.
    pub ca: PathBuf,
    /// The certificate that signs (OTS's CA itself, or an intermediate it signed).
    pub signer_cert: PathBuf,
    pub signer_key: PathBuf,
    pub password: KeyPassword,
}

impl SignerFiles {
    /// Files that do not exist yet (OTS writes its CA on first start, perhaps after takgate).
    pub fn missing(&self) -> Vec<PathBuf> {
        [&self.ca, &self.signer_cert, &self.signer_key]
            .into_iter()
            .filter(|p| !p.exists())
            .cloned()
            .collect()
    }
}

/// Which file, or which setting, a signer could not be made from, and why.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    SignerCert { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    SignerKey { path: PathBuf, reason: String },
    #[error("{0}")]
    Password(String),
    #[error("the signer does not chain to the CA: {0}")]
    Chain(String),
}

impl SignerError {
    /// The config field the error is about, for a message that names the key.
    pub fn field(&self) -> &'static str {
        match self {
            SignerError::Read { .. } | SignerError::SignerKey { .. } => "signer_key",
            SignerError::Ca { .. } => "ca",
            SignerError::SignerCert { .. } | SignerError::Chain(_) => "signer_cert",
            SignerError::Password(_) => "signer_key_password_file",
        }
    }
}

/// A certificate issued for one CN: the chain to present and its private key.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub not_after: SystemTime,
}

/// Signs client certificates; loaded once, shared by every issue.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The signer's own certificate, sent after the leaf when it is an intermediate.
    intermediate: Option<CertificateDer<'static>>,
    /// The signer certificate's own expiry: nothing issued outlives it.
    signer_not_after: SystemTime,
    /// OTS's server certificate checked against the same CA.
    verifier: Arc<super::OtsServerVerifier>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Signer")
            .field("intermediate", &self.intermediate.is_some())
            .finish_non_exhaustive()
    }
}

/// How far back a certificate's validity starts, for clocks that disagree a little.
const BACKDATE: Duration = Duration::from_secs(300);

impl Signer {
    /// Loads and checks the files: the key decrypts, matches the signer certificate, and a
    /// certificate it issues verifies against the CA as OTS will verify it.
    pub fn load(files: &SignerFiles) -> Result<Self, SignerError> {
        let ca_pem = read(&files.ca)?;
        let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| SignerError::Ca {
                path: files.ca.clone(),
                reason: format!("not PEM certificates: {e}"),
            })?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(ca_certs);
        if added == 0 {
            return Err(SignerError::Ca {
                path: files.ca.clone(),
                reason: "holds no usable CA certificate".to_owned(),
            });
        }
        let signer_cert = if files.signer_cert == files.ca {
            ca_pem
        } else {
            read(&files.signer_cert)?
        };
        let cert_err = |reason: String| SignerError::SignerCert {
            path: files.signer_cert.clone(),
            reason,
        };
        let signer_der = CertificateDer::pem_slice_iter(&signer_cert)
            .next()
            .ok_or_else(|| cert_err("holds no PEM certificate".to_owned()))?
            .map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&signer_der)
            .map_err(|e| cert_err(format!("not an X.509 certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(cert_err(
                "is not a CA certificate (basicConstraints CA:TRUE)".to_owned(),
            ));
        }
        let signer_not_after = unix_to_system(parsed.validity().not_after.timestamp());
        let spki = parsed.public_key().raw.to_vec();

        let password = password(&files.password)?;
        let key = load_key(&files.signer_key, password.as_ref().map(|p| p.as_str()))?;
        let key_pair = KeyPair::try_from(&key).map_err(|e| SignerError::SignerKey {
            path: files.signer_key.clone(),
            reason: format!("not a usable signing key (RSA ≥ 2048 bits or ECDSA P-256/P-384): {e}"),
        })?;
        if key_pair.subject_public_key_info() != spki {
            return Err(SignerError::SignerKey {
                path: files.signer_key.clone(),
                reason: format!(
                    "does not belong to the signer certificate {}",
                    files.signer_cert.display()
                ),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&signer_der, key_pair)
            .map_err(|e| cert_err(format!("cannot sign with it: {e}")))?;
        let intermediate = (files.signer_cert != files.ca).then_some(signer_der);
        let roots = Arc::new(roots);
        let verifier =
            super::OtsServerVerifier::new(roots.clone()).map_err(|e| SignerError::Ca {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
        let signer = Self {
            issuer,
            intermediate,
            signer_not_after,
            verifier: Arc::new(verifier),
        };
        signer.self_test(roots)?;
        Ok(signer)
    }

    /// Sets the signer-expiry gauge, so an alert can fire before the signer runs out.
    pub fn report_expiry(&self, metrics: &super::IssueMetrics) {
        let secs = self
            .signer_not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        metrics
            .signer_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// The check of OTS's server certificate, against the same CA.
    pub fn server_verifier(&self) -> Arc<super::OtsServerVerifier> {
        self.verifier.clone()
    }

    /// Issues a certificate whose subject is exactly `cn` (the client's CN attribute, its
    /// string type kept), valid from a little before `now` for `lifetime`.
    pub fn issue(
        &self,
        cn: &DnValue,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Issued, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn.clone());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial()?);
        let not_after = (now + lifetime).min(self.signer_not_after);
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.intermediate.clone());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Issued {
            chain,
            key,
            not_after,
        })
    }

    /// Issues one certificate and verifies it as a TLS server verifying clients against the CA
    /// would: a signer that does not chain to the CA is found at startup, not at OTS.
    fn self_test(&self, roots: Arc<RootCertStore>) -> Result<(), SignerError> {
        let now = SystemTime::now();
        let issued = self
            .issue(
                &DnValue::Utf8String("takgate-self-test".into()),
                now,
                Duration::from_secs(600),
            )
            .map_err(|e| SignerError::Chain(format!("issuing a test certificate: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| SignerError::Chain(e.to_string()))?;
        let (leaf, rest) = issued
            .chain
            .split_first()
            .ok_or_else(|| SignerError::Chain("empty chain".to_owned()))?;
        rustls::server::danger::ClientCertVerifier::verify_client_cert(
            verifier.as_ref(),
            leaf,
            rest,
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| SignerError::Chain(e.to_string()))
    }
}

/// The subject CN attribute of `leaf`, with its ASN.1 string type, if there is exactly one and
/// it is not empty (the rule `gateway::common_name` applies to the string).
pub fn subject_cn(leaf: &[u8]) -> Option<DnValue> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let mut cns = cert.subject().iter_common_name();
    let attr = cns.next()?;
    if cns.next().is_some() {
        return None;
    }
    let value = attr.attr_value();
    let data = value.data;
    let text = || std::str::from_utf8(data).ok().map(str::to_owned);
    let cn = match value.header.tag() {
        Tag::PrintableString => DnValue::PrintableString(text()?.try_into().ok()?),
        Tag::Ia5String => DnValue::Ia5String(text()?.try_into().ok()?),
        Tag::T61String => DnValue::TeletexString(text()?.try_into().ok()?),
        Tag::BmpString => {
            DnValue::BmpString(rcgen::string::BmpString::from_utf16be(data.to_vec()).ok()?)
        }
        Tag::UniversalString => DnValue::UniversalString(
            rcgen::string::UniversalString::from_utf32be(data.to_vec()).ok()?,
        ),
        Tag::Utf8String => DnValue::Utf8String(text()?),
        _ => return None,
    };
    (!data.is_empty()).then_some(cn)
}

fn read(path: &Path) -> Result<Vec<u8>, SignerError> {
    std::fs::read(path).map_err(|source| SignerError::Read {
        path: path.to_owned(),
        source,
    })
}

fn password(source: &KeyPassword) -> Result<Option<Zeroizing<String>>, SignerError> {
    match source {
        KeyPassword::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SignerError::Password(format!("reading {}: {e}", path.display())))?;
            let text = Zeroizing::new(text);
            Ok(Some(Zeroizing::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        KeyPassword::Env(name) => Ok(std::env::var(name).ok().map(Zeroizing::new)),
    }
}

/// Reads a PKCS#8 key, encrypted (as OTS writes its CA key) or not.
fn load_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, SignerError> {
    let key_err = |reason: String| SignerError::SignerKey {
        path: path.to_owned(),
        reason,
    };
    let pem = Zeroizing::new(read(path)?);
    let text = std::str::from_utf8(&pem).map_err(|_| key_err("not a PEM file".to_owned()))?;
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err(key_err(
                "is encrypted and no password was given (signer_key_password_file, or the \
                 variable named by signer_key_password_env)"
                    .to_owned(),
            ));
        };
        let (label, der) = pkcs8::der::pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| key_err(format!("not a PEM file: {e}")))?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(key_err(format!(
                "expected an encrypted private key, found {label}"
            )));
        }
        let der = Zeroizing::new(der);
        let encrypted = pkcs8::EncryptedPrivateKeyInfo::from_der(&der)
            .map_err(|e| key_err(format!("not an encrypted PKCS#8 key: {e}")))?;
        let plain = encrypted
            .decrypt(password.as_bytes())
            .map_err(|_| key_err("wrong password (or an unsupported cipher)".to_owned()))?;
        // The plaintext must itself be a private key: a wrong password that happens to decrypt
        // without a padding error shows here.
        pkcs8::PrivateKeyInfo::try_from(plain.as_bytes())
            .map_err(|_| key_err("wrong password".to_owned()))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key @ PrivateKeyDer::Pkcs8(_)) => Ok(key),
        Ok(_) => Err(key_err(
            "is a PKCS#1 or SEC1 key; convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -in KEY -out KEY.pk8` (add -nocrypt for no password)"
                .to_owned(),
        )),
        Err(e) => Err(key_err(format!("holds no private key: {e}"))),
    }
}

/// A random 16-byte serial: positive, never zero.
fn serial() -> Result<SerialNumber, rcgen::Error> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unix_to_system(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests;
