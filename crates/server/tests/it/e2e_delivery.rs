//! The server as an MLS delivery service, over real sockets with opaque bodies (the server
//! never reads them, so any base64 does; key packages excepted, which it checks: those are
//! genuine, see `tests/it/key_packages.rs`): room creation and membership by key, epoch-ordered
//! commits, welcomes, sealed messages and their history, key packages, join requests, removal.
//! The MLS side is covered with real clients in `crates/client/tests/it/e2e_rooms.rs`.
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, SealedKind, SealedWelcome, ServerMsg};
use chatao_testkit::{TestClient, TestServer, fixed_keypair, key_packages};

async fn server() -> TestServer {
    TestServer::start_with(|c| c.limits.rate_per_sec = 0).await
}

fn create(room: &str, open: bool) -> ClientMsg {
    ClientMsg::Create { room: room.into(), e2e: true, open }
}

fn commit(epoch: u64, body: &str) -> ClientMsg {
    ClientMsg::Commit {
        room: "#sec".into(),
        epoch,
        body: body.into(),
        welcome: None,
        adds: vec![],
        removes: vec![],
    }
}

async fn fingerprint(c: &mut TestClient, nick: &str) -> String {
    c.send(&ClientMsg::Whois { nick: nick.into() }).await.unwrap();
    match c.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap() {
        ServerMsg::Whois { fingerprint, .. } => fingerprint.to_string(),
        _ => unreachable!(),
    }
}

/// Waits for the sealed message with `body` and returns its id.
async fn sealed(c: &mut TestClient, body: &str) -> (u64, SealedKind) {
    match c
        .expect(body, |m| matches!(m, ServerMsg::Sealed { body: b, .. } if b == body))
        .await
        .unwrap()
    {
        ServerMsg::Sealed { id, kind, .. } => (id, kind),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn create_refuses_an_existing_room_and_plain_text_and_outsiders() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let got = a.until_history_end(&create("#sec", false), "#sec").await.unwrap();
    assert!(got.iter().any(|m| matches!(m, ServerMsg::Members { e2e: true, .. })), "{got:?}");
    a.send(&create("#sec", false)).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::RoomExists);
    a.send(&create("#lobby", false)).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::RoomExists);
    a.say_in("#sec", "plain text").await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::E2eRoom);
    b.send(&ClientMsg::Join { room: "#sec".into(), since: None }).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInvited);
    b.send(&ClientMsg::Sealed { cid: None, room: "#sec".into(), epoch: 0, body: "AAEC".into() })
        .await
        .unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInRoom);
    a.send(&ClientMsg::Sealed {
        cid: None,
        room: "#sec".into(),
        epoch: 0,
        body: "not base64!".into(),
    })
    .await
    .unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::Invalid);
    a.send(&ClientMsg::List { after: None }).await.unwrap();
    let list = a.expect("room_list", |m| matches!(m, ServerMsg::RoomList { .. })).await.unwrap();
    let ServerMsg::RoomList { rooms, .. } = list else { unreachable!() };
    assert!(rooms.iter().any(|r| r.room.as_str() == "#sec" && r.e2e));
    assert!(rooms.iter().any(|r| r.room.as_str() == "#lobby" && !r.e2e));
}

#[tokio::test]
async fn commits_are_ordered_by_epoch_and_the_added_key_gets_its_welcome_and_what_follows() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let bob_fp = fingerprint(&mut a, "bob").await;
    a.until_history_end(&create("#sec", false), "#sec").await.unwrap();
    // A commit at the wrong epoch is refused; at the right one it moves the room on.
    a.send(&commit(1, "AAAA")).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::StaleEpoch);
    a.send(&ClientMsg::Commit {
        room: "#sec".into(),
        epoch: 0,
        body: "Q09NTUlU".into(),
        welcome: Some(SealedWelcome { to: bob_fp.clone(), body: "V0VMQ09NRQ==".into() }),
        adds: vec![bob_fp.clone()],
        removes: vec![],
    })
    .await
    .unwrap();
    let (commit_id, kind) = sealed(&mut a, "Q09NTUlU").await;
    assert_eq!(kind, SealedKind::Commit);
    let invited = b.expect("invited", |m| matches!(m, ServerMsg::Invited { .. })).await.unwrap();
    assert!(
        matches!(&invited, ServerMsg::Invited { room, from, id, epoch: 1, body } if room.as_str() == "#sec" && from.as_str() == "alice" && *id == commit_id && body == "V0VMQ09NRQ==")
    );
    a.send(&commit(0, "TE9TRVI=")).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::StaleEpoch, "epoch 0 is past");
    a.send(&ClientMsg::Sealed {
        cid: None,
        room: "#sec".into(),
        epoch: 1,
        body: "QVBQMQ==".into(),
    })
    .await
    .unwrap();
    let (app_id, kind) = sealed(&mut a, "QVBQMQ==").await;
    assert_eq!((app_id, kind), (commit_id + 1, SealedKind::Application));
    // bob joins after its welcome's commit: it gets what came after, not the commit itself.
    let got = b
        .until_history_end(&ClientMsg::Join { room: "#sec".into(), since: Some(commit_id) }, "#sec")
        .await
        .unwrap();
    let bodies: Vec<&str> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Sealed { body, history: true, .. } => Some(body.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, ["QVBQMQ=="]);
    b.send(&ClientMsg::Sealed {
        cid: None,
        room: "#sec".into(),
        epoch: 1,
        body: "RlJPTUJPQg==".into(),
    })
    .await
    .unwrap();
    sealed(&mut a, "RlJPTUJPQg==").await;
    sealed(&mut b, "RlJPTUJPQg==").await;
}

#[tokio::test]
async fn a_removed_key_leaves_the_room_and_receives_nothing_more() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let bob_fp = fingerprint(&mut a, "bob").await;
    a.until_history_end(&create("#sec", false), "#sec").await.unwrap();
    let mut add = commit(0, "QUREQk9C");
    if let ClientMsg::Commit { adds, .. } = &mut add {
        adds.push(bob_fp.clone());
    }
    a.send(&add).await.unwrap();
    let (id, _) = sealed(&mut a, "QUREQk9C").await;
    b.until_history_end(&ClientMsg::Join { room: "#sec".into(), since: Some(id) }, "#sec")
        .await
        .unwrap();
    let mut remove = commit(1, "UkVNT1ZF");
    if let ClientMsg::Commit { removes, .. } = &mut remove {
        removes.push(bob_fp.clone());
    }
    a.send(&remove).await.unwrap();
    sealed(&mut a, "UkVNT1ZF").await;
    let left = b.expect("leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    assert!(matches!(left, ServerMsg::Leave { reason: LeaveReason::Kicked, .. }), "{left:?}");
    a.send(&ClientMsg::Sealed {
        cid: None,
        room: "#sec".into(),
        epoch: 2,
        body: "U0VDUkVU".into(),
    })
    .await
    .unwrap();
    sealed(&mut a, "U0VDUkVU").await;
    // bob cannot come back, nor read the history.
    b.send(&ClientMsg::Join { room: "#sec".into(), since: Some(0) }).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInvited);
    b.send(&ClientMsg::History { room: "#sec".into(), since: 0, limit: None, before: None })
        .await
        .unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInRoom);
    b.say("marker").await.unwrap();
    let seen = b
        .expect("marker", |m| {
            matches!(m, ServerMsg::Message { text, .. } if text == "marker")
                || matches!(m, ServerMsg::Sealed { .. })
        })
        .await
        .unwrap();
    assert!(matches!(seen, ServerMsg::Message { .. }), "bob got a sealed message: {seen:?}");
}

#[tokio::test]
async fn key_packages_are_handed_out_one_per_fetch_keeping_the_last() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    a.send(&ClientMsg::FetchKeyPackage { nick: "bob".into(), room: None }).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::NoKeyPackage);
    a.send(&ClientMsg::FetchKeyPackage { nick: "nobody".into(), room: None }).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::NoSuchNick);
    let kp = key_packages(2, 2);
    b.send(&ClientMsg::KeyPackages { packages: kp.clone() }).await.unwrap();
    let mut got = vec![];
    for _ in 0..3 {
        a.send(&ClientMsg::FetchKeyPackage { nick: "BOB".into(), room: Some("#sec".into()) })
            .await
            .unwrap();
        match a.expect("key_package", |m| matches!(m, ServerMsg::KeyPackage { .. })).await.unwrap()
        {
            ServerMsg::KeyPackage { package, nick, room, .. } => {
                assert_eq!(nick.as_str(), "bob");
                assert_eq!(room.unwrap().as_str(), "#sec");
                got.push(package);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(got, [kp[0].as_str(), &kp[1], &kp[1]], "the last one is kept");
}

#[tokio::test]
async fn joining_an_open_room_asks_the_members_online() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut c = TestClient::connect(server.addr, "carol").await.unwrap();
    a.until_history_end(&create("#open", true), "#open").await.unwrap();
    c.send(&ClientMsg::Join { room: "#open".into(), since: None }).await.unwrap();
    let notice = c.expect("notice", |m| matches!(m, ServerMsg::Notice { .. })).await.unwrap();
    assert!(matches!(notice, ServerMsg::Notice { text } if text.contains("asked the members")));
    let req =
        a.expect("join_request", |m| matches!(m, ServerMsg::JoinRequest { .. })).await.unwrap();
    assert!(
        matches!(req, ServerMsg::JoinRequest { room, nick, .. } if room.as_str() == "#open" && nick.as_str() == "carol")
    );
}

#[tokio::test]
async fn membership_history_and_welcomes_survive_a_restart_and_reach_an_offline_key() {
    let server = server().await;
    let bob_keys = fixed_keypair(2);
    let alice_keys = fixed_keypair(1);
    let bob_fp = bob_keys.public().fingerprint();
    let mut a = TestClient::connect_with(server.addr, "alice", &alice_keys).await.unwrap();
    {
        // bob registers his nickname once, then goes offline.
        let mut b = TestClient::connect_with(server.addr, "bob", &bob_keys).await.unwrap();
        b.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        b.read_to_end().await.unwrap();
    }
    a.until_history_end(&create("#sec", false), "#sec").await.unwrap();
    a.send(&ClientMsg::Commit {
        room: "#sec".into(),
        epoch: 0,
        body: "Q09NTUlU".into(),
        welcome: Some(SealedWelcome { to: bob_fp.to_string(), body: "V0VMQ09NRQ==".into() }),
        adds: vec![bob_fp.to_string()],
        removes: vec![],
    })
    .await
    .unwrap();
    let (commit_id, _) = sealed(&mut a, "Q09NTUlU").await;
    a.send(&ClientMsg::Sealed {
        cid: None,
        room: "#sec".into(),
        epoch: 1,
        body: "QUZURVI=".into(),
    })
    .await
    .unwrap();
    sealed(&mut a, "QUZURVI=").await;
    a.send(&ClientMsg::Quit { reason: None }).await.unwrap();
    a.read_to_end().await.unwrap();
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    let mut b = TestClient::connect_with(server.addr, "bob", &bob_keys).await.unwrap();
    b.send(&ClientMsg::KeyPackages { packages: key_packages(2, 1) }).await.unwrap();
    let invited = b.expect("invited", |m| matches!(m, ServerMsg::Invited { .. })).await.unwrap();
    assert!(matches!(invited, ServerMsg::Invited { id, epoch: 1, .. } if id == commit_id));
    let got = b
        .until_history_end(&ClientMsg::Join { room: "#sec".into(), since: Some(commit_id) }, "#sec")
        .await
        .unwrap();
    assert!(got.iter().any(|m| matches!(m, ServerMsg::Sealed { body, .. } if body == "QUZURVI=")));
    // The epoch survived too: the next commit is at epoch 1.
    b.send(&commit(0, "T0xE")).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::StaleEpoch);
    b.send(&commit(1, "TkVX")).await.unwrap();
    let (id, _) = sealed(&mut b, "TkVX").await;
    assert!(id > commit_id + 1, "ids continue after the restart");
}

#[tokio::test]
async fn made_up_fingerprints_and_welcomes_for_keys_not_added_are_refused() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let _b = TestClient::connect(server.addr, "bob").await.unwrap();
    let bob_fp = fingerprint(&mut a, "bob").await;
    a.until_history_end(&create("#sec", false), "#sec").await.unwrap();
    // Right length and prefix, but not the base64 of 32 bytes (non-zero trailing bits).
    let made_up = format!("SHA256:{}B", "A".repeat(42));
    let bad = |adds: Vec<String>, to: &str| ClientMsg::Commit {
        room: "#sec".into(),
        epoch: 0,
        body: "Q09NTUlU".into(),
        welcome: Some(SealedWelcome { to: to.into(), body: "V0VMQ09NRQ==".into() }),
        adds,
        removes: vec![],
    };
    a.send(&bad(vec![made_up.clone()], &made_up)).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::Invalid);
    // A welcome parked for a key the commit does not add.
    a.send(&bad(vec![], &bob_fp)).await.unwrap();
    let (code, text) = a.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::Invalid);
    assert!(text.contains("does not add"), "{text}");
    // Nothing moved: epoch 0 is still the room's.
    a.send(&bad(vec![bob_fp.clone()], &bob_fp)).await.unwrap();
    sealed(&mut a, "Q09NTUlU").await;
}

#[tokio::test]
async fn an_e2e_room_whose_last_key_parts_is_forgotten() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    a.until_history_end(&create("#gone", false), "#gone").await.unwrap();
    a.send(&ClientMsg::Sealed {
        cid: None,
        room: "#gone".into(),
        epoch: 0,
        body: "QUFBQQ==".into(),
    })
    .await
    .unwrap();
    a.expect("sealed", |m| matches!(m, ServerMsg::Sealed { .. })).await.unwrap();
    a.send(&ClientMsg::Part { room: "#gone".into(), reason: None }).await.unwrap();
    a.expect("leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    // The E2E room is gone, with its stored messages: the name is an ordinary (empty) room now,
    // its ids continuing like any room that had messages.
    let got = b
        .until_history_end(&ClientMsg::Join { room: "#gone".into(), since: None }, "#gone")
        .await
        .unwrap();
    assert!(got.iter().any(|m| matches!(m, ServerMsg::Members { e2e: false, .. })), "{got:?}");
    assert!(!got.iter().any(|m| matches!(m, ServerMsg::Sealed { .. })), "{got:?}");
    let conn = rusqlite::Connection::open(server.data_dir().join("chatao.db")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM sealed WHERE room = '#gone'", [], |r| r.get(0))
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the old room's messages are still stored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn key_package_fetches_are_limited_per_session() {
    let server = server().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let packages = key_packages(2, 16);
    b.send(&ClientMsg::KeyPackages { packages: packages.clone() }).await.unwrap();
    b.send(&ClientMsg::Whois { nick: "bob".into() }).await.unwrap();
    b.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap();
    for _ in 0..4 {
        a.send(&ClientMsg::FetchKeyPackage { nick: "bob".into(), room: None }).await.unwrap();
        a.expect("key_package", |m| matches!(m, ServerMsg::KeyPackage { .. })).await.unwrap();
    }
    // A fifth of the same nickname within the minute is refused: bob's packages cannot be
    // drained by one session.
    a.send(&ClientMsg::FetchKeyPackage { nick: "bob".into(), room: None }).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::RateLimited);
    // Another session is not held back by alice's fetches, and bob has packages left.
    let mut c = TestClient::connect(server.addr, "carol").await.unwrap();
    c.send(&ClientMsg::FetchKeyPackage { nick: "bob".into(), room: None }).await.unwrap();
    let got = c.expect("key_package", |m| matches!(m, ServerMsg::KeyPackage { .. })).await.unwrap();
    assert!(matches!(got, ServerMsg::KeyPackage { package, .. } if package == packages[4]));
}

#[tokio::test]
async fn a_sealed_message_with_a_cid_is_echoed_with_it_once_even_across_a_restart() {
    let server = server().await;
    let keys = fixed_keypair(1);
    let mut a = TestClient::connect_with(server.addr, "alice", &keys).await.unwrap();
    a.until_history_end(&create("#sec", false), "#sec").await.unwrap();
    let sealed_cid = |cid, body: &str| ClientMsg::Sealed {
        cid: Some(cid),
        room: "#sec".into(),
        epoch: 0,
        body: body.into(),
    };
    a.send(&sealed_cid(11, "QUJD")).await.unwrap();
    let (echo, first) = a.expect_cid(11).await.unwrap();
    assert!(matches!(&echo, ServerMsg::Sealed { body, .. } if body == "QUJD"), "{echo:?}");
    a.send(&sealed_cid(11, "QUJD")).await.unwrap();
    assert_eq!(a.expect_cid(11).await.unwrap().1, first, "a repeat gets the first echo");
    a.send(&sealed_cid(12, "not base64!")).await.unwrap();
    let (err, _) = a.expect_cid(12).await.unwrap();
    assert!(matches!(err, ServerMsg::Error { code: ErrorCode::Invalid, .. }), "{err:?}");
    a.send(&ClientMsg::Quit { reason: None }).await.unwrap();
    a.read_to_end().await.unwrap();
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    let mut a = TestClient::connect_with(server.addr, "alice", &keys).await.unwrap();
    a.send(&ClientMsg::Join { room: "#sec".into(), since: None }).await.unwrap();
    a.send(&sealed_cid(11, "QUJD")).await.unwrap();
    assert_eq!(a.expect_cid(11).await.unwrap().1, first, "remembered across the restart");
    let got = a
        .until_history_end(
            &ClientMsg::History { room: "#sec".into(), since: 0, limit: None, before: None },
            "#sec",
        )
        .await
        .unwrap();
    let stored: Vec<_> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Sealed { body, cid, history: true, .. } => Some((body.as_str(), *cid)),
            _ => None,
        })
        .collect();
    assert_eq!(stored, [("QUJD", Some(11))], "stored once, with its cid");
}
