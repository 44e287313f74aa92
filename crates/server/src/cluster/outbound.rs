//! The task that carries what the hub hands to its cluster link out to NATS: room events to
//! the stream (each acknowledged by JetStream), presence changes, private messages, operator
//! actions.
//!
//! Room events go out **in order per session**: each session has its own queue, whose head is
//! published and retried (same message id, so a retry never duplicates) until JetStream
//! acknowledges it or [`PUBLISH_DEADLINE`] passes, and only then is the session's next event
//! published. Different sessions' queues run concurrently. An event with a client id (`cid`)
//! carries a JetStream message id derived from the sender's key and that id
//! ([`dedup_id`]), so the same message sent again through any node, within the stream's
//! duplicate window, is dropped by JetStream.
//!
//! Outcomes are definite or said to be unknown, never falsely negative: an event the NATS
//! client was never given is refused (`unavailable`, "not sent"); one it was given but that
//! was not acknowledged in time may still reach the stream (the client keeps publishes across
//! a reconnection), so its sender is told `unconfirmed` and that sending it again with the
//! same id delivers it at most once.
//!
//! Waiting for acknowledgements and replies happens beside the queue, in a set of pending
//! jobs; with the per-session queues they are bounded by [`MAX_IN_FLIGHT`].

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use chatao_proto::{Cid, ErrorCode, ServerMsg};
use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{interval, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Inner, identity, presence, subjects};
use crate::hub::remote::{Outbound, Private, RoomBody, RoomEvent};
use crate::hub::{Hub, SessionId};

/// Most room events queued or being published, plus other acknowledgements and replies
/// awaited, at once. Overflow policy: when full the task stops taking from the link, whose own
/// bound ([`crate::hub::remote::LINK_CAPACITY`]) then refuses new room messages with `busy`
/// (a definite refusal: nothing of it was published).
const MAX_IN_FLIGHT: usize = 4096;
/// How long a room event may wait for JetStream's acknowledgement once it was handed to the
/// NATS client (then its sender is told `unconfirmed`), or, counted from its acceptance, for
/// NATS to be reachable before it is handed over (then it is refused as not sent).
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two attempts to publish one room event.
const RETRY: Duration = Duration::from_millis(500);
/// How long a private message waits for the other node's answer.
const PRIVATE_TIMEOUT: Duration = Duration::from_secs(5);

/// A job's result: the session whose queue may go on, for a room event.
type Job = Pin<Box<dyn Future<Output = Option<SessionId>> + Send>>;

/// The answer of the node a private message went to.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PrivateReply {
    #[serde(default)]
    pub error: Option<String>,
}

/// For [`super::decode_wire`]: the reply to a private message.
pub(super) fn decode_wire(payload: &[u8]) -> Result<usize, &'static str> {
    super::wire::<PrivateReply>(payload, "private reply")
}

/// A room event taken from the link, waiting for its turn in its session's queue.
#[derive(Debug)]
struct Pending {
    ev: RoomEvent,
    /// When the task took it (for the deadline of an event never handed to NATS).
    accepted: Instant,
    /// This node's count of room events, for the message id of an event without a cid.
    n: u64,
}

/// The JetStream message id of a room event: derived from the sender's key and client id when
/// it has one (the same on every node, so JetStream drops a re-send through any node as a
/// duplicate), else unique to this node and event (so only our own retries are dropped).
pub(super) fn dedup_id(node: u64, ev: &RoomEvent, n: u64) -> String {
    match ev.cid {
        Some(cid) => client_id(&ev.fingerprint, cid),
        None => format!("{node:016x}-{n}"),
    }
}

/// `c-<fingerprint made header-safe>-<cid>`: the fingerprint's digest in URL-safe base64
/// ([`Fingerprint::url_safe`]: no `+` or `/`).
fn client_id(fingerprint: &chatao_proto::Fingerprint, cid: Cid) -> String {
    format!("c-{}-{cid}", fingerprint.url_safe())
}

pub(super) async fn run(
    inner: Arc<Inner>,
    hub: Hub,
    mut rx: mpsc::Receiver<Outbound>,
    stop: CancellationToken,
) {
    let mut jobs: FuturesUnordered<Job> = FuturesUnordered::new();
    // Each session's room events after the one being published (a session is a key here while
    // one of its events is being published). Bounded, with `jobs`, by MAX_IN_FLIGHT events in
    // all. Overflow policy: when full, nothing more is taken from the link (so nothing here is
    // ever dropped); the link's own bound then refuses new room messages with `busy`.
    let mut queues: HashMap<SessionId, VecDeque<Pending>> = HashMap::new();
    let mut queued: usize = 0;
    let mut beat = interval(inner.config.heartbeat);
    let mut published: u64 = 0;
    loop {
        tokio::select! {
            Some(done) = jobs.next(), if !jobs.is_empty() => {
                let Some(session) = done else { continue };
                inner.link.publishing().fetch_sub(1, Ordering::Relaxed);
                match queues.get_mut(&session).and_then(VecDeque::pop_front) {
                    Some(next) => {
                        queued -= 1;
                        jobs.push(Box::pin(publish_room(inner.clone(), hub.clone(), next)));
                    }
                    None => {
                        queues.remove(&session);
                    }
                }
            }
            out = rx.recv(), if jobs.len() + queued < MAX_IN_FLIGHT => {
                let Some(out) = out else { break };
                match out {
                    Outbound::Room(ev) => {
                        published += 1;
                        inner.link.publishing().fetch_add(1, Ordering::Relaxed);
                        let pending = Pending { ev, accepted: Instant::now(), n: published };
                        match queues.get_mut(&pending.ev.session) {
                            // One of the session's events is being published: after it.
                            Some(queue) => {
                                queue.push_back(pending);
                                queued += 1;
                            }
                            None => {
                                queues.insert(pending.ev.session, VecDeque::new());
                                jobs.push(Box::pin(publish_room(inner.clone(), hub.clone(), pending)));
                            }
                        }
                    }
                    Outbound::Presence(p) => presence::publish_change(&inner, p).await,
                    Outbound::Private { node, msg } => {
                        let (inner, hub) = (inner.clone(), hub.clone());
                        jobs.push(Box::pin(async move {
                            send_private(inner, hub, node, msg).await;
                            None
                        }));
                    }
                    Outbound::Moderation(m) => {
                        let body = serde_json::to_vec(&(inner.node, m)).unwrap_or_default();
                        if let Err(cause) = inner.client.publish(subjects::MODERATION, body.into()).await {
                            warn!(%cause, "could not publish an operator action");
                        }
                    }
                    Outbound::Ban { fingerprint, ban } => {
                        let inner = inner.clone();
                        jobs.push(Box::pin(async move {
                            identity::write_ban(&inner, &fingerprint, ban).await;
                            None
                        }));
                    }
                    Outbound::ForgetMembership { fingerprint, room, before } => {
                        let inner = inner.clone();
                        jobs.push(Box::pin(async move {
                            if identity::remember(&inner, &fingerprint, &room, false, before).await.is_err()
                            {
                                warn!(%room, "a kicked or banned key's remembered room could not be forgotten in the cluster");
                            }
                            None
                        }));
                    }
                    Outbound::Mute { fingerprint, until } => {
                        let inner = inner.clone();
                        jobs.push(Box::pin(async move {
                            identity::write_mute(&inner, &fingerprint, until).await;
                            None
                        }));
                    }
                }
            }
            _ = beat.tick() => {
                if inner.link.resync.swap(false, Ordering::Relaxed) {
                    presence::publish_snapshot(&inner, &hub).await;
                } else {
                    presence::publish_heartbeat(&inner).await;
                }
            }
            _ = stop.cancelled() => break,
        }
    }
}

/// Waits until NATS is reachable (true) or `until` passes (false).
async fn wait_up(inner: &Inner, until: Instant) -> bool {
    let mut events = inner.link.events_tx().subscribe();
    let up = async {
        loop {
            if inner.link.is_up() {
                return;
            }
            if events.changed().await.is_err() {
                // No more connection news: poll (the flag is still kept up to date).
                sleep(RETRY).await;
            }
        }
    };
    timeout(until.saturating_duration_since(Instant::now()), up).await.is_ok()
}

/// Publishes one room event and waits for JetStream's acknowledgement, retrying with the same
/// message id until [`PUBLISH_DEADLINE`]; then tells the sender the outcome is unknown (or,
/// if the event never reached the NATS client, that it was not sent). Returns the session,
/// whose next event may go now.
async fn publish_room(inner: Arc<Inner>, hub: Hub, p: Pending) -> Option<SessionId> {
    let Pending { ev, accepted, n } = p;
    let session = ev.session;
    let subject = subjects::room(ev.room.as_str());
    let payload: bytes::Bytes = serde_json::to_vec(&ev).unwrap_or_default().into();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", dedup_id(inner.node, &ev, n).as_str());
    // Set once the NATS client was given the event: from then on it may reach the stream.
    let mut handed: Option<Instant> = None;
    // Never handed over, it waits (in order behind its session's earlier events, however slow
    // NATS is) while NATS is reachable; while it is not, at most until its deadline counted
    // from its acceptance. Refusing it sooner would let the session's later events overtake
    // it when the client sends it again.
    loop {
        let deadline = handed.unwrap_or(accepted) + PUBLISH_DEADLINE;
        if !wait_up(&inner, deadline).await {
            break;
        }
        let started = *handed.get_or_insert_with(Instant::now);
        let deadline = started + PUBLISH_DEADLINE;
        let attempt = async {
            let ack = inner
                .js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        match timeout(deadline.saturating_duration_since(Instant::now()), attempt).await {
            Ok(Ok(ack)) => {
                if ack.duplicate {
                    // Sent before (through this node or another): the stream holds it once.
                    // Its sender, a member of the room, gets the echo when this node applies
                    // it, or got it already from the remembered echoes (cmd/say.rs).
                    debug!(room = %ev.room, seq = ack.sequence, "room event was a duplicate");
                }
                return Some(session);
            }
            Ok(Err(cause)) if Instant::now() < deadline => {
                warn!(%cause, room = %ev.room, "publishing a room event failed; retrying");
                sleep(RETRY).await;
            }
            _ => break,
        }
    }
    let what = match &ev.body {
        RoomBody::Message { .. } => "your message",
        RoomBody::Topic { .. } => "your topic change",
        RoomBody::Bots { .. } => "your bots setting",
        RoomBody::RoomOps { .. } => "your room operator command",
    };
    let secs = PUBLISH_DEADLINE.as_secs();
    let (code, message) = if handed.is_some() {
        warn!(room = %ev.room, "room event not confirmed in time");
        (
            ErrorCode::Unconfirmed,
            format!(
                "{what} to {} was not confirmed by the cluster within {secs}s and may still be delivered; sending it again with the same id delivers it at most once",
                ev.room
            ),
        )
    } else {
        warn!(room = %ev.room, "room event not sent: the cluster stayed unreachable");
        (
            ErrorCode::Unavailable,
            format!("{what} to {} was not sent: the cluster was unreachable for {secs}s", ev.room),
        )
    };
    let room = Some(ev.room.clone());
    hub.tell_session(session, &ServerMsg::Error { cid: ev.cid, code, message, room });
    Some(session)
}

/// Sends a private message to the node of its recipient; on its answer, the sender gets its
/// copy (the acknowledgement, remembered with its cid) or an error: a definite refusal when
/// the other node said no or nobody could take it, `unconfirmed` when no answer came (the
/// other node may have delivered it; the recipient's node drops a re-send with the same id).
async fn send_private(inner: Arc<Inner>, hub: Hub, node: u64, msg: Private) {
    let body = serde_json::to_vec(&msg).unwrap_or_default();
    let answer =
        timeout(PRIVATE_TIMEOUT, inner.client.request(subjects::node(node, "pm"), body.into()))
            .await;
    let unknown = |why: String| {
        (
            ErrorCode::Unconfirmed,
            format!(
                "private message to {} not confirmed ({why}); it may still be delivered; sending it again with the same id delivers it at most once",
                msg.to
            ),
        )
    };
    let error = match answer {
        Ok(Ok(reply)) => match serde_json::from_slice::<PrivateReply>(&reply.payload) {
            Ok(PrivateReply { error: None }) => None,
            Ok(PrivateReply { error: Some(e) }) => {
                Some((ErrorCode::NoSuchNick, format!("private message not delivered: {e}")))
            }
            Err(e) => Some(unknown(format!("bad answer from the other node: {e}"))),
        },
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Some((
            ErrorCode::NoSuchNick,
            format!("private message not delivered: {}'s server is gone", msg.to),
        )),
        Ok(Err(e)) => Some(unknown(format!("{}'s server is unreachable: {e}", msg.to))),
        Err(_) => Some(unknown(format!("{}'s server did not answer in time", msg.to))),
    };
    match error {
        None => hub.private_sent(&msg),
        Some((code, message)) => hub.tell_session(
            msg.session,
            &ServerMsg::Error { cid: msg.cid, code, message, room: None },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fingerprint: &chatao_proto::Fingerprint, cid: Option<Cid>) -> RoomEvent {
        RoomEvent {
            room: chatao_proto::RoomName::parse("#a").unwrap(),
            time: 0,
            from: chatao_proto::Nick::parse("a").unwrap(),
            node: 1,
            session: 1,
            fingerprint: fingerprint.clone(),
            cid,
            body: RoomBody::Message { kind: Default::default(), text: "x".into() },
        }
    }

    #[test]
    fn a_client_id_gives_the_same_message_id_on_every_node() {
        let fp =
            &chatao_proto::Fingerprint::parse("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU")
                .unwrap();
        let on_one = dedup_id(1, &event(fp, Some(7)), 10);
        let on_two = dedup_id(2, &event(fp, Some(7)), 99);
        assert_eq!(on_one, on_two);
        assert_eq!(on_one, "c-47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU-7");
        assert_ne!(on_one, dedup_id(1, &event(fp, Some(8)), 10), "another id");
        let other = &chatao_proto::Fingerprint::example("other");
        assert_ne!(on_one, dedup_id(1, &event(other, Some(7)), 10), "another key");
        // Without a cid: unique to the node and the event.
        assert_ne!(dedup_id(1, &event(fp, None), 10), dedup_id(2, &event(fp, None), 10));
        assert_ne!(dedup_id(1, &event(fp, None), 10), dedup_id(1, &event(fp, None), 11));
    }
}
