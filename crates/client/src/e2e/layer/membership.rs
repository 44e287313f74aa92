//! Membership flows: `/remove` and `/safety`, a key package fetched for an invite (the key
//! checked against the nickname's pin before the add is committed), a welcome (`invited`)
//! joined, and a commit refused as stale.

use super::*;
use chatao_proto::Fingerprint;

impl Layer {
    /// A local request (`/remove`, `/safety`).
    pub fn request(&mut self, req: Request) {
        match req {
            Request::Remove { room, nick } => self.remove(&room, &nick),
            Request::Safety { room } => self.safety(&room),
        }
    }

    pub(super) fn remove(&mut self, room: &str, nick: &str) {
        let Some(r) = room_name(room) else {
            return self.notice(format!("{room} is not a room name"));
        };
        if !self.has_group(r.as_str()) {
            return self.notice(format!("{r} is not an end-to-end encrypted room you are in"));
        }
        let Some(fp) = self.pins.get(nick).map(str::to_owned) else {
            return self.notice(format!(
                "no key is pinned for {nick} (names are pinned when met in an end-to-end \
                 encrypted room); /safety lists the members' keys"
            ));
        };
        self.commit_remove(&r, &fp, Intent::User(format!("/remove {nick}")));
    }

    pub(super) fn commit_remove(&mut self, r: &RoomName, fp: &str, intent: Intent) {
        if self.e2e.has_pending(r.as_str()) {
            if let Intent::User(what) = intent {
                self.notice(format!("{r}: another change is in progress; {what} again shortly"));
            }
            return;
        }
        match self.e2e.remove(r.as_str(), fp) {
            Ok(p) => {
                self.in_flight.insert(r.clone(), intent);
                self.held.entry(r.clone()).or_default().fingerprint = fp.to_owned();
                self.net(ClientMsg::Commit {
                    room: r.to_string(),
                    epoch: self.commit_epoch(r.as_str()),
                    body: B64.encode(&p.commit),
                    welcome: None,
                    adds: vec![],
                    // Only canonical fingerprints steer delivery (the server refuses others); a
                    // forged `invalid:...` member is still removed from the MLS group.
                    removes: p
                        .removed
                        .into_iter()
                        .filter(|f| chatao_e2e::is_fingerprint(f))
                        .collect(),
                });
            }
            Err(E2eError::NoSuchMember(_)) if intent == Intent::Auto => {}
            Err(e) => self.notice(format!("{r}: cannot remove {fp}: {e}")),
        }
    }

    pub(super) fn safety(&mut self, room: &str) {
        let Some(r) = room_name(room) else {
            return self.notice(format!("{room} is not a room name"));
        };
        if !self.has_group(r.as_str()) {
            return self.notice(format!("{r} is not an end-to-end encrypted room you are in"));
        }
        let members = self.e2e.members(r.as_str());
        let epoch = self.e2e.epoch(r.as_str()).unwrap_or(0);
        self.notice(format!(
            "{r} is end-to-end encrypted (MLS, epoch {epoch}); {} members; compare these \
             fingerprints with theirs (they see theirs with /whois or chatao --fingerprint):",
            members.len()
        ));
        let mut forged = 0;
        for m in members {
            let nick = self.nick_for(&m.fingerprint, None);
            let who = if m.is_self { format!("{nick} (you)") } else { nick.to_string() };
            let status = if m.status.is_forged() {
                forged += 1;
                format!("!! {} !!", m.status)
            } else {
                m.status.to_string()
            };
            self.notice(format!(
                "  {who:<20} {}  MLS key {}  [{status}]",
                m.fingerprint, m.signature_key_fp
            ));
        }
        if forged > 0 {
            self.warn(format!(
                "{r} has {forged} member(s) with a FORGED or CHANGED key: do not trust this room"
            ));
        }
    }

    // ---- from the server ----

    pub(super) fn invited(
        &mut self,
        room: RoomName,
        from: Nick,
        id: u64,
        epoch: u64,
        body: String,
    ) {
        if self.has_group(room.as_str()) {
            // Replacing a room's group is how a server would swap in one of its own.
            return self.warn(format!(
                "the server delivered a welcome into {room}, whose end-to-end encrypted group \
                 you are in: REFUSED (if the room really was made anew, /part {room} first)"
            ));
        }
        let Ok(bytes) = B64.decode(body.as_bytes()) else {
            return self.warn(format!("the welcome to {room} is not base64"));
        };
        match self.e2e.join(room.as_str(), &bytes, id) {
            Ok(joined) => {
                self.counts.set(room.as_str(), epoch, id);
                // Named from the group, not from the server's `from`, which MLS does not
                // confirm: the welcome's signer and the members, by pinned nickname or key.
                let names: Vec<String> = joined
                    .members
                    .iter()
                    .filter(|m| !m.is_self)
                    .map(|m| self.member_name(&m.fingerprint))
                    .collect();
                let inviter = match &joined.inviter_fp {
                    Some(fp) => self.member_name(fp),
                    None => "a member whose key is FORGED".to_owned(),
                };
                let mode = if joined.open { "open" } else { "invite-only" };
                self.notice(format!(
                    "{inviter} added you to the END-TO-END ENCRYPTED room {room} ({mode}; {} \
                     members: you, {}; the server says it was {from})",
                    joined.members.len(),
                    names.join(", ")
                ));
                for w in joined.warnings {
                    self.warn(format!("{room}: {w}"));
                }
                self.net(ClientMsg::Join { room: room.to_string(), since: Some(id) });
            }
            Err(e) if e.is_forgery() => self.warn(format!("welcome to {room}: {e}")),
            Err(e) => self.notice(format!("cannot join {room} from a welcome: {e}")),
        }
    }

    pub(super) fn key_package(
        &mut self,
        room: RoomName,
        nick: Nick,
        fp: Fingerprint,
        package: String,
    ) {
        let Some(intent) =
            self.inviting.remove(&(room.clone(), nick.as_str().to_ascii_lowercase()))
        else {
            return;
        };
        if !self.has_group(room.as_str()) {
            return;
        }
        if !self.observe(&nick, &fp) {
            return self.warn(format!("{nick} was NOT added to {room}"));
        }
        let Ok(bytes) = B64.decode(package.as_bytes()) else {
            return self.warn(format!("the key package of {nick} is not base64; not added"));
        };
        if self.e2e.has_pending(room.as_str()) {
            if let Intent::User(what) = intent {
                self.notice(format!("{room}: another change is in progress; {what} again"));
            }
            return;
        }
        match self.e2e.add(room.as_str(), &bytes, &fp) {
            Ok(p) => {
                self.in_flight.insert(room.clone(), intent);
                let welcome =
                    p.welcome.map(|w| SealedWelcome { to: fp.to_string(), body: B64.encode(w) });
                self.net(ClientMsg::Commit {
                    room: room.to_string(),
                    epoch: self.commit_epoch(room.as_str()),
                    body: B64.encode(&p.commit),
                    welcome,
                    adds: p.added,
                    removes: vec![],
                });
            }
            Err(e) if e.is_forgery() => {
                self.warn(format!("{e}; the server may be trying to slip someone in as {nick} — {nick} was NOT added to {room}"));
            }
            Err(E2eError::AlreadyMember(_)) => {}
            Err(e) => self.notice(format!("{room}: cannot add {nick}: {e}")),
        }
    }

    /// Our commit was refused: someone else's commit came first. The engine discards ours when
    /// that commit arrives; until then nothing is to be done but wait. Said only for what the
    /// user asked.
    pub(super) fn stale(&mut self, message: String) {
        let user: Vec<RoomName> = self
            .in_flight
            .iter()
            .filter(|(_, i)| matches!(i, Intent::User(_)))
            .map(|(r, _)| r.clone())
            .collect();
        if !user.is_empty() {
            self.notice(message);
        }
    }
}
