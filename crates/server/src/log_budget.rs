//! A budget for the log lines strangers can cause: refused connections. Anyone can open
//! connections that fail (9,500 attempts once wrote 1.6 MB at `info`), so at most
//! [`REFUSAL_LOG_LINES`] of them a minute are logged at `info`; the rest go to `debug`, and the
//! next line allowed says how many were held back. Failed handshakes (no key proven) are at
//! `debug` only. The metrics count every attempt either way.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::limits::REFUSAL_LOG_LINES;

/// The window [`REFUSAL_LOG_LINES`] is counted over.
const WINDOW: Duration = Duration::from_secs(60);

/// Shared by every session of a server. A blocking (parking_lot) mutex: held for a few
/// arithmetic steps, never across an `.await`.
#[derive(Debug)]
pub struct LogBudget {
    inner: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    used: u32,
    held_back: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget { inner: Mutex::new(Window { start: None, used: 0, held_back: 0 }) }
    }
}

impl LogBudget {
    /// Asks to log one line at `info` at `now`. `Some(n)`: do, and say that `n` lines were
    /// held back since the last one; `None`: over budget, log it at `debug` at most.
    pub fn take(&self, now: Instant) -> Option<u64> {
        let mut w = self.inner.lock();
        if w.start.is_none_or(|start| now.saturating_duration_since(start) >= WINDOW) {
            w.start = Some(now);
            w.used = 0;
        }
        if w.used >= REFUSAL_LOG_LINES {
            w.held_back += 1;
            return None;
        }
        w.used += 1;
        Some(std::mem::take(&mut w.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_budget_lines_are_held_back_and_counted_on_the_next_allowed_one() {
        let budget = LogBudget::default();
        let t0 = Instant::now();
        for _ in 0..REFUSAL_LOG_LINES {
            assert_eq!(budget.take(t0), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(budget.take(t0 + Duration::from_secs(59)), None);
        }
        assert_eq!(budget.take(t0 + WINDOW), Some(500));
        assert_eq!(budget.take(t0 + WINDOW), Some(0));
    }
}
