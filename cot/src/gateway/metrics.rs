//! Stream listener metrics, registered on a caller-owned registry. Labels come from closed
//! sets: listener names from the config, modes, directions, refusal reasons, CoT type classes.

use super::limits::LimitPolicy;
use super::memory::MemoryBudget;
use super::outbox::ShedReason;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Seconds. Sub-millisecond resolution: a relay hop on loopback should cost tens of µs.
pub const RELAY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

/// Seconds, for TLS handshakes (RSA on a Raspberry Pi can take tens of ms).
pub const HANDSHAKE_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug)]
pub struct StreamMetrics {
    connections_open: IntGaugeVec,
    connections: IntCounterVec,
    handshake_seconds: HistogramVec,
    refused: IntCounterVec,
    bytes: IntCounterVec,
    frames: IntCounterVec,
    frame_errors: IntCounterVec,
    relay_seconds: HistogramVec,
    upstream_connect_failures: IntCounterVec,
    closed: IntCounterVec,
    certs_issued: IntCounterVec,
    cert_issue_seconds: HistogramVec,
    certs_cached: IntGaugeVec,
    signer_expiry: IntGaugeVec,
    rate_limited: IntCounterVec,
    frames_shed: IntCounterVec,
    memory_used: IntGauge,
    memory_budget: IntGauge,
}

/// Per-listener handles, resolved once so the relay's hot path does no label lookups.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pub listener: String,
    family: StreamMetrics,
    pub connections_open: IntGauge,
    pub connections: IntCounter,
    pub handshake_seconds: Histogram,
    pub upstream_connect_failures: IntCounter,
    pub to_upstream_bytes: IntCounter,
    pub to_client_bytes: IntCounter,
    pub relay_seconds: Histogram,
    /// By `LimitPolicy::action`: delayed, dropped, closed.
    pub rate_limited: [IntCounter; 3],
    /// By `ShedReason`.
    pub frames_shed: [IntCounter; 3],
}

/// Direction of traffic through the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToUpstream,
    ToClient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToUpstream => "to_upstream",
            Direction::ToClient => "to_client",
        }
    }
}

impl StreamMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            connections_open: IntGaugeVec::new(
                Opts::new(
                    "takgate_stream_connections_open",
                    "Client connections open on a stream listener.",
                ),
                &["listener", "mode"],
            )?,
            connections: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_connections_total",
                    "Client connections accepted by a stream listener.",
                ),
                &["listener", "mode"],
            )?,
            handshake_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "takgate_stream_tls_handshake_duration_seconds",
                    "Time to complete a client TLS handshake (successful ones).",
                )
                .buckets(HANDSHAKE_BUCKETS.to_vec()),
                &["listener"],
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_refused_total",
                    "Connections refused before relaying: TLS handshake failures and identity \
                     checks, by reason.",
                ),
                &["listener", "reason"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_bytes_total",
                    "Bytes relayed by a stream listener, by direction.",
                ),
                &["listener", "direction"],
            )?,
            frames: IntCounterVec::new(
                Opts::new(
                    "takgate_cot_frames_total",
                    "CoT frames relayed, by direction and type class (first two atoms of the \
                     CoT type).",
                ),
                &["listener", "direction", "class"],
            )?,
            frame_errors: IntCounterVec::new(
                Opts::new(
                    "takgate_cot_frame_errors_total",
                    "CoT frames refused (dropped, or the connection closed), by kind.",
                ),
                &["listener", "direction", "kind"],
            )?,
            relay_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "takgate_cot_relay_latency_seconds",
                    "From reading the last byte of a client's CoT frame to finishing its write \
                     upstream.",
                )
                .buckets(RELAY_BUCKETS.to_vec()),
                &["listener"],
            )?,
            upstream_connect_failures: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_upstream_connect_failures_total",
                    "Upstream connections that could not be opened (the client was closed).",
                ),
                &["listener"],
            )?,
            closed: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_sessions_closed_total",
                    "Relayed sessions that ended, by reason.",
                ),
                &["listener", "reason"],
            )?,
            certs_issued: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_certs_issued_total",
                    "Client certificates issued to reach OTS as the client's user (reoriginate \
                     mode), renewals included.",
                ),
                &["listener"],
            )?,
            cert_issue_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "takgate_stream_cert_issue_duration_seconds",
                    "Time to issue one client certificate (key generation and signature).",
                )
                .buckets(HANDSHAKE_BUCKETS.to_vec()),
                &["listener"],
            )?,
            certs_cached: IntGaugeVec::new(
                Opts::new(
                    "takgate_stream_certs_cached",
                    "Issued client certificates held in memory, one per CN.",
                ),
                &["listener"],
            )?,
            signer_expiry: IntGaugeVec::new(
                Opts::new(
                    "takgate_stream_signer_expiry_timestamp_seconds",
                    "When the certificate that signs the per-user certificates expires (Unix \
                     time); nothing issued outlives it.",
                ),
                &["listener"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_rate_limited_total",
                    "Clients held to their session's event and byte rates, by what was done: \
                     reading paused (delayed), frames dropped, sessions closed.",
                ),
                &["listener", "action"],
            )?,
            frames_shed: IntCounterVec::new(
                Opts::new(
                    "takgate_stream_frames_shed_total",
                    "CoT frames read from clients and never written to OTS because OTS was not \
                     reading them: past the session's queue, past the memory budget, or still \
                     queued when the session ended.",
                ),
                &["listener", "reason"],
            )?,
            memory_used: IntGauge::new(
                "takgate_stream_memory_used_bytes",
                "Memory charged to the stream memory budget: each session's fixed share and \
                 the buffers it holds.",
            )?,
            memory_budget: IntGauge::new(
                "takgate_stream_memory_budget_bytes",
                "The stream memory budget ([memory] stream_budget).",
            )?,
        };
        registry.register(Box::new(m.frames_shed.clone()))?;
        registry.register(Box::new(m.memory_used.clone()))?;
        registry.register(Box::new(m.memory_budget.clone()))?;
        registry.register(Box::new(m.connections_open.clone()))?;
        registry.register(Box::new(m.rate_limited.clone()))?;
        registry.register(Box::new(m.signer_expiry.clone()))?;
        registry.register(Box::new(m.certs_issued.clone()))?;
        registry.register(Box::new(m.cert_issue_seconds.clone()))?;
        registry.register(Box::new(m.certs_cached.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.handshake_seconds.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.frames.clone()))?;
        registry.register(Box::new(m.frame_errors.clone()))?;
        registry.register(Box::new(m.relay_seconds.clone()))?;
        registry.register(Box::new(m.upstream_connect_failures.clone()))?;
        registry.register(Box::new(m.closed.clone()))?;
        Ok(m)
    }

    pub fn listener(&self, listener: &str, mode: &str) -> ListenerMetrics {
        ListenerMetrics {
            listener: listener.to_owned(),
            family: self.clone(),
            connections_open: self.connections_open.with_label_values(&[listener, mode]),
            connections: self.connections.with_label_values(&[listener, mode]),
            handshake_seconds: self.handshake_seconds.with_label_values(&[listener]),
            upstream_connect_failures: self
                .upstream_connect_failures
                .with_label_values(&[listener]),
            to_upstream_bytes: self
                .bytes
                .with_label_values(&[listener, Direction::ToUpstream.as_str()]),
            to_client_bytes: self
                .bytes
                .with_label_values(&[listener, Direction::ToClient.as_str()]),
            relay_seconds: self.relay_seconds.with_label_values(&[listener]),
            rate_limited: [LimitPolicy::Delay, LimitPolicy::Drop, LimitPolicy::Close]
                .map(|p| self.rate_limited.with_label_values(&[listener, p.action()])),
            frames_shed: ShedReason::ALL
                .map(|r| self.frames_shed.with_label_values(&[listener, r.as_str()])),
        }
    }

    /// The process's stream memory budget, shown by these metrics.
    pub fn memory_budget(&self, limit: usize) -> std::sync::Arc<MemoryBudget> {
        MemoryBudget::new(limit, self.memory_used.clone(), &self.memory_budget)
    }

    /// The certificate-issuing metrics of a reoriginate listener.
    pub fn issue(&self, listener: &str) -> crate::reoriginate::IssueMetrics {
        crate::reoriginate::IssueMetrics {
            issued: self.certs_issued.with_label_values(&[listener]),
            seconds: self.cert_issue_seconds.with_label_values(&[listener]),
            cached: self.certs_cached.with_label_values(&[listener]),
            signer_expiry: self.signer_expiry.with_label_values(&[listener]),
        }
    }
}

impl ListenerMetrics {
    pub fn refused(&self, reason: crate::listener::Refusal) {
        self.family
            .refused
            .with_label_values(&[&self.listener, reason.as_str()])
            .inc();
    }

    pub fn closed(&self, reason: &'static str) {
        self.family
            .closed
            .with_label_values(&[&self.listener, reason])
            .inc();
    }

    pub fn frame_counter(&self, direction: Direction, class: &'static str) -> IntCounter {
        self.family
            .frames
            .with_label_values(&[&self.listener, direction.as_str(), class])
    }

    pub fn frame_error(&self, direction: Direction, kind: &'static str) {
        self.family
            .frame_errors
            .with_label_values(&[&self.listener, direction.as_str(), kind])
            .inc();
    }

    pub fn rate_limited(&self, policy: LimitPolicy) -> &IntCounter {
        &self.rate_limited[policy as usize]
    }

    pub fn bytes(&self, direction: Direction) -> &IntCounter {
        match direction {
            Direction::ToUpstream => &self.to_upstream_bytes,
            Direction::ToClient => &self.to_client_bytes,
        }
    }
}

/// The identity caches' state, read at scrape time: how many users are active, whether the
/// cache is stale, and how refreshes go.
#[derive(Debug)]
pub struct IdentityCollector {
    caches: Vec<(String, crate::identity::ActiveUsers)>,
    descs: Vec<prometheus::core::Desc>,
}

impl IdentityCollector {
    const FAMILIES: [(&'static str, &'static str); 5] = [
        (
            "takgate_identity_active_users",
            "Active OTS users in the identity cache.",
        ),
        (
            "takgate_identity_loaded",
            "1 once the user set has been loaded from OTS.",
        ),
        (
            "takgate_identity_serving_stale",
            "1 while the latest refresh failed and an older user set is in use.",
        ),
        (
            "takgate_identity_refreshes_total",
            "Refreshes of the user set from OTS's API.",
        ),
        (
            "takgate_identity_refresh_failures_total",
            "Refreshes of the user set that failed.",
        ),
    ];

    pub fn new(caches: Vec<(String, crate::identity::ActiveUsers)>) -> prometheus::Result<Self> {
        let descs = Self::FAMILIES
            .iter()
            .map(|(name, help)| {
                prometheus::core::Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    vec!["listener".to_owned()],
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self { caches, descs })
    }
}

impl prometheus::core::Collector for IdentityCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            IntGaugeVec::new(Opts::new(name, help), &["listener"])
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            IntCounterVec::new(Opts::new(name, help), &["listener"])
        };
        let [active, loaded, stale, refreshes, failures] = Self::FAMILIES;
        let built = (|| -> prometheus::Result<_> {
            let g = (
                gauge(active.0, active.1)?,
                gauge(loaded.0, loaded.1)?,
                gauge(stale.0, stale.1)?,
                counter(refreshes.0, refreshes.1)?,
                counter(failures.0, failures.1)?,
            );
            for (name, users) in &self.caches {
                let s = users.status();
                let l = [name.as_str()];
                g.0.with_label_values(&l)
                    .set(i64::try_from(s.active_users).unwrap_or(i64::MAX));
                g.1.with_label_values(&l).set(i64::from(s.loaded));
                g.2.with_label_values(&l).set(i64::from(s.serving_stale));
                g.3.with_label_values(&l).inc_by(s.refresh_attempts);
                g.4.with_label_values(&l).inc_by(s.refresh_failures);
            }
            Ok(g)
        })();
        let Ok((a, b, c, d, e)) = built else {
            return Vec::new();
        };
        [
            a.collect(),
            b.collect(),
            c.collect(),
            d.collect(),
            e.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
