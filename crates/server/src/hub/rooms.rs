//! Which rooms the hub keeps in memory, and the paged answers to `list` and `who` (issue 15
//! items 12 and 17).
//!
//! Only rooms in use are in memory: a room with members on some node (at most the users online
//! times [`crate::limits::MAX_ROOMS_PER_USER`]), an E2E room a member is in, and, for a short while, a room
//! just left empty ([`Retired`]). A room that empties leaves memory at once, whatever its
//! history or topic: the store has both. Nothing is loaded at startup; a room that is not in
//! memory is loaded when it is joined (or an event of the cluster's stream names it), its last
//! message id, topic and bots setting (`hub/bots.rs`) read from the store by index
//! ([`Store::room_state`]), on a connection of its own, under the hub lock.
//!
//! Ids never go backwards: the store has a forgotten room's last id once the bus has persisted
//! every event queued before the room was forgotten; until then the room's last id, topic and
//! bots setting wait in [`Retired`], which forgets an entry once the bus has flushed past it. So `Retired`
//! holds at most one entry per event queued and not yet flushed (the bus queue is bounded by
//! [`crate::bus::BUS_CAPACITY`]), plus entries not looked at since (pruned whenever it doubles).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use chatao_proto::{Member, Nick, RoomInfo, RoomName};

use super::{Hub, HubError, State};
use crate::limits::{LIST_PAGE, WHO_PAGE};
use crate::room::Room;
use crate::store::{RoomState, Store};

/// A forgotten room's last state, until the store surely has it.
#[derive(Debug, Clone)]
struct Retiree {
    last_id: u64,
    topic: Option<String>,
    /// Its bots were hidden (`hub/bots.rs`).
    bots_hidden: bool,
    /// `create` refuses the name (the room had history or a topic).
    remembered: bool,
    /// The bus sequence number when it was forgotten (`None`: not known, taken as the hub's
    /// sequence number at the next pruning, which is later, so safe).
    seq: Option<u64>,
}

/// Rooms forgotten recently, whose last id and topic the store may not have yet.
#[derive(Debug, Default)]
struct Retired {
    rooms: HashMap<RoomName, Retiree>,
    /// Prune when this many are held (doubles with what is left, at least [`PRUNE_AT`]).
    prune_at: usize,
}

/// The smallest size at which [`Retired`] is pruned.
pub(super) const PRUNE_AT: usize = 64;

impl Retired {
    /// A forgotten E2E room: ids continue from `last_id`; its name is free (`create` works).
    fn insert(&mut self, room: RoomName, last_id: u64) {
        let r = Retiree { last_id, topic: None, bots_hidden: false, remembered: false, seq: None };
        self.rooms.insert(room, r);
    }

    fn retire(&mut self, room: &Room, seq: u64) {
        let r = Retiree {
            last_id: room.last_id(),
            topic: room.topic.clone(),
            bots_hidden: room.bots_hidden,
            remembered: room.is_remembered(),
            seq: Some(seq),
        };
        self.rooms.insert(room.name.clone(), r);
    }

    /// Forgets what the store has for sure (every event up to `flushed` is persisted), when
    /// the map has doubled since the last time. `seq` is the hub's sequence number now.
    fn prune(&mut self, seq: u64, flushed: u64) {
        if self.rooms.len() < self.prune_at.max(PRUNE_AT) {
            return;
        }
        self.rooms.retain(|_, r| *r.seq.get_or_insert(seq) > flushed);
        self.prune_at = 2 * self.rooms.len();
    }

    fn len(&self) -> usize {
        self.rooms.len()
    }
}

/// The rooms in memory, in name order (for `list` pages), and those forgotten recently
/// ([`Retired`]): plain maps, with no store and no lock (what the store says comes in as an
/// argument), so the rules of what is in memory are unit-tested here.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    live: BTreeMap<RoomName, Room>,
    retired: Retired,
}

impl Rooms {
    pub(super) fn get(&self, name: &RoomName) -> Option<&Room> {
        self.live.get(name)
    }

    pub(super) fn get_mut(&mut self, name: &RoomName) -> Option<&mut Room> {
        self.live.get_mut(name)
    }

    pub(super) fn contains_key(&self, name: &RoomName) -> bool {
        self.live.contains_key(name)
    }

    /// Rooms in memory.
    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// Rooms remembered only until the store has their last state.
    pub(super) fn retired_len(&self) -> usize {
        self.retired.len()
    }

    /// The rooms in memory whose names sort after `after`, in name order.
    fn after(&self, after: Option<&RoomName>) -> impl Iterator<Item = (&RoomName, &Room)> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.live.range((from, Bound::Unbounded))
    }

    /// The room `name`, put in memory if it is not: from [`Retired`] if it was forgotten
    /// recently, else from what `stored` reads (a room never used starts at id 0 without a
    /// topic, its bots shown).
    pub(super) fn load(
        &mut self,
        name: &RoomName,
        cap: usize,
        stored: impl FnOnce() -> Result<RoomState, HubError>,
    ) -> Result<&mut Room, HubError> {
        if !self.live.contains_key(name) {
            let state = match self.retired.rooms.remove(name) {
                Some(r) => RoomState {
                    last_id: r.last_id,
                    topic: r.topic,
                    messages: false,
                    bots_hidden: r.bots_hidden,
                },
                None => stored()?,
            };
            let mut room = Room::new(name.clone(), state.last_id, state.topic, cap);
            room.bots_hidden = state.bots_hidden;
            self.live.insert(name.clone(), room);
        }
        self.live.get_mut(name).ok_or(HubError::StoreUnavailable)
    }

    /// [`Rooms::load`], or, when `stored` fails, the room new at id 0 without a topic (a
    /// cluster node's: its ids come from the stream).
    pub(super) fn load_or_empty(
        &mut self,
        name: &RoomName,
        cap: usize,
        stored: impl FnOnce() -> Result<RoomState, HubError>,
    ) -> &mut Room {
        // A failed load leaves nothing in memory: the entry below starts the room new.
        let _ = self.load(name, cap, stored);
        self.live.entry(name.clone()).or_insert_with(|| Room::new(name.clone(), 0, None, cap))
    }

    /// Takes `name` out of memory if nobody is in it; its last id and topic wait in
    /// [`Retired`] until the store has them. `seq` is the hub's sequence number now, `flushed`
    /// the last one the bus has persisted.
    pub(super) fn forget_if_empty(&mut self, name: &RoomName, seq: u64, flushed: u64) {
        if !self.live.get(name).is_some_and(Room::is_empty) {
            return;
        }
        if let Some(room) = self.live.remove(name) {
            self.retired.retire(&room, seq);
            self.retired.prune(seq, flushed);
        }
    }

    /// Takes an emptied E2E room out of memory: its ids continue from its last one, and its
    /// name is free for `create`.
    pub(super) fn forget_e2e(&mut self, name: &RoomName) {
        if let Some(room) = self.live.remove(name) {
            self.retired.insert(name.clone(), room.last_id());
        }
    }

    /// The topic of `name` when memory knows it (`None`: ask the store).
    pub(super) fn known_topic(&self, name: &RoomName) -> Option<Option<String>> {
        match (self.live.get(name), self.retired.rooms.get(name)) {
            (Some(r), _) => Some(r.topic.clone()),
            (None, Some(r)) => Some(r.topic.clone()),
            (None, None) => None,
        }
    }

    /// Whether `create` must refuse `name`, when memory knows (`None`: ask the store): a room
    /// in memory, or one forgotten recently that had history or a topic.
    pub(super) fn known_taken(&self, name: &RoomName) -> Option<bool> {
        if self.live.contains_key(name) {
            return Some(true);
        }
        self.retired.rooms.get(name).map(|r| r.remembered)
    }
}

/// What the store has of room `name`; a failure is logged and is `StoreUnavailable`.
fn read_room(store: &Store, name: &RoomName) -> Result<RoomState, HubError> {
    store.room_state(name).map_err(|cause| {
        tracing::error!(room = %name, %cause, "cannot read a room from the store");
        HubError::StoreUnavailable
    })
}

impl State {
    /// The room `name`, put in memory if it is not ([`Rooms::load`]), from the store if need be.
    pub(super) fn load_room(
        &mut self,
        store: &Store,
        name: &RoomName,
        cap: usize,
    ) -> Result<&mut Room, HubError> {
        self.rooms.load(name, cap, || read_room(store, name))
    }

    /// [`State::load_room`], or the room new and empty when the store cannot say
    /// ([`Rooms::load_or_empty`]; the failure is logged).
    pub(super) fn load_room_or_empty(
        &mut self,
        store: &Store,
        name: &RoomName,
        cap: usize,
    ) -> &mut Room {
        self.rooms.load_or_empty(name, cap, || read_room(store, name))
    }

    /// Takes `name` out of memory if nobody is in it on any node (an E2E room stays while its
    /// delivery list is not empty: `hub/e2e.rs` forgets it). Its last id and topic wait in
    /// [`Retired`] until the store has them.
    pub(super) fn forget_if_empty(&mut self, name: &RoomName) {
        if self.e2e.is_e2e(name) {
            return;
        }
        let flushed = self.bus.as_ref().map_or(0, |b| b.flushed_seq());
        self.rooms.forget_if_empty(name, self.seq, flushed);
    }

    /// The topic of `name`, in memory or not (`None` if the store cannot say).
    pub(super) fn topic_of(&self, store: &Store, name: &RoomName) -> Option<String> {
        match self.rooms.known_topic(name) {
            Some(topic) => topic,
            None => store.room_state(name).ok().and_then(|s| s.topic),
        }
    }

    /// Whether `create` must refuse `name`: a room in memory, or one with history or a topic
    /// (in [`Retired`] or the store). A store that cannot answer counts as taken.
    pub(super) fn room_exists(&self, store: &Store, name: &RoomName) -> bool {
        match self.rooms.known_taken(name) {
            Some(taken) => taken,
            None => store.room_state(name).map_or(true, |s| s.messages || s.topic.is_some()),
        }
    }
}

impl Hub {
    /// One page of the rooms with members, in name order: at most [`LIST_PAGE`] rooms whose
    /// names sort after `after`, and the name to ask after for the next page, if there is
    /// more. Copies one page under the lock (the rooms in memory are in a `BTreeMap`); the
    /// caller encodes it after.
    pub fn list(&self, after: Option<&RoomName>) -> (Vec<RoomInfo>, Option<RoomName>) {
        let st = self.lock();
        let mut rooms: Vec<RoomInfo> = st
            .rooms
            .after(after)
            .filter(|(_, r)| !r.is_empty())
            .take(LIST_PAGE + 1)
            .map(|(name, r)| RoomInfo {
                room: name.clone(),
                members: r.len() as u32,
                topic: r.topic.clone(),
                e2e: st.e2e.is_e2e(name),
            })
            .collect();
        drop(st);
        let next = if rooms.len() > LIST_PAGE {
            rooms.truncate(LIST_PAGE);
            rooms.last().map(|r| r.room.clone())
        } else {
            None
        };
        (rooms, next)
    }

    /// One page of the members of `room` (empty if it has none), in the order of their folded
    /// nicknames: at most [`WHO_PAGE`] after the nickname `after`; with the room's member count
    /// and the nickname to ask after, when the page is not the whole list.
    pub fn who(&self, room_name: &RoomName, after: Option<&str>) -> MembersPage {
        let mut st = self.lock();
        let Some(r) = st.rooms.get(room_name) else { return MembersPage::default() };
        let after = after.map(|a| Nick::parse(a).map(|n| n.folded()).unwrap_or_else(|_| a.into()));
        let mut keyed: Vec<(String, Member)> = Vec::new();
        let locals = r.member_ids().filter_map(|id| st.member(id));
        for m in locals.chain(st.remote_members(r)) {
            let folded = m.nick.folded();
            if after.as_ref().is_none_or(|a| folded > *a) {
                keyed.push((folded, m));
            }
        }
        one_per_person(&mut keyed);
        let total = r.len();
        if r.bots_hidden {
            keyed.retain(|(_, m)| !m.bot);
        }
        let mut marked: Vec<Member> = keyed.iter().map(|(_, m)| m.clone()).collect();
        st.mark_ops(self, room_name, &mut marked);
        for ((_, m), marked) in keyed.iter_mut().zip(marked) {
            m.op = marked.op;
        }
        drop(st);
        let more = keyed.len() > WHO_PAGE;
        if more {
            keyed.select_nth_unstable_by(WHO_PAGE, |a, b| a.0.cmp(&b.0));
            keyed.truncate(WHO_PAGE);
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let members: Vec<Member> = keyed.into_iter().map(|(_, m)| m).collect();
        let partial = more || after.is_some();
        MembersPage {
            next: if more { members.last().map(|m| m.nick.clone()) } else { None },
            total: partial.then_some(total as u32),
            members,
        }
    }

    /// Rooms in memory (with members, E2E rooms in use) and rooms remembered only until the
    /// store has their last state (for tests and diagnostics).
    pub fn rooms_in_memory(&self) -> (usize, usize) {
        let st = self.lock();
        (st.rooms.len(), st.rooms.retired_len())
    }
}

/// A page of a room's members ([`Hub::who`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MembersPage {
    pub members: Vec<Member>,
    /// The room's member count, when `members` is not all of them.
    pub total: Option<u32>,
    /// The nickname to ask after for the next page.
    pub next: Option<Nick>,
}

/// Keeps one entry per nickname (its skeleton, the key of each entry), the first, in place:
/// a person online on several sessions is listed once. The entry is a bot only if every
/// session of the person is quiet.
pub(super) fn one_per_person(keyed: &mut Vec<(String, Member)>) {
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut kept: Vec<(String, Member)> = Vec::with_capacity(keyed.len());
    for (folded, m) in keyed.drain(..) {
        match at.get(&folded) {
            Some(&i) => kept[i].1.bot &= m.bot,
            None => {
                at.insert(folded.clone(), kept.len());
                kept.push((folded, m));
            }
        }
    }
    *keyed = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::remote::RemoteId;

    fn name(s: &str) -> RoomName {
        RoomName::parse(s).unwrap()
    }

    fn stored(last_id: u64, topic: Option<&str>) -> Result<RoomState, HubError> {
        let topic = topic.map(str::to_owned);
        Ok(RoomState { last_id, messages: last_id > 0, topic, bots_hidden: false })
    }

    #[test]
    fn a_room_is_read_once_then_kept_while_someone_is_in_it() {
        let mut rooms = Rooms::default();
        let r = name("#rust");
        assert_eq!(rooms.load(&r, 8, || stored(41, Some("crabs"))).unwrap().last_id(), 41);
        rooms.get_mut(&r).unwrap().add_remote(RemoteId { node: 1, session: 1 }, true);
        let read_again = || -> Result<RoomState, HubError> { panic!("read the store again") };
        assert_eq!(rooms.load(&r, 8, read_again).unwrap().topic.as_deref(), Some("crabs"));
        rooms.forget_if_empty(&r, 10, 0);
        assert!(rooms.contains_key(&r), "a room with a member stays");
        assert_eq!(rooms.known_taken(&r), Some(true));
    }

    #[test]
    fn a_forgotten_room_comes_back_from_memory_until_the_store_surely_has_it() {
        let mut rooms = Rooms::default();
        let r = name("#ops");
        rooms.load(&r, 8, || stored(0, None)).unwrap().next_id();
        rooms.get_mut(&r).unwrap().topic = Some("deploys".into());
        rooms.forget_if_empty(&r, 5, 0);
        assert!(!rooms.contains_key(&r));
        assert_eq!(rooms.retired_len(), 1);
        assert_eq!(rooms.known_topic(&r), Some(Some("deploys".into())));
        assert_eq!(rooms.known_taken(&r), Some(true), "it had a message and a topic");
        // The store may not have its last id yet: memory answers, ids go on.
        let fail = || -> Result<RoomState, HubError> { Err(HubError::StoreUnavailable) };
        assert_eq!(rooms.load(&r, 8, fail).unwrap().last_id(), 1);
        assert_eq!(rooms.retired_len(), 0);
        assert_eq!(rooms.known_topic(&name("#never")), None, "ask the store");
    }

    #[test]
    fn forgotten_rooms_are_pruned_once_the_store_has_them_and_an_e2e_name_is_free() {
        let mut rooms = Rooms::default();
        let n = PRUNE_AT as u64;
        for i in 0..2 * n {
            let r = name(&format!("#r{i}"));
            rooms.load(&r, 8, || stored(0, None)).unwrap();
            // The bus has persisted the first half by the time the second is forgotten.
            rooms.forget_if_empty(&r, i + 1, if i < n { 0 } else { n });
        }
        assert_eq!(rooms.retired_len(), PRUNE_AT, "what the store has is forgotten");
        assert_eq!(rooms.known_taken(&name("#r0")), None, "ask the store");
        assert_eq!(rooms.known_taken(&name(&format!("#r{}", 2 * n - 1))), Some(false));
        let e2e = name("#sec");
        rooms.load(&e2e, 8, || stored(7, None)).unwrap();
        rooms.forget_e2e(&e2e);
        assert_eq!(rooms.known_taken(&e2e), Some(false), "create may use the name again");
        assert_eq!(rooms.load(&e2e, 8, || stored(0, None)).unwrap().last_id(), 7);
        let listed: Vec<&RoomName> = rooms.after(None).map(|(n, _)| n).collect();
        assert_eq!(listed, vec![&e2e]);
        assert_eq!(rooms.after(Some(&e2e)).count(), 0);
    }

    #[test]
    fn a_person_on_several_sessions_is_listed_once_and_a_bot_only_if_every_session_is() {
        let member = |nick: &str, bot: bool| {
            let nick = Nick::parse(nick).unwrap();
            let m = Member {
                nick: nick.clone(),
                fingerprint: chatao_proto::Fingerprint::example("A"),
                away: None,
                bot,
                op: false,
            };
            (nick.folded(), m)
        };
        let mut keyed = vec![
            member("alice", true),
            member("bob", false),
            member("Alice", false),
            member("bob", false),
        ];
        one_per_person(&mut keyed);
        let listed: Vec<(&str, bool)> =
            keyed.iter().map(|(_, m)| (m.nick.as_str(), m.bot)).collect();
        assert_eq!(listed, [("alice", false), ("bob", false)]);
    }
}
