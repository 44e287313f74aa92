//! `ping`: the client checks the server is alive.
//!
//! Pongs are paced per session ([`crate::limits::PONGS_PER_SEC`], burst
//! [`crate::limits::PONG_BURST`]): a ping is never refused and never charged to the command
//! rate, but one over the pace is answered later. Its token waits in
//! [`SessionState::pong_owed`] (a later ping replaces it) and the session's pong timer sends one
//! pong with the latest token when the bucket allows, so a pong with token T still means
//! "everything up to ping T has been handled".

use std::time::Instant;

use chatao_proto::ServerMsg;

use super::{Reply, SessionState};

#[derive(Debug)]
pub struct Ping {
    pub token: u64,
}

impl Ping {
    pub fn apply(self, session: &mut SessionState, now: Instant) -> Reply {
        if session.pong_owed.is_none() && session.pongs.try_take(now) {
            Reply::Send(ServerMsg::Pong { token: self.token })
        } else {
            session.pong_owed = Some(self.token);
            Reply::Nothing
        }
    }
}
