//! The hub's side of a cluster: what it sends out through its [`ClusterLink`], and how it
//! applies what other nodes did (their users, their room events, their moderation).
//!
//! The hub knows nothing of NATS: it speaks in the plain types below, and
//! [`crate::cluster`] carries them between nodes. Room events (messages, topics) are not
//! applied when they are said: they go out through the link, and every node, this one
//! included, applies them when they come back from the cluster's single ordered stream, with
//! the stream's sequence number as their message id. So every node shows the same messages in
//! the same order with the same ids.
//!
//! A room message with a client id (`cid`) is remembered with its echo on every node as it is
//! applied ([`super::sent::SentIds`]), so the same message sent again through any node is
//! answered with that echo; JetStream drops the re-send itself (its message id is derived from
//! the key and the cid, see `cluster/outbound.rs`).
//!
//! Users on other nodes are kept in [`State::remote`]: enough to list them in `members`,
//! `who`, `list` and `whois`, to announce their arrivals and departures to the local users who
//! share a room with them, and to route private messages and operator actions to their node.
//! One nickname has one holder on a node: a remote user is not listed while a local session
//! holds its nickname or the cluster's `chatao_online` bucket names another session for it
//! ([`Hub::online_holder`], fed by the bucket watch in `cluster/identity.rs`, which also ends
//! a local session the bucket no longer names).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use chatao_proto::{
    ErrorCode, LeaveReason, Member, MessageKind, ModAction, Nick, RoomName, ServerMsg, encode,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::{Hub, HubError, SessionId, State, now_millis};
use crate::access::Ban;
use crate::bus::BusEvent;
use crate::room::Room;
use crate::store::{Persist, StoredMessage};

/// A node of the cluster: a random number drawn when the process starts, so a restarted node
/// is a new node and nothing of its previous life is mistaken for live.
pub type NodeId = u64;

/// A session on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteId {
    pub node: NodeId,
    pub session: SessionId,
}

/// A user online on some node, as nodes describe their users to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    pub session: SessionId,
    pub nick: Nick,
    pub fingerprint: String,
    pub rooms: Vec<RoomName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
    pub since: u64,
    /// A quiet session (a bot): no node announces its joins and parts. Absent (a node that
    /// predates it): false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
}

/// A change to one node's users, announced to the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Presence {
    Online {
        user: UserState,
    },
    Offline {
        session: SessionId,
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Join {
        session: SessionId,
        room: RoomName,
    },
    Part {
        session: SessionId,
        room: RoomName,
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Nick {
        session: SessionId,
        new: Nick,
    },
    Away {
        session: SessionId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// What a room event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoomBody {
    Message {
        #[serde(default)]
        kind: MessageKind,
        text: String,
    },
    Topic {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// An operator hid (`hidden`) or showed again the room's bots (`hub/bots.rs`). A node that
    /// predates it skips the event (an unknown body), as any it cannot read.
    Bots { hidden: bool },
    /// A room operator's change to the room's operators, modes, invites or bans
    /// (`hub/room_ops.rs`); skipped by a node that predates it.
    RoomOps { change: super::room_ops::RoomChange },
}

/// A room event as it travels through the cluster's ordered stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub room: RoomName,
    pub time: u64,
    pub from: Nick,
    /// Where it was said, so that a failure to publish can be reported to the sender.
    pub node: NodeId,
    pub session: SessionId,
    /// The sender's key fingerprint (what its `cid` is unique for).
    #[serde(default)]
    pub fingerprint: String,
    /// The sender's id for the event, when it gave one: the JetStream message id is derived
    /// from it (so a re-send through any node is dropped as a duplicate), and every node
    /// remembers it with the echo ([`super::sent::SentIds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<chatao_proto::Cid>,
    #[serde(flatten)]
    pub body: RoomBody,
}

/// A private message to a user on another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Private {
    pub id: u64,
    pub time: u64,
    pub from: Nick,
    pub to: Nick,
    #[serde(default)]
    pub kind: MessageKind,
    pub text: String,
    /// The sender's session on the sending node (for its acknowledgement).
    pub session: SessionId,
    /// The sender's key fingerprint (what `cid` is unique for).
    #[serde(default)]
    pub fingerprint: String,
    /// The sender's id for the message, when it gave one: both copies carry it, and both
    /// nodes remember it with the message ([`super::sent::SentIds`]), so a re-send is answered
    /// with the first copy and not delivered twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<chatao_proto::Cid>,
}

impl Private {
    /// The message as its recipient and its sender receive it.
    pub fn to_msg(&self) -> ServerMsg {
        ServerMsg::Private {
            cid: self.cid,
            id: self.id,
            time: self.time,
            from: self.from.clone(),
            to: self.to.clone(),
            kind: self.kind,
            text: self.text.clone(),
        }
    }
}

/// An operator action, for every node to announce and the node concerned to enforce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moderation {
    pub action: ModAction,
    /// As shown in the notice: a nickname or a fingerprint.
    pub target: String,
    /// The key acted upon, when the action is about a key (ban, mute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub by: Nick,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// What the hub hands to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Publish on the room stream.
    Room(RoomEvent),
    /// Tell the other nodes about a local user.
    Presence(Presence),
    /// Deliver to a user on `node`.
    Private { node: NodeId, msg: Private },
    /// Announce and enforce everywhere; `ban`/`unban`/`mute`/`unmute` are also written to the
    /// shared buckets.
    Moderation(Moderation),
    /// Write a ban to the shared bucket (`None`: lift the ban on the fingerprint).
    Ban { fingerprint: String, ban: Option<Ban> },
    /// Write a mute to the shared bucket (`None` inside: no end; outer `None`: lift it).
    Mute { fingerprint: String, until: Option<Option<u64>> },
    /// Forget `room` in the key's remembered set in the shared bucket (a room operator's kick
    /// or ban; joins and parts write it from the session, `session.rs`). Sent by the node of
    /// the operator who made the change only, once it applies it from the stream. `before`:
    /// the change's stream position; a rejoin remembered at or after it stays
    /// (`cluster/identity.rs` `remember`).
    ForgetMembership { fingerprint: String, room: RoomName, before: u64 },
}

/// Most events waiting for the cluster task. Overflow policy: room messages are refused with
/// `busy` once fewer than [`LINK_RESERVE`] places are left (the sender is told); other events
/// are dropped with an error log and the node republishes its whole state (a presence
/// snapshot) so that the other nodes' view heals.
pub const LINK_CAPACITY: usize = 65_536;
/// Places kept for events other than room messages.
pub const LINK_RESERVE: usize = 1024;

/// The hub's end of the cluster: a bounded queue to the cluster task, and whether the cluster
/// is reachable.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    pub node: NodeId,
    tx: mpsc::Sender<Outbound>,
    up: Arc<AtomicBool>,
    /// Set when a presence event was dropped; the cluster task then sends a full snapshot.
    pub resync: Arc<AtomicBool>,
    pub dropped: Arc<AtomicU64>,
    /// Connection changes (true: reachable), for the task that tells users about them.
    events: Arc<watch::Sender<bool>>,
    /// Who the cluster's `chatao_online` bucket says holds each nickname (case-folded), as
    /// this node last read it; a session of this node appears with this node's id. Written
    /// and read under the hub lock (so in one order with the users it decides about); one
    /// entry per nickname online in the cluster, removed when the bucket's entry is.
    holders: Arc<Mutex<HashMap<String, RemoteId>>>,
    /// Room events the cluster task holds (queued per session or being published).
    publishing: Arc<AtomicUsize>,
}

impl ClusterLink {
    /// The link and the receiver the cluster task reads.
    pub fn new(node: NodeId) -> (ClusterLink, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(LINK_CAPACITY);
        let link = ClusterLink {
            node,
            tx,
            up: Arc::new(AtomicBool::new(true)),
            resync: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
            events: Arc::new(watch::channel(true).0),
            holders: Arc::default(),
            publishing: Arc::default(),
        };
        (link, rx)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Where connection changes are published.
    pub fn events_tx(&self) -> &watch::Sender<bool> {
        &self.events
    }

    /// True when the cluster task has taken everything queued and has no room event left to
    /// publish.
    pub fn is_drained(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity() && self.publishing.load(Ordering::Relaxed) == 0
    }

    /// Counts room events taken by the cluster task and not yet published or given up.
    pub fn publishing(&self) -> &AtomicUsize {
        &self.publishing
    }

    /// The session the cluster's bucket says holds `folded`, if it names one.
    fn holder(&self, folded: &str) -> Option<RemoteId> {
        self.holders.lock().get(folded).copied()
    }

    fn set_holder(&self, folded: &str, holder: Option<RemoteId>) {
        let mut holders = self.holders.lock();
        match holder {
            Some(h) => holders.insert(folded.to_owned(), h),
            None => holders.remove(folded),
        };
    }

    /// Queues a room event, keeping the reserve free.
    fn send_room(&self, ev: RoomEvent) -> Result<(), HubError> {
        if !self.is_up() {
            return Err(HubError::Unavailable);
        }
        if self.tx.capacity() <= LINK_RESERVE {
            return Err(HubError::Busy);
        }
        self.tx.try_send(Outbound::Room(ev)).map_err(|_| HubError::Busy)
    }

    /// Queues anything else; see [`LINK_CAPACITY`] for what happens when it is full.
    pub fn send(&self, out: Outbound) {
        if self.tx.try_send(out).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.resync.store(true, Ordering::Relaxed);
            error!("cluster queue full: event dropped; a full resync follows");
        }
    }
}

/// A user on another node.
#[derive(Debug, Clone)]
pub(super) struct RemoteUser {
    pub nick: Nick,
    pub fingerprint: String,
    pub rooms: Vec<RoomName>,
    pub away: Option<String>,
    pub since: u64,
    /// A quiet session: its joins and parts are not announced here either.
    pub quiet: bool,
}

impl RemoteUser {
    fn member(&self) -> Member {
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
    fn locals_in(&self, rooms: &[RoomName]) -> Vec<SessionId> {
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
    pub(super) fn remote_members(&self, room: &Room) -> Vec<Member> {
        room.remote_ids().filter_map(|r| self.remote.get(&r)).map(RemoteUser::member).collect()
    }

    /// Queues an event for `room`'s local members on the bus (so it is ordered with the
    /// room's other events).
    pub(super) fn queue_for_room(&mut self, hub: &Hub, room: &RoomName, msg: &ServerMsg) {
        let seq = self.next_seq();
        hub.bus().send_control(BusEvent {
            seq,
            room: Some(room.clone()),
            bytes: encode(msg),
            persist: Persist::Nothing,
        });
    }

    fn remote_join(&mut self, hub: &Hub, rid: RemoteId, room_name: &RoomName) {
        let Some(user) = self.remote.get_mut(&rid) else { return };
        if !user.rooms.contains(room_name) {
            user.rooms.push(room_name.clone());
        }
        let (nick, fingerprint, quiet) = (user.nick.clone(), user.fingerprint.clone(), user.quiet);
        let cap = hub.config().history_on_join;
        // A store that cannot say: listed without its topic (ids come from the stream).
        let _ = self.load_room(hub.store(), room_name, cap);
        let room = self
            .rooms
            .entry(room_name.clone())
            .or_insert_with(|| Room::new(room_name.clone(), 0, None, cap));
        // A large room hears of a remote newcomer when they speak, as of a local one; a quiet
        // one is never announced.
        let silent = room.is_large() || quiet;
        if room.add_remote(rid, !silent) && !silent {
            let msg = ServerMsg::Join { room: room_name.clone(), nick, fingerprint };
            self.queue_for_room(hub, room_name, &msg);
        }
    }

    fn remote_part(
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
    fn shadowed(&self, rid: RemoteId, folded: &str) -> bool {
        self.nicks.contains_key(folded)
            || self.link.as_ref().and_then(|l| l.holder(folded)).is_some_and(|h| h != rid)
    }

    fn remote_online(&mut self, hub: &Hub, node: NodeId, user: UserState) {
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
    pub(super) fn forget_remote(&mut self, rid: RemoteId) {
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

    pub(super) fn remote_offline(
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
    pub(super) fn find_nick(&self, nick: &str) -> Option<Holder> {
        let folded = Nick::parse(nick).ok()?.folded();
        if let Some(id) = self.nicks.get(&folded) {
            return Some(Holder::Local(*id));
        }
        self.remote_nicks.get(&folded).map(|r| Holder::Remote(*r))
    }
}

/// Who holds a nickname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holder {
    Local(SessionId),
    Remote(RemoteId),
}

impl Hub {
    /// The cluster link, when this node is part of a cluster.
    pub fn cluster(&self) -> Option<&ClusterLink> {
        self.shared.cluster.as_ref()
    }

    /// Queues a room event for the cluster's ordered stream. `sender` is `from`'s key
    /// fingerprint and `cid` its id for the event, when it gave one.
    pub(super) fn publish_room(
        &self,
        id: SessionId,
        room: &RoomName,
        (from, sender): (Nick, String),
        body: RoomBody,
        cid: Option<chatao_proto::Cid>,
    ) -> Result<(), HubError> {
        let link = self.cluster().ok_or(HubError::UnknownSession)?;
        link.send_room(RoomEvent {
            room: room.clone(),
            time: now_millis(),
            from,
            node: link.node,
            session: id,
            fingerprint: sender,
            cid,
            body,
        })
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
            let _ = st.load_room(self.store(), &room_name, cap);
            let room = st
                .rooms
                .entry(room_name.clone())
                .or_insert_with(|| Room::new(room_name.clone(), 0, None, cap));
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
                    if let (Some(_), Some((fp, _)), Some(link)) = (actor, &applied.remove, &st.link)
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
        let gone: Vec<RemoteId> = st
            .remote
            .keys()
            .filter(|r| r.node == node && !now.contains(&r.session))
            .copied()
            .collect();
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
                if !st.remote.contains_key(&rid) {
                    return;
                }
                if st.shadowed(rid, &new.folded()) {
                    // Listed again when the bucket names it (see `shadowed`).
                    st.forget_remote(rid);
                    return;
                }
                let Some(user) = st.remote.get_mut(&rid) else { return };
                let old = std::mem::replace(&mut user.nick, new.clone());
                let rooms = user.rooms.clone();
                if st.remote_nicks.get(&old.folded()) == Some(&rid) {
                    st.remote_nicks.remove(&old.folded());
                }
                st.remote_nicks.insert(new.folded(), rid);
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
        let gone: Vec<RemoteId> = st.remote.keys().filter(|r| r.node == node).copied().collect();
        for rid in gone {
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
        let Some(link) = st.link.clone() else { return false };
        link.set_holder(folded, holder);
        let Some(holder) = holder else { return false };
        if let Some(listed) = st.remote_nicks.get(folded).copied()
            && listed != holder
        {
            st.forget_remote(listed);
        }
        holder.node != link.node && !st.remote.contains_key(&holder)
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
        st.tell(&[id], &bytes);
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
    pub fn learn_owner(&self, folded: String, fingerprint: String) {
        // A key written before nicknames were compared by skeleton holds the lower-cased
        // nickname: keyed here by its skeleton like every other.
        let folded = Nick::parse(&folded).map(|n| n.folded()).unwrap_or(folded);
        self.lock().owners.insert(folded, fingerprint);
    }

    /// The fingerprint of the user called `nick`, wherever they are online.
    pub fn fingerprint_of(&self, nick: &str) -> Option<String> {
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
