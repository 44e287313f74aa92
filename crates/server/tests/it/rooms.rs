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

    a.send(&ClientMsg::List { after: None }).await.unwrap();
    let m = a.expect("room list", |m| matches!(m, ServerMsg::RoomList { .. })).await.unwrap();
    let ServerMsg::RoomList { rooms, .. } = m else { unreachable!() };
    let summary: Vec<(String, u32)> =
        rooms.iter().map(|r| (r.room.to_string(), r.members)).collect();
    assert_eq!(summary, [("#lobby".to_string(), 2), ("#rust".to_string(), 1)]);

    b.send(&ClientMsg::Who { room: "#rust".into(), after: None }).await.unwrap();
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

/// The id of the message `text` as `c` receives it.
async fn id_of(c: &mut TestClient, text: &str) -> u64 {
    match c.expect_text(text).await.unwrap() {
        ServerMsg::Message { id, .. } => id,
        _ => unreachable!(),
    }
}

/// Issue 15 item 12: `list` answers in pages of at most 100 rooms, in name order; following
/// `next` lists every room with members exactly once. Before: one record of every room.
#[tokio::test]
async fn list_pages_return_every_room_exactly_once_and_each_page_is_bounded() {
    let server = server().await;
    let mut expected = std::collections::BTreeSet::from(["#lobby".to_string()]);
    let mut clients = vec![];
    for c in 0..5 {
        let mut cl = TestClient::connect(server.addr, &format!("member{c}")).await.unwrap();
        for i in 0..48 {
            let room = format!("#page{c}x{i:02}");
            cl.join(&room).await.unwrap();
            expected.insert(room);
        }
        clients.push(cl);
    }
    // One room that empties: not listed.
    clients[0].join("#gone").await.unwrap();
    clients[0].send(&ClientMsg::Part { room: "#gone".into(), reason: None }).await.unwrap();
    clients[0].expect("leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    let a = &mut clients[0];
    let (mut seen, mut after, mut pages) = (vec![], None, 0);
    loop {
        a.send(&ClientMsg::List { after: after.clone() }).await.unwrap();
        let m = a.expect("room list", |m| matches!(m, ServerMsg::RoomList { .. })).await.unwrap();
        let ServerMsg::RoomList { rooms, next } = m else { unreachable!() };
        pages += 1;
        assert!(rooms.len() <= 100, "a page holds at most 100 rooms: {}", rooms.len());
        seen.extend(rooms.iter().map(|r| r.room.to_string()));
        match next {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "the pages end");
    }
    assert_eq!(pages, 3, "241 rooms in pages of 100");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "in name order");
    assert_eq!(seen.iter().cloned().collect::<std::collections::BTreeSet<_>>(), expected);
    assert_eq!(seen.len(), expected.len(), "each once");
    // A cursor that is not a room name is refused.
    a.send(&ClientMsg::List { after: Some("not a room".into()) }).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::InvalidRoom);
}

/// Issue 15 item 12: a room left empty leaves memory, with its history and topic; made again
/// at once, or later, or after a restart (which loads no room), its ids continue and its
/// topic is back.
#[tokio::test]
async fn a_forgotten_room_continues_its_ids_and_topic_made_again_and_across_a_restart() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut last = 0;
    for round in 0..3 {
        a.join("#again").await.unwrap();
        if round == 0 {
            a.send(&ClientMsg::Topic { room: "#again".into(), text: Some("kept".into()) })
                .await
                .unwrap();
        }
        a.say_in("#again", &format!("round {round}")).await.unwrap();
        let id = id_of(&mut a, &format!("round {round}")).await;
        assert!(id > last, "ids go on: {last} then {id}");
        last = id;
        a.send(&ClientMsg::Part { room: "#again".into(), reason: None }).await.unwrap();
        a.expect("leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    }
    drop(a);
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let got = b.join("#again").await.unwrap();
    assert!(
        got.iter().any(|m| matches!(m, ServerMsg::Topic { text: Some(t), .. } if t == "kept")),
        "the topic is back: {got:?}"
    );
    assert_eq!(TestClient::texts(&got), ["round 0", "round 1", "round 2"], "history too");
    b.say_in("#again", "after the restart").await.unwrap();
    assert_eq!(id_of(&mut b, "after the restart").await, last + 1);
}
