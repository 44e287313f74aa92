//! Quiet sessions (bots, issue 22): a session whose `hello` says `quiet` is never announced
//! joining or leaving a room, on this node or any other (`join` and the parts in `mod.rs`,
//! `remote/`), and member lists mark it `bot`.
//!
//! An operator may hide a room's bots from its member lists (`bots #room hide`, `show` again).
//! The choice is the room's (`Room::bots_hidden`): stored in the room's row (`rooms.bots_hidden`,
//! written by the bus like a topic) and read back with the room when it is loaded
//! (`hub/rooms.rs`, lazily, by index), so it survives restarts. The operator is acknowledged
//! only once it is on disk ([`BotsSetting`], waited on by the session: issue 15 item 2); a
//! store that cannot write it leaves it in force in memory until a restart, and the operator is
//! told `unavailable`. On a cluster node the setting travels on the room's stream like a topic
//! (`RoomBody::Bots`): every node applies it in order and stores it in its replica
//! (`cluster.db`), and the operator is told once the stream has it, when this node applies it.
//! Like a topic it lives in the stream as long as the stream's retention keeps the event, and
//! is forgotten with a replica cleared because the stream was recreated.

use chatao_proto::{Member, RoomName};

use super::remote::RoomBody;
use super::sequencer::{Author, Sequenced};
use super::{Hub, HubError, SessionId, State};

/// An operator's change to a room's bots setting, made in memory and queued on the bus:
/// `notice` is for the operator once every acknowledged event queued after `after` and up to
/// `upto` is stored ([`crate::bus::BusHandle::durable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotsSetting {
    pub notice: String,
    pub after: u64,
    pub upto: u64,
}

impl State {
    /// Leaves the bots out of `members` when `room`'s operator hid them.
    pub(super) fn hide_bots(&self, room: &RoomName, members: &mut Vec<Member>) {
        if self.rooms.get(room).is_some_and(|r| r.bots_hidden) {
            members.retain(|m| !m.bot);
        }
    }
}

impl Hub {
    /// Operators: hide (`hide`) or show again the quiet sessions in `room`'s member lists
    /// (the `members` of joins and of `who`), in force at once and queued on the bus to be
    /// stored. A room not in memory is loaded for it (and forgotten again if nobody is in it:
    /// its setting waits in `Retired` until the store has it). On a cluster node it is
    /// published on the room's stream instead, and `None` returned: the notice comes when the
    /// stream brings it back (`apply_room_events`). Errors: not an operator, a store that
    /// cannot read the room, or (cluster) a link that is full or down.
    pub fn set_bots_hidden(
        &self,
        id: SessionId,
        room: &RoomName,
        hide: bool,
    ) -> Result<Option<BotsSetting>, HubError> {
        let mut st = self.lock();
        let user = st.user(id)?;
        if !self.access().is_op(&user.fingerprint) {
            return Err(HubError::NotOperator);
        }
        let by = Author::of(id, user, None);
        match self.sequence(&mut st, room, by, RoomBody::Bots { hidden: hide })? {
            Sequenced::Bots(setting) => Ok(Some(setting)),
            _ => Ok(None),
        }
    }
}

/// What the operator is told once the setting is stored.
pub(super) fn notice(room: &RoomName, hidden: bool) -> String {
    if hidden {
        format!("bots are hidden from the member lists of {room}")
    } else {
        format!("bots are listed in {room} again")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use chatao_proto::{LeaveReason, MessageKind, Nick, ServerMsg, decode_server};

    use super::*;
    use crate::access::{Access, AccessConfig};
    use crate::hub::HubConfig;
    use crate::outbox::{Outgoing, outbox};
    use crate::store::{Retention, Store};

    const OP: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn hub(dir: &std::path::Path, op: &str) -> crate::hub::HubGuard {
        let store = Arc::new(Store::open(dir).unwrap());
        let config = HubConfig {
            default_room: RoomName::lobby(),
            history_on_join: 3,
            retention: Retention { max_messages: 0, max_age: None },
        };
        let ops = AccessConfig { ops: vec![op.to_owned()], ..Default::default() };
        let access = Access::load(ops, crate::clock::Clock::default(), vec![]).unwrap();
        Hub::start(config, store, Arc::new(access)).unwrap()
    }

    fn drain(hub: &Hub, inbox: &mut Outgoing) -> Vec<ServerMsg> {
        let seq = hub.current_seq();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(hub.bus().flushed(seq));
        let mut out = vec![];
        for record in inbox.take_queued().split(|&c| c == b'\n').filter(|r| !r.is_empty()) {
            out.push(decode_server(record).unwrap());
        }
        out
    }

    fn user(hub: &Hub, nick: &str, quiet: bool) -> (SessionId, Outgoing) {
        let (mb, inbox) = outbox(64);
        let id = hub.next_session_id();
        // The operator's key is a well-formed fingerprint (the operator list keeps only those).
        let fp = match nick {
            "op" => chatao_proto::Fingerprint::parse(OP).unwrap(),
            _ => chatao_proto::Fingerprint::example(nick),
        };
        hub.register_as(id, Nick::parse(nick).unwrap(), fp, mb, quiet).unwrap();
        hub.join(id, &RoomName::lobby()).unwrap();
        (id, inbox)
    }

    fn about<'a>(msgs: &'a [ServerMsg], who: &'a str) -> impl Iterator<Item = &'a ServerMsg> {
        msgs.iter().filter(move |m| match m {
            ServerMsg::Join { nick, .. } | ServerMsg::Leave { nick, .. } => nick.as_str() == who,
            _ => false,
        })
    }

    /// Issue 22: a quiet session comes, speaks, parts and goes without a join or leave for
    /// the others (it hears its own, which confirm them), is listed as a bot, and an operator
    /// can hide the room's bots from its member lists and show them again.
    #[test]
    fn a_quiet_session_is_never_announced_and_is_listed_as_a_bot_unless_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path(), OP);
        let lobby = RoomName::lobby();
        let (op, mut iop) = user(&hub, "op", false);
        let (bot, mut ibot) = user(&hub, "ci", true);
        hub.say(bot, &lobby, MessageKind::Normal, "build green".into(), None).unwrap();
        let rust = RoomName::parse("#rust").unwrap();
        hub.join(op, &rust).unwrap();
        hub.join(bot, &rust).unwrap();
        hub.part(bot, &rust, LeaveReason::Part, None).unwrap();
        let page = hub.who(&lobby, None);
        let marks: Vec<(String, bool)> =
            page.members.iter().map(|m| (m.nick.to_string(), m.bot)).collect();
        assert_eq!(marks, [("ci".into(), true), ("op".into(), false)]);
        assert_eq!(hub.set_bots_hidden(bot, &lobby, true), Err(HubError::NotOperator));
        hub.set_bots_hidden(op, &lobby, true).unwrap();
        let hidden: Vec<String> =
            hub.who(&lobby, None).members.iter().map(|m| m.nick.to_string()).collect();
        assert_eq!(hidden, ["op"]);
        let (late, _ilate) = user(&hub, "late", false);
        let joined = hub.join(late, &lobby).unwrap();
        assert!(joined.members.iter().all(|m| !m.bot), "hidden from a join's list too");
        hub.set_bots_hidden(op, &lobby, false).unwrap();
        assert_eq!(hub.who(&lobby, None).members.len(), 3);
        hub.leave(bot, LeaveReason::Quit, None);
        let op_saw = drain(&hub, &mut iop);
        assert_eq!(about(&op_saw, "ci").count(), 0, "{op_saw:?}");
        assert!(
            op_saw
                .iter()
                .any(|m| matches!(m, ServerMsg::Message { text, .. } if text == "build green"))
        );
        let bot_saw = drain(&hub, &mut ibot);
        assert_eq!(about(&bot_saw, "ci").count(), 3, "its own joins and part: {bot_saw:?}");
        // Without the flag the same moves are announced.
        let (plain, _ip) = user(&hub, "plain", false);
        hub.leave(plain, LeaveReason::Quit, None);
        assert_eq!(about(&drain(&hub, &mut iop), "plain").count(), 2);
    }

    /// A room nobody is in is loaded for the setting and forgotten again: joined before the
    /// bus has stored it (from `Retired`) or after (from the store), and by a new hub over the
    /// same directory, its bots stay hidden; `show` is stored the same way.
    #[test]
    fn the_setting_of_a_room_not_in_memory_is_kept_and_read_back_with_the_room() {
        let dir = tempfile::tempdir().unwrap();
        let empty = RoomName::parse("#empty").unwrap();
        let members = |hub: &Hub, id: SessionId| -> Vec<bool> {
            let joined = hub.join(id, &empty).unwrap();
            joined.members.iter().map(|m| m.bot).collect()
        };
        {
            let hub = hub(dir.path(), OP);
            let (op, _iop) = user(&hub, "op", false);
            let (bot, _ibot) = user(&hub, "ci", true);
            let set = hub.set_bots_hidden(op, &empty, true).unwrap().unwrap();
            assert_eq!(set.upto, set.after + 1, "one event to wait for");
            assert_eq!(hub.rooms_in_memory().0, 1, "#empty forgotten again (only the lobby)");
            hub.join(bot, &empty).unwrap();
            assert_eq!(members(&hub, op), [false], "the bot left out");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            assert_eq!(rt.block_on(hub.bus().durable(set.after, set.upto)), Ok(()));
        }
        let hub = hub(dir.path(), OP);
        let (op, _iop) = user(&hub, "op", false);
        let (bot, _ibot) = user(&hub, "ci", true);
        hub.join(bot, &empty).unwrap();
        assert_eq!(members(&hub, op), [false], "still hidden from a new hub");
        hub.part(op, &empty, LeaveReason::Part, None).unwrap();
        hub.part(bot, &empty, LeaveReason::Part, None).unwrap();
        let shown = hub.set_bots_hidden(op, &empty, false).unwrap().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(hub.bus().durable(shown.after, shown.upto)), Ok(()));
        hub.join(bot, &empty).unwrap();
        assert_eq!(members(&hub, op).len(), 2, "shown again");
    }
}
