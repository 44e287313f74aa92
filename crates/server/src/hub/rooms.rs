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

use std::collections::HashMap;
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
pub(super) struct Retired {
    rooms: HashMap<RoomName, Retiree>,
    /// Prune when this many are held (doubles with what is left, at least [`PRUNE_AT`]).
    prune_at: usize,
}

/// The smallest size at which [`Retired`] is pruned.
pub(super) const PRUNE_AT: usize = 64;

impl Retired {
    /// A forgotten E2E room: ids continue from `last_id`; its name is free (`create` works).
    pub(super) fn insert(&mut self, room: RoomName, last_id: u64) {
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

    pub(super) fn len(&self) -> usize {
        self.rooms.len()
    }
}

impl State {
    /// The room `name`, put in memory if it is not: from [`Retired`] if it was forgotten
    /// recently, else from the store (a room never used starts at id 0 without a topic, its
    /// bots shown).
    pub(super) fn load_room(
        &mut self,
        store: &Store,
        name: &RoomName,
        cap: usize,
    ) -> Result<&mut Room, HubError> {
        if !self.rooms.contains_key(name) {
            let state = match self.retired.rooms.remove(name) {
                Some(r) => RoomState {
                    last_id: r.last_id,
                    topic: r.topic,
                    messages: false,
                    bots_hidden: r.bots_hidden,
                },
                None => store.room_state(name).map_err(|cause| {
                    tracing::error!(room = %name, %cause, "cannot read a room from the store");
                    HubError::StoreUnavailable
                })?,
            };
            let mut room = Room::new(name.clone(), state.last_id, state.topic, cap);
            room.bots_hidden = state.bots_hidden;
            self.rooms.insert(name.clone(), room);
        }
        self.rooms.get_mut(name).ok_or(HubError::StoreUnavailable)
    }

    /// Takes `name` out of memory if nobody is in it on any node (an E2E room stays while its
    /// delivery list is not empty: `hub/e2e.rs` forgets it). Its last id and topic wait in
    /// [`Retired`] until the store has them.
    pub(super) fn forget_if_empty(&mut self, name: &RoomName) {
        if self.e2e.is_e2e(name) || !self.rooms.get(name).is_some_and(Room::is_empty) {
            return;
        }
        if let Some(room) = self.rooms.remove(name) {
            let seq = self.seq;
            self.retired.retire(&room, seq);
            let flushed = self.bus.as_ref().map_or(0, |b| b.flushed_seq());
            self.retired.prune(seq, flushed);
        }
    }

    /// The topic of `name`, in memory or not (`None` if the store cannot say).
    pub(super) fn topic_of(&self, store: &Store, name: &RoomName) -> Option<String> {
        if let Some(r) = self.rooms.get(name) {
            return r.topic.clone();
        }
        match self.retired.rooms.get(name) {
            Some(r) => r.topic.clone(),
            None => store.room_state(name).ok().and_then(|s| s.topic),
        }
    }

    /// Whether `create` must refuse `name`: a room in memory, or one with history or a topic
    /// (in [`Retired`] or the store). A store that cannot answer counts as taken.
    pub(super) fn room_exists(&self, store: &Store, name: &RoomName) -> bool {
        if self.rooms.contains_key(name) {
            return true;
        }
        if let Some(r) = self.retired.rooms.get(name) {
            return r.remembered;
        }
        store.room_state(name).map_or(true, |s| s.messages || s.topic.is_some())
    }
}

impl Hub {
    /// One page of the rooms with members, in name order: at most [`LIST_PAGE`] rooms whose
    /// names sort after `after`, and the name to ask after for the next page, if there is
    /// more. Copies one page under the lock (the rooms in memory are in a `BTreeMap`); the
    /// caller encodes it after.
    pub fn list(&self, after: Option<&RoomName>) -> (Vec<RoomInfo>, Option<RoomName>) {
        let st = self.lock();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rooms: Vec<RoomInfo> = st
            .rooms
            .range((from, Bound::Unbounded))
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
        (st.rooms.len(), st.retired.len())
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
