//! Quiet sessions (bots, issue 22): a session whose `hello` says `quiet` is never announced
//! joining or leaving a room, on this node or any other (`join` and the parts in `mod.rs`,
//! `remote.rs`), and member lists mark it `bot`. An operator may hide a room's bots from its
//! member lists (`bots #room hide`); the choice lives in this node's memory, like kicks and
//! mutes: it is neither stored (a restart shows them again) nor shared with the other nodes
//! of a cluster (each node's operator sets it there).

use chatao_proto::{Member, RoomName};

use super::{Hub, HubError, SessionId, State};

/// Most rooms whose bots an operator may hide at once. Overflow policy: the next `hide` is
/// refused (`invalid`) until one is shown again; far more than a server's rooms in use.
pub const HIDDEN_ROOMS: usize = 10_000;

impl State {
    /// Leaves the bots out of `members` when `room`'s operator hid them.
    pub(super) fn hide_bots(&self, room: &RoomName, members: &mut Vec<Member>) {
        if self.bots_hidden.contains(room) {
            members.retain(|m| !m.bot);
        }
    }
}

impl Hub {
    /// Operators: hide (`hide`) or show again the quiet sessions in `room`'s member lists
    /// (the `members` of joins and of `who`). Returns what to tell the operator.
    pub fn set_bots_hidden(
        &self,
        id: SessionId,
        room: &RoomName,
        hide: bool,
    ) -> Result<String, HubError> {
        let mut st = self.lock();
        let user = st.user(id)?;
        if !self.access().is_op(&user.fingerprint) {
            return Err(HubError::NotOperator);
        }
        if !hide {
            st.bots_hidden.remove(room);
            return Ok(format!("bots are listed in {room} again"));
        }
        if !st.bots_hidden.contains(room) && st.bots_hidden.len() >= HIDDEN_ROOMS {
            return Err(HubError::Invalid(format!(
                "bots are hidden in {HIDDEN_ROOMS} rooms already, the most there may be: show \
                 them in one first"
            )));
        }
        st.bots_hidden.insert(room.clone());
        Ok(format!("bots are hidden from the member lists of {room} (on this server)"))
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
    use crate::mailbox::{Inbox, mailbox};
    use crate::store::{Retention, Store};

    const OP: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn hub(dir: &std::path::Path, op: &str) -> Hub {
        let store = Arc::new(Store::open(dir).unwrap());
        let config = HubConfig {
            default_room: RoomName::lobby(),
            history_on_join: 3,
            retention: Retention { max_messages: 0, max_age: None },
        };
        let ops = AccessConfig { ops: vec![op.to_owned()], ..Default::default() };
        let access = Access::load(ops, crate::clock::Clock::default(), vec![]).unwrap();
        Hub::new(config, store, Arc::new(access)).unwrap()
    }

    fn drain(hub: &Hub, inbox: &mut Inbox) -> Vec<ServerMsg> {
        let seq = hub.current_seq();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(hub.bus().flushed(seq));
        let mut out = vec![];
        while let Ok(b) = inbox.rx.try_recv() {
            for record in b.split(|&c| c == b'\n').filter(|r| !r.is_empty()) {
                out.push(decode_server(record).unwrap());
            }
        }
        out
    }

    fn user(hub: &Hub, nick: &str, quiet: bool) -> (SessionId, Inbox) {
        let (mb, inbox) = mailbox(64);
        let id = hub.next_session_id();
        // The operator's key is a well-formed fingerprint (the operator list keeps only those).
        let fp = match nick {
            "op" => OP.to_owned(),
            _ => format!("SHA256:{nick}"),
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
}
