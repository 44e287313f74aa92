//! `whois`: who someone is, with their key fingerprint.

use super::{Reply, hub_error};
use crate::hub::Hub;

#[derive(Debug)]
pub struct Whois {
    pub nick: String,
}

impl Whois {
    pub fn apply(self, hub: &Hub) -> Reply {
        match hub.whois(&self.nick) {
            Ok(msg) => Reply::Send(msg),
            Err(e) => hub_error(e),
        }
    }
}
