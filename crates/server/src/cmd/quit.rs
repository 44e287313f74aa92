//! `quit`: a goodbye, with an optional reason shown to others.

use chatao_proto::{LeaveReason, ServerMsg};

use super::{Close, Reply};

#[derive(Debug)]
pub struct Quit {
    pub reason: Option<String>,
}

impl Quit {
    pub fn apply(self) -> Reply {
        let message = super::reason(self.reason);
        Reply::Close(Close {
            reason: LeaveReason::Quit,
            message,
            bye: ServerMsg::Bye { code: None, reason: "goodbye".into() },
        })
    }
}
