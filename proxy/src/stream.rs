//! `[[stream]]` listeners: the config turned into `cot::gateway` settings, with credentials
//! read and TLS material loaded before any port is bound.

use std::path::Path;
use std::sync::Arc;

use cot::framer::FramerConfig;
use cot::gateway::{GatewayConfig, MemoryBudget, SessionLimits, StreamMetrics};
use cot::identity::{ActiveUsers, Credentials, IdentityConfig as CotIdentity};
use cot::reoriginate::{KeyPassword, Reoriginator, SignerFiles};
use cot::tls::ReloadableTls;
use http::Uri;
use rustls::pki_types::ServerName;

use crate::config::{IdentityConfig, LimitsConfig, ReoriginateConfig, StreamListenerConfig};

/// A stream listener that cannot be built, named by its config key.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{key}: {source}")]
    Tls {
        key: String,
        source: cot::tls::TlsError,
    },
    #[error("{key}: {reason}")]
    Identity { key: String, reason: String },
    #[error("{key}: {reason}")]
    Reoriginate { key: String, reason: String },
}

/// A stream listener's gateway settings, built from its config.
pub fn gateway_config(
    key: &str,
    l: &StreamListenerConfig,
    api: &Uri,
    metrics: &StreamMetrics,
    memory: &Arc<MemoryBudget>,
) -> Result<GatewayConfig, StreamError> {
    let tls = match l.effective_tls() {
        None => None,
        Some(t) => {
            let auth = StreamListenerConfig::client_auth(&t);
            let settings = t.settings(auth, Vec::new());
            let tls = ReloadableTls::new_or_wait(settings).map_err(|source| StreamError::Tls {
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
        upstream: l.upstream.to_string(),
        mode: l.mode.into(),
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
            malformed: l.on_malformed.into(),
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
        on_limit: l.on_limit.into(),
    }
}

/// The signer is loaded here, before any port is bound: a wrong key or password stops startup
/// with the key named. Files OTS has not written yet are waited for.
fn reoriginator(
    key: &str,
    l: &StreamListenerConfig,
    r: &ReoriginateConfig,
    metrics: &StreamMetrics,
) -> Result<Arc<Reoriginator>, StreamError> {
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
            StreamError::Reoriginate {
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
        .map_err(|e| StreamError::Reoriginate {
            key: format!("{key}.{}", e.field()),
            reason: e.to_string(),
        })
}

fn active_users(key: &str, id: &IdentityConfig, api: &Uri) -> Result<ActiveUsers, StreamError> {
    let read = |field: &str, path: &Path| -> Result<String, StreamError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| StreamError::Identity {
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
            return Err(StreamError::Identity {
                key: key.to_owned(),
                reason: "give either token_file, or username and password_file".to_owned(),
            })
        }
    };
    let mut config = CotIdentity::new(id.api.clone().unwrap_or_else(|| api.clone()), credentials);
    config.refresh = id.refresh;
    config.on_unavailable = id.on_unavailable.into();
    ActiveUsers::new(config).map_err(|e| StreamError::Identity {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
