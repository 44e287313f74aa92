//! The users on other nodes as this node knows them ([`Directory`], `State::remote`: a plain
//! table with pure, unit-tested methods), and who holds a nickname ([`Holder`]): enough to list remote users in `members`, `who`, `list`
//! and `whois`, to announce their arrivals and departures to the local users who share a room
//! with them, and to route private messages and operator actions to their node.

use std::collections::{HashMap, HashSet};

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

/// The users on other nodes, by id and by nickname skeleton ([`Nick::folded`]). The two maps
/// change together: a nickname lists at most one remote user, the last one put under it.
#[derive(Debug, Default)]
pub(in crate::hub) struct Directory {
    users: HashMap<RemoteId, RemoteUser>,
    by_nick: HashMap<String, RemoteId>,
}

impl Directory {
    pub fn get(&self, rid: &RemoteId) -> Option<&RemoteUser> {
        self.users.get(rid)
    }

    /// The user `rid`, to change its rooms or away message (its nickname changes through
    /// [`Directory::rename`], which keeps the nickname index in step).
    pub fn get_mut(&mut self, rid: &RemoteId) -> Option<&mut RemoteUser> {
        self.users.get_mut(rid)
    }

    pub fn contains(&self, rid: &RemoteId) -> bool {
        self.users.contains_key(rid)
    }

    pub fn values(&self) -> impl Iterator<Item = &RemoteUser> {
        self.users.values()
    }

    /// The remote user listed under the nickname whose skeleton is `folded`.
    pub fn holder(&self, folded: &str) -> Option<RemoteId> {
        self.by_nick.get(folded).copied()
    }

    /// The users of node `node`.
    pub fn on_node(&self, node: NodeId) -> Vec<RemoteId> {
        self.users.keys().filter(|r| r.node == node).copied().collect()
    }

    /// Lists `user` as `rid`, under its nickname (whoever was listed under it before no longer
    /// is by that name: the caller forgets them first).
    pub fn insert(&mut self, rid: RemoteId, user: RemoteUser) {
        self.by_nick.insert(user.nick.folded(), rid);
        self.users.insert(rid, user);
    }

    /// Forgets `rid`, and its nickname if it is still the one listed under it.
    pub fn remove(&mut self, rid: &RemoteId) -> Option<RemoteUser> {
        let user = self.users.remove(rid)?;
        if self.by_nick.get(&user.nick.folded()) == Some(rid) {
            self.by_nick.remove(&user.nick.folded());
        }
        Some(user)
    }

    /// `rid` is called `new` now; returns its old nickname and its rooms.
    pub fn rename(&mut self, rid: RemoteId, new: Nick) -> Option<(Nick, Vec<RoomName>)> {
        let user = self.users.get_mut(&rid)?;
        let folded = new.folded();
        let old = std::mem::replace(&mut user.nick, new);
        let rooms = user.rooms.clone();
        if self.by_nick.get(&old.folded()) == Some(&rid) {
            self.by_nick.remove(&old.folded());
        }
        self.by_nick.insert(folded, rid);
        Some((old, rooms))
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
        if self.remote.contains(&rid) {
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
        if let Some(old) = self.remote.holder(&user.nick.folded()) {
            self.forget_remote(old);
        }
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
        self.remote.remove(&rid);
    }

    /// The session or remote session holding `nick`.
    pub(in crate::hub) fn find_nick(&self, nick: &str) -> Option<Holder> {
        let folded = Nick::parse(nick).ok()?.folded();
        if let Some(id) = self.nicknames.holder(&folded) {
            return Some(Holder::Local(id));
        }
        self.remote.holder(&folded).map(Holder::Remote)
    }
}

/// Who holds a nickname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::hub) enum Holder {
    Local(SessionId),
    Remote(RemoteId),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nick(s: &str) -> Nick {
        Nick::parse(s).unwrap()
    }

    fn user(name: &str) -> RemoteUser {
        RemoteUser {
            nick: nick(name),
            fingerprint: Fingerprint::example(name),
            rooms: Vec::new(),
            away: None,
            since: 0,
            quiet: false,
        }
    }

    fn rid(node: NodeId, session: u64) -> RemoteId {
        RemoteId { node, session }
    }

    #[test]
    fn a_nickname_lists_the_last_user_put_under_it_and_removing_another_keeps_it() {
        let mut d = Directory::default();
        d.insert(rid(1, 1), user("alice"));
        d.insert(rid(2, 7), user("Alice"));
        assert_eq!(d.holder(&nick("ALICE").folded()), Some(rid(2, 7)));
        // The older entry goes without taking the name from the newer one.
        assert_eq!(d.remove(&rid(1, 1)).map(|u| u.nick), Some(nick("alice")));
        assert_eq!(d.holder(&nick("alice").folded()), Some(rid(2, 7)));
        d.remove(&rid(2, 7));
        assert_eq!(d.holder(&nick("alice").folded()), None);
        assert!(d.remove(&rid(2, 7)).is_none());
    }

    #[test]
    fn a_rename_moves_the_nickname_and_a_node_lists_its_own_users() {
        let mut d = Directory::default();
        d.insert(rid(1, 1), user("bob"));
        d.insert(rid(1, 2), user("carol"));
        d.insert(rid(2, 1), user("dave"));
        let (old, _) = d.rename(rid(1, 1), nick("robert")).unwrap();
        assert_eq!(old, nick("bob"));
        assert_eq!(d.holder(&nick("bob").folded()), None);
        assert_eq!(d.holder(&nick("robert").folded()), Some(rid(1, 1)));
        assert_eq!(d.get(&rid(1, 1)).map(|u| u.nick.clone()), Some(nick("robert")));
        let mut ones = d.on_node(1);
        ones.sort_by_key(|r| r.session);
        assert_eq!(ones, vec![rid(1, 1), rid(1, 2)]);
        assert!(d.rename(rid(3, 1), nick("x")).is_none());
    }
}
