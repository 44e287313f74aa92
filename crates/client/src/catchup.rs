//! Which room messages were already shown, so that a reconnection's catch-up shows each one
//! once: one per room, kept by the connection core ([`crate::core`]) that both modes drive.
//!
//! Outside a catch-up, ids only grow: anything at or below the last id seen is a duplicate.
//! During one (after a reconnect, until the expected history replays have ended), messages
//! above the last id seen before the loss may come more than once and out of order (the
//! server replays on join, the `history` answer overlaps it, live messages interleave), so
//! they are de-duplicated exactly by id.

use std::collections::{BTreeMap, BTreeSet};

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

    /// One more history replay is on its way (the last was a full page: more may follow).
    pub fn expect_another(&mut self) {
        if self.gap.is_some() {
            self.replays = self.replays.saturating_add(1);
        }
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

/// The most messages one `history` answer (or `join` with `since`) replays: an answer this
/// long may have more behind it, so the catch-up asks again from its last id.
pub const HISTORY_PAGE: u32 = 500;
/// Messages an ordered catch-up ([`Resume`]) holds back while it pages. Overflow policy: the
/// held messages are forgotten and one more page is asked for, which covers them (they were
/// received, so they are at or below the room's last id when that page is asked for).
pub const HELD_MAX: usize = 4096;

/// An ordered catch-up of one room (line mode: a bot must see a room's messages in id order):
/// from `printed` on, the answers to the client's own requests (`history`, or `join` with
/// `since`) are printed as they come, oldest first, page after page until one comes back
/// short of [`HISTORY_PAGE`]; everything else above `printed` meanwhile (the automatic join's
/// replay of the newest messages, live messages) is held, then printed in id order once the
/// pages have caught up with it. So each message after `printed` is printed once, in order.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Every message at or below this id was printed (or was before the catch-up began).
    pub printed: u64,
    /// Replays to come before the first answer to our requests (the default room's automatic
    /// join, whose replay the server sends before it reads anything from us).
    skip: u8,
    /// Held back, by id. At most [`HELD_MAX`].
    held: BTreeMap<u64, chatao_proto::ServerMsg>,
    /// Held messages were forgotten: one more page is needed.
    overflowed: bool,
}

/// What a [`Resume`] does with a room message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// Print it now.
    Print,
    /// Printed already.
    Duplicate,
    /// Held until the pages catch up.
    Held,
}

/// What a [`Resume`] does at the end of a replay.
#[derive(Debug, Clone, PartialEq)]
pub enum PageEnd {
    /// Not one of our pages (the automatic join's replay): nothing to do.
    Skipped,
    /// Ask for the next page, after this id.
    More(u64),
    /// Caught up: print these, in order; the catch-up is over.
    Done(Vec<chatao_proto::ServerMsg>),
}

impl Resume {
    /// A catch-up after `printed`, whose own requests' answers come after `skip` other replays.
    pub fn new(printed: u64, skip: u8) -> Resume {
        Resume { printed, skip, held: BTreeMap::new(), overflowed: false }
    }

    /// Message `id`, with `msg` to hold; `history`: replayed rather than live.
    pub fn see(&mut self, id: u64, history: bool, msg: &chatao_proto::ServerMsg) -> Resumed {
        if id <= self.printed {
            return Resumed::Duplicate;
        }
        if history && self.skip == 0 {
            // One of our pages: in order, from just after `printed`.
            self.printed = id;
            self.held.remove(&id);
            return Resumed::Print;
        }
        if self.held.len() >= HELD_MAX && !self.held.contains_key(&id) {
            self.held.clear();
            self.overflowed = true;
        }
        self.held.insert(id, msg.clone());
        Resumed::Held
    }

    /// A replay ended with `count` messages.
    pub fn replay_ended(&mut self, count: u32) -> PageEnd {
        if self.skip > 0 {
            self.skip -= 1;
            return PageEnd::Skipped;
        }
        if count >= HISTORY_PAGE || self.overflowed {
            self.overflowed = false;
            return PageEnd::More(self.printed);
        }
        let printed = self.printed;
        let held = std::mem::take(&mut self.held);
        let rest: Vec<_> =
            held.into_iter().filter(|(id, _)| *id > printed).map(|(_, m)| m).collect();
        if let Some(last) = rest.last().and_then(message_id) {
            self.printed = last;
        }
        PageEnd::Done(rest)
    }
}

fn message_id(msg: &chatao_proto::ServerMsg) -> Option<u64> {
    match msg {
        chatao_proto::ServerMsg::Message { id, .. } => Some(*id),
        _ => None,
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

    fn msg(id: u64, history: bool) -> chatao_proto::ServerMsg {
        chatao_proto::ServerMsg::Message {
            cid: None,
            room: chatao_proto::RoomName::lobby(),
            id,
            time: 0,
            from: chatao_proto::Nick::parse("bob").unwrap_or_else(|_| unreachable!()),
            kind: chatao_proto::MessageKind::Normal,
            text: String::new(),
            history,
        }
    }

    /// Issue 22: stored place 100, the room at 1,300 and live messages arriving: the join's
    /// replay (1,251..1,300) and the live ones are held, three pages (101..600, 601..1,100,
    /// 1,101..1,300 and the live 1,301 that page includes) print in order, then the rest held.
    #[test]
    fn an_ordered_catch_up_prints_every_message_after_its_place_once_in_order() {
        let mut r = Resume::new(100, 1);
        let mut printed = vec![];
        let feed = |r: &mut Resume, id: u64, history: bool, printed: &mut Vec<u64>| {
            if r.see(id, history, &msg(id, history)) == Resumed::Print {
                printed.push(id);
            }
        };
        for id in [90, 1251, 1300] {
            feed(&mut r, id, true, &mut printed);
        }
        assert_eq!(r.replay_ended(50), PageEnd::Skipped);
        feed(&mut r, 1301, false, &mut printed);
        for id in 101..=600 {
            feed(&mut r, id, true, &mut printed);
        }
        assert_eq!(r.replay_ended(500), PageEnd::More(600));
        feed(&mut r, 1302, false, &mut printed);
        for id in 601..=1100 {
            feed(&mut r, id, true, &mut printed);
        }
        assert_eq!(r.replay_ended(500), PageEnd::More(1100));
        for id in 1101..=1301 {
            feed(&mut r, id, true, &mut printed);
        }
        let PageEnd::Done(rest) = r.replay_ended(201) else { panic!("not done") };
        let rest: Vec<u64> = rest.iter().filter_map(message_id).collect();
        assert_eq!(rest, [1302]);
        printed.extend(rest);
        assert_eq!(printed, (101..=1302).collect::<Vec<_>>());
        assert_eq!(r.see(1302, false, &msg(1302, false)), Resumed::Duplicate);
    }

    #[test]
    fn an_ordered_catch_up_that_holds_too_much_forgets_it_and_asks_again() {
        let mut r = Resume::new(0, 0);
        for id in 1000..1000 + HELD_MAX as u64 + 1 {
            assert_eq!(r.see(id, false, &msg(id, false)), Resumed::Held);
        }
        assert!(r.held.len() <= HELD_MAX);
        assert_eq!(r.replay_ended(3), PageEnd::More(0), "a short page, but held ones were lost");
    }

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
