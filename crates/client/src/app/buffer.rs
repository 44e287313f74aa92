//! One scrollback buffer: a room or a private conversation, with its lines, members, topic,
//! unread counters and scroll position.
//!
//! Every string stored here from the network has been through [`chatao_proto::sanitize`]
//! ([`Entry::new`] does it, line by line), so nothing in a buffer can carry a control
//! character or an escape sequence to the terminal; the only control left is `\n` between the
//! lines of a multi-line message, which the renderer splits on and never draws.
//!
//! Everything is bounded ([`super::limits`]): an entry keeps at most
//! [`MAX_ENTRY_BYTES`] and [`MAX_ENTRY_LINES`] of its text (the rest is counted in
//! [`Entry::omitted`] and drawn as a fold row), a buffer at most [`SCROLLBACK`] entries and
//! [`BUFFER_BYTES`] (the oldest go first, counted in [`Buffer::dropped`], which the pane shows
//! as a marker above the oldest line kept).

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};

use chatao_proto::{Nick, RoomName, sanitize};

pub use super::limits::SCROLLBACK;
use super::limits::{BUFFER_BYTES, MAX_ENTRY_BYTES, MAX_ENTRY_LINES, MAX_MEMBERS};

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
    /// The read marker: where the user left the buffer (switched away, or the terminal lost
    /// the focus); drawn as a rule across the pane, at most one per buffer
    /// ([`Buffer::place_marker`]).
    Marker,
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
    /// What the client did not keep of a text over [`MAX_ENTRY_BYTES`] or [`MAX_ENTRY_LINES`].
    pub omitted: Option<Omitted>,
    /// The rows the entry takes, as last laid out: a cache for the pane's arithmetic.
    pub rows: RowsCache,
}

/// The part of a text an entry did not keep ([`Entry::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Omitted {
    /// Lines wholly cut (the line cut in its middle is not counted).
    pub lines: usize,
    /// Bytes cut.
    pub bytes: usize,
}

/// How many rows an entry's text takes at one text width: laid out once, not at each scroll
/// or push. The text of an entry never changes after [`Entry::new`], so only the width keys
/// it. Not part of an entry's value: two entries are equal whatever their caches hold.
#[derive(Debug, Clone, Default)]
pub struct RowsCache(Cell<Option<(usize, usize)>>);

impl RowsCache {
    /// The rows at text width `width`, computed by `layout` if not known.
    pub fn get_or(&self, width: usize, layout: impl FnOnce() -> usize) -> usize {
        match self.0.get() {
            Some((w, rows)) if w == width => rows,
            _ => {
                let rows = layout();
                self.0.set(Some((width, rows)));
                rows
            }
        }
    }
}

impl PartialEq for RowsCache {
    fn eq(&self, _: &RowsCache) -> bool {
        true
    }
}

impl Eq for RowsCache {}

/// The start of `text` that an entry keeps (at most [`MAX_ENTRY_BYTES`], cut at a character
/// boundary, and [`MAX_ENTRY_LINES`] lines), and what it leaves.
fn keep(text: &str) -> (&str, Option<Omitted>) {
    let mut end = text.len().min(MAX_ENTRY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some((nl, _)) = text[..end].match_indices('\n').nth(MAX_ENTRY_LINES - 1) {
        end = nl;
    }
    if end == text.len() {
        return (text, None);
    }
    let rest = &text[end..];
    // The kept part's last line may go on in `rest`: only the newlines of `rest` start lines
    // that were wholly cut.
    let lines = rest.bytes().filter(|&b| b == b'\n').count();
    (&text[..end], Some(Omitted { lines, bytes: rest.len() }))
}

impl Entry {
    /// An entry for `text`, bounded ([`keep`]) then sanitized line by line.
    pub fn new(time: u64, kind: Kind, text: &str) -> Entry {
        let (kept, omitted) = keep(text);
        let text = kept.split('\n').map(|l| sanitize(l)).collect::<Vec<_>>().join("\n");
        Entry {
            id: None,
            time,
            kind,
            text,
            history: false,
            mention: false,
            own: false,
            omitted,
            rows: RowsCache::default(),
        }
    }

    /// What the entry counts for against [`BUFFER_BYTES`] and the client's total: its text's
    /// allocation and its own size (so that many empty lines count too).
    pub fn cost(&self) -> usize {
        std::mem::size_of::<Entry>() + self.text.capacity()
    }

    /// Whether it counts as unread activity (chat, not joins and notices).
    pub fn is_chat(&self) -> bool {
        matches!(self.kind, Kind::Message { .. } | Kind::Action { .. } | Kind::Private { .. })
    }
}

/// Where a room's scrollback into the past stands ([`crate::app::App`]'s PgUp at the top:
/// `history` with `before`, docs/PROTOCOL.md). Drawn as a line above the oldest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Older {
    /// Nothing asked, or the last page arrived: PgUp at the top asks for more.
    #[default]
    Idle,
    /// The page before id `before` was asked for ("loading older messages…"): the replayed
    /// messages below it are that page's.
    Loading { before: u64 },
    /// The server has nothing older ("start of history"): nothing more is asked.
    Start,
    /// The server answered as one from before `history`'s `before` (a `history_end` without
    /// it): it cannot page back, and nothing more is asked on this connection.
    Unsupported,
}

/// A member of a room, as the member list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub nick: Nick,
    /// Sanitized away reason.
    pub away: Option<String>,
    /// A quiet session (the server marks it `bot`): the list shows it marked.
    pub bot: bool,
    /// An operator of the room (the server marks it `op`; issue 19): the list shows `@nick`.
    pub op: bool,
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
    /// The sum of the entries' [`Entry::cost`].
    pub bytes: usize,
    /// Entries dropped from the start by a limit: shown as a marker above the oldest kept.
    pub dropped: u64,
    /// When something was last added, in the app's own order of pushes: which buffer is the
    /// least recently active ([`super::limits::MAX_BUFFERS`]).
    pub active: u64,
    /// Scrollback into the past: loading, or at the start.
    pub older: Older,
    /// The page under way ([`Older::Loading`]): its messages, held until its `history_end`
    /// says it is a page (then put above the others) and not a server's answer as for `since`
    /// (then dropped). At most [`super::older::OLDER_PAGE`] (what was asked for); more than
    /// that from the server are dropped.
    pub page: Vec<Entry>,
    /// The user left the buffer: the read marker goes before the next line that arrives.
    pub marker_pending: bool,
    /// Entries put above all others so far ([`Buffer::push_older`]): with [`Buffer::dropped`],
    /// what keeps a position in the buffer stable ([`crate::app::search`]).
    pub prepended: u64,
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
            bytes: 0,
            dropped: 0,
            active: 0,
            older: Older::Idle,
            page: Vec::new(),
            marker_pending: false,
            prepended: 0,
        }
    }

    /// Adds `entry` at the end or, for a room message older than messages already shown
    /// (a catch-up), just before the first of them; returns its index, or `None` if the limits
    /// dropped it at once (a catch-up older than everything in a full buffer). The oldest
    /// entries go while the buffer holds more than [`SCROLLBACK`] entries or [`BUFFER_BYTES`]
    /// (the newest stays, whatever its size: it is bounded by [`MAX_ENTRY_BYTES`]).
    pub fn push(&mut self, entry: Entry) -> Option<usize> {
        let at = self.insert(entry);
        self.bound(at)
    }

    /// Adds a room message older than everything held (a page of scrollback into the past,
    /// [`Older`]) at the top: after the older messages before it, before any other line (the
    /// client's notes at the top are newer than it). Bounded as [`Buffer::push`].
    pub fn push_older(&mut self, entry: Entry) -> Option<usize> {
        let id = entry.id.unwrap_or(0);
        let at = self
            .entries
            .iter()
            .position(|e| e.id.is_none_or(|other| other > id))
            .unwrap_or(self.entries.len());
        self.bytes += entry.cost();
        self.entries.insert(at, entry);
        self.prepended = self.prepended.saturating_add(1);
        self.bound(at)
    }

    /// Drops the oldest entries past the limits; `at`'s index after that, if it stayed.
    fn bound(&mut self, at: usize) -> Option<usize> {
        let mut gone = 0;
        while self.entries.len() > SCROLLBACK
            || (self.bytes > BUFFER_BYTES && self.entries.len() > 1)
        {
            self.drop_oldest();
            gone += 1;
        }
        at.checked_sub(gone)
    }

    /// Drops the oldest entry, counting it in [`Buffer::dropped`]; false if there is none.
    pub fn drop_oldest(&mut self) -> bool {
        match self.entries.pop_front() {
            Some(e) => {
                self.bytes = self.bytes.saturating_sub(e.cost());
                self.dropped = self.dropped.saturating_add(1);
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, entry: Entry) -> usize {
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
        self.bytes += entry.cost();
        self.entries.insert(at, entry);
        at
    }

    /// Lists `nick` (or updates its away reason and bot mark); past [`MAX_MEMBERS`] a new
    /// member is not listed.
    pub fn add_member(&mut self, nick: Nick, away: Option<String>, bot: bool) {
        let key = nick.folded();
        if self.members.len() >= MAX_MEMBERS && !self.members.contains_key(&key) {
            return;
        }
        let op = self.members.get(&key).is_some_and(|m| m.op);
        self.members.insert(key, Member { nick, away, bot, op });
    }

    /// Marks `nick`, if listed, as an operator of the room (`op`) or not.
    pub fn set_op(&mut self, nick: &Nick, op: bool) {
        if let Some(m) = self.members.get_mut(&nick.folded()) {
            m.op = op;
        }
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

    /// Moves the read marker to the end (under everything held), if the user left the buffer
    /// since it was last placed ([`Buffer::marker_pending`]); the old one goes. Called before a
    /// line is added, so the marker is drawn only when something came after it.
    pub fn place_marker(&mut self) {
        if !std::mem::take(&mut self.marker_pending) {
            return;
        }
        if let Some(e) = self.marker().and_then(|at| self.entries.remove(at)) {
            self.bytes = self.bytes.saturating_sub(e.cost());
        }
        // The previous line's time: no day-change line of its own.
        let Some(time) = self.entries.back().map(|e| e.time) else { return };
        let marker = Entry::new(time, Kind::Marker, "");
        self.bytes += marker.cost();
        self.entries.push_back(marker);
    }

    /// The index of the read marker, if there is one.
    pub fn marker(&self) -> Option<usize> {
        self.entries.iter().rposition(|e| e.kind == Kind::Marker)
    }

    /// The oldest room message held, by id.
    pub fn oldest_id(&self) -> Option<u64> {
        self.entries.iter().filter_map(|e| e.id).min()
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
        assert_eq!(b.dropped, 10, "the dropped lines are counted for the marker");
    }

    /// Issue 15, item 18: a text of 4 MiB, or of two million lines, is kept only up to the
    /// entry's limits, and what was cut is counted.
    #[test]
    fn an_entry_keeps_a_bounded_text_and_counts_the_rest() {
        let huge = "x".repeat(4 * 1024 * 1024);
        let e = Entry::new(0, Kind::Info, &huge);
        assert_eq!(e.text.len(), MAX_ENTRY_BYTES);
        assert_eq!(e.omitted, Some(Omitted { lines: 0, bytes: huge.len() - MAX_ENTRY_BYTES }));

        let lines = "\n".repeat(2_000_000);
        let e = Entry::new(0, Kind::Info, &lines);
        assert_eq!(e.text.split('\n').count(), MAX_ENTRY_LINES);
        let omitted = e.omitted.unwrap();
        assert_eq!(omitted.lines, 2_000_001 - MAX_ENTRY_LINES);
        assert_eq!(omitted.bytes, 2_000_000 - (MAX_ENTRY_LINES - 1));

        // A cut never splits a character, and an honest text is kept whole.
        let wide = "é".repeat(MAX_ENTRY_BYTES);
        let e = Entry::new(0, Kind::Info, &wide);
        assert_eq!(e.text.len(), MAX_ENTRY_BYTES);
        let e = Entry::new(0, Kind::Info, &"a\n".repeat(8000));
        assert_eq!(e.omitted, None);
    }

    #[test]
    fn a_buffer_is_bounded_by_bytes_and_counts_what_it_dropped() {
        let mut b = Buffer::new(Target::Query(Nick::parse("bob").unwrap()));
        let big = "y".repeat(MAX_ENTRY_BYTES);
        for i in 0..500 {
            b.push(Entry::new(i, Kind::Info, &big));
            assert!(b.bytes <= BUFFER_BYTES, "{} bytes after {i}", b.bytes);
            assert_eq!(b.bytes, b.entries.iter().map(Entry::cost).sum::<usize>());
        }
        let kept = b.entries.len() as u64;
        assert!(kept < 500 && kept >= (BUFFER_BYTES / (MAX_ENTRY_BYTES + 1024)) as u64);
        assert_eq!(b.dropped, 500 - kept);
        assert_eq!(b.entries.back().unwrap().time, 499, "the newest stays");
    }

    #[test]
    fn members_past_the_limit_are_not_listed() {
        let mut b = Buffer::new(Target::Room(RoomName::lobby()));
        for i in 0..MAX_MEMBERS + 10 {
            b.add_member(Nick::parse(&format!("n{i}")).unwrap(), None, false);
        }
        assert_eq!(b.members.len(), MAX_MEMBERS);
        let first = Nick::parse("n0").unwrap();
        b.add_member(first.clone(), Some("away".into()), false);
        assert_eq!(b.members[&first.folded()].away.as_deref(), Some("away"), "still updated");
        assert!(!b.has_member(&Nick::parse(&format!("n{}", MAX_MEMBERS + 5)).unwrap()));
    }
}
