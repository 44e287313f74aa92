//! `chataosrv`: reads its settings (flags over a config file), sets up logging, loads or
//! creates the server key, binds, tells systemd it is ready, serves metrics if asked, and runs
//! the server until SIGINT or SIGTERM; SIGHUP reloads what can be reloaded.
//!
//! Exit status: 0 after a clean shutdown, 1 on a runtime error, 2 on invalid settings.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use chatao_server::settings::{Args, Cli, RELOADABLE, Settings};
use chatao_server::{Config, metrics};
use chatao_transport::keys::{self, KeyOrigin};
use clap::CommandFactory;
use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Changes the log filter of the running process.
type LogHandle = reload::Handle<EnvFilter, Registry>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.args.completions {
        clap_complete::generate(shell, &mut Args::command(), "chataosrv", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if cli.args.man {
        return match clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("chataosrv: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.args.check_config {
        let from = settings.config_file.as_ref().map(|p| p.display().to_string());
        // The program's output (not a log line): the merged settings, as TOML.
        let mut out = std::io::stdout().lock();
        let printed =
            writeln!(out, "# settings are valid ({})", from.as_deref().unwrap_or("no config file"))
                .and_then(|()| write!(out, "{}", settings.to_toml()));
        return if printed.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chataosrv: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chataosrv: {err:#}");
            let _ = sd_notify::notify(&[NotifyState::Status(&format!("failed: {err:#}"))]);
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli, settings: Settings) -> Result<()> {
    let log = init_logging(&settings.log_level)?;
    // Handlers first: a signal that comes while the server starts is then acted on once it
    // runs, instead of killing it (SIGHUP's default action is to terminate, too).
    let (hup, int, term) = (
        signal(SignalKind::hangup())?,
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    if let Some(file) = &settings.config_file {
        info!(file = %file.display(), "read the config file");
    }
    let (keys, origin) = keys::load_or_generate(&settings.key_dir)?;
    let fingerprint = keys.public().fingerprint();
    if cli.args.fingerprint {
        writeln!(std::io::stdout(), "{fingerprint}")?;
        return Ok(());
    }
    let dir = settings.key_dir.display();
    match origin {
        KeyOrigin::Generated => info!(%dir, %fingerprint, "generated a new server key"),
        KeyOrigin::Loaded => info!(%dir, %fingerprint, "loaded the server key"),
    }
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;

    let addr = settings.addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let mut config = Config::new(keys, data_dir);
    settings.apply(&mut config);

    let stop_metrics = CancellationToken::new();
    let metrics_task = match settings.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            let serve = metrics::serve(listener, config.metrics.clone(), stop_metrics.clone());
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    tokio::spawn(notify_ready(config.ready.clone()));
    tokio::spawn(reload_on_sighup(hup, cli, settings, config.reload.clone(), log));
    let result = chatao_server::run(listener, config, shutdown_signal(int, term)).await;
    stop_metrics.cancel();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    result?;
    Ok(())
}

/// Logs to standard error, filtered by RUST_LOG if set, else by `level` (which SIGHUP may then
/// change). Under systemd (JOURNAL_STREAM set) the journal adds the time, so the lines do not.
fn init_logging(level: &str) -> Result<LogHandle> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .context("invalid log level")?;
    let (filter, handle) = reload::Layer::new(filter);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    let fmt = if journal { fmt.without_time().boxed() } else { fmt.boxed() };
    tracing_subscriber::registry().with(filter).with(fmt).try_init()?;
    Ok(handle)
}

/// Tells systemd the server is ready once `run` says so (only under `Type=notify`, when
/// NOTIFY_SOCKET is set; otherwise this does nothing).
async fn notify_ready(ready: Arc<Notify>) {
    ready.notified().await;
    if let Err(cause) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("serving")]) {
        warn!(%cause, "could not notify systemd");
    }
}

/// On every SIGHUP (`systemctl reload chatao`): re-reads the config file, applies what can
/// change while running (the log level), names what waits for a restart, and has the server
/// re-read the allowlist and operator files. An invalid file changes nothing.
async fn reload_on_sighup(
    mut hup: Signal,
    cli: Cli,
    mut running: Settings,
    access: Arc<Notify>,
    log: LogHandle,
) {
    while hup.recv().await.is_some() {
        info!("SIGHUP: reloading");
        match cli.settings() {
            Ok(newer) => {
                let changed = running.changed(&newer);
                if changed.contains(&"log-level") && std::env::var_os("RUST_LOG").is_none() {
                    match EnvFilter::try_new(&newer.log_level).map(|f| log.reload(f)) {
                        Ok(Ok(())) => info!(level = %newer.log_level, "log level changed"),
                        _ => warn!(level = %newer.log_level, "could not change the log level"),
                    }
                    running.log_level = newer.log_level.clone();
                }
                let later: Vec<&str> =
                    changed.into_iter().filter(|k| !RELOADABLE.contains(k)).collect();
                if !later.is_empty() {
                    warn!(
                        settings = %later.join(", "),
                        "changed in the config file; they take effect at the next restart"
                    );
                }
            }
            Err(err) => {
                error!(%err, "the config file is invalid; the running settings stay in force")
            }
        }
        access.notify_one();
    }
}

/// Completes on SIGINT or SIGTERM, and tells systemd the server is stopping.
async fn shutdown_signal(mut int: Signal, mut term: Signal) {
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    info!("signal received");
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}
