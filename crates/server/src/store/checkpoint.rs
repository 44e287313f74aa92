//! WAL checkpoints, on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages:
//! it copies the WAL into the database file and fsyncs both, on the thread that committed. For
//! the store that thread is the bus, so every few megabytes of history one batch of messages
//! waited for two fsyncs and a copy; under a `history` flood (readers busy on the same file) the
//! adversarial run measured one such checkpoint at 90 ms of fsync and 200 ms in all, and the
//! honest pair's line sent at that moment took 121 ms (issue 15, item 14).
//!
//! So every connection of the store is opened with `wal_autocheckpoint=0` and this thread, with
//! its own connection, is the only one that checkpoints: [`CHECKPOINT_EVERY`] after a commit it
//! runs a `PASSIVE` checkpoint, which never takes the write lock, so the bus goes on committing
//! while the pages are copied and synced. Durability is unchanged: in WAL mode with
//! `synchronous=NORMAL` a commit is safe from a `kill -9` once it is in the WAL; a checkpoint
//! only moves it into the database file.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;
use tracing::{debug, warn};

use super::StoreError;

/// How long after a commit the checkpoint runs (commits in the meantime wait for the same one):
/// the WAL holds at most about this long of writes, and the disk sees at most one checkpoint's
/// pair of fsyncs in this time, however fast the bus commits.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The checkpointing thread; dropping it runs a last checkpoint and joins the thread.
#[derive(Debug)]
pub struct Checkpointer {
    /// Bounded at one: a wake-up already waiting covers every commit after it, so a full
    /// channel drops the new one (nothing is lost: the pending checkpoint takes it too).
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Read by the tests, which wait on checkpoints.
    #[cfg_attr(not(test), allow(dead_code))]
    done: Arc<Done>,
}

/// Checkpoints completed so far, for whoever waits on one (tests, and the log).
#[derive(Debug, Default)]
struct Done {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Checkpointer {
    /// Opens a connection of its own to `path` (with `open`, the store's connection setup) and
    /// starts the thread.
    pub fn spawn(
        path: &Path,
        every: Duration,
        open: fn(&Path) -> Result<Connection, StoreError>,
    ) -> Result<Checkpointer, StoreError> {
        let conn = open(path)?;
        let (wake, rx) = mpsc::sync_channel(1);
        let done = Arc::new(Done::default());
        let thread = std::thread::Builder::new().name("chatao-checkpoint".into()).spawn({
            let done = done.clone();
            move || run(&conn, &rx, every, &done)
        })?;
        Ok(Checkpointer { wake: Some(wake), thread: Some(thread), done })
    }

    /// Says that a transaction was committed: a checkpoint follows within [`CHECKPOINT_EVERY`].
    /// Never blocks.
    pub fn committed(&self) {
        if let Some(wake) = &self.wake {
            // Full: a checkpoint is already due. Disconnected: the thread is gone (it ends
            // only when dropped), nothing to do.
            let _ = wake.try_send(());
        }
    }

    /// Checkpoints completed so far.
    #[cfg(test)]
    pub fn completed(&self) -> u64 {
        *self.done.count.lock()
    }

    #[cfg(test)]
    /// Waits until more than `seen` checkpoints have completed, or `timeout`; the count.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let mut guard = self.done.count.lock();
        self.done.changed.wait_while_for(&mut guard, |n| *n <= seen, timeout);
        *guard
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel tells the thread to run its last checkpoint and end.
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, rx: &mpsc::Receiver<()>, every: Duration, done: &Done) {
    let mut open = true;
    while open {
        // A commit, or the end.
        if rx.recv().is_err() {
            break;
        }
        // Let the commits of the next `every` share this checkpoint.
        let due = Instant::now() + every;
        loop {
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        checkpoint(conn, done);
    }
    // The writer is gone: what it committed last goes into the database file now.
    checkpoint(conn, done);
}

fn checkpoint(conn: &Connection, done: &Done) {
    let started = Instant::now();
    // (busy, frames in the WAL, frames checkpointed); PASSIVE never waits for the writer or
    // for readers: what a reader still needs is left for the next one.
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match result {
        Ok((_, frames, copied)) => {
            debug!(frames, copied, took = ?started.elapsed(), "WAL checkpoint");
        }
        Err(cause) => warn!(%cause, "WAL checkpoint failed; the next commit tries again"),
    }
    let mut n = done.count.lock();
    *n += 1;
    done.changed.notify_all();
}
