//! The connection's life as the UI sees it: connected, lost and waiting to reconnect (with
//! exponential backoff), quitting, or closed for good.
//!
//! The schedule, the catch-up and the messages awaiting acknowledgement are the connection
//! core's ([`crate::core`], shared with line mode); this module shows them. A lost connection
//! is retried on the next server of the list, round robin ([`crate::servers`]): the other
//! servers at once, the lost one last, and only after a whole round failed a wait of 1 s, 2 s,
//! 4 s ... up to 30 s (with a single server: that wait before each attempt), back to the start
//! after a success. After a new `welcome` the client catches up on every room it was in, then
//! sends again every message not acknowledged (same client id: the server delivers it at most
//! once). Replays overlap and interleave with live messages; each message is shown once, in id
//! order ([`crate::core::Core::observe`], [`super::buffer::Buffer::push`]). A `bye` with a
//! code is final (the server refused us: nickname refused, too slow, ...) except `shutdown`,
//! which is how a restarting server says goodbye, so it is retried like a loss. Nothing typed
//! is lost meanwhile: input stays in the input line until it can be sent, and a message sent
//! stays with the core until its echo or a refusal for good (shown with its text).

use std::time::{Duration, Instant};

use chatao_proto::{ClientMsg, ErrorCode, sanitize};

use super::buffer::Kind;
use super::{App, Effect};
use crate::net::{Closed, SendError, Welcome};
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
        self.send_blocked = false;
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
        // What the core still has to hand over goes first: the server handles it before the
        // `quit`.
        let mut effects = self.flush(None);
        self.conn = Conn::Quitting { deadline: self.now + QUIT_TIMEOUT };
        effects.push(Effect::Send { msg: ClientMsg::Quit { reason }, restore: None });
        effects
    }

    /// A line in every room buffer, so each shows where its gap begins and ends.
    fn everywhere(&mut self, kind: Kind, text: &str) {
        for i in 0..self.buffers.len() {
            self.note(i, kind.clone(), text);
        }
    }

    fn schedule_reconnect(
        &mut self,
        reason: &str,
        (after, server): (Duration, usize),
    ) -> Vec<Effect> {
        self.conn = Conn::Reconnecting {
            attempt: self.core.failures() + 1,
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
        self.older_lost();
        match closed {
            Closed::Lost(reason) | Closed::Bye { code: Some(ErrorCode::Shutdown), reason } => {
                let text = format!("{reason}; reconnecting");
                self.everywhere(Kind::Error, &text);
                let attempt = self.core.on_lost(self.config.servers.len());
                self.schedule_reconnect(&reason, attempt)
            }
            Closed::Bye { code, reason } => {
                self.core.on_closed_for_good();
                let reason = match code {
                    Some(ErrorCode::TooSlow) => "disconnected: too slow".to_owned(),
                    Some(code) => format!("disconnected by the server: {reason} ({code})"),
                    None => format!("disconnected by the server: {reason}"),
                };
                self.everywhere(Kind::Error, &reason);
                self.report_undelivered();
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
            self.core.on_closed_for_good();
            self.report_undelivered();
            self.info("not reconnecting; /quit or Ctrl-C to leave");
            self.conn = Conn::Closed { reason: sanitize(reason).trim().to_owned() };
            return vec![];
        }
        let attempt = self.core.on_connect_failed(self.config.servers.len());
        self.schedule_reconnect(reason, attempt)
    }

    /// The session is over for good: each message not acknowledged is named, so that none
    /// typed goes unaccounted for.
    fn report_undelivered(&mut self) {
        let lost = self.core.take_undelivered();
        if lost.is_empty() {
            return;
        }
        self.error(&format!("{} message(s) were not delivered:", lost.len()));
        for msg in &lost {
            self.error(&format!("  {}", crate::format::unsent(msg)));
        }
    }

    /// Records the lost connection never wrote: the core sends the commands among them again
    /// after the catch-up of the next connection (messages with an id are sent again anyway).
    pub(super) fn on_unsent(&mut self, msgs: Vec<ClientMsg>) -> Vec<Effect> {
        self.core.on_unsent(msgs);
        vec![]
    }

    /// Back online: catch up on every room we were in.
    pub(super) fn on_connected(&mut self, welcome: Welcome) -> Vec<Effect> {
        let Conn::Reconnecting { server, .. } = self.conn else {
            return vec![];
        };
        self.conn = Conn::Connected;
        self.on = server;
        self.me = welcome.nick;
        self.limits = welcome.limits;
        self.server = sanitize(&welcome.server).into_owned();
        self.server_fingerprint = welcome.server_fingerprint.clone();
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
        // The catch-up, then every message not acknowledged, then what waits: the core's
        // records, handed over at the end of the update.
        self.core.on_connected(self.me.clone(), server);
        self.core.join_remembered(&welcome.rooms, welcome.fixed_rooms);
        let waiting = self.core.unacked().len();
        if waiting > 0 {
            self.info(&format!("{waiting} message(s) not yet acknowledged: sending them again"));
        }
        vec![]
    }

    /// `msg` could not be handed to the actor. A message just typed is taken back from the
    /// core and its text given back to the input line (it never left); any other message
    /// with an id stays with the core, handed over again from the next tick on.
    pub(super) fn on_send_failed(
        &mut self,
        error: SendError,
        restore: Option<String>,
        msg: Option<ClientMsg>,
    ) -> Vec<Effect> {
        if matches!(self.conn, Conn::Quitting { .. }) {
            return vec![Effect::Quit];
        }
        self.send_blocked = true;
        if let Some(msg) = &msg {
            match (crate::core::cid_of(msg), &restore) {
                (Some(cid), Some(_)) => self.core.cancel(cid),
                (Some(_), None) => self.core.not_sent(msg, self.now),
                (None, _) => {}
            }
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
