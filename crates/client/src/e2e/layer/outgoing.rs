//! What the UI sends: `say`/`me` into an E2E room encrypted into `sealed` (never in clear),
//! `/create --e2e`, `/invite`, `/part` of an E2E room; what waits for a removal in flight.

use super::*;

impl Layer {
    /// A message from the UI, on its way to the server.
    pub fn from_ui(&mut self, msg: ClientMsg) {
        match msg {
            ClientMsg::Say { cid, room, text } => self.say(room, MessageKind::Normal, text, cid),
            ClientMsg::Me { cid, room, text } => self.say(room, MessageKind::Action, text, cid),
            ClientMsg::Create { room, e2e, open } => {
                if e2e
                    && self.creating.len() < JOINS_TRACKED
                    && let Some(r) = room_name(&room)
                {
                    self.creating.insert(r, open);
                }
                self.net(ClientMsg::Create { room, e2e, open });
            }
            ClientMsg::FetchKeyPackage { nick, room: Some(room) } => {
                if let Some(r) = room_name(&room) {
                    if !self.has_group(r.as_str()) {
                        // A plain room (issue 19): its invite list, kept by the server.
                        self.net(ClientMsg::Invite { room, nick });
                        return;
                    }
                    if self.inviting.len() >= INVITES_TRACKED {
                        self.notice(format!(
                            "too many invitations in progress; /invite {nick} later"
                        ));
                        return;
                    }
                    let intent = Intent::User(format!("/invite {nick}"));
                    self.inviting.insert((r, nick.to_ascii_lowercase()), intent);
                }
                self.net(ClientMsg::FetchKeyPackage { nick, room: Some(room) });
            }
            ClientMsg::Join { room, since } => {
                // For a room we have a group for, the server only needs to send what the engine
                // has not processed yet.
                let since = match room_name(&room) {
                    Some(r) if self.has_group(r.as_str()) => self.e2e.last_id(r.as_str()).or(since),
                    _ => since,
                };
                self.net(ClientMsg::Join { room, since });
            }
            ClientMsg::Part { room, reason } => {
                // The user's own /part: the only way, besides an MLS commit removing us, that a
                // group is forgotten. MLS does not let a member commit its own removal, so we
                // first tell the group, signed and encrypted, that we leave: the first member's
                // client to read it commits our removal (docs/PROTOCOL.md 13).
                if let Some(r) = room_name(&room)
                    && self.has_group(r.as_str())
                {
                    let plain =
                        Plain { kind: MessageKind::Normal, text: String::new(), leave: true };
                    let epoch = self.e2e.epoch(r.as_str()).unwrap_or(0);
                    let sent = serde_json::to_vec(&plain)
                        .map_err(|e| e.to_string())
                        .and_then(|p| self.e2e.encrypt(r.as_str(), &p).map_err(|e| e.to_string()));
                    match sent {
                        Ok(body) => self.net(ClientMsg::Sealed { cid: None,
                            room: room.clone(),
                            epoch,
                            body: B64.encode(body),
                        }),
                        Err(e) => self.notice(format!(
                            "{r}: could not tell the group you leave ({e}); a member must /remove you"
                        )),
                    }
                    self.notice(format!(
                        "you left the end-to-end encrypted room {r}: its group and history are \
                         forgotten here, and the members' clients remove your key from the group"
                    ));
                    self.forget(&r);
                }
                self.net(ClientMsg::Part { room, reason });
            }
            other => self.net(other),
        }
    }

    /// Deletes the room's group, log and count (the user's /part).
    pub(super) fn forget(&mut self, r: &RoomName) {
        if let Err(e) = self.e2e.forget(r.as_str()) {
            self.notice(format!("{r}: cannot forget the group: {e}"));
        }
        self.counts.remove(r.as_str());
        self.shown.remove(r);
        self.held.remove(r);
        self.in_flight.remove(r);
    }

    /// Text for `room`: encrypted into a `sealed` (same client id `cid`) in a room we have the
    /// group of, else passed on as it is. A text the layer cannot send is refused with an
    /// `error` carrying `cid`, so that the UI's acknowledgements ([`crate::core`]) know.
    pub(super) fn say(&mut self, room: String, kind: MessageKind, text: String, cid: Option<Cid>) {
        let plain_msg = |room, text| {
            if kind == MessageKind::Action {
                ClientMsg::Me { cid, room, text }
            } else {
                ClientMsg::Say { cid, room, text }
            }
        };
        let Some(r) = room_name(&room) else {
            return self.net(plain_msg(room, text));
        };
        if !self.has_group(r.as_str()) {
            if self.server_e2e.contains(&r) {
                return self.refuse(
                    cid,
                    format!(
                        "{r} is end-to-end encrypted and you are not (yet) in its group: not sent"
                    ),
                );
            }
            return self.net(plain_msg(room, text));
        }
        if let Some(held) = self.held.get_mut(&r) {
            if held.texts.len() >= HELD_TEXTS {
                return self.refuse(cid, format!("{r}: too many messages waiting; not sent"));
            }
            held.texts.push((kind, text, cid));
            return;
        }
        let plain = match serde_json::to_vec(&Plain { kind, text, leave: false }) {
            Ok(p) => p,
            Err(e) => return self.refuse(cid, format!("cannot encode the message: {e}")),
        };
        let epoch = self.e2e.epoch(r.as_str()).unwrap_or(0);
        match self.e2e.encrypt(r.as_str(), &plain) {
            Ok(body) => {
                if let Some(cid) = cid {
                    if self.own_sent.len() >= OWN_SENT {
                        self.own_sent.pop_front();
                    }
                    self.own_sent.push_back((cid, r.clone(), plain));
                }
                self.net(ClientMsg::Sealed { cid, room, epoch, body: B64.encode(body) })
            }
            Err(e) => self.refuse(cid, format!("{r}: cannot encrypt, not sent: {e}")),
        }
    }

    /// A text of the UI's not sent: said, as a refusal of `cid` when it has one.
    pub(super) fn refuse(&mut self, cid: Option<Cid>, text: String) {
        match cid {
            Some(cid) => {
                let (code, room) = (ErrorCode::Other, None);
                self.ui(ServerMsg::Error { cid: Some(cid), code, message: text, room })
            }
            None => self.notice(text),
        }
    }

    /// Our removal in `room` is in, or was overtaken by another commit: if the key is still a
    /// member, remove it again (the texts stay held); else send what was held, at the new epoch.
    pub(super) fn release(&mut self, room: &RoomName) {
        let Some(held) = self.held.remove(room) else { return };
        let still =
            self.e2e.members(room.as_str()).iter().any(|m| m.fingerprint == held.fingerprint);
        if still && !self.e2e.has_pending(room.as_str()) {
            self.in_flight.remove(room);
            self.commit_remove(room, &held.fingerprint, Intent::Auto);
            if self.e2e.has_pending(room.as_str()) {
                self.held.entry(room.clone()).or_default().texts.extend(held.texts);
                return;
            }
        }
        for (kind, text, cid) in held.texts {
            self.say(room.to_string(), kind, text, cid);
        }
    }
}
