//! The TUI's state and its only way of changing: [`App::update`] takes one [`Event`] and
//! returns the [`Effect`]s the caller must carry out (send a message, reconnect later, ring
//! the bell, quit). No I/O happens here, and no clock is read: time arrives in events. So
//! every behaviour of the UI can be tested by feeding events and looking at the state, and
//! [`crate::ui::render`] draws that state without changing it.
//!
//! Layout:
//! - [`buffer`]: one room or private conversation: lines, members, unread, scroll.
//! - [`limits`]: every bound on what a server can make the UI hold (entry, buffer and total
//!   bytes, number of buffers, members), each with its overflow policy.
//! - [`editor`]: the input line and its history.
//! - [`complete`]: Tab completion.
//! - `keys`: key and mouse bindings.
//! - `submit`: what Enter does with the input line (commands, local checks, sending).
//! - `incoming`: server messages into buffers.
//! - `older`: scrollback into the past (PgUp at the top loads older pages from the server).
//! - [`search`]: Ctrl-R / `/search` in the buffer shown.
//! - [`notify`]: desktop notifications while the terminal is not focused.
//! - [`urls`]: `/url`, the buffer's last links; `/url N` opens one with `url_command`.
//! - `conn`: connection state: loss, reconnect with backoff, catch-up, quitting; the rooms'
//!   catch-up, the messages awaiting acknowledgement and the reconnection schedule are the
//!   connection core's ([`crate::core`]), shared with line mode.
//!
//! Private messages get a buffer per conversation (like an IRC query window), named after the
//! other user and opened by the first message either way; text typed there is sent with
//! `msg`; `/query NICK` opens one and shows it. A private message we send from another buffer
//! (`/msg`) is echoed there (`-> │ bob: text`) and marks the conversation in the status bar.
//! Notices that belong to no room (errors, `/whois`, `/list`, `/help`, and `/who`'s answer)
//! go to the buffer being shown. Only a room we are in, or are joining, gets a buffer.

pub mod buffer;
pub mod complete;
mod conn;
pub mod editor;
mod incoming;
mod keys;
pub mod limits;
pub mod notify;
mod older;
pub mod search;
mod submit;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_daily;
pub mod urls;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chatao_proto::{Cid, ClientMsg, Limits, Nick, RoomName, ServerMsg, sanitize};
use chrono::FixedOffset;

use crate::core::Core;
use crate::net::{NetEvent, SendError, Welcome};
use crate::trust::Trusted;
use crate::ui;
use buffer::{Buffer, Entry, Kind, Target};
use chatao_proto::Fingerprint;
use complete::Completion;
use editor::Editor;

pub use conn::{Conn, QUIT_TIMEOUT};
pub use keys::KEYS;

/// Settings that do not change while the client runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The servers, as the user reads them (`host:port`); never empty. Reconnection goes
    /// round them ([`crate::servers`]).
    pub servers: Vec<String>,
    /// The index of the server of the first connection.
    pub first: usize,
    /// Ring the terminal bell on mentions and private messages.
    pub bell: bool,
    /// How timestamps are shown.
    pub zone: Zone,
    /// Desktop notifications ([`notify`]).
    pub notify: notify::NotifySettings,
    /// Ignores, highlight words, hidden joins/parts (the config file's; [`crate::filter`]).
    pub filters: crate::filter::Filters,
    /// Times with seconds in the time column (the config file's `timestamp = "%H:%M:%S"`;
    /// unset: `HH:MM`).
    pub seconds: bool,
    /// The config file's `[theme]` colours (`ui/style.rs`'s styles otherwise).
    pub theme: crate::config::Theme,
    /// Chat logs on (`[logs] enabled`): each event shown is handed out as [`Effect::Log`].
    pub chat_log: bool,
    /// The program (and its options) that opens a link for `/url N` (the config file's
    /// `url_command`), run by the caller for [`Effect::OpenUrl`]; empty: links are only shown.
    pub url_command: Vec<String>,
}

/// The time zone of displayed timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The system's local time.
    Local,
    /// A fixed offset (UTC in tests, so snapshots do not depend on the machine).
    Fixed(FixedOffset),
}

/// Everything that can happen to the UI.
#[derive(Debug)]
pub enum Event {
    /// A key, a paste, the mouse, a resize.
    Term(crossterm::event::Event),
    /// From the network actor.
    Net(NetEvent),
    /// The clock: sent every second, and before the other events are handled.
    Tick { now: Instant, wall_ms: u64 },
    /// A reconnection asked for by [`Effect::Connect`] succeeded.
    Connected(Box<Welcome>),
    /// A reconnection failed; `retry` when the failure may be temporary.
    ConnectFailed { reason: String, retry: bool },
    /// [`Effect::Send`] could not queue its message `msg` (`None`: an [`Effect::Request`]).
    SendFailed { error: SendError, restore: Option<String>, msg: Option<ClientMsg> },
}

/// What the caller must do after an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Queue `msg` without waiting; on failure answer with [`Event::SendFailed`] carrying
    /// `restore` (the input line it came from, to give back to the user).
    Send { msg: ClientMsg, restore: Option<String> },
    /// Connect again as `nick` to server `server` (an index in [`Config::servers`]) after
    /// `after`, answering with [`Event::Connected`] or [`Event::ConnectFailed`]. Replaces any
    /// pending reconnection.
    Connect { after: Duration, nick: String, server: usize },
    /// Hand a request to the E2E layer (`/remove`, `/safety`).
    Request(crate::e2e::Request),
    /// Ring the terminal bell.
    Bell,
    /// Clear and redraw the whole screen (Ctrl-L).
    Redraw,
    /// Show a desktop notification (the terminal's, and the command if one is set), as
    /// [`Config::notify`] says. Everything in it is cleaned already.
    Notify(notify::Notification),
    /// Write `msg` (shown: not a duplicate, not an ignored person's) to the chat log
    /// ([`crate::chatlog::ChatLog::event`]); `e2e`: it is in an end-to-end encrypted room.
    Log { msg: ServerMsg, e2e: bool },
    /// Write the ignore list `entries` to `path` (`ignores.toml`; [`crate::config::save_ignores`]).
    SaveIgnores { path: std::path::PathBuf, entries: Vec<String> },
    /// Run [`Config::url_command`] with this link target as one more argument (`/url N`).
    /// The target passed [`crate::ui::links::target`] and is `http://` or `https://`
    /// ([`urls::openable`]): printable ASCII, never an option.
    OpenUrl(String),
    /// Restore the terminal and exit.
    Quit,
}

/// The whole state of the UI.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// Our nickname, as the server knows it.
    pub me: Nick,
    /// The server's software (sanitized) and key fingerprint.
    pub server: String,
    pub server_fingerprint: Fingerprint,
    pub limits: Limits,
    pub conn: Conn,
    /// Never empty: the last room stays open (not joined) after `/part`.
    pub buffers: Vec<Buffer>,
    /// Index of the buffer shown.
    pub current: usize,
    pub editor: Editor,
    pub completion: Option<Completion>,
    /// The member list is shown (F2), when the terminal is wide enough and in a room.
    pub show_members: bool,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    pub now: Instant,
    /// Wall clock in milliseconds since the epoch, for the client's own lines.
    pub wall_ms: u64,
    /// The last send found the outbox full.
    pub outbox_full: bool,
    /// The connection core: the rooms' catch-up, the messages awaiting acknowledgement (sent
    /// again after a reconnection), the reconnection schedule.
    pub core: Core,
    /// A hand-over to the actor found its outbox full: nothing more is handed over until the
    /// next tick.
    send_blocked: bool,
    /// Rooms seen in `/list` answers, for completion; at most [`limits::KNOWN_ROOMS`].
    pub known_rooms: BTreeSet<String>,
    /// A room we asked to join: the server's confirmation makes it current.
    pending_join: Option<RoomName>,
    /// Rooms named in `/who` requests not answered yet, oldest first: their `members` answer
    /// is shown in the buffer shown and opens no buffer (a join's `members` does).
    pending_who: Vec<RoomName>,
    /// The server we are (or were last) connected to: an index in [`Config::servers`].
    pub on: usize,
    /// Entries pushed so far: the clock of [`Buffer::active`].
    pushes: u64,
    /// The terminal has the focus (a terminal that never says otherwise has it).
    pub focused: bool,
    /// When the last notification was made ([`notify::NOTIFY_GAP`]).
    last_notify: Option<Instant>,
    /// A search in the buffer shown ([`search`]).
    pub search: Option<search::Search>,
    /// `/url N` has said how to make it open links (once, without `url_command`).
    url_hint_given: bool,
}

/// Whether `text` mentions `nick`: as a whole word, ignoring case.
pub fn mentions(text: &str, nick: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let hay = text.to_ascii_lowercase();
    let needle = nick.to_ascii_lowercase();
    hay.match_indices(&needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

impl App {
    /// The state right after the first `welcome`: `#lobby` open and current when the server
    /// put us there; else (a key that parted it, `--rooms`) the first room we join, whose
    /// buffer fills when the join is answered.
    pub fn new(
        config: Config,
        welcome: &Welcome,
        size: (u16, u16),
        now: Instant,
        wall_ms: u64,
    ) -> App {
        let first = config.first.min(config.servers.len().saturating_sub(1));
        let mut core = Core::new(welcome.nick.clone(), first);
        core.join_remembered(&welcome.rooms, welcome.fixed_rooms);
        let shown = match welcome.rooms.first() {
            Some(first) if !core.server_joins_lobby() => first.clone(),
            _ => RoomName::lobby(),
        };
        let mut app = App {
            config,
            me: welcome.nick.clone(),
            server: sanitize(&welcome.server).into_owned(),
            server_fingerprint: welcome.server_fingerprint.clone(),
            limits: welcome.limits,
            conn: Conn::Connected,
            buffers: vec![Buffer::new(Target::Room(shown))],
            current: 0,
            editor: Editor::default(),
            completion: None,
            show_members: true,
            size,
            now,
            wall_ms,
            outbox_full: false,
            core,
            send_blocked: false,
            known_rooms: BTreeSet::new(),
            pending_join: None,
            pending_who: Vec::new(),
            on: first,
            pushes: 0,
            focused: true,
            last_notify: None,
            search: None,
            url_hint_given: false,
        };
        let text = format!(
            "connected to {} as {} ({}, server key {})",
            app.server_name(),
            app.me,
            app.server,
            app.server_fingerprint
        );
        app.info(&text);
        match &welcome.trusted {
            Trusted::NewlyPinned(file) => {
                let text = format!(
                    "first connection to this server: its key is now pinned in {}",
                    file.display()
                );
                app.info(&text);
            }
            Trusted::PinnedAsSibling { sibling, file } => {
                let text = format!(
                    "first connection to this server: its key is the one pinned for {sibling}, \
                     of the same list; now pinned for it too in {}",
                    file.display()
                );
                app.info(&text);
            }
            _ => {}
        }
        app.info("type /help for commands and keys");
        app
    }

    /// Applies one event; returns what the caller must do.
    pub fn update(&mut self, event: Event) -> Vec<Effect> {
        let mut effects = match event {
            Event::Term(ev) => self.on_term(ev),
            Event::Net(NetEvent::Msg(mut msg)) => {
                limits::bound_server_msg(&mut msg);
                let effects = self.on_server(msg);
                self.bound_members();
                while self.known_rooms.len() > limits::KNOWN_ROOMS {
                    self.known_rooms.pop_last();
                }
                effects
            }
            Event::Net(NetEvent::Unsent(msgs)) => self.on_unsent(msgs),
            Event::Net(NetEvent::Closed(closed)) => self.on_closed(closed),
            Event::Net(NetEvent::E2e { text, warning }) => self.on_e2e(&text, warning),
            Event::Tick { now, wall_ms } => self.on_tick(now, wall_ms),
            Event::Connected(welcome) => self.on_connected(*welcome),
            Event::ConnectFailed { reason, retry } => self.on_connect_failed(&reason, retry),
            Event::SendFailed { error, restore, msg } => self.on_send_failed(error, restore, msg),
        };
        effects.extend(self.flush(None));
        if let Some((path, entries)) = self.config.filters.unsaved() {
            effects.push(Effect::SaveIgnores { path, entries });
        }
        effects
    }

    /// What the core has to send now, as effects; `typed`: the id of a message just typed and
    /// the input line it came from, given back if it cannot be handed over.
    fn flush(&mut self, typed: Option<(Cid, String)>) -> Vec<Effect> {
        let mut effects = vec![];
        if !self.is_connected() || self.send_blocked {
            return effects;
        }
        let now = self.now;
        while let Some(msg) = self.core.pop_send(now) {
            let restore = match &typed {
                Some((cid, text)) if crate::core::cid_of(&msg) == Some(*cid) => Some(text.clone()),
                _ => None,
            };
            effects.push(Effect::Send { msg, restore });
        }
        effects
    }

    /// The server we are (or were last) connected to, as the user reads it.
    pub fn server_name(&self) -> &str {
        self.config.servers.get(self.on).map(String::as_str).unwrap_or("")
    }

    pub fn current_buffer(&self) -> &Buffer {
        &self.buffers[self.current]
    }

    /// The room shown, if the buffer shown is a room.
    pub fn current_room(&self) -> Option<&RoomName> {
        self.current_buffer().target.room()
    }

    /// The member list's width when it is to be shown: wide enough for the longest nickname
    /// whole, up to a third of the terminal (at least 18 columns); longer names are cut so that
    /// they stay distinct ([`ui::nicks`]).
    pub fn member_list_width(&self) -> Option<u16> {
        if !self.show_members || self.current_room().is_none() {
            return None;
        }
        let widest = self.current_buffer().members.values().map(ui::members::row_width);
        let most = usize::from(self.size.0 / 3).max(18);
        Some((widest.max().unwrap_or(0) + 2).clamp(8, most) as u16)
    }

    /// The message pane's size with the current layout.
    pub fn pane_size(&self) -> (u16, u16) {
        let area = ratatui::layout::Rect::new(0, 0, self.size.0, self.size.1);
        let pane = ui::areas(area, self.member_list_width()).pane;
        (pane.width, pane.height)
    }

    /// Where day-change lines go, as of now ([`ui::messages::day_change`]).
    pub fn days(&self) -> ui::messages::Days {
        let days = ui::messages::Days::new(self.config.zone, self.wall_ms);
        ui::messages::Days { seconds: self.config.seconds, ..days }
    }

    /// Index of the buffer for `name` (room or nick).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.buffers.iter().position(|b| b.target.is(name))
    }

    /// Index of `room`'s buffer, opened if needed.
    fn room_buffer(&mut self, room: &RoomName) -> usize {
        if let Some(i) = self.find(room.as_str()) {
            return i;
        }
        self.open(Target::Room(room.clone()))
    }

    /// Opens a buffer for `target` and returns its index; at [`limits::MAX_BUFFERS`] the least
    /// recently active buffer other than the one shown is closed first, and the buffer shown
    /// says so.
    fn open(&mut self, target: Target) -> usize {
        if self.buffers.len() >= limits::MAX_BUFFERS {
            let current = self.current;
            let oldest = (0..self.buffers.len())
                .filter(|&i| i != current)
                .min_by_key(|&i| self.buffers[i].active);
            if let Some(i) = oldest {
                let name = self.buffers[i].target.name().to_owned();
                self.close(i);
                let limit = limits::MAX_BUFFERS;
                self.info(&format!("closed {name}: too many buffers open (limit {limit})"));
            }
        }
        self.buffers.push(Buffer::new(target));
        self.buffers.len() - 1
    }

    /// Index of the private conversation with `nick`, opened if needed.
    fn query_buffer(&mut self, nick: &Nick) -> usize {
        if let Some(i) = self.buffers.iter().position(|b| b.target == Target::Query(nick.clone())) {
            return i;
        }
        if let Some(i) = self.find(nick.as_str()) {
            // Same nick in another case: follow the server's spelling.
            self.buffers[i].target = Target::Query(nick.clone());
            return i;
        }
        self.open(Target::Query(nick.clone()))
    }

    /// Adds `entry` to buffer `i`. `activity`: it counts as unread and may ring the bell.
    /// While the buffer is scrolled up the view stays where it is and the line counts as
    /// "new below".
    fn push(&mut self, i: usize, entry: Entry, activity: bool) -> Vec<Effect> {
        let mut effects = vec![];
        let width = self.pane_size().0;
        let days = self.days();
        let shown = i == self.current;
        let b = &mut self.buffers[i];
        if activity && entry.is_chat() && !entry.own {
            if !shown {
                b.unread = b.unread.saturating_add(1);
                b.mentioned |= entry.mention;
            }
            if entry.mention && self.config.bell {
                effects.push(Effect::Bell);
            }
        }
        if activity && entry.mention && !entry.own {
            effects.extend(self.notification(i, &entry));
        }
        let b = &mut self.buffers[i];
        let chat = entry.is_chat();
        self.pushes += 1;
        b.active = self.pushes;
        if (activity || chat) && b.marker_pending {
            // Something new since the user left: the read marker goes above it. Scrolled up,
            // the view stays on the same lines: the old marker's row goes (counted if it was
            // below the view) and the new one comes below.
            if b.scroll > 0
                && let Some(old) = b.marker()
            {
                let below: usize = (old + 1..b.entries.len())
                    .map(|j| ui::messages::entry_height(b, j, width, days))
                    .sum();
                if below < b.scroll {
                    b.scroll -= 1;
                }
            }
            let before = b.entries.len();
            b.place_marker();
            if b.scroll > 0 && b.entries.len() >= before {
                b.scroll += 1;
            }
        }
        let Some(at) = b.push(entry) else { return effects };
        if b.scroll > 0 {
            if chat {
                b.below = b.below.saturating_add(1);
            }
            b.scroll += ui::messages::entry_height(b, at, width, days);
            // An entry placed before others (a catch-up) may add or remove the day-change line
            // of the one after it.
            if let Some(next) = b.entries.get(at + 1) {
                let old = at.checked_sub(1).and_then(|p| b.entries.get(p));
                let had = ui::messages::day_change(old, next, days).is_some();
                let has = ui::messages::day_change(b.entries.get(at), next, days).is_some();
                b.scroll = (b.scroll + usize::from(has)).saturating_sub(usize::from(had));
            }
        }
        self.bound_total();
        effects
    }

    /// Keeps the member lists together within [`limits::TOTAL_MEMBERS`]: the least recently
    /// active buffer's list (never the one shown) is cleared, again until the total fits.
    fn bound_members(&mut self) {
        let mut total: usize = self.buffers.iter().map(|b| b.members.len()).sum();
        while total > limits::TOTAL_MEMBERS {
            let current = self.current;
            let oldest = (0..self.buffers.len())
                .filter(|&i| i != current && !self.buffers[i].members.is_empty())
                .min_by_key(|&i| self.buffers[i].active);
            let Some(i) = oldest else { break };
            let b = &mut self.buffers[i];
            total -= b.members.len();
            b.members.clear();
            let text = format!(
                "member list of {} not kept (memory limit); /who {} lists it",
                b.target.name(),
                b.target.name()
            );
            self.note(i, Kind::Info, &text);
        }
    }

    /// Bytes held by all buffers' entries.
    pub fn scrollback_bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.bytes).sum()
    }

    /// Keeps all buffers together within [`limits::TOTAL_BYTES`]: the oldest entry of the
    /// largest buffer goes, again until the total fits (each buffer keeps its newest entry).
    fn bound_total(&mut self) {
        let mut total = self.scrollback_bytes();
        while total > limits::TOTAL_BYTES {
            let largest =
                self.buffers.iter_mut().filter(|b| b.entries.len() > 1).max_by_key(|b| b.bytes);
            let Some(b) = largest else { break };
            let before = b.bytes;
            b.drop_oldest();
            total -= before - b.bytes;
        }
    }

    /// An event line (not chat) in buffer `i`, at the client's time.
    fn note(&mut self, i: usize, kind: Kind, text: &str) {
        let entry = Entry::new(self.wall_ms, kind, text);
        self.push(i, entry, false);
    }

    /// A line from the client itself in the buffer shown.
    fn info(&mut self, text: &str) {
        self.note(self.current, Kind::Info, text);
    }

    fn error(&mut self, text: &str) {
        self.note(self.current, Kind::Error, text);
    }

    /// Shows buffer `i`. The one left gets its read marker before what comes next.
    pub fn switch_to(&mut self, i: usize) {
        if i < self.buffers.len() {
            if i != self.current {
                self.buffers[self.current].marker_pending = true;
                self.search = None;
            }
            self.current = i;
            self.buffers[i].mark_read();
            self.buffers[i].marker_pending = false;
        }
    }

    /// Scrolls the buffer shown by `rows` (positive: up, into the past).
    fn scroll(&mut self, rows: isize) {
        let (width, height) = self.pane_size();
        let days = self.days();
        let b = &mut self.buffers[self.current];
        let total = ui::messages::total_height(b, width, days);
        let max = total.saturating_sub(usize::from(height));
        b.scroll = b.scroll.saturating_add_signed(rows).min(max);
        if b.scroll == 0 {
            b.below = 0;
        }
        if rows > 0 && b.scroll == max {
            // At the top: the page before it, from the server.
            self.load_older();
        }
    }

    /// Closes buffer `i`, keeping at least one open.
    fn close(&mut self, i: usize) {
        if self.buffers.len() == 1 {
            return;
        }
        self.buffers.remove(i);
        if self.current > i || self.current == self.buffers.len() {
            self.current = self.current.saturating_sub(1);
        }
        self.buffers[self.current].mark_read();
    }

    /// Every nick we know: room members and the other ends of conversations.
    fn known_nicks(&self) -> Vec<&str> {
        let mut nicks: Vec<&str> = self
            .buffers
            .iter()
            .flat_map(|b| {
                let query = match &b.target {
                    Target::Query(n) => Some(n.as_str()),
                    Target::Room(_) => None,
                };
                b.members.values().map(|m| m.nick.as_str()).chain(query)
            })
            .filter(|n| *n != self.me.as_str())
            .collect();
        nicks.sort_unstable();
        nicks.dedup();
        nicks
    }
}
