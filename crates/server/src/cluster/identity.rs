//! Identity and moderation shared by every node, in JetStream key-value buckets.
//!
//! - `chatao_nicks`: the key that owns each nickname. Registered with an atomic `create`, so
//!   when two nodes race for a new nickname exactly one key wins.
//! - `chatao_online`: who holds each nickname right now (node, session, key). Also claimed
//!   with `create`; a holder on a node that is no longer alive, or the same key reconnecting
//!   elsewhere, is replaced with a compare-and-set `update`, so two nodes can never both win.
//!   Every node watches it: when the holder of a nickname one of its sessions holds becomes
//!   someone else (a newer revision than that session's claim), that session is ended with a
//!   `bye` — so a session on a node that looked dead (frozen, cut off) and was replaced is
//!   ended when that node wakes. The hub learns every holder too, so it never lists a remote
//!   user under a nickname the bucket gives to another session ([`Hub::online_holder`]).
//! - `chatao_bans`, `chatao_mutes`, `chatao_access`: written by the node where the operator
//!   acted, watched by every node (with their current contents at startup).
//! - `chatao_memberships` (issue 19): the rooms each key stays in, one entry per fingerprint
//!   holding its rooms, each with the room stream position it was remembered at (a JSON
//!   object `{"#room": position}`, at most [`crate::limits::MAX_ROOMS_PER_USER`]; the first
//!   form, a JSON array of names, is still read). Written by the node that handles the join or
//!   part, or a room kick's or ban's operator's node, with a compare-and-set `update` (retried
//!   on a conflict, so two nodes changing one key's set at once both land; the positions keep
//!   a kick from undoing a later rejoin, [`remember`]), read by any node at `hello`; a key
//!   without an entry gets its node's own copy ([`adopt`]). Not watched: nothing but a `hello`
//!   needs it.
//!
//! Keys in buckets are the hex of the nickname's skeleton ([`Nick::folded`]; before look-alikes
//! were one nickname, of the lower-cased nickname) or of the fingerprint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use chatao_proto::{Fingerprint, Nick};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{Inner, subjects};
use crate::access::{Access, Ban};
use crate::hub::remote::{NodeId, RemoteId};
use crate::hub::{Hub, HubError, SessionId};

/// A nickname held online by a session, to give back when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    key: String,
    revision: u64,
}

/// The value under a nickname in `chatao_online`.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    node: NodeId,
    session: SessionId,
    fingerprint: Fingerprint,
}

/// A ban as stored in `chatao_bans`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredBan {
    #[serde(default)]
    until: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
    by: String,
}

/// A mute as stored in `chatao_mutes`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMute {
    #[serde(default)]
    until: Option<u64>,
}

/// For [`super::decode_wire`]: the values of the KV buckets this file reads.
pub(super) fn decode_wire(payload: &[u8]) -> Result<usize, &'static str> {
    Ok(super::wire::<Holder>(payload, "online holder")?
        + super::wire::<StoredBan>(payload, "stored ban")?
        + super::wire::<StoredMute>(payload, "stored mute")?
        + super::wire::<Vec<String>>(payload, "allow list or room list")?)
}

const ALLOW_KEY: &str = "allow";

/// Least time between two snapshot requests to one node from a bucket watch.
const RESYNC_PACE: Duration = Duration::from_secs(1);

pub(super) async fn claim(
    inner: &Inner,
    hub: &Hub,
    nick: &Nick,
    fingerprint: &Fingerprint,
    session: SessionId,
) -> Result<Claim, HubError> {
    let key = subjects::hex(&nick.folded());
    // A look-alike registered under a key written before nicknames were compared by skeleton
    // (the lower-cased nickname's hex), learned from the bucket at startup and by its watch.
    hub.may_own(nick, fingerprint)?;
    // Ownership: the first key to use a nickname keeps it.
    match inner.nicks.create(&key, Bytes::from(fingerprint.to_string())).await {
        Ok(_) => hub.learn_owner(nick.folded(), fingerprint.clone()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let owner = inner.nicks.get(key.as_str()).await.map_err(|_| HubError::Unavailable)?;
            match owner {
                Some(owner) if owner.as_ref() != fingerprint.as_bytes() => {
                    return Err(HubError::NickRegistered(nick.clone()));
                }
                _ => {}
            }
        }
        Err(_) => return Err(HubError::Unavailable),
    }
    // Online: one holder cluster-wide.
    let value = Bytes::from(
        serde_json::to_vec(&Holder { node: inner.node, session, fingerprint: fingerprint.clone() })
            .unwrap_or_default(),
    );
    for _ in 0..4 {
        match inner.online.create(&key, value.clone()).await {
            Ok(revision) => return Ok(held(inner, key, session, revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(_) => return Err(HubError::Unavailable),
        }
        let entry = match inner.online.entry(key.as_str()).await {
            Ok(Some(entry)) => entry,
            Ok(None) => continue,
            Err(_) => return Err(HubError::Unavailable),
        };
        let holder: Option<Holder> = match entry.operation {
            kv::Operation::Put => serde_json::from_slice(&entry.value).ok(),
            _ => None,
        };
        let live = holder.as_ref().is_some_and(|h| {
            if h.node == inner.node { hub.has_session(h.session) } else { inner.is_alive(h.node) }
        });
        if let Some(h) = &holder
            && live
            && h.fingerprint != *fingerprint
        {
            return Err(HubError::NickInUse(nick.clone()));
        }
        // Free, a leftover of a node that is gone, or the same key reconnecting: take it.
        if let Ok(revision) = inner.online.update(&key, value.clone(), entry.revision).await {
            if let Some(h) = holder.filter(|h| live && h.node != inner.node) {
                end_remote(inner, h.node, h.session).await;
            }
            // A holder on a node that looks dead is not told now: its node ends it when it
            // sees this newer revision (see `watch_all`).
            return Ok(held(inner, key, session, revision));
        }
    }
    Err(HubError::NickInUse(nick.clone()))
}

/// Notes that local `session` holds `key` since `revision`, and returns its claim.
fn held(inner: &Inner, key: String, session: SessionId, revision: u64) -> Claim {
    let mut claims = inner.claims.lock();
    claims.insert(key.clone(), (session, revision));
    Claim { key, revision }
}

/// Asks `node` to end `session`, which a new connection with the same key replaces.
async fn end_remote(inner: &Inner, node: NodeId, session: SessionId) {
    let body = serde_json::to_vec(&session).unwrap_or_default();
    if let Err(cause) = inner.client.publish(subjects::node(node, "end"), body.into()).await {
        warn!(%cause, "could not ask a node to end a replaced session");
    }
}

pub(super) async fn release(inner: &Inner, claim: Claim) {
    {
        let mut claims = inner.claims.lock();
        if claims.get(&claim.key).is_some_and(|(_, r)| *r == claim.revision) {
            claims.remove(&claim.key);
        }
    }
    // Only if it is still ours: a newer holder (the same key elsewhere) keeps it.
    let _ = inner.online.delete_expect_revision(claim.key.as_str(), Some(claim.revision)).await;
}

/// How many times a membership change is tried against concurrent writers of the same key.
const MEMBERSHIP_TRIES: usize = 8;

/// The rooms in `chatao_memberships` for `fingerprint`, in name order (names that do not
/// parse are skipped; a value that is neither form is an empty set); `None` when the key has
/// no entry at all (never written: a key from before the bucket, see [`adopt`]).
pub(super) async fn remembered(
    inner: &Inner,
    fingerprint: &str,
) -> Result<Option<Vec<chatao_proto::RoomName>>, HubError> {
    let key = subjects::hex(fingerprint);
    let entry = inner.memberships.entry(key.as_str()).await.map_err(|_| HubError::Unavailable)?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| room_list(&e).into_keys().collect()))
}

/// An entry's rooms, each with the stream position it was remembered at (see [`remember`]):
/// the value is a JSON object `{"#room": position}`; a JSON array of names (the first form)
/// reads as position 0.
fn room_list(entry: &kv::Entry) -> BTreeMap<chatao_proto::RoomName, u64> {
    match entry.operation {
        kv::Operation::Put => rooms_of(&entry.value),
        _ => BTreeMap::new(),
    }
}

/// [`room_list`] of a value.
fn rooms_of(value: &[u8]) -> BTreeMap<chatao_proto::RoomName, u64> {
    let named: Vec<(String, u64)> = match serde_json::from_slice::<BTreeMap<String, u64>>(value) {
        Ok(map) => map.into_iter().collect(),
        Err(_) => serde_json::from_slice::<Vec<String>>(value)
            .unwrap_or_default()
            .into_iter()
            .map(|n| (n, 0))
            .collect(),
    };
    named
        .into_iter()
        .filter_map(|(n, at)| chatao_proto::RoomName::parse(&n).ok().map(|r| (r, at)))
        .collect()
}

fn room_value(rooms: &BTreeMap<chatao_proto::RoomName, u64>) -> Bytes {
    let named: BTreeMap<&str, u64> = rooms.iter().map(|(r, at)| (r.as_str(), *at)).collect();
    Bytes::from(serde_json::to_vec(&named).unwrap_or_default())
}

/// Adds (`keep`) or removes `room` in `fingerprint`'s set in `chatao_memberships`: read,
/// change, compare-and-set (`create` when there is no entry), retried on a conflict. A set
/// already at [`crate::limits::MAX_ROOMS_PER_USER`] rooms is left as it is (the join happens,
/// it is not remembered, as on a standalone server). Returns once the bucket has the change.
///
/// `at` orders the writes of different nodes by the room stream's position, which every node
/// applies in the same order. A join remembers the room at the position its node had applied
/// when it joined (kept: the higher of that and what the entry had). A room operator's kick or
/// ban forgets it only if it was remembered before the kick's position: a rejoin on a node
/// that had already applied the kick is kept even when the kicking node's write lands after
/// it. A part forgets at `u64::MAX` (always).
pub(super) async fn remember(
    inner: &Inner,
    fingerprint: &str,
    room: &chatao_proto::RoomName,
    keep: bool,
    at: u64,
) -> Result<(), HubError> {
    let key = subjects::hex(fingerprint);
    for _ in 0..MEMBERSHIP_TRIES {
        let entry =
            inner.memberships.entry(key.as_str()).await.map_err(|_| HubError::Unavailable)?;
        let mut rooms = entry.as_ref().map(room_list).unwrap_or_default();
        if !change_set(&mut rooms, room, keep, at) {
            return Ok(());
        }
        let body = room_value(&rooms);
        let written = match entry {
            Some(e) => inner.memberships.update(&key, body, e.revision).await.is_ok(),
            None => inner.memberships.create(&key, body).await.is_ok(),
        };
        if written {
            return Ok(());
        }
    }
    warn!("could not change a key's remembered rooms in the cluster (too many concurrent writers)");
    Err(HubError::Unavailable)
}

/// Makes [`remember`]'s change to a key's set `rooms`; whether it changed (else nothing is
/// written).
fn change_set(
    rooms: &mut BTreeMap<chatao_proto::RoomName, u64>,
    room: &chatao_proto::RoomName,
    keep: bool,
    at: u64,
) -> bool {
    match (keep, rooms.get(room).copied()) {
        (true, Some(had)) if had >= at => false,
        (true, None) if rooms.len() >= crate::limits::MAX_ROOMS_PER_USER => false,
        (true, _) => {
            rooms.insert(room.clone(), at);
            true
        }
        (false, None) => false,
        // Remembered at or after the kick: a rejoin that saw it.
        (false, Some(had)) if had >= at => false,
        (false, Some(_)) => {
            rooms.remove(room);
            true
        }
    }
}

/// The set of a key with no entry in `chatao_memberships` (one that joined its rooms before
/// the bucket existed) taken from `rooms`, the node's own copy: created at position 0 unless
/// another node created one first, then that one counts. Returns the set that counts.
pub(super) async fn adopt(
    inner: &Inner,
    fingerprint: &str,
    rooms: Vec<chatao_proto::RoomName>,
) -> Result<Vec<chatao_proto::RoomName>, HubError> {
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    let key = subjects::hex(fingerprint);
    let set: BTreeMap<chatao_proto::RoomName, u64> =
        rooms.into_iter().take(crate::limits::MAX_ROOMS_PER_USER).map(|r| (r, 0)).collect();
    if inner.memberships.create(&key, room_value(&set)).await.is_ok() {
        return Ok(set.into_keys().collect());
    }
    Ok(remembered(inner, fingerprint).await?.unwrap_or_default())
}

/// The fingerprint a bucket key (its hex) names; `None` (and a warning) when it names none.
fn fingerprint_key(key: &str) -> Option<Fingerprint> {
    let fp = subjects::unhex(key).and_then(|s| Fingerprint::parse(&s).ok());
    if fp.is_none() {
        warn!(key, "a bucket key that is not a fingerprint is ignored");
    }
    fp
}

pub(super) async fn publish_allowlist(inner: &Inner, access: &Access) {
    match access.allow_file_list() {
        Ok(Some(list)) => {
            let mut list: Vec<Fingerprint> = list.into_iter().collect();
            list.sort();
            let body = serde_json::to_vec(&list).unwrap_or_default();
            match inner.access_kv.put(ALLOW_KEY, body.into()).await {
                Ok(_) => info!(keys = list.len(), "allowlist published to the cluster"),
                Err(cause) => warn!(%cause, "could not publish the allowlist"),
            }
        }
        Ok(None) => {}
        Err(cause) => warn!(%cause, "allowlist not published"),
    }
}

/// Writes a ban (or lifts it) in the shared bucket.
pub(super) async fn write_ban(inner: &Inner, fingerprint: &str, ban: Option<Ban>) {
    let key = subjects::hex(fingerprint);
    let result = match ban {
        Some(b) => {
            let stored = StoredBan { until: b.until, reason: b.reason, by: b.by };
            let body = serde_json::to_vec(&stored).unwrap_or_default();
            inner.bans.put(key, body.into()).await.map(|_| ()).map_err(|e| e.to_string())
        }
        None => inner.bans.delete(key).await.map_err(|e| e.to_string()),
    };
    if let Err(cause) = result {
        warn!(%cause, "could not write a ban to the cluster");
    }
}

/// Writes a mute (or lifts it) in the shared bucket.
pub(super) async fn write_mute(inner: &Inner, fingerprint: &str, until: Option<Option<u64>>) {
    let key = subjects::hex(fingerprint);
    let result = match until {
        Some(until) => {
            let body = serde_json::to_vec(&StoredMute { until }).unwrap_or_default();
            inner.mutes.put(key, body.into()).await.map(|_| ()).map_err(|e| e.to_string())
        }
        None => inner.mutes.delete(key).await.map_err(|e| e.to_string()),
    };
    if let Err(cause) = result {
        warn!(%cause, "could not write a mute to the cluster");
    }
}

/// Starts one task per shared bucket that applies its contents, then its changes.
pub(super) fn watch_all(
    inner: &Arc<Inner>,
    hub: &Hub,
    access: &Arc<Access>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    let apply_online = {
        let (inner, hub) = (inner.clone(), hub.clone());
        move |key: &str, entry: Option<&[u8]>, revision: u64| {
            let folded = subjects::unhex(key)?;
            let holder = entry.and_then(|v| serde_json::from_slice::<Holder>(v).ok());
            let holder = holder.map(|h| RemoteId { node: h.node, session: h.session });
            let wanted = hub.online_holder(&folded, holder);
            let rid = holder?;
            let replaced = {
                let mut claims = inner.claims.lock();
                match claims.get(key).copied() {
                    Some((session, since))
                        if revision > since
                            && (rid.node != inner.node || rid.session != session) =>
                    {
                        claims.remove(key);
                        Some(session)
                    }
                    _ => None,
                }
            };
            if let Some(session) = replaced {
                info!(session, "a newer connection holds this session's nickname: ending it");
                let bye = chatao_proto::ServerMsg::Bye {
                    code: Some(chatao_proto::ErrorCode::Other),
                    reason:
                        "replaced by a newer connection with the same key on another server node"
                            .into(),
                };
                hub.end_session(
                    session,
                    bye,
                    chatao_proto::LeaveReason::Lost,
                    "reconnected elsewhere",
                );
            }
            wanted.then_some(rid.node)
        }
    };
    let apply_ban = {
        let access = access.clone();
        move |key: &str, entry: Option<&[u8]>| {
            let Some(fp) = fingerprint_key(key) else { return };
            match entry.and_then(|v| serde_json::from_slice::<StoredBan>(v).ok()) {
                Some(b) => {
                    access.ban(Ban { fingerprint: fp, until: b.until, reason: b.reason, by: b.by })
                }
                None => {
                    access.unban(&fp);
                }
            }
        }
    };
    let apply_mute = {
        let access = access.clone();
        move |key: &str, entry: Option<&[u8]>| {
            let Some(fp) = fingerprint_key(key) else { return };
            match entry.and_then(|v| serde_json::from_slice::<StoredMute>(v).ok()) {
                Some(m) => access.mute(&fp, m.until),
                None => {
                    access.unmute(&fp);
                }
            }
        }
    };
    let apply_owner = {
        let hub = hub.clone();
        move |key: &str, entry: Option<&[u8]>| {
            let fp = entry.and_then(|v| std::str::from_utf8(v).ok());
            match (subjects::unhex(key), fp.map(Fingerprint::parse)) {
                (Some(folded), Some(Ok(fp))) => hub.learn_owner(folded, fp),
                (_, Some(Err(_))) => warn!(key, "a nickname owner that is not a fingerprint"),
                _ => {}
            }
        }
    };
    let apply_allow = {
        let access = access.clone();
        move |key: &str, entry: Option<&[u8]>| {
            if key != ALLOW_KEY {
                return;
            }
            // A list that is not all fingerprints is not applied: as if absent.
            let list = entry.and_then(|v| serde_json::from_slice::<Vec<Fingerprint>>(v).ok());
            access.set_allow(list.map(|l| l.into_iter().collect::<HashSet<Fingerprint>>()));
        }
    };
    let events = || inner.link.events_tx().subscribe();
    let w = |store: &kv::Store| (inner.clone(), store.clone());
    tasks.spawn(watch(w(&inner.online), apply_online, events(), stop.clone()));
    tasks.spawn(watch(w(&inner.bans), only(apply_ban), events(), stop.clone()));
    tasks.spawn(watch(w(&inner.mutes), only(apply_mute), events(), stop.clone()));
    tasks.spawn(watch(w(&inner.nicks), only(apply_owner), events(), stop.clone()));
    tasks.spawn(watch(w(&inner.access_kv), only(apply_allow), events(), stop.clone()));
}

/// A bucket's `apply` that needs neither the revision nor a snapshot of anyone's users.
fn only(
    apply: impl Fn(&str, Option<&[u8]>) + Send + 'static,
) -> impl Fn(&str, Option<&[u8]>, u64) -> Option<NodeId> + Send + 'static {
    move |key, value, _| {
        apply(key, value);
        None
    }
}

/// Applies a bucket's entries (current ones first, then changes) until stopped; re-watches
/// after an error (a reconnection replays the current contents, which is harmless). `apply`
/// gets each key, its value (`None`: deleted) and revision, and may name a node whose users
/// this node should ask for (a holder it does not know yet); each node is asked at most once
/// per [`RESYNC_PACE`].
async fn watch<F>(
    (inner, store): (Arc<Inner>, kv::Store),
    apply: F,
    mut events: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) where
    F: Fn(&str, Option<&[u8]>, u64) -> Option<NodeId> + Send + 'static,
{
    // Nodes asked for a snapshot, and when. Bounded by the nodes of the cluster: entries older
    // than the pace are dropped each time one is added.
    let mut asked: HashMap<NodeId, Instant> = HashMap::new();
    loop {
        events.borrow_and_update();
        let run = async {
            let mut entries = store.watch_with_history(">").await.map_err(|e| e.to_string())?;
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(|e| e.to_string())?;
                let value = match entry.operation {
                    kv::Operation::Put => Some(entry.value.as_ref()),
                    kv::Operation::Delete | kv::Operation::Purge => None,
                };
                let Some(node) = apply(&entry.key, value, entry.revision) else { continue };
                if asked.get(&node).is_some_and(|at| at.elapsed() < RESYNC_PACE) {
                    continue;
                }
                asked.retain(|_, at| at.elapsed() < RESYNC_PACE);
                asked.insert(node, Instant::now());
                super::presence::request_snapshot(&inner, node).await;
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            r = run => if let Err(cause) = r {
                warn!(%cause, "watching a cluster bucket failed; retrying");
            },
            _ = super::reconnected(&mut events) => continue,
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatao_proto::RoomName;

    fn room(r: &str) -> RoomName {
        RoomName::parse(r).unwrap_or_else(|e| panic!("{r}: {e}"))
    }

    /// A kick's forgetting, written late by the operator's node, does not undo a rejoin that
    /// a node made after applying the kick; it does forget a membership from before it.
    #[test]
    fn a_late_kick_forgets_only_what_was_remembered_before_it() {
        let mut set = BTreeMap::new();
        assert!(change_set(&mut set, &room("#den"), true, 10), "joined at 10");
        assert!(!change_set(&mut set, &room("#den"), true, 3), "an older join changes nothing");
        assert_eq!(set.get(&room("#den")), Some(&10));
        assert!(!change_set(&mut set, &room("#den"), false, 7), "kick at 7: the rejoin stays");
        assert!(!change_set(&mut set, &room("#den"), false, 10), "kick at 10: applied before");
        assert!(change_set(&mut set, &room("#den"), false, 11), "kick at 11 forgets it");
        assert!(set.is_empty());
        assert!(!change_set(&mut set, &room("#den"), false, u64::MAX), "nothing to forget");
        assert!(change_set(&mut set, &room("#a"), true, 0));
        assert!(change_set(&mut set, &room("#a"), false, u64::MAX), "a part always forgets");
        for i in 0..crate::limits::MAX_ROOMS_PER_USER {
            assert!(change_set(&mut set, &room(&format!("#r{i}")), true, 1));
        }
        assert!(!change_set(&mut set, &room("#full"), true, 1), "past the bound: not kept");
    }

    #[test]
    fn both_forms_of_the_value_are_read_and_the_new_one_written() {
        let old = rooms_of(br##"["#b","#a","not a room"]"##);
        assert_eq!(old, BTreeMap::from([(room("#a"), 0), (room("#b"), 0)]));
        let new = rooms_of(br##"{"#a":4,"#b":9}"##);
        assert_eq!(new, BTreeMap::from([(room("#a"), 4), (room("#b"), 9)]));
        assert_eq!(&room_value(&new)[..], br##"{"#a":4,"#b":9}"##);
        assert!(rooms_of(b"garbage").is_empty());
    }
}
