//! `history`: the messages of a room after a given id (catch-up after a reconnect), or with
//! `before` the ones before a given id (scrollback into the past).

use super::{Replay, Reply, SessionState, hub_error};
use crate::hub::Hub;
use crate::limits::HISTORY_MAX;

#[derive(Debug)]
pub struct History {
    pub room: String,
    pub since: u64,
    pub limit: Option<u32>,
    pub before: Option<u64>,
}

impl History {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        match hub.catch_up(session.id, &room) {
            Ok(joined) => {
                let limit = self.limit.map_or(HISTORY_MAX, |l| (l as usize).min(HISTORY_MAX));
                Reply::Replay(Box::new(Replay {
                    joined,
                    since: Some(self.since),
                    limit,
                    intro: false,
                    before: self.before,
                }))
            }
            Err(e) => hub_error(e),
        }
    }
}
