//! The CoT side of takgate, and the TLS material it shares with the HTTPS listeners.
//!
//! Layout:
//! - `framer`: sans-io splitting of a CoT stream (XML events, then TAK protocol v1) into frames.
//! - `gateway`: stream listeners: accept, handshake, identity, relay, metrics.
//! - `tls`: PEM loading, server configs with client auth, reload, client-cert escaping.
//! - `proxy_protocol`: PROXY v2 headers carrying the client's address and certificate CN.
//! - `reoriginate`: per-user client certificates, so OTS's own TLS listener sees the same user.
//! - `identity`: whether a certificate's CN is an active OTS user, kept current from OTS's API.
//! - `listener`: accept loops, TLS handshakes with a deadline, refusal reasons, the drain.
//! - `upstream_client`: the pooled HTTP client towards OTS (forwarding, identity, readiness).
//! - `panics`: the guard every connection task runs in: a panic ends one connection, counted.
//! - `fuzzing` (feature `fuzzing`): the harnesses of `cot/fuzz`.

pub mod framer;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gateway;
pub mod identity;
pub mod listener;
pub mod panics;
pub mod proxy_protocol;
pub mod rate;
pub mod reoriginate;
pub mod tls;
pub mod upstream_client;
