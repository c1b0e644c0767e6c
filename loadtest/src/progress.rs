//! A progress line on stderr every second while a run goes, and the report at its end.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cli::{Format, RunArgs};
use crate::report::Report;
use crate::stats::Stats;

/// The progress printer; stops when dropped.
pub struct Progress(Option<JoinHandle<()>>);

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Prints, every second: elapsed time, connections, operations sent and received (with the
/// last second's rate), errors and the last second's latency percentiles.
pub fn start(stats: Arc<Stats>, unit: &'static str, quiet: bool) -> Progress {
    if quiet {
        return Progress(None);
    }
    let task = tokio::spawn(async move {
        let t0 = Instant::now();
        let mut tick =
            tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (mut last_sent, mut last_recv, mut last_t) = (0u64, 0u64, t0);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
            let sent = Stats::get(&stats.sent);
            let recv = Stats::get(&stats.received);
            let h = stats.latency.take_interval();
            let lat = if h.is_empty() {
                String::new()
            } else {
                format!(
                    " | last 1s latency ms p50 {:.3} p99 {:.3} max {:.3}",
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                    h.max() as f64 / 1000.0
                )
            };
            let line = format!(
                "[{:>6.1}s] conns {} open ({} ok, {} failed) | {unit} sent {} ({:.0}/s) recv {} ({:.0}/s) | errors {}{lat}\n",
                now.duration_since(t0).as_secs_f64(),
                Stats::get(&stats.conns_open),
                Stats::get(&stats.conns_established),
                Stats::get(&stats.conns_failed),
                sent,
                (sent - last_sent) as f64 / dt,
                recv,
                (recv - last_recv) as f64 / dt,
                stats.errors.total(),
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
            (last_sent, last_recv, last_t) = (sent, recv, now);
        }
    });
    Progress(Some(task))
}

/// Writes the report: JSON to `--json FILE` if given, and the table (or JSON, with
/// `--format json`) to stdout.
pub fn emit(report: &Report, run: &RunArgs) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    if let Some(path) = &run.json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    match run.format {
        Format::Table => out.write_all(report.table().as_bytes())?,
        Format::Json => writeln!(out, "{json}")?,
    }
    out.flush()?;
    Ok(())
}
