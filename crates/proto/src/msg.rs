//! The typed messages inside the encrypted channel.
//!
//! Every message is a JSON object with a `"type"` field naming the variant in `snake_case`.
//! Fields that are optional may be omitted; unknown fields are ignored, so a newer peer may add
//! fields without breaking an older one. docs/PROTOCOL.md has an encoded example of each.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::names::{Nick, RoomName};

/// A message from a client to the server.
///
/// Names inside client messages are plain strings, not validated newtypes: the server checks
/// them itself so that it can answer a bad one with a precise [`ErrorCode`] instead of a generic
/// decoding error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// The first message after the handshake: who I want to be.
    Hello { nick: String },
    /// Text for everyone in `room`.
    Say { room: String, text: String },
    /// An action (`/me waves`) for everyone in `room`.
    Me { room: String, text: String },
    /// I am leaving; the server answers with `bye` once everything sent before has been handled.
    Quit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Keepalive probe; the server answers `pong` with the same token.
    Ping { token: u64 },
    /// Answer to the server's `ping`.
    Pong { token: u64 },
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to `hello`: the session is open.
    Welcome {
        /// This connection's session number, unique while the server runs.
        session: u64,
        /// The nickname the session holds.
        nick: Nick,
        /// The fingerprint of the client's own key, as the server saw it.
        fingerprint: String,
        /// Server software and version, e.g. `chataosrv 0.1.0`.
        server: String,
        /// The limits the client must respect.
        limits: Limits,
    },
    /// The complete member list of a room, sent to a user who has just joined it.
    Members { room: RoomName, members: Vec<Member> },
    /// `nick` joined `room` (also sent to the joiner, confirming the join).
    Join { room: RoomName, nick: Nick, fingerprint: String },
    /// `nick` left `room`.
    Leave {
        room: RoomName,
        nick: Nick,
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A chat message. The sender receives its own message too: that is its acknowledgement.
    Message {
        room: RoomName,
        /// Server-assigned, strictly increasing within the room.
        id: u64,
        /// Milliseconds since the Unix epoch, when the server accepted the message.
        time: u64,
        from: Nick,
        #[serde(default, skip_serializing_if = "MessageKind::is_normal")]
        kind: MessageKind,
        text: String,
    },
    /// Something was refused. The session goes on unless a `bye` follows.
    Error { code: ErrorCode, message: String },
    /// The server's last message before it closes the connection.
    Bye {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        reason: String,
    },
    /// Keepalive probe; answer with `pong` and the same token.
    Ping { token: u64 },
    /// Answer to the client's `ping`.
    Pong { token: u64 },
}

/// The limits a server announces in `welcome`. A client that paces itself to them is never
/// rate-limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest message text, in UTF-8 bytes.
    pub max_text_bytes: u32,
    /// Steady message rate allowed, per second.
    pub rate_per_sec: u32,
    /// Messages that may be sent at once before the steady rate applies.
    pub burst: u32,
}

/// A room member, as listed in `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub nick: Nick,
    pub fingerprint: String,
}

/// Why someone left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They said goodbye (`quit`).
    Quit,
    /// The connection ended without a goodbye: network loss, crash, or a protocol violation.
    Lost,
    /// The server disconnected them (too slow, timed out, flooding, shutdown).
    Dropped,
    /// Unknown reasons from a newer server.
    #[serde(other)]
    Other,
}

/// What kind of chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Ordinary text.
    #[default]
    Normal,
    /// An action, shown as `* alice waves`.
    Action,
}

impl MessageKind {
    fn is_normal(&self) -> bool {
        *self == MessageKind::Normal
    }
}
