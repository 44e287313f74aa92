//! The room operator commands: `op`, `deop`, `mode`, `room_kick`, `room_ban`, `room_unban`,
//! `invite` (plain rooms). Each is one call into `hub/room_ops.rs`, where the rules live; the
//! notice (`room_moderation`) is the acknowledgement, so success answers nothing here.

use chatao_proto::RoomFlag;

use super::{Reply, SessionState, hub_error, reason};
use crate::hub::Hub;

/// One room operator command.
#[derive(Debug)]
pub enum RoomOp {
    Op { room: String, nick: String, on: bool },
    Mode { room: String, flag: RoomFlag, on: bool },
    Kick { room: String, nick: String, reason: Option<String> },
    Ban { room: String, target: String, duration_secs: Option<u64>, reason: Option<String> },
    Unban { room: String, target: String },
    Invite { room: String, nick: String },
}

impl RoomOp {
    fn room(&self) -> &str {
        match self {
            RoomOp::Op { room, .. }
            | RoomOp::Mode { room, .. }
            | RoomOp::Kick { room, .. }
            | RoomOp::Ban { room, .. }
            | RoomOp::Unban { room, .. }
            | RoomOp::Invite { room, .. } => room,
        }
    }

    pub fn apply(self, hub: &Hub, session: &SessionState) -> Reply {
        let room = match super::room(self.room()) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        let id = session.id;
        let done = match self {
            RoomOp::Op { nick, on, .. } => hub.room_op(id, &room, &nick, on),
            RoomOp::Mode { flag, on, .. } => hub.room_mode(id, &room, flag, on),
            RoomOp::Kick { nick, reason: r, .. } => {
                hub.room_kick(id, &room, &nick, reason(hub, session, r))
            }
            RoomOp::Ban { target, duration_secs, reason: r, .. } => {
                hub.room_ban(id, &room, &target, duration_secs, reason(hub, session, r))
            }
            RoomOp::Unban { target, .. } => hub.room_unban(id, &room, &target),
            RoomOp::Invite { nick, .. } => hub.room_invite(id, &room, &nick),
        };
        match done {
            Ok(()) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
