//! `[stream.identity]`: each client certificate's CN checked against OTS's active users.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::checks::invalid;
use super::stream::StreamMode;
use super::upstream::{uri_serde_opt, validate_upstream_uri};
use super::ConfigError;

/// When OTS cannot be asked who is active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnavailableConfig {
    #[default]
    FailClosed,
    LastKnown,
}

/// Check each client certificate's CN against OTS's active users, as OTS's own SSL listener does.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// The OTS API; defaults to `upstream.url`.
    #[serde(with = "uri_serde_opt")]
    pub api: Option<Uri>,
    /// A file holding an administrator's `Authentication-Token`.
    pub token_file: Option<PathBuf>,
    /// Or a service account to log in with.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    pub on_unavailable: UnavailableConfig,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            api: None,
            token_file: None,
            username: None,
            password_file: None,
            refresh: Duration::from_secs(30),
            on_unavailable: UnavailableConfig::default(),
        }
    }
}

impl IdentityConfig {
    /// `key` is `stream[i].identity`; `mode` the listener's.
    pub(super) fn validate(&self, key: &str, mode: StreamMode) -> Result<(), ConfigError> {
        if !matches!(
            mode,
            StreamMode::Terminate | StreamMode::Reoriginate | StreamMode::ProxyProtocol
        ) {
            return Err(invalid(
                key,
                "only terminate, reoriginate and proxy-protocol modes see the client certificate",
            ));
        }
        match (&self.token_file, &self.username, &self.password_file) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            _ => {
                return Err(invalid(
                    key,
                    "give either token_file, or username and password_file",
                ))
            }
        }
        if let Some(api) = &self.api {
            validate_upstream_uri(&format!("{key}.api"), api)?;
        }
        if self.refresh < Duration::from_secs(1) {
            return Err(invalid(format!("{key}.refresh"), "must be at least 1s"));
        }
        Ok(())
    }
}
