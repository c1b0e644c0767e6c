//! The open-model scheduler.
//!
//! A fixed-rate run does not send "the next request when the last one is done" (a closed
//! model, which quietly stops sending while the server stalls and so hides the stall: the
//! coordinated-omission problem). Operation `i` has an intended start `start + i / rate`,
//! fixed in advance; whoever is free takes the next slot, waits for its time if it is still
//! ahead, and the latency recorded is from the *intended* start to completion. A server that
//! stalls for 50 ms at 100 requests/s therefore shows five late requests, not one.
//!
//! At `--rate max` the intended start of a slot is the moment it is claimed (a closed model,
//! which is what maximum throughput means); intended and actual latency then coincide.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::{ErrorKind, Stats};

/// Operations per second, or as fast as the target answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Max,
    PerSec(f64),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Self::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Self::PerSec(r)),
            _ => Err(format!(
                "{s:?} is not a rate: give operations per second (> 0) or \"max\""
            )),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Max => f.write_str("max"),
            Self::PerSec(r) => write!(f, "{r}"),
        }
    }
}

/// A count of operations shared by every schedule of a run (`--max-requests`,
/// `--max-messages`).
#[derive(Debug)]
pub struct Budget(AtomicU64);

impl Budget {
    pub fn new(max: Option<u64>) -> Self {
        Self(AtomicU64::new(max.unwrap_or(u64::MAX)))
    }

    /// Takes one operation; false once the budget is spent.
    pub fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// One operation's place in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub index: u64,
    pub intended: Instant,
}

/// Intended start times at a fixed rate from `start` until `end`, handed out in order to
/// whoever asks; bounded by a [`Budget`] too.
#[derive(Debug)]
pub struct Schedule {
    rate: Rate,
    start: Instant,
    end: Instant,
    next: AtomicU64,
    budget: Arc<Budget>,
    late_limit: Duration,
}

impl Schedule {
    pub fn new(rate: Rate, start: Instant, end: Instant, budget: Arc<Budget>) -> Self {
        Self {
            rate,
            start,
            end,
            next: AtomicU64::new(0),
            budget,
            late_limit: Duration::MAX,
        }
    }

    /// A slot that could only start more than `limit` after its intended start is not sent
    /// but counted as a timeout: it would have timed out anyway, and this bounds how long a
    /// backlog can run on after the end.
    pub fn with_late_limit(mut self, limit: Duration) -> Self {
        self.late_limit = limit;
        self
    }

    /// Whether `slot`, starting at `now`, is past the late limit.
    pub fn too_late(&self, slot: Slot, now: Instant) -> bool {
        now.saturating_duration_since(slot.intended) > self.late_limit
    }

    pub fn end(&self) -> Instant {
        self.end
    }

    /// The intended start of operation `index` at a fixed rate (`None` at `max`).
    pub fn intended(&self, index: u64) -> Option<Instant> {
        match self.rate {
            Rate::Max => None,
            Rate::PerSec(r) => Some(self.start + Duration::from_secs_f64(index as f64 / r)),
        }
    }

    /// The next slot, or `None` once the schedule has passed its end or the budget is spent.
    pub fn claim(&self) -> Option<Slot> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        // At a fixed rate, slots due before the end are handed out even when the end has
        // passed (a backlog is latency to report; the late limit bounds it); at `max` the
        // slot is due now, so the end stops it.
        // At `max` nothing is sent before the schedule's start.
        let intended = self
            .intended(index)
            .unwrap_or_else(|| Instant::now().max(self.start));
        if intended >= self.end || !self.budget.take() {
            return None;
        }
        Some(Slot { index, intended })
    }
}

/// How far ahead of a deadline [`wait_until`] stops sleeping and starts spinning: tokio's
/// timer wakes up to a millisecond late.
const SPIN_WINDOW: Duration = Duration::from_millis(1);

/// Waits until `t`. With `spin`, sleeps until a millisecond before and then yields in a loop,
/// so sends leave within microseconds of their intended time (at the cost of a busy core);
/// without, tokio's timer may be up to a millisecond late, which the latency from the
/// intended start then includes and the latency from the actual send does not.
pub async fn wait_until(t: Instant, spin: bool) {
    // A deadline already passed (always, at `max`) must not wait for the timer's next tick,
    // which tokio's sleep would.
    if Instant::now() >= t {
        return;
    }
    if !spin {
        tokio::time::sleep_until(t).await;
        return;
    }
    if let Some(early) = t.checked_sub(SPIN_WINDOW) {
        if early > Instant::now() {
            tokio::time::sleep_until(early).await;
        }
    }
    while Instant::now() < t {
        tokio::task::yield_now().await;
    }
}

/// One request/response operation, with whatever connection state it keeps.
pub trait Operation {
    /// Performs the operation for `slot`; returns when it was actually sent and how it ended.
    fn run(&mut self, slot: Slot) -> impl Future<Output = Outcome> + Send;
}

/// How one operation went.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// When the operation was actually written (after connecting, if it had to).
    pub sent: Instant,
    pub result: Result<(), ErrorKind>,
}

/// Runs `op` on the slots of `sched` until it is exhausted, recording into `stats`: for each
/// success the latency from the intended start and from the actual send; for each failure its
/// error kind.
pub async fn drive<O: Operation>(sched: &Schedule, op: &mut O, stats: &Stats, spin: bool) {
    while let Some(slot) = sched.claim() {
        if sched.too_late(slot, Instant::now()) {
            stats.error(ErrorKind::Timeout);
            continue;
        }
        wait_until(slot.intended, spin).await;
        let out = op.run(slot).await;
        let done = Instant::now();
        match out.result {
            Ok(()) => {
                Stats::add(&stats.ok, 1);
                stats
                    .latency
                    .record(done.saturating_duration_since(slot.intended));
                stats
                    .service
                    .record(done.saturating_duration_since(out.sent));
            }
            Err(kind) => stats.error(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake server: the first request stalls for 50 ms, every other takes 1 ms.
    struct Stalling {
        calls: u32,
    }

    impl Operation for Stalling {
        fn run(&mut self, _slot: Slot) -> impl Future<Output = Outcome> + Send {
            self.calls += 1;
            let first = self.calls == 1;
            async move {
                let sent = Instant::now();
                let took = if first { 50 } else { 1 };
                tokio::time::sleep(Duration::from_millis(took)).await;
                Outcome {
                    sent,
                    result: Ok(()),
                }
            }
        }
    }

    /// Drives a [`Stalling`] server on a schedule at `rate` for `length_ms` from now, with a
    /// budget of `max` operations and a late limit.
    async fn stalled(rate: Rate, length_ms: u64, max: Option<u64>, late_limit: Duration) -> Stats {
        let start = Instant::now();
        let end = start + Duration::from_millis(length_ms);
        let sched =
            Schedule::new(rate, start, end, Arc::new(Budget::new(max))).with_late_limit(late_limit);
        let stats = Stats::default();
        drive(&sched, &mut Stalling { calls: 0 }, &stats, false).await;
        stats
    }

    fn values(h: &hdrhistogram::Histogram<u64>) -> Vec<u64> {
        let mut v: Vec<u64> = h
            .iter_recorded()
            .flat_map(|b| std::iter::repeat_n(b.value_iterated_to(), b.count_at_value() as usize))
            .collect();
        v.sort_unstable();
        v
    }

    // Virtual time (the clock is paused and advances only when every task waits), so the
    // stall and the service times are exact and the test takes no real time.
    #[tokio::test(start_paused = true)]
    async fn latency_counts_from_the_intended_start() {
        // 100/s for 100 ms: slots at 0, 10, …, 90 ms.
        let stats = stalled(Rate::PerSec(100.0), 100, None, Duration::MAX).await;

        assert_eq!(Stats::get(&stats.ok), 10);
        // One connection: slot 0 ends at 50 ms; slots 1–4 (due at 10–40 ms) could only start
        // then and finish at 51–54 ms. Measured from their intended start they waited
        // 41, 32, 23 and 14 ms: the stall is visible in five samples, not one. Slot 5 (due at
        // 50 ms) starts at 54 and ends at 55; slots 6–9 run on time.
        let ms = |v: &[u64]| v.iter().map(|us| us / 1000).collect::<Vec<_>>();
        assert_eq!(
            ms(&values(&stats.latency.snapshot())),
            [1, 1, 1, 1, 5, 14, 23, 32, 41, 50]
        );
        // The service time (from the actual send) hides it: one slow request.
        assert_eq!(
            ms(&values(&stats.service.snapshot())),
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 50]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_past_the_late_limit_count_as_timeouts() {
        let late_limit = Duration::from_millis(25);
        let stats = stalled(Rate::PerSec(100.0), 100, None, late_limit).await;
        // Slot 0 stalls until 50 ms; then slots 1 and 2 are 40 and 30 ms late: timeouts, not
        // sent. Slot 3 (20 ms
        // late) goes, and the rest catch up.
        assert_eq!(stats.errors.get(ErrorKind::Timeout), 2);
        assert_eq!(Stats::get(&stats.ok), 8);
        let ms = |v: &[u64]| v.iter().map(|us| us / 1000).collect::<Vec<_>>();
        assert_eq!(
            ms(&values(&stats.latency.snapshot())),
            [1, 1, 1, 1, 3, 12, 21, 50]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn intended_starts_are_fixed_in_advance() {
        let start = Instant::now();
        let budget = Arc::new(Budget::new(None));
        let sched = Schedule::new(
            Rate::PerSec(1000.0),
            start,
            start + Duration::from_millis(50),
            budget.clone(),
        );
        let mut slots = Vec::new();
        // Claimed all at once (as busy workers catching up would), the times do not move.
        while let Some(s) = sched.claim() {
            slots.push(s);
        }
        assert_eq!(slots.len(), 50);
        for (i, s) in slots.iter().enumerate() {
            assert_eq!(s.index, i as u64);
            assert_eq!(s.intended - start, Duration::from_millis(i as u64));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_bounds_every_schedule_sharing_it() {
        let start = Instant::now();
        let budget = Arc::new(Budget::new(Some(7)));
        let end = start + Duration::from_secs(3600);
        let a = Schedule::new(Rate::PerSec(1.0), start, end, budget.clone());
        let b = Schedule::new(Rate::Max, start, end, budget.clone());
        let mut n = 0;
        while a.claim().is_some() {
            n += 1;
            if b.claim().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, 7);
        assert!(b.claim().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn max_rate_is_closed_loop() {
        let start = Instant::now();
        let stats = stalled(Rate::Max, 10_000, Some(5), Duration::MAX).await;
        assert_eq!(Stats::get(&stats.ok), 5);
        // Without intended times there is nothing to catch up: latency equals service time.
        assert_eq!(
            values(&stats.latency.snapshot()),
            values(&stats.service.snapshot())
        );
        assert_eq!(Instant::now() - start, Duration::from_millis(54));
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_ends_at_its_deadline_at_max_rate() {
        let stats = stalled(Rate::Max, 20, None, Duration::MAX).await;
        // The first call runs 50 ms, past the 20 ms end: nothing else is started.
        assert_eq!(Stats::get(&stats.ok), 1);
    }

    #[tokio::test]
    async fn a_passed_deadline_does_not_wait_for_the_timer() {
        use futures_util::FutureExt as _;
        // At `max` every slot is due the moment it is claimed. tokio rounds a sleep's deadline
        // up to its next millisecond tick, so sleeping until "now" would idle for up to 1 ms
        // per operation; wait_until must return at once.
        for spin in [false, true] {
            assert_eq!(wait_until(Instant::now(), spin).now_or_never(), Some(()));
            let past = Instant::now() - Duration::from_millis(5);
            assert_eq!(wait_until(past, spin).now_or_never(), Some(()));
        }
    }

    #[tokio::test]
    async fn spin_waits_until_the_deadline() {
        let t = Instant::now() + Duration::from_millis(3);
        wait_until(t, true).await;
        let late = Instant::now() - t;
        assert!(late < Duration::from_millis(50), "{late:?}");
        assert!(Instant::now() >= t);
    }

    #[test]
    fn rates_parse() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("250".parse::<Rate>(), Ok(Rate::PerSec(250.0)));
        assert_eq!("0.5".parse::<Rate>(), Ok(Rate::PerSec(0.5)));
        assert!("0".parse::<Rate>().is_err());
        assert!("-1".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
