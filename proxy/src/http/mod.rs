//! The HTTP side of takgate.
//!
//! Layout:
//! - `body`: the one response body type every handler returns.

pub mod body;
