//! Config values onto the `cot` library's own types, in one place: `cot` knows nothing of
//! TOML, and the config knows nothing of how a gateway uses its settings.

use cot::framer::MalformedPolicy;
use cot::gateway::{LimitPolicy, Mode};
use cot::identity::Unavailable;
use cot::tls::{ClientAuth, TlsSettings, TlsVersion};

use super::identity::UnavailableConfig;
use super::stream::{LimitPolicyConfig, MalformedConfig, StreamMode};
use super::tls::{ClientAuthConfig, TlsConfig, TlsVersionConfig};

impl TlsConfig {
    /// The `cot::tls` settings of a `[http.tls]` or `[stream.tls]` section; `client_auth` is
    /// the listener kind's effective policy (see [`TlsConfig::client_auth`] and
    /// [`super::StreamListenerConfig::client_auth`]).
    pub fn settings(&self, client_auth: ClientAuthConfig, alpn: Vec<Vec<u8>>) -> TlsSettings {
        TlsSettings {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            crl: self.crl.clone(),
            client_auth: client_auth.into(),
            versions: self.versions.iter().map(|&v| v.into()).collect(),
            alpn,
        }
    }
}

impl From<ClientAuthConfig> for ClientAuth {
    fn from(c: ClientAuthConfig) -> Self {
        match c {
            ClientAuthConfig::None => ClientAuth::None,
            ClientAuthConfig::Optional => ClientAuth::Optional,
            ClientAuthConfig::Required => ClientAuth::Required,
        }
    }
}

impl From<TlsVersionConfig> for TlsVersion {
    fn from(v: TlsVersionConfig) -> Self {
        match v {
            TlsVersionConfig::Tls12 => TlsVersion::Tls12,
            TlsVersionConfig::Tls13 => TlsVersion::Tls13,
        }
    }
}

impl From<StreamMode> for Mode {
    fn from(m: StreamMode) -> Self {
        match m {
            StreamMode::Terminate => Mode::Terminate,
            StreamMode::Reoriginate => Mode::Reoriginate,
            StreamMode::Passthrough => Mode::Passthrough,
            StreamMode::ProxyProtocol => Mode::ProxyProtocol,
            StreamMode::Raw => Mode::Raw,
            StreamMode::Plain => Mode::Plain,
        }
    }
}

impl From<MalformedConfig> for MalformedPolicy {
    fn from(m: MalformedConfig) -> Self {
        match m {
            MalformedConfig::Drop => MalformedPolicy::Drop,
            MalformedConfig::Close => MalformedPolicy::Close,
        }
    }
}

impl From<LimitPolicyConfig> for LimitPolicy {
    fn from(p: LimitPolicyConfig) -> Self {
        match p {
            LimitPolicyConfig::Delay => LimitPolicy::Delay,
            LimitPolicyConfig::Drop => LimitPolicy::Drop,
            LimitPolicyConfig::Close => LimitPolicy::Close,
        }
    }
}

impl From<UnavailableConfig> for Unavailable {
    fn from(u: UnavailableConfig) -> Self {
        match u {
            UnavailableConfig::FailClosed => Unavailable::FailClosed,
            UnavailableConfig::LastKnown => Unavailable::LastKnown,
        }
    }
}
