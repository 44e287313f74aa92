//! The hub's end of the cluster ([`ClusterLink`]): a bounded queue to the cluster task, its
//! overflow policy, and whether the cluster is reachable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tracing::error;

use super::{NodeId, Outbound, RemoteId, RoomEvent};
use crate::hub::HubError;

/// Most events waiting for the cluster task. Overflow policy: room messages are refused with
/// `busy` once fewer than [`LINK_RESERVE`] places are left (the sender is told); other events
/// are dropped with an error log and the node republishes its whole state (a presence
/// snapshot) so that the other nodes' view heals.
pub const LINK_CAPACITY: usize = 65_536;
/// Places kept for events other than room messages.
pub const LINK_RESERVE: usize = 1024;

/// The hub's end of the cluster: a bounded queue to the cluster task, and whether the cluster
/// is reachable.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    pub node: NodeId,
    tx: mpsc::Sender<Outbound>,
    up: Arc<AtomicBool>,
    /// Set when a presence event was dropped; the cluster task then sends a full snapshot.
    pub resync: Arc<AtomicBool>,
    pub dropped: Arc<AtomicU64>,
    /// Connection changes (true: reachable), for the task that tells users about them.
    events: Arc<watch::Sender<bool>>,
    /// Who the cluster's `chatao_online` bucket says holds each nickname (case-folded), as
    /// this node last read it; a session of this node appears with this node's id. Written
    /// and read under the hub lock (so in one order with the users it decides about); one
    /// entry per nickname online in the cluster, removed when the bucket's entry is.
    holders: Arc<Mutex<HashMap<String, RemoteId>>>,
    /// Room events the cluster task holds (queued per session or being published).
    publishing: Arc<AtomicUsize>,
}

impl ClusterLink {
    /// The link and the receiver the cluster task reads.
    pub fn new(node: NodeId) -> (ClusterLink, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(LINK_CAPACITY);
        let link = ClusterLink {
            node,
            tx,
            up: Arc::new(AtomicBool::new(true)),
            resync: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
            events: Arc::new(watch::channel(true).0),
            holders: Arc::default(),
            publishing: Arc::default(),
        };
        (link, rx)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Where connection changes are published.
    pub fn events_tx(&self) -> &watch::Sender<bool> {
        &self.events
    }

    /// True when the cluster task has taken everything queued and has no room event left to
    /// publish.
    pub fn is_drained(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity() && self.publishing.load(Ordering::Relaxed) == 0
    }

    /// Counts room events taken by the cluster task and not yet published or given up.
    pub fn publishing(&self) -> &AtomicUsize {
        &self.publishing
    }

    /// The session the cluster's bucket says holds `folded`, if it names one.
    pub(super) fn holder(&self, folded: &str) -> Option<RemoteId> {
        self.holders.lock().get(folded).copied()
    }

    pub(super) fn set_holder(&self, folded: &str, holder: Option<RemoteId>) {
        let mut holders = self.holders.lock();
        match holder {
            Some(h) => holders.insert(folded.to_owned(), h),
            None => holders.remove(folded),
        };
    }

    /// Queues a room event, keeping the reserve free.
    pub(in crate::hub) fn send_room(&self, ev: RoomEvent) -> Result<(), HubError> {
        if !self.is_up() {
            return Err(HubError::Unavailable);
        }
        if self.tx.capacity() <= LINK_RESERVE {
            return Err(HubError::Busy);
        }
        self.tx.try_send(Outbound::Room(ev)).map_err(|_| HubError::Busy)
    }

    /// Queues anything else; see [`LINK_CAPACITY`] for what happens when it is full.
    pub fn send(&self, out: Outbound) {
        if self.tx.try_send(out).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.resync.store(true, Ordering::Relaxed);
            error!("cluster queue full: event dropped; a full resync follows");
        }
    }
}
