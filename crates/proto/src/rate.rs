//! The meaning of the announced [`crate::Limits`]: a token bucket, `burst` messages at once,
//! then `rate_per_sec`. The server enforces it per connection; the client paces itself with the
//! same bucket, so a well-behaved client is never refused.

use std::time::{Duration, Instant};

/// Tokens are counted in millitokens so that refilling stays exact in integers.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: u64,
    per_sec: u64,
    tokens: u64,
    last: Instant,
}

const MILLI: u64 = 1000;

impl TokenBucket {
    /// A full bucket. A `rate_per_sec` of 0 means unlimited.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let capacity = u64::from(burst.max(1)) * MILLI;
        TokenBucket {
            capacity,
            per_sec: u64::from(rate_per_sec) * MILLI,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one; false means "over the rate".
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(1, now)
    }

    /// Takes `n` tokens if there are that many (all or none); false means "over the rate".
    pub fn try_take_n(&mut self, n: u32, now: Instant) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        let refill = (elapsed.as_micros() as u64).saturating_mul(self.per_sec) / 1_000_000;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(self.capacity);
            self.last = now;
        }
        let want = u64::from(n) * MILLI;
        if self.tokens >= want {
            self.tokens -= want;
            true
        } else {
            false
        }
    }

    /// How long until one token is available.
    pub fn wait_time(&self) -> Duration {
        if self.per_sec == 0 || self.tokens >= MILLI {
            return Duration::ZERO;
        }
        Duration::from_micros((MILLI - self.tokens) * 1_000_000 / self.per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_many_takes_all_or_none() {
        let now = Instant::now();
        let mut b = TokenBucket::new(10, 5, now);
        assert!(!b.try_take_n(6, now), "more than the burst");
        assert!(b.try_take_n(5, now), "nothing was taken by the refusal");
        assert!(!b.try_take_n(1, now));
        assert!(b.try_take_n(2, now + Duration::from_millis(200)), "refilled at 10/s");
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 3, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert_eq!(b.wait_time(), Duration::from_millis(500));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        assert!(!b.try_take(t0 + Duration::from_millis(600)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        assert!((0..10_000).all(|_| b.try_take(t0)));
    }
}
