//! An operator's `bots #room hide|show` (issue 22) is stored, with the real binary: told to
//! the operator only once it is on disk, it holds after a `kill -9` and a restart on the same
//! data directory, for a room in use and for one nobody is in (loaded for the setting and
//! forgotten again), and `show` holds the same way. A room the operator left alone still lists
//! its bots (the control). On a cluster (a real NATS), the setting made on one node holds on
//! another, and after that node restarts.
// Without the `cluster` feature the cluster tests below are left out, and what only they use.
#![cfg_attr(not(feature = "cluster"), allow(unused_imports))]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use chatao_proto::{ClientMsg, HelloFlags, ServerMsg, encode_hello};
#[cfg(feature = "cluster")]
use chatao_server::cluster::ClusterConfig;
use chatao_testkit::{
    Chataosrv, NatsServer, ServerProcess, TestClient, TestServer, fixed_keypair, free_port, open,
};

/// `chataosrv` over `data` on `port`, `op` its operator, returned once it listens.
async fn chataosrv(data: &Path, port: u16, op: &str) -> ServerProcess {
    Chataosrv::new(env!("CARGO_BIN_EXE_chataosrv"))
        .args(["--rate-per-sec", "0", "--op", op, "--data-dir"])
        .arg(data)
        .port(port)
        .spawn()
        .await
        .drain_log()
}

/// The operator, connected, past its arrival in the lobby (whose member list is not a `who`).
async fn operator(addr: SocketAddr, keys: &chatao_transport::keys::Keypair) -> TestClient {
    let mut op = TestClient::connect_with(addr, "oper", keys).await.unwrap();
    op.expect("the lobby's history end", |m| matches!(m, ServerMsg::HistoryEnd { .. }))
        .await
        .unwrap();
    op
}

/// A quiet session (`hello` with `quiet`: a bot) as `nick`, welcomed, in `rooms` too.
async fn bot(addr: SocketAddr, nick: &str, rooms: &[&str]) -> TestClient {
    let mut conn = open(addr, &fixed_keypair(30)).await.unwrap();
    conn.write_record(&encode_hello(nick, HelloFlags { quiet: true, ..Default::default() }))
        .await
        .unwrap();
    let mut c = TestClient { conn, nick: nick.into(), session: 0 };
    c.expect("welcome", |m| matches!(m, ServerMsg::Welcome { .. })).await.unwrap();
    for room in rooms {
        c.join(room).await.unwrap();
    }
    c
}

/// The operator asks `bots room hide|show` and waits for the acknowledgement.
async fn set(op: &mut TestClient, room: &str, hide: bool) {
    op.send(&ClientMsg::Bots { room: room.into(), hide }).await.unwrap();
    let word = if hide { "hidden" } else { "again" };
    let told = op
        .expect("the acknowledgement", |m| {
            matches!(m, ServerMsg::Notice { .. } | ServerMsg::Error { .. })
        })
        .await
        .unwrap();
    assert!(
        matches!(&told, ServerMsg::Notice { text } if text.contains(word) && text.contains(room)),
        "{told:?}"
    );
}

/// `who room` as `c` sees it: (nickname, marked bot).
async fn who(c: &mut TestClient, room: &str) -> Vec<(String, bool)> {
    c.send(&ClientMsg::Who { room: room.into(), after: None }).await.unwrap();
    match c.expect("members", |m| matches!(m, ServerMsg::Members { .. })).await.unwrap() {
        ServerMsg::Members { members, .. } => {
            members.into_iter().map(|m| (m.nick.to_string(), m.bot)).collect()
        }
        _ => unreachable!(),
    }
}

/// Fails without the store's `bots_hidden` (the setting kept in memory only): after the
/// restart `who` lists the bot again in both hidden rooms.
#[tokio::test]
async fn an_operators_bots_setting_survives_kill_9_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let op_key = fixed_keypair(10);
    let op_fp = op_key.public().fingerprint();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let mut server = chataosrv(&data, port, &op_fp).await;
    let mut op = operator(addr, &op_key).await;
    let _ci = bot(addr, "ci", &["#ci"]).await;
    assert!(who(&mut op, "#lobby").await.contains(&("ci".into(), true)), "listed, as a bot");
    set(&mut op, "#lobby", true).await;
    // Nobody is in #quiet-room: the server loads it for the setting and forgets it again.
    set(&mut op, "#quiet-room", true).await;
    assert_eq!(who(&mut op, "#lobby").await, [("oper".to_owned(), false)]);
    // Killed right after the acknowledgements: they came only once the setting was stored.
    server.kill_9().await;

    let mut server = chataosrv(&data, port, &op_fp).await;
    let mut op = operator(addr, &op_key).await;
    let _ci = bot(addr, "ci", &["#ci", "#quiet-room"]).await;
    op.join("#quiet-room").await.unwrap();
    op.join("#ci").await.unwrap();
    assert_eq!(who(&mut op, "#lobby").await, [("oper".to_owned(), false)], "still hidden");
    assert_eq!(who(&mut op, "#quiet-room").await, [("oper".to_owned(), false)]);
    let ci = who(&mut op, "#ci").await;
    assert!(ci.contains(&("ci".into(), true)), "a room left alone lists its bots: {ci:?}");
    // A joiner's member list leaves them out too.
    let mut late = TestClient::connect(addr, "late").await.unwrap();
    let joined = late.join("#quiet-room").await.unwrap();
    let listed = joined.iter().find_map(|m| match m {
        ServerMsg::Members { members, .. } => Some(members.clone()),
        _ => None,
    });
    let listed = listed.expect("a member list on joining");
    assert!(listed.iter().all(|m| !m.bot), "{listed:?}");

    // Shown again, and that holds as well.
    set(&mut op, "#lobby", false).await;
    server.kill_9().await;
    let _server = chataosrv(&data, port, &op_fp).await;
    let mut op = operator(addr, &op_key).await;
    let _ci = bot(addr, "ci", &[]).await;
    assert!(who(&mut op, "#lobby").await.contains(&("ci".into(), true)), "shown again");
}

#[cfg(feature = "cluster")]
/// A cluster node's settings: on `nats`, `op` its operator.
fn clustered(nats: &NatsServer, op: &str) -> impl FnOnce(&mut chatao_server::Config) + use<> {
    let (url, op) = (nats.url(), op.to_owned());
    move |c| {
        c.cluster = Some(ClusterConfig::new(url));
        c.limits.rate_per_sec = 0;
        c.access.ops = vec![op];
    }
}

#[cfg(feature = "cluster")]
async fn node(nats: &NatsServer, op: &str) -> TestServer {
    TestServer::start_with(clustered(nats, op)).await
}

#[cfg(feature = "cluster")]
/// Waits until `c` has `text` in a room (the stream applied up to it on `c`'s node).
async fn until_said(c: &mut TestClient, text: &str) {
    c.expect(text, |m| matches!(m, ServerMsg::Message { text: t, .. } if t == text)).await.unwrap();
}

#[cfg(feature = "cluster")]
/// Fails without the setting on the room's stream (kept on the operator's node only): node B
/// lists its bot. Each node stores what it applied: B restarted still hides it.
#[tokio::test]
async fn on_a_cluster_the_setting_made_on_one_node_holds_on_another_and_after_its_restart() {
    let nats = NatsServer::start().await;
    let op_key = fixed_keypair(10);
    let op_fp = op_key.public().fingerprint();
    let a = node(&nats, &op_fp).await;
    let b = node(&nats, &op_fp).await;
    let mut op = operator(a.addr, &op_key).await;
    let _ci = bot(b.addr, "ci", &[]).await;
    let mut watcher =
        TestClient::connect_with(b.addr, "watcher", &fixed_keypair(31)).await.unwrap();
    set(&mut op, "#lobby", true).await;
    // The probe follows the setting on the room's stream: once B has it, B applied both.
    op.say("probe").await.unwrap();
    until_said(&mut watcher, "probe").await;
    let listed = who(&mut watcher, "#lobby").await;
    assert!(listed.iter().all(|(_, bot)| !bot), "hidden on the other node: {listed:?}");
    assert!(listed.contains(&("watcher".into(), false)), "{listed:?}");

    let b = b.restart(clustered(&nats, &op_fp)).await;
    let _ci = bot(b.addr, "ci", &[]).await;
    let mut watcher =
        TestClient::connect_with(b.addr, "watcher", &fixed_keypair(31)).await.unwrap();
    op.say("probe 2").await.unwrap();
    until_said(&mut watcher, "probe 2").await;
    let listed = who(&mut watcher, "#lobby").await;
    assert!(listed.iter().all(|(_, bot)| !bot), "still hidden after B's restart: {listed:?}");
    drop(a);
}
