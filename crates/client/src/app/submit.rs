//! Enter: the input line becomes a command ([`crate::command::parse`], shared with line mode)
//! and then a protocol message ([`Input::to_msg`]), or is handled here (`/help`, `/switch`,
//! `/quit`, typing in a private conversation).
//!
//! The input line is emptied only when the message is handed to the network actor. A parse
//! error, text the server would refuse (checked here with the server's announced limits), or
//! being offline leaves it as it was, so nothing typed is lost.

use chatao_proto::{ClientMsg, Nick, RoomName, check_text};

use super::buffer::Target;
use super::keys::KEYS;
use super::{App, Effect};
use crate::command::{self, Input};
use crate::filter::Added;

/// `/who` requests remembered until answered (a refused one, or one a lost connection took,
/// never is: the oldest are forgotten).
const WHO_TRACKED: usize = 16;

impl App {
    pub(super) fn submit(&mut self) -> Vec<Effect> {
        let line = self.editor.text().to_owned();
        let input = match command::parse(&line) {
            Ok(Some(input)) => input,
            Ok(None) => return vec![],
            Err(e) => {
                self.error(&e.to_string());
                return vec![];
            }
        };
        // Local commands first: they work offline.
        match &input {
            Input::Help => {
                self.editor.take();
                self.help();
                return vec![];
            }
            Input::Search(text) => {
                self.editor.take();
                self.search_for(text.as_deref());
                return vec![];
            }
            Input::Url(n) => {
                self.editor.take();
                return self.list_urls(*n);
            }
            Input::Switch(room) => {
                match self.find(room) {
                    Some(i) => {
                        self.editor.take();
                        self.switch_to(i);
                    }
                    None => self.error(&format!("you are not in {room}; /join it first")),
                }
                return vec![];
            }
            Input::Ignore(target) => {
                let target = target.clone();
                self.editor.take();
                return self.ignore(target, true);
            }
            Input::Unignore(target) => {
                let target = target.clone();
                self.editor.take();
                return self.ignore(Some(target), false);
            }
            Input::Quit(reason) => {
                let reason = reason.clone();
                self.editor.take();
                return self.quit(reason);
            }
            Input::Join(room) => {
                if let Some(i) = self.find(room).filter(|&i| self.buffers[i].joined) {
                    self.editor.take();
                    self.switch_to(i);
                    return vec![];
                }
            }
            Input::Query { nick, text } => {
                let Ok(nick) = Nick::parse(nick) else {
                    self.error(&format!("{nick} is not a nickname; /query NICK [TEXT]"));
                    return vec![];
                };
                let i = self.query_buffer(&nick);
                self.switch_to(i);
                if text.is_none() {
                    self.editor.take();
                    return vec![];
                }
                // With text: sent below, to the conversation now shown.
            }
            Input::Part { room: None, .. } if self.current_room().is_none() => {
                // Closing a private conversation is local.
                self.editor.take();
                let current = self.current;
                self.close(current);
                return vec![];
            }
            _ => {}
        }
        let msg = match (&self.current_buffer().target, &input) {
            (Target::Query(nick), Input::Say(text)) => {
                Some(ClientMsg::Msg { cid: None, to: nick.to_string(), text: text.clone() })
            }
            (Target::Query(_), Input::Me(_)) => {
                self.error("/me works in rooms only");
                return vec![];
            }
            (
                Target::Query(_),
                Input::Topic(_) | Input::Who(None) | Input::Part { room: None, .. },
            ) => {
                self.error("this is a private conversation, not a room");
                return vec![];
            }
            (target, input) => input.to_msg(target.name()),
        };
        if let Some(req) = input.to_request(self.current_buffer().target.name()) {
            if self.current_room().is_none() {
                self.error("this works in an end-to-end encrypted room only");
                return vec![];
            }
            self.editor.take();
            return vec![Effect::Request(req)];
        }
        let Some(msg) = msg else { return vec![] };
        if let ClientMsg::Say { text, .. }
        | ClientMsg::Me { text, .. }
        | ClientMsg::Msg { text, .. } = &msg
            && let Err(e) = check_text(text, self.limits.max_text_bytes as usize, true)
        {
            self.error(&format!("not sent: {e}"));
            return vec![];
        }
        if !self.is_connected() {
            self.error("not connected; your text stays in the input line");
            return vec![];
        }
        if !self.core.can_take() {
            self.error("too many messages not yet acknowledged; your text stays in the input line");
            return vec![];
        }
        if let ClientMsg::Join { room, .. } | ClientMsg::Create { room, .. } = &msg {
            self.pending_join = RoomName::parse(room).ok();
            // Whatever `members` comes for it now opens its buffer.
            self.pending_who.retain(|r| Some(r) != self.pending_join.as_ref());
        }
        if let ClientMsg::Who { room, .. } = &msg
            && let Ok(room) = RoomName::parse(room)
        {
            if self.pending_who.len() >= WHO_TRACKED {
                self.pending_who.remove(0);
            }
            self.pending_who.push(room);
        }
        self.outbox_full = false;
        let restore = self.editor.take();
        let b = &mut self.buffers[self.current];
        b.scroll = 0;
        b.below = 0;
        // A message gets its client id and stays with the core until acknowledged; commands
        // go as they are.
        if let ClientMsg::Say { .. } | ClientMsg::Me { .. } | ClientMsg::Msg { .. } = &msg {
            let typed = self.core.submit(msg).map(|cid| (cid, restore));
            return self.flush(typed);
        }
        vec![Effect::Send { msg, restore: Some(restore) }]
    }

    /// `/ignore [X]` (`add`) and `/unignore X`: local, so they work offline. A nickname whose
    /// key is not known yet is ignored by name and looked up with `whois` (its answer teaches
    /// the key: [`crate::filter::Filters::ignored`]); the ignore file is written by
    /// [`App::update`]'s caller ([`Effect::SaveIgnores`]).
    fn ignore(&mut self, target: Option<String>, add: bool) -> Vec<Effect> {
        let ignores = &mut self.config.filters.ignores;
        let Some(target) = target else {
            if ignores.is_empty() {
                self.info("nobody is ignored");
                return vec![];
            }
            let lines: Vec<String> = ignores
                .entries()
                .into_iter()
                .map(|e| {
                    let nicks = ignores.nicks_of(&e);
                    let also = if nicks.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", nicks.join(", "))
                    };
                    format!("ignored: {e}{also}")
                })
                .collect();
            for line in lines {
                self.info(&line);
            }
            return vec![];
        };
        let mut whois = None;
        let text = if add {
            match ignores.add(&target) {
                Added::Key(fp) => format!("ignoring {target} (key {fp})"),
                Added::Nick(n) => {
                    let text = format!("ignoring {n} (by nickname until their key is known)");
                    whois = Some(n);
                    text
                }
                Added::Already => format!("{target} is already ignored"),
            }
        } else if ignores.remove(&target) {
            format!("no longer ignoring {target}")
        } else {
            format!(
                "{target} was not ignored (a nickname or fingerprint of the config's ignore list stays)"
            )
        };
        self.info(&text);
        match whois {
            Some(nick) if self.is_connected() => {
                vec![Effect::Send { msg: ClientMsg::Whois { nick }, restore: None }]
            }
            _ => vec![],
        }
    }

    fn help(&mut self) {
        self.info("commands:");
        for line in command::help_lines() {
            self.info(&format!("  {line}"));
        }
        self.info("keys:");
        for (keys, what) in KEYS {
            self.info(&format!("  {keys:<24} {what}"));
        }
    }
}
