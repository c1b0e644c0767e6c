//! A token bucket: `rate` tokens a second, at most `burst` saved up. The one pacing rule of the
//! crate: stream sessions' event and byte limits, and reoriginate's certificate issuing.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` is clamped to at least one token a minute and `burst` to at least
    /// one token, so that every take is eventually granted.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(1.0 / 60.0),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes `n` tokens if they are there.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens whether or not they are there (the bucket may go into debt), and says
    /// how long until the debt is paid: the wait before the next take should be granted.
    pub fn take(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        self.debt()
    }

    /// Gives back `n` tokens taken by [`take`](Self::take) and not used after all.
    pub fn refund(&mut self, n: f64) {
        self.tokens = (self.tokens + n).min(self.burst);
    }

    /// How long until the bucket is out of debt (zero when it is not in debt).
    pub fn debt(&self) -> Duration {
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        assert!((0..5).all(|_| b.try_take(1.0, t0)));
        assert!(!b.try_take(1.0, t0));
        assert!(!b.try_take(1.0, t0 + Duration::from_millis(50)));
        assert!(b.try_take(1.0, t0 + Duration::from_millis(100)));
        // Saving up stops at the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..5).all(|_| b.try_take(1.0, later)));
        assert!(!b.try_take(1.0, later));
    }

    #[test]
    fn take_goes_into_debt_and_says_how_long_it_lasts() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 1000.0, t0);
        assert_eq!(b.take(400.0, t0), Duration::ZERO);
        assert_eq!(b.take(1600.0, t0), Duration::from_secs(1));
        assert_eq!(b.debt(), Duration::from_secs(1));
        b.refund(500.0);
        assert_eq!(b.debt(), Duration::from_millis(500));
        assert_eq!(b.take(0.0, t0 + Duration::from_millis(500)), Duration::ZERO);
    }
}
