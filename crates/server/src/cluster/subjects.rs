//! The names every node agrees on: subjects, the stream, the buckets, and how room names and
//! nicknames become subject tokens and keys (lower-case hex of their UTF-8: room names carry
//! `#`, which subjects and keys do not allow).

use super::NodeId;

/// The stream of room events.
pub const STREAM: &str = "CHATAO_ROOMS";
/// Every room's subject.
pub const ROOMS_WILDCARD: &str = "chatao.room.>";
/// Presence: deltas, heartbeats, snapshots.
pub const PRESENCE: &str = "chatao.presence";
/// Operator actions.
pub const MODERATION: &str = "chatao.mod";
/// Nickname owners (nick -> key).
pub const NICKS: &str = "chatao_nicks";
/// Nicknames online (nick -> node, session, key).
pub const ONLINE: &str = "chatao_online";
/// Bans (key -> ban).
pub const BANS: &str = "chatao_bans";
/// Mutes (key -> end).
pub const MUTES: &str = "chatao_mutes";
/// The shared allowlist (key `allow`).
pub const ACCESS: &str = "chatao_access";
/// The rooms each key stays in (issue 19), one key per fingerprint: its sorted room list.
pub const MEMBERSHIPS: &str = "chatao_memberships";

/// Lower-case hex of `s`.
pub fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The string `hex` encodes, if it does.
pub fn unhex(h: &str) -> Option<String> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// The subject of one room.
pub fn room(name: &str) -> String {
    format!("chatao.room.{}", hex(name))
}

/// Messages for one node (private messages, session takeovers).
pub fn node(node: NodeId, what: &str) -> String {
    format!("chatao.node.{node:016x}.{what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_makes_valid_tokens() {
        for s in ["#lobby", "#ünïcode", "SHA256:abc+/="] {
            let h = hex(s);
            assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(unhex(&h).as_deref(), Some(s));
        }
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(room("#a"), "chatao.room.2361");
    }
}
