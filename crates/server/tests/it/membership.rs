//! Membership that survives (issue 19), on a real server over loopback: the rooms a key joined
//! are listed in its next `welcome` (a new connection, and after the server restarts on the
//! same data directory); only a `part` forgets one; a key that parted the lobby is not put
//! back in it; a fixed-set session (`hello` with `fixed_rooms`) is put in no room and changes
//! nothing remembered. On a cluster (a real NATS) the set is the cluster's: a key's rooms
//! joined and parted on one node come back in its `welcome` on another.
// Without the `cluster` feature the cluster tests below are left out, and what only they use.
#![cfg_attr(not(feature = "cluster"), allow(unused_imports))]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use chatao_proto::{ClientMsg, HelloFlags, LeaveReason, ServerMsg, encode_hello};
use std::time::Duration;

#[cfg(feature = "cluster")]
use chatao_server::cluster::ClusterConfig;
use chatao_testkit::{NatsServer, TestClient, TestServer, fixed_keypair, open};

/// Connects as `nick` with key `k`; returns the client and the rooms its `welcome` listed.
async fn connect(
    addr: SocketAddr,
    k: u8,
    nick: &str,
    flags: HelloFlags,
) -> (TestClient, Vec<String>) {
    let mut conn = open(addr, &fixed_keypair(k)).await.unwrap();
    conn.write_record(&encode_hello(nick, flags)).await.unwrap();
    let mut c = TestClient { conn, nick: nick.into(), session: 0 };
    let ServerMsg::Welcome { session, rooms, .. } = c.recv().await.unwrap() else {
        panic!("no welcome");
    };
    c.session = session;
    (c, rooms.iter().map(|r| r.as_str().to_owned()).collect())
}

fn plain() -> HelloFlags {
    HelloFlags::default()
}

/// The first record after `welcome` is the answer to our own `join` of `room`: the server put
/// the session in no room itself.
async fn put_nowhere(c: &mut TestClient, room: &str) {
    c.send(&ClientMsg::Join { room: room.into(), since: None }).await.unwrap();
    let first = c.recv().await.unwrap();
    assert!(
        matches!(&first, ServerMsg::Members { room: r, .. } if r.as_str() == room),
        "the server put the session in a room itself: {first:?}"
    );
    c.expect("history end", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
}

/// Parts `room` and waits for our own `leave`, which comes once the part is stored.
async fn part(c: &mut TestClient, room: &str) {
    c.send(&ClientMsg::Part { room: room.into(), reason: None }).await.unwrap();
    c.expect("our leave", |m| {
        matches!(m, ServerMsg::Leave { room: r, nick, reason: LeaveReason::Part, .. }
            if r.as_str() == room && nick.as_str() == "alice")
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_rooms_a_key_joined_come_back_in_welcome_until_it_parts_them_across_a_restart() {
    let server = TestServer::start().await;
    let (mut alice, rooms) = connect(server.addr, 1, "alice", plain()).await;
    assert!(rooms.is_empty(), "a first connection is remembered nowhere: {rooms:?}");
    alice.expect("the lobby", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    alice.join("#a").await.unwrap();
    alice.join("#b").await.unwrap();
    // A connection that just ends (no part) forgets nothing.
    drop(alice);
    let (mut alice, rooms) = connect(server.addr, 1, "alice", plain()).await;
    assert_eq!(rooms, ["#a", "#b", "#lobby"]);
    // Another key has its own set.
    let (_bob, rooms) = connect(server.addr, 2, "bob", plain()).await;
    assert!(rooms.is_empty(), "{rooms:?}");
    // The list is for the client to join (with its own catch-up); then it parts one.
    alice.join("#b").await.unwrap();
    part(&mut alice, "#b").await;
    drop(alice);
    let server = server.restart(|_| {}).await;
    let (mut alice, rooms) = connect(server.addr, 1, "alice", plain()).await;
    assert_eq!(rooms, ["#a", "#lobby"], "after a part and a restart");
    // The lobby parted: not put back in it, the other rooms still listed.
    alice.expect("the lobby", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    part(&mut alice, "#lobby").await;
    alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
    let _ = alice.read_to_end().await;
    let (mut alice, rooms) = connect(server.addr, 1, "alice", plain()).await;
    assert_eq!(rooms, ["#a"]);
    put_nowhere(&mut alice, "#a").await;
}

#[tokio::test]
async fn a_fixed_set_session_is_put_nowhere_and_leaves_the_remembered_rooms_alone() {
    let server = TestServer::start().await;
    let (mut alice, _) = connect(server.addr, 3, "alice", plain()).await;
    alice.expect("the lobby", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    alice.join("#a").await.unwrap();
    drop(alice);
    let fixed = HelloFlags { fixed_rooms: true, ..Default::default() };
    let (mut bot, rooms) = connect(server.addr, 3, "alice", fixed).await;
    assert!(rooms.is_empty(), "a fixed-set session is told nothing: {rooms:?}");
    put_nowhere(&mut bot, "#c").await;
    bot.join("#a").await.unwrap();
    part(&mut bot, "#a").await;
    drop(bot);
    let (_alice, rooms) = connect(server.addr, 3, "alice", plain()).await;
    assert_eq!(rooms, ["#a", "#lobby"], "the fixed session's join and part changed nothing");
}

#[cfg(feature = "cluster")]
/// A cluster node on `nats`.
async fn node(nats: &NatsServer) -> TestServer {
    let url = nats.url();
    TestServer::start_with(move |c| {
        c.cluster = Some(ClusterConfig::new(url));
        c.limits.rate_per_sec = 0;
    })
    .await
}

#[cfg(feature = "cluster")]
/// Fails with each node keeping only its own sessions' sets: B's welcome would list nothing
/// (and A's, after the part on B, #b still).
#[tokio::test]
async fn on_a_cluster_the_rooms_joined_and_parted_on_one_node_come_back_on_another() {
    let nats = NatsServer::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let run = async {
        let (mut alice, rooms) = connect(a.addr, 4, "alice", plain()).await;
        assert!(rooms.is_empty(), "{rooms:?}");
        alice.expect("the lobby", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
        alice.join("#a").await.unwrap();
        alice.join("#b").await.unwrap();
        alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        let _ = alice.read_to_end().await;
        let (mut alice, rooms) = connect(b.addr, 4, "alice", plain()).await;
        assert_eq!(rooms, ["#a", "#b", "#lobby"], "node B lists what was joined on node A");
        alice.join("#b").await.unwrap();
        part(&mut alice, "#b").await;
        alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        let _ = alice.read_to_end().await;
        let (_alice, rooms) = connect(a.addr, 4, "alice", plain()).await;
        assert_eq!(rooms, ["#a", "#lobby"], "node A knows of the part made on node B");
    };
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("timed out");
}

#[cfg(feature = "cluster")]
/// Fails with a room operator's kick forgetting the room only in each node's own store: the
/// kicked key's set in the cluster's bucket still names the room, so its next `welcome` (on
/// either node) would list it for ever.
#[tokio::test]
async fn on_a_cluster_a_room_kick_forgets_the_room_in_the_kicked_keys_set() {
    let nats = NatsServer::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let run = async {
        let (mut alice, _) = connect(a.addr, 4, "alice", plain()).await;
        alice.join("#den").await.unwrap();
        // The creator's claim travels on the stream: wait until node A has applied it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            alice.send(&ClientMsg::Who { room: "#den".into(), after: None }).await.unwrap();
            let listed = alice.expect("members", |m| matches!(m, ServerMsg::Members { .. }));
            if let ServerMsg::Members { members, .. } = listed.await.unwrap()
                && members.iter().any(|m| m.nick.as_str() == "alice" && m.op)
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "alice never became #den's operator");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut bob, _) = connect(b.addr, 5, "bob", plain()).await;
        bob.join("#den").await.unwrap();
        bob.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        let _ = bob.read_to_end().await;
        let (mut bob, rooms) = connect(b.addr, 5, "bob", plain()).await;
        assert!(rooms.contains(&"#den".to_owned()), "bob's join was remembered: {rooms:?}");
        bob.join("#den").await.unwrap();
        alice
            .expect(
                "bob on A",
                |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "bob"),
            )
            .await
            .unwrap();
        let kick = ClientMsg::RoomKick { room: "#den".into(), nick: "bob".into(), reason: None };
        alice.send(&kick).await.unwrap();
        bob.expect("kicked", |m| {
            matches!(m, ServerMsg::Leave { nick, reason: LeaveReason::Kicked, .. } if nick.as_str() == "bob")
        })
        .await
        .unwrap();
        bob.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        let _ = bob.read_to_end().await;
        // Node A writes the bucket once it has applied the kick: wait for it, connection by
        // connection (each one a fresh read of the bucket; at most 40, within the per-address
        // handshake rate).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (mut bob, rooms) = connect(b.addr, 5, "bob", plain()).await;
            bob.send(&ClientMsg::Quit { reason: None }).await.unwrap();
            let _ = bob.read_to_end().await;
            if !rooms.contains(&"#den".to_owned()) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node B still lists #den: {rooms:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("timed out");
}

#[cfg(feature = "cluster")]
/// A key whose rooms were remembered before the cluster's bucket existed (only in the node's
/// replica, as the first cluster release kept them) has no entry there: the node it connects
/// to gives it its replica's set, which becomes the cluster's, so another node lists it too.
/// Fails without the adoption: node A's welcome lists nothing once the entry is gone.
#[tokio::test]
async fn on_a_cluster_rooms_remembered_before_the_bucket_are_taken_from_the_nodes_replica() {
    let nats = NatsServer::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let run = async {
        let (mut alice, _) = connect(a.addr, 6, "alice", plain()).await;
        alice.expect("the lobby", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
        alice.join("#old").await.unwrap();
        alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        let _ = alice.read_to_end().await;
        // As before the bucket: no entry for the key.
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let bucket = js.get_key_value("chatao_memberships").await.unwrap();
        let fp = fixed_keypair(6).public().fingerprint();
        let key: String = fp.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(bucket.get(&key).await.unwrap().is_some(), "the join wrote the bucket");
        bucket.delete(&key).await.unwrap();
        assert!(bucket.get(&key).await.unwrap().is_none());

        let (mut alice, rooms) = connect(a.addr, 6, "alice", plain()).await;
        assert_eq!(rooms, ["#lobby", "#old"], "node A's replica");
        alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        let _ = alice.read_to_end().await;
        let (_alice, rooms) = connect(b.addr, 6, "alice", plain()).await;
        assert_eq!(rooms, ["#lobby", "#old"], "now the cluster's: node B lists it");
    };
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("timed out");
}
