//! Several `chataosrv` nodes serving one chat, through NATS with JetStream.
//!
//! We do not write a cluster protocol of our own: the nodes share state through NATS
//! ([`async_nats`]). What goes where, and why (docs/ARCHITECTURE.md has the long version):
//!
//! | what                         | where                                        | why |
//! |------------------------------|----------------------------------------------|-----|
//! | room messages and topics     | stream `CHATAO_ROOMS`, subject `chatao.room.<hex room>` | one total order; the stream sequence is the message id on every node; history and catch-up replay from it; published in order per session, de-duplicated by (key, cid) for 10 minutes |
//! | users online, joins, parts   | core subject `chatao.presence` (deltas with a per-node sequence, heartbeats, snapshots on request) | ephemeral; a node's users vanish with it (presence TTL) |
//! | nickname owners              | KV bucket `chatao_nicks` (nick -> key)       | first key wins cluster-wide (atomic create) |
//! | nicknames online             | KV bucket `chatao_online` (nick -> node, session, key) | one holder cluster-wide (atomic create / compare-and-set); watched by every node, which ends a local session the bucket no longer names |
//! | bans, mutes, allowlist       | KV buckets `chatao_bans`, `chatao_mutes`, `chatao_access` | durable, watched by every node |
//! | rooms a key stays in         | KV bucket `chatao_memberships` (key -> rooms with the stream position each was remembered at, at most 50) | written (compare-and-set, ordered by position) by the node of the join or part or of a room kick's operator, read at `hello` by any node (a key with none: the node's replica's set) |
//! | private messages, takeovers  | request/reply on `chatao.node.<node>.pm` / `.end` | addressed to one node; the reply is the acknowledgement |
//! | operator notices             | core subject `chatao.mod`                    | every node tells its users and enforces on its own |
//!
//! Each node keeps a replica of the room stream in its own SQLite file (`cluster.db`), written
//! by the bus as the stream is read, so history is served locally and a restart resumes where
//! it stopped.

mod config;
mod identity;
mod outbound;
mod presence;
mod subjects;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::access::Access;
use crate::hub::Hub;
use crate::hub::remote::{ClusterLink, NodeId, Outbound, RoomEvent};
use crate::store::{Retention, Store};

pub use config::{ClusterConfig, HEARTBEAT, PRESENCE_TTL};
pub use identity::Claim;

/// Decodes `payload` as each kind of JSON (and, as text, as the hex of a KV key) that a node
/// reads from NATS, and checks that whatever decodes survives re-encoding: the entry point of
/// the `cluster` fuzz target (fuzz/src/cluster.rs). Returns how many kinds accepted it; `Err`
/// names a kind whose decoded value did not decode again.
#[doc(hidden)]
pub fn decode_wire(payload: &[u8]) -> Result<usize, &'static str> {
    use crate::hub::remote::{Moderation, Private};
    let hex_key = std::str::from_utf8(payload).ok().and_then(subjects::unhex).is_some();
    Ok(usize::from(hex_key)
        + wire::<RoomEvent>(payload, "room event")?
        + wire::<Private>(payload, "private message")?
        + wire::<(NodeId, Moderation)>(payload, "moderation")?
        + wire::<u64>(payload, "session to end")?
        + identity::decode_wire(payload)?
        + outbound::decode_wire(payload)?
        + presence::decode_wire(payload)?)
}

/// For [`decode_wire`]: 1 if `payload` is a `T`, 0 if not, `Err(what)` if the `T` it is does
/// not decode again from its own encoding.
fn wire<T>(payload: &[u8], what: &'static str) -> Result<usize, &'static str>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let Ok(value) = serde_json::from_slice::<T>(payload) else { return Ok(0) };
    let again = serde_json::to_vec(&value).map_err(|_| what)?;
    serde_json::from_slice::<T>(&again).map(|_| 1).map_err(|_| what)
}

/// How long connecting to NATS at startup may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a starting node waits to have read the room stream before it serves.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Most stream events applied to the hub at once.
const APPLY_BATCH: usize = 1024;
/// Window in which JetStream drops a republished message with the same id: our own retries,
/// and a client's re-send of a message with the same cid through any node, as long as a
/// server remembers client ids ([`crate::limits::SENT_IDS_WINDOW`]). Shortened to the stream's
/// `max_age` when that is shorter (JetStream requires it; a message older than that is gone
/// from the stream anyway, and the nodes still remember its id).
const DUPLICATE_WINDOW: Duration = crate::limits::SENT_IDS_WINDOW;

/// Why joining the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("NATS JetStream ({what}): {cause}")]
    JetStream { what: &'static str, cause: String },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

fn js_err(what: &'static str) -> impl Fn(String) -> ClusterError {
    move |cause| ClusterError::JetStream { what, cause }
}

/// What the tasks of one node share.
#[derive(Debug)]
struct Inner {
    node: NodeId,
    config: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    nicks: kv::Store,
    online: kv::Store,
    bans: kv::Store,
    mutes: kv::Store,
    access_kv: kv::Store,
    /// `chatao_memberships`: the rooms each key stays in ([`identity::remember`]).
    memberships: kv::Store,
    /// Other nodes by the time we last heard from them (short, synchronous sections only).
    alive: Mutex<HashMap<NodeId, Instant>>,
    /// This node's presence sequence number (deltas count up; heartbeats repeat it).
    presence_seq: std::sync::atomic::AtomicU64,
    /// The nicknames this node's sessions hold in `chatao_online`: bucket key to the session
    /// and the revision of its claim (short, synchronous sections only). A newer revision
    /// naming someone else ends the session ([`identity`]). One entry per local session at
    /// most (two for a moment during a nickname change): bounded by the connection limit.
    claims: Mutex<HashMap<String, (crate::hub::SessionId, u64)>>,
    link: ClusterLink,
}

impl Inner {
    fn is_alive(&self, node: NodeId) -> bool {
        let alive = self.alive.lock();
        alive.get(&node).is_some_and(|at| at.elapsed() < self.config.presence_ttl)
    }
}

/// A node's membership in the cluster: the handle sessions use to claim nicknames, and the
/// tasks that carry events between the hub and NATS.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
    hub: Hub,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// A node joining: connected, with its stream and buckets, before its hub exists.
#[derive(Debug)]
pub struct Joining {
    inner: Arc<Inner>,
    rx: tokio::sync::mpsc::Receiver<Outbound>,
    /// Where to resume reading the room stream.
    start: u64,
    /// The stream's last sequence number when we joined: we serve once we have read it.
    last: u64,
}

impl Joining {
    /// The hub's end of the cluster.
    pub fn link(&self) -> ClusterLink {
        self.inner.link.clone()
    }
}

/// Connects to NATS, makes sure the stream and buckets exist, and checks `store` (this node's
/// replica) against the stream: a replica of an older stream (NATS data wiped) is cleared.
pub async fn connect(
    config: ClusterConfig,
    store: &Store,
    retention: Retention,
) -> Result<Joining, ClusterError> {
    let node: NodeId = rand_node();
    let (link, rx) = ClusterLink::new(node);
    let events_link = link.clone();
    let options = async_nats::ConnectOptions::new()
        .name(format!("chataosrv node {node:016x}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let link = events_link.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        warn!("lost the connection to NATS");
                        link.set_up(false);
                        link.events_tx().send_replace(false);
                    }
                    async_nats::Event::Connected => {
                        info!("connected to NATS");
                        link.set_up(true);
                        link.events_tx().send_replace(true);
                    }
                    other => info!(event = %other, "NATS"),
                }
            }
        });
    let url = config.url.clone();
    let connect_err = |cause: String| ClusterError::Connect { url: url.clone(), cause };
    let client =
        options.connect(config.url.as_str()).await.map_err(|e| connect_err(e.to_string()))?;
    // `retry_on_initial_connect` returns at once; wait (bounded) for the first connection.
    let connected = timeout(CONNECT_TIMEOUT, async {
        while client.connection_state() != async_nats::connection::State::Connected {
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if connected.is_err() {
        return Err(connect_err(format!("no connection within {CONNECT_TIMEOUT:?}")));
    }
    let js = jetstream::new(client.clone());
    let mut stream_config = stream::Config {
        name: subjects::STREAM.into(),
        subjects: vec![subjects::ROOMS_WILDCARD.into()],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    if retention.max_messages > 0 {
        stream_config.max_messages_per_subject = retention.max_messages as i64;
    }
    if let Some(age) = retention.max_age {
        stream_config.max_age = age;
        stream_config.duplicate_window = DUPLICATE_WINDOW.min(age);
    }
    let window = stream_config.duplicate_window;
    let mut info = setup_retrying("the room stream", || async {
        let mut rooms =
            js.get_or_create_stream(stream_config.clone()).await.map_err(|e| e.to_string())?;
        rooms.info().await.cloned().map_err(|e| e.to_string())
    })
    .await
    .map_err(js_err("room stream"))?;
    // A stream made by an older node has a shorter window: widen it (JetStream allows that on
    // a live stream), so client ids are de-duplicated for as long as nodes remember them.
    if info.config.duplicate_window < window {
        let mut config = info.config.clone();
        config.duplicate_window = window;
        match js.update_stream(config).await {
            Ok(updated) => {
                info!(window_secs = window.as_secs(), "widened the room stream's duplicate window");
                info = updated;
            }
            Err(cause) => warn!(%cause, "could not widen the room stream's duplicate window"),
        }
    }
    let created = info.created.unix_timestamp_nanos() as i64;
    let last = info.state.last_sequence;
    if store.meta("stream_created")? != Some(created) {
        if store.meta("stream_created")?.is_some() {
            warn!("the cluster's room stream was recreated; clearing this node's replica");
        }
        store.clear_rooms()?;
        store.set_meta("stream_created", created)?;
    }
    let applied = store.meta("applied")?.unwrap_or(0).max(0) as u64;
    let bucket = |name: &'static str| kv::Config {
        bucket: name.into(),
        history: 1,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let nicks = get_or_create_kv(&js, bucket(subjects::NICKS)).await?;
    let online = get_or_create_kv(&js, bucket(subjects::ONLINE)).await?;
    let bans = get_or_create_kv(&js, bucket(subjects::BANS)).await?;
    let mutes = get_or_create_kv(&js, bucket(subjects::MUTES)).await?;
    let access_kv = get_or_create_kv(&js, bucket(subjects::ACCESS)).await?;
    let memberships = get_or_create_kv(&js, bucket(subjects::MEMBERSHIPS)).await?;
    info!(node = %format!("{node:016x}"), url = %config.url, resume_after = applied, stream_last = last, "joined the cluster");
    let inner = Arc::new(Inner {
        node,
        config,
        client,
        js,
        nicks,
        online,
        bans,
        mutes,
        access_kv,
        memberships,
        alive: Mutex::new(HashMap::new()),
        presence_seq: Default::default(),
        claims: Mutex::new(HashMap::new()),
        link,
    });
    Ok(Joining { inner, rx, start: applied + 1, last })
}

/// How long a starting node keeps trying to set up its streams and buckets: JetStream may be
/// slow to answer (a busy or just started NATS), and two nodes starting together may race to
/// create the same stream; both go away when the call is made again.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds or [`SETUP_DEADLINE`] passes (then its last error), with a
/// pause of 200 ms doubling to 2 s between tries.
async fn setup_retrying<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    let mut pause = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(cause) if tokio::time::Instant::now() + pause < deadline => {
                warn!(%cause, what, "setting up the cluster failed; trying again");
                sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(cause) => return Err(cause),
        }
    }
}

async fn get_or_create_kv(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, ClusterError> {
    let name = config.bucket.clone();
    let err = |e: String| ClusterError::JetStream {
        what: "key-value bucket",
        cause: format!("{name}: {e}"),
    };
    setup_retrying("a key-value bucket", || kv_once(js, &config)).await.map_err(err)
}

/// One attempt of [`get_or_create_kv`].
async fn kv_once(js: &jetstream::Context, config: &kv::Config) -> Result<kv::Store, String> {
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(name.as_str()).await {
        return Ok(store);
    }
    // The bucket's stream, made as `create_key_value` would make it. (That call first asks for
    // the account's details, whose answer from NATS 2.9 this client cannot parse.)
    let stream = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: config.history.max(1),
        storage: config.storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(stream).await.map_err(|e| e.to_string())?;
    js.get_key_value(name.as_str()).await.map_err(|e| e.to_string())
}

/// A node number: random, so that every process start is a new node.
fn rand_node() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}

impl Joining {
    /// Starts the node's tasks for `hub` and waits (bounded) until the room stream has been
    /// read up to where it was when the node joined, so the first users see current history.
    pub async fn start(self, hub: Hub, access: Arc<Access>) -> Cluster {
        let Joining { inner, rx, start, last } = self;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (read_tx, mut read_rx) = watch::channel(start.saturating_sub(1));
        tasks.spawn(consume(inner.clone(), hub.clone(), start, read_tx, stop.clone()));
        tasks.spawn(outbound::run(inner.clone(), hub.clone(), rx, stop.clone()));
        tasks.spawn(presence::run(inner.clone(), hub.clone(), stop.clone()));
        tasks.spawn(presence::direct(inner.clone(), hub.clone(), stop.clone()));
        tasks.spawn(presence::moderation(inner.clone(), hub.clone(), stop.clone()));
        identity::watch_all(&inner, &hub, &access, &tasks, &stop);
        let caught_up = timeout(CATCH_UP_TIMEOUT, read_rx.wait_for(|read| *read >= last)).await;
        if caught_up.is_err() {
            warn!(last, "the room stream was not read to its end in time; serving anyway");
        }
        Cluster { inner, hub, stop, tasks }
    }
}

impl Cluster {
    /// This node's number.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// Claims `nick` for `fingerprint` cluster-wide: its owner, and its one online holder.
    pub async fn claim(
        &self,
        nick: &chatao_proto::Nick,
        fingerprint: &chatao_proto::Fingerprint,
        session: u64,
    ) -> Result<Claim, crate::hub::HubError> {
        identity::claim(&self.inner, &self.hub, nick, fingerprint, session).await
    }

    /// Gives a claim back (the session ended or changed nickname).
    pub async fn release(&self, claim: Claim) {
        identity::release(&self.inner, claim).await
    }

    /// The rooms key `fingerprint` stays in, cluster-wide, in name order; `None` when the
    /// cluster has no set for the key yet (see [`Cluster::adopt`]).
    pub async fn remembered(
        &self,
        fingerprint: &str,
    ) -> Result<Option<Vec<chatao_proto::RoomName>>, crate::hub::HubError> {
        identity::remembered(&self.inner, fingerprint).await
    }

    /// Remembers (`keep`) or forgets `room` for key `fingerprint` cluster-wide, ordered by
    /// the room stream position `at` ([`identity::remember`]); returns once the bucket has it
    /// (or has refused it).
    pub async fn remember(
        &self,
        fingerprint: &str,
        room: &chatao_proto::RoomName,
        keep: bool,
        at: u64,
    ) -> Result<(), crate::hub::HubError> {
        identity::remember(&self.inner, fingerprint, room, keep, at).await
    }

    /// Gives a key without a cluster-wide set the node's own copy `rooms` (what it joined
    /// before the bucket existed) and returns the set that counts.
    pub async fn adopt(
        &self,
        fingerprint: &str,
        rooms: Vec<chatao_proto::RoomName>,
    ) -> Result<Vec<chatao_proto::RoomName>, crate::hub::HubError> {
        identity::adopt(&self.inner, fingerprint, rooms).await
    }

    /// Publishes the allowlist file (if the node has one) as the cluster's allowlist.
    pub async fn publish_allowlist(&self, access: &Access) {
        identity::publish_allowlist(&self.inner, access).await
    }

    /// Leaves the cluster: sends what is queued, says goodbye so the other nodes drop this
    /// node's users at once, and stops the tasks.
    pub async fn shutdown(&self) {
        let link = &self.inner.link;
        let _ = timeout(Duration::from_secs(2), async {
            while !link.is_drained() {
                sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        presence::goodbye(&self.inner).await;
        self.stop.cancel();
        self.tasks.close();
        let _ = timeout(Duration::from_secs(2), self.tasks.wait()).await;
        let _ = timeout(Duration::from_secs(2), self.inner.client.flush()).await;
    }
}

/// Reads the room stream from `start`, in order, applying each event to the hub. An ordered
/// consumer re-creates itself after a gap or a reconnection; if it fails outright, this loop
/// makes a new one from the next sequence number it needs.
async fn consume(
    inner: Arc<Inner>,
    hub: Hub,
    start: u64,
    read: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut next = start.max(1);
    let mut events = inner.link.events_tx().subscribe();
    loop {
        events.borrow_and_update();
        let run = async {
            let stream = inner.js.get_stream(subjects::STREAM).await.map_err(|e| e.to_string())?;
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            while let Some(first) = messages.next().await {
                // Take what else is ready now, so the hub queues it at once and the bus
                // delivers it as runs (one write per member per run, not per message).
                let mut ready = vec![first];
                while ready.len() < APPLY_BATCH {
                    match messages.next().now_or_never() {
                        Some(Some(msg)) => ready.push(msg),
                        _ => break,
                    }
                }
                let mut events = Vec::with_capacity(ready.len());
                let mut failed = None;
                for msg in ready {
                    let msg = match msg {
                        Ok(msg) => msg,
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    };
                    let Ok(seq) = msg.info().map(|i| i.stream_sequence) else { continue };
                    if seq < next {
                        continue;
                    }
                    next = seq + 1;
                    match serde_json::from_slice::<RoomEvent>(&msg.payload) {
                        Ok(ev) => events.push((seq, ev)),
                        Err(e) => hub.skipped("room event", &e.to_string()),
                    }
                }
                hub.apply_room_events(events).await;
                read.send_replace(next - 1);
                if let Some(cause) = failed {
                    return Err(cause);
                }
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            r = run => if let Err(cause) = r {
                warn!(%cause, next, "reading the room stream failed; retrying");
            },
            // Reconnected to NATS (perhaps a restarted server that forgot our consumer):
            // start again from the next event we need rather than wait for the old consumer
            // to notice.
            _ = reconnected(&mut events) => {}
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Completes when the connection to NATS comes back after a loss.
pub(crate) async fn reconnected(events: &mut watch::Receiver<bool>) {
    loop {
        if events.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *events.borrow_and_update() {
            return;
        }
    }
}
