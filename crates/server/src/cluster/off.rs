//! A server built without the `cluster` cargo feature (`--no-default-features`): no NATS client
//! in the build (async-nats and its ~135 crates), and `--cluster` refused at start with a clear
//! error. The types the rest of the server names exist, uninhabited where only a running
//! cluster could make one, so every call site compiles unchanged and none can run.

use std::sync::Arc;

use crate::access::Access;
use crate::hub::remote::{ClusterLink, NodeId};
use crate::hub::{Hub, HubError};
use crate::store::{Retention, Store};

#[path = "config.rs"]
mod config;
pub use config::{ClusterConfig, HEARTBEAT, PRESENCE_TTL};

/// Why joining the cluster failed: here, always that this build has none.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "this chataosrv was built without cluster support (cargo feature `cluster`), so it \
         cannot join {url}; build it with the default features, or run it without --cluster"
    )]
    NotBuilt { url: String },
}

/// A node joining: none can exist in this build.
#[derive(Debug)]
pub enum Joining {}

impl Joining {
    pub fn link(&self) -> ClusterLink {
        match *self {}
    }

    pub async fn start(self, _hub: Hub, _access: Arc<Access>) -> Cluster {
        match self {}
    }
}

/// A node's membership in a cluster: none can exist in this build.
#[derive(Debug, Clone)]
pub enum Cluster {}

/// A nickname claimed cluster-wide: none can exist in this build.
#[derive(Debug)]
pub enum Claim {}

/// Refuses: this build has no cluster to join.
pub async fn connect(
    config: ClusterConfig,
    _store: &Store,
    _retention: Retention,
) -> Result<Joining, ClusterError> {
    Err(ClusterError::NotBuilt { url: config.url })
}

impl Cluster {
    pub fn node(&self) -> NodeId {
        match *self {}
    }

    pub async fn claim(
        &self,
        _nick: &chatao_proto::Nick,
        _fingerprint: &chatao_proto::Fingerprint,
        _session: u64,
    ) -> Result<Claim, HubError> {
        match *self {}
    }

    pub async fn release(&self, claim: Claim) {
        match claim {}
    }

    pub async fn remembered(
        &self,
        _fingerprint: &str,
    ) -> Result<Option<Vec<chatao_proto::RoomName>>, HubError> {
        match *self {}
    }

    pub async fn remember(
        &self,
        _fingerprint: &str,
        _room: &chatao_proto::RoomName,
        _keep: bool,
        _at: u64,
    ) -> Result<(), HubError> {
        match *self {}
    }

    pub async fn adopt(
        &self,
        _fingerprint: &str,
        _rooms: Vec<chatao_proto::RoomName>,
    ) -> Result<Vec<chatao_proto::RoomName>, HubError> {
        match *self {}
    }

    pub async fn publish_allowlist(&self, _access: &Access) {
        match *self {}
    }

    pub async fn shutdown(&self) {
        match *self {}
    }
}
