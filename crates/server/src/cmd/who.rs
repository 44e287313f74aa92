//! `who`: a room's members.

use chatao_proto::{ErrorCode, RoomName, ServerMsg};

use super::{Reply, error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Who {
    pub room: String,
}

impl Who {
    pub fn apply(self, hub: &Hub) -> Reply {
        match RoomName::parse(&self.room) {
            Ok(room) => Reply::Send(ServerMsg::Members {
                members: hub.who(&room),
                e2e: hub.is_e2e(&room),
                room,
            }),
            Err(e) => error(ErrorCode::InvalidRoom, e.to_string()),
        }
    }
}
