//! The server's settings, after flags and defaults are merged ([`Config`]: everything a running
//! server needs to know that is not shared chat state), and apart from them the handles it
//! shares with the process around it ([`Runtime`]: the clock, the metrics, the notifications).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatao_proto::{Limits, RoomName};
use chatao_transport::Keypair;

use tokio::sync::Notify;

use crate::access::AccessConfig;
use crate::clock::Clock;
use crate::limits;
use crate::metrics::Metrics;
use crate::store::Retention;

/// Settings for one server. Built by the binary from its flags; tests build it with
/// [`Config::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's static key.
    pub keys: Arc<Keypair>,
    /// Where state lives (history, registrations); the binary puts `serverKey/` here too.
    pub data_dir: PathBuf,
    /// Where every user starts.
    pub default_room: RoomName,
    /// Announced to clients and enforced: text size, message rate and burst.
    pub limits: Limits,
    /// Simultaneous connections before new ones are refused.
    pub max_connections: usize,
    /// See [`limits::HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`limits::STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// See [`limits::PING_AFTER`].
    pub ping_after: Duration,
    /// See [`limits::IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`limits::MAILBOX_CAPACITY`].
    pub mailbox_capacity: usize,
    /// See [`limits::WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// Messages replayed on join ([`limits::HISTORY_ON_JOIN`]).
    pub history_on_join: usize,
    /// Output budget per connection, bytes per second ([`limits::OUTPUT_BYTES_PER_SEC`]).
    pub output_bytes_per_sec: u64,
    /// Output budget per connection, burst in bytes ([`limits::OUTPUT_BURST_BYTES`]).
    pub output_burst_bytes: u64,
    /// How much history the store keeps.
    pub retention: Retention,
    /// Where the allowlist and operators come from.
    pub access: AccessConfig,
    /// See [`limits::MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: usize,
    /// See [`limits::HANDSHAKES_PER_MINUTE`]; 0 means unlimited.
    pub handshakes_per_minute: u32,
    /// See [`limits::HANDSHAKE_BURST`].
    pub handshake_burst: u32,
    /// See [`limits::REFUSAL_SLOTS`].
    pub refusal_slots: usize,
    /// Run as one node of a cluster (`None`: standalone, on the local store alone).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Config {
    /// Defaults from [`crate::limits`], with the given key and data directory.
    pub fn new(keys: Keypair, data_dir: PathBuf) -> Config {
        Config {
            keys: Arc::new(keys),
            data_dir,
            default_room: RoomName::lobby(),
            limits: Limits {
                max_text_bytes: limits::MAX_TEXT_BYTES,
                rate_per_sec: limits::RATE_PER_SEC,
                burst: limits::BURST,
            },
            max_connections: limits::MAX_CONNECTIONS,
            handshake_timeout: limits::HANDSHAKE_TIMEOUT,
            stall_timeout: limits::STALL_TIMEOUT,
            ping_after: limits::PING_AFTER,
            idle_timeout: limits::IDLE_TIMEOUT,
            mailbox_capacity: limits::MAILBOX_CAPACITY,
            write_timeout: limits::WRITE_TIMEOUT,
            history_on_join: limits::HISTORY_ON_JOIN,
            output_bytes_per_sec: limits::OUTPUT_BYTES_PER_SEC,
            output_burst_bytes: limits::OUTPUT_BURST_BYTES,
            retention: Retention { max_messages: limits::RETENTION_MESSAGES, max_age: None },
            access: AccessConfig::default(),
            max_connections_per_ip: limits::MAX_CONNECTIONS_PER_IP,
            handshakes_per_minute: limits::HANDSHAKES_PER_MINUTE,
            handshake_burst: limits::HANDSHAKE_BURST,
            refusal_slots: limits::REFUSAL_SLOTS,
            cluster: None,
        }
    }
}

/// What a running server shares with whoever runs it, none of it a setting: the binary keeps
/// clones to serve the metrics, tell systemd and pass on SIGHUP; tests keep the clock to advance
/// it. `Runtime::default()` is a server on its own.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    /// The wall clock bans and mutes run on (tests advance it).
    pub clock: Clock,
    /// Notified to re-read the allowlist and operator files (the binary does it on SIGHUP).
    pub reload: Arc<Notify>,
    /// Counters for the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// Notified once `run` has opened the store and accepts connections (the binary then
    /// tells systemd it is ready).
    pub ready: Arc<Notify>,
}
