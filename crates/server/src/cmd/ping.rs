//! `ping`: the client checks the server is alive.

use chatao_proto::ServerMsg;

use super::Reply;

#[derive(Debug)]
pub struct Ping {
    pub token: u64,
}

impl Ping {
    pub fn apply(self) -> Reply {
        Reply::Send(ServerMsg::Pong { token: self.token })
    }
}
