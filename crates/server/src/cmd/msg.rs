//! `msg`: a private message to one user.

use chatao_proto::{MessageKind, ServerMsg};

use super::{Reply, SessionState, check_message, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Msg {
    pub to: String,
    pub text: String,
}

impl Msg {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        if let Err(reply) = check_message(hub, &self.text, session) {
            return *reply;
        }
        if let Err(e) = hub.private(session.id, &self.to, MessageKind::Normal, self.text) {
            return hub_error(e);
        }
        match hub.away_reason(&self.to) {
            Some((nick, reason)) => {
                Reply::Send(ServerMsg::Notice { text: format!("{nick} is away: {reason}") })
            }
            None => Reply::Nothing,
        }
    }
}
