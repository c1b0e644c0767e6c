//! Test harness for takgate: fake upstreams, certificates, clients, and takgate in-process.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test harness: a setup failure is a test failure"
)]

pub mod certs;
pub mod client;
pub mod proxy;
pub mod upstream;
