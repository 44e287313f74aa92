//! The integration tests of chatao-transport, one binary (one link on two cores): each
//! module is what was a file of its own under tests/.

mod connection;
mod handshake_bounds;
mod hostile_input;
mod keys;
mod known_servers;
