//! Client messages turned into commands and applied to the hub, one file per command.
//!
//! To add a command: add its `ClientMsg` variant in `chatao-proto`, a file here with a struct
//! and an `apply(self, hub, session) -> Reply`, a `Command` variant and its arm in
//! [`Command::from_msg`] and [`Command::apply`], then document it in docs/PROTOCOL.md.

mod away;
mod bots;
mod device;
mod e2e;
mod history;
mod join;
mod list;
mod moderate;
mod msg;
mod nick;
mod part;
mod ping;
mod quit;
mod room_ops;
mod say;
mod topic;
mod who;
mod whois;

use std::time::Instant;

use bytes::Bytes;
use chatao_proto::{
    Cid, ClientMsg, ErrorCode, LeaveReason, Limits, MAX_CID, MessageKind, Nick, RoomName,
    ServerMsg, TextError, TokenBucket, check_text,
};

use crate::hub::{Hub, HubError, Joined, SessionId};
use crate::limits::{MAX_REASON_BYTES, PONG_BURST, PONGS_PER_SEC};
use chatao_proto::Fingerprint;

/// What a session knows about itself once `hello` has been accepted.
#[derive(Debug)]
pub struct SessionState {
    pub id: SessionId,
    pub nick: Nick,
    /// The client's key fingerprint.
    pub fingerprint: Fingerprint,
    /// The person the key belongs to (its first key, `hub/devices.rs`; `fingerprint` itself
    /// for a key not linked to another), as at `hello`: a mute of either silences the session.
    pub person: Fingerprint,
    pub limits: Limits,
    /// The announced rate. The session takes a token before each charged command
    /// ([`charged`]); without one the command waits in the session's fakelag backlog
    /// (session.rs), it is never refused.
    pub rate: TokenBucket,
    /// On a cluster node: the nickname held cluster-wide, given back when the session ends.
    pub claim: Option<crate::cluster::Claim>,
    /// Key packages this session may still fetch ([`crate::limits::KEY_PACKAGE_FETCH_BURST`]).
    pub fetches: e2e::FetchBudget,
    /// Pongs are paced by their own bucket, not the command rate
    /// ([`crate::limits::PONGS_PER_SEC`]); see `ping.rs`.
    pub pongs: TokenBucket,
    /// The latest ping not answered yet because of that pace; the session's pong timer
    /// answers it when the bucket allows.
    pub pong_owed: Option<u64>,
}

impl SessionState {
    pub fn new(
        id: SessionId,
        nick: Nick,
        fingerprint: Fingerprint,
        limits: Limits,
        now: Instant,
    ) -> SessionState {
        SessionState {
            id,
            nick,
            person: fingerprint.clone(),
            fingerprint,
            limits,
            // One token of slack over the announced burst: a client pacing itself exactly to
            // the announced bucket is never held back because of network jitter or rounding.
            rate: TokenBucket::new(limits.rate_per_sec, limits.burst.saturating_add(1), now),
            claim: None,
            fetches: e2e::FetchBudget::new(now),
            pongs: TokenBucket::new(PONGS_PER_SEC, PONG_BURST, now),
            pong_owed: None,
        }
    }
}

/// What the session should do after a command.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Nothing to send to this client (others may have been sent something).
    Nothing,
    /// Send this to the client; the session goes on.
    Send(ServerMsg),
    /// Send these to the client, in order (a member list in several records).
    SendAll(Vec<ServerMsg>),
    /// End the session: announce the departure with `reason`, send `bye`, close.
    Close(Close),
    /// Send history (and on a join, the member list and topic) for a room.
    Replay(Box<Replay>),
    /// Send these encoded records as they are: the first echo of a message sent again with
    /// the same client id ([`repeat`]).
    Raw(Bytes),
    /// Send `msg` once what the command queued is on disk (an operator's setting, issue 15
    /// item 2): the session waits for [`crate::bus::BusHandle::durable`]`(after, upto)`,
    /// bounded, and answers `unavailable` instead if the store did not write it in time.
    Durable(Box<Durable>),
}

/// A reply to send once the bus has stored what came before it ([`Reply::Durable`]).
#[derive(Debug, PartialEq)]
pub struct Durable {
    pub after: u64,
    pub upto: u64,
    pub msg: ServerMsg,
}

impl Reply {
    /// The same reply, its error (if it is one) carrying `cid`: every refusal of a message
    /// sent with a client id names that id, so the client knows which message it was.
    pub fn with_cid(self, cid: Option<Cid>) -> Reply {
        match self {
            Reply::Send(ServerMsg::Error { code, message, cid: None, room }) => {
                Reply::Send(ServerMsg::Error { code, message, cid, room })
            }
            other => other,
        }
    }

    /// The same reply, its error (if it is one) naming `room`, the room of the request refused
    /// (`error`'s `room`): a client knows which of its requests it was without parsing text.
    pub fn with_room(self, room: Option<RoomName>) -> Reply {
        let name = |msg: ServerMsg| match msg {
            ServerMsg::Error { code, message, cid, room: None } => {
                ServerMsg::Error { code, message, cid, room: room.clone() }
            }
            other => other,
        };
        match self {
            Reply::Send(msg) => Reply::Send(name(msg)),
            Reply::Durable(d) => Reply::Durable(Box::new(Durable { msg: name(d.msg), ..*d })),
            other => other,
        }
    }
}

/// Handles a message that may carry a client id (`say`, `sealed`, `msg`): [`repeat`] first, then
/// `accept`, whose refusal carries the id.
pub fn once(
    hub: &Hub,
    session: &mut SessionState,
    cid: Option<Cid>,
    accept: impl FnOnce(&Hub, &mut SessionState) -> Reply,
) -> Reply {
    if let Err(reply) = repeat(hub, session, cid) {
        return *reply;
    }
    accept(hub, session).with_cid(cid)
}

/// What to do about a message's client id before anything else: `Err` with the reply when the
/// id is out of range (`invalid`, carrying it) or when this key's message with that id was
/// accepted recently (its first echo, exactly as sent then: the message is not handled again).
/// `Ok` when the message is new (or has no id).
fn repeat(hub: &Hub, session: &SessionState, cid: Option<Cid>) -> Result<(), Box<Reply>> {
    let Some(cid) = cid else { return Ok(()) };
    if cid == 0 || cid > MAX_CID {
        let why = format!("a message id (cid) must be between 1 and {MAX_CID}");
        return Err(Box::new(error(ErrorCode::Invalid, why).with_cid(Some(cid))));
    }
    match hub.sent_echo(&session.fingerprint, cid) {
        Some(echo) => Err(Box::new(Reply::Raw(echo))),
        None => Ok(()),
    }
}

/// A history replay for the session to send: it may need the store, so the session does it.
#[derive(Debug, PartialEq)]
pub struct Replay {
    pub joined: Joined,
    /// Messages after this id (oldest first); `None`: the newest `limit`.
    pub since: Option<u64>,
    pub limit: usize,
    /// Also send `members` and the topic first (a join).
    pub intro: bool,
    /// Older messages instead (`history` with `before`): the newest `limit` with an id below
    /// this, `since` ignored; see [`crate::replay`].
    pub before: Option<u64>,
}

#[derive(Debug, PartialEq)]
pub struct Close {
    pub reason: LeaveReason,
    pub message: Option<String>,
    pub bye: ServerMsg,
}

/// A room name from a client, or the `invalid_room` reply that says the rules.
pub fn room(name: &str) -> Result<RoomName, Box<Reply>> {
    RoomName::parse(name).map_err(|e| Box::new(error(ErrorCode::InvalidRoom, e.to_string())))
}

/// The error reply for a hub refusal.
pub fn hub_error(e: HubError) -> Reply {
    error(e.code(), e.to_string())
}

/// A quit, part, kick or ban reason: kept if printable and short, else dropped. A muted key's
/// reason is dropped too (the part, quit or kick itself goes ahead): a mute silences every
/// text a key could put in front of others.
pub fn reason(hub: &Hub, session: &SessionState, r: Option<String>) -> Option<String> {
    if muted(hub, session).is_some() {
        return None;
    }
    r.filter(|r| check_text(r, MAX_REASON_BYTES, false).is_ok())
}

/// Why the session's key, or its person, is muted now, if it is.
pub fn muted(hub: &Hub, session: &SessionState) -> Option<String> {
    let access = hub.access();
    access.muted(&session.fingerprint).or_else(|| access.muted(&session.person))
}

/// `Err(muted)` with the sentence to tell the sender if their key is muted now. Every command
/// that shows the sender's text to others checks it: messages, topics, away reasons and
/// nickname changes (refused), part, quit and moderation reasons (dropped, see [`reason`]).
pub fn check_not_muted(hub: &Hub, session: &SessionState) -> Result<(), Box<Reply>> {
    match muted(hub, session) {
        Some(why) => Err(Box::new(error(ErrorCode::Muted, why))),
        None => Ok(()),
    }
}

/// Checks that the sender is not muted, and the text against the rules and the announced
/// size limit.
pub fn check_message(hub: &Hub, text: &str, session: &SessionState) -> Result<(), Box<Reply>> {
    check_not_muted(hub, session)?;
    match check_text(text, session.limits.max_text_bytes as usize, true) {
        Ok(()) => Ok(()),
        Err(e @ TextError::TooLong { .. }) => {
            Err(Box::new(error(ErrorCode::TooLong, e.to_string())))
        }
        Err(e) => Err(Box::new(error(ErrorCode::InvalidText, e.to_string()))),
    }
}

/// An error reply.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Send(ServerMsg::Error { cid: None, code, message: message.into(), room: None })
}

/// Whether a client message costs a token of the announced rate: everything a client could
/// repeat to make the server work (messages, joins, renames, history requests…, a message
/// sent again with a remembered id too), not keepalives or goodbyes.
pub fn charged(msg: &ClientMsg) -> bool {
    !matches!(
        msg,
        ClientMsg::Quit { .. }
            | ClientMsg::Ping { .. }
            | ClientMsg::Pong { .. }
            | ClientMsg::Hello { .. }
    )
}

/// A decoded client message, ready to apply.
#[derive(Debug)]
pub enum Command {
    Say(say::Say),
    Join(join::Join),
    Part(part::Part),
    List(list::List),
    Who(who::Who),
    Topic(topic::Topic),
    Msg(msg::Msg),
    Nick(nick::Nick),
    Away(away::Away),
    Whois(whois::Whois),
    Device(device::Device),
    History(history::History),
    Moderate(moderate::Moderate),
    Bots(bots::Bots),
    RoomOp(room_ops::RoomOp),
    Quit(quit::Quit),
    Ping(ping::Ping),
    Pong,
    /// `hello` after the session is open.
    Hello,
    Create(e2e::Create),
    KeyPackages(e2e::KeyPackages),
    FetchKeyPackage(e2e::FetchKeyPackage),
    Commit(e2e::Commit),
    Sealed(e2e::Sealed),
}

impl Command {
    pub fn from_msg(msg: ClientMsg) -> Command {
        match msg {
            ClientMsg::Say { cid, room, text } => {
                Command::Say(say::Say { room, text, kind: MessageKind::Normal, cid })
            }
            ClientMsg::Me { cid, room, text } => {
                Command::Say(say::Say { room, text, kind: MessageKind::Action, cid })
            }
            ClientMsg::Join { room, since } => Command::Join(join::Join { room, since }),
            ClientMsg::Part { room, reason } => Command::Part(part::Part { room, reason }),
            ClientMsg::List { after } => Command::List(list::List { after }),
            ClientMsg::Who { room, after } => Command::Who(who::Who { room, after }),
            ClientMsg::Topic { room, text } => Command::Topic(topic::Topic { room, text }),
            ClientMsg::Msg { cid, to, text } => Command::Msg(msg::Msg { to, text, cid }),
            ClientMsg::Nick { nick } => Command::Nick(nick::Nick { nick }),
            ClientMsg::Away { reason } => Command::Away(away::Away { reason }),
            ClientMsg::Whois { nick } => Command::Whois(whois::Whois { nick }),
            ClientMsg::DeviceAdd { fingerprint, name } => {
                Command::Device(device::Device::Add { fingerprint, name })
            }
            ClientMsg::DeviceRemove { fingerprint } => {
                Command::Device(device::Device::Remove { fingerprint })
            }
            ClientMsg::DeviceList => Command::Device(device::Device::List),
            ClientMsg::History { room, since, limit, before } => {
                Command::History(history::History { room, since, limit, before })
            }
            ClientMsg::Kick { nick, reason } => {
                Command::Moderate(moderate::Moderate::Kick { nick, reason })
            }
            ClientMsg::Ban { target, duration_secs, reason } => {
                Command::Moderate(moderate::Moderate::Ban { target, duration_secs, reason })
            }
            ClientMsg::Unban { target } => Command::Moderate(moderate::Moderate::Unban { target }),
            ClientMsg::Mute { nick, duration_secs } => {
                Command::Moderate(moderate::Moderate::Mute { nick, duration_secs })
            }
            ClientMsg::Unmute { nick } => Command::Moderate(moderate::Moderate::Unmute { nick }),
            ClientMsg::Bots { room, hide } => Command::Bots(bots::Bots { room, hide }),
            ClientMsg::Op { room, nick } => {
                Command::RoomOp(room_ops::RoomOp::Op { room, nick, on: true })
            }
            ClientMsg::Deop { room, nick } => {
                Command::RoomOp(room_ops::RoomOp::Op { room, nick, on: false })
            }
            ClientMsg::Mode { room, flag, on } => {
                Command::RoomOp(room_ops::RoomOp::Mode { room, flag, on })
            }
            ClientMsg::RoomKick { room, nick, reason } => {
                Command::RoomOp(room_ops::RoomOp::Kick { room, nick, reason })
            }
            ClientMsg::RoomBan { room, target, duration_secs, reason } => {
                Command::RoomOp(room_ops::RoomOp::Ban { room, target, duration_secs, reason })
            }
            ClientMsg::RoomUnban { room, target } => {
                Command::RoomOp(room_ops::RoomOp::Unban { room, target })
            }
            ClientMsg::Invite { room, nick } => {
                Command::RoomOp(room_ops::RoomOp::Invite { room, nick })
            }
            ClientMsg::Quit { reason } => Command::Quit(quit::Quit { reason }),
            ClientMsg::Ping { token } => Command::Ping(ping::Ping { token }),
            ClientMsg::Pong { .. } => Command::Pong,
            ClientMsg::Hello { .. } => Command::Hello,
            ClientMsg::Create { room, e2e, open } => {
                Command::Create(e2e::Create { room, e2e, open })
            }
            ClientMsg::KeyPackages { packages } => {
                Command::KeyPackages(e2e::KeyPackages { packages })
            }
            ClientMsg::FetchKeyPackage { nick, room } => {
                Command::FetchKeyPackage(e2e::FetchKeyPackage { nick, room })
            }
            ClientMsg::Commit { room, epoch, body, welcome, adds, removes } => {
                Command::Commit(e2e::Commit { room, epoch, body, welcome, adds, removes })
            }
            ClientMsg::Sealed { cid, room, epoch, body } => {
                Command::Sealed(e2e::Sealed { room, epoch, body, cid })
            }
        }
    }

    /// Applies the command. The rate is not checked here: the session takes the token first
    /// (or holds the command until it can, see [`charged`]).
    pub fn apply(self, hub: &Hub, session: &mut SessionState, now: Instant) -> Reply {
        match self {
            Command::Say(cmd) => cmd.apply(hub, session),
            Command::Join(cmd) => cmd.apply(hub, session),
            Command::Part(cmd) => cmd.apply(hub, session),
            Command::List(cmd) => cmd.apply(hub),
            Command::Who(cmd) => cmd.apply(hub),
            Command::Topic(cmd) => cmd.apply(hub, session),
            Command::Msg(cmd) => cmd.apply(hub, session),
            Command::Nick(cmd) => cmd.apply(hub, session),
            Command::Away(cmd) => cmd.apply(hub, session),
            Command::Whois(cmd) => cmd.apply(hub),
            Command::Device(cmd) => cmd.apply(hub, session),
            Command::History(cmd) => cmd.apply(hub, session),
            Command::Moderate(cmd) => cmd.apply(hub, session),
            Command::Bots(cmd) => cmd.apply(hub, session),
            Command::RoomOp(cmd) => cmd.apply(hub, session),
            Command::Quit(cmd) => cmd.apply(hub, session),
            Command::Ping(cmd) => cmd.apply(session, now),
            Command::Pong => Reply::Nothing,
            Command::Hello => error(ErrorCode::BadSequence, "already registered: hello comes once"),
            Command::Create(cmd) => cmd.apply(hub, session),
            Command::KeyPackages(cmd) => cmd.apply(hub, session),
            Command::FetchKeyPackage(cmd) => cmd.apply(hub, session),
            Command::Commit(cmd) => cmd.apply(hub, session),
            Command::Sealed(cmd) => cmd.apply(hub, session),
        }
    }
}
