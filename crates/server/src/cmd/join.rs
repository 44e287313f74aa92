//! `join`: enter a room (created on first join) and catch up on its history.

use super::{Replay, Reply, SessionState, hub_error};
use crate::hub::Hub;
use crate::limits::HISTORY_MAX;

#[derive(Debug)]
pub struct Join {
    pub room: String,
    pub since: Option<u64>,
}

impl Join {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        if let Err(e) = hub.admit(session.id, &room) {
            return super::e2e::refusal(e);
        }
        match hub.join(session.id, &room) {
            Ok(joined) => {
                let limit =
                    if self.since.is_some() { HISTORY_MAX } else { hub.config().history_on_join };
                Reply::Replay(Box::new(Replay {
                    joined,
                    since: self.since,
                    limit,
                    intro: true,
                    before: None,
                }))
            }
            Err(e) => hub_error(e),
        }
    }
}
