//! The text every bench message carries: who sent it, its number in that sender's stream, and
//! when it was sent, so that any receiver can account for it and time it with nothing but the
//! text. Both targets (Chatao and IRC) carry the same text, so they move the same bytes.
//!
//! Format: `b SENDER SEQ MICROS ` then `.` up to the requested size. Times are microseconds on
//! one monotonic clock ([`now_us`]) shared by every client of the bench process.

use std::sync::OnceLock;
use std::time::Instant;

/// Smallest text the format fits in with room to spare (the numbers take up to ~30 bytes).
pub const MIN_SIZE: usize = 40;

/// What a message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending client's index among the senders.
    pub sender: u32,
    /// The message's number in its sender's stream, from 0.
    pub seq: u32,
    /// When it was handed to the sender's connection, in [`now_us`] time.
    pub sent_us: u64,
}

/// Microseconds since the bench process first asked (one clock for every client).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The text for `stamp`, padded with `.` to `size` bytes (or a little longer if `size` is
/// below what the numbers need).
pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut text = format!("b {} {} {} ", stamp.sender, stamp.seq, stamp.sent_us);
    let pad = size.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('.', pad));
    text
}

/// The stamp in `text`; `None` for text the bench did not write.
pub fn decode(text: &str) -> Option<Stamp> {
    let mut fields = text.split(' ');
    if fields.next()? != "b" {
        return None;
    }
    let sender = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let sent_us = fields.next()?.parse().ok()?;
    Some(Stamp { sender, seq, sent_us })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_at_the_requested_size() {
        let s = Stamp { sender: 9, seq: 4_000_000_000, sent_us: u64::MAX };
        let text = encode(s, 128);
        assert_eq!(text.len(), 128);
        assert_eq!(decode(&text), Some(s));
        let short = encode(s, 0);
        assert_eq!(decode(&short), Some(s));
        assert!(!short.contains(".."));
    }

    #[test]
    fn foreign_text_is_not_a_stamp() {
        assert_eq!(decode("hello there"), None);
        assert_eq!(decode("b 1 two 3"), None);
        assert_eq!(decode("b 1 2"), None);
        assert_eq!(decode(""), None);
    }

    #[test]
    fn the_clock_does_not_go_back() {
        let a = now_us();
        let b = now_us();
        assert!(b >= a);
    }
}
