//! `who`: a page of a room's members, in the order of their folded nicknames.

use chatao_proto::{ErrorCode, RoomName, ServerMsg};

use super::{Reply, error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Who {
    pub room: String,
    /// The page starts after this nickname (the `next` of the previous page).
    pub after: Option<String>,
}

impl Who {
    pub fn apply(self, hub: &Hub) -> Reply {
        match RoomName::parse(&self.room) {
            Ok(room) => {
                let page = hub.who(&room, self.after.as_deref());
                Reply::Send(ServerMsg::Members {
                    members: page.members,
                    e2e: hub.is_e2e(&room),
                    total: page.total,
                    next: page.next,
                    room,
                })
            }
            Err(e) => error(ErrorCode::InvalidRoom, e.to_string()),
        }
    }
}
