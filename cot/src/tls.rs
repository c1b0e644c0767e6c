//! TLS material shared by takgate's listeners: PEM loading, server configs with
//! client-certificate auth and CRLs, and hot reload.
//!
//! Every config is built on the `ring` provider explicitly, so nothing depends on
//! which crypto provider some other crate installed as the process default.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

mod crl;

/// The label of why a TLS handshake failed (see [`crate::listener::Refusal::of_handshake`]).
pub fn handshake_failure(err: &io::Error) -> &'static str {
    crate::listener::Refusal::of_handshake(err).as_str()
}

#[cfg(test)]
mod tests;

/// Whether a listener asks for a client certificate (nginx's `ssl_verify_client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is requested.
    None,
    /// A certificate is requested; clients without one are let in, a bad one is refused.
    Optional,
    /// A valid certificate is needed to complete the handshake.
    Required,
}

impl ClientAuth {
    /// The spelling used in takgate's configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TLS protocol version a listener accepts. Older versions are not offered
/// because rustls does not implement them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// The nginx (`ssl_protocols`) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }

    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            Self::Tls12 => &rustls::version::TLS12,
            Self::Tls13 => &rustls::version::TLS13,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one listener's TLS material lives and how clients are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub key: PathBuf,
    /// PEM bundle of the CAs that client certificates must chain to.
    /// Ignored when `client_auth` is `None`.
    pub client_ca: Option<PathBuf>,
    /// CRL(s) that client certificates are checked against: PEM (one or more lists) or DER
    /// (lists back to back), each signed by a `client_ca` certificate. Ignored when
    /// `client_auth` is `None`.
    pub crl: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// Must not be empty.
    pub versions: Vec<TlsVersion>,
    /// ALPN protocols offered, in order of preference (e.g. `b"http/1.1"`).
    pub alpn: Vec<Vec<u8>>,
}

impl TlsSettings {
    /// Settings serving `cert`/`key` with TLS 1.2 and 1.3, no client auth and no ALPN.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            crl: None,
            client_auth: ClientAuth::None,
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            alpn: Vec::new(),
        }
    }
}

/// Why TLS material could not be loaded.
///
/// The underlying cause is part of each message rather than exposed through
/// `source()`: these errors end up in single log lines at startup and on SIGHUP,
/// and an operator needs the file and the reason together.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error("parsing PEM in {}: {cause}", path.display())]
    Pem { path: PathBuf, cause: pem::Error },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "no private key in {} (expected an unencrypted PKCS#8, PKCS#1 RSA or SEC1 EC key)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error("unusable private key in {}: {cause}", path.display())]
    BadKey { path: PathBuf, cause: rustls::Error },
    #[error("unusable certificate in {}: {cause}", path.display())]
    BadCertificate { path: PathBuf, cause: rustls::Error },
    #[error("key {} does not match certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("client_auth = {client_auth} needs client_ca")]
    ClientCaMissing { client_auth: ClientAuth },
    #[error("unusable CA certificate in {}: {cause}", path.display())]
    BadClientCa { path: PathBuf, cause: rustls::Error },
    #[error("no CRL in {}", path.display())]
    NoCrl { path: PathBuf },
    /// One list of a CRL file cannot be used: `index` (from 1) of `count` lists in the file.
    #[error("crl {}: {}{reason}", path.display(), crl_position(*index, *count))]
    Crl {
        path: PathBuf,
        index: usize,
        count: usize,
        reason: String,
    },
    #[error("invalid CRL in {}: {cause}", path.display())]
    InvalidCrl { path: PathBuf, cause: rustls::Error },
    #[error("client certificate verifier for {}: {cause}", path.display())]
    ClientVerifier {
        path: PathBuf,
        cause: VerifierBuilderError,
    },
    #[error("no TLS versions configured")]
    NoVersions,
    #[error("TLS versions {versions:?}: {cause}")]
    Versions {
        versions: Vec<TlsVersion>,
        cause: rustls::Error,
    },
}

impl TlsError {
    /// A configured file does not exist (yet): a listener can wait for it.
    pub fn is_missing_file(&self) -> bool {
        matches!(self, TlsError::Read { cause, .. } if cause.kind() == io::ErrorKind::NotFound)
    }
}

/// "CRL 2 of 3: " when a file holds several lists; nothing for a file of one.
fn crl_position(index: usize, count: usize) -> String {
    if count > 1 {
        format!("CRL {index} of {count}: ")
    } else {
        String::new()
    }
}

fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    match err {
        pem::Error::Io(cause) => TlsError::Read {
            path: path.to_owned(),
            cause,
        },
        cause => TlsError::Pem {
            path: path.to_owned(),
            cause,
        },
    }
}

/// All certificates in a PEM file, in file order. An empty result is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        e => pem_error(path, e),
    })
}

/// Builds a server config from the files named in `settings`, reading them now.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for v in &settings.versions {
        let v = v.rustls();
        if !versions.iter().any(|have| have.version == v.version) {
            versions.push(v);
        }
    }
    if versions.is_empty() {
        return Err(TlsError::NoVersions);
    }

    let certified_key = certified_key(&settings.cert, &settings.key, &provider)?;
    let verifier = client_verifier(settings, &provider)?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|cause| TlsError::Versions {
            versions: settings.versions.clone(),
            cause,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key)));
    config.alpn_protocols.clone_from(&settings.alpn);
    Ok(Arc::new(config))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|cause| TlsError::BadKey {
            path: key_path.to_owned(),
            cause,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Checked here rather than left to `with_single_cert` so that a mismatch and
    // an unparsable leaf are told apart, each naming the right file.
    match certified.keys_match() {
        // Unknown means the key cannot report its public half; ring's keys always
        // can, but rustls itself accepts this case, so do the same.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            })
        }
        Err(cause) => Err(TlsError::BadCertificate {
            path: cert_path.to_owned(),
            cause,
        }),
    }
}

fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    if settings.client_auth == ClientAuth::None {
        if settings.client_ca.is_some() || settings.crl.is_some() {
            tracing::debug!(
                cert = %settings.cert.display(),
                "client_auth = none: client_ca and crl are not used"
            );
        }
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let ca_path = settings
        .client_ca
        .as_deref()
        .ok_or(TlsError::ClientCaMissing {
            client_auth: settings.client_auth,
        })?;

    let cas = load_certs(ca_path)?;
    let mut roots = RootCertStore::empty();
    for ca in cas.iter().cloned() {
        roots.add(ca).map_err(|cause| TlsError::BadClientCa {
            path: ca_path.to_owned(),
            cause,
        })?;
    }

    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    // Revocation is checked for the whole chain, and a certificate whose status no CRL covers
    // is refused, as nginx's `ssl_crl` does. A list past its nextUpdate refuses the clients of
    // its CA (`crl_expired`), as OpenSSL and so nginx do: a list is not trusted beyond the date
    // its issuer promised a new one by.
    let crl_path = settings.crl.as_deref();
    let mut own = None;
    if let Some(path) = crl_path {
        let crls = crl::load(path, &cas)?;
        builder = builder.enforce_revocation_expiration();
        if !crls.own.is_empty() {
            // Issuers only takgate's lists cover are unknown to webpki; the wrapper below
            // refuses the ones no list at all covers.
            builder = builder.allow_unknown_revocation_status();
            own = Some((crls.own, crls.covered));
        }
        if !crls.webpki.is_empty() {
            builder = builder.with_crls(crls.webpki);
        }
    }
    if settings.client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| match (e, crl_path) {
        (VerifierBuilderError::InvalidCrl(cause), Some(path)) => TlsError::InvalidCrl {
            path: path.to_owned(),
            cause: cause.into(),
        },
        (VerifierBuilderError::NoRootAnchors, _) => TlsError::NoCertificate {
            path: ca_path.to_owned(),
        },
        (cause, _) => TlsError::ClientVerifier {
            path: ca_path.to_owned(),
            cause,
        },
    })?;
    Ok(match own {
        Some((lists, covered)) => Arc::new(crl::WithOwnCrls {
            inner: verifier,
            lists,
            covered,
        }),
        None => verifier,
    })
}

/// The server config of one listener, swappable at run time: SIGHUP or a change of its files
/// reloads it, each accepted connection calls [`acceptor`](Self::acceptor). Connections already
/// established keep the config they were accepted with.
///
/// A listener may also start before its files exist: OTS creates its CA and server certificate
/// on first start, possibly after takgate. Such a listener waits (no acceptor) until they appear.
pub struct ReloadableTls {
    settings: TlsSettings,
    current: ArcSwapOption<ServerConfig>,
    /// The files as they were at the last load attempt, to notice changes with a `stat`.
    stamp: Mutex<Vec<FileStamp>>,
}

/// What a file looked like: (modified, length, inode), or `None` when missing.
type FileStamp = Option<(Option<SystemTime>, u64, u64)>;

impl ReloadableTls {
    /// Loads the files now; any problem is an error.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let stamp = stamp(&settings);
        let config = server_config(&settings)?;
        Ok(Self {
            settings,
            current: ArcSwapOption::from(Some(config)),
            stamp: Mutex::new(stamp),
        })
    }

    /// As [`new`](Self::new), but files that do not exist yet are waited for instead of being
    /// an error. Files that exist and are broken are still an error.
    pub fn new_or_wait(settings: TlsSettings) -> Result<Self, TlsError> {
        match Self::new(settings.clone()) {
            Ok(tls) => Ok(tls),
            Err(e) if e.is_missing_file() => Ok(Self {
                stamp: Mutex::new(stamp(&settings)),
                settings,
                current: ArcSwapOption::empty(),
            }),
            Err(e) => Err(e),
        }
    }

    /// An acceptor for the config in force now; `None` while waiting for the files.
    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.current
            .load_full()
            .map(tokio_rustls::TlsAcceptor::from)
    }

    /// Whether a config is loaded (the listener can complete handshakes).
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// The config in force now, if any.
    pub fn config(&self) -> Option<Arc<ServerConfig>> {
        self.current.load_full()
    }

    /// Re-reads every file. On error the config in force is kept and the error returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let now = stamp(&self.settings);
        let result = server_config(&self.settings);
        if let Ok(mut seen) = self.stamp.lock() {
            *seen = now;
        }
        self.current.store(Some(result?));
        Ok(())
    }

    /// Reloads if any file changed (appeared, vanished, or has a new size, time or inode)
    /// since the last attempt; `None` when nothing changed. Cheap enough to poll every
    /// few seconds: one `stat` per file.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamp(&self.settings);
        let changed = self.stamp.lock().map(|seen| *seen != now).unwrap_or(true);
        changed.then(|| self.reload())
    }

    /// The configured files that do not exist now.
    pub fn missing_files(&self) -> Vec<PathBuf> {
        files(&self.settings)
            .filter(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect()
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// The files a config is built from; the CA and CRL only when client certificates are asked for.
fn files(settings: &TlsSettings) -> impl Iterator<Item = &Path> {
    let client = settings.client_auth != ClientAuth::None;
    [Some(&settings.cert), Some(&settings.key)]
        .into_iter()
        .chain([
            settings.client_ca.as_ref().filter(|_| client),
            settings.crl.as_ref().filter(|_| client),
        ])
        .flatten()
        .map(PathBuf::as_path)
}

fn stamp(settings: &TlsSettings) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    files(settings)
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len(), m.ino()))
        })
        .collect()
}

impl fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The client's leaf certificate on an accepted server connection. rustls only
/// records peer certificates that the verifier accepted, so this is a verified
/// certificate or `None`.
pub fn peer_leaf(conn: &rustls::ServerConnection) -> Option<&CertificateDer<'static>> {
    conn.peer_certificates().and_then(|chain| chain.first())
}
