//! `who`: a page of a room's members, in the order of their folded nicknames.

use chatao_proto::{ErrorCode, RoomName, members};

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
                // One page, in records of at most 16 KiB (long away reasons).
                Reply::SendAll(members::chunks(
                    room.clone(),
                    page.members,
                    hub.is_e2e(&room),
                    page.total,
                    page.next,
                ))
            }
            Err(e) => error(ErrorCode::InvalidRoom, e.to_string()),
        }
    }
}
