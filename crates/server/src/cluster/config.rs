//! Where the cluster is and how a node behaves in it: the same in a build with the cluster and
//! in one without (`off.rs`), so that the settings read the same in both.

use std::time::Duration;

/// How long a node stays listed after its last heartbeat.
pub const PRESENCE_TTL: Duration = Duration::from_secs(5);
/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where the cluster is and how this node behaves in it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `nats://host:port` (several, comma-separated, for a NATS cluster).
    pub url: String,
    /// See [`PRESENCE_TTL`].
    pub presence_ttl: Duration,
    /// See [`HEARTBEAT`].
    pub heartbeat: Duration,
}

impl ClusterConfig {
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig { url: url.into(), presence_ttl: PRESENCE_TTL, heartbeat: HEARTBEAT }
    }
}
