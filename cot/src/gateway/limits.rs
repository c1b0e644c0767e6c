//! What one client may cost OTS: frames and bytes a second per session (token buckets), and
//! sessions at once per certificate CN. OTS is a Python server; one device sending as fast as it
//! can, or one identity opening hundreds of sessions, must not be able to starve it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::rate::TokenBucket;

/// What happens to a client's frames past its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// The values index `ListenerMetrics::rate_limited`.
pub enum LimitPolicy {
    /// Read no faster than the rate allows: nothing is lost, the client's own sends slow down
    /// (TCP backpressure), and its frames are read and parsed only as fast as the rate.
    Delay = 0,
    /// Drop the frames past the rate, counted.
    Drop = 1,
    /// Close the session.
    Close = 2,
}

impl LimitPolicy {
    /// The `action` label of `takgate_stream_rate_limited_total`.
    pub fn action(self) -> &'static str {
        match self {
            LimitPolicy::Delay => "delayed",
            LimitPolicy::Drop => "dropped",
            LimitPolicy::Close => "closed",
        }
    }
}

/// A stream listener's limits (framed modes). Zero turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionLimits {
    pub events_per_second: f64,
    pub events_burst: f64,
    pub bytes_per_second: f64,
    pub bytes_burst: f64,
    pub sessions_per_cn: usize,
    pub on_limit: LimitPolicy,
}

impl SessionLimits {
    /// No limit at all.
    pub const OFF: Self = Self {
        events_per_second: 0.0,
        events_burst: 0.0,
        bytes_per_second: 0.0,
        bytes_burst: 0.0,
        sessions_per_cn: 0,
        on_limit: LimitPolicy::Delay,
    };
}

/// One session's buckets, client to OTS.
#[derive(Debug)]
pub(super) struct Pace {
    events: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

/// The verdict on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    /// Past the rate under `drop` or `close`.
    Over,
}

impl Pace {
    pub(super) fn new(limits: &SessionLimits, now: Instant) -> Self {
        let bucket =
            |rate: f64, burst: f64| (rate > 0.0).then(|| TokenBucket::new(rate, burst, now));
        Self {
            events: bucket(limits.events_per_second, limits.events_burst),
            bytes: bucket(limits.bytes_per_second, limits.bytes_burst),
        }
    }

    pub(super) fn is_off(&self) -> bool {
        self.events.is_none() && self.bytes.is_none()
    }

    /// Accounts for one frame of `len` bytes. Under `delay` it always passes (the debt is paid
    /// by waiting before the next read: [`wait`](Self::wait)); otherwise it passes only if both
    /// buckets have room, and takes from neither if not.
    pub(super) fn frame(&mut self, len: usize, policy: LimitPolicy, now: Instant) -> Verdict {
        let len = len as f64;
        if policy == LimitPolicy::Delay {
            if let Some(b) = &mut self.events {
                b.take(1.0, now);
            }
            if let Some(b) = &mut self.bytes {
                b.take(len, now);
            }
            return Verdict::Pass;
        }
        let events_ok = self.events.as_mut().is_none_or(|b| b.try_take(1.0, now));
        if !events_ok {
            return Verdict::Over;
        }
        if self.bytes.as_mut().is_none_or(|b| b.try_take(len, now)) {
            Verdict::Pass
        } else {
            if let Some(b) = &mut self.events {
                b.refund(1.0);
            }
            Verdict::Over
        }
    }

    /// How long to wait before reading again, so that the session keeps to its rates.
    pub(super) fn wait(&self) -> Duration {
        let debt = |b: &Option<TokenBucket>| b.as_ref().map_or(Duration::ZERO, TokenBucket::debt);
        debt(&self.events).max(debt(&self.bytes))
    }
}

/// Sessions at once per certificate CN.
#[derive(Debug, Default)]
pub(super) struct CnSessions {
    open: Mutex<HashMap<String, usize>>,
}

/// Holds one of a CN's sessions; let go when the session ends.
#[derive(Debug)]
pub(super) struct CnSession<'a> {
    sessions: &'a CnSessions,
    cn: String,
}

impl CnSessions {
    /// One more session for `cn`, unless it has `max` already.
    pub(super) fn enter(&self, cn: &str, max: usize) -> Option<CnSession<'_>> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(cn.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(CnSession {
            sessions: self,
            cn: cn.to_owned(),
        })
    }
}

impl Drop for CnSession<'_> {
    fn drop(&mut self) {
        let mut open = self
            .sessions
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.cn) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.cn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(policy: LimitPolicy) -> SessionLimits {
        SessionLimits {
            events_per_second: 10.0,
            events_burst: 20.0,
            bytes_per_second: 1000.0,
            bytes_burst: 2000.0,
            sessions_per_cn: 2,
            on_limit: policy,
        }
    }

    #[test]
    fn drop_and_close_pass_the_burst_then_refuse_without_taking() {
        let t0 = Instant::now();
        let mut pace = Pace::new(&limits(LimitPolicy::Drop), t0);
        assert!((0..20).all(|_| pace.frame(10, LimitPolicy::Drop, t0) == Verdict::Pass));
        assert_eq!(pace.frame(10, LimitPolicy::Drop, t0), Verdict::Over);
        // Bytes: a frame larger than what is left is refused, and takes no event token.
        let mut pace = Pace::new(&limits(LimitPolicy::Close), t0);
        assert_eq!(pace.frame(1500, LimitPolicy::Close, t0), Verdict::Pass);
        assert_eq!(pace.frame(1000, LimitPolicy::Close, t0), Verdict::Over);
        assert_eq!(pace.frame(500, LimitPolicy::Close, t0), Verdict::Pass);
        assert_eq!(pace.wait(), Duration::ZERO);
    }

    #[test]
    fn delay_passes_everything_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut pace = Pace::new(&limits(LimitPolicy::Delay), t0);
        for _ in 0..30 {
            assert_eq!(pace.frame(10, LimitPolicy::Delay, t0), Verdict::Pass);
        }
        // 10 events past the burst of 20, at 10 a second.
        assert_eq!(pace.wait(), Duration::from_secs(1));
        assert_eq!(pace.frame(4700, LimitPolicy::Delay, t0), Verdict::Pass);
        // 5000 bytes against a burst of 2000 at 1000 a second: the bytes bound is the longer.
        assert_eq!(pace.wait(), Duration::from_secs(3));
    }

    #[test]
    fn no_limits_no_buckets() {
        assert!(Pace::new(&SessionLimits::OFF, Instant::now()).is_off());
    }

    #[test]
    fn sessions_per_cn_are_counted_and_released() {
        let sessions = CnSessions::default();
        let a = sessions.enter("alice", 2).unwrap();
        let b = sessions.enter("alice", 2).unwrap();
        assert!(sessions.enter("alice", 2).is_none());
        assert!(sessions.enter("bob", 2).is_some());
        drop(a);
        let c = sessions.enter("alice", 2).unwrap();
        drop((b, c));
        assert!(sessions.open.lock().unwrap().is_empty());
    }
}
