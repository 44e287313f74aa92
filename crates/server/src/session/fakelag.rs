//! Fakelag: a client over its token bucket is read more slowly, never refused.
//!
//! Every record the session reads is classified ([`Held`]) and, if it cannot be handled at once,
//! held in the session's [`Backlog`], in order. A charged record ([`crate::cmd::charged`]) at the
//! head waits for its token; an uncharged one (`ping`, `pong`, `quit`) at the head goes without
//! one, but never overtakes what is ahead of it. The session's lag timer wakes it when the next
//! token is due.
//!
//! Bounds (both written down in [`crate::limits`]):
//! - at most `rate_per_sec` x [`FAKELAG_BACKLOG_SECS`] records: a client that has built up that
//!   much stayed over the rate for that long, and the session ends with `bye` `rate_limited`,
//!   saying how many messages were waiting (they are not handled);
//! - at most [`FAKELAG_BACKLOG_BYTES`] bytes of records: past that the session stops reading
//!   the socket until the backlog has room (the client's writes wait in the kernel and then in
//!   the client), and goes on.
//!
//! Output budget ([`OutputBudget`], issue 15 item 14): every reply to the client's own request
//! is charged by its encoded size against a per-connection byte bucket. While the budget is
//! overdrawn, nothing the client sends is handled (charged or not, in order: it waits here like
//! a record without its token), so what a client can make the server send is bounded by the
//! budget, not by how fast it asks. A client that keeps asking while it is held builds up the
//! backlog, and ends with `bye` `rate_limited` at the same record bound as a message flooder.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chatao_proto::{ClientMsg, Limits, TokenBucket};

use crate::limits::{FAKELAG_BACKLOG_BYTES, FAKELAG_BACKLOG_SECS};

/// A byte bucket that may go into debt: a reply is charged after it is sent, whole, and the
/// client is then not read until the debt is paid back. See [`crate::limits::OUTPUT_BYTES_PER_SEC`].
#[derive(Debug)]
pub struct OutputBudget {
    /// Bytes refilled per second; 0: unlimited.
    per_sec: u64,
    burst: i64,
    /// Bytes available; negative while overdrawn.
    level: i64,
    last: Instant,
}

impl OutputBudget {
    /// A full budget.
    pub fn new(per_sec: u64, burst: u64, now: Instant) -> OutputBudget {
        let burst = i64::try_from(burst).unwrap_or(i64::MAX);
        OutputBudget { per_sec, burst, level: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        if self.per_sec == 0 || self.level >= self.burst {
            self.last = now;
            return;
        }
        let micros = now.saturating_duration_since(self.last).as_micros();
        let bytes = micros.saturating_mul(u128::from(self.per_sec)) / 1_000_000;
        if bytes == 0 {
            return;
        }
        // The time those bytes took, so that the fraction of a byte is not lost.
        let used = bytes.saturating_mul(1_000_000) / u128::from(self.per_sec);
        self.last += Duration::from_micros(u64::try_from(used).unwrap_or(u64::MAX));
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.level = self.level.saturating_add(bytes).min(self.burst);
    }

    /// Charges `bytes` just sent.
    pub fn charge(&mut self, bytes: usize, now: Instant) {
        if self.per_sec == 0 {
            return;
        }
        self.refill(now);
        self.level = self.level.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// How long until the budget is no longer overdrawn; `None` when it is not.
    pub fn overdrawn(&mut self, now: Instant) -> Option<Duration> {
        if self.per_sec == 0 {
            return None;
        }
        self.refill(now);
        if self.level >= 0 {
            return None;
        }
        let debt = u128::from(self.level.unsigned_abs());
        let micros = debt.saturating_mul(1_000_000).div_ceil(u128::from(self.per_sec));
        let wait = Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX));
        // At least a millisecond, so that a rounding of the wait to zero cannot spin.
        Some(wait.max(Duration::from_millis(1)))
    }
}

/// A record read from the client, classified as it arrived.
#[derive(Debug)]
pub enum Held {
    /// A whole record over [`crate::limits::MAX_RECORD_BYTES`]: refused with `too_long` and
    /// skipped, but charged like a message so that it cannot be repeated for free.
    Oversized,
    /// A decoded message.
    Msg(ClientMsg),
    /// A record that does not decode (the session ends with `bad_message` when it is reached).
    Bad(String),
}

impl Held {
    /// Whether handling it takes a token of the rate.
    pub fn charged(&self) -> bool {
        match self {
            Held::Oversized => true,
            Held::Msg(msg) => crate::cmd::charged(msg),
            Held::Bad(_) => false,
        }
    }
}

/// What the session should do next with its backlog.
#[derive(Debug)]
pub enum Next {
    /// Handle this record now (its token, if it needed one, is taken).
    Ready(Held),
    /// The head needs a token, due in this long.
    Wait(Duration),
    /// Nothing is held.
    Empty,
}

/// The records a session holds back, oldest first; see the module documentation.
#[derive(Debug)]
pub struct Backlog {
    queue: VecDeque<(Held, usize)>,
    bytes: usize,
    max_records: usize,
    /// What the client's replies cost; while overdrawn, the head waits.
    pub output: OutputBudget,
}

/// The backlog holds as many records as its bound allows.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    /// Records waiting, the one that did not fit included.
    pub waiting: usize,
}

impl Backlog {
    /// An empty backlog for a session announced `limits`.
    /// An empty backlog for a session announced `limits`, with a full output budget.
    pub fn new(limits: &Limits, output: OutputBudget) -> Backlog {
        let max_records =
            (limits.rate_per_sec as usize).saturating_mul(FAKELAG_BACKLOG_SECS as usize);
        Backlog { queue: VecDeque::new(), bytes: 0, max_records: max_records.max(1), output }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the session may read the socket: the held records' bytes are under
    /// [`FAKELAG_BACKLOG_BYTES`].
    pub fn may_read(&self) -> bool {
        self.bytes < FAKELAG_BACKLOG_BYTES
    }

    /// Takes a record just read (`len` bytes): `Ok(Some(held))` to handle it now (nothing is
    /// held and it needs no token or has one), `Ok(None)` when it was held, `Err` when the
    /// backlog is at its record bound (the session ends).
    pub fn arrive(
        &mut self,
        held: Held,
        len: usize,
        rate: &mut TokenBucket,
        now: Instant,
    ) -> Result<Option<Held>, Full> {
        if self.queue.is_empty()
            && self.output.overdrawn(now).is_none()
            && (!held.charged() || rate.try_take(now))
        {
            return Ok(Some(held));
        }
        if self.queue.len() >= self.max_records {
            return Err(Full { waiting: self.queue.len() + 1 });
        }
        self.bytes += len;
        self.queue.push_back((held, len));
        Ok(None)
    }

    /// The next record to handle, if its turn has come.
    pub fn next(&mut self, rate: &mut TokenBucket, now: Instant) -> Next {
        let Some((head, _)) = self.queue.front() else { return Next::Empty };
        if let Some(wait) = self.output.overdrawn(now) {
            return Next::Wait(wait);
        }
        if head.charged() && !rate.try_take(now) {
            // At least a millisecond, so that a rounding of the wait to zero cannot spin.
            return Next::Wait(rate.wait_time().max(Duration::from_millis(1)));
        }
        match self.queue.pop_front() {
            Some((held, len)) => {
                self.bytes -= len;
                if self.queue.is_empty() && self.queue.capacity() > 64 {
                    self.queue = VecDeque::new();
                }
                Next::Ready(held)
            }
            None => Next::Empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(n: u32) -> Held {
        Held::Msg(ClientMsg::Say { cid: None, room: "#lobby".into(), text: n.to_string() })
    }

    fn unlimited(now: Instant) -> OutputBudget {
        OutputBudget::new(0, 0, now)
    }

    fn text(h: &Held) -> String {
        match h {
            Held::Msg(ClientMsg::Say { text, .. }) => text.clone(),
            Held::Msg(ClientMsg::Ping { .. }) => "ping".into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn over_the_rate_records_wait_in_order_and_uncharged_ones_wait_behind_them() {
        let limits = Limits { max_text_bytes: 100, rate_per_sec: 2, burst: 1 };
        let t0 = Instant::now();
        let mut rate = TokenBucket::new(2, 1, t0);
        let mut b = Backlog::new(&limits, unlimited(t0));
        let first = b.arrive(say(1), 10, &mut rate, t0).unwrap();
        assert_eq!(first.as_ref().map(text), Some("1".into()), "a token: handled at once");
        assert!(b.arrive(say(2), 10, &mut rate, t0).unwrap().is_none(), "no token: held");
        let ping = Held::Msg(ClientMsg::Ping { token: 1 });
        assert!(b.arrive(ping, 10, &mut rate, t0).unwrap().is_none(), "behind a held one");
        let Next::Wait(wait) = b.next(&mut rate, t0) else { panic!("no token yet") };
        assert_eq!(wait, Duration::from_millis(500));
        let later = t0 + wait;
        let order: Vec<String> = std::iter::from_fn(|| match b.next(&mut rate, later) {
            Next::Ready(h) => Some(text(&h)),
            _ => None,
        })
        .collect();
        assert_eq!(order, ["2", "ping"], "the ping needed no token but kept its place");
        assert!(b.is_empty());
    }

    #[test]
    fn the_backlog_is_bounded_in_records_and_in_bytes() {
        let limits = Limits { max_text_bytes: 100, rate_per_sec: 1, burst: 1 };
        let t0 = Instant::now();
        let mut rate = TokenBucket::new(1, 1, t0);
        let mut b = Backlog::new(&limits, unlimited(t0));
        assert!(b.arrive(say(0), 1, &mut rate, t0).unwrap().is_some());
        for n in 0..FAKELAG_BACKLOG_SECS {
            assert!(b.arrive(say(n), 1, &mut rate, t0).unwrap().is_none());
        }
        let full = b.arrive(say(99), 1, &mut rate, t0).unwrap_err();
        assert_eq!(full, Full { waiting: FAKELAG_BACKLOG_SECS as usize + 1 });
        let mut b = Backlog::new(&Limits { rate_per_sec: 1000, ..limits }, unlimited(t0));
        assert!(b.may_read());
        b.arrive(Held::Oversized, FAKELAG_BACKLOG_BYTES, &mut rate, t0).unwrap();
        assert!(!b.may_read(), "a full backlog stops the reading, it ends nothing");
    }

    #[test]
    fn an_overdrawn_output_budget_holds_every_record_until_it_is_paid_back() {
        let limits = Limits { max_text_bytes: 100, rate_per_sec: 1000, burst: 100 };
        let t0 = Instant::now();
        let mut rate = TokenBucket::new(1000, 100, t0);
        // 1,000 bytes a second, a burst of 2,000.
        let mut b = Backlog::new(&limits, OutputBudget::new(1000, 2000, t0));
        assert!(b.arrive(say(1), 10, &mut rate, t0).unwrap().is_some());
        b.output.charge(1500, t0);
        assert!(b.arrive(say(2), 10, &mut rate, t0).unwrap().is_some(), "500 bytes left");
        // A reply larger than what is left still went out whole: 2,500 bytes of debt.
        b.output.charge(3000, t0);
        assert_eq!(b.output.overdrawn(t0), Some(Duration::from_millis(2500)));
        assert!(b.arrive(say(3), 10, &mut rate, t0).unwrap().is_none(), "overdrawn: held");
        let ping = Held::Msg(ClientMsg::Ping { token: 1 });
        assert!(b.arrive(ping, 10, &mut rate, t0).unwrap().is_none(), "uncharged too");
        let half = t0 + Duration::from_millis(1250);
        let Next::Wait(wait) = b.next(&mut rate, half) else { panic!("still overdrawn") };
        assert_eq!(wait, Duration::from_millis(1250), "paid back at 1,000 bytes a second");
        let paid = half + wait;
        assert_eq!(b.output.overdrawn(paid), None);
        let order: Vec<String> = std::iter::from_fn(|| match b.next(&mut rate, paid) {
            Next::Ready(h) => Some(text(&h)),
            _ => None,
        })
        .collect();
        assert_eq!(order, ["3", "ping"], "in order once paid back");
        // The budget refills up to its burst, never past it.
        let much_later = paid + Duration::from_secs(3600);
        b.output.charge(2000, much_later);
        assert_eq!(b.output.overdrawn(much_later), None);
        b.output.charge(1, much_later);
        assert_eq!(b.output.overdrawn(much_later), Some(Duration::from_millis(1)));
    }

    #[test]
    fn a_client_that_keeps_asking_while_overdrawn_reaches_the_record_bound() {
        let limits = Limits { max_text_bytes: 100, rate_per_sec: 2, burst: 100 };
        let t0 = Instant::now();
        let mut rate = TokenBucket::new(2, 1000, t0);
        let mut b = Backlog::new(&limits, OutputBudget::new(1, 10, t0));
        b.output.charge(1_000_000, t0);
        let max = 2 * FAKELAG_BACKLOG_SECS as usize;
        for n in 0..max {
            assert!(b.arrive(say(n as u32), 1, &mut rate, t0).unwrap().is_none());
        }
        let full = b.arrive(say(0), 1, &mut rate, t0).unwrap_err();
        assert_eq!(full, Full { waiting: max + 1 }, "bye rate_limited, as for a flooder");
    }
}
