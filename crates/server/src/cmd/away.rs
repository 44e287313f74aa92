//! `away`: mark oneself away with a reason, or back.

use chatao_proto::{ErrorCode, TextError, check_text};

use super::{Reply, SessionState, error, hub_error};
use crate::hub::Hub;
use crate::limits::MAX_REASON_BYTES;

#[derive(Debug)]
pub struct Away {
    pub reason: Option<String>,
}

impl Away {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        // A muted key may still say it is away or back, but not with a reason others would read.
        if self.reason.is_some()
            && let Err(reply) = super::check_not_muted(hub, session)
        {
            return *reply;
        }
        if let Some(r) = &self.reason
            && let Err(e) = check_text(r, MAX_REASON_BYTES, false)
        {
            // Over the length limit is `too_long`, as for a topic; anything else `invalid_text`.
            let code = match e {
                TextError::TooLong { .. } => ErrorCode::TooLong,
                _ => ErrorCode::InvalidText,
            };
            return error(code, format!("away reason: {e}"));
        }
        match hub.set_away(session.id, self.reason) {
            Ok(()) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
