//! The users on other nodes as this node knows them ([`RemoteUser`] in `State::remote`), and
//! who holds a nickname ([`Holder`]): enough to list remote users in `members`, `who`, `list`
//! and `whois`, to announce their arrivals and departures to the local users who share a room
//! with them, and to route private messages and operator actions to their node.

use std::collections::HashSet;

use chatao_proto::{LeaveReason, Member, Nick, RoomName, ServerMsg, encode};

use super::{NodeId, RemoteId, UserState};
use crate::bus::BusEvent;
use crate::hub::{Hub, SessionId, State};
use crate::room::Room;
use crate::store::Persist;
use chatao_proto::Fingerprint;

/// A user on another node.
#[derive(Debug, Clone)]
pub(in crate::hub) struct RemoteUser {
    pub nick: Nick,
    pub fingerprint: Fingerprint,
    pub rooms: Vec<RoomName>,
    pub away: Option<String>,
    pub since: u64,
    /// A quiet session: its joins and parts are not announced here either.
    pub quiet: bool,
}

impl RemoteUser {
    pub(super) fn member(&self) -> Member {
        Member {
            nick: self.nick.clone(),
            fingerprint: self.fingerprint.clone(),
            away: self.away.clone(),
            bot: self.quiet,
            op: false,
        }
    }
}

impl State {
    /// The local sessions in the rooms of `rooms`, each once.
    pub(super) fn locals_in(&self, rooms: &[RoomName]) -> Vec<SessionId> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for room in rooms.iter().filter_map(|r| self.rooms.get(r)) {
            for id in room.member_ids() {
                if seen.insert(id) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// Members of `room` on other nodes.
    pub(in crate::hub) fn remote_members(&self, room: &Room) -> Vec<Member> {
        room.remote_ids().filter_map(|r| self.remote.get(&r)).map(RemoteUser::member).collect()
    }

    /// Queues an event for `room`'s local members on the bus (so it is ordered with the
    /// room's other events).
    pub(in crate::hub) fn queue_for_room(&mut self, hub: &Hub, room: &RoomName, msg: &ServerMsg) {
        let seq = self.next_seq();
        hub.bus().send_control(BusEvent {
            seq,
            room: Some(room.clone()),
            bytes: encode(msg),
            persist: Persist::Nothing,
        });
    }

    pub(super) fn remote_join(&mut self, hub: &Hub, rid: RemoteId, room_name: &RoomName) {
        let Some(user) = self.remote.get_mut(&rid) else { return };
        if !user.rooms.contains(room_name) {
            user.rooms.push(room_name.clone());
        }
        let (nick, fingerprint, quiet) = (user.nick.clone(), user.fingerprint.clone(), user.quiet);
        let cap = hub.config().history_on_join;
        // A store that cannot say: listed without its topic (ids come from the stream).
        let room = self.load_room_or_empty(hub.store(), room_name, cap);
        // A large room hears of a remote newcomer when they speak, as of a local one; a quiet
        // one is never announced.
        let silent = room.is_large() || quiet;
        if room.add_remote(rid, !silent) && !silent {
            let msg = ServerMsg::Join { room: room_name.clone(), nick, fingerprint };
            self.queue_for_room(hub, room_name, &msg);
        }
    }

    pub(super) fn remote_part(
        &mut self,
        hub: &Hub,
        rid: RemoteId,
        room_name: &RoomName,
        reason: LeaveReason,
        message: Option<String>,
    ) {
        let Some(user) = self.remote.get_mut(&rid) else { return };
        user.rooms.retain(|r| r != room_name);
        let (nick, quiet) = (user.nick.clone(), user.quiet);
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        let hidden = room.is_hidden_remote(rid) || quiet;
        if !room.remove_remote(rid) {
            return;
        }
        if !hidden {
            let msg = ServerMsg::Leave { room: room_name.clone(), nick, reason, message };
            self.queue_for_room(hub, room_name, &msg);
        }
        self.forget_if_empty(room_name);
    }

    /// True when a remote user `rid` called `folded` must not be listed: a local session holds
    /// the nickname, or the cluster's bucket gives it to another session. One nickname has one
    /// holder on this node; if the bucket comes to name `rid`, the bucket watch ends a stale
    /// local holder and asks `rid`'s node for its users again ([`Hub::online_holder`]).
    pub(super) fn shadowed(&self, rid: RemoteId, folded: &str) -> bool {
        self.nicknames.holder(folded).is_some()
            || self.sequencer.link().and_then(|l| l.holder(folded)).is_some_and(|h| h != rid)
    }

    pub(super) fn remote_online(&mut self, hub: &Hub, node: NodeId, user: UserState) {
        let rid = RemoteId { node, session: user.session };
        if self.remote.contains_key(&rid) {
            // Already known (a snapshot overtook this change): only rooms can be missing.
            for room in &user.rooms {
                self.remote_join(hub, rid, room);
            }
            return;
        }
        if self.shadowed(rid, &user.nick.folded()) {
            tracing::debug!(nick = %user.nick, "a remote user whose nickname another session holds is not listed");
            return;
        }
        let rooms = user.rooms.clone();
        // The nickname can only be held once cluster-wide (the claim made sure, and the
        // bucket does not name another): an entry still listing it elsewhere is the same
        // person's old session, on a node not yet known to be gone. It is replaced without a
        // departure: they are here.
        if let Some(old) = self.remote_nicks.get(&user.nick.folded()).copied() {
            self.forget_remote(old);
        }
        self.remote_nicks.insert(user.nick.folded(), rid);
        self.remote.insert(
            rid,
            RemoteUser {
                nick: user.nick,
                fingerprint: user.fingerprint,
                rooms: Vec::new(),
                away: user.away,
                since: user.since,
                quiet: user.quiet,
            },
        );
        for room in &rooms {
            self.remote_join(hub, rid, room);
        }
    }

    /// Forgets a remote user without announcing anything (they reappeared elsewhere).
    pub(in crate::hub) fn forget_remote(&mut self, rid: RemoteId) {
        let Some(user) = self.remote.remove(&rid) else { return };
        if self.remote_nicks.get(&user.nick.folded()) == Some(&rid) {
            self.remote_nicks.remove(&user.nick.folded());
        }
        for name in &user.rooms {
            if let Some(room) = self.rooms.get_mut(name) {
                room.remove_remote(rid);
            }
            self.forget_if_empty(name);
        }
    }

    pub(in crate::hub) fn remote_offline(
        &mut self,
        hub: &Hub,
        rid: RemoteId,
        reason: LeaveReason,
        message: Option<String>,
    ) {
        let Some(user) = self.remote.get(&rid) else { return };
        for room in user.rooms.clone() {
            self.remote_part(hub, rid, &room, reason, message.clone());
        }
        if let Some(user) = self.remote.remove(&rid)
            && self.remote_nicks.get(&user.nick.folded()) == Some(&rid)
        {
            self.remote_nicks.remove(&user.nick.folded());
        }
    }

    /// The session or remote session holding `nick`.
    pub(in crate::hub) fn find_nick(&self, nick: &str) -> Option<Holder> {
        let folded = Nick::parse(nick).ok()?.folded();
        if let Some(id) = self.nicknames.holder(&folded) {
            return Some(Holder::Local(id));
        }
        self.remote_nicks.get(&folded).map(|r| Holder::Remote(*r))
    }
}

/// Who holds a nickname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::hub) enum Holder {
    Local(SessionId),
    Remote(RemoteId),
}
