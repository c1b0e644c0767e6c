//! Test harness for takgate: fake upstreams, certificates, clients, and takgate in-process.

pub mod certs;
pub mod client;
pub mod cot;
pub mod proxy;
pub mod upstream;
