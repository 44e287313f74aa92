//! `bots`: operators hide a room's quiet sessions from its member lists, or show them again
//! (`hub/bots.rs` has the rules).

use chatao_proto::{ErrorCode, RoomName, ServerMsg};

use super::{Reply, SessionState, error, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Bots {
    pub room: String,
    pub hide: bool,
}

impl Bots {
    pub fn apply(self, hub: &Hub, session: &SessionState) -> Reply {
        let room = match RoomName::parse(&self.room) {
            Ok(room) => room,
            Err(e) => return error(ErrorCode::InvalidRoom, e.to_string()),
        };
        match hub.set_bots_hidden(session.id, &room, self.hide) {
            Ok(text) => Reply::Send(ServerMsg::Notice { text }),
            Err(e) => hub_error(e),
        }
    }
}
