//! The HTTP side of takgate.
//!
//! Layout:
//! - `body`: the one response body type every handler returns.
//! - `static_files`: the OpenTAK Server web UI folder, served as a single-page app.

pub mod body;
pub mod static_files;
