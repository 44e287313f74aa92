//! The chat over real sockets: arrivals, relaying in order, departures, nickname rules,
//! protocol errors, limits and shutdown. Each test starts its own server on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, ServerMsg};
use chatao_testkit::{TestClient, TestServer, open};
use chatao_transport::Keypair;

fn is_join(nick: &'static str) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Join { nick: n, .. } if n.as_str() == nick)
}

fn is_leave(nick: &'static str) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Leave { nick: n, .. } if n.as_str() == nick)
}

#[tokio::test]
async fn arrivals_are_announced_to_everyone_online() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let members =
        alice.expect("members", |m| matches!(m, ServerMsg::Members { .. })).await.unwrap();
    assert!(matches!(members, ServerMsg::Members { ref members, .. } if members.len() == 1));
    let m = alice.expect("own join", is_join("alice")).await.unwrap();
    assert!(
        matches!(m, ServerMsg::Join { ref fingerprint, .. } if fingerprint.starts_with("SHA256:"))
    );
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    alice.expect("bob's join", is_join("bob")).await.unwrap();
    let members = bob.expect("members", |m| matches!(m, ServerMsg::Members { .. })).await.unwrap();
    let ServerMsg::Members { members, .. } = members else { unreachable!() };
    let nicks: Vec<&str> = members.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(nicks, ["alice", "bob"]);
}

#[tokio::test]
async fn messages_reach_all_others_in_order_with_increasing_ids() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let mut clients = vec![];
    for nick in ["a1", "a2", "a3", "a4"] {
        clients.push(TestClient::connect(server.addr, nick).await.unwrap());
    }
    for c in clients.iter_mut() {
        c.expect("last join", is_join("a4")).await.unwrap();
    }
    for i in 0..100 {
        let sender = i % 2;
        clients[sender].say(&format!("msg {i}")).await.unwrap();
    }
    for c in clients.iter_mut() {
        let mut last_id = 0;
        for i in 0..100 {
            let m =
                c.expect("a message", |m| matches!(m, ServerMsg::Message { .. })).await.unwrap();
            let ServerMsg::Message { id, text, from, .. } = m else { unreachable!() };
            assert!(id > last_id, "ids increase");
            last_id = id;
            // The two senders interleave, but each sender's own messages stay in order.
            let n: usize = text.trim_start_matches("msg ").parse().unwrap();
            assert_eq!(from.as_str(), if n.is_multiple_of(2) { "a1" } else { "a2" });
            let _ = i;
        }
    }
}

#[tokio::test]
async fn each_senders_messages_arrive_in_the_order_sent() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    alice.expect("bob", is_join("bob")).await.unwrap();
    for i in 0..200 {
        alice.say(&format!("{i}")).await.unwrap();
    }
    for i in 0..200 {
        let m = bob.expect("message", |m| matches!(m, ServerMsg::Message { .. })).await.unwrap();
        assert!(matches!(m, ServerMsg::Message { ref text, .. } if *text == i.to_string()));
    }
}

#[tokio::test]
async fn departures_are_announced_with_their_reason() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let carol = TestClient::connect(server.addr, "carol").await.unwrap();
    alice.expect("carol", is_join("carol")).await.unwrap();

    bob.send(&ClientMsg::Quit { reason: Some("lunch".into()) }).await.unwrap();
    let bye = bob.expect("bye", |m| matches!(m, ServerMsg::Bye { .. })).await.unwrap();
    assert_eq!(bye, ServerMsg::Bye { code: None, reason: "goodbye".into() });
    let m = alice.expect("bob leaves", is_leave("bob")).await.unwrap();
    assert!(
        matches!(m, ServerMsg::Leave { reason: LeaveReason::Quit, message: Some(ref r), .. } if r == "lunch")
    );

    drop(carol); // EOF without a goodbye
    let m = alice.expect("carol leaves", is_leave("carol")).await.unwrap();
    assert!(matches!(m, ServerMsg::Leave { reason: LeaveReason::Lost, .. }));
}

#[tokio::test]
async fn a_nickname_online_is_refused_case_insensitively() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    // Another key: the nickname is alice's (see tests/it/identity.rs for ownership).
    let err = TestClient::connect(server.addr, "Alice").await.err().unwrap().to_string();
    assert!(err.contains("NickRegistered") && err.contains("belongs to another key"), "{err}");
    // Renaming onto someone online gives the same answer as at hello: it is another key's
    // (docs/PROTOCOL.md 9.1).
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    bob.send(&ClientMsg::Nick { nick: "ALICE".into() }).await.unwrap();
    assert!(matches!(
        bob.expect("error", |m| matches!(m, ServerMsg::Error { .. })).await.unwrap(),
        ServerMsg::Error { code: ErrorCode::NickRegistered, .. }
    ));
    alice.say("still alice").await.unwrap();
    alice.expect_text("still alice").await.unwrap();
}

#[tokio::test]
async fn invalid_nicknames_are_refused_with_the_rules() {
    let server = TestServer::start().await;
    for bad in ["", "has space", "esc\u{1b}[2J", &"x".repeat(33), "émile"] {
        let err = TestClient::connect(server.addr, bad).await.err().unwrap().to_string();
        assert!(err.contains("InvalidNick") && err.contains("1 to 32"), "{bad:?}: {err}");
    }
}

#[tokio::test]
async fn bad_text_is_refused_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    for (text, code) in [
        ("\u{1b}]0;owned\u{7}", ErrorCode::InvalidText),
        ("abc\u{202e}cba", ErrorCode::InvalidText),
        ("   ", ErrorCode::InvalidText),
    ] {
        alice.say(text).await.unwrap();
        let m = alice.expect("error", |m| matches!(m, ServerMsg::Error { .. })).await.unwrap();
        assert!(matches!(m, ServerMsg::Error { code: c, .. } if c == code), "{text:?}: {m:?}");
    }
    alice.say(&"x".repeat(5000)).await.unwrap();
    let m = alice.expect("error", |m| matches!(m, ServerMsg::Error { .. })).await.unwrap();
    assert!(matches!(m, ServerMsg::Error { code: ErrorCode::TooLong, .. }));
    alice
        .send(&ClientMsg::Say { cid: None, room: "#nowhere".into(), text: "hi".into() })
        .await
        .unwrap();
    let m = alice.expect("error", |m| matches!(m, ServerMsg::Error { .. })).await.unwrap();
    assert!(matches!(m, ServerMsg::Error { code: ErrorCode::NotInRoom, .. }));
    alice.say("still here").await.unwrap();
    alice.expect_text("still here").await.unwrap();
}

#[tokio::test]
async fn a_second_hello_is_a_sequence_error_and_ping_is_answered() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    alice.send(&ClientMsg::Hello { nick: "again".into() }).await.unwrap();
    let m = alice.expect("error", |m| matches!(m, ServerMsg::Error { .. })).await.unwrap();
    assert!(matches!(m, ServerMsg::Error { code: ErrorCode::BadSequence, .. }));
    alice.send(&ClientMsg::Ping { token: 77 }).await.unwrap();
    alice.expect("pong", |m| *m == ServerMsg::Pong { token: 77 }).await.unwrap();
}

#[tokio::test]
async fn an_undecodable_record_ends_only_that_session() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut mallory = TestClient::connect(server.addr, "mallory").await.unwrap();
    alice.expect("mallory", is_join("mallory")).await.unwrap();
    mallory.conn.write_record(&bytes::Bytes::from_static(b"{not json\n")).await.unwrap();
    let rest = mallory.read_to_end().await.unwrap();
    assert!(matches!(rest.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::BadMessage), .. })));
    let m = alice.expect("mallory leaves", is_leave("mallory")).await.unwrap();
    assert!(matches!(m, ServerMsg::Leave { reason: LeaveReason::Dropped, .. }));
    alice.say("fine").await.unwrap();
    alice.expect_text("fine").await.unwrap();
}

#[tokio::test]
async fn the_first_message_must_be_hello() {
    let server = TestServer::start().await;
    let mut conn = open(server.addr, &Keypair::generate().unwrap()).await.unwrap();
    conn.write_record(&chatao_proto::encode(&ClientMsg::Say {
        cid: None,
        room: "#lobby".into(),
        text: "x".into(),
    }))
    .await
    .unwrap();
    let r = conn.read_record().await.unwrap().unwrap();
    let m = chatao_proto::decode_server(&r).unwrap();
    assert!(matches!(m, ServerMsg::Bye { code: Some(ErrorCode::BadSequence), .. }), "{m:?}");
}

#[tokio::test]
async fn a_flood_is_slowed_never_refused_then_disconnected_at_30_s_of_backlog() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.burst = 3;
    })
    .await;
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    bob.expect("alice", is_join("alice")).await.unwrap();
    // The burst (3, and one of slack) goes at once; then 30 wait (30 s at 1/s); the next ends
    // the session.
    for i in 0..100 {
        if alice.say(&format!("{i}")).await.is_err() {
            break;
        }
    }
    let all = alice.read_to_end().await.unwrap();
    assert!(!all.iter().any(|m| matches!(m, ServerMsg::Error { .. })), "refused: {all:?}");
    let Some(ServerMsg::Bye { code: Some(ErrorCode::RateLimited), reason }) = all.last() else {
        panic!("{:?}", all.last())
    };
    assert!(reason.contains("messages were waiting"), "{reason}");
    // What the room saw: the burst, then the flooder's departure.
    let mut accepted = 0;
    loop {
        match bob.recv().await.unwrap() {
            ServerMsg::Message { .. } => accepted += 1,
            ServerMsg::Leave { reason: LeaveReason::Dropped, .. } => break,
            _ => {}
        }
    }
    assert!((4..=5).contains(&accepted), "burst of 3 (+1) accepted, got {accepted}");
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_timed_out() {
    let server = TestServer::start_with(|c| {
        c.ping_after = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    // bob answers pings, alice does not.
    let ServerMsg::Ping { token } =
        bob.expect("ping", |m| matches!(m, ServerMsg::Ping { .. })).await.unwrap()
    else {
        unreachable!()
    };
    bob.send(&ClientMsg::Pong { token }).await.unwrap();
    let all = alice.read_to_end().await.unwrap();
    assert!(all.iter().any(|m| matches!(m, ServerMsg::Ping { .. })));
    assert!(matches!(all.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Timeout), .. })));
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_as_too_slow() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.mailbox_capacity = 64;
    })
    .await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let _sloth = TestClient::connect(server.addr, "sloth").await.unwrap();
    alice.expect("sloth", is_join("sloth")).await.unwrap();
    let big = "z".repeat(3900);
    let mut left = false;
    for _ in 0..20_000 {
        alice.say(&big).await.unwrap();
        // Keep alice's own queue drained while watching for the departure.
        while let Ok(Ok(Some(r))) =
            tokio::time::timeout(Duration::from_millis(0), alice.conn.read_record()).await
        {
            let m = chatao_proto::decode_server(&r).unwrap();
            if is_leave("sloth")(&m) {
                assert!(matches!(m, ServerMsg::Leave { reason: LeaveReason::Dropped, .. }));
                left = true;
            }
        }
        if left {
            break;
        }
    }
    assert!(left, "the slow client was disconnected");
}

#[tokio::test]
async fn shutdown_says_goodbye_to_everyone() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let stopping = tokio::spawn(server.stop());
    for c in [&mut alice, &mut bob] {
        let all = c.read_to_end().await.unwrap();
        assert!(matches!(all.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Shutdown), .. })));
    }
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_echo_of_a_message_sent_just_before_quit_comes_before_bye() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    for i in 0..20 {
        alice.say(&format!("last words {i}")).await.unwrap();
        alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        let all = alice.read_to_end().await.unwrap();
        assert!(
            all.iter().any(|m| matches!(m, ServerMsg::Message { text, .. } if *text == format!("last words {i}"))),
            "round {i}: {all:?}"
        );
        assert!(matches!(all.last(), Some(ServerMsg::Bye { code: None, .. })));
        alice = TestClient::connect(server.addr, &format!("alice{i}")).await.unwrap();
    }
}

#[tokio::test]
async fn every_command_but_keepalives_counts_against_the_rate() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 4;
        c.limits.burst = 3;
    })
    .await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    alice.expect("lobby replay", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    // Ten joins: the burst at once, the rest held until their tokens come (never refused); the
    // pings behind them keep their place, and need no token of their own.
    for i in 0..10 {
        alice.send(&ClientMsg::Join { room: format!("#r{i}"), since: None }).await.unwrap();
    }
    for token in 0..10 {
        alice.send(&ClientMsg::Ping { token }).await.unwrap();
    }
    let mut joined = 0;
    loop {
        match alice.recv().await.unwrap() {
            ServerMsg::HistoryEnd { .. } => joined += 1,
            ServerMsg::Pong { token } => {
                assert_eq!(joined, 10, "pong {token} overtook a held join");
                if token == 9 {
                    break;
                }
            }
            m @ (ServerMsg::Error { .. } | ServerMsg::Bye { .. }) => panic!("refused: {m:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_text_limit_that_cannot_fit_in_a_record_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        chatao_server::Config::new(chatao_testkit::fixed_keypair(1), dir.path().into());
    config.limits.max_text_bytes = 100_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err =
        chatao_server::run(listener, config, Default::default(), std::future::pending::<()>())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("max_text_bytes 100000 is too large"), "{err}");
}
