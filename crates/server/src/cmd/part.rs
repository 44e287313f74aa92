//! `part`: leave one room.

use chatao_proto::LeaveReason;

use super::{Reply, SessionState, hub_error, reason};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Part {
    pub room: String,
    pub reason: Option<String>,
}

impl Part {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        let in_room =
            hub.part(session.id, &room, LeaveReason::Part, reason(hub, session, self.reason));
        if in_room.is_ok() {
            // Parting an E2E room gives up its membership, not only its delivery.
            hub.e2e_part(session.id, &room);
        }
        match in_room {
            Ok(()) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
