//! Rooms with their own moderators (issue 19), against the real server: a room's first joiner
//! is its operator (marked `op` in member lists), room operators op and deop, lock the topic,
//! kick from the room only (the kicked session stays connected), ban keys from the room (with
//! the time left told at the door), make the room invite-only and invite; others are refused
//! with `not_room_operator`. A server operator does all of it in a room it is not in. The
//! state survives a restart. On a cluster (a real NATS, two nodes) op, the topic lock and a
//! room ban made on one node hold on the other.
// Without the `cluster` feature the cluster tests below are left out, and what only they use.
#![cfg_attr(not(feature = "cluster"), allow(unused_imports))]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, RoomAction, RoomFlag, ServerMsg};
#[cfg(feature = "cluster")]
use chatao_server::cluster::ClusterConfig;
use chatao_testkit::{NatsServer, TestClient, TestServer, fixed_keypair};

/// `who room` as `c` sees it: (nickname, marked op).
async fn who(c: &mut TestClient, room: &str) -> Vec<(String, bool)> {
    c.send(&ClientMsg::Who { room: room.into(), after: None }).await.unwrap();
    match c.expect("members", |m| matches!(m, ServerMsg::Members { .. })).await.unwrap() {
        ServerMsg::Members { members, .. } => {
            members.into_iter().map(|m| (m.nick.to_string(), m.op)).collect()
        }
        _ => unreachable!(),
    }
}

/// Waits for the `room_moderation` of `action` and returns its target.
async fn moderation(c: &mut TestClient, action: RoomAction) -> Option<String> {
    let what = format!("room_moderation {action:?}");
    match c
        .expect(&what, |m| matches!(m, ServerMsg::RoomModeration { action: a, .. } if *a == action))
        .await
        .unwrap()
    {
        ServerMsg::RoomModeration { target, .. } => target,
        _ => unreachable!(),
    }
}

/// Sends `msg` and waits for the error it earns.
async fn refused(c: &mut TestClient, msg: ClientMsg) -> (ErrorCode, String) {
    c.send(&msg).await.unwrap();
    c.expect_error().await.unwrap()
}

fn topic(room: &str, text: &str) -> ClientMsg {
    ClientMsg::Topic { room: room.into(), text: Some(text.into()) }
}

fn join(room: &str) -> ClientMsg {
    ClientMsg::Join { room: room.into(), since: None }
}

/// Waits until `c`'s topic change in `room` comes back (accepted).
async fn topic_set(c: &mut TestClient, room: &str, text: &str) {
    c.send(&topic(room, text)).await.unwrap();
    let got = c
        .expect("the topic or an error", |m| match m {
            ServerMsg::Topic { text: Some(t), .. } => t == text,
            m => matches!(m, ServerMsg::Error { .. }),
        })
        .await
        .unwrap();
    let accepted = match &got {
        ServerMsg::Topic { text: Some(t), .. } => t == text,
        _ => false,
    };
    assert!(accepted, "{got:?}");
}

#[tokio::test]
async fn a_rooms_creator_ops_locks_the_topic_and_kicks_from_the_room_only() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let mut alice =
        TestClient::connect_with(server.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let mut carol =
        TestClient::connect_with(server.addr, "carol", &fixed_keypair(3)).await.unwrap();
    alice.join("#ops").await.unwrap();
    bob.join("#ops").await.unwrap();
    carol.join("#ops").await.unwrap();
    let listed = who(&mut bob, "#ops").await;
    assert_eq!(
        listed,
        [("alice".into(), true), ("bob".into(), false), ("carol".into(), false)],
        "the creator is the room's operator"
    );

    // Not an operator: every room command is refused.
    let (code, _) =
        refused(&mut bob, ClientMsg::Op { room: "#ops".into(), nick: "bob".into() }).await;
    assert_eq!(code, ErrorCode::NotRoomOperator);
    let kick = ClientMsg::RoomKick { room: "#ops".into(), nick: "carol".into(), reason: None };
    assert_eq!(refused(&mut bob, kick).await.0, ErrorCode::NotRoomOperator);
    let lock = ClientMsg::Mode { room: "#ops".into(), flag: RoomFlag::TopicLock, on: true };
    assert_eq!(refused(&mut bob, lock.clone()).await.0, ErrorCode::NotRoomOperator);

    // The topic lock: only operators set the topic while it is on.
    topic_set(&mut bob, "#ops", "open for all").await;
    alice.send(&lock).await.unwrap();
    moderation(&mut bob, RoomAction::TopicLock).await;
    let (code, message) = refused(&mut bob, topic("#ops", "mine now")).await;
    assert_eq!(code, ErrorCode::TopicLocked, "{message}");
    topic_set(&mut alice, "#ops", "locked by alice").await;

    // Op and deop.
    alice.send(&ClientMsg::Op { room: "#ops".into(), nick: "bob".into() }).await.unwrap();
    assert_eq!(moderation(&mut carol, RoomAction::Op).await.as_deref(), Some("bob"));
    assert!(who(&mut carol, "#ops").await.contains(&("bob".into(), true)));
    topic_set(&mut bob, "#ops", "bob may now").await;
    alice.send(&ClientMsg::Deop { room: "#ops".into(), nick: "bob".into() }).await.unwrap();
    moderation(&mut bob, RoomAction::Deop).await;
    assert_eq!(refused(&mut bob, topic("#ops", "again")).await.0, ErrorCode::TopicLocked);

    // A kick from the room: everyone in it sees it, the kicked session is told, leaves the
    // room with the reason and stays connected (the lobby still hears it).
    let kick = ClientMsg::RoomKick {
        room: "#ops".into(),
        nick: "bob".into(),
        reason: Some("off topic".into()),
    };
    alice.send(&kick).await.unwrap();
    assert_eq!(moderation(&mut carol, RoomAction::Kick).await.as_deref(), Some("bob"));
    let left = carol.expect("bob's leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    assert!(
        matches!(&left, ServerMsg::Leave { nick, reason: LeaveReason::Kicked, message: Some(m), .. }
            if nick.as_str() == "bob" && m.contains("off topic")),
        "{left:?}"
    );
    assert_eq!(moderation(&mut bob, RoomAction::Kick).await.as_deref(), Some("bob"));
    bob.expect("its own leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    assert!(!who(&mut carol, "#ops").await.iter().any(|(n, _)| n == "bob"));
    bob.say("still here").await.unwrap();
    carol.expect_text("still here").await.unwrap();
    // A kick is not a ban: bob may come back.
    bob.join("#ops").await.unwrap();
}

#[tokio::test]
async fn room_bans_and_invite_only_keep_keys_out_of_that_room_only() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let mut alice =
        TestClient::connect_with(server.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let mut carol =
        TestClient::connect_with(server.addr, "carol", &fixed_keypair(3)).await.unwrap();
    alice.join("#den").await.unwrap();
    bob.join("#den").await.unwrap();

    let ban = ClientMsg::RoomBan {
        room: "#den".into(),
        target: "bob".into(),
        duration_secs: Some(3600),
        reason: Some("spam".into()),
    };
    alice.send(&ban).await.unwrap();
    assert_eq!(moderation(&mut bob, RoomAction::Ban).await.as_deref(), Some("bob"));
    bob.expect("removed", |m| {
        matches!(m, ServerMsg::Leave { nick, reason: LeaveReason::Kicked, .. } if nick.as_str() == "bob")
    })
    .await
    .unwrap();
    let (code, message) = refused(&mut bob, join("#den")).await;
    assert_eq!(code, ErrorCode::BannedFromRoom);
    assert!(message.contains("more") && message.contains("spam"), "the time left: {message}");
    // Only that room: bob joins another one, and stays online.
    bob.join("#elsewhere").await.unwrap();
    let unban = ClientMsg::RoomUnban { room: "#den".into(), target: "bob".into() };
    alice.send(&unban).await.unwrap();
    moderation(&mut alice, RoomAction::Unban).await;
    bob.join("#den").await.unwrap();

    // Invite-only: carol is refused until invited; clearing the list (-i) ends the invite.
    let mode = |on| ClientMsg::Mode { room: "#den".into(), flag: RoomFlag::InviteOnly, on };
    alice.send(&mode(true)).await.unwrap();
    moderation(&mut alice, RoomAction::InviteOnly).await;
    assert_eq!(refused(&mut carol, join("#den")).await.0, ErrorCode::InviteOnly);
    let invite = ClientMsg::Invite { room: "#den".into(), nick: "carol".into() };
    assert_eq!(refused(&mut bob, invite.clone()).await.0, ErrorCode::NotRoomOperator);
    alice.send(&invite).await.unwrap();
    moderation(&mut alice, RoomAction::Invite).await;
    carol.join("#den").await.unwrap();
    carol.send(&ClientMsg::Part { room: "#den".into(), reason: None }).await.unwrap();
    carol.expect("its part", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    carol.join("#den").await.unwrap();
    carol.send(&ClientMsg::Part { room: "#den".into(), reason: None }).await.unwrap();
    carol.expect("its part", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    alice.send(&mode(false)).await.unwrap();
    moderation(&mut alice, RoomAction::InviteOpen).await;
    alice.send(&mode(true)).await.unwrap();
    moderation(&mut alice, RoomAction::InviteOnly).await;
    assert_eq!(refused(&mut carol, join("#den")).await.0, ErrorCode::InviteOnly);
}

#[tokio::test]
async fn a_server_operator_moderates_any_room_and_the_state_survives_a_restart() {
    let oper = fixed_keypair(9);
    let oper_fp = oper.public().fingerprint();
    let adjust = |fp: String| {
        move |c: &mut chatao_server::Config| {
            c.limits.rate_per_sec = 0;
            c.access.ops = vec![fp];
        }
    };
    let server = TestServer::start_with(adjust(oper_fp.to_string())).await;
    let mut op = TestClient::connect_with(server.addr, "oper", &oper).await.unwrap();
    let mut alice =
        TestClient::connect_with(server.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    alice.join("#keep").await.unwrap();
    alice.say_in("#keep", "history").await.unwrap();
    alice.expect_text("history").await.unwrap();
    bob.join("#keep").await.unwrap();
    // The server operator, not in #keep, ops bob and locks the topic there.
    op.send(&ClientMsg::Op { room: "#keep".into(), nick: "bob".into() }).await.unwrap();
    moderation(&mut op, RoomAction::Op).await;
    let lock = ClientMsg::Mode { room: "#keep".into(), flag: RoomFlag::TopicLock, on: true };
    op.send(&lock).await.unwrap();
    moderation(&mut alice, RoomAction::TopicLock).await;
    alice.send(&ClientMsg::Deop { room: "#keep".into(), nick: "alice".into() }).await.unwrap();
    moderation(&mut bob, RoomAction::Deop).await;
    // In the lobby, the server operators are the operators.
    assert!(who(&mut alice, "#lobby").await.contains(&("oper".into(), true)));
    let lobby_op = ClientMsg::Op { room: "#lobby".into(), nick: "alice".into() };
    assert_eq!(refused(&mut alice, lobby_op).await.0, ErrorCode::NotRoomOperator);
    drop((op, alice, bob));

    let server = server.restart(adjust(oper_fp.to_string())).await;
    let mut alice =
        TestClient::connect_with(server.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let mut carol =
        TestClient::connect_with(server.addr, "carol", &fixed_keypair(3)).await.unwrap();
    alice.join("#keep").await.unwrap();
    bob.join("#keep").await.unwrap();
    let listed = who(&mut bob, "#keep").await;
    assert_eq!(listed, [("alice".into(), false), ("bob".into(), true)], "kept: {listed:?}");
    assert_eq!(refused(&mut alice, topic("#keep", "x")).await.0, ErrorCode::TopicLocked);
    topic_set(&mut bob, "#keep", "bob's").await;
    // A room that exists (history) with no operator left: a joiner does not become one.
    bob.send(&ClientMsg::Deop { room: "#keep".into(), nick: "bob".into() }).await.unwrap();
    moderation(&mut alice, RoomAction::Deop).await;
    bob.send(&ClientMsg::Part { room: "#keep".into(), reason: None }).await.unwrap();
    alice.send(&ClientMsg::Part { room: "#keep".into(), reason: None }).await.unwrap();
    alice.expect("its part", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    carol.join("#keep").await.unwrap();
    let listed = who(&mut carol, "#keep").await;
    assert!(listed.iter().all(|(_, op)| !op), "nobody claims a room with history: {listed:?}");
}

#[cfg(feature = "cluster")]
/// A cluster node's settings: on `nats`, no rate limit.
fn clustered(nats: &NatsServer) -> impl FnOnce(&mut chatao_server::Config) + use<> {
    let url = nats.url();
    move |c| {
        c.cluster = Some(ClusterConfig::new(url));
        c.limits.rate_per_sec = 0;
    }
}

#[cfg(feature = "cluster")]
/// Fails without the changes on the room's stream (applied on the operator's node only): on
/// node B, bob is never told he is an operator, carol sets a locked topic and rejoins.
#[tokio::test]
async fn on_a_cluster_op_topic_lock_and_room_ban_hold_on_the_other_node() {
    let nats = NatsServer::start().await;
    let a = TestServer::start_with(clustered(&nats)).await;
    let b = TestServer::start_with(clustered(&nats)).await;
    let mut alice = TestClient::connect_with(a.addr, "alice", &fixed_keypair(1)).await.unwrap();
    alice.join("#mesh").await.unwrap();
    // The creator's claim travels on the stream: wait until node A has applied it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !who(&mut alice, "#mesh").await.contains(&("alice".into(), true)) {
        assert!(tokio::time::Instant::now() < deadline, "alice never became #mesh's operator");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut bob = TestClient::connect_with(b.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let mut carol = TestClient::connect_with(b.addr, "carol", &fixed_keypair(3)).await.unwrap();
    bob.join("#mesh").await.unwrap();
    carol.join("#mesh").await.unwrap();
    alice
        .expect(
            "carol on A",
            |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "carol"),
        )
        .await
        .unwrap();

    alice.send(&ClientMsg::Op { room: "#mesh".into(), nick: "bob".into() }).await.unwrap();
    assert_eq!(moderation(&mut bob, RoomAction::Op).await.as_deref(), Some("bob"));
    let listed = who(&mut carol, "#mesh").await;
    assert!(listed.contains(&("bob".into(), true)), "op on node B: {listed:?}");

    let lock = ClientMsg::Mode { room: "#mesh".into(), flag: RoomFlag::TopicLock, on: true };
    alice.send(&lock).await.unwrap();
    moderation(&mut carol, RoomAction::TopicLock).await;
    assert_eq!(refused(&mut carol, topic("#mesh", "carol's")).await.0, ErrorCode::TopicLocked);

    // bob, an operator through node B, bans carol (on B too) from the room.
    let ban = ClientMsg::RoomBan {
        room: "#mesh".into(),
        target: "carol".into(),
        duration_secs: None,
        reason: None,
    };
    bob.send(&ban).await.unwrap();
    moderation(&mut alice, RoomAction::Ban).await;
    carol
        .expect("removed on B", |m| {
            matches!(m, ServerMsg::Leave { nick, reason: LeaveReason::Kicked, .. } if nick.as_str() == "carol")
        })
        .await
        .unwrap();
    assert_eq!(refused(&mut carol, join("#mesh")).await.0, ErrorCode::BannedFromRoom);
    let mut carol_a = TestClient::connect_with(a.addr, "carol2", &fixed_keypair(3)).await.unwrap();
    assert_eq!(refused(&mut carol_a, join("#mesh")).await.0, ErrorCode::BannedFromRoom);
}

#[cfg(feature = "cluster")]
/// Two keys join a new room at once through two nodes: each node may see the room as new and
/// publish a claim for its own joiner. The stream orders the claims, and only the first one
/// counts on every node: the room has one operator, the same on both nodes, and both joiners
/// are told who it is (`room_moderation op`: on a cluster the claim comes back after the
/// join's member list). Without the first-claim rule both became operators; without the
/// notice nobody is told.
#[tokio::test]
async fn on_a_cluster_two_first_joiners_at_once_make_one_operator() {
    let nats = NatsServer::start().await;
    let a = TestServer::start_with(clustered(&nats)).await;
    let b = TestServer::start_with(clustered(&nats)).await;
    let mut alice = TestClient::connect_with(a.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut bob = TestClient::connect_with(b.addr, "bob", &fixed_keypair(2)).await.unwrap();
    for round in 0..3 {
        let room = format!("#race{round}");
        let msg = join(&room);
        let (ja, jb) = tokio::join!(alice.send(&msg), bob.send(&msg));
        ja.unwrap();
        jb.unwrap();
        let winner_a = moderation(&mut alice, RoomAction::Op).await.unwrap();
        let winner_b = moderation(&mut bob, RoomAction::Op).await.unwrap();
        assert_eq!(winner_a, winner_b, "{room}: one operator, the same on both nodes");
        // Both claims (if two were made) precede these on the stream: once both lines are
        // read on both nodes, every claim has been applied there.
        alice.say_in(&room, &format!("a{round}")).await.unwrap();
        bob.say_in(&room, &format!("b{round}")).await.unwrap();
        // Said through two nodes at once: the stream may order them either way.
        for c in [&mut alice, &mut bob] {
            let mut missing = vec![format!("a{round}"), format!("b{round}")];
            while !missing.is_empty() {
                let m = c
                    .recv()
                    .await
                    .unwrap_or_else(|e| panic!("{} missed {missing:?}: {e:#}", c.nick));
                if let ServerMsg::Message { text, .. } = m {
                    missing.retain(|t| *t != text);
                }
            }
        }
        for c in [&mut alice, &mut bob] {
            let ops: Vec<String> =
                who(c, &room).await.into_iter().filter(|(_, op)| *op).map(|(n, _)| n).collect();
            assert_eq!(
                ops,
                std::slice::from_ref(&winner_a),
                "{room}: exactly the first claim's key"
            );
        }
    }
}
