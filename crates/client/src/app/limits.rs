//! Every bound on what a server can make the full-screen client hold or draw (issue 15, item
//! 18), with its overflow policy. A hostile server ignores the protocol's limits (records of
//! any size, a message of two million lines, thousands of conversations), so the client keeps its
//! own, and says on screen whenever one of them took something away.
//!
//! What the network actor itself accepts is bounded apart: one record of at most
//! [`crate::net::MAX_SERVER_RECORD`] bytes, [`crate::net::EVENT_QUEUE`] events waiting.

/// Largest text kept for one line of a buffer (UTF-8 bytes, before sanitising). An honest
/// message always fits: its text came in a client record of at most 16 KiB (PROTOCOL 4.3, 7.2).
/// Overflow policy: the rest is cut (at a character boundary) and the entry ends with a fold
/// row, `… 3 more lines, 4.0 MiB not kept (client limit)`.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Most lines (`\n`-separated) kept for one line of a buffer: more than an honest message of
/// 16 KiB can hold. Overflow policy: as [`MAX_ENTRY_BYTES`], the rest is cut and folded.
pub const MAX_ENTRY_LINES: usize = 10_000;

/// Entries kept per buffer. Overflow policy: the oldest goes (the server keeps the history) and
/// is counted in the buffer's "-- N older messages dropped (memory limit) --" marker.
pub const SCROLLBACK: usize = 5000;

/// Bytes kept per buffer, each entry counted by [`crate::app::buffer::Entry::cost`] (its text
/// and its bookkeeping). Overflow policy: as [`SCROLLBACK`], oldest first, counted in the
/// marker.
pub const BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Bytes kept over all buffers. Overflow policy: the oldest entry of the largest buffer goes
/// first, again and again until the total fits, each counted in that buffer's marker.
pub const TOTAL_BYTES: usize = 32 * 1024 * 1024;

/// Buffers (rooms and private conversations) open at once. Overflow policy: opening one more
/// closes the least recently active buffer other than the one shown, and says so in the
/// buffer shown (`closed bob: too many buffers open (limit 256)`); the server still has its
/// history, and a conversation that speaks again opens again.
pub const MAX_BUFFERS: usize = 256;

/// Members listed per room. Overflow policy: members past it are not added to the member list
/// (and not offered by Tab completion); their joins, leaves and messages are shown as always.
pub const MAX_MEMBERS: usize = 5000;

/// Members listed over all buffers. Overflow policy: the member list of the least recently
/// active buffer other than the one shown is cleared, again until the total fits, and that
/// buffer says so (`/who` lists the room again).
pub const TOTAL_MEMBERS: usize = 20_000;

/// Room names remembered from `/list` answers, for Tab completion. Overflow policy: the names
/// that sort last are forgotten (completion then does not offer them; `/list` still shows
/// every room it gets).
pub const KNOWN_ROOMS: usize = 10_000;

/// Longest topic or away reason kept (UTF-8 bytes): the server refuses longer ones
/// (PROTOCOL 7.2). Overflow policy: cut at a character boundary, ending with `…`.
pub const MAX_REASON_BYTES: usize = 300;

/// `text` cut to at most `max` bytes (at a character boundary), with `…` after a cut.
pub fn clamp(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

/// Bounds the texts of `msg` that a buffer keeps outside its entries (a topic for the title
/// bar, away reasons in the member list) to [`MAX_REASON_BYTES`], before anything reads them;
/// chat texts are bounded by the entries ([`MAX_ENTRY_BYTES`]).
pub fn bound_server_msg(msg: &mut chatao_proto::ServerMsg) {
    use chatao_proto::ServerMsg;
    match msg {
        ServerMsg::Topic { text: Some(t), .. } | ServerMsg::Away { reason: Some(t), .. } => {
            clamp(t, MAX_REASON_BYTES);
        }
        ServerMsg::Members { members, .. } => {
            for a in members.iter_mut().filter_map(|m| m.away.as_mut()) {
                clamp(a, MAX_REASON_BYTES);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_cuts_at_a_character_boundary_and_says_so() {
        let mut s = "é".repeat(200);
        clamp(&mut s, MAX_REASON_BYTES);
        assert_eq!(s, format!("{}…", "é".repeat(150)));
        let mut s = format!("a{}", "é".repeat(200));
        clamp(&mut s, MAX_REASON_BYTES);
        assert_eq!(s, format!("a{}…", "é".repeat(149)));
        let mut honest = "x".repeat(MAX_REASON_BYTES);
        clamp(&mut honest, MAX_REASON_BYTES);
        assert_eq!(honest.len(), MAX_REASON_BYTES, "not cut");
    }
}
