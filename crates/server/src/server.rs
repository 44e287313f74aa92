//! The accept loop: asks [`Admission`] about each new connection, gives admitted ones a session
//! task and refused ones their explanation, survives `accept` errors, and on shutdown tells
//! every session to say goodbye and waits (with a deadline) for them to finish.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::access::Access;
use crate::admission::{self, Admission, Verdict};
use crate::cluster::{self, Cluster};
use crate::config::{Config, Runtime};
use crate::hub::{Hub, HubConfig};
use crate::limits::{ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX, MAX_RECORD_BYTES, SHUTDOWN_GRACE};
use crate::session::{self, Ctx, Registry};
use crate::store::Store;

/// Serves Chatao on `listener` until `shutdown` completes, then closes every session (each
/// client receives `bye` with code `shutdown`) and returns once they are done or
/// [`SHUTDOWN_GRACE`] has passed.
///
/// Connections over the limits in [`Admission`] are refused, with a `bye` saying why when a
/// refusal slot is free. An `accept` error (out of file descriptors, say) never ends the loop:
/// it backs off from [`ACCEPT_BACKOFF`] up to [`ACCEPT_BACKOFF_MAX`] and tries again.
///
/// `runtime` holds what the caller shares with the running server (see [`Runtime`]). Tests bind
/// `127.0.0.1:0` and pass any future; the binary passes SIGINT/SIGTERM.
pub async fn run(
    listener: TcpListener,
    config: Config,
    runtime: Runtime,
    shutdown: impl Future,
) -> std::io::Result<()> {
    // A text must fit in a record with its JSON around it, or it could never be sent.
    let max_text = config.limits.max_text_bytes as usize;
    if max_text + 1024 > MAX_RECORD_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "max_text_bytes {max_text} is too large: a message record is at most {MAX_RECORD_BYTES} bytes; use at most {}",
                MAX_RECORD_BYTES - 1024
            ),
        ));
    }
    let config = Arc::new(config);
    // The access lists before the store: a missing allowlist must not leave a new database
    // behind. A cluster node's allowlist in force is the cluster's shared one.
    let mut access_config = config.access.clone();
    access_config.shared_allow = config.cluster.is_some();
    let access =
        Access::load(access_config, runtime.clock.clone(), Vec::new()).map_err(io::Error::other)?;
    let (store, joining) = match &config.cluster {
        None => (Store::open(&config.data_dir).map_err(io::Error::other)?, None),
        Some(cluster) => {
            let store = Store::open_cluster(&config.data_dir).map_err(io::Error::other)?;
            let joining = cluster::connect(cluster.clone(), &store, config.retention)
                .await
                .map_err(io::Error::other)?;
            (store, Some(joining))
        }
    };
    let hub_config = HubConfig {
        default_room: config.default_room.clone(),
        history_on_join: config.history_on_join,
        retention: config.retention,
    };
    // A cluster node's bans come from the cluster's bucket, not from its local file.
    if joining.is_none() {
        for ban in store.load_bans().map_err(io::Error::other)? {
            access.ban(ban);
        }
    }
    let access = Arc::new(access);
    let link = joining.as_ref().map(|j| j.link());
    if let Some(link) = &link {
        runtime.metrics.attach_cluster(link.clone());
    }
    let guard = Hub::with_cluster(hub_config, Arc::new(store), access.clone(), link)
        .map_err(io::Error::other)?;
    let hub = guard.hub();
    runtime.metrics.attach_bus(hub.bus().stats().clone());
    let registry = match joining {
        Some(joining) => {
            let cluster = joining.start(hub.clone(), access.clone()).await;
            cluster.publish_allowlist(&access).await;
            Registry::Cluster(cluster)
        }
        None => Registry::Local,
    };
    let ctx = Ctx {
        hub,
        config: config.clone(),
        metrics: runtime.metrics.clone(),
        shutdown: CancellationToken::new(),
        registry,
        refusals_logged: Default::default(),
    };
    tokio::spawn(reload_on_notify(
        access,
        runtime.reload.clone(),
        ctx.shutdown.clone(),
        ctx.registry.cluster().cloned(),
    ));
    let admission = Admission::new(&config);
    let tracker = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF;
    info!(
        addr = %listener.local_addr()?,
        fingerprint = %config.keys.public().fingerprint(),
        "listening"
    );
    runtime.ready.notify_one();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF;
                runtime.metrics.connections.inc();
                accepted
            }
            Err(cause) if is_connection_error(&cause) => {
                debug!(%cause, "a connection failed before it was accepted");
                continue;
            }
            Err(cause) => {
                if backoff == ACCEPT_BACKOFF {
                    warn!(%cause, "accept failed; backing off");
                } else {
                    debug!(%cause, ?backoff, "accept still failing");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        match admission.admit(peer.ip(), Instant::now()) {
            Verdict::Admit(ticket) => {
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                tracker.spawn(async move {
                    session::run(stream, peer, ctx).await;
                    drop(ticket);
                });
            }
            Verdict::Explain(refusal) => {
                match ctx.refusals_logged.take(Instant::now()) {
                    Some(0) => info!(%peer, why = ?refusal.why, "connection refused; explaining"),
                    Some(held_back) => {
                        info!(%peer, why = ?refusal.why, held_back, "connection refused; explaining")
                    }
                    None => debug!(%peer, why = ?refusal.why, "connection refused; explaining"),
                }
                runtime.metrics.refused(refusal.why);
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                tracker.spawn(async move {
                    let keys = &ctx.config.keys;
                    let limit = ctx.config.handshake_timeout;
                    tokio::select! {
                        told = admission::explain(stream, keys, refusal, limit) => {
                            if let Err(cause) = told {
                                debug!(%peer, %cause, "refusal not delivered");
                            }
                        }
                        _ = ctx.shutdown.cancelled() => {}
                    }
                });
            }
            Verdict::Close(why) => {
                debug!(%peer, ?why, "connection refused without a word");
                runtime.metrics.refused(why);
                drop(stream);
            }
        }
    }
    info!(sessions = tracker.len(), "shutting down");
    drop(listener);
    ctx.shutdown.cancel();
    tracker.close();
    if timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!(left = tracker.len(), "sessions did not finish within the shutdown grace period");
    }
    if let Some(cluster) = ctx.registry.cluster() {
        cluster.shutdown().await;
    }
    // The sessions are done: the bus writes what is queued to disk and stops.
    drop(ctx);
    if let Some(thread) = guard.finish() {
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if timeout(SHUTDOWN_GRACE, joined).await.is_err() {
            warn!("history writer did not finish within the shutdown grace period");
        }
    }
    info!("stopped");
    Ok(())
}

/// Re-reads the access lists each time `reload` is notified (SIGHUP in the binary), without
/// touching anyone connected. A list that fails to parse leaves the old one in force.
async fn reload_on_notify(
    access: Arc<Access>,
    reload: Arc<Notify>,
    stop: CancellationToken,
    cluster: Option<Cluster>,
) {
    loop {
        tokio::select! {
            _ = reload.notified() => match access.reload() {
                Ok(()) => {
                    info!("access lists reloaded");
                    if let Some(cluster) = &cluster {
                        cluster.publish_allowlist(&access).await;
                    }
                }
                Err(cause) => warn!(%cause, "reload failed; the previous access lists stay in force"),
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Errors that concern one connection, not the listener: skip it and accept the next at once.
/// Everything else (EMFILE, ENFILE, ENOBUFS, ENOMEM) is the server running out of something,
/// and retrying at once would spin.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
