//! The one seam between a standalone server and a cluster node for what a session keeps beyond
//! a room event: its nickname (owned by its key, held by one session) and the rooms its key
//! stays in. Room events have theirs in the hub ([`crate::hub::Sequencer`]); this is the
//! session's, and `session.rs` calls one function here per step, never testing for a cluster.
//!
//! - [`Registry::Local`]: the hub registers the nickname and remembers the rooms in its store
//!   (through the bus); a registration is acknowledged (`welcome`, `nick_change`) only once it
//!   is on disk, waited for here.
//! - [`Registry::Cluster`]: the nickname is claimed in the cluster's buckets first
//!   (`cluster/identity.rs`: its owner, and its one online holder), then made in the hub; the
//!   rooms a key stays in are the cluster's, written here around the hub's join and part.
//!
//! Either way the hub's [`Hub::rename`] and [`Hub::register_as`] make the change in memory
//! and check the one ownership rule (`hub/nicknames.rs`).

use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, Fingerprint, LeaveReason, Nick, RoomName};
use tokio::time::{Instant, timeout};
use tracing::warn;

use crate::cluster::{Claim, Cluster};
use crate::cmd::{Command, Reply, SessionState, check_not_muted, error, hub_error};
use crate::hub::{Hub, HubError, SessionId};
use crate::outbox::Outbox;

/// Longest wait for the store to have written a registration (at `hello`, at a nickname
/// change) before it is acknowledged; past it the request is refused with `unavailable` (a
/// store that slow is failing).
pub const REGISTRATION_WAIT: Duration = Duration::from_secs(5);

/// Where a session's nickname and rooms are kept.
#[derive(Debug, Clone, Default)]
pub enum Registry {
    /// A standalone server: its store.
    #[default]
    Local,
    /// A cluster node: the cluster's buckets.
    Cluster(Cluster),
}

/// A join or a part, whose room a cluster remembers for the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Membership {
    Join(RoomName),
    Part(RoomName),
}

impl Membership {
    /// The join or part `msg` asks for (`None` for anything else, or a room name that does
    /// not parse: the command refuses that itself).
    pub fn of(msg: &ClientMsg) -> Option<Membership> {
        match msg {
            ClientMsg::Join { room, .. } => RoomName::parse(room).ok().map(Membership::Join),
            ClientMsg::Part { room, .. } => RoomName::parse(room).ok().map(Membership::Part),
            _ => None,
        }
    }
}

impl Registry {
    /// This node's cluster, when it is part of one.
    pub fn cluster(&self) -> Option<&Cluster> {
        match self {
            Registry::Local => None,
            Registry::Cluster(cluster) => Some(cluster),
        }
    }

    /// Registers session `id` as `nick` of key `fingerprint` (at `hello`), durably: on a
    /// cluster claimed there first; standalone, on disk within [`REGISTRATION_WAIT`]. Returns
    /// the cluster's claim to give back when the session ends, or the refusal.
    pub async fn register(
        &self,
        hub: &Hub,
        id: SessionId,
        nick: &Nick,
        fingerprint: &Fingerprint,
        (mailbox, quiet): (Outbox, bool),
    ) -> Result<Option<Claim>, (ErrorCode, String)> {
        let refused = |e: HubError| (e.code(), e.to_string());
        let claim = match self {
            Registry::Local => None,
            Registry::Cluster(cluster) => {
                Some(cluster.claim(nick, fingerprint, id).await.map_err(refused)?)
            }
        };
        let before = hub.current_seq();
        if let Err(e) = hub.register_as(id, nick.clone(), fingerprint.clone(), mailbox, quiet) {
            self.release(claim).await;
            return Err(refused(e));
        }
        // A cluster's claim above is durable in its bucket; a standalone registration is once
        // the bus has stored it.
        if let Registry::Local = self {
            let upto = hub.current_seq();
            let durable = timeout(REGISTRATION_WAIT, hub.bus().durable(before, upto)).await;
            if !matches!(durable, Ok(Ok(()))) {
                hub.leave(id, LeaveReason::Lost, None);
                let why = "the server cannot store your nickname's registration right now (its \
                           disk is failing); try again later";
                return Err((ErrorCode::Unavailable, why.to_owned()));
            }
        }
        Ok(claim)
    }

    /// Gives back what [`Registry::register`] or [`Registry::rename`] claimed (the session
    /// ended).
    pub async fn release(&self, claim: Option<Claim>) {
        if let (Registry::Cluster(cluster), Some(claim)) = (self, claim) {
            cluster.release(claim).await;
        }
    }

    /// Renames the session (`nick`), durably: the new name is registered first (standalone:
    /// on disk within [`REGISTRATION_WAIT`]; on a cluster: claimed there), and the change, the
    /// `nick_change` that acknowledges it, made only then. A store or bucket that cannot take
    /// it refuses the change (`unavailable`); a cluster's old name is given back once the
    /// change is made.
    pub async fn rename(&self, hub: &Hub, state: &mut SessionState, nick: String) -> Reply {
        // The checks the command makes, before anything is registered for it.
        if let Err(reply) = check_not_muted(hub, state) {
            return *reply;
        }
        let new = match Nick::parse(&nick) {
            Ok(n) => n,
            Err(e) => return error(ErrorCode::InvalidNick, e.to_string()),
        };
        let mut released = Vec::new();
        let mut claim = None;
        match self {
            Registry::Local => {
                let (after, upto) = match hub.register_for_rename(state.id, &new) {
                    Ok((after, upto, freed)) => {
                        released = freed;
                        (after, upto)
                    }
                    Err(e) => return hub_error(e),
                };
                if upto > after {
                    let durable = timeout(REGISTRATION_WAIT, hub.bus().durable(after, upto)).await;
                    if !matches!(durable, Ok(Ok(()))) {
                        // The bus undoes the registration in memory.
                        let why = "the server cannot store your new nickname's registration \
                                   right now (its disk is failing); try again later";
                        return error(ErrorCode::Unavailable, why.to_owned());
                    }
                }
            }
            Registry::Cluster(cluster) if new.folded() != state.nick.folded() => {
                match cluster.claim(&new, &state.fingerprint, state.id).await {
                    Ok(c) => claim = Some(c),
                    Err(e) => return hub_error(e),
                }
            }
            // A change of spelling of the name it holds: nothing new to claim.
            Registry::Cluster(_) => {}
        }
        let reply = Command::from_msg(ClientMsg::Nick { nick }).apply(
            hub,
            state,
            Instant::now().into_std(),
        );
        let renamed = matches!(reply, Reply::Nothing);
        if renamed {
            hub.tell_released(state.id, &released);
        }
        match (renamed, claim) {
            (true, Some(new)) => self.release(state.claim.replace(new)).await,
            (false, claim) => self.release(claim).await,
            (true, None) => {}
        }
        reply
    }

    /// The rooms key `fingerprint` stays in (at `hello`): standalone, its store's; on a
    /// cluster, the cluster's, whichever node wrote them (a key with no set there yet gets this
    /// node's own copy, what it joined before the bucket existed).
    pub async fn remembered(
        &self,
        hub: &Hub,
        fingerprint: &Fingerprint,
    ) -> Result<Vec<RoomName>, String> {
        let Registry::Cluster(cluster) = self else {
            return hub.remembered(fingerprint).await.map_err(|e| e.to_string());
        };
        match cluster.remembered(fingerprint).await {
            Ok(Some(rooms)) => Ok(rooms),
            Ok(None) => match hub.remembered(fingerprint).await {
                Ok(own) => cluster.adopt(fingerprint, own).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    /// Before the hub makes `change` for session `id`: on a cluster a part is forgotten there
    /// first (so before the leave that acknowledges it; a bucket that cannot be written
    /// refuses the part). Standalone the hub's part itself writes the store.
    pub async fn before(
        &self,
        hub: &Hub,
        id: SessionId,
        change: Option<&Membership>,
    ) -> Result<(), HubError> {
        if let (Registry::Cluster(cluster), Some(Membership::Part(room))) = (self, change)
            && let Some((fp, _)) = hub.remembers(id, room)
        {
            cluster.remember(&fp, room, false, u64::MAX).await?;
        }
        Ok(())
    }

    /// After the hub made `change` for session `id`: on a cluster a join is remembered there
    /// (a bucket that cannot be written costs the memory, not the join: logged).
    pub async fn after(&self, hub: &Hub, id: SessionId, change: Option<&Membership>) {
        if let (Registry::Cluster(cluster), Some(Membership::Join(room))) = (self, change)
            && let Some((fp, at)) = hub.remembers(id, room)
            && let Err(cause) = cluster.remember(&fp, room, true, at).await
        {
            warn!(session = id, %cause, "cannot remember a joined room in the cluster");
        }
    }
}
