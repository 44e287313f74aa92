//! The full-screen client's shell around [`App`]: the terminal (raw mode, alternate screen,
//! bracketed paste, mouse), the one event loop, the executor of [`Effect`]s and the
//! reconnection task.
//!
//! The loop waits on four sources with `select!` (never a blocking read): crossterm's
//! `EventStream`, the network actor's events, reconnection results, and a one-second tick;
//! it feeds each to [`App::update`], carries out the effects, and redraws. The terminal is
//! restored on every exit: normal, error (the guard's `Drop`), panic (a panic hook) and
//! SIGTERM/SIGHUP/SIGINT. Logs go to a file ([`init_logging`]), never to the screen.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{Stdout, Write, stdout};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, DisableMouseCapture, EnableBracketedPaste,
    EnableFocusChange, EnableMouseCapture, Event as TermEvent, EventStream, MouseEventKind,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use futures::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::app::notify::Notification;
use crate::app::{App, Config, Conn, Effect, Event, Zone};
use crate::connect::{ConnectError, Handle};
use crate::net::{Closed, NetEvent, SendError, Welcome};
use crate::servers::{Profile, is_transient};
use crate::ui;

/// How often the clock ticks (the reconnection countdown, the quit deadline).
pub const TICK: Duration = Duration::from_secs(1);
/// Network events handled in one go before the screen is redrawn (a history replay arrives
/// as a burst; drawing after each line would be wasted work).
const NET_BATCH: usize = 256;

/// TUI settings from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ring the bell on mentions and private messages.
    pub bell: bool,
    /// Capture the mouse for wheel scrolling (the terminal's own selection then needs Shift).
    pub mouse: bool,
    /// Desktop notifications (the config file's `[notify]`).
    pub notify: crate::app::notify::NotifySettings,
    /// Ignores, highlight words, hidden joins/parts (the config file's).
    pub filters: crate::filter::Filters,
    /// Chat logs (the config file's `[logs]`).
    pub logs: crate::config::Logs,
    /// Times with seconds ([`crate::config::Settings::tui_seconds`]).
    pub seconds: bool,
    /// The config file's `[theme]`.
    pub theme: crate::config::Theme,
    /// The config file's `url_command`: what opens a link for `/url N` (empty: none).
    pub url_command: Vec<String>,
}

/// Longest a notification command may run before it is killed.
const NOTIFY_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the `url_command` is waited for (to log its failure); then it is left running,
/// never killed: `firefox URL` with no browser open yet is the browser.
const URL_COMMAND_WAIT: Duration = Duration::from_secs(10);

/// Where logs go by default: `$XDG_STATE_HOME/chatao/chatao.log` (or the cache directory).
pub fn default_log_file() -> PathBuf {
    dirs::state_dir()
        .or_else(dirs::cache_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("chatao")
        .join("chatao.log")
}

/// Sends logs to `path` (appending; the directory is created), filtered by `CHATAO_LOG` or
/// `RUST_LOG` (default `info`). Errors if the file cannot be opened or a logger is set.
pub fn init_logging(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHATAO_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs the full-screen client to the end. The first connection (to the first server of the
/// list that welcomes us) happens before the terminal is taken over, so its failure is an
/// ordinary error (printed by `main`). Returns 0 when the user quits, 1 when the server had
/// ended the session (its reason is printed on stderr once the terminal is restored).
pub async fn run(profile: Profile, options: Options) -> Result<ExitCode> {
    let (first, (welcome, handle, events), skipped) = profile.connect_first().await?;
    for failure in skipped {
        warn!(failure = ?failure.to_string(), "server skipped");
    }
    info!(server = %profile.name(first), fingerprint = %welcome.server_fingerprint, "connected");
    let mut term = TerminalGuard::enter(options.mouse)?;
    let size = crossterm::terminal::size().unwrap_or((80, 24));
    let config = Config {
        servers: profile.servers.iter().map(ToString::to_string).collect(),
        first,
        bell: options.bell,
        zone: Zone::Local,
        notify: options.notify.clone(),
        filters: options.filters.clone(),
        chat_log: options.logs.enabled,
        seconds: options.seconds,
        theme: options.theme.clone(),
        url_command: options.url_command.clone(),
    };
    let (now, wall_ms) = clock();
    let app = App::new(config, &welcome, size, now, wall_ms);
    let chatlog = chat_log(&options.logs, &profile.name(first));
    let mut shell = Shell {
        profile,
        net: Some((handle, events)),
        reconnect: None,
        notifier: None,
        logs: options.logs,
        chatlog,
    };
    let result = shell.run(&mut term, app).await;
    if let Some(task) = shell.reconnect.take() {
        task.abort();
    }
    if let Some(task) = shell.notifier.take() {
        task.abort();
    }
    term.restore();
    let app = result?;
    if let Conn::Closed { reason } = &app.conn {
        eprintln!("chatao: {reason}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The chat logs of `server`, when `[logs] enabled`.
fn chat_log(logs: &crate::config::Logs, server: &str) -> Option<crate::chatlog::ChatLog> {
    logs.enabled.then(|| crate::chatlog::ChatLog::new(&logs.dir, server, logs.e2e))
}

fn clock() -> (Instant, u64) {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (Instant::now(), u64::try_from(wall.as_millis()).unwrap_or(u64::MAX))
}

fn tick() -> Event {
    let (now, wall_ms) = clock();
    Event::Tick { now, wall_ms }
}

type Connected = Result<(Welcome, Handle, mpsc::Receiver<NetEvent>), ConnectError>;

/// The loop's resources: the connection (when there is one) and the pending reconnection.
struct Shell {
    profile: Profile,
    net: Option<(Handle, mpsc::Receiver<NetEvent>)>,
    reconnect: Option<JoinHandle<()>>,
    /// The notification command running, if any: at most one at a time (overflow policy: a
    /// notification while one runs gets only the terminal's, and is logged).
    notifier: Option<JoinHandle<()>>,
    /// `[logs]`, and the chat logs of the server we are on (or reconnecting to).
    logs: crate::config::Logs,
    chatlog: Option<crate::chatlog::ChatLog>,
}

/// The next network event, or never while disconnected. An actor that vanished without
/// saying why counts as a lost connection.
async fn next_net(net: &mut Option<(Handle, mpsc::Receiver<NetEvent>)>) -> NetEvent {
    match net {
        Some((_, rx)) => rx
            .recv()
            .await
            .unwrap_or_else(|| NetEvent::Closed(Closed::Lost("the network task ended".into()))),
        None => std::future::pending().await,
    }
}

impl Shell {
    async fn run(&mut self, term: &mut TerminalGuard, mut app: App) -> Result<App> {
        let mut input = EventStream::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (connected_tx, mut connected_rx) = mpsc::channel::<Connected>(1);
        let terminated = terminated();
        tokio::pin!(terminated);
        // Mouse motion changes nothing: it is skipped without a redraw.
        let mut dirty = true;
        let mut links = ui::links::Links::default();
        loop {
            if dirty {
                let mut drawn = None;
                let frame = term
                    .terminal
                    .draw(|f| drawn = Some(ui::render(&app, f)))
                    .context("drawing the screen")?;
                // OSC 8 hyperlinks over the message pane, after ratatui's own output.
                let now = drawn.map(|d| ui::links::regions(frame.buffer, &d)).unwrap_or_default();
                let seq = links.write(frame.buffer, now);
                if !seq.is_empty() {
                    let out = term.terminal.backend_mut();
                    out.write_all(seq.as_bytes())
                        .and_then(|()| out.flush())
                        .context("drawing links")?;
                }
            }
            dirty = true;
            let mut queue = VecDeque::new();
            tokio::select! {
                ev = input.next() => match ev {
                    Some(Ok(TermEvent::Mouse(m)))
                        if matches!(m.kind, MouseEventKind::Moved | MouseEventKind::Drag(_)) =>
                    {
                        dirty = false;
                        continue;
                    }
                    Some(Ok(ev)) => queue.push_back(Event::Term(ev)),
                    Some(Err(e)) => return Err(e).context("reading the terminal"),
                    None => return Ok(app),
                },
                ev = next_net(&mut self.net) => {
                    queue.push_back(Event::Net(ev));
                    while queue.len() < NET_BATCH
                        && let Some((_, rx)) = &mut self.net
                        && let Ok(ev) = rx.try_recv()
                    {
                        queue.push_back(Event::Net(ev));
                    }
                }
                Some(result) = connected_rx.recv() => queue.push_back(match result {
                    Ok((welcome, handle, events)) => {
                        info!("reconnected");
                        self.net = Some((handle, events));
                        Event::Connected(Box::new(welcome))
                    }
                    Err(e) => {
                        warn!(cause = ?e.to_string(), "reconnection failed");
                        Event::ConnectFailed { reason: e.to_string(), retry: is_transient(&e) }
                    }
                }),
                _ = ticker.tick() => {}
                () = &mut terminated => {
                    info!("terminated by a signal");
                    if let Some((handle, _)) = &self.net {
                        let _ = handle.try_send(chatao_proto::ClientMsg::Quit { reason: None });
                    }
                    return Ok(app);
                }
            }
            queue.push_front(tick());
            while let Some(ev) = queue.pop_front() {
                if let Event::Net(NetEvent::Closed(closed)) = &ev {
                    info!(?closed, "connection closed");
                    self.net = None;
                }
                for effect in app.update(ev) {
                    match effect {
                        Effect::Send { msg, restore } => {
                            let sent = match &self.net {
                                Some((handle, _)) => handle.try_send(msg.clone()),
                                None => Err(SendError::Closed),
                            };
                            if let Err(error) = sent {
                                let msg = Some(msg);
                                queue.push_back(Event::SendFailed { error, restore, msg });
                            }
                        }
                        Effect::Request(req) => {
                            let sent = match &self.net {
                                Some((handle, _)) => handle.try_request(req),
                                None => Err(SendError::Closed),
                            };
                            if let Err(error) = sent {
                                queue.push_back(Event::SendFailed {
                                    error,
                                    restore: None,
                                    msg: None,
                                });
                            }
                        }
                        Effect::Connect { after, nick, server } => {
                            if let Some(task) = self.reconnect.take() {
                                task.abort();
                            }
                            self.profile.nick = nick;
                            self.chatlog = chat_log(&self.logs, &self.profile.name(server));
                            let profile = self.profile.clone();
                            let tx = connected_tx.clone();
                            info!(server = %profile.name(server), ?after, "reconnecting");
                            self.reconnect = Some(tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                let _ = tx.send(profile.connect(server).await).await;
                            }));
                        }
                        Effect::Bell => {
                            let mut out = stdout();
                            let _ = out.write_all(b"\x07").and_then(|()| out.flush());
                        }
                        Effect::Redraw => term.terminal.clear().context("clearing the screen")?,
                        Effect::Notify(n) => self.notify(&app.config.notify, &n),
                        Effect::OpenUrl(url) => {
                            // Not tracked: each opener is reaped by its own task (or by tokio
                            // once released), and several links may be opened at once.
                            let mut argv = app.config.url_command.clone();
                            argv.push(url);
                            let _ = spawn_quiet(
                                &argv,
                                "url_command",
                                URL_COMMAND_WAIT,
                                Overrun::Release,
                            );
                        }
                        Effect::Log { msg, e2e } => {
                            if let Some(log) = &mut self.chatlog {
                                let me = app.me.to_string();
                                // Said once in the log file; the chat goes on.
                                if let Err(e) = log.event(&me, &msg, |_| e2e) {
                                    warn!(cause = %e, "chat log");
                                }
                            }
                        }
                        Effect::SaveIgnores { path, entries } => {
                            // Not fatal: the ignores hold for this session anyway.
                            if let Err(e) = crate::config::save_ignores(&path, &entries) {
                                warn!(cause = %e, path = %path.display(), "ignore file not written");
                            }
                        }
                        Effect::Quit => return Ok(app),
                    }
                }
            }
        }
    }
}

impl Shell {
    /// Writes the terminal's notification (cleaned: [`crate::app::notify`]) and starts the
    /// notification command, if set and none is running; never through a shell.
    fn notify(&mut self, settings: &crate::app::notify::NotifySettings, n: &Notification) {
        let seq = n.escape(settings.osc, std::env::var_os("TMUX").is_some());
        if !seq.is_empty() {
            let mut out = stdout();
            let _ = out.write_all(seq.as_bytes()).and_then(|()| out.flush());
        }
        let Some(argv) = n.command(&settings.command) else { return };
        if self.notifier.as_ref().is_some_and(|t| !t.is_finished()) {
            warn!("notification command still running: this one is not run");
            return;
        }
        self.notifier =
            spawn_quiet(&argv, "notification command", NOTIFY_COMMAND_TIMEOUT, Overrun::Kill);
    }
}

/// What becomes of a command of ours still running at its deadline ([`spawn_quiet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overrun {
    /// Killed (also when its task is aborted at exit).
    Kill,
    /// Left running; tokio reaps it once it ends.
    Release,
}

/// Starts `argv` (a program, then its arguments) directly, never through a shell, with
/// stdin, stdout and stderr on the null device (nothing reaches the screen the UI owns), and
/// a task that waits for it, so that it is reaped, at most `wait`: then it is dealt with as
/// `overrun` says. `what` names it in the log, where a failure to start or a failed exit is
/// written. Returns the waiting task, or `None` when `argv` is empty or it did not start.
fn spawn_quiet(
    argv: &[String],
    what: &'static str,
    wait: Duration,
    overrun: Overrun,
) -> Option<JoinHandle<()>> {
    let (program, args) = argv.split_first()?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(overrun == Overrun::Kill);
    match cmd.spawn() {
        Ok(mut child) => Some(tokio::spawn(async move {
            match tokio::time::timeout(wait, child.wait()).await {
                Ok(Ok(status)) if !status.success() => warn!(%status, "{what} failed"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(cause = %e, "{what}: cannot wait for it"),
                Err(_) if overrun == Overrun::Kill => warn!(?wait, "{what} killed: too slow"),
                Err(_) => info!(?wait, "{what} still running: left to run"),
            }
        })),
        Err(e) => {
            warn!(command = %program, cause = %e, "cannot run the {what}");
            None
        }
    }
}

/// Resolves on SIGTERM, SIGHUP (the terminal went away) or SIGINT.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::hangup()))
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = hup.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Owns the terminal while the UI runs; restores it when dropped.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    restored: bool,
}

impl TerminalGuard {
    /// Raw mode, alternate screen, bracketed paste and (if asked) the mouse; a panic hook
    /// that undoes it all before the panic message is printed.
    fn enter(mouse: bool) -> Result<TerminalGuard> {
        install_panic_hook();
        let setup = || -> Result<Terminal<CrosstermBackend<Stdout>>> {
            enable_raw_mode().context("entering raw mode")?;
            let mut out = stdout();
            execute!(out, EnterAlternateScreen, EnableBracketedPaste, EnableFocusChange)?;
            if mouse {
                execute!(out, EnableMouseCapture)?;
            }
            let mut terminal = Terminal::new(CrosstermBackend::new(out))?;
            terminal.clear()?;
            Ok(terminal)
        };
        match setup() {
            Ok(terminal) => Ok(TerminalGuard { terminal, restored: false }),
            Err(e) => {
                restore_terminal();
                Err(e)
            }
        }
    }

    fn restore(&mut self) {
        if !self.restored {
            self.restored = true;
            restore_terminal();
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Undoes everything [`TerminalGuard::enter`] did; harmless if some of it was not done.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        stdout(),
        DisableMouseCapture,
        DisableBracketedPaste,
        DisableFocusChange,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |panic| {
            restore_terminal();
            tracing::error!(%panic, "panic");
            previous(panic);
        }));
    });
}
