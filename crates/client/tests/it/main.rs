//! The integration tests of chatao-client, one binary (one link on two cores): each
//! module is what was a file of its own under tests/.

mod common;

mod acked;
mod bots;
mod cluster;
mod devices;
mod e2e_rooms;
mod filters;
mod line_mode;
mod member_lists;
mod membership;
mod mitm;
mod net;
mod room_ops;
mod tui_bounds;
mod tui_tmux;
