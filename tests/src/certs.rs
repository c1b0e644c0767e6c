//! A throwaway PKI for tests: a CA, a server certificate for `localhost` and
//! 127.0.0.1, client certificates, CRLs, and rustls client configs that trust the CA.
//!
//! Everything is written as PEM into a temporary directory that lives as long as the
//! [`TestPki`], so it can be handed to takgate exactly like files on disk.
//!
//! `takgate-cot`'s integration tests compile this file too (through `#[path]`),
//! because that crate cannot depend on this one without a dependency cycle; so it
//! must only name crates both have: rcgen, rustls, rustls-pki-types, tempfile, and
//! `cot` itself.
#![allow(
    clippy::expect_used,
    reason = "test harness: a setup failure is a test failure"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cot::tls::{ClientAuth, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

/// The name the server certificate is issued for and clients should connect to.
pub const SERVER_NAME: &str = "localhost";

/// A CA that issues server and client certificates into its own temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    /// The CA certificate, PEM: the `client_ca` for takgate and the client trust root.
    pub ca_pem: PathBuf,
    pub ca_der: CertificateDer<'static>,
    /// A certificate for `localhost` and 127.0.0.1, signed by the CA.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub server_der: CertificateDer<'static>,
    issuer: CertifiedIssuer<'static, KeyPair>,
    next_serial: AtomicU64,
    revoked: Mutex<Vec<SerialNumber>>,
}

/// How [`TestPki::write_openssl_crl`] runs `openssl ca -gencrl`. The default is a version 1
/// list, as OpenTAK Server makes its `ca/ca.crl`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpensslCrl<'a> {
    /// A `crlnumber` file: the list gets a cRLNumber extension, and so version 2.
    pub crl_number: bool,
    /// The body of a `crl_extensions` section (lines such as
    /// `authorityKeyIdentifier = keyid:always`). An empty one still makes OpenSSL write version
    /// 2, with no extensions at all. `None`: no such section.
    pub extensions: Option<&'a str>,
    /// `-crl_lastupdate` and `-crl_nextupdate` (`YYYYMMDDHHMMSSZ`); otherwise now and 3650 days on.
    pub dates: Option<(&'a str, &'a str)>,
}

/// A certificate and key issued by a [`TestPki`], on disk and in memory.
pub struct IssuedCert {
    pub cn: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
    pub serial: SerialNumber,
    /// Keeps an unrelated CA's files alive for certificates from [`other_ca_client`].
    _issuer: Option<Box<TestPki>>,
}

/// The client side's view of a [`TestPki`] certificate is the same as the server's.
pub type ClientCert = IssuedCert;

impl TestPki {
    pub fn new() -> Self {
        Self::named("takgate test CA")
    }

    /// A CA with the given common name, so that two CAs in one test differ visibly.
    pub fn named(ca_cn: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, ca_cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from(1u64));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let ca_pem = dir.path().join("ca.pem");
        write(&ca_pem, &issuer.pem());
        let ca_der = issuer.der().clone();

        let mut pki = Self {
            ca_pem,
            ca_der,
            server_cert: PathBuf::new(),
            server_key: PathBuf::new(),
            server_der: CertificateDer::from(Vec::new()),
            issuer,
            next_serial: AtomicU64::new(2),
            revoked: Mutex::new(Vec::new()),
            dir,
        };
        let server = pki.issue_server(&[SERVER_NAME, "127.0.0.1"]);
        pki.server_cert = server.cert;
        pki.server_key = server.key;
        pki.server_der = server.der;
        pki
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by the CA.
    pub fn issue_server(&self, names: &[&str]) -> IssuedCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cn = names.first().cloned().unwrap_or_default();
        self.issue(&cn, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `cn`, signed by the CA.
    pub fn issue_client(&self, cn: &str) -> IssuedCert {
        self.issue(cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose parameters `edit` may change (validity, usages, subject):
    /// the expired, not-yet-valid, wrong-usage and no-CN certificates of refusal tests.
    pub fn issue_client_with(
        &self,
        cn: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> IssuedCert {
        self.issue_edited(cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, edit)
    }

    fn issue(&self, cn: &str, sans: Vec<String>, eku: ExtendedKeyUsagePurpose) -> IssuedCert {
        self.issue_edited(cn, sans, eku, |_| {})
    }

    fn issue_edited(
        &self,
        cn: &str,
        sans: Vec<String>,
        eku: ExtendedKeyUsagePurpose,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> IssuedCert {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        edit(&mut params);
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");

        let cert_path = self.dir.path().join(format!("cert-{serial}.pem"));
        let key_path = self.dir.path().join(format!("cert-{serial}.key"));
        write(&cert_path, &cert.pem());
        write(&key_path, &key.serialize_pem());
        IssuedCert {
            cn: cn.to_owned(),
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            serial: SerialNumber::from(serial),
            _issuer: None,
        }
    }

    /// Adds `cert` to the CA's revocation list and writes the list; returns its path.
    pub fn revoke(&self, cert: &IssuedCert) -> PathBuf {
        self.revoked
            .lock()
            .expect("revoked list")
            .push(cert.serial.clone());
        self.write_crl()
    }

    /// Writes the CA's current CRL (possibly listing nothing) to `crl.pem`, replacing
    /// the previous one, and returns its path.
    pub fn write_crl(&self) -> PathBuf {
        let serials = self.revoked.lock().expect("revoked list").clone();
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(serials.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .into_iter()
                .map(|serial_number| RevokedCertParams {
                    serial_number,
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign CRL");
        let path = self.dir.path().join("crl.pem");
        write(&path, &crl.pem().expect("CRL PEM"));
        path
    }

    /// Writes the CA's current revocation list as OpenTAK Server's own `ca/ca.crl` is made:
    /// `openssl ca -gencrl` with no `crlnumber` file, which gives a version 1 CRL. Needs the
    /// `openssl` command. Returns the path of `crl-v1.pem`.
    pub fn write_v1_crl(&self) -> PathBuf {
        self.write_openssl_crl("crl-v1.pem", &OpensslCrl::default())
    }

    /// Writes the CA's current revocation list with `openssl ca -gencrl`, as `opts` say, to
    /// `name` (PEM) in the CA's directory, and returns its path. Needs the `openssl` command.
    pub fn write_openssl_crl(&self, name: &str, opts: &OpensslCrl<'_>) -> PathBuf {
        let dir = self.dir.path().join(format!("openssl-ca-{name}"));
        std::fs::create_dir_all(&dir).expect("openssl-ca dir");
        let key = dir.join("ca.key");
        write(&key, &self.issuer.key().serialize_pem());
        let index: String = self
            .revoked_serials()
            .iter()
            .map(|serial| {
                let hex: String = serial.as_ref().iter().map(|b| format!("{b:02X}")).collect();
                format!("R\t991231235959Z\t240101000000Z\t{hex}\tunknown\t/CN=revoked\n")
            })
            .collect();
        write(&dir.join("index.txt"), &index);
        let mut cnf = format!(
            "[ca]\ndefault_ca = ots\n[ots]\ndatabase = {}\ndefault_md = sha256\n\
             default_crl_days = 3650\n",
            dir.join("index.txt").display()
        );
        if opts.crl_number {
            let number = dir.join("crlnumber");
            write(&number, "1000\n");
            cnf.push_str(&format!("crlnumber = {}\n", number.display()));
        }
        if let Some(body) = opts.extensions {
            cnf.push_str(&format!("crl_extensions = crl_ext\n[crl_ext]\n{body}\n"));
        }
        let config = dir.join("ca.cnf");
        write(&config, &cnf);
        let out = self.dir.path().join(name);
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["ca", "-gencrl", "-batch", "-config"])
            .arg(&config)
            .arg("-keyfile")
            .arg(&key)
            .arg("-cert")
            .arg(&self.ca_pem)
            .arg("-out")
            .arg(&out);
        if let Some((last, next)) = opts.dates {
            cmd.args(["-crl_lastupdate", last, "-crl_nextupdate", next]);
        }
        let status = cmd.output().expect("run openssl");
        assert!(
            status.status.success(),
            "openssl ca -gencrl: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        out
    }

    /// Writes the CA's current revocation list with Python's `cryptography`, as it writes one
    /// unless told otherwise: version 2 with no extensions at all (no cRLNumber). Uses the
    /// workspace's `.venv` (made by `tests/run`) or else `python3`. Returns the PEM's path.
    pub fn write_python_crl(&self, name: &str) -> PathBuf {
        const SCRIPT: &str = r#"
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
ca = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
b = (x509.CertificateRevocationListBuilder()
     .issuer_name(ca.subject)
     .last_update(datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
     .next_update(datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc)))
for serial in sys.argv[4:]:
    b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
        .serial_number(int(serial, 16))
        .revocation_date(datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
        .build())
open(sys.argv[3], "wb").write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
"#;
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let python = if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        };
        let dir = self.dir.path().join(format!("python-{name}"));
        std::fs::create_dir_all(&dir).expect("python CRL dir");
        let key = dir.join("ca.key");
        write(&key, &self.issuer.key().serialize_pem());
        let out = self.dir.path().join(name);
        let status = std::process::Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(&self.ca_pem)
            .arg(&key)
            .arg(&out)
            .args(self.revoked_serials().iter().map(|serial| {
                let hex: String = serial.as_ref().iter().map(|b| format!("{b:02X}")).collect();
                hex
            }))
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        assert!(
            status.status.success(),
            "{} with cryptography (pip install cryptography): {}",
            python.display(),
            String::from_utf8_lossy(&status.stderr)
        );
        out
    }

    /// The serials revoked so far.
    pub fn revoked_serials(&self) -> Vec<SerialNumber> {
        self.revoked.lock().expect("revoked list").clone()
    }

    /// Makes `certs` the revoked ones, without writing any list.
    pub fn set_revoked(&self, certs: &[&IssuedCert]) {
        *self.revoked.lock().expect("revoked list") =
            certs.iter().map(|c| c.serial.clone()).collect();
    }

    /// Writes the CA's private key (PKCS#8 PEM, unencrypted) beside its certificate, for a
    /// reoriginate listener to sign with; returns its path.
    pub fn write_ca_key(&self) -> PathBuf {
        let path = self.dir.path().join("ca.key");
        write(&path, &self.issuer.key().serialize_pem());
        path
    }

    /// A server certificate as OTS issues its own (`certificate_authority.py`, `server`
    /// extensions): subject CN `cn`, no subjectAltName, `clientAuth` and `serverAuth`.
    pub fn issue_ots_server(&self, cn: &str) -> IssuedCert {
        self.issue_client_with(cn, |p| {
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
        })
    }

    /// Settings for a takgate listener serving this PKI's server certificate and
    /// verifying clients against its CA.
    pub fn server_settings(&self, client_auth: ClientAuth) -> TlsSettings {
        let mut settings = TlsSettings::new(&self.server_cert, &self.server_key);
        settings.client_ca = Some(self.ca_pem.clone());
        settings.client_auth = client_auth;
        settings
    }

    /// A client config (ring provider, TLS 1.2 and 1.3) that trusts only this CA and
    /// presents `client`, if given.
    pub fn client_config(&self, client: Option<&IssuedCert>) -> Arc<ClientConfig> {
        self.client_config_with_versions(client, rustls::ALL_VERSIONS)
    }

    pub fn client_config_with_versions(
        &self,
        client: Option<&IssuedCert>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA as trust root");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("client protocol versions")
                .with_root_certificates(roots);
        let config = match client {
            Some(c) => builder
                .with_client_auth_cert(vec![c.der.clone()], c.key_der.clone_key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A client certificate from a CA that no [`TestPki::new`] trusts.
pub fn other_ca_client(cn: &str) -> IssuedCert {
    let other = TestPki::named("unrelated test CA");
    let mut cert = other.issue_client(cn);
    cert._issuer = Some(Box::new(other));
    cert
}

/// The [`ServerName`] matching the server certificate.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("valid server name")
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
