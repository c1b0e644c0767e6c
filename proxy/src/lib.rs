//! takgate: the HTTP edge that replaces nginx in the OpenTAK Server pod.
//!
//! Layout:
//! - `config`: the typed TOML config and its validation.
//! - `app`: turns a config into listeners, binds and starts them, reloads TLS, drains.
//! - `server`: HTTP listeners: connections from `cot::listener`, served as HTTP/1.1.
//! - `stream`: `[[stream]]` listeners turned into CoT gateway settings.
//! - `http`: routing, forwarding, upgrades, CORS, static files, access log.
//! - `admin`: `/metrics`, `/healthz`, `/readyz`.
//! - `tls_watch`: certificate reload on SIGHUP and on file changes.
//! - `metrics`, `error`, `counted`: shared pieces.
//! - `fuzzing` (feature `fuzzing`): the harnesses of `proxy/fuzz`.

pub mod admin;
pub mod allocator;
pub mod app;
pub mod config;
pub mod counted;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod server;
pub mod stream;
pub mod tls_watch;
