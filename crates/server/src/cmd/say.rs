//! `say` and `me`: text for a room.

use std::time::Instant;

use chatao_proto::{ErrorCode, MessageKind, RoomName, TextError, check_text};

use super::{Reply, SessionState, error};
use crate::hub::{Hub, HubError};

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
        let max = session.limits.max_text_bytes as usize;
        match check_text(&self.text, max, true) {
            Ok(()) => {}
            Err(e @ TextError::TooLong { .. }) => return error(ErrorCode::TooLong, e.to_string()),
            Err(e) => return error(ErrorCode::InvalidText, e.to_string()),
        }
        match hub.say(session.id, &room, self.kind, self.text) {
            Ok(_) => Reply::Nothing,
            Err(e @ HubError::NotInRoom(_)) => error(ErrorCode::NotInRoom, e.to_string()),
            Err(e) => error(ErrorCode::Other, e.to_string()),
        }
    }
}
