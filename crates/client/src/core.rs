//! The connection core both modes drive (line mode and the TUI): what the client must remember
//! across connections, and what it must send after each one. Pure: no tokio, no sockets, no
//! terminal, no clock of its own (time comes in as arguments), so every rule here is tested by
//! feeding it events.
//!
//! It owns:
//! - **the rooms we are in, with their [`Seen`]**: which messages were shown, so that the
//!   catch-up after a reconnection shows each missed message once ([`Core::observe`],
//!   [`Core::on_connected`]);
//! - **the messages not yet acknowledged**: every `say`, `me` and `msg` gets a client id
//!   ([`Cid`], random, assigned once in [`Core::submit`] and kept across every re-send). It is
//!   kept until the server's echo carrying that id (a `message` or `private` from us, or the
//!   E2E layer's decrypted `sealed`) or a refusal carrying it (`error` with the cid) arrives.
//!   `unconfirmed`, `busy` and `unavailable` refusals are not final: the message is sent again,
//!   same id, after [`RETRY_FIRST`] (doubling up to [`RETRY_MAX`]) and after any reconnection.
//!   The server answers a repeated id with its first echo, so a re-send is never delivered
//!   twice;
//! - **the reconnection schedule** ([`crate::servers::delay`], [`crate::servers::next_server`]).
//!
//! What to send comes out of [`Core::pop_send`], one record at a time, so that a driver whose
//! outbox is full hands the record back ([`Core::unpop`]) and tries later. After a
//! (re)connection the order is: the catch-up requests, then every unacknowledged message again
//! (same id, in the order they were written), then what was waiting. At most [`MAX_UNACKED`]
//! records are sent and unacknowledged at once; the rest waits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chatao_proto::msg::MAX_UNACKED;
use chatao_proto::{Cid, ClientMsg, ErrorCode, MAX_CID, Nick, RoomName, ServerMsg};

use crate::catchup::{HISTORY_PAGE, PageEnd, PrivateSeen, Resume, Resumed, Seen};
use crate::servers;

/// The first wait before a message refused with a temporary code (`unconfirmed`, `busy`,
/// `unavailable`) is sent again.
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two re-sends of a temporarily refused message.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Messages written and not yet handed to the network ([`Core::submit`]), beyond the
/// [`MAX_UNACKED`] in flight. Overflow policy: the core never drops one; the driver stops
/// taking input while [`Core::can_take`] is false (line mode stops reading stdin, the TUI
/// leaves the text in the input line), so the queue holds at most this many plus what one
/// step adds.
pub const WAITING: usize = 1000;
/// Rooms whose [`Seen`] the core keeps: far more than a server lets one join (50). Overflow
/// policy (only a hostile server names more): the oldest room we are not in is forgotten (a
/// message there would then show again).
pub const ROOMS_KEPT: usize = 1024;

/// A fresh client id: random, from 1 to [`MAX_CID`]. `None` only if the system's random
/// source fails (then the message goes without an id: delivered at most once by the old rules,
/// never acknowledged by id).
pub fn new_cid() -> Option<Cid> {
    let r = getrandom::u64().ok()?;
    Some(r % MAX_CID + 1)
}

/// The client id of a message that has one (`say`, `me`, `msg`, `sealed`).
pub fn cid_of(msg: &ClientMsg) -> Option<Cid> {
    match msg {
        ClientMsg::Say { cid, .. }
        | ClientMsg::Me { cid, .. }
        | ClientMsg::Msg { cid, .. }
        | ClientMsg::Sealed { cid, .. } => *cid,
        _ => None,
    }
}

/// `msg` with a new client id, if it is a kind that takes one and has none yet.
fn stamp(mut msg: ClientMsg) -> ClientMsg {
    if let ClientMsg::Say { cid, .. } | ClientMsg::Me { cid, .. } | ClientMsg::Msg { cid, .. } =
        &mut msg
        && cid.is_none()
    {
        *cid = new_cid();
    }
    msg
}

/// Whether a refusal with `code` leaves the message to be sent again: the protocol's
/// temporary codes, and `stale_epoch` (an end-to-end encrypted text sent at an epoch that has
/// moved on: sent again, the E2E layer encrypts it anew at the current one).
pub fn is_temporary(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unconfirmed | ErrorCode::Busy | ErrorCode::Unavailable | ErrorCode::StaleEpoch
    )
}

/// What to do with a server message, for the display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Show {
    /// Show it. `missed`: a room message sent while we were away (a catch-up's news).
    Print { missed: bool },
    /// A room message shown already: skip it.
    Duplicate,
    /// The end of one of a catch-up's replays, not its last.
    Quiet,
    /// The end of a catch-up, which showed this many missed messages. An ordered catch-up
    /// ([`Core::set_ordered`]) has messages it held back to show first, in order:
    /// [`Core::take_released`].
    CaughtUp(u32),
    /// A room message an ordered catch-up holds back until the pages before it are shown
    /// (it comes out of [`Core::take_released`] at the catch-up's end). Only with
    /// [`Core::set_ordered`].
    Held,
}

/// What a server message did to the messages awaiting acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Its echo arrived: delivered.
    Delivered(ClientMsg),
    /// Refused for good: it will not be sent again.
    Refused { msg: ClientMsg, code: ErrorCode, message: String },
    /// Refused for now (`unconfirmed`, `busy`, `unavailable`): sent again at `retry`.
    Kept { msg: ClientMsg, code: ErrorCode, retry: Instant },
}

/// What [`Core::observe`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub show: Show,
    pub ack: Option<Ack>,
}

/// A record handed to the network and not acknowledged yet.
#[derive(Debug, Clone)]
struct InFlight {
    msg: ClientMsg,
    /// `None` for a command (`join`, `nick`, ...): kept only to keep its place among the
    /// messages around it, and only while a message before it is unacknowledged.
    cid: Option<Cid>,
    /// For a temporarily refused message: when to send it again.
    retry: Option<Instant>,
    /// Temporary refusals so far (the backoff).
    refusals: u32,
    /// A command the lost connection reported never written ([`Core::on_unsent`]): sent again.
    unsent: bool,
}

#[derive(Debug, Clone)]
struct Room {
    /// Lower case.
    name: String,
    joined: bool,
    seen: Seen,
    /// Missed messages shown during the current catch-up.
    missed: u32,
    /// The highest id replayed since the last `history_end`: where the next page starts when
    /// a replay was a full one ([`HISTORY_PAGE`]).
    page_max: u64,
    /// An ordered catch-up under way ([`Core::set_ordered`]); it replaces `seen`'s own.
    resume: Option<Resume>,
    /// A request for older messages under way ([`Core::ask_older`]): its `before`. Replayed
    /// messages below it are that page's, shown without touching `seen` (they are older than
    /// anything it counts); its `history_end` carries the same `before`.
    older: Option<u64>,
}

/// The connection core. See the module's documentation.
#[derive(Debug)]
pub struct Core {
    me: Nick,
    connected: bool,
    /// In the order we first met them. At most [`ROOMS_KEPT`]; a room we left keeps its entry.
    rooms: Vec<Room>,
    /// Handed to the network, in order; the oldest first. At most [`MAX_UNACKED`].
    in_flight: VecDeque<InFlight>,
    /// Written, not yet handed to the network. See [`WAITING`].
    waiting: VecDeque<ClientMsg>,
    /// To send now, before anything waiting: catch-up requests and re-sends. Bounded by the
    /// rooms plus [`MAX_UNACKED`] (it is rebuilt, not appended to, at each connection).
    urgent: VecDeque<ClientMsg>,
    /// The catch-up requests of the last connection (a loss that reports them unsent must not
    /// get them sent twice: the next catch-up replaces them).
    catch_up: Vec<ClientMsg>,
    /// Private messages shown, by sender and id: a second copy (a re-send after a server
    /// crash) is a duplicate.
    privates: PrivateSeen,
    /// The reconnection schedule: which server we are (or were last) on, and how many
    /// attempts failed since the loss.
    on: usize,
    failures: u32,
    /// Catch-ups print in id order, holding back what comes early ([`Core::set_ordered`]).
    ordered: bool,
    /// Where to resume rooms not joined yet (from line mode's state file), by lower-case
    /// name: their `join` asks for what came after. At most [`ROOMS_KEPT`].
    places: std::collections::HashMap<String, u64>,
    /// What an ordered catch-up released at its end, to show now ([`Core::take_released`]).
    released: Vec<ServerMsg>,
    /// Whether the server joins us to the default room at `hello` (so that a reconnection
    /// catches it up with `history`, not `join`); false for a fixed-set session.
    server_joins_lobby: bool,
    /// A fixed set of rooms (`--rooms`) was joined ([`Core::join_remembered`]).
    fixed_joined: bool,
}

impl Core {
    /// A core for a session just welcomed as `me` on server `on` of the list.
    pub fn new(me: Nick, on: usize) -> Core {
        Core {
            me,
            connected: true,
            rooms: Vec::new(),
            in_flight: VecDeque::new(),
            waiting: VecDeque::new(),
            urgent: VecDeque::new(),
            catch_up: Vec::new(),
            privates: PrivateSeen::default(),
            on,
            failures: 0,
            ordered: false,
            places: std::collections::HashMap::new(),
            released: Vec::new(),
            server_joins_lobby: true,
            fixed_joined: false,
        }
    }

    /// Catch-ups show each room's missed messages in id order (line mode: a bot relays them
    /// in order): the answers to our own `history` and `join` requests are shown as they
    /// come, page after page, and whatever arrives early meanwhile (the default room's
    /// automatic replay, live messages) is held ([`Show::Held`]) and shown at the end, after
    /// them ([`Core::take_released`]). See [`Resume`].
    pub fn set_ordered(&mut self) {
        self.ordered = true;
    }

    /// Resumes from where an earlier run stopped: `places` are rooms (lower case) with the
    /// last message id shown there. The default room, which the server joined us to at
    /// `hello` (its replay of the newest messages is on its way), is caught up at once with
    /// `history` after its place, in order; each other room when it is joined (its `join`
    /// then asks for what came after its place). Call it before the first server message is
    /// observed. Implies [`Core::set_ordered`].
    pub fn resume_from(&mut self, places: Vec<(String, u64)>) {
        self.ordered = true;
        let lobby = RoomName::lobby();
        for (room, id) in places {
            if room == lobby.as_str() {
                let r = self.room(&lobby);
                r.seen.last_seen = Some(id);
                r.resume = Some(Resume::new(id, 1));
                let since = ClientMsg::History { room, since: id, limit: None, before: None };
                self.catch_up.push(since.clone());
                self.urgent.push_back(since);
            } else if self.places.len() < ROOMS_KEPT {
                self.places.insert(room, id);
            }
        }
    }

    /// The messages an ordered catch-up held back and has just released (at its
    /// [`Show::CaughtUp`]), in id order, to show before saying it caught up.
    pub fn take_released(&mut self) -> Vec<ServerMsg> {
        std::mem::take(&mut self.released)
    }

    /// Whether any room is still catching up (line mode's `ready` waits for none).
    pub fn any_catching_up(&self) -> bool {
        self.rooms.iter().any(|r| r.resume.is_some() || r.seen.catching_up())
    }

    pub fn me(&self) -> &Nick {
        &self.me
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The server we are (or were last) connected to.
    pub fn on(&self) -> usize {
        self.on
    }

    /// Whether more input may be taken ([`WAITING`]).
    pub fn can_take(&self) -> bool {
        self.waiting.len() < WAITING
    }

    /// Queues `msg` to be sent, with a new client id if it is a `say`, `me` or `msg`; returns
    /// the id. Nothing is dropped (see [`WAITING`] for the driver's side of the bound).
    pub fn submit(&mut self, msg: ClientMsg) -> Option<Cid> {
        let mut msg = stamp(msg);
        if let ClientMsg::Join { room, since } = &mut msg
            && since.is_none()
            && let Ok(name) = RoomName::parse(room)
            && let Some(id) = self.places.remove(name.as_str())
        {
            // A room with a place from an earlier run: what came after it, in order.
            *since = Some(id);
            let r = self.room(&name);
            r.seen.last_seen = r.seen.last_seen.max(Some(id));
            r.resume = Some(Resume::new(id, 0));
        }
        let cid = cid_of(&msg);
        self.waiting.push_back(msg);
        cid
    }

    /// True when nothing is waiting and nothing sent awaits its acknowledgement.
    pub fn all_acked(&self) -> bool {
        self.waiting.is_empty()
            && self.urgent.iter().all(|m| cid_of(m).is_none())
            && self.in_flight.iter().all(|f| f.cid.is_none())
    }

    /// Every message with an id not acknowledged yet, sent or waiting, in the order written.
    pub fn unacked(&self) -> Vec<ClientMsg> {
        let sent = self.in_flight.iter().filter(|f| f.cid.is_some()).map(|f| &f.msg);
        let waiting = self.waiting.iter().filter(|m| cid_of(m).is_some());
        sent.chain(waiting).cloned().collect()
    }

    /// Everything still to be delivered, for a final report: [`Core::unacked`] and the
    /// commands that were never sent. Empties the core.
    pub fn take_undelivered(&mut self) -> Vec<ClientMsg> {
        let out = self.unacked();
        self.in_flight.clear();
        self.waiting.clear();
        self.urgent.clear();
        out
    }

    /// The next record to hand to the network, if connected and one is due: first the urgent
    /// ones (catch-up, re-sends), then temporarily refused messages whose wait is over, then
    /// what waits, while fewer than [`MAX_UNACKED`] are in flight.
    pub fn pop_send(&mut self, now: Instant) -> Option<ClientMsg> {
        if !self.connected {
            return None;
        }
        for f in &mut self.in_flight {
            if f.retry.is_some_and(|at| at <= now) {
                f.retry = None;
                self.urgent.push_back(f.msg.clone());
            }
        }
        if let Some(msg) = self.urgent.pop_front() {
            return Some(msg);
        }
        if self.in_flight.len() >= MAX_UNACKED {
            return None;
        }
        let msg = self.waiting.pop_front()?;
        let cid = cid_of(&msg);
        // A command with nothing unacknowledged before it needs no place in the order.
        if cid.is_some() || !self.in_flight.is_empty() {
            self.in_flight.push_back(InFlight {
                msg: msg.clone(),
                cid,
                retry: None,
                refusals: 0,
                unsent: false,
            });
        }
        Some(msg)
    }

    /// `msg`, just taken from [`Core::pop_send`], could not be handed over (the outbox is
    /// full): it is the next one again.
    pub fn unpop(&mut self, msg: ClientMsg) {
        self.urgent.push_front(msg);
    }

    /// A message with an id, taken from [`Core::pop_send`] and then not handed over (the
    /// actor's outbox was full, or the actor was gone): handed over again from `now` on, in
    /// its place among the others.
    pub fn not_sent(&mut self, msg: &ClientMsg, now: Instant) {
        let Some(cid) = cid_of(msg) else { return };
        if let Some(f) = self.in_flight.iter_mut().find(|f| f.cid == Some(cid)) {
            f.retry = Some(now);
        }
    }

    /// Forgets message `cid`, which never left (its text goes back to the user).
    pub fn cancel(&mut self, cid: Cid) {
        self.in_flight.retain(|f| f.cid != Some(cid));
        self.waiting.retain(|m| cid_of(m) != Some(cid));
        self.urgent.retain(|m| cid_of(m) != Some(cid));
        while self.in_flight.front().is_some_and(|f| f.cid.is_none()) {
            self.in_flight.pop_front();
        }
    }

    /// Reconnection attempts failed since the connection was lost.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next temporarily refused message is due, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.in_flight.iter().filter_map(|f| f.retry).min()
    }

    /// Looks at a server message: what to show, and what it acknowledges. Keeps track of our
    /// rooms, our nickname and the catch-up.
    pub fn observe(&mut self, msg: &ServerMsg, now: Instant) -> Heard {
        let ack = self.acknowledge(msg, now);
        let show = match msg {
            ServerMsg::Message { room, id, history: true, .. }
                if self.room(room).older.is_some_and(|before| *id < before) =>
            {
                Show::Print { missed: false }
            }
            ServerMsg::Message { room, id, history, .. } => {
                let r = self.room(room);
                if *history {
                    r.page_max = r.page_max.max(*id);
                }
                if let Some(resume) = &mut r.resume {
                    match resume.see(*id, *history, msg) {
                        Resumed::Print => {
                            r.seen.last_seen = r.seen.last_seen.max(Some(*id));
                            r.missed = r.missed.saturating_add(1);
                            Show::Print { missed: true }
                        }
                        Resumed::Duplicate => Show::Duplicate,
                        Resumed::Held => Show::Held,
                    }
                } else if !r.seen.see(*id) {
                    Show::Duplicate
                } else {
                    let missed = r.seen.missed(*id);
                    if *history && missed {
                        r.missed = r.missed.saturating_add(1);
                    }
                    Show::Print { missed }
                }
            }
            ServerMsg::Private { from, cid: Some(cid), .. } => {
                match self.privates.see(from.as_str(), *cid) {
                    true => Show::Print { missed: false },
                    false => Show::Duplicate,
                }
            }
            ServerMsg::Join { room, nick, .. } if *nick == self.me => {
                self.room(room).joined = true;
                Show::Print { missed: false }
            }
            ServerMsg::Leave { room, nick, .. } if *nick == self.me => {
                self.room(room).joined = false;
                Show::Print { missed: false }
            }
            ServerMsg::HistoryEnd { room, before: Some(_), .. } => {
                self.room(room).older = None;
                Show::Print { missed: false }
            }
            ServerMsg::HistoryEnd { room, count, before: None } => {
                let connected = self.connected;
                let r = self.room(room);
                let page_max = std::mem::take(&mut r.page_max);
                let mut next_page = None;
                let mut released = None;
                let show = if let Some(resume) = &mut r.resume {
                    match resume.replay_ended(*count) {
                        PageEnd::Skipped => Show::Quiet,
                        PageEnd::More(since) => {
                            next_page = Some(since);
                            Show::Quiet
                        }
                        PageEnd::Done(rest) => {
                            r.seen.last_seen = r.seen.last_seen.max(Some(resume.printed));
                            r.resume = None;
                            let shown = rest
                                .iter()
                                .filter(|m| matches!(m, ServerMsg::Message { history: true, .. }));
                            let n = shown.count() as u32;
                            released = Some(rest);
                            Show::CaughtUp(std::mem::take(&mut r.missed).saturating_add(n))
                        }
                    }
                } else if r.seen.catching_up() {
                    if *count >= HISTORY_PAGE {
                        // A full page: more may be missing behind it.
                        r.seen.expect_another();
                        next_page = Some(page_max);
                    }
                    r.seen.replay_ended();
                    if r.seen.catching_up() {
                        Show::Quiet
                    } else {
                        Show::CaughtUp(std::mem::take(&mut r.missed))
                    }
                } else {
                    Show::Print { missed: false }
                };
                if let Some(rest) = released {
                    self.released = rest;
                }
                if let Some(since) = next_page
                    && connected
                {
                    let page = ClientMsg::History {
                        room: room.to_string(),
                        since,
                        limit: None,
                        before: None,
                    };
                    // One page request per room is remembered (the last), so a catch-up that
                    // never ends leaves the list bounded by the rooms.
                    self.catch_up.retain(
                        |m| !matches!(m, ClientMsg::History { room: r, .. } if r == room.as_str()),
                    );
                    self.catch_up.push(page.clone());
                    self.urgent.push_back(page);
                }
                show
            }
            ServerMsg::NickChange { old, new } => {
                if *old == self.me {
                    self.me = new.clone();
                }
                Show::Print { missed: false }
            }
            _ => Show::Print { missed: false },
        };
        Heard { show, ack }
    }

    /// Asks for the newest `limit` messages of `room` below id `before` (scrollback into the
    /// past), sent before anything waiting. False, and nothing asked, when not connected, when
    /// `room` is catching up (its replays are not over: ask again after) or when a request for
    /// it is under way already (one at a time per room, so the answer's messages are known by
    /// their ids). The answer's messages come out of [`Core::observe`] as `Print`, its end as
    /// a `history_end` with `before`; a lost connection forgets the request.
    pub fn ask_older(&mut self, room: &RoomName, before: u64, limit: u32) -> bool {
        if !self.connected || self.catching_up(room) {
            return false;
        }
        let r = self.room(room);
        if !r.joined || r.older.is_some() {
            return false;
        }
        r.older = Some(before);
        self.urgent.push_back(ClientMsg::History {
            room: room.to_string(),
            since: 0,
            limit: Some(limit),
            before: Some(before),
        });
        true
    }

    /// Whether a request for older messages of `room` is under way ([`Core::ask_older`]).
    pub fn asking_older(&self, room: &RoomName) -> bool {
        self.rooms.iter().any(|r| r.name == room.as_str() && r.older.is_some())
    }

    /// Whether `room` is catching up after a reconnect.
    pub fn catching_up(&self, room: &RoomName) -> bool {
        self.rooms
            .iter()
            .any(|r| r.name == room.as_str() && (r.seen.catching_up() || r.resume.is_some()))
    }

    fn room(&mut self, room: &RoomName) -> &mut Room {
        let i = match self.rooms.iter().position(|r| r.name == room.as_str()) {
            Some(i) => i,
            None => {
                if self.rooms.len() >= ROOMS_KEPT {
                    // A server naming endless rooms: forget the oldest one we are not in.
                    let gone = self.rooms.iter().position(|r| !r.joined).unwrap_or(0);
                    self.rooms.remove(gone);
                }
                self.rooms.push(Room {
                    name: room.as_str().to_owned(),
                    joined: false,
                    seen: Seen::default(),
                    missed: 0,
                    page_max: 0,
                    resume: None,
                    older: None,
                });
                self.rooms.len() - 1
            }
        };
        &mut self.rooms[i]
    }

    fn acknowledge(&mut self, msg: &ServerMsg, now: Instant) -> Option<Ack> {
        let (cid, refusal) = match msg {
            ServerMsg::Message { cid: Some(cid), from, .. }
            | ServerMsg::Private { cid: Some(cid), from, .. }
                if *from == self.me =>
            {
                (*cid, None)
            }
            ServerMsg::Error { cid: Some(cid), code, message, .. } => {
                (*cid, Some((*code, message)))
            }
            // A server older than client ids echoes without them, in the order it accepted
            // what we sent: the first message in flight with the same place and text is the
            // one echoed (so line mode does not wait for ever on such a server).
            ServerMsg::Message { cid: None, from, room, text, history: false, .. }
                if *from == self.me =>
            {
                (self.oldest_like(|m| matches!(m, ClientMsg::Say { room: r, text: t, .. } | ClientMsg::Me { room: r, text: t, .. } if r.eq_ignore_ascii_case(room.as_str()) && t == text))?, None)
            }
            ServerMsg::Private { cid: None, from, to, text, .. } if *from == self.me => (
                self.oldest_like(|m| {
                    matches!(m, ClientMsg::Msg { to: n, text: t, .. } if n.eq_ignore_ascii_case(to.as_str()) && t == text)
                })?,
                None,
            ),
            _ => return None,
        };
        let at = self.in_flight.iter().position(|f| f.cid == Some(cid))?;
        let ack = match refusal {
            Some((code, _)) if is_temporary(code) => {
                let f = &mut self.in_flight[at];
                let wait = RETRY_FIRST.saturating_mul(1 << f.refusals.min(5)).min(RETRY_MAX);
                f.refusals = f.refusals.saturating_add(1);
                let retry = now + wait;
                f.retry = Some(retry);
                // A re-send already queued for it waits for the new time instead.
                self.urgent.retain(|m| cid_of(m) != Some(cid));
                return Some(Ack::Kept { msg: f.msg.clone(), code, retry });
            }
            Some((code, message)) => {
                let f = self.in_flight.remove(at)?;
                Ack::Refused { msg: f.msg, code, message: message.clone() }
            }
            None => Ack::Delivered(self.in_flight.remove(at)?.msg),
        };
        // A re-send queued for it is no longer needed.
        self.urgent.retain(|m| cid_of(m) != Some(cid));
        // Commands kept only for their place go once nothing before them is unacknowledged.
        while self.in_flight.front().is_some_and(|f| f.cid.is_none()) {
            self.in_flight.pop_front();
        }
        Some(ack)
    }

    /// The id of the oldest message in flight that `like` accepts (for an echo without an id).
    fn oldest_like(&self, like: impl Fn(&ClientMsg) -> bool) -> Option<Cid> {
        self.in_flight.iter().find(|f| f.cid.is_some() && like(&f.msg)).and_then(|f| f.cid)
    }

    /// The lost connection reports `msgs` never written to the socket. Messages with an id are
    /// in flight already (sent again after the reconnection whatever happened); commands among
    /// those in flight are marked to be sent again in their place; other commands (the E2E
    /// layer's own, or ones handed over with nothing before them) go first of what waits.
    /// The last catch-up's requests are dropped: the next connection makes its own.
    pub fn on_unsent(&mut self, msgs: Vec<ClientMsg>) {
        let mut front = vec![];
        for msg in msgs {
            if cid_of(&msg).is_some() || self.catch_up.contains(&msg) {
                continue;
            }
            if matches!(
                msg,
                ClientMsg::Quit { .. } | ClientMsg::Ping { .. } | ClientMsg::Pong { .. }
            ) {
                continue;
            }
            match self.in_flight.iter_mut().find(|f| f.cid.is_none() && !f.unsent && f.msg == msg) {
                Some(f) => f.unsent = true,
                None => front.push(msg),
            }
        }
        for msg in front.into_iter().rev() {
            self.waiting.push_front(msg);
        }
    }

    /// The connection was lost (or the server is restarting): returns the first reconnection
    /// attempt among `servers` servers, `(wait, server)`. Nothing in flight is forgotten.
    pub fn on_lost(&mut self, servers: usize) -> (Duration, usize) {
        self.connected = false;
        self.urgent.clear();
        for r in &mut self.rooms {
            r.older = None;
        }
        self.failures = 0;
        self.attempt(servers)
    }

    /// A reconnection attempt failed (for a reason worth retrying): the next one.
    pub fn on_connect_failed(&mut self, servers: usize) -> (Duration, usize) {
        self.failures = self.failures.saturating_add(1);
        self.attempt(servers)
    }

    fn attempt(&self, servers: usize) -> (Duration, usize) {
        (
            servers::delay(self.failures, servers),
            servers::next_server(self.on, self.failures, servers),
        )
    }

    /// The connection ended for good: nothing more is sent.
    pub fn on_closed_for_good(&mut self) {
        self.connected = false;
        self.urgent.clear();
    }

    /// Welcomed (again) as `me` on `server`. Queues the records to send, in order: the
    /// catch-up of every room we were in (`#lobby`, which the server joined us to at `hello`
    /// with a replay of its latest messages, with `history` since the last message shown; the
    /// others with `join` since theirs), then every message in flight again (same id, in
    /// order, with the commands among them the loss reported unsent), then what waits.
    pub fn on_connected(&mut self, me: Nick, server: usize) {
        self.connected_again(me, server);
    }

    /// Joins the rooms `welcome` says the server remembers our key in (issue 19: membership
    /// that survives), after [`Core::new`] (and [`Core::resume_from`]) or
    /// [`Core::on_connected`]: each room not joined already (those are caught up by
    /// `on_connected`) gets a `join`, with `since` its place from an earlier run when there is
    /// one, the ordinary replay otherwise. The server joined us to the default room itself
    /// when `rooms` lists it or is empty, unless `fixed`. `fixed` (`--rooms`, the server put
    /// us nowhere): `rooms` is our own list, joined on the first connection only; after a
    /// lost connection the rooms still joined are caught up like any other.
    /// Whether the server put us in the default room itself at `hello` (as `welcome` said:
    /// see [`Core::join_remembered`]).
    pub fn server_joins_lobby(&self) -> bool {
        self.server_joins_lobby
    }

    pub fn join_remembered(&mut self, rooms: &[RoomName], fixed: bool) {
        let lobby = RoomName::lobby();
        let in_lobby = !fixed && (rooms.is_empty() || rooms.contains(&lobby));
        self.server_joins_lobby = in_lobby;
        if !in_lobby {
            // A catch-up of the default room by `history` (resume_from, on_connected) would
            // be refused: the room is joined like any other, from its place.
            let is_lobby_history = |m: &ClientMsg| matches!(m, ClientMsg::History { room, .. } if *room == lobby.as_str());
            let queued = self.urgent.len();
            self.urgent.retain(|m| !is_lobby_history(m));
            self.catch_up.retain(|m| !is_lobby_history(m));
            if self.urgent.len() < queued
                && let Some(r) = self.rooms.iter_mut().find(|r| r.name == lobby.as_str())
            {
                if r.resume.take().is_some()
                    && let Some(id) = r.seen.last_seen
                {
                    self.places.insert(lobby.as_str().to_owned(), id);
                }
                r.seen = Seen::default();
                r.joined = false;
            }
        }
        if fixed && std::mem::replace(&mut self.fixed_joined, true) {
            return;
        }
        for room in rooms {
            let joined = self.rooms.iter().any(|r| r.joined && r.name == room.as_str());
            if !(joined || in_lobby && *room == lobby) {
                self.submit(ClientMsg::Join { room: room.as_str().to_owned(), since: None });
            }
        }
    }

    fn connected_again(&mut self, me: Nick, server: usize) {
        self.me = me;
        self.on = server;
        self.failures = 0;
        self.connected = true;
        let lobby = RoomName::lobby();
        let mut catch_up = vec![];
        for r in &mut self.rooms {
            if !r.joined {
                continue;
            }
            r.missed = 0;
            r.page_max = 0;
            if self.ordered {
                // Held messages are dropped: the new catch-up's pages bring them again.
                let printed = r.resume.take().map(|x| x.printed).or(r.seen.last_seen);
                let is_lobby = self.server_joins_lobby && r.name == lobby.as_str();
                r.resume = Some(Resume::new(printed.unwrap_or(0), u8::from(is_lobby)));
                catch_up.push(match is_lobby {
                    true => ClientMsg::History {
                        room: r.name.clone(),
                        since: printed.unwrap_or(0),
                        limit: None,
                        before: None,
                    },
                    false => ClientMsg::Join { room: r.name.clone(), since: printed },
                });
                continue;
            }
            if self.server_joins_lobby && r.name == lobby.as_str() {
                r.seen.start_catch_up(2);
                let since = r.seen.last_seen.unwrap_or(0);
                catch_up.push(ClientMsg::History {
                    room: r.name.clone(),
                    since,
                    limit: None,
                    before: None,
                });
            } else {
                r.seen.start_catch_up(1);
                catch_up.push(ClientMsg::Join { room: r.name.clone(), since: r.seen.last_seen });
            }
        }
        self.in_flight.retain(|f| f.cid.is_some() || f.unsent);
        self.urgent = catch_up.iter().cloned().collect();
        for f in &mut self.in_flight {
            f.retry = None;
            f.unsent = false;
            self.urgent.push_back(f.msg.clone());
        }
        // Commands in flight are sent again now: they no longer need a place.
        self.in_flight.retain(|f| f.cid.is_some());
        self.catch_up = catch_up;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chatao_proto::MessageKind;

    fn nick(n: &str) -> Nick {
        Nick::parse(n).unwrap()
    }

    fn core() -> Core {
        let mut c = Core::new(nick("alice"), 0);
        c.observe(&own_join("#lobby"), Instant::now());
        c
    }

    fn say(text: &str) -> ClientMsg {
        ClientMsg::Say { cid: None, room: "#lobby".into(), text: text.into() }
    }

    fn text(msg: &ClientMsg) -> &str {
        match msg {
            ClientMsg::Say { text, .. }
            | ClientMsg::Me { text, .. }
            | ClientMsg::Msg { text, .. } => text,
            _ => "",
        }
    }

    fn echo(from: &str, id: u64, cid: Option<Cid>, history: bool) -> ServerMsg {
        ServerMsg::Message {
            cid,
            room: RoomName::lobby(),
            id,
            time: 0,
            from: nick(from),
            kind: MessageKind::Normal,
            text: format!("m{id}"),
            history,
        }
    }

    fn own_join(room: &str) -> ServerMsg {
        ServerMsg::Join {
            room: RoomName::parse(room).unwrap(),
            nick: nick("alice"),
            fingerprint: chatao_proto::Fingerprint::example("x"),
        }
    }

    fn drain(c: &mut Core, now: Instant) -> Vec<ClientMsg> {
        std::iter::from_fn(|| c.pop_send(now)).collect()
    }

    /// Issue 19: the rooms `welcome` lists are joined, but not the default room the server
    /// joined us to; a key that parted the lobby gets no `history` for it; a fixed set is
    /// joined once.
    #[test]
    fn remembered_rooms_are_joined_once_and_the_lobby_only_when_the_server_did_not() {
        let now = Instant::now();
        let room = |r: &str| RoomName::parse(r).unwrap();
        let join = |r: &str, since| ClientMsg::Join { room: r.into(), since };
        let mut c = Core::new(nick("alice"), 0);
        c.join_remembered(&[room("#a"), room("#lobby")], false);
        assert_eq!(drain(&mut c, now), [join("#a", None)]);
        // The lobby remembered: caught up by `history`; #a joined from its place.
        let mut c = Core::new(nick("alice"), 0);
        c.resume_from(vec![("#lobby".into(), 7), ("#a".into(), 3)]);
        c.join_remembered(&[room("#a"), room("#lobby")], false);
        assert_eq!(
            drain(&mut c, now),
            [
                ClientMsg::History { room: "#lobby".into(), since: 7, limit: None, before: None },
                join("#a", Some(3))
            ]
        );
        // Parted the lobby: no `history` for a room the server did not put us in.
        let mut c = Core::new(nick("alice"), 0);
        c.resume_from(vec![("#lobby".into(), 7)]);
        c.join_remembered(&[room("#a")], false);
        assert_eq!(drain(&mut c, now), [join("#a", None)]);
        // A fixed set: joined on the first connection only (the lobby too, from its place).
        let mut c = Core::new(nick("alice"), 0);
        c.resume_from(vec![("#lobby".into(), 7)]);
        c.join_remembered(&[room("#c"), room("#lobby")], true);
        assert_eq!(drain(&mut c, now), [join("#c", None), join("#lobby", Some(7))]);
        c.observe(&own_join("#c"), now);
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        c.join_remembered(&[room("#c"), room("#lobby")], true);
        assert_eq!(drain(&mut c, now), [join("#c", None)], "caught up, not joined again");
    }

    #[test]
    fn every_message_gets_an_id_in_range_and_commands_none() {
        let mut c = core();
        let a = c.submit(say("a")).unwrap();
        let b = c.submit(ClientMsg::Msg { cid: None, to: "bob".into(), text: "b".into() }).unwrap();
        assert!((1..=MAX_CID).contains(&a) && (1..=MAX_CID).contains(&b) && a != b);
        assert_eq!(c.submit(ClientMsg::Join { room: "#x".into(), since: None }), None);
        // An id already given is kept.
        assert_eq!(
            c.submit(ClientMsg::Say { cid: Some(7), room: "#x".into(), text: "".into() }),
            Some(7)
        );
    }

    #[test]
    fn an_echo_from_us_with_the_id_acknowledges_and_nothing_else_does() {
        let now = Instant::now();
        let mut c = core();
        let cid = c.submit(say("hello")).unwrap();
        assert_eq!(drain(&mut c, now).len(), 1);
        assert!(!c.all_acked());
        // Someone else's message with the same id, ours without an id: no acknowledgement.
        assert_eq!(c.observe(&echo("bob", 1, Some(cid), false), now).ack, None);
        assert_eq!(c.observe(&echo("alice", 2, None, false), now).ack, None);
        let heard = c.observe(&echo("alice", 3, Some(cid), false), now);
        assert!(matches!(heard.ack, Some(Ack::Delivered(ref m)) if text(m) == "hello"));
        assert_eq!(heard.show, Show::Print { missed: false });
        assert!(c.all_acked());
        // A second echo (the server's answer to a re-send) acknowledges nothing more.
        assert_eq!(c.observe(&echo("alice", 3, Some(cid), false), now).ack, None);
    }

    #[test]
    fn a_server_naming_endless_rooms_leaves_the_core_a_bounded_list_keeping_those_we_are_in() {
        let now = Instant::now();
        let mut c = core();
        c.observe(&own_join("#home"), now);
        for n in 0..2 * ROOMS_KEPT {
            let room = RoomName::parse(&format!("#r{n}")).unwrap();
            let msg = ServerMsg::Message {
                cid: None,
                room,
                id: 1,
                time: 1,
                from: nick("bob"),
                kind: chatao_proto::MessageKind::Normal,
                text: "x".into(),
                history: false,
            };
            c.observe(&msg, now);
        }
        assert_eq!(c.rooms.len(), ROOMS_KEPT);
        assert!(c.rooms.iter().any(|r| r.name == "#home" && r.joined), "the room we are in stays");
    }

    #[test]
    fn a_private_message_delivered_twice_with_one_id_is_shown_once() {
        let now = Instant::now();
        let mut c = core();
        let pm = |from: &str, cid| ServerMsg::Private {
            cid,
            id: 1,
            time: 1,
            from: nick(from),
            to: nick("alice"),
            kind: chatao_proto::MessageKind::Normal,
            text: "psst".into(),
        };
        assert_eq!(c.observe(&pm("bob", Some(9)), now).show, Show::Print { missed: false });
        assert_eq!(c.observe(&pm("Bob", Some(9)), now).show, Show::Duplicate);
        assert_eq!(c.observe(&pm("carol", Some(9)), now).show, Show::Print { missed: false });
        // Without an id (an old server) nothing can be told apart: shown every time.
        assert_eq!(c.observe(&pm("bob", None), now).show, Show::Print { missed: false });
        assert_eq!(c.observe(&pm("bob", None), now).show, Show::Print { missed: false });
    }

    #[test]
    fn a_server_without_client_ids_acknowledges_by_its_echo_in_order() {
        let mut c = core();
        let now = Instant::now();
        let a = c.submit(say("same")).unwrap();
        let b = c.submit(say("same")).unwrap();
        let p = c.submit(ClientMsg::Msg { cid: None, to: "Bob".into(), text: "hi".into() });
        drain(&mut c, now);
        let old = |id| match echo("alice", id, None, false) {
            ServerMsg::Message { cid: None, room, id, time, from, kind, history, .. } => {
                ServerMsg::Message {
                    cid: None,
                    room,
                    id,
                    time,
                    from,
                    kind,
                    text: "same".into(),
                    history,
                }
            }
            other => other,
        };
        let Some(Ack::Delivered(first)) = c.observe(&old(1), now).ack else { panic!() };
        assert_eq!(cid_of(&first), Some(a), "the oldest of the same text first");
        let Some(Ack::Delivered(second)) = c.observe(&old(2), now).ack else { panic!() };
        assert_eq!(cid_of(&second), Some(b));
        assert_eq!(c.observe(&old(3), now).ack, None, "nothing left to acknowledge");
        let private = ServerMsg::Private {
            cid: None,
            id: 1,
            time: 0,
            from: nick("alice"),
            to: nick("bob"),
            kind: chatao_proto::MessageKind::Normal,
            text: "hi".into(),
        };
        let Some(Ack::Delivered(pm)) = c.observe(&private, now).ack else { panic!() };
        assert_eq!(cid_of(&pm), p);
        assert!(c.all_acked());
    }

    #[test]
    fn a_final_refusal_acknowledges_and_is_reported_with_its_text() {
        let now = Instant::now();
        let mut c = core();
        let cid = c.submit(say("too long")).unwrap();
        drain(&mut c, now);
        let err = ServerMsg::Error {
            cid: Some(cid),
            code: ErrorCode::TooLong,
            message: "no".into(),
            room: None,
        };
        match c.observe(&err, now).ack {
            Some(Ack::Refused { msg, code: ErrorCode::TooLong, .. }) => {
                assert_eq!(text(&msg), "too long")
            }
            other => panic!("{other:?}"),
        }
        assert!(c.all_acked());
        // Not sent again after a reconnection.
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        assert!(!drain(&mut c, now).iter().any(|m| cid_of(m).is_some()));
    }

    #[test]
    fn an_unconfirmed_message_is_kept_and_sent_again_with_its_id_after_a_backoff() {
        let t0 = Instant::now();
        let mut c = core();
        let cid = c.submit(say("maybe")).unwrap();
        drain(&mut c, t0);
        let err = |code| ServerMsg::Error { cid: Some(cid), code, message: "?".into(), room: None };
        assert!(matches!(c.observe(&err(ErrorCode::Unconfirmed), t0).ack, Some(Ack::Kept { .. })));
        assert!(!c.all_acked());
        assert_eq!(c.next_retry(), Some(t0 + RETRY_FIRST));
        assert!(drain(&mut c, t0 + Duration::from_secs(1)).is_empty(), "not before its time");
        let again = drain(&mut c, t0 + RETRY_FIRST);
        assert_eq!(again.iter().map(cid_of).collect::<Vec<_>>(), vec![Some(cid)]);
        // Busy, then unavailable: the wait doubles, up to the most.
        c.observe(&err(ErrorCode::Busy), t0);
        assert_eq!(c.next_retry(), Some(t0 + 2 * RETRY_FIRST));
        for _ in 0..10 {
            c.observe(&err(ErrorCode::Unavailable), t0);
        }
        assert_eq!(c.next_retry(), Some(t0 + RETRY_MAX));
        // A reconnection sends it at once.
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        let sent = drain(&mut c, t0);
        assert_eq!(sent.iter().filter_map(cid_of).collect::<Vec<_>>(), vec![cid]);
        c.observe(&echo("alice", 9, Some(cid), false), t0);
        assert!(c.all_acked());
    }

    #[test]
    fn after_a_reconnection_catch_up_first_then_the_unacked_in_order_then_what_waits() {
        let now = Instant::now();
        let mut c = core();
        c.observe(&echo("bob", 4, None, false), now);
        c.observe(&own_join("#rust"), now);
        let ids: Vec<Cid> = (0..3).map(|i| c.submit(say(&format!("s{i}"))).unwrap()).collect();
        let first = drain(&mut c, now);
        assert_eq!(first.iter().filter_map(cid_of).collect::<Vec<_>>(), ids);
        // The first is acknowledged, the others were in flight at the loss.
        c.observe(&echo("alice", 5, Some(ids[0]), false), now);
        c.on_unsent(vec![first[2].clone()]);
        let (wait, server) = c.on_lost(1);
        assert_eq!((wait, server), (Duration::from_secs(1), 0));
        assert_eq!(c.pop_send(now), None, "nothing is sent while offline");
        let later = c.submit(say("typed offline")).unwrap();
        c.on_connected(nick("alice"), 0);
        let sent = drain(&mut c, now);
        assert_eq!(
            sent[..2],
            [
                ClientMsg::History { room: "#lobby".into(), since: 5, limit: None, before: None },
                ClientMsg::Join { room: "#rust".into(), since: None },
            ]
        );
        assert_eq!(
            sent[2..].iter().map(cid_of).collect::<Vec<_>>(),
            vec![Some(ids[1]), Some(ids[2]), Some(later)]
        );
        // Lost again before any echo: the same again, same ids, and the new catch-up.
        c.on_unsent(sent.clone());
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        let again = drain(&mut c, now);
        assert_eq!(again, sent, "same records, same ids, catch-up not doubled");
    }

    #[test]
    fn a_command_keeps_its_place_among_unacked_messages() {
        let now = Instant::now();
        let mut c = core();
        let a = c.submit(say("before")).unwrap();
        let join = ClientMsg::Join { room: "#x".into(), since: None };
        c.submit(join.clone());
        let b =
            c.submit(ClientMsg::Say { cid: None, room: "#x".into(), text: "in x".into() }).unwrap();
        let sent = drain(&mut c, now);
        c.on_unsent(sent[1..].to_vec());
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        let again: Vec<ClientMsg> = drain(&mut c, now).into_iter().skip(1).collect();
        assert_eq!(again.len(), 3);
        assert_eq!((cid_of(&again[0]), &again[1], cid_of(&again[2])), (Some(a), &join, Some(b)));
        // Once acknowledged nothing is kept for the commands.
        c.observe(&echo("alice", 1, Some(a), false), now);
        c.observe(&echo("alice", 2, Some(b), false), now);
        assert!(c.all_acked() && c.in_flight.is_empty());
    }

    #[test]
    fn at_most_max_unacked_are_in_flight_the_rest_waits_in_order() {
        let now = Instant::now();
        let mut c = core();
        let ids: Vec<Cid> =
            (0..MAX_UNACKED + 5).map(|i| c.submit(say(&i.to_string())).unwrap()).collect();
        let sent = drain(&mut c, now);
        assert_eq!(sent.len(), MAX_UNACKED);
        c.observe(&echo("alice", 1, Some(ids[0]), false), now);
        c.observe(&echo("alice", 2, Some(ids[1]), false), now);
        let next = drain(&mut c, now);
        assert_eq!(
            next.iter().filter_map(cid_of).collect::<Vec<_>>(),
            ids[MAX_UNACKED..MAX_UNACKED + 2]
        );
        assert_eq!(c.unacked().len(), MAX_UNACKED + 3);
    }

    #[test]
    fn a_full_outbox_hands_the_record_back_and_it_goes_first() {
        let now = Instant::now();
        let mut c = core();
        let a = c.submit(say("a")).unwrap();
        let b = c.submit(say("b")).unwrap();
        let first = c.pop_send(now).unwrap();
        c.unpop(first);
        assert_eq!(drain(&mut c, now).iter().filter_map(cid_of).collect::<Vec<_>>(), vec![a, b]);
    }

    #[test]
    fn each_missed_message_is_shown_once_and_counted() {
        let now = Instant::now();
        let mut c = core();
        for id in [1, 2] {
            c.observe(&echo("bob", id, None, false), now);
        }
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        let end = ServerMsg::HistoryEnd { room: RoomName::lobby(), count: 3, before: None };
        let mut shown = vec![];
        // The lobby's replay at hello (1, 2, 3), a live 5, the history answer (3, 4, 5).
        for id in [1, 2, 3, 5] {
            if let Show::Print { .. } = c.observe(&echo("bob", id, None, id != 5), now).show {
                shown.push(id);
            }
        }
        assert_eq!(c.observe(&end, now).show, Show::Quiet);
        for id in [3, 4, 5] {
            if let Show::Print { missed } = c.observe(&echo("bob", id, None, true), now).show {
                assert!(missed);
                shown.push(id);
            }
        }
        assert_eq!(shown, [3, 5, 4]);
        assert_eq!(c.observe(&end, now).show, Show::CaughtUp(2), "3 and 4 from history");
        assert_eq!(c.observe(&echo("bob", 4, None, true), now).show, Show::Duplicate);
        assert_eq!(c.observe(&end, now).show, Show::Print { missed: false });
    }

    #[test]
    fn older_history_is_shown_not_dropped_as_a_duplicate_and_leaves_the_catch_up_alone() {
        let now = Instant::now();
        let mut c = core();
        for id in [101, 102] {
            c.observe(&echo("bob", id, None, true), now);
        }
        let lobby = RoomName::lobby();
        assert!(c.ask_older(&lobby, 101, 100));
        assert!(!c.ask_older(&lobby, 101, 100), "one request at a time");
        assert!(c.asking_older(&lobby));
        let ask = ClientMsg::History {
            room: "#lobby".into(),
            since: 0,
            limit: Some(100),
            before: Some(101),
        };
        assert_eq!(drain(&mut c, now), [ask]);
        for id in [99, 100] {
            let show = c.observe(&echo("bob", id, None, true), now).show;
            assert_eq!(show, Show::Print { missed: false }, "older, not a duplicate");
        }
        let end = ServerMsg::HistoryEnd { room: lobby.clone(), count: 2, before: Some(101) };
        assert_eq!(c.observe(&end, now).show, Show::Print { missed: false });
        assert!(!c.asking_older(&lobby));
        // Older ids after the page are duplicates again; new ones are news.
        assert_eq!(c.observe(&echo("bob", 99, None, true), now).show, Show::Duplicate);
        assert_eq!(
            c.observe(&echo("bob", 103, None, false), now).show,
            Show::Print { missed: false }
        );
        // A lost connection forgets the request; none is asked during a catch-up.
        assert!(c.ask_older(&lobby, 99, 100));
        c.on_lost(1);
        assert!(!c.asking_older(&lobby));
        c.on_connected(nick("alice"), 0);
        assert!(!c.ask_older(&lobby, 99, 100), "catching up");
    }

    #[test]
    fn our_own_message_in_a_catch_up_acknowledges_it() {
        let now = Instant::now();
        let mut c = core();
        let cid = c.submit(say("x")).unwrap();
        drain(&mut c, now);
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        let heard = c.observe(&echo("alice", 1, Some(cid), true), now);
        assert!(matches!(heard.ack, Some(Ack::Delivered(_))));
        assert!(drain(&mut c, now).iter().all(|m| cid_of(m).is_none()), "no re-send after the ack");
    }

    /// Issue 22: resumed at id 100 of the default room (a state file), with 700 missed and
    /// a live message during the catch-up: the automatic join's replay is held, `history`
    /// pages from 100 (two of them: the first is full) are shown in order, then what was
    /// held and not shown yet; a place for another room makes its `join` ask after it.
    #[test]
    fn a_resumed_room_shows_everything_after_its_place_once_in_order_page_after_page() {
        let now = Instant::now();
        let mut c = Core::new(nick("alice"), 0);
        c.resume_from(vec![("#lobby".into(), 100), ("#ops".into(), 7)]);
        assert_eq!(
            drain(&mut c, now),
            [ClientMsg::History { room: "#lobby".into(), since: 100, limit: None, before: None }]
        );
        let mut shown = vec![];
        let mut feed = |c: &mut Core, id: u64, history: bool| match c
            .observe(&echo("bob", id, None, history), now)
            .show
        {
            Show::Print { missed: true } => shown.push(id),
            Show::Held | Show::Duplicate => {}
            other => panic!("{id}: {other:?}"),
        };
        for id in 751..=800 {
            feed(&mut c, id, true);
        }
        let end = |count| ServerMsg::HistoryEnd { room: RoomName::lobby(), count, before: None };
        assert_eq!(c.observe(&end(50), now).show, Show::Quiet);
        c.observe(&own_join("#lobby"), now);
        feed(&mut c, 801, false);
        for id in 101..=600 {
            feed(&mut c, id, true);
        }
        assert_eq!(c.observe(&end(500), now).show, Show::Quiet);
        assert_eq!(
            drain(&mut c, now),
            [ClientMsg::History { room: "#lobby".into(), since: 600, limit: None, before: None }]
        );
        for id in 601..=801 {
            feed(&mut c, id, true);
        }
        assert!(c.any_catching_up());
        assert_eq!(c.observe(&end(201), now).show, Show::CaughtUp(701));
        assert!(c.take_released().is_empty(), "everything held came again in the pages");
        assert_eq!(shown, (101..=801).collect::<Vec<_>>());
        assert!(!c.any_catching_up());
        assert_eq!(c.observe(&echo("bob", 801, None, false), now).show, Show::Duplicate);
        assert_eq!(
            c.observe(&echo("bob", 802, None, false), now).show,
            Show::Print { missed: false }
        );
        c.submit(ClientMsg::Join { room: "#OPS".into(), since: None });
        assert_eq!(drain(&mut c, now), [ClientMsg::Join { room: "#OPS".into(), since: Some(7) }]);
    }

    /// With a state file, a reconnection's catch-up is ordered too: the default room asks
    /// `history` after the last id shown and holds what comes early, another room rejoins
    /// after its last id.
    #[test]
    fn an_ordered_reconnection_shows_the_missed_messages_in_id_order() {
        let now = Instant::now();
        let mut c = core();
        c.set_ordered();
        c.observe(&own_join("#rust"), now);
        for id in 1..=3 {
            c.observe(&echo("bob", id, None, false), now);
        }
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        assert_eq!(
            drain(&mut c, now),
            [
                ClientMsg::History { room: "#lobby".into(), since: 3, limit: None, before: None },
                ClientMsg::Join { room: "#rust".into(), since: None },
            ]
        );
        let mut order = vec![];
        let mut feed = |c: &mut Core, id: u64, history: bool| {
            let show = c.observe(&echo("bob", id, None, history), now).show;
            if show == (Show::Print { missed: true }) {
                order.push(id);
            }
            show
        };
        // The automatic join's replay (2..5) and a live 6 come before the history answer.
        for id in 2..=5 {
            assert_eq!(feed(&mut c, id, true), if id <= 3 { Show::Duplicate } else { Show::Held });
        }
        let end = |count| ServerMsg::HistoryEnd { room: RoomName::lobby(), count, before: None };
        assert_eq!(c.observe(&end(4), now).show, Show::Quiet);
        assert_eq!(feed(&mut c, 6, false), Show::Held);
        for id in [4, 5] {
            feed(&mut c, id, true);
        }
        assert_eq!(c.observe(&end(2), now).show, Show::CaughtUp(2));
        let released: Vec<u64> = c
            .take_released()
            .iter()
            .map(|m| match m {
                ServerMsg::Message { id, .. } => *id,
                _ => 0,
            })
            .collect();
        assert_eq!((order, released), (vec![4, 5], vec![6]));
        assert_eq!(c.observe(&echo("bob", 6, None, false), now).show, Show::Duplicate);
    }

    #[test]
    fn a_catch_up_whose_replay_is_a_full_page_asks_for_the_next() {
        let now = Instant::now();
        let mut c = core();
        c.observe(&own_join("#rust"), now);
        let rust = RoomName::parse("#rust").unwrap();
        let msg = |id| ServerMsg::Message {
            cid: None,
            room: rust.clone(),
            id,
            time: 0,
            from: nick("bob"),
            kind: MessageKind::Normal,
            text: String::new(),
            history: true,
        };
        c.observe(&msg(3), now);
        c.on_lost(1);
        c.on_connected(nick("alice"), 0);
        drain(&mut c, now);
        for id in 4..504 {
            c.observe(&msg(id), now);
        }
        let end = |count| ServerMsg::HistoryEnd { room: rust.clone(), count, before: None };
        assert_eq!(c.observe(&end(500), now).show, Show::Quiet);
        assert_eq!(
            drain(&mut c, now),
            [ClientMsg::History { room: "#rust".into(), since: 503, limit: None, before: None }]
        );
        c.observe(&msg(504), now);
        assert_eq!(c.observe(&end(1), now).show, Show::CaughtUp(501));
    }

    #[test]
    fn reconnection_goes_round_the_servers_and_starts_again_after_a_success() {
        let mut c = Core::new(nick("alice"), 1);
        let mut tried = vec![c.on_lost(3)];
        for _ in 0..3 {
            tried.push(c.on_connect_failed(3));
        }
        let secs: Vec<(u64, usize)> = tried.iter().map(|(d, s)| (d.as_secs(), *s)).collect();
        assert_eq!(secs, vec![(0, 2), (0, 0), (0, 1), (1, 2)]);
        c.on_connected(nick("alice"), 2);
        assert_eq!(c.on_lost(3), (Duration::ZERO, 0));
    }
}
