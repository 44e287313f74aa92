//! The integration tests of chatao-server, one binary (one link on two cores): each
//! module is what was a file of its own under tests/.

mod acked;
mod adversarial;
mod amplification;
mod bots_setting;
mod chat;
#[cfg(feature = "cluster")]
mod cluster;
#[cfg(feature = "cluster")]
mod cluster_faults;
mod devices;
mod durability;
mod e2e_delivery;
mod hardening;
mod hardening_text;
mod history;
mod history_before;
mod identity;
mod install;
mod key_packages;
mod large_rooms;
mod membership;
mod metrics;
mod nicknames;
mod protocol;
mod python_client;
mod retention;
mod room_ops;
mod rooms;
mod settings;
mod wire;
