//! `chataosrv`: reads its settings (flags over a config file) and checks them and what they
//! name, sets up logging, binds, then loads or creates the server key and the data directory,
//! tells systemd it is ready, serves metrics if asked, and runs the server until SIGINT or
//! SIGTERM; SIGHUP reloads what can be reloaded. Nothing is created before the settings are
//! known to be good and the addresses are bound.
//!
//! Exit status: 0 after a clean shutdown, 1 on a runtime error, 2 on invalid settings (every
//! mistake printed).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use chatao_server::settings::{
    self, Args, Cli, RELOADABLE, Settings, SettingsErrors, listen_error,
};
use chatao_server::{Config, Runtime, metrics};
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

/// `--features dhat-heap`: every allocation counted, for the heap profile in BENCHMARKS.md.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    // Written to dhat-heap.json when main returns (a clean shutdown: SIGTERM or SIGINT).
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    if let Some(shell) = cli.args.completions {
        clap_complete::generate(shell, &mut Args::command(), "chataosrv", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if cli.args.man {
        return match settings::man::render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    // --fingerprint needs only the key: not the files, directories and addresses of a start.
    let checked = if cli.args.fingerprint && !cli.args.check_config {
        cli.settings().map(|settings| (settings, Vec::new()))
    } else {
        cli.check().map(|checked| (checked.settings, checked.notes))
    };
    let (settings, notes) = match checked {
        Ok(checked) => checked,
        Err(errors) => {
            print_mistakes(&errors);
            return ExitCode::from(2);
        }
    };
    if cli.args.check_config {
        for note in &notes {
            eprintln!("chataosrv: note: {note}");
        }
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
            let text = causes(&err);
            eprintln!("chataosrv: {text}");
            let _ = sd_notify::notify(&[NotifyState::Status(&format!("failed: {text}"))]);
            ExitCode::FAILURE
        }
    }
}

/// Every mistake, one per line, then how many when there are several.
fn print_mistakes(errors: &SettingsErrors) {
    for err in &errors.0 {
        eprintln!("chataosrv: {err}");
    }
    if errors.0.len() > 1 {
        eprintln!("chataosrv: {} mistakes; nothing was started or created", errors.0.len());
    }
}

/// `err` and its causes, each said once: a cause whose text the message already holds (an
/// I/O error wrapped with its own text, say) is left out, as is std's "(os error N)".
fn causes(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => chatao_server::access::io_reason(io),
            None => cause.to_string(),
        };
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn serve(cli: Cli, settings: Settings) -> Result<()> {
    let log = init_logging(&settings.values.log_level)?;
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
    if cli.args.fingerprint {
        let (keys, _) = keys::load_or_generate(&settings.key_dir())?;
        writeln!(std::io::stdout(), "{}", keys.public().fingerprint())?;
        return Ok(());
    }
    // The addresses first: a port in use must not leave a new key and database behind.
    let addr = settings.addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow!(listen_error("", addr, &e)))?;
    let metrics_listener = match settings.values.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow!(listen_error("for metrics ", addr, &e)))?,
        ),
        None => None,
    };
    let (keys, origin) = keys::load_or_generate(&settings.key_dir())?;
    let fingerprint = keys.public().fingerprint();
    let key_dir = settings.key_dir();
    let dir = key_dir.display();
    match origin {
        KeyOrigin::Generated => info!(%dir, %fingerprint, "generated a new server key"),
        KeyOrigin::Loaded => info!(%dir, %fingerprint, "loaded the server key"),
    }
    let data_dir = settings.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let mut config = Config::new(keys, data_dir);
    settings.apply(&mut config);
    let runtime = Runtime::default();

    let stop_metrics = CancellationToken::new();
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(metrics::serve(listener, runtime.metrics.clone(), stop_metrics.clone()))
    });
    tokio::spawn(notify_ready(runtime.ready.clone()));
    tokio::spawn(reload_on_sighup(hup, cli, settings, runtime.reload.clone(), log));
    let result = chatao_server::run(listener, config, runtime, shutdown_signal(int, term)).await;
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
                    match EnvFilter::try_new(&newer.values.log_level).map(|f| log.reload(f)) {
                        Ok(Ok(())) => info!(level = %newer.values.log_level, "log level changed"),
                        _ => {
                            warn!(level = %newer.values.log_level, "could not change the log level")
                        }
                    }
                    running.values.log_level = newer.values.log_level.clone();
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
            Err(errors) => {
                let err = errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
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
