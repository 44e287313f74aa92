//! A room's member list on the wire: cut into `members` records of at most
//! [`MEMBERS_RECORD_BYTES`] ([`chunks`], the server's side) and put back together
//! ([`Assembler`], the client's side).
//!
//! A member is at most about 730 bytes encoded (a 32-byte nickname, the fingerprint, a
//! 300-byte away reason whose quotes JSON doubles, the flags), so a list of 99 members (a small
//! room's join answer) or a 200-member `who` page could pass the 64 KiB every client must
//! accept (PROTOCOL 4.3). Every list goes out in records of at most 16 KiB: all but the last
//! carry `more`, and a client appends them until the one without it.

use crate::msg::{Member, ServerMsg};
use crate::names::{Nick, RoomName};

/// Largest encoded `members` record the server sends (newline included), unless one member
/// alone is larger (never, with the text rules: about 730 bytes at most).
pub const MEMBERS_RECORD_BYTES: usize = 16 * 1024;

/// Most members a client puts together from one list's records. Overflow policy: members past
/// it are dropped and the list is marked partial (its `total` kept, or set to what was sent).
pub const MAX_ASSEMBLED_MEMBERS: usize = 100_000;

/// The bytes of a `members` record around its members: the type, the room (32 bytes at most),
/// the flags, `total`, `next` (a nickname), the brackets and the newline, rounded up.
const ENVELOPE_BYTES: usize = 256;

/// `members` records for one list of `room`: in order, each at most [`MEMBERS_RECORD_BYTES`]
/// encoded, all but the last with `more`; `total` on each, `next` on the last. An empty list is
/// one record.
pub fn chunks(
    room: RoomName,
    members: Vec<Member>,
    e2e: bool,
    total: Option<u32>,
    next: Option<Nick>,
) -> Vec<ServerMsg> {
    let budget = MEMBERS_RECORD_BYTES - ENVELOPE_BYTES;
    let mut out = Vec::new();
    let mut current: Vec<Member> = Vec::new();
    let mut used = 0;
    for m in members {
        // Its encoding and the comma before it.
        let size = serde_json::to_vec(&m).map_or(budget, |v| v.len()) + 1;
        if !current.is_empty() && used + size > budget {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        used += size;
        current.push(m);
    }
    out.push(current);
    let last = out.len() - 1;
    out.into_iter()
        .enumerate()
        .map(|(i, members)| ServerMsg::Members {
            room: room.clone(),
            members,
            e2e,
            total,
            next: if i == last { next.clone() } else { None },
            more: i != last,
        })
        .collect()
}

/// Puts a list sent in several `members` records back together: a client hands every
/// `members` record to [`Assembler::take`] and gets the whole list once its last record came.
/// Bounded: one list in progress per room, [`MAX_ASSEMBLED_MEMBERS`] members in all.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Vec<(RoomName, Vec<Member>)>,
}

impl Assembler {
    /// Most rooms with a list in progress at once (a server sends one list at a time; more is
    /// a hostile server). Overflow policy: the oldest list in progress is dropped.
    pub const MAX_ROOMS: usize = 64;

    /// `msg` if it is not a `members` record or the list is whole; `None` while more of the
    /// list is to come (it is kept). A record without `more` ends its room's list: the members
    /// kept come first.
    pub fn take(&mut self, msg: ServerMsg) -> Option<ServerMsg> {
        let ServerMsg::Members { room, mut members, e2e, mut total, next, more } = msg else {
            return Some(msg);
        };
        let held = match self.pending.iter().position(|(r, _)| *r == room) {
            Some(k) => self.pending.remove(k).1,
            None => Vec::new(),
        };
        let mut list = held;
        let room_left = MAX_ASSEMBLED_MEMBERS.saturating_sub(list.len());
        if members.len() > room_left {
            total.get_or_insert((list.len() + members.len()) as u32);
            members.truncate(room_left);
        }
        list.append(&mut members);
        if more {
            if self.pending.len() >= Self::MAX_ROOMS {
                self.pending.remove(0);
            }
            self.pending.push((room, list));
            return None;
        }
        Some(ServerMsg::Members { room, members: list, e2e, total, next, more: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_server, encode};

    fn member(i: usize, away: Option<String>) -> Member {
        Member {
            nick: Nick::parse(&format!("user{i:05}")).unwrap(),
            fingerprint: crate::Fingerprint::of_digest(&[i as u8; 32]),
            away,
            bot: false,
            op: false,
        }
    }

    fn room() -> RoomName {
        RoomName::parse("#big").unwrap()
    }

    #[test]
    fn a_long_list_goes_in_records_of_at_most_16_kib_and_comes_back_whole() {
        // The worst case: every member away with 300 bytes of quotes (600 encoded).
        let away = Some("\"".repeat(300));
        let members: Vec<Member> = (0..5000).map(|i| member(i, away.clone())).collect();
        let next = Some(Nick::parse("zed").unwrap());
        let msgs = chunks(room(), members.clone(), false, Some(9000), next.clone());
        assert!(msgs.len() > 100, "{} records", msgs.len());
        let mut asm = Assembler::default();
        let mut whole = None;
        for (i, m) in msgs.into_iter().enumerate() {
            let bytes = encode(&m);
            assert!(bytes.len() <= MEMBERS_RECORD_BYTES, "record {i}: {} bytes", bytes.len());
            let back = decode_server(&bytes[..bytes.len() - 1]).unwrap();
            if let Some(done) = asm.take(back) {
                assert!(whole.is_none(), "a list ended twice");
                whole = Some(done);
            }
        }
        let Some(ServerMsg::Members { members: got, total, next: got_next, more, .. }) = whole
        else {
            panic!("the list never ended")
        };
        assert_eq!(got, members);
        assert_eq!((total, got_next, more), (Some(9000), next, false));
    }

    #[test]
    fn a_short_list_is_one_record_without_more_and_an_empty_one_too() {
        let one = chunks(room(), vec![member(1, None)], true, None, None);
        assert_eq!(one.len(), 1);
        assert!(matches!(&one[0], ServerMsg::Members { more: false, e2e: true, .. }));
        assert!(!String::from_utf8_lossy(&encode(&one[0])).contains("more"));
        let empty = chunks(room(), Vec::new(), false, None, None);
        assert!(
            matches!(&empty[..], [ServerMsg::Members { members, more: false, .. }] if members.is_empty())
        );
    }

    #[test]
    fn the_assembler_is_bounded_by_members_and_by_rooms() {
        let mut asm = Assembler::default();
        let big: Vec<Member> = (0..MAX_ASSEMBLED_MEMBERS).map(|i| member(i, None)).collect();
        let more = |members: Vec<Member>, more: bool| ServerMsg::Members {
            room: room(),
            members,
            e2e: false,
            total: None,
            next: None,
            more,
        };
        assert!(asm.take(more(big, true)).is_none());
        let done = asm.take(more(vec![member(1, None), member(2, None)], false)).unwrap();
        let ServerMsg::Members { members, total, .. } = done else { unreachable!() };
        assert_eq!(members.len(), MAX_ASSEMBLED_MEMBERS);
        assert_eq!(total, Some(MAX_ASSEMBLED_MEMBERS as u32 + 2));
        for i in 0..Assembler::MAX_ROOMS + 10 {
            let r = RoomName::parse(&format!("#r{i}")).unwrap();
            let m = ServerMsg::Members {
                room: r,
                members: vec![],
                e2e: false,
                total: None,
                next: None,
                more: true,
            };
            assert!(asm.take(m).is_none());
        }
        assert_eq!(asm.pending.len(), Assembler::MAX_ROOMS);
        // Anything else passes through.
        let pong = ServerMsg::Pong { token: 7 };
        assert_eq!(asm.take(pong.clone()), Some(pong));
    }
}
