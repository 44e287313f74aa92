//! Groups and their members: create, add, remove, pending commits, join, forget.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openmls::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

impl E2e {
    /// Makes a new group for `room` with this client as its only member (epoch 0). `open` is
    /// the room's mode, chosen here by its creator and carried in the group id so every member
    /// reads the same (see [`E2e::is_open`]): an open room's members add whoever asks to join
    /// (which gives no confidentiality against a malicious server, which may ask too), an
    /// invite-only room's members add only whom their user invites.
    ///
    /// Errors: [`E2eError::GroupExists`] if the room has an active group; a group this client
    /// was removed from is replaced.
    pub fn create_group(&mut self, room: &str, open: bool) -> Result<(), E2eError> {
        if self.groups.get(room).is_some_and(MlsGroup::is_active) {
            return Err(E2eError::GroupExists(room.to_owned()));
        }
        self.transact(Some(room), |s| {
            s.drop_room(room)?;
            let mut random = [0u8; GROUP_ID_RANDOM];
            getrandom::fill(&mut random)
                .map_err(|e| E2eError::mls("create group", format!("no randomness: {e}")))?;
            let gid = make_group_id(room, open, &random);
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
                    past: Vec::new(),
                },
            );
            s.save()
        })
    }

    /// Builds a commit adding the owner of `key_package` (MLS wire bytes, as fetched from the
    /// server) to the room, after checking its credential: it must name exactly `expected_fp`
    /// (the fingerprint the server lists for the nick), prove that its signature key belongs to
    /// that fingerprint's X25519 key ([`crate::verify_credential`]), and its signature key must
    /// equal the key pinned for that fingerprint (pinned now on first sight).
    ///
    /// Errors: [`E2eError::FingerprintMismatch`] / [`E2eError::ForgedCredential`] /
    /// [`E2eError::KeyChanged`] (forgeries, see [`E2eError::is_forgery`]);
    /// [`E2eError::AlreadyMember`]; [`E2eError::PendingCommit`];
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
        if claimed_fingerprint(&identity).as_deref() != Some(expected_fp) {
            return Err(E2eError::FingerprintMismatch { expected: expected_fp.to_owned(), found });
        }
        let verified = match verify_credential(&identity, &key) {
            Ok(fp) => fp,
            Err(reason) => {
                return Err(E2eError::ForgedCredential {
                    fingerprint: found,
                    reason: reason.into(),
                });
            }
        };
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
            s.pins.entry(verified.clone()).or_insert_with(|| key.clone());
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
            s.save_lazy()?;
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
            s.save_lazy()
        })
    }

    /// Joins a group from a welcome (MLS wire bytes) that the server delivered for `room` as
    /// message `id` (the id of the commit that added us: later messages are processed after it).
    /// Every member's credential is checked against the pins (first sight pins it); forged ones
    /// are returned as warnings, not refused (the group exists anyway; show them loudly).
    ///
    /// Errors: [`E2eError::RoomMismatch`] if the group was made for another room;
    /// [`E2eError::GroupExists`] if we are an active member of a group of this room (this one
    /// or another: call [`E2e::forget`] first when the room really was re-created; a group we
    /// were removed from is replaced);
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
            let parsed = parse_group_id(&gid);
            let open = match parsed {
                Some((found, open)) if found == room => open,
                Some((found, _)) => {
                    return Err(E2eError::RoomMismatch { expected: room.to_owned(), found });
                }
                None => {
                    return Err(E2eError::RoomMismatch {
                        expected: room.to_owned(),
                        found: display_identity(&gid),
                    });
                }
            };
            if let Some(mut old) = old {
                // An active group is never replaced by a welcome: the server could otherwise
                // swap a room's real group for one of its choosing with the same room name.
                if old.is_active() {
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
            let inviter = staged.welcome_sender_index().u32();
            let leaves: Vec<Leaf> = staged.members().map(|m| leaf_of(&m)).collect();
            let epoch = staged.group_context().epoch().as_u64();
            let group = staged.into_group(&s.provider).map_err(|e| E2eError::mls("welcome", e))?;
            let mut members = Vec::with_capacity(leaves.len());
            let mut warnings = Vec::new();
            let mut inviter_fp = None;
            for leaf in &leaves {
                let status = s.check_leaf(leaf, true);
                let info = member_info(leaf, status, leaf.index == own);
                if info.status.is_forged() {
                    warnings.push(warning_of(&info));
                } else if leaf.index == inviter {
                    inviter_fp = Some(info.fingerprint.clone());
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
                    past: Vec::new(),
                },
            );
            s.save()?;
            for w in &warnings {
                tracing::warn!(%room, warning = %w, "forged member in joined E2E group");
            }
            Ok(Joined { room: room.to_owned(), epoch, open, inviter_fp, members, warnings })
        })
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

    pub(super) fn discard_pending_inner(&mut self, room: &str) -> Result<(), E2eError> {
        let group = self.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        group
            .clear_pending_commit(&self.provider.storage)
            .map_err(|e| E2eError::mls("discard pending commit", e))?;
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.pending = None;
        }
        Ok(())
    }

    pub(super) fn merge_pending_inner(&mut self, room: &str) -> Result<Event, E2eError> {
        let before = self.leaves(room);
        let group = self.groups.get_mut(room).ok_or_else(|| E2eError::NoGroup(room.to_owned()))?;
        if group.pending_commit().is_none() {
            return Err(E2eError::NoPendingCommit(room.to_owned()));
        }
        let epoch = group.epoch().as_u64();
        group.merge_pending_commit(&self.provider).map_err(|e| E2eError::mls("merge", e))?;
        self.record_epoch(room, epoch, &before);
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.pending = None;
        }
        let committer = Some(self.fingerprint.to_string());
        Ok(self.commit_event(room, &before, committer, true, false, false))
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

/// The room name and mode (true = open) bound into a group id made by
/// [`E2e::create_group`], if it is one.
pub(super) fn parse_group_id(gid: &[u8]) -> Option<(String, bool)> {
    let rest = gid.strip_prefix(GROUP_ID_PREFIX)?;
    let split = rest.len().checked_sub(GROUP_ID_RANDOM + 1)?;
    if rest.get(split) != Some(&b'/') {
        return None;
    }
    let rest = rest.get(..split)?;
    let (rest, open) = if let Some(r) = rest.strip_suffix(MODE_OPEN) {
        (r, true)
    } else {
        (rest.strip_suffix(MODE_INVITE)?, false)
    };
    let room = std::str::from_utf8(rest).ok()?;
    if room.chars().any(char::is_control) {
        return None;
    }
    Some((room.to_owned(), open))
}

/// The group id of a new group of `room` in the given mode.
fn make_group_id(room: &str, open: bool, random: &[u8; GROUP_ID_RANDOM]) -> Vec<u8> {
    let mut gid = GROUP_ID_PREFIX.to_vec();
    gid.extend_from_slice(room.as_bytes());
    gid.extend_from_slice(if open { MODE_OPEN } else { MODE_INVITE });
    gid.push(b'/');
    gid.extend_from_slice(random);
    gid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gid(room: &[u8], mode: &[u8]) -> Vec<u8> {
        let mut g = GROUP_ID_PREFIX.to_vec();
        g.extend_from_slice(room);
        g.extend_from_slice(mode);
        g.push(b'/');
        g.extend_from_slice(&[b'/'; GROUP_ID_RANDOM]);
        g
    }

    #[test]
    fn room_and_mode_are_read_back_from_group_ids_only_when_well_formed() {
        let open = |r: &str| Some((r.to_owned(), true));
        assert_eq!(parse_group_id(&gid(b"#a/b", MODE_OPEN)), open("#a/b"));
        assert_eq!(parse_group_id(&gid(b"#a/b", MODE_INVITE)), Some(("#a/b".to_owned(), false)));
        assert_eq!(parse_group_id(&gid(b"#a/open", MODE_INVITE)), Some(("#a/open".into(), false)));
        assert_eq!(parse_group_id(&gid(b"", MODE_OPEN)), open(""));
        assert_eq!(parse_group_id(&gid(b"#x", b"")), None, "no mode");
        assert_eq!(parse_group_id(&gid(b"#x", b"/closed")), None);
        assert_eq!(parse_group_id(&gid(b"#x\x1b[2J", MODE_OPEN)), None);
        assert_eq!(parse_group_id(&gid(b"\xff", MODE_OPEN)), None);
        assert_eq!(parse_group_id(b"chatao/#x/open"), None);
        assert_eq!(parse_group_id(b"other/#x/open/0123456789abcdef"), None);
        let mut no_slash = gid(b"#x", MODE_OPEN);
        let at = no_slash.len() - GROUP_ID_RANDOM - 1;
        no_slash[at] = b'x';
        assert_eq!(parse_group_id(&no_slash), None);
        let random = [b'/'; GROUP_ID_RANDOM];
        assert_eq!(make_group_id("#a", false, &random), gid(b"#a", MODE_INVITE));
        assert_eq!(parse_group_id(&make_group_id("#a", true, &random)), open("#a"));
    }
}
