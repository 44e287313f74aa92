//! Application messages: encryption, ordered processing of a room's messages, the log.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openmls::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

impl E2e {
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
            s.save_lazy()?;
            Ok(event)
        });
        if result.is_err() {
            // Skip the refused message for good (see above); failing to record that is only
            // logged, the message will then be refused again after a restart.
            self.advance(room, id);
            if let Err(e) = self.save_lazy() {
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
                sender_fp: s.fingerprint.to_string(),
                own: true,
                plaintext: plaintext.to_vec(),
            };
            s.append_log(room, &entry)?;
            s.advance(room, id);
            s.save_lazy()
        })?;
        // Forget the cached copy: the caller handled this echo itself.
        if let Some(pos) = self.sent.iter().position(|m| m.room == room && m.plaintext == plaintext)
        {
            self.sent.remove(pos);
        }
        Ok(())
    }

    /// The newest `limit` logged (decrypted) messages of the room, in the order they were
    /// processed (oldest first). Reads at most `limit` entries into memory.
    pub fn log(&self, room: &str, limit: usize) -> Result<Vec<LogEntry>, E2eError> {
        let gid = self.group_id_bytes(room)?;
        log::read(&self.dir, &gid, limit)
    }

    fn append_log(&mut self, room: &str, entry: &LogEntry) -> Result<(), E2eError> {
        let gid = self.group_id_bytes(room)?;
        // Not fsynced, like the state saves of the calls that log (see `save_lazy`).
        log::append(&self.dir, &gid, entry, false)?;
        let mut len = self.rooms.get(room).map_or(0, |m| m.log_len) + 1;
        if len >= MAX_LOG_PER_ROOM + LOG_SLACK {
            len = log::compact(&self.dir, &gid, self.sync)?;
        }
        if let Some(meta) = self.rooms.get_mut(room) {
            meta.log_len = len;
        }
        Ok(())
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
                sender_fp: self.fingerprint.to_string(),
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
        let epoch = group.epoch().as_u64();
        let message_epoch = message.epoch().as_u64();
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
                // openmls verified the message with the key of the sender's leaf in the
                // message's epoch, and hands us that leaf's credential: the same leaf's key is
                // checked against it (binding, pins). For the current epoch it is in the tree;
                // for a past one it is the key recorded when that epoch ended. A leaf whose key
                // is not known is reported unverified, never as pinned on its name alone.
                let key = match sender_index {
                    Some(i) if message_epoch == epoch => before
                        .iter()
                        .find(|l| l.index == i && l.identity == sender_identity)
                        .map(|l| l.key.clone()),
                    Some(i) => self.past_key(room, message_epoch, i),
                    None => None,
                };
                let status = match (key, sender_index) {
                    (Some(key), Some(index)) => {
                        self.status_of(&Leaf { index, identity: sender_identity.clone(), key })
                    }
                    _ => PinStatus::Unverified {
                        reason: format!(
                            "the sender's key in epoch {message_epoch} is not known to this client"
                        ),
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
                self.record_epoch(room, epoch, &before);
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
