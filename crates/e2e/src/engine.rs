//! [`E2e`]: one client's MLS groups, pins and logs, over openmls.
//!
//! Every public method that changes state works on a checkpoint: if anything fails (openmls, the
//! disk), the in-memory state is rolled back to the checkpoint, so memory and `state.json` never
//! disagree and a failed call can simply be retried or ignored. The one exception is by design:
//! [`E2e::process`] records the message id as processed even when the body is refused, so a
//! poison message in the room's order is not retried forever.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::storage::StorageProvider as _;
use sha2::{Digest, Sha256};

use crate::identity::{
    derive_signer, display_identity, fingerprint_of_secret, identity_fingerprint, key_fingerprint,
};
use crate::log::{self, LOG_DIR, LOG_SLACK, LogEntry, MAX_LOG_PER_ROOM};
use crate::store::{self, PendingMeta, RoomMeta, StateFile};
use crate::{E2eError, Event, Joined, MemberInfo, Pending, PinStatus, Warning};

/// The MLS ciphersuite of every Chatao group.
pub const CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

/// Largest MLS body accepted from the network (commit, welcome, key package, message); bigger
/// ones are refused before parsing.
pub const MAX_BODY_LEN: usize = 1024 * 1024;

/// Largest plaintext [`E2e::encrypt`] accepts.
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024;

/// Key packages whose private keys are kept; when more are made, the oldest are deleted (a
/// welcome made from one of those can no longer be joined). Also the most one call makes.
pub const MAX_KEY_PACKAGES: usize = 100;

/// Own application messages remembered (in memory only) so their echo from the server can be
/// shown and logged: MLS cannot decrypt its own messages. Overflow drops the oldest.
pub const SENT_CACHE: usize = 64;

/// Past epochs whose secrets are kept, so an application message sent just before a commit
/// (the server orders it after) still decrypts.
const MAX_PAST_EPOCHS: usize = 5;

/// Sender-ratchet window: messages are ordered by the server, so this only absorbs gaps.
const OUT_OF_ORDER_TOLERANCE: u32 = 10;
const MAX_FORWARD_DISTANCE: u32 = 1000;

/// Application messages are padded to a multiple of this many bytes, hiding exact lengths.
const PADDING_SIZE: usize = 32;

/// Group ids are `chatao/<room>/<16 random bytes>`: the room name is bound into the group (a
/// welcome for one room cannot be passed off as another's) and a re-created room never collides.
const GROUP_ID_PREFIX: &[u8] = b"chatao/";
const GROUP_ID_RANDOM: usize = 16;

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
    pins: BTreeMap<String, Vec<u8>>,
    key_packages: VecDeque<Vec<u8>>,
}

/// A client's end-to-end encryption engine: its MLS identity, its groups (one per E2E room),
/// the pinned keys of the members it has seen, and the local log of decrypted messages, all
/// kept under one state directory. Not thread-safe by itself (`&mut self` everywhere); the
/// client owns one and calls it from one task. Methods do file I/O (and fsync, see
/// [`E2e::set_sync`]); call them from a blocking-friendly context.
pub struct E2e {
    dir: PathBuf,
    fingerprint: String,
    signer: SignatureKeyPair,
    provider: Provider,
    groups: HashMap<String, MlsGroup>,
    rooms: BTreeMap<String, RoomMeta>,
    pins: BTreeMap<String, Vec<u8>>,
    /// Hash references of kept key packages, oldest first; at most [`MAX_KEY_PACKAGES`].
    key_packages: VecDeque<Vec<u8>>,
    /// Own messages awaiting their echo; at most [`SENT_CACHE`], oldest dropped.
    sent: VecDeque<Sent>,
    sync: bool,
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
        store::ensure_private_dir(dir)?;
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
            pins.insert(fp.clone(), STANDARD.decode(key).map_err(|_| corrupt("bad pin"))?);
        }
        let mut key_packages = VecDeque::new();
        for r in &state.key_packages {
            key_packages.push_back(STANDARD.decode(r).map_err(|_| corrupt("bad key package ref"))?);
        }

        let provider = Provider::default();
        *provider.storage.values.write().unwrap_or_else(|p| p.into_inner()) = storage_map;

        let mut e2e = E2e {
            dir: dir.to_owned(),
            fingerprint: fingerprint.to_owned(),
            signer: derive_signer(secret),
            provider,
            groups: HashMap::new(),
            rooms: BTreeMap::new(),
            pins,
            key_packages,
            sent: VecDeque::new(),
            sync: true,
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

    /// Whether each write is fsynced (default true). Turning it off keeps writes atomic (a
    /// crash leaves the old or the new state) but may lose the latest changes on power loss;
    /// for tests and benchmarks.
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// This client's Chatao fingerprint (its MLS credential identity).
    pub fn fingerprint(&self) -> &str {
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

    /// Makes a new group for `room` with this client as its only member (epoch 0).
    ///
    /// Errors: [`E2eError::GroupExists`] if the room has an active group; a group this client
    /// was removed from is replaced.
    pub fn create_group(&mut self, room: &str) -> Result<(), E2eError> {
        if self.groups.get(room).is_some_and(MlsGroup::is_active) {
            return Err(E2eError::GroupExists(room.to_owned()));
        }
        self.transact(Some(room), |s| {
            s.drop_room(room)?;
            let mut random = [0u8; GROUP_ID_RANDOM];
            getrandom::fill(&mut random)
                .map_err(|e| E2eError::mls("create group", format!("no randomness: {e}")))?;
            let mut gid = GROUP_ID_PREFIX.to_vec();
            gid.extend_from_slice(room.as_bytes());
            gid.push(b'/');
            gid.extend_from_slice(&random);
            let group = MlsGroup::builder()
                .with_group_id(GroupId::from_slice(&gid))
                .ciphersuite(CIPHERSUITE)
                .use_ratchet_tree_extension(true)
                .max_past_epochs(MAX_PAST_EPOCHS)
                .padding_size(PADDING_SIZE)
                .sender_ratchet_configuration(SenderRatchetConfiguration::new(
                    OUT_OF_ORDER_TOLERANCE,
                    MAX_FORWARD_DISTANCE,
                ))
                .with_wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
                .build(&s.provider, &s.signer, s.credential_with_key())
                .map_err(|e| E2eError::mls("create group", e))?;
            s.groups.insert(room.to_owned(), group);
            s.rooms.insert(
                room.to_owned(),
                RoomMeta {
                    group_id: STANDARD.encode(&gid),
                    last_id: None,
                    pending: None,
                    log_len: 0,
                },
            );
            s.save()
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

    /// True if this client is a member of the room's group.
    pub fn is_member(&self, room: &str) -> bool {
        self.groups.get(room).is_some_and(MlsGroup::is_active)
    }

    /// Builds a commit adding the owner of `key_package` (MLS wire bytes, as fetched from the
    /// server) to the room, after checking its credential: it must name exactly `expected_fp`
    /// (the fingerprint the server lists for the nick), and its signature key must equal the
    /// key pinned for that fingerprint (pinned now on first sight).
    ///
    /// Errors: [`E2eError::FingerprintMismatch`] / [`E2eError::KeyChanged`] (forgeries, see
    /// [`E2eError::is_forgery`]); [`E2eError::AlreadyMember`]; [`E2eError::PendingCommit`];
    /// [`E2eError::Malformed`] / [`E2eError::Mls`] for a bad or badly signed package.
    pub fn add(
        &mut self,
        room: &str,
        key_package: &[u8],
        expected_fp: &str,
    ) -> Result<Pending, E2eError> {
        check_len(key_package.len(), MAX_BODY_LEN)?;
        self.active_group(room)?;
        let kp = match parse(key_package)?.extract() {
            MlsMessageBodyIn::KeyPackage(kp) => kp,
            _ => return Err(E2eError::Malformed("not a key package".into())),
        };
        let kp = kp
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| E2eError::mls("key package validation", e))?;
        if kp.ciphersuite() != CIPHERSUITE {
            return Err(E2eError::Malformed(format!(
                "key package ciphersuite {:?}",
                kp.ciphersuite()
            )));
        }
        let leaf = kp.leaf_node();
        let identity = basic_identity(leaf.credential());
        let key = leaf.signature_key().as_slice().to_vec();
        let found = display_identity(&identity);
        if identity_fingerprint(&identity).as_deref() != Some(expected_fp) {
            return Err(E2eError::FingerprintMismatch { expected: expected_fp.to_owned(), found });
        }
        if expected_fp == self.fingerprint {
            return Err(E2eError::AlreadyMember(found));
        }
        if let Some(pinned) = self.pins.get(expected_fp)
            && *pinned != key
        {
            return Err(E2eError::KeyChanged {
                fingerprint: found,
                pinned_key_fp: key_fingerprint(pinned),
                offered_key_fp: key_fingerprint(&key),
            });
        }
        // A leaf with the same identity but another key is a forgery (flagged in `members`):
        // it does not stop the genuine member from being added.
        if self.leaves(room).iter().any(|l| l.identity == identity && l.key == key) {
            return Err(E2eError::AlreadyMember(found));
        }
        self.transact(Some(room), |s| {
            s.pins.entry(expected_fp.to_owned()).or_insert_with(|| key.clone());
            let group = s.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
            let epoch = group.epoch().as_u64();
            let (commit, welcome, _) = group
                .add_members(&s.provider, &s.signer, &[kp])
                .map_err(|e| E2eError::mls("add", e))?;
            let commit = commit.to_bytes().map_err(|e| E2eError::mls("add", e))?;
            let welcome = welcome.to_bytes().map_err(|e| E2eError::mls("add", e))?;
            let pending = Pending {
                epoch,
                commit,
                welcome: Some(welcome),
                added: vec![expected_fp.to_owned()],
                removed: Vec::new(),
            };
            s.set_pending(room, &pending);
            s.save()?;
            Ok(pending)
        })
    }

    /// Builds a commit removing every leaf whose credential names `fingerprint` (as shown in
    /// [`MemberInfo::fingerprint`], so a forged `invalid:...` member can be removed too).
    ///
    /// Errors: [`E2eError::NoSuchMember`] (also for this client itself: MLS members cannot
    /// commit their own removal); [`E2eError::PendingCommit`].
    pub fn remove(&mut self, room: &str, fingerprint: &str) -> Result<Pending, E2eError> {
        self.active_group(room)?;
        let own = self.groups.get(room).map(|g| g.own_leaf_index().u32());
        let targets: Vec<LeafNodeIndex> = self
            .leaves(room)
            .into_iter()
            .filter(|l| Some(l.index) != own && display_identity(&l.identity) == fingerprint)
            .map(|l| LeafNodeIndex::new(l.index))
            .collect();
        if targets.is_empty() {
            return Err(E2eError::NoSuchMember(fingerprint.to_owned()));
        }
        self.transact(Some(room), |s| {
            let group = s.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
            let epoch = group.epoch().as_u64();
            let (commit, welcome, _) = group
                .remove_members(&s.provider, &s.signer, &targets)
                .map_err(|e| E2eError::mls("remove", e))?;
            let commit = commit.to_bytes().map_err(|e| E2eError::mls("remove", e))?;
            let welcome = match welcome {
                Some(w) => Some(w.to_bytes().map_err(|e| E2eError::mls("remove", e))?),
                None => None,
            };
            let pending = Pending {
                epoch,
                commit,
                welcome,
                added: Vec::new(),
                removed: vec![fingerprint.to_owned()],
            };
            s.set_pending(room, &pending);
            s.save()?;
            Ok(pending)
        })
    }

    /// True if a commit of ours for the room awaits the server's verdict.
    pub fn has_pending(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|m| m.pending.is_some())
    }

    /// Merges our pending commit: the server ordered it as message `id` (its echo came back).
    /// Returns the [`Event::Commit`] it amounts to (with `own: true`).
    pub fn merge_pending(&mut self, room: &str, id: u64) -> Result<Event, E2eError> {
        self.transact(Some(room), |s| {
            let event = s.merge_pending_inner(room)?;
            s.advance(room, id);
            s.save()?;
            Ok(event)
        })
    }

    /// Throws our pending commit away (the server refused it as stale, or another commit won).
    /// Doing so when there is none is not an error.
    pub fn discard_pending(&mut self, room: &str) -> Result<(), E2eError> {
        if !self.has_pending(room) {
            return Ok(());
        }
        self.transact(Some(room), |s| {
            s.discard_pending_inner(room)?;
            s.save()
        })
    }

    /// Joins a group from a welcome (MLS wire bytes) that the server delivered for `room` as
    /// message `id` (the id of the commit that added us: later messages are processed after it).
    /// Every member's credential is checked against the pins (first sight pins it); forged ones
    /// are returned as warnings, not refused (the group exists anyway; show them loudly).
    ///
    /// Errors: [`E2eError::RoomMismatch`] if the group was made for another room;
    /// [`E2eError::GroupExists`] if we are already an active member of that same group;
    /// [`E2eError::Mls`] if no key package of ours matches or the welcome is invalid.
    pub fn join(&mut self, room: &str, welcome: &[u8], id: u64) -> Result<Joined, E2eError> {
        check_len(welcome.len(), MAX_BODY_LEN)?;
        let welcome = match parse(welcome)?.extract() {
            MlsMessageBodyIn::Welcome(w) => w,
            _ => return Err(E2eError::Malformed("not a welcome".into())),
        };
        self.transact(Some(room), |s| {
            // Taken out first: the join builder borrows the provider until the group is built.
            let old = s.groups.remove(room);
            let join = StagedWelcome::build_from_welcome(&s.provider, &join_config(), welcome)
                .map_err(|e| E2eError::mls("welcome", e))?;
            let gid =
                join.processed_welcome().unverified_group_info().group_id().as_slice().to_vec();
            let found = room_of_group_id(&gid);
            if found.as_deref() != Some(room) {
                return Err(E2eError::RoomMismatch {
                    expected: room.to_owned(),
                    found: found.unwrap_or_else(|| display_identity(&gid)),
                });
            }
            if let Some(mut old) = old {
                if old.is_active() && old.group_id().as_slice() == gid.as_slice() {
                    return Err(E2eError::GroupExists(room.to_owned()));
                }
                old.delete(&s.provider.storage).map_err(|e| E2eError::mls("delete group", e))?;
            }
            if let Some(meta) = s.rooms.remove(room)
                && let Ok(old_gid) = STANDARD.decode(&meta.group_id)
            {
                log::remove(&s.dir, &old_gid)?;
            }
            s.sent.retain(|m| m.room != room);
            let staged = join
                // Long-lived members' leaves keep their key package's lifetime (12 weeks)
                // until they commit; the pins, not lifetimes, are what we trust.
                .skip_lifetime_validation()
                .build()
                .map_err(|e| E2eError::mls("welcome", e))?;
            let own = staged.own_leaf_index().u32();
            let leaves: Vec<Leaf> = staged.members().map(|m| leaf_of(&m)).collect();
            let epoch = staged.group_context().epoch().as_u64();
            let group = staged.into_group(&s.provider).map_err(|e| E2eError::mls("welcome", e))?;
            let mut members = Vec::with_capacity(leaves.len());
            let mut warnings = Vec::new();
            for leaf in &leaves {
                let status = s.check_leaf(leaf, true);
                let info = member_info(leaf, status, leaf.index == own);
                if info.status.is_forged() {
                    warnings.push(warning_of(&info));
                }
                members.push(info);
            }
            s.groups.insert(room.to_owned(), group);
            s.rooms.insert(
                room.to_owned(),
                RoomMeta {
                    group_id: STANDARD.encode(&gid),
                    last_id: Some(id),
                    pending: None,
                    log_len: 0,
                },
            );
            s.save()?;
            for w in &warnings {
                tracing::warn!(%room, warning = %w, "forged member in joined E2E group");
            }
            Ok(Joined { room: room.to_owned(), epoch, members, warnings })
        })
    }

    /// Encrypts an application message for the room; returns its MLS wire bytes. The plaintext
    /// is remembered (see [`SENT_CACHE`]) so [`E2e::process`] recognises the echo.
    pub fn encrypt(&mut self, room: &str, plaintext: &[u8]) -> Result<Vec<u8>, E2eError> {
        check_len(plaintext.len(), MAX_PLAINTEXT_LEN)?;
        self.active_group(room)?;
        let body = self.transact(Some(room), |s| {
            let group = s.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
            let out = group
                .create_message(&s.provider, &s.signer, plaintext)
                .map_err(|e| E2eError::mls("encrypt", e))?;
            let body = out.to_bytes().map_err(|e| E2eError::mls("encrypt", e))?;
            // The ratchet moved: the key just used must never be used again, even after a crash.
            s.save()?;
            Ok(body)
        })?;
        if self.sent.len() == SENT_CACHE {
            self.sent.pop_front();
        }
        self.sent.push_back(Sent {
            room: room.to_owned(),
            body_sha256: Sha256::digest(&body).into(),
            plaintext: plaintext.to_vec(),
        });
        Ok(body)
    }

    /// Processes the room's next message in the server's order: message `id` at `time` (Unix
    /// ms), MLS wire bytes `body`.
    ///
    /// - `id` not above [`E2e::last_id`]: [`Event::Duplicate`], nothing done.
    /// - an application message: [`Event::Application`], appended to the log.
    /// - a commit: merged, [`Event::Commit`]. If it is the echo of our pending commit (same
    ///   bytes) that one is merged (`own: true`); if it is another member's while ours is
    ///   pending, ours lost the race and is discarded first (`discarded_pending: true`).
    /// - the echo of one of our recent application messages: [`Event::Application`] with
    ///   `own: true`, logged.
    ///
    /// The id is recorded as processed also when the body is refused (the error is returned):
    /// the room's order cannot be replayed differently, so a bad message is skipped for good.
    pub fn process(
        &mut self,
        room: &str,
        id: u64,
        time: u64,
        body: &[u8],
    ) -> Result<Event, E2eError> {
        let meta = self.rooms.get(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        if meta.last_id.is_some_and(|last| id <= last) {
            return Ok(Event::Duplicate);
        }
        let result = self.transact(Some(room), |s| {
            let event = s.process_body(room, body)?;
            if let Event::Application { sender_fp, own, plaintext, .. } = &event {
                let entry = LogEntry {
                    id,
                    time,
                    sender_fp: sender_fp.clone(),
                    own: *own,
                    plaintext: plaintext.clone(),
                };
                s.append_log(room, &entry)?;
            }
            s.advance(room, id);
            s.save()?;
            Ok(event)
        });
        if result.is_err() {
            // Skip the refused message for good (see above); failing to record that is only
            // logged, the message will then be refused again after a restart.
            self.advance(room, id);
            if let Err(e) = self.save() {
                tracing::warn!(%room, id, error = %e, "could not record a refused E2E message");
            }
        }
        result
    }

    /// Logs our own application message `plaintext` that the server ordered as `id`, for
    /// clients that keep their own sent-message cache instead of passing echoes to `process`.
    pub fn record_own(
        &mut self,
        room: &str,
        id: u64,
        time: u64,
        plaintext: &[u8],
    ) -> Result<(), E2eError> {
        check_len(plaintext.len(), MAX_PLAINTEXT_LEN)?;
        if !self.rooms.contains_key(room) {
            return Err(E2eError::NoGroup(room.to_owned()));
        }
        self.transact(Some(room), |s| {
            let entry = LogEntry {
                id,
                time,
                sender_fp: s.fingerprint.clone(),
                own: true,
                plaintext: plaintext.to_vec(),
            };
            s.append_log(room, &entry)?;
            s.advance(room, id);
            s.save()
        })?;
        // Forget the cached copy: the caller handled this echo itself.
        if let Some(pos) = self.sent.iter().position(|m| m.room == room && m.plaintext == plaintext)
        {
            self.sent.remove(pos);
        }
        Ok(())
    }

    /// Records `id` as the room's last processed message (never moves it backwards).
    pub fn set_last_id(&mut self, room: &str, id: u64) -> Result<(), E2eError> {
        if !self.rooms.contains_key(room) {
            return Err(E2eError::NoGroup(room.to_owned()));
        }
        self.transact(Some(room), |s| {
            s.advance(room, id);
            s.save()
        })
    }

    /// The id of the last message processed in the room: fetch history after it.
    pub fn last_id(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).and_then(|m| m.last_id)
    }

    /// The newest `limit` logged (decrypted) messages of the room, oldest first.
    pub fn log(&self, room: &str, limit: usize) -> Result<Vec<LogEntry>, E2eError> {
        let gid = self.group_id_bytes(room)?;
        let mut entries = log::read(&self.dir, &gid)?;
        let skip = entries.len().saturating_sub(limit);
        entries.drain(..skip);
        Ok(entries)
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

    /// Deletes the room's group state and log (we left, were removed, or the room is gone).
    pub fn forget(&mut self, room: &str) -> Result<(), E2eError> {
        if !self.rooms.contains_key(room) {
            return Ok(());
        }
        self.transact(Some(room), |s| {
            s.drop_room(room)?;
            s.save()
        })
    }

    // ---- internals ----

    fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.fingerprint.as_bytes().to_vec()).into(),
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

    fn save(&self) -> Result<(), E2eError> {
        let storage = {
            let values = self.provider.storage.values.read().unwrap_or_else(|p| p.into_inner());
            store::encode_storage(&values)
        };
        let state = StateFile {
            version: StateFile::new("").version,
            fingerprint: self.fingerprint.clone(),
            storage,
            pins: self.pins.iter().map(|(k, v)| (k.clone(), STANDARD.encode(v))).collect(),
            rooms: self.rooms.clone(),
            key_packages: self.key_packages.iter().map(|r| STANDARD.encode(r)).collect(),
        };
        state.save(&self.dir, self.sync)
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

    fn advance(&mut self, room: &str, id: u64) {
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.last_id = Some(meta.last_id.map_or(id, |last| last.max(id)));
        }
    }

    fn set_pending(&mut self, room: &str, pending: &Pending) {
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.pending = Some(PendingMeta {
                commit_sha256: STANDARD.encode(Sha256::digest(&pending.commit)),
                epoch: pending.epoch,
                added: pending.added.clone(),
                removed: pending.removed.clone(),
            });
        }
    }

    /// Removes the room's group (storage and memory) and log, keeping nothing.
    fn drop_room(&mut self, room: &str) -> Result<(), E2eError> {
        if let Some(mut group) = self.groups.remove(room) {
            group.delete(&self.provider.storage).map_err(|e| E2eError::mls("delete group", e))?;
        }
        if let Some(meta) = self.rooms.remove(room)
            && let Ok(gid) = STANDARD.decode(&meta.group_id)
        {
            log::remove(&self.dir, &gid)?;
        }
        self.sent.retain(|m| m.room != room);
        Ok(())
    }

    fn append_log(&mut self, room: &str, entry: &LogEntry) -> Result<(), E2eError> {
        let gid = self.group_id_bytes(room)?;
        log::append(&self.dir, &gid, entry, self.sync)?;
        let mut len = self.rooms.get(room).map_or(0, |m| m.log_len) + 1;
        if len >= MAX_LOG_PER_ROOM + LOG_SLACK {
            len = log::compact(&self.dir, &gid, self.sync)?;
        }
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.log_len = len;
        }
        Ok(())
    }

    /// The pin status of a leaf; with `pin`, a valid fingerprint seen for the first time is
    /// pinned (and reported as [`PinStatus::New`]).
    fn check_leaf(&mut self, leaf: &Leaf, pin: bool) -> PinStatus {
        let status = self.status_of(leaf);
        if pin
            && status == PinStatus::New
            && let Some(fp) = identity_fingerprint(&leaf.identity)
        {
            self.pins.insert(fp, leaf.key.clone());
        }
        status
    }

    fn status_of(&self, leaf: &Leaf) -> PinStatus {
        let Some(fp) = identity_fingerprint(&leaf.identity) else {
            return PinStatus::Forged {
                reason: "its credential is not a Chatao fingerprint".into(),
            };
        };
        if fp == self.fingerprint {
            return if leaf.key == self.signer.public() {
                PinStatus::Own
            } else {
                PinStatus::Forged {
                    reason: "it claims this client's own fingerprint with another key".into(),
                }
            };
        }
        match self.pins.get(&fp) {
            Some(pinned) if *pinned == leaf.key => PinStatus::Pinned,
            Some(pinned) => PinStatus::Changed { pinned_key_fp: key_fingerprint(pinned) },
            None => PinStatus::New,
        }
    }

    fn discard_pending_inner(&mut self, room: &str) -> Result<(), E2eError> {
        let group = self.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        group
            .clear_pending_commit(&self.provider.storage)
            .map_err(|e| E2eError::mls("discard pending commit", e))?;
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.pending = None;
        }
        Ok(())
    }

    fn merge_pending_inner(&mut self, room: &str) -> Result<Event, E2eError> {
        let before = self.leaves(room);
        let group = self.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        if group.pending_commit().is_none() {
            return Err(E2eError::NoPendingCommit(room.to_owned()));
        }
        group.merge_pending_commit(&self.provider).map_err(|e| E2eError::mls("merge", e))?;
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.pending = None;
        }
        let committer = Some(self.fingerprint.clone());
        Ok(self.commit_event(room, &before, committer, true, false, false))
    }

    /// Builds the [`Event::Commit`] of a merged commit from the leaves before and after,
    /// checking (and pinning) every new or changed leaf.
    fn commit_event(
        &mut self,
        room: &str,
        before: &[Leaf],
        committer_fp: Option<String>,
        own: bool,
        removed_me: bool,
        discarded_pending: bool,
    ) -> Event {
        let after = self.leaves(room);
        let epoch = self.epoch(room).unwrap_or_default();
        let same = |a: &Leaf, b: &Leaf| a.index == b.index && a.identity == b.identity;
        let removed = before
            .iter()
            .filter(|b| !after.iter().any(|a| same(a, b)))
            .map(|b| display_identity(&b.identity))
            .collect();
        let mut added = Vec::new();
        let mut warnings = Vec::new();
        for leaf in &after {
            if before.iter().any(|b| b == leaf) {
                continue; // unchanged: checked when it was first seen
            }
            if !before.iter().any(|b| same(b, leaf)) {
                added.push(display_identity(&leaf.identity));
            }
            let status = self.check_leaf(leaf, true);
            if status.is_forged() {
                let w = warning_of(&member_info(leaf, status, false));
                tracing::warn!(%room, warning = %w, "forged member in E2E group");
                warnings.push(w);
            }
        }
        Event::Commit {
            epoch,
            committer_fp,
            own,
            added,
            removed,
            removed_me,
            discarded_pending,
            warnings,
        }
    }

    /// Processes one body (no id bookkeeping): see [`E2e::process`].
    fn process_body(&mut self, room: &str, body: &[u8]) -> Result<Event, E2eError> {
        check_len(body.len(), MAX_BODY_LEN)?;
        let digest: [u8; 32] = Sha256::digest(body).into();
        let pending_hash =
            self.rooms.get(room).and_then(|m| m.pending.as_ref()).map(|p| p.commit_sha256.clone());
        if pending_hash.is_some_and(|h| h == STANDARD.encode(digest)) {
            return self.merge_pending_inner(room);
        }
        if let Some(pos) = self.sent.iter().position(|m| m.room == room && m.body_sha256 == digest)
        {
            // Removing it before the log write is fine: on failure the caller gets an error
            // and the message is skipped anyway.
            let sent = self.sent.remove(pos).map(|m| m.plaintext).unwrap_or_default();
            return Ok(Event::Application {
                sender_fp: self.fingerprint.clone(),
                status: PinStatus::Own,
                own: true,
                plaintext: sent,
            });
        }
        let message = parse(body)?
            .try_into_protocol_message()
            .map_err(|_| E2eError::Malformed("not a group message".into()))?;
        let before = self.leaves(room);
        let group = self.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        if message.group_id() != group.group_id() {
            return Err(E2eError::WrongGroup(room.to_owned()));
        }
        if !group.is_active() {
            return Err(E2eError::NotMember(room.to_owned()));
        }
        let had_pending = group.pending_commit().is_some();
        let processed = group
            .process_message(&self.provider, message)
            .map_err(|e| E2eError::mls("process", e))?;
        let sender_identity = basic_identity(processed.credential());
        let sender_index = match processed.sender() {
            Sender::Member(index) => Some(index.u32()),
            _ => None,
        };
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                // The key check uses the sender's current leaf when it still holds the same
                // identity; a sender removed since (a message of a past epoch) was checked when
                // its leaf was first seen, so its identity's pin decides.
                let leaf = sender_index
                    .and_then(|i| {
                        before.iter().find(|l| l.index == i && l.identity == sender_identity)
                    })
                    .cloned();
                let status = match leaf {
                    Some(leaf) => self.status_of(&leaf),
                    None => match identity_fingerprint(&sender_identity) {
                        Some(fp) if self.pins.contains_key(&fp) => PinStatus::Pinned,
                        Some(_) => PinStatus::New,
                        None => PinStatus::Forged {
                            reason: "its credential is not a Chatao fingerprint".into(),
                        },
                    },
                };
                Ok(Event::Application {
                    sender_fp: display_identity(&sender_identity),
                    status,
                    own: false,
                    plaintext: app.into_bytes(),
                })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let removed_me = staged.self_removed();
                if had_pending {
                    self.discard_pending_inner(room)?;
                }
                let group =
                    self.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
                group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(|e| E2eError::mls("merge", e))?;
                let committer = Some(display_identity(&sender_identity));
                Ok(self.commit_event(room, &before, committer, false, removed_me, had_pending))
            }
            ProcessedMessageContent::OwnPendingCommit => self.merge_pending_inner(room),
            ProcessedMessageContent::OwnPrivateMessage => {
                Err(E2eError::OwnMessage(room.to_owned()))
            }
            _ => Ok(Event::Ignored),
        }
    }
}

/// The join configuration, matching what [`E2e::create_group`] sets.
fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .padding_size(PADDING_SIZE)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAX_FORWARD_DISTANCE,
        ))
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
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

fn member_info(leaf: &Leaf, status: PinStatus, is_self: bool) -> MemberInfo {
    MemberInfo {
        fingerprint: display_identity(&leaf.identity),
        signature_key_fp: key_fingerprint(&leaf.key),
        status,
        is_self,
    }
}

fn warning_of(info: &MemberInfo) -> Warning {
    Warning {
        fingerprint: info.fingerprint.clone(),
        signature_key_fp: info.signature_key_fp.clone(),
        status: info.status.clone(),
    }
}

/// The room name bound into a group id made by [`E2e::create_group`], if it is one.
fn room_of_group_id(gid: &[u8]) -> Option<String> {
    let rest = gid.strip_prefix(GROUP_ID_PREFIX)?;
    let split = rest.len().checked_sub(GROUP_ID_RANDOM + 1)?;
    if rest.get(split) != Some(&b'/') {
        return None;
    }
    let room = std::str::from_utf8(rest.get(..split)?).ok()?;
    if room.chars().any(char::is_control) {
        return None;
    }
    Some(room.to_owned())
}
