//! Which room messages were already shown, so that a reconnection's catch-up shows each one
//! once: one per room, kept by the connection core ([`crate::core`]) that both modes drive.
//!
//! Outside a catch-up, ids only grow: anything at or below the last id seen is a duplicate.
//! During one (after a reconnect, until the expected history replays have ended), messages
//! above the last id seen before the loss may come more than once and out of order (the
//! server replays on join, the `history` answer overlaps it, live messages interleave), so
//! they are de-duplicated exactly by id.

use std::collections::BTreeSet;

/// Most ids a catch-up remembers exactly. Overflow policy (only a server that never ends its
/// catch-up gets there): the oldest is forgotten and the gap moves up to it, so an id at or
/// below it counts as shown.
pub const CAUGHT_MAX: usize = 4096;

/// The ids of one room's messages already shown.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The newest id shown: where catch-up starts after a reconnect.
    pub last_seen: Option<u64>,
    /// During a catch-up: `last_seen` when the connection was lost.
    pub gap: Option<u64>,
    /// Ids above `gap` already shown. Bounded by the catch-up: the server replays at most 500
    /// messages per request, and the set is cleared when the catch-up ends; and by
    /// [`CAUGHT_MAX`], for a server that never ends it.
    caught: BTreeSet<u64>,
    /// History replays still expected before the catch-up is over.
    replays: u8,
}

impl Seen {
    /// Records message `id`; false if it is already shown. Outside a catch-up that is anything
    /// at or below [`Seen::last_seen`]; during one, exactly the ids seen.
    pub fn see(&mut self, id: u64) -> bool {
        let fresh = match self.gap {
            Some(gap) if id > gap => self.caught.insert(id),
            _ => self.last_seen.is_none_or(|last| id > last),
        };
        if self.caught.len() > CAUGHT_MAX
            && let Some(oldest) = self.caught.pop_first()
        {
            // Everything up to the oldest id forgotten counts as shown.
            self.gap = Some(oldest);
        }
        if fresh {
            self.last_seen = self.last_seen.max(Some(id));
        }
        fresh
    }

    /// Whether message `id` was sent while we were away (so a replay of it is news).
    pub fn missed(&self, id: u64) -> bool {
        self.gap.is_some_and(|gap| id > gap)
    }

    /// Starts a catch-up after a reconnect: `replays` history replays are on their way.
    pub fn start_catch_up(&mut self, replays: u8) {
        self.gap = Some(self.last_seen.unwrap_or(0));
        self.caught.clear();
        self.replays = replays;
    }

    /// A history replay ended; after the last one expected, the catch-up is over.
    pub fn replay_ended(&mut self) {
        if self.replays > 0 {
            self.replays -= 1;
            if self.replays == 0 {
                self.gap = None;
                self.caught.clear();
            }
        }
    }

    /// Whether a catch-up is under way.
    pub fn catching_up(&self) -> bool {
        self.gap.is_some()
    }
}

/// Private messages already shown, by sender and client id. Private messages have no server id
/// and are not stored, so a server that crashed after delivering one and before remembering its
/// id delivers it again when the sender re-sends it (same id): the second copy is dropped here.
/// Bounded: the [`PRIVATE_SEEN`] most recent; overflow forgets the oldest (a re-send comes
/// within seconds of the first copy, long before thousands of other private messages).
#[derive(Debug, Clone, Default)]
pub struct PrivateSeen {
    order: std::collections::VecDeque<(String, u64)>,
    set: std::collections::HashSet<(String, u64)>,
}

/// How many private messages [`PrivateSeen`] remembers.
pub const PRIVATE_SEEN: usize = 4096;

impl PrivateSeen {
    /// Records the private message `cid` from `from` (compared case-insensitively, as
    /// nicknames are); false if it was already shown.
    pub fn see(&mut self, from: &str, cid: u64) -> bool {
        let key = (from.to_lowercase(), cid);
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() >= PRIVATE_SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(key.clone());
        self.set.insert(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_that_never_ends_remembers_a_bounded_number_of_ids() {
        let mut s = Seen::default();
        assert!(s.see(10));
        s.start_catch_up(1);
        for id in 11..11 + 2 * CAUGHT_MAX as u64 {
            assert!(s.see(id), "{id}");
        }
        assert_eq!(s.caught.len(), CAUGHT_MAX);
        // The newest ids are still known exactly; the forgotten ones count as shown.
        assert!(!s.see(10 + 2 * CAUGHT_MAX as u64));
        assert!(!s.see(11));
        assert!(s.see(11 + 2 * CAUGHT_MAX as u64));
    }

    #[test]
    fn a_private_message_seen_once_is_a_duplicate_and_the_memory_is_bounded() {
        let mut p = PrivateSeen::default();
        assert!(p.see("Bob", 7));
        assert!(!p.see("bob", 7), "same sender, same id");
        assert!(p.see("carol", 7), "another sender may pick the same id");
        for cid in 100..100 + PRIVATE_SEEN as u64 {
            p.see("dave", cid);
        }
        assert_eq!(p.set.len(), PRIVATE_SEEN);
        assert_eq!(p.order.len(), PRIVATE_SEEN);
        assert!(p.see("bob", 7), "the oldest was forgotten");
    }

    #[test]
    fn ids_at_or_below_the_last_seen_are_duplicates() {
        let mut s = Seen::default();
        assert!(s.see(5));
        assert!(!s.see(5));
        assert!(!s.see(3));
        assert!(s.see(6));
        assert_eq!(s.last_seen, Some(6));
    }

    #[test]
    fn a_catch_up_accepts_missed_ids_in_any_order_once() {
        let mut s = Seen::default();
        for id in [1, 2, 3] {
            assert!(s.see(id));
        }
        s.start_catch_up(2);
        // Replay of the last messages (4 and 5 were missed), a live 9, then the history
        // answer from 3 on: each id once.
        let shown: Vec<u64> =
            [2, 3, 4, 5, 9, 4, 5, 6, 7, 8].into_iter().filter(|id| s.see(*id)).collect();
        assert_eq!(shown, [4, 5, 9, 6, 7, 8]);
        assert!(shown.iter().all(|id| s.missed(*id)));
        assert_eq!(s.last_seen, Some(9));
        s.replay_ended();
        assert!(s.catching_up());
        s.replay_ended();
        assert!(!s.catching_up(), "caught up");
        assert!(!s.see(8));
        assert!(s.see(10));
    }
}
