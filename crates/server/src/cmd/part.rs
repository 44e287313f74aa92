//! `part`: leave one room.

use chatao_proto::{ErrorCode, LeaveReason, RoomName};

use super::{Reply, SessionState, error, hub_error, reason};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Part {
    pub room: String,
    pub reason: Option<String>,
}

impl Part {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match RoomName::parse(&self.room) {
            Ok(room) => room,
            Err(e) => return error(ErrorCode::InvalidRoom, e.to_string()),
        };
        match hub.part(session.id, &room, LeaveReason::Part, reason(self.reason)) {
            Ok(()) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
