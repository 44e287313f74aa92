//! The bus: the one seam through which room events leave the hub. Persist, then publish.
//!
//! The hub assigns each room event its place (a room message id, and a global sequence number)
//! under its lock and queues it here. One thread takes the queue in batches, writes what must
//! be kept in one SQLite transaction, then writes each event to the room's members' sockets
//! itself (`crate::outbox`: sealed and written without blocking, the rest left for the
//! member's session), in order; the senders of the batch's messages get their copies last.
//! Under load the thread lingers before a batch (in proportion to the last batch's writes, at
//! most [`LINGER_UNDER_LOAD`], or until [`LINGER_ENOUGH`] events are queued), so each write
//! carries more events. So a room message is
//! on disk before anyone sees it (or, when the write fails, seen by nobody: below): a server
//! killed with `kill -9` loses nothing it relayed. Events that cannot be refused after the fact
//! (joins, parts, the parting session's own leave, which goes to it directly) are exempt, as
//! the list below says. On a cluster node (`crate::cluster`) the same thread takes the events
//! the node reads back from the cluster's stream, writes them to the node's replica and hands
//! them out the same way.
//!
//! Overflow policy of the queue ([`BUS_CAPACITY`]): `say` is refused with `busy` once fewer than
//! [`CONTROL_RESERVE`] places are left, so joins, parts and leaves always find room; should even
//! the reserve run out, the event is dropped and logged as an error.
//!
//! # When the store cannot write (a full disk)
//!
//! Durability over availability: a batch whose transaction fails is not treated as written.
//!
//! - A room message queued with its sender ([`BusHandle::send_message_from`]) is **not
//!   delivered**, to anyone: the hub forgets it ([`Deliver::unstored`]: out of the
//!   room's memory tail, out of the remembered client ids) and tells its sender
//!   `error unavailable` carrying its `cid`, which the client sends again later. So every
//!   message anyone saw is on disk, and the ids clients saw never come back after a restart
//!   (the store's last id is at least every id delivered).
//! - The message's id is **not** given back: the room's counter in memory stays where the hub
//!   put it, so the next message takes the next id and an id is never used twice while the
//!   process lives. After a restart the counter resumes from the store, which may hand out a
//!   refused id again; nobody saw it (not delivered, not replayed: joiners who took the tail
//!   before the failure wait for the bus and drop it, [`BusHandle::refused`]).
//! - An acknowledged control event (a nickname registration, a ban, an unban, an operator's
//!   `bots` setting) is remembered as failed by its sequence number; [`BusHandle::durable`]
//!   tells the waiter (the session about to send `welcome`, the operator's acknowledgement). A
//!   failed registration is undone in memory, so the same key asking again registers again. A
//!   moderation notice travelling with its event is not delivered; the operator is told
//!   `unavailable` instead.
//! - An E2E application message queued with its sender is refused the same way (E2E rooms
//!   replay only from the store, so there is no tail to clean).
//! - A part's forgetting of the room for the key (`Persist::Membership`) queued with the
//!   parting session is told to it (`error unavailable` naming the room): it may be put back
//!   in the room at its next connection.
//! - Joins, parts, topics and the other E2E records (commits, welcomes, membership) are still
//!   delivered (their effect already happened in memory and cannot be refused after the fact);
//!   only their record may be missing after a restart, and a commit's id may then be handed
//!   out again (not solved here: it needs the counter persisted ahead of the ids).
//!
//! A failing store is logged at `error` at most once every [`FAILURE_LOG_EVERY`] (with the
//! number of failures since the last line), its recovery at `warn`, and counted in
//! [`BusStats::write_errors`] (`chatao_store_write_failures_total`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatao_proto::RoomName;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use crate::hub::{SessionId, now_millis};
use crate::store::{E2ePersist, Persist, Writer};

/// Events waiting to be persisted and published.
pub const BUS_CAPACITY: usize = 65_536;
/// Places kept free for events other than messages.
pub const CONTROL_RESERVE: usize = 1024;
/// Most events handled in one transaction.
const BATCH: usize = 2048;
/// Under load, the bus waits for more events before it delivers a batch: [`LINGER_PER_WRITE`]
/// for each write the last batch made (one per member it reached), at most this long, and less
/// once [`LINGER_ENOUGH`] events are queued. A write costs the server (and each reader) about
/// as much as ten deliveries in it (BENCHMARKS.md: about 10 µs of kernel and crypto on
/// loopback), so a batch of 20 events into a room of 1,000 takes a fraction of the CPU of
/// batches of 2. The wait follows the fan-out: after a batch that reached two members the bus
/// waits at most 200 µs (a conversation is not slowed), after one that reached 200 members or
/// more up to 20 ms (under a flood into a large room, where each message is already late by
/// the time the last member reads it). 20 µs a write made rooms of 200 wait 4 ms and left
/// them at 1.1x the peers' deliveries per CPU-second; 100 µs, 2.6x (BENCHMARKS.md). The wait is counted from the end of the last delivery, so
/// an event arriving after a quiet spell longer than it goes at once.
const LINGER_UNDER_LOAD: Duration = Duration::from_millis(20);
/// The wait under load per write of the last batch.
const LINGER_PER_WRITE: Duration = Duration::from_micros(100);
/// Events queued that end a linger early: past this many, a write's cost is spread thin
/// enough that waiting longer buys little.
const LINGER_ENOUGH: usize = 256;
/// How often a lingering bus looks at its queue.
const LINGER_STEP: Duration = Duration::from_millis(1);
/// The bus thread's sealing buffer is released after a batch that grew it past this.
const SCRATCH_KEPT: usize = 1 << 20;
/// How often a retention pass begins (the first at start).
///
/// Decision: retention runs on the bus thread, in bounded steps between delivery batches, not
/// on a connection of its own: SQLite (WAL) has one writer at a time, so a second writer would
/// only wait on the same lock, and a long pass there would stall the bus's writes all the same.
/// A pass begins only when the previous one is done; each step is one transaction deleting at
/// most `store::PRUNE_CHUNK` messages and looking at most at `store::PRUNE_ROOMS` rooms, every
/// statement a search of an index (the count is checked only in rooms written since the last
/// pass, the age through `messages_time`). While a pass has steps left the bus takes whatever
/// is queued first and runs one step after each batch (or at once when nothing is queued), so
/// delivery is never behind by more than one step.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// At most one `error` line this often while the store keeps failing.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);
/// Sequence numbers of failed acknowledged control events remembered for
/// [`BusHandle::durable`]. Overflow policy: the oldest is forgotten, and a waiter asking about a
/// range reaching before what is remembered is answered "not durable" (refused, never a false
/// acknowledgement).
const FAILED_REMEMBERED: usize = 4096;
/// Refused messages remembered for [`BusHandle::refused`] (a joiner's tail snapshot taken
/// before the failure). More than the queue holds, so every message of a snapshot is settled
/// and still remembered when the joiner looks. Overflow policy: the oldest is forgotten.
const REFUSED_REMEMBERED: usize = 2 * BUS_CAPACITY;

/// One room event.
#[derive(Debug)]
pub struct BusEvent {
    /// Global order, for [`BusHandle::flushed`]; members who joined after it was queued are
    /// skipped (what they got on joining covers it).
    pub seq: u64,
    /// The room whose members receive `bytes`; `None` for what is only persisted, or, when
    /// `bytes` is not empty, for a notice to everyone online once persisted (moderation).
    pub room: Option<RoomName>,
    /// The encoded event, shared by every recipient.
    pub bytes: Bytes,
    pub persist: Persist,
}

/// An event on the queue, with the session that caused it when it must hear of a failure.
#[derive(Debug)]
struct Queued {
    ev: BusEvent,
    from: Option<SessionId>,
    /// The session on this node whose message it is: it gets its copy (its acknowledgement)
    /// after every other member got theirs ([`Deliver::deliver`]).
    sender: Option<SessionId>,
}

/// An event that could not be stored, handed to [`Deliver::unstored`].
#[derive(Debug)]
pub struct Unstored {
    pub ev: BusEvent,
    /// Who to tell (`error unavailable`), if anyone.
    pub from: Option<SessionId>,
}

/// Where the bus thread hands what it has written (and what it could not write): the hub,
/// which knows the rooms' members. The bus knows nothing of the hub beyond this, and holds it
/// until [`BusHandle::stop`]: the hub owns the bus, the bus calls back only through here.
pub trait Deliver: Send + Sync + 'static {
    /// A persisted batch, in order; `senders`' copies go last; `scratch` is the buffer each
    /// member's share is sealed into. Returns the writes made (one per member per run of one
    /// room's events): the bus's measure of load ([`LINGER_UNDER_LOAD`]).
    fn deliver(&self, batch: &[BusEvent], senders: &[SessionId], scratch: &mut Vec<u8>) -> usize;
    /// The events of a batch the store could not write (module documentation).
    fn unstored(&self, events: &[Unstored]);
}

/// The hub's end of the bus.
#[derive(Debug, Clone)]
pub struct BusHandle {
    tx: mpsc::Sender<Queued>,
    /// Set by [`BusHandle::stop`]: the thread ends once its queue is empty.
    stopping: Arc<AtomicBool>,
    flushed: watch::Receiver<u64>,
    stats: Arc<BusStats>,
    failures: Arc<Mutex<Failures>>,
    /// The sequence number of the last acknowledged control event queued (registration, ban,
    /// unban): [`BusHandle::durable`] need not wait for a range holding none.
    last_acknowledged: Arc<AtomicU64>,
}

/// What the bus has done, for [`crate::metrics`].
#[derive(Debug, Default)]
pub struct BusStats {
    /// Events written to the store (messages, topics, registrations, bans).
    pub persisted: AtomicU64,
    /// Transactions that failed (their messages refused, see the module documentation).
    pub write_errors: AtomicU64,
    /// Messages refused with `unavailable` because the store could not write them.
    pub unstored: AtomicU64,
    /// Control events dropped because even the reserve was full.
    pub dropped: AtomicU64,
    /// Messages refused with `busy`.
    pub refused: AtomicU64,
}

/// What failed to be stored, bounded (see [`FAILED_REMEMBERED`], [`REFUSED_REMEMBERED`]).
#[derive(Debug, Default)]
struct Failures {
    /// Sequence numbers of acknowledged control events (registrations, bans) not stored.
    controls: VecDeque<u64>,
    /// The newest sequence number forgotten from `controls` (0: none).
    controls_forgotten: u64,
    /// Room messages refused, as (room, id).
    messages: VecDeque<(RoomName, u64)>,
}

/// Why an event could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusFull {
    /// Only the reserve for control events is left.
    Busy,
    /// The bus has stopped (shutdown).
    Closed,
}

/// An acknowledged event may not be on disk: the store failed (or the bus stopped) before it
/// was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server could not store it")]
pub struct NotDurable;

/// Whether an event is one whose failure its waiter must hear of ([`BusHandle::durable`]).
fn acknowledged(p: &Persist) -> bool {
    matches!(
        p,
        Persist::Nick { .. } | Persist::Ban(_) | Persist::Unban { .. } | Persist::Bots { .. }
    )
}

impl BusHandle {
    /// Ends the bus thread once what is queued now is written and handed out (the hub's
    /// [`crate::hub::HubGuard`] calls it at shutdown); later events are refused as
    /// [`BusFull::Closed`] once it has ended.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        // Wakes a thread waiting for the queue; a full queue wakes it anyway.
        let ev = BusEvent { seq: 0, room: None, bytes: Bytes::new(), persist: Persist::Nothing };
        let _ = self.tx.try_send(Queued { ev, from: None, sender: None });
    }

    /// Queues a message, keeping the control reserve free. Should the store fail, it is
    /// delivered anyway (for events whose sender cannot be told: E2E commits).
    pub fn send_message(&self, ev: BusEvent) -> Result<(), BusFull> {
        self.queue_message(Queued { ev, from: None, sender: None })
    }

    /// Queues session `from`'s room message, keeping the control reserve free. Should the store
    /// fail to write it, nobody receives it and `from` is told `unavailable` with its cid.
    pub fn send_message_from(&self, ev: BusEvent, from: SessionId) -> Result<(), BusFull> {
        self.queue_message(Queued { ev, from: Some(from), sender: Some(from) })
    }

    fn queue_message(&self, q: Queued) -> Result<(), BusFull> {
        if self.tx.capacity() <= CONTROL_RESERVE {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(BusFull::Busy);
        }
        self.tx.try_send(q).map_err(|e| match e {
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
        self.send_control_from(ev, None);
    }

    /// Queues a control event that session `from` waits on: should the store fail, `from` is
    /// told `unavailable` (by [`Deliver::unstored`]) and a notice it carries is not delivered.
    pub fn send_control_from(&self, ev: BusEvent, from: Option<SessionId>) {
        if acknowledged(&ev.persist) {
            self.last_acknowledged.fetch_max(ev.seq, Ordering::AcqRel);
        }
        if let Err(e) = self.tx.try_send(Queued { ev, from, sender: None }) {
            let (room, seq) = match &e {
                mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => {
                    (q.ev.room.clone(), q.ev.seq)
                }
            };
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) = e
                && acknowledged(&q.ev.persist)
            {
                self.failures().note_control(seq);
            }
            error!(room = ?room, seq, "bus full or closed: event dropped");
        }
    }

    /// Waits for places on the queue (for events from a cluster's stream, which wait rather
    /// than drop: the stream keeps them meanwhile). `None`: the bus has stopped.
    pub async fn reserve_many(&self, n: usize) -> Option<Permits<'_>> {
        self.tx.reserve_many(n).await.ok().map(Permits)
    }

    /// The sequence number up to which every event is persisted and published, now.
    pub fn flushed_seq(&self) -> u64 {
        *self.flushed.borrow()
    }

    /// Waits until every event up to `seq` is persisted and published.
    pub async fn flushed(&self, seq: u64) {
        let mut rx = self.flushed.clone();
        let _ = rx.wait_for(|done| *done >= seq).await;
    }

    /// Waits until every event up to `upto` is handled, then says whether every acknowledged
    /// control event (registration, ban, unban) queued after `after` and up to `upto` was
    /// stored. Conservative: another's failure in the same range, a range older than what is
    /// remembered, or a stopped bus all answer [`NotDurable`]. Callers bound the wait.
    pub async fn durable(&self, after: u64, upto: u64) -> Result<(), NotDurable> {
        // Sequence numbers are handed out and queued in order under the hub's lock, so nothing
        // acknowledged was queued in the range if the last one is at or before its start.
        if self.last_acknowledged.load(Ordering::Acquire) <= after {
            return Ok(());
        }
        let mut rx = self.flushed.clone();
        if rx.wait_for(|done| *done >= upto).await.is_err() {
            return Err(NotDurable);
        }
        let f = self.failures();
        if after < f.controls_forgotten || f.controls.iter().any(|s| *s > after && *s <= upto) {
            return Err(NotDurable);
        }
        Ok(())
    }

    /// Whether message `id` of `room` was refused because the store could not write it (for
    /// a replay from a tail snapshot taken before the failure; ask after [`Self::flushed`]).
    pub fn refused(&self, room: &RoomName, id: u64) -> bool {
        self.failures().messages.iter().any(|(r, i)| *i == id && r == room)
    }

    fn failures(&self) -> MutexGuard<'_, Failures> {
        self.failures.lock()
    }
}

/// Places reserved on the queue ([`BusHandle::reserve_many`]).
pub struct Permits<'a>(mpsc::PermitIterator<'a, Queued>);

impl std::fmt::Debug for Permits<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permits").finish_non_exhaustive()
    }
}

/// One reserved place.
pub struct Permit<'a>(mpsc::Permit<'a, Queued>);

impl Permit<'_> {
    /// Queues `ev` in the reserved place.
    pub fn send(self, ev: BusEvent) {
        self.0.send(Queued { ev, from: None, sender: None });
    }

    /// Queues `ev`, the message of `sender` (a session of this node), in the reserved place.
    pub fn send_sent_by(self, ev: BusEvent, sender: Option<SessionId>) {
        self.0.send(Queued { ev, from: None, sender });
    }
}

impl<'a> Iterator for Permits<'a> {
    type Item = Permit<'a>;
    fn next(&mut self) -> Option<Permit<'a>> {
        self.0.next().map(Permit)
    }
}

impl Failures {
    fn note_control(&mut self, seq: u64) {
        if self.controls.len() == FAILED_REMEMBERED
            && let Some(old) = self.controls.pop_front()
        {
            self.controls_forgotten = self.controls_forgotten.max(old);
        }
        self.controls.push_back(seq);
    }

    fn note_message(&mut self, room: RoomName, id: u64) {
        if self.messages.len() == REFUSED_REMEMBERED {
            self.messages.pop_front();
        }
        self.messages.push_back((room, id));
    }
}

/// The bus thread's end of the queue.
#[derive(Debug)]
pub struct BusReceiver {
    rx: mpsc::Receiver<Queued>,
    stopping: Arc<AtomicBool>,
    flushed: watch::Sender<u64>,
    stats: Arc<BusStats>,
    failures: Arc<Mutex<Failures>>,
}

/// Makes the queue. The hub keeps the handle; [`spawn`] starts the thread with the receiver.
pub fn channel() -> (BusHandle, BusReceiver) {
    let (tx, rx) = mpsc::channel(BUS_CAPACITY);
    let (flushed_tx, flushed) = watch::channel(0);
    let stats = Arc::new(BusStats::default());
    let failures = Arc::new(Mutex::new(Failures::default()));
    let stopping = Arc::new(AtomicBool::new(false));
    (
        BusHandle {
            tx,
            stopping: stopping.clone(),
            flushed,
            stats: stats.clone(),
            failures: failures.clone(),
            last_acknowledged: Arc::new(AtomicU64::new(0)),
        },
        BusReceiver { rx, stopping, flushed: flushed_tx, stats, failures },
    )
}

/// Starts the bus thread, handing what it writes to `to`. It runs until [`BusHandle::stop`]
/// (or until every [`BusHandle`] is dropped) and its queue is empty, then drops `to`; join
/// the returned handle to wait for everything queued to be on disk
/// ([`crate::hub::HubGuard`] does both).
pub fn spawn(
    receiver: BusReceiver,
    writer: Writer,
    to: Arc<dyn Deliver>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("chatao-bus".into()).spawn(move || run(receiver, writer, to))
}

/// The loud, rate-limited account of a failing store.
#[derive(Debug, Default)]
struct FailureLog {
    /// When the last `error` line was written.
    last_line: Option<Instant>,
    /// Failed transactions since that line.
    held_back: u64,
    /// Failed transactions since the store last wrote.
    failing: u64,
}

impl FailureLog {
    fn failed(&mut self, cause: &crate::store::StoreError, events: usize, refused: usize) {
        self.failing += 1;
        let due = self.last_line.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY);
        if due {
            error!(
                %cause, events, refused, failures_since_last_line = self.held_back,
                "cannot write the history database (disk full or failing?): messages are \
                 refused with `unavailable` and registrations and bans are not acknowledged \
                 until it can"
            );
            self.last_line = Some(Instant::now());
            self.held_back = 0;
        } else {
            self.held_back += 1;
        }
    }

    fn wrote(&mut self) {
        if self.failing > 0 {
            warn!(failed = self.failing, "the history database is writable again");
            *self = FailureLog::default();
        }
    }
}

/// Adds what is queued to `batch`, up to [`BATCH`].
fn take_queued(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(q) => batch.push(q),
            Err(_) => break,
        }
    }
}

fn run(receiver: BusReceiver, mut writer: Writer, to: Arc<dyn Deliver>) {
    let BusReceiver { mut rx, stopping, flushed, stats, failures } = receiver;
    let mut batch: Vec<Queued> = Vec::with_capacity(BATCH);
    let mut last_prune = Instant::now();
    writer.start_pass(now_millis());
    let mut log = FailureLog::default();
    // What a member's share of a run is sealed into before its write (`crate::outbox`): one
    // buffer for every member, kept between batches unless a large run grew it.
    let mut scratch: Vec<u8> = Vec::new();
    // When the last batch was delivered, and the writes it took.
    let mut last_end: Option<Instant> = None;
    let mut last_writes = 0usize;
    loop {
        // Stopped: what was queued before the stop is written and handed out, then the end.
        // (`stop` queues a no-op after setting the flag, so a wait below always wakes.)
        if stopping.load(Ordering::Acquire) && rx.is_empty() {
            break;
        }
        // While retention has steps left, do not wait for events: run the next step.
        let first = if writer.pruning() {
            match rx.try_recv() {
                Ok(q) => Some(q),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.blocking_recv() {
                Some(q) => Some(q),
                None => break,
            }
        };
        if let Some(first) = first {
            batch.push(first);
            take_queued(&mut rx, &mut batch);
            // Under load (this batch follows the last within the linger), wait for more until
            // the linger is over or LINGER_ENOUGH are queued: every member's share of the
            // batch is one write (outbox.rs), so a batch twice as long halves the writes. An
            // idle server adds no delay.
            let linger = LINGER_PER_WRITE
                .saturating_mul(u32::try_from(last_writes).unwrap_or(u32::MAX))
                .min(LINGER_UNDER_LOAD);
            if let Some(end) = last_end
                && end.elapsed() < linger
            {
                let until = end + linger;
                while batch.len() + rx.len() < LINGER_ENOUGH
                    && !stopping.load(Ordering::Acquire)
                    && let Some(left) = until.checked_duration_since(Instant::now())
                {
                    std::thread::sleep(left.min(LINGER_STEP));
                }
                take_queued(&mut rx, &mut batch);
            }
            let last_seq = batch.last().map(|q| q.ev.seq);
            let persist: Vec<&Persist> = batch.iter().map(|q| &q.ev.persist).collect();
            let written = writer.write(&persist);
            drop(persist);
            // Who sent the messages in the batch: they get their copies last (see
            // `Deliver::deliver`). Only a delivered message's sender counts.
            let mut senders: Vec<SessionId> = Vec::new();
            let (deliver, unstored): (Vec<BusEvent>, Vec<Unstored>) = match written {
                Ok(()) => {
                    log.wrote();
                    let n =
                        batch.iter().filter(|q| !matches!(q.ev.persist, Persist::Nothing)).count();
                    stats.persisted.fetch_add(n as u64, Ordering::Relaxed);
                    senders.extend(batch.iter().filter_map(|q| q.sender));
                    (batch.drain(..).map(|q| q.ev).collect(), Vec::new())
                }
                Err(cause) => {
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    let events = batch.len();
                    let (mut deliver, mut unstored) = (Vec::new(), Vec::new());
                    {
                        let mut f = failures.lock();
                        for Queued { ev, from, .. } in batch.drain(..) {
                            match &ev.persist {
                                // A room message from a session that can be told: refused.
                                Persist::Message(m) if from.is_some() => {
                                    f.note_message(m.room.clone(), m.id);
                                    unstored.push(Unstored { ev, from });
                                }
                                // An E2E application message (replayed only from the store).
                                Persist::E2e(E2ePersist::Sealed(_)) if from.is_some() => {
                                    unstored.push(Unstored { ev, from });
                                }
                                p if acknowledged(p) => {
                                    f.note_control(ev.seq);
                                    unstored.push(Unstored { ev, from });
                                }
                                // A part's forgetting: the session that parted is told.
                                Persist::Membership { keep: false, .. } if from.is_some() => {
                                    unstored.push(Unstored { ev, from });
                                }
                                _ => deliver.push(ev),
                            }
                        }
                    }
                    let refused = unstored.iter().filter(|u| u.from.is_some()).count();
                    stats.unstored.fetch_add(refused as u64, Ordering::Relaxed);
                    log.failed(&cause, events, refused);
                    (deliver, unstored)
                }
            };
            if !unstored.is_empty() {
                to.unstored(&unstored);
            }
            last_writes = to.deliver(&deliver, &senders, &mut scratch);
            last_end = Some(Instant::now());
            if scratch.capacity() > SCRATCH_KEPT {
                scratch = Vec::new();
            }
            if let Some(last) = last_seq {
                flushed.send_replace(last);
            }
        }
        if !writer.pruning() && last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            writer.start_pass(now_millis());
        }
        if writer.pruning() {
            match writer.prune_step() {
                Ok(0) => {}
                Ok(n) => debug!(deleted = n, "history pruned (one step)"),
                Err(cause) => warn!(%cause, "history pruning failed"),
            }
        }
    }
    if let Err(cause) = writer.prune(now_millis()) {
        warn!(%cause, "final history pruning failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Ban;

    fn ban(seq: u64) -> BusEvent {
        let ban = Ban {
            fingerprint: chatao_proto::Fingerprint::example("x"),
            until: None,
            reason: None,
            by: "op".into(),
        };
        BusEvent { seq, room: None, bytes: Bytes::new(), persist: Persist::Ban(ban) }
    }

    fn durable(bus: &BusHandle, after: u64, upto: u64) -> Result<(), NotDurable> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(bus.durable(after, upto))
    }

    #[test]
    fn durable_answers_for_the_range_and_never_acknowledges_what_it_forgot() {
        let (bus, receiver) = channel();
        // Nothing acknowledged queued since: no wait, whatever the bus has done.
        assert_eq!(durable(&bus, 0, 3), Ok(()));
        for seq in [5, 9] {
            bus.send_control_from(ban(seq), Some(1));
        }
        receiver.flushed.send_replace(20);
        receiver.failures.lock().note_control(9);
        assert_eq!(durable(&bus, 4, 6), Ok(()), "5 was stored");
        assert_eq!(durable(&bus, 8, 9), Err(NotDurable), "9 was not");
        assert_eq!(durable(&bus, 4, 20), Err(NotDurable), "a failure in the range");
        // Past what is remembered, a range reaching back before it is answered "not durable".
        for seq in 100..100 + FAILED_REMEMBERED as u64 {
            receiver.failures.lock().note_control(seq);
        }
        bus.send_control_from(ban(5000), Some(1));
        receiver.flushed.send_replace(5000);
        assert_eq!(durable(&bus, 4_500, 5000), Ok(()));
        assert_eq!(durable(&bus, 8, 9), Err(NotDurable), "9 forgotten: not acknowledged");
        // A stopped bus acknowledges nothing it has not flushed.
        drop(receiver);
        assert_eq!(durable(&bus, 4_999, 6000), Err(NotDurable));
    }

    #[test]
    fn refused_messages_are_remembered_by_room_and_id_within_the_bound() {
        let (bus, receiver) = channel();
        let (lobby, rust) = (RoomName::lobby(), RoomName::parse("#rust").unwrap());
        receiver.failures.lock().note_message(lobby.clone(), 7);
        assert!(bus.refused(&lobby, 7));
        assert!(!bus.refused(&rust, 7) && !bus.refused(&lobby, 8));
        for id in 0..REFUSED_REMEMBERED as u64 {
            receiver.failures.lock().note_message(rust.clone(), id);
        }
        assert!(!bus.refused(&lobby, 7), "the oldest is forgotten past the bound");
        assert_eq!(receiver.failures.lock().messages.len(), REFUSED_REMEMBERED);
    }
}
