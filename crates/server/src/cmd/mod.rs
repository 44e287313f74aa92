//! Client messages turned into commands and applied to the hub, one file per command.
//!
//! To add a command: add its `ClientMsg` variant in `chatao-proto`, a file here with a struct
//! and an `apply(self, hub, session) -> Reply`, a `Command` variant and its arm in
//! [`Command::from_msg`] and [`Command::apply`], then document it in docs/PROTOCOL.md.

mod away;
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
mod say;
mod topic;
mod who;
mod whois;

use std::time::Instant;

use chatao_proto::{
    ClientMsg, ErrorCode, LeaveReason, Limits, MessageKind, Nick, RoomName, ServerMsg, TextError,
    TokenBucket, check_text,
};

use crate::hub::{Hub, HubError, Joined, SessionId};
use crate::limits::{FLOOD_STRIKES, MAX_REASON_BYTES, PONG_BURST, PONGS_PER_SEC};

/// What a session knows about itself once `hello` has been accepted.
#[derive(Debug)]
pub struct SessionState {
    pub id: SessionId,
    pub nick: Nick,
    /// The client's key fingerprint.
    pub fingerprint: String,
    pub limits: Limits,
    pub rate: TokenBucket,
    /// Consecutive messages refused for exceeding the rate.
    pub strikes: u32,
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
        fingerprint: String,
        limits: Limits,
        now: Instant,
    ) -> SessionState {
        SessionState {
            id,
            nick,
            fingerprint,
            limits,
            // One token of slack over the announced burst: a client pacing itself exactly to
            // the announced bucket is never refused because of network jitter or rounding.
            rate: TokenBucket::new(limits.rate_per_sec, limits.burst.saturating_add(1), now),
            strikes: 0,
            claim: None,
            fetches: e2e::FetchBudget::new(now),
            pongs: TokenBucket::new(PONGS_PER_SEC, PONG_BURST, now),
            pong_owed: None,
        }
    }

    /// Charges one message against the rate. `Err` carries the reply: an error, or after
    /// [`FLOOD_STRIKES`] refusals in a row, the end of the session.
    pub fn charge(&mut self, now: Instant) -> Result<(), Box<Reply>> {
        if self.rate.try_take(now) {
            self.strikes = 0;
            return Ok(());
        }
        self.strikes += 1;
        if self.strikes >= FLOOD_STRIKES {
            return Err(Box::new(Reply::Close(Close {
                reason: LeaveReason::Dropped,
                message: Some("flooding".into()),
                bye: ServerMsg::Bye {
                    code: Some(ErrorCode::RateLimited),
                    reason: "disconnected for flooding".into(),
                },
            })));
        }
        Err(Box::new(error(
            ErrorCode::RateLimited,
            format!(
                "slow down: at most {} messages per second (burst {}); this one was dropped",
                self.limits.rate_per_sec, self.limits.burst
            ),
        )))
    }
}

/// What the session should do after a command.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Nothing to send to this client (others may have been sent something).
    Nothing,
    /// Send this to the client; the session goes on.
    Send(ServerMsg),
    /// End the session: announce the departure with `reason`, send `bye`, close.
    Close(Close),
    /// Send history (and on a join, the member list and topic) for a room.
    Replay(Box<Replay>),
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
    let code = match e {
        HubError::NickInUse(_) => ErrorCode::NickInUse,
        HubError::NickRegistered(_) => ErrorCode::NickRegistered,
        HubError::NotOperator => ErrorCode::NotOperator,
        HubError::NotFound(_) => ErrorCode::Other,
        HubError::Invalid(_) => ErrorCode::Invalid,
        HubError::NotInRoom(_) => ErrorCode::NotInRoom,
        HubError::NoSuchNick(_) => ErrorCode::NoSuchNick,
        HubError::Busy => ErrorCode::Busy,
        HubError::Unavailable => ErrorCode::Unavailable,
        HubError::TooManyRooms | HubError::UnknownSession => ErrorCode::Other,
    };
    error(code, e.to_string())
}

/// A quit, part, kick or ban reason: kept if printable and short, else dropped. A muted key's
/// reason is dropped too (the part, quit or kick itself goes ahead): a mute silences every
/// text a key could put in front of others.
pub fn reason(hub: &Hub, session: &SessionState, r: Option<String>) -> Option<String> {
    if hub.access().muted(&session.fingerprint).is_some() {
        return None;
    }
    r.filter(|r| check_text(r, MAX_REASON_BYTES, false).is_ok())
}

/// `Err(muted)` with the sentence to tell the sender if their key is muted now. Every command
/// that shows the sender's text to others checks it: messages, topics, away reasons and
/// nickname changes (refused), part, quit and moderation reasons (dropped, see [`reason`]).
pub fn check_not_muted(hub: &Hub, session: &SessionState) -> Result<(), Box<Reply>> {
    match hub.access().muted(&session.fingerprint) {
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
    Reply::Send(ServerMsg::Error { cid: None, code, message: message.into() })
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
    History(history::History),
    Moderate(moderate::Moderate),
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
            ClientMsg::Say { cid: _, room, text } => {
                Command::Say(say::Say { room, text, kind: MessageKind::Normal })
            }
            ClientMsg::Me { cid: _, room, text } => {
                Command::Say(say::Say { room, text, kind: MessageKind::Action })
            }
            ClientMsg::Join { room, since } => Command::Join(join::Join { room, since }),
            ClientMsg::Part { room, reason } => Command::Part(part::Part { room, reason }),
            ClientMsg::List => Command::List(list::List),
            ClientMsg::Who { room } => Command::Who(who::Who { room }),
            ClientMsg::Topic { room, text } => Command::Topic(topic::Topic { room, text }),
            ClientMsg::Msg { cid: _, to, text } => Command::Msg(msg::Msg { to, text }),
            ClientMsg::Nick { nick } => Command::Nick(nick::Nick { nick }),
            ClientMsg::Away { reason } => Command::Away(away::Away { reason }),
            ClientMsg::Whois { nick } => Command::Whois(whois::Whois { nick }),
            ClientMsg::History { room, since, limit } => {
                Command::History(history::History { room, since, limit })
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
            ClientMsg::Sealed { cid: _, room, epoch, body } => {
                Command::Sealed(e2e::Sealed { room, epoch, body })
            }
        }
    }

    /// Whether the command counts against the rate limit: everything a client could repeat to
    /// make the server work (joins, renames, history requests…), not keepalives or goodbyes.
    fn is_charged(&self) -> bool {
        !matches!(self, Command::Quit(_) | Command::Ping(_) | Command::Pong | Command::Hello)
    }

    pub fn apply(self, hub: &Hub, session: &mut SessionState, now: Instant) -> Reply {
        if self.is_charged()
            && let Err(reply) = session.charge(now)
        {
            return *reply;
        }
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
            Command::History(cmd) => cmd.apply(hub, session),
            Command::Moderate(cmd) => cmd.apply(hub, session),
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
