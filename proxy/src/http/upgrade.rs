//! HTTP/1.1 upgrades (WebSocket): detected on the request, relayed byte for byte after the
//! upstream's 101, and tracked so shutdown can wait for them and then cut them.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use cot::panics::Panics;

use crate::counted::Counted;
use crate::http::heartbeat::Heartbeat;
use crate::http::router::RouteClass;
use crate::metrics::HttpMetrics;
use cot::listener::Drain;
use cot::listener::GaugeGuard;

/// The `Upgrade` value of a WebSocket upgrade request, or `None` for any other request.
///
/// Only WebSocket is relayed: other protocols (h2c, TLS) are not something OTS speaks, and an
/// upgrade a server does not know is simply ignored (RFC 9110 §7.8), so the request goes on as
/// plain HTTP.
pub fn websocket_upgrade(method: &http::Method, headers: &HeaderMap) -> Option<HeaderValue> {
    if method != http::Method::GET {
        return None;
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers.get(header::UPGRADE)?;
    let is_websocket = upgrade
        .to_str()
        .ok()?
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
    (connection_upgrade && is_websocket).then(|| upgrade.clone())
}

/// How an upgraded connection is relayed.
pub enum Relay {
    /// Byte for byte.
    Bytes,
    /// As a Socket.IO WebSocket whose heartbeats takgate answers, messages of at most the given
    /// size.
    Heartbeat(std::sync::Arc<Heartbeat>, usize),
}

/// Relays the two upgraded connections until either side closes or shutdown cuts them, on a
/// task of its own guarded as connection tasks are (`guard`: the listener's `Panics` and the
/// client's address).
pub fn spawn_relay(
    (client, upstream): (OnUpgrade, OnUpgrade),
    how: Relay,
    metrics: HttpMetrics,
    listener: std::sync::Arc<str>,
    route: RouteClass,
    drain: Drain,
    guard: (Panics, SocketAddr),
) {
    let tracker = drain.tracker().clone();
    let (panics, peer) = guard;
    let name = listener.clone();
    tracker.spawn(async move {
        panics
            .guard(
                &name,
                peer,
                relay(client, upstream, how, metrics, listener, route, drain),
            )
            .await
    });
}

async fn relay(
    client: OnUpgrade,
    upstream: OnUpgrade,
    how: Relay,
    metrics: HttpMetrics,
    listener: std::sync::Arc<str>,
    route: RouteClass,
    drain: Drain,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(listener = %listener, error = %e, "upgrade did not complete");
            return;
        }
    };
    let _open = GaugeGuard::new(metrics.websocket_open(&listener, route));
    // Counted as the bytes pass, so a long-lived WebSocket shows its traffic while open.
    let (to_upstream, to_client) = metrics.websocket_counters(&listener, route);
    let mut client = Counted::new(TokioIo::new(client), to_upstream);
    let mut upstream = Counted::new(TokioIo::new(upstream), to_client);
    if let Relay::Heartbeat(heartbeat, max_message) = how {
        heartbeat
            .relay_websocket(client, upstream, max_message, drain.upgrades_closing())
            .await;
        return;
    }
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = res {
                tracing::debug!(listener = %listener, error = %e, "upgraded connection ended");
            }
        }
        () = drain.upgrades_closing() => {
            // Best effort: both peers see a clean end of stream rather than a reset.
            let _ = tokio::join!(client.shutdown(), upstream.shutdown());
        }
    }
}
