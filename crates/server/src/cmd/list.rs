//! `list`: a page of the rooms with members, their member counts and topics, in name order.

use chatao_proto::{ErrorCode, RoomName, ServerMsg};

use super::{Reply, error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct List {
    /// The page starts after this room name (the `next` of the previous page).
    pub after: Option<String>,
}

impl List {
    /// The page is copied under the hub lock and encoded by the session after; the reply is
    /// charged to the output budget by its encoded size (as every reply is).
    pub fn apply(self, hub: &Hub) -> Reply {
        let after = match self.after.as_deref().map(RoomName::parse).transpose() {
            Ok(after) => after,
            Err(e) => return error(ErrorCode::InvalidRoom, e.to_string()),
        };
        let (rooms, next) = hub.list(after.as_ref());
        Reply::Send(ServerMsg::RoomList { rooms, next })
    }
}
