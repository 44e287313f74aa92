//! The E2E layer's logic, without threads or channels: server messages and the UI's messages
//! in, messages for the server and events for the UI out. [`super::attach`] runs it on its own
//! thread (the MLS engine writes its state to disk on every change).
//!
//! What it does:
//! - on start: uploads key packages, and rejoins every room it has a group for, asking only for
//!   what it has not processed yet (`since` = the engine's last id);
//! - a room's `sealed` messages go through the engine in order: application messages come out
//!   as ordinary `message` events (so line mode, JSON and the TUI show them unchanged), commits
//!   as notices ("bob was added by alice"); anything forged or changed as a loud `WARNING`;
//! - `say`/`me` into a room it has a group for are encrypted into `sealed`: never sent in clear;
//! - `/create --e2e [--open]` makes the group once the server confirms the room, with the mode
//!   in the group itself; `/invite` fetches a key package and commits the add after checking
//!   the key against the nickname's pin; a `join_request` does the same automatically only if
//!   our own group says the room is open (never on the server's word); `/remove` commits a
//!   removal; `invited` joins the group (never replacing one we are in);
//! - the server's word alone never changes a group: a `leave` (ours or another member's, part
//!   or kick) or a `not_invited` removes nobody and forgets nothing; only the user's own `/part`
//!   or an MLS commit does;
//! - each room's commit count ([`super::counts`]) is the `epoch` of the commits we send;
//! - what it says itself goes to the UI as [`NetEvent::E2e`], never as a server `notice`;
//! - after a restart, earlier messages are shown from the engine's local log (MLS keys are used
//!   once, so the ciphertext on the server could not be decrypted again).

use std::collections::{HashMap, HashSet, VecDeque};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chatao_e2e::{E2e, E2eError, Event};
use chatao_proto::{
    Cid, ClientMsg, ErrorCode, LeaveReason, MessageKind, Nick, RoomName, SealedKind, SealedWelcome,
    ServerMsg,
};
use serde::{Deserialize, Serialize};

use super::Request;
use super::counts::CommitCounts;
use super::pins::{NickPins, PinCheck};
use crate::net::NetEvent;

/// Key packages uploaded on each connection.
pub const KEY_PACKAGES: usize = 5;
/// Decrypted messages shown from the local log when a room is (re)joined.
pub const LOG_ON_JOIN: usize = 50;
/// The most messages one replay carries (docs/PROTOCOL.md 8.2); a full one means more follow.
pub const HISTORY_PAGE: usize = 500;
/// Unanswered joins remembered. Overflow policy: the oldest is forgotten.
pub const JOINS_TRACKED: usize = 256;
/// Key packages asked for and not answered yet. Overflow policy: `/invite` is refused (the
/// user is told), a join request is not acted on.
pub const INVITES_TRACKED: usize = 64;
/// Texts held per room while a removal of ours is in flight. Overflow policy: the text is not
/// sent, and the user is told.
pub const HELD_TEXTS: usize = 64;

/// The plaintext of an application message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plain {
    #[serde(default)]
    pub kind: MessageKind,
    pub text: String,
    /// The sender is leaving the room (its `/part`): signed by its own key inside the group,
    /// so the server cannot forge it; the other members' clients then commit its removal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leave: bool,
}

/// Something the layer wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Send to the server.
    Net(ClientMsg),
    /// Hand to the UI.
    Ui(NetEvent),
}

/// Why we have a commit in flight in a room: what to say if it loses a race.
#[derive(Debug, Clone, PartialEq)]
enum Intent {
    /// The user asked (`/invite`, `/remove`): tell them to try again.
    User(String),
    /// Automatic (a join request in an open room, re-doing a removal overtaken by another
    /// commit): someone else's client may do it.
    Auto,
}

/// Texts waiting for our removal of `fingerprint` to be in.
#[derive(Debug, Default)]
struct Held {
    fingerprint: String,
    /// With each text its client id ([`chatao_proto::Cid`]), carried to the `sealed` made of it.
    texts: Vec<(MessageKind, String, Option<Cid>)>,
}

/// The layer's state for one connection.
pub struct Layer {
    e2e: E2e,
    me: Nick,
    pins: NickPins,
    out: Vec<Out>,
    /// Rooms we asked to create as E2E rooms, and whether open; the group is made when the
    /// server confirms. Bounded by [`JOINS_TRACKED`] (overflow: not remembered, no group).
    creating: HashMap<RoomName, bool>,
    /// Each room's commit count: the `epoch` of our commits.
    counts: CommitCounts,
    /// Rooms the server says are E2E (we may not have a group for them).
    server_e2e: HashSet<RoomName>,
    /// Rooms whose local log was shown on this connection.
    shown: HashSet<RoomName>,
    /// Nicknames we asked a key package of, per room, and why (`/invite` or a join request).
    inviting: HashMap<(RoomName, String), Intent>,
    /// Rooms with a commit of ours in flight.
    in_flight: HashMap<RoomName, Intent>,
    /// Rooms with a removal of ours in flight, and the texts typed meanwhile: they are
    /// encrypted only once the removal is in (ours or someone else's), so the removed member
    /// can never read them.
    held: HashMap<RoomName, Held>,
    /// Joins and creates sent and not yet answered, to tell which room a `not_invited` or
    /// `room_exists` refers to (the error names it; only a join or create is refused so).
    joining: VecDeque<RoomName>,
    /// Our texts sent as `sealed` with a client id, by id, until their echo: the echo is then
    /// known as ours by its id even when the engine cannot tell (it remembers only its last
    /// [`chatao_e2e::SENT_CACHE`] messages, and nothing from before this connection, while a
    /// re-send after a reconnection is answered with the first echo). At most [`OWN_SENT`];
    /// overflow policy: the oldest is forgotten (its echo then goes to the engine alone).
    own_sent: VecDeque<(Cid, RoomName, Vec<u8>)>,
}

/// Most texts remembered in [`Layer`]'s `own_sent`: as many as the UI keeps unacknowledged.
pub const OWN_SENT: usize = chatao_proto::msg::MAX_UNACKED;

fn room_name(r: &str) -> Option<RoomName> {
    RoomName::parse(r).ok()
}

impl Layer {
    /// A layer for the session of `me` over `e2e`, with the nickname pins kept in `dir`.
    pub fn new(e2e: E2e, me: Nick, dir: &std::path::Path) -> Layer {
        Layer {
            e2e,
            me,
            pins: NickPins::load(dir),
            out: Vec::new(),
            creating: HashMap::new(),
            counts: CommitCounts::load(dir),
            server_e2e: HashSet::new(),
            shown: HashSet::new(),
            inviting: HashMap::new(),
            in_flight: HashMap::new(),
            held: HashMap::new(),
            joining: VecDeque::new(),
            own_sent: VecDeque::new(),
        }
    }

    /// Everything the layer produced since the last call.
    pub fn drain(&mut self) -> Vec<Out> {
        self.pins.flush();
        std::mem::take(&mut self.out)
    }

    fn net(&mut self, msg: ClientMsg) {
        if let ClientMsg::Join { room, .. } | ClientMsg::Create { room, .. } = &msg
            && let Some(r) = room_name(room)
        {
            if self.joining.len() >= JOINS_TRACKED {
                self.joining.pop_front();
            }
            self.joining.push_back(r);
        }
        self.out.push(Out::Net(msg));
    }

    fn ui(&mut self, msg: ServerMsg) {
        self.out.push(Out::Ui(NetEvent::Msg(msg)));
    }

    /// Something the layer says: marked as its own, never a server `notice`.
    fn notice(&mut self, text: String) {
        self.out.push(Out::Ui(NetEvent::E2e { text, warning: false }));
    }

    /// A warning that must not be missed: forged keys, changed keys, a server caught lying.
    fn warn(&mut self, text: String) {
        tracing::warn!(warning = ?text, "e2e");
        self.out.push(Out::Ui(NetEvent::E2e { text, warning: true }));
    }

    /// The `epoch` our next commit in `room` states: the room's commit count (for a group
    /// made before counts were kept, the MLS epoch, which equals it unless garbage was sent).
    fn commit_epoch(&self, room: &str) -> u64 {
        self.counts.get(room).unwrap_or_else(|| self.e2e.epoch(room).unwrap_or(0))
    }

    /// True if the room is end-to-end encrypted as far as we know (our group or the server).
    fn e2e_context(&self, room: &RoomName) -> bool {
        self.has_group(room.as_str()) || self.server_e2e.contains(room)
    }

    fn has_group(&self, room: &str) -> bool {
        self.e2e.is_member(room)
    }

    /// The rooms we have a group for.
    pub fn rooms(&self) -> Vec<String> {
        self.e2e.rooms()
    }

    /// After `welcome`: upload key packages and rejoin our E2E rooms from where we stopped.
    pub fn start(&mut self) {
        match self.e2e.key_packages(KEY_PACKAGES) {
            Ok(kps) => {
                let packages = kps.iter().map(|k| B64.encode(k)).collect();
                self.net(ClientMsg::KeyPackages { packages });
            }
            Err(e) => self.warn(format!("cannot make MLS key packages: {e}")),
        }
        for room in self.e2e.rooms() {
            let since = self.e2e.last_id(&room);
            self.net(ClientMsg::Join { room, since });
        }
    }

    /// The nick we know for key `fp`.
    fn nick_for(&self, fp: &str, claimed: Option<&Nick>) -> Nick {
        if fp == self.e2e.fingerprint() {
            return self.me.clone();
        }
        if let Some(c) = claimed
            && self.pins.get(c.as_str()) == Some(fp)
        {
            return c.clone();
        }
        self.pins
            .nick_of(fp)
            .and_then(|n| Nick::parse(n).ok())
            .or_else(|| claimed.cloned())
            .unwrap_or_else(|| Nick::parse("unknown").unwrap_or_else(|_| self.me.clone()))
    }

    /// Checks what the server says about who `nick` is against the pin.
    fn observe(&mut self, nick: &Nick, fp: &str) -> bool {
        // Only a canonical fingerprint is ever pinned (and written to the pin file).
        if !chatao_e2e::is_fingerprint(fp) {
            self.warn(format!("the server gave {nick} a key that is not a fingerprint; ignored"));
            return false;
        }
        match self.pins.check(nick.as_str(), fp) {
            PinCheck::Known | PinCheck::New => true,
            PinCheck::Changed { pinned } => {
                self.warn(format!(
                    "the server says {nick} has the key {fp}, but {nick} was pinned to {pinned}: \
                     this may be someone else using that name"
                ));
                false
            }
        }
    }

    /// Like [`Layer::observe`] for what is not about an E2E room (`/whois`): a change against a
    /// pin is a warning, but nothing is pinned.
    fn compare(&mut self, nick: &Nick, fp: &str) {
        if let PinCheck::Changed { pinned } = self.pins.peek(nick.as_str(), fp) {
            self.warn(format!(
                "the server says {nick} has the key {fp}, but {nick} was pinned to {pinned}: \
                 this may be someone else using that name"
            ));
        }
    }

    // ---- from the UI ----

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
    fn forget(&mut self, r: &RoomName) {
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
    fn say(&mut self, room: String, kind: MessageKind, text: String, cid: Option<Cid>) {
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
    fn refuse(&mut self, cid: Option<Cid>, text: String) {
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
    fn release(&mut self, room: &RoomName) {
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

    /// A local request (`/remove`, `/safety`).
    pub fn request(&mut self, req: Request) {
        match req {
            Request::Remove { room, nick } => self.remove(&room, &nick),
            Request::Safety { room } => self.safety(&room),
        }
    }

    fn remove(&mut self, room: &str, nick: &str) {
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

    fn commit_remove(&mut self, r: &RoomName, fp: &str, intent: Intent) {
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

    fn safety(&mut self, room: &str) {
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
            ServerMsg::Whois { nick, fingerprint, rooms, away, since } => {
                self.compare(&nick, &fingerprint);
                self.ui(ServerMsg::Whois { nick, fingerprint, rooms, away, since });
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

    fn announce(&mut self, room: &RoomName) {
        let epoch = self.e2e.epoch(room.as_str()).unwrap_or(0);
        let n = self.e2e.members(room.as_str()).len();
        self.notice(format!(
            "{room} is END-TO-END ENCRYPTED (MLS, epoch {epoch}, {n} member(s)): only its \
             members' clients can read it; /safety lists their keys"
        ));
    }

    fn replay_log(&mut self, room: &RoomName) {
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
    fn on_leave(&mut self, room: &RoomName, nick: &Nick, reason: LeaveReason) {
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
    fn sealed(
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
    fn own_echo(
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

    /// Who sent message `id`: the nickname pinned to the key that signed it. The server's
    /// `from` is only a claim: when it disagrees with the signer, the signer's pinned nickname
    /// is shown, or a name made of its fingerprint ([`key_nick`]), with a warning.
    fn sender(&mut self, room: &RoomName, id: u64, from: &Nick, fp: &str) -> Nick {
        if self.pins.get(from.as_str()) == Some(fp) {
            return from.clone();
        }
        if let Some(known) = self.pins.nick_of(fp).and_then(|n| Nick::parse(n).ok()) {
            self.warn(format!(
                "{room}: the server says message {id} is from {from}, but it is signed by \
                 {known}'s key {fp}; shown as {known}'s"
            ));
            return known;
        }
        let shown = key_nick(fp).unwrap_or_else(|| self.nick_for(fp, None));
        self.warn(format!(
            "{room}: message {id} is signed by the key {fp}, which no nickname is pinned to \
             (the server says it is from {from}); shown as {shown}"
        ));
        shown
    }

    fn invited(&mut self, room: RoomName, from: Nick, id: u64, epoch: u64, body: String) {
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

    /// A member's pinned nickname, or its fingerprint.
    fn member_name(&self, fp: &str) -> String {
        if fp == self.e2e.fingerprint() {
            return self.me.to_string();
        }
        match self.pins.nick_of(fp) {
            Some(n) => format!("{n} ({fp})"),
            None => fp.to_owned(),
        }
    }

    fn key_package(&mut self, room: RoomName, nick: Nick, fp: String, package: String) {
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
                    p.welcome.map(|w| SealedWelcome { to: fp.clone(), body: B64.encode(w) });
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
    fn stale(&mut self, message: String) {
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

/// The name shown for a key no nickname is pinned to: `key-` and the start of its
/// fingerprint (in the nickname alphabet), so a message is never shown under a name the server
/// chose.
pub fn key_nick(fp: &str) -> Option<Nick> {
    let short: String = fp
        .trim_start_matches("SHA256:")
        .chars()
        .filter_map(|c| match c {
            '+' => Some('-'),
            '/' => Some('_'),
            c if c.is_ascii_alphanumeric() => Some(c),
            _ => None,
        })
        .take(12)
        .collect();
    Nick::parse(&format!("key-{short}")).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chatao_proto::Member;

    fn layer(dir: &std::path::Path) -> Layer {
        let keys = chatao_transport::Keypair::from_secret([7u8; 32]);
        let e2e = E2e::open(dir, keys.secret_bytes(), &keys.public().fingerprint()).unwrap();
        Layer::new(e2e, Nick::parse("alice").unwrap(), dir)
    }

    fn room() -> RoomName {
        RoomName::parse("#sec").unwrap()
    }

    fn is_warning(o: &Out) -> bool {
        matches!(o, Out::Ui(NetEvent::E2e { warning: true, .. }))
    }

    fn said(out: &[Out], needle: &str) -> bool {
        out.iter()
            .any(|o| matches!(o, Out::Ui(NetEvent::E2e { text, .. }) if text.contains(needle)))
    }

    fn fp(n: u8) -> String {
        chatao_transport::Keypair::from_secret([n; 32]).public().fingerprint()
    }

    /// The layer of a client that created `#sec` and saw the server confirm it.
    fn in_room(dir: &std::path::Path) -> Layer {
        in_room_open(dir, false)
    }

    /// As [`in_room`], the room open (`true`) or invite-only.
    fn in_room_open(dir: &std::path::Path, open: bool) -> Layer {
        let mut l = layer(dir);
        l.from_ui(ClientMsg::Create { room: "#sec".into(), e2e: true, open });
        let me = Member {
            nick: Nick::parse("alice").unwrap(),
            fingerprint: fp(7),
            away: None,
            bot: false,
            op: false,
        };
        l.from_server(ServerMsg::Members {
            room: room(),
            members: vec![me],
            e2e: true,
            total: None,
            next: None,
            more: false,
        });
        l.drain();
        l
    }

    #[test]
    fn text_for_an_e2e_room_leaves_encrypted_and_never_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        l.from_ui(ClientMsg::Say { cid: None, room: "#sec".into(), text: "top secret".into() });
        l.from_ui(ClientMsg::Say { cid: None, room: "#lobby".into(), text: "hello".into() });
        let out = l.drain();
        assert!(
            matches!(&out[0], Out::Net(ClientMsg::Sealed { cid: _, room, epoch: 0, body }) if room == "#sec" && !body.contains("secret"))
        );
        assert!(matches!(&out[1], Out::Net(ClientMsg::Say { room, .. }) if room == "#lobby"));
        assert_eq!(out.len(), 2);
    }

    fn sealed_echo(id: u64, body: String, cid: Option<Cid>) -> ServerMsg {
        ServerMsg::Sealed {
            room: room(),
            id,
            time: 5,
            from: Nick::parse("alice").unwrap(),
            epoch: 0,
            kind: SealedKind::Application,
            body,
            history: false,
            cid,
        }
    }

    #[test]
    fn a_text_keeps_its_client_id_through_encryption_and_its_echo_brings_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        l.from_ui(ClientMsg::Say { cid: Some(7), room: "#sec".into(), text: "first".into() });
        let Some(Out::Net(ClientMsg::Sealed { cid: Some(7), body, .. })) = l.drain().pop() else {
            panic!("the sealed text carries the cid")
        };
        // The echo of the very bytes sent: the engine knows it; the UI gets the cid back.
        l.from_server(sealed_echo(3, body, Some(7)));
        let out = l.drain();
        assert!(
            matches!(&out[..], [Out::Ui(NetEvent::Msg(ServerMsg::Message { cid: Some(7), text, .. }))] if text == "first"),
            "{out:?}"
        );
    }

    #[test]
    fn an_echo_of_an_earlier_copy_of_a_re_sent_text_is_known_by_its_client_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        // A re-send after a reconnection: encrypted anew, while the server answers the repeated
        // id with the first copy's echo, which this engine never saw.
        l.from_ui(ClientMsg::Say { cid: Some(8), room: "#sec".into(), text: "again".into() });
        l.drain();
        let first_copy = B64.encode(b"bytes of a copy encrypted on the lost connection");
        l.from_server(sealed_echo(4, first_copy.clone(), Some(8)));
        let out = l.drain();
        assert!(
            matches!(&out[..], [Out::Ui(NetEvent::Msg(ServerMsg::Message { cid: Some(8), id: 4, text, .. }))] if text == "again"),
            "{out:?}"
        );
        // Logged as ours, once: the same echo again is a duplicate.
        l.from_server(sealed_echo(4, first_copy, Some(8)));
        assert!(l.drain().is_empty());
    }

    #[test]
    fn plaintext_injected_by_the_server_into_an_e2e_room_is_dropped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        l.from_server(ServerMsg::Message {
            cid: None,
            room: room(),
            id: 9,
            time: 1,
            from: Nick::parse("mallory").unwrap(),
            kind: MessageKind::Normal,
            text: "trust me".into(),
            history: false,
        });
        let out = l.drain();
        assert_eq!(out.len(), 1);
        assert!(is_warning(&out[0]), "{out:?}");
    }

    /// Issue 19: `/invite` in a room the layer holds no group of (a plain room) is the
    /// server's `invite`, not a key package fetch.
    #[test]
    fn an_invite_into_a_plain_room_goes_to_the_server_as_invite() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#plain".into()) });
        let out = l.drain();
        let invite = ClientMsg::Invite { room: "#plain".into(), nick: "bob".into() };
        assert!(matches!(&out[..], [Out::Net(m)] if *m == invite), "{out:?}");
    }

    #[test]
    fn a_server_that_changes_who_a_nickname_is_gets_a_warning_and_no_add() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        let bob = Nick::parse("bob").unwrap();
        l.from_server(ServerMsg::Join { room: room(), nick: bob.clone(), fingerprint: fp(2) });
        l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) });
        l.drain();
        l.from_server(ServerMsg::KeyPackage {
            nick: bob,
            fingerprint: fp(3),
            package: "AAAA".into(),
            room: Some(room()),
        });
        let out = l.drain();
        assert!(out.iter().all(|o| !matches!(o, Out::Net(_))), "no commit: {out:?}");
        let warnings = out.iter().filter(|o| is_warning(o)).count();
        assert!(warnings >= 1, "{out:?}");
    }

    #[test]
    fn a_fingerprint_that_is_not_one_is_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        let forged = format!("{}\nmallory {}", fp(2), fp(3));
        let bob = Nick::parse("bob").unwrap();
        l.from_server(ServerMsg::Join { room: room(), nick: bob, fingerprint: forged });
        let out = l.drain();
        assert!(out.iter().any(is_warning));
        let pins = NickPins::load(dir.path());
        assert_eq!(pins.get("bob"), None);
        assert_eq!(pins.get("mallory"), None);
    }

    /// Feeds our own commit back as the server would relay it.
    fn echo_commit(l: &mut Layer, out: &[Out], id: u64) {
        let body = out
            .iter()
            .find_map(|o| match o {
                Out::Net(ClientMsg::Commit { body, .. }) => Some(body.clone()),
                _ => None,
            })
            .unwrap();
        l.from_server(ServerMsg::Sealed {
            cid: None,
            room: room(),
            id,
            time: 1,
            from: Nick::parse("alice").unwrap(),
            epoch: 0,
            kind: SealedKind::Commit,
            body,
            history: false,
        });
    }

    #[test]
    fn text_typed_while_a_removal_is_in_flight_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        // bob's client, with its own state, offers a key package; alice adds him.
        let bob_dir = tempfile::tempdir().unwrap();
        let bob_keys = chatao_transport::Keypair::from_secret([2u8; 32]);
        let bob_fp = bob_keys.public().fingerprint();
        let mut bob = E2e::open(bob_dir.path(), bob_keys.secret_bytes(), &bob_fp).unwrap();
        let kp = B64.encode(&bob.key_packages(1).unwrap()[0]);
        let bob_nick = Nick::parse("bob").unwrap();
        l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) });
        l.from_server(ServerMsg::KeyPackage {
            nick: bob_nick.clone(),
            fingerprint: bob_fp.clone(),
            package: kp,
            room: Some(room()),
        });
        let out = l.drain();
        echo_commit(&mut l, &out, 1);
        assert_eq!(l.e2e.members("#sec").len(), 2);
        l.drain();
        // alice removes bob: her client holds what she types meanwhile.
        l.request(Request::Remove { room: "#sec".into(), nick: bob_nick.to_string() });
        l.from_ui(ClientMsg::Say { cid: None, room: "#sec".into(), text: "after bob".into() });
        let out = l.drain();
        assert!(out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Commit { removes, .. }) if removes == std::slice::from_ref(&bob_fp))));
        assert!(
            !out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Sealed { .. }))),
            "held: {out:?}"
        );
        echo_commit(&mut l, &out, 2);
        let out = l.drain();
        assert!(
            out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Sealed { epoch: 2, .. }))),
            "sent once bob is out, at the new epoch: {out:?}"
        );
        assert_eq!(l.e2e.members("#sec").len(), 1);
    }

    /// alice's layer in `#sec` with bob (a real engine of his own) added.
    fn with_bob(dir: &std::path::Path, bob_dir: &std::path::Path) -> (Layer, E2e, String) {
        let mut l = in_room(dir);
        let bob_keys = chatao_transport::Keypair::from_secret([2u8; 32]);
        let bob_fp = bob_keys.public().fingerprint();
        let mut bob = E2e::open(bob_dir, bob_keys.secret_bytes(), &bob_fp).unwrap();
        let kp = B64.encode(&bob.key_packages(1).unwrap()[0]);
        l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) });
        l.from_server(ServerMsg::KeyPackage {
            nick: Nick::parse("bob").unwrap(),
            fingerprint: bob_fp.clone(),
            package: kp,
            room: Some(room()),
        });
        let out = l.drain();
        echo_commit(&mut l, &out, 1);
        l.drain();
        (l, bob, bob_fp)
    }

    #[test]
    fn a_join_request_in_an_invite_only_room_adds_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        assert_eq!(l.e2e.is_open("#sec"), Some(false));
        let mallory = Nick::parse("mallory").unwrap();
        l.from_server(ServerMsg::JoinRequest { room: room(), nick: mallory, fingerprint: fp(9) });
        let out = l.drain();
        assert!(!out.iter().any(|o| matches!(o, Out::Net(_))), "no key package asked: {out:?}");
        assert!(said(&out, "not added"), "{out:?}");
    }

    #[test]
    fn a_join_request_in_an_open_room_is_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room_open(dir.path(), true);
        assert_eq!(l.e2e.is_open("#sec"), Some(true));
        let carol = Nick::parse("carol").unwrap();
        l.from_server(ServerMsg::JoinRequest { room: room(), nick: carol, fingerprint: fp(3) });
        let out = l.drain();
        assert!(
            out.iter().any(|o| matches!(o, Out::Net(ClientMsg::FetchKeyPackage { nick, .. }) if nick == "carol")),
            "{out:?}"
        );
    }

    #[test]
    fn a_forged_leave_or_a_kick_forgets_nothing_and_removes_nobody_but_our_part_does() {
        let (dir, bob_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut l, _bob, _) = with_bob(dir.path(), bob_dir.path());
        for (nick, reason) in [
            ("alice", LeaveReason::Part),
            ("alice", LeaveReason::Kicked),
            ("bob", LeaveReason::Part),
            ("bob", LeaveReason::Quit),
        ] {
            l.from_server(ServerMsg::Leave {
                room: room(),
                nick: Nick::parse(nick).unwrap(),
                reason,
                message: None,
            });
        }
        let out = l.drain();
        assert!(!out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Commit { .. }))), "{out:?}");
        assert!(l.has_group("#sec"), "the group is kept");
        assert_eq!(l.e2e.members("#sec").len(), 2, "bob is still a member");
        l.from_server(ServerMsg::Error {
            cid: None,
            code: ErrorCode::NotInvited,
            message: "#sec is invite-only".into(),
            room: Some(room()),
        });
        assert!(l.has_group("#sec"));
        // The user's own /part is what forgets it.
        l.from_ui(ClientMsg::Part { room: "#sec".into(), reason: None });
        assert!(!l.has_group("#sec"));
        assert!(l.counts.get("#sec").is_none());
    }

    #[test]
    fn a_refused_rejoin_is_known_by_the_room_the_error_names_never_by_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        l.drain();
        l.from_ui(ClientMsg::Join { room: "#sec".into(), since: None });
        l.drain();
        // Text that names the room but no `room`: not taken for the answer to the join.
        let refusal = |room| ServerMsg::Error {
            cid: None,
            code: ErrorCode::NotInvited,
            message: "#sec is invite-only: a member must /invite you".into(),
            room,
        };
        l.from_server(refusal(None));
        let out = l.drain();
        assert!(!said(&out, "no longer a member"), "{out:?}");
        assert!(out.iter().any(|o| matches!(o, Out::Ui(NetEvent::Msg(ServerMsg::Error { .. })))));
        // The same refusal naming the room is the join's answer: the group is kept, and said.
        l.from_server(refusal(Some(room())));
        let out = l.drain();
        assert!(said(&out, "no longer a member of #sec"), "{out:?}");
        assert!(l.has_group("#sec"));
    }

    #[test]
    fn a_welcome_into_a_room_we_are_in_is_refused_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        let before = l.e2e.members("#sec");
        l.from_server(ServerMsg::Invited {
            room: room(),
            from: Nick::parse("mallory").unwrap(),
            id: 5,
            epoch: 1,
            body: "AAAA".into(),
        });
        let out = l.drain();
        assert!(out.iter().any(|o| is_warning(o) && said(std::slice::from_ref(o), "REFUSED")));
        assert_eq!(l.e2e.members("#sec"), before);
    }

    #[test]
    fn a_message_is_shown_under_its_signer_never_under_the_servers_from() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        let show = |l: &mut Layer, id: u64, from: &str, sender_fp: &str| -> (String, bool) {
            l.out.clear();
            let nick = l.sender(&room(), id, &Nick::parse(from).unwrap(), sender_fp);
            (nick.to_string(), l.out.iter().any(is_warning))
        };
        // A key no nickname is pinned to: a name made of its fingerprint, a warning, and the
        // server's `from` is not pinned to it.
        let (shown, warned) = show(&mut l, 3, "carol", &fp(8));
        assert!(shown.starts_with("key-") && warned, "{shown}");
        assert_eq!(l.pins.get("carol"), None);
        // A key pinned to another name: shown under that name, with a warning.
        l.pins.check("bob", &fp(2));
        assert_eq!(show(&mut l, 4, "carol", &fp(2)), ("bob".to_owned(), true));
        // Agreement: no warning.
        assert_eq!(show(&mut l, 5, "bob", &fp(2)), ("bob".to_owned(), false));
    }

    #[test]
    fn nicknames_are_pinned_only_in_an_e2e_context() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = in_room(dir.path());
        let lobby = RoomName::parse("#lobby").unwrap();
        l.from_server(ServerMsg::Join {
            room: lobby.clone(),
            nick: Nick::parse("dave").unwrap(),
            fingerprint: fp(4),
        });
        l.from_server(ServerMsg::Whois {
            nick: Nick::parse("erin").unwrap(),
            fingerprint: fp(5),
            rooms: vec![],
            away: None,
            since: 0,
        });
        l.from_server(ServerMsg::Join {
            room: room(),
            nick: Nick::parse("frank").unwrap(),
            fingerprint: fp(6),
        });
        l.drain();
        let pins = NickPins::load(dir.path());
        assert_eq!(pins.get("dave"), None);
        assert_eq!(pins.get("erin"), None);
        assert_eq!(pins.get("frank"), Some(fp(6).as_str()), "written by the batch's flush");
    }

    #[test]
    fn commits_state_the_rooms_commit_count_which_counts_every_commit_record() {
        let (dir, bob_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut l, _bob, _) = with_bob(dir.path(), bob_dir.path());
        assert_eq!(l.counts.get("#sec"), Some(1));
        // A garbage commit from a member: the MLS group does not move, the count does.
        l.from_server(ServerMsg::Sealed {
            cid: None,
            room: room(),
            id: 2,
            time: 1,
            from: Nick::parse("bob").unwrap(),
            epoch: 1,
            kind: SealedKind::Commit,
            body: B64.encode(b"garbage"),
            history: false,
        });
        l.drain();
        assert_eq!(l.e2e.epoch("#sec"), Some(1));
        assert_eq!(l.counts.get("#sec"), Some(2));
        l.request(Request::Remove { room: "#sec".into(), nick: "bob".into() });
        let out = l.drain();
        assert!(
            out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Commit { epoch: 2, .. }))),
            "{out:?}"
        );
    }
}
