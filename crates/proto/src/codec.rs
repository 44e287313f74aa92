//! Encoding and decoding of single messages. A record is one compact JSON object followed by
//! `\n`; compact JSON never contains a raw newline (newlines inside strings are escaped), so
//! records can be split on `\n` alone.

use bytes::Bytes;
use serde::Serialize;

use crate::msg::{Cid, ClientMsg, HelloFlags, MessageKind, ServerMsg};
use crate::names::{Nick, RoomName};

/// A record that is not a message this side understands.
#[derive(Debug, thiserror::Error)]
#[error("undecodable message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// Encodes `msg` as one record (JSON and its trailing newline). The result is cheap to clone, so
/// the server encodes a relayed message once and shares the bytes among all recipients.
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    let mut v = serde_json::to_vec(msg)
        .expect("protocol messages always serialize: no maps with non-string keys");
    v.push(b'\n');
    Bytes::from(v)
}

/// Decodes one record (with or without its trailing newline) sent by a client.
pub fn decode_client(record: &[u8]) -> Result<ClientMsg, DecodeError> {
    Ok(serde_json::from_slice(record)?)
}

/// Encodes a `hello` for `nick` with `flags` (only the flags set are written, so a `hello`
/// without flags is byte for byte the old one).
pub fn encode_hello(nick: &str, flags: HelloFlags) -> Bytes {
    #[derive(Serialize)]
    struct Hello<'a> {
        r#type: &'static str,
        nick: &'a str,
        #[serde(flatten)]
        flags: HelloFlags,
    }
    encode(&Hello { r#type: "hello", nick, flags })
}

/// The flags of a `hello` record (one that [`decode_client`] decoded as
/// [`ClientMsg::Hello`]). A flag that is absent, or not a boolean, is false: a malformed flag
/// never refuses a session, it only leaves it an ordinary one.
pub fn decode_hello_flags(record: &[u8]) -> HelloFlags {
    #[derive(serde::Deserialize)]
    struct Flags {
        #[serde(default)]
        quiet: serde_json::Value,
        #[serde(default)]
        fixed_rooms: serde_json::Value,
    }
    match serde_json::from_slice::<Flags>(record) {
        Ok(f) => HelloFlags {
            quiet: f.quiet.as_bool().unwrap_or(false),
            fixed_rooms: f.fixed_rooms.as_bool().unwrap_or(false),
        },
        Err(_) => HelloFlags::default(),
    }
}

/// Decodes one record sent by a server.
pub fn decode_server(record: &[u8]) -> Result<ServerMsg, DecodeError> {
    // The hot path: a room message as the server writes it (its tag first) is read straight
    // into its fields; serde's tagged enums first copy every field into a buffer of their
    // own (a third of a client's CPU per delivery in the bench). Anything else, and anything
    // the fast path refuses, goes the general way, which also gives the error.
    if record.starts_with(br#"{"type":"message","#)
        && let Ok(m) = serde_json::from_slice::<MessageFields>(record)
    {
        return Ok(ServerMsg::Message {
            room: m.room,
            id: m.id,
            time: m.time,
            from: m.from,
            kind: m.kind,
            text: m.text,
            history: m.history,
            cid: m.cid,
        });
    }
    Ok(serde_json::from_slice(record)?)
}

/// The fields of [`ServerMsg::Message`], with the same types and defaults (the `type` key is
/// ignored like any unknown key): [`decode_server`]'s fast path.
#[derive(serde::Deserialize)]
struct MessageFields {
    room: RoomName,
    id: u64,
    time: u64,
    from: Nick,
    #[serde(default)]
    kind: MessageKind,
    text: String,
    #[serde(default)]
    history: bool,
    #[serde(default)]
    cid: Option<Cid>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fp(n: u8) -> crate::Fingerprint {
        crate::Fingerprint::of_digest(&[n; 32])
    }
    use crate::{
        ErrorCode, LeaveReason, Limits, Member, MessageKind, Nick, RoomAction, RoomFlag, RoomName,
    };
    use proptest::prelude::*;

    fn nick(s: &str) -> Nick {
        Nick::parse(s).unwrap()
    }

    pub(crate) fn server_examples() -> Vec<ServerMsg> {
        let room = RoomName::lobby();
        vec![
            ServerMsg::Welcome {
                session: 1,
                nick: nick("alice"),
                fingerprint: fp(1),
                server: "chataosrv 0.1.0".into(),
                limits: Limits { max_text_bytes: 4000, rate_per_sec: 5, burst: 20 },
                rooms: vec![],
            },
            ServerMsg::Welcome {
                session: 2,
                nick: nick("alice"),
                fingerprint: fp(1),
                server: "chataosrv 0.1.0".into(),
                limits: Limits { max_text_bytes: 4000, rate_per_sec: 5, burst: 20 },
                rooms: vec![room.clone(), RoomName::parse("#rust").unwrap()],
            },
            ServerMsg::Members {
                room: room.clone(),
                members: vec![
                    Member {
                        nick: nick("bob"),
                        fingerprint: fp(2),
                        away: Some("lunch".into()),
                        bot: false,
                        op: true,
                    },
                    Member {
                        nick: nick("ci"),
                        fingerprint: fp(3),
                        away: None,
                        bot: true,
                        op: false,
                    },
                ],
                e2e: false,
                total: None,
                next: None,
                more: false,
            },
            ServerMsg::Members {
                room: room.clone(),
                members: vec![],
                e2e: true,
                total: None,
                next: None,
                more: false,
            },
            ServerMsg::Members {
                room: room.clone(),
                members: vec![],
                e2e: false,
                total: Some(5000),
                next: Some(nick("bob")),
                more: false,
            },
            ServerMsg::Join { room: room.clone(), nick: nick("bob"), fingerprint: fp(2) },
            ServerMsg::Leave {
                room: room.clone(),
                nick: nick("bob"),
                reason: LeaveReason::Quit,
                message: Some("bye".into()),
            },
            ServerMsg::Message {
                cid: None,
                room: room.clone(),
                id: 7,
                time: 1_764_000_000_000,
                from: nick("bob"),
                kind: MessageKind::Action,
                text: "waves\nand \"quotes\"".into(),
                history: true,
            },
            ServerMsg::Private {
                cid: None,
                id: 3,
                time: 5,
                from: nick("bob"),
                to: nick("alice"),
                kind: MessageKind::Normal,
                text: "psst".into(),
            },
            ServerMsg::Topic {
                room: room.clone(),
                text: Some("rust".into()),
                by: Some(nick("bob")),
            },
            ServerMsg::Topic { room: room.clone(), text: None, by: None },
            ServerMsg::RoomList {
                rooms: vec![
                    crate::RoomInfo { room: room.clone(), members: 3, topic: None, e2e: false },
                    crate::RoomInfo { room: room.clone(), members: 1, topic: None, e2e: true },
                ],
                next: None,
            },
            ServerMsg::RoomList { rooms: vec![], next: Some(room.clone()) },
            ServerMsg::NickChange { old: nick("bob"), new: nick("robert") },
            ServerMsg::Away { nick: nick("bob"), reason: Some("lunch".into()) },
            ServerMsg::Away { nick: nick("bob"), reason: None },
            ServerMsg::Whois {
                nick: nick("bob"),
                fingerprint: fp(2),
                rooms: vec![room.clone()],
                away: None,
                since: 9,
                sessions: 1,
            },
            ServerMsg::Whois {
                nick: nick("bob"),
                fingerprint: fp(2),
                rooms: vec![],
                away: None,
                since: 9,
                sessions: 3,
            },
            ServerMsg::Devices {
                nick: nick("bob"),
                devices: vec![
                    crate::DeviceInfo {
                        fingerprint: fp(2),
                        name: None,
                        owner: true,
                        added: 5,
                        last_seen: None,
                        online: 1,
                    },
                    crate::DeviceInfo {
                        fingerprint: fp(3),
                        name: Some("phone".into()),
                        owner: false,
                        added: 6,
                        last_seen: Some(7),
                        online: 0,
                    },
                ],
            },
            ServerMsg::HistoryEnd { room: room.clone(), count: 2, before: None },
            ServerMsg::Notice { text: "bob is away: lunch".into() },
            ServerMsg::RoomModeration {
                room: room.clone(),
                action: RoomAction::Kick,
                target: Some("bob".into()),
                by: nick("alice"),
                reason: Some("spam".into()),
                until: None,
            },
            ServerMsg::Moderation {
                action: crate::ModAction::Ban,
                target: "mallory".into(),
                by: nick("op"),
                reason: Some("spam".into()),
                until: Some(99),
            },
            ServerMsg::Error {
                cid: None,
                code: ErrorCode::NickInUse,
                message: "taken".into(),
                room: None,
            },
            ServerMsg::Bye { code: Some(ErrorCode::Shutdown), reason: "restart".into() },
            ServerMsg::Ping { token: 3 },
            ServerMsg::Pong { token: 4 },
            ServerMsg::Sealed {
                cid: None,
                room: room.clone(),
                id: 8,
                time: 9,
                from: nick("bob"),
                epoch: 2,
                kind: crate::SealedKind::Application,
                body: "AAEC".into(),
                history: true,
            },
            ServerMsg::Invited {
                room: room.clone(),
                from: nick("bob"),
                id: 4,
                epoch: 2,
                body: "AA==".into(),
            },
            ServerMsg::JoinRequest { room: room.clone(), nick: nick("carol"), fingerprint: fp(4) },
            ServerMsg::KeyPackage {
                nick: nick("carol"),
                fingerprint: fp(4),
                package: "AA==".into(),
                room: Some(room.clone()),
            },
            ServerMsg::Error {
                cid: Some(7),
                code: ErrorCode::StaleEpoch,
                message: "again".into(),
                room: Some(room.clone()),
            },
        ]
    }

    #[test]
    fn every_message_round_trips_as_one_line() {
        for m in server_examples() {
            let b = encode(&m);
            assert_eq!(b.iter().filter(|&&c| c == b'\n').count(), 1);
            assert_eq!(b.last(), Some(&b'\n'));
            assert_eq!(decode_server(&b).unwrap(), m);
        }
        for m in [
            ClientMsg::Hello { nick: "alice".into() },
            ClientMsg::Say { cid: None, room: "#lobby".into(), text: "hi\n".into() },
            ClientMsg::Me { cid: None, room: "#lobby".into(), text: "waves".into() },
            ClientMsg::Quit { reason: None },
            ClientMsg::Quit { reason: Some("later".into()) },
            ClientMsg::Ping { token: 1 },
            ClientMsg::Pong { token: 2 },
            ClientMsg::Join { room: "#rust".into(), since: None },
            ClientMsg::Join { room: "#rust".into(), since: Some(41) },
            ClientMsg::Part { room: "#rust".into(), reason: Some("bye".into()) },
            ClientMsg::List { after: None },
            ClientMsg::List { after: Some("#rust".into()) },
            ClientMsg::Who { room: "#rust".into(), after: None },
            ClientMsg::Who { room: "#rust".into(), after: Some("bob".into()) },
            ClientMsg::Topic { room: "#rust".into(), text: Some("t".into()) },
            ClientMsg::Topic { room: "#rust".into(), text: None },
            ClientMsg::Msg { cid: None, to: "bob".into(), text: "psst".into() },
            ClientMsg::Nick { nick: "robert".into() },
            ClientMsg::Away { reason: Some("lunch".into()) },
            ClientMsg::Away { reason: None },
            ClientMsg::Whois { nick: "bob".into() },
            ClientMsg::History { room: "#rust".into(), since: 10, limit: Some(100), before: None },
            ClientMsg::Kick { nick: "m".into(), reason: Some("spam".into()) },
            ClientMsg::Ban { target: "m".into(), duration_secs: Some(600), reason: None },
            ClientMsg::Unban { target: "SHA256:x".into() },
            ClientMsg::Mute { nick: "m".into(), duration_secs: None },
            ClientMsg::Unmute { nick: "m".into() },
            ClientMsg::DeviceAdd { fingerprint: "SHA256:x".into(), name: Some("phone".into()) },
            ClientMsg::DeviceRemove { fingerprint: "SHA256:x".into() },
            ClientMsg::DeviceList,
            ClientMsg::Bots { room: "#ci".into(), hide: true },
            ClientMsg::Op { room: "#ci".into(), nick: "bob".into() },
            ClientMsg::Deop { room: "#ci".into(), nick: "bob".into() },
            ClientMsg::Mode { room: "#ci".into(), flag: RoomFlag::TopicLock, on: true },
            ClientMsg::RoomKick { room: "#ci".into(), nick: "bob".into(), reason: None },
            ClientMsg::RoomBan {
                room: "#ci".into(),
                target: "bob".into(),
                duration_secs: Some(60),
                reason: Some("spam".into()),
            },
            ClientMsg::RoomUnban { room: "#ci".into(), target: "bob".into() },
            ClientMsg::Invite { room: "#ci".into(), nick: "bob".into() },
            ClientMsg::Create { room: "#sec".into(), e2e: true, open: true },
            ClientMsg::Create { room: "#plain".into(), e2e: false, open: false },
            ClientMsg::KeyPackages { packages: vec!["AA==".into(), "AQ==".into()] },
            ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) },
            ClientMsg::Commit {
                room: "#sec".into(),
                epoch: 3,
                body: "AAEC".into(),
                welcome: Some(crate::SealedWelcome { to: "SHA256:b".into(), body: "AA==".into() }),
                adds: vec!["SHA256:b".into()],
                removes: vec![],
            },
            ClientMsg::Sealed { cid: None, room: "#sec".into(), epoch: 3, body: "AAEC".into() },
        ] {
            assert_eq!(decode_client(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn wire_spelling_is_stable() {
        let m = ServerMsg::Message {
            cid: None,
            room: RoomName::lobby(),
            id: 1,
            time: 2,
            from: nick("a"),
            kind: MessageKind::Normal,
            text: "t".into(),
            history: false,
        };
        assert_eq!(
            &encode(&m)[..],
            b"{\"type\":\"message\",\"room\":\"#lobby\",\"id\":1,\"time\":2,\"from\":\"a\",\"text\":\"t\"}\n"
        );
        assert_eq!(
            decode_client(br#"{"type":"hello","nick":"bob","extra":1}"#).unwrap(),
            ClientMsg::Hello { nick: "bob".into() }
        );
    }

    #[test]
    fn e2e_wire_spelling_is_stable() {
        let m = ServerMsg::Sealed {
            cid: None,
            room: RoomName::parse("#sec").unwrap(),
            id: 5,
            time: 6,
            from: nick("a"),
            epoch: 1,
            kind: crate::SealedKind::Commit,
            body: "AAE=".into(),
            history: false,
        };
        assert_eq!(
            &encode(&m)[..],
            b"{\"type\":\"sealed\",\"room\":\"#sec\",\"id\":5,\"time\":6,\"from\":\"a\",\"epoch\":1,\"kind\":\"commit\",\"body\":\"AAE=\"}\n"
        );
        assert_eq!(
            decode_client(br##"{"type":"create","room":"#sec","e2e":true}"##).unwrap(),
            ClientMsg::Create { room: "#sec".into(), e2e: true, open: false }
        );
    }

    /// Paging (issue 15 items 12, 17) is optional both ways: an older client's plain `list`
    /// and `who` ask for the first page, and the older spellings of `room_list` and `members`
    /// (no `next`, no `total`) still decode, as complete lists.
    #[test]
    fn list_and_who_pages_are_compatible_with_older_peers() {
        assert_eq!(decode_client(br#"{"type":"list"}"#).unwrap(), ClientMsg::List { after: None });
        assert_eq!(
            decode_client(br##"{"type":"who","room":"#rust"}"##).unwrap(),
            ClientMsg::Who { room: "#rust".into(), after: None }
        );
        assert_eq!(&encode(&ClientMsg::List { after: None })[..], b"{\"type\":\"list\"}\n");
        assert_eq!(
            decode_server(br##"{"type":"room_list","rooms":[]}"##).unwrap(),
            ServerMsg::RoomList { rooms: vec![], next: None }
        );
        assert_eq!(
            decode_server(br##"{"type":"members","room":"#lobby","members":[]}"##).unwrap(),
            ServerMsg::Members {
                room: RoomName::lobby(),
                members: vec![],
                e2e: false,
                total: None,
                next: None,
                more: false
            }
        );
    }

    /// Issue 22: `hello`'s `quiet` flag and `members`' `bot` mark are optional both ways: a
    /// plain `hello` is byte for byte the old one and has no flag, an old server decodes a
    /// quiet one as a plain `hello`, a malformed flag is no flag, an old `members` entry is no
    /// bot.
    #[test]
    fn the_quiet_flag_and_the_bot_mark_are_compatible_with_older_peers() {
        let plain = encode_hello("bob", HelloFlags::default());
        assert_eq!(&plain[..], &encode(&ClientMsg::Hello { nick: "bob".into() })[..]);
        assert_eq!(decode_hello_flags(&plain), HelloFlags::default());
        let quiet = encode_hello("bot", HelloFlags { quiet: true, ..Default::default() });
        assert_eq!(&quiet[..], b"{\"type\":\"hello\",\"nick\":\"bot\",\"quiet\":true}\n");
        assert_eq!(decode_client(&quiet).unwrap(), ClientMsg::Hello { nick: "bot".into() });
        assert!(decode_hello_flags(&quiet).quiet);
        for odd in [&br#"{"type":"hello","nick":"b","quiet":"yes"}"#[..], b"not json", b"{}"] {
            assert!(!decode_hello_flags(odd).quiet);
        }
        let old = format!(
            r##"{{"type":"members","room":"#lobby","members":[{{"nick":"a","fingerprint":"{}"}}]}}"##,
            fp(1)
        );
        let ServerMsg::Members { members, .. } = decode_server(old.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(!members[0].bot);
    }

    #[test]
    fn message_types_from_a_newer_server_decode_as_unknown() {
        assert_eq!(
            decode_server(br#"{"type":"from_the_future","x":1}"#).unwrap(),
            ServerMsg::Unknown
        );
        let m = decode_server(
            br##"{"type":"message","room":"#a","id":1,"time":2,"from":"b","kind":"shout","text":"t"}"##,
        )
        .unwrap();
        assert!(matches!(m, ServerMsg::Message { kind: MessageKind::Normal, .. }));
    }

    #[test]
    fn invalid_names_from_a_server_are_refused() {
        assert!(
            decode_server(br##"{"type":"join","room":"#a","nick":"a\u001b[2J","fingerprint":""}"##)
                .is_err()
        );
        assert!(
            decode_server(br#"{"type":"error","code":"from_the_future","message":"m"}"#).is_ok()
        );
    }

    /// What the general (tagged enum) path makes of `record`: the fast path must agree.
    fn general(record: &[u8]) -> Result<ServerMsg, String> {
        serde_json::from_slice::<ServerMsg>(record).map_err(|e| e.to_string())
    }

    #[test]
    fn the_fast_path_for_messages_agrees_with_the_general_one() {
        let records: [&[u8]; 9] = [
            br##"{"type":"message","room":"#a","id":1,"time":2,"from":"bob","text":"hi"}"##,
            br##"{"type":"message","room":"#a","id":1,"time":2,"from":"bob","kind":"action","text":"waves","history":true,"cid":7}"##,
            br##"{"type":"message","room":"#a","id":1,"time":2,"from":"bob","text":"hi","later":{"x":[1]}}"##,
            br##"{"type":"message","room":"nohash","id":1,"time":2,"from":"bob","text":"hi"}"##,
            br##"{"type":"message","room":"#a","id":-1,"time":2,"from":"bob","text":"hi"}"##,
            br##"{"type":"message","room":"#a","id":1,"time":2,"from":"b b","text":"hi"}"##,
            br##"{"type":"message","room":"#a","id":1,"time":2,"text":"hi"}"##,
            br##"{"type":"message","room":"#a","id":1,"time":2,"from":"bob","text":"hi","cid":0}"##,
            br##"{"type":"message","room":"#a","id":1,"time":2,"from":"bob","text":"hi"} trailing"##,
        ];
        for r in records {
            let fast = decode_server(r).map_err(|e| e.to_string());
            let want = general(r).map_err(|e| format!("undecodable message: {e}"));
            assert_eq!(fast, want, "{}", String::from_utf8_lossy(r));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_messages_decode_the_same_both_ways(text in ".*", id in any::<u64>(), cid in proptest::option::of(1u64..1000), history in any::<bool>()) {
            let m = ServerMsg::Message { cid, room: RoomName::lobby(), id, time: id, from: nick("p"), kind: MessageKind::Action, text, history };
            let b = encode(&m);
            prop_assert_eq!(decode_server(&b).unwrap(), general(&b).unwrap());
        }

        #[test]
        fn arbitrary_text_round_trips(text in ".*", id in any::<u64>()) {
            let m = ServerMsg::Message { cid: None, room: RoomName::lobby(), id, time: id, from: nick("p"), kind: MessageKind::Normal, text, history: false };
            let b = encode(&m);
            prop_assert_eq!(b.iter().filter(|&&c| c == b'\n').count(), 1);
            prop_assert_eq!(decode_server(&b).unwrap(), m);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_client(&bytes);
            let _ = decode_server(&bytes);
        }
    }
}
