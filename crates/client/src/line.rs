//! Line mode, for scripts, bots and pipes: each stdin line is a message or a command, each
//! event one stdout line. At end of input the client makes sure everything it sent reached the
//! server (the server answers `quit` with `bye` only after handling all that came before),
//! then exits 0.
//!
//! A lost connection (or a server's `bye` with code `shutdown`) is not the end: the client
//! says so (a notice line, or a `disconnected` JSON event), reconnects to the next server of
//! the list as the TUI does ([`crate::servers`]), says where (`reconnected`), and catches up
//! on every room it was in, printing each missed message once ([`Seen`]: missed messages come
//! marked as history, in the order they arrive). Lines read meanwhile wait in a bounded
//! queue and are sent after the catch-up requests. If no server takes us back within the
//! reconnection time (or one refuses us for good: a changed key, a refused nickname), the
//! client exits 1, listing on stderr the messages it could not send.

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chatao_proto::{ClientMsg, ErrorCode, Nick, RoomName, ServerMsg, sanitize_line};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::catchup::Seen;
use crate::command::{self, Input};
use crate::format::{self, Format};
use crate::net::{Closed, ConnectError, Connected, NetEvent, NetHandle, SendError, Welcome};
use crate::servers::{self, Profile, is_transient};
use crate::trust::Trusted;

/// How long, after end of input, the client waits for the server's goodbye (its messages may
/// still be paced out at the announced rate before that, which does not count).
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages read from stdin and not yet handed to the network actor: while reconnecting, or
/// while the actor's outbox is full. Overflow policy: stdin is not read any further until
/// there is room (whoever writes to us waits); nothing is dropped. Messages a lost connection
/// never sent come back to the front of this queue, so it may briefly hold up to
/// [`crate::net::OUTBOX`] more.
pub const PENDING: usize = 1000;
/// Lines parsed by the stdin task, waiting for the main loop. Overflow policy: the stdin task
/// waits.
const FROM_STDIN: usize = 64;

/// What the stdin task hands the main loop.
#[derive(Debug)]
enum FromStdin {
    /// A message for the server (`quit` last).
    Send(ClientMsg),
    /// A request for the E2E layer (`/remove`, `/safety`).
    Request(crate::e2e::Request),
    /// A line to print (help, a parse error, the current room).
    Notice(String),
}

/// One turn of the main loop.
enum Step {
    Net(NetEvent),
    /// The outbox has room again.
    Ready,
    Stdin(Option<FromStdin>),
    Reconnected(Result<(usize, Connected), GiveUp>),
    GoodbyeTimeout,
}

/// Why reconnection stopped.
#[derive(Debug)]
enum GiveUp {
    /// No server took us back in time; the last failure, if any.
    Timeout(Option<String>),
    /// A failure that trying again cannot fix.
    Final(ConnectError),
}

/// The rooms we are in, and which of their messages were printed.
#[derive(Debug, Default)]
struct Rooms {
    /// Room name (lower case) → its state. Bounded by the rooms we joined (the server limits
    /// them per user); a room we left keeps its entry.
    rooms: BTreeMap<String, RoomState>,
}

#[derive(Debug, Default)]
struct RoomState {
    joined: bool,
    seen: Seen,
    /// Missed messages replayed and printed during the current catch-up.
    missed: u32,
}

/// What to do with a server message.
#[derive(Debug, PartialEq, Eq)]
enum Show {
    /// Print it.
    Print,
    /// A message printed already: skip it.
    Duplicate,
    /// The end of one of a catch-up's replays, not its last: only JSON shows it.
    Quiet,
    /// The end of a catch-up, which printed this many missed messages from history.
    CaughtUp(u32),
}

impl Rooms {
    fn entry(&mut self, room: &RoomName) -> &mut RoomState {
        self.rooms.entry(room.as_str().to_owned()).or_default()
    }

    /// What to do with `msg`; keeps track of our rooms, our nickname and the catch-up.
    fn observe(&mut self, msg: &ServerMsg, me: &mut Nick) -> Show {
        match msg {
            ServerMsg::Message { room, id, history, .. } => {
                let state = self.entry(room);
                if !state.seen.see(*id) {
                    return Show::Duplicate;
                }
                if *history && state.seen.missed(*id) {
                    state.missed = state.missed.saturating_add(1);
                }
            }
            ServerMsg::Join { room, nick, .. } if nick == me => self.entry(room).joined = true,
            ServerMsg::Leave { room, nick, .. } if nick == me => self.entry(room).joined = false,
            ServerMsg::HistoryEnd { room, .. } => {
                let state = self.entry(room);
                if state.seen.catching_up() {
                    state.seen.replay_ended();
                    if state.seen.catching_up() {
                        return Show::Quiet;
                    }
                    return Show::CaughtUp(std::mem::take(&mut state.missed));
                }
            }
            ServerMsg::NickChange { old, new } if old == me => *me = new.clone(),
            _ => {}
        }
        Show::Print
    }

    /// After a reconnect: the requests that catch up on every room we were in, in the order
    /// to send them. The server joined us to `#lobby` again at `hello` (with a replay of its
    /// latest messages); `history` asks for everything since the last one printed. The other
    /// rooms are joined again with `since`.
    fn catch_up(&mut self) -> Vec<ClientMsg> {
        let lobby = RoomName::lobby();
        let mut msgs = vec![];
        for (name, state) in &mut self.rooms {
            if !state.joined {
                continue;
            }
            state.missed = 0;
            let seen = &mut state.seen;
            if name == lobby.as_str() {
                seen.start_catch_up(2);
                let since = seen.last_seen.unwrap_or(0);
                msgs.push(ClientMsg::History { room: name.clone(), since, limit: None });
            } else {
                seen.start_catch_up(1);
                msgs.push(ClientMsg::Join { room: name.clone(), since: seen.last_seen });
            }
        }
        msgs
    }
}

/// Runs line mode to the end. Returns the exit code: 0 after a clean goodbye, 1 if the server
/// disconnected us for good or no server took us back after a loss. A first connection that
/// fails is an error.
pub async fn run(profile: Profile, fmt: Format, reconnect_for: Duration) -> Result<ExitCode> {
    let (on, (welcome, handle, events), skipped) = profile.connect_first().await?;
    for failure in skipped {
        eprintln!("chatao: skipped {}", format::inert_lines(&failure));
    }
    let mut out = tokio::io::stdout();
    note_trust(&profile, on, &welcome);
    emit(&mut out, &format::welcome(fmt, &welcome, &profile.name(on))).await?;
    let (stdin_tx, stdin_rx) = mpsc::channel(FROM_STDIN);
    tokio::spawn(read_stdin(chatao_proto::DEFAULT_ROOM.to_owned(), fmt, stdin_tx));
    let mut session = Session {
        me: welcome.nick.clone(),
        profile,
        fmt,
        reconnect_for,
        on,
        out,
        handle: Some(handle),
        events: Some(events),
        reconnect: None,
        pending: VecDeque::new(),
        rooms: Rooms::default(),
        stdin: stdin_rx,
        input_done: false,
        quit: None,
        goodbye: None,
        catch_up: vec![],
    };
    let result = session.run().await;
    if let Some(task) = session.reconnect.take() {
        task.abort();
    }
    result
}

/// Line mode's state between two steps.
struct Session {
    profile: Profile,
    fmt: Format,
    reconnect_for: Duration,
    /// The server we are (or were last) connected to.
    on: usize,
    me: Nick,
    out: tokio::io::Stdout,
    /// The actor's handle and events, while connected.
    handle: Option<NetHandle>,
    events: Option<mpsc::Receiver<NetEvent>>,
    reconnect: Option<JoinHandle<Result<(usize, Connected), GiveUp>>>,
    /// Bounded by [`PENDING`] (see there).
    pending: VecDeque<ClientMsg>,
    rooms: Rooms,
    stdin: mpsc::Receiver<FromStdin>,
    input_done: bool,
    /// The `quit` read at the end of input, to send again if a reconnection swallowed it.
    quit: Option<ClientMsg>,
    /// Set once `quit` was handed to the actor: the server's goodbye is due by then.
    goodbye: Option<Instant>,
    /// The requests of the last catch-up (one per room we are in).
    catch_up: Vec<ClientMsg>,
}

impl Session {
    async fn run(&mut self) -> Result<ExitCode> {
        loop {
            self.flush();
            let step = tokio::select! {
                biased;
                ev = next_event(&mut self.events) => Step::Net(ev),
                res = join_opt(&mut self.reconnect) => Step::Reconnected(res),
                ok = ready(self.handle.as_ref()), if !self.pending.is_empty() => {
                    if !ok {
                        // The actor is gone; its `Closed` event is on its way.
                        self.handle = None;
                    }
                    Step::Ready
                }
                line = self.stdin.recv(), if !self.input_done && self.pending.len() < PENDING => {
                    Step::Stdin(line)
                }
                _ = sleep_until_opt(self.goodbye) => Step::GoodbyeTimeout,
            };
            match step {
                Step::Net(NetEvent::Msg(msg)) => {
                    let line = match (self.rooms.observe(&msg, &mut self.me), self.fmt) {
                        (Show::Duplicate, _) | (Show::Quiet, Format::Plain) => None,
                        // The server's count includes what was printed already; say what
                        // was new.
                        (Show::CaughtUp(n), Format::Plain) => {
                            let room = match &msg {
                                ServerMsg::HistoryEnd { room, .. } => room.to_string(),
                                _ => String::new(),
                            };
                            let s = if n == 1 { "" } else { "s" };
                            Some(format::notice(
                                self.fmt,
                                &format!("{room}: caught up: {n} missed message{s}"),
                            ))
                        }
                        _ => format::event(self.fmt, &msg),
                    };
                    if let Some(line) = line {
                        self.emit(&line).await?;
                    }
                }
                Step::Net(NetEvent::E2e { text, warning }) => {
                    self.emit(&format::e2e(self.fmt, &text, warning)).await?;
                }
                Step::Net(NetEvent::Unsent(msgs)) => {
                    // Never written to the socket: sending them again duplicates nothing.
                    for msg in msgs.into_iter().rev() {
                        self.pending.push_front(msg);
                    }
                }
                Step::Net(NetEvent::Closed(closed)) => {
                    if let Some(code) = self.on_closed(closed).await? {
                        return Ok(code);
                    }
                }
                Step::Ready => {}
                Step::Stdin(Some(FromStdin::Notice(line))) => self.emit(&line).await?,
                Step::Stdin(Some(FromStdin::Request(req))) => {
                    let sent = match &self.handle {
                        Some(handle) => handle.request(req).await,
                        None => Err(SendError::Closed),
                    };
                    if sent.is_err() {
                        let text =
                            "end-to-end encrypted rooms are not available on this connection";
                        self.emit(&format::notice(self.fmt, text)).await?;
                    }
                }
                Step::Stdin(Some(FromStdin::Send(msg))) => {
                    if matches!(msg, ClientMsg::Quit { .. }) {
                        self.quit = Some(msg.clone());
                    }
                    self.pending.push_back(msg);
                }
                Step::Stdin(None) => self.input_done = true,
                Step::Reconnected(Ok((i, (welcome, handle, events)))) => {
                    self.on_reconnected(i, welcome, handle, events).await?;
                }
                Step::Reconnected(Err(give_up)) => return self.give_up(give_up).await,
                Step::GoodbyeTimeout => {
                    eprintln!(
                        "chatao: the server did not say goodbye within {}s",
                        GOODBYE_TIMEOUT.as_secs()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }

    /// Hands queued messages to the actor while it takes them without waiting.
    fn flush(&mut self) {
        let Some(handle) = &self.handle else { return };
        while let Some(msg) = self.pending.pop_front() {
            let is_quit = matches!(msg, ClientMsg::Quit { .. });
            match handle.try_send(msg.clone()) {
                Ok(()) => {
                    if is_quit {
                        self.goodbye = Some(Instant::now() + GOODBYE_TIMEOUT);
                    }
                }
                Err(SendError::Full | SendError::Closed) => {
                    self.pending.push_front(msg);
                    return;
                }
            }
        }
    }

    /// The connection ended: the exit code if that is the end, else reconnection starts.
    async fn on_closed(&mut self, closed: Closed) -> Result<Option<ExitCode>> {
        self.handle = None;
        self.events = None;
        self.goodbye = None;
        let reason = match closed {
            Closed::Bye { code: None, .. } => {
                self.emit(&format::closed(self.fmt, &closed)).await?;
                return Ok(Some(ExitCode::SUCCESS));
            }
            Closed::Bye { code: Some(ErrorCode::Shutdown), reason } => {
                format!("the server is shutting down: {reason}")
            }
            Closed::Bye { code: Some(code), reason } => {
                let bye = Closed::Bye { code: Some(code), reason: reason.clone() };
                self.emit(&format::closed(self.fmt, &bye)).await?;
                eprintln!(
                    "chatao: disconnected by the server: {} ({code})",
                    sanitize_line(&reason)
                );
                return Ok(Some(ExitCode::FAILURE));
            }
            Closed::Lost(reason) => reason,
        };
        let server = self.profile.name(self.on);
        self.emit(&format::disconnected(self.fmt, &server, &reason)).await?;
        self.profile.nick = self.me.to_string();
        let deadline = Instant::now() + self.reconnect_for;
        self.reconnect = Some(tokio::spawn(reconnect(self.profile.clone(), self.on, deadline)));
        Ok(None)
    }

    async fn on_reconnected(
        &mut self,
        i: usize,
        welcome: Welcome,
        handle: NetHandle,
        events: mpsc::Receiver<NetEvent>,
    ) -> Result<()> {
        self.on = i;
        self.me = welcome.nick.clone();
        note_trust(&self.profile, i, &welcome);
        let line = format::reconnected(self.fmt, &welcome, &self.profile.name(i));
        self.emit(&line).await?;
        // The catch-up first, then what was typed meanwhile, then `quit` if input is over and
        // the lost connection took it along. A previous catch-up that a new loss sent back
        // unsent is replaced by this one.
        let previous = std::mem::take(&mut self.catch_up);
        self.pending.retain(|m| !previous.contains(m));
        self.catch_up = self.rooms.catch_up();
        for msg in self.catch_up.iter().rev() {
            self.pending.push_front(msg.clone());
        }
        if let Some(quit) = &self.quit
            && !self.pending.iter().any(|m| matches!(m, ClientMsg::Quit { .. }))
        {
            self.pending.push_back(quit.clone());
        }
        self.handle = Some(handle);
        self.events = Some(events);
        Ok(())
    }

    /// No server took us back: says why and what was not sent, and fails.
    async fn give_up(&mut self, give_up: GiveUp) -> Result<ExitCode> {
        let reason = match &give_up {
            GiveUp::Timeout(Some(last)) => format!(
                "no server took us back within {}s (last failure: {last})",
                self.reconnect_for.as_secs()
            ),
            GiveUp::Timeout(None) => {
                format!("no server took us back within {}s", self.reconnect_for.as_secs())
            }
            GiveUp::Final(e) => e.to_string(),
        };
        // Lines read but not yet queued count as unsent too.
        while let Ok(next) = self.stdin.try_recv() {
            if let FromStdin::Send(msg) = next {
                self.pending.push_back(msg);
            }
        }
        let unsent: Vec<ClientMsg> = self
            .pending
            .drain(..)
            .filter(|m| format::is_said(m) && !self.catch_up.contains(m))
            .collect();
        self.emit(&format::gave_up(self.fmt, &reason, &unsent)).await?;
        eprintln!("chatao: {}", format::inert_lines(&reason));
        if !unsent.is_empty() {
            eprintln!("chatao: {} message(s) were not sent:", unsent.len());
            for msg in &unsent {
                eprintln!("  {}", format::unsent(msg));
            }
        }
        Ok(ExitCode::FAILURE)
    }

    async fn emit(&mut self, line: &str) -> Result<()> {
        emit(&mut self.out, line).await
    }
}

/// Tries the servers in turn ([`servers::next_server`], [`servers::delay`]) until one
/// welcomes us, a failure is final, or `deadline` passes.
async fn reconnect(
    profile: Profile,
    lost: usize,
    deadline: Instant,
) -> Result<(usize, Connected), GiveUp> {
    let n = profile.servers.len();
    let mut last = None;
    for failures in 0u32.. {
        let wait = servers::delay(failures, n);
        if Instant::now() + wait >= deadline {
            break;
        }
        tokio::time::sleep(wait).await;
        let server = servers::next_server(lost, failures, n);
        match tokio::time::timeout_at(deadline, profile.connect(server)).await {
            Ok(Ok(connected)) => return Ok((server, connected)),
            Ok(Err(e)) if !is_transient(&e) => return Err(GiveUp::Final(e)),
            Ok(Err(e)) => {
                tracing::warn!(server = %profile.name(server), cause = %e, "reconnection failed");
                last = Some(format!("{}: {e}", profile.name(server)));
            }
            Err(_) => break,
        }
    }
    Err(GiveUp::Timeout(last))
}

/// Tells the user (stderr) about a key pinned by this connection.
fn note_trust(profile: &Profile, i: usize, welcome: &Welcome) {
    let addr = profile.name(i);
    match &welcome.trusted {
        Trusted::NewlyPinned(file) => eprintln!(
            "chatao: first connection to {addr}: its key {} is now pinned in {}",
            welcome.server_fingerprint,
            file.display()
        ),
        Trusted::PinnedAsSibling { sibling, file } => eprintln!(
            "chatao: first connection to {addr}: its key {} is the one pinned for {sibling} \
             (same server list); now pinned for {addr} too in {}",
            welcome.server_fingerprint,
            file.display()
        ),
        Trusted::Explicit | Trusted::Known | Trusted::Unchecked => {}
    }
}

/// The next event while connected; never while not.
async fn next_event(events: &mut Option<mpsc::Receiver<NetEvent>>) -> NetEvent {
    match events {
        Some(rx) => rx
            .recv()
            .await
            .unwrap_or_else(|| NetEvent::Closed(Closed::Lost("the network task ended".into()))),
        None => std::future::pending().await,
    }
}

/// Waits until the actor's outbox has room: true, or false if the actor is gone. Never
/// resolves while not connected.
async fn ready(handle: Option<&NetHandle>) -> bool {
    match handle {
        Some(h) => h.ready().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The reconnection's outcome, once there is one; never while none is under way.
async fn join_opt(
    task: &mut Option<JoinHandle<Result<(usize, Connected), GiveUp>>>,
) -> Result<(usize, Connected), GiveUp> {
    let Some(t) = task else { return std::future::pending().await };
    let result = t.await;
    *task = None;
    match result {
        Ok(r) => r,
        Err(e) => Err(GiveUp::Timeout(Some(format!("the reconnection task failed: {e}")))),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn emit(out: &mut tokio::io::Stdout, line: &str) -> Result<()> {
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await?;
    out.flush().await?;
    Ok(())
}

/// Reads stdin to its end, turning lines into messages for the main loop; sending waits while
/// the loop's queue is full, so input is read no faster than it is handled. At the end (or on
/// `/quit`) it sends `quit`; dropping `to_loop` tells the main loop that input is over.
async fn read_stdin(mut room: String, fmt: Format, to_loop: mpsc::Sender<FromStdin>) {
    let notice = |text: &str| FromStdin::Notice(format::notice(fmt, text));
    let error = |text: &str| FromStdin::Notice(format::error(fmt, text));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut reason = None;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                let _ = to_loop.send(error(&format!("cannot read input: {e}"))).await;
                break;
            }
        };
        let input = match command::parse(&line) {
            Ok(None) => continue,
            Ok(Some(input)) => input,
            Err(e) => {
                let _ = to_loop.send(error(&e.to_string())).await;
                continue;
            }
        };
        let msg = match input {
            Input::Quit(r) => {
                reason = r;
                break;
            }
            Input::Help => {
                for l in command::help_lines() {
                    let _ = to_loop.send(notice(&l)).await;
                }
                continue;
            }
            Input::Switch(r) => {
                room = r;
                let _ = to_loop.send(notice(&format!("current room: {room}"))).await;
                continue;
            }
            Input::Join(ref r) | Input::Create { room: ref r, .. } => {
                // The most recently joined room becomes the current one, as in the TUI.
                room = r.clone();
                input.to_msg(&room)
            }
            Input::Query { ref nick, text: None } => {
                // Line mode has no conversations to open: each private line names its recipient.
                let hint = format!(
                    "line mode has no conversation to open: /query {nick} TEXT or /msg {nick} TEXT sends TEXT to {nick}"
                );
                let _ = to_loop.send(error(&hint)).await;
                continue;
            }
            Input::Remove(_) | Input::Safety => {
                if let Some(req) = input.to_request(&room)
                    && to_loop.send(FromStdin::Request(req)).await.is_err()
                {
                    return;
                }
                continue;
            }
            other => other.to_msg(&room),
        };
        let Some(msg) = msg else { continue };
        if to_loop.send(FromStdin::Send(msg)).await.is_err() {
            return;
        }
    }
    let _ = to_loop.send(FromStdin::Send(ClientMsg::Quit { reason })).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chatao_proto::MessageKind;

    fn say(room: &str, id: u64) -> ServerMsg {
        ServerMsg::Message {
            cid: None,
            room: RoomName::parse(room).unwrap(),
            id,
            time: 0,
            from: Nick::parse("bob").unwrap(),
            kind: MessageKind::Normal,
            text: format!("m{id}"),
            history: true,
        }
    }

    fn own_join(room: &str) -> ServerMsg {
        ServerMsg::Join {
            room: RoomName::parse(room).unwrap(),
            nick: Nick::parse("alice").unwrap(),
            fingerprint: "SHA256:x".into(),
        }
    }

    #[test]
    fn a_catch_up_asks_for_what_each_room_missed_and_prints_each_message_once() {
        let mut me = Nick::parse("alice").unwrap();
        let mut rooms = Rooms::default();
        for msg in [own_join("#lobby"), say("#lobby", 1), say("#lobby", 2), own_join("#rust")] {
            assert_eq!(rooms.observe(&msg, &mut me), Show::Print);
        }
        assert_eq!(
            rooms.catch_up(),
            vec![
                ClientMsg::History { room: "#lobby".into(), since: 2, limit: None },
                ClientMsg::Join { room: "#rust".into(), since: None },
            ]
        );
        let end = ServerMsg::HistoryEnd { room: RoomName::lobby(), count: 3 };
        // The lobby's replay at hello (1, 2, 3), a live 5, the history answer (3, 4, 5).
        let mut printed = vec![];
        for id in [1, 2, 3, 5] {
            if rooms.observe(&say("#lobby", id), &mut me) == Show::Print {
                printed.push(id);
            }
        }
        assert_eq!(rooms.observe(&end, &mut me), Show::Quiet);
        for id in [3, 4, 5] {
            if rooms.observe(&say("#lobby", id), &mut me) == Show::Print {
                printed.push(id);
            }
        }
        assert_eq!(printed, [3, 5, 4]);
        assert_eq!(rooms.observe(&end, &mut me), Show::CaughtUp(3));
        assert_eq!(rooms.observe(&say("#lobby", 4), &mut me), Show::Duplicate, "old ids");
        assert_eq!(rooms.observe(&end, &mut me), Show::Print, "a later history is not a catch-up");
    }
}
