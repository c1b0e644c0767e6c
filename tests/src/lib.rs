//! Test harness for takgate: fake upstreams, certificates, clients.

pub mod certs;
