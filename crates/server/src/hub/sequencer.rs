//! The one seam between a standalone server and a cluster node: who puts room events in order.
//!
//! Every room event a session makes (a message, a topic, a room operator's change, the bots
//! setting, the first joiner's claim of a new room) goes through [`Hub::sequence`]:
//! - Standalone ([`Sequencer::Local`]), the hub orders it at once, under its lock: the room's
//!   next message id and the bus's next sequence number; the bus then stores it and delivers it.
//! - On a cluster node ([`Sequencer::Cluster`]), it is published on the room's stream and
//!   ordered there: every node, this one included, applies it when it comes back
//!   (`remote/mod.rs`), with the stream's position as its message id.
//!
//! The few other places where the two differ ask the sequencer rather than test for a link:
//! who registers nicknames ([`Sequencer::registers_names`]), what the other nodes are told
//! ([`Sequencer::tell_nodes`]), how an operator's server-wide action is made durable
//! ([`Sequencer::stores_moderation`]) and whether end-to-end rooms can be made
//! ([`Sequencer::allows_e2e`]).

use chatao_proto::{Cid, MessageKind, Nick, RoomName, ServerMsg, encode};

use super::bots::{self, BotsSetting};
use super::remote::{ClusterLink, Outbound, RoomBody, RoomEvent};
use super::room_ops::RoomChange;
use super::{Hub, HubError, SessionId, State, User, now_millis};
use crate::bus::{BusEvent, BusFull};
use crate::store::{Persist, StoredMessage};
use chatao_proto::Fingerprint;

/// Where room events are put in order.
#[derive(Debug, Clone, Default)]
pub enum Sequencer {
    /// A standalone server: here, under the hub's lock.
    #[default]
    Local,
    /// A cluster node: the cluster's stream, reached through the link.
    Cluster(ClusterLink),
}

/// Who made a room event: the session, its nickname and key, whether it is quiet (a bot's:
/// never announced), and the client's id for it.
#[derive(Debug, Clone)]
pub(super) struct Author {
    pub session: SessionId,
    pub nick: Nick,
    pub fingerprint: Fingerprint,
    pub quiet: bool,
    pub cid: Option<Cid>,
}

impl Author {
    /// Session `session`, which is `user`, making an event with the client id `cid`.
    pub fn of(session: SessionId, user: &User, cid: Option<Cid>) -> Author {
        let (nick, fingerprint) = (user.nick.clone(), user.fingerprint.clone());
        Author { session, nick, fingerprint, quiet: user.quiet, cid }
    }
}

/// What [`Hub::sequence`] did with a room event.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Sequenced {
    /// Ordered here: a message, with its id.
    Message(u64),
    /// Ordered here: the bots setting, acknowledged once stored.
    Bots(BotsSetting),
    /// Ordered here: a topic or a room operator's change.
    Done,
    /// Published on the cluster's stream; it is applied, and gets its id, when it comes back.
    Published,
}

impl Sequencer {
    /// The link to the other nodes, on a cluster node.
    pub fn link(&self) -> Option<&ClusterLink> {
        match self {
            Sequencer::Local => None,
            Sequencer::Cluster(link) => Some(link),
        }
    }

    /// Whether room events are applied after they are made (when they come back from a
    /// cluster's stream) rather than at once.
    pub fn applies_later(&self) -> bool {
        matches!(self, Sequencer::Cluster(_))
    }

    /// Whether the hub registers nicknames in its own table (a standalone server, persisted
    /// through the bus); a cluster node's session claimed them in the cluster's buckets first
    /// (`cluster/identity.rs`).
    pub fn registers_names(&self) -> bool {
        matches!(self, Sequencer::Local)
    }

    /// Whether an operator's server-wide action (a ban, a mute) is written to the local store
    /// before it is announced (standalone); a cluster keeps them in its shared buckets, written
    /// through [`Sequencer::tell_nodes`].
    pub fn stores_moderation(&self) -> bool {
        matches!(self, Sequencer::Local)
    }

    /// Whether end-to-end rooms may be made here: their ids, epochs and membership would have
    /// to go through the cluster's stream (issue 21), so only standalone.
    pub fn allows_e2e(&self) -> bool {
        matches!(self, Sequencer::Local)
    }

    /// Tells the other nodes (none when standalone).
    pub fn tell_nodes(&self, out: Outbound) {
        if let Sequencer::Cluster(link) = self {
            link.send(out);
        }
    }
}

impl Hub {
    /// Puts `body`, made by `by` in `room`, in order ([`Sequencer`]). The caller has checked
    /// that `by` may make it; `st` is the hub's state, locked.
    pub(super) fn sequence(
        &self,
        st: &mut State,
        room: &RoomName,
        by: Author,
        body: RoomBody,
    ) -> Result<Sequenced, HubError> {
        let link = match &self.shared.sequencer {
            Sequencer::Cluster(link) => link,
            Sequencer::Local => return self.order_here(st, room, by, body),
        };
        if let RoomBody::Message { .. } = &body {
            self.before_streamed_message(st, room, &by)?;
        }
        link.send_room(RoomEvent {
            room: room.clone(),
            time: now_millis(),
            from: by.nick,
            node: link.node,
            session: by.session,
            fingerprint: by.fingerprint,
            cid: by.cid,
            body,
        })?;
        Ok(Sequenced::Published)
    }

    /// On a cluster node, what a message does here before it goes to the stream: the sender
    /// must be in the room, and this node's members hear of a hidden newcomer before their
    /// first message (which comes back later from the stream).
    fn before_streamed_message(
        &self,
        st: &mut State,
        room_name: &RoomName,
        by: &Author,
    ) -> Result<(), HubError> {
        // Only a member the room was not told of yet may need announcing: the person's other
        // sessions are looked up for it alone, not for every message.
        let hidden = st.rooms.get(room_name).is_some_and(|r| r.is_hidden(by.session));
        let siblings = if hidden { st.listed_siblings(by.session) } else { Vec::new() };
        let Some(room) = st.rooms.get_mut(room_name).filter(|r| r.contains(by.session)) else {
            return Err(HubError::NotInRoom(room_name.clone()));
        };
        room.spoke(by.session, now_millis());
        if room.reveal(by.session) && !by.quiet && !room.lists_any(&siblings) {
            let join = ServerMsg::Join {
                room: room_name.clone(),
                nick: by.nick.clone(),
                fingerprint: by.fingerprint.clone(),
            };
            st.queue_for_room(self, room_name, &join);
        }
        Ok(())
    }

    /// A standalone server's ordering of a room event: applied now, queued on the bus.
    fn order_here(
        &self,
        st: &mut State,
        room_name: &RoomName,
        by: Author,
        body: RoomBody,
    ) -> Result<Sequenced, HubError> {
        match body {
            RoomBody::Message { kind, text } => self.say_here(st, room_name, by, kind, text),
            RoomBody::Topic { text } => {
                let seq = st.next_seq();
                let room = st
                    .rooms
                    .get_mut(room_name)
                    .filter(|r| r.contains(by.session))
                    .ok_or_else(|| HubError::NotInRoom(room_name.clone()))?;
                room.topic = text.clone();
                let msg = ServerMsg::Topic {
                    room: room_name.clone(),
                    text: text.clone(),
                    by: Some(by.nick),
                };
                self.bus().send_control(BusEvent {
                    seq,
                    room: Some(room_name.clone()),
                    bytes: encode(&msg),
                    persist: Persist::Topic { room: room_name.clone(), text },
                });
                Ok(Sequenced::Done)
            }
            RoomBody::Bots { hidden } => {
                let after = st.seq;
                let cap = self.config().history_on_join;
                st.load_room(self.store(), room_name, cap)?.bots_hidden = hidden;
                let seq = st.next_seq();
                // No bytes: nothing is delivered; the session acknowledges it once it is stored.
                let persist = Persist::Bots { room: room_name.clone(), hidden };
                self.bus().send_control(BusEvent {
                    seq,
                    room: None,
                    bytes: bytes::Bytes::new(),
                    persist,
                });
                st.forget_if_empty(room_name);
                let notice = bots::notice(room_name, hidden);
                Ok(Sequenced::Bots(BotsSetting { notice, after, upto: seq }))
            }
            RoomBody::RoomOps { change } => {
                // The first joiner's claim is made before the joiner is told anything: no one
                // to tell apart.
                let actor = (!matches!(change, RoomChange::Claim { .. })).then_some(by.session);
                let applied = st.apply_room_change(self, room_name, &by.nick, actor, change);
                st.queue_room_change(self, room_name, applied);
                Ok(Sequenced::Done)
            }
        }
    }

    /// A standalone server's message: the room's next id, remembered in its tail and under the
    /// sender's key and `cid` ([`super::sent::SentIds`]), queued on the bus.
    fn say_here(
        &self,
        st: &mut State,
        room_name: &RoomName,
        by: Author,
        kind: MessageKind,
        text: String,
    ) -> Result<Sequenced, HubError> {
        let now = now_millis();
        let base = st.seq;
        // Only a member the room was not told of yet may need announcing: the person's other
        // sessions are looked up for it alone, not for every message.
        let hidden = st.rooms.get(room_name).is_some_and(|r| r.is_hidden(by.session));
        let siblings = if hidden { st.listed_siblings(by.session) } else { Vec::new() };
        let room = st
            .rooms
            .get_mut(room_name)
            .filter(|r| r.contains(by.session))
            .ok_or_else(|| HubError::NotInRoom(room_name.clone()))?;
        // A newcomer to a large room is announced before their first message (a quiet session
        // never is, nor one whose person the room lists through another session).
        let reveal = room.reveal(by.session) && !by.quiet && !room.lists_any(&siblings);
        if reveal {
            let join = ServerMsg::Join {
                room: room_name.clone(),
                nick: by.nick.clone(),
                fingerprint: by.fingerprint.clone(),
            };
            self.bus().send_control(BusEvent {
                seq: base + 1,
                room: Some(room_name.clone()),
                bytes: encode(&join),
                persist: Persist::Nothing,
            });
        }
        room.spoke(by.session, now);
        let seq = base + 1 + u64::from(reveal);
        let msg_id = room.last_id() + 1;
        let stored = StoredMessage {
            room: room_name.clone(),
            id: msg_id,
            time: now,
            from: by.nick,
            kind,
            text,
            sender: Some(by.fingerprint.clone()),
            cid: by.cid,
        };
        let echo = encode(&stored.to_msg(false));
        let ev = BusEvent {
            seq,
            room: Some(room_name.clone()),
            bytes: echo.clone(),
            persist: Persist::Message(stored.clone()),
        };
        match self.bus().send_message_from(ev, by.session) {
            Ok(()) => {}
            Err(BusFull::Busy | BusFull::Closed) => {
                st.seq = base + u64::from(reveal);
                return Err(HubError::Busy);
            }
        }
        room.next_id();
        room.remember(stored);
        st.seq = seq;
        if let Some(cid) = by.cid {
            st.sent.record(&by.fingerprint, cid, echo, now_millis());
        }
        Ok(Sequenced::Message(msg_id))
    }
}
