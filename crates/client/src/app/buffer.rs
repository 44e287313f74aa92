//! One scrollback buffer: a room or a private conversation, with its lines, members, topic,
//! unread counters and scroll position.
//!
//! Every string stored here from the network has been through [`chatao_proto::sanitize`]
//! ([`Entry::new`] does it, line by line), so nothing in a buffer can carry a control
//! character or an escape sequence to the terminal; the only control left is `\n` between the
//! lines of a multi-line message, which the renderer splits on and never draws.

use std::collections::{BTreeMap, VecDeque};

use chatao_proto::{Nick, RoomName, sanitize};

/// Lines kept per buffer; older ones are dropped (the server keeps the history).
pub const SCROLLBACK: usize = 5000;

/// What a buffer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Room(RoomName),
    /// Private messages with one user.
    Query(Nick),
}

impl Target {
    /// The name shown in the status bar: `#room` or the other user's nick.
    pub fn name(&self) -> &str {
        match self {
            Target::Room(r) => r.as_str(),
            Target::Query(n) => n.as_str(),
        }
    }

    pub fn room(&self) -> Option<&RoomName> {
        match self {
            Target::Room(r) => Some(r),
            Target::Query(_) => None,
        }
    }

    /// Whether this is the buffer for `name` (a room, or a nick compared case-insensitively as
    /// the server does).
    pub fn is(&self, name: &str) -> bool {
        match self {
            Target::Room(r) => r.as_str().eq_ignore_ascii_case(name),
            Target::Query(n) => n.as_str().eq_ignore_ascii_case(name),
        }
    }
}

/// What kind of line; decides the prefix column and the style. Only the client chooses these,
/// so no remote text can pass for a notice, an action or a private message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Message {
        from: Nick,
    },
    Action {
        from: Nick,
    },
    /// A private message; `from` is the sender (us or them).
    Private {
        from: Nick,
        action: bool,
    },
    /// Our own private message to `to`, echoed in the buffer where `/msg` was typed (the
    /// conversation has its own buffer, shown elsewhere): `-> │ bob: text`.
    Sent {
        to: Nick,
        action: bool,
    },
    /// Someone arrived.
    Join,
    /// Someone left.
    Leave,
    /// Other server events: topic, nick changes, member lists, whois, end of history.
    Notice,
    /// The server refused something, or the connection failed.
    Error,
    /// The client's own words: help, connection state, hints.
    Info,
}

/// One line of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The server's id of a room message (they are ordered by it); `None` for other lines.
    pub id: Option<u64>,
    /// Milliseconds since the epoch: the server's time for messages, the client's for events.
    pub time: u64,
    pub kind: Kind,
    /// Sanitized text; `\n` separates the lines of a multi-line message.
    pub text: String,
    /// Replayed from history (on join or catch-up) rather than live.
    pub history: bool,
    /// Mentions our nickname (or is a private message to us).
    pub mention: bool,
    /// Written by us.
    pub own: bool,
}

impl Entry {
    /// An entry for `text`, sanitized line by line.
    pub fn new(time: u64, kind: Kind, text: &str) -> Entry {
        let text = text.split('\n').map(|l| sanitize(l)).collect::<Vec<_>>().join("\n");
        Entry { id: None, time, kind, text, history: false, mention: false, own: false }
    }

    /// Whether it counts as unread activity (chat, not joins and notices).
    pub fn is_chat(&self) -> bool {
        matches!(self.kind, Kind::Message { .. } | Kind::Action { .. } | Kind::Private { .. })
    }
}

/// A member of a room, as the member list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub nick: Nick,
    /// Sanitized away reason.
    pub away: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Buffer {
    pub target: Target,
    pub entries: VecDeque<Entry>,
    /// Keyed by the folded nick (the server's notion of sameness), so the list is sorted
    /// case-insensitively.
    pub members: BTreeMap<String, Member>,
    /// Sanitized topic.
    pub topic: Option<String>,
    /// Whether we are in the room (false after `/part` of the last room, which stays open).
    pub joined: bool,
    /// An end-to-end encrypted room (as the E2E layer says: its own group state wins over the
    /// server's claim).
    pub e2e: bool,
    /// Replayed messages shown since the last end of history (duplicates not counted).
    pub replayed: u32,
    /// Chat lines that arrived while another buffer was shown.
    pub unread: u32,
    /// A mention or private message arrived while another buffer was shown.
    pub mentioned: bool,
    /// Lines that do not count as unread (our own private message, sent with `/msg` from
    /// another buffer) arrived while another buffer was shown: listed in the status bar
    /// without a count, so a conversation opened in the background can be found.
    pub unseen: bool,
    /// Rows scrolled up from the bottom; 0 follows new lines.
    pub scroll: usize,
    /// Chat lines that arrived while scrolled up ("new messages below").
    pub below: u32,
}

impl Buffer {
    pub fn new(target: Target) -> Buffer {
        Buffer {
            target,
            entries: VecDeque::new(),
            members: BTreeMap::new(),
            topic: None,
            joined: true,
            e2e: false,
            replayed: 0,
            unread: 0,
            mentioned: false,
            unseen: false,
            scroll: 0,
            below: 0,
        }
    }

    /// Adds `entry` at the end or, for a room message older than messages already shown
    /// (a catch-up), just before the first of them; returns its index. The oldest line goes
    /// when the buffer is full.
    pub fn push(&mut self, entry: Entry) -> usize {
        if self.entries.len() == SCROLLBACK {
            self.entries.pop_front();
        }
        let mut at = self.entries.len();
        if let Some(id) = entry.id {
            for (i, e) in self.entries.iter().enumerate().rev() {
                match e.id {
                    Some(other) if other > id => at = i,
                    Some(_) => break,
                    None => {}
                }
            }
        }
        self.entries.insert(at, entry);
        at
    }

    pub fn add_member(&mut self, nick: Nick, away: Option<String>) {
        self.members.insert(nick.folded(), Member { nick, away });
    }

    pub fn remove_member(&mut self, nick: &Nick) -> bool {
        self.members.remove(&nick.folded()).is_some()
    }

    pub fn has_member(&self, nick: &Nick) -> bool {
        self.members.contains_key(&nick.folded())
    }

    /// Clears the unread markers (the buffer is being shown).
    pub fn mark_read(&mut self) {
        self.unread = 0;
        self.mentioned = false;
        self.unseen = false;
    }

    /// Whether the status bar lists it as having something not seen yet.
    pub fn has_activity(&self) -> bool {
        self.unread > 0 || self.mentioned || self.unseen
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_are_sanitized_line_by_line() {
        let e = Entry::new(0, Kind::Info, "a\u{1b}[2J\nb\u{7}\r");
        assert_eq!(e.text, "a␛[2J\nb␇␍");
    }

    fn message(id: u64) -> Entry {
        let mut e = Entry::new(id, Kind::Info, &id.to_string());
        e.id = Some(id);
        e
    }

    #[test]
    fn a_catch_up_places_missed_messages_by_id() {
        let mut b = Buffer::new(Target::Room(RoomName::lobby()));
        let mut seen = crate::catchup::Seen::default();
        for id in [1, 2, 3] {
            assert!(seen.see(id));
            b.push(message(id));
        }
        seen.start_catch_up(2);
        b.push(Entry::new(0, Kind::Info, "reconnected"));
        // Replay of the last messages (4 and 5 were missed), a live 9, then the history
        // answer from 3 on: each id once, in order.
        for id in [2, 3, 4, 5, 9, 4, 5, 6, 7, 8] {
            if seen.see(id) {
                b.push(message(id));
            }
        }
        let ids: Vec<String> = b.entries.iter().map(|e| e.text.clone()).collect();
        assert_eq!(ids, ["1", "2", "3", "reconnected", "4", "5", "6", "7", "8", "9"]);
    }

    #[test]
    fn scrollback_is_bounded() {
        let mut b = Buffer::new(Target::Query(Nick::parse("bob").unwrap()));
        for i in 0..SCROLLBACK + 10 {
            b.push(Entry::new(i as u64, Kind::Info, "x"));
        }
        assert_eq!(b.entries.len(), SCROLLBACK);
        assert_eq!(b.entries.front().unwrap().time, 10);
    }
}
