//! `msg`: a private message to one user.

use chatao_proto::{Cid, MessageKind, ServerMsg};

use super::{Reply, SessionState, check_message, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Msg {
    pub to: String,
    pub text: String,
    /// The client's id for the message (see `say.rs`). Remembered in memory only: private
    /// messages are never stored, so after a server crash a repeat is a new message.
    pub cid: Option<Cid>,
}

impl Msg {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        super::once(hub, session, self.cid, |hub, session| self.accept(hub, session))
    }

    fn accept(self, hub: &Hub, session: &mut SessionState) -> Reply {
        if let Err(reply) = check_message(hub, &self.text, session) {
            return *reply;
        }
        if let Err(e) = hub.private(session.id, &self.to, MessageKind::Normal, self.text, self.cid)
        {
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
