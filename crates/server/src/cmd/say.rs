//! `say` and `me`: text for a room.

use std::time::Instant;

use chatao_proto::{ErrorCode, MessageKind, RoomName};

use super::{Reply, SessionState, check_message, error, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Say {
    pub room: String,
    pub text: String,
    pub kind: MessageKind,
}

impl Say {
    pub fn apply(self, hub: &Hub, session: &mut SessionState, now: Instant) -> Reply {
        if let Err(reply) = session.charge(now) {
            return *reply;
        }
        let room = match RoomName::parse(&self.room) {
            Ok(room) => room,
            Err(e) => return error(ErrorCode::InvalidRoom, e.to_string()),
        };
        if let Err(reply) = check_message(hub, &self.text, session) {
            return *reply;
        }
        match hub.say(session.id, &room, self.kind, self.text) {
            Ok(_) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
