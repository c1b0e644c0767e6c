//! `[log]`: format, filter and access log.

use std::fmt;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use super::checks::invalid;
use super::ConfigError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `level` as written; `validate` parses it into `level`, so a bad filter is reported
    /// under its key.
    #[serde(rename = "level")]
    level_text: String,
    /// A `tracing` filter, e.g. `info` or `takgate=debug,info`. `RUST_LOG` overrides it.
    #[serde(skip)]
    pub level: LogFilter,
    /// One line per request at INFO under the target `takgate::access`.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        let level = LogFilter::info();
        Self {
            format: LogFormat::default(),
            level_text: level.text.clone(),
            level,
            access_log: true,
        }
    }
}

impl LogConfig {
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        self.level = LogFilter::parse(&self.level_text)
            .map_err(|e| invalid("log.level", format!("not a tracing filter: {e}")))?;
        Ok(())
    }
}

/// `log.level`, parsed once when the config is read.
#[derive(Clone)]
pub struct LogFilter {
    text: String,
    filter: EnvFilter,
}

impl LogFilter {
    fn parse(text: &str) -> Result<Self, tracing_subscriber::filter::ParseError> {
        Ok(Self {
            text: text.to_owned(),
            filter: EnvFilter::try_new(text)?,
        })
    }

    fn info() -> Self {
        Self {
            text: "info".to_owned(),
            filter: EnvFilter::new("info"),
        }
    }

    /// The filter, for the subscriber (`EnvFilter` is consumed by it, hence a copy).
    pub fn env_filter(&self) -> EnvFilter {
        self.filter.clone()
    }
}

impl Default for LogFilter {
    fn default() -> Self {
        Self::info()
    }
}

impl fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LogFilter").field(&self.text).finish()
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<&str> for LogFilter {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}
