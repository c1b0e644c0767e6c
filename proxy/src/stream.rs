//! `[[stream]]` listeners: the config turned into `cot::gateway` settings, with credentials
//! read and TLS material loaded before any port is bound.

use std::path::Path;
use std::sync::Arc;

use cot::framer::{FramerConfig, MalformedPolicy};
use cot::gateway::{GatewayConfig, LimitPolicy, MemoryBudget, Mode, SessionLimits, StreamMetrics};
use cot::identity::{ActiveUsers, Credentials, IdentityConfig as CotIdentity, Unavailable};
use cot::reoriginate::{KeyPassword, Reoriginator, SignerFiles};
use cot::tls::ReloadableTls;
use http::Uri;
use rustls::pki_types::ServerName;

use crate::app::{listener_tls_settings, AppError};
use crate::config::{
    IdentityConfig, LimitPolicyConfig, LimitsConfig, MalformedConfig, ReoriginateConfig,
    StreamListenerConfig, StreamMode, UnavailableConfig,
};

/// A stream listener's gateway settings, built from its config.
pub fn gateway_config(
    key: &str,
    l: &StreamListenerConfig,
    api: &Uri,
    metrics: &StreamMetrics,
    memory: &Arc<MemoryBudget>,
) -> Result<GatewayConfig, AppError> {
    let tls = match l.effective_tls() {
        None => None,
        Some(t) => {
            let auth = StreamListenerConfig::client_auth(&t);
            let settings = listener_tls_settings(&t, auth, Vec::new());
            let tls = ReloadableTls::new_or_wait(settings).map_err(|source| AppError::Tls {
                key: format!("{key}.tls"),
                source,
            })?;
            Some((Arc::new(tls), t.handshake_timeout))
        }
    };
    let identity = l
        .identity
        .as_ref()
        .map(|id| active_users(&format!("{key}.identity"), id, api))
        .transpose()?;
    let reoriginate = l
        .effective_reoriginate()
        .map(|r| reoriginator(&format!("{key}.reoriginate"), l, &r, metrics))
        .transpose()?;
    Ok(GatewayConfig {
        name: l.name.clone(),
        upstream: l.upstream.clone(),
        mode: match l.mode {
            StreamMode::Terminate => Mode::Terminate,
            StreamMode::Reoriginate => Mode::Reoriginate,
            StreamMode::Passthrough => Mode::Passthrough,
            StreamMode::ProxyProtocol => Mode::ProxyProtocol,
            StreamMode::Raw => Mode::Raw,
            StreamMode::Plain => Mode::Plain,
        },
        handshake_timeout: tls
            .as_ref()
            .map_or(std::time::Duration::from_secs(10), |(_, t)| *t),
        tls: tls.map(|(tls, _)| tls),
        connect_timeout: l.connect_timeout,
        idle_timeout: l.idle_timeout,
        max_connections: l.max_connections,
        read_buffer: usize::try_from(l.read_buffer.as_u64()).unwrap_or(16 * 1024),
        framer: FramerConfig {
            max_frame: usize::try_from(l.max_frame.as_u64()).unwrap_or(usize::MAX),
            malformed: match l.on_malformed {
                MalformedConfig::Drop => MalformedPolicy::Drop,
                MalformedConfig::Close => MalformedPolicy::Close,
            },
        },
        require_cn: l.require_cn,
        identity,
        reoriginate,
        limits: session_limits(&l.limits),
        upstream_send_buffer: usize::try_from(l.upstream_send_buffer.as_u64())
            .unwrap_or(usize::MAX),
        upstream_queue: usize::try_from(l.limits.upstream_queue.as_u64()).unwrap_or(usize::MAX),
        memory: memory.clone(),
    })
}

fn session_limits(l: &LimitsConfig) -> SessionLimits {
    SessionLimits {
        events_per_second: f64::from(l.events_per_second),
        events_burst: f64::from(l.events_burst),
        bytes_per_second: l.bytes_per_second.as_u64() as f64,
        bytes_burst: l.bytes_burst.as_u64() as f64,
        sessions_per_cn: l.sessions_per_cn,
        on_limit: match l.on_limit {
            LimitPolicyConfig::Delay => LimitPolicy::Delay,
            LimitPolicyConfig::Drop => LimitPolicy::Drop,
            LimitPolicyConfig::Close => LimitPolicy::Close,
        },
    }
}

/// The signer is loaded here, before any port is bound: a wrong key or password stops startup
/// with the key named. Files OTS has not written yet are waited for.
fn reoriginator(
    key: &str,
    l: &StreamListenerConfig,
    r: &ReoriginateConfig,
    metrics: &StreamMetrics,
) -> Result<Arc<Reoriginator>, AppError> {
    let password = match &r.signer_key_password_file {
        Some(file) => KeyPassword::File(file.clone()),
        None => KeyPassword::Env(r.signer_key_password_env.clone()),
    };
    let config = cot::reoriginate::ReoriginateConfig {
        files: SignerFiles {
            ca: r.ca_path(),
            signer_cert: r.signer_cert_path(),
            signer_key: r.signer_key_path(),
            password,
        },
        server_name: ServerName::try_from(r.server_name.clone()).map_err(|e| {
            AppError::Reoriginate {
                key: format!("{key}.server_name"),
                reason: e.to_string(),
            }
        })?,
        cert_lifetime: r.cert_lifetime,
        renew_before: r.renew_before,
        max_cached: r.max_cached_certs,
        issue_rate: r.issue_rate,
    };
    Reoriginator::new(config, metrics.issue(&l.name))
        .map(Arc::new)
        .map_err(|e| AppError::Reoriginate {
            key: format!("{key}.{}", e.field()),
            reason: e.to_string(),
        })
}

fn active_users(key: &str, id: &IdentityConfig, api: &Uri) -> Result<ActiveUsers, AppError> {
    let read = |field: &str, path: &Path| -> Result<String, AppError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| AppError::Identity {
                key: format!("{key}.{field}"),
                reason: format!("reading {}: {e}", path.display()),
            })
    };
    let credentials = match (&id.token_file, &id.username, &id.password_file) {
        (Some(token), _, _) => Credentials::Token(read("token_file", token)?),
        (None, Some(username), Some(password)) => Credentials::Login {
            username: username.clone(),
            password: read("password_file", password)?,
        },
        // Config validation admits only the two shapes above.
        _ => {
            return Err(AppError::Identity {
                key: key.to_owned(),
                reason: "give either token_file, or username and password_file".to_owned(),
            })
        }
    };
    let mut config = CotIdentity::new(id.api.clone().unwrap_or_else(|| api.clone()), credentials);
    config.refresh = id.refresh;
    config.on_unavailable = match id.on_unavailable {
        UnavailableConfig::FailClosed => Unavailable::FailClosed,
        UnavailableConfig::LastKnown => Unavailable::LastKnown,
    };
    ActiveUsers::new(config).map_err(|e| AppError::Identity {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
