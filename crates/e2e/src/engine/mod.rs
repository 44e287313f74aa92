//! [`E2e`]: one client's MLS groups, pins and logs, over openmls.
//!
//! Files: this one holds the type, opening, persistence and the checkpoint every mutating call
//! runs in; `membership.rs` groups and their members (create, add, remove, pending commits,
//! join, forget); `messages.rs` encryption, ordered processing and the log; `pins.rs` the pin
//! checks and the commit events built from them.
//!
//! Every public method that changes state works on a checkpoint: if anything fails (openmls, the
//! disk), the in-memory state is rolled back to the checkpoint, so memory and `state.json` never
//! disagree and a failed call can simply be retried or ignored. The one exception is by design:
//! [`E2e::process`] records the message id as processed even when the body is refused, so a
//! poison message in the room's order is not retried forever.

mod membership;
mod messages;
mod pins;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chatao_transport::Fingerprint;
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::storage::StorageProvider as _;

use crate::identity::{
    claimed_fingerprint, derive_signer, display_identity, fingerprint_of_secret, key_fingerprint,
    make_credential, verify_credential,
};
use crate::log::{self, LOG_DIR, LOG_SLACK, LogEntry, MAX_LOG_PER_ROOM};
use crate::store::{self, PastEpoch, PendingMeta, RoomMeta, StateFile, StateLock};
use crate::{E2eError, Event, Joined, MemberInfo, Pending, PinStatus, Warning};
use membership::parse_group_id;
use pins::{member_info, warning_of};

/// The MLS ciphersuite of every Chatao group.
pub const CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

/// Largest MLS body accepted from the network (commit, welcome, key package, message); bigger
/// ones are refused before parsing.
pub const MAX_BODY_LEN: usize = 1024 * 1024;

/// Largest plaintext [`E2e::encrypt`] and [`E2e::record_own`] accept. Chatao frames are at
/// most 64 KiB, so nothing larger could be sent anyway; it also bounds the log's entries.
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;

/// Key packages whose private keys are kept; when more are made, the oldest are deleted (a
/// welcome made from one of those can no longer be joined). Also the most one call makes.
pub const MAX_KEY_PACKAGES: usize = 100;

/// Own application messages remembered (in memory only) so their echo from the server can be
/// shown and logged: MLS cannot decrypt its own messages. Overflow drops the oldest.
pub const SENT_CACHE: usize = 64;

/// Deferred changes (incoming messages processed) after which `state.json` is written anyway.
pub const LAZY_SAVE_EVERY: usize = 32;

/// Age of the oldest deferred change after which the next change writes `state.json`.
pub const LAZY_SAVE_AFTER: Duration = Duration::from_secs(1);

/// Past epochs whose secrets are kept, so an application message sent just before a commit
/// (the server orders it after) still decrypts.
const MAX_PAST_EPOCHS: usize = 5;

/// Sender-ratchet window: messages are ordered by the server, so this only absorbs gaps.
const OUT_OF_ORDER_TOLERANCE: u32 = 10;
const MAX_FORWARD_DISTANCE: u32 = 1000;

/// Application messages are padded to a multiple of this many bytes, hiding exact lengths.
const PADDING_SIZE: usize = 32;

/// Group ids are `chatao/<room>/<open|invite>/<16 random bytes>`: the room name is bound into the
/// group (a welcome for one room cannot be passed off as another's), so is the mode its creator
/// chose (every member reads it from the group, never from the server), and a re-created room
/// never collides.
const GROUP_ID_PREFIX: &[u8] = b"chatao/";
const GROUP_ID_RANDOM: usize = 16;
const MODE_OPEN: &[u8] = b"/open";
const MODE_INVITE: &[u8] = b"/invite";

/// The openmls provider: RustCrypto for crypto and randomness, the in-memory key-value storage
/// that this crate snapshots into `state.json`.
#[derive(Default)]
struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

/// One own application message awaiting its echo.
struct Sent {
    room: String,
    body_sha256: [u8; 32],
    plaintext: Vec<u8>,
}

/// A leaf of a group as the pin checks see it.
#[derive(Clone, PartialEq, Eq)]
struct Leaf {
    index: u32,
    identity: Vec<u8>,
    key: Vec<u8>,
}

/// The state a failed call rolls back to.
struct Checkpoint {
    storage: HashMap<Vec<u8>, Vec<u8>>,
    rooms: BTreeMap<String, RoomMeta>,
    pins: BTreeMap<Fingerprint, Vec<u8>>,
    key_packages: VecDeque<Vec<u8>>,
}

/// A client's end-to-end encryption engine: its MLS identity, its groups (one per E2E room),
/// the pinned keys of the members it has seen, and the local log of decrypted messages, all
/// kept under one state directory. Not thread-safe by itself (`&mut self` everywhere); the
/// client owns one and calls it from one task. Methods do file I/O (and fsync, see
/// [`E2e::set_sync`]); call them from a blocking-friendly context.
pub struct E2e {
    dir: PathBuf,
    fingerprint: Fingerprint,
    signer: SignatureKeyPair,
    /// Our MLS credential identity: fingerprint, X25519 key, XEdDSA binding (see `identity`).
    credential: Vec<u8>,
    provider: Provider,
    groups: HashMap<String, MlsGroup>,
    rooms: BTreeMap<String, RoomMeta>,
    pins: BTreeMap<Fingerprint, Vec<u8>>,
    /// Hash references of kept key packages, oldest first; at most [`MAX_KEY_PACKAGES`].
    key_packages: VecDeque<Vec<u8>>,
    /// Own messages awaiting their echo; at most [`SENT_CACHE`], oldest dropped.
    sent: VecDeque<Sent>,
    sync: bool,
    /// Changes made since the last write of `state.json` (see `save_lazy`).
    unsaved: usize,
    saved_at: Instant,
    /// The state directory's lock, held by this engine while it lives (released after the
    /// last write of `Drop`: fields drop after it).
    _lock: store::EngineClaim,
}

impl fmt::Debug for E2e {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E2e")
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint)
            .field("rooms", &self.rooms.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for E2e {
    /// Writes the deferred changes; a failure is only logged (the changes are then redone
    /// from the server's history after the next start).
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "could not write E2E state on close");
        }
    }
}

impl E2e {
    /// Opens the E2E state of the identity `secret` (whose fingerprint must be `fingerprint`)
    /// under `dir`, creating it if needed (directory 0700, files 0600) and continuing every
    /// group found there.
    ///
    /// Errors: [`E2eError::Identity`] if `fingerprint` is not the secret's or the directory
    /// belongs to another identity; [`E2eError::Corrupt`] for a damaged state file; I/O errors.
    pub fn open(dir: &Path, secret: &[u8; 32], fingerprint: &str) -> Result<E2e, E2eError> {
        let own_fp = fingerprint_of_secret(secret);
        if own_fp != fingerprint {
            return Err(E2eError::Identity(format!(
                "the key's fingerprint is {own_fp}, not {fingerprint}"
            )));
        }
        // Held for the life of this E2e: a second process (or instance) on the same state
        // would overwrite this one's state.json with an older view and lose keys.
        let lock = std::sync::Arc::new(StateLock::acquire(dir)?);
        E2e::open_locked(lock, secret, fingerprint)
    }

    /// As [`E2e::open`], in the directory of `lock`, which the caller keeps after this engine
    /// is dropped (to open the next one without letting another process in between).
    ///
    /// Errors: as [`E2e::open`]; [`E2eError::Locked`] (with our own pid) while another engine
    /// is open on the same lock.
    pub fn open_locked(
        lock: std::sync::Arc<StateLock>,
        secret: &[u8; 32],
        fingerprint: &str,
    ) -> Result<E2e, E2eError> {
        let own_fp = fingerprint_of_secret(secret);
        if own_fp != fingerprint {
            return Err(E2eError::Identity(format!(
                "the key's fingerprint is {own_fp}, not {fingerprint}"
            )));
        }
        let dir = &lock.dir().to_owned();
        let locked = E2eError::Locked { dir: dir.clone(), pid: Some(std::process::id()) };
        let lock = StateLock::claim(lock).ok_or(locked)?;
        store::ensure_private_dir(&dir.join(LOG_DIR))?;
        let state = StateFile::load(dir)?;
        let fresh = state.is_none();
        let state = state.unwrap_or_else(|| StateFile::new(fingerprint));
        if state.fingerprint != fingerprint {
            return Err(E2eError::Identity(format!(
                "{} holds the E2E state of {}, not of {fingerprint}",
                dir.display(),
                state.fingerprint
            )));
        }
        let corrupt = |detail: &str| E2eError::Corrupt {
            path: dir.join(store::STATE_FILE),
            detail: detail.to_owned(),
        };
        let storage_map = state.storage_map(dir)?;
        let mut pins = BTreeMap::new();
        for (fp, key) in &state.pins {
            let fp = Fingerprint::parse(fp).map_err(|_| corrupt("bad pin"))?;
            pins.insert(fp, STANDARD.decode(key).map_err(|_| corrupt("bad pin"))?);
        }
        let mut key_packages = VecDeque::new();
        for r in &state.key_packages {
            key_packages.push_back(STANDARD.decode(r).map_err(|_| corrupt("bad key package ref"))?);
        }

        let provider = Provider::default();
        *provider.storage.values.write().unwrap_or_else(|p| p.into_inner()) = storage_map;

        let signer = derive_signer(secret)?;
        let credential = make_credential(secret, signer.public())?;
        if verify_credential(&credential, signer.public()).as_deref() != Ok(fingerprint) {
            return Err(E2eError::Identity("own MLS credential does not verify".into()));
        }
        let mut e2e = E2e {
            dir: dir.to_owned(),
            fingerprint: own_fp,
            signer,
            credential,
            provider,
            groups: HashMap::new(),
            rooms: BTreeMap::new(),
            pins,
            key_packages,
            sent: VecDeque::new(),
            sync: true,
            unsaved: 0,
            saved_at: Instant::now(),
            _lock: lock,
        };
        for (room, meta) in state.rooms {
            let gid = STANDARD.decode(&meta.group_id).map_err(|_| corrupt("bad group id"))?;
            match MlsGroup::load(&e2e.provider.storage, &GroupId::from_slice(&gid)) {
                Ok(Some(group)) => {
                    e2e.groups.insert(room.clone(), group);
                    e2e.rooms.insert(room, meta);
                }
                Ok(None) => {
                    tracing::warn!(%room, "E2E state has no MLS group for this room; dropping it")
                }
                Err(e) => return Err(corrupt(&format!("group of {room}: {e}"))),
            }
        }
        if fresh {
            e2e.save()?;
        } else {
            // Tighten a state file that was copied in with a wider mode.
            store::ensure_private_file(&dir.join(store::STATE_FILE))?;
        }
        tracing::debug!(fingerprint, rooms = e2e.rooms.len(), "opened E2E state");
        Ok(e2e)
    }

    /// Whether the writes that must survive a power loss (encrypt, commits, key packages,
    /// joins) are fsynced (default true). Turning it off keeps every write atomic (a crash
    /// leaves the old or the new state) but a power loss could then roll the state back to
    /// before a sent message, and the next message would reuse its key: for tests and
    /// benchmarks only. Processing incoming messages never fsyncs (rolling it back is harmless).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// This client's Chatao fingerprint (its MLS credential identity).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// This client's MLS signature public key (32-byte Ed25519), derived from its Chatao key.
    pub fn signature_key(&self) -> Vec<u8> {
        self.signer.to_public_vec()
    }

    /// Fingerprint of [`E2e::signature_key`], as shown in `/safety`.
    pub fn signature_key_fp(&self) -> String {
        key_fingerprint(self.signer.public())
    }

    /// The pinned signature key of `fingerprint`, if it was seen.
    pub fn pin(&self, fingerprint: &str) -> Option<&[u8]> {
        self.pins.get(fingerprint).map(Vec::as_slice)
    }

    /// Makes `n` (at most [`MAX_KEY_PACKAGES`]) key packages to upload, as MLS wire bytes.
    /// They are marked last-resort (a server may hand the last one out more than once), and
    /// only the newest [`MAX_KEY_PACKAGES`] private keys are kept.
    pub fn key_packages(&mut self, n: usize) -> Result<Vec<Vec<u8>>, E2eError> {
        let n = n.min(MAX_KEY_PACKAGES);
        self.transact(None, |s| {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let bundle = KeyPackage::builder()
                    .mark_as_last_resort()
                    // A key package's extensions must be listed in its leaf's capabilities.
                    .leaf_node_capabilities(
                        Capabilities::builder().extensions(vec![ExtensionType::LastResort]).build(),
                    )
                    .build(CIPHERSUITE, &s.provider, &s.signer, s.credential_with_key())
                    .map_err(|e| E2eError::mls("key package", e))?;
                let hash_ref = bundle
                    .key_package()
                    .hash_ref(s.provider.crypto())
                    .map_err(|e| E2eError::mls("key package", e))?;
                let hash_ref = hash_ref
                    .tls_serialize_detached()
                    .map_err(|e| E2eError::mls("key package", e))?;
                s.key_packages.push_back(hash_ref);
                let bytes = MlsMessageOut::from(bundle.key_package().clone())
                    .to_bytes()
                    .map_err(|e| E2eError::mls("key package", e))?;
                out.push(bytes);
            }
            while s.key_packages.len() > MAX_KEY_PACKAGES {
                if let Some(old) = s.key_packages.pop_front() {
                    let old = KeyPackageRef::tls_deserialize_exact_bytes(&old)
                        .map_err(|e| E2eError::mls("key package", e))?;
                    s.provider
                        .storage
                        .delete_key_package(&old)
                        .map_err(|e| E2eError::mls("key package", e))?;
                }
            }
            s.save()?;
            Ok(out)
        })
    }

    /// Rooms with local group state (including ones this client was removed from).
    pub fn rooms(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// The room's group epoch: the epoch a commit made now must be sent with.
    pub fn epoch(&self, room: &str) -> Option<u64> {
        self.groups.get(room).map(|g| g.epoch().as_u64())
    }

    /// The room's mode as its creator chose it, read from the MLS group id: `Some(true)` for an
    /// open room, `Some(false)` for invite-only, `None` if there is no group for the room.
    pub fn is_open(&self, room: &str) -> Option<bool> {
        let group = self.groups.get(room)?;
        parse_group_id(group.group_id().as_slice()).map(|(_, open)| open)
    }

    /// This client's MLS credential identity (see [`crate::identity`]): what other members
    /// verify with [`crate::verify_credential`].
    pub fn credential(&self) -> &[u8] {
        &self.credential
    }

    /// True if this client is a member of the room's group.
    pub fn is_member(&self, room: &str) -> bool {
        self.groups.get(room).is_some_and(MlsGroup::is_active)
    }

    /// Records `id` as the room's last processed message (never moves it backwards).
    pub fn set_last_id(&mut self, room: &str, id: u64) -> Result<(), E2eError> {
        if !self.rooms.contains_key(room) {
            return Err(E2eError::NoGroup(room.to_owned()));
        }
        self.transact(Some(room), |s| {
            s.advance(room, id);
            s.save_lazy()
        })
    }

    /// The id of the last message processed in the room: fetch history after it.
    pub fn last_id(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).and_then(|m| m.last_id)
    }

    /// The room's members with their fingerprints and pin status, for a safety check. Empty if
    /// there is no group. Does not pin anything.
    pub fn members(&self, room: &str) -> Vec<MemberInfo> {
        let Some(group) = self.groups.get(room) else { return Vec::new() };
        let own = group.own_leaf_index().u32();
        group
            .members()
            .map(|m| leaf_of(&m))
            .map(|leaf| {
                let status = self.status_of(&leaf);
                member_info(&leaf, status, leaf.index == own)
            })
            .collect()
    }

    fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.credential.clone()).into(),
            signature_key: self.signer.to_public_vec().into(),
        }
    }

    /// Runs `f` on a checkpoint: on error, memory is rolled back (and the room's group reloaded
    /// from the rolled-back storage).
    fn transact<T>(
        &mut self,
        room: Option<&str>,
        f: impl FnOnce(&mut Self) -> Result<T, E2eError>,
    ) -> Result<T, E2eError> {
        let checkpoint = Checkpoint {
            storage: self.storage_values(),
            rooms: self.rooms.clone(),
            pins: self.pins.clone(),
            key_packages: self.key_packages.clone(),
        };
        match f(self) {
            Ok(v) => Ok(v),
            Err(e) => {
                *self.provider.storage.values.write().unwrap_or_else(|p| p.into_inner()) =
                    checkpoint.storage;
                self.rooms = checkpoint.rooms;
                self.pins = checkpoint.pins;
                self.key_packages = checkpoint.key_packages;
                if let Some(room) = room {
                    self.reload_group(room);
                }
                Err(e)
            }
        }
    }

    fn storage_values(&self) -> HashMap<Vec<u8>, Vec<u8>> {
        self.provider.storage.values.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reload_group(&mut self, room: &str) {
        self.groups.remove(room);
        let Some(meta) = self.rooms.get(room) else { return };
        let Ok(gid) = STANDARD.decode(&meta.group_id) else { return };
        match MlsGroup::load(&self.provider.storage, &GroupId::from_slice(&gid)) {
            Ok(Some(group)) => {
                self.groups.insert(room.to_owned(), group);
            }
            _ => tracing::warn!(%room, "E2E group could not be reloaded after a failed call"),
        }
    }

    /// Writes the state durably (fsynced when [`E2e::set_sync`] is on). Every call that makes
    /// or consumes outgoing secrets (encrypt, commits, key packages, join) saves this way
    /// before returning: a state that lost such a write could reuse a message key (nonce
    /// reuse) or a commit's secrets. It also writes every deferred change (the file is whole).
    fn save(&mut self) -> Result<(), E2eError> {
        self.save_with(self.sync)
    }

    /// Records a change that a crash may undo harmlessly: processing incoming messages (after a
    /// restart they are fetched and processed again from the older state, whose keys are still
    /// there; the log drops the duplicate entries), merging or discarding a pending commit, ids.
    /// Such changes are written (atomically, without fsync) at most every [`LAZY_SAVE_EVERY`]
    /// changes or [`LAZY_SAVE_AFTER`], by the next durable save, by [`E2e::flush`], or when the
    /// `E2e` is dropped; rewriting the whole state file per incoming message was most of the
    /// cost of reading an E2E room.
    fn save_lazy(&mut self) -> Result<(), E2eError> {
        self.unsaved += 1;
        if self.unsaved >= LAZY_SAVE_EVERY || self.saved_at.elapsed() >= LAZY_SAVE_AFTER {
            self.save_with(false)?;
        }
        Ok(())
    }

    /// Writes the deferred changes now (a client may call it when idle; dropping the `E2e`
    /// does it too). Nothing to do if there are none.
    pub fn flush(&mut self) -> Result<(), E2eError> {
        if self.unsaved > 0 { self.save_with(false) } else { Ok(()) }
    }

    fn save_with(&mut self, sync: bool) -> Result<(), E2eError> {
        let storage = {
            let values = self.provider.storage.values.read().unwrap_or_else(|p| p.into_inner());
            store::encode_storage(&values)
        };
        let state = StateFile {
            version: StateFile::new("").version,
            fingerprint: self.fingerprint.to_string(),
            storage,
            pins: self.pins.iter().map(|(k, v)| (k.to_string(), STANDARD.encode(v))).collect(),
            rooms: self.rooms.clone(),
            key_packages: self.key_packages.iter().map(|r| STANDARD.encode(r)).collect(),
        };
        state.save(&self.dir, sync)?;
        self.unsaved = 0;
        self.saved_at = Instant::now();
        Ok(())
    }

    fn active_group(&self, room: &str) -> Result<&MlsGroup, E2eError> {
        let group = self.groups.get(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        if !group.is_active() {
            return Err(E2eError::NotMember(room.to_owned()));
        }
        if group.pending_commit().is_some() {
            return Err(E2eError::PendingCommit(room.to_owned()));
        }
        Ok(group)
    }

    fn group_id_bytes(&self, room: &str) -> Result<Vec<u8>, E2eError> {
        let meta = self.rooms.get(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        STANDARD.decode(&meta.group_id).map_err(|_| E2eError::Corrupt {
            path: self.dir.join(store::STATE_FILE),
            detail: "bad group id".into(),
        })
    }

    fn leaves(&self, room: &str) -> Vec<Leaf> {
        self.groups
            .get(room)
            .map(|g| g.members().map(|m| leaf_of(&m)).collect())
            .unwrap_or_default()
    }

    /// Remembers the leaves' signature keys of `epoch` (the epoch a commit is leaving), for
    /// attributing messages of that epoch processed later (see `messages.rs`). Keeps the newest
    /// [`MAX_PAST_EPOCHS`] epochs, the ones openmls can still decrypt.
    fn record_epoch(&mut self, room: &str, epoch: u64, leaves: &[Leaf]) {
        let Some(meta) = self.rooms.get_mut(room) else { return };
        meta.past.retain(|p| p.epoch != epoch);
        meta.past.push(PastEpoch {
            epoch,
            keys: leaves.iter().map(|l| (l.index, STANDARD.encode(&l.key))).collect(),
        });
        while meta.past.len() > MAX_PAST_EPOCHS {
            meta.past.remove(0);
        }
    }

    /// The signature key leaf `index` had in past `epoch`, if recorded.
    fn past_key(&self, room: &str, epoch: u64, index: u32) -> Option<Vec<u8>> {
        let meta = self.rooms.get(room)?;
        let past = meta.past.iter().find(|p| p.epoch == epoch)?;
        let (_, key) = past.keys.iter().find(|(i, _)| *i == index)?;
        STANDARD.decode(key).ok()
    }

    fn advance(&mut self, room: &str, id: u64) {
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.last_id = Some(meta.last_id.map_or(id, |last| last.max(id)));
        }
    }
}

fn check_len(len: usize, max: usize) -> Result<(), E2eError> {
    if len > max { Err(E2eError::TooLarge { len, max }) } else { Ok(()) }
}

/// Parses MLS wire bytes; the whole input must be one message.
fn parse(body: &[u8]) -> Result<MlsMessageIn, E2eError> {
    MlsMessageIn::tls_deserialize_exact_bytes(body).map_err(|e| E2eError::Malformed(e.to_string()))
}

/// The identity of a basic credential; empty (never a valid fingerprint) for other types.
fn basic_identity(credential: &Credential) -> Vec<u8> {
    BasicCredential::try_from(credential.clone()).map(|c| c.identity().to_vec()).unwrap_or_default()
}

fn leaf_of(member: &Member) -> Leaf {
    Leaf {
        index: member.index.u32(),
        identity: basic_identity(&member.credential),
        key: member.signature_key.clone(),
    }
}
