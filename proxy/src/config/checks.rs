//! The checks several sections share, each failing with the full key it checked.

use std::time::Duration;

use super::ConfigError;

pub(super) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `key.field` must lie in `min..=max` (`between` says so in words).
pub(super) fn in_range(
    key: &str,
    field: &str,
    value: u64,
    min: u64,
    max: u64,
    between: &str,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            format!("{key}.{field}"),
            format!("must be between {between}"),
        ))
    }
}

/// A listener's connection limit and timeouts must all be above zero.
pub(super) fn positive(
    key: &str,
    max_connections: usize,
    timeouts: &[(&str, Duration)],
) -> Result<(), ConfigError> {
    if max_connections == 0 {
        return Err(invalid(format!("{key}.max_connections"), "must be > 0"));
    }
    match timeouts.iter().find(|(_, d)| d.is_zero()) {
        Some((name, _)) => Err(invalid(format!("{key}.{name}"), "must be > 0")),
        None => Ok(()),
    }
}

pub(super) fn validate_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            key,
            "must be non-empty letters, digits, '-' or '_' (it is a metric label)",
        ));
    }
    Ok(())
}
