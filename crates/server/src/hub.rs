//! The chat core: who is online, which rooms exist, and who is in them.
//!
//! `Hub` is a cheap, cloneable handle around shared state behind a `std::sync::Mutex`: every
//! critical section is short and synchronous (map lookups, assigning a message id, encoding
//! once, and a non-blocking `try_send` into each recipient's bounded mailbox), and none is held
//! across an `.await`, so an async mutex would only add cost. The hub knows nothing of sockets:
//! tests drive it with plain mailboxes.
//!
//! Publishing goes through one seam, [`Hub::publish`]: today it hands the encoded message to
//! local mailboxes; a clustered server would publish to its bus there instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chatao_proto::{LeaveReason, Member, MessageKind, Nick, RoomName, ServerMsg, encode};

use crate::mailbox::Mailbox;
use crate::room::Room;

/// A connection's number, unique for the life of the server process.
pub type SessionId = u64;

/// Why the hub refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("the nickname {0} is in use")]
    NickInUse(Nick),
    #[error("you are not in {0}")]
    NotInRoom(RoomName),
    #[error("no such session")]
    UnknownSession,
}

/// The shared chat state. Clone it freely: all clones are the same hub.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// A std mutex on purpose: see the module documentation.
    state: Mutex<State>,
    next_session: AtomicU64,
    default_room: RoomName,
}

#[derive(Debug, Default)]
struct State {
    /// Case-folded nickname to session, for uniqueness.
    nicks: HashMap<String, SessionId>,
    users: HashMap<SessionId, User>,
    rooms: HashMap<RoomName, Room>,
}

#[derive(Debug)]
struct User {
    nick: Nick,
    fingerprint: String,
    mailbox: Mailbox,
    rooms: Vec<RoomName>,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Hub {
    /// An empty hub whose users start in `default_room`.
    pub fn new(default_room: RoomName) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                next_session: AtomicU64::new(1),
                default_room,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole server would, so a poisoned lock is recovered.
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands out a new session id.
    pub fn next_session_id(&self) -> SessionId {
        self.shared.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn default_room(&self) -> &RoomName {
        &self.shared.default_room
    }

    /// Puts a user online under `nick` and into the default room: everyone in that room,
    /// the newcomer included, receives `join`, then the newcomer receives `members`.
    /// Fails if the nickname (compared case-insensitively) is online.
    pub fn register(
        &self,
        id: SessionId,
        nick: Nick,
        fingerprint: String,
        mailbox: Mailbox,
    ) -> Result<(), HubError> {
        let mut st = self.lock();
        let folded = nick.folded();
        if st.nicks.contains_key(&folded) {
            return Err(HubError::NickInUse(nick));
        }
        st.nicks.insert(folded, id);
        st.users.insert(id, User { nick, fingerprint, mailbox, rooms: Vec::new() });
        let room = self.shared.default_room.clone();
        st.join(id, &room);
        Ok(())
    }

    /// Sends `text` from `id` to everyone in `room` (the sender included: its copy is its
    /// acknowledgement). Returns the message id.
    pub fn say(
        &self,
        id: SessionId,
        room: &RoomName,
        kind: MessageKind,
        text: String,
    ) -> Result<u64, HubError> {
        let mut st = self.lock();
        let from = st.users.get(&id).ok_or(HubError::UnknownSession)?.nick.clone();
        let room_state = st.rooms.get_mut(room).ok_or_else(|| HubError::NotInRoom(room.clone()))?;
        if !room_state.contains(id) {
            return Err(HubError::NotInRoom(room.clone()));
        }
        let msg_id = room_state.next_id();
        let msg = ServerMsg::Message {
            room: room.clone(),
            id: msg_id,
            time: now_millis(),
            from,
            kind,
            text,
        };
        Self::publish(room_state, &encode(&msg));
        Ok(msg_id)
    }

    /// Takes a user offline: they leave every room they are in, and each room's remaining
    /// members receive `leave` with `reason`. Unknown ids are ignored, so calling this twice is
    /// harmless.
    pub fn leave(&self, id: SessionId, reason: LeaveReason, message: Option<String>) {
        let mut st = self.lock();
        let Some(user) = st.users.remove(&id) else { return };
        st.nicks.remove(&user.nick.folded());
        for room_name in &user.rooms {
            let Some(room) = st.rooms.get_mut(room_name) else { continue };
            room.remove(id);
            let leave = ServerMsg::Leave {
                room: room_name.clone(),
                nick: user.nick.clone(),
                reason,
                message: message.clone(),
            };
            Self::publish(room, &encode(&leave));
            if room.is_empty() && *room_name != self.shared.default_room {
                st.rooms.remove(room_name);
            }
        }
    }

    /// The one seam through which every room event leaves the hub: the bytes are encoded once
    /// by the caller and shared by all recipients.
    fn publish(room: &Room, msg: &Bytes) {
        room.broadcast(msg);
    }

    /// Number of users online.
    pub fn online(&self) -> usize {
        self.lock().users.len()
    }
}

impl State {
    /// Adds `id` to `room` (creating it), announces the join to the room, and sends the member
    /// list to the joiner.
    fn join(&mut self, id: SessionId, room_name: &RoomName) {
        let Some(user) = self.users.get_mut(&id) else { return };
        let (nick, fingerprint, mailbox) =
            (user.nick.clone(), user.fingerprint.clone(), user.mailbox.clone());
        if !user.rooms.contains(room_name) {
            user.rooms.push(room_name.clone());
        }
        let room =
            self.rooms.entry(room_name.clone()).or_insert_with(|| Room::new(room_name.clone()));
        if !room.add(id, mailbox.clone()) {
            return;
        }
        let join = ServerMsg::Join { room: room_name.clone(), nick, fingerprint };
        Hub::publish(room, &encode(&join));
        let members = room
            .member_ids()
            .filter_map(|m| self.users.get(&m))
            .map(|u| Member { nick: u.nick.clone(), fingerprint: u.fingerprint.clone() })
            .collect();
        mailbox.deliver(&encode(&ServerMsg::Members { room: room_name.clone(), members }));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::mailbox::{Inbox, mailbox};
    use chatao_proto::decode_server;

    fn drain(inbox: &mut Inbox) -> Vec<ServerMsg> {
        let mut out = vec![];
        while let Ok(b) = inbox.rx.try_recv() {
            out.push(decode_server(&b).unwrap());
        }
        out
    }

    fn user(hub: &Hub, nick: &str) -> (SessionId, Inbox) {
        let (mb, inbox) = mailbox(64);
        let id = hub.next_session_id();
        hub.register(id, Nick::parse(nick).unwrap(), format!("SHA256:{nick}"), mb).unwrap();
        (id, inbox)
    }

    #[test]
    fn join_say_leave_reach_the_room_in_order() {
        let hub = Hub::new(RoomName::lobby());
        let (a, mut ia) = user(&hub, "alice");
        let (_b, mut ib) = user(&hub, "bob");
        let lobby = RoomName::lobby();
        assert_eq!(hub.say(a, &lobby, MessageKind::Normal, "one".into()), Ok(1));
        assert_eq!(hub.say(a, &lobby, MessageKind::Normal, "two".into()), Ok(2));
        hub.leave(a, LeaveReason::Quit, Some("bye".into()));
        let bob_saw = drain(&mut ib);
        assert!(matches!(&bob_saw[0], ServerMsg::Join { nick, .. } if nick.as_str() == "bob"));
        assert!(matches!(&bob_saw[1], ServerMsg::Members { members, .. } if members.len() == 2));
        assert!(matches!(&bob_saw[2], ServerMsg::Message { id: 1, text, .. } if text == "one"));
        assert!(matches!(&bob_saw[3], ServerMsg::Message { id: 2, .. }));
        assert!(matches!(&bob_saw[4], ServerMsg::Leave { reason: LeaveReason::Quit, .. }));
        let alice_saw = drain(&mut ia);
        assert!(
            alice_saw
                .iter()
                .any(|m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "bob"))
        );
        assert_eq!(hub.online(), 1);
    }

    #[test]
    fn nicknames_are_unique_regardless_of_case() {
        let hub = Hub::new(RoomName::lobby());
        let (a, _ia) = user(&hub, "alice");
        let (mb, _i) = mailbox(4);
        let err = hub.register(99, Nick::parse("ALICE").unwrap(), "fp".into(), mb.clone());
        assert!(matches!(err, Err(HubError::NickInUse(_))));
        hub.leave(a, LeaveReason::Lost, None);
        assert!(hub.register(99, Nick::parse("ALICE").unwrap(), "fp".into(), mb).is_ok());
    }

    #[test]
    fn saying_in_a_room_one_is_not_in_is_refused() {
        let hub = Hub::new(RoomName::lobby());
        let (a, _ia) = user(&hub, "alice");
        let other = RoomName::parse("#other").unwrap();
        assert_eq!(
            hub.say(a, &other, MessageKind::Normal, "x".into()),
            Err(HubError::NotInRoom(other))
        );
    }
}
