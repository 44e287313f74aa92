//! One person on several devices (issue 20, its first part): one key's sessions share the
//! nickname, each receives the rooms it is in and every private message of the person (their
//! own included, from the other devices), the rooms hear one arrival and one departure, and
//! away and renames are the person's. Over real sockets against the real server.
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, ServerMsg};
use chatao_server::limits::MAX_SESSIONS_PER_NICK;
use chatao_testkit::{TestClient, TestServer, fixed_keypair};

/// `nick`'s whois as `asker` gets it: (sessions, rooms, away).
async fn whois(asker: &mut TestClient, nick: &str) -> (u32, Vec<String>, Option<String>) {
    asker.send(&ClientMsg::Whois { nick: nick.into() }).await.unwrap();
    match asker.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap() {
        ServerMsg::Whois { sessions, rooms, away, .. } => {
            (sessions, rooms.iter().map(|r| r.to_string()).collect(), away)
        }
        _ => unreachable!(),
    }
}

/// Reads until the chat message `text`, returning everything read before it.
async fn until_text(c: &mut TestClient, text: &str) -> Vec<ServerMsg> {
    let mut seen = vec![];
    loop {
        let m = c.recv().await.unwrap_or_else(|e| panic!("waiting for {text:?}: {e}: {seen:?}"));
        if matches!(&m, ServerMsg::Message { text: t, .. } if t == text) {
            return seen;
        }
        seen.push(m);
    }
}

/// The joins of `who` to `room` among `msgs`.
fn joins_of(msgs: &[ServerMsg], room: &str, who: &str) -> usize {
    let hit = |m: &&ServerMsg| matches!(m, ServerMsg::Join { room: r, nick, .. } if r.as_str() == room && nick.as_str() == who);
    msgs.iter().filter(hit).count()
}

/// The leaves of `who` from `room` among `msgs`.
fn leaves_of(msgs: &[ServerMsg], room: &str, who: &str) -> usize {
    let hit = |m: &&ServerMsg| matches!(m, ServerMsg::Leave { room: r, nick, .. } if r.as_str() == room && nick.as_str() == who);
    msgs.iter().filter(hit).count()
}

#[tokio::test]
async fn one_key_on_two_sessions_receives_everything_and_the_room_sees_one_person() {
    let ka = fixed_keypair(1);
    let server = TestServer::start().await;
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let mut laptop = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    let mut phone = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();

    bob.say("hi all").await.unwrap();
    let before = until_text(&mut bob, "hi all").await;
    assert_eq!(joins_of(&before, "#lobby", "alice"), 1, "one arrival for two: {before:?}");
    // The second session did not end the first: both are online, as one person.
    assert_eq!(whois(&mut bob, "alice").await.0, 2);
    laptop.expect_text("hi all").await.unwrap();
    phone.expect_text("hi all").await.unwrap();
    // The phone's join listed alice once (and bob), and so does /who.
    bob.send(&ClientMsg::Who { room: "#lobby".into(), after: None }).await.unwrap();
    let ServerMsg::Members { members, .. } =
        bob.expect("who", |m| matches!(m, ServerMsg::Members { .. })).await.unwrap()
    else {
        unreachable!()
    };
    let names: Vec<&str> = members.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(names, ["alice", "bob"], "{members:?}");

    // What one device says is the person's: the other device sees it as alice's too.
    phone.say("from the phone").await.unwrap();
    bob.expect_text("from the phone").await.unwrap();
    let m = laptop.expect_text("from the phone").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { from, .. } if from.as_str() == "alice"));

    // A private message to alice reaches both devices; one sent from the laptop reaches bob,
    // acknowledges the laptop, and its copy reaches the phone.
    bob.msg_with_cid("alice", "psst", 5).await.unwrap();
    for device in [&mut laptop, &mut phone] {
        device
            .expect("bob's private message", |m| {
                matches!(m, ServerMsg::Private { from, text, .. } if from.as_str() == "bob" && text == "psst")
            })
            .await
            .unwrap();
    }
    laptop.msg_with_cid("bob", "reply", 77).await.unwrap();
    laptop.expect_cid(77).await.unwrap();
    bob.expect("the reply", |m| matches!(m, ServerMsg::Private { text, .. } if text == "reply"))
        .await
        .unwrap();
    let copy = phone
        .expect(
            "the laptop's copy",
            |m| matches!(m, ServerMsg::Private { text, .. } if text == "reply"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&copy, ServerMsg::Private { from, to, cid: Some(77), .. } if from.as_str() == "alice" && to.as_str() == "bob"),
        "{copy:?}"
    );

    // The laptop goes: the room is not told (the phone is still there), the phone goes on.
    drop(laptop);
    for _ in 0..200 {
        if whois(&mut bob, "alice").await.0 == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(whois(&mut bob, "alice").await.0, 1, "the laptop's session ended");
    phone.say("still here").await.unwrap();
    let between = until_text(&mut bob, "still here").await;
    assert_eq!(
        leaves_of(&between, "#lobby", "alice"),
        0,
        "no departure while a session stays: {between:?}"
    );
    bob.say("good").await.unwrap();
    phone.expect_text("good").await.unwrap();

    // The last session goes: now the room hears the departure, once.
    drop(phone);
    let m = bob
        .expect(
            "alice leaves",
            |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "alice"),
        )
        .await
        .unwrap();
    assert!(matches!(m, ServerMsg::Leave { reason: LeaveReason::Quit | LeaveReason::Lost, .. }));
}

#[tokio::test]
async fn a_part_from_one_device_is_not_announced_while_another_stays_in_the_room() {
    let ka = fixed_keypair(1);
    let server = TestServer::start().await;
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    bob.join("#tea").await.unwrap();
    let mut laptop = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    laptop.join("#tea").await.unwrap();
    // The phone joins too (a client joins the rooms its welcome lists) and hears its own
    // join; the room is not told again.
    let mut phone = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    phone.join("#tea").await.unwrap();
    phone
        .expect("the phone's join", |m| matches!(m, ServerMsg::Join { room, nick, .. } if room.as_str() == "#tea" && nick.as_str() == "alice"))
        .await
        .unwrap();
    phone.send(&ClientMsg::Part { room: "#tea".into(), reason: None }).await.unwrap();
    phone
        .expect(
            "the phone's part",
            |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "alice"),
        )
        .await
        .unwrap();
    laptop.say_in("#tea", "the laptop is still in").await.unwrap();
    let seen = until_text(&mut bob, "the laptop is still in").await;
    assert_eq!(joins_of(&seen, "#tea", "alice"), 1, "{seen:?}");
    assert_eq!(leaves_of(&seen, "#tea", "alice"), 0, "{seen:?}");
    // The key is still remembered in #tea: a new session of alice is put back in it.
    let mut third = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    let (_, rooms, _) = whois(&mut third, "alice").await;
    assert!(rooms.contains(&"#tea".to_owned()), "{rooms:?}");
}

#[tokio::test]
async fn away_and_a_rename_from_one_device_are_the_persons() {
    let ka = fixed_keypair(1);
    let server = TestServer::start().await;
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let mut laptop = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    let mut phone = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();

    phone.send(&ClientMsg::Away { reason: Some("lunch".into()) }).await.unwrap();
    laptop
        .expect("away", |m| matches!(m, ServerMsg::Away { reason: Some(r), .. } if r == "lunch"))
        .await
        .unwrap();
    assert_eq!(whois(&mut bob, "alice").await.2.as_deref(), Some("lunch"));
    // A device that connects while the person is away is away too.
    let mut tablet = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    assert_eq!(whois(&mut tablet, "alice").await, (3, vec!["#lobby".into()], Some("lunch".into())));
    laptop.send(&ClientMsg::Away { reason: None }).await.unwrap();
    assert_eq!(whois(&mut bob, "alice").await.2, None, "back from any device is back");

    laptop.send(&ClientMsg::Nick { nick: "alicia".into() }).await.unwrap();
    for device in [&mut phone, &mut tablet] {
        device
            .expect(
                "the rename",
                |m| matches!(m, ServerMsg::NickChange { new, .. } if new.as_str() == "alicia"),
            )
            .await
            .unwrap();
    }
    phone.say("renamed everywhere").await.unwrap();
    let seen = until_text(&mut bob, "renamed everywhere").await;
    let renames = seen.iter().filter(|m| matches!(m, ServerMsg::NickChange { .. })).count();
    assert_eq!(renames, 1, "one rename for the person: {seen:?}");
    assert_eq!(whois(&mut bob, "alicia").await.0, 3);
    bob.send(&ClientMsg::Whois { nick: "alice".into() }).await.unwrap();
    assert_eq!(bob.expect_error().await.unwrap().0, ErrorCode::NoSuchNick);
}

#[tokio::test]
async fn a_nickname_takes_a_bounded_number_of_sessions_and_another_key_none() {
    let ka = fixed_keypair(1);
    let server = TestServer::start().await;
    let mut sessions = Vec::new();
    for _ in 0..MAX_SESSIONS_PER_NICK {
        sessions.push(TestClient::connect_with(server.addr, "alice", &ka).await.unwrap());
    }
    let err = TestClient::connect_with(server.addr, "alice", &ka).await.err().unwrap().to_string();
    assert!(err.contains("NickInUse") && err.contains("sessions already"), "{err}");
    // Those online go on.
    sessions[0].say("eight is enough").await.unwrap();
    let last = sessions.last_mut().unwrap();
    last.expect_text("eight is enough").await.unwrap();
    // Another key still cannot have the name.
    let err =
        TestClient::connect_with(server.addr, "alice", &fixed_keypair(2)).await.err().unwrap();
    assert!(err.to_string().contains("NickRegistered"), "{err}");
}

#[tokio::test]
async fn a_kick_ends_every_session_of_the_person() {
    let op = fixed_keypair(9);
    let op_fp = op.public().fingerprint();
    let server = TestServer::start_with(move |c: &mut chatao_server::Config| {
        c.access.ops = vec![op_fp.to_string()];
    })
    .await;
    let mut oper = TestClient::connect_with(server.addr, "oper", &op).await.unwrap();
    let ka = fixed_keypair(1);
    let mut laptop = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    let mut phone = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    oper.send(&ClientMsg::Kick { nick: "alice".into(), reason: Some("enough".into()) })
        .await
        .unwrap();
    for device in [&mut laptop, &mut phone] {
        let all = device.read_to_end().await.unwrap();
        assert!(
            matches!(all.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Kicked), .. })),
            "{all:?}"
        );
    }
    let m = oper
        .expect(
            "alice leaves",
            |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "alice"),
        )
        .await
        .unwrap();
    assert!(matches!(m, ServerMsg::Leave { reason: LeaveReason::Kicked, .. }));
}

/// Waits for the next `devices` record and returns its keys with (owner, online).
async fn devices(c: &mut TestClient) -> Vec<(String, bool, u32)> {
    match c.expect("devices", |m| matches!(m, ServerMsg::Devices { .. })).await.unwrap() {
        ServerMsg::Devices { devices, .. } => {
            devices.into_iter().map(|d| (d.fingerprint.to_string(), d.owner, d.online)).collect()
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_linked_key_uses_the_nickname_sees_everything_and_is_revoked() {
    let (ka, kp) = (fixed_keypair(1), fixed_keypair(3));
    let (fa, fp) = (ka.public().fingerprint().to_string(), kp.public().fingerprint().to_string());
    let server = TestServer::start().await;
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let mut laptop = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    // Before it is linked, the phone's key is someone else.
    let err = TestClient::connect_with(server.addr, "alice", &kp).await.err().unwrap();
    assert!(err.to_string().contains("NickRegistered"), "{err}");

    laptop
        .send(&ClientMsg::DeviceAdd { fingerprint: fp.clone(), name: Some("phone".into()) })
        .await
        .unwrap();
    assert_eq!(devices(&mut laptop).await, [(fa.clone(), true, 1), (fp.clone(), false, 0)]);
    let mut phone = TestClient::connect_with(server.addr, "alice", &kp).await.unwrap();
    phone.send(&ClientMsg::DeviceList).await.unwrap();
    assert_eq!(devices(&mut phone).await, [(fa.clone(), true, 1), (fp.clone(), false, 1)]);
    assert_eq!(whois(&mut bob, "alice").await.0, 2, "one person on two keys");

    // The phone sees the laptop's private conversation, and chats as alice.
    laptop.msg_with_cid("bob", "from the laptop", 9).await.unwrap();
    phone
        .expect("the laptop's message", |m| matches!(m, ServerMsg::Private { from, text, .. } if from.as_str() == "alice" && text == "from the laptop"))
        .await
        .unwrap();
    bob.msg_with_cid("alice", "to both keys", 10).await.unwrap();
    phone
        .expect(
            "bob's message",
            |m| matches!(m, ServerMsg::Private { text, .. } if text == "to both keys"),
        )
        .await
        .unwrap();
    phone.say("typed on the phone").await.unwrap();
    let m = bob.expect_text("typed on the phone").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { from, .. } if from.as_str() == "alice"));

    // The first key cannot be removed; another key can, and its sessions end.
    phone.send(&ClientMsg::DeviceRemove { fingerprint: fa.clone() }).await.unwrap();
    let (code, text) = phone.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::Invalid);
    assert!(text.contains("first key"), "{text}");
    laptop.send(&ClientMsg::DeviceRemove { fingerprint: fp.clone() }).await.unwrap();
    let all = phone.read_to_end().await.unwrap();
    assert!(
        matches!(all.last(), Some(ServerMsg::Bye { reason, .. }) if reason.contains("removed")),
        "{all:?}"
    );
    assert_eq!(devices(&mut laptop).await, [(fa.clone(), true, 1)]);
    let err = TestClient::connect_with(server.addr, "alice", &kp).await.err().unwrap();
    assert!(err.to_string().contains("NickRegistered"), "revoked: {err}");
}

#[tokio::test]
async fn linked_keys_survive_a_restart_and_a_ban_by_nickname_covers_every_key() {
    let op = fixed_keypair(9);
    let op_fp = op.public().fingerprint().to_string();
    let (ka, kp) = (fixed_keypair(1), fixed_keypair(3));
    let fp = kp.public().fingerprint().to_string();
    let server = TestServer::start_with({
        let op_fp = op_fp.clone();
        move |c: &mut chatao_server::Config| c.access.ops = vec![op_fp]
    })
    .await;
    let mut laptop = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    // Refusals: not a fingerprint; a key that owns nicknames of its own.
    laptop.send(&ClientMsg::DeviceAdd { fingerprint: "phone".into(), name: None }).await.unwrap();
    assert!(laptop.expect_error().await.unwrap().1.contains("chatao --fingerprint"));
    let carol = fixed_keypair(4);
    drop(TestClient::connect_with(server.addr, "carol", &carol).await.unwrap());
    let carol_fp = carol.public().fingerprint().to_string();
    laptop.send(&ClientMsg::DeviceAdd { fingerprint: carol_fp, name: None }).await.unwrap();
    assert!(laptop.expect_error().await.unwrap().1.contains("carol"));
    laptop.join("#tea").await.unwrap();
    laptop.send(&ClientMsg::DeviceAdd { fingerprint: fp.clone(), name: None }).await.unwrap();
    devices(&mut laptop).await;
    drop(laptop);

    let server =
        server.restart(move |c: &mut chatao_server::Config| c.access.ops = vec![op_fp]).await;
    let mut phone = TestClient::connect_with(server.addr, "alice", &kp).await.unwrap();
    phone.send(&ClientMsg::DeviceList).await.unwrap();
    assert_eq!(devices(&mut phone).await.len(), 2, "the link is stored");
    let mut laptop = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    let mut oper = TestClient::connect_with(server.addr, "oper", &op).await.unwrap();
    oper.send(&ClientMsg::Ban { target: "alice".into(), duration_secs: None, reason: None })
        .await
        .unwrap();
    for device in [&mut laptop, &mut phone] {
        let all = device.read_to_end().await.unwrap();
        assert!(
            matches!(all.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Banned), .. })),
            "{all:?}"
        );
    }
    for key in [&ka, &kp] {
        let err = TestClient::connect_with(server.addr, "alice", key).await.err().unwrap();
        assert!(err.to_string().contains("Banned"), "{err}");
    }
}
