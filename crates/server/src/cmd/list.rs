//! `list`: the rooms with members, their member counts and topics.

use chatao_proto::ServerMsg;

use super::Reply;
use crate::hub::Hub;

#[derive(Debug)]
pub struct List;

impl List {
    pub fn apply(self, hub: &Hub) -> Reply {
        Reply::Send(ServerMsg::RoomList { rooms: hub.list() })
    }
}
