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
use chatao_proto::Fingerprint;

mod incoming;
mod membership;
mod naming;
mod outgoing;
#[cfg(test)]
mod tests;

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
    /// A canonical fingerprint, or the `invalid:<hex>` a forged member is shown as.
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
}

/// The name shown for a key no nickname is pinned to: `key-` and the start of its
/// fingerprint (in the nickname alphabet), so a message is never shown under a name the server
/// chose.
/// `None` when `fp` is no fingerprint (a forged member's `invalid:<hex>`).
pub fn key_nick(fp: &str) -> Option<Nick> {
    // URL-safe base64 is all nickname characters, and `key-` and 12 of them fit.
    let short: String = Fingerprint::parse(fp).ok()?.url_safe().chars().take(12).collect();
    Nick::parse(&format!("key-{short}")).ok()
}
