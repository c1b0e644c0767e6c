//! takgate's HTTP metrics, registered on a registry the caller owns (never the global one), so
//! tests running side by side do not share counters.
//!
//! Every label comes from a closed set: listener names from the config, route classes, methods
//! folded to the standard ones, status classes and error kinds.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::error::ErrorKind;
use crate::http::router::RouteClass;

/// Seconds, from 1 ms to 30 s: an SLO can be written at any of the usual thresholds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_ttfb: HistogramVec,
    in_flight: IntGaugeVec,
    upstream_errors: IntCounterVec,
    connections_open: IntGaugeVec,
    connection_errors: IntCounterVec,
    tls_refused: IntCounterVec,
    websocket_open: IntGaugeVec,
    websocket_bytes: IntCounterVec,
    tls_reloads: IntCounterVec,
}

/// Why a client connection ended badly before or outside a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionError {
    /// The TLS handshake failed (bad or missing client certificate, protocol error).
    TlsHandshake,
    /// The TLS handshake did not finish in time.
    TlsHandshakeTimeout,
    /// The listener's certificate files do not exist yet; the connection was closed.
    TlsNotReady,
    /// The request head was too large (431/414 sent by the HTTP codec).
    HeadTooLarge,
    /// The request head could not be parsed (400 sent by the HTTP codec).
    Parse,
    /// The request head did not arrive in time.
    HeaderTimeout,
    /// Any other I/O error on the client connection.
    Io,
    /// An HTTP/2 client closed for abuse (GOAWAY ENHANCE_YOUR_CALM: rapid reset, too many
    /// resets, a CONTINUATION flood).
    Http2Abuse,
    /// An HTTP/2 client closed for another protocol error (GOAWAY with its reason).
    Http2Protocol,
}

impl ConnectionError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TlsHandshake => "tls_handshake",
            Self::TlsHandshakeTimeout => "tls_handshake_timeout",
            Self::TlsNotReady => "tls_not_ready",
            Self::HeadTooLarge => "head_too_large",
            Self::Parse => "parse",
            Self::HeaderTimeout => "header_timeout",
            Self::Io => "io",
            Self::Http2Abuse => "http2_abuse",
            Self::Http2Protocol => "http2_protocol",
        }
    }
}

/// Folds a method to a bounded label.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub fn status_class(s: http::StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

// === impl HttpMetrics ===

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["listener", "route", "method", "status_class"];
        let requests = IntCounterVec::new(
            Opts::new(
                "takgate_http_requests_total",
                "HTTP requests answered, by listener, route class, method and status class.",
            ),
            labels,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "takgate_http_request_duration_seconds",
                "Time from request head received to the last response byte sent.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?;
        let upstream_ttfb = HistogramVec::new(
            HistogramOpts::new(
                "takgate_upstream_ttfb_seconds",
                "Time from sending a request upstream to receiving its response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["listener", "route"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "takgate_http_in_flight_requests",
                "Requests being handled now.",
            ),
            &["listener"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "takgate_proxy_errors_total",
                "Requests that failed in takgate, by side (upstream, downstream, internal) and kind.",
            ),
            &["listener", "route", "side", "kind"],
        )?;
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "takgate_http_connections_open",
                "Client connections open now.",
            ),
            &["listener"],
        )?;
        let connection_errors = IntCounterVec::new(
            Opts::new(
                "takgate_http_connection_errors_total",
                "Client connections that ended with an error outside a request.",
            ),
            &["listener", "kind"],
        )?;
        let tls_refused = IntCounterVec::new(
            Opts::new(
                "takgate_http_tls_refused_total",
                "TLS handshakes refused on HTTPS listeners, by reason (as takgate_stream_refused_total).",
            ),
            &["listener", "reason"],
        )?;
        let websocket_open = IntGaugeVec::new(
            Opts::new(
                "takgate_websocket_sessions_open",
                "Upgraded (WebSocket) connections being relayed now.",
            ),
            &["listener", "route"],
        )?;
        let websocket_bytes = IntCounterVec::new(
            Opts::new(
                "takgate_websocket_bytes_total",
                "Bytes relayed on upgraded connections, by direction.",
            ),
            &["listener", "route", "direction"],
        )?;
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "takgate_tls_reloads_total",
                "Certificate reloads (SIGHUP), by result.",
            ),
            &["listener", "result"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("takgate_build_info", "takgate build information; always 1."),
            &["version"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_ttfb.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connection_errors.clone()))?;
        registry.register(Box::new(tls_refused.clone()))?;
        registry.register(Box::new(websocket_open.clone()))?;
        registry.register(Box::new(websocket_bytes.clone()))?;
        registry.register(Box::new(tls_reloads.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Self {
            requests,
            duration,
            upstream_ttfb,
            in_flight,
            upstream_errors,
            connections_open,
            connection_errors,
            tls_refused,
            websocket_open,
            websocket_bytes,
            tls_reloads,
        })
    }

    /// Creates the per-listener series up front so dashboards see zeros rather than gaps.
    pub fn init_listener(&self, listener: &str) {
        self.in_flight.with_label_values(&[listener]);
        self.connections_open.with_label_values(&[listener]);
    }

    pub fn request_done(
        &self,
        listener: &str,
        route: RouteClass,
        method: &http::Method,
        status: http::StatusCode,
        seconds: f64,
    ) {
        let labels = [
            listener,
            route.as_str(),
            method_label(method),
            status_class(status),
        ];
        self.requests.with_label_values(&labels).inc();
        self.duration.with_label_values(&labels).observe(seconds);
    }

    pub fn upstream_ttfb(&self, listener: &str, route: RouteClass, seconds: f64) {
        self.upstream_ttfb
            .with_label_values(&[listener, route.as_str()])
            .observe(seconds);
    }

    pub fn proxy_error(&self, listener: &str, route: RouteClass, kind: ErrorKind) {
        self.upstream_errors
            .with_label_values(&[
                listener,
                route.as_str(),
                kind.side().as_str(),
                kind.as_str(),
            ])
            .inc();
    }

    pub fn in_flight(&self, listener: &str) -> IntGauge {
        self.in_flight.with_label_values(&[listener])
    }

    pub fn connections_open(&self, listener: &str) -> IntGauge {
        self.connections_open.with_label_values(&[listener])
    }

    pub fn connection_error(&self, listener: &str, kind: ConnectionError) {
        self.connection_errors
            .with_label_values(&[listener, kind.as_str()])
            .inc();
    }

    /// A refused handshake: `tls_handshake` in the connection errors, and why.
    pub fn tls_refused(&self, listener: &str, reason: cot::listener::Refusal) {
        self.tls_refused
            .with_label_values(&[listener, reason.as_str()])
            .inc();
        self.connection_error(listener, ConnectionError::TlsHandshake);
    }

    pub fn websocket_open(&self, listener: &str, route: RouteClass) -> IntGauge {
        self.websocket_open
            .with_label_values(&[listener, route.as_str()])
    }

    /// Counters for bytes read from the client (sent upstream) and from the upstream.
    pub fn websocket_counters(
        &self,
        listener: &str,
        route: RouteClass,
    ) -> (IntCounter, IntCounter) {
        (
            self.websocket_bytes
                .with_label_values(&[listener, route.as_str(), "to_upstream"]),
            self.websocket_bytes
                .with_label_values(&[listener, route.as_str(), "to_client"]),
        )
    }

    pub fn tls_reload(&self, listener: &str, ok: bool) {
        self.tls_reloads
            .with_label_values(&[listener, if ok { "ok" } else { "error" }])
            .inc();
    }
}
