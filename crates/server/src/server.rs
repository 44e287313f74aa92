//! The accept loop: admits connections up to the cap, gives each a session task, and on
//! shutdown tells every session to say goodbye and waits (with a deadline) for them to finish.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::hub::Hub;
use crate::limits::{ACCEPT_BACKOFF, SHUTDOWN_GRACE};
use crate::session::{self, Ctx};

/// Serves Chatao on `listener` until `shutdown` completes, then closes every session (each
/// client receives `bye` with code `shutdown`) and returns once they are done or
/// [`SHUTDOWN_GRACE`] has passed.
///
/// Tests bind `127.0.0.1:0` and pass any future; the binary passes SIGINT/SIGTERM.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let ctx = Ctx {
        hub: Hub::new(config.default_room.clone()),
        config: config.clone(),
        shutdown: CancellationToken::new(),
    };
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let tracker = TaskTracker::new();
    info!(
        addr = %listener.local_addr()?,
        fingerprint = %config.keys.public().fingerprint(),
        "listening"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        warn!(%peer, limit = config.max_connections, "connection limit reached; refused");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let ctx = ctx.clone();
                    tracker.spawn(async move {
                        session::run(stream, peer, ctx).await;
                        drop(permit);
                    });
                }
                Err(cause) => {
                    warn!(%cause, "accept failed; backing off");
                    sleep(ACCEPT_BACKOFF).await;
                }
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
    info!("stopped");
    Ok(())
}
