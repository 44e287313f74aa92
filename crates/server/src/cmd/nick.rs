//! `nick`: change nickname.

use chatao_proto::{ErrorCode, Nick as NickName};

use super::{Reply, SessionState, error, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Nick {
    pub nick: String,
}

impl Nick {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        // A new nickname is announced to every room the sender is in: text, so a muted key
        // keeps its name.
        if let Err(reply) = super::check_not_muted(hub, session) {
            return *reply;
        }
        let new = match NickName::parse(&self.nick) {
            Ok(n) => n,
            Err(e) => return error(ErrorCode::InvalidNick, e.to_string()),
        };
        match hub.rename(session.id, new.clone()) {
            Ok(()) => {
                session.nick = new;
                Reply::Nothing
            }
            Err(e) => hub_error(e),
        }
    }
}
