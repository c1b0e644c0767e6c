//! What `cot` and `ws` share: many long-lived clients that connect (with bounded
//! concurrency), wait for everyone, send on their own schedules, and read echoes.
//!
//! Phases: **setup** (every connection attempted; timed: handshakes/s), an optional idle
//! **settle** (`--settle`, not measured), **send** (from "go"
//! for `--duration`, or until `--max-messages`), **drain** (until every message sent has come
//! back, at most `--drain`). Then every connection is dropped.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{RunArgs, StreamArgs};
use crate::report::{Report, RunInfo};
use crate::schedule::{wait_until, Budget, Rate, Schedule, Slot};
use crate::stats::{instant_from_nanos, ErrorKind, Stats};

/// How long before the first send the clients are told when sending starts.
const GO_LEAD: Duration = Duration::from_millis(250);

/// How the clients of a run connect and send.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: usize,
    pub rate: Rate,
    /// Open the connections and hold them without sending.
    pub idle: bool,
    pub stream: StreamArgs,
    pub duration: Duration,
    pub timeout: Duration,
    pub spin: bool,
    /// No progress lines.
    pub quiet: bool,
}

impl Plan {
    pub fn new(clients: usize, rate: Rate, idle: bool, stream: &StreamArgs, run: &RunArgs) -> Self {
        Self {
            clients,
            rate,
            idle,
            stream: stream.clone(),
            duration: run.duration,
            timeout: run.timeout,
            spin: run.spin,
            quiet: run.quiet,
        }
    }

    /// The report's settings that every stream run has.
    pub fn settings(&self) -> BTreeMap<String, serde_json::Value> {
        let mut s = BTreeMap::from([
            ("clients".into(), self.clients.into()),
            ("rate_per_client".into(), self.rate.to_string().into()),
            ("duration_s".into(), self.duration.as_secs_f64().into()),
            (
                "max_messages".into(),
                self.stream
                    .max_messages
                    .map_or(serde_json::Value::Null, Into::into),
            ),
            (
                "connect_concurrency".into(),
                self.stream.connect_concurrency.into(),
            ),
            ("settle_s".into(), self.stream.settle.as_secs_f64().into()),
        ]);
        if self.rate == Rate::Max {
            s.insert("window".into(), self.stream.window.into());
        }
        s
    }
}

/// State shared by the clients of a run and the task that runs them.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub plan: Plan,
    budget: Arc<Budget>,
    /// Set when the measurement is over: what happens to connections after that is not an error.
    stopping: AtomicBool,
    /// Writers that finished their schedule.
    writers_done: AtomicU64,
    /// Woken when a writer finishes or an echo arrives while the run waits for them.
    wake: Notify,
    waiting: AtomicBool,
    /// Bounds connection attempts in flight.
    connect_slots: Semaphore,
}

impl Shared {
    pub fn new(plan: Plan) -> Self {
        Self {
            stats: Arc::new(Stats::default()),
            budget: Arc::new(Budget::new(plan.stream.max_messages)),
            stopping: AtomicBool::new(false),
            writers_done: AtomicU64::new(0),
            wake: Notify::new(),
            waiting: AtomicBool::new(false),
            connect_slots: Semaphore::new(plan.stream.connect_concurrency.max(1)),
            plan,
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Records a message that came back stamped with its intended and actual send times.
    fn echo(&self, now: Instant, intended_ns: u64, sent_ns: u64) {
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

    fn writer_done(&self) {
        self.writers_done.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// A client's place in the run's phases.
pub struct Start {
    connected: mpsc::UnboundedSender<()>,
    go: watch::Receiver<Option<Instant>>,
}

impl Start {
    /// Opens the connection with `connect` (within the run's bound on attempts in flight),
    /// then waits for everyone else's: the connection and the instant sending starts, or
    /// `None` if the attempt failed or the run was abandoned.
    pub async fn connect<T>(
        mut self,
        shared: &Shared,
        connect: impl Future<Output = Option<T>>,
    ) -> Option<(T, Instant)> {
        let conn = {
            let _slot = shared.connect_slots.acquire().await;
            connect.await
        };
        let _ = self.connected.send(());
        let conn = conn?;
        let go = self.go.wait_for(Option::is_some).await.ok()?;
        Some((conn, (*go)?))
    }
}

/// One client's connection, seen by its reader and its writer alike.
pub struct Link<'a> {
    shared: &'a Shared,
    client: usize,
    failed: AtomicBool,
    /// At `--rate-per-client max`, messages that may still be sent before an echo comes back.
    window: Semaphore,
}

impl<'a> Link<'a> {
    pub fn new(shared: &'a Shared, client: usize) -> Self {
        Self {
            shared,
            client,
            failed: AtomicBool::new(false),
            window: Semaphore::new(shared.plan.stream.window.max(1)),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Counts the connection's failure once, whichever half notices it first, and none once
    /// the run is stopping.
    pub fn fail(&self, kind: ErrorKind) {
        if !self.shared.stopping() && !self.failed.swap(true, Ordering::Relaxed) {
            self.shared.stats.error(kind);
        }
    }

    /// A message that came back stamped by `client` with its intended and actual send times.
    pub fn echo(&self, now: Instant, client: u32, intended_ns: u64, sent_ns: u64) {
        self.shared.echo(now, intended_ns, sent_ns);
        if client as usize == self.client && self.shared.plan.rate == Rate::Max {
            self.window.add_permits(1);
        }
    }

    /// The writer's pacing from `go` on.
    pub fn pacer(&self, go: Instant) -> Pacer<'_> {
        let plan = &self.shared.plan;
        let end = go + plan.duration;
        Pacer {
            link: self,
            sched: Schedule::new(
                plan.rate,
                go + phase(self.client, plan.clients, plan.rate),
                end,
                self.shared.budget.clone(),
            ),
            end,
        }
    }
}

/// A writer's schedule. Dropping it tells the run that this writer is done.
pub struct Pacer<'a> {
    link: &'a Link<'a>,
    sched: Schedule,
    end: Instant,
}

impl Pacer<'_> {
    /// Waits for the next message's turn (its slot, and at `max` room in the window): the slot
    /// and the instant it is sent; `None` when the schedule is over or the connection failed.
    pub async fn next(&self) -> Option<(Slot, Instant)> {
        let plan = &self.link.shared.plan;
        if plan.rate == Rate::Max {
            match tokio::time::timeout_at(self.end, self.link.window.acquire()).await {
                Ok(Ok(p)) => p.forget(),
                _ => return None,
            }
        }
        let slot = self.sched.claim()?;
        wait_until(slot.intended, plan.spin).await;
        if self.link.failed() {
            return None;
        }
        Some((slot, Instant::now()))
    }

    /// Sends one message of `bytes` within the run's timeout and counts it; on failure counts
    /// the connection's failure (`kind` sorts the error) and returns false.
    pub async fn send<E>(
        &self,
        bytes: usize,
        send: impl Future<Output = Result<(), E>>,
        kind: impl FnOnce(&E) -> ErrorKind,
    ) -> bool {
        let stats = &self.link.shared.stats;
        match tokio::time::timeout(self.link.shared.plan.timeout, send).await {
            Ok(Ok(())) => {
                Stats::add(&stats.sent, 1);
                Stats::add(&stats.bytes_sent, bytes as u64);
                true
            }
            Ok(Err(e)) => {
                self.link.fail(kind(&e));
                false
            }
            Err(_) => {
                self.link.fail(ErrorKind::Timeout);
                false
            }
        }
    }
}

impl Drop for Pacer<'_> {
    fn drop(&mut self) {
        self.link.shared.writer_done();
    }
}

/// When client `i` of `n` sends first: spread evenly over one interval, so that N clients at
/// 1 message/s send one message every 1/N s rather than N at once.
fn phase(i: usize, n: usize, rate: Rate) -> Duration {
    match rate {
        Rate::Max => Duration::ZERO,
        Rate::PerSec(r) => Duration::from_secs_f64(i as f64 / n.max(1) as f64 / r),
    }
}

/// How a run of stream clients went, in time.
pub struct Phases {
    pub setup: Duration,
    pub measured: Duration,
    /// Connections still open when the measurement ended.
    pub open_at_end: u64,
}

impl Phases {
    /// The run's report: `settings` are the plan's and the mode's own.
    pub fn report(
        &self,
        mode: &'static str,
        target: String,
        started_at: SystemTime,
        settings: BTreeMap<String, serde_json::Value>,
        stats: &Stats,
    ) -> Report {
        let mut report = Report::build(
            RunInfo {
                mode,
                unit: "messages",
                target,
                started_at,
                settings,
                elapsed_s: self.measured.as_secs_f64(),
                setup_phase_s: self.setup.as_secs_f64(),
            },
            stats,
        );
        report.connections.open_at_end = self.open_at_end;
        report
    }
}

/// Runs `shared.plan.clients` clients, client `i` being `client(i, start)`: through setup,
/// send and drain. Returns once the run is over, with every client task ended.
pub async fn run_clients<F, Fut>(shared: &Shared, client: F) -> Phases
where
    F: Fn(usize, Start) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let plan = &shared.plan;
    let progress = crate::progress::start(shared.stats.clone(), "messages", plan.quiet);
    let (go_tx, go_rx) = watch::channel(None);
    let (conn_tx, mut connected) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for i in 0..plan.clients {
        tasks.spawn(client(
            i,
            Start {
                connected: conn_tx.clone(),
                go: go_rx.clone(),
            },
        ));
    }
    drop(conn_tx);

    let setup_start = Instant::now();
    for _ in 0..plan.clients {
        if connected.recv().await.is_none() {
            break;
        }
    }
    let setup = setup_start.elapsed();
    if !plan.idle && !plan.stream.settle.is_zero() {
        tokio::time::sleep(plan.stream.settle).await;
    }
    let stats = &shared.stats;
    let writers = Stats::get(&stats.conns_established);
    // "go" is announced ahead of the first send, so that every client task has woken and
    // armed its first timer before any send is due: announced at the instant itself, waking
    // 2,000 clients made the run's first ~100 ms of sends late, which was the p99 of a 4 s
    // cot-latency-2000 run (direct: 12-23 ms; 4 ms over 16 s).
    let t0 = Instant::now() + GO_LEAD;
    let _ = go_tx.send(Some(t0));
    let end = t0 + plan.duration;
    if plan.idle {
        tokio::time::sleep_until(end).await;
    } else {
        // Writers stop at `end` (or when the message budget is spent); a writer stuck on a
        // full socket gets a timeout more.
        let hard = end + plan.timeout;
        while shared.writers_done.load(Ordering::Relaxed) < writers {
            if tokio::time::timeout_at(hard, shared.wake.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        let deadline = Instant::now() + plan.stream.drain;
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
    let open_at_end = Stats::get(&stats.conns_open);
    // Every client ends now, its connections closed.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(progress);
    Phases {
        setup,
        measured,
        open_at_end,
    }
}
