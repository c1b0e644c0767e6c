//! Certificates and TLS configs: a generated PKI for the server under test and the clients
//! (`--gen-certs DIR`, `loadtest certs`), or files given with `--ca`, `--cert`, `--key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;

use crate::cli::TlsArgs;

/// The name on OTS's server certificate (its subject CN): what takgate's `reoriginate` mode
/// checks by default, and what clients connecting to OTS directly ask for.
pub const OTS_SERVER_NAME: &str = "opentakserver";

/// The files of a loadtest PKI in one folder.
#[derive(Debug, Clone, Serialize)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate: the server's `client_ca` and the clients' trust root.
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    /// For `localhost` and 127.0.0.1.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// OTS's own server certificate, as its `eud_handler --ssl` presents it: subject CN
    /// [`OTS_SERVER_NAME`] (also its one DNS name, so that direct clients can verify it with
    /// `--server-name opentakserver`), EKU serverAuth, signed by the same CA.
    pub ots_cert: PathBuf,
    pub ots_key: PathBuf,
    /// Client certificates (CN `loadtest-1`, `loadtest-2`, …) and their keys.
    pub clients: Vec<ClientFiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientFiles {
    pub cn: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    fn paths(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            ots_cert: dir.join("ots-server.pem"),
            ots_key: dir.join("ots-server.key"),
            clients: Vec::new(),
        }
    }

    fn client_paths(dir: &Path, i: usize) -> ClientFiles {
        ClientFiles {
            cn: format!("loadtest-{i}"),
            cert: dir.join(format!("client-{i}.pem")),
            key: dir.join(format!("client-{i}.key")),
        }
    }

    /// Writes a new CA, server certificate and `clients` client certificates into `dir`
    /// (created if missing), replacing files of an earlier PKI there.
    pub fn generate(dir: &Path, clients: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut pki = Self::paths(dir);

        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "loadtest CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from(1u64));
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(params, ca_key)?;
        write(&pki.ca, issuer.pem().as_bytes(), false)?;
        write(&pki.ca_key, ca_key_pem.as_bytes(), true)?;

        let issue = |cn: &str,
                     sans: Vec<String>,
                     eku: ExtendedKeyUsagePurpose,
                     serial: u64,
                     cert: &Path,
                     key: &Path|
         -> anyhow::Result<()> {
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![eku];
            params.serial_number = Some(SerialNumber::from(serial));
            params.use_authority_key_identifier_extension = true;
            let kp = KeyPair::generate()?;
            let c = params.signed_by(&kp, &issuer)?;
            write(cert, c.pem().as_bytes(), false)?;
            write(key, kp.serialize_pem().as_bytes(), true)
        };
        issue(
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            2,
            &pki.server_cert,
            &pki.server_key,
        )?;
        issue(
            OTS_SERVER_NAME,
            vec![OTS_SERVER_NAME.into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            // Apart from the client certificates' 3, 4, …
            1 << 32,
            &pki.ots_cert,
            &pki.ots_key,
        )?;
        for i in 1..=clients.max(1) {
            let files = Self::client_paths(dir, i);
            issue(
                &files.cn,
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
                2 + i as u64,
                &files.cert,
                &files.key,
            )?;
            pki.clients.push(files);
        }
        // A stale client-N from an earlier, larger PKI would not verify: remove it.
        let mut i = clients.max(1) + 1;
        loop {
            let stale = Self::client_paths(dir, i);
            if !stale.cert.exists() {
                break;
            }
            let _ = std::fs::remove_file(&stale.cert);
            let _ = std::fs::remove_file(&stale.key);
            i += 1;
        }
        Ok(pki)
    }

    /// The PKI already in `dir`, or a new one with `clients` client certificates.
    pub fn load_or_generate(dir: &Path, clients: usize) -> anyhow::Result<Self> {
        let mut pki = Self::paths(dir);
        if !pki.ca.exists() {
            return Self::generate(dir, clients);
        }
        for f in [&pki.server_cert, &pki.server_key] {
            if !f.exists() {
                bail!("{} has a ca.pem but no {}", dir.display(), f.display());
            }
        }
        let mut i = 1;
        loop {
            let files = Self::client_paths(dir, i);
            if !files.cert.exists() || !files.key.exists() {
                break;
            }
            pki.clients.push(files);
            i += 1;
        }
        if pki.clients.is_empty() {
            bail!(
                "{} has a ca.pem but no client-1.pem/client-1.key",
                dir.display()
            );
        }
        Ok(pki)
    }
}

fn write(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Client TLS for a run: one config per client certificate (clients take them in turn).
#[derive(Clone)]
pub struct ClientTls {
    pub configs: Vec<Arc<ClientConfig>>,
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// The config for client number `i`.
    pub fn config(&self, i: usize) -> Arc<ClientConfig> {
        // `configs` is never empty (see `from_args`).
        self.configs[i % self.configs.len()].clone()
    }

    pub fn connector(&self, i: usize) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config(i))
    }

    /// From `--ca`/`--cert`/`--key` or `--gen-certs`. `client_cert` says whether the target
    /// wants a client certificate (`cot` always does; `http`/`ws` when `--cert` is given).
    pub fn from_args(args: &TlsArgs, client_cert: bool) -> anyhow::Result<Self> {
        let (ca, clients): (PathBuf, Vec<(PathBuf, PathBuf)>) = match &args.gen_certs {
            Some(dir) => {
                let pki = Pki::load_or_generate(dir, args.client_certs)?;
                let clients = pki
                    .clients
                    .iter()
                    .map(|c| (c.cert.clone(), c.key.clone()))
                    .collect();
                (args.ca.clone().unwrap_or(pki.ca), clients)
            }
            None => {
                let Some(ca) = args.ca.clone() else {
                    bail!("a TLS target needs --ca FILE (the server's CA) or --gen-certs DIR");
                };
                let clients = match (&args.cert, &args.key) {
                    (Some(c), Some(k)) => vec![(c.clone(), k.clone())],
                    (None, None) => Vec::new(),
                    _ => bail!("--cert and --key go together"),
                };
                (ca, clients)
            }
        };
        if client_cert && clients.is_empty() {
            bail!(
                "mutual TLS needs a client certificate: --cert FILE --key FILE, or --gen-certs DIR"
            );
        }
        let mut roots = RootCertStore::empty();
        for c in cot::tls::load_certs(&ca)? {
            roots
                .add(c)
                .with_context(|| format!("adding {} as a trust root", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || -> anyhow::Result<_> {
            Ok(ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone()))
        };
        let finish = |mut c: ClientConfig| {
            if !args.resume {
                c.resumption = Resumption::disabled();
            }
            Arc::new(c)
        };
        let configs = if clients.is_empty() {
            vec![finish(builder()?.with_no_client_auth())]
        } else {
            let mut v = Vec::with_capacity(clients.len());
            for (cert, key) in &clients {
                let chain = cot::tls::load_certs(cert)?;
                let key = cot::tls::load_key(key)?;
                v.push(finish(
                    builder()?
                        .with_client_auth_cert(chain, key)
                        .with_context(|| format!("client certificate {}", cert.display()))?,
                ));
            }
            v
        };
        let server_name = ServerName::try_from(args.server_name.clone())
            .with_context(|| format!("--server-name {:?}", args.server_name))?;
        Ok(Self {
            configs,
            server_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_and_reloads_a_pki() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path(), 3).unwrap();
        assert_eq!(pki.clients.len(), 3);
        assert_eq!(pki.clients[2].cn, "loadtest-3");
        // takgate's own loader reads what we wrote, and builds a server config with it.
        let mut settings = cot::tls::TlsSettings::new(&pki.server_cert, &pki.server_key);
        settings.client_ca = Some(pki.ca.clone());
        settings.client_auth = cot::tls::ClientAuth::Required;
        cot::tls::server_config(&settings).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&pki.server_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // OTS's server certificate: CN opentakserver, serverAuth, from the same CA, and a
        // server config (client certificates from that CA required) builds on it.
        let der = cot::tls::load_certs(&pki.ots_cert).unwrap().remove(0);
        assert_eq!(
            cot::gateway::common_name(&der).as_deref(),
            Some(OTS_SERVER_NAME)
        );
        let mut ots = cot::tls::TlsSettings::new(&pki.ots_cert, &pki.ots_key);
        ots.client_ca = Some(pki.ca.clone());
        ots.client_auth = cot::tls::ClientAuth::Required;
        cot::tls::server_config(&ots).unwrap();
        // The CA key is PKCS#8 PEM, as takgate's reoriginate signer reads it.
        let ca_key = std::fs::read_to_string(&pki.ca_key).unwrap();
        assert!(
            ca_key.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{ca_key}"
        );

        let again = Pki::load_or_generate(dir.path(), 10).unwrap();
        assert_eq!(again.clients.len(), 3, "an existing PKI is reused as it is");
        // Regenerating with fewer clients removes the extra ones.
        let fewer = Pki::generate(dir.path(), 1).unwrap();
        assert_eq!(fewer.clients.len(), 1);
        assert!(!dir.path().join("client-2.pem").exists());
    }
}
