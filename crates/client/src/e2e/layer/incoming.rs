//! What the server sends: each room's `sealed` messages through the engine in order (our own
//! echoes known by their client id), the log replayed after a restart, leaves and joins.

use super::*;

impl Layer {
    /// A server message on its way to the UI.
    pub fn from_server(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::Members { room, members, e2e, total, next, .. } => {
                if let Some(i) = self.joining.iter().position(|r| r == &room) {
                    self.joining.remove(i);
                }
                // Pinned only in an E2E context: who is in an E2E room.
                if e2e || self.has_group(room.as_str()) {
                    for m in &members {
                        self.observe(&m.nick, &m.fingerprint);
                    }
                }
                if e2e
                    && let Some(open) = self.creating.remove(&room)
                    && !self.has_group(room.as_str())
                {
                    match self.e2e.create_group(room.as_str(), open) {
                        Ok(()) => self.counts.set(room.as_str(), 0, 0),
                        Err(e) => self.warn(format!("{room}: cannot create the MLS group: {e}")),
                    }
                }
                if e2e {
                    self.server_e2e.insert(room.clone());
                }
                let mine = self.has_group(room.as_str());
                if !e2e && mine {
                    self.warn(format!(
                        "the server presents {room} as a plain room, but you are in its \
                         end-to-end encrypted group: messages stay encrypted"
                    ));
                }
                let e2e = e2e || mine;
                self.ui(ServerMsg::Members {
                    room: room.clone(),
                    members,
                    e2e,
                    total,
                    next,
                    more: false,
                });
                if mine && self.shown.insert(room.clone()) {
                    self.announce(&room);
                    self.replay_log(&room);
                }
            }
            ServerMsg::Join { room, nick, fingerprint } => {
                if self.e2e_context(&room) {
                    self.observe(&nick, &fingerprint);
                } else {
                    self.compare(&nick, &fingerprint);
                }
                self.ui(ServerMsg::Join { room, nick, fingerprint });
            }
            ServerMsg::Leave { room, nick, reason, message } => {
                self.on_leave(&room, &nick, reason);
                self.ui(ServerMsg::Leave { room, nick, reason, message });
            }
            ServerMsg::Whois { nick, fingerprint, rooms, away, since, sessions } => {
                self.compare(&nick, &fingerprint);
                self.ui(ServerMsg::Whois { nick, fingerprint, rooms, away, since, sessions });
            }
            ServerMsg::RoomList { mut rooms, next } => {
                for r in &mut rooms {
                    r.e2e = r.e2e || self.has_group(r.room.as_str());
                }
                self.ui(ServerMsg::RoomList { rooms, next });
            }
            ServerMsg::Message { ref room, .. } if self.has_group(room.as_str()) => {
                self.warn(format!(
                    "the server sent an unencrypted message into the end-to-end encrypted room \
                     {room}; it was dropped"
                ));
            }
            ServerMsg::Sealed { room, id, time, from, kind, body, history, cid, .. } => {
                self.sealed(room, id, time, from, kind, body, history, cid);
            }
            ServerMsg::Invited { room, from, id, epoch, body } => {
                self.invited(room, from, id, epoch, body)
            }
            ServerMsg::JoinRequest { room, nick, fingerprint } => {
                // The mode is our group's, chosen by its creator: an invite-only room never
                // admits anyone on the server's word (it could ask for its own key).
                match self.e2e.is_open(room.as_str()) {
                    Some(true)
                        if self.inviting.len() < INVITES_TRACKED
                            && self.observe(&nick, &fingerprint) =>
                    {
                        self.notice(format!(
                            "{nick} asks to join the open room {room}; adding them"
                        ));
                        let key = (room.clone(), nick.as_str().to_ascii_lowercase());
                        self.inviting.insert(key, Intent::Auto);
                        self.net(ClientMsg::FetchKeyPackage {
                            nick: nick.to_string(),
                            room: Some(room.to_string()),
                        });
                    }
                    Some(false) => self.notice(format!(
                        "the server says {nick} asks to join the invite-only room {room}: not \
                         added (/invite {nick} if you want them in)"
                    )),
                    _ => {}
                }
            }
            ServerMsg::KeyPackage { nick, fingerprint, package, room: Some(room) } => {
                self.key_package(room, nick, fingerprint, package);
            }
            ServerMsg::KeyPackage { .. } => {}
            // An encrypted text of ours sent at an epoch that moved on: the UI's core sends
            // it again (as text, encrypted anew at the current epoch).
            ServerMsg::Error { cid: Some(cid), code: ErrorCode::StaleEpoch, message, room } => {
                let code = ErrorCode::StaleEpoch;
                self.ui(ServerMsg::Error { cid: Some(cid), code, message, room })
            }
            ServerMsg::Error { cid: None, code: ErrorCode::StaleEpoch, message, .. } => {
                self.stale(message)
            }
            ServerMsg::Error {
                cid: _,
                code: code @ (ErrorCode::NotInvited | ErrorCode::RoomExists),
                message,
                room: named,
            } => {
                // Which join or create it refuses: the room the error names (never its text).
                let at = self.joining.iter().position(|r| named.as_ref() == Some(r));
                let room = at.and_then(|i| self.joining.remove(i));
                match room {
                    Some(r) if code == ErrorCode::NotInvited && self.has_group(r.as_str()) => {
                        // Only the server's word: the group is kept (the server could otherwise
                        // wipe it and offer one of its own). The user decides.
                        self.notice(format!(
                            "the server says you are no longer a member of {r} (removed while \
                             you were away?); your group is kept: /part {r} to forget it, then \
                             a member can add you again"
                        ));
                    }
                    Some(r) => {
                        self.creating.remove(&r);
                        self.ui(ServerMsg::Error { cid: None, code, message, room: Some(r) });
                    }
                    None => self.ui(ServerMsg::Error { cid: None, code, message, room: named }),
                }
            }
            ServerMsg::HistoryEnd { room, count, before: None } => {
                // Caught up: a commit of ours still pending was never ordered (made before a
                // disconnection, or refused); drop it, it would block every later change.
                if self.has_group(room.as_str())
                    && self.e2e.has_pending(room.as_str())
                    && !self.in_flight.contains_key(&room)
                {
                    if let Err(e) = self.e2e.discard_pending(room.as_str()) {
                        self.notice(format!("{room}: cannot drop a stale change: {e}"));
                    }
                    self.release(&room);
                }
                // A replay stops at the server's cap: MLS needs every message, so ask for the
                // rest from where the engine is.
                if self.has_group(room.as_str())
                    && count as usize >= HISTORY_PAGE
                    && let Some(since) = self.e2e.last_id(room.as_str())
                {
                    self.net(ClientMsg::History {
                        room: room.to_string(),
                        since,
                        limit: None,
                        before: None,
                    });
                }
                self.ui(ServerMsg::HistoryEnd { room, count, before: None });
            }
            other => self.ui(other),
        }
    }

    pub(super) fn announce(&mut self, room: &RoomName) {
        let epoch = self.e2e.epoch(room.as_str()).unwrap_or(0);
        let n = self.e2e.members(room.as_str()).len();
        self.notice(format!(
            "{room} is END-TO-END ENCRYPTED (MLS, epoch {epoch}, {n} member(s)): only its \
             members' clients can read it; /safety lists their keys"
        ));
    }

    pub(super) fn replay_log(&mut self, room: &RoomName) {
        let entries = match self.e2e.log(room.as_str(), LOG_ON_JOIN) {
            Ok(e) => e,
            Err(e) => return self.notice(format!("{room}: cannot read the local history: {e}")),
        };
        for e in entries {
            let Ok(plain) = serde_json::from_slice::<Plain>(&e.plaintext) else { continue };
            let from = if e.own { self.me.clone() } else { self.nick_for(&e.sender_fp, None) };
            self.ui(ServerMsg::Message {
                cid: None,
                room: room.clone(),
                id: e.id,
                time: e.time,
                from,
                kind: plain.kind,
                text: plain.text,
                history: true,
            });
        }
    }

    /// A `leave` is only the server's word: it forgets no group and removes nobody. Our own
    /// group goes with our own /part ([`Layer::from_ui`]) or a commit removing us; another
    /// member's key stays in the group until a member /removes it (a member who parts removes
    /// itself from delivery, not from the group: see docs/PROTOCOL.md 13).
    pub(super) fn on_leave(&mut self, room: &RoomName, nick: &Nick, reason: LeaveReason) {
        if !self.has_group(room.as_str()) || nick != &self.me {
            return;
        }
        if reason == LeaveReason::Kicked {
            self.notice(format!(
                "the server says you were removed from the end-to-end encrypted room {room}; \
                 your group is kept until a commit removing you arrives or you /part {room}"
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn sealed(
        &mut self,
        room: RoomName,
        id: u64,
        time: u64,
        from: Nick,
        kind: SealedKind,
        body: String,
        history: bool,
        cid: Option<Cid>,
    ) {
        if !self.has_group(room.as_str()) || kind == SealedKind::Other {
            return;
        }
        // Every commit record counts, valid or not (the server counts them alike), once, and
        // before the engine sees it (see `super::counts`).
        if kind == SealedKind::Commit && self.e2e.last_id(room.as_str()).is_none_or(|l| id > l) {
            let fallback = self.e2e.epoch(room.as_str()).unwrap_or(0);
            self.counts.record(room.as_str(), id, fallback);
        }
        if let Some(cid) = cid
            && kind == SealedKind::Application
            && from == self.me
            && self.e2e.last_id(room.as_str()).is_none_or(|l| id > l)
            && let Some(at) = self.own_sent.iter().position(|(c, r, _)| *c == cid && *r == room)
            && let Some((_, _, plain)) = self.own_sent.remove(at)
        {
            return self.own_echo(room, id, time, history, cid, &plain);
        }
        let Ok(bytes) = B64.decode(body.as_bytes()) else {
            return self.warn(format!("{room}: message {id} from {from} is not base64; ignored"));
        };
        match self.e2e.process(room.as_str(), id, time, &bytes) {
            Ok(Event::Application { sender_fp, status, own, plaintext }) => {
                let Ok(plain) = serde_json::from_slice::<Plain>(&plaintext) else {
                    return self.warn(format!("{room}: message {id} has an unknown format"));
                };
                let nick =
                    if own { self.me.clone() } else { self.sender(&room, id, &from, &sender_fp) };
                if plain.leave {
                    // Only a verified member's own word removes it (the server cannot forge
                    // this), and only while it is still a member: a later commit may already
                    // have removed it (read from history).
                    let verified = !status.is_forged()
                        && !matches!(status, chatao_e2e::PinStatus::Unverified { .. });
                    let still =
                        self.e2e.members(room.as_str()).iter().any(|m| m.fingerprint == sender_fp);
                    if own || !verified || !still {
                        return;
                    }
                    self.notice(format!(
                        "{nick} left the end-to-end encrypted room {room} (signed by their key): \
                         removing them from the group"
                    ));
                    return self.commit_remove(&room, &sender_fp, Intent::Auto);
                }
                if status.is_forged() {
                    self.warn(format!(
                        "{room}: the next message comes from {sender_fp}, whose key is {status}"
                    ));
                } else if matches!(status, chatao_e2e::PinStatus::Unverified { .. }) {
                    self.notice(format!(
                        "{room}: the sender of the next message could not be verified ({status})"
                    ));
                }
                // Our own text carries our id: its acknowledgement.
                self.ui(ServerMsg::Message {
                    cid: if own { cid } else { None },
                    room,
                    id,
                    time,
                    from: nick,
                    kind: plain.kind,
                    text: plain.text,
                    history,
                });
            }
            Ok(Event::Commit {
                epoch,
                committer_fp,
                own,
                added,
                removed,
                removed_me,
                discarded_pending,
                warnings,
            }) => {
                if own || discarded_pending {
                    let intent = self.in_flight.remove(&room);
                    self.release(&room);
                    if discarded_pending && let Some(Intent::User(what)) = intent {
                        self.notice(format!(
                            "{room} changed meanwhile; your {what} was not made: try again"
                        ));
                    }
                }
                let by = committer_fp.as_deref().map(|fp| self.nick_for(fp, Some(&from)));
                let by = by.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
                for fp in &added {
                    let who = self.nick_for(fp, None);
                    self.notice(format!("{room}: {who} ({fp}) was added by {by} (epoch {epoch})"));
                }
                for fp in &removed {
                    let who = self.nick_for(fp, None);
                    self.notice(format!(
                        "{room}: {who} ({fp}) was removed by {by} (epoch {epoch})"
                    ));
                }
                for w in warnings {
                    self.warn(format!("{room}: {w}"));
                }
                if removed_me {
                    self.notice(format!("you were removed from {room} by {by}"));
                }
            }
            Ok(Event::Duplicate | Event::Ignored) => {}
            Err(e) => {
                let loud = matches!(e, E2eError::WrongGroup(_));
                let text = format!("{room}: cannot decrypt message {id} from {from}: {e}");
                if loud { self.warn(text) } else { self.notice(text) }
            }
        }
    }

    /// The echo (`id`) of our text `plain` sent with client id `cid`: logged as ours and shown.
    pub(super) fn own_echo(
        &mut self,
        room: RoomName,
        id: u64,
        time: u64,
        history: bool,
        cid: Cid,
        plain: &[u8],
    ) {
        self.own_sent.retain(|(c, _, _)| *c != cid);
        if let Err(e) = self.e2e.record_own(room.as_str(), id, time, plain) {
            self.notice(format!("{room}: cannot record your message {id}: {e}"));
        }
        let Ok(plain) = serde_json::from_slice::<Plain>(plain) else { return };
        self.ui(ServerMsg::Message {
            cid: Some(cid),
            room,
            id,
            time,
            from: self.me.clone(),
            kind: plain.kind,
            text: plain.text,
            history,
        });
    }
}
