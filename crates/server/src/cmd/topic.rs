//! `topic`: show or set a room's topic.

use chatao_proto::{ErrorCode, ServerMsg, TextError, check_text};

use super::{Reply, SessionState, error, hub_error};
use crate::hub::Hub;
use crate::limits::MAX_REASON_BYTES;

#[derive(Debug)]
pub struct Topic {
    pub room: String,
    pub text: Option<String>,
}

impl Topic {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        let Some(text) = self.text else {
            return Reply::Send(ServerMsg::Topic { text: hub.topic(&room), room, by: None });
        };
        if let Err(reply) = super::check_not_muted(hub, session) {
            return *reply;
        }
        match check_text(&text, MAX_REASON_BYTES, false) {
            Ok(()) => {}
            Err(e @ TextError::TooLong { .. }) => {
                return error(ErrorCode::TooLong, format!("topic: {e}"));
            }
            Err(e) => return error(ErrorCode::InvalidText, format!("topic: {e}")),
        }
        match hub.set_topic(session.id, &room, Some(text)) {
            Ok(()) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
