//! Test harness for takgate: fake upstreams, certificates, clients, and takgate in-process or as
//! the real binary.

pub mod certs;
pub mod client;
pub mod cot;
pub mod process;
pub mod proxy;
pub mod upstream;
