//! The Chatao server, as a library; `chataosrv` (src/main.rs) is a thin binary over it.
//!
//! Layout:
//! - [`server`]: `run(listener, config, runtime, shutdown)`, the accept loop and graceful shutdown.
//! - [`admission`]: which new connections are admitted, refused with a reason, or closed:
//!   per-address caps and attempt rates, decided at `accept`.
//! - [`session`]: one connection: handshake, `hello`, then a `select!` over the socket, the
//!   session's outbox, the idle timer and shutdown.
//! - [`cmd`]: one file per client command; `Command::from_msg` then `apply(&hub, &mut state)`.
//! - [`hub`] and [`room`]: the shared chat state behind a handle; [`outbox`]: each session's
//!   bounded sending side, through which the bus thread writes to the socket itself.
//! - [`bus`]: the one seam room events leave the hub through: persisted, then delivered.
//! - [`store`]: history, topics and room ids in SQLite; [`replay`]: history sent to a client on
//!   join and catch-up.
//! - [`access`]: allowlist, operators, bans and mutes, by key fingerprint; [`clock`]: the
//!   wall clock their durations run on.
//! - [`config`] and [`limits`]: settings (`Config`), the handles shared with the caller
//!   (`Runtime`), and every limit as a named constant; [`settings`]: the binary's flags and TOML
//!   config file, each setting declared once, merged into a `Config`.
//! - [`metrics`]: counters, and the optional Prometheus endpoint that serves them;
//!   [`log_budget`]: how many refused connections a minute reach the log at `info`.
//!
//! To add a command: see [`cmd`]. To add a limit: a constant in [`limits`], a field in
//! [`Config`] if it is configurable, and a line in README.md's limits table.

pub mod access;
pub mod admission;
pub mod bus;
pub mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
/// Without the `cluster` feature: the same names, none of them able to run (`cluster/off.rs`).
#[cfg(not(feature = "cluster"))]
#[path = "cluster/off.rs"]
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod hub;
pub mod limits;
pub mod log_budget;
pub mod metrics;
pub mod outbox;
pub mod replay;
pub mod room;
pub mod server;
pub mod session;
pub mod settings;
pub mod store;

pub use config::{Config, Runtime};
pub use server::run;
