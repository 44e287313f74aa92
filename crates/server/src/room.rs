//! One room: its members' outboxes, its topic, the source of its message ids, and a short
//! in-memory tail of recent messages for joins.
//!
//! Membership costs O(1) whatever the room's size (issue 15 item 17): an index from session to
//! place, a member list in chunks of [`MEMBER_CHUNK`] shared with the deliveries in flight (a
//! join while one holds a snapshot copies one chunk, not the list), and, for a large room
//! ([`LARGE_ROOM`]), the set of members not yet announced and a bounded list of recent
//! speakers, so that neither a join nor a part walks the members.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use chatao_proto::RoomName;

use crate::hub::SessionId;
use crate::hub::remote::RemoteId;
use crate::limits::{LARGE_ROOM, MEMBER_CHUNK, RECENT_SPEAKER_WINDOW, RECENT_SPEAKERS};
use crate::outbox::Outbox;
use crate::store::StoredMessage;

/// The member list as delivery sees it: shared chunks, each copied on write, so that the bus
/// can take a snapshot under the hub lock (reference counts) and fan out after releasing it.
#[derive(Debug, Clone, Default)]
pub struct Members(Arc<Vec<Arc<Vec<Member>>>>);

impl Members {
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.0.iter().flat_map(|c| c.iter())
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|c| c.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A member, and the bus sequence number at their join: events queued before it are covered
/// by what they received on joining (history, member list), so only later ones are delivered.
#[derive(Debug, Clone)]
pub struct Member {
    id: SessionId,
    outbox: Outbox,
    joined_after: u64,
}

/// A room's state, owned by the hub and only touched under the hub's lock.
#[derive(Debug)]
pub struct Room {
    pub name: RoomName,
    pub topic: Option<String>,
    /// An operator hid the room's quiet sessions from its member lists (`hub/bots.rs`; stored,
    /// read back with the room).
    pub bots_hidden: bool,
    /// Members in chunks, so that fan-out is one pass over a few vectors.
    members: Members,
    /// Where each member is in `members`: (chunk, place).
    index: HashMap<SessionId, (usize, usize)>,
    /// Members the room was not told about (they joined a large room and have not spoken):
    /// their part is not announced either.
    hidden: HashSet<SessionId>,
    /// Who spoke recently and when (milliseconds), the most recent last, at most
    /// [`RECENT_SPEAKERS`], each once.
    speakers: VecDeque<(SessionId, u64)>,
    /// Members on other nodes of a cluster (listed, never delivered to: their node does that).
    remote: HashSet<RemoteId>,
    /// Members on other nodes this node's members were not told about (as `hidden`).
    hidden_remote: HashSet<RemoteId>,
    /// The id of the last message in this room. Ids come from here and nowhere else, so they
    /// are strictly increasing in the order recipients receive the messages, and they continue
    /// across restarts and after the room was forgotten (read from the store, see
    /// `hub::retired`).
    last_id: u64,
    /// The most recent messages, oldest first, at most `tail_cap`; emptied when the room empties
    /// (the store has them).
    tail: VecDeque<StoredMessage>,
    tail_cap: usize,
}

impl Room {
    pub fn new(name: RoomName, last_id: u64, topic: Option<String>, tail_cap: usize) -> Room {
        Room {
            name,
            topic,
            bots_hidden: false,
            members: Members::default(),
            index: HashMap::new(),
            hidden: HashSet::new(),
            speakers: VecDeque::new(),
            remote: HashSet::new(),
            hidden_remote: HashSet::new(),
            last_id,
            tail: VecDeque::new(),
            tail_cap,
        }
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.index.contains_key(&id)
    }

    /// Adds a member who is to receive bus events after sequence number `after`; false if
    /// already in. `announced`: the room is told of the join now (else the member is hidden
    /// until [`Room::reveal`]).
    pub fn add(&mut self, id: SessionId, outbox: Outbox, after: u64, announced: bool) -> bool {
        if self.contains(id) {
            return false;
        }
        let chunks = Arc::make_mut(&mut self.members.0);
        if chunks.last().is_none_or(|c| c.len() >= MEMBER_CHUNK) {
            chunks.push(Arc::new(Vec::with_capacity(MEMBER_CHUNK)));
        }
        let c = chunks.len() - 1;
        let chunk = Arc::make_mut(&mut chunks[c]);
        chunk.push(Member { id, outbox, joined_after: after });
        self.index.insert(id, (c, chunk.len() - 1));
        if !announced {
            self.hidden.insert(id);
        }
        true
    }

    /// Removes a member (the last member takes its place); false if it was not in.
    pub fn remove(&mut self, id: SessionId) -> bool {
        let Some((c, i)) = self.index.remove(&id) else { return false };
        let chunks = Arc::make_mut(&mut self.members.0);
        let last = chunks.len() - 1;
        let moved = Arc::make_mut(&mut chunks[last]).pop();
        if let Some(moved) = moved
            && moved.id != id
        {
            self.index.insert(moved.id, (c, i));
            Arc::make_mut(&mut chunks[c])[i] = moved;
        }
        if chunks[last].is_empty() {
            chunks.pop();
        }
        self.hidden.remove(&id);
        self.speakers.retain(|(s, _)| *s != id);
        if self.is_empty() {
            self.tail = VecDeque::new();
        }
        true
    }

    /// The room has [`LARGE_ROOM`] members or more (on every node).
    pub fn is_large(&self) -> bool {
        self.len() >= LARGE_ROOM
    }

    /// Whether the room was not told about member `id` yet.
    pub fn is_hidden(&self, id: SessionId) -> bool {
        self.hidden.contains(&id)
    }

    /// Whether any of `sessions` is a member the room was told about: for a person's other
    /// sessions, whether the room lists the person already (`hub::State::listed_siblings`).
    pub fn lists_any(&self, sessions: &[SessionId]) -> bool {
        sessions.iter().any(|s| self.contains(*s) && !self.is_hidden(*s))
    }

    /// The room is told about `id` from now on; true if it was hidden (the caller announces
    /// the join).
    pub fn reveal(&mut self, id: SessionId) -> bool {
        self.hidden.remove(&id)
    }

    /// Every member is listed to someone (a small room's full member list): none is hidden.
    pub fn reveal_all(&mut self) {
        self.hidden = HashSet::new();
        self.hidden_remote = HashSet::new();
    }

    /// Whether this node's members were not told about the member `id` on another node.
    pub fn is_hidden_remote(&self, id: RemoteId) -> bool {
        self.hidden_remote.contains(&id)
    }

    /// As [`Room::reveal`], for a member on another node.
    pub fn reveal_remote(&mut self, id: RemoteId) -> bool {
        self.hidden_remote.remove(&id)
    }

    /// Notes that `id` spoke at `now` (milliseconds).
    pub fn spoke(&mut self, id: SessionId, now: u64) {
        if let Some(i) = self.speakers.iter().position(|(s, _)| *s == id) {
            self.speakers.remove(i);
        }
        if self.speakers.len() >= RECENT_SPEAKERS {
            self.speakers.pop_front();
        }
        self.speakers.push_back((id, now));
    }

    /// The members who spoke within [`RECENT_SPEAKER_WINDOW`] of `now`, the most recent first.
    pub fn recent_speakers(&self, now: u64) -> impl Iterator<Item = SessionId> + '_ {
        let since = now.saturating_sub(RECENT_SPEAKER_WINDOW.as_millis() as u64);
        self.speakers.iter().rev().take_while(move |(_, t)| *t >= since).map(|(s, _)| *s)
    }

    /// The local members.
    pub fn member_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.iter().map(|m| m.id)
    }

    /// The members on other nodes.
    pub fn remote_ids(&self) -> impl Iterator<Item = RemoteId> + '_ {
        self.remote.iter().copied()
    }

    /// Adds a member on another node; false if already in. `announced` as for [`Room::add`].
    pub fn add_remote(&mut self, id: RemoteId, announced: bool) -> bool {
        let new = self.remote.insert(id);
        if new && !announced {
            self.hidden_remote.insert(id);
        }
        new
    }

    /// Removes a member on another node; false if it was not in.
    pub fn remove_remote(&mut self, id: RemoteId) -> bool {
        let was = self.remote.remove(&id);
        self.hidden_remote.remove(&id);
        if self.is_empty() {
            self.tail = VecDeque::new();
        }
        was
    }

    /// Members on every node.
    pub fn len(&self) -> usize {
        self.index.len() + self.remote.len()
    }

    /// No member on any node.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.remote.is_empty()
    }

    /// No member on this node.
    pub fn no_local_members(&self) -> bool {
        self.index.is_empty()
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// True if the room, once empty, is still said to exist (`create` refuses its name): it
    /// has history or a topic. It leaves memory all the same (the store has both).
    pub fn is_remembered(&self) -> bool {
        self.last_id > 0 || self.topic.is_some()
    }

    /// In a cluster, ids come from the cluster's stream: the room's last id is set, not taken.
    pub fn set_last_id(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// Takes the next message id.
    pub fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Remembers a new message in the tail.
    pub fn remember(&mut self, msg: StoredMessage) {
        if self.tail.len() == self.tail_cap {
            self.tail.pop_front();
        }
        if self.tail_cap > 0 {
            self.tail.push_back(msg);
        }
    }

    /// Takes message `id` out of the tail (the store could not write it: it was never
    /// delivered, so it must not be replayed).
    pub fn forget(&mut self, id: u64) {
        self.tail.retain(|m| m.id != id);
    }

    pub fn tail(&self) -> impl Iterator<Item = &StoredMessage> {
        self.tail.iter()
    }

    /// A snapshot of the members for delivery outside the lock (a reference count, no copy).
    pub fn members(&self) -> Members {
        self.members.clone()
    }

    /// Hands `msg` to one member.
    pub fn deliver_to(&self, id: SessionId, msg: &Bytes) {
        if let Some(&(c, i)) = self.index.get(&id) {
            self.members.0[c][i].outbox.deliver(msg);
        }
    }
}

/// Writes a run of consecutive bus events for one room (in sequence order) to every member
/// `pass` lets through, from the bus thread ([`Outbox::write_through`]: one sealed frame and one
/// non-blocking write per member); a member who joined during the run gets the part queued
/// after their join. `scratch` is the bus thread's buffer for sealing. Returns the members
/// written to.
pub fn deliver_run(
    members: &Members,
    run: &[&crate::bus::BusEvent],
    pass: impl Fn(SessionId) -> bool,
    scratch: &mut Vec<u8>,
) -> usize {
    let mut chunk = Vec::with_capacity(run.iter().map(|e| e.bytes.len()).sum());
    let mut starts = Vec::with_capacity(run.len());
    for ev in run {
        starts.push(chunk.len());
        chunk.extend_from_slice(&ev.bytes);
    }
    let mut shares = 0;
    for m in members.iter().filter(|m| pass(m.id)) {
        if let Some(k) = run.iter().position(|ev| ev.seq > m.joined_after) {
            m.outbox.write_through(&chunk[starts[k]..], run.len() - k, scratch);
            shares += 1;
        }
    }
    shares
}

/// Writes the bus event `seq` to every member of `members` `pass` lets through who joined
/// before it was queued, as [`deliver_run`].
pub fn deliver(
    members: &Members,
    msg: &Bytes,
    seq: u64,
    pass: impl Fn(SessionId) -> bool,
    scratch: &mut Vec<u8>,
) -> usize {
    let mut shares = 0;
    for m in members.iter().filter(|m| pass(m.id)) {
        if seq > m.joined_after {
            m.outbox.write_through(msg, 1, scratch);
            shares += 1;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusEvent;
    use crate::outbox::outbox;
    use crate::store::Persist;

    #[test]
    fn a_run_goes_whole_and_a_member_who_joined_mid_run_gets_only_what_followed() {
        let run: Vec<BusEvent> = (5..=7)
            .map(|seq| BusEvent {
                seq,
                room: Some(RoomName::lobby()),
                bytes: Bytes::from(format!("event {seq}\n")),
                persist: Persist::Nothing,
            })
            .collect();
        let mut inboxes = vec![];
        let mut room = Room::new(RoomName::lobby(), 0, None, 0);
        for (id, after) in [(1, 4), (2, 6), (3, 7)] {
            let (mb, inbox) = outbox(8);
            room.add(id, mb, after, true);
            inboxes.push(inbox);
        }
        let run: Vec<&BusEvent> = run.iter().collect();
        deliver_run(&room.members(), &run, |_| true, &mut Vec::new());
        let got: Vec<Bytes> = inboxes.iter().map(|i| i.take_queued()).collect();
        assert_eq!(got[0], Bytes::from_static(b"event 5\nevent 6\nevent 7\n"));
        assert_eq!(got[1], Bytes::from_static(b"event 7\n"));
        assert!(got[2].is_empty());
    }

    #[test]
    fn membership_across_chunks_survives_removals_and_a_snapshot_keeps_its_copy() {
        let mut room = Room::new(RoomName::lobby(), 0, None, 0);
        let n = 3 * MEMBER_CHUNK as u64 + 7;
        let mut inboxes = vec![];
        for id in 1..=n {
            let (mb, inbox) = outbox(4);
            assert!(room.add(id, mb.clone(), 0, id % 2 == 0));
            assert!(!room.add(id, mb, 0, true), "already in");
            inboxes.push(inbox);
        }
        let snapshot = room.members();
        for id in (1..=n).filter(|id| id % 3 == 0) {
            assert!(room.remove(id));
            assert!(!room.remove(id));
        }
        assert_eq!(snapshot.len() as u64, n, "the snapshot is unchanged");
        let left: Vec<u64> = (1..=n).filter(|id| id % 3 != 0).collect();
        assert_eq!(room.len(), left.len());
        assert_eq!(room.members().len(), left.len());
        let mut ids: Vec<u64> = room.member_ids().collect();
        ids.sort();
        assert_eq!(ids, left);
        for id in 1..=n {
            assert_eq!(room.contains(id), id % 3 != 0);
            assert_eq!(room.is_hidden(id), id % 3 != 0 && id % 2 == 1);
        }
        room.deliver_to(1, &Bytes::from_static(b"x\n"));
        assert_eq!(inboxes[0].take_queued(), Bytes::from_static(b"x\n"));
        for id in left {
            room.remove(id);
        }
        assert!(room.is_empty() && room.members().is_empty());
    }

    #[test]
    fn recent_speakers_are_bounded_the_most_recent_first_within_the_window() {
        let mut room = Room::new(RoomName::lobby(), 0, None, 0);
        let window = RECENT_SPEAKER_WINDOW.as_millis() as u64;
        for id in 1..=(RECENT_SPEAKERS as u64 + 5) {
            room.spoke(id, window + id);
        }
        room.spoke(10, window + 1000);
        let now = window + 1000;
        let recent: Vec<u64> = room.recent_speakers(now).collect();
        assert_eq!(recent.len(), RECENT_SPEAKERS);
        assert_eq!(recent[0], 10);
        assert!(!recent.contains(&1), "the least recent is forgotten");
        assert_eq!(room.recent_speakers(now + window).count(), 1, "only 10 is recent enough");
    }
}
