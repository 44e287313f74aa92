//! The typed messages inside the encrypted channel.
//!
//! Every message is a JSON object with a `"type"` field naming the variant in `snake_case`.
//! Fields that are optional may be omitted; unknown fields are ignored, so a newer peer may add
//! fields without breaking an older one. docs/PROTOCOL.md has an encoded example of each.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::names::{Fingerprint, Nick, RoomName};

/// A message from a client to the server.
///
/// Names inside client messages are plain strings, not validated newtypes: the server checks
/// them itself so that it can answer a bad one with a precise [`ErrorCode`] instead of a generic
/// decoding error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// The first message after the handshake: who I want to be. Its optional flags
    /// (`"quiet":true`) are [`HelloFlags`], read from the same record
    /// ([`crate::codec::decode_hello_flags`]) so that this variant stays as old peers build it.
    Hello { nick: String },
    /// Text for everyone in `room`.
    Say {
        room: String,
        text: String,
        /// The client's id for this message (see [`Cid`]): the server's echo, or its refusal,
        /// carries it back, and a repeated id is answered with the first echo, never a second
        /// message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
    },
    /// An action (`/me waves`) for everyone in `room`.
    Me {
        room: String,
        text: String,
        /// The client's id for this message (see [`Cid`]): the server's echo, or its refusal,
        /// carries it back, and a repeated id is answered with the first echo, never a second
        /// message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
    },
    /// I am leaving; the server answers with `bye` once everything sent before has been handled.
    Quit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Keepalive probe; the server answers `pong` with the same token.
    Ping { token: u64 },
    /// Answer to the server's `ping`.
    Pong { token: u64 },
    /// Join `room` (created on first join). The server announces the join, sends `members`,
    /// the topic if one is set, and history: the messages after `since` when given, else the
    /// last `history_on_join` messages.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Leave `room`, optionally saying why.
    Part {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Ask for a page of the list of rooms (answered with `room_list`): the first page, or
    /// with `after` the rooms whose names sort after it (the `next` of the previous page).
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Ask for a page of a room's members (answered with `members`): the first page, or with
    /// `after` the members whose folded nicknames sort after it (the `next` of the previous
    /// page).
    Who {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Set a room's topic (`text`), or with no `text` ask for it (answered with `topic`).
    Topic {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A private message to one user; only they and the sender see it.
    Msg {
        to: String,
        text: String,
        /// The client's id for this message (see [`Cid`]): the server's echo, or its refusal,
        /// carries it back, and a repeated id is answered with the first echo, never a second
        /// message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
    },
    /// Change nickname.
    Nick { nick: String },
    /// Mark oneself away with a reason, or back when `reason` is absent.
    Away {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Ask who `nick` is (answered with `whois`).
    Whois { nick: String },
    /// Operators: disconnect `nick`, telling everyone why.
    Kick {
        nick: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Operators: ban a key (`target` is a fingerprint, or the nickname of an online or
    /// registered user), for `duration_secs` or for good; its sessions are disconnected and it
    /// is refused at connect until the ban ends.
    Ban {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_secs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Operators: lift a ban (`target` as for `ban`).
    Unban { target: String },
    /// Operators: stop `nick`'s key from sending messages, for `duration_secs` or until unmuted.
    Mute {
        nick: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_secs: Option<u64>,
    },
    /// Operators: lift a mute.
    Unmute { nick: String },
    /// Let another key (`fingerprint`, the new device's) use this session's nickname and every
    /// other of its person's, named `name`; answered with `devices`.
    DeviceAdd {
        fingerprint: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Revoke a key added with `device_add`: its sessions end; answered with `devices`.
    DeviceRemove { fingerprint: String },
    /// Ask for the keys of this session's person (answered with `devices`).
    DeviceList,
    /// Operators: hide (`hide: true`) or show again the quiet sessions (bots) in `room`'s
    /// member lists (`members` answers to `join` and `who`).
    Bots { room: String, hide: bool },
    /// Room operators (and server operators): make `nick` an operator of `room`.
    Op { room: String, nick: String },
    /// Room operators: take `room`'s operator status away from `nick`.
    Deop { room: String, nick: String },
    /// Room operators: turn one of `room`'s modes on or off (`topic_lock`: only room operators
    /// set the topic; `invite_only`: only invited keys join, and turning it off clears the
    /// invite list).
    Mode { room: String, flag: RoomFlag, on: bool },
    /// Room operators: remove `nick` from `room` only (the server-wide disconnect is `kick`).
    RoomKick {
        room: String,
        nick: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Room operators: ban a key from `room` (`target` as for `ban`), for `duration_secs` or
    /// for good; its sessions are removed from the room and it cannot join until the ban ends.
    RoomBan {
        room: String,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_secs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Room operators: lift a room ban (`target` as for `ban`).
    RoomUnban { room: String, target: String },
    /// Room operators: put `nick`'s key on a plain room's invite list (it may join while the
    /// room is invite-only, until the list is cleared). E2E rooms invite through MLS instead.
    Invite { room: String, nick: String },
    /// Ask for a room's messages after id `since` (catch-up after a reconnect), at most `limit`
    /// (capped by the server). Must be a member. With `before`, the other direction (scrollback
    /// into the past): the newest `limit` messages with an id below `before`, in id order, and
    /// `since` is ignored (may be 0 or absent); the answer's `history_end` carries the same
    /// `before`.
    History {
        room: String,
        #[serde(default)]
        since: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
    },
    /// Create `room`, refused if it exists; the creator joins it. With `e2e`, an end-to-end
    /// encrypted room: invite-only, or with `open` one that any member's client adds a joiner to.
    Create {
        room: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        e2e: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        open: bool,
    },
    /// Upload MLS key packages (base64) for others to add this key to E2E rooms.
    KeyPackages { packages: Vec<String> },
    /// Ask for one key package of `nick`'s key (answered with `key_package`); `room` is echoed
    /// back so the client knows what it asked for.
    FetchKeyPackage {
        nick: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// An MLS commit (base64 `body`) for an E2E room, made at `epoch`: accepted only if that is
    /// the room's current epoch. `adds`/`removes` (fingerprints) update who the server delivers
    /// the room to; `welcome` goes to the added key.
    Commit {
        room: String,
        epoch: u64,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        welcome: Option<SealedWelcome>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adds: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removes: Vec<String>,
    },
    /// An MLS application message (base64 `body`) for an E2E room.
    Sealed {
        room: String,
        epoch: u64,
        body: String,
        /// The client's id for this message (see [`Cid`]): the server's echo, or its refusal,
        /// carries it back, and a repeated id is answered with the first echo, never a second
        /// message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
    },
}

impl ClientMsg {
    /// The room this request names, as the client wrote it (not checked), if it names one. A
    /// refusal of the request carries it back, checked (`error`'s `room`).
    pub fn room(&self) -> Option<&str> {
        use ClientMsg::*;
        match self {
            Say { room, .. }
            | Me { room, .. }
            | Join { room, .. }
            | Part { room, .. }
            | Who { room, .. }
            | Topic { room, .. }
            | Bots { room, .. }
            | Op { room, .. }
            | Deop { room, .. }
            | Mode { room, .. }
            | RoomKick { room, .. }
            | RoomBan { room, .. }
            | RoomUnban { room, .. }
            | Invite { room, .. }
            | History { room, .. }
            | Create { room, .. }
            | Commit { room, .. }
            | Sealed { room, .. } => Some(room),
            FetchKeyPackage { room, .. } => room.as_deref(),
            Hello { .. }
            | Quit { .. }
            | Ping { .. }
            | Pong { .. }
            | List { .. }
            | Msg { .. }
            | Nick { .. }
            | Away { .. }
            | Whois { .. }
            | Kick { .. }
            | Ban { .. }
            | Unban { .. }
            | Mute { .. }
            | Unmute { .. }
            | DeviceAdd { .. }
            | DeviceRemove { .. }
            | DeviceList
            | KeyPackages { .. } => None,
        }
    }
}

/// The optional flags of `hello`, beside its nickname, as they travel in the same JSON object
/// (`{"type":"hello","nick":"ci-bot","quiet":true}`). Absent fields are false, so an old
/// client's `hello` means no flag, and an old server ignores them (unknown fields are ignored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloFlags {
    /// A quiet session (a bot, a notifier): its arrival in and departure from rooms are not
    /// announced, and member lists mark it `bot`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
    /// A fixed-set session (a bot started with `--rooms`): the server puts it in no room (not
    /// even the default one) and does not remember its joins and parts for its key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixed_rooms: bool,
}

/// A client's id for one of its messages (`say`, `me`, `msg`, `sealed`): chosen by the client,
/// unique among its key's recent messages (a random number from 1 to 2^53 - 1, so that every
/// JSON reader holds it exactly). The server remembers recent ids per key (its limits.rs says
/// how many and how long) and answers a repeated one with the first echo: a client may send a
/// message again after any doubt (a lost connection, an `unconfirmed` error) and it is
/// delivered at most once.
pub type Cid = u64;

/// The largest [`Cid`]: 2^53 - 1, the largest integer every JSON reader holds exactly.
pub const MAX_CID: Cid = (1 << 53) - 1;

/// Most messages a client keeps sent and not yet acknowledged (its echo or a definite refusal
/// not yet received); the next waits. Servers remember more ids per key than this.
pub const MAX_UNACKED: usize = 256;

/// An MLS welcome for the key with fingerprint `to`, carried by a `commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedWelcome {
    pub to: String,
    pub body: String,
}

/// What a `sealed` message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealedKind {
    /// An MLS commit (membership or key change); moves the room to the next epoch.
    Commit,
    /// An MLS application message (chat text).
    Application,
    /// A kind this version does not know.
    #[serde(other)]
    Other,
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to `hello`: the session is open.
    Welcome {
        /// This connection's session number, unique while the server runs.
        session: u64,
        /// The nickname the session holds.
        nick: Nick,
        /// The fingerprint of the client's own key, as the server saw it.
        fingerprint: Fingerprint,
        /// Server software and version, e.g. `chataosrv 0.1.0`.
        server: String,
        /// The limits the client must respect.
        limits: Limits,
        /// The rooms the server remembers the client's key in (it joined them, and has not
        /// parted them since). The server has joined the session to the default room when it
        /// is listed or the list is empty (the join's answer follows); the client joins each
        /// other one (`join`, with `since` where it has seen messages). Absent from older
        /// servers: empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rooms: Vec<RoomName>,
    },
    /// The member list of a room, sent to a user who has just joined it and answering `who`,
    /// in one or more records ([`crate::members::chunks`]). Complete unless `total` is present.
    Members {
        room: RoomName,
        members: Vec<Member>,
        /// The room is end-to-end encrypted (as the server claims; clients trust their own
        /// MLS state over this).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        e2e: bool,
        /// The room's member count, present when `members` is not all of them: a large room's
        /// joiner gets only the recently active members, and `who` answers in pages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u32>,
        /// More members follow in nickname order: ask `who` with this as `after`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<Nick>,
        /// The same list goes on in the next `members` record of this room (a list is sent in
        /// records of at most 16 KiB: [`crate::members`]). Absent: this record ends it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// `nick` joined `room` (also sent to the joiner, confirming the join).
    Join { room: RoomName, nick: Nick, fingerprint: Fingerprint },
    /// `nick` left `room`.
    Leave {
        room: RoomName,
        nick: Nick,
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A chat message. The sender receives its own message too: that is its acknowledgement.
    Message {
        room: RoomName,
        /// Server-assigned, strictly increasing within the room.
        id: u64,
        /// Milliseconds since the Unix epoch, when the server accepted the message.
        time: u64,
        from: Nick,
        #[serde(default, skip_serializing_if = "MessageKind::is_normal")]
        kind: MessageKind,
        text: String,
        /// True when replayed from history (on join or catch-up) rather than live.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        history: bool,
        /// The sender's [`Cid`], when it gave one: the sender knows its message by it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
    },
    /// A private message. Both the recipient and the sender (as acknowledgement) receive it.
    Private {
        /// Server-assigned, strictly increasing across all private messages.
        id: u64,
        time: u64,
        from: Nick,
        to: Nick,
        #[serde(default, skip_serializing_if = "MessageKind::is_normal")]
        kind: MessageKind,
        text: String,
        /// The sender's [`Cid`], when it gave one: the sender knows its message by it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
    },
    /// A room's topic: sent on join when set, to the room when it changes, and on request.
    Topic {
        room: RoomName,
        /// `None`: no topic is set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Who set it, when it was just changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Nick>,
    },
    /// A page of the rooms with members, in name order, answering `list`.
    RoomList {
        rooms: Vec<RoomInfo>,
        /// More rooms follow: ask `list` with this as `after`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<RoomName>,
    },
    /// `old` is now called `new`; sent to everyone sharing a room with them, and to them.
    NickChange { old: Nick, new: Nick },
    /// `nick` is away (`reason`) or back (no `reason`); sent to everyone sharing a room with
    /// them, and to them.
    Away {
        nick: Nick,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Who someone is, answering `whois`.
    Whois {
        nick: Nick,
        fingerprint: Fingerprint,
        rooms: Vec<RoomName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        away: Option<String>,
        /// When their session started, in milliseconds since the epoch (their oldest, when
        /// they are online on several).
        since: u64,
        /// How many sessions (devices) they are online on; absent: one.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        sessions: u32,
    },
    /// The keys of `nick`'s person, the owner first: answering `device_list`, and to every
    /// session of the person after a `device_add` or `device_remove`.
    Devices { nick: Nick, devices: Vec<DeviceInfo> },
    /// An operator acted; sent to everyone online.
    Moderation {
        action: ModAction,
        /// The nickname or fingerprint acted upon.
        target: String,
        by: Nick,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When a ban or mute ends, in milliseconds since the epoch; absent: no end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
    },
    /// A room operator acted in `room` (`room_kick`, `room_ban`, `op`, `mode`, ...); sent to
    /// the room's members (the one acted upon included) and to the operator.
    RoomModeration {
        room: RoomName,
        action: RoomAction,
        /// The nickname or fingerprint acted upon (absent for a mode change).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        by: Nick,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When a room ban ends, in milliseconds since the epoch; absent: no end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
    },
    /// Information for this client alone, with no error (e.g. "bob is away: lunch" after a
    /// private message to bob).
    Notice { text: String },
    /// The end of a history replay for `room`: `count` messages were sent. `before`: this
    /// answers a `history` with `before` (older messages, not a catch-up); a `count` of 0 then
    /// means nothing older is kept.
    HistoryEnd {
        room: RoomName,
        count: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
    },
    /// Something was refused. The session goes on unless a `bye` follows.
    Error {
        code: ErrorCode,
        message: String,
        /// The [`Cid`] of the message refused, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
        /// The room the refused request named ([`ClientMsg::room`]), when it named a valid one:
        /// a client tells which of its requests was refused without reading `message`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomName>,
    },
    /// The server's last message before it closes the connection.
    Bye {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        reason: String,
    },
    /// Keepalive probe; answer with `pong` and the same token.
    Ping { token: u64 },
    /// Answer to the client's `ping`.
    Pong { token: u64 },
    /// An MLS message of an E2E room (opaque to the server), in the room's order.
    Sealed {
        room: RoomName,
        /// Server-assigned, strictly increasing within the room (shared with `message` ids).
        id: u64,
        time: u64,
        from: Nick,
        /// The epoch the sender stated.
        epoch: u64,
        kind: SealedKind,
        /// Base64 of the MLS message.
        body: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        history: bool,
        /// The sender's [`Cid`], when it gave one: the sender knows its message by it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<Cid>,
    },
    /// You were added to the E2E room `room` (`from` is the nick that sent the commit, as the
    /// server says): `body` is the MLS welcome (base64); `id` is the id of the commit that
    /// added you: process the room's messages after it. `epoch` is the room's commit count
    /// including that commit: the `epoch` of your next `commit`, until you see another.
    Invited {
        room: RoomName,
        from: Nick,
        id: u64,
        #[serde(default)]
        epoch: u64,
        body: String,
    },
    /// Someone asks to join the open E2E room `room`; a member's client adds them.
    JoinRequest { room: RoomName, nick: Nick, fingerprint: Fingerprint },
    /// A key package of `nick`'s key, answering `fetch_key_package`.
    KeyPackage {
        nick: Nick,
        fingerprint: Fingerprint,
        package: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomName>,
    },
    /// A message type this version does not know (from a newer server): decoded rather than
    /// refused, so that clients can ignore it. Never sent.
    #[serde(other)]
    Unknown,
}

/// The limits a server announces in `welcome`. A client that paces itself to them is never
/// rate-limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest message text, in UTF-8 bytes.
    pub max_text_bytes: u32,
    /// Steady message rate allowed, per second.
    pub rate_per_sec: u32,
    /// Messages that may be sent at once before the steady rate applies.
    pub burst: u32,
}

/// One line of `room_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room: RoomName,
    pub members: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// An end-to-end encrypted room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub e2e: bool,
}

/// One key of a person, as listed in `devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub fingerprint: Fingerprint,
    /// The name given with `device_add`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The person's first key, which owns their nicknames (it cannot be removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner: bool,
    /// When it was added (the first key: when the first device was added), ms since the epoch.
    pub added: u64,
    /// When a session of it last ended, ms since the epoch; absent: not since it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
    /// Its sessions online now.
    #[serde(default)]
    pub online: u32,
}

/// A room member, as listed in `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub nick: Nick,
    pub fingerprint: Fingerprint,
    /// Their away reason, when they are away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
    /// A quiet session (`hello` with `quiet`): a bot, whose arrivals and departures are not
    /// announced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
    /// An operator of the room listed (a room operator; in the lobby, a server operator).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub op: bool,
}

/// Why someone left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They said goodbye (`quit`).
    Quit,
    /// They left this room only (`part`).
    Part,
    /// The connection ended without a goodbye: network loss, crash, or a protocol violation.
    Lost,
    /// The server disconnected them (too slow, timed out, flooding, shutdown).
    Dropped,
    /// An operator kicked or banned them.
    Kicked,
    /// Unknown reasons from a newer server.
    #[serde(other)]
    Other,
}

/// A room mode (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomFlag {
    /// Only room operators set the topic (IRC's `+t`).
    TopicLock,
    /// Only invited keys join (IRC's `+i`).
    InviteOnly,
}

/// What a room operator did (`room_moderation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomAction {
    Op,
    Deop,
    Kick,
    Ban,
    Unban,
    Invite,
    TopicLock,
    TopicUnlock,
    InviteOnly,
    InviteOpen,
    #[serde(other)]
    Other,
}

impl RoomAction {
    /// A line for people: `bob was kicked from #rust by alice`.
    pub fn describe(self, room: &RoomName, target: Option<&str>, by: &Nick) -> String {
        let t = target.unwrap_or("?");
        match self {
            RoomAction::Op => format!("{t} is now an operator of {room} (by {by})"),
            RoomAction::Deop => format!("{t} is no longer an operator of {room} (by {by})"),
            RoomAction::Kick => format!("{t} was kicked from {room} by {by}"),
            RoomAction::Ban => format!("{t} was banned from {room} by {by}"),
            RoomAction::Unban => format!("{t} may join {room} again (unbanned by {by})"),
            RoomAction::Invite => format!("{t} was invited to {room} by {by}"),
            RoomAction::TopicLock => format!("{by} locked the topic of {room} (+t)"),
            RoomAction::TopicUnlock => format!("{by} unlocked the topic of {room} (-t)"),
            RoomAction::InviteOnly => format!("{by} made {room} invite-only (+i)"),
            RoomAction::InviteOpen => format!("{by} opened {room} to everyone (-i)"),
            RoomAction::Other => format!("{by} changed {room}"),
        }
    }
}

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModAction {
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    #[serde(other)]
    Other,
}

impl ModAction {
    /// The verb for a notice: `bob was banned`.
    pub fn past_tense(self) -> &'static str {
        match self {
            ModAction::Kick => "kicked",
            ModAction::Ban => "banned",
            ModAction::Unban => "unbanned",
            ModAction::Mute => "muted",
            ModAction::Unmute => "unmuted",
            ModAction::Other => "moderated",
        }
    }
}

/// What kind of chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// An action, shown as `* alice waves`.
    Action,
    /// Ordinary text. Kinds this version does not know (from a newer peer) decode as this,
    /// so the text is still shown.
    #[default]
    #[serde(other)]
    Normal,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl MessageKind {
    fn is_normal(&self) -> bool {
        *self == MessageKind::Normal
    }
}
