//! `chatao-bench`: load scenarios against a Chatao server and, side by side in the same run, an
//! IRC server over TLS, so that every comparison is measured on the same machine at the same
//! time. Clients use the project's own client actor (`chatao_client::net`) and transport; the
//! bench never re-implements the protocol. Only the attackers of [`attack`] write records
//! themselves, through `chatao_transport` and `chatao_proto`, to send what no client would.
//!
//! Layout:
//! - [`fanout`], [`idle`], [`churn`]: the scenarios, each bounded in count and time;
//!   [`e2e_fanout`]: a plain room's fanout beside an end-to-end encrypted room's (Chatao only);
//!   [`attack`]: issue 15's adversarial run, an honest pair's latency under each attack kind
//!   (Chatao only, default limits, attackers on raw connections).
//! - [`target`]: the endpoint under test, its clients, and the per-client [`target::Recorder`];
//!   [`chatao`] and [`irc`] are the two kinds of client.
//! - [`run`]: repeats a scenario against each target, starting fresh servers ([`server`]).
//! - [`payload`]: the stamped text every message carries; [`ledger`]: loss and duplicate
//!   accounting; [`stats`]: percentiles; [`procfs`]: server CPU and memory from `/proc`.
//! - [`report`]: the human table, JSON lines and CSV; [`chart`]: the SVG chart drawn from
//!   the JSON lines (plotters).
//!
//! To add a scenario: a module with an options struct and `run(&Endpoint, &Options, deadline)
//! -> Report`, a subcommand in `main.rs`, and its section in BENCHMARKS.md.

pub mod attack;
pub mod chart;
pub mod chatao;
pub mod churn;
pub mod common;
pub mod e2e_fanout;
pub mod fanout;
pub mod idle;
pub mod irc;
pub mod ledger;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod run;
pub mod server;
pub mod stats;
pub mod target;
