//! One room: its members' mailboxes and the source of its message ids.

use bytes::Bytes;
use chatao_proto::RoomName;

use crate::hub::SessionId;
use crate::mailbox::Mailbox;

/// A room's state, owned by the hub and only touched under the hub's lock.
#[derive(Debug)]
pub struct Room {
    pub name: RoomName,
    /// Members in join order, with their mailboxes, so that fan-out is one pass over a vector.
    members: Vec<(SessionId, Mailbox)>,
    /// The id of the last message sent in this room. Ids come from here and nowhere else, so
    /// they are strictly increasing in the order recipients receive the messages.
    last_id: u64,
}

impl Room {
    pub fn new(name: RoomName) -> Room {
        Room { name, members: Vec::new(), last_id: 0 }
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.members.iter().any(|(m, _)| *m == id)
    }

    /// Adds a member; false if it was already in.
    pub fn add(&mut self, id: SessionId, mailbox: Mailbox) -> bool {
        if self.contains(id) {
            return false;
        }
        self.members.push((id, mailbox));
        true
    }

    /// Removes a member; false if it was not in.
    pub fn remove(&mut self, id: SessionId) -> bool {
        match self.members.iter().position(|(m, _)| *m == id) {
            Some(i) => {
                self.members.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn member_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.iter().map(|(id, _)| *id)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Takes the next message id.
    pub fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Hands `msg` to every member's mailbox.
    pub fn broadcast(&self, msg: &Bytes) {
        for (_, mailbox) in &self.members {
            mailbox.deliver(msg);
        }
    }
}
