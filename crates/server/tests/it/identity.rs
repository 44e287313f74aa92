//! Identity and trust over real sockets: nicknames owned by keys (also across restarts), the
//! allowlist and its reload, and operators'
//! kicks, bans (with durations, persisted) and mutes. Durations run on the server's clock,
//! which the tests advance instead of waiting.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, ModAction, ServerMsg};
use chatao_server::clock::Clock;
use chatao_server::{Config, Runtime};
use chatao_testkit::{TestClient, TestServer, fixed_keypair};

fn refused(err: anyhow::Error, code: &str) -> String {
    let text = err.to_string();
    assert!(text.contains(code), "expected {code}: {text}");
    text
}

#[tokio::test]
async fn a_nickname_belongs_to_the_first_key_also_after_a_restart() {
    let (ka, kb) = (fixed_keypair(1), fixed_keypair(2));
    let server = TestServer::start().await;
    let a = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    drop(a);
    // Offline or not, another key cannot have it.
    let err = TestClient::connect_with(server.addr, "Alice", &kb).await.err().unwrap();
    let text = refused(err, "NickRegistered");
    assert!(text.contains("belongs to another key"), "{text}");
    let mut b = TestClient::connect_with(server.addr, "bob", &kb).await.unwrap();
    b.send(&ClientMsg::Nick { nick: "ALICE".into() }).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NickRegistered);
    drop(b);

    let server = server.restart(|_| {}).await;
    refused(
        TestClient::connect_with(server.addr, "alice", &kb).await.err().unwrap(),
        "NickRegistered",
    );
    TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
}

#[tokio::test]
async fn only_allowlisted_keys_get_in_and_a_reload_lets_more_in_without_dropping_anyone() {
    let (ka, kb) = (fixed_keypair(1), fixed_keypair(2));
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow");
    std::fs::write(&allow, format!("# friends\n{} alice\n", ka.public().fingerprint())).unwrap();
    let runtime = Runtime::default();
    let reload = runtime.reload.clone();
    let server = TestServer::start_with_runtime(runtime, |c: &mut Config| {
        c.access.allow_file = Some(allow.clone());
    })
    .await;
    let mut a = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    let err = TestClient::connect_with(server.addr, "bob", &kb).await.err().unwrap();
    let text = refused(err, "NotAllowed");
    assert!(
        text.contains(kb.public().fingerprint().as_str()) && text.contains("allowlist"),
        "{text}"
    );

    std::fs::write(
        &allow,
        format!("{}\n{}\n", ka.public().fingerprint(), kb.public().fingerprint()),
    )
    .unwrap();
    reload.notify_one();
    let mut b = None;
    for _ in 0..50 {
        if let Ok(c) = TestClient::connect_with(server.addr, "bob", &kb).await {
            b = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut b = b.expect("bob admitted after the reload");
    b.say("hello").await.unwrap();
    a.expect_text("hello").await.unwrap();
}

struct Ops {
    server: TestServer,
    clock: Clock,
    op: TestClient,
    bob: TestClient,
    carol: TestClient,
}

async fn with_operator(clock: Clock) -> Ops {
    let op_key = fixed_keypair(9);
    let op_fp = op_key.public().fingerprint();
    let runtime = Runtime { clock: clock.clone(), ..Runtime::default() };
    let server = TestServer::start_with_runtime(runtime, move |c: &mut Config| {
        c.access.ops = vec![op_fp.to_string()];
    })
    .await;
    let op = TestClient::connect_with(server.addr, "op", &op_key).await.unwrap();
    let bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let carol = TestClient::connect_with(server.addr, "carol", &fixed_keypair(3)).await.unwrap();
    Ops { server, clock, op, bob, carol }
}

fn moderation(action: ModAction) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Moderation { action: a, .. } if *a == action)
}

#[tokio::test]
async fn operators_kick_and_everyone_is_told_while_others_cannot() {
    let Ops { server: _server, mut op, mut bob, mut carol, .. } =
        with_operator(Clock::default()).await;
    carol.send(&ClientMsg::Kick { nick: "bob".into(), reason: None }).await.unwrap();
    assert_eq!(carol.expect_error().await.unwrap().0, ErrorCode::NotOperator);
    op.send(&ClientMsg::Kick { nick: "bob".into(), reason: Some("flooding".into()) })
        .await
        .unwrap();
    let all = bob.read_to_end().await.unwrap();
    assert!(
        matches!(all.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Kicked), reason }) if reason.contains("flooding")),
        "{all:?}"
    );
    let m = carol.expect("notice", moderation(ModAction::Kick)).await.unwrap();
    assert!(
        matches!(m, ServerMsg::Moderation { ref target, ref by, .. } if target == "bob" && by.as_str() == "op")
    );
    let m = carol
        .expect(
            "bob leaves",
            |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "bob"),
        )
        .await
        .unwrap();
    assert!(matches!(m, ServerMsg::Leave { reason: LeaveReason::Kicked, .. }));
    op.send(&ClientMsg::Kick { nick: "ghost".into(), reason: None }).await.unwrap();
    assert_eq!(op.expect_error().await.unwrap().0, ErrorCode::NoSuchNick);
}

#[tokio::test]
async fn a_ban_with_a_duration_persists_across_a_restart_and_ends_on_time() {
    let clock = Clock::default();
    let Ops { server, clock, mut op, mut bob, mut carol } = with_operator(clock).await;
    op.send(&ClientMsg::Ban {
        target: "bob".into(),
        duration_secs: Some(600),
        reason: Some("spam".into()),
    })
    .await
    .unwrap();
    let all = bob.read_to_end().await.unwrap();
    assert!(
        matches!(all.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Banned), .. })),
        "{all:?}"
    );
    let m = carol.expect("notice", moderation(ModAction::Ban)).await.unwrap();
    assert!(
        matches!(m, ServerMsg::Moderation { until: Some(_), reason: Some(ref r), .. } if r == "spam")
    );
    let text = refused(
        TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.err().unwrap(),
        "Banned",
    );
    assert!(text.contains("10m left") && text.contains("spam"), "{text}");

    drop((op, carol));
    let runtime = Runtime { clock: clock.clone(), ..Runtime::default() };
    let op_fp = fixed_keypair(9).public().fingerprint();
    let server = server
        .restart_with_runtime(runtime, move |c: &mut Config| c.access.ops = vec![op_fp.to_string()])
        .await;
    clock.advance(Duration::from_secs(300));
    let text = refused(
        TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.err().unwrap(),
        "Banned",
    );
    assert!(text.contains("5m left"), "the ban survived the restart: {text}");
    clock.advance(Duration::from_secs(301));
    TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
}

#[tokio::test]
async fn a_permanent_ban_by_fingerprint_is_lifted_by_unban() {
    let Ops { server, mut op, mut carol, .. } = with_operator(Clock::default()).await;
    let fp = fixed_keypair(2).public().fingerprint();
    op.send(&ClientMsg::Ban { target: fp.to_string(), duration_secs: None, reason: None })
        .await
        .unwrap();
    carol.expect("notice", moderation(ModAction::Ban)).await.unwrap();
    let text = refused(
        TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.err().unwrap(),
        "Banned",
    );
    assert!(text.contains("permanently"), "{text}");
    carol.send(&ClientMsg::Unban { target: fp.to_string() }).await.unwrap();
    assert_eq!(carol.expect_error().await.unwrap().0, ErrorCode::NotOperator);
    op.send(&ClientMsg::Unban { target: "bob".into() }).await.unwrap();
    carol.expect("notice", moderation(ModAction::Unban)).await.unwrap();
    TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    op.send(&ClientMsg::Unban { target: fp.to_string() }).await.unwrap();
    let (_, message) = op.expect_error().await.unwrap();
    assert!(message.contains("not banned"), "{message}");
}

#[tokio::test]
async fn a_muted_key_cannot_send_until_the_mute_ends() {
    let Ops { server: _server, clock, mut op, mut bob, mut carol } =
        with_operator(Clock::default()).await;
    op.send(&ClientMsg::Mute { nick: "bob".into(), duration_secs: Some(60) }).await.unwrap();
    bob.expect("notice", moderation(ModAction::Mute)).await.unwrap();
    bob.say("can you hear me").await.unwrap();
    let (code, message) = bob.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::Muted);
    assert!(message.contains("muted for"), "{message}");
    bob.send(&ClientMsg::Msg { cid: None, to: "carol".into(), text: "psst".into() }).await.unwrap();
    assert_eq!(bob.expect_error().await.unwrap().0, ErrorCode::Muted);
    clock.advance(Duration::from_secs(61));
    bob.say("and now?").await.unwrap();
    carol.expect_text("and now?").await.unwrap();
    op.send(&ClientMsg::Mute { nick: "bob".into(), duration_secs: None }).await.unwrap();
    bob.expect("notice", moderation(ModAction::Mute)).await.unwrap();
    op.send(&ClientMsg::Unmute { nick: "bob".into() }).await.unwrap();
    bob.expect("notice", moderation(ModAction::Unmute)).await.unwrap();
    bob.say("free").await.unwrap();
    carol.expect_text("free").await.unwrap();
}
