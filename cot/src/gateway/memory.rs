//! One memory budget for every stream session of the process: what sessions may hold in
//! buffers (bytes read and not yet relayed, frames waiting for OTS) plus a fixed share per
//! session for its sockets, TLS state and task. Without it, 10,000 sessions each holding a
//! `max_frame` frame in progress would need gigabytes; with it, the process stays within what
//! the operator gave it: a new session is refused, a frame waiting for OTS is shed, a session
//! that would have to grow past the budget is closed; each counted.
//!
//! Charges are taken before memory is allocated, for the most an allocation can take (a buffer
//! that grows may double), and settled to what is held afterwards. So what is charged is never
//! less than what the buffers hold; it is more than the process's resident memory grows by,
//! since untouched pages of a buffer cost no RSS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;

/// A session's fixed share, by what the session holds besides its buffers: its resident memory
/// when idle (measured with the release build: about 16 KiB for plain TCP both ways, 23 KiB
/// with TLS ended here, 32 KiB re-originated; BENCHMARKS.md), plus about a quarter for what the
/// allocator keeps between the buffers that sessions take and give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCost {
    /// Two sockets and a task: plain and passthrough.
    Tcp,
    /// TLS ended here (terminate, proxy-protocol, raw).
    Tls,
    /// TLS ended here and begun again to OTS (reoriginate).
    TlsBothWays,
}

impl SessionCost {
    pub fn bytes(self) -> usize {
        match self {
            SessionCost::Tcp => 24 * 1024,
            SessionCost::Tls => 28 * 1024,
            SessionCost::TlsBothWays => 40 * 1024,
        }
    }
}

/// The budget, shared by every stream listener.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// Sessions admitted and not yet ended.
    sessions: AtomicUsize,
    /// The most charged at once since [`take_released`](Self::take_released) last asked.
    peak: AtomicUsize,
    /// Bytes of charges dropped (sessions and buffers ended) since then.
    dropped: AtomicUsize,
    /// Bytes charged (`takgate_stream_memory_used_bytes`).
    used_gauge: Option<IntGauge>,
}

impl MemoryBudget {
    /// `used`: the gauge of bytes charged; `budget`: the gauge that shows the limit.
    pub fn new(limit: usize, used: IntGauge, budget: &IntGauge) -> Arc<Self> {
        budget.set(i64::try_from(limit).unwrap_or(i64::MAX));
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            used_gauge: Some(used),
        })
    }

    /// No budget to speak of, and no gauges: for gateways whose memory is bounded elsewhere
    /// (tests of other things).
    pub fn unlimited() -> Arc<Self> {
        Arc::new(Self {
            limit: usize::MAX,
            used: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            used_gauge: None,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Admits a new session, charging its fixed share, if the budget has room for it and for
    /// the buffers of the sessions it already holds: new sessions stop at 7/8 of the budget, so
    /// that sessions already admitted can still read and relay.
    pub fn admit(self: &Arc<Self>, cost: SessionCost) -> Option<Charge> {
        let mut charge = self.charge();
        let ceiling = self.limit - self.limit / 8;
        if !charge.grow_to(cost.bytes(), ceiling) {
            return None;
        }
        self.sessions.fetch_add(1, Ordering::Relaxed);
        charge.session = true;
        Some(charge)
    }

    /// What one session's frames may take while they wait for OTS: an equal share of a quarter
    /// of the budget, so that sessions queueing for a stalled OTS cannot take the memory the
    /// others need to read.
    pub fn queue_share(&self) -> usize {
        self.limit / 4 / self.sessions.load(Ordering::Relaxed).max(1)
    }

    /// Whether new sessions are being refused, and why (for readiness).
    pub fn exhausted(&self) -> Option<String> {
        let used = self.used();
        let ceiling = self.limit - self.limit / 8;
        (used + SessionCost::Tcp.bytes() > ceiling).then(|| {
            format!(
                "stream memory budget exhausted: {used} of {} bytes charged; new sessions are refused",
                self.limit
            )
        })
    }

    /// A charge of nothing yet, to grow and shrink with a buffer.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
            session: false,
        }
    }

    fn take(&self, bytes: usize, ceiling: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= ceiling)
            });
        match taken {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                self.publish();
                true
            }
            Err(_) => false,
        }
    }

    /// What the allocator may now return to the system: what ended sessions and buffers gave
    /// back, and how far the charges have fallen from their highest point since the last call
    /// (buffers that grew for a burst and shrank again). Not every byte a buffer gives back: a
    /// relaying session takes and gives back a read buffer for every event, and the allocator
    /// hands those same chunks out again; trimming after each would only make the next
    /// allocations fault their pages back in (seen: 6,000 `madvise` calls from `malloc_trim` in
    /// 28 s of 2,000 events/s through steady reoriginate sessions).
    pub fn take_released(&self) -> usize {
        let used = self.used();
        let fallen = self.peak.swap(used, Ordering::Relaxed).saturating_sub(used);
        fallen + self.dropped.swap(0, Ordering::Relaxed)
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.publish();
    }

    fn publish(&self) {
        if let Some(gauge) = &self.used_gauge {
            gauge.set(i64::try_from(self.used.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        }
    }
}

/// Bytes charged to the budget on behalf of one session or buffer; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    held: usize,
    /// A session's share, counted among the sessions admitted.
    session: bool,
}

impl Charge {
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds `bytes`: grows only if the budget has room (false, and unchanged, if not),
    /// shrinks always.
    pub fn resize(&mut self, bytes: usize) -> bool {
        self.grow_to(bytes, self.budget.limit)
    }

    /// Holds `bytes`, whatever the budget says: for memory already allocated (a buffer can end
    /// up larger than its charge foresaw; the next growth then waits for room).
    pub fn settle(&mut self, bytes: usize) {
        if bytes > self.held {
            self.budget.take(bytes - self.held, usize::MAX);
        } else if bytes < self.held {
            self.budget.give_back(self.held - bytes);
        }
        self.held = bytes;
    }

    fn grow_to(&mut self, bytes: usize, ceiling: usize) -> bool {
        if bytes > self.held {
            if !self.budget.take(bytes - self.held, ceiling) {
                return false;
            }
        } else if bytes < self.held {
            self.budget.give_back(self.held - bytes);
        }
        self.held = bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
            self.budget.dropped.fetch_add(self.held, Ordering::Relaxed);
        }
        if self.session {
            self.budget.sessions.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> (Arc<MemoryBudget>, IntGauge) {
        let used = IntGauge::new("used", "used").unwrap();
        let limit_gauge = IntGauge::new("limit", "limit").unwrap();
        let b = MemoryBudget::new(limit, used.clone(), &limit_gauge);
        assert_eq!(limit_gauge.get(), limit as i64);
        (b, used)
    }

    #[test]
    fn charges_grow_within_the_budget_and_come_back_when_dropped() {
        let (b, gauge) = budget(100);
        let mut a = b.charge();
        assert!(a.resize(60));
        let mut c = b.charge();
        assert!(!c.resize(41), "60 + 41 is past 100");
        assert_eq!(c.held(), 0, "a refused growth leaves the charge as it was");
        assert!(c.resize(40));
        assert_eq!((b.used(), gauge.get()), (100, 100));
        assert!(a.resize(10), "shrinking always succeeds");
        assert_eq!(b.used(), 50);
        drop(a);
        drop(c);
        assert_eq!((b.used(), gauge.get()), (0, 0));
        assert_eq!(
            b.take_released(),
            100 + 50,
            "from the peak of 100 to nothing, and 10 and 40 in charges dropped"
        );
        assert_eq!(b.take_released(), 0);
    }

    #[test]
    fn what_is_taken_and_given_back_between_two_looks_is_not_released() {
        let (b, _) = budget(1 << 20);
        let session = b.admit(SessionCost::Tls).expect("room");
        assert_eq!(b.take_released(), 0, "growing releases nothing");
        // Every event of a relaying session: a read buffer taken and let go.
        let mut buffer = b.charge();
        for _ in 0..100 {
            assert!(buffer.resize(4096));
            buffer.resize(0);
        }
        assert_eq!(
            b.take_released(),
            4096,
            "only the peak above what is held now"
        );
        assert!(buffer.resize(4096));
        buffer.resize(0);
        drop(session);
        assert_eq!(
            b.take_released(),
            (SessionCost::Tls.bytes() + 4096) + SessionCost::Tls.bytes(),
            "from the peak to nothing, and the share of the session that ended"
        );
    }

    #[test]
    fn new_sessions_stop_at_seven_eighths_and_readiness_says_so() {
        let limit = 256 * 1024;
        let (b, _) = budget(limit);
        let mut sessions = Vec::new();
        while let Some(s) = b.admit(SessionCost::Tcp) {
            sessions.push(s);
        }
        // 224 KiB of 256 KiB: nine sessions of 24 KiB fit, a tenth would pass 7/8.
        assert_eq!(sessions.len(), 9);
        let why = b.exhausted().expect("refusing new sessions");
        assert!(why.contains("stream memory budget exhausted"), "{why}");
        // The last eighth is left for the buffers of the admitted sessions.
        let mut buffer = b.charge();
        assert!(buffer.resize(limit - 9 * 24 * 1024));
        sessions.pop();
        drop(buffer);
        assert!(b.exhausted().is_none());
        sessions.push(b.admit(SessionCost::Tcp).expect("room for one again"));
        assert!(
            b.admit(SessionCost::Tls).is_none(),
            "216 + 28 KiB is past 224"
        );
        // Waiting frames may take a quarter of the budget, shared by the nine sessions.
        assert_eq!(b.queue_share(), limit / 4 / 9);
        sessions.clear();
        assert_eq!(b.queue_share(), limit / 4);
    }
}
