//! The operator commands: `kick`, `ban`, `unban`, `mute`, `unmute`. They share one file because
//! each is a single call into the hub's moderation (see `hub/moderation.rs`), where the rules
//! live.

use super::{Reply, SessionState, hub_error, reason};
use crate::hub::{Hub, HubError};

/// One operator command.
#[derive(Debug)]
pub enum Moderate {
    Kick { nick: String, reason: Option<String> },
    Ban { target: String, duration_secs: Option<u64>, reason: Option<String> },
    Unban { target: String },
    Mute { nick: String, duration_secs: Option<u64> },
    Unmute { nick: String },
}

impl Moderate {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let id = session.id;
        let done: Result<(), HubError> = match self {
            Moderate::Kick { nick, reason: r } => hub.kick(id, &nick, reason(hub, session, r)),
            Moderate::Ban { target, duration_secs, reason: r } => {
                hub.ban(id, &target, duration_secs, reason(hub, session, r))
            }
            Moderate::Unban { target } => hub.unban(id, &target),
            Moderate::Mute { nick, duration_secs } => hub.mute(id, &nick, duration_secs),
            Moderate::Unmute { nick } => hub.unmute(id, &nick),
        };
        match done {
            Ok(()) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
