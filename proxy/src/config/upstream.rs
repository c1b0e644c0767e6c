//! `[upstream]`: the OTS API, and the URL checks every upstream URL shares.

use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::checks::invalid;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The OTS API (Flask and Socket.IO).
    #[serde(with = "uri_serde")]
    pub url: Uri,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long the upstream may take to answer once it has the whole request, to take each
    /// part of a request body, and to send each chunk of a response body.
    /// Must exceed engine.io's 25 s ping interval, or long-polling requests would be cut.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Path probed by `/readyz`.
    pub health_path: String,
    /// Idle pooled connections to an upstream are closed after this long.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: Uri::from_static("http://127.0.0.1:8081"),
            connect_timeout: super::default_connect_timeout(),
            response_timeout: Duration::from_secs(60),
            health_path: "/api/health".to_owned(),
            pool_idle_timeout: Duration::from_secs(60),
        }
    }
}

impl UpstreamConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        validate_upstream_uri("upstream.url", &self.url)?;
        if self.url.scheme_str() != Some("http") {
            return Err(invalid(
                "upstream.url",
                "the OTS API is plain http (OTS listens on 127.0.0.1:8081 without TLS)",
            ));
        }
        if !self.health_path.starts_with('/') {
            return Err(invalid("upstream.health_path", "must start with '/'"));
        }
        Ok(())
    }
}

pub(super) fn validate_upstream_uri(key: &str, uri: &Uri) -> Result<(), ConfigError> {
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(invalid(key, "must be an http:// or https:// URL")),
    }
    if uri.host().is_none() {
        return Err(invalid(key, "has no host"));
    }
    if uri.query().is_some() {
        return Err(invalid(key, "must not have a query"));
    }
    Ok(())
}

pub(super) mod uri_serde_opt {
    use http::Uri;
    use serde::Deserializer;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uri>, D::Error> {
        super::uri_serde::deserialize(d).map(Some)
    }
}

pub(super) mod uri_serde {
    use http::Uri;
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uri, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Uri>()
            .map_err(|e| serde::de::Error::custom(format!("invalid URL {s:?}: {e}")))
    }
}
