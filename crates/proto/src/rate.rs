//! The meaning of the announced [`crate::Limits`]: a token bucket, `burst` messages at once,
//! then `rate_per_sec`. The server enforces it per connection; the client paces itself with the
//! same bucket, so a well-behaved client is never refused. The server's other allowances (pongs,
//! key package checks, connection attempts per address in `admission.rs`) are the same bucket.

use std::time::{Duration, Instant};

/// A token bucket kept as the time it will be full again (the generic cell rate algorithm,
/// GCRA): one `Instant` of state, exact for any rate whose token interval is a whole number of
/// nanoseconds (a rate of `n` a period rounds the interval down: at most a nanosecond a token
/// in the holder's favour).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Time one token takes to come back; zero means unlimited.
    interval: Duration,
    /// Tokens the bucket holds when full (at least 1).
    burst: u32,
    /// When the bucket will be full again; at or before now, it is full.
    full_at: Instant,
    /// The last time a take was asked for: what [`TokenBucket::wait_time`] counts from.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `rate_per_sec` of 0 means unlimited.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        TokenBucket::per(rate_per_sec, Duration::from_secs(1), burst, now)
    }

    /// A full bucket of `burst` tokens that gives back `count` tokens every `period`. A `count`
    /// of 0 means unlimited.
    pub fn per(count: u32, period: Duration, burst: u32, now: Instant) -> Self {
        let interval = if count == 0 { Duration::ZERO } else { period / count };
        TokenBucket { interval, burst: burst.max(1), full_at: now, last: now }
    }

    /// Takes one token if there is one; false means "over the rate".
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(1, now)
    }

    /// Takes `n` tokens if there are that many (all or none); false means "over the rate".
    pub fn try_take_n(&mut self, n: u32, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        self.last = self.last.max(now);
        let start = self.full_at.max(now);
        // Taken, the bucket would be this far from full: never more than it holds.
        let debt = (start - now).saturating_add(self.interval.saturating_mul(n));
        if debt > self.interval.saturating_mul(self.burst) {
            return false;
        }
        self.full_at = start + self.interval * n;
        true
    }

    /// How long after the last take asked for until one token is available.
    pub fn wait_time(&self) -> Duration {
        let debt = self.full_at.saturating_duration_since(self.last);
        (debt + self.interval).saturating_sub(self.interval.saturating_mul(self.burst))
    }

    /// Whether the bucket is full at `now` (forgetting it would change nothing).
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }

    /// When the bucket will be full again (at or before now: it is).
    pub fn full_at(&self) -> Instant {
        self.full_at
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
        assert_eq!(b.wait_time(), Duration::from_millis(400));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        assert!((0..10_000).all(|_| b.try_take(t0)));
        assert_eq!(b.wait_time(), Duration::ZERO);
    }

    #[test]
    fn a_rate_per_minute_gives_one_token_per_interval_and_says_when_it_is_full() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per(6, Duration::from_secs(60), 3, t0);
        assert!(b.is_full(t0));
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0 + Duration::from_millis(9_999)));
        assert!(b.try_take(t0 + Duration::from_secs(10)));
        assert_eq!(b.full_at(), t0 + Duration::from_secs(40));
        assert!(!b.is_full(t0 + Duration::from_secs(39)));
        assert!(b.is_full(t0 + Duration::from_secs(40)));
    }
}
