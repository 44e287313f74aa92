//! Membership that survives (issue 19): the rooms each key is in, remembered by the server.
//!
//! A session's join of a room it was not in remembers the room for its key; its `part` (and
//! only that, or a room operator's kick or ban, [`Hub::forget_membership`]) forgets it. A lost
//! connection, a `quit`, a timeout or a server restart forgets nothing. At `hello` the session
//! reads its key's set ([`Hub::remembered`]): `welcome` lists it (`rooms`; E2E rooms left
//! out, which a client rejoins through its E2E layer from its group state), and the client
//! joins each room with its own catch-up (`join` with `since` when it has seen ids there), as
//! it rejoins its rooms after a lost connection; the default room is joined by the server
//! itself, as before, when it is among them or the set is empty (a key's first connection, or
//! one that parted everything). A key that parted the default room and is in others is not
//! put back in it.
//!
//! Bounds: at most [`crate::limits::MAX_ROOMS_PER_USER`] rooms a key (the store refuses a
//! join past it silently: the join itself still happens, it is only not remembered).
//!
//! A fixed-set session (`hello` with `fixed_rooms`, a bot's `--rooms`) is put in no room and
//! its joins and parts leave the remembered set alone: the bot's list is its own, and a person
//! using the same key elsewhere keeps theirs.
//!
//! Storage: the store's `memberships` table (schema 6), written by the bus thread
//! ([`Persist::Membership`]) queued under the hub lock; a `part`'s forgetting is queued before
//! its `leave`, so the other members' leave is delivered only once the bus has committed both.
//! The parting session's own leave is sent at once (`part_locked_as`): a crash in the
//! milliseconds before the commit may bring the room back. A store that cannot write the
//! forgetting tells the parting session so (`error unavailable` naming the room, after its
//! `leave`): it is out of the room now, but may be put back in it at its next connection. On a cluster node the set that
//! counts is the cluster's, in the identity store's `chatao_memberships` bucket
//! (cluster/identity.rs): session.rs writes it around each join and part ([`Hub::remembers`]
//! says whether one changes it; a part is in the bucket before the hub is told, so before the
//! leave that acknowledges it) and reads it at `hello`. The node's replica keeps its own copy
//! as well: used at `hello` only for a key the bucket has no set for (one that joined its
//! rooms before the bucket existed), which then becomes the cluster's set. Each write carries
//! a room stream position ([`Hub::remembers`] at a join, the change's at a room kick or
//! ban), so a kick written late does not forget a rejoin made after it.

use bytes::Bytes;
use chatao_proto::{Fingerprint, RoomName};

use super::{Hub, SessionId, State};
use crate::bus::{BusEvent, BusHandle};
use crate::store::{Persist, StoreError};

impl Hub {
    /// The rooms key `fingerprint` is remembered in, read from the store in a blocking task,
    /// in name order. An error (a store that cannot be read) is the caller's to handle; a
    /// session goes on with no remembered rooms.
    pub async fn remembered(&self, fingerprint: &str) -> Result<Vec<RoomName>, StoreError> {
        let (store, fp) = (self.store().clone(), fingerprint.to_owned());
        match tokio::task::spawn_blocking(move || store.memberships(&fp)).await {
            Ok(read) => read,
            Err(e) => Err(StoreError::Thread(std::io::Error::other(e.to_string()))),
        }
    }

    /// Forgets that key `fingerprint` is in `room` (for a room operator's kick or ban: the key
    /// is not put back there at its next connection). Queued on the bus like a `part`'s.
    pub fn forget_membership(&self, fingerprint: &Fingerprint, room: &RoomName) {
        let mut st = self.lock();
        let seq = st.next_seq();
        self.bus().send_control(BusEvent {
            seq,
            room: None,
            bytes: Bytes::new(),
            persist: Persist::Membership {
                fingerprint: fingerprint.clone(),
                room: room.clone(),
                keep: false,
            },
        });
    }

    /// The key of session `id` when its being in `room` or not is remembered (it is not a
    /// fixed-set session) and it is in `room` now: for a cluster node, which writes the
    /// cluster's set after a join that made this true and before a part that ends it.
    /// With it, the last room stream position this node applied (0 standalone and until a
    /// node's first batch after a start), read under the same lock: a kick applied after this
    /// removes the session and forgets a set written at this position
    /// (`cluster/identity.rs` `remember`).
    pub fn remembers(&self, id: SessionId, room: &RoomName) -> Option<(Fingerprint, u64)> {
        let st = self.lock();
        let user = st.users.get(&id).filter(|u| !u.fixed)?;
        let here = st.rooms.get(room).is_some_and(|r| r.contains(id));
        here.then(|| (user.fingerprint.clone(), st.applied))
    }

    /// Makes `id` a fixed-set session: its joins and parts from now on are not remembered.
    pub fn set_fixed_rooms(&self, id: SessionId) {
        if let Some(u) = self.lock().users.get_mut(&id) {
            u.fixed = true;
        }
    }
}

impl State {
    /// Remembers (`keep`) or forgets `room` for session `id`'s key, unless it is a fixed-set
    /// session. Called under the hub lock, so the event takes its place among the room's.
    pub(super) fn remember(&mut self, id: SessionId, room: &RoomName, keep: bool, bus: &BusHandle) {
        let Some(user) = self.users.get(&id).filter(|u| !u.fixed) else { return };
        // The person's rooms: every key of theirs is put back in them ([`super::devices`]).
        let fingerprint = user.person.clone();
        let seq = self.next_seq();
        let ev = BusEvent {
            seq,
            room: None,
            bytes: Bytes::new(),
            persist: Persist::Membership { fingerprint, room: room.clone(), keep },
        };
        // A part's forgetting that the store cannot write is told to the session that parted
        // (`Shared::unstored`): it is out of the room, but would be put back in it at its next
        // connection. A join not remembered is not told (the join itself happened).
        bus.send_control_from(ev, (!keep).then_some(id));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::outbox::outbox;
    use chatao_proto::{LeaveReason, Nick};

    fn hub(dir: &std::path::Path) -> crate::hub::HubGuard {
        crate::hub::test_hub(dir, 50)
    }

    fn settle(hub: &Hub) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let seq = hub.current_seq();
        rt.block_on(hub.bus().flushed(seq));
    }

    fn remembered(hub: &Hub, fp: &str) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(hub.remembered(fp)).unwrap().iter().map(|r| r.as_str().to_owned()).collect()
    }

    #[test]
    fn joins_are_remembered_per_key_only_a_part_forgets_and_a_fixed_session_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (RoomName::parse("#a").unwrap(), RoomName::parse("#b").unwrap());
        {
            let hub = hub(dir.path());
            let (mb, _inbox) = outbox(64);
            hub.register(1, Nick::parse("alice").unwrap(), Fingerprint::example("fp-a"), mb)
                .unwrap();
            hub.join(1, &a).unwrap();
            hub.join(1, &b).unwrap();
            hub.join(1, &b).unwrap();
            settle(&hub);
            assert_eq!(remembered(&hub, &Fingerprint::example("fp-a")), ["#a", "#b"]);
            assert!(remembered(&hub, &Fingerprint::example("fp-other")).is_empty());
            // Leaving by any other way than a part forgets nothing.
            hub.leave(1, LeaveReason::Lost, None);
            let (mb, _inbox2) = outbox(64);
            hub.register(2, Nick::parse("alice").unwrap(), Fingerprint::example("fp-a"), mb)
                .unwrap();
            hub.join(2, &b).unwrap();
            hub.part(2, &b, LeaveReason::Part, None).unwrap();
            settle(&hub);
            assert_eq!(remembered(&hub, &Fingerprint::example("fp-a")), ["#a"]);
            // A fixed-set session's joins and parts are its own.
            hub.set_fixed_rooms(2);
            hub.join(2, &b).unwrap();
            hub.join(2, &a).unwrap();
            hub.part(2, &a, LeaveReason::Part, None).unwrap();
            settle(&hub);
            assert_eq!(remembered(&hub, &Fingerprint::example("fp-a")), ["#a"]);
            hub.forget_membership(&Fingerprint::example("fp-a"), &a);
            hub.join(1, &a).ok();
            settle(&hub);
            assert!(
                remembered(&hub, &Fingerprint::example("fp-a")).is_empty(),
                "a room kick forgets"
            );
            hub.leave(2, LeaveReason::Quit, None);
            let (mb, _inbox3) = outbox(64);
            hub.register(3, Nick::parse("alice").unwrap(), Fingerprint::example("fp-a"), mb)
                .unwrap();
            hub.join(3, &b).unwrap();
            settle(&hub);
        }
        // Across a restart of the hub on the same store.
        let hub = hub(dir.path());
        assert_eq!(remembered(&hub, &Fingerprint::example("fp-a")), ["#b"]);
    }

    #[test]
    fn a_key_is_remembered_in_at_most_the_per_user_room_limit() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let limit = crate::limits::MAX_ROOMS_PER_USER;
        let mut inboxes = Vec::new();
        for s in 0..2u64 {
            let (mb, inbox) = outbox(4096);
            inboxes.push(inbox);
            let nick = Nick::parse(&format!("n{s}")).unwrap();
            hub.register(s + 1, nick, Fingerprint::example("fp"), mb).unwrap();
            for i in 0..limit {
                hub.join(s + 1, &RoomName::parse(&format!("#r{s}-{i}")).unwrap()).unwrap();
            }
        }
        settle(&hub);
        assert_eq!(remembered(&hub, &Fingerprint::example("fp")).len(), limit);
    }
}
