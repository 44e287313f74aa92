//! The server's wall clock for ban and mute expiry: the system time plus an offset that tests
//! advance, so durations are tested without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hub::now_millis;

/// Milliseconds since the Unix epoch, shifted by whatever [`Clock::advance`] added.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        now_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

/// "2h 5m", "45s", "3d 4h": a duration in its two largest units.
pub fn human(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = vec![];
    let mut rest = s;
    for (size, name) in units {
        if rest >= size && parts.len() < 2 {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            break;
        }
    }
    if parts.is_empty() { "0s".into() } else { parts.join(" ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone_and_durations_read_well() {
        let c = Clock::default();
        let d = c.clone();
        let before = d.now_ms();
        c.advance(Duration::from_secs(3600));
        assert!(d.now_ms() >= before + 3_600_000);
        assert_eq!(human(45_000), "45s");
        assert_eq!(human(7_500_000), "2h 5m");
        assert_eq!(human(3 * 86_400_000 + 4 * 3_600_000 + 5000), "3d 4h");
        assert_eq!(human(0), "0s");
    }
}
