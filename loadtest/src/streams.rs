//! What `cot` and `ws` share: many long-lived clients that connect (with bounded
//! concurrency), wait for everyone, send on their own schedules, and read echoes.
//!
//! Phases: **setup** (every connection attempted; timed: handshakes/s), **send** (from "go"
//! for `--duration`, or until `--max-messages`), **drain** (until every message sent has come
//! back, at most `--drain`). Then every connection is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::schedule::Rate;
use crate::stats::{instant_from_nanos, Stats};

/// State shared by the clients of a run and the task that runs them.
pub struct Shared {
    pub stats: Arc<Stats>,
    /// Set when the measurement is over: what happens to connections after that is not an error.
    pub stopping: AtomicBool,
    /// Writers that finished their schedule.
    pub writers_done: AtomicU64,
    /// Woken when a writer finishes or an echo arrives while the run waits for them.
    pub wake: Notify,
    pub waiting: AtomicBool,
    /// Bounds connection attempts in flight.
    pub connect_slots: Semaphore,
}

impl Shared {
    pub fn new(stats: Arc<Stats>, connect_concurrency: usize) -> Self {
        Self {
            stats,
            stopping: AtomicBool::new(false),
            writers_done: AtomicU64::new(0),
            wake: Notify::new(),
            waiting: AtomicBool::new(false),
            connect_slots: Semaphore::new(connect_concurrency.max(1)),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Records a message that came back stamped with its intended and actual send times.
    pub fn echo(&self, now: Instant, intended_ns: u64, sent_ns: u64) {
        Stats::add(&self.stats.ok, 1);
        self.stats
            .latency
            .record(now.saturating_duration_since(instant_from_nanos(intended_ns)));
        self.stats
            .service
            .record(now.saturating_duration_since(instant_from_nanos(sent_ns)));
        if self.waiting.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    pub fn writer_done(&self) {
        self.writers_done.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// When client `i` of `n` sends first: spread evenly over one interval, so that N clients at
/// 1 message/s send one message every 1/N s rather than N at once.
pub fn phase(i: usize, n: usize, rate: Rate) -> Duration {
    match rate {
        Rate::Max => Duration::ZERO,
        Rate::PerSec(r) => Duration::from_secs_f64(i as f64 / n.max(1) as f64 / r),
    }
}

/// Waits for the go signal; `None` if the run was abandoned.
pub async fn wait_go(go: &mut watch::Receiver<Option<Instant>>) -> Option<Instant> {
    let r = go.wait_for(Option::is_some).await.ok()?;
    *r
}

/// How a run of stream clients went, in time.
pub struct Phases {
    pub setup: Duration,
    pub measured: Duration,
}

/// Runs the phases for clients already spawned: each sends on `connected` once its
/// connection attempt is over. Returns once the run is over, with every client task ended.
#[allow(clippy::too_many_arguments)]
pub async fn run_phases(
    shared: &Shared,
    mut connected: mpsc::UnboundedReceiver<()>,
    go: watch::Sender<Option<Instant>>,
    clients: usize,
    idle: bool,
    duration: Duration,
    drain: Duration,
    slack: Duration,
) -> Phases {
    let setup_start = Instant::now();
    for _ in 0..clients {
        if connected.recv().await.is_none() {
            break;
        }
    }
    let setup = setup_start.elapsed();
    let stats = &shared.stats;
    let writers = Stats::get(&stats.conns_established);
    let t0 = Instant::now();
    let _ = go.send(Some(t0));
    let end = t0 + duration;
    if idle {
        tokio::time::sleep_until(end).await;
    } else {
        // Writers stop at `end` (or when the message budget is spent); a writer stuck on a
        // full socket gets `slack` more.
        let hard = end + slack;
        while shared.writers_done.load(Ordering::Relaxed) < writers {
            if tokio::time::timeout_at(hard, shared.wake.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        let deadline = Instant::now() + drain;
        shared.waiting.store(true, Ordering::Relaxed);
        loop {
            let sent = Stats::get(&stats.sent);
            let ok = Stats::get(&stats.ok);
            // Nothing ever came back: not an echoing target, nothing to wait for.
            if ok >= sent || Stats::get(&stats.received) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, shared.wake.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    let measured = t0.elapsed();
    shared.stopping.store(true, Ordering::Relaxed);
    Phases { setup, measured }
}

/// Ends every client task and waits until they are gone (their connections closed).
pub async fn stop(tasks: &mut JoinSet<()>) {
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}
