//! What every scenario talks to: an [`Endpoint`] (Chatao or an IRC peer), the [`Client`]s it
//! connects, and the per-client [`Recorder`] that accounts for every delivery.
//!
//! The two targets differ only in how a client connects and how it says something; what a
//! receiver does with a delivery is the same code for both, so their numbers are comparable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ledger, Tally};
use crate::payload;
use crate::{chatao, irc};

/// Longest wait to queue a goodbye (a client whose queue stays full is left to the server).
pub const QUIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// A server under test.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Shown in reports: `chatao`, `inspircd`, `ngircd`, `irc`.
    pub name: String,
    pub kind: Kind,
    pub addr: SocketAddr,
    /// The server's process, for CPU and memory; `None`: not measured.
    pub pid: Option<u32>,
    /// A cluster's other nodes: clients are spread over `addr` and these by their index.
    pub nodes: Vec<SocketAddr>,
    /// Other processes whose CPU and memory count with `pid`'s (a cluster's other nodes and
    /// its NATS server).
    pub other_pids: Vec<u32>,
}

/// What protocol the endpoint speaks.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Chatao over its Noise transport; `server_key`: the fingerprint to expect (`None`: accept
    /// any key, as on loopback against a server the bench started itself without asking).
    Chatao { server_key: Option<chatao_proto::Fingerprint> },
    /// IRC, over TLS (any certificate accepted) or in clear.
    Irc { tls: bool },
}

impl Endpoint {
    /// An endpoint that is one process at one address.
    pub fn single(name: String, kind: Kind, addr: SocketAddr, pid: Option<u32>) -> Endpoint {
        Endpoint { name, kind, addr, pid, nodes: Vec::new(), other_pids: Vec::new() }
    }

    /// The address client number `index` connects to (round robin over a cluster's nodes).
    pub fn addr_for(&self, index: u32) -> SocketAddr {
        match index as usize % (self.nodes.len() + 1) {
            0 => self.addr,
            i => self.nodes[i - 1],
        }
    }

    /// CPU and memory of every process of the endpoint, summed (`None` without a pid).
    pub fn sample(&self) -> Option<crate::procfs::ProcSample> {
        crate::procfs::sample_all(std::iter::once(self.pid?).chain(self.other_pids.iter().copied()))
    }

    /// The room a fanout runs in: Chatao's default room (every client is in it on arrival), or
    /// `#bench` on IRC.
    pub fn fanout_room(&self) -> &'static str {
        match self.kind {
            Kind::Chatao { .. } => chatao_proto::DEFAULT_ROOM,
            Kind::Irc { .. } => "#bench",
        }
    }

    /// Whether a sender receives its own messages (Chatao: yes, as its acknowledgement; IRC:
    /// no).
    pub fn echoes(&self) -> bool {
        matches!(self.kind, Kind::Chatao { .. })
    }
}

/// Counters shared by all the clients of one scenario run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Clients connected and welcomed (registered, on IRC).
    pub connected: AtomicU64,
    /// Join announcements seen for the clients' rooms, by all clients together.
    pub joins: AtomicU64,
    /// Clients that have seen their own join: they are in their room.
    pub ready: AtomicU64,
    /// Bench messages received, by all clients together.
    pub deliveries: AtomicU64,
    /// [`payload::now_us`] of the latest delivery.
    pub last_delivery_us: AtomicU64,
    /// Clients whose connection has ended.
    pub closed: AtomicU64,
    /// Why the first connection that ended did.
    first_close: Mutex<Option<String>>,
}

impl Progress {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// How many connections ended, and why the first did; `None` while all are open.
    pub fn closures(&self) -> Option<(u64, String)> {
        let n = Progress::get(&self.closed);
        let why = self.first_close.lock().clone();
        (n > 0).then(|| (n, why.unwrap_or_default()))
    }
}

/// Who a client is and what it listens for.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// The client's number in its scenario (keys and nicknames derive from it).
    pub index: u32,
    /// Distinguishes scenarios' keys, so that nicknames stay owned by the same key across runs.
    pub tag: u8,
    pub nick: String,
    /// The room it joins and listens to.
    pub room: String,
    /// `(senders, messages per sender)` to account for; `None` for clients that only idle.
    pub ledger: Option<(u32, u32)>,
}

/// One client's receive side: what it got, and how late.
#[derive(Debug)]
pub struct Recorder {
    pub nick: String,
    /// The room, lower-cased (both protocols compare room names without case).
    pub room: String,
    ledger: Option<Ledger>,
    /// Latency of each delivery, microseconds.
    pub latencies_us: Vec<u32>,
    progress: Arc<Progress>,
}

impl Recorder {
    pub fn new(spec: &ClientSpec, progress: Arc<Progress>) -> Recorder {
        let ledger = spec.ledger.map(|(s, m)| Ledger::new(s, m));
        let capacity = spec.ledger.map_or(0, |(s, m)| (s * m) as usize);
        Recorder {
            nick: spec.nick.clone(),
            room: spec.room.to_ascii_lowercase(),
            ledger,
            latencies_us: Vec::with_capacity(capacity),
            progress,
        }
    }

    /// True if `room` is this client's room.
    pub fn is_room(&self, room: &str) -> bool {
        room.eq_ignore_ascii_case(&self.room)
    }

    /// A chat message in the client's room.
    pub fn on_text(&mut self, text: &str) {
        let Some(stamp) = payload::decode(text) else { return };
        let now = payload::now_us();
        let latency = now.saturating_sub(stamp.sent_us).min(u64::from(u32::MAX)) as u32;
        self.latencies_us.push(latency);
        if let Some(ledger) = &mut self.ledger {
            ledger.record(stamp.sender, stamp.seq);
        }
        self.progress.deliveries.fetch_add(1, Ordering::Relaxed);
        self.progress.last_delivery_us.fetch_max(now, Ordering::Relaxed);
    }

    /// Someone (`nick`) joined the client's room.
    pub fn on_join(&mut self, nick: &str) {
        self.progress.joins.fetch_add(1, Ordering::Relaxed);
        if nick.eq_ignore_ascii_case(&self.nick) {
            self.progress.ready.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection ended, for `why`.
    pub fn on_closed(&mut self, why: &str) {
        self.progress.closed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.progress.first_close.lock();
        if first.is_none() {
            *first = Some(format!("{}: {why}", self.nick));
        }
    }

    pub fn tally(&self) -> Tally {
        self.ledger.as_ref().map(Ledger::tally).unwrap_or_default()
    }
}

/// How a client says something.
#[derive(Debug, Clone)]
pub enum Sayer {
    Chatao(chatao::Sayer),
    Irc(irc::Sayer),
}

impl Sayer {
    /// Hands `text` for the client's room to its connection (waits while its queue is full).
    pub async fn say(&self, text: String) -> Result<()> {
        match self {
            Sayer::Chatao(s) => s.say(text).await,
            Sayer::Irc(s) => s.say(text).await,
        }
    }

    /// Says goodbye (best effort).
    pub async fn quit(&self) {
        match self {
            Sayer::Chatao(s) => s.quit().await,
            Sayer::Irc(s) => s.quit().await,
        }
    }
}

/// A connected client: its sending side, and the task that records what it receives.
#[derive(Debug)]
pub struct Client {
    pub sayer: Sayer,
    pub(crate) task: JoinHandle<Recorder>,
    pub(crate) stop: CancellationToken,
}

impl Client {
    /// Stops recording and returns what was recorded.
    pub async fn finish(self) -> Option<Recorder> {
        self.stop.cancel();
        self.task.await.ok()
    }
}

/// Connects `spec` to `ep`, registered and on its way into `spec.room` (its own join shows in
/// `progress.ready` once the server confirms it).
pub async fn connect(ep: &Endpoint, spec: &ClientSpec, progress: Arc<Progress>) -> Result<Client> {
    match &ep.kind {
        Kind::Chatao { server_key } => {
            chatao::connect(ep.addr_for(spec.index), server_key.clone(), spec, progress).await
        }
        Kind::Irc { tls } => irc::connect(ep.addr, *tls, spec, progress).await,
    }
}

/// One churn cycle: connect, say `messages` things (Chatao: wait for the echo of the last),
/// say goodbye and wait for the close.
pub async fn cycle(ep: &Endpoint, spec: &ClientSpec, messages: u32, size: usize) -> Result<()> {
    match &ep.kind {
        Kind::Chatao { server_key } => {
            chatao::cycle(ep.addr_for(spec.index), server_key.clone(), spec, messages, size).await
        }
        Kind::Irc { tls } => irc::cycle(ep.addr, *tls, spec, messages, size).await,
    }
}
