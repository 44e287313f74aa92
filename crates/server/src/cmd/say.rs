//! `say` and `me`: text for a room.

use chatao_proto::{Cid, MessageKind};

use super::{Reply, SessionState, check_message, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Say {
    pub room: String,
    pub text: String,
    pub kind: MessageKind,
    /// The client's id for the message: a repeat is answered with the first echo, and every
    /// refusal carries it.
    pub cid: Option<Cid>,
}

impl Say {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        super::once(hub, session, self.cid, |hub, session| self.accept(hub, session))
    }

    fn accept(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        if hub.is_e2e(&room) {
            let e = crate::hub::E2eRefusal::E2eRoom(room);
            return super::error(e.code(), e.to_string());
        }
        if let Err(reply) = check_message(hub, &self.text, session) {
            return *reply;
        }
        match hub.say(session.id, &room, self.kind, self.text, self.cid) {
            Ok(_) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
