//! Client messages turned into commands and applied to the hub, one file per command.
//!
//! To add a command: add its `ClientMsg` variant in `chatao-proto`, a file here with a struct
//! and an `apply(self, hub, session) -> Reply`, a `Command` variant and its arm in
//! [`Command::from_msg`] and [`Command::apply`], then document it in docs/PROTOCOL.md.

mod ping;
mod quit;
mod say;

use std::time::Instant;

use chatao_proto::{
    ClientMsg, ErrorCode, LeaveReason, Limits, MessageKind, Nick, ServerMsg, TokenBucket,
};

use crate::hub::{Hub, SessionId};
use crate::limits::FLOOD_STRIKES;

/// What a session knows about itself once `hello` has been accepted.
#[derive(Debug)]
pub struct SessionState {
    pub id: SessionId,
    pub nick: Nick,
    pub limits: Limits,
    pub rate: TokenBucket,
    /// Consecutive messages refused for exceeding the rate.
    pub strikes: u32,
}

impl SessionState {
    pub fn new(id: SessionId, nick: Nick, limits: Limits, now: Instant) -> SessionState {
        SessionState {
            id,
            nick,
            limits,
            rate: TokenBucket::new(limits.rate_per_sec, limits.burst, now),
            strikes: 0,
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
}

#[derive(Debug, PartialEq)]
pub struct Close {
    pub reason: LeaveReason,
    pub message: Option<String>,
    pub bye: ServerMsg,
}

/// An error reply.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Send(ServerMsg::Error { code, message: message.into() })
}

/// A decoded client message, ready to apply.
#[derive(Debug)]
pub enum Command {
    Say(say::Say),
    Quit(quit::Quit),
    Ping(ping::Ping),
    Pong,
    /// `hello` after the session is open.
    Hello,
}

impl Command {
    pub fn from_msg(msg: ClientMsg) -> Command {
        match msg {
            ClientMsg::Say { room, text } => {
                Command::Say(say::Say { room, text, kind: MessageKind::Normal })
            }
            ClientMsg::Me { room, text } => {
                Command::Say(say::Say { room, text, kind: MessageKind::Action })
            }
            ClientMsg::Quit { reason } => Command::Quit(quit::Quit { reason }),
            ClientMsg::Ping { token } => Command::Ping(ping::Ping { token }),
            ClientMsg::Pong { .. } => Command::Pong,
            ClientMsg::Hello { .. } => Command::Hello,
        }
    }

    pub fn apply(self, hub: &Hub, session: &mut SessionState, now: Instant) -> Reply {
        match self {
            Command::Say(cmd) => cmd.apply(hub, session, now),
            Command::Quit(cmd) => cmd.apply(),
            Command::Ping(cmd) => cmd.apply(),
            Command::Pong => Reply::Nothing,
            Command::Hello => error(ErrorCode::BadSequence, "already registered: hello comes once"),
        }
    }
}
