//! Operator actions: kick, ban, unban, mute, unmute. Each checks that the caller's key is an
//! operator's, acts, and tells everyone online with a `moderation` notice. A ban or unban is
//! in force at once, but on a standalone server its notice (the operator's acknowledgement)
//! waits for its record to be on disk (`persist_and_announce`). Kicks and mutes live in memory
//! only (`access.rs`), so there is nothing to wait for.

use chatao_proto::{ErrorCode, Fingerprint, LeaveReason, ModAction, Nick, ServerMsg, encode};
use chatao_transport::keys::parse_fingerprint;

use super::remote::{Holder, Moderation, Outbound};
use super::{Hub, HubError, SessionId, State};
use crate::access::Ban;
use crate::bus::BusEvent;
use crate::clock::human;
use crate::limits::MAX_MODERATION_DURATION;
use crate::store::Persist;

/// When a ban or mute of `duration_secs` starting at `now_ms` ends, in milliseconds since the
/// epoch: `Ok(None)` for good (no duration, or 0), `Err(invalid)` past
/// [`MAX_MODERATION_DURATION`]. Checked arithmetic: nothing wraps or saturates into a value that
/// would read back as another time.
pub fn moderation_end(now_ms: u64, duration_secs: Option<u64>) -> Result<Option<u64>, HubError> {
    let Some(secs) = duration_secs.filter(|d| *d > 0) else {
        return Ok(None);
    };
    let max = MAX_MODERATION_DURATION.as_secs();
    let too_long = || {
        HubError::Invalid(format!(
            "a ban or mute lasts at most {max} seconds ({}d, about 100 years); give no duration \
             to make it last for good",
            max / 86_400
        ))
    };
    if secs > max {
        return Err(too_long());
    }
    let end = secs
        .checked_mul(1000)
        .and_then(|ms| now_ms.checked_add(ms))
        .filter(|end| i64::try_from(*end).is_ok())
        .ok_or_else(too_long)?;
    Ok(Some(end))
}

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
    pub(super) fn resolve(&self, target: &str) -> Result<Fingerprint, HubError> {
        let target = target.trim();
        if target.len() > 7 && target[..7].eq_ignore_ascii_case("sha256:") {
            return parse_fingerprint(target)
                .map_err(|_| HubError::Invalid(format!("{target} is not a valid fingerprint")));
        }
        // Keyed by the nickname's skeleton ([`Nick::folded`]), not its lower case.
        let folded = Nick::parse(target).map(|n| n.folded()).unwrap_or_else(|_| target.into());
        // An online user's person: a ban or mute by nickname covers every key of theirs.
        if let Some(user) = self.nicknames.holder(&folded).and_then(|id| self.users.get(&id)) {
            return Ok(user.person.clone());
        }
        if let Some(user) = self.remote.holder(&folded).and_then(|r| self.remote.get(&r)) {
            return Ok(user.fingerprint.clone());
        }
        self.nicknames
            .owner(&folded)
            .cloned()
            .ok_or_else(|| HubError::NoSuchNick(target.to_owned()))
    }

    /// The session holding `nick` online.
    fn online(&self, nick: &str) -> Result<SessionId, HubError> {
        match self.find_nick(nick) {
            Some(Holder::Local(id)) => Ok(id),
            _ => Err(HubError::NoSuchNick(nick.to_owned())),
        }
    }

    /// The key and nickname of the user called `nick`, on this node or another.
    pub(super) fn online_anywhere(&self, nick: &str) -> Result<(Fingerprint, Nick), HubError> {
        match self.find_nick(nick) {
            Some(Holder::Local(id)) => {
                self.user(id).map(|u| (u.fingerprint.clone(), u.nick.clone()))
            }
            Some(Holder::Remote(r)) => self
                .remote
                .get(&r)
                .map(|u| (u.fingerprint.clone(), u.nick.clone()))
                .ok_or_else(|| HubError::NoSuchNick(nick.to_owned())),
            None => Err(HubError::NoSuchNick(nick.to_owned())),
        }
    }

    /// Writes `p` to the local store on a standalone server and tells everyone online
    /// `notice` only once it is written: the notice is the operator's acknowledgement, so it
    /// travels with the record on the bus; should the store fail, nobody gets it and the
    /// operator (session `from`) is told `unavailable` instead (`Shared::unstored`). A cluster
    /// keeps bans in its shared buckets: there the notice goes out at once.
    fn persist_and_announce(&mut self, hub: &Hub, p: Persist, from: SessionId, notice: ServerMsg) {
        let bytes = encode(&notice);
        if self.sequencer.stores_moderation() {
            let seq = self.next_seq();
            hub.bus()
                .send_control_from(BusEvent { seq, room: None, bytes, persist: p }, Some(from));
        } else {
            self.tell_everyone(&bytes);
        }
    }

    /// Hands an operator action to the other nodes (when in a cluster), with the shared
    /// bucket write it needs.
    fn spread(&self, m: Moderation, write: Option<Outbound>) {
        if let Some(write) = write {
            self.sequencer.tell_nodes(write);
        }
        self.sequencer.tell_nodes(Outbound::Moderation(m));
    }

    /// Tells everyone online what an operator did.
    fn announce_mod(
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
    /// Disconnects `nick` (every session of theirs); their rooms hear they were kicked.
    pub fn kick(&self, id: SessionId, nick: &str, reason: Option<String>) -> Result<(), HubError> {
        let mut st = self.lock();
        let by = st.operator(id, self)?;
        let moderation = |target: String| Moderation {
            action: ModAction::Kick,
            target,
            fingerprint: None,
            by: by.clone(),
            reason: reason.clone(),
            until: None,
        };
        if let Some(Holder::Remote(r)) = st.find_nick(nick) {
            // Their node disconnects them when the action reaches it.
            let name = st.remote.get(&r).map(|u| u.nick.to_string()).unwrap_or_default();
            st.announce_mod(ModAction::Kick, &name, by.clone(), reason.clone(), None);
            st.spread(moderation(name), None);
            return Ok(());
        }
        let target = st.online(nick)?;
        let name = st.user(target)?.nick.to_string();
        st.spread(moderation(name.clone()), None);
        let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let bye = ServerMsg::Bye {
            code: Some(ErrorCode::Kicked),
            reason: format!("kicked by {by}{why}"),
        };
        st.announce_mod(ModAction::Kick, &name, by.clone(), reason.clone(), None);
        // Every session of the person (their rooms hear one leave, after the last).
        for s in st.sessions_of_person(target) {
            let message = Some(format!("kicked by {by}{why}"));
            st.remove_user(s, LeaveReason::Kicked, message, Some(bye.clone()), self.bus());
        }
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
        let until = moderation_end(now, duration_secs)?;
        let ban = Ban {
            fingerprint: fingerprint.clone(),
            until,
            reason: reason.clone(),
            by: by.to_string(),
        };
        self.access().ban(ban.clone());
        let notice = ServerMsg::Moderation {
            action: ModAction::Ban,
            target: target.trim().to_owned(),
            by: by.clone(),
            reason: reason.clone(),
            until,
        };
        st.persist_and_announce(self, Persist::Ban(ban.clone()), id, notice);
        st.spread(
            Moderation {
                action: ModAction::Ban,
                target: target.trim().to_owned(),
                fingerprint: Some(fingerprint.clone()),
                by: by.clone(),
                reason: reason.clone(),
                until,
            },
            Some(Outbound::Ban { fingerprint: fingerprint.clone(), ban: Some(ban) }),
        );
        let left = until.map(|u| format!(" for {}", human(u - now))).unwrap_or_default();
        let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let sessions: Vec<SessionId> = st
            .users
            .iter()
            .filter(|(_, u)| u.fingerprint == fingerprint || u.person == fingerprint)
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
        st.spread(
            Moderation {
                action: ModAction::Unban,
                target: target.trim().to_owned(),
                fingerprint: Some(fingerprint.clone()),
                by: by.clone(),
                reason: None,
                until: None,
            },
            Some(Outbound::Ban { fingerprint: fingerprint.clone(), ban: None }),
        );
        let notice = ServerMsg::Moderation {
            action: ModAction::Unban,
            target: target.trim().to_owned(),
            by,
            reason: None,
            until: None,
        };
        st.persist_and_announce(self, Persist::Unban { fingerprint }, id, notice);
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
        let (fingerprint, name) = st.online_anywhere(nick)?;
        let until = moderation_end(self.access().clock().now_ms(), duration_secs)?;
        self.access().mute(&fingerprint, until);
        st.announce_mod(ModAction::Mute, name.as_str(), by.clone(), None, until);
        st.spread(
            Moderation {
                action: ModAction::Mute,
                target: name.to_string(),
                fingerprint: Some(fingerprint.clone()),
                by,
                reason: None,
                until,
            },
            Some(Outbound::Mute { fingerprint, until: Some(until) }),
        );
        Ok(())
    }

    /// Lifts the mute on online user `nick`'s key.
    pub fn unmute(&self, id: SessionId, nick: &str) -> Result<(), HubError> {
        let st = self.lock();
        let by = st.operator(id, self)?;
        let (fingerprint, name) = st.online_anywhere(nick)?;
        if !self.access().unmute(&fingerprint) {
            return Err(HubError::NotFound(format!("{nick} is not muted")));
        }
        st.announce_mod(ModAction::Unmute, name.as_str(), by.clone(), None, None);
        st.spread(
            Moderation {
                action: ModAction::Unmute,
                target: name.to_string(),
                fingerprint: Some(fingerprint.clone()),
                by,
                reason: None,
                until: None,
            },
            Some(Outbound::Mute { fingerprint, until: None }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_600_787_840;

    #[test]
    fn no_duration_or_zero_is_for_good() {
        assert_eq!(moderation_end(NOW, None).unwrap(), None);
        assert_eq!(moderation_end(NOW, Some(0)).unwrap(), None);
    }

    #[test]
    fn a_duration_ends_that_many_seconds_later() {
        assert_eq!(moderation_end(NOW, Some(600)).unwrap(), Some(NOW + 600_000));
        let max = MAX_MODERATION_DURATION.as_secs();
        assert_eq!(moderation_end(NOW, Some(max)).unwrap(), Some(NOW + max * 1000));
    }

    #[test]
    fn a_duration_past_the_longest_is_refused_never_wrapped_or_saturated() {
        let max = MAX_MODERATION_DURATION.as_secs();
        // 16534391535w: its end in ms passes i64::MAX, and once read back as 0 (expired).
        for secs in [max + 1, 16_534_391_535 * 604_800, u64::MAX / 1000 + 1, u64::MAX] {
            let err = moderation_end(NOW, Some(secs)).unwrap_err();
            assert!(
                matches!(&err, HubError::Invalid(m) if m.contains("at most") && m.contains("for good")),
                "{secs}: {err}"
            );
        }
        // A clock near the end of time cannot wrap either.
        assert!(moderation_end(i64::MAX as u64 - 1000, Some(60)).is_err());
        assert!(moderation_end(u64::MAX - 1000, Some(60)).is_err());
    }
}
