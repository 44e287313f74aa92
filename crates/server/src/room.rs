//! One room: its members' mailboxes, its topic, the source of its message ids, and a short
//! in-memory tail of recent messages for joins.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use chatao_proto::RoomName;

use crate::hub::SessionId;
use crate::hub::remote::RemoteId;
use crate::mailbox::Mailbox;
use crate::store::StoredMessage;

/// The member list as delivery sees it: shared, copied on write, so that the bus can take a
/// snapshot under the hub lock and fan out after releasing it.
pub type Members = Arc<Vec<Member>>;

/// A member, and the bus sequence number at their join: events queued before it are covered
/// by what they received on joining (history, member list), so only later ones are delivered.
#[derive(Debug, Clone)]
pub struct Member {
    id: SessionId,
    mailbox: Mailbox,
    joined_after: u64,
}

/// A room's state, owned by the hub and only touched under the hub's lock.
#[derive(Debug)]
pub struct Room {
    pub name: RoomName,
    pub topic: Option<String>,
    /// Members in join order, so that fan-out is one pass over a vector.
    members: Members,
    /// Members on other nodes of a cluster (listed, never delivered to: their node does that).
    remote: Vec<RemoteId>,
    /// The id of the last message in this room. Ids come from here and nowhere else, so they
    /// are strictly increasing in the order recipients receive the messages, and they continue
    /// across restarts (loaded from the store).
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
            members: Members::default(),
            remote: Vec::new(),
            last_id,
            tail: VecDeque::new(),
            tail_cap,
        }
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    /// Adds a member who is to receive bus events after sequence number `after`; false if
    /// already in.
    pub fn add(&mut self, id: SessionId, mailbox: Mailbox, after: u64) -> bool {
        if self.contains(id) {
            return false;
        }
        Arc::make_mut(&mut self.members).push(Member { id, mailbox, joined_after: after });
        true
    }

    /// Removes a member; false if it was not in.
    pub fn remove(&mut self, id: SessionId) -> bool {
        match self.members.iter().position(|m| m.id == id) {
            Some(i) => {
                Arc::make_mut(&mut self.members).remove(i);
                if self.is_empty() {
                    self.tail = VecDeque::new();
                }
                true
            }
            None => false,
        }
    }

    /// The local members.
    pub fn member_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.iter().map(|m| m.id)
    }

    /// The members on other nodes.
    pub fn remote_ids(&self) -> impl Iterator<Item = RemoteId> + '_ {
        self.remote.iter().copied()
    }

    /// Adds a member on another node; false if already in.
    pub fn add_remote(&mut self, id: RemoteId) -> bool {
        if self.remote.contains(&id) {
            return false;
        }
        self.remote.push(id);
        true
    }

    /// Removes a member on another node; false if it was not in.
    pub fn remove_remote(&mut self, id: RemoteId) -> bool {
        let before = self.remote.len();
        self.remote.retain(|r| *r != id);
        self.remote.len() != before
    }

    /// Members on every node.
    pub fn len(&self) -> usize {
        self.members.len() + self.remote.len()
    }

    /// No member on any node.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.remote.is_empty()
    }

    /// No member on this node.
    pub fn no_local_members(&self) -> bool {
        self.members.is_empty()
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// True if the room is worth keeping in memory while empty: it has history or a topic.
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
        if let Some(m) = self.members.iter().find(|m| m.id == id) {
            m.mailbox.deliver(msg);
        }
    }
}

/// Hands a run of consecutive bus events for one room (in sequence order) to every member as one
/// shared chunk; a member who joined during the run gets the part queued after their join.
pub fn deliver_run(members: &[Member], run: &[crate::bus::BusEvent]) {
    let mut chunk = bytes::BytesMut::with_capacity(run.iter().map(|e| e.bytes.len()).sum());
    let mut starts = Vec::with_capacity(run.len());
    for ev in run {
        starts.push(chunk.len());
        chunk.extend_from_slice(&ev.bytes);
    }
    let chunk = chunk.freeze();
    for m in members {
        match run.iter().position(|ev| ev.seq > m.joined_after) {
            Some(0) => m.mailbox.deliver(&chunk),
            Some(k) => m.mailbox.deliver(&chunk.slice(starts[k]..)),
            None => {}
        }
    }
}

/// Hands the bus event `seq` to every member of `members` who joined before it was queued.
pub fn deliver(members: &[Member], msg: &Bytes, seq: u64) {
    for m in members {
        if seq > m.joined_after {
            m.mailbox.deliver(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusEvent;
    use crate::mailbox::mailbox;
    use crate::store::Persist;

    #[test]
    fn a_run_is_one_chunk_and_a_member_who_joined_mid_run_gets_only_what_followed() {
        let run: Vec<BusEvent> = (5..=7)
            .map(|seq| BusEvent {
                seq,
                room: Some(RoomName::lobby()),
                bytes: Bytes::from(format!("event {seq}\n")),
                persist: Persist::Nothing,
            })
            .collect();
        let mut inboxes = vec![];
        let mut members = vec![];
        for (id, after) in [(1, 4), (2, 6), (3, 7)] {
            let (mb, inbox) = mailbox(8);
            members.push(Member { id, mailbox: mb, joined_after: after });
            inboxes.push(inbox);
        }
        deliver_run(&members, &run);
        let got: Vec<Vec<Bytes>> = inboxes
            .iter_mut()
            .map(|i| std::iter::from_fn(|| i.rx.try_recv().ok()).collect())
            .collect();
        assert_eq!(got[0], vec![Bytes::from_static(b"event 5\nevent 6\nevent 7\n")], "one entry");
        assert_eq!(got[1], vec![Bytes::from_static(b"event 7\n")]);
        assert!(got[2].is_empty());
    }
}
