//! End-to-end encrypted rooms: the hub as an MLS delivery service.
//!
//! The server never sees a group secret. For each E2E room it keeps only what delivery needs:
//! whether the room is open, its epoch (the count of commit records it accepted), and the keys
//! it is delivered to (persistent membership by fingerprint: a member who disconnects stays a
//! member and catches up from history). What it orders and relays are opaque MLS messages:
//!
//! - a `commit` is accepted only at the room's current epoch, which it then increments, so
//!   concurrent commits are serialised (the loser gets `stale_epoch`, processes the winner's
//!   commit and tries again). The epoch counts commit *records*, valid or not: clients count
//!   the `kind=commit` records they receive, so a garbage commit moves both sides alike and
//!   cannot freeze the room (docs/PROTOCOL.md 13);
//! - application messages (`sealed`) get the room's next message id like plain messages, and
//!   are stored and relayed as ciphertext;
//! - welcomes go straight to the added key's sessions, and wait in the store while it is
//!   offline;
//! - key packages are kept per key (at most [`MAX_KEY_PACKAGES`], for at most
//!   [`MAX_KEY_PACKAGE_KEYS`] keys) and handed out one per fetch;
//! - a room whose delivery list becomes empty is forgotten, with its history and welcomes.
//!
//! Room events still leave through the bus, so the order, persistence-before-delivery and
//! catch-up guarantees of plain rooms hold unchanged. E2E rooms work on a standalone server.

use std::collections::{BTreeSet, HashMap, VecDeque};

use base64::Engine as _;
use bytes::Bytes;
use chatao_proto::{
    ErrorCode, LeaveReason, Nick, RoomName, SealedKind, SealedWelcome, ServerMsg, encode,
};

use super::{Hub, Joined, SessionId, State, now_millis};
use crate::bus::{BusEvent, BusFull};
use crate::limits::{
    MAX_COMMIT_CHANGES, MAX_KEY_PACKAGE_KEYS, MAX_KEY_PACKAGES, MAX_PENDING_WELCOMES,
    MAX_SEALED_BYTES,
};
use crate::store::e2e::{E2ePersist, WelcomeRecord};
use crate::store::{Persist, Store, StoreError, StoredSealed};

/// Why the hub refused an E2E request. Each maps to one wire error code ([`E2eRefusal::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eRefusal {
    #[error("{0} already exists")]
    RoomExists(RoomName),
    #[error("{0} is an end-to-end encrypted room: only its members' clients can send there")]
    E2eRoom(RoomName),
    #[error("{0} is not an end-to-end encrypted room")]
    NotE2e(RoomName),
    #[error("{0} is invite-only: a member must /invite you")]
    NotInvited(RoomName),
    #[error("you are not a member of {0}")]
    NotMember(RoomName),
    #[error("{room} is at epoch {current}: process the messages that came in, then commit again")]
    StaleEpoch { room: RoomName, current: u64 },
    #[error(
        "{0} has no key package on this server (they must connect once with a client that supports E2E rooms)"
    )]
    NoKeyPackage(String),
    #[error("no user called {0} is known")]
    NoSuchNick(String),
    #[error("asked the members of {0} to add you; wait for their client")]
    Requested(RoomName),
    #[error("no member of {0} is online to add you; try again later")]
    NobodyOnline(RoomName),
    #[error("too many key packages fetched; try again in a minute")]
    TooManyFetches,
    #[error("invalid E2E message: {0}")]
    Invalid(&'static str),
    #[error("invalid E2E message: a body of {0} characters, over the limit of {MAX_SEALED_BYTES}")]
    TooLarge(usize),
    #[error("the server is busy; your message was not accepted, try again")]
    Busy,
    #[error("no such session")]
    UnknownSession,
    #[error(
        "end-to-end encrypted rooms need a standalone server: this server is one node of a cluster"
    )]
    InCluster,
}

impl E2eRefusal {
    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            E2eRefusal::RoomExists(_) => ErrorCode::RoomExists,
            E2eRefusal::E2eRoom(_) | E2eRefusal::NotE2e(_) => ErrorCode::E2eRoom,
            E2eRefusal::NotInvited(_) => ErrorCode::NotInvited,
            E2eRefusal::NotMember(_) => ErrorCode::NotInRoom,
            E2eRefusal::StaleEpoch { .. } => ErrorCode::StaleEpoch,
            E2eRefusal::NoKeyPackage(_) => ErrorCode::NoKeyPackage,
            E2eRefusal::NoSuchNick(_) => ErrorCode::NoSuchNick,
            E2eRefusal::Busy => ErrorCode::Busy,
            E2eRefusal::TooManyFetches => ErrorCode::RateLimited,
            E2eRefusal::Invalid(_) => ErrorCode::Invalid,
            E2eRefusal::TooLarge(_) => ErrorCode::TooLong,
            E2eRefusal::Requested(_)
            | E2eRefusal::NobodyOnline(_)
            | E2eRefusal::UnknownSession
            | E2eRefusal::InCluster => ErrorCode::Other,
        }
    }
}

/// The E2E part of the hub's state (inside [`State`], under the same lock).
#[derive(Debug, Default)]
pub(super) struct E2eState {
    rooms: HashMap<RoomName, E2eRoom>,
    /// Fingerprint to key packages (base64), oldest first, at most [`MAX_KEY_PACKAGES`], for at
    /// most [`MAX_KEY_PACKAGE_KEYS`] keys (overflow: the key that uploaded least recently and
    /// is offline is forgotten).
    key_packages: HashMap<String, VecDeque<String>>,
    /// When each key in `key_packages` last uploaded (an upload counter), for the eviction.
    uploaded: HashMap<String, u64>,
    upload_seq: u64,
    /// Fingerprint to the welcomes waiting for it, at most [`MAX_PENDING_WELCOMES`].
    welcomes: HashMap<String, Vec<WelcomeRecord>>,
}

#[derive(Debug)]
struct E2eRoom {
    open: bool,
    epoch: u64,
    /// Fingerprints the room is delivered to.
    members: BTreeSet<String>,
}

impl E2eState {
    /// What the store remembers.
    pub(super) fn load(store: &Store) -> Result<E2eState, StoreError> {
        let mut st = E2eState::default();
        for rec in store.load_e2e_rooms()? {
            let members = rec.members.into_iter().collect();
            st.rooms.insert(rec.room, E2eRoom { open: rec.open, epoch: rec.epoch, members });
        }
        for (fp, packages) in store.load_key_packages()? {
            st.upload_seq += 1;
            st.uploaded.insert(fp.clone(), st.upload_seq);
            st.key_packages.insert(fp, packages.into_iter().collect());
        }
        for w in store.load_welcomes()? {
            st.welcomes.entry(w.fingerprint.clone()).or_default().push(w);
        }
        Ok(st)
    }

    /// True if `room` is end-to-end encrypted.
    pub(super) fn is_e2e(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }
}

/// A non-empty base64 body within the size limit: an empty one is `invalid` (no MLS message
/// is empty), a longer one `too_long`.
fn check_body(body: &str) -> Result<(), E2eRefusal> {
    if body.is_empty() {
        return Err(E2eRefusal::Invalid("empty body"));
    }
    if body.len() > MAX_SEALED_BYTES {
        return Err(E2eRefusal::TooLarge(body.len()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map(|_| ())
        .map_err(|_| E2eRefusal::Invalid("body is not base64"))
}

/// A key fingerprint in normal form (what the server itself sends): `SHA256:` and the base64
/// of 32 bytes, exactly as [`chatao_transport::keys::parse_fingerprint`] writes it.
fn check_fingerprint(fp: &str) -> Result<(), E2eRefusal> {
    match chatao_transport::keys::parse_fingerprint(fp) {
        Ok(normal) if normal == fp => Ok(()),
        _ => Err(E2eRefusal::Invalid("not a key fingerprint")),
    }
}

/// Stores that `room` has no topic any more (nobody is told: the room is empty).
fn topic_cleared(hub: &Hub, seq: u64, room: &RoomName) {
    hub.bus().send_control(BusEvent {
        seq,
        room: None,
        bytes: Bytes::new(),
        persist: Persist::Topic { room: room.clone(), text: None },
    });
}

fn persist(st: &mut State, hub: &Hub, p: E2ePersist) {
    let seq = st.next_seq();
    hub.bus().send_control(BusEvent {
        seq,
        room: None,
        bytes: Bytes::new(),
        persist: Persist::E2e(p),
    });
}

impl State {
    /// The sessions online under key `fp`.
    fn sessions_of(&self, fp: &str) -> Vec<SessionId> {
        self.users.iter().filter(|(_, u)| u.fingerprint == fp).map(|(id, _)| *id).collect()
    }

    /// The fingerprint of the user called `nick`: online, or the key that registered it.
    fn fingerprint_of(&self, nick: &str) -> Option<(Nick, String)> {
        let n = Nick::parse(nick).ok()?;
        if let Some(u) = self.nicks.get(&n.folded()).and_then(|id| self.users.get(id)) {
            return Some((u.nick.clone(), u.fingerprint.clone()));
        }
        self.owners.get(&n.folded()).map(|fp| (n, fp.clone()))
    }
}

impl Hub {
    /// True if `room` is an end-to-end encrypted room.
    pub fn is_e2e(&self, room: &RoomName) -> bool {
        self.lock().e2e.is_e2e(room)
    }

    /// Creates `room` (refused if it exists, in memory or as an E2E room) and joins `id` to it.
    /// An E2E room starts at epoch 0 with the creator's key as its only member.
    pub fn create(
        &self,
        id: SessionId,
        room: &RoomName,
        e2e: bool,
        open: bool,
    ) -> Result<Joined, E2eRefusal> {
        {
            let mut st = self.lock();
            let fp = st.user(id).map_err(|_| E2eRefusal::UnknownSession)?.fingerprint.clone();
            if st.rooms.contains_key(room) || st.e2e.is_e2e(room) {
                return Err(E2eRefusal::RoomExists(room.clone()));
            }
            if e2e && st.link.is_some() {
                // Their ids, epochs and membership would have to go through the cluster's
                // stream (docs/ARCHITECTURE.md says how); until then, refused.
                return Err(E2eRefusal::InCluster);
            }
            if e2e {
                let members = BTreeSet::from([fp.clone()]);
                st.e2e.rooms.insert(room.clone(), E2eRoom { open, epoch: 0, members });
                persist(&mut st, self, E2ePersist::Room { room: room.clone(), open, epoch: 0 });
                persist(
                    &mut st,
                    self,
                    E2ePersist::Member { room: room.clone(), fingerprint: fp, present: true },
                );
            }
        }
        self.join(id, room).map_err(|_| E2eRefusal::UnknownSession)
    }

    /// Decides whether `id` may join `room`: anyone may join a plain room; an E2E room only its
    /// members' keys. A non-member asking to join an open E2E room has its request passed to
    /// the members online (`join_request`), whose clients add it.
    pub fn admit(&self, id: SessionId, room: &RoomName) -> Result<(), E2eRefusal> {
        let mut st = self.lock();
        let Some(r) = st.e2e.rooms.get(room) else { return Ok(()) };
        let user = st.user(id).map_err(|_| E2eRefusal::UnknownSession)?;
        let (nick, fp) = (user.nick.clone(), user.fingerprint.clone());
        if r.members.contains(&fp) {
            // Joining is what a welcome was waiting for.
            let had = st.e2e.welcomes.get_mut(&fp).map(|ws| {
                let before = ws.len();
                ws.retain(|w| &w.room != room);
                before != ws.len()
            });
            if had == Some(true) {
                persist(
                    &mut st,
                    self,
                    E2ePersist::WelcomeDone { fingerprint: fp, room: room.clone() },
                );
            }
            return Ok(());
        }
        if !r.open {
            return Err(E2eRefusal::NotInvited(room.clone()));
        }
        let online: Vec<SessionId> =
            st.rooms.get(room).map(|r| r.member_ids().collect()).unwrap_or_default();
        if online.is_empty() {
            return Err(E2eRefusal::NobodyOnline(room.clone()));
        }
        let req = ServerMsg::JoinRequest { room: room.clone(), nick, fingerprint: fp };
        st.tell(&online, &encode(&req));
        Err(E2eRefusal::Requested(room.clone()))
    }

    /// Stores `packages` (base64 MLS key packages) for `id`'s key, keeping the newest
    /// [`MAX_KEY_PACKAGES`], then hands the session the welcomes waiting for its key.
    pub fn upload_key_packages(
        &self,
        id: SessionId,
        packages: Vec<String>,
    ) -> Result<(), E2eRefusal> {
        for p in &packages {
            check_body(p)?;
        }
        let mut st = self.lock();
        let user = st.user(id).map_err(|_| E2eRefusal::UnknownSession)?;
        let (fp, mailbox) = (user.fingerprint.clone(), user.mailbox.clone());
        if !st.e2e.key_packages.contains_key(&fp) {
            self.evict_key_packages(&mut st);
        }
        st.e2e.upload_seq += 1;
        let seq = st.e2e.upload_seq;
        st.e2e.uploaded.insert(fp.clone(), seq);
        let kept = st.e2e.key_packages.entry(fp.clone()).or_default();
        kept.extend(packages);
        while kept.len() > MAX_KEY_PACKAGES {
            kept.pop_front();
        }
        let packages = kept.iter().cloned().collect();
        persist(&mut st, self, E2ePersist::KeyPackages { fingerprint: fp.clone(), packages });
        for w in st.e2e.welcomes.get(&fp).into_iter().flatten() {
            let msg = ServerMsg::Invited {
                room: w.room.clone(),
                from: w.from.clone(),
                id: w.id,
                epoch: w.epoch,
                body: w.body.clone(),
            };
            mailbox.deliver(&encode(&msg));
        }
        Ok(())
    }

    /// Makes room for one more key in the key-package table when it holds
    /// [`MAX_KEY_PACKAGE_KEYS`]: forgets the packages of the key that uploaded least recently
    /// among those offline (if every one is online, the table grows past the cap by the online
    /// keys only, which the connection cap bounds).
    fn evict_key_packages(&self, st: &mut State) {
        if st.e2e.key_packages.len() < MAX_KEY_PACKAGE_KEYS {
            return;
        }
        let online: std::collections::HashSet<&str> =
            st.users.values().map(|u| u.fingerprint.as_str()).collect();
        let oldest = st
            .e2e
            .uploaded
            .iter()
            .filter(|(fp, _)| !online.contains(fp.as_str()))
            .min_by_key(|(_, seq)| **seq)
            .map(|(fp, _)| fp.clone());
        if let Some(fp) = oldest {
            st.e2e.uploaded.remove(&fp);
            st.e2e.key_packages.remove(&fp);
            tracing::debug!(fingerprint = %fp, "key packages evicted (table full)");
            persist(st, self, E2ePersist::KeyPackages { fingerprint: fp, packages: vec![] });
        }
    }

    /// One key package of `nick`'s key (the last one is kept and handed out again).
    pub fn fetch_key_package(
        &self,
        nick: &str,
        room: Option<RoomName>,
    ) -> Result<ServerMsg, E2eRefusal> {
        let mut st = self.lock();
        let (nick, fp) =
            st.fingerprint_of(nick).ok_or_else(|| E2eRefusal::NoSuchNick(nick.to_owned()))?;
        let kept = st.e2e.key_packages.get_mut(&fp);
        let package = match kept {
            Some(k) if k.len() > 1 => k.pop_front(),
            Some(k) => k.front().cloned(),
            None => None,
        }
        .ok_or_else(|| E2eRefusal::NoKeyPackage(nick.to_string()))?;
        if let Some(k) = st.e2e.key_packages.get(&fp) {
            let packages = k.iter().cloned().collect();
            persist(&mut st, self, E2ePersist::KeyPackages { fingerprint: fp.clone(), packages });
        }
        Ok(ServerMsg::KeyPackage { nick, fingerprint: fp, package, room })
    }

    /// Orders an MLS commit made at `epoch` by `id` in `room`: refused unless `epoch` is the
    /// room's current epoch; then the room moves to the next epoch, the commit gets the room's
    /// next message id, is stored and relayed to the members, the delivery list gains `adds`
    /// and loses `removes` (their sessions leave the room), and `welcome` goes to its key.
    /// Returns the commit's message id.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        id: SessionId,
        room_name: &RoomName,
        epoch: u64,
        body: String,
        welcome: Option<SealedWelcome>,
        adds: Vec<String>,
        removes: Vec<String>,
    ) -> Result<u64, E2eRefusal> {
        check_body(&body)?;
        if adds.len() + removes.len() > MAX_COMMIT_CHANGES {
            return Err(E2eRefusal::Invalid("too many changes in one commit"));
        }
        for fp in adds.iter().chain(&removes) {
            check_fingerprint(fp)?;
        }
        if let Some(w) = &welcome {
            check_fingerprint(&w.to)?;
            check_body(&w.body)?;
            // Welcomes wait in the store for their key: only for a key this commit adds, so
            // nobody can park welcomes for made-up keys.
            if !adds.contains(&w.to) {
                return Err(E2eRefusal::Invalid("a welcome for a key the commit does not add"));
            }
        }
        let mut st = self.lock();
        let msg_id = self.order_sealed(
            &mut st,
            id,
            room_name,
            Some(epoch),
            None,
            SealedKind::Commit,
            body,
            None,
        )?;
        let from = st.user(id).map_err(|_| E2eRefusal::UnknownSession)?.nick.clone();
        let Some(r) = st.e2e.rooms.get_mut(room_name) else {
            return Err(E2eRefusal::NotE2e(room_name.clone()));
        };
        r.epoch += 1;
        let (open, new_epoch) = (r.open, r.epoch);
        let added: Vec<String> =
            adds.into_iter().filter(|fp| r.members.insert(fp.clone())).collect();
        let removed: Vec<String> = removes.into_iter().filter(|fp| r.members.remove(fp)).collect();
        persist(
            &mut st,
            self,
            E2ePersist::Room { room: room_name.clone(), open, epoch: new_epoch },
        );
        for fp in added {
            persist(
                &mut st,
                self,
                E2ePersist::Member { room: room_name.clone(), fingerprint: fp, present: true },
            );
        }
        for fp in removed {
            self.expel(&mut st, room_name, &fp, &from);
        }
        // Removing every key leaves a room nobody can read: forget it (no welcome can follow,
        // since a welcome needs its key among the adds).
        if self.forget_if_empty(&mut st, room_name) {
            return Ok(msg_id);
        }
        if let Some(w) = welcome {
            let rec = WelcomeRecord {
                fingerprint: w.to.clone(),
                room: room_name.clone(),
                from: from.clone(),
                id: msg_id,
                epoch: new_epoch,
                body: w.body,
            };
            let invited = ServerMsg::Invited {
                room: room_name.clone(),
                from,
                id: msg_id,
                epoch: new_epoch,
                body: rec.body.clone(),
            };
            let sessions = st.sessions_of(&w.to);
            st.tell(&sessions, &encode(&invited));
            let waiting = st.e2e.welcomes.entry(w.to).or_default();
            waiting.retain(|x| &x.room != room_name);
            if waiting.len() >= MAX_PENDING_WELCOMES {
                waiting.remove(0);
            }
            waiting.push(rec.clone());
            persist(&mut st, self, E2ePersist::Welcome(rec));
        }
        Ok(msg_id)
    }

    /// Orders an MLS application message from `id` in `room`. The stated epoch is stored and
    /// relayed but not checked: receivers keep a few past epochs' secrets.
    pub fn seal(
        &self,
        id: SessionId,
        room_name: &RoomName,
        epoch: u64,
        body: String,
        cid: Option<chatao_proto::Cid>,
    ) -> Result<u64, E2eRefusal> {
        check_body(&body)?;
        let mut st = self.lock();
        let kind = SealedKind::Application;
        self.order_sealed(&mut st, id, room_name, None, Some(epoch), kind, body, cid)
    }

    /// A member of an E2E room parts: its key leaves the delivery list. Its MLS leaf stays in
    /// the group until a member's client commits its removal (`/remove`: clients never take
    /// the server's word for it). The last key to leave takes the room with it. Does nothing
    /// for plain rooms.
    pub fn e2e_part(&self, id: SessionId, room: &RoomName) {
        let mut st = self.lock();
        let Ok(fp) = st.user(id).map(|u| u.fingerprint.clone()) else { return };
        let Some(r) = st.e2e.rooms.get_mut(room) else { return };
        if r.members.remove(&fp) {
            persist(
                &mut st,
                self,
                E2ePersist::Member { room: room.clone(), fingerprint: fp, present: false },
            );
            self.forget_if_empty(&mut st, room);
        }
    }

    /// Forgets `room` if its delivery list is empty: the E2E room, its stored MLS messages and
    /// welcomes. Returns true if it did.
    fn forget_if_empty(&self, st: &mut State, room: &RoomName) -> bool {
        if st.e2e.rooms.get(room).is_none_or(|r| !r.members.is_empty()) {
            return false;
        }
        st.e2e.rooms.remove(room);
        for ws in st.e2e.welcomes.values_mut() {
            ws.retain(|w| &w.room != room);
        }
        st.e2e.welcomes.retain(|_, ws| !ws.is_empty());
        persist(st, self, E2ePersist::RoomGone(room.clone()));
        // Its topic went with it, and its name is free again: `create` may make the room anew
        // (E2E or plain), its ids continuing from the last one.
        let Some(r) = st.rooms.get_mut(room) else { return true };
        if r.topic.take().is_some() {
            let seq = st.next_seq();
            topic_cleared(self, seq, room);
        }
        if let Some(r) = st.rooms.get(room)
            && r.is_empty()
        {
            let last_id = r.last_id();
            st.rooms.remove(room);
            st.retired.insert(room.clone(), last_id);
        }
        true
    }

    /// Member check, id and bus hand-off for a sealed message: `check_epoch` must be the room's
    /// epoch (commits); `stated_epoch` is only recorded (application messages). The echo carries
    /// `cid` and is remembered under the sender's key, as for `say`.
    #[allow(clippy::too_many_arguments)]
    fn order_sealed(
        &self,
        st: &mut State,
        id: SessionId,
        room_name: &RoomName,
        check_epoch: Option<u64>,
        stated_epoch: Option<u64>,
        kind: SealedKind,
        body: String,
        cid: Option<chatao_proto::Cid>,
    ) -> Result<u64, E2eRefusal> {
        let user = st.user(id).map_err(|_| E2eRefusal::UnknownSession)?;
        let (from, fp) = (user.nick.clone(), user.fingerprint.clone());
        let r = st.e2e.rooms.get(room_name).ok_or_else(|| E2eRefusal::NotE2e(room_name.clone()))?;
        if !r.members.contains(&fp) {
            return Err(E2eRefusal::NotMember(room_name.clone()));
        }
        let current = r.epoch;
        if let Some(epoch) = check_epoch
            && epoch != current
        {
            return Err(E2eRefusal::StaleEpoch { room: room_name.clone(), current });
        }
        let epoch = check_epoch.or(stated_epoch).unwrap_or(current);
        let seq = st.seq + 1;
        let room = st
            .rooms
            .get_mut(room_name)
            .filter(|r| r.contains(id))
            .ok_or_else(|| E2eRefusal::NotMember(room_name.clone()))?;
        let msg_id = room.last_id() + 1;
        let stored = StoredSealed {
            room: room_name.clone(),
            id: msg_id,
            time: now_millis(),
            from,
            epoch,
            kind,
            body,
            sender: Some(fp.clone()),
            cid,
        };
        let echo = encode(&stored.to_msg(false));
        let ev = BusEvent {
            seq,
            room: Some(room_name.clone()),
            bytes: echo.clone(),
            persist: Persist::E2e(E2ePersist::Sealed(stored)),
        };
        // An application message the store cannot write is refused to its sender and
        // delivered to nobody (`crate::bus`); a commit is delivered anyway (the commit count
        // has moved on in memory, and refusing it then would split the group).
        let queued = match check_epoch {
            None => self.bus().send_message_from(ev, id),
            Some(_) => self.bus().send_message(ev),
        };
        match queued {
            Ok(()) => {}
            Err(BusFull::Busy | BusFull::Closed) => return Err(E2eRefusal::Busy),
        }
        room.next_id();
        st.seq = seq;
        if let Some(cid) = cid {
            st.sent.record(&fp, cid, echo, now_millis());
        }
        Ok(msg_id)
    }

    /// Takes key `fp` off `room`'s delivery list: its sessions leave the room (`kicked`, "removed
    /// by ..."), its waiting welcome is dropped.
    fn expel(&self, st: &mut State, room: &RoomName, fp: &str, by: &Nick) {
        persist(
            st,
            self,
            E2ePersist::Member { room: room.clone(), fingerprint: fp.to_owned(), present: false },
        );
        if let Some(ws) = st.e2e.welcomes.get_mut(fp) {
            ws.retain(|w| &w.room != room);
            persist(
                st,
                self,
                E2ePersist::WelcomeDone { fingerprint: fp.to_owned(), room: room.clone() },
            );
        }
        for sid in st.sessions_of(fp) {
            let Some(nick) = st.users.get(&sid).map(|u| u.nick.clone()) else { continue };
            let message = Some(format!("removed from {room} by {by}"));
            if st.part_locked(sid, room, &nick, LeaveReason::Kicked, message, self.bus())
                && let Some(u) = st.users.get_mut(&sid)
            {
                u.rooms.retain(|r| r != room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hub::HubConfig;
    use crate::mailbox::{Inbox, mailbox};
    use crate::store::Retention;

    fn hub(dir: &std::path::Path) -> Hub {
        let store = Arc::new(Store::open(dir).unwrap());
        let config = HubConfig {
            default_room: RoomName::lobby(),
            history_on_join: 3,
            retention: Retention { max_messages: 0, max_age: None },
        };
        let access =
            crate::access::Access::load(Default::default(), crate::clock::Clock::default(), vec![])
                .unwrap();
        Hub::new(config, store, Arc::new(access)).unwrap()
    }

    fn user(hub: &Hub, nick: &str) -> (SessionId, Inbox) {
        let (mb, inbox) = mailbox(64);
        let id = hub.next_session_id();
        hub.register(id, Nick::parse(nick).unwrap(), format!("SHA256:{nick}"), mb).unwrap();
        (id, inbox)
    }

    #[test]
    fn a_full_key_package_table_evicts_the_key_that_uploaded_least_recently_among_the_offline() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        // alice uploads first (the oldest upload) and stays online.
        let (alice, _a) = user(&hub, "alice");
        hub.upload_key_packages(alice, vec!["S1A=".into()]).unwrap();
        {
            let mut st = hub.lock();
            for i in 0..MAX_KEY_PACKAGE_KEYS - 1 {
                let fp = format!("SHA256:offline{i}");
                st.e2e.upload_seq += 1;
                let seq = st.e2e.upload_seq;
                st.e2e.uploaded.insert(fp.clone(), seq);
                st.e2e.key_packages.insert(fp, VecDeque::from(["S1A=".to_owned()]));
            }
            assert_eq!(st.e2e.key_packages.len(), MAX_KEY_PACKAGE_KEYS);
        }
        let (bob, _b) = user(&hub, "bob");
        hub.upload_key_packages(bob, vec!["S1A=".into()]).unwrap();
        let st = hub.lock();
        assert_eq!(st.e2e.key_packages.len(), MAX_KEY_PACKAGE_KEYS, "capped");
        assert!(st.e2e.key_packages.contains_key("SHA256:alice"), "online keys are kept");
        assert!(st.e2e.key_packages.contains_key("SHA256:bob"));
        assert!(!st.e2e.key_packages.contains_key("SHA256:offline0"), "the oldest offline goes");
        assert!(st.e2e.key_packages.contains_key("SHA256:offline1"));
        assert_eq!(st.e2e.uploaded.len(), st.e2e.key_packages.len());
    }
}
