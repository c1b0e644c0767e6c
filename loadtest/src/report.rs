//! The result of a run: a serde struct written as JSON, and a human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{ErrorKind, Stats};

/// Latency percentiles in milliseconds (from microsecond HDR histograms, 3 significant digits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
    /// The percentile spectrum, as HdrHistogram plots it: the value at percentiles that halve
    /// the distance to 100 % every two steps (0, 29.3, 50, 64.6, 75, …), as long as at least
    /// one sample lies beyond, then 100 (the maximum).
    #[serde(default)]
    pub spectrum: Vec<SpectrumPoint>,
}

/// The latency at a percentile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    pub percentile: f64,
    pub ms: f64,
}

/// Steps of the spectrum per halving of the distance to 100 %.
const SPECTRUM_STEPS_PER_HALF: f64 = 2.0;

fn spectrum(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    let n = h.len() as f64;
    let mut out: Vec<SpectrumPoint> = (0..)
        .map(|k| 1.0 - 0.5f64.powf(f64::from(k) / SPECTRUM_STEPS_PER_HALF))
        .take_while(|q| (1.0 - q) * n >= 1.0)
        .map(|q| SpectrumPoint {
            percentile: (q * 1e6).round() / 1e4,
            ms: ms(h.value_at_quantile(q)),
        })
        .collect();
    out.push(SpectrumPoint {
        percentile: 100.0,
        ms: ms(h.max()),
    });
    out
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Percentiles {
    /// `None` for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(Self {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean().round() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            spectrum: spectrum(h),
        })
    }
}

/// Requests or messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ops {
    /// `requests` or `messages`.
    pub unit: String,
    /// Written.
    pub sent: u64,
    /// Read back: responses, echoed messages, or CoT frames.
    pub received: u64,
    /// Successful: 2xx/3xx responses, or received messages carrying a loadtest send stamp
    /// (each one a latency sample).
    pub ok: u64,
    /// `sent` over the measurement phase.
    pub sent_per_s: f64,
    /// `received` over the measurement phase.
    pub received_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ByteCounts {
    pub sent: u64,
    pub received: u64,
    /// Megabytes (10^6 bytes) per second over the measurement phase.
    pub sent_mb_per_s: f64,
    pub received_mb_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    /// Still open when the measurement phase ended (the figure for `cot --idle`).
    pub open_at_end: u64,
    /// TCP connect plus TLS handshake, per established connection.
    pub setup: Option<Percentiles>,
    /// Seconds from the first connection attempt until every attempt had finished.
    pub setup_phase_s: f64,
    /// Established connections per second of the setup phase.
    pub handshakes_per_s: f64,
}

/// One URL of an `http`/`static` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrlReport {
    pub url: String,
    pub requests: u64,
    pub ok: u64,
    pub bytes_received: u64,
    pub received_mb_per_s: f64,
    pub latency: Option<Percentiles>,
}

/// A run's report. `--format json` and `--json FILE` write exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// `cot`, `http`, `ws` or `static`.
    pub mode: String,
    pub target: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    /// The options of the run that shape the workload.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Length of the measurement phase in seconds (after connection setup; drain included).
    pub elapsed_s: f64,
    pub ops: Ops,
    pub bytes: ByteCounts,
    /// From each operation's intended start (open model: a late send counts its wait) to its
    /// completion: the response's last byte, or the echo's arrival.
    pub latency: Option<Percentiles>,
    /// From the moment each operation was actually written to its completion.
    pub service: Option<Percentiles>,
    pub connections: Connections,
    /// Every error kind, zero or not.
    pub errors: BTreeMap<String, u64>,
    pub errors_total: u64,
    /// HTTP status codes seen (`http`, `static`); for WebSocket, the handshake statuses.
    pub status: BTreeMap<String, u64>,
    /// Per URL (`http`, `static`).
    pub urls: Vec<UrlReport>,
}

/// What a run knows when it ends, besides its [`Stats`].
pub struct RunInfo {
    pub mode: &'static str,
    pub unit: &'static str,
    pub target: String,
    pub started_at: SystemTime,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub elapsed_s: f64,
    pub setup_phase_s: f64,
}

impl Report {
    pub fn build(info: RunInfo, stats: &Stats) -> Self {
        let get = Stats::get;
        let per_s = |n: u64| {
            if info.elapsed_s > 0.0 {
                n as f64 / info.elapsed_s
            } else {
                0.0
            }
        };
        let established = get(&stats.conns_established);
        let errors: BTreeMap<String, u64> = ErrorKind::ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), stats.errors.get(*k)))
            .collect();
        Self {
            tool: "loadtest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            mode: info.mode.into(),
            target: info.target,
            started_at: crate::cotgen::iso8601(info.started_at),
            settings: info.settings,
            elapsed_s: round3(info.elapsed_s),
            ops: Ops {
                unit: info.unit.into(),
                sent: get(&stats.sent),
                received: get(&stats.received),
                ok: get(&stats.ok),
                sent_per_s: round3(per_s(get(&stats.sent))),
                received_per_s: round3(per_s(get(&stats.received))),
            },
            bytes: ByteCounts {
                sent: get(&stats.bytes_sent),
                received: get(&stats.bytes_received),
                sent_mb_per_s: round3(per_s(get(&stats.bytes_sent)) / 1e6),
                received_mb_per_s: round3(per_s(get(&stats.bytes_received)) / 1e6),
            },
            latency: Percentiles::of(&stats.latency.snapshot()),
            service: Percentiles::of(&stats.service.snapshot()),
            connections: Connections {
                attempted: get(&stats.conns_attempted),
                established,
                failed: get(&stats.conns_failed),
                open_at_end: get(&stats.conns_open),
                setup: Percentiles::of(&stats.setup.snapshot()),
                setup_phase_s: round3(info.setup_phase_s),
                handshakes_per_s: if info.setup_phase_s > 0.0 {
                    round3(established as f64 / info.setup_phase_s)
                } else {
                    0.0
                },
            },
            errors_total: stats.errors.total(),
            errors,
            status: BTreeMap::new(),
            urls: Vec::new(),
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let _ = writeln!(out, "loadtest {} -> {}", self.mode, self.target);
        let _ = writeln!(out, "  {}", settings.join(" "));
        let _ = writeln!(
            out,
            "  measured {:.2} s, started {}",
            self.elapsed_s, self.started_at
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "  {:<22}{:>14}{:>14}", "", "count", "per second");
        let u = &self.ops.unit;
        let _ = writeln!(
            out,
            "  {:<22}{:>14}{:>14.1}",
            format!("{u} sent"),
            self.ops.sent,
            self.ops.sent_per_s
        );
        let _ = writeln!(
            out,
            "  {:<22}{:>14}{:>14.1}",
            format!("{u} received"),
            self.ops.received,
            self.ops.received_per_s
        );
        let _ = writeln!(out, "  {:<22}{:>14}", format!("{u} ok"), self.ops.ok);
        let _ = writeln!(
            out,
            "  {:<22}{:>14}{:>11.3} MB/s",
            "bytes sent", self.bytes.sent, self.bytes.sent_mb_per_s
        );
        let _ = writeln!(
            out,
            "  {:<22}{:>14}{:>11.3} MB/s",
            "bytes received", self.bytes.received, self.bytes.received_mb_per_s
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<22}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "mean", "n"
        );
        let rows = [
            ("from intended start", &self.latency),
            ("from actual send", &self.service),
            ("connection setup", &self.connections.setup),
        ];
        for (name, p) in rows {
            match p {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "  {:<22}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>10}",
                        name,
                        p.p50_ms,
                        p.p90_ms,
                        p.p99_ms,
                        p.p99_9_ms,
                        p.max_ms,
                        p.mean_ms,
                        p.count
                    );
                }
                None => {
                    let _ = writeln!(out, "  {name:<22}{:>9}", "-");
                }
            }
        }
        for url in &self.urls {
            let _ = writeln!(
                out,
                "  {:<22}{}",
                "",
                format_args!(
                    "{}: {} requests, {} ok, {} bytes, {:.3} MB/s, p50 {} ms, p99 {} ms",
                    url.url,
                    url.requests,
                    url.ok,
                    url.bytes_received,
                    url.received_mb_per_s,
                    url.latency
                        .as_ref()
                        .map_or("-".into(), |p| format!("{:.3}", p.p50_ms)),
                    url.latency
                        .as_ref()
                        .map_or("-".into(), |p| format!("{:.3}", p.p99_ms)),
                )
            );
        }
        let _ = writeln!(out);
        let c = &self.connections;
        let _ = writeln!(
            out,
            "  connections           {} attempted, {} established, {} failed, {} open at end; \
             setup phase {:.3} s, {:.1} handshakes/s",
            c.attempted,
            c.established,
            c.failed,
            c.open_at_end,
            c.setup_phase_s,
            c.handshakes_per_s
        );
        if !self.status.is_empty() {
            let s: Vec<String> = self
                .status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "  status                {}", s.join(", "));
        }
        let errs: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "  errors                {}",
            if errs.is_empty() {
                "none".to_owned()
            } else {
                format!("{} ({})", self.errors_total, errs.join(", "))
            }
        );
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample() -> Report {
        let stats = Stats::default();
        for us in 1..=1000u64 {
            stats.latency.record(Duration::from_micros(us));
        }
        Stats::add(&stats.sent, 1000);
        Stats::add(&stats.received, 1000);
        Stats::add(&stats.ok, 1000);
        Stats::add(&stats.bytes_received, 2_000_000);
        Stats::add(&stats.conns_attempted, 2);
        stats.conn_established(Duration::from_millis(1));
        stats.conn_failed(ErrorKind::Connect);
        let info = RunInfo {
            mode: "http",
            unit: "requests",
            target: "http://127.0.0.1:1/".into(),
            started_at: SystemTime::UNIX_EPOCH,
            settings: BTreeMap::from([("rate".to_owned(), serde_json::json!("max"))]),
            elapsed_s: 2.0,
            setup_phase_s: 0.5,
        };
        Report::build(info, &stats)
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let r = sample();
        let p = r.latency.as_ref().unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.min_ms, 0.001);
        assert!((p.p50_ms - 0.5).abs() < 0.001, "{p:?}");
        assert!((p.p90_ms - 0.9).abs() < 0.001, "{p:?}");
        assert!((p.p99_ms - 0.99).abs() < 0.001, "{p:?}");
        assert!((p.p99_9_ms - 0.999).abs() < 0.001, "{p:?}");
        assert!((p.max_ms - 1.0).abs() < 0.001, "{p:?}");
        assert!(r.service.is_none());
        // 1000 samples: the spectrum goes on while a sample lies beyond (1 - 2^-k/2 ≤ 99.9 %),
        // rising, and ends at the maximum.
        let points: Vec<(f64, f64)> = p.spectrum.iter().map(|s| (s.percentile, s.ms)).collect();
        assert_eq!(points[0], (0.0, 0.001));
        assert_eq!(points[2], (50.0, p.p50_ms));
        assert_eq!(points[4], (75.0, 0.75));
        assert_eq!(*points.last().unwrap(), (100.0, p.max_ms));
        let before_max = points[points.len() - 2].0;
        assert!(before_max > 99.8 && before_max <= 99.9, "{points:?}");
        assert!(points
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn json_shape() {
        let r = sample();
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "tool",
            "version",
            "mode",
            "target",
            "started_at",
            "settings",
            "elapsed_s",
            "ops",
            "bytes",
            "latency",
            "service",
            "connections",
            "errors",
            "errors_total",
            "status",
            "urls",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["started_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["ops"]["received_per_s"], 500.0);
        assert_eq!(v["bytes"]["received_mb_per_s"], 1.0);
        for key in ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "count"] {
            assert!(v["latency"][key].is_number(), "latency.{key}");
        }
        assert!(v["service"].is_null());
        // Every error kind is present, so scripts can index without checking.
        let errors = v["errors"].as_object().unwrap();
        assert_eq!(errors.len(), ErrorKind::ALL.len());
        assert_eq!(errors["connect"], 1);
        assert_eq!(v["errors_total"], 1);
        assert_eq!(v["connections"]["established"], 1);
        assert_eq!(v["connections"]["failed"], 1);
        assert_eq!(v["connections"]["handshakes_per_s"], 2.0);
        // And it reads back.
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn table_names_the_figures() {
        let t = sample().table();
        for needle in [
            "requests sent",
            "p99.9",
            "from intended start",
            "connection setup",
            "handshakes/s",
            "MB/s",
            "errors                1 (connect 1)",
        ] {
            assert!(t.contains(needle), "{needle:?} not in\n{t}");
        }
    }
}
