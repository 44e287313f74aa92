//! The connection's life as the UI sees it: connected, lost and waiting to reconnect (with
//! exponential backoff), quitting, or closed for good.
//!
//! A lost connection is retried on the next server of the list, round robin
//! ([`crate::servers`]): the other servers at once, the lost one last, and only after a whole
//! round failed a wait of 1 s, 2 s, 4 s ... up to 30 s (with a single server: that wait
//! before each attempt), back to the start after a success. After a new `welcome` the client
//! catches up on every room it was in: `#lobby` (joined again by the server at `hello`) with
//! `history` since the last message seen, the others with `join` since their last message.
//! Replays overlap and interleave with live messages; each message is shown once, in id order
//! ([`super::buffer::Buffer::see`], [`super::buffer::Buffer::push`]). A `bye` with a code is final (the server refused us:
//! nickname refused, too slow, ...) except `shutdown`, which is how a restarting server says
//! goodbye, so it is retried like a loss. Nothing typed is lost meanwhile: input stays in
//! the input line until it can be sent.

use std::time::{Duration, Instant};

use chatao_proto::{ClientMsg, ErrorCode, RoomName, sanitize};

use super::buffer::{Kind, Target};
use super::{App, Effect};
use crate::net::{Closed, SendError, Welcome};
use crate::servers;
use crate::trust::Trusted;

/// How long `/quit` waits for the server's goodbye before leaving anyway.
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(3);

/// The connection, as shown in the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connected,
    /// Lost; attempt number `attempt`, to server `server` (an index in
    /// [`super::Config::servers`]), starts at `at` (and is under way once `at` has passed).
    Reconnecting {
        attempt: u32,
        at: Instant,
        reason: String,
        server: usize,
    },
    /// `quit` was sent; we leave on the server's goodbye or at `deadline`.
    Quitting {
        deadline: Instant,
    },
    /// Over for good; the UI stays up until the user quits.
    Closed {
        reason: String,
    },
}

impl App {
    pub fn is_connected(&self) -> bool {
        self.conn == Conn::Connected
    }

    pub(super) fn on_tick(&mut self, now: Instant, wall_ms: u64) -> Vec<Effect> {
        self.now = now;
        self.wall_ms = wall_ms;
        match self.conn {
            Conn::Quitting { deadline } if now >= deadline => vec![Effect::Quit],
            _ => vec![],
        }
    }

    /// Starts leaving: `quit` to the server, then exit on its goodbye. Leaving while not
    /// connected, or asking twice, exits at once.
    pub(super) fn quit(&mut self, reason: Option<String>) -> Vec<Effect> {
        if !self.is_connected() {
            return vec![Effect::Quit];
        }
        self.conn = Conn::Quitting { deadline: self.now + QUIT_TIMEOUT };
        vec![Effect::Send { msg: ClientMsg::Quit { reason }, restore: None }]
    }

    /// A line in every room buffer, so each shows where its gap begins and ends.
    fn everywhere(&mut self, kind: Kind, text: &str) {
        for i in 0..self.buffers.len() {
            self.note(i, kind.clone(), text);
        }
    }

    fn schedule_reconnect(&mut self, reason: &str) -> Vec<Effect> {
        let n = self.config.servers.len();
        let after = servers::delay(self.attempt, n);
        let server = servers::next_server(self.on, self.attempt, n);
        self.conn = Conn::Reconnecting {
            attempt: self.attempt + 1,
            at: self.now + after,
            reason: sanitize(reason).into_owned(),
            server,
        };
        vec![Effect::Connect { after, nick: self.me.to_string(), server }]
    }

    pub(super) fn on_closed(&mut self, closed: Closed) -> Vec<Effect> {
        if matches!(self.conn, Conn::Quitting { .. }) {
            return vec![Effect::Quit];
        }
        self.outbox_full = false;
        match closed {
            Closed::Lost(reason) => {
                self.attempt = 0;
                let text = format!("{reason}; reconnecting");
                self.everywhere(Kind::Error, &text);
                self.schedule_reconnect(&reason)
            }
            Closed::Bye { code: Some(ErrorCode::Shutdown), reason } => {
                self.attempt = 0;
                let text = format!("{reason}; reconnecting");
                self.everywhere(Kind::Error, &text);
                self.schedule_reconnect(&reason)
            }
            Closed::Bye { code, reason } => {
                let reason = match code {
                    Some(code) => format!("disconnected by the server: {reason} ({code})"),
                    None => format!("disconnected by the server: {reason}"),
                };
                self.everywhere(Kind::Error, &reason);
                self.info("not reconnecting; /quit or Ctrl-C to leave");
                self.conn = Conn::Closed { reason: sanitize(&reason).into_owned() };
                vec![]
            }
        }
    }

    pub(super) fn on_connect_failed(&mut self, reason: &str, retry: bool) -> Vec<Effect> {
        if !matches!(self.conn, Conn::Reconnecting { .. }) {
            return vec![];
        }
        if !retry {
            for line in reason.lines().filter(|l| !l.trim().is_empty()) {
                self.error(line);
            }
            self.info("not reconnecting; /quit or Ctrl-C to leave");
            self.conn = Conn::Closed { reason: sanitize(reason).trim().to_owned() };
            return vec![];
        }
        self.attempt = self.attempt.saturating_add(1);
        self.schedule_reconnect(reason)
    }

    /// Messages the lost connection never sent: kept, and sent again after the catch-up of the
    /// next connection, in the order they were typed.
    pub(super) fn on_unsent(&mut self, msgs: Vec<ClientMsg>) -> Vec<Effect> {
        let n = msgs.len();
        self.unsent.extend(msgs.into_iter().filter(|m| !matches!(m, ClientMsg::Quit { .. })));
        self.info(&format!("{n} message(s) not sent yet: they will be sent after reconnecting"));
        vec![]
    }

    /// Back online: catch up on every room we were in.
    pub(super) fn on_connected(&mut self, welcome: Welcome) -> Vec<Effect> {
        let Conn::Reconnecting { server, .. } = self.conn else {
            return vec![];
        };
        self.conn = Conn::Connected;
        self.attempt = 0;
        self.on = server;
        self.me = welcome.nick;
        self.limits = welcome.limits;
        self.server = sanitize(&welcome.server).into_owned();
        self.server_fingerprint = sanitize(&welcome.server_fingerprint).into_owned();
        let text = format!("reconnected to {} as {}", self.server_name(), self.me);
        self.everywhere(Kind::Info, &text);
        if let Trusted::PinnedAsSibling { sibling, file } = &welcome.trusted {
            let text = format!(
                "first connection to {}: its key is the one pinned for {}, of the same list; \
                 now pinned for it too in {}",
                self.server_name(),
                sibling,
                file.display()
            );
            self.info(&text);
        }
        let lobby = RoomName::lobby();
        let mut effects = vec![];
        for b in &mut self.buffers {
            let Target::Room(room) = b.target.clone() else { continue };
            if !b.joined {
                continue;
            }
            let msg = if room == lobby {
                // Joined again at hello, with a replay of the latest messages; ask for all
                // that came since the last one seen, which the latest may not reach back to.
                b.start_catch_up(2);
                let since = b.seen.last_seen.unwrap_or(0);
                ClientMsg::History { room: room.to_string(), since, limit: None }
            } else {
                b.start_catch_up(1);
                ClientMsg::Join { room: room.to_string(), since: b.seen.last_seen }
            };
            effects.push(Effect::Send { msg, restore: None });
        }
        effects.extend(self.unsent.drain(..).map(|msg| Effect::Send { msg, restore: None }));
        effects
    }

    pub(super) fn on_send_failed(
        &mut self,
        error: SendError,
        restore: Option<String>,
    ) -> Vec<Effect> {
        if matches!(self.conn, Conn::Quitting { .. }) {
            return vec![Effect::Quit];
        }
        if let Some(text) = &restore {
            self.completion = None;
            self.editor.restore(text);
        }
        match error {
            SendError::Full => {
                self.outbox_full = true;
                self.error("too many messages waiting to be sent; not sent, press Enter to retry");
            }
            // The actor is gone; its `Closed` event follows and starts the reconnection.
            SendError::Closed => self.error("not connected; not sent"),
        }
        vec![]
    }
}
