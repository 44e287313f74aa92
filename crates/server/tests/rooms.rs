//! Rooms, private messages and every room command, over real sockets: success and error
//! paths, isolation, and what a joiner receives.
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, ServerMsg};
use chatao_testkit::{TestClient, TestServer};

fn is_join(nick: &'static str, room: &'static str) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Join { nick: n, room: r, .. } if n.as_str() == nick && r.as_str() == room)
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.limits.rate_per_sec = 0).await
}

/// The room messages a client receives before the lobby message "marker".
async fn upto_marker(cl: &mut TestClient) -> Vec<String> {
    let mut seen = vec![];
    loop {
        let m = cl.recv().await.unwrap();
        if let ServerMsg::Message { room, text, .. } = &m {
            if text == "marker" {
                return seen;
            }
            seen.push(format!("{room} {text}"));
        }
    }
}

#[tokio::test]
async fn a_message_in_one_room_never_reaches_a_member_of_only_another() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let mut c = TestClient::connect(server.addr, "carol").await.unwrap();
    a.join("#a").await.unwrap();
    b.join("#b").await.unwrap();
    c.join("#a").await.unwrap();
    c.join("#b").await.unwrap();
    a.say_in("#a", "for room a").await.unwrap();
    b.say_in("#b", "for room b").await.unwrap();
    // A marker in the lobby, which everyone is in, sent after the room messages.
    c.say("marker").await.unwrap();
    assert_eq!(upto_marker(&mut a).await, ["#a for room a"]);
    assert_eq!(upto_marker(&mut b).await, ["#b for room b"]);
    let mut cs = upto_marker(&mut c).await;
    cs.sort();
    assert_eq!(cs, ["#a for room a", "#b for room b"]);
}

#[tokio::test]
async fn join_announces_lists_members_and_part_announces_the_reason() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    a.join("#Rust").await.unwrap();
    let got = b.join("#rust").await.unwrap();
    let members = got.iter().find_map(|m| match m {
        ServerMsg::Members { room, members, .. } if room.as_str() == "#rust" => {
            Some(members.clone())
        }
        _ => None,
    });
    let nicks: Vec<String> = members.unwrap().iter().map(|m| m.nick.to_string()).collect();
    assert_eq!(nicks, ["alice", "bob"], "room names are case-insensitive");
    a.expect("bob joins #rust", is_join("bob", "#rust")).await.unwrap();
    b.send(&ClientMsg::Part { room: "#rust".into(), reason: Some("later".into()) }).await.unwrap();
    let m = a
        .expect(
            "bob parts",
            |m| matches!(m, ServerMsg::Leave { room, .. } if room.as_str() == "#rust"),
        )
        .await
        .unwrap();
    assert!(
        matches!(m, ServerMsg::Leave { reason: LeaveReason::Part, message: Some(ref r), .. } if r == "later")
    );
    b.say_in("#rust", "still there?").await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInRoom);
    b.send(&ClientMsg::Part { room: "#rust".into(), reason: None }).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInRoom);
    b.send(&ClientMsg::Join { room: "no-hash".into(), since: None }).await.unwrap();
    let (code, message) = b.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::InvalidRoom);
    assert!(message.contains("'#'"), "{message}");
}

#[tokio::test]
async fn private_messages_reach_only_the_recipient_and_the_sender() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let mut c = TestClient::connect(server.addr, "carol").await.unwrap();
    a.send(&ClientMsg::Msg { cid: None, to: "BOB".into(), text: "secret".into() }).await.unwrap();
    for cl in [&mut a, &mut b] {
        let m = cl.expect("private", |m| matches!(m, ServerMsg::Private { .. })).await.unwrap();
        assert!(matches!(m, ServerMsg::Private { ref from, ref to, ref text, .. }
            if from.as_str() == "alice" && to.as_str() == "bob" && text == "secret"));
    }
    c.say("marker").await.unwrap();
    let m = c
        .expect("marker or private", |m| {
            matches!(m, ServerMsg::Private { .. })
                || matches!(m, ServerMsg::Message { text, .. } if text == "marker")
        })
        .await
        .unwrap();
    assert!(matches!(m, ServerMsg::Message { .. }), "carol saw a private message: {m:?}");
    a.send(&ClientMsg::Msg { cid: None, to: "nobody".into(), text: "hello?".into() })
        .await
        .unwrap();
    let (code, message) = a.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::NoSuchNick);
    assert!(message.contains("nobody"));
    // Away users: the sender is told.
    b.send(&ClientMsg::Away { reason: Some("lunch".into()) }).await.unwrap();
    a.expect("away", |m| matches!(m, ServerMsg::Away { reason: Some(_), .. })).await.unwrap();
    a.send(&ClientMsg::Msg { cid: None, to: "bob".into(), text: "there?".into() }).await.unwrap();
    let m = a.expect("notice", |m| matches!(m, ServerMsg::Notice { .. })).await.unwrap();
    assert_eq!(m, ServerMsg::Notice { text: "bob is away: lunch".into() });
}

#[tokio::test]
async fn list_who_topic_nick_away_and_whois() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    a.join("#rust").await.unwrap();

    a.send(&ClientMsg::List).await.unwrap();
    let m = a.expect("room list", |m| matches!(m, ServerMsg::RoomList { .. })).await.unwrap();
    let ServerMsg::RoomList { rooms } = m else { unreachable!() };
    let summary: Vec<(String, u32)> =
        rooms.iter().map(|r| (r.room.to_string(), r.members)).collect();
    assert_eq!(summary, [("#lobby".to_string(), 2), ("#rust".to_string(), 1)]);

    b.send(&ClientMsg::Who { room: "#rust".into() }).await.unwrap();
    let m = b
        .expect(
            "members",
            |m| matches!(m, ServerMsg::Members { room, .. } if room.as_str() == "#rust"),
        )
        .await
        .unwrap();
    assert!(
        matches!(m, ServerMsg::Members { ref members, .. } if members.len() == 1 && members[0].nick.as_str() == "alice")
    );

    a.send(&ClientMsg::Topic { room: "#rust".into(), text: Some("crabs only".into()) })
        .await
        .unwrap();
    let m = a.expect("topic", |m| matches!(m, ServerMsg::Topic { .. })).await.unwrap();
    assert!(
        matches!(m, ServerMsg::Topic { text: Some(ref t), by: Some(ref by), .. } if t == "crabs only" && by.as_str() == "alice")
    );
    b.send(&ClientMsg::Topic { room: "#rust".into(), text: Some("hijack".into()) }).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInRoom);
    b.send(&ClientMsg::Topic { room: "#rust".into(), text: Some("bad\u{1b}[2J".into()) })
        .await
        .unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::InvalidText);
    b.send(&ClientMsg::Topic { room: "#rust".into(), text: None }).await.unwrap();
    let m = b.expect("topic", |m| matches!(m, ServerMsg::Topic { .. })).await.unwrap();
    assert!(matches!(m, ServerMsg::Topic { text: Some(ref t), by: None, .. } if t == "crabs only"));
    let got = b.join("#rust").await.unwrap();
    assert!(
        got.iter()
            .any(|m| matches!(m, ServerMsg::Topic { text: Some(t), .. } if t == "crabs only")),
        "the topic comes with the join"
    );

    b.send(&ClientMsg::Nick { nick: "ALICE".into() }).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NickRegistered);
    b.send(&ClientMsg::Nick { nick: "bad nick".into() }).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::InvalidNick);
    b.send(&ClientMsg::Nick { nick: "robert".into() }).await.unwrap();
    let m = a.expect("rename", |m| matches!(m, ServerMsg::NickChange { .. })).await.unwrap();
    assert!(
        matches!(m, ServerMsg::NickChange { ref old, ref new } if old.as_str() == "bob" && new.as_str() == "robert")
    );
    b.say("as robert").await.unwrap();
    let m = a.expect_text("as robert").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { ref from, .. } if from.as_str() == "robert"));

    b.send(&ClientMsg::Away { reason: Some("gone".into()) }).await.unwrap();
    a.expect("away", |m| matches!(m, ServerMsg::Away { reason: Some(r), .. } if r == "gone"))
        .await
        .unwrap();
    a.send(&ClientMsg::Whois { nick: "Robert".into() }).await.unwrap();
    let m = a.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap();
    let ServerMsg::Whois { nick, fingerprint, rooms, away, .. } = m else { unreachable!() };
    assert_eq!(nick.as_str(), "robert");
    assert!(fingerprint.starts_with("SHA256:"));
    assert_eq!(rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["#lobby", "#rust"]);
    assert_eq!(away.as_deref(), Some("gone"));
    b.send(&ClientMsg::Away { reason: None }).await.unwrap();
    a.expect("back", |m| matches!(m, ServerMsg::Away { reason: None, .. })).await.unwrap();
    a.send(&ClientMsg::Whois { nick: "ghost".into() }).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::NoSuchNick);
}

#[tokio::test]
async fn me_sends_an_action_and_bidi_or_control_text_is_refused_everywhere() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.send(&ClientMsg::Me { cid: None, room: "#lobby".into(), text: "waves".into() })
        .await
        .unwrap();
    let m = a.expect_text("waves").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { kind: chatao_proto::MessageKind::Action, .. }));
    for bad in ["\u{202e}gnp.exe", "a\u{2066}b", "\u{7}bell", "x\u{9b}y"] {
        a.send(&ClientMsg::Msg { cid: None, to: "alice".into(), text: bad.into() }).await.unwrap();
        assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::InvalidText, "{bad:?}");
        a.send(&ClientMsg::Away { reason: Some(bad.into()) }).await.unwrap();
        assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::InvalidText, "{bad:?}");
    }
    // Newlines are allowed in messages (multi-line), not in topics.
    a.say("two\nlines").await.unwrap();
    a.expect_text("two\nlines").await.unwrap();
}
