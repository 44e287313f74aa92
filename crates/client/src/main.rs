//! `chatao`: parses flags, loads or creates the user's key, and runs line mode (stdin is not a
//! terminal, or `--plain`/`--json`) or the full-screen UI.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chatao_client::config;
use chatao_client::format::Format;
use chatao_client::servers::{self, Profile};
use chatao_client::tui;
use chatao_transport::keys;
use clap::{CommandFactory, Parser};

/// The Chatao chat client.
#[derive(Debug, Parser)]
#[command(name = "chatao", version, about, long_about = None)]
struct Args {
    /// Server host name or address, or a comma-separated list of servers (the nodes of one
    /// cluster) as HOST[:PORT], IPv6 in brackets: `host1:7000,[::1]:7001`. On connection loss
    /// the client moves to the next one. Default: the CHATAO_SERVERS environment variable.
    #[arg(value_name = "ADDRESS")]
    address: Option<String>,
    /// Server port, for the servers of ADDRESS written without one (omit it and they use
    /// 7000: `chatao host1:7000,host2:7000 NICKNAME`).
    #[arg(value_name = "PORT")]
    port: Option<String>,
    /// Your nickname: 1 to 32 letters, digits, '_' or '-'.
    #[arg(value_name = "NICKNAME")]
    nickname: Option<String>,
    /// Line mode even on a terminal: stdin lines are sent, events printed one per line.
    #[arg(long)]
    plain: bool,
    /// Line mode with one JSON object per event (implies --plain).
    #[arg(long)]
    json: bool,
    /// Line mode: how long to keep trying to reconnect after losing the connection before
    /// giving up (exit 1, listing the messages not delivered).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    reconnect_timeout: u64,
    /// Line mode, for bots: keep in FILE, per server and room, the id of the last message
    /// printed (written atomically after each one). Started again with the same FILE, chatao
    /// prints exactly the messages that came after, once, in order, marked as history, then
    /// goes live. A FILE that cannot be read or is not a state file stops chatao (exit 2).
    /// Default: the CHATAO_STATE environment variable.
    #[arg(long, value_name = "FILE", env = "CHATAO_STATE")]
    state: Option<PathBuf>,
    /// Line mode: print no join replay (the recent messages a room shows on joining), for
    /// one-shot senders and notifiers. Messages missed during a reconnection are still printed.
    #[arg(long)]
    no_history: bool,
    /// A quiet session, for bots and notifiers: rooms are not told when it joins or leaves,
    /// and member lists mark it as a bot (`who`).
    #[arg(long)]
    quiet: bool,
    /// A fixed set of rooms, for bots: join exactly these (comma-separated, e.g. `#ci,#ops`)
    /// instead of the rooms the server remembers for your key; the server puts this session in
    /// no other room (not even #lobby), and its joins and parts do not change what it
    /// remembers for your key.
    #[arg(long, value_name = "ROOMS", value_delimiter = ',', value_parser = parse_room)]
    rooms: Option<Vec<chatao_proto::RoomName>>,
    /// Directory of your key (`key.pem`, created if absent) and of `known_servers`.
    /// Default: $XDG_CONFIG_HOME/chatao/clientKey (~/.config/chatao/clientKey).
    #[arg(long)]
    key_dir: Option<PathBuf>,
    /// Where end-to-end encrypted rooms keep their MLS state (a directory per server and
    /// identity is made inside, files 0600). One process at a time uses a state: other
    /// `chatao` processes of the same key chat in plain rooms only, unless each is given its
    /// own DIR. Default: KEY_DIR/e2e.
    #[arg(long, value_name = "DIR")]
    e2e_dir: Option<PathBuf>,
    /// The server's expected key fingerprint (SHA256:...); any other key is refused, even on
    /// first connection.
    #[arg(long, value_name = "FINGERPRINT")]
    server_key: Option<String>,
    /// Print your own key's fingerprint and exit.
    #[arg(long)]
    fingerprint: bool,
    /// Print a completion script for SHELL and exit.
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    /// Print the manual page (roff) and exit.
    #[arg(long)]
    man: bool,
    /// The client's config file. Default: $XDG_CONFIG_HOME/chatao/config.toml
    /// (~/.config/chatao/config.toml); a missing file is the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings in force, with where each came from (default, file, env, flag),
    /// and exit: 0, or 2 with the config file's mistake (file:line: setting: what is wrong).
    #[arg(long)]
    check_config: bool,
    /// Full-screen mode: do not ring the terminal bell on mentions and private messages.
    #[arg(long)]
    no_bell: bool,
    /// Full-screen mode: leave the mouse to the terminal (its own text selection works without
    /// Shift; the wheel no longer scrolls the chat).
    #[arg(long)]
    no_mouse: bool,
    /// Full-screen mode: where logs go. Default: $XDG_STATE_HOME/chatao/chatao.log
    /// (~/.local/state/chatao/chatao.log). The level comes from CHATAO_LOG or RUST_LOG.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("chatao: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Line mode may end while a read of stdin is still blocked (the connection was given up
    // on): the runtime must not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => {
            // Errors may quote the network (a server's refusal): never raw to the terminal.
            eprintln!("chatao: {}", chatao_client::format::inert_lines(&describe(&err)));
            ExitCode::FAILURE
        }
    }
}

/// `err` and its causes, each said once: a cause whose text the message already carries (an
/// error that quotes its source, like "cannot read X: permission denied") is not repeated.
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

async fn run(args: Args) -> Result<ExitCode> {
    if let Some(shell) = args.completions {
        clap_complete::generate(shell, &mut Args::command(), "chatao", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    if args.man {
        chatao_client::man::render(Args::command(), &mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    }
    // The config file: a mistake in it stops everything (exit 2, like a usage error).
    let config_path = args.config.clone().unwrap_or_else(config::default_path);
    let mut settings = match config::Settings::load(&config_path) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("chatao: {}", chatao_client::format::inert_lines(&e.to_string()));
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(dir) = &args.key_dir {
        settings.key_dir = dir.clone();
        settings.given("key_dir", config::Origin::Flag("--key-dir"));
    }
    if args.no_bell {
        settings.bell = false;
        settings.given("bell", config::Origin::Flag("--no-bell"));
    }
    if let Some(rooms) = &args.rooms {
        settings.fixed_rooms = Some(rooms.clone());
        settings.given("fixed_rooms", config::Origin::Flag("--rooms"));
    }
    chatao_client::format::set_time_format(settings.timestamp);
    let positional: Vec<String> =
        [args.address, args.port, args.nickname].into_iter().flatten().collect();
    let env = std::env::var(servers::SERVERS_ENV).ok();
    let (positional, env) = settings.command_line(positional, env.as_deref());
    if args.check_config {
        print!("{}", settings.describe());
        return Ok(ExitCode::SUCCESS);
    }
    // The addresses are checked before a key is made: a typo should not leave files behind.
    let target = if args.fingerprint {
        None
    } else {
        Some(match servers::from_args(&positional, env.as_deref()) {
            Ok(found) => found,
            // A usage error, like clap's own: exit status 2.
            Err(e) => Args::command().error(clap::error::ErrorKind::ValueValidation, e).exit(),
        })
    };
    let key_dir = settings.key_dir.clone();
    let fixed = settings.fixed_rooms.clone();
    let (keys, _) = keys::load_or_generate(&key_dir)?;
    let Some((servers, nick)) = target else {
        let fp = keys.public().fingerprint();
        println!("{fp}");
        // What a new device's owner types on a device already connected (issue 20); on a
        // terminal only, so that scripts reading the fingerprint see just that.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!(
                "To use this key as a device of a nickname you already have, type in a chatao \
                 connected as that nickname: /device add {fp} NAME"
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let expected = match &args.server_key {
        Some(fp) => Some(keys::parse_fingerprint(fp).context("--server-key")?),
        None => None,
    };
    let profile = Profile {
        servers,
        nick,
        keys: Arc::new(keys),
        known_servers: Some(key_dir.join("known_servers")),
        expected,
        e2e_dir: Some(args.e2e_dir.unwrap_or_else(|| key_dir.join("e2e"))),
        e2e_claims: Default::default(),
        hello: chatao_proto::HelloFlags { quiet: args.quiet, fixed_rooms: fixed.is_some() },
        rooms: fixed.unwrap_or_default(),
    };
    let line_mode = args.plain
        || args.json
        || !std::io::stdin().is_terminal()
        || !std::io::stdout().is_terminal();
    let fmt = if args.json { Format::Json } else { Format::Plain };
    if line_mode {
        // Read before connecting: a state file that cannot be used stops everything, before
        // anything is printed or sent. Restarting cannot fix it: exit 2, like a usage error.
        let state = match &args.state {
            Some(path) => match chatao_client::state::State::load(path) {
                Ok(state) => Some(state),
                Err(e) => {
                    eprintln!("chatao: {}", chatao_client::format::inert_lines(&e.to_string()));
                    return Ok(ExitCode::from(2));
                }
            },
            None => None,
        };
        let opts = chatao_client::line::Options {
            fmt,
            reconnect_for: Duration::from_secs(args.reconnect_timeout),
            state,
            no_history: args.no_history,
            settings: settings.clone(),
        };
        return chatao_client::line::run(profile, opts).await;
    }
    // Logging is a convenience: a log file that cannot be opened must not stop the chat, and
    // nothing may be printed into the screen the UI is about to own.
    let log_file = args.log_file.unwrap_or_else(tui::default_log_file);
    let _ = tui::init_logging(&log_file);
    let notify = settings.notify.clone();
    let filters = settings.filters();
    let logs = settings.logs.clone();
    let seconds = settings.tui_seconds();
    let theme = settings.theme.clone();
    let url_command = settings.url_command.clone();
    let options = tui::Options {
        bell: settings.bell,
        mouse: !args.no_mouse,
        notify,
        filters,
        logs,
        seconds,
        theme,
        url_command,
    };
    tui::run(profile, options).await
}

/// A `--rooms` entry: a room name by the protocol's rules.
fn parse_room(s: &str) -> Result<chatao_proto::RoomName, String> {
    chatao_proto::RoomName::parse(s.trim()).map_err(|e| e.to_string())
}
