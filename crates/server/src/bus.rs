//! The bus: the one seam through which room events leave the hub. Persist, then publish.
//!
//! The hub assigns each room event its place (a room message id, and a global sequence number)
//! under its lock and queues it here. One thread takes the queue in batches, writes what must
//! be kept in one SQLite transaction, then hands each event to the room's members' mailboxes,
//! in order. So a message is on disk before anyone sees it: a server killed with `kill -9`
//! loses nothing it relayed. A clustered server would replace this thread with a publish to
//! its message bus and a subscriber that does the same hand-off on every node.
//!
//! Overflow policy of the queue ([`BUS_CAPACITY`]): `say` is refused with `busy` once fewer than
//! [`CONTROL_RESERVE`] places are left, so joins, parts and leaves always find room; should even
//! the reserve run out, the event is dropped and logged as an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatao_proto::RoomName;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::hub::{Shared, now_millis};
use crate::store::{Persist, Writer};

/// Events waiting to be persisted and published.
pub const BUS_CAPACITY: usize = 65_536;
/// Places kept free for events other than messages.
pub const CONTROL_RESERVE: usize = 1024;
/// Most events handled in one transaction.
const BATCH: usize = 2048;
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One room event.
#[derive(Debug)]
pub struct BusEvent {
    /// Global order, for [`BusHandle::flushed`]; members who joined after it was queued are
    /// skipped (what they got on joining covers it).
    pub seq: u64,
    /// The room whose members receive `bytes`; `None` for what is only persisted.
    pub room: Option<RoomName>,
    /// The encoded event, shared by every recipient.
    pub bytes: Bytes,
    pub persist: Persist,
}

/// The hub's end of the bus.
#[derive(Debug, Clone)]
pub struct BusHandle {
    tx: mpsc::Sender<BusEvent>,
    flushed: watch::Receiver<u64>,
    stats: Arc<BusStats>,
}

/// What the bus has done, for [`crate::metrics`].
#[derive(Debug, Default)]
pub struct BusStats {
    /// Events written to the store (messages, topics, registrations, bans).
    pub persisted: AtomicU64,
    /// Transactions that failed (their events were still delivered).
    pub write_errors: AtomicU64,
    /// Control events dropped because even the reserve was full.
    pub dropped: AtomicU64,
    /// Messages refused with `busy`.
    pub refused: AtomicU64,
}

/// Why an event could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusFull {
    /// Only the reserve for control events is left.
    Busy,
    /// The bus has stopped (shutdown).
    Closed,
}

impl BusHandle {
    /// Queues a message, keeping the control reserve free.
    pub fn send_message(&self, ev: BusEvent) -> Result<(), BusFull> {
        if self.tx.capacity() <= CONTROL_RESERVE {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(BusFull::Busy);
        }
        self.tx.try_send(ev).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BusFull::Busy,
            mpsc::error::TrySendError::Closed(_) => BusFull::Closed,
        })
    }

    /// The bus's counters.
    pub fn stats(&self) -> &Arc<BusStats> {
        &self.stats
    }

    /// Queues a control event (join, part, leave, topic). Dropped with an error log only if
    /// even the reserve is exhausted.
    pub fn send_control(&self, ev: BusEvent) {
        if let Err(e) = self.tx.try_send(ev) {
            let (room, seq) = match &e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => {
                    (ev.room.clone(), ev.seq)
                }
            };
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            error!(room = ?room, seq, "bus full or closed: event dropped");
        }
    }

    /// Waits for a place on the queue (for events from a cluster's stream, which wait rather
    /// than drop: the stream keeps them meanwhile). `None`: the bus has stopped.
    pub async fn reserve_many(&self, n: usize) -> Option<mpsc::PermitIterator<'_, BusEvent>> {
        self.tx.reserve_many(n).await.ok()
    }

    /// Waits until every event up to `seq` is persisted and published.
    pub async fn flushed(&self, seq: u64) {
        let mut rx = self.flushed.clone();
        let _ = rx.wait_for(|done| *done >= seq).await;
    }
}

/// The bus thread's end of the queue.
#[derive(Debug)]
pub struct BusReceiver {
    rx: mpsc::Receiver<BusEvent>,
    flushed: watch::Sender<u64>,
    stats: Arc<BusStats>,
}

/// Makes the queue. The hub keeps the handle; [`spawn`] starts the thread with the receiver.
pub fn channel() -> (BusHandle, BusReceiver) {
    let (tx, rx) = mpsc::channel(BUS_CAPACITY);
    let (flushed_tx, flushed) = watch::channel(0);
    let stats = Arc::new(BusStats::default());
    (
        BusHandle { tx, flushed, stats: stats.clone() },
        BusReceiver { rx, flushed: flushed_tx, stats },
    )
}

/// Starts the bus thread. It runs until every [`BusHandle`] is dropped and the queue is empty,
/// so dropping the hub flushes everything to disk; join the returned handle to wait for that.
pub fn spawn(
    receiver: BusReceiver,
    writer: Writer,
    shared: std::sync::Weak<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("chatao-bus".into())
        .spawn(move || run(receiver.rx, writer, shared, receiver.flushed, &receiver.stats))
}

fn run(
    mut rx: mpsc::Receiver<BusEvent>,
    mut writer: Writer,
    shared: std::sync::Weak<Shared>,
    flushed: watch::Sender<u64>,
    stats: &BusStats,
) {
    let mut batch: Vec<BusEvent> = Vec::with_capacity(BATCH);
    let mut last_prune = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        let persist: Vec<&Persist> = batch.iter().map(|e| &e.persist).collect();
        match writer.write(&persist) {
            Ok(()) => {
                let n = persist.iter().filter(|p| !matches!(p, Persist::Nothing)).count();
                stats.persisted.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(cause) => {
                // Availability over durability here: the events are still delivered.
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                error!(%cause, events = batch.len(), "could not write history");
            }
        }
        if let Some(shared) = shared.upgrade() {
            shared.deliver(&batch);
        }
        if let Some(last) = batch.last() {
            flushed.send_replace(last.seq);
        }
        batch.clear();
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match writer.prune(now_millis()) {
                Ok(0) => {}
                Ok(n) => info!(deleted = n, "history pruned"),
                Err(cause) => warn!(%cause, "history pruning failed"),
            }
        }
    }
    if let Err(cause) = writer.prune(now_millis()) {
        warn!(%cause, "final history pruning failed");
    }
}
