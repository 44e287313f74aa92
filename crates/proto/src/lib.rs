//! Chatao's wire messages, with no sockets and no crypto.
//!
//! Layout:
//! - [`msg`]: [`ClientMsg`] and [`ServerMsg`], the typed messages that travel inside the encrypted
//!   channel, one JSON object per newline-terminated record.
//! - [`codec`]: `encode` (one shared `Bytes` per message, newline included) and `decode_*`.
//! - [`names`]: validated newtypes for identifiers with rules ([`Nick`], [`RoomName`]).
//! - [`text`]: what text may contain ([`check_text`]) and how a client neutralises the rest before
//!   display ([`sanitize`], [`sanitize_line`]).
//! - [`error`]: [`ErrorCode`], the stable error vocabulary on the wire.
//! - [`members`]: a member list cut into records of at most 16 KiB, and put back together.
//!
//! To add a message: add the variant to `ClientMsg` or `ServerMsg` (serde names it in
//! `snake_case` under `"type"`), add an example to the round-trip tests in `codec.rs`, and document
//! it with an encoded example in docs/PROTOCOL.md.

pub mod codec;
pub mod error;
pub mod members;
pub mod msg;
pub mod names;
pub mod rate;
pub mod text;

pub use codec::{
    DecodeError, decode_client, decode_hello_flags, decode_server, encode, encode_hello,
};
pub use error::ErrorCode;
pub use msg::{
    Cid, ClientMsg, DeviceInfo, HelloFlags, LeaveReason, Limits, MAX_CID, Member, MessageKind,
    ModAction, RoomAction, RoomFlag, RoomInfo, SealedKind, SealedWelcome, ServerMsg,
};
pub use names::{FINGERPRINT_PREFIX, Fingerprint, NameError, Nick, RoomName};
pub use rate::TokenBucket;
pub use text::{TextError, check_text, sanitize, sanitize_line};

/// The protocol version, exchanged in clear before the handshake and bound into it.
pub const PROTOCOL_VERSION: u16 = 1;

/// The room every user is placed in on arrival.
pub const DEFAULT_ROOM: &str = "#lobby";
