//! engine.io heartbeats answered at the edge (`[socketio] edge_heartbeat`).
//!
//! Stock OTS runs Socket.IO with `ping_timeout=1`: python-engineio closes a session when a
//! message is due more than a second after its PING and no PONG has come back
//! (`engineio/socket.py` `check_ping_timeout`). A browser on a 600 ms link with a little
//! queueing misses that, and its live map drops and reconnects. So takgate, which sits next to
//! OTS, answers each PING with a PONG at once, passes the PING on to the browser, takes the
//! browser's own PONG out (OTS has had one; a second does no harm but is not needed), and checks
//! the browser's liveness itself: no PONG within `client_timeout` closes the session on both
//! sides, as OTS's own timeout would have, only later.
//!
//! - WebSocket: both upgraded connections are spoken to as WebSockets (tungstenite), one
//!   engine.io packet per text frame; permessage-deflate is not offered upstream for these, so
//!   frames are plain text.
//! - both: OTS's OPEN packet tells the browser `pingTimeout` = `client_timeout` instead of 1 s,
//!   so the browser's own check of OTS (`pingInterval + pingTimeout` between two PINGs) allows
//!   for the link too.
//! - long-polling: a polling GET's answer (a payload of `\x1e`-separated packets) with a PING
//!   makes takgate POST `3` for the session itself; the browser's POSTs have their `3` taken out
//!   (a POST left empty is answered `ok` here); a missed deadline POSTs `1` (CLOSE).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderValue};
use http::{Request, Uri};
use http_body_util::BodyExt as _;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::SocketIoConfig;
use crate::http::body::{self, SendProgress};
use crate::http::engineio;
use crate::http::forward::Forwarder;
use crate::http::router::Upstream;

/// What each side's reader asks the socket for at once. tungstenite's default, 128 KiB, is
/// allocated per side of every relayed WebSocket and zero-filled before every read: 16% of
/// takgate's CPU relaying 1 KB messages (perf, loadtest/bench ws-relay). A larger message still
/// arrives whole, over several reads.
const WS_READ_BUFFER: usize = 16 * 1024;

/// Polling payloads larger than this are passed on without being read (engine.io's own default
/// `max_http_buffer_size` is 1 MB; heartbeats travel in small payloads).
pub const MAX_INSPECTED: u64 = 1 << 20;

/// Polling sessions tracked at once; beyond it new sessions are passed through untouched.
const MAX_SESSIONS: usize = 10_000;

/// A polling session with no PING for this long has ended (OTS pings every 25 s).
const SESSION_IDLE: Duration = Duration::from_secs(120);

/// The counters, labelled by transport (`websocket`, `polling`) and, for errors, by kind.
#[derive(Clone, Debug)]
pub struct HeartbeatMetrics {
    answered: IntCounterVec,
    pongs_taken: IntCounterVec,
    timeouts: IntCounterVec,
    errors: IntCounterVec,
}

impl HeartbeatMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let answered = IntCounterVec::new(
            Opts::new(
                "takgate_socketio_pings_answered_total",
                "engine.io PINGs from OTS that takgate answered with a PONG on the browser's behalf.",
            ),
            &["transport"],
        )?;
        let pongs_taken = IntCounterVec::new(
            Opts::new(
                "takgate_socketio_client_pongs_total",
                "Browsers' PONGs received in time (taken out: OTS already had takgate's).",
            ),
            &["transport"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "takgate_socketio_client_timeouts_total",
                "Sessions closed because the browser sent no PONG within socketio.client_timeout.",
            ),
            &["transport"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "takgate_socketio_heartbeat_errors_total",
                "Heartbeats takgate could not handle, by kind (upstream: OTS refused takgate's \
                 PONG or CLOSE; sessions_full: a polling session left untracked).",
            ),
            &["kind"],
        )?;
        for c in [&answered, &pongs_taken, &timeouts] {
            registry.register(Box::new(c.clone()))?;
            for t in ["websocket", "polling"] {
                c.with_label_values(&[t]);
            }
        }
        registry.register(Box::new(errors.clone()))?;
        for k in ["upstream", "sessions_full"] {
            errors.with_label_values(&[k]);
        }
        Ok(Self {
            answered,
            pongs_taken,
            timeouts,
            errors,
        })
    }
}

/// A polling session that takgate answered a PING for.
#[derive(Debug)]
struct Session {
    /// The PING answered last and not yet answered by the browser, numbered.
    awaiting: Option<u64>,
    last_ping: Instant,
}

/// The edge heartbeat of all listeners: its settings, the polling sessions it answers for, and
/// its counters.
#[derive(Debug)]
pub struct Heartbeat {
    config: SocketIoConfig,
    metrics: HeartbeatMetrics,
    forwarder: Arc<Forwarder>,
    sessions: Mutex<HashMap<String, Session>>,
    pings: std::sync::atomic::AtomicU64,
}

impl Heartbeat {
    pub fn new(
        config: SocketIoConfig,
        metrics: HeartbeatMetrics,
        forwarder: Arc<Forwarder>,
    ) -> Self {
        Self {
            config,
            metrics,
            forwarder,
            sessions: Mutex::new(HashMap::new()),
            pings: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.edge_heartbeat
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// OTS's OPEN packet (and whatever follows it in `payload`) with the browser's `pingTimeout`
    /// raised to `client_timeout`, or `None` to send it as it is. OTS's 1 s would have the
    /// browser give OTS up when a PING comes more than `pingInterval + 1 s` after the last, which
    /// the link's delay on each PING and on the PONG that starts OTS's next interval overruns.
    pub fn open_packet(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let ms = u64::try_from(self.config.client_timeout.as_millis()).unwrap_or(u64::MAX);
        engineio::with_ping_timeout(payload, ms)
    }

    // --- long-polling ---------------------------------------------------------------------

    /// A polling GET's answer from OTS (`payload`, already read whole): for each PING in it,
    /// takgate POSTs the PONG to `uri` (the GET's own upstream URI: same session) at once and
    /// starts the browser's clock.
    pub fn on_poll_answer(
        self: &Arc<Self>,
        sid: &str,
        upstream: Arc<Upstream>,
        uri: Uri,
        payload: &[u8],
    ) {
        if engineio::pings_in_payload(payload) == 0 {
            return;
        }
        let n = self
            .pings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut sessions = self.sessions();
            let now = Instant::now();
            if !sessions.contains_key(sid) && sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, s| now.duration_since(s.last_ping) < SESSION_IDLE);
            }
            if !sessions.contains_key(sid) && sessions.len() >= MAX_SESSIONS {
                self.metrics
                    .errors
                    .with_label_values(&["sessions_full"])
                    .inc();
                return;
            }
            sessions.insert(
                sid.to_owned(),
                Session {
                    awaiting: Some(n),
                    last_ping: now,
                },
            );
        }
        let this = self.clone();
        let sid = sid.to_owned();
        tokio::spawn(async move {
            if this.post(&upstream, &uri, engineio::PONG).await {
                this.metrics.answered.with_label_values(&["polling"]).inc();
            } else {
                // OTS did not take takgate's PONG: let the browser's own through.
                this.sessions().remove(&sid);
                return;
            }
            tokio::time::sleep(this.config.client_timeout).await;
            let expired = {
                let mut sessions = this.sessions();
                let expired = sessions.get(&sid).is_some_and(|s| s.awaiting == Some(n));
                if expired {
                    sessions.remove(&sid);
                }
                expired
            };
            if expired {
                this.metrics.timeouts.with_label_values(&["polling"]).inc();
                tracing::info!(sid = %sid, timeout = ?this.config.client_timeout, "socket.io polling client sent no PONG in time; closing its session");
                this.post(&upstream, &uri, engineio::CLOSE).await;
            }
        });
    }

    /// A browser's polling POST for `sid`, read whole: its PONGs are taken out when takgate
    /// answered for the session. Returns the payload to send on, `None` when nothing is left
    /// (the POST is answered here), or the payload untouched.
    pub fn on_poll_post(&self, sid: &str, payload: Bytes) -> Option<Bytes> {
        let mut sessions = self.sessions();
        let Some(session) = sessions.get_mut(sid) else {
            return Some(payload);
        };
        let Some((rest, pongs)) = engineio::without_pongs(&payload) else {
            return Some(payload);
        };
        session.awaiting = None;
        self.metrics
            .pongs_taken
            .with_label_values(&["polling"])
            .inc_by(pongs as u64);
        (!rest.is_empty()).then(|| Bytes::from(rest))
    }

    /// POSTs one packet to a polling session upstream; whether OTS took it.
    async fn post(&self, upstream: &Upstream, uri: &Uri, packet: &'static str) -> bool {
        let req = Request::post(uri.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain;charset=UTF-8"),
            )
            .body(body::full(packet));
        let ok = match req {
            Ok(req) => match self
                .forwarder
                .send(upstream, req, &SendProgress::new())
                .await
            {
                Ok(f) => {
                    let status = f.response.status();
                    // Read the short answer ("ok") so the pooled connection can be reused.
                    let _ = tokio::time::timeout(
                        self.forwarder.response_timeout(),
                        f.response.into_body().collect(),
                    )
                    .await;
                    status.is_success()
                }
                Err(e) => {
                    tracing::debug!(error = %e, "posting an engine.io packet upstream");
                    false
                }
            },
            Err(_) => false,
        };
        if !ok {
            self.metrics.errors.with_label_values(&["upstream"]).inc();
        }
        ok
    }

    // --- WebSocket ------------------------------------------------------------------------

    /// Relays an upgraded Socket.IO WebSocket, answering OTS's PINGs at once and checking the
    /// browser's PONGs against `client_timeout`, until either side closes or `closing` ends.
    pub async fn relay_websocket<S>(
        &self,
        client: S,
        upstream: S,
        max_message: usize,
        closing: impl std::future::Future<Output = ()>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let mut browser =
            WebSocketStream::from_raw_socket(client, Role::Server, Some(config)).await;
        let mut ots = WebSocketStream::from_raw_socket(upstream, Role::Client, Some(config)).await;
        let mut deadline: Option<Instant> = None;
        tokio::pin!(closing);
        let timed_out = loop {
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = ots.next() => {
                    let Some(Ok(mut msg)) = msg else { break false };
                    if let Message::Text(t) = &msg {
                        if let Some(open) = self.open_packet(t.as_bytes()).and_then(|o| String::from_utf8(o).ok()) {
                            msg = Message::text(open);
                        }
                    }
                    if matches!(&msg, Message::Text(t) if t.as_str() == engineio::PING) {
                        if ots.send(Message::text(engineio::PONG)).await.is_err() {
                            break false;
                        }
                        self.metrics.answered.with_label_values(&["websocket"]).inc();
                        deadline.get_or_insert(Instant::now() + self.config.client_timeout);
                    }
                    let close = matches!(msg, Message::Close(_));
                    if browser.send(msg).await.is_err() || close {
                        break false;
                    }
                }
                msg = browser.next() => {
                    let Some(Ok(msg)) = msg else { break false };
                    if deadline.is_some() && matches!(&msg, Message::Text(t) if t.as_str() == engineio::PONG) {
                        deadline = None;
                        self.metrics.pongs_taken.with_label_values(&["websocket"]).inc();
                        continue;
                    }
                    let close = matches!(msg, Message::Close(_));
                    if ots.send(msg).await.is_err() || close {
                        break false;
                    }
                }
                () = expiry => break true,
                () = &mut closing => break false,
            }
        };
        if timed_out {
            self.metrics
                .timeouts
                .with_label_values(&["websocket"])
                .inc();
            tracing::info!(timeout = ?self.config.client_timeout, "socket.io WebSocket client sent no PONG in time; closing both sides");
        }
        let going_away = CloseFrame {
            code: CloseCode::Away,
            reason: "".into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = tokio::join!(
                browser.close(Some(going_away.clone())),
                ots.close(Some(going_away))
            );
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use tokio::io::DuplexStream;

    fn heartbeat(registry: &Registry) -> Arc<Heartbeat> {
        let forwarder = Forwarder::new(
            &UpstreamConfig::default(),
            http::HeaderName::from_static("x-ssl-cert"),
        )
        .unwrap();
        Arc::new(Heartbeat::new(
            SocketIoConfig::default(),
            HeartbeatMetrics::register(registry).unwrap(),
            Arc::new(forwarder),
        ))
    }

    fn count(c: &IntCounterVec, transport: &str) -> u64 {
        c.with_label_values(&[transport]).get()
    }

    /// The browser's and OTS's ends of a relayed Socket.IO WebSocket, the relay running.
    async fn relayed(
        hb: Arc<Heartbeat>,
    ) -> (
        WebSocketStream<DuplexStream>,
        WebSocketStream<DuplexStream>,
        tokio::task::JoinHandle<()>,
    ) {
        let (browser, edge_client) = tokio::io::duplex(64 * 1024);
        let (edge_upstream, ots) = tokio::io::duplex(64 * 1024);
        let relay = tokio::spawn(async move {
            hb.relay_websocket(edge_client, edge_upstream, 1 << 20, std::future::pending())
                .await
        });
        let browser = WebSocketStream::from_raw_socket(browser, Role::Client, None).await;
        let ots = WebSocketStream::from_raw_socket(ots, Role::Server, None).await;
        (browser, ots, relay)
    }

    async fn text(ws: &mut WebSocketStream<DuplexStream>) -> String {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn websocket_ping_answered_at_once_and_the_browsers_pong_taken_out() {
        let hb = heartbeat(&Registry::new());
        let (mut browser, mut ots, _relay) = relayed(hb.clone()).await;
        // A WebSocket-only session starts with OTS's OPEN packet: the browser is told the
        // edge's client_timeout, not OTS's 1 s.
        ots.send(Message::text(
            r#"0{"sid":"s","pingInterval":25000,"pingTimeout":1000}"#,
        ))
        .await
        .unwrap();
        assert_eq!(
            text(&mut browser).await,
            r#"0{"pingInterval":25000,"pingTimeout":20000,"sid":"s"}"#
        );
        ots.send(Message::text("2")).await.unwrap();
        // OTS has its PONG before the browser has done anything.
        assert_eq!(text(&mut ots).await, "3");
        assert_eq!(text(&mut browser).await, "2");
        browser.send(Message::text("3")).await.unwrap();
        browser
            .send(Message::text("42/socket.io,[\"x\"]"))
            .await
            .unwrap();
        // The browser's PONG is not passed on; what follows it is.
        assert_eq!(text(&mut ots).await, "42/socket.io,[\"x\"]");
        // The upgrade's probe is not a heartbeat: passed both ways, not answered.
        ots.send(Message::text("3probe")).await.unwrap();
        assert_eq!(text(&mut browser).await, "3probe");
        browser.send(Message::text("2probe")).await.unwrap();
        assert_eq!(text(&mut ots).await, "2probe");
        assert_eq!(count(&hb.metrics.answered, "websocket"), 1);
        assert_eq!(count(&hb.metrics.pongs_taken, "websocket"), 1);
        assert_eq!(count(&hb.metrics.timeouts, "websocket"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn websocket_browser_silent_past_client_timeout_is_closed_on_both_sides() {
        let hb = heartbeat(&Registry::new());
        let (mut browser, mut ots, relay) = relayed(hb.clone()).await;
        ots.send(Message::text("2")).await.unwrap();
        assert_eq!(text(&mut ots).await, "3");
        assert_eq!(text(&mut browser).await, "2");
        // The browser never answers; paused time runs on to the deadline.
        assert!(matches!(browser.next().await, Some(Ok(Message::Close(_)))));
        assert!(matches!(ots.next().await, Some(Ok(Message::Close(_)))));
        relay.await.unwrap();
        assert_eq!(count(&hb.metrics.timeouts, "websocket"), 1);
    }

    #[tokio::test]
    async fn polling_pongs_taken_out_only_for_sessions_takgate_answered_for() {
        let hb = heartbeat(&Registry::new());
        let pong = Bytes::from_static(b"3");
        // A session takgate never answered for: the browser's PONG goes to OTS.
        assert_eq!(hb.on_poll_post("other", pong.clone()), Some(pong.clone()));
        hb.sessions().insert(
            "sid1".into(),
            Session {
                awaiting: Some(0),
                last_ping: Instant::now(),
            },
        );
        assert_eq!(hb.on_poll_post("sid1", pong), None);
        assert_eq!(hb.sessions()["sid1"].awaiting, None);
        assert_eq!(
            hb.on_poll_post("sid1", Bytes::from_static(b"3\x1e42[\"a\"]")),
            Some(Bytes::from_static(b"42[\"a\"]"))
        );
        assert_eq!(count(&hb.metrics.pongs_taken, "polling"), 2);
    }
}
