//! The Chatao server, as a library; `chataosrv` (src/main.rs) is a thin binary over it.
//!
//! Layout:
//! - [`server`]: `run(listener, config, shutdown)`, the accept loop and graceful shutdown.
//! - [`session`]: one connection: handshake, `hello`, then a `select!` over the socket, the
//!   session's inbox, the idle timer and shutdown.
//! - [`cmd`]: one file per client command; `Command::from_msg` then `apply(&hub, &mut state)`.
//! - [`hub`] and [`room`]: the shared chat state behind a handle; [`mailbox`]: the bounded
//!   queue from the hub to each session.
//! - [`config`] and [`limits`]: settings, and every limit as a named constant.
//!
//! To add a command: see [`cmd`]. To add a limit: a constant in [`limits`], a field in
//! [`Config`] if it is configurable, and a line in README.md's limits table.

pub mod cmd;
pub mod config;
pub mod hub;
pub mod limits;
pub mod mailbox;
pub mod room;
pub mod server;
pub mod session;

pub use config::Config;
pub use server::run;
