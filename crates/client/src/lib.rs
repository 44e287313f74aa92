//! The Chatao client, as a library; `chatao` (src/main.rs) is a thin binary over it.
//!
//! Layout:
//! - [`net`]: the network actor: connect, trust decision, `hello`/`welcome`, then a task that
//!   relays events and paces outgoing messages; used unchanged by both modes.
//! - [`trust`]: pinning the server's key (`--server-key`, or trust on first use).
//! - [`command`]: what the user types (`/me waves`), parsed; shared by both modes.
//! - [`format`]: events as plain or JSON lines for line mode.
//! - [`line`]: line mode (stdin/stdout), for scripts, bots and pipes.
//!
//! To add a command: a row in [`command::COMMANDS`], an [`command::Input`] variant and its arm
//! in [`command::parse`], then its handling in [`line`] (and the TUI).

pub mod command;
pub mod format;
pub mod line;
pub mod net;
pub mod trust;
