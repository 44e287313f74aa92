//! The chat core: who is online, which rooms exist, who is in them, and the order of what is
//! said in each.
//!
//! `Hub` is a cheap, cloneable handle around shared state behind a blocking mutex
//! (`parking_lot`'s, never poisoned): every critical section is short and synchronous (map
//! lookups, assigning ids, encoding once, non-blocking sends into bounded queues), and none is
//! held across an `.await`, so an async mutex would only add cost. The hub knows nothing of
//! sockets: tests drive it with plain outboxes.
//!
//! Room events (messages, joins, parts, departures, topics) leave through one seam, the bus
//! ([`crate::bus`]): the hub gives each its id and global sequence number under the lock and
//! queues it; the bus thread persists it, then delivers it. Events about one user rather than a
//! room (private messages, nickname changes, away) go straight to the outboxes concerned.
//!
//! Nicknames belong to keys: the first key to use a nickname registers it (persisted through the
//! bus); another key asking for it is refused whether or not the owner is online; the owner
//! connecting again replaces a session of theirs that still holds the nickname. Look-alikes are
//! one nickname, and a key holds a bounded number of names ([`names`]). Operator actions live
//! in [`moderation`].

mod bots;
mod devices;
mod e2e;
mod guard;
mod membership;
mod moderation;
mod names;
mod nicknames;
pub mod remote;
mod room_ops;
mod rooms;
pub mod sent;
mod sequencer;

pub use bots::BotsSetting;
pub use e2e::E2eRefusal;
pub use guard::HubGuard;
pub use rooms::MembersPage;
pub use sequencer::Sequencer;
use sequencer::{Author, Sequenced};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chatao_proto::{
    ErrorCode, LeaveReason, Member, MessageKind, Nick, RoomName, ServerMsg, encode,
};
use parking_lot::{Mutex, MutexGuard};

use crate::access::Access;
use crate::bus::{self, BusEvent, BusHandle};
use crate::outbox::Outbox;
use crate::room::{self, Members, Room};
use crate::store::{Persist, Retention, Store, StoreError, StoredMessage};
use chatao_proto::Fingerprint;
use remote::{ClusterLink, Holder, Outbound, Presence, RoomBody};

/// A connection's number, unique for the life of the server process.
pub type SessionId = u64;

pub use crate::limits::MAX_ROOMS_PER_USER;

/// Why the hub refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("the nickname {0} is in use")]
    NickInUse(Nick),
    /// The nickname is online on [`crate::limits::MAX_SESSIONS_PER_NICK`] sessions already.
    #[error(
        "{nick} is online on {limit} sessions already, the most one nickname may have; end one \
         of them first"
    )]
    TooManySessions { nick: Nick, limit: usize },
    #[error("the nickname {0} (or a look-alike of it) belongs to another key")]
    NickRegistered(Nick),
    /// A key at [`crate::limits::MAX_NICKS_PER_KEY`] whose names are all current.
    #[error(
        "your key already holds {limit} nicknames, the most one key may hold: {names}; use one \
         of them, or connect as one and change it with /nick (the name left is released)"
    )]
    TooManyNicks { limit: usize, names: String },
    /// A second nickname change within [`crate::limits::NICK_CHANGE_INTERVAL`].
    #[error(
        "one nickname change per {}s per key; try again in {wait}",
        crate::limits::NICK_CHANGE_INTERVAL.as_secs()
    )]
    NickChangeTooSoon { wait: String },
    #[error("only operators may do that")]
    NotOperator,
    #[error("only an operator of {0} may do that")]
    NotRoomOperator(RoomName),
    #[error("{0} is invite-only; ask one of its operators for an invite")]
    InviteOnly(RoomName),
    /// The whole sentence: the room, how long is left, by whom, why.
    #[error("{0}")]
    BannedFromRoom(String),
    #[error("the topic of {0} is locked: only its operators may set it")]
    TopicLocked(RoomName),
    #[error("{0}")]
    NotFound(String),
    /// A value that breaks its rules (a malformed fingerprint).
    #[error("{0}")]
    Invalid(String),
    #[error("you are not in {0}")]
    NotInRoom(RoomName),
    #[error("no user called {0} is online")]
    NoSuchNick(String),
    #[error("you are in {MAX_ROOMS_PER_USER} rooms already; /part one first")]
    TooManyRooms,
    #[error("the server is busy; your message was not accepted, try again")]
    Busy,
    #[error("no such session")]
    UnknownSession,
    #[error("the cluster is unreachable; your message was not accepted, try again later")]
    Unavailable,
    /// Something this server cannot do in its present form (a cluster node's `device_add`).
    #[error("{0}")]
    Unsupported(String),
    /// The store could not say what it knows of a room being joined (its last id, topic).
    #[error("the server cannot read its store right now; try again later")]
    StoreUnavailable,
}

impl HubError {
    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::NickInUse(_) | HubError::TooManySessions { .. } => ErrorCode::NickInUse,
            HubError::NickRegistered(_) => ErrorCode::NickRegistered,
            HubError::NotOperator => ErrorCode::NotOperator,
            HubError::NotRoomOperator(_) => ErrorCode::NotRoomOperator,
            HubError::InviteOnly(_) => ErrorCode::InviteOnly,
            HubError::BannedFromRoom(_) => ErrorCode::BannedFromRoom,
            HubError::TopicLocked(_) => ErrorCode::TopicLocked,
            HubError::NotFound(_) | HubError::Unsupported(_) => ErrorCode::Other,
            HubError::Invalid(_) => ErrorCode::Invalid,
            HubError::NotInRoom(_) => ErrorCode::NotInRoom,
            HubError::NoSuchNick(_) => ErrorCode::NoSuchNick,
            HubError::Busy => ErrorCode::Busy,
            HubError::Unavailable | HubError::StoreUnavailable => ErrorCode::Unavailable,
            HubError::NickChangeTooSoon { .. } => ErrorCode::RateLimited,
            HubError::TooManyRooms | HubError::UnknownSession | HubError::TooManyNicks { .. } => {
                ErrorCode::Other
            }
        }
    }
}

/// Settings the hub needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub default_room: RoomName,
    /// Messages replayed on join.
    pub history_on_join: usize,
    pub retention: Retention,
}

/// The shared chat state. Clone it freely: all clones are the same hub.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// The state behind the handle; the bus thread delivers into it through [`bus::Deliver`].
#[derive(Debug)]
struct Shared {
    /// A blocking mutex on purpose: see the module documentation.
    state: Mutex<State>,
    next_session: AtomicU64,
    config: HubConfig,
    bus: BusHandle,
    store: Arc<Store>,
    access: Arc<Access>,
    /// Where room events are put in order: here, or a cluster's stream ([`sequencer`]).
    sequencer: Sequencer,
}

#[derive(Debug, Default)]
struct State {
    /// Who holds each nickname here and which key owns it ([`nicknames`]).
    nicknames: nicknames::Nicknames,
    /// A standalone server's registrations in full, and every key's last nickname change.
    names: names::Names,
    users: HashMap<SessionId, User>,
    /// The rooms in use, in name order (for `list` pages), and those just forgotten, until the
    /// store surely has their last id and topic ([`rooms`]).
    rooms: rooms::Rooms,
    /// A clone of the hub's bus, to know how far it has flushed (set once it exists).
    bus: Option<BusHandle>,
    /// Sequence number of the last queued bus event.
    seq: u64,
    /// On a cluster node, the last room stream position applied ([`Hub::remembers`]);
    /// 0 until the first batch after a start.
    applied: u64,
    /// Id of the last private message.
    last_private: u64,
    /// Users on other nodes of the cluster ([`remote::Directory`]).
    remote: remote::Directory,
    /// A copy of the hub's sequencer, so that changes made under the lock are told to the
    /// other nodes ([`sequencer`]).
    sequencer: Sequencer,
    /// End-to-end encrypted rooms: modes, epochs, delivery lists, key packages, welcomes.
    e2e: e2e::E2eState,
    /// Recent client message ids per key and their echoes (repeats answered, not repeated).
    sent: sent::SentIds,
    /// Each consulted room's operators, modes, invites and bans ([`room_ops`]).
    room_ops: HashMap<RoomName, room_ops::RoomOps>,
    /// The keys linked to a person ([`devices`]; standalone only).
    devices: devices::Devices,
}

#[derive(Debug)]
struct User {
    nick: Nick,
    /// The session's own key.
    fingerprint: Fingerprint,
    /// The person the key belongs to: its first key, which owns the nicknames ([`devices`]);
    /// `fingerprint` itself for a key not linked to another.
    person: Fingerprint,
    outbox: Outbox,
    rooms: Vec<RoomName>,
    away: Option<String>,
    since: u64,
    /// A quiet session (`hello` with `quiet`, a bot): its joins and parts are not announced
    /// to rooms, and member lists mark it `bot` ([`bots`]).
    quiet: bool,
    /// A fixed-set session (`hello` with `fixed_rooms`): its joins and parts leave the rooms
    /// remembered for its key alone ([`membership`]).
    fixed: bool,
}

/// What a joiner needs to catch up, taken atomically with the join.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub room: RoomName,
    /// False if the user was already a member (nothing was announced).
    pub new: bool,
    pub members: Vec<Member>,
    pub topic: Option<String>,
    /// The room's last message id at the join: history covers up to here, live messages
    /// come after.
    pub last_id: u64,
    /// The bus sequence at the join: once flushed, the store holds every message up to
    /// `last_id`.
    pub seq: u64,
    /// Recent messages from memory (ids up to `last_id`).
    pub tail: Vec<StoredMessage>,
    /// The room's member count when `members` is not all of them (a large room: the joiner,
    /// then the recent speakers; the rest by `who` pages).
    pub total: Option<u32>,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The client ids of the messages accepted in the last [`SENT_IDS_WINDOW`] (at most
/// [`SENT_IDS_TOTAL`], the newest), with their echoes encoded again from the store: a server
/// killed after persisting a message but before its sender got the echo answers the re-sent
/// message with that echo instead of a second copy. Private messages are not stored, so not
/// remembered across a restart.
fn load_sent(store: &Store) -> Result<sent::SentIds, StoreError> {
    use crate::limits::{SENT_IDS_TOTAL, SENT_IDS_WINDOW};
    use crate::store::Recent;
    let since = now_millis().saturating_sub(SENT_IDS_WINDOW.as_millis() as u64);
    let mut ids = sent::SentIds::default();
    for recent in store.recent_cids(since, SENT_IDS_TOTAL)? {
        let (sender, cid, time, echo) = match &recent {
            Recent::Message(m) => (&m.sender, m.cid, m.time, encode(&m.to_msg(false))),
            Recent::Sealed(m) => (&m.sender, m.cid, m.time, encode(&m.to_msg(false))),
        };
        if let (Some(sender), Some(cid)) = (sender, cid) {
            ids.record(sender, cid, echo, time);
        }
    }
    Ok(ids)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Not poisoned (parking_lot): a panic while holding the lock leaves maps that are
        // still consistent enough to serve everyone else, so the next lock goes on.
        self.state.lock()
    }

    /// Called by the bus thread with a persisted batch: hands each event to its room.
    ///
    /// The lock is held only to snapshot each room's member list (a reference count); the
    /// fan-out itself runs after it is released, so sessions are never held up by a large room.
    ///
    /// `senders` (the sessions whose messages are in the batch) get theirs last: a sender's
    /// copy is its acknowledgement, so whatever it does once it has seen it (a private message
    /// to a member, say) reaches every other member on this node after the room message, never
    /// before it.
    ///
    /// Each member's share is written through ([`crate::outbox`]): sealed and written from
    /// this (the bus) thread with a non-blocking write, `scratch` the buffer it seals into.
    pub(crate) fn deliver(
        &self,
        batch: &[BusEvent],
        senders: &[SessionId],
        scratch: &mut Vec<u8>,
    ) -> usize {
        let snapshots: Vec<Option<Members>> = {
            let st = self.lock();
            // A notice to everyone that waited for its record (a ban's moderation notice).
            for ev in batch.iter().filter(|ev| ev.room.is_none() && !ev.bytes.is_empty()) {
                st.tell_everyone(&ev.bytes);
            }
            batch
                .iter()
                .map(|ev| ev.room.as_ref().and_then(|r| st.rooms.get(r)).map(Room::members))
                .collect()
        };
        let mut senders = senders.to_vec();
        senders.sort_unstable();
        senders.dedup();
        let is_sender = |id: SessionId| senders.binary_search(&id).is_ok();
        let mut shares = fan_out(batch, &snapshots, |id| !is_sender(id), scratch);
        if !senders.is_empty() {
            shares += fan_out(batch, &snapshots, is_sender, scratch);
        }
        shares
    }
}

/// One pass of [`Shared::deliver`]: the batch to the members `pass` lets through. Returns the
/// writes made (one per member per run).
fn fan_out(
    batch: &[BusEvent],
    snapshots: &[Option<Members>],
    pass: impl Fn(SessionId) -> bool + Copy,
    scratch: &mut Vec<u8>,
) -> usize {
    // Events that reach no one here (a registration, a membership, a room this node does not
    // hold) are left out before runs are formed: between two events of one room they would
    // split its run, and every member would get two writes where one does. What each member
    // receives, and its order, is the same either way.
    let deliverable: Vec<(&BusEvent, &Members)> =
        batch.iter().zip(snapshots).filter_map(|(ev, s)| s.as_ref().map(|m| (ev, m))).collect();
    let mut shares = 0;
    // Consecutive deliverable events for one room go to each member as one run (the records
    // concatenated): one sealed frame and one write per member per run instead of per event.
    let mut i = 0;
    while i < deliverable.len() {
        let (first, members) = deliverable[i];
        let mut j = i + 1;
        while j < deliverable.len() && deliverable[j].0.room == first.room {
            j += 1;
        }
        shares += if j == i + 1 {
            room::deliver(members, &first.bytes, first.seq, pass, scratch)
        } else {
            let run: Vec<&BusEvent> = deliverable[i..j].iter().map(|(ev, _)| *ev).collect();
            room::deliver_run(members, &run, pass, scratch)
        };
        i = j;
    }
    shares
}

impl bus::Deliver for Shared {
    fn deliver(&self, batch: &[BusEvent], senders: &[SessionId], scratch: &mut Vec<u8>) -> usize {
        Shared::deliver(self, batch, senders, scratch)
    }

    fn unstored(&self, events: &[bus::Unstored]) {
        Shared::unstored(self, events)
    }
}

impl Shared {
    /// Called by the bus thread with the events of a batch the store could not write (see
    /// [`crate::bus`], "When the store cannot write"): a room message leaves the room's memory
    /// tail and the remembered client ids (its id is not given back: the room's counter goes
    /// on), and its sender is told `unavailable` with its cid; a nickname registration is
    /// undone, so that the key asking again registers it again; an operator whose ban or unban
    /// was not stored is told so (it is in force in memory until a restart).
    pub(crate) fn unstored(&self, events: &[bus::Unstored]) {
        // What the sender of a message that could not be stored is told.
        let unstored = |cid, room: &RoomName| ServerMsg::Error {
            cid,
            room: Some(room.clone()),
            code: ErrorCode::Unavailable,
            message: "the server cannot store messages right now (its disk is failing); this \
                      one was not delivered, send it again later"
                .into(),
        };
        let mut st = self.lock();
        for u in events {
            let told = match &u.ev.persist {
                Persist::Message(m) => {
                    if let Some(room) = st.rooms.get_mut(&m.room) {
                        room.forget(m.id);
                    }
                    if let (Some(fp), Some(cid)) = (&m.sender, m.cid) {
                        st.sent.forget(fp, cid);
                    }
                    Some(unstored(m.cid, &m.room))
                }
                Persist::E2e(crate::store::E2ePersist::Sealed(m)) => {
                    if let (Some(fp), Some(cid)) = (&m.sender, m.cid) {
                        st.sent.forget(fp, cid);
                    }
                    Some(unstored(m.cid, &m.room))
                }
                Persist::Nick { nick, fingerprint, .. } => {
                    st.forget_claim(nick, fingerprint);
                    None
                }
                Persist::Membership { room, keep: false, .. } => Some(ServerMsg::Error {
                    cid: None,
                    room: Some(room.clone()),
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "the server could not store that you left {room} (its disk is failing): \
                         you are out of it now, but may be put back in it when you next connect; \
                         /part {room} again later"
                    ),
                }),
                Persist::Ban(_)
                | Persist::Unban { .. }
                | Persist::DeviceAdded(_)
                | Persist::DeviceRemoved { .. } => Some(ServerMsg::Error {
                    cid: None,
                    room: None,
                    code: ErrorCode::Unavailable,
                    message: "the server could not store that (its disk is failing): it is in \
                              force now but would not survive a restart; try again later"
                        .into(),
                }),
                _ => None,
            };
            if let (Some(from), Some(msg)) = (u.from, told) {
                st.tell(&[from], &encode(&msg));
            }
        }
    }
}

impl State {
    fn user(&self, id: SessionId) -> Result<&User, HubError> {
        self.users.get(&id).ok_or(HubError::UnknownSession)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn member(&self, id: SessionId) -> Option<Member> {
        self.users.get(&id).map(|u| Member {
            nick: u.nick.clone(),
            fingerprint: u.fingerprint.clone(),
            away: u.away.clone(),
            bot: u.quiet,
            op: false,
        })
    }

    /// Every local session of the person `id` is (the sessions holding its nickname), `id`
    /// included, the oldest first; just `id` for a session not (or no longer) holding one.
    fn sessions_of_person(&self, id: SessionId) -> Vec<SessionId> {
        match self.users.get(&id) {
            Some(u) => {
                let ids = self.nicknames.holders(&u.nick.folded());
                if ids.contains(&id) { ids.to_vec() } else { vec![id] }
            }
            None => vec![id],
        }
    }

    /// The person's other sessions a room is told about (not quiet ones): while one of them is
    /// in a room and announced there, the room already lists the person, so a join or part of
    /// `id` is not announced to it.
    fn listed_siblings(&self, id: SessionId) -> Vec<SessionId> {
        let mut ids = self.sessions_of_person(id);
        ids.retain(|s| *s != id && self.users.get(s).is_some_and(|u| !u.quiet));
        ids
    }

    /// Everyone sharing a room with any session of the person `id` is, and those sessions,
    /// each once.
    fn person_audience(&self, id: SessionId) -> Vec<SessionId> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for s in self.sessions_of_person(id) {
            for m in self.audience(s) {
                if seen.insert(m) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// Everyone sharing a room with `id`, and `id` itself, each once.
    fn audience(&self, id: SessionId) -> Vec<SessionId> {
        let mut seen = HashSet::from([id]);
        let mut out = vec![id];
        if let Some(user) = self.users.get(&id) {
            for room in user.rooms.iter().filter_map(|r| self.rooms.get(r)) {
                for m in room.member_ids() {
                    if seen.insert(m) {
                        out.push(m);
                    }
                }
            }
        }
        out
    }

    /// Tells the other nodes of the cluster (if any) about a local change.
    fn announce(&self, p: Presence) {
        self.sequencer.tell_nodes(Outbound::Presence(p));
    }

    fn tell(&self, ids: &[SessionId], msg: &Bytes) {
        for id in ids {
            if let Some(u) = self.users.get(id) {
                u.outbox.deliver(msg);
            }
        }
    }
}

impl Hub {
    /// A hub over `store`, with the rooms and registrations the store remembers, and its bus
    /// thread started; the guard owns both ([`HubGuard`]).
    pub fn start(
        config: HubConfig,
        store: Arc<Store>,
        access: Arc<Access>,
    ) -> Result<HubGuard, StoreError> {
        Hub::with_cluster(config, store, access, None)
    }

    /// A hub that is one node of a cluster when `cluster` is given: room events then go out
    /// through the link and come back from the cluster's stream (see [`remote`]), and
    /// nickname registrations come from the cluster rather than the local store.
    pub fn with_cluster(
        config: HubConfig,
        store: Arc<Store>,
        access: Arc<Access>,
        cluster: Option<ClusterLink>,
    ) -> Result<HubGuard, StoreError> {
        let sequencer = match cluster {
            Some(link) => Sequencer::Cluster(link),
            None => Sequencer::Local,
        };
        let records = if sequencer.registers_names() { store.load_nicks()? } else { Vec::new() };
        let (names, drops) = names::Names::load(records);
        // No room is loaded here: rooms come into memory when joined ([`rooms`]).
        let writer = store.writer(config.retention)?;
        let (bus, receiver) = bus::channel();
        let state = State {
            nicknames: nicknames::Nicknames::with_owners(names.owners()),
            names,
            sequencer: sequencer.clone(),
            e2e: e2e::E2eState::load(&store)?,
            sent: load_sent(&store)?,
            devices: if sequencer.registers_names() {
                devices::Devices::load(store.load_devices()?)
            } else {
                devices::Devices::default()
            },
            bus: Some(bus.clone()),
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            next_session: AtomicU64::new(1),
            config,
            bus,
            store,
            access,
            sequencer,
        });
        {
            // Look-alikes registered by two keys before they were one nickname: the younger
            // registrations leave the store.
            let mut st = shared.lock();
            for persist in drops {
                let seq = st.next_seq();
                shared.bus.send_control(BusEvent { seq, room: None, bytes: Bytes::new(), persist });
            }
        }
        let thread = bus::spawn(receiver, writer, shared.clone())?;
        Ok(HubGuard::new(Hub { shared }, thread))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The sequence number of the last event queued on the bus.
    pub fn current_seq(&self) -> u64 {
        self.lock().seq
    }

    /// Hands out a new session id.
    pub fn next_session_id(&self) -> SessionId {
        self.shared.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    pub fn bus(&self) -> &BusHandle {
        &self.shared.bus
    }

    pub fn access(&self) -> &Arc<Access> {
        &self.shared.access
    }

    /// Puts a user online under `nick` (in no room yet). The nickname must be free or
    /// registered to `fingerprint`; on first use it is registered to it. On a standalone
    /// server the same person may be online on up to [`crate::limits::MAX_SESSIONS_PER_NICK`]
    /// sessions at once (several devices, [`nicknames`]); on a cluster node a session of the
    /// same key still holding the nickname (a connection that has not noticed it dropped) is
    /// ended and replaced.
    pub fn register(
        &self,
        id: SessionId,
        nick: Nick,
        fingerprint: Fingerprint,
        outbox: Outbox,
    ) -> Result<(), HubError> {
        self.register_as(id, nick, fingerprint, outbox, false)
    }

    /// [`Hub::register`], for a quiet session (`hello` with `quiet`) when `quiet` is true:
    /// rooms are not told of its joins and parts, and member lists mark it `bot`.
    pub fn register_as(
        &self,
        id: SessionId,
        nick: Nick,
        fingerprint: Fingerprint,
        outbox: Outbox,
        quiet: bool,
    ) -> Result<(), HubError> {
        let now = self.access().clock().now_ms();
        let mut st = self.lock();
        let folded = nick.folded();
        // Nicknames are the person's: a linked key's are its first key's ([`devices`]).
        let person = st.devices.person(&fingerprint).clone();
        let several = st.sequencer.registers_names();
        let mut released = Vec::new();
        if several {
            // A standalone server registers the name here (another key's is `nick_registered`
            // first, whether or not it is online); in a cluster, the session claimed it in the
            // cluster's buckets first. At hello nothing is left behind: only a reserved name
            // may make room.
            released = st.claim(&nick, &person, None, now, self.bus())?;
        }
        let holders = st.nicknames.holders(&folded).to_vec();
        if let Some(old) = holders.first()
            && st.user(*old)?.person != person
        {
            return Err(HubError::NickInUse(nick));
        }
        if several && holders.len() >= crate::limits::MAX_SESSIONS_PER_NICK {
            return Err(HubError::TooManySessions {
                nick,
                limit: crate::limits::MAX_SESSIONS_PER_NICK,
            });
        }
        if let (false, Some(&old)) = (several, holders.first()) {
            let bye = ServerMsg::Bye {
                code: Some(ErrorCode::Other),
                reason: "replaced by a new connection with the same key".into(),
            };
            st.remove_user(
                old,
                LeaveReason::Lost,
                Some("reconnected".into()),
                Some(bye),
                self.bus(),
            );
        }
        // The same person's session on another node, not yet known to be gone (the cluster
        // claim let us take the nickname): replaced, without a departure.
        if let Some(old) = st.remote.holder(&folded) {
            st.forget_remote(old);
        }
        // Away is the person's: a new session of someone away is away too.
        let away = holders.first().and_then(|h| st.users.get(h)).and_then(|u| u.away.clone());
        st.nicknames.hold(folded, id);
        let since = now_millis();
        st.announce(Presence::Online {
            user: remote::UserState {
                session: id,
                nick: nick.clone(),
                fingerprint: fingerprint.clone(),
                rooms: Vec::new(),
                away: away.clone(),
                since,
                quiet,
            },
        });
        // Queued behind `welcome` (which the session writes itself).
        if let Some(bytes) = names::released_notice(&released) {
            outbox.deliver(&bytes);
        }
        let user = User {
            nick,
            fingerprint,
            person,
            outbox,
            rooms: Vec::new(),
            away,
            since,
            quiet,
            fixed: false,
        };
        st.users.insert(id, user);
        Ok(())
    }

    /// Puts `id` in `room` (creating it) and announces the join to the room (the joiner
    /// included). Returns what the joiner needs to catch up. Joining a room one is in announces
    /// nothing and returns the same information.
    pub fn join(&self, id: SessionId, room_name: &RoomName) -> Result<Joined, HubError> {
        let mut st = self.lock();
        let user = st.user(id)?;
        let already = user.rooms.contains(room_name);
        if !already && user.rooms.len() >= MAX_ROOMS_PER_USER {
            return Err(HubError::TooManyRooms);
        }
        let (nick, fingerprint, outbox, quiet) =
            (user.nick.clone(), user.fingerprint.clone(), user.outbox.clone(), user.quiet);
        let cap = self.shared.config.history_on_join;
        let after = st.seq;
        let store = self.store().clone();
        // A room's first joiner becomes its operator ([`room_ops`]); bans and invite-only.
        let fresh = !already
            && *room_name != self.shared.config.default_room
            && !st.e2e.is_e2e(room_name)
            && !st.room_exists(&store, room_name)
            && st.unclaimed(self, room_name);
        if !already {
            st.check_entry(self, room_name, &fingerprint)?;
        }
        let siblings = st.listed_siblings(id);
        let room = st.load_room(&store, room_name, cap)?;
        // A large room is not told of the join (nor later of the part) until the newcomer
        // speaks; a small one is, and its joiner gets every member, who are then all known.
        // A room that lists the person already (another of their sessions is in it) is not
        // told again: the newcomer counts as announced.
        let large = room.is_large();
        let listed = room.lists_any(&siblings);
        let new = room.add(id, outbox.clone(), after, !large || listed);
        let (last_id, topic) = (room.last_id(), room.topic.clone());
        let tail: Vec<StoredMessage> = room.tail().cloned().collect();
        let (ids, total): (Vec<SessionId>, Option<u32>) = if large {
            let speakers = room.recent_speakers(now_millis()).filter(|s| *s != id);
            (std::iter::once(id).chain(speakers).collect(), Some(room.len() as u32))
        } else {
            room.reveal_all();
            (room.member_ids().collect(), None)
        };
        if new && let Some(u) = st.users.get_mut(&id) {
            u.rooms.push(room_name.clone());
        }
        if new {
            st.remember(id, room_name, true, self.bus());
        }
        let mut members: Vec<Member> = ids.iter().filter_map(|m| st.member(*m)).collect();
        if total.is_none()
            && let Some(room) = st.rooms.get(room_name)
        {
            members.extend(st.remote_members(room));
        }
        let mut keyed: Vec<(String, Member)> =
            members.into_iter().map(|m| (m.nick.folded(), m)).collect();
        rooms::one_per_person(&mut keyed);
        let mut members: Vec<Member> = keyed.into_iter().map(|(_, m)| m).collect();
        st.hide_bots(room_name, &mut members);
        if fresh && new {
            st.claim_room(self, room_name, id);
        }
        st.mark_ops(self, room_name, &mut members);
        if new {
            st.announce(Presence::Join { session: id, room: room_name.clone() });
            let join = encode(&ServerMsg::Join { room: room_name.clone(), nick, fingerprint });
            if large || quiet || listed {
                // Only the joiner hears it (it confirms the join): a large room hears of it
                // when the newcomer speaks, a quiet session's never, one that lists the
                // person already no more.
                outbox.deliver(&join);
            } else {
                let seq = st.next_seq();
                self.bus().send_control(BusEvent {
                    seq,
                    room: Some(room_name.clone()),
                    bytes: join,
                    persist: Persist::Nothing,
                });
            }
        }
        Ok(Joined {
            room: room_name.clone(),
            new,
            members,
            topic,
            last_id,
            seq: after,
            tail,
            total,
        })
    }

    /// What a member needs to catch up on `room` (as [`Hub::join`] returns, without joining).
    pub fn catch_up(&self, id: SessionId, room_name: &RoomName) -> Result<Joined, HubError> {
        let st = self.lock();
        let room = st
            .rooms
            .get(room_name)
            .filter(|r| r.contains(id))
            .ok_or_else(|| HubError::NotInRoom(room_name.clone()))?;
        Ok(Joined {
            room: room_name.clone(),
            new: false,
            members: vec![],
            topic: room.topic.clone(),
            last_id: room.last_id(),
            seq: st.seq,
            tail: room.tail().cloned().collect(),
            total: None,
        })
    }

    /// Takes `id` out of `room`, announcing it with `reason`.
    pub fn part(
        &self,
        id: SessionId,
        room_name: &RoomName,
        reason: LeaveReason,
        message: Option<String>,
    ) -> Result<(), HubError> {
        let mut st = self.lock();
        let nick = st.user(id)?.nick.clone();
        // Only a `part` forgets the room for the key, and before the leave is queued: the
        // others' leave is delivered once the bus has stored both (the parting session's own
        // at once; it is told if the forgetting could not be stored).
        // The key stays in the room while another session of the person is in it.
        let others = st.sessions_of_person(id);
        let stays = |r: &Room| others.iter().any(|s| *s != id && r.contains(*s));
        if reason == LeaveReason::Part
            && st.rooms.get(room_name).is_some_and(|r| r.contains(id) && !stays(r))
        {
            st.remember(id, room_name, false, self.bus());
        }
        if !st.part_locked(id, room_name, &nick, reason, message.clone(), self.bus()) {
            return Err(HubError::NotInRoom(room_name.clone()));
        }
        st.announce(Presence::Part { session: id, room: room_name.clone(), reason, message });
        if let Some(u) = st.users.get_mut(&id) {
            u.rooms.retain(|r| r != room_name);
        }
        Ok(())
    }

    /// Sends `text` from `id` to everyone in `room` (the sender included: its copy is its
    /// acknowledgement, and carries `cid`). Returns the message id when it was ordered here
    /// (standalone); `None` on a cluster node, where the id comes from the stream when the
    /// message comes back ([`sequencer`]). On acceptance the echo is remembered under the
    /// sender's key and `cid` ([`sent::SentIds`]), under the same lock on a standalone server
    /// and as the message is applied on a cluster, so a repeat that arrives next finds it.
    pub fn say(
        &self,
        id: SessionId,
        room_name: &RoomName,
        kind: MessageKind,
        text: String,
        cid: Option<chatao_proto::Cid>,
    ) -> Result<Option<u64>, HubError> {
        let mut st = self.lock();
        let by = Author::of(id, st.user(id)?, cid);
        match self.sequence(&mut st, room_name, by, RoomBody::Message { kind, text })? {
            Sequenced::Message(msg_id) => Ok(Some(msg_id)),
            _ => Ok(None),
        }
    }

    /// The echo that key `fingerprint`'s message `cid` got, when it was accepted recently
    /// ([`sent::SentIds`]): a message sent again is answered with it, not delivered again.
    pub fn sent_echo(&self, fingerprint: &str, cid: chatao_proto::Cid) -> Option<Bytes> {
        self.lock().sent.echo(fingerprint, cid)
    }

    /// A private message from `id` to the user called `to`; every session of both receives
    /// it, carrying `cid`.
    /// On a local delivery the echo is remembered under the sender's key and `cid` (in memory
    /// only: private messages are not stored).
    pub fn private(
        &self,
        id: SessionId,
        to: &str,
        kind: MessageKind,
        text: String,
        cid: Option<chatao_proto::Cid>,
    ) -> Result<(), HubError> {
        let mut st = self.lock();
        let user = st.user(id)?;
        let (from, sender) = (user.nick.clone(), user.fingerprint.clone());
        let (to_nick, target) = match st.find_nick(to) {
            Some(Holder::Local(target)) => (st.user(target)?.nick.clone(), Holder::Local(target)),
            Some(Holder::Remote(rid)) => match st.remote.get(&rid) {
                Some(u) => (u.nick.clone(), Holder::Remote(rid)),
                _ => return Err(HubError::NoSuchNick(to.to_owned())),
            },
            None => return Err(HubError::NoSuchNick(to.to_owned())),
        };
        st.last_private += 1;
        let msg = remote::Private {
            id: st.last_private,
            time: now_millis(),
            from,
            to: to_nick,
            kind,
            text,
            session: id,
            fingerprint: sender.clone(),
            cid,
        };
        let target = match target {
            Holder::Local(target) => target,
            Holder::Remote(rid) => {
                // The sender's copy (its acknowledgement) comes once the other node delivered it.
                st.sequencer.tell_nodes(Outbound::Private { node: rid.node, msg });
                return Ok(());
            }
        };
        let mut msg = msg.to_msg();
        if let ServerMsg::Private { cid: c, .. } = &mut msg {
            *c = cid;
        }
        // Every session of the recipient, and every session of the sender (its own copy is
        // its acknowledgement; its other devices see the whole conversation), each once.
        let mut ids = st.sessions_of_person(target);
        for s in st.sessions_of_person(id) {
            if !ids.contains(&s) {
                ids.push(s);
            }
        }
        let echo = encode(&msg);
        st.tell(&ids, &echo);
        if let Some(cid) = cid {
            st.sent.record(&sender, cid, echo, now_millis());
        }
        Ok(())
    }

    /// The topic of `room` (of a room not in memory, as the store has it).
    pub fn topic(&self, room_name: &RoomName) -> Option<String> {
        self.lock().topic_of(self.store(), room_name)
    }

    /// Sets (or with `None` clears) the topic of a room `id` is in, announcing it to the room.
    pub fn set_topic(
        &self,
        id: SessionId,
        room_name: &RoomName,
        text: Option<String>,
    ) -> Result<(), HubError> {
        let mut st = self.lock();
        let by = Author::of(id, st.user(id)?, None);
        st.check_topic(self, room_name, &by.fingerprint)?;
        if !st.rooms.get(room_name).is_some_and(|r| r.contains(id)) {
            return Err(HubError::NotInRoom(room_name.clone()));
        }
        self.sequence(&mut st, room_name, by, RoomBody::Topic { text })?;
        Ok(())
    }

    /// Renames `id`; everyone sharing a room with them, and they, are told. At most one change
    /// per [`crate::limits::NICK_CHANGE_INTERVAL`] per key; the name left is reserved for the
    /// key for a grace period, or released at once to make room ([`names`]), which the user is
    /// told in a `notice`.
    pub fn rename(&self, id: SessionId, new: Nick) -> Result<(), HubError> {
        let now = self.access().clock().now_ms();
        let mut st = self.lock();
        let user = st.user(id)?;
        // The person's: a linked key renames its first key's nickname ([`devices`]).
        let (old, fingerprint) = (user.nick.clone(), user.person.clone());
        let (old_folded, new_folded) = (old.folded(), new.folded());
        if old == new {
            return Ok(());
        }
        st.check_change_rate(&fingerprint, now)?;
        st.nicknames.may_rename(&old, &new, &fingerprint)?;
        // On a cluster node the nickname was claimed cluster-wide first, so a remote user still
        // listed under it is a stale entry of a node not yet known to be gone.
        if old_folded != new_folded
            && let Some(stale) = st.remote.holder(&new_folded)
        {
            st.forget_remote(stale);
        }
        let mut released = Vec::new();
        if st.sequencer.registers_names() {
            released = st.claim(&new, &fingerprint, Some(&old), now, self.bus())?;
            if old_folded != new_folded {
                st.release(&old, &fingerprint, now, self.bus());
            }
        }
        st.note_change(&fingerprint, now);
        // The person is renamed on every session (several devices hold one nickname).
        let sessions = st.sessions_of_person(id);
        for s in &sessions {
            st.nicknames.let_go(&old_folded, *s);
            st.nicknames.hold(new_folded.clone(), *s);
            if let Some(u) = st.users.get_mut(s) {
                u.nick = new.clone();
            }
            st.announce(Presence::Nick { session: *s, new: new.clone() });
        }
        let audience = st.person_audience(id);
        st.tell(&audience, &encode(&ServerMsg::NickChange { old, new }));
        if let (Some(bytes), Some(u)) = (names::released_notice(&released), st.users.get(&id)) {
            u.outbox.deliver(&bytes);
        }
        Ok(())
    }

    /// Marks the person of session `id` away (`Some`) or back, on all their sessions; everyone
    /// sharing a room with them, and they, are told.
    pub fn set_away(&self, id: SessionId, reason: Option<String>) -> Result<(), HubError> {
        let mut st = self.lock();
        let nick = st.user(id)?.nick.clone();
        // Away is the person's: set or cleared on every session of the nickname.
        for s in st.sessions_of_person(id) {
            if let Some(u) = st.users.get_mut(&s) {
                u.away = reason.clone();
            }
            st.announce(Presence::Away { session: s, reason: reason.clone() });
        }
        let audience = st.person_audience(id);
        st.tell(&audience, &encode(&ServerMsg::Away { nick, reason }));
        Ok(())
    }

    /// Who `nick` is.
    pub fn whois(&self, nick: &str) -> Result<ServerMsg, HubError> {
        let st = self.lock();
        if let Some(Holder::Remote(rid)) = st.find_nick(nick)
            && let Some(user) = st.remote.get(&rid)
        {
            return Ok(ServerMsg::Whois {
                nick: user.nick.clone(),
                fingerprint: user.fingerprint.clone(),
                rooms: user.rooms.clone(),
                away: user.away.clone(),
                since: user.since,
                sessions: 1,
            });
        }
        let ids = Nick::parse(nick).map(|n| st.nicknames.holders(&n.folded())).unwrap_or(&[]);
        let user = ids
            .first()
            .and_then(|id| st.users.get(id))
            .ok_or_else(|| HubError::NoSuchNick(nick.to_owned()))?;
        // The rooms of every session of the person, each once, the oldest session's first.
        let mut rooms = user.rooms.clone();
        for u in ids.iter().skip(1).filter_map(|id| st.users.get(id)) {
            for r in &u.rooms {
                if !rooms.contains(r) {
                    rooms.push(r.clone());
                }
            }
        }
        Ok(ServerMsg::Whois {
            nick: user.nick.clone(),
            fingerprint: user.fingerprint.clone(),
            rooms,
            away: user.away.clone(),
            since: user.since,
            sessions: ids.len() as u32,
        })
    }

    /// The away reason of `nick`, if they are online and away.
    pub fn away_reason(&self, nick: &str) -> Option<(Nick, String)> {
        let st = self.lock();
        match st.find_nick(nick)? {
            Holder::Local(id) => {
                st.users.get(&id).and_then(|u| Some((u.nick.clone(), u.away.clone()?)))
            }
            Holder::Remote(r) => {
                st.remote.get(&r).and_then(|u| Some((u.nick.clone(), u.away.clone()?)))
            }
        }
    }

    /// The nickname `id` holds now.
    pub fn nick_of(&self, id: SessionId) -> Option<Nick> {
        self.lock().users.get(&id).map(|u| u.nick.clone())
    }

    /// Takes a user offline: they leave every room they are in, and each room's remaining
    /// members receive `leave` with `reason`. Unknown ids are ignored, so calling this twice is
    /// harmless.
    pub fn leave(&self, id: SessionId, reason: LeaveReason, message: Option<String>) {
        self.lock().remove_user(id, reason, message, None, self.bus());
    }

    /// Number of users online.
    pub fn online(&self) -> usize {
        self.lock().users.len()
    }
}

impl State {
    /// Takes `id` offline: out of every room (each told `reason`), and, when `bye` is given,
    /// its session is ended with it. Unknown ids are ignored.
    fn remove_user(
        &mut self,
        id: SessionId,
        reason: LeaveReason,
        message: Option<String>,
        bye: Option<ServerMsg>,
        bus: &BusHandle,
    ) {
        // The person's other sessions, before this one is gone: a room one of them is listed
        // in is not told this one left.
        let siblings = self.listed_siblings(id);
        let Some(user) = self.users.remove(&id) else { return };
        self.nicknames.let_go(&user.nick.folded(), id);
        self.device_seen(bus, &user.fingerprint);
        for room_name in &user.rooms {
            let who = (user.quiet, siblings.as_slice());
            self.part_locked_as(id, room_name, &user.nick, (reason, message.clone()), who, bus);
        }
        self.announce(Presence::Offline { session: id, reason, message });
        if let Some(bye) = bye {
            user.outbox.end(bye);
        }
    }

    /// Hands `msg` to everyone online.
    fn tell_everyone(&self, msg: &Bytes) {
        for u in self.users.values() {
            u.outbox.deliver(msg);
        }
    }

    /// Removes `id` from `room_name` and announces it (unless the room was never told of
    /// them); false if it was not a member. Forgets a room left empty ([`rooms`]).
    fn part_locked(
        &mut self,
        id: SessionId,
        room_name: &RoomName,
        nick: &Nick,
        reason: LeaveReason,
        message: Option<String>,
        bus: &BusHandle,
    ) -> bool {
        let quiet = self.users.get(&id).is_some_and(|u| u.quiet);
        let siblings = self.listed_siblings(id);
        self.part_locked_as(id, room_name, nick, (reason, message), (quiet, &siblings), bus)
    }

    /// [`State::part_locked`] for a session whose quietness and other sessions are known
    /// (`quiet`: the room was never told of it and is not told now; `siblings`:
    /// [`State::listed_siblings`]).
    fn part_locked_as(
        &mut self,
        id: SessionId,
        room_name: &RoomName,
        nick: &Nick,
        (reason, message): (LeaveReason, Option<String>),
        (quiet, siblings): (bool, &[SessionId]),
        bus: &BusHandle,
    ) -> bool {
        let Some(room) = self.rooms.get_mut(room_name) else { return false };
        // A member of a large room the room was never told about leaves as quietly, and so
        // does a quiet session, and a session whose person the room still lists through
        // another of their sessions.
        let listed = room.lists_any(siblings);
        let hidden = room.is_hidden(id) || quiet || listed;
        if !room.remove(id) {
            return false;
        }
        let leave =
            ServerMsg::Leave { room: room_name.clone(), nick: nick.clone(), reason, message };
        let bytes = encode(&leave);
        // The one who leaves hears it too (it confirms a part), straight away.
        if let Some(u) = self.users.get(&id) {
            u.outbox.deliver(&bytes);
        }
        if !hidden {
            let seq = self.next_seq();
            bus.send_control(BusEvent {
                seq,
                room: Some(room_name.clone()),
                bytes,
                persist: Persist::Nothing,
            });
        }
        self.forget_if_empty(room_name);
        true
    }
}

/// A standalone hub on a fresh store in `dir`, with `history_on_join` and no retention limit,
/// for the hub's unit tests.
#[cfg(test)]
pub(crate) fn test_hub(dir: &std::path::Path, history_on_join: usize) -> HubGuard {
    let store = Arc::new(Store::open(dir).expect("a store in a temporary directory"));
    let config = HubConfig {
        default_room: RoomName::lobby(),
        history_on_join,
        retention: Retention { max_messages: 0, max_age: None },
    };
    let access =
        crate::access::Access::load(Default::default(), crate::clock::Clock::default(), vec![])
            .expect("an empty access list");
    Hub::start(config, store, Arc::new(access)).expect("a hub on a fresh store")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Outgoing, outbox};
    use chatao_proto::decode_server;

    fn hub(dir: &std::path::Path) -> HubGuard {
        test_hub(dir, 3)
    }

    /// Everything delivered so far, once the bus has handled every queued event.
    fn drain(hub: &Hub, inbox: &mut Outgoing) -> Vec<ServerMsg> {
        let seq = hub.lock().seq;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(hub.bus().flushed(seq));
        let mut out = vec![];
        for record in inbox.take_queued().split(|&c| c == b'\n').filter(|r| !r.is_empty()) {
            out.push(decode_server(record).unwrap());
        }
        out
    }

    fn user(hub: &Hub, nick: &str) -> (SessionId, Outgoing) {
        let (mb, inbox) = outbox(64);
        let id = hub.next_session_id();
        hub.register(id, Nick::parse(nick).unwrap(), Fingerprint::example(nick), mb).unwrap();
        hub.join(id, &RoomName::lobby()).unwrap();
        (id, inbox)
    }

    fn texts(msgs: &[ServerMsg]) -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match m {
                ServerMsg::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn join_say_leave_reach_the_room_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let (a, mut ia) = user(&hub, "alice");
        let (_b, mut ib) = user(&hub, "bob");
        let lobby = RoomName::lobby();
        assert_eq!(hub.say(a, &lobby, MessageKind::Normal, "one".into(), None), Ok(Some(1)));
        assert_eq!(hub.say(a, &lobby, MessageKind::Normal, "two".into(), None), Ok(Some(2)));
        let alice_saw = drain(&hub, &mut ia);
        hub.leave(a, LeaveReason::Quit, Some("bye".into()));
        let bob_saw = drain(&hub, &mut ib);
        assert_eq!(bob_saw.len(), 4, "{bob_saw:?}");
        assert!(matches!(&bob_saw[0], ServerMsg::Join { nick, .. } if nick.as_str() == "bob"));
        assert!(matches!(&bob_saw[1], ServerMsg::Message { id: 1, text, .. } if text == "one"));
        assert!(matches!(&bob_saw[2], ServerMsg::Message { id: 2, .. }));
        assert!(matches!(&bob_saw[3], ServerMsg::Leave { reason: LeaveReason::Quit, .. }));
        assert_eq!(texts(&alice_saw), ["one", "two"]);
        assert!(
            alice_saw
                .iter()
                .any(|m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "bob"))
        );
        assert_eq!(hub.online(), 1);
    }

    #[test]
    fn a_joiner_gets_earlier_messages_as_history_and_later_ones_live_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let (a, _ia) = user(&hub, "alice");
        let lobby = RoomName::lobby();
        for t in ["1", "2", "3", "4"] {
            hub.say(a, &lobby, MessageKind::Normal, t.into(), None).unwrap();
        }
        // bob joins while the four messages may still be on their way through the bus.
        let (mb, mut ib) = outbox(64);
        let b = hub.next_session_id();
        hub.register(b, Nick::parse("bob").unwrap(), Fingerprint::example("fp"), mb).unwrap();
        let joined = hub.join(b, &lobby).unwrap();
        assert_eq!(joined.last_id, 4);
        assert_eq!(
            joined.tail.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["2", "3", "4"]
        );
        hub.say(a, &lobby, MessageKind::Normal, "5".into(), None).unwrap();
        assert_eq!(texts(&drain(&hub, &mut ib)), ["5"]);
        assert_eq!(hub.store().count(&lobby).unwrap(), 5, "all persisted");
    }

    #[test]
    fn nicknames_are_unique_regardless_of_case_and_renames_are_announced() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let (a, mut ia) = user(&hub, "alice");
        let (b, mut ib) = user(&hub, "bob");
        let (mb, _i) = outbox(4);
        let err =
            hub.register(99, Nick::parse("ALICE").unwrap(), Fingerprint::example("fp"), mb.clone());
        assert!(matches!(err, Err(HubError::NickRegistered(_))), "owned by another key");
        assert!(matches!(
            hub.rename(b, Nick::parse("Alice").unwrap()),
            Err(HubError::NickRegistered(_))
        ));
        hub.rename(a, Nick::parse("alicia").unwrap()).unwrap();
        for inbox in [&mut ia, &mut ib] {
            assert!(drain(&hub, inbox).iter().any(
                |m| matches!(m, ServerMsg::NickChange { new, .. } if new.as_str() == "alicia")
            ));
        }
        // The owner's key may take it back once it is free.
        assert!(
            hub.register(
                99,
                Nick::parse("ALICE").unwrap(),
                Fingerprint::example("SHA256:alice"),
                mb
            )
            .is_ok()
        );
    }

    #[test]
    fn rooms_are_isolated_and_private_messages_reach_only_their_two_ends() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let (a, mut ia) = user(&hub, "alice");
        let (b, mut ib) = user(&hub, "bob");
        let (_c, mut ic) = user(&hub, "carol");
        let rust = RoomName::parse("#rust").unwrap();
        hub.join(a, &rust).unwrap();
        hub.join(b, &rust).unwrap();
        hub.say(a, &rust, MessageKind::Normal, "crabs".into(), None).unwrap();
        hub.private(b, "ALICE", MessageKind::Normal, "psst".into(), None).unwrap();
        assert!(matches!(
            hub.private(b, "nobody", MessageKind::Normal, "x".into(), None),
            Err(HubError::NoSuchNick(_))
        ));
        assert_eq!(
            hub.say(a, &RoomName::parse("#other").unwrap(), MessageKind::Normal, "x".into(), None),
            Err(HubError::NotInRoom(RoomName::parse("#other").unwrap()))
        );
        let carol = drain(&hub, &mut ic);
        assert!(texts(&carol).is_empty());
        assert!(!carol.iter().any(|m| matches!(m, ServerMsg::Private { .. })));
        for inbox in [&mut ia, &mut ib] {
            let saw = drain(&hub, inbox);
            assert_eq!(texts(&saw), ["crabs"]);
            assert!(
                saw.iter().any(|m| matches!(m, ServerMsg::Private { text, .. } if text == "psst"))
            );
        }
    }

    /// Flushes the bus (every queued event persisted and delivered).
    fn settle(hub: &Hub) {
        let seq = hub.lock().seq;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(hub.bus().flushed(seq));
    }

    /// Issue 15 item 12: rooms made and left by a flood (with history, a topic, or nothing)
    /// leave no per-room memory: only the rooms in use and a bounded few just forgotten stay.
    /// Before the fix every room with a message or a topic stayed, and every other one stayed
    /// in `retired`, for ever.
    #[test]
    fn rooms_made_and_left_by_a_flood_leave_memory() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let (a, _ia) = user(&hub, "alice");
        for i in 0..1000 {
            let room = RoomName::parse(&format!("#flood{i}")).unwrap();
            hub.join(a, &room).unwrap();
            match i % 3 {
                0 => {
                    hub.say(a, &room, MessageKind::Normal, "x".into(), None).unwrap();
                }
                1 => hub.set_topic(a, &room, Some("t".into())).unwrap(),
                _ => {}
            }
            hub.part(a, &room, LeaveReason::Part, None).unwrap();
            if i % 50 == 49 {
                settle(&hub);
            }
            let (rooms, retired) = hub.rooms_in_memory();
            assert_eq!(rooms, 1, "only the lobby is in use");
            assert!(retired <= 4 * rooms::PRUNE_AT, "{retired} rooms remembered at {i}");
        }
        // Whatever was forgotten comes back from the store, ids and topic included.
        let r0 = RoomName::parse("#flood0").unwrap();
        let r1 = RoomName::parse("#flood1").unwrap();
        assert_eq!(hub.join(a, &r0).unwrap().last_id, 1);
        assert_eq!(hub.join(a, &r1).unwrap().topic.as_deref(), Some("t"));
    }

    /// A room forgotten and made again continues its ids, whether the store already has its
    /// last message (after the bus flushed) or not yet (joined again at once); its topic too.
    #[test]
    fn a_forgotten_room_made_again_continues_its_ids_and_keeps_its_topic() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let (a, _ia) = user(&hub, "alice");
        let rust = RoomName::parse("#rust").unwrap();
        let mut last = 0;
        for round in 0..4 {
            hub.join(a, &rust).unwrap();
            if round == 0 {
                hub.set_topic(a, &rust, Some("crabs".into())).unwrap();
            }
            let id =
                hub.say(a, &rust, MessageKind::Normal, format!("{round}"), None).unwrap().unwrap();
            assert!(id > last, "ids go on: {last} then {id}");
            last = id;
            hub.part(a, &rust, LeaveReason::Part, None).unwrap();
            assert_eq!(hub.rooms_in_memory().0, 1, "forgotten");
            if round % 2 == 1 {
                settle(&hub);
                // Push it out of `retired` too: the store must answer.
                for i in 0..(2 * rooms::PRUNE_AT) {
                    let other = RoomName::parse(&format!("#other{round}x{i}")).unwrap();
                    hub.join(a, &other).unwrap();
                    hub.part(a, &other, LeaveReason::Part, None).unwrap();
                }
                settle(&hub);
            }
        }
        let joined = hub.join(a, &rust).unwrap();
        assert_eq!((joined.last_id, joined.topic.as_deref()), (last, Some("crabs")));
        assert_eq!(last, 4);
    }

    /// Startup loads no room: a store of 2,000 rooms with history gives a hub with none in
    /// memory (before: every one of them, 758 MB at a million), and a join reads its room.
    #[test]
    fn startup_loads_no_room_and_a_join_reads_its_own() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut w = store.writer(Retention { max_messages: 0, max_age: None }).unwrap();
            let batch: Vec<Persist> = (0..2000)
                .map(|i| {
                    Persist::Message(StoredMessage {
                        room: RoomName::parse(&format!("#r{i}")).unwrap(),
                        id: 7,
                        time: 1,
                        from: Nick::parse("old").unwrap(),
                        kind: MessageKind::Normal,
                        text: "x".into(),
                        sender: None,
                        cid: None,
                    })
                })
                .collect();
            w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        }
        let hub = hub(dir.path());
        assert_eq!(hub.rooms_in_memory(), (0, 0));
        let (a, _ia) = user(&hub, "alice");
        let r = RoomName::parse("#r1999").unwrap();
        assert_eq!(hub.join(a, &r).unwrap().last_id, 7);
        assert_eq!(hub.say(a, &r, MessageKind::Normal, "y".into(), None), Ok(Some(8)));
        assert_eq!(hub.rooms_in_memory().0, 2, "the lobby and #r1999");
    }

    /// Issue 15 item 17: the joiner of a large room gets itself and the recent speakers with
    /// the member count, not the whole list; of a small room, everyone.
    #[test]
    fn a_large_rooms_joiner_gets_the_recent_speakers_and_the_count() {
        use crate::limits::LARGE_ROOM;
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let big = RoomName::parse("#big").unwrap();
        let mut ids = vec![];
        for i in 0..LARGE_ROOM + 20 {
            let (mb, inbox) = outbox(4 * LARGE_ROOM);
            let id = hub.next_session_id();
            hub.register(
                id,
                Nick::parse(&format!("m{i}")).unwrap(),
                Fingerprint::example(&format!("fp{i}")),
                mb,
            )
            .unwrap();
            let joined = hub.join(id, &big).unwrap();
            if i < LARGE_ROOM {
                assert_eq!((joined.members.len(), joined.total), (i + 1, None), "small: all");
            } else {
                assert_eq!(joined.total, Some(i as u32 + 1));
                assert_eq!(joined.members.len(), 1, "only the joiner: nobody spoke");
            }
            ids.push((id, inbox));
        }
        hub.say(ids[3].0, &big, MessageKind::Normal, "hi".into(), None).unwrap();
        let (mb, _inbox) = outbox(64);
        let id = hub.next_session_id();
        hub.register(id, Nick::parse("late").unwrap(), Fingerprint::example("fpl"), mb).unwrap();
        let joined = hub.join(id, &big).unwrap();
        let nicks: Vec<&str> = joined.members.iter().map(|m| m.nick.as_str()).collect();
        assert_eq!(nicks, ["late", "m3"]);
        assert_eq!(joined.total, Some(LARGE_ROOM as u32 + 21));
    }
}
