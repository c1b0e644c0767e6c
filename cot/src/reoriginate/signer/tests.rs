//! The signer against files made the way OTS makes them: OpenSSL's own commands, the CA key
//! encrypted with a password, and OpenSSL's own verdict on what is issued.

use std::path::{Path, PathBuf};
use std::process::Command;

use x509_parser::prelude::FromDer;

use super::*;

/// Runs `openssl` with `args` in `dir`; the password only ever travels in a file.
fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A self-signed EC P-256 certificate `out` with key `key`, subject `subj`, and `extra` arguments.
fn self_signed_ec(dir: &Path, key: &str, out: &str, subj: &str, extra: &[&str]) {
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subj,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// OTS's CA as `certificate_authority.py` creates it: `openssl req -x509 … -keyout
/// ca-do-not-share.key -passout …`, RSA 2048, `v3_ca` extensions.
fn ots_ca(dir: &Path) -> SignerFiles {
    std::fs::write(dir.join("password"), "atakatak\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-sha256",
            "-x509",
            "-days",
            "30",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "ca-do-not-share.key",
            "-out",
            "ca.pem",
            "-passout",
            "file:password",
            "-subj",
            "/C=US/ST=XX/L=YY/O=ZZ/OU=OTS/CN=OpenTAKServer-CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,cRLSign,keyCertSign",
        ],
    );
    SignerFiles {
        ca: dir.join("ca.pem"),
        signer_cert: dir.join("ca.pem"),
        signer_key: dir.join("ca-do-not-share.key"),
        password: KeyPassword::File(dir.join("password")),
    }
}

/// The intermediate README.md tells operators to make: EC P-256, pathlen 0, clientAuth only.
fn intermediate(dir: &Path, ca: &SignerFiles) -> SignerFiles {
    std::fs::write(
        dir.join("int.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\n\
         keyUsage=critical,keyCertSign,cRLSign\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "takgate-signer.key",
            "-out",
            "int.csr",
            "-subj",
            "/O=ZZ/CN=takgate signer",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "90",
            "-in",
            "int.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-do-not-share.key",
            "-passin",
            "file:password",
            "-set_serial",
            "4242",
            "-extfile",
            "int.ext",
            "-out",
            "takgate-signer.pem",
        ],
    );
    SignerFiles {
        ca: ca.ca.clone(),
        signer_cert: dir.join("takgate-signer.pem"),
        signer_key: dir.join("takgate-signer.key"),
        password: KeyPassword::Env("TAKGATE_TEST_UNSET_PASSWORD".into()),
    }
}

/// OpenSSL's verdict on `issued` as a TLS client certificate under `ca` (what OTS's
/// `CERT_REQUIRED` check asks of it).
fn openssl_verifies(dir: &Path, ca: &Path, issued: &Issued) -> bool {
    let pem = |der: &CertificateDer<'_>| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    std::fs::write(dir.join("leaf.pem"), pem(&issued.chain[0])).unwrap();
    let untrusted: String = issued.chain[1..].iter().map(pem).collect();
    std::fs::write(dir.join("untrusted.pem"), untrusted).unwrap();
    let mut args = vec!["verify", "-purpose", "sslclient", "-CAfile"];
    let ca = ca.to_str().unwrap();
    args.push(ca);
    if issued.chain.len() > 1 {
        args.extend(["-untrusted", "untrusted.pem"]);
    }
    args.push("leaf.pem");
    Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .status()
        .expect("openssl runs")
        .success()
}

fn issued_subject(issued: &Issued) -> Vec<(Tag, Vec<u8>)> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&issued.chain[0]).unwrap();
    cert.subject()
        .iter_attributes()
        .map(|a| (a.attr_value().header.tag(), a.attr_value().data.to_vec()))
        .collect()
}

fn err_text(result: Result<Signer, SignerError>) -> (String, &'static str) {
    let e = result.expect_err("must be refused");
    (e.to_string(), e.field())
}

#[test]
fn an_ots_ca_with_its_encrypted_key_issues_what_openssl_accepts_for_the_same_cn() {
    let dir = tempfile::tempdir().unwrap();
    let files = ots_ca(dir.path());
    let signer = Signer::load(&files).unwrap();
    let now = SystemTime::now();
    let issued = signer
        .issue(
            &DnValue::Utf8String("alice".into()),
            now,
            Duration::from_secs(86_400),
        )
        .unwrap();
    assert_eq!(issued.chain.len(), 1, "the CA itself signs: the leaf alone");
    assert!(openssl_verifies(dir.path(), &files.ca, &issued));
    assert_eq!(
        issued_subject(&issued),
        vec![(Tag::Utf8String, b"alice".to_vec())],
        "the subject is the CN and nothing else"
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.chain[0]).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(
        eku.client_auth && !eku.server_auth,
        "a client certificate only"
    );
    assert!(!cert.is_ca());
}

#[test]
fn the_cn_is_copied_exactly_with_its_string_type() {
    let dir = tempfile::tempdir().unwrap();
    let files = ots_ca(dir.path());
    let signer = Signer::load(&files).unwrap();
    let cases: Vec<DnValue> = vec![
        DnValue::Utf8String("Ålice Øster – 東京 🚒".into()),
        DnValue::Utf8String(r#"a,b+c=\"d"\e<f>;#g  "#.into()),
        DnValue::PrintableString("Bob Smith (Team-1)".try_into().unwrap()),
        DnValue::BmpString("Ωmega".try_into().unwrap()),
    ];
    for cn in cases {
        // A client certificate with that CN, made by rcgen, read back as the gateway reads it.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, cn.clone());
        let client = params.self_signed(&key).unwrap();
        let value = subject_cn(client.der()).expect("one CN");
        assert_eq!(value, cn);
        let issued = signer
            .issue(&value, SystemTime::now(), Duration::from_secs(3600))
            .unwrap();
        let want = issued_subject_of(client.der());
        assert_eq!(issued_subject(&issued), want, "{cn:?}");
        assert_eq!(
            crate::gateway::common_name(&issued.chain[0]),
            crate::gateway::common_name(client.der()),
            "OTS reads the same string"
        );
        assert!(openssl_verifies(dir.path(), &files.ca, &issued), "{cn:?}");
    }
}

fn issued_subject_of(der: &[u8]) -> Vec<(Tag, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject()
        .iter_attributes()
        .map(|a| (a.attr_value().header.tag(), a.attr_value().data.to_vec()))
        .collect()
}

#[test]
fn several_cns_or_an_empty_cn_give_no_subject_to_copy() {
    let key = KeyPair::generate().unwrap();
    let der = |dn: DistinguishedName| {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.self_signed(&key).unwrap().der().to_vec()
    };
    let mut empty = DistinguishedName::new();
    empty.push(DnType::CommonName, "");
    assert_eq!(subject_cn(&der(empty)), None);
    let mut none = DistinguishedName::new();
    none.push(DnType::OrganizationName, "ZZ");
    assert_eq!(subject_cn(&der(none)), None);
    // rcgen keeps one value per type, so two CNs are written by hand with OpenSSL.
    let dir = tempfile::tempdir().unwrap();
    self_signed_ec(
        dir.path(),
        "k.pem",
        "two.pem",
        "/CN=alice/CN=bob",
        &["-outform", "DER"],
    );
    let two = std::fs::read(dir.path().join("two.pem")).unwrap();
    assert_eq!(subject_cn(&two), None);
    assert_eq!(crate::gateway::common_name(&two), None);
}

#[test]
fn lifetime_starts_a_little_early_and_never_outlives_the_signer() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::load(&ots_ca(dir.path())).unwrap();
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let issued = signer
        .issue(
            &DnValue::Utf8String("alice".into()),
            now,
            Duration::from_secs(86_400),
        )
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.chain[0]).unwrap();
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(cert.validity().not_before.timestamp(), secs(now) - 300);
    assert_eq!(cert.validity().not_after.timestamp(), secs(now) + 86_400);
    assert_eq!(issued.not_after, now + Duration::from_secs(86_400));
    // The CA expires in 30 days: a year-long lifetime is cut to it.
    let long = signer
        .issue(
            &DnValue::Utf8String("alice".into()),
            now,
            Duration::from_secs(365 * 86_400),
        )
        .unwrap();
    assert!(long.not_after <= now + Duration::from_secs(31 * 86_400));
    assert_eq!(long.not_after, signer.signer_not_after);
}

#[test]
fn an_intermediate_signer_sends_itself_after_the_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ots_ca(dir.path());
    let files = intermediate(dir.path(), &ca);
    let signer = Signer::load(&files).unwrap();
    let issued = signer
        .issue(
            &DnValue::Utf8String("carol".into()),
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
    assert_eq!(issued.chain.len(), 2);
    assert!(openssl_verifies(dir.path(), &ca.ca, &issued));
}

#[test]
fn bad_signing_material_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let files = ots_ca(dir.path());

    std::fs::write(dir.path().join("wrong"), "not-the-password").unwrap();
    let wrong = SignerFiles {
        password: KeyPassword::File(dir.path().join("wrong")),
        ..files.clone()
    };
    let (text, field) = err_text(Signer::load(&wrong));
    assert!(text.contains("wrong password"), "{text}");
    assert_eq!(field, "signer_key");
    assert!(
        !text.contains("not-the-password"),
        "the password is never echoed"
    );

    let unset = SignerFiles {
        password: KeyPassword::Env("TAKGATE_TEST_UNSET_PASSWORD".into()),
        ..files.clone()
    };
    let (text, _) = err_text(Signer::load(&unset));
    assert!(text.contains("is encrypted and no password"), "{text}");

    let no_file = SignerFiles {
        password: KeyPassword::File(dir.path().join("nowhere")),
        ..files.clone()
    };
    assert_eq!(
        err_text(Signer::load(&no_file)).1,
        "signer_key_password_file"
    );

    // Another CA's key: it does not belong to the signer certificate.
    let other = tempfile::tempdir().unwrap();
    let other_files = ots_ca(other.path());
    let mismatched = SignerFiles {
        signer_key: other_files.signer_key.clone(),
        ..files.clone()
    };
    let (text, field) = err_text(Signer::load(&mismatched));
    assert!(text.contains("does not belong"), "{text}");
    assert_eq!(field, "signer_key");

    // A signer that is not under the CA: the self-test finds it at startup.
    let foreign = SignerFiles {
        ca: files.ca.clone(),
        ..other_files.clone()
    };
    let foreign = SignerFiles {
        password: files.password.clone(),
        ..foreign
    };
    std::fs::write(other.path().join("password"), "atakatak").unwrap();
    let (text, field) = err_text(Signer::load(&foreign));
    assert_eq!(field, "signer_cert", "{text}");

    // A leaf certificate cannot sign.
    self_signed_ec(
        dir.path(),
        "leaf.key",
        "leaf.pem",
        "/CN=leaf",
        &["-addext", "basicConstraints=critical,CA:FALSE"],
    );
    let leaf = SignerFiles {
        signer_cert: dir.path().join("leaf.pem"),
        signer_key: dir.path().join("leaf.key"),
        ..files.clone()
    };
    let (text, field) = err_text(Signer::load(&leaf));
    assert!(text.contains("not a CA"), "{text}");
    assert_eq!(field, "signer_cert");

    // A PKCS#1 key is named, with the command that converts it.
    openssl(
        dir.path(),
        &["genrsa", "-traditional", "-out", "rsa1.key", "2048"],
    );
    let pkcs1 = SignerFiles {
        signer_key: dir.path().join("rsa1.key"),
        ..files.clone()
    };
    let (text, _) = err_text(Signer::load(&pkcs1));
    assert!(text.contains("openssl pkcs8 -topk8"), "{text}");

    let missing = SignerFiles {
        ca: PathBuf::from("/nonexistent/ca.pem"),
        ..files
    };
    assert_eq!(
        missing.missing(),
        vec![PathBuf::from("/nonexistent/ca.pem")]
    );
}
