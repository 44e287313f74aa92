//! `chatao`: parses flags, loads or creates the user's key, and runs line mode (stdin is not a
//! terminal, or `--plain`/`--json`) or the full-screen UI.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use chatao_client::format::Format;
use chatao_client::net::ConnectOptions;
use chatao_client::trust::Trust;
use chatao_client::tui;
use chatao_transport::keys;
use chatao_transport::known_servers::host_key;
use clap::{CommandFactory, Parser};

/// The Chatao chat client.
#[derive(Debug, Parser)]
#[command(name = "chatao", version, about, long_about = None)]
struct Args {
    /// Server host name or address.
    #[arg(required_unless_present_any = ["fingerprint", "completions", "man"])]
    address: Option<String>,
    /// Server port.
    #[arg(required_unless_present_any = ["fingerprint", "completions", "man"])]
    port: Option<u16>,
    /// Your nickname: 1 to 32 letters, digits, '_' or '-'.
    #[arg(required_unless_present_any = ["fingerprint", "completions", "man"])]
    nickname: Option<String>,
    /// Line mode even on a terminal: stdin lines are sent, events printed one per line.
    #[arg(long)]
    plain: bool,
    /// Line mode with one JSON object per event (implies --plain).
    #[arg(long)]
    json: bool,
    /// Directory of your key (`key.pem`, created if absent) and of `known_servers`.
    /// Default: $XDG_CONFIG_HOME/chatao/clientKey (~/.config/chatao/clientKey).
    #[arg(long)]
    key_dir: Option<PathBuf>,
    /// Where end-to-end encrypted rooms keep their MLS state (a directory per server and
    /// identity is made inside, files 0600). Default: KEY_DIR/e2e.
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

fn default_key_dir() -> PathBuf {
    dirs::config_dir()
        .map(|d| d.join("chatao").join("clientKey"))
        .unwrap_or_else(|| PathBuf::from("clientKey"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("chatao: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    if let Some(shell) = args.completions {
        clap_complete::generate(shell, &mut Args::command(), "chatao", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    if args.man {
        clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    }
    let key_dir = args.key_dir.clone().unwrap_or_else(default_key_dir);
    let (keys, _) = keys::load_or_generate(&key_dir)?;
    if args.fingerprint {
        println!("{}", keys.public().fingerprint());
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(host), Some(port), Some(nick)) = (args.address, args.port, args.nickname) else {
        anyhow::bail!("ADDRESS, PORT and NICKNAME are required");
    };
    let expected = match &args.server_key {
        Some(fp) => Some(keys::parse_fingerprint(fp).context("--server-key")?),
        None => None,
    };
    let opts = ConnectOptions {
        trust: Trust {
            host_port: host_key(&host, port),
            known_servers: Some(key_dir.join("known_servers")),
            expected,
        },
        host,
        port,
        nick,
        keys: Arc::new(keys),
        e2e_dir: Some(args.e2e_dir.unwrap_or_else(|| key_dir.join("e2e"))),
    };
    let line_mode = args.plain
        || args.json
        || !std::io::stdin().is_terminal()
        || !std::io::stdout().is_terminal();
    let fmt = if args.json { Format::Json } else { Format::Plain };
    if line_mode {
        return chatao_client::line::run(opts, fmt).await;
    }
    // Logging is a convenience: a log file that cannot be opened must not stop the chat, and
    // nothing may be printed into the screen the UI is about to own.
    let log_file = args.log_file.unwrap_or_else(tui::default_log_file);
    let _ = tui::init_logging(&log_file);
    tui::run(opts, tui::Options { bell: !args.no_bell, mouse: !args.no_mouse }).await
}
