//! The task that carries what the hub hands to its cluster link out to NATS, in order:
//! room events to the stream (each acknowledged by JetStream, retried with the same message
//! id so a retry never duplicates), presence changes, private messages, operator actions.
//!
//! Waiting for acknowledgements and replies happens beside the queue, in a set of pending
//! jobs bounded by [`MAX_IN_FLIGHT`]: when it is full the task stops taking from the link,
//! whose own bound then refuses new messages with `busy`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use chatao_proto::{ErrorCode, ServerMsg};
use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{interval, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Inner, identity, presence, subjects};
use crate::hub::Hub;
use crate::hub::remote::{Outbound, Private, RoomEvent};

/// Most acknowledgements and replies awaited at once.
const MAX_IN_FLIGHT: usize = 4096;
/// How long an accepted room message is retried while NATS is unreachable before its sender
/// is told it was not delivered.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// How long a private message waits for the other node's answer.
const PRIVATE_TIMEOUT: Duration = Duration::from_secs(5);

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The answer of the node a private message went to.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PrivateReply {
    #[serde(default)]
    pub error: Option<String>,
}

pub(super) async fn run(
    inner: Arc<Inner>,
    hub: Hub,
    mut rx: mpsc::Receiver<Outbound>,
    stop: CancellationToken,
) {
    let mut jobs: FuturesUnordered<Job> = FuturesUnordered::new();
    let mut beat = interval(inner.config.heartbeat);
    let mut published: u64 = 0;
    loop {
        tokio::select! {
            Some(()) = jobs.next(), if !jobs.is_empty() => {}
            out = rx.recv(), if jobs.len() < MAX_IN_FLIGHT => {
                let Some(out) = out else { break };
                match out {
                    Outbound::Room(ev) => {
                        published += 1;
                        jobs.push(Box::pin(publish_room(inner.clone(), hub.clone(), ev, published)));
                    }
                    Outbound::Presence(p) => presence::publish_change(&inner, p).await,
                    Outbound::Private { node, msg } => {
                        jobs.push(Box::pin(send_private(inner.clone(), hub.clone(), node, msg)));
                    }
                    Outbound::Moderation(m) => {
                        let body = serde_json::to_vec(&(inner.node, m)).unwrap_or_default();
                        if let Err(cause) = inner.client.publish(subjects::MODERATION, body.into()).await {
                            warn!(%cause, "could not publish an operator action");
                        }
                    }
                    Outbound::Ban { fingerprint, ban } => {
                        let inner = inner.clone();
                        jobs.push(Box::pin(async move { identity::write_ban(&inner, &fingerprint, ban).await }));
                    }
                    Outbound::Mute { fingerprint, until } => {
                        let inner = inner.clone();
                        jobs.push(Box::pin(async move { identity::write_mute(&inner, &fingerprint, until).await }));
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

/// Publishes one room event and waits for JetStream's acknowledgement, retrying (same message
/// id, so JetStream drops duplicates) until [`PUBLISH_DEADLINE`]; then tells the sender.
async fn publish_room(inner: Arc<Inner>, hub: Hub, ev: RoomEvent, n: u64) {
    let subject = subjects::room(ev.room.as_str());
    let payload: bytes::Bytes = serde_json::to_vec(&ev).unwrap_or_default().into();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{:016x}-{n}", inner.node).as_str());
    let started = Instant::now();
    loop {
        let attempt = async {
            let ack = inner
                .js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map(|_| ()).map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(()) => return,
            Err(cause) if started.elapsed() < PUBLISH_DEADLINE => {
                warn!(%cause, room = %ev.room, "publishing a room event failed; retrying");
                sleep(Duration::from_millis(500)).await;
            }
            Err(cause) => {
                warn!(%cause, room = %ev.room, "room event not delivered");
                let what = match &ev.body {
                    crate::hub::remote::RoomBody::Message { .. } => "your message",
                    crate::hub::remote::RoomBody::Topic { .. } => "your topic change",
                };
                hub.tell_session(
                    ev.session,
                    &ServerMsg::Error {
                        cid: None,
                        code: ErrorCode::Unavailable,
                        message: format!(
                            "{what} to {} was not delivered: the cluster was unreachable for {}s",
                            ev.room,
                            PUBLISH_DEADLINE.as_secs()
                        ),
                    },
                );
                return;
            }
        }
    }
}

/// Sends a private message to the node of its recipient; on its answer, the sender gets its
/// copy (the acknowledgement) or an error.
async fn send_private(inner: Arc<Inner>, hub: Hub, node: u64, msg: Private) {
    let body = serde_json::to_vec(&msg).unwrap_or_default();
    let answer =
        timeout(PRIVATE_TIMEOUT, inner.client.request(subjects::node(node, "pm"), body.into()))
            .await;
    let error = match answer {
        Ok(Ok(reply)) => match serde_json::from_slice::<PrivateReply>(&reply.payload) {
            Ok(PrivateReply { error: None }) => None,
            Ok(PrivateReply { error: Some(e) }) => Some((ErrorCode::NoSuchNick, e)),
            Err(e) => Some((ErrorCode::Other, format!("bad answer from the other node: {e}"))),
        },
        Ok(Err(e)) => Some((ErrorCode::Unavailable, format!("{} is unreachable: {e}", msg.to))),
        Err(_) => {
            Some((ErrorCode::Unavailable, format!("{}'s server did not answer in time", msg.to)))
        }
    };
    let reply = match error {
        None => msg.to_msg(),
        Some((code, message)) => ServerMsg::Error {
            cid: None,
            code,
            message: format!("private message not delivered: {message}"),
        },
    };
    hub.tell_session(msg.session, &reply);
}
