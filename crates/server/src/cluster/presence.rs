//! Who is online on the other nodes, over core NATS (no persistence: presence dies with its
//! node).
//!
//! Each node publishes on `chatao.presence`: a *change* for every local arrival, departure,
//! join, part, nickname and away change, numbered by a per-node sequence; a *heartbeat* every
//! [`super::HEARTBEAT`] repeating the last number; a *snapshot* of all its users when asked;
//! and a *goodbye* when it stops. A receiver that sees a gap in a node's numbers (a change it
//! missed) asks that node for a snapshot, and replaces what it knew. A node not heard from for
//! [`super::PRESENCE_TTL`] is gone: its users leave their rooms with reason `lost`. While this
//! node itself cannot reach NATS it expires no one (it cannot tell who is really gone), and
//! when it is back it asks everyone for a snapshot. Nor does it expire anyone for a silence of
//! its own making: after a stall of this process (SIGSTOP, swapping) every node gets a fresh
//! TTL, and each expiry check first reads the presence records already waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::{MissedTickBehavior, interval, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::outbound::PrivateReply;
use super::{Inner, subjects};
use crate::hub::Hub;
use crate::hub::remote::{Moderation, NodeId, Presence, Private, UserState};

/// How often silent nodes are looked for. A check that comes more than two heartbeats (or
/// checks) after the previous one means this node stalled: see [`stalled`].
const CHECK: Duration = Duration::from_millis(250);

/// One presence record.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    node: NodeId,
    seq: u64,
    #[serde(flatten)]
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Body {
    Heartbeat,
    Change {
        change: Presence,
    },
    Snapshot {
        users: Vec<UserState>,
    },
    /// Asks `target` (every node when absent) for a snapshot.
    Resync {
        #[serde(default)]
        target: Option<NodeId>,
    },
    Goodbye,
}

/// For [`super::decode_wire`]: a presence record.
pub(super) fn decode_wire(payload: &[u8]) -> Result<usize, &'static str> {
    super::wire::<Record>(payload, "presence record")
}

async fn publish(inner: &Inner, seq: u64, body: Body) {
    let record = Record { node: inner.node, seq, body };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    if let Err(cause) = inner.client.publish(subjects::PRESENCE, bytes.into()).await {
        warn!(%cause, "could not publish presence");
    }
}

pub(super) async fn publish_change(inner: &Inner, change: Presence) {
    let seq = inner.presence_seq.fetch_add(1, Ordering::Relaxed) + 1;
    publish(inner, seq, Body::Change { change }).await;
}

pub(super) async fn publish_heartbeat(inner: &Inner) {
    publish(inner, inner.presence_seq.load(Ordering::Relaxed), Body::Heartbeat).await;
}

pub(super) async fn publish_snapshot(inner: &Inner, hub: &Hub) {
    let seq = inner.presence_seq.load(Ordering::Relaxed);
    publish(inner, seq, Body::Snapshot { users: hub.local_users() }).await;
}

/// Asks `node` for a snapshot of its users.
pub(super) async fn request_snapshot(inner: &Inner, node: NodeId) {
    publish(inner, 0, Body::Resync { target: Some(node) }).await;
}

pub(super) async fn goodbye(inner: &Inner) {
    publish(inner, inner.presence_seq.load(Ordering::Relaxed), Body::Goodbye).await;
}

/// Subscribes to `subject`, retrying every second until it works or `stop`.
async fn subscribe(
    inner: &Inner,
    subject: impl Into<String>,
    stop: &CancellationToken,
) -> Option<async_nats::Subscriber> {
    let subject = subject.into();
    loop {
        match inner.client.subscribe(subject.clone()).await {
            Ok(sub) => return Some(sub),
            Err(cause) => warn!(%cause, %subject, "cannot subscribe; retrying"),
        }
        tokio::select! {
            _ = sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// What this node knows of another.
#[derive(Debug)]
struct Seen {
    seq: u64,
}

/// Receives presence, expires silent nodes, and tells local users when the cluster becomes
/// unreachable or reachable again.
pub(super) async fn run(inner: Arc<Inner>, hub: Hub, stop: CancellationToken) {
    let Some(mut sub) = subscribe(&inner, subjects::PRESENCE, &stop).await else { return };
    let mut events = inner.link.events_tx().subscribe();
    let mut nodes: HashMap<NodeId, Seen> = HashMap::new();
    let mut check = interval(CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_check = Instant::now();
    // Expiry waits a full TTL after (re)connecting, so nodes have had time to be heard.
    let mut connected_at = Instant::now();
    let mut up = true;
    publish(&inner, 0, Body::Resync { target: None }).await;
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                let Ok(record) = serde_json::from_slice::<Record>(&msg.payload) else {
                    hub.skipped("presence", "undecodable");
                    continue;
                };
                handle(&inner, &hub, &mut nodes, record).await;
            }
            changed = events.changed() => {
                if changed.is_err() { break; }
                let now_up = *events.borrow_and_update();
                if now_up == up { continue; }
                up = now_up;
                if up {
                    connected_at = Instant::now();
                    hub.notice_everyone("the cluster is reachable again");
                    publish(&inner, 0, Body::Resync { target: None }).await;
                    publish_snapshot(&inner, &hub).await;
                } else {
                    hub.notice_everyone(
                        "this server cannot reach the rest of the cluster: new messages are refused until it is back",
                    );
                }
            }
            _ = check.tick() => {
                let since_last = last_check.elapsed();
                last_check = Instant::now();
                if since_last > 2 * inner.config.heartbeat.max(CHECK) {
                    // This node itself stalled (stopped, swapped out, starved): the silence it
                    // measured is its own. Everyone gets a fresh TTL from now, heard from in
                    // what is waiting on the subscription, before anyone can expire.
                    stalled(&inner, since_last);
                    continue;
                }
                // What has arrived is read first: a heartbeat waiting here is a node alive.
                while let Some(Some(msg)) = sub.next().now_or_never() {
                    match serde_json::from_slice::<Record>(&msg.payload) {
                        Ok(record) => handle(&inner, &hub, &mut nodes, record).await,
                        Err(_) => hub.skipped("presence", "undecodable"),
                    }
                }
                if !up || connected_at.elapsed() < inner.config.presence_ttl {
                    continue;
                }
                let expired: Vec<NodeId> = {
                    let mut alive = inner.alive.lock();
                    let gone: Vec<NodeId> = alive
                        .iter()
                        .filter(|(_, at)| at.elapsed() >= inner.config.presence_ttl)
                        .map(|(n, _)| *n)
                        .collect();
                    for n in &gone {
                        alive.remove(n);
                    }
                    gone
                };
                for node in expired {
                    info!(node = %format!("{node:016x}"), "node silent past the presence TTL: its users are gone");
                    nodes.remove(&node);
                    hub.node_gone(node, "server node lost");
                }
            }
            _ = stop.cancelled() => break,
        }
    }
}

/// After a stall of this node: every node it knows is granted a fresh TTL from now.
fn stalled(inner: &Inner, for_how_long: Duration) {
    warn!(
        stalled_ms = for_how_long.as_millis() as u64,
        "this node stalled; presence expiry starts over"
    );
    let now = Instant::now();
    let mut alive = inner.alive.lock();
    for at in alive.values_mut() {
        *at = now;
    }
}

async fn handle(inner: &Inner, hub: &Hub, nodes: &mut HashMap<NodeId, Seen>, record: Record) {
    let node = record.node;
    if node == inner.node {
        if let Body::Resync { target: None } = record.body {
            // Our own request: nothing to answer.
        }
        return;
    }
    if !matches!(record.body, Body::Goodbye) {
        inner.alive.lock().insert(node, Instant::now());
    }
    let known = nodes.get(&node).map(|s| s.seq);
    match record.body {
        Body::Heartbeat => {
            if known.is_none_or(|k| record.seq > k) {
                // A change was missed (or the node is new to us).
                publish(inner, 0, Body::Resync { target: Some(node) }).await;
                nodes.entry(node).or_insert(Seen { seq: 0 });
            }
        }
        Body::Change { change } => {
            match known {
                Some(k) if record.seq <= k => return, // already seen
                Some(k) if record.seq == k + 1 => {}
                _ => publish(inner, 0, Body::Resync { target: Some(node) }).await,
            }
            nodes.insert(node, Seen { seq: record.seq });
            hub.apply_presence(node, change);
        }
        Body::Snapshot { users } => {
            nodes.insert(node, Seen { seq: record.seq });
            hub.apply_snapshot(node, users);
        }
        Body::Resync { target } => {
            if target.is_none_or(|t| t == inner.node) {
                publish_snapshot(inner, hub).await;
            }
        }
        Body::Goodbye => {
            info!(node = %format!("{node:016x}"), "node left the cluster");
            nodes.remove(&node);
            inner.alive.lock().remove(&node);
            hub.node_gone(node, "server node stopped");
        }
    }
}

/// Answers what other nodes send this node alone: private messages for its users, and
/// requests to end a session that the same key replaced elsewhere.
pub(super) async fn direct(inner: Arc<Inner>, hub: Hub, stop: CancellationToken) {
    let subject = subjects::node(inner.node, ">");
    let Some(mut sub) = subscribe(&inner, subject, &stop).await else { return };
    let pm = subjects::node(inner.node, "pm");
    let end = subjects::node(inner.node, "end");
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg { Some(m) => m, None => return },
            _ = stop.cancelled() => return,
        };
        if msg.subject.as_str() == pm {
            let reply = match serde_json::from_slice::<Private>(&msg.payload) {
                Ok(p) => match hub.deliver_private(&p) {
                    Ok(()) => PrivateReply { error: None },
                    Err(e) => PrivateReply { error: Some(e.to_string()) },
                },
                Err(e) => PrivateReply { error: Some(format!("undecodable: {e}")) },
            };
            if let Some(to) = msg.reply {
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                let _ = inner.client.publish(to, body.into()).await;
            }
        } else if msg.subject.as_str() == end
            && let Ok(session) = serde_json::from_slice::<u64>(&msg.payload)
        {
            let bye = chatao_proto::ServerMsg::Bye {
                code: Some(chatao_proto::ErrorCode::Other),
                reason: "replaced by a new connection with the same key".into(),
            };
            hub.end_session(session, bye, chatao_proto::LeaveReason::Lost, "reconnected");
        }
    }
}

/// Applies operator actions taken on other nodes.
pub(super) async fn moderation(inner: Arc<Inner>, hub: Hub, stop: CancellationToken) {
    let Some(mut sub) = subscribe(&inner, subjects::MODERATION, &stop).await else { return };
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg { Some(m) => m, None => return },
            _ = stop.cancelled() => return,
        };
        match serde_json::from_slice::<(NodeId, Moderation)>(&msg.payload) {
            Ok((node, _)) if node == inner.node => {}
            Ok((_, m)) => hub.apply_moderation(&m),
            Err(e) => hub.skipped("operator action", &e.to_string()),
        }
    }
}
