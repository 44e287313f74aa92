//! Every limit the server enforces, in one place, each with its unit and its reason.
//! `Config` starts from these defaults; flags and the config file may change the ones marked
//! configurable.

use std::time::Duration;

/// Time a new connection has to finish the Noise handshake and send `hello`. Slowloris
/// connections, which open a socket and dribble bytes, are closed when it runs out.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Silence after which the server sends a `ping`.
pub const PING_AFTER: Duration = Duration::from_secs(30);

/// Silence after which the server gives up on a client (it had `PING_AFTER` of that to answer
/// a ping).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Time one batched write to a client may take. A client whose socket does not drain in this
/// time is disconnected rather than left to hold memory.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a shutting-down server waits for sessions to say goodbye before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Messages queued for one client before it counts as too slow. Overflow policy: the client is
/// disconnected with `too_slow` (it can reconnect and catch up); the room never waits for it.
pub const MAILBOX_CAPACITY: usize = 4096;

/// Most queued messages written in one batch (one `write`, few sealed frames).
pub const WRITE_BATCH: usize = 256;

/// Largest record (one JSON message) a client may send, in bytes. A longer one is a protocol
/// violation and ends the connection.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Default longest message text, in UTF-8 bytes (configurable). Longer text is refused with
/// `too_long`; the session goes on.
pub const MAX_TEXT_BYTES: u32 = 4000;

/// Default steady message rate per connection, per second (configurable).
pub const RATE_PER_SEC: u32 = 5;

/// Default burst of messages allowed above the steady rate (configurable).
pub const BURST: u32 = 20;

/// Consecutive rate-limited messages after which a flooding client is disconnected.
pub const FLOOD_STRIKES: u32 = 50;

/// Default cap on simultaneous connections (configurable). Past it new connections are
/// refused.
pub const MAX_CONNECTIONS: usize = 20_000;

/// Pause after an `accept` error (out of file descriptors, say) before accepting again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
