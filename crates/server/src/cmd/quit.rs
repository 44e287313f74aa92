//! `quit`: a goodbye, with an optional reason shown to others.

use chatao_proto::{LeaveReason, ServerMsg, check_text};

use super::{Close, Reply};

/// Longest quit reason passed on to others, in bytes; a longer or unprintable one is dropped.
const MAX_REASON_BYTES: usize = 300;

#[derive(Debug)]
pub struct Quit {
    pub reason: Option<String>,
}

impl Quit {
    pub fn apply(self) -> Reply {
        let message = self.reason.filter(|r| check_text(r, MAX_REASON_BYTES, false).is_ok());
        Reply::Close(Close {
            reason: LeaveReason::Quit,
            message,
            bye: ServerMsg::Bye { code: None, reason: "goodbye".into() },
        })
    }
}
