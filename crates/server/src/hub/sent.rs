//! The client message ids ([`Cid`]) each key used recently, with the echo each one got: a
//! message sent again with the same id (after a lost connection, a crash, an `unconfirmed`
//! error) is answered with that first echo instead of becoming a second message.
//!
//! Bounded three ways ([`crate::limits`]): at most [`SENT_IDS_PER_KEY`] ids per key (its oldest
//! are forgotten first), at most [`SENT_IDS_TOTAL`] ids in all (the oldest of any key forgotten
//! first), and none older than [`SENT_IDS_WINDOW`]. A client keeps fewer messages than that
//! unacknowledged (its own bound), so an id it sends again is still remembered.
//!
//! Kept under the hub lock with the rest of the state; every operation is a few map lookups.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use chatao_proto::Cid;

use crate::limits::{SENT_IDS_PER_KEY, SENT_IDS_TOTAL, SENT_IDS_WINDOW};

/// Recent ids per key; see the module documentation for its bounds.
#[derive(Debug, Default)]
pub struct SentIds {
    /// (fingerprint, id) → the encoded echo, exactly as the sender first received it.
    echoes: HashMap<(String, Cid), Bytes>,
    /// Each key's ids, oldest first, for the per-key bound.
    by_key: HashMap<String, VecDeque<Cid>>,
    /// Every id with the time it was recorded (ms since the epoch), oldest first, for the total
    /// and time bounds. May hold ids the per-key bound already forgot (skipped when reached);
    /// trimmed to twice [`SENT_IDS_TOTAL`] so that those cannot pile up.
    order: VecDeque<(String, Cid, u64)>,
}

impl SentIds {
    /// The echo `fingerprint`'s message `cid` got, if it is remembered.
    pub fn echo(&self, fingerprint: &str, cid: Cid) -> Option<Bytes> {
        // The tuple key needs an owned String; ids are looked up once per message sent with
        // one, which is cheap next to encoding and delivering it.
        self.echoes.get(&(fingerprint.to_owned(), cid)).cloned()
    }

    /// Remembers that `fingerprint`'s message `cid` was accepted and echoed as `echo`, at
    /// `now_ms`. An id already remembered keeps its first echo.
    pub fn record(&mut self, fingerprint: &str, cid: Cid, echo: Bytes, now_ms: u64) {
        let key = (fingerprint.to_owned(), cid);
        if self.echoes.contains_key(&key) {
            return;
        }
        self.echoes.insert(key, echo);
        let ids = self.by_key.entry(fingerprint.to_owned()).or_default();
        ids.push_back(cid);
        if ids.len() > SENT_IDS_PER_KEY
            && let Some(old) = ids.pop_front()
        {
            self.echoes.remove(&(fingerprint.to_owned(), old));
        }
        self.order.push_back((fingerprint.to_owned(), cid, now_ms));
        self.expire(now_ms);
    }

    /// Forgets what is past the time window or over the total bound.
    pub fn expire(&mut self, now_ms: u64) {
        let window = SENT_IDS_WINDOW.as_millis() as u64;
        while let Some((fp, cid, at)) = self.order.front() {
            let too_old = now_ms.saturating_sub(*at) > window;
            let too_many =
                self.echoes.len() > SENT_IDS_TOTAL || self.order.len() > 2 * SENT_IDS_TOTAL;
            if !too_old && !too_many {
                break;
            }
            let (fp, cid) = (fp.clone(), *cid);
            self.order.pop_front();
            self.forget(&fp, cid);
        }
    }

    /// Forgets `fingerprint`'s message `cid` (also when the store could not write it, so it
    /// was not delivered: the same id sent again is a new message). Its place in the time
    /// order stays until it expires; expiring it then removes nothing, or the id's newer echo
    /// a little early.
    pub fn forget(&mut self, fingerprint: &str, cid: Cid) {
        if self.echoes.remove(&(fingerprint.to_owned(), cid)).is_none() {
            return;
        }
        if let Some(ids) = self.by_key.get_mut(fingerprint) {
            ids.retain(|c| *c != cid);
            if ids.is_empty() {
                self.by_key.remove(fingerprint);
            }
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.echoes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.echoes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(n: u64) -> Bytes {
        Bytes::from(format!("echo {n}\n"))
    }

    #[test]
    fn a_repeated_id_finds_its_first_echo_and_only_for_its_key() {
        let mut s = SentIds::default();
        s.record("SHA256:a", 7, echo(1), 1000);
        s.record("SHA256:a", 7, echo(2), 1001);
        assert_eq!(s.echo("SHA256:a", 7), Some(echo(1)));
        assert_eq!(s.echo("SHA256:b", 7), None, "another key's id 7 is another message");
        assert_eq!(s.echo("SHA256:a", 8), None);
    }

    #[test]
    fn each_key_keeps_its_latest_ids() {
        let mut s = SentIds::default();
        for cid in 0..(SENT_IDS_PER_KEY as u64 + 10) {
            s.record("SHA256:a", cid, echo(cid), 1000);
        }
        s.record("SHA256:b", 1, echo(1), 1000);
        assert_eq!(s.echo("SHA256:a", 9), None, "the oldest are forgotten first");
        assert!(s.echo("SHA256:a", 10).is_some());
        assert!(s.echo("SHA256:b", 1).is_some(), "another key's ids are not pushed out");
        assert_eq!(s.len(), SENT_IDS_PER_KEY + 1);
    }

    #[test]
    fn ids_are_forgotten_after_the_window_and_over_the_total() {
        let mut s = SentIds::default();
        let window = SENT_IDS_WINDOW.as_millis() as u64;
        s.record("SHA256:a", 1, echo(1), 1000);
        s.record("SHA256:a", 2, echo(2), 1000 + window);
        assert!(s.echo("SHA256:a", 1).is_some(), "exactly the window is still inside");
        s.expire(1001 + window);
        assert_eq!(s.echo("SHA256:a", 1), None);
        assert!(s.echo("SHA256:a", 2).is_some());
        let mut s = SentIds::default();
        let keys = SENT_IDS_TOTAL / SENT_IDS_PER_KEY + 2;
        for k in 0..keys {
            for cid in 0..SENT_IDS_PER_KEY as u64 {
                s.record(&format!("SHA256:{k}"), cid, echo(cid), 5000);
            }
        }
        assert_eq!(s.len(), SENT_IDS_TOTAL);
        assert_eq!(s.echo("SHA256:0", 0), None, "the oldest of all went first");
        assert!(s.echo(&format!("SHA256:{}", keys - 1), 0).is_some());
        assert!(s.order.len() <= 2 * SENT_IDS_TOTAL);
    }
}
