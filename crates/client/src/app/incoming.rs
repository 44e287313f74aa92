//! Server messages into buffers: chat lines, joins and departures, member lists, topics and
//! answers to requests. Every string from the network is sanitized here or in
//! [`Entry::new`] before it is stored.

use chatao_proto::{LeaveReason, MessageKind, RoomName, ServerMsg, sanitize};

use super::buffer::{Entry, Kind};
use super::{App, Effect, mentions};
use crate::core::{Ack, Show};

/// Members named in a `members` notice; larger rooms get a count.
const MEMBERS_LISTED: usize = 30;

/// What a partial member list says besides the names: how many there are, and how to see more.
fn partial_note(
    room: &RoomName,
    shown: usize,
    total: Option<u32>,
    next: Option<&chatao_proto::Nick>,
) -> Option<String> {
    let total = total?;
    Some(match next {
        Some(next) => {
            format!("{room}: {shown} of {total} members listed; more: /who {room} {next}")
        }
        None => format!(
            "{room}: {shown} of {total} members listed (the recently active); all: /who {room}"
        ),
    })
}

/// The line answering `/who`. The server answers an empty list both for a room that does not
/// exist and for one nobody is in (rooms exist while someone is in them; docs/PROTOCOL.md
/// `who`), so an empty plain room is "no such room"; an E2E room the server knows of is one.
fn who_answer(room: &RoomName, members: &[chatao_proto::Member], e2e: bool) -> String {
    if members.is_empty() {
        return if e2e {
            format!("[E2E] {room}: nobody is online in this end-to-end encrypted room")
        } else {
            format!("no such room {room}: nobody is in it")
        };
    }
    // A quiet session (a bot) is marked, as the server marks it (issue 22).
    let mut names: Vec<String> = members
        .iter()
        .map(|m| {
            // A room operator is @nick (issue 19).
            let at = if m.op { "@" } else { "" };
            if m.bot { format!("{at}{} [bot]", m.nick) } else { format!("{at}{}", m.nick) }
        })
        .collect();
    names.sort_by_key(|n| n.to_ascii_lowercase());
    let more = names.len().saturating_sub(MEMBERS_LISTED);
    names.truncate(MEMBERS_LISTED);
    let s = if members.len() == 1 { "" } else { "s" };
    let mark = if e2e { "[E2E] " } else { "" };
    let mut text = format!("{mark}{room}: {} member{s}: {}", members.len(), names.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

impl App {
    pub(super) fn on_server(&mut self, msg: ServerMsg) -> Vec<Effect> {
        // Which messages were shown, and which of ours are acknowledged: the core's.
        let heard = self.core.observe(&msg, self.now);
        // An ignored person's message: not drawn, counted, notified or logged (crate::filter).
        if self.config.filters.ignored(self.me.as_str(), &msg, self.now) {
            return vec![];
        }
        let log = (self.config.chat_log && !matches!(heard.show, Show::Duplicate | Show::Held))
            .then(|| {
                let room = match &msg {
                    ServerMsg::Message { room, .. }
                    | ServerMsg::Join { room, .. }
                    | ServerMsg::Leave { room, .. }
                    | ServerMsg::Topic { room, .. } => Some(room.as_str()),
                    _ => None,
                };
                let e2e = room.and_then(|r| self.find(r)).is_some_and(|i| self.buffers[i].e2e);
                Effect::Log { msg: msg.clone(), e2e }
            });
        let mut effects = self.on_shown(msg, heard);
        effects.extend(log);
        effects
    }

    /// `msg`, neither ignored nor yet logged, into the buffers.
    fn on_shown(&mut self, msg: ServerMsg, heard: crate::core::Heard) -> Vec<Effect> {
        let now = self.wall_ms;
        // It acknowledges what this client sent (not a copy of what another device of ours
        // sent: that has a client id this one never had in flight).
        let ours_from_here = matches!(heard.ack, Some(Ack::Delivered(_)));
        match &heard.ack {
            Some(Ack::Refused { msg: refused, code, message }) => {
                let what = crate::format::unsent(refused);
                self.error(&format!("not sent: {what}: {}: {code}", sanitize(message)));
            }
            Some(Ack::Kept { code, retry, .. }) => {
                let secs = retry.saturating_duration_since(self.now).as_secs();
                let code = *code;
                self.info(&format!("not confirmed yet ({code}): sending it again in {secs}s"));
            }
            Some(Ack::Delivered(_)) | None => {}
        }
        match msg {
            ServerMsg::Message { cid: _, room, id, time, from, kind, text, history } => {
                let i = self.room_buffer(&room);
                // A catch-up after a reconnect is news; the replay on a first join is not.
                let missed = match heard.show {
                    Show::Duplicate | Show::Held => return vec![],
                    Show::Print { missed } => missed,
                    Show::Quiet | Show::CaughtUp(_) => false,
                };
                let older = history && self.is_older(i, id);
                let b = &mut self.buffers[i];
                if history {
                    b.replayed = b.replayed.saturating_add(1);
                }
                let kind = match kind {
                    MessageKind::Normal => Kind::Message { from: from.clone() },
                    MessageKind::Action => Kind::Action { from: from.clone() },
                };
                let mut entry = Entry::new(time, kind, &text);
                entry.id = Some(id);
                entry.history = history;
                entry.own = from == self.me;
                entry.mention = !entry.own
                    && (mentions(&text, self.me.as_str())
                        || self.config.filters.highlighted(&text));
                if older {
                    return self.push_older(i, entry);
                }
                let activity = !history || missed;
                self.push(i, entry, activity)
            }
            ServerMsg::Private { time, from, to, kind, text, .. } => {
                if heard.show == Show::Duplicate {
                    return vec![];
                }
                let own = from == self.me;
                let other = if own { &to } else { &from };
                let i = self.query_buffer(other);
                let kind =
                    Kind::Private { from: from.clone(), action: kind == MessageKind::Action };
                let mut entry = Entry::new(time, kind, &text);
                entry.own = own;
                entry.mention = !own;
                if own && !ours_from_here {
                    // Sent from another device of ours: only the conversation shows it.
                    self.buffers[i].unseen = i != self.current;
                } else if own && i != self.current {
                    // Sent with /msg from another buffer: say so where it was typed, and mark
                    // the conversation so it can be found.
                    let action = matches!(entry.kind, Kind::Private { action: true, .. });
                    let mut echo =
                        Entry::new(time, Kind::Sent { to: other.clone(), action }, &text);
                    echo.own = true;
                    self.buffers[i].unseen = true;
                    let current = self.current;
                    self.push(current, echo, false);
                }
                self.push(i, entry, true)
            }
            ServerMsg::Join { room, nick, fingerprint } => {
                let i = self.room_buffer(&room);
                let b = &mut self.buffers[i];
                b.add_member(nick.clone(), None, false);
                let text = if nick == self.me {
                    b.joined = true;
                    format!("you joined {room}")
                } else {
                    format!("{nick} joined {room} ({})", fingerprint.short())
                };
                if !self.config.filters.hides_join(
                    self.me.as_str(),
                    room.as_str(),
                    nick.as_str(),
                    self.now,
                ) {
                    self.note(i, Kind::Join, &text);
                }
                if self.pending_join.as_ref() == Some(&room) {
                    self.pending_join = None;
                    self.switch_to(i);
                }
                vec![]
            }
            ServerMsg::Leave { room, nick, reason, message } => {
                let Some(i) = self.find(room.as_str()) else { return vec![] };
                if nick == self.me && reason == LeaveReason::Kicked {
                    // Kicked or banned from the room: its buffer stays, with the reason.
                    self.buffers[i].joined = false;
                    self.buffers[i].members.clear();
                    let why = message.map(|m| format!(": {}", sanitize(&m))).unwrap_or_default();
                    self.note(i, Kind::Leave, &format!("you were removed from {room}{why}"));
                    return vec![];
                }
                if nick == self.me {
                    self.buffers[i].joined = false;
                    self.buffers[i].members.clear();
                    self.note(i, Kind::Leave, &format!("you left {room}"));
                    let rooms_left = self.buffers.iter().filter(|b| b.target.room().is_some());
                    if rooms_left.count() > 1 {
                        self.close(i);
                    }
                    return vec![];
                }
                let b = &mut self.buffers[i];
                b.remove_member(&nick);
                let why = match reason {
                    LeaveReason::Quit => "quit",
                    LeaveReason::Part => "left",
                    LeaveReason::Lost => "connection lost",
                    LeaveReason::Dropped => "disconnected by the server",
                    LeaveReason::Kicked => "removed by an operator",
                    LeaveReason::Other => "gone",
                };
                let text = match message {
                    Some(m) => format!("{nick} left {room} ({why}: {})", sanitize(&m)),
                    None => format!("{nick} left {room} ({why})"),
                };
                if !self.config.filters.hides_join(
                    self.me.as_str(),
                    room.as_str(),
                    nick.as_str(),
                    self.now,
                ) {
                    self.note(i, Kind::Leave, &text);
                }
                vec![]
            }
            ServerMsg::Members { room, members, e2e, total, next, .. } => {
                let asked = match self.pending_who.iter().position(|r| *r == room) {
                    Some(k) => {
                        self.pending_who.remove(k);
                        true
                    }
                    None => false,
                };
                let joined = self.find(room.as_str()).filter(|&i| self.buffers[i].joined);
                if asked {
                    // The answer to /who: shown here; a room we are in also gets the fresh list
                    // (a page of a large room's list adds to what the buffer knows).
                    if let Some(i) = joined {
                        match total {
                            None => self.set_members(i, &members, e2e),
                            Some(_) => self.add_members(i, &members),
                        }
                    }
                    let text = who_answer(&room, &members, e2e);
                    self.notice(&text);
                    if let Some(text) = partial_note(&room, members.len(), total, next.as_ref()) {
                        self.notice(&text);
                    }
                    return vec![];
                }
                // A join's answer (ours, or the E2E layer's): the room's buffer, opened if new.
                // In a large room it lists the recent speakers only; others appear as they
                // speak (the server announces them then).
                let i = self.room_buffer(&room);
                self.set_members(i, &members, e2e);
                self.note(i, Kind::Notice, &who_answer(&room, &members, e2e));
                if let Some(text) = partial_note(&room, members.len(), total, next.as_ref()) {
                    self.note(i, Kind::Notice, &text);
                }
                vec![]
            }
            ServerMsg::Topic { room, text, by } => {
                let i = self.room_buffer(&room);
                let b = &mut self.buffers[i];
                b.topic = text.as_deref().map(|t| sanitize(t).into_owned());
                let line = match (&b.topic, by) {
                    (Some(t), Some(by)) => format!("{by} set the topic: {t}"),
                    (Some(t), None) => format!("topic: {t}"),
                    (None, Some(by)) => format!("{by} cleared the topic"),
                    (None, None) => format!("{room} has no topic"),
                };
                self.note(i, Kind::Notice, &line);
                vec![]
            }
            ServerMsg::RoomList { rooms, next } => {
                self.notice(&format!("{} rooms:", rooms.len()));
                let more = next.map(|n| format!("more rooms: /list {n}"));
                for r in rooms {
                    self.known_rooms.insert(r.room.to_string());
                    let mark = if r.e2e { " [E2E]" } else { "" };
                    let text = match r.topic {
                        Some(t) => {
                            format!("  {}{mark} ({}): {}", r.room, r.members, sanitize(&t))
                        }
                        None => format!("  {}{mark} ({})", r.room, r.members),
                    };
                    self.notice(&text);
                }
                if let Some(more) = more {
                    self.notice(&more);
                }
                vec![]
            }
            ServerMsg::NickChange { old, new } => {
                // Smart/all hide_joins_parts hides the line in a room's buffer as it would
                // hide their join there (per room, by who spoke there); a query with them
                // always shows it. Members and queries follow either way.
                let me = self.me.as_str();
                let text = format!("{old} is now known as {new}");
                let filters = &self.config.filters;
                for b in &mut self.buffers {
                    let in_query = b.target == super::buffer::Target::Query(old.clone());
                    if in_query {
                        b.target = super::buffer::Target::Query(new.clone());
                    }
                    if let Some(m) = b.members.remove(&old.folded()) {
                        b.add_member(new.clone(), m.away, m.bot);
                    } else if !in_query {
                        continue;
                    }
                    let hidden = match &b.target {
                        super::buffer::Target::Room(room) => {
                            filters.hides_rename_in(me, room.as_str(), old.as_str(), self.now)
                        }
                        super::buffer::Target::Query(_) => false,
                    };
                    if !hidden {
                        b.push(Entry::new(now, Kind::Notice, &text));
                    }
                }
                self.config.filters.rename(old.as_str(), new.as_str());
                if old == self.me {
                    self.me = new.clone();
                }
                vec![]
            }
            ServerMsg::Away { nick, reason } => {
                let reason = reason.map(|r| sanitize(&r).into_owned());
                for b in &mut self.buffers {
                    if let Some(m) = b.members.get_mut(&nick.folded()) {
                        m.away = reason.clone();
                    }
                }
                if nick == self.me {
                    match &reason {
                        Some(r) => self.notice(&format!("you are away: {r}")),
                        None => self.notice("you are back"),
                    }
                }
                vec![]
            }
            ServerMsg::Whois { nick, fingerprint, rooms, away, since, sessions } => {
                let rooms: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
                self.notice(&format!("{nick}: key {}", sanitize(&fingerprint)));
                self.notice(&format!("{nick}: in {}", rooms.join(" ")));
                let since = crate::ui::style::clock(since, self.config.zone);
                let on =
                    if sessions > 1 { format!(" on {sessions} sessions") } else { String::new() };
                self.notice(&format!("{nick}: online{on} since {since}"));
                if let Some(a) = away {
                    self.notice(&format!("{nick}: away: {}", sanitize(&a)));
                }
                vec![]
            }
            ServerMsg::Devices { nick, devices } => {
                self.notice(&format!("{nick}'s keys ({}):", devices.len()));
                let zone = self.config.zone;
                for d in &devices {
                    let when = |t| crate::ui::style::clock(t, zone);
                    self.notice(&format!("  {}", crate::format::device(d, when)));
                }
                vec![]
            }
            ServerMsg::Moderation { action, target, by, reason, until } => {
                let target = sanitize(&target);
                let verb = action.past_tense();
                let mut text = format!("{target} was {verb} by {by}");
                if let Some(until) = until {
                    let until = crate::ui::style::date_time(until, self.config.zone);
                    text.push_str(&format!(" until {until}"));
                }
                if let Some(reason) = reason {
                    text.push_str(&format!(": {}", sanitize(&reason)));
                }
                self.notice(&text);
                vec![]
            }
            ServerMsg::RoomModeration { room, action, target, by, reason, until } => {
                let i = self.room_buffer(&room);
                let op = match action {
                    chatao_proto::RoomAction::Op => Some(true),
                    chatao_proto::RoomAction::Deop => Some(false),
                    _ => None,
                };
                if let (Some(op), Some(nick)) =
                    (op, target.as_deref().and_then(|t| chatao_proto::Nick::parse(t).ok()))
                {
                    self.buffers[i].set_op(&nick, op);
                }
                let target = target.as_deref().map(sanitize);
                let mut text = action.describe(&room, target.as_deref(), &by);
                if let Some(until) = until {
                    let until = crate::ui::style::date_time(until, self.config.zone);
                    text.push_str(&format!(" until {until}"));
                }
                if let Some(reason) = reason {
                    text.push_str(&format!(": {}", sanitize(&reason)));
                }
                self.note(i, Kind::Notice, &text);
                vec![]
            }
            ServerMsg::HistoryEnd { room, count, before: Some(_) } => {
                // A page of older messages (scrollback), not a catch-up.
                if let Some(i) = self.find(room.as_str()) {
                    self.older_ended(i, count);
                }
                vec![]
            }
            ServerMsg::HistoryEnd { room, .. } => {
                // The server's count includes what we had already; say what was new.
                let Some(i) = self.find(room.as_str()) else { return vec![] };
                if self.older_unsupported(i) {
                    return vec![];
                }
                let b = &mut self.buffers[i];
                let catching_up = !matches!(heard.show, Show::Print { .. });
                let shown = std::mem::take(&mut b.replayed);
                let s = if shown == 1 { "" } else { "s" };
                match (shown, catching_up) {
                    (0, _) => {}
                    (n, true) => {
                        self.note(i, Kind::Notice, &format!("caught up: {n} missed message{s}"))
                    }
                    (n, false) => {
                        self.note(i, Kind::Notice, &format!("end of history ({n} message{s})"))
                    }
                }
                vec![]
            }
            ServerMsg::Error { cid, code, message, .. } => {
                // A refusal of one of our messages was said above, with its text.
                if cid.is_none() || heard.ack.is_none() {
                    self.error(&format!("{}: {code}", sanitize(&message)));
                }
                if self.pending_join.is_some() {
                    self.pending_join = None;
                }
                vec![]
            }
            // `welcome`, `bye`, `ping` and `pong` are the network actor's business.
            ServerMsg::Welcome { .. }
            | ServerMsg::Bye { .. }
            | ServerMsg::Ping { .. }
            | ServerMsg::Pong { .. }
            | ServerMsg::Unknown => vec![],
            // The E2E layer (`crate::e2e`) consumes these and hands the UI what they mean.
            ServerMsg::Sealed { .. }
            | ServerMsg::Invited { .. }
            | ServerMsg::JoinRequest { .. }
            | ServerMsg::KeyPackage { .. } => vec![],
            // Marked as the server's: only the E2E layer's own words (`on_e2e`) look like its.
            ServerMsg::Notice { text } => {
                self.notice(&format!("server: {text}"));
                vec![]
            }
        }
    }

    /// What this client's E2E layer says (never the server: see [`NetEvent::E2e`]). Its
    /// warnings (forged or changed keys) must not be missed; a notice about one room (they
    /// start with the room's name) goes to that room's buffer, when it has one.
    pub(super) fn on_e2e(&mut self, text: &str, warning: bool) -> Vec<super::Effect> {
        if warning {
            self.error(&format!("[e2e] WARNING: {text}"));
            return if self.config.bell { vec![super::Effect::Bell] } else { vec![] };
        }
        let first = text.split([' ', ':']).next().unwrap_or_default();
        let text = format!("[e2e] {text}");
        match RoomName::parse(first).ok().and_then(|r| self.find(r.as_str())) {
            Some(i) => self.note(i, Kind::Notice, &text),
            None => self.notice(&text),
        }
        vec![]
    }

    /// Buffer `i`'s member list (and E2E mark) from a `members` answer.
    /// Adds a page of members to what buffer `i` knows.
    fn add_members(&mut self, i: usize, members: &[chatao_proto::Member]) {
        let b = &mut self.buffers[i];
        for m in members {
            b.add_member(m.nick.clone(), m.away.as_deref().map(|a| sanitize(a).into()), m.bot);
            b.set_op(&m.nick, m.op);
        }
    }

    fn set_members(&mut self, i: usize, members: &[chatao_proto::Member], e2e: bool) {
        let b = &mut self.buffers[i];
        b.e2e = e2e;
        b.members.clear();
        for m in members {
            b.add_member(m.nick.clone(), m.away.as_deref().map(|a| sanitize(a).into()), m.bot);
            b.set_op(&m.nick, m.op);
        }
    }

    /// A server notice in the buffer shown.
    fn notice(&mut self, text: &str) {
        self.note(self.current, Kind::Notice, text);
    }
}
