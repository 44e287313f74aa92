//! History replay: what a client receives on joining a room or asking to catch up.
//!
//! The hub hands over, atomically with the join, the room's last message id and its in-memory
//! tail. Live delivery to the member starts after that id, so the replay only has to cover ids
//! up to it: from the tail when the tail reaches back far enough, else from the store, after
//! waiting for the bus to have persisted everything up to the join. Nothing is missed and
//! nothing is sent twice.
//!
//! `history` with `before` goes the other way (a client scrolling into the past): the newest
//! `limit` messages with an id below `before` (and at most the room's last id), in id order,
//! then `history_end` carrying the same `before`. A client pages back with the oldest id it
//! holds until a page is empty; each message comes once because the pages' id ranges do not
//! overlap. E2E rooms answer an empty page: a member's client cannot decrypt what was sent
//! before it joined the group, and it replays what it can from `since` already.

use bytes::Bytes;
use chatao_proto::{ErrorCode, RoomName, ServerMsg, encode, members};
use tracing::error;

use crate::cmd::Replay;
use crate::hub::Hub;
use crate::store::StoredMessage;

/// The records to send for `r`: on a join, `members` and the topic; then the messages marked
/// as history; then `history_end`.
pub async fn records(hub: &Hub, r: &Replay) -> Vec<Bytes> {
    let j = &r.joined;
    let mut out = Vec::new();
    if r.intro {
        // The list in records of at most 16 KiB (chatao_proto::members).
        let list =
            members::chunks(j.room.clone(), j.members.clone(), hub.is_e2e(&j.room), j.total, None);
        out.extend(list.iter().map(encode));
        if j.topic.is_some() {
            out.push(encode(&ServerMsg::Topic {
                room: j.room.clone(),
                text: j.topic.clone(),
                by: None,
            }));
        }
    }
    if let Some(before) = r.before {
        let msgs = match hub.is_e2e(&j.room) {
            true => Ok(Vec::new()),
            false => older(hub, r, before).await,
        };
        let msgs = unavailable(&mut out, &j.room, msgs);
        out.extend(msgs.iter().map(|m| encode(&m.to_msg(true))));
        let count = msgs.len() as u32;
        out.push(encode(&ServerMsg::HistoryEnd { room: j.room.clone(), count, before: r.before }));
        return out;
    }
    if hub.is_e2e(&j.room) {
        return sealed_records(hub, r, out).await;
    }
    let msgs = unavailable(&mut out, &j.room, messages(hub, r).await);
    out.extend(msgs.iter().map(|m| encode(&m.to_msg(true))));
    let count = msgs.len() as u32;
    out.push(encode(&ServerMsg::HistoryEnd { room: j.room.clone(), count, before: None }));
    out
}

/// The messages of a failed read replaced by an error record for the client (logged).
fn unavailable<T>(out: &mut Vec<Bytes>, room: &RoomName, msgs: Result<Vec<T>, String>) -> Vec<T> {
    msgs.unwrap_or_else(|cause| {
        error!(%room, %cause, "history unavailable");
        out.push(encode(&ServerMsg::Error {
            cid: None,
            room: Some(room.clone()),
            code: ErrorCode::Other,
            message: format!("history of {room} is unavailable right now"),
        }));
        Vec::new()
    })
}

/// The newest `r.limit` messages below `before`: from the join's tail when it holds that many
/// of them (or starts at id 1), else from the store (by its primary key `(room, id)`, after the
/// bus has written everything up to now).
async fn older(hub: &Hub, r: &Replay, before: u64) -> Result<Vec<StoredMessage>, String> {
    let j = &r.joined;
    let upto = before.saturating_sub(1).min(j.last_id);
    if upto == 0 || r.limit == 0 {
        return Ok(Vec::new());
    }
    let in_tail = j.tail.iter().filter(|m| m.id <= upto).count();
    if in_tail >= r.limit || j.tail.first().is_some_and(|m| m.id == 1) {
        let mut tail: Vec<_> =
            settled_tail(hub, r).await.into_iter().filter(|m| m.id <= upto).collect();
        let skip = tail.len().saturating_sub(r.limit);
        tail.drain(..skip);
        return Ok(tail);
    }
    hub.bus().flushed(j.seq).await;
    let store = hub.store().clone();
    let (room, limit) = (j.room.clone(), r.limit);
    tokio::task::spawn_blocking(move || store.read(&room, 0, upto, limit, false))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn messages(hub: &Hub, r: &Replay) -> Result<Vec<StoredMessage>, String> {
    let j = &r.joined;
    let tail_first = j.tail.first().map(|m| m.id);
    let (since, oldest) = match r.since {
        Some(since) if since >= j.last_id => return Ok(Vec::new()),
        Some(since) => {
            if tail_first.is_some_and(|first| first <= since + 1) {
                let tail = settled_tail(hub, r).await;
                return Ok(tail.into_iter().filter(|m| m.id > since).take(r.limit).collect());
            }
            (since, true)
        }
        None if j.last_id == 0 || r.limit == 0 => return Ok(Vec::new()),
        None => {
            if j.tail.len() >= r.limit || tail_first == Some(1) {
                let tail = settled_tail(hub, r).await;
                let skip = tail.len().saturating_sub(r.limit);
                return Ok(tail.into_iter().skip(skip).collect());
            }
            (0, false)
        }
    };
    hub.bus().flushed(j.seq).await;
    let store = hub.store().clone();
    let (room, upto, limit) = (j.room.clone(), j.last_id, r.limit);
    tokio::task::spawn_blocking(move || store.read(&room, since, upto, limit, oldest))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The join's tail snapshot without the messages the store could not write: it may have been
/// taken while they were still on the bus, so the bus is waited for first (see `crate::bus`,
/// "When the store cannot write").
async fn settled_tail(hub: &Hub, r: &Replay) -> Vec<StoredMessage> {
    let j = &r.joined;
    hub.bus().flushed(j.seq).await;
    j.tail.iter().filter(|m| !hub.bus().refused(&j.room, m.id)).cloned().collect()
}

/// The replay of an E2E room: its MLS messages (commits and application messages) as stored,
/// always from the store (E2E rooms keep no memory tail), then `history_end`. A member's client
/// asks with `since` = the last id it processed, since MLS needs every commit in order.
async fn sealed_records(hub: &Hub, r: &Replay, mut out: Vec<Bytes>) -> Vec<Bytes> {
    let j = &r.joined;
    let (since, oldest) = match r.since {
        Some(since) if since >= j.last_id => (j.last_id, true),
        Some(since) => (since, true),
        None => (0, false),
    };
    let msgs = if since >= j.last_id || r.limit == 0 {
        Ok(Vec::new())
    } else {
        hub.bus().flushed(j.seq).await;
        let store = hub.store().clone();
        let (room, upto, limit) = (j.room.clone(), j.last_id, r.limit);
        tokio::task::spawn_blocking(move || store.read_sealed(&room, since, upto, limit, oldest))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let msgs = unavailable(&mut out, &j.room, msgs);
    out.extend(msgs.iter().map(|m| encode(&m.to_msg(true))));
    let count = msgs.len() as u32;
    out.push(encode(&ServerMsg::HistoryEnd { room: j.room.clone(), count, before: None }));
    out
}
