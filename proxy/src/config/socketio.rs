//! `[socketio]`: engine.io heartbeats answered at the edge, for browsers on slow links.

use std::time::Duration;

use serde::Deserialize;

use super::checks::invalid;
use super::ConfigError;

/// Stock OTS starts Socket.IO with `ping_timeout=1`: python-engineio closes a session whose
/// PONG comes back more than a second after its PING while a message is due, which a browser
/// on a satellite or congested link cannot do. With `edge_heartbeat`, takgate answers OTS's
/// PING with a PONG at once, passes the PING on, takes the browser's PONG out, and checks the
/// browser's liveness itself with `client_timeout`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    pub edge_heartbeat: bool,
    /// How long a browser has to answer a PING before takgate closes its session on both sides.
    #[serde(with = "humantime_serde")]
    pub client_timeout: Duration,
}

impl SocketIoConfig {
    const MIN_CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
    const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(600);

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(Self::MIN_CLIENT_TIMEOUT..=Self::MAX_CLIENT_TIMEOUT).contains(&self.client_timeout) {
            return Err(invalid(
                "socketio.client_timeout",
                "must be between 1s and 10m",
            ));
        }
        Ok(())
    }
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            edge_heartbeat: true,
            // A browser on a link with seconds of queueing still answers within it; socket.io-
            // client itself gives the server pingInterval + pingTimeout (26 s) before it gives up.
            client_timeout: Duration::from_secs(20),
        }
    }
}
