//! The CoT side of takgate, and the TLS material it shares with the HTTPS listeners.
//!
//! Layout:
//! - `framer`: sans-io splitting of a CoT stream (XML events, then TAK protocol v1) into frames.
//! - `tls`: PEM loading, server configs with client auth, reload, client-cert escaping.

pub mod framer;
pub mod tls;
