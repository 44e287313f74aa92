//! `bots`: operators hide a room's quiet sessions from its member lists, or show them again
//! (`hub/bots.rs` has the rules). Acknowledged once the setting is stored ([`Reply::Durable`],
//! or on a cluster node once the room's stream has it).

use chatao_proto::{ErrorCode, RoomName, ServerMsg};

use super::{Durable, Reply, SessionState, error, hub_error};
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
            // A cluster node: the notice comes when the room's stream brings the setting back.
            Ok(None) => Reply::Nothing,
            Ok(Some(set)) => Reply::Durable(Box::new(Durable {
                after: set.after,
                upto: set.upto,
                msg: ServerMsg::Notice { text: set.notice },
            })),
            Err(e) => hub_error(e),
        }
    }
}
