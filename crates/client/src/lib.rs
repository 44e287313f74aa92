//! The Chatao client, as a library; `chatao` (src/main.rs) is a thin binary over it.
//!
//! Layout:
//! - [`net`]: the network actor: connect, trust decision, `hello`/`welcome`, then a task that
//!   relays events and paces outgoing messages; used unchanged by both modes, and knows
//!   nothing of end-to-end encryption.
//! - [`connect`](mod@connect): a connection as both modes use it: the actor with the E2E layer
//!   composed over it, the handle the UI holds and the typed error.
//! - [`trust`]: pinning the server's key (`--server-key`, or trust on first use, vouched for by
//!   the other servers of a list).
//! - [`servers`]: the server list (`host1:7000,host2:7000`), the command line's forms, and
//!   the order and pace of reconnection attempts; shared by both modes.
//! - [`e2e`]: end-to-end encrypted rooms, a layer between [`net`] and the UI (put there by
//!   [`connect`](mod@connect)); which process
//!   of a key holds the E2E state ([`e2e::StateClaims`]), and a connection without it
//!   ([`e2e::off`]).
//! - [`core`](mod@core): the connection core both modes drive, pure (no I/O, no clock): the
//!   rooms and their catch-up, client ids and the messages awaiting acknowledgement (re-sent
//!   after a reconnection), the reconnection schedule.
//! - [`catchup`]: which messages were shown, so a reconnection's catch-up shows each once.
//! - [`command`]: what the user types (`/me waves`), parsed; shared by both modes.
//! - [`config`]: the client's config file and the ignore file `/ignore` writes.
//! - [`chatlog`]: per-buffer, per-day plain-text chat logs.
//! - [`filter`]: ignored keys, highlight words, the smart join/part filter (pure).
//! - [`format`](mod@format): events as plain or JSON lines for line mode.
//! - [`line`](mod@line): line mode (stdin/stdout), for scripts, bots and pipes.
//! - [`state`]: line mode's place across restarts (`--state FILE`), written atomically.
//! - [`man`]: the manual page (`chatao --man`).
//! - [`app`]: the full-screen UI's state; `App::update(event) -> effects` is pure.
//! - [`ui`]: drawing that state with ratatui (render only).
//! - [`tui`]: the terminal, the event loop, the effect executor and reconnection.
//!
//! To add a command: a row in [`command::COMMANDS`], an [`command::Input`] variant and its arm
//! in [`command::parse`], then its handling in [`line`](mod@line) and in the TUI (`app/submit.rs`).

pub mod app;
pub mod catchup;
pub mod chatlog;
pub mod command;
pub mod config;
pub mod connect;
pub mod core;
pub mod e2e;
pub mod filter;
pub mod format;
pub mod line;
pub mod man;
pub mod net;
pub mod servers;
pub mod state;
pub mod trust;
pub mod tui;
pub mod ui;
