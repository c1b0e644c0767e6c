//! Why a client connection was refused before it was served: one closed set of labels for
//! `takgate_stream_refused_total{reason}` and `takgate_http_tls_refused_total{reason}`.

use std::fmt;

/// Declares [`Refusal`] with each variant's label beside it, and the list of them all.
macro_rules! refusals {
    ($($(#[$doc:meta])* $variant:ident => $label:literal,)+) => {
        /// Why a connection was refused. [`Refusal::as_str`] is its metric label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Refusal {
            $($(#[$doc])* $variant,)+
        }

        impl Refusal {
            /// Every refusal (its tests check the labels).
            pub const ALL: &[Refusal] = &[$(Refusal::$variant,)+];

            /// The metric label; a dashboard or alert may name any of these.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Refusal::$variant => $label,)+
                }
            }
        }
    };
}

refusals! {
    /// The listener's certificate files do not exist yet (OTS creates them on its first start).
    TlsNotReady => "tls_not_ready",
    /// The TLS handshake did not finish within the listener's deadline.
    Timeout => "timeout",
    /// The handshake failed on an I/O error (the client went away, or sent no TLS).
    Io => "io",
    /// A required client certificate was not presented (or, after the handshake, no
    /// certificate where one is needed).
    NoCert => "no_cert",
    UnknownCa => "unknown_ca",
    Expired => "expired",
    NotYetValid => "not_yet_valid",
    Revoked => "revoked",
    CrlExpired => "crl_expired",
    WrongKeyUsage => "wrong_key_usage",
    /// Any other certificate error.
    BadCert => "bad_cert",
    /// Any other TLS error.
    Protocol => "protocol",
    /// The certificate has no single non-empty subject CN where one is needed.
    NoCn => "no_cn",
    InactiveUser => "inactive_user",
    UnknownUser => "unknown_user",
    /// OTS's user list could not be read, so nobody can be checked.
    IdentityUnavailable => "identity_unavailable",
    /// The CN already holds as many sessions as it may.
    CnSessionLimit => "cn_session_limit",
    /// The TLS handshake with the upstream failed (reoriginate mode).
    UpstreamTls => "upstream_tls",
    /// Too many certificates are being issued at once (reoriginate mode).
    IssueBusy => "issue_busy",
    /// Issuing the client's certificate failed (reoriginate mode).
    IssueFailed => "issue_failed",
    /// The stream sessions' memory budget is spent.
    MemoryBudget => "memory_budget",
}

impl Refusal {
    /// Why a server-side TLS handshake failed, the same on stream and HTTPS listeners.
    pub fn of_handshake(err: &std::io::Error) -> Self {
        use rustls::CertificateError as C;
        let Some(tls) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return Refusal::Io;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => Refusal::NoCert,
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => Refusal::UnknownCa,
                C::Expired | C::ExpiredContext { .. } => Refusal::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Refusal::NotYetValid,
                C::Revoked => Refusal::Revoked,
                C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                    Refusal::CrlExpired
                }
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => Refusal::WrongKeyUsage,
                _ => Refusal::BadCert,
            },
            _ => Refusal::Protocol,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares by label, as the metrics see it.
impl PartialEq<&str> for Refusal {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::Refusal::{self, *};

    #[test]
    fn labels_are_distinct_snake_case_and_as_the_alert_rules_spell_them() {
        let labels: std::collections::HashSet<_> =
            Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert!(Refusal::ALL.len() >= 21);
        assert_eq!(
            labels.len(),
            Refusal::ALL.len(),
            "two refusals share a label"
        );
        for l in &labels {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
        }
        // Named by deploy/'s alert rules and dashboards.
        for named in [
            "unknown_ca",
            "inactive_user",
            "unknown_user",
            "identity_unavailable",
            "no_cn",
            "upstream_tls",
            "issue_busy",
        ] {
            assert!(labels.contains(named), "{named}");
        }
        assert_eq!(IssueBusy, "issue_busy");
        assert_eq!(MemoryBudget.to_string(), "memory_budget");
    }

    #[test]
    fn a_handshake_error_without_tls_inside_is_io() {
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(Refusal::of_handshake(&e), Io);
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert_eq!(Refusal::of_handshake(&e), NoCert);
    }
}
