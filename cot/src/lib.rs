//! The CoT side of takgate, and the TLS material it shares with the HTTPS listeners.
//!
//! Layout:
//! - `tls`: PEM loading, server configs with client auth, reload, client-cert escaping.

pub mod tls;
