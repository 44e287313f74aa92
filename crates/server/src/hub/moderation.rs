//! Operator actions: kick, ban, unban, mute, unmute. Each checks that the caller's key is an
//! operator's, acts, and tells everyone online with a `moderation` notice.

use chatao_proto::{ErrorCode, LeaveReason, ModAction, Nick, ServerMsg, encode};
use chatao_transport::keys::parse_fingerprint;

use super::{Hub, HubError, SessionId, State};
use crate::access::Ban;
use crate::bus::BusEvent;
use crate::clock::human;
use crate::store::Persist;

impl State {
    /// The operator's nickname, if `id` is one.
    fn operator(&self, id: SessionId, hub: &Hub) -> Result<Nick, HubError> {
        let user = self.user(id)?;
        if !hub.access().is_op(&user.fingerprint) {
            return Err(HubError::NotOperator);
        }
        Ok(user.nick.clone())
    }

    /// The fingerprint `target` names: a fingerprint itself, or the nickname of someone online
    /// or registered.
    fn resolve(&self, target: &str) -> Result<String, HubError> {
        let target = target.trim();
        if target.len() > 7 && target[..7].eq_ignore_ascii_case("sha256:") {
            return parse_fingerprint(target)
                .map_err(|_| HubError::NotFound(format!("{target} is not a valid fingerprint")));
        }
        let folded = target.to_ascii_lowercase();
        if let Some(user) = self.nicks.get(&folded).and_then(|id| self.users.get(id)) {
            return Ok(user.fingerprint.clone());
        }
        self.owners.get(&folded).cloned().ok_or_else(|| HubError::NoSuchNick(target.to_owned()))
    }

    /// The session holding `nick` online.
    fn online(&self, nick: &str) -> Result<SessionId, HubError> {
        self.nicks
            .get(&nick.to_ascii_lowercase())
            .copied()
            .ok_or_else(|| HubError::NoSuchNick(nick.to_owned()))
    }

    /// Tells everyone online what an operator did.
    fn announce(
        &self,
        action: ModAction,
        target: &str,
        by: Nick,
        reason: Option<String>,
        until: Option<u64>,
    ) {
        let msg = ServerMsg::Moderation { action, target: target.to_owned(), by, reason, until };
        self.tell_everyone(&encode(&msg));
    }
}

impl Hub {
    /// Disconnects `nick`; their rooms hear they were kicked.
    pub fn kick(&self, id: SessionId, nick: &str, reason: Option<String>) -> Result<(), HubError> {
        let mut st = self.lock();
        let by = st.operator(id, self)?;
        let target = st.online(nick)?;
        let name = st.user(target)?.nick.to_string();
        let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let bye = ServerMsg::Bye {
            code: Some(ErrorCode::Kicked),
            reason: format!("kicked by {by}{why}"),
        };
        st.announce(ModAction::Kick, &name, by.clone(), reason.clone(), None);
        st.remove_user(
            target,
            LeaveReason::Kicked,
            Some(format!("kicked by {by}{why}")),
            Some(bye),
            self.bus(),
        );
        Ok(())
    }

    /// Bans the key `target` names for `duration_secs` (or for good), ends its sessions, and
    /// records the ban so that it survives restarts.
    pub fn ban(
        &self,
        id: SessionId,
        target: &str,
        duration_secs: Option<u64>,
        reason: Option<String>,
    ) -> Result<(), HubError> {
        let mut st = self.lock();
        let by = st.operator(id, self)?;
        let fingerprint = st.resolve(target)?;
        let now = self.access().clock().now_ms();
        let until =
            duration_secs.filter(|d| *d > 0).map(|d| now.saturating_add(d.saturating_mul(1000)));
        let ban = Ban {
            fingerprint: fingerprint.clone(),
            until,
            reason: reason.clone(),
            by: by.to_string(),
        };
        self.access().ban(ban.clone());
        let seq = st.next_seq();
        self.bus().send_control(BusEvent {
            seq,
            room: None,
            bytes: Default::default(),
            persist: Persist::Ban(ban),
        });
        st.announce(ModAction::Ban, target.trim(), by.clone(), reason.clone(), until);
        let left = until.map(|u| format!(" for {}", human(u - now))).unwrap_or_default();
        let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let sessions: Vec<SessionId> = st
            .users
            .iter()
            .filter(|(_, u)| u.fingerprint == fingerprint)
            .map(|(id, _)| *id)
            .collect();
        for target in sessions {
            let bye = ServerMsg::Bye {
                code: Some(ErrorCode::Banned),
                reason: format!("banned by {by}{left}{why}"),
            };
            st.remove_user(
                target,
                LeaveReason::Kicked,
                Some(format!("banned by {by}{why}")),
                Some(bye),
                self.bus(),
            );
        }
        Ok(())
    }

    /// Lifts the ban on the key `target` names.
    pub fn unban(&self, id: SessionId, target: &str) -> Result<(), HubError> {
        let mut st = self.lock();
        let by = st.operator(id, self)?;
        let fingerprint = st.resolve(target)?;
        if !self.access().unban(&fingerprint) {
            return Err(HubError::NotFound(format!("{target} is not banned")));
        }
        let seq = st.next_seq();
        self.bus().send_control(BusEvent {
            seq,
            room: None,
            bytes: Default::default(),
            persist: Persist::Unban { fingerprint },
        });
        st.announce(ModAction::Unban, target.trim(), by, None, None);
        Ok(())
    }

    /// Stops the key of online user `nick` from sending, for `duration_secs` or until unmuted.
    pub fn mute(
        &self,
        id: SessionId,
        nick: &str,
        duration_secs: Option<u64>,
    ) -> Result<(), HubError> {
        let st = self.lock();
        let by = st.operator(id, self)?;
        let target = st.user(st.online(nick)?)?;
        let until = duration_secs
            .filter(|d| *d > 0)
            .map(|d| self.access().clock().now_ms().saturating_add(d.saturating_mul(1000)));
        self.access().mute(&target.fingerprint, until);
        st.announce(ModAction::Mute, target.nick.as_str(), by, None, until);
        Ok(())
    }

    /// Lifts the mute on online user `nick`'s key.
    pub fn unmute(&self, id: SessionId, nick: &str) -> Result<(), HubError> {
        let st = self.lock();
        let by = st.operator(id, self)?;
        let target = st.user(st.online(nick)?)?;
        if !self.access().unmute(&target.fingerprint) {
            return Err(HubError::NotFound(format!("{nick} is not muted")));
        }
        st.announce(ModAction::Unmute, target.nick.as_str(), by, None, None);
        Ok(())
    }
}
