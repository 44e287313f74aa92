//! History over real sockets: replay on join, catch-up after a dropped connection, retention,
//! and survival across a graceful restart and a `kill -9` of the real binary.
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ServerMsg};
use chatao_testkit::{Chataosrv, TestClient, TestServer, fixed_keypair, free_port};

fn history(msgs: &[ServerMsg]) -> Vec<(u64, String)> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::Message { id, text, history: true, .. } => Some((*id, text.clone())),
            _ => None,
        })
        .collect()
}

fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    range.map(|i| (i, format!("m{i}"))).collect()
}

async fn say_all(c: &mut TestClient, room: &str, range: std::ops::RangeInclusive<u64>) {
    for i in range.clone() {
        c.say_in(room, &format!("m{i}")).await.unwrap();
    }
    c.expect_text(&format!("m{}", range.end())).await.unwrap();
}

#[tokio::test]
async fn a_joiner_gets_the_last_messages_marked_as_history() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.history_on_join = 5;
    })
    .await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#rust").await.unwrap();
    say_all(&mut a, "#rust", 1..=8).await;
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let got = b.join("#rust").await.unwrap();
    assert_eq!(history(&got), ids(4..=8));
    assert!(matches!(got.last(), Some(ServerMsg::HistoryEnd { count: 5, .. })));
    // Live messages after the join are not marked, and nothing is repeated.
    a.say_in("#rust", "m9").await.unwrap();
    let m = b.expect_text("m9").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { id: 9, history: false, .. }));
}

#[tokio::test]
async fn history_and_ids_survive_a_restart_and_retention_prunes() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.retention.max_messages = 5;
    })
    .await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#keep").await.unwrap();
    a.send(&ClientMsg::Topic { room: "#keep".into(), text: Some("kept".into()) }).await.unwrap();
    say_all(&mut a, "#keep", 1..=20).await;
    drop(a);
    let server = server
        .restart(|c| {
            c.limits.rate_per_sec = 0;
            c.retention.max_messages = 5;
        })
        .await;
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let got = b
        .until_history_end(&ClientMsg::Join { room: "#keep".into(), since: Some(0) }, "#keep")
        .await
        .unwrap();
    assert_eq!(history(&got), ids(16..=20), "retention kept the last 5");
    assert!(got.iter().any(|m| matches!(m, ServerMsg::Topic { text: Some(t), .. } if t == "kept")));
    b.say_in("#keep", "after restart").await.unwrap();
    let m = b.expect_text("after restart").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { id: 21, .. }), "ids continue: {m:?}");
}

#[tokio::test]
async fn a_dropped_connection_catches_up_on_exactly_what_it_missed() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let bob_key = fixed_keypair(2);
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect_with(server.addr, "bob", &bob_key).await.unwrap();
    b.join("#side").await.unwrap();
    a.join("#side").await.unwrap();
    say_all(&mut a, "#lobby", 1..=3).await;
    say_all(&mut a, "#side", 1..=2).await;
    b.expect_text("m3").await.unwrap();
    drop(b); // the network drops: no goodbye
    say_all(&mut a, "#lobby", 4..=7).await;
    say_all(&mut a, "#side", 3..=4).await;

    let mut b = TestClient::connect_with(server.addr, "bob", &bob_key).await.unwrap();
    // The automatic lobby replay that comes with every connection.
    b.expect("lobby replay", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    let lobby = b
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since: 3, limit: None, before: None },
            "#lobby",
        )
        .await
        .unwrap();
    assert_eq!(history(&lobby), ids(4..=7));
    let side = b
        .until_history_end(&ClientMsg::Join { room: "#side".into(), since: Some(2) }, "#side")
        .await
        .unwrap();
    assert_eq!(history(&side), ids(3..=4));
    b.send(&ClientMsg::History { room: "#nope".into(), since: 0, limit: None, before: None })
        .await
        .unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, chatao_proto::ErrorCode::NotInRoom);
}

#[tokio::test]
async fn catch_up_beyond_the_memory_tail_reads_the_store_with_a_limit() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.history_on_join = 2;
    })
    .await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    say_all(&mut a, "#lobby", 1..=30).await;
    let got = a
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since: 10, limit: Some(5), before: None },
            "#lobby",
        )
        .await
        .unwrap();
    assert_eq!(history(&got), ids(11..=15), "the oldest 5 after id 10, from the store");
}

/// The real binary, killed with SIGKILL: every message a client saw relayed is in the history
/// after a restart.
#[tokio::test]
async fn kill_9_loses_no_relayed_message() {
    let dir = tempfile::tempdir().unwrap();
    let start = |port: u16| {
        Chataosrv::new(env!("CARGO_BIN_EXE_chataosrv"))
            .arg("--data-dir")
            .arg(dir.path())
            .port(port)
            .spawn()
    };
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    // Each start returns once the server listens.
    let connect =
        |nick: &'static str| async move { TestClient::connect(addr, nick).await.unwrap() };
    let mut server = start(port).await.drain_log();
    let mut a = connect("alice").await;
    let mut relayed = vec![];
    for i in 1..=15 {
        a.say(&format!("m{i}")).await.unwrap();
        let m = a.expect_text(&format!("m{i}")).await.unwrap();
        if let ServerMsg::Message { id, text, .. } = m {
            relayed.push((id, text));
        }
    }
    server.kill_9().await;
    drop(a);
    let _server = start(port).await.drain_log();
    let mut b = connect("bob").await;
    b.expect("lobby replay", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    let got = b
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since: 0, limit: None, before: None },
            "#lobby",
        )
        .await
        .unwrap();
    assert_eq!(history(&got), relayed);
}
