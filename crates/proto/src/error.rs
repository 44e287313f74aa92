//! The error vocabulary on the wire: a stable `snake_case` code plus a human sentence.

use serde::{Deserialize, Serialize};

/// Why the server refused something. The code is for programs; the `message` that travels with
/// it is for people. Unknown codes from a newer server decode as [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A record that is not valid JSON, or not a known message, or with wrong fields.
    BadMessage,
    /// The first message after the handshake was not `hello`, or `hello` came twice.
    BadSequence,
    /// The nickname breaks the nickname rules.
    InvalidNick,
    /// The nickname is in use by someone online.
    NickInUse,
    /// The room name breaks the room-name rules.
    InvalidRoom,
    /// Text with control, bidirectional-override or other forbidden characters, or empty.
    InvalidText,
    /// Over a size limit: text longer than the server's `max_text_bytes`, a topic or away
    /// reason over 300 bytes, a record over 16 KiB, an MLS body over 14336 characters.
    TooLong,
    /// The sender is not a member of the room it addressed.
    NotInRoom,
    /// Messages sent faster than the announced rate; this one was dropped.
    RateLimited,
    /// The server is shutting down.
    Shutdown,
    /// The client could not keep up with its incoming messages and is disconnected.
    TooSlow,
    /// The client was silent past the idle timeout.
    Timeout,
    /// The server is full.
    ServerFull,
    /// No user with that nickname is online.
    NoSuchNick,
    /// The client's key is not on the server's allowlist.
    NotAllowed,
    /// The client's key is banned; the message says why and for how long.
    Banned,
    /// An operator disconnected the client.
    Kicked,
    /// The client's key is muted; the message says for how long.
    Muted,
    /// The command is for operators only.
    NotOperator,
    /// The nickname belongs to another key.
    NickRegistered,
    /// The server cannot accept the message right now (its queues are full); it was not
    /// accepted, so resending later is safe.
    Busy,
    /// The server is one node of a cluster and cannot reach the cluster right now; the message
    /// was not accepted, so resending later is safe.
    Unavailable,
    /// `create` of a room that already exists.
    RoomExists,
    /// `join` of an invite-only E2E room whose members have not added your key.
    NotInvited,
    /// A `commit` made at an epoch that is not the room's current one: process what came in
    /// and make it again.
    StaleEpoch,
    /// `fetch_key_package` for a key that has uploaded none.
    NoKeyPackage,
    /// Plain `say`/`me` in an E2E room (only `sealed` is accepted there), or an E2E message
    /// in a plain room.
    E2eRoom,
    /// A value that breaks its rules where no more precise code applies: an empty or
    /// non-base64 MLS body, a malformed fingerprint, a welcome for a key the commit does not add.
    Invalid,
    /// The server could not confirm whether a message was accepted (a cluster node lost NATS
    /// while publishing it): it may still be delivered. Send it again with the same `cid`: it is
    /// delivered at most once, and the answer is its echo or a definite error.
    Unconfirmed,
    /// A room command (`op`, `deop`, `mode`, `room_kick`, `room_ban`, `room_unban`, `invite`)
    /// from a key that is neither an operator of that room nor a server operator.
    NotRoomOperator,
    /// `join` of an invite-only plain room by a key not on its invite list.
    InviteOnly,
    /// `join` of a room that bans the key; the message says for how long.
    BannedFromRoom,
    /// `topic` with text in a room whose topic is locked, from a key that is not its operator.
    TopicLocked,
    /// Anything else; the message says what.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The wire spelling, for logs and plain output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::BadSequence => "bad_sequence",
            ErrorCode::InvalidNick => "invalid_nick",
            ErrorCode::NickInUse => "nick_in_use",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidText => "invalid_text",
            ErrorCode::TooLong => "too_long",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Shutdown => "shutdown",
            ErrorCode::TooSlow => "too_slow",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::NoSuchNick => "no_such_nick",
            ErrorCode::Busy => "busy",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::Banned => "banned",
            ErrorCode::Kicked => "kicked",
            ErrorCode::Muted => "muted",
            ErrorCode::NotOperator => "not_operator",
            ErrorCode::NickRegistered => "nick_registered",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::NotInvited => "not_invited",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::NoKeyPackage => "no_key_package",
            ErrorCode::E2eRoom => "e2e_room",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Unconfirmed => "unconfirmed",
            ErrorCode::NotRoomOperator => "not_room_operator",
            ErrorCode::InviteOnly => "invite_only",
            ErrorCode::BannedFromRoom => "banned_from_room",
            ErrorCode::TopicLocked => "topic_locked",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
