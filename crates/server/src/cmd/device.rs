//! `device_add`, `device_remove`, `device_list`: the keys of one person (`hub/devices.rs`).

use super::{Reply, SessionState, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub enum Device {
    Add { fingerprint: String, name: Option<String> },
    Remove { fingerprint: String },
    List,
}

impl Device {
    pub fn apply(self, hub: &Hub, session: &SessionState) -> Reply {
        // Add and remove answer with `devices` to every session of the person (this one too).
        let done = match self {
            Device::Add { fingerprint, name } => hub.device_add(session.id, &fingerprint, name),
            Device::Remove { fingerprint } => hub.device_remove(session.id, &fingerprint),
            Device::List => {
                return match hub.device_list(session.id) {
                    Ok(msg) => Reply::Send(msg),
                    Err(e) => hub_error(e),
                };
            }
        };
        match done {
            Ok(()) => Reply::Nothing,
            Err(e) => hub_error(e),
        }
    }
}
