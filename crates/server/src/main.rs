//! `chataosrv`: parses flags, sets up logging, loads or creates the server key, binds, and runs
//! the server until SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use chatao_server::{Config, limits};
use chatao_transport::keys::{self, KeyOrigin};
use clap::Parser;
use tracing::info;

/// The Chatao chat server.
#[derive(Debug, Parser)]
#[command(name = "chataosrv", version, about, long_about = None)]
struct Args {
    /// TCP port to listen on.
    #[arg(default_value_t = 7000)]
    port: u16,
    /// Address to listen on (all interfaces by default).
    #[arg(long, default_value = "0.0.0.0")]
    listen: IpAddr,
    /// Directory for the server's state; `serverKey/` lives here unless --key-dir says
    /// otherwise. Default: $XDG_DATA_HOME/chatao (~/.local/share/chatao).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory holding the server key (`key.pem`), created with a new key if absent.
    #[arg(long)]
    key_dir: Option<PathBuf>,
    /// The room every user starts in.
    #[arg(long, default_value = chatao_proto::DEFAULT_ROOM)]
    default_room: String,
    /// Messages replayed to a user joining a room.
    #[arg(long, default_value_t = chatao_server::limits::HISTORY_ON_JOIN)]
    history: usize,
    /// Messages kept per room (0: keep everything).
    #[arg(long, default_value_t = chatao_server::limits::RETENTION_MESSAGES)]
    retention_messages: u64,
    /// Days of history kept (0: no age limit).
    #[arg(long, default_value_t = 0)]
    retention_days: u64,
    /// Messages per second each connection may send (0: unlimited).
    #[arg(long, default_value_t = limits::RATE_PER_SEC)]
    rate_per_sec: u32,
    /// Messages a connection may send at once above the steady rate.
    #[arg(long, default_value_t = limits::BURST)]
    burst: u32,
    /// Longest message text, in bytes.
    #[arg(long, default_value_t = limits::MAX_TEXT_BYTES)]
    max_text_bytes: u32,
    /// Simultaneous connections.
    #[arg(long, default_value_t = limits::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Simultaneous connections from one IP address.
    #[arg(long, default_value_t = limits::MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: usize,
    /// Handshake attempts per IP address per minute (0: unlimited).
    #[arg(long, default_value_t = limits::HANDSHAKES_PER_MINUTE)]
    handshakes_per_minute: u32,
    /// Messages queued for one client before it is disconnected as too slow.
    #[arg(long, default_value_t = limits::MAILBOX_CAPACITY)]
    mailbox: usize,
    /// Only keys listed in FILE may connect (one fingerprint per line, `#` comments, like
    /// authorized_keys). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    allow: Option<PathBuf>,
    /// An operator's key fingerprint (repeatable).
    #[arg(long = "op", value_name = "FINGERPRINT")]
    ops: Vec<String>,
    /// Operators' key fingerprints, one per line. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    ops_file: Option<PathBuf>,
    /// Print the server key's fingerprint and exit.
    #[arg(long)]
    fingerprint: bool,
    /// Log filter, e.g. `info`, `debug`, `chatao_server=trace`. RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir().map(|d| d.join("chatao")).unwrap_or_else(|| PathBuf::from("chatao-data"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .context("invalid --log-level")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let key_dir = args.key_dir.unwrap_or_else(|| data_dir.join("serverKey"));
    let (keys, origin) = keys::load_or_generate(&key_dir)?;
    let fingerprint = keys.public().fingerprint();
    if args.fingerprint {
        writeln!(std::io::stdout(), "{fingerprint}")?;
        return Ok(());
    }
    match origin {
        KeyOrigin::Generated => {
            info!(dir = %key_dir.display(), %fingerprint, "generated a new server key")
        }
        KeyOrigin::Loaded => info!(dir = %key_dir.display(), %fingerprint, "loaded the server key"),
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;

    let addr = SocketAddr::new(args.listen, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let mut config = Config::new(keys, data_dir);
    config.default_room = chatao_proto::RoomName::parse(&args.default_room)
        .with_context(|| format!("--default-room {}", args.default_room))?;
    config.history_on_join = args.history;
    config.limits.rate_per_sec = args.rate_per_sec;
    config.limits.burst = args.burst;
    config.limits.max_text_bytes = args.max_text_bytes;
    config.max_connections = args.max_connections;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.handshakes_per_minute = args.handshakes_per_minute;
    config.mailbox_capacity = args.mailbox.max(1);
    config.access.allow_file = args.allow;
    config.access.ops_file = args.ops_file;
    for op in &args.ops {
        keys::parse_fingerprint(op).with_context(|| format!("--op {op}"))?;
    }
    config.access.ops = args.ops;
    tokio::spawn(reload_on_sighup(config.reload.clone()));
    config.retention.max_messages = args.retention_messages;
    config.retention.max_age = (args.retention_days > 0)
        .then(|| std::time::Duration::from_secs(args.retention_days * 86_400));
    chatao_server::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Notifies `reload` on every SIGHUP (`systemctl reload chatao`).
async fn reload_on_sighup(reload: std::sync::Arc<tokio::sync::Notify>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        info!("SIGHUP: reloading the access lists");
        reload.notify_one();
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    info!("signal received");
}
