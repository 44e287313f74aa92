//! Line mode, for scripts, bots and pipes: each stdin line is a message or a command, each
//! event one stdout line.
//!
//! The promise: each message line (`say`, `/me`, `/msg`) is delivered exactly once, in the
//! order written, or listed as not delivered. Every one gets a client id ([`crate::core`]) and
//! is kept until the server's echo carrying that id (or a refusal carrying it) comes back;
//! after a lost connection it is sent again, same id, after the catch-up, and the server
//! delivers a repeated id at most once. At end of input the client waits until every line is
//! acknowledged, only then says `quit` (and only then does [`GOODBYE_TIMEOUT`] start), and
//! exits 0 on the server's goodbye. Otherwise (a line refused for good, no server taking us
//! back within the reconnection time, a `bye` that ends the session) it exits 1 and lists on
//! stderr each line not delivered (JSON: a `lost` event with `unsent`).
//!
//! A lost connection (or a server's `bye` with code `shutdown`) is not the end: the client
//! says so (a notice line, or a `disconnected` JSON event), reconnects to the next server of
//! the list as the TUI does ([`crate::servers`]), says where (`reconnected`), and catches up
//! on every room it was in, printing each missed message once (missed messages come marked as
//! history, in the order they arrive). Lines read meanwhile wait ([`crate::core::WAITING`]).
//!
//! For bots (issue 22): with a state file ([`Options::state`], `--state`) line mode keeps, per
//! server key and room, the id of the last message it printed ([`crate::state`]), written
//! after each one. Started again with it, it asks for exactly what came after
//! ([`Core::resume_from`]): each of those is printed once, marked as history, in id order
//! (page after page of `history`, however many were missed), then live messages; the same
//! order holds after a reconnection ([`Core::set_ordered`]). `--no-history`
//! ([`Options::no_history`]) prints no join replay (catch-ups are still printed). Once the
//! catch-up after a (re)connection is over, a `ready` event says that live traffic follows.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chatao_proto::{ClientMsg, ErrorCode, ServerMsg, sanitize_line};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::chatlog::ChatLog;
use crate::command::{self, Input};
use crate::connect::{ConnectError, Connected, Handle};
use crate::core::{Ack, Core, Show};
use crate::filter::{Added, Ignores, Smart, is_mention};
use crate::format::{self, Format, Undelivered};
use crate::net::{self, Closed, NetEvent, SendError, Welcome};
use crate::servers::{Profile, is_transient};
use crate::state::State;
use crate::trust::Trusted;

/// How long the client waits for the server's goodbye once it said `quit`, which it says only
/// when every line was acknowledged.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines parsed by the stdin task, waiting for the main loop. Overflow policy: the stdin task
/// waits.
const FROM_STDIN: usize = 64;

/// What the stdin task hands the main loop.
#[derive(Debug)]
enum FromStdin {
    /// A message for the server.
    Send(ClientMsg),
    /// A request for the E2E layer (`/remove`, `/safety`).
    Request(crate::e2e::Request),
    /// A line to print (help, a parse error, the current room).
    Notice(String),
    /// End of input (or `/quit`), with the reason to give.
    Quit(Option<String>),
    /// `/ignore` (`None`: list), `/unignore` (`false`).
    Ignore(Option<String>, bool),
}

/// One turn of the main loop.
enum Step {
    Net(NetEvent),
    /// The outbox has room again.
    Ready,
    Stdin(Option<FromStdin>),
    Reconnected(Result<(usize, Connected), ConnectError>),
    /// A temporarily refused message is due again.
    Retry,
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

/// How line mode runs.
#[derive(Debug)]
pub struct Options {
    pub fmt: Format,
    /// How long to keep trying to reconnect before giving up.
    pub reconnect_for: Duration,
    /// Where the last message printed in each room is kept (`--state`), read already.
    pub state: Option<State>,
    /// Print no join replay (`--no-history`).
    pub no_history: bool,
    /// The config file's settings: ignores, highlights, hidden joins/parts, chat logs.
    pub settings: crate::config::Settings,
}

/// Runs line mode to the end. Returns the exit code: 0 when every line was delivered and the
/// server said goodbye, 1 otherwise (see the module's documentation). A first connection that
/// fails is an error, and so is a state file that cannot be written.
pub async fn run(profile: Profile, opts: Options) -> Result<ExitCode> {
    let Options { fmt, reconnect_for, state, no_history, settings } = opts;
    let (on, (welcome, handle, events), skipped) = profile.connect_first().await?;
    for failure in skipped {
        eprintln!("chatao: skipped {}", format::inert_lines(&failure));
    }
    let mut out = tokio::io::stdout();
    note_trust(&profile, on, &welcome);
    emit(&mut out, &format::welcome(fmt, &welcome, &profile.name(on))).await?;
    let (stdin_tx, stdin_rx) = mpsc::channel(FROM_STDIN);
    tokio::spawn(read_stdin(first_room(&welcome.rooms, welcome.fixed_rooms), fmt, stdin_tx));
    let mut core = Core::new(welcome.nick.clone(), on);
    if let Some(state) = &state {
        core.resume_from(state.places(&welcome.server_fingerprint));
    }
    core.join_remembered(&welcome.rooms, welcome.fixed_rooms);
    let view = View::new(settings, &profile.name(on));
    let mut session = Session {
        view,
        state,
        server_key: welcome.server_fingerprint.clone(),
        no_history,
        ready_due: true,
        profile,
        fmt,
        reconnect_for,
        out,
        handle: Some(handle),
        events: Some(events),
        reconnect: None,
        deadline: None,
        last_failure: None,
        core,
        refused: vec![],
        stdin: stdin_rx,
        quit: None,
        quit_sent: false,
        blocked: false,
        goodbye: None,
    };
    let result = session.run().await;
    if let Some(task) = session.reconnect.take() {
        task.abort();
    }
    result
}

/// What the config asks line mode to hide, mark and log.
struct View {
    settings: crate::config::Settings,
    ignores: Ignores,
    /// `ignores.toml`, beside the config file: what `/ignore` and `/unignore` change.
    ignores_file: std::path::PathBuf,
    /// The entries last written to `ignores_file`.
    saved: Vec<String>,
    smart: Smart,
    log: Option<ChatLog>,
    /// Rooms the server says are end-to-end encrypted (`members` with `e2e`).
    e2e_rooms: std::collections::HashSet<String>,
}

impl View {
    fn new(settings: crate::config::Settings, server: &str) -> View {
        let ignores_file = settings
            .path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(crate::config::IGNORES_FILE);
        let saved = match crate::config::load_ignores(&ignores_file) {
            Ok(list) => list,
            Err(e) => {
                eprintln!("chatao: {}", format::inert_lines(&e.to_string()));
                Vec::new()
            }
        };
        let ignores = Ignores::new(settings.ignore.iter().chain(saved.iter()).map(String::as_str));
        let mut view = View {
            ignores,
            ignores_file,
            saved,
            smart: Smart::default(),
            log: None,
            e2e_rooms: Default::default(),
            settings,
        };
        view.connected(server);
        view
    }

    /// On (re)connection to `server`: its chat logs.
    fn connected(&mut self, server: &str) {
        let logs = &self.settings.logs;
        self.log = logs.enabled.then(|| ChatLog::new(&logs.dir, server, logs.e2e));
    }

    /// Learns from `msg` (keys, renames, E2E rooms, who spoke) and says whether it is hidden,
    /// and whether it is a mention.
    fn observe(&mut self, me: &str, fmt: Format, msg: &ServerMsg) -> (bool, bool) {
        let now = std::time::Instant::now();
        let ignored =
            |ig: &Ignores, from: &str| !from.eq_ignore_ascii_case(me) && ig.ignores_nick(from);
        match msg {
            ServerMsg::Members { room, members, e2e, .. } => {
                for m in members {
                    self.ignores.learn(m.nick.as_str(), &m.fingerprint);
                }
                if *e2e {
                    self.e2e_rooms.insert(room.to_string());
                }
                self.save_ignores();
                (false, false)
            }
            ServerMsg::Whois { nick, fingerprint, .. }
            | ServerMsg::KeyPackage { nick, fingerprint, .. } => {
                self.ignores.learn(nick.as_str(), fingerprint);
                self.save_ignores();
                (false, false)
            }
            ServerMsg::Join { room, nick, fingerprint } => {
                self.ignores.learn(nick.as_str(), fingerprint);
                self.save_ignores();
                (self.hides_join(fmt, room.as_str(), nick.as_str(), me, now), false)
            }
            ServerMsg::Leave { room, nick, .. } => {
                (self.hides_join(fmt, room.as_str(), nick.as_str(), me, now), false)
            }
            ServerMsg::NickChange { old, new } => {
                let hide = fmt == Format::Plain
                    && !old.as_str().eq_ignore_ascii_case(me)
                    && self.smart.hides_rename(self.settings.hide_joins_parts, old.as_str(), now);
                self.ignores.rename(old.as_str(), new.as_str());
                self.smart.rename(old.as_str(), new.as_str());
                (hide, false)
            }
            ServerMsg::Message { room, from, text, history, .. } => {
                if ignored(&self.ignores, from.as_str()) {
                    return (true, false);
                }
                if !history {
                    self.smart.spoke(room.as_str(), from.as_str(), now);
                }
                let own = from.as_str().eq_ignore_ascii_case(me);
                (false, !own && is_mention(text, me, &self.settings.highlight))
            }
            ServerMsg::Private { from, text, .. } => {
                if ignored(&self.ignores, from.as_str()) {
                    return (true, false);
                }
                let own = from.as_str().eq_ignore_ascii_case(me);
                (false, !own && is_mention(text, me, &self.settings.highlight))
            }
            _ => (false, false),
        }
    }

    /// Joins and parts are hidden in plain output only (JSON consumers, bots, get them all).
    fn hides_join(
        &self,
        fmt: Format,
        room: &str,
        nick: &str,
        me: &str,
        now: std::time::Instant,
    ) -> bool {
        fmt == Format::Plain
            && !nick.eq_ignore_ascii_case(me)
            && self.smart.hides(self.settings.hide_joins_in(room), room, nick, now)
    }

    /// Writes the ignore file when the entries changed (a nickname resolved to its key).
    fn save_ignores(&mut self) {
        let entries = self.ignores.entries();
        let from_config: std::collections::BTreeSet<&String> =
            self.settings.ignore.iter().collect();
        // The config's own entries stay in the config (unless resolved to a key).
        let own: Vec<String> = entries.into_iter().filter(|e| !from_config.contains(e)).collect();
        if own == self.saved {
            return;
        }
        if let Err(e) = crate::config::save_ignores(&self.ignores_file, &own) {
            eprintln!("chatao: cannot write {}: {e}", self.ignores_file.display());
        }
        self.saved = own;
    }

    /// Writes `msg` to its chat log; a failure is said once on stderr.
    fn log(&mut self, me: &str, msg: &ServerMsg) {
        let Some(log) = &mut self.log else { return };
        let e2e = &self.e2e_rooms;
        if let Err(e) = log.event(me, msg, |room| e2e.contains(room)) {
            eprintln!("chatao: {}", format::inert_lines(&e.to_string()));
        }
    }

    /// `/ignore` and `/unignore`: the lines to print, and a nickname to look up.
    fn ignore(
        &mut self,
        target: Option<String>,
        add: bool,
        fmt: Format,
    ) -> (Vec<String>, Option<String>) {
        let Some(target) = target else {
            if self.ignores.is_empty() {
                return (vec![format::notice(fmt, "nobody is ignored")], None);
            }
            let lines = self
                .ignores
                .entries()
                .into_iter()
                .map(|e| {
                    let nicks = self.ignores.nicks_of(&e);
                    let also = if nicks.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", nicks.join(", "))
                    };
                    format::notice(fmt, &format!("ignored: {e}{also}"))
                })
                .collect();
            return (lines, None);
        };
        let mut whois = None;
        let text = if add {
            match self.ignores.add(&target) {
                Added::Key(fp) => format!("ignoring {target} (key {fp})"),
                Added::Nick(n) => {
                    whois = Some(n.clone());
                    format!("ignoring {n} (by nickname until their key is known)")
                }
                Added::Already => format!("{target} is already ignored"),
            }
        } else if self.ignores.remove(&target) {
            format!("no longer ignoring {target}")
        } else {
            format!(
                "{target} was not ignored (a nickname or fingerprint of the config's ignore list stays)"
            )
        };
        self.save_ignores();
        (vec![format::notice(fmt, &text)], whois)
    }
}

/// Line mode's state between two steps.
struct Session {
    view: View,
    /// The place kept across restarts, when there is a state file.
    state: Option<State>,
    /// The key of the server we are (or were last) on: what the state file names it by.
    server_key: chatao_proto::Fingerprint,
    no_history: bool,
    /// `ready` is said once the (re)connection's catch-up is over.
    ready_due: bool,
    profile: Profile,
    fmt: Format,
    reconnect_for: Duration,
    out: tokio::io::Stdout,
    /// The actor's handle and events, while connected.
    handle: Option<Handle>,
    events: Option<mpsc::Receiver<NetEvent>>,
    /// The reconnection attempt under way, to the server it names.
    reconnect: Option<JoinHandle<Result<(usize, Connected), ConnectError>>>,
    /// While reconnecting: when to give up.
    deadline: Option<Instant>,
    last_failure: Option<String>,
    /// The rooms, the catch-up, the messages not yet acknowledged, the reconnection schedule.
    core: Core,
    /// Lines refused for good, with why. Bounded by the input's message lines.
    refused: Vec<Undelivered>,
    stdin: mpsc::Receiver<FromStdin>,
    /// End of input was read: `quit` (with this reason) once everything is acknowledged.
    quit: Option<Option<String>>,
    quit_sent: bool,
    /// The actor's outbox was full at the last hand-over: wait for room.
    blocked: bool,
    /// Set once `quit` was handed to the actor: the server's goodbye is due by then.
    goodbye: Option<Instant>,
}

impl Session {
    async fn run(&mut self) -> Result<ExitCode> {
        loop {
            self.flush();
            let reading = self.quit.is_none() && self.core.can_take();
            let retry = self.core.next_retry().map(Instant::from_std);
            let step = tokio::select! {
                biased;
                ev = next_event(&mut self.events) => Step::Net(ev),
                res = join_opt(&mut self.reconnect) => Step::Reconnected(res),
                ok = ready(self.handle.as_ref()), if self.has_to_send() => {
                    if !ok {
                        // The actor is gone; its `Closed` event is on its way.
                        self.handle = None;
                    }
                    Step::Ready
                }
                line = self.stdin.recv(), if reading => Step::Stdin(line),
                _ = sleep_until_opt(retry), if self.handle.is_some() => Step::Retry,
                _ = sleep_until_opt(self.goodbye) => Step::GoodbyeTimeout,
            };
            match step {
                Step::Net(NetEvent::Msg(msg)) => {
                    if let Some(code) = self.on_server(msg).await? {
                        return Ok(code);
                    }
                }
                Step::Net(NetEvent::E2e { text, warning }) => {
                    self.emit(&format::e2e(self.fmt, &text, warning)).await?;
                }
                Step::Net(NetEvent::Unsent(msgs)) => self.core.on_unsent(msgs),
                Step::Net(NetEvent::Closed(closed)) => {
                    if let Some(code) = self.on_closed(closed).await? {
                        return Ok(code);
                    }
                }
                Step::Ready | Step::Retry => {}
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
                    self.core.submit(msg);
                }
                Step::Stdin(Some(FromStdin::Quit(reason))) => self.quit = Some(reason),
                Step::Stdin(Some(FromStdin::Ignore(target, add))) => {
                    let (lines, whois) = self.view.ignore(target, add, self.fmt);
                    for line in lines {
                        self.emit(&line).await?;
                    }
                    if let (Some(nick), Some(handle)) = (whois, &self.handle) {
                        // The key, so that the ignore holds through a rename.
                        let _ = handle.try_send(ClientMsg::Whois { nick });
                    }
                }
                Step::Stdin(None) => {
                    if self.quit.is_none() {
                        self.quit = Some(None);
                    }
                }
                Step::Reconnected(Ok((i, (welcome, handle, events)))) => {
                    self.on_reconnected(i, welcome, handle, events).await?;
                }
                Step::Reconnected(Err(e)) => {
                    if let Some(code) = self.on_connect_failed(e).await? {
                        return Ok(code);
                    }
                }
                Step::GoodbyeTimeout => {
                    eprintln!(
                        "chatao: the server did not say goodbye within {}s",
                        GOODBYE_TIMEOUT.as_secs()
                    );
                    return self.fail("the server did not say goodbye").await;
                }
            }
        }
    }

    /// Whether something waits for room in the actor's outbox (the last hand-over found it
    /// full).
    fn has_to_send(&self) -> bool {
        self.blocked
    }

    /// Hands the core's records to the actor while it takes them without waiting; once input
    /// is over and everything is acknowledged, `quit`.
    fn flush(&mut self) {
        self.blocked = false;
        let Some(handle) = &self.handle else { return };
        let now = Instant::now().into_std();
        while let Some(msg) = self.core.pop_send(now) {
            if let Err(SendError::Full | SendError::Closed) = handle.try_send(msg.clone()) {
                self.core.unpop(msg);
                self.blocked = true;
                return;
            }
        }
        if let Some(reason) = &self.quit
            && !self.quit_sent
            && self.core.all_acked()
        {
            match handle.try_send(ClientMsg::Quit { reason: reason.clone() }) {
                Ok(()) => {
                    self.quit_sent = true;
                    self.goodbye = Some(Instant::now() + GOODBYE_TIMEOUT);
                }
                Err(_) => self.blocked = true,
            }
        }
    }

    /// Prints what `msg` calls for. `Some` exit code when that is the end (the state file
    /// could not be written).
    async fn on_server(&mut self, msg: ServerMsg) -> Result<Option<ExitCode>> {
        let heard = self.core.observe(&msg, Instant::now().into_std());
        let me = self.core.me().to_string();
        let (hidden, mention) = self.view.observe(&me, self.fmt, &msg);
        let ignored =
            hidden && matches!(msg, ServerMsg::Message { .. } | ServerMsg::Private { .. });
        if !ignored && !matches!(heard.show, Show::Duplicate | Show::Held) {
            self.view.log(&me, &msg);
        }
        if let Some(Ack::Refused { msg: refused, code, message }) = heard.ack {
            let why = format!("{} ({code})", sanitize_line(&message));
            self.refused.push(Undelivered { msg: refused, why: Some(why) });
        }
        // `--no-history`: a join's replay is not printed (a catch-up's missed messages are).
        let replay = matches!(
            (&msg, &heard.show),
            (ServerMsg::Message { history: true, .. }, Show::Print { missed: false })
                | (ServerMsg::HistoryEnd { .. }, Show::Print { .. })
        );
        if let Show::CaughtUp(_) = heard.show {
            // An ordered catch-up's held messages come first, in order.
            for held in self.core.take_released() {
                let (hidden, mention) = self.view.observe(&me, self.fmt, &held);
                if !hidden {
                    self.view.log(&me, &held);
                }
                let line =
                    if hidden { None } else { format::event_marked(self.fmt, &held, mention) };
                if let Some(line) = line {
                    self.emit(&line).await?;
                    if let Err(e) = self.printed(&held) {
                        return self.state_failed(e).await.map(Some);
                    }
                }
            }
        }
        let line = match (heard.show, self.fmt) {
            (Show::Duplicate | Show::Held, _) | (Show::Quiet, Format::Plain) => None,
            _ if replay && self.no_history => None,
            // Ignored, or a hidden join/part (its place in the state file still moves).
            _ if hidden => {
                if let Err(e) = self.printed(&msg) {
                    return self.state_failed(e).await.map(Some);
                }
                None
            }
            // The server's count includes what was printed already; say what was new.
            (Show::CaughtUp(n), Format::Plain) => {
                let room = match &msg {
                    ServerMsg::HistoryEnd { room, .. } => room.to_string(),
                    _ => String::new(),
                };
                let s = if n == 1 { "" } else { "s" };
                Some(format::notice(self.fmt, &format!("{room}: caught up: {n} missed message{s}")))
            }
            _ => format::event_marked(self.fmt, &msg, mention),
        };
        if let Some(line) = line {
            self.emit(&line).await?;
            if let Err(e) = self.printed(&msg) {
                return self.state_failed(e).await.map(Some);
            }
        }
        if self.ready_due
            && matches!(msg, ServerMsg::HistoryEnd { .. })
            && !self.core.any_catching_up()
        {
            self.ready_due = false;
            self.emit(&format::ready(self.fmt)).await?;
        }
        Ok(None)
    }

    /// `msg` was printed: a room message moves the state file's place in its room.
    fn printed(&mut self, msg: &ServerMsg) -> Result<(), crate::state::StateError> {
        if let (Some(state), ServerMsg::Message { room, id, .. }) = (&mut self.state, msg) {
            state.printed(&self.server_key, room.as_str(), *id)?;
        }
        Ok(())
    }

    /// The state file could not be written: going on would print what a restart prints
    /// again, so line mode stops (exit 1, listing what was not delivered).
    async fn state_failed(&mut self, e: crate::state::StateError) -> Result<ExitCode> {
        let why = e.to_string();
        eprintln!("chatao: {}", format::inert_lines(&why));
        self.core.on_closed_for_good();
        self.fail(&why).await
    }

    /// The connection ended: the exit code if that is the end, else reconnection starts.
    async fn on_closed(&mut self, closed: Closed) -> Result<Option<ExitCode>> {
        self.handle = None;
        self.events = None;
        self.goodbye = None;
        let reason = match closed {
            Closed::Bye { code: None, .. } if self.quit_sent => {
                self.emit(&format::closed(self.fmt, &closed)).await?;
                if self.refused.is_empty() && self.core.all_acked() {
                    return Ok(Some(ExitCode::SUCCESS));
                }
                return self.fail("some lines were not delivered").await.map(Some);
            }
            Closed::Bye { code: Some(ErrorCode::Shutdown), reason } => {
                format!("the server is shutting down: {reason}")
            }
            Closed::Bye { code, reason } => {
                let bye = Closed::Bye { code, reason: reason.clone() };
                self.emit(&format::closed(self.fmt, &bye)).await?;
                self.core.on_closed_for_good();
                let why = match code {
                    Some(ErrorCode::TooSlow) => "disconnected: too slow".to_owned(),
                    Some(ErrorCode::RateLimited) => format!(
                        "disconnected for sending too fast: {} message(s) were not sent",
                        self.core.unacked().len()
                    ),
                    Some(code) => {
                        format!("disconnected by the server: {} ({code})", sanitize_line(&reason))
                    }
                    None => format!("disconnected by the server: {}", sanitize_line(&reason)),
                };
                eprintln!("chatao: {why}");
                return self.fail(&why).await.map(Some);
            }
            Closed::Lost(reason) => reason,
        };
        let server = self.profile.name(self.core.on());
        self.emit(&format::disconnected(self.fmt, &server, &reason)).await?;
        self.deadline = Some(Instant::now() + self.reconnect_for);
        // Until a reconnection fails, the loss is the last failure: a give-up before any
        // attempt (a short --reconnect-timeout) still says why the session ended.
        self.last_failure = Some(reason);
        let attempt = self.core.on_lost(self.profile.servers.len());
        self.try_connect(attempt).await
    }

    /// Starts reconnection attempt `(wait, server)`, or gives up if it would start too late.
    async fn try_connect(&mut self, (wait, server): (Duration, usize)) -> Result<Option<ExitCode>> {
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        if Instant::now() + wait >= deadline {
            let give_up = GiveUp::Timeout(self.last_failure.take());
            return self.give_up(give_up).await.map(Some);
        }
        self.profile.nick = self.core.me().to_string();
        let profile = self.profile.clone();
        self.reconnect = Some(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            match tokio::time::timeout_at(deadline, profile.connect(server)).await {
                Ok(result) => result.map(|c| (server, c)),
                Err(_) => Err(net::ConnectError::Timeout { addr: profile.name(server) }.into()),
            }
        }));
        Ok(None)
    }

    async fn on_connect_failed(&mut self, e: ConnectError) -> Result<Option<ExitCode>> {
        if !is_transient(&e) {
            return self.give_up(GiveUp::Final(e)).await.map(Some);
        }
        tracing::warn!(cause = ?e.to_string(), "reconnection failed");
        self.last_failure = Some(e.to_string());
        let attempt = self.core.on_connect_failed(self.profile.servers.len());
        self.try_connect(attempt).await
    }

    async fn on_reconnected(
        &mut self,
        i: usize,
        welcome: Welcome,
        handle: Handle,
        events: mpsc::Receiver<NetEvent>,
    ) -> Result<()> {
        note_trust(&self.profile, i, &welcome);
        let line = format::reconnected(self.fmt, &welcome, &self.profile.name(i));
        self.emit(&line).await?;
        // The catch-up first, then every unacknowledged line again (same ids), then what
        // waits, then `quit` if input is over (it is sent again if the loss took it along).
        self.core.on_connected(welcome.nick.clone(), i);
        self.view.connected(&self.profile.name(i));
        self.core.join_remembered(&welcome.rooms, welcome.fixed_rooms);
        self.server_key = welcome.server_fingerprint.clone();
        self.ready_due = true;
        self.quit_sent = false;
        self.deadline = None;
        self.handle = Some(handle);
        self.events = Some(events);
        Ok(())
    }

    /// No server took us back: says why and what was not delivered, and fails.
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
        eprintln!("chatao: {}", format::inert_lines(&reason));
        self.fail(&format!("gave up reconnecting: {reason}")).await
    }

    /// The end without the promise kept: the `lost` event and, on stderr, each line not
    /// delivered (refused for good, or never acknowledged); exit 1.
    async fn fail(&mut self, reason: &str) -> Result<ExitCode> {
        // Lines read but not yet taken count as undelivered too.
        while let Ok(next) = self.stdin.try_recv() {
            if let FromStdin::Send(msg) = next {
                self.core.submit(msg);
            }
        }
        let mut lost = std::mem::take(&mut self.refused);
        lost.extend(
            self.core
                .take_undelivered()
                .into_iter()
                .filter(format::is_said)
                .map(|msg| Undelivered { msg, why: None }),
        );
        self.emit(&format::lost(self.fmt, reason, &lost)).await?;
        if !lost.is_empty() {
            eprintln!("chatao: {} message(s) were not delivered:", lost.len());
            for u in &lost {
                match &u.why {
                    Some(why) => eprintln!("  {} (refused: {why})", format::unsent(&u.msg)),
                    None => eprintln!("  {}", format::unsent(&u.msg)),
                }
            }
        }
        Ok(ExitCode::FAILURE)
    }

    async fn emit(&mut self, line: &str) -> Result<()> {
        emit(&mut self.out, line).await
    }
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
async fn ready(handle: Option<&Handle>) -> bool {
    match handle {
        Some(h) => h.ready().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The reconnection attempt's outcome, once there is one; never while none is under way.
async fn join_opt(
    task: &mut Option<JoinHandle<Result<(usize, Connected), ConnectError>>>,
) -> Result<(usize, Connected), ConnectError> {
    let Some(t) = task else { return std::future::pending().await };
    let result = t.await;
    *task = None;
    match result {
        Ok(r) => r,
        Err(e) => Err(net::ConnectError::Protocol {
            addr: String::new(),
            detail: format!("the reconnection task failed: {e}"),
        }
        .into()),
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
/// `/quit`) it says [`FromStdin::Quit`]; dropping `to_loop` tells the main loop that input is
/// over.
/// The room text goes to before any `/join` or `/switch`: the default room when the server
/// puts us there (no rooms remembered, or the default room among them), else the first of a
/// fixed set (`--rooms`) or of the remembered rooms.
fn first_room(rooms: &[chatao_proto::RoomName], fixed: bool) -> String {
    let lobby = chatao_proto::RoomName::lobby();
    match rooms.first() {
        Some(first) if fixed || !rooms.contains(&lobby) => first.as_str().to_owned(),
        _ => lobby.as_str().to_owned(),
    }
}

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
            Input::Ignore(target) => {
                let _ = to_loop.send(FromStdin::Ignore(target, true)).await;
                continue;
            }
            Input::Unignore(target) => {
                let _ = to_loop.send(FromStdin::Ignore(Some(target), false)).await;
                continue;
            }
            Input::Search(_) | Input::Url(_) => {
                let _ = to_loop.send(error("/search and /url are for the full-screen UI")).await;
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
    let _ = to_loop.send(FromStdin::Quit(reason)).await;
}
