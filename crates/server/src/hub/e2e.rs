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
//! - key packages are checked (an MLS key package of Chatao's ciphersuite, signed, whose
//!   credential is the uploading key's), kept per key within count and byte bounds, and handed
//!   out one per fetch ([`key_packages`]);
//! - a room whose delivery list becomes empty is forgotten, with its history and welcomes.
//!
//! Room events still leave through the bus, so the order, persistence-before-delivery and
//! catch-up guarantees of plain rooms hold unchanged. E2E rooms work on a standalone server.

mod key_packages;

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use bytes::Bytes;
use chatao_proto::rate::TokenBucket;
use chatao_proto::{
    ErrorCode, LeaveReason, Nick, RoomName, SealedKind, SealedWelcome, ServerMsg, encode,
};

use super::{Hub, Joined, SessionId, State, now_millis};
use crate::bus::{BusEvent, BusFull};
use crate::limits::{
    KEY_PACKAGE_CHECKS_BURST, KEY_PACKAGE_CHECKS_PER_SEC, MAX_COMMIT_CHANGES,
    MAX_KEY_PACKAGE_BYTES, MAX_KEY_PACKAGES_PER_UPLOAD, MAX_PENDING_WELCOMES, MAX_SEALED_BYTES,
};
use crate::store::e2e::{E2ePersist, WelcomeRecord};
use crate::store::{Persist, Store, StoreError, StoredSealed};
use chatao_proto::Fingerprint;
pub use key_packages::KeyPackage;
use key_packages::KeyPackageTable;

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
    #[error("too many key packages uploaded; try again in a minute")]
    TooManyUploads,
    #[error("invalid E2E message: {0}")]
    Invalid(&'static str),
    #[error("invalid key package: {0}")]
    BadKeyPackage(&'static str),
    #[error("invalid key package: it is for another key than yours")]
    NotOwnKeyPackage,
    #[error(
        "invalid key package: {0} characters of base64, over the limit of {MAX_KEY_PACKAGE_BYTES} bytes decoded"
    )]
    KeyPackageTooLarge(usize),
    #[error(
        "invalid key packages: {0} in one upload, over the limit of {MAX_KEY_PACKAGES_PER_UPLOAD}"
    )]
    TooManyKeyPackages(usize),
    #[error("the server holds as many key packages as it can; try again later")]
    KeyPackagesFull,
    #[error("the server is checking as many key packages as it can; none kept, try again later")]
    KeyPackageChecksBusy,
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
            E2eRefusal::Busy | E2eRefusal::KeyPackagesFull | E2eRefusal::KeyPackageChecksBusy => {
                ErrorCode::Busy
            }
            E2eRefusal::TooManyFetches | E2eRefusal::TooManyUploads => ErrorCode::RateLimited,
            E2eRefusal::Invalid(_)
            | E2eRefusal::BadKeyPackage(_)
            | E2eRefusal::NotOwnKeyPackage
            | E2eRefusal::TooManyKeyPackages(_) => ErrorCode::Invalid,
            E2eRefusal::TooLarge(_) | E2eRefusal::KeyPackageTooLarge(_) => ErrorCode::TooLong,
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
    /// Every key's key packages, within the bounds of `limits.rs` (see [`key_packages`]).
    key_packages: KeyPackageTable,
    /// Fingerprint to the welcomes waiting for it, at most [`MAX_PENDING_WELCOMES`].
    welcomes: HashMap<Fingerprint, Vec<WelcomeRecord>>,
    /// The server-wide allowance of key-package checks ([`KEY_PACKAGE_CHECKS_PER_SEC`], made
    /// on first use).
    checks: Option<TokenBucket>,
}

#[derive(Debug)]
struct E2eRoom {
    open: bool,
    epoch: u64,
    /// Fingerprints the room is delivered to.
    members: BTreeSet<Fingerprint>,
}

impl E2eState {
    /// What the store remembers.
    pub(super) fn load(store: &Store) -> Result<E2eState, StoreError> {
        let mut st = E2eState::default();
        for rec in store.load_e2e_rooms()? {
            let members = rec.members.into_iter().collect();
            st.rooms.insert(rec.room, E2eRoom { open: rec.open, epoch: rec.epoch, members });
        }
        let table = &mut st.key_packages;
        store.load_key_packages(|fp, seq, package| table.load(fp, seq, package))?;
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
/// A fingerprint from a client: only the canonical form a server sends is accepted.
fn check_fingerprint(fp: &str) -> Result<Fingerprint, E2eRefusal> {
    match Fingerprint::parse(fp) {
        Ok(normal) if normal == fp => Ok(normal),
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

/// Hands session `id` the welcomes waiting for its key.
fn hand_welcomes(st: &State, id: SessionId) {
    let Ok(user) = st.user(id) else { return };
    for w in st.e2e.welcomes.get(&user.fingerprint).into_iter().flatten() {
        let msg = ServerMsg::Invited {
            room: w.room.clone(),
            from: w.from.clone(),
            id: w.id,
            epoch: w.epoch,
            body: w.body.clone(),
        };
        user.outbox.deliver(&encode(&msg));
    }
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
    fn fingerprint_of(&self, nick: &str) -> Option<(Nick, Fingerprint)> {
        let n = Nick::parse(nick).ok()?;
        if let Some(u) = self.nicknames.holder(&n.folded()).and_then(|id| self.users.get(&id)) {
            return Some((u.nick.clone(), u.fingerprint.clone()));
        }
        self.nicknames.owner(&n.folded()).map(|fp| (n, fp.clone()))
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
            if st.room_exists(self.store(), room) || st.e2e.is_e2e(room) {
                return Err(E2eRefusal::RoomExists(room.clone()));
            }
            if e2e && !st.sequencer.allows_e2e() {
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

    /// Takes `n` checks from the server-wide allowance: each package costs three signature
    /// verifications on a worker thread, so sessions together (each already bounded per
    /// minute) cannot take the CPU the chat needs.
    fn take_checks(&self, n: usize) -> bool {
        let now = std::time::Instant::now();
        let mut st = self.lock();
        let bucket = st.e2e.checks.get_or_insert_with(|| {
            TokenBucket::new(KEY_PACKAGE_CHECKS_PER_SEC, KEY_PACKAGE_CHECKS_BURST, now)
        });
        u32::try_from(n).is_ok_and(|n| bucket.try_take_n(n, now))
    }

    /// Checks `packages` (base64 MLS key packages uploaded by session `id` of key
    /// `fingerprint`: at most [`MAX_KEY_PACKAGES_PER_UPLOAD`], each by [`KeyPackage::check`],
    /// before the lock is taken; one bad package refuses the upload), then keeps them. Either
    /// way the session is handed the welcomes waiting for its key: an upload is how a client
    /// says it is ready for them, and they do not depend on its packages.
    pub fn upload_key_packages(
        &self,
        id: SessionId,
        fingerprint: &str,
        packages: Vec<String>,
    ) -> Result<(), E2eRefusal> {
        let n = packages.len();
        let checked = if n > MAX_KEY_PACKAGES_PER_UPLOAD {
            Err(E2eRefusal::TooManyKeyPackages(n))
        } else if n > 0 && !self.take_checks(n) {
            Err(E2eRefusal::KeyPackageChecksBusy)
        } else {
            packages.into_iter().map(|p| KeyPackage::check(p, fingerprint)).collect()
        };
        match checked {
            Ok(checked) => self.keep_key_packages(id, fingerprint, checked),
            Err(e) => {
                hand_welcomes(&self.lock(), id);
                Err(e)
            }
        }
    }

    /// Keeps `packages` (checked for key `fingerprint`, which must be `id`'s) within the bounds
    /// of [`key_packages`], then hands the session the welcomes waiting for its key (also when
    /// the table is full and the upload is refused with [`E2eRefusal::KeyPackagesFull`]). The
    /// store is told only what changed: the rows added, those they replaced, the keys evicted.
    fn keep_key_packages(
        &self,
        id: SessionId,
        fingerprint: &str,
        packages: Vec<KeyPackage>,
    ) -> Result<(), E2eRefusal> {
        let mut st = self.lock();
        let fp = st.user(id).map_err(|_| E2eRefusal::UnknownSession)?.fingerprint.clone();
        if fp != fingerprint {
            return Err(E2eRefusal::NotOwnKeyPackage);
        }
        // The keys online, gathered only if an eviction has to skip them.
        let State { users, e2e, .. } = &mut *st;
        let online = std::cell::OnceCell::<std::collections::HashSet<&str>>::new();
        let is_online = |k: &str| {
            online
                .get_or_init(|| users.values().map(|u| u.fingerprint.as_str()).collect())
                .contains(k)
        };
        let uploaded = e2e.key_packages.upload(&fp, packages, is_online);
        let uploaded = uploaded.map(|up| {
            for fingerprint in up.evicted {
                persist(&mut st, self, E2ePersist::KeyPackagesForgotten { fingerprint });
            }
            if !up.added.is_empty() {
                let (added, replaced) = (up.added, up.replaced);
                persist(
                    &mut st,
                    self,
                    E2ePersist::KeyPackagesAdded { fingerprint: fp.clone(), added, replaced },
                );
            }
        });
        hand_welcomes(&st, id);
        uploaded
    }

    /// Base64 bytes of key packages the hub holds (at most
    /// [`crate::limits::MAX_KEY_PACKAGE_TOTAL_BYTES`]).
    pub fn key_package_bytes(&self) -> usize {
        self.lock().e2e.key_packages.bytes()
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
        let (package, taken) = st
            .e2e
            .key_packages
            .take(&fp)
            .ok_or_else(|| E2eRefusal::NoKeyPackage(nick.to_string()))?;
        if let Some(seq) = taken {
            persist(&mut st, self, E2ePersist::KeyPackageTaken { fingerprint: fp.clone(), seq });
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
        let adds: Vec<Fingerprint> =
            adds.iter().map(|f| check_fingerprint(f)).collect::<Result<_, _>>()?;
        let removes: Vec<Fingerprint> =
            removes.iter().map(|f| check_fingerprint(f)).collect::<Result<_, _>>()?;
        let welcome_to = welcome.as_ref().map(|w| check_fingerprint(&w.to)).transpose()?;
        if let (Some(w), Some(to)) = (&welcome, &welcome_to) {
            check_body(&w.body)?;
            // Welcomes wait in the store for their key: only for a key this commit adds, so
            // nobody can park welcomes for made-up keys.
            if !adds.contains(to) {
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
        let added: Vec<Fingerprint> =
            adds.into_iter().filter(|fp| r.members.insert(fp.clone())).collect();
        let removed: Vec<Fingerprint> =
            removes.into_iter().filter(|fp| r.members.remove(fp)).collect();
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
        if let (Some(w), Some(to)) = (welcome, welcome_to) {
            let rec = WelcomeRecord {
                fingerprint: to,
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
            let sessions = st.sessions_of(&rec.fingerprint);
            st.tell(&sessions, &encode(&invited));
            let waiting = st.e2e.welcomes.entry(rec.fingerprint.clone()).or_default();
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
        if st.rooms.get(room).is_some_and(|r| r.is_empty()) {
            st.rooms.forget_e2e(room);
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
    fn expel(&self, st: &mut State, room: &RoomName, fp: &Fingerprint, by: &Nick) {
        persist(
            st,
            self,
            E2ePersist::Member { room: room.clone(), fingerprint: fp.clone(), present: false },
        );
        if let Some(ws) = st.e2e.welcomes.get_mut(fp) {
            ws.retain(|w| &w.room != room);
            persist(
                st,
                self,
                E2ePersist::WelcomeDone { fingerprint: fp.clone(), room: room.clone() },
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

    use super::*;
    use crate::limits::MAX_KEY_PACKAGE_KEYS;
    use crate::outbox::{Outgoing, outbox};

    fn hub(dir: &std::path::Path) -> crate::hub::HubGuard {
        crate::hub::test_hub(dir, 3)
    }

    fn user(hub: &Hub, nick: &str) -> (SessionId, Outgoing) {
        let (mb, inbox) = outbox(64);
        let id = hub.next_session_id();
        hub.register(id, Nick::parse(nick).unwrap(), Fingerprint::example(nick), mb).unwrap();
        (id, inbox)
    }

    fn packages(n: usize, len: usize, tag: usize) -> Vec<KeyPackage> {
        (0..n)
            .map(|i| KeyPackage::unchecked(format!("{tag:08}{i:04}{}", "A".repeat(len - 12))))
            .collect()
    }

    #[test]
    fn past_the_server_wide_check_allowance_an_upload_is_refused_busy_before_any_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let (alice, _a) = user(&hub, "alice");
        // Within the allowance, garbage is parsed and refused for what it is.
        let bad =
            hub.upload_key_packages(alice, &Fingerprint::example("alice"), vec!["AAAA".into()]);
        assert!(matches!(bad, Err(E2eRefusal::BadKeyPackage(_))), "{bad:?}");
        // Other sessions used up the rest of the burst (no time passes in between to speak of).
        assert!(hub.take_checks(KEY_PACKAGE_CHECKS_BURST as usize - 1));
        let busy =
            hub.upload_key_packages(alice, &Fingerprint::example("alice"), vec!["AAAA".into()]);
        assert_eq!(busy, Err(E2eRefusal::KeyPackageChecksBusy));
        assert_eq!(busy.unwrap_err().code(), ErrorCode::Busy);
        // An empty upload (only asking for the waiting welcomes) costs nothing.
        assert_eq!(hub.upload_key_packages(alice, &Fingerprint::example("alice"), vec![]), Ok(()));
    }

    #[test]
    fn a_full_key_package_table_evicts_the_key_that_uploaded_least_recently_among_the_offline() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        // alice uploads first (the oldest upload) and stays online.
        let (alice, _a) = user(&hub, "alice");
        hub.keep_key_packages(alice, &Fingerprint::example("alice"), packages(1, 16, 0)).unwrap();
        {
            let mut st = hub.lock();
            for i in 0..MAX_KEY_PACKAGE_KEYS - 1 {
                let fp = Fingerprint::example(&format!("offline{i}"));
                st.e2e.key_packages.upload(&fp, packages(1, 16, i), |_| false).unwrap();
            }
            assert_eq!(st.e2e.key_packages.keys(), MAX_KEY_PACKAGE_KEYS);
        }
        let (bob, _b) = user(&hub, "bob");
        hub.keep_key_packages(bob, &Fingerprint::example("bob"), packages(1, 16, 0)).unwrap();
        let st = hub.lock();
        let kp = &st.e2e.key_packages;
        assert_eq!(kp.keys(), MAX_KEY_PACKAGE_KEYS, "capped");
        assert!(kp.contains(&Fingerprint::example("alice")), "online keys are kept");
        assert!(kp.contains(&Fingerprint::example("bob")));
        assert!(!kp.contains(&Fingerprint::example("offline0")), "the oldest offline goes");
        assert!(kp.contains(&Fingerprint::example("offline1")));
        kp.assert_consistent();
    }

    #[test]
    fn the_bytes_held_for_thousands_of_keys_uploading_the_most_stay_within_the_limits() {
        use crate::limits::{
            MAX_KEY_PACKAGE_BYTES_PER_KEY, MAX_KEY_PACKAGE_TOTAL_BYTES, MAX_KEY_PACKAGES,
        };
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let most = key_packages::MAX_KEY_PACKAGE_B64;
        // 2,000 keys online, each uploading the most it may, three times over.
        let upload = |id, nick: &str, tag| {
            let fp = Fingerprint::example(nick);
            hub.keep_key_packages(id, &fp, packages(MAX_KEY_PACKAGES, most, tag))
        };
        let ids: Vec<(SessionId, Outgoing)> =
            (0..2_000).map(|i| user(&hub, &format!("u{i}"))).collect();
        for round in 0..3 {
            for (i, (id, _)) in ids.iter().enumerate() {
                upload(*id, &format!("u{i}"), round * 10_000 + i).unwrap();
            }
        }
        // Each keeps the newest that fit its byte bound: 16 KiB / 2,732 = 5 packages.
        let per_key = (MAX_KEY_PACKAGE_BYTES_PER_KEY / most) * most;
        assert_eq!(hub.key_package_bytes(), 2_000 * per_key);
        assert!(hub.key_package_bytes() <= MAX_KEY_PACKAGE_TOTAL_BYTES);
        hub.lock().e2e.key_packages.assert_consistent();
        // More keys than the total allows, all online: the table fills up to its bound, then
        // uploads are refused (nothing offline to forget), the bytes held never above it.
        let more: Vec<(SessionId, Outgoing)> =
            (0..1_000).map(|i| user(&hub, &format!("v{i}"))).collect();
        let mut refused = 0;
        for (i, (id, _)) in more.iter().enumerate() {
            match upload(*id, &format!("v{i}"), 50_000 + i) {
                Ok(()) => {}
                Err(E2eRefusal::KeyPackagesFull) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(hub.key_package_bytes() <= MAX_KEY_PACKAGE_TOTAL_BYTES);
        }
        let fit = MAX_KEY_PACKAGE_TOTAL_BYTES / per_key;
        assert_eq!(refused, 3_000 - fit, "refused only once full");
        assert_eq!(hub.key_package_bytes(), fit * per_key);
        // The first thousand go offline: their packages make room, oldest upload first.
        for (id, _) in &ids[..1_000] {
            hub.leave(*id, LeaveReason::Quit, None);
        }
        let (late, _l) = user(&hub, "late");
        upload(late, "late", 99_999).unwrap();
        let st = hub.lock();
        let kp = &st.e2e.key_packages;
        kp.assert_consistent();
        assert!(kp.contains(&Fingerprint::example("late")));
        assert!(
            !kp.contains(&Fingerprint::example("u0")),
            "the oldest offline upload was forgotten"
        );
        assert!(kp.contains(&Fingerprint::example("u1")), "only as much as needed");
        assert!(kp.contains(&Fingerprint::example("u1999")), "online keys are kept");
        assert!(kp.bytes() <= MAX_KEY_PACKAGE_TOTAL_BYTES);
    }

    #[test]
    fn an_upload_replaces_the_oldest_and_a_fetch_takes_one_each_a_single_row_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = KeyPackageTable::default();
        let _ = dir;
        let up = table.upload(&Fingerprint::example("a"), packages(10, 100, 1), |_| false).unwrap();
        assert_eq!(
            up.added.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert!(up.replaced.is_empty() && up.evicted.is_empty());
        // 10 more: the table keeps 16, the 4 oldest are replaced (and only they).
        let up = table.upload(&Fingerprint::example("a"), packages(10, 100, 2), |_| false).unwrap();
        assert_eq!(up.added.len(), 10);
        assert_eq!(up.replaced, [1, 2, 3, 4]);
        assert_eq!(table.count(&Fingerprint::example("a")), crate::limits::MAX_KEY_PACKAGES);
        // A fetch takes the oldest; the last one is handed out without being taken.
        assert_eq!(table.take(&Fingerprint::example("a")).unwrap().1, Some(5));
        for _ in 0..14 {
            assert!(table.take(&Fingerprint::example("a")).unwrap().1.is_some());
        }
        let (last, seq) = table.take(&Fingerprint::example("a")).unwrap();
        assert_eq!(seq, None);
        assert_eq!(table.take(&Fingerprint::example("a")).unwrap(), (last, None));
        table.assert_consistent();
        assert!(table.take(&Fingerprint::example("b")).is_none());
    }

    #[test]
    fn a_load_keeps_the_newest_rows_within_the_bounds() {
        use crate::limits::{MAX_KEY_PACKAGE_TOTAL_BYTES, MAX_KEY_PACKAGES};
        let mut table = KeyPackageTable::default();
        let big = "A".repeat(key_packages::MAX_KEY_PACKAGE_B64 + 1);
        // Newest first, as the store offers them: an oversize row, then 20 of one key.
        assert!(!table.load(&Fingerprint::example("a"), 100, big));
        let kept: Vec<bool> = (0..20)
            .rev()
            .map(|s| table.load(&Fingerprint::example("a"), s, format!("p{s}")))
            .collect();
        assert_eq!(kept.iter().filter(|k| **k).count(), MAX_KEY_PACKAGES);
        assert!(kept[..MAX_KEY_PACKAGES].iter().all(|k| *k), "the newest are kept");
        assert_eq!(table.take(&Fingerprint::example("a")).unwrap(), ("p4".to_owned(), Some(4)));
        // Many keys: the total bound holds, newest keys first.
        let most = key_packages::MAX_KEY_PACKAGE_B64;
        let mut seq = 10_000_000;
        for k in 0..20_000 {
            seq -= 1;
            table.load(&Fingerprint::example(&format!("k{k}")), seq, "B".repeat(most));
        }
        table.assert_consistent();
        assert!(table.bytes() <= MAX_KEY_PACKAGE_TOTAL_BYTES);
        assert!(
            table.contains(&Fingerprint::example("k0"))
                && !table.contains(&Fingerprint::example("k19999"))
        );
        // Uploads continue after the largest number seen, dropped rows included.
        let up = table.upload(&Fingerprint::example("a"), packages(1, 16, 0), |_| false).unwrap();
        assert_eq!(up.added[0].0, 10_000_000);
        table.assert_consistent();
    }
}
