//! `quit`: a goodbye, with an optional reason shown to others.

use chatao_proto::{LeaveReason, ServerMsg};

use super::{Close, Reply, SessionState};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Quit {
    pub reason: Option<String>,
}

impl Quit {
    pub fn apply(self, hub: &Hub, session: &SessionState) -> Reply {
        let message = super::reason(hub, session, self.reason);
        Reply::Close(Close {
            reason: LeaveReason::Quit,
            message,
            bye: ServerMsg::Bye { code: None, reason: "goodbye".into() },
        })
    }
}
