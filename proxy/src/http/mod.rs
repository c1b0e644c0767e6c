//! The HTTP side of takgate.
//!
//! Layout:
//! - `service`: one listener's request handling, from CORS to the answer.
//! - `head`: request-head rules hyper leaves to the server (Host, absolute-form, codings).
//! - `path`: request paths normalised before routing.
//! - `router`: the nginx `location` blocks of each profile.
//! - `forward`: the header contract, the upstream pools, error classification.
//! - `client_cert`: the client certificate escaped as nginx sends it to OTS.
//! - `upgrade`: WebSocket upgrades relayed and tracked.
//! - `cors`: the cross-origin policy, answered at the edge.
//! - `compress`: answers compressed for the clients that take it.
//! - `static_files`: the single-page UI from `ui_root`.
//! - `file_cache`: small UI files held in memory.
//! - `access`: the access-log line and request metrics at the end of each response.
//! - `body`: the one body type, and idle timeouts.

pub mod access;
pub mod body;
pub mod client_cert;
pub mod compress;
pub mod cors;
pub mod engineio;
pub mod file_cache;
pub mod forward;
pub mod head;
pub mod heartbeat;
pub mod path;
pub mod router;
pub mod service;
pub mod static_files;
pub mod upgrade;
