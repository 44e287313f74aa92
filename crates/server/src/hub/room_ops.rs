//! Rooms with their own moderators (issue 19): each plain room's operators (by key), its
//! modes (topic lock, invite-only), its invite list and its bans.
//!
//! Who is an operator of a room: the key that first joined (or created) a plain room that did
//! not exist (no members, no history, no topic, no moderation state), and whoever an operator
//! of the room ops since. A room that existed before this code, or whose operators were all
//! deopped, has none until a server operator ops someone. The lobby has no room operators of
//! its own: its operators are the server operators. Server operators
//! ([`crate::access::Access::is_op`]) may do everything a room operator may, in every room, and
//! neither room bans nor invite-only stop them. A room operator acts on that room only: nothing
//! here disconnects a session or touches a server-wide ban or mute (those stay in
//! `moderation.rs`).
//!
//! The state of a room ([`RoomOps`]) is one JSON row of the store's `room_modes` table, read
//! the first time the hub needs it (a join, a topic change, a command) and kept in memory from
//! then on (`State::room_ops`: one entry per room consulted since the start, never forgotten,
//! so that what the bus has not written yet is never read back stale). Every change replaces
//! the row ([`Persist::RoomOps`]). On a cluster node a change is published on the room's
//! stream instead ([`RoomBody::RoomOps`]) and applied, in order, by every node
//! (`apply_room_events`), which stores it in its replica; a node that predates it skips the
//! event (an unknown body). Each node removes its own sessions of a kicked or banned key from
//! the room, and the operator's node tells the operator, should they not be in the room.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chatao_proto::{LeaveReason, Member, Nick, RoomAction, RoomFlag, RoomName, ServerMsg, encode};
use serde::{Deserialize, Serialize};

use super::remote::{Presence, RoomBody};
use super::sequencer::Author;
use super::{Hub, HubError, SessionId, State};
use crate::bus::BusEvent;
use crate::clock::human;
use crate::store::Persist;
use chatao_proto::Fingerprint;

/// Most operators, invites and bans one room keeps, each: a change past it is refused, so a
/// room's row stays small (it is rewritten whole on every change).
pub const MAX_ROOM_LIST: usize = 256;

/// One room's moderation state, as stored (JSON) and kept in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomOps {
    /// The keys (fingerprints) of the room's operators.
    #[serde(default)]
    pub ops: BTreeSet<Fingerprint>,
    /// Only the room's operators set its topic (`+t`).
    #[serde(default)]
    pub topic_lock: bool,
    /// Only invited keys (and operators) join (`+i`).
    #[serde(default)]
    pub invite_only: bool,
    /// Keys invited: each may join while the room is invite-only, as often as it likes, until
    /// the list is cleared (turning invite-only off clears it) or the key is banned.
    #[serde(default)]
    pub invites: BTreeSet<Fingerprint>,
    /// Keys banned from the room.
    #[serde(default)]
    pub bans: BTreeMap<Fingerprint, RoomBan>,
    /// A first joiner's claim was applied: later claims change nothing. On a cluster two
    /// nodes may each see a room as new and each publish a claim for its own joiner; every
    /// node applies the stream in one order, so the first claim wins everywhere and the room
    /// gets one operator, not two.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claimed: bool,
}

/// A room ban: until when (milliseconds since the epoch; `None`: for good), why, by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomBan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub by: String,
}

/// A change to a room's moderation state: made at once on a standalone server, or carried by
/// the cluster's stream ([`RoomBody::RoomOps`]) and made by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RoomChange {
    /// The first joiner of a room that did not exist becomes its operator (no notice).
    Claim {
        fingerprint: Fingerprint,
    },
    /// `nick` (the name shown) is made an operator (`on`) or no longer one.
    Op {
        fingerprint: Fingerprint,
        nick: String,
        on: bool,
    },
    Mode {
        flag: RoomFlag,
        on: bool,
    },
    Invite {
        fingerprint: Fingerprint,
        nick: String,
    },
    Kick {
        fingerprint: Fingerprint,
        nick: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Ban {
        fingerprint: Fingerprint,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Unban {
        fingerprint: Fingerprint,
        target: String,
    },
}

/// What applying a change gives the caller: the notice for the room's members (empty for a
/// claim) and the row to store, to queue on the bus, then the key to remove from the room
/// (a kick or a ban), with the leave's message, for [`State::remove_key_from_room`].
pub(super) struct Applied {
    pub bytes: Bytes,
    pub persist: Persist,
    pub remove: Option<(Fingerprint, String)>,
}

/// Whether `room` is the lobby (the default room), whose operators are the server's.
fn is_lobby(hub: &Hub, room: &RoomName) -> bool {
    *room == hub.config().default_room
}

impl State {
    /// `room`'s moderation state, read from the store the first time (a store that cannot
    /// say is an error, never taken as "no operators").
    pub(super) fn room_ops(
        &mut self,
        hub: &Hub,
        room: &RoomName,
    ) -> Result<&mut RoomOps, HubError> {
        if !self.room_ops.contains_key(room) {
            let row = hub.store().room_ops(room).map_err(|cause| {
                tracing::error!(%room, %cause, "cannot read a room's operators from the store");
                HubError::StoreUnavailable
            })?;
            let state = match row.as_deref().map(serde_json::from_str::<RoomOps>) {
                None => RoomOps::default(),
                Some(Ok(state)) => state,
                Some(Err(cause)) => {
                    // Only this server writes the row; a damaged one leaves the room without
                    // operators (server operators can op again) rather than failing every join.
                    tracing::error!(%room, %cause, "a room's stored operators cannot be read");
                    RoomOps::default()
                }
            };
            self.room_ops.insert(room.clone(), state);
        }
        self.room_ops.get_mut(room).ok_or(HubError::StoreUnavailable)
    }

    /// Whether the key `fp` may moderate `room`: a server operator, or one of the room's.
    pub(super) fn may_moderate(
        &mut self,
        hub: &Hub,
        room: &RoomName,
        fp: &str,
    ) -> Result<bool, HubError> {
        if hub.access().is_op(fp) {
            return Ok(true);
        }
        if is_lobby(hub, room) {
            return Ok(false);
        }
        Ok(self.room_ops(hub, room)?.ops.contains(fp))
    }

    /// Refuses a join of `room` by the key `fp` that the room bans (`banned_from_room`, with
    /// the time left) or that is not invited to an invite-only room (`invite_only`). Server
    /// operators and the room's operators are never refused.
    pub(super) fn check_entry(
        &mut self,
        hub: &Hub,
        room: &RoomName,
        fp: &str,
    ) -> Result<(), HubError> {
        if hub.access().is_op(fp) || is_lobby(hub, room) {
            return Ok(());
        }
        let now = hub.access().clock().now_ms();
        let ops = self.room_ops(hub, room)?;
        if ops.ops.contains(fp) {
            return Ok(());
        }
        if let Some(ban) = ops.bans.get(fp).filter(|b| b.until.is_none_or(|u| u > now)) {
            let left = match ban.until {
                Some(u) => format!(" for {} more", human(u - now)),
                None => String::new(),
            };
            let why = ban.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            return Err(HubError::BannedFromRoom(format!(
                "you are banned from {room}{left} (by {}){why}",
                ban.by
            )));
        }
        if ops.invite_only && !ops.invites.contains(fp) {
            return Err(HubError::InviteOnly(room.clone()));
        }
        Ok(())
    }

    /// Refuses a topic change in `room` by `fp` while the topic is locked, unless `fp` may
    /// moderate the room.
    pub(super) fn check_topic(
        &mut self,
        hub: &Hub,
        room: &RoomName,
        fp: &str,
    ) -> Result<(), HubError> {
        if is_lobby(hub, room) || !self.room_ops(hub, room)?.topic_lock {
            return Ok(());
        }
        match self.may_moderate(hub, room, fp)? {
            true => Ok(()),
            false => Err(HubError::TopicLocked(room.clone())),
        }
    }

    /// Marks the operators of `room` among `members` (in the lobby, the server operators).
    pub(super) fn mark_ops(&mut self, hub: &Hub, room: &RoomName, members: &mut [Member]) {
        if is_lobby(hub, room) {
            for m in members.iter_mut() {
                m.op = hub.access().is_op(&m.fingerprint);
            }
            return;
        }
        // A store that cannot say: nobody marked (the list itself is still right).
        let Ok(ops) = self.room_ops(hub, room) else { return };
        for m in members.iter_mut() {
            m.op = ops.ops.contains(&m.fingerprint);
        }
    }

    /// Whether `room` has no moderation state at all (never had operators, modes or bans):
    /// with a room that did not exist, what makes its first joiner its operator.
    pub(super) fn unclaimed(&mut self, hub: &Hub, room: &RoomName) -> bool {
        self.room_ops(hub, room).is_ok_and(|ops| *ops == RoomOps::default())
    }

    /// Makes `change` to `room`'s state (on every node, in the same order): removes this
    /// node's sessions of a kicked or banned key from the room (each told first, and its
    /// leave announced), tells `actor` (a local session) if it is not in the room, and returns
    /// the notice for the room and the row to store. Never fails: a store that cannot read
    /// the room's row starts from an empty state (logged by [`State::room_ops`]).
    pub(super) fn apply_room_change(
        &mut self,
        hub: &Hub,
        room: &RoomName,
        by: &Nick,
        actor: Option<SessionId>,
        change: RoomChange,
    ) -> Applied {
        if self.room_ops(hub, room).is_err() {
            self.room_ops.insert(room.clone(), RoomOps::default());
        }
        let Some(ops) = self.room_ops.get_mut(room) else {
            return Applied { bytes: Bytes::new(), persist: Persist::Nothing, remove: None };
        };
        let mut remove: Option<(Fingerprint, String)> = None;
        let (action, target, reason, until) = match change {
            RoomChange::Claim { fingerprint } => {
                // Only the first claim of a room with no operators counts (see `claimed`).
                let first = !ops.claimed && ops.ops.is_empty();
                ops.claimed = true;
                if first {
                    ops.ops.insert(fingerprint);
                }
                // Standalone, the claim is made before the joiner's member list is sent, which
                // marks them. On a cluster it comes back from the stream after the join's list:
                // the room (the joiner and whoever joined since) is told, as for an `op`.
                match first && self.sequencer.applies_later() {
                    true => (Some(RoomAction::Op), Some(by.to_string()), None, None),
                    false => (None, None, None, None),
                }
            }
            RoomChange::Op { fingerprint, nick, on } => {
                if on {
                    ops.ops.insert(fingerprint);
                } else {
                    ops.ops.remove(&fingerprint);
                }
                let action = if on { RoomAction::Op } else { RoomAction::Deop };
                (Some(action), Some(nick), None, None)
            }
            RoomChange::Mode { flag, on } => {
                let action = match (flag, on) {
                    (RoomFlag::TopicLock, true) => RoomAction::TopicLock,
                    (RoomFlag::TopicLock, false) => RoomAction::TopicUnlock,
                    (RoomFlag::InviteOnly, true) => RoomAction::InviteOnly,
                    (RoomFlag::InviteOnly, false) => RoomAction::InviteOpen,
                };
                match flag {
                    RoomFlag::TopicLock => ops.topic_lock = on,
                    RoomFlag::InviteOnly => {
                        ops.invite_only = on;
                        if !on {
                            ops.invites.clear();
                        }
                    }
                }
                (Some(action), None, None, None)
            }
            RoomChange::Invite { fingerprint, nick } => {
                ops.invites.insert(fingerprint);
                (Some(RoomAction::Invite), Some(nick), None, None)
            }
            RoomChange::Kick { fingerprint, nick, reason } => {
                let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                remove = Some((fingerprint, format!("kicked from {room} by {by}{why}")));
                (Some(RoomAction::Kick), Some(nick), reason, None)
            }
            RoomChange::Ban { fingerprint, target, until, reason } => {
                // Bans that ended are dropped here (they no longer count toward the limit).
                let now = hub.access().clock().now_ms();
                ops.bans.retain(|_, b| b.until.is_none_or(|u| u > now));
                ops.invites.remove(&fingerprint);
                ops.ops.remove(&fingerprint);
                let ban = RoomBan { until, reason: reason.clone(), by: by.to_string() };
                ops.bans.insert(fingerprint.clone(), ban);
                let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                remove = Some((fingerprint, format!("banned from {room} by {by}{why}")));
                (Some(RoomAction::Ban), Some(target), reason, until)
            }
            RoomChange::Unban { fingerprint, target } => {
                ops.bans.remove(&fingerprint);
                (Some(RoomAction::Unban), Some(target), None, None)
            }
        };
        let state = serde_json::to_string(&*ops).unwrap_or_default();
        let persist = Persist::RoomOps { room: room.clone(), state };
        let Some(action) = action else {
            return Applied { bytes: Bytes::new(), persist, remove: None };
        };
        let notice = encode(&ServerMsg::RoomModeration {
            room: room.clone(),
            action,
            target,
            by: by.clone(),
            reason,
            until,
        });
        let in_room =
            |st: &State, id: SessionId| st.rooms.get(room).is_some_and(|r| r.contains(id));
        if let Some(actor) = actor.filter(|a| !in_room(self, *a)) {
            self.tell(&[actor], &notice);
        }
        Applied { bytes: notice, persist, remove }
    }

    /// Takes this node's sessions of the key `fp` out of `room` (a kick or a ban), each told
    /// `notice` first (the room's copy, queued before, reaches only those still in it), its
    /// leave (`kicked`, with `message`) announced to the room and to the other nodes.
    pub(super) fn remove_key_from_room(
        &mut self,
        hub: &Hub,
        room: &RoomName,
        (fp, message): (Fingerprint, String),
        notice: &Bytes,
    ) {
        // The key is not put back in the room at its next connection (`membership.rs`); every
        // node forgets it in its own store.
        let seq = self.next_seq();
        let persist =
            Persist::Membership { fingerprint: fp.clone(), room: room.clone(), keep: false };
        hub.bus().send_control(BusEvent { seq, room: None, bytes: Bytes::new(), persist });
        let in_room =
            |st: &State, id: SessionId| st.rooms.get(room).is_some_and(|r| r.contains(id));
        let leaving: Vec<(SessionId, Nick)> = self
            .users
            .iter()
            .filter(|(id, u)| u.fingerprint == fp && in_room(self, **id))
            .map(|(id, u)| (*id, u.nick.clone()))
            .collect();
        for (id, nick) in leaving {
            self.tell(&[id], notice);
            let reason = LeaveReason::Kicked;
            if self.part_locked(id, room, &nick, reason, Some(message.clone()), hub.bus()) {
                let message = Some(message.clone());
                self.announce(Presence::Part { session: id, room: room.clone(), reason, message });
                if let Some(u) = self.users.get_mut(&id) {
                    u.rooms.retain(|r| r != room);
                }
            }
        }
    }

    /// The first joiner of a room that did not exist becomes its operator: at once on a
    /// standalone server, through the room's stream on a cluster node.
    pub(super) fn claim_room(&mut self, hub: &Hub, room: &RoomName, id: SessionId) {
        let Ok(user) = self.user(id) else { return };
        let by = Author::of(id, user, None);
        let change = RoomChange::Claim { fingerprint: by.fingerprint.clone() };
        if let Err(cause) = hub.sequence(self, room, by, RoomBody::RoomOps { change }) {
            tracing::warn!(%room, %cause, "the claim of a new room's operator was not made");
        }
    }

    /// Queues what [`State::apply_room_change`] gave on the bus (standalone), then removes
    /// the kicked or banned key from the room.
    pub(super) fn queue_room_change(&mut self, hub: &Hub, room: &RoomName, applied: Applied) {
        let seq = self.next_seq();
        let deliver =
            (!applied.bytes.is_empty() && self.rooms.contains_key(room)).then(|| room.clone());
        hub.bus().send_control(BusEvent {
            seq,
            room: deliver,
            bytes: applied.bytes.clone(),
            persist: applied.persist,
        });
        if let Some(remove) = applied.remove {
            self.remove_key_from_room(hub, room, remove, &applied.bytes);
        }
    }
}

impl Hub {
    /// A room operator's (or server operator's) `change` to `room`, once `id` is known to
    /// be one: made at once, or on a cluster node published on the room's stream.
    fn room_change(
        &self,
        id: SessionId,
        room: &RoomName,
        change: impl FnOnce(&mut State) -> Result<RoomChange, HubError>,
    ) -> Result<(), HubError> {
        let mut st = self.lock();
        let by = Author::of(id, st.user(id)?, None);
        if st.e2e.is_e2e(room) {
            return Err(HubError::Invalid(format!(
                "{room} is end-to-end encrypted: its members' clients decide who is in it"
            )));
        }
        if !st.may_moderate(self, room, &by.fingerprint)? {
            return Err(HubError::NotRoomOperator(room.clone()));
        }
        let change = change(&mut st)?;
        self.sequence(&mut st, room, by, RoomBody::RoomOps { change })?;
        Ok(())
    }

    /// Makes `nick` an operator of `room` (`on`), or no longer one.
    pub fn room_op(
        &self,
        id: SessionId,
        room: &RoomName,
        nick: &str,
        on: bool,
    ) -> Result<(), HubError> {
        self.room_change(id, room, |st| {
            if is_lobby(self, room) {
                return Err(HubError::Invalid(
                    "the lobby's operators are the server's (its settings say who)".into(),
                ));
            }
            let fingerprint = st.resolve(nick)?;
            let ops = &st.room_ops.get(room).map(|o| o.ops.len()).unwrap_or(0);
            if on && *ops >= MAX_ROOM_LIST {
                return Err(HubError::Invalid(format!("{room} has {MAX_ROOM_LIST} operators")));
            }
            Ok(RoomChange::Op { fingerprint, nick: nick.trim().to_owned(), on })
        })
    }

    /// Turns `flag` on or off in `room`.
    pub fn room_mode(
        &self,
        id: SessionId,
        room: &RoomName,
        flag: RoomFlag,
        on: bool,
    ) -> Result<(), HubError> {
        self.room_change(id, room, |_| match is_lobby(self, room) {
            true => Err(HubError::Invalid("the lobby has no modes".into())),
            false => Ok(RoomChange::Mode { flag, on }),
        })
    }

    /// Puts `nick`'s key on `room`'s invite list.
    pub fn room_invite(&self, id: SessionId, room: &RoomName, nick: &str) -> Result<(), HubError> {
        self.room_change(id, room, |st| {
            let fingerprint = st.resolve(nick)?;
            if st.room_ops.get(room).is_some_and(|o| o.invites.len() >= MAX_ROOM_LIST) {
                return Err(HubError::Invalid(format!(
                    "{room}'s invite list is full ({MAX_ROOM_LIST}); /mode -i clears it"
                )));
            }
            Ok(RoomChange::Invite { fingerprint, nick: nick.trim().to_owned() })
        })
    }

    /// Removes `nick` (online, on any node) from `room` only.
    pub fn room_kick(
        &self,
        id: SessionId,
        room: &RoomName,
        nick: &str,
        reason: Option<String>,
    ) -> Result<(), HubError> {
        self.room_change(id, room, |st| {
            let (fingerprint, name) = st.online_anywhere(nick)?;
            let here = st.rooms.get(room);
            let local = st.users.iter().any(|(sid, u)| {
                u.fingerprint == fingerprint && here.is_some_and(|r| r.contains(*sid))
            });
            let remote =
                st.remote.values().any(|u| u.fingerprint == fingerprint && u.rooms.contains(room));
            if !local && !remote {
                return Err(HubError::NotFound(format!("{name} is not in {room}")));
            }
            Ok(RoomChange::Kick { fingerprint, nick: name.to_string(), reason })
        })
    }

    /// Bans the key `target` names from `room` for `duration_secs` (or for good); its
    /// sessions in the room are removed.
    pub fn room_ban(
        &self,
        id: SessionId,
        room: &RoomName,
        target: &str,
        duration_secs: Option<u64>,
        reason: Option<String>,
    ) -> Result<(), HubError> {
        let until =
            super::moderation::moderation_end(self.access().clock().now_ms(), duration_secs)?;
        self.room_change(id, room, |st| {
            if is_lobby(self, room) {
                return Err(HubError::Invalid(
                    "nobody is banned from the lobby alone; server operators ban from the \
                     server (/kline)"
                        .into(),
                ));
            }
            let fingerprint = st.resolve(target)?;
            let now = self.access().clock().now_ms();
            let live =
                |o: &RoomOps| o.bans.values().filter(|b| b.until.is_none_or(|u| u > now)).count();
            if st.room_ops.get(room).is_some_and(|o| live(o) >= MAX_ROOM_LIST) {
                return Err(HubError::Invalid(format!("{room} bans {MAX_ROOM_LIST} keys already")));
            }
            Ok(RoomChange::Ban { fingerprint, target: target.trim().to_owned(), until, reason })
        })
    }

    /// Lifts `room`'s ban on the key `target` names.
    pub fn room_unban(&self, id: SessionId, room: &RoomName, target: &str) -> Result<(), HubError> {
        self.room_change(id, room, |st| {
            let fingerprint = st.resolve(target)?;
            if !st.room_ops.get(room).is_some_and(|o| o.bans.contains_key(&fingerprint)) {
                return Err(HubError::NotFound(format!("{target} is not banned from {room}")));
            }
            Ok(RoomChange::Unban { fingerprint, target: target.trim().to_owned() })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::access::{Access, AccessConfig};
    use crate::clock::Clock;
    use crate::hub::HubConfig;
    use crate::outbox::{Outgoing, outbox};
    use crate::store::{Retention, Store};

    fn hub(dir: &std::path::Path, clock: Clock) -> crate::hub::HubGuard {
        let store = Arc::new(Store::open(dir).unwrap());
        let config = HubConfig {
            default_room: RoomName::lobby(),
            history_on_join: 3,
            retention: Retention { max_messages: 0, max_age: None },
        };
        let access = Access::load(AccessConfig::default(), clock, vec![]).unwrap();
        Hub::start(config, store, Arc::new(access)).unwrap()
    }

    fn user(hub: &Hub, nick: &str) -> (SessionId, Outgoing) {
        let (mb, inbox) = outbox(64);
        let id = hub.next_session_id();
        let fp = Fingerprint::example(nick);
        hub.register_as(id, Nick::parse(nick).unwrap(), fp, mb, false).unwrap();
        (id, inbox)
    }

    /// A timed room ban keeps the key out until it ends, then lets it in; the next ban drops
    /// it from the room's row (fails without the expiry check: still `BannedFromRoom`).
    #[test]
    fn a_timed_room_ban_ends_and_is_then_dropped_from_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::default();
        let hub = hub(dir.path(), clock.clone());
        let room = RoomName::parse("#den").unwrap();
        let (alice, _ia) = user(&hub, "alice");
        let (bob, _ib) = user(&hub, "bob");
        let (carol, _ic) = user(&hub, "carol");
        hub.join(alice, &room).unwrap();
        hub.join(bob, &room).unwrap();
        hub.room_ban(alice, &room, "bob", Some(60), None).unwrap();
        let refused = hub.join(bob, &room).unwrap_err();
        assert!(
            matches!(&refused, HubError::BannedFromRoom(m) if m.contains("1m more")),
            "{refused}"
        );
        clock.advance(Duration::from_secs(61));
        hub.join(bob, &room).unwrap();
        hub.room_ban(alice, &room, "carol", None, Some("spam".into())).unwrap();
        assert_eq!(
            hub.join(carol, &room).unwrap_err(),
            HubError::BannedFromRoom("you are banned from #den (by alice): spam".into())
        );
        {
            let st = hub.lock();
            let bans: Vec<&Fingerprint> = st.room_ops.get(&room).unwrap().bans.keys().collect();
            assert_eq!(bans, [&Fingerprint::example("carol")], "bob's ended ban is gone");
        }
        // A room kick or ban forgets the key's membership of the room (issue 19, rooms that
        // stay): bob, kicked, is not put back in #den at his next connection.
        hub.room_kick(alice, &room, "bob", None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(hub.bus().flushed(hub.current_seq()));
        let kept = rt.block_on(hub.remembered(&Fingerprint::example("bob"))).unwrap();
        assert!(!kept.contains(&room), "{kept:?}");
        let kept = rt.block_on(hub.remembered(&Fingerprint::example("alice"))).unwrap();
        assert!(kept.contains(&room), "alice's stays: {kept:?}");
    }
}
