//! Room operators (issue 19) through the real `chatao` binary in line mode against a real
//! server on loopback: the creator of a room is shown `@alice` by `/who`, `/mode +t`,
//! `/op`, `/kick` in a room and `/ban` in a room reach the server as the room commands (the
//! protocol-level bob sees each `room_moderation`), and their notices are printed; `/kill`
//! stays the server-wide disconnect (refused to a non-operator with `not_operator`).
#![allow(clippy::unwrap_used)]

use crate::common::wait_line;
use std::time::Duration;

use chatao_proto::{ErrorCode, LeaveReason, RoomAction, ServerMsg};
use chatao_testkit::{TestClient, TestServer, fixed_keypair};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const LIMIT: Duration = Duration::from_secs(30);

async fn room_moderation(c: &mut TestClient, action: RoomAction) {
    c.expect(
        "room_moderation",
        |m| matches!(m, ServerMsg::RoomModeration { action: a, .. } if *a == action),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn line_mode_room_operator_commands_act_on_the_current_room() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let dir = tempfile::tempdir().unwrap();
    let target = [server.addr.ip().to_string(), server.addr.port().to_string()];
    let mut alice = chatao_testkit::chatao(
        env!("CARGO_BIN_EXE_chatao"),
        &[&target[0], &target[1]],
        "alice",
        &dir.path().join("alice"),
    )
    .spawn()
    .unwrap();
    let mut out = BufReader::new(alice.stdout.take().unwrap()).lines();
    let mut stdin = alice.stdin.take().unwrap();
    wait_line(&mut out, "connected to").await;
    stdin.write_all(b"/join #den\n").await.unwrap();
    wait_line(&mut out, "alice joined #den").await;
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    bob.join("#den").await.unwrap();

    stdin.write_all(b"/who\n").await.unwrap();
    // The answer to /who lists both (the join's own list had alice alone).
    let who = loop {
        let line = wait_line(&mut out, "#den").await;
        if line.contains("alice") && line.contains("bob") && !line.contains("joined") {
            break line;
        }
    };
    assert!(who.contains("@alice") && !who.contains("@bob"), "{who}");
    stdin.write_all(b"/mode +t\n").await.unwrap();
    room_moderation(&mut bob, RoomAction::TopicLock).await;
    wait_line(&mut out, "alice locked the topic of #den (+t)").await;
    stdin.write_all(b"/op bob\n").await.unwrap();
    room_moderation(&mut bob, RoomAction::Op).await;
    wait_line(&mut out, "bob is now an operator of #den").await;
    stdin.write_all(b"/kick bob go away\n").await.unwrap();
    room_moderation(&mut bob, RoomAction::Kick).await;
    let left = bob.expect("its leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    assert!(matches!(left, ServerMsg::Leave { reason: LeaveReason::Kicked, .. }), "{left:?}");
    wait_line(&mut out, "bob was kicked from #den by alice: go away").await;
    bob.join("#den").await.unwrap();
    stdin.write_all(b"/ban bob 1h spam\n").await.unwrap();
    room_moderation(&mut bob, RoomAction::Ban).await;
    wait_line(&mut out, "bob was banned from #den by alice").await;
    // The server-wide disconnect is /kill, for server operators only; bob stays online.
    stdin.write_all(b"/kill bob\n").await.unwrap();
    wait_line(&mut out, "not_operator").await;
    bob.say("still online").await.unwrap();
    bob.expect_text("still online").await.unwrap();
    let (code, _) = {
        bob.send(&chatao_proto::ClientMsg::Join { room: "#den".into(), since: None })
            .await
            .unwrap();
        bob.expect_error().await.unwrap()
    };
    assert_eq!(code, ErrorCode::BannedFromRoom);
    drop(stdin);
    let status = tokio::time::timeout(LIMIT, alice.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}
