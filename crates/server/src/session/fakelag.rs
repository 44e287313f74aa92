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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chatao_proto::{ClientMsg, Limits, TokenBucket};

use crate::limits::{FAKELAG_BACKLOG_BYTES, FAKELAG_BACKLOG_SECS};

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
}

/// The backlog holds as many records as its bound allows.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    /// Records waiting, the one that did not fit included.
    pub waiting: usize,
}

impl Backlog {
    /// An empty backlog for a session announced `limits`.
    pub fn new(limits: &Limits) -> Backlog {
        let max_records =
            (limits.rate_per_sec as usize).saturating_mul(FAKELAG_BACKLOG_SECS as usize);
        Backlog { queue: VecDeque::new(), bytes: 0, max_records: max_records.max(1) }
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
        if self.queue.is_empty() && (!held.charged() || rate.try_take(now)) {
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
        let mut b = Backlog::new(&limits);
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
        let mut b = Backlog::new(&limits);
        assert!(b.arrive(say(0), 1, &mut rate, t0).unwrap().is_some());
        for n in 0..FAKELAG_BACKLOG_SECS {
            assert!(b.arrive(say(n), 1, &mut rate, t0).unwrap().is_none());
        }
        let full = b.arrive(say(99), 1, &mut rate, t0).unwrap_err();
        assert_eq!(full, Full { waiting: FAKELAG_BACKLOG_SECS as usize + 1 });
        let mut b = Backlog::new(&Limits { rate_per_sec: 1000, ..limits });
        assert!(b.may_read());
        b.arrive(Held::Oversized, FAKELAG_BACKLOG_BYTES, &mut rate, t0).unwrap();
        assert!(!b.may_read(), "a full backlog stops the reading, it ends nothing");
    }
}
