//! The hub's side of a cluster: what it sends out through its [`ClusterLink`], and how it
//! applies what other nodes did (their users, their room events, their moderation).
//!
//! The hub knows nothing of NATS: it speaks in the plain types of `wire.rs`, and
//! [`crate::cluster`] carries them between nodes. Room events (messages, topics) are not
//! applied when they are said: they go out through the link, and every node, this one
//! included, applies them when they come back from the cluster's single ordered stream, with
//! the stream's sequence number as their message id. So every node shows the same messages in
//! the same order with the same ids.
//!
//! A room message with a client id (`cid`) is remembered with its echo on every node as it is
//! applied ([`crate::hub::sent::SentIds`]), so the same message sent again through any node is
//! answered with that echo; JetStream drops the re-send itself (its message id is derived from
//! the key and the cid, see `cluster/outbound.rs`).
//!
//! Users on other nodes are kept in `State::remote`, a `Directory` (`directory.rs`): enough to
//! list them in `members`, `who`, `list` and `whois`, to announce their arrivals and departures to the local users who
//! share a room with them, and to route private messages and operator actions to their node.
//! One nickname has one holder on a node: a remote user is not listed while a local session
//! holds its nickname or the cluster's `chatao_online` bucket names another session for it
//! ([`Hub::online_holder`], fed by the bucket watch in `cluster/identity.rs`, which also ends
//! a local session the bucket no longer names).

mod directory;
mod link;
mod wire;

pub(super) use directory::{Directory, Holder};
pub use link::{ClusterLink, LINK_CAPACITY, LINK_RESERVE};
pub use wire::*;

use std::collections::HashSet;

use bytes::Bytes;
use chatao_proto::{
    ErrorCode, Fingerprint, LeaveReason, ModAction, Nick, RoomName, ServerMsg, encode,
};
use tracing::warn;

use super::{Hub, HubError, SessionId, State, now_millis};
use crate::access::Ban;
use crate::bus::BusEvent;
use crate::store::{Persist, StoredMessage};

impl Hub {
    /// The cluster link, when this node is part of a cluster.
    pub fn cluster(&self) -> Option<&ClusterLink> {
        self.shared.sequencer.link()
    }

    /// The full state of this node's users, for a presence snapshot.
    pub fn local_users(&self) -> Vec<UserState> {
        let st = self.lock();
        st.users
            .iter()
            .map(|(id, u)| UserState {
                session: *id,
                nick: u.nick.clone(),
                fingerprint: u.fingerprint.clone(),
                rooms: u.rooms.clone(),
                away: u.away.clone(),
                since: u.since,
                quiet: u.quiet,
            })
            .collect()
    }

    /// Applies room events read from the cluster's stream, each with its sequence number
    /// there (which becomes a message's id), in order. Waits for room on the bus rather than
    /// dropping: the stream keeps what this node has not read yet, so backpressure costs
    /// nothing. A batch is queued under one lock, so the bus delivers it as runs per room.
    pub async fn apply_room_events(&self, events: Vec<(u64, RoomEvent)>) {
        let Some(last) = events.last().map(|(seq, _)| *seq) else { return };
        // One place per event, and one for the stream position.
        let Some(mut permits) = self.bus().reserve_many(events.len() + 1).await else { return };
        let mut st = self.lock();
        let cap = self.config().history_on_join;
        // Rooms nobody is in that an event brought into memory, forgotten again after.
        let mut touched: Vec<RoomName> = Vec::new();
        let here = self.cluster().map(|l| l.node);
        // Operators of this node to acknowledge a `bots` setting (the stream has it).
        let mut acknowledge: Vec<(SessionId, Bytes)> = Vec::new();
        for (seq, ev) in events {
            // A room kick or ban: the key's sessions here leave once its notice is queued.
            let mut remove = None;
            let bus_seq = st.next_seq();
            let room_name = ev.room.clone();
            let quiet = st
                .remote
                .get(&RemoteId { node: ev.node, session: ev.session })
                .is_some_and(|u| u.quiet);
            if !st.rooms.contains_key(&room_name) {
                touched.push(room_name.clone());
            }
            // A store that cannot say: without its topic (ids come from the stream).
            let room = st.load_room_or_empty(self.store(), &room_name, cap);
            // This node's sender of a message gets its copy last (`Shared::deliver`).
            let mut sender = None;
            let (bytes, persist) = match ev.body {
                RoomBody::Message { kind, text } => {
                    if here == Some(ev.node) {
                        sender = Some(ev.session);
                    }
                    // A newcomer of another node this node's members were not told of (a
                    // large room) is announced with their first message, just before it.
                    let rid = RemoteId { node: ev.node, session: ev.session };
                    let join = (room.reveal_remote(rid) && !quiet).then(|| {
                        encode(&ServerMsg::Join {
                            room: room_name.clone(),
                            nick: ev.from.clone(),
                            fingerprint: ev.fingerprint.clone(),
                        })
                    });
                    let stored = StoredMessage {
                        room: room_name.clone(),
                        id: seq,
                        time: ev.time,
                        from: ev.from,
                        kind,
                        text,
                        sender: Some(ev.fingerprint.clone()),
                        cid: ev.cid,
                    };
                    room.set_last_id(seq);
                    room.remember(stored.clone());
                    let bytes = encode(&stored.to_msg(false));
                    // Remembered on every node, so that the same message sent again through
                    // any of them is answered with this echo (a re-send JetStream did not
                    // drop, after its duplicate window, is answered the same way here).
                    if let Some(cid) = ev.cid {
                        st.sent.record(&ev.fingerprint, cid, bytes.clone(), now_millis());
                    }
                    let bytes = match join {
                        Some(join) => [join, bytes].concat().into(),
                        None => bytes,
                    };
                    (bytes, Persist::Message(stored))
                }
                RoomBody::Topic { text } => {
                    room.topic = text.clone();
                    let msg = ServerMsg::Topic {
                        room: room_name.clone(),
                        text: text.clone(),
                        by: Some(ev.from),
                    };
                    (encode(&msg), Persist::Topic { room: room_name.clone(), text })
                }
                RoomBody::Bots { hidden } => {
                    room.bots_hidden = hidden;
                    if here == Some(ev.node) {
                        let text = super::bots::notice(&room_name, hidden);
                        acknowledge.push((ev.session, encode(&ServerMsg::Notice { text })));
                    }
                    (Bytes::new(), Persist::Bots { room: room_name.clone(), hidden })
                }
                RoomBody::RoomOps { change } => {
                    let actor = (here == Some(ev.node)).then_some(ev.session);
                    let applied = st.apply_room_change(self, &room_name, &ev.from, actor, change);
                    // The cluster's remembered set forgets the room too (each node forgets it
                    // in its own store, `remove_key_from_room`); one node writes the bucket.
                    if let (Some(_), Some((fp, _)), Some(link)) =
                        (actor, &applied.remove, st.sequencer.link())
                    {
                        let (fingerprint, room) = (fp.clone(), room_name.clone());
                        link.send(Outbound::ForgetMembership { fingerprint, room, before: seq });
                    }
                    remove = applied.remove.map(|r| (r, applied.bytes.clone()));
                    (applied.bytes, applied.persist)
                }
            };
            if let Some(permit) = permits.next() {
                // Nothing to deliver for a setting (only stored): no room to deliver to.
                let room = (!bytes.is_empty()).then(|| room_name.clone());
                permit.send_sent_by(BusEvent { seq: bus_seq, room, bytes, persist }, sender);
            }
            if let Some((key, notice)) = remove {
                st.remove_key_from_room(self, &room_name, key, &notice);
            }
        }
        for (session, notice) in &acknowledge {
            st.tell(&[*session], notice);
        }
        // The stream position is kept with the events (in the same transaction, or the next:
        // writing an event twice is harmless), so a restart resumes after it.
        st.applied = st.applied.max(last);
        let seq = st.next_seq();
        for name in &touched {
            st.forget_if_empty(name);
        }
        if let Some(permit) = permits.next() {
            permit.send(BusEvent {
                seq,
                room: None,
                bytes: Default::default(),
                persist: Persist::Applied(last),
            });
        }
    }

    /// Applies a presence change from node `node`.
    pub fn apply_presence(&self, node: NodeId, p: Presence) {
        let mut st = self.lock();
        match p {
            Presence::Online { user } => st.remote_online(self, node, user),
            Presence::Offline { session, reason, message } => {
                st.remote_offline(self, RemoteId { node, session }, reason, message)
            }
            Presence::Join { session, room } => {
                st.remote_join(self, RemoteId { node, session }, &room)
            }
            Presence::Part { session, room, reason, message } => {
                st.remote_part(self, RemoteId { node, session }, &room, reason, message)
            }
            p @ (Presence::Nick { .. } | Presence::Away { .. }) => {
                self.apply_presence_locked(&mut st, node, p)
            }
        }
    }

    /// Replaces what this node knows of `node`'s users with `users`, announcing the
    /// differences (arrivals, departures, rooms joined and left).
    pub fn apply_snapshot(&self, node: NodeId, users: Vec<UserState>) {
        let mut st = self.lock();
        let now: HashSet<SessionId> = users.iter().map(|u| u.session).collect();
        let mut gone = st.remote.on_node(node);
        gone.retain(|r| !now.contains(&r.session));
        for rid in gone {
            st.remote_offline(self, rid, LeaveReason::Lost, Some("lost in a resync".into()));
        }
        for user in users {
            let rid = RemoteId { node, session: user.session };
            let Some(known) = st.remote.get(&rid).cloned() else {
                st.remote_online(self, node, user);
                continue;
            };
            if known.nick != user.nick {
                self.apply_presence_locked(
                    &mut st,
                    node,
                    Presence::Nick { session: user.session, new: user.nick.clone() },
                );
            }
            if known.away != user.away {
                self.apply_presence_locked(
                    &mut st,
                    node,
                    Presence::Away { session: user.session, reason: user.away.clone() },
                );
            }
            for room in known.rooms.iter().filter(|r| !user.rooms.contains(r)) {
                st.remote_part(self, rid, room, LeaveReason::Lost, Some("lost in a resync".into()));
            }
            for room in user.rooms.iter().filter(|r| !known.rooms.contains(r)) {
                st.remote_join(self, rid, room);
            }
        }
    }

    /// Nickname and away changes of a remote user, told to the local users sharing a room.
    fn apply_presence_locked(&self, st: &mut State, node: NodeId, p: Presence) {
        match p {
            Presence::Nick { session, new } => {
                let rid = RemoteId { node, session };
                if !st.remote.contains(&rid) {
                    return;
                }
                if st.shadowed(rid, &new.folded()) {
                    // Listed again when the bucket names it (see `shadowed`).
                    st.forget_remote(rid);
                    return;
                }
                let Some((old, rooms)) = st.remote.rename(rid, new.clone()) else { return };
                let locals = st.locals_in(&rooms);
                st.tell(&locals, &encode(&ServerMsg::NickChange { old, new }));
            }
            Presence::Away { session, reason } => {
                let rid = RemoteId { node, session };
                let Some(user) = st.remote.get_mut(&rid) else { return };
                user.away = reason.clone();
                let (nick, rooms) = (user.nick.clone(), user.rooms.clone());
                let locals = st.locals_in(&rooms);
                st.tell(&locals, &encode(&ServerMsg::Away { nick, reason }));
            }
            _ => {}
        }
    }

    /// Node `node` is gone (its presence expired or it said goodbye): its users leave every
    /// room, so no ghost stays behind.
    pub fn node_gone(&self, node: NodeId, message: &str) {
        let mut st = self.lock();
        for rid in st.remote.on_node(node) {
            st.remote_offline(self, rid, LeaveReason::Lost, Some(message.to_owned()));
        }
    }

    /// The cluster's `chatao_online` bucket says `holder` holds the nickname `folded` now
    /// (`None`: nobody). A remote user listed under it who is not that holder is a stale entry
    /// (the same key, moved to another node): forgotten, without a departure. Returns true
    /// when the holder is a remote session this node does not list yet, whose node should be
    /// asked for its users. (Ending a local holder the bucket no longer names is the bucket
    /// watch's job: it knows the revision of the local claim.)
    pub fn online_holder(&self, folded: &str, holder: Option<RemoteId>) -> bool {
        let mut st = self.lock();
        let Some(link) = st.sequencer.link().cloned() else { return false };
        link.set_holder(folded, holder);
        let Some(holder) = holder else { return false };
        if let Some(listed) = st.remote.holder(folded)
            && listed != holder
        {
            st.forget_remote(listed);
        }
        holder.node != link.node && !st.remote.contains(&holder)
    }

    /// Delivers a private message from another node to its local recipient. One sent again
    /// with the same cid (its sender was told `unconfirmed`) is not delivered twice: it is
    /// remembered here with the sender's key, and a repeat is answered as delivered.
    pub fn deliver_private(&self, msg: &Private) -> Result<(), HubError> {
        let mut st = self.lock();
        if let Some(cid) = msg.cid
            && st.sent.echo(&msg.fingerprint, cid).is_some()
        {
            return Ok(());
        }
        let Some(Holder::Local(id)) = st.find_nick(msg.to.as_str()) else {
            return Err(HubError::NoSuchNick(msg.to.to_string()));
        };
        let bytes = encode(&msg.to_msg());
        let ids = st.sessions_of_person(id);
        st.tell(&ids, &bytes);
        if let Some(cid) = msg.cid {
            st.sent.record(&msg.fingerprint, cid, bytes, now_millis());
        }
        Ok(())
    }

    /// A private message to another node was delivered: its sender gets its copy (the
    /// acknowledgement), remembered with its cid so that a re-send is answered with it.
    pub fn private_sent(&self, msg: &Private) {
        let mut st = self.lock();
        let bytes = encode(&msg.to_msg());
        st.tell(&[msg.session], &bytes);
        if let Some(cid) = msg.cid {
            st.sent.record(&msg.fingerprint, cid, bytes, now_millis());
        }
    }

    /// Sends a local session one message (an acknowledgement or an error from the cluster).
    pub fn tell_session(&self, id: SessionId, msg: &ServerMsg) {
        self.lock().tell(&[id], &encode(msg));
    }

    /// Tells every local user something (the cluster became unreachable, or is back).
    pub fn notice_everyone(&self, text: &str) {
        self.lock().tell_everyone(&encode(&ServerMsg::Notice { text: text.to_owned() }));
    }

    /// Ends local session `id` (another node took its nickname with the same key).
    pub fn end_session(&self, id: SessionId, bye: ServerMsg, reason: LeaveReason, message: &str) {
        let mut st = self.lock();
        if st.users.contains_key(&id) {
            st.remove_user(id, reason, Some(message.to_owned()), Some(bye), self.bus());
        }
    }

    /// Applies an operator action taken on another node: the notice to every local user, and
    /// the effect on the local sessions it concerns.
    pub fn apply_moderation(&self, m: &Moderation) {
        let mut st = self.lock();
        let notice = ServerMsg::Moderation {
            action: m.action,
            target: m.target.clone(),
            by: m.by.clone(),
            reason: m.reason.clone(),
            until: m.until,
        };
        st.tell_everyone(&encode(&notice));
        let why = m.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let targets: Vec<SessionId> = match (m.action, &m.fingerprint) {
            (ModAction::Kick, _) => match st.find_nick(&m.target) {
                Some(Holder::Local(id)) => vec![id],
                _ => vec![],
            },
            (ModAction::Ban, Some(fp)) => {
                st.users.iter().filter(|(_, u)| &u.fingerprint == fp).map(|(id, _)| *id).collect()
            }
            _ => vec![],
        };
        let (code, verb) = match m.action {
            ModAction::Ban => (ErrorCode::Banned, "banned"),
            _ => (ErrorCode::Kicked, "kicked"),
        };
        for id in targets {
            let bye =
                ServerMsg::Bye { code: Some(code), reason: format!("{verb} by {}{why}", m.by) };
            let message = Some(format!("{verb} by {}{why}", m.by));
            st.remove_user(id, LeaveReason::Kicked, message, Some(bye), self.bus());
        }
        drop(st);
        let access = self.access();
        match (m.action, &m.fingerprint) {
            (ModAction::Ban, Some(fp)) => access.ban(Ban {
                fingerprint: fp.clone(),
                until: m.until,
                reason: m.reason.clone(),
                by: m.by.to_string(),
            }),
            (ModAction::Unban, Some(fp)) => {
                access.unban(fp);
            }
            (ModAction::Mute, Some(fp)) => access.mute(fp, m.until),
            (ModAction::Unmute, Some(fp)) => {
                access.unmute(fp);
            }
            _ => {}
        }
    }

    /// True if local session `id` is online.
    pub fn has_session(&self, id: SessionId) -> bool {
        self.lock().users.contains_key(&id)
    }

    /// A nickname registration learned from the cluster's shared bucket.
    pub fn learn_owner(&self, folded: String, fingerprint: Fingerprint) {
        // A key written before nicknames were compared by skeleton holds the lower-cased
        // nickname: keyed here by its skeleton like every other.
        let folded = Nick::parse(&folded).map(|n| n.folded()).unwrap_or(folded);
        self.lock().nicknames.set_owner(folded, fingerprint);
    }

    /// The fingerprint of the user called `nick`, wherever they are online.
    pub fn fingerprint_of(&self, nick: &str) -> Option<Fingerprint> {
        let st = self.lock();
        match st.find_nick(nick)? {
            Holder::Local(id) => st.users.get(&id).map(|u| u.fingerprint.clone()),
            Holder::Remote(r) => st.remote.get(&r).map(|u| u.fingerprint.clone()),
        }
    }

    /// Logs that an event from the cluster was malformed (it is skipped).
    pub fn skipped(&self, what: &str, cause: &str) {
        warn!(what, cause, "cluster event skipped");
    }
}
