//! Several nodes serving one chat: a real `nats-server` with JetStream on a free loopback port
//! and three real servers (`server::run` on 127.0.0.1:0, or the `chataosrv` binary where a
//! node must be killed), with real clients over real sockets.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, ServerMsg};
use chatao_server::cluster::ClusterConfig;
use chatao_testkit::{Chataosrv, NatsServer, ServerProcess, TestClient, TestServer, fixed_keypair};
use tokio::time::{Instant, sleep, timeout};

/// The presence TTL the tests run with: a dead node's users are gone within it.
const TTL: Duration = Duration::from_secs(2);

async fn node(nats: &NatsServer) -> TestServer {
    node_with(nats, Default::default(), |_| {}).await
}

async fn node_with(
    nats: &NatsServer,
    runtime: chatao_server::Runtime,
    adjust: impl FnOnce(&mut chatao_server::Config),
) -> TestServer {
    let url = nats.url();
    TestServer::start_with_runtime(runtime, move |c| {
        let mut cluster = ClusterConfig::new(url);
        cluster.presence_ttl = TTL;
        c.cluster = Some(cluster);
        c.limits.rate_per_sec = 0;
        adjust(c);
    })
    .await
}

fn is_join(nick: &'static str) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Join { nick: n, .. } if n.as_str() == nick)
}

/// Connects `nick` with key number `key`, retrying while the node's view of the cluster is
/// still settling is never needed: a refusal is a failure.
async fn connect(server: &TestServer, nick: &str, key: u8) -> TestClient {
    TestClient::connect_with(server.addr, nick, &fixed_keypair(key)).await.unwrap()
}

fn message_id(m: &ServerMsg) -> (u64, String) {
    match m {
        ServerMsg::Message { id, text, .. } => (*id, text.clone()),
        other => panic!("not a message: {other:?}"),
    }
}

#[tokio::test]
async fn users_on_different_nodes_chat_in_rooms_and_privately() {
    let nats = NatsServer::start().await;
    let (n1, n2, n3) = (node(&nats).await, node(&nats).await, node(&nats).await);
    assert_eq!(n1.fingerprint, n2.fingerprint, "every node presents the same key");
    let mut alice = connect(&n1, "alice", 1).await;
    let mut bob = connect(&n2, "bob", 2).await;
    alice.expect("bob's arrival, from another node", is_join("bob")).await.unwrap();
    let mut carol = connect(&n3, "carol", 3).await;
    alice.expect("carol's arrival", is_join("carol")).await.unwrap();
    bob.expect("carol's arrival", is_join("carol")).await.unwrap();

    // A message in the lobby reaches every node, with one id.
    alice.say("hello from node one").await.unwrap();
    let ids: Vec<(u64, String)> = [&mut alice, &mut bob, &mut carol]
        .into_iter()
        .map(|c| async move { message_id(&c.expect_text("hello from node one").await.unwrap()) })
        .collect::<futures::future::JoinAll<_>>()
        .await;
    assert!(ids.iter().all(|i| *i == ids[0]), "same id everywhere: {ids:?}");

    // Rooms: joins announced across nodes, members listed across nodes.
    alice.join("#rust").await.unwrap();
    bob.join("#rust").await.unwrap();
    alice.expect("bob joins #rust", is_join("bob")).await.unwrap();
    let members = timeout(Duration::from_secs(10), async {
        loop {
            carol.send(&ClientMsg::Who { room: "#rust".into(), after: None }).await.unwrap();
            let who = carol
                .expect(
                    "who",
                    |m| matches!(m, ServerMsg::Members { room, .. } if room.as_str() == "#rust"),
                )
                .await
                .unwrap();
            let ServerMsg::Members { members, .. } = who else { unreachable!() };
            if members.len() == 2 {
                return members;
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both members listed on a third node");
    let nicks: HashSet<&str> = members.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(nicks, HashSet::from(["alice", "bob"]));
    bob.say_in("#rust", "crabs").await.unwrap();
    alice.expect_text("crabs").await.unwrap();

    // Topic set on one node, seen on the others.
    bob.send(&ClientMsg::Topic { room: "#rust".into(), text: Some("ownership".into()) })
        .await
        .unwrap();
    alice
        .expect(
            "the topic",
            |m| matches!(m, ServerMsg::Topic { text: Some(t), .. } if t == "ownership"),
        )
        .await
        .unwrap();

    // Private messages to a user on another node; the sender's copy is its acknowledgement.
    carol
        .send(&ClientMsg::Msg { cid: None, to: "alice".into(), text: "psst".into() })
        .await
        .unwrap();
    alice
        .expect(
            "carol's private message",
            |m| matches!(m, ServerMsg::Private { text, .. } if text == "psst"),
        )
        .await
        .unwrap();
    carol
        .expect(
            "the acknowledgement",
            |m| matches!(m, ServerMsg::Private { text, .. } if text == "psst"),
        )
        .await
        .unwrap();
    carol
        .send(&ClientMsg::Msg { cid: None, to: "nobody".into(), text: "hello?".into() })
        .await
        .unwrap();
    assert_eq!(carol.expect_error().await.unwrap().0, ErrorCode::NoSuchNick);

    // list and whois see every node.
    carol.send(&ClientMsg::List { after: None }).await.unwrap();
    let list = carol.expect("list", |m| matches!(m, ServerMsg::RoomList { .. })).await.unwrap();
    let ServerMsg::RoomList { rooms, .. } = list else { unreachable!() };
    let rust = rooms.iter().find(|r| r.room.as_str() == "#rust").unwrap();
    assert_eq!((rust.members, rust.topic.as_deref()), (2, Some("ownership")));
    assert!(rooms.iter().any(|r| r.room.as_str() == "#lobby" && r.members == 3), "{rooms:?}");
    carol.send(&ClientMsg::Whois { nick: "bob".into() }).await.unwrap();
    let whois = carol.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap();
    let ServerMsg::Whois { rooms, fingerprint, .. } = whois else { unreachable!() };
    assert_eq!(fingerprint, fixed_keypair(2).public().fingerprint());
    assert!(rooms.iter().any(|r| r.as_str() == "#rust"));

    // End-to-end encrypted rooms are for standalone servers: refused, clearly.
    carol
        .send(&ClientMsg::Create { room: "#secret".into(), e2e: true, open: false })
        .await
        .unwrap();
    let (code, message) = carol.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::Other);
    assert!(message.contains("standalone"), "{message}");

    // A departure on one node is announced on the others.
    bob.send(&ClientMsg::Quit { reason: Some("later".into()) }).await.unwrap();
    alice
        .expect("bob leaves", |m| {
            matches!(m, ServerMsg::Leave { nick, reason: LeaveReason::Quit, .. } if nick.as_str() == "bob")
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn nicknames_and_bans_hold_across_nodes() {
    let nats = NatsServer::start().await;
    let op = fixed_keypair(9).public().fingerprint();
    let (n1, n2, n3) = (
        node_with(&nats, Default::default(), |c| c.access.ops = vec![op.to_string()]).await,
        node(&nats).await,
        node(&nats).await,
    );
    let mut alice = connect(&n1, "alice", 1).await;
    // Another key cannot take alice's nickname on another node, online or not.
    let Err(err) = TestClient::connect_with(n2.addr, "ALICE", &fixed_keypair(2)).await else {
        panic!("another key took alice's nickname");
    };
    assert!(err.to_string().contains("NickRegistered"), "{err}");

    // Two keys racing for a new nickname on two nodes: exactly one wins.
    let (k4, k5) = (fixed_keypair(4), fixed_keypair(5));
    let (a, b) = tokio::join!(
        TestClient::connect_with(n2.addr, "dave", &k4),
        TestClient::connect_with(n3.addr, "dave", &k5),
    );
    assert!(a.is_ok() != b.is_ok(), "one winner: {:?} / {:?}", a.as_ref().err(), b.as_ref().err());

    // The same key connecting on another node replaces its old session there.
    let _alice2 = connect(&n3, "alice", 1).await;
    let end = alice.read_to_end().await.unwrap();
    assert!(
        end.iter()
            .any(|m| matches!(m, ServerMsg::Bye { reason, .. } if reason.contains("replaced"))),
        "{end:?}"
    );

    // An operator on node one bans bob, who is on node two: he is disconnected, and refused
    // on node three too.
    let mut bob = connect(&n2, "bob", 6).await;
    let mut oper = connect(&n1, "oper", 9).await;
    oper.expect("bob is listed", is_join("oper")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        oper.send(&ClientMsg::Ban {
            target: "bob".into(),
            duration_secs: None,
            reason: Some("spam".into()),
        })
        .await
        .unwrap();
        match oper
            .expect("the ban or an error", |m| {
                matches!(m, ServerMsg::Moderation { .. } | ServerMsg::Error { .. })
            })
            .await
            .unwrap()
        {
            ServerMsg::Moderation { .. } => break,
            // bob's arrival may not have reached node one yet.
            other if Instant::now() < deadline => {
                let _ = other;
                sleep(Duration::from_millis(100)).await
            }
            other => panic!("{other:?}"),
        }
    }
    let end = bob.read_to_end().await.unwrap();
    assert!(
        end.iter().any(|m| matches!(m, ServerMsg::Bye { code: Some(ErrorCode::Banned), .. })),
        "{end:?}"
    );
    // A mute by the operator on node one holds on node three.
    let mut carol = connect(&n3, "carol", 7).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        oper.send(&ClientMsg::Mute { nick: "carol".into(), duration_secs: None }).await.unwrap();
        match oper
            .expect("the mute or an error", |m| {
                matches!(m, ServerMsg::Moderation { .. } | ServerMsg::Error { .. })
            })
            .await
            .unwrap()
        {
            ServerMsg::Moderation { .. } => break,
            _ if Instant::now() < deadline => sleep(Duration::from_millis(100)).await,
            other => panic!("{other:?}"),
        }
    }
    let muted = timeout(Duration::from_secs(10), async {
        loop {
            carol.say("can you hear me").await.unwrap();
            match carol
                .expect("echo or refusal", |m| {
                    matches!(m, ServerMsg::Message { .. } | ServerMsg::Error { .. })
                })
                .await
                .unwrap()
            {
                ServerMsg::Error { code: ErrorCode::Muted, .. } => return,
                _ => sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(muted.is_ok(), "node three enforces the mute");
    // A muted key keeps its name on a cluster node as on a standalone server: the rename is
    // refused before anything is claimed, so the name it asked for stays free.
    carol.send(&ClientMsg::Nick { nick: "caroline".into() }).await.unwrap();
    let refusal = carol
        .expect("the refusal", |m| {
            matches!(m, ServerMsg::Error { .. } | ServerMsg::NickChange { .. })
        })
        .await
        .unwrap();
    assert!(matches!(refusal, ServerMsg::Error { code: ErrorCode::Muted, .. }), "{refusal:?}");
    let caroline = connect(&n1, "caroline", 9).await;
    drop(caroline);

    let refused = timeout(Duration::from_secs(10), async {
        loop {
            match TestClient::connect_with(n3.addr, "bob", &fixed_keypair(6)).await {
                Err(e) if e.to_string().contains("Banned") => return e,
                _ => sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("node three refuses the banned key");
    assert!(refused.to_string().contains("spam"), "{refused}");
}

#[tokio::test]
async fn every_node_shows_the_same_order_and_ids_under_concurrent_senders() {
    let nats = NatsServer::start().await;
    let nodes = [node(&nats).await, node(&nats).await, node(&nats).await];
    const EACH: usize = 40;
    let mut watchers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        watchers.push(connect(n, &format!("watch{i}"), 10 + i as u8).await);
    }
    let mut senders = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        senders.push(connect(n, &format!("send{i}"), 20 + i as u8).await);
    }
    // Every watcher has seen every sender arrive before anyone speaks.
    for w in &mut watchers {
        for i in 0..3 {
            let nick = format!("send{i}");
            w.expect(
                "a sender",
                |m| matches!(m, ServerMsg::Join { nick: n, .. } if n.as_str() == nick),
            )
            .await
            .unwrap();
        }
    }
    let sending = senders.into_iter().enumerate().map(|(i, mut s)| async move {
        for k in 0..EACH {
            s.say(&format!("s{i}-{k}")).await.unwrap();
        }
        s
    });
    let _senders = futures::future::join_all(sending).await;
    let mut seen = Vec::new();
    for w in &mut watchers {
        let mut got = Vec::new();
        while got.len() < 3 * EACH {
            if let m @ ServerMsg::Message { .. } = w.recv().await.unwrap() {
                got.push(message_id(&m));
            }
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "nodes one and two agree");
    assert_eq!(seen[0], seen[2], "nodes one and three agree");
    assert!(seen[0].windows(2).all(|w| w[0].0 < w[1].0), "ids strictly increase");
    for i in 0..3 {
        let mine: Vec<&str> = seen[0]
            .iter()
            .filter(|(_, t)| t.starts_with(&format!("s{i}-")))
            .map(|(_, t)| t.as_str())
            .collect();
        let sent: Vec<String> = (0..EACH).map(|k| format!("s{i}-{k}")).collect();
        assert_eq!(mine, sent, "each sender's messages in the order sent, none lost");
    }
    // History served by another node replays the same ids.
    let mut late = connect(&nodes[2], "late", 30).await;
    late.until_history_end(&ClientMsg::Who { room: "#lobby".into(), after: None }, "#lobby")
        .await
        .unwrap();
    let since = seen[0][seen[0].len() - 31].0;
    let replay = late
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since, limit: Some(30), before: None },
            "#lobby",
        )
        .await
        .unwrap();
    let history: Vec<(u64, String)> = replay
        .iter()
        .filter(|m| matches!(m, ServerMsg::Message { history: true, .. }))
        .map(message_id)
        .collect();
    assert_eq!(history, seen[0][seen[0].len() - 30..]);
}

#[tokio::test]
async fn nats_stopped_and_restarted_during_traffic_loses_nothing_accepted() {
    let mut nats = NatsServer::start().await;
    let runtime = chatao_server::Runtime::default();
    let metrics = runtime.metrics.clone();
    let (n1, n2) = (node_with(&nats, runtime, |_| {}).await, node(&nats).await);
    let reachable = |v: u8| format!("chatao_cluster_reachable {v}");
    let mut alice = connect(&n1, "alice", 1).await;
    let mut bob = connect(&n2, "bob", 2).await;
    alice.expect("bob", is_join("bob")).await.unwrap();
    alice.say("before").await.unwrap();
    bob.expect_text("before").await.unwrap();

    nats.stop().await;
    alice
        .expect(
            "the cluster is unreachable",
            |m| matches!(m, ServerMsg::Notice { text } if text.contains("cannot reach")),
        )
        .await
        .unwrap();
    assert!(metrics.render().lines().any(|l| l == reachable(0)), "the metric says so");
    // While the node cannot reach the cluster, new messages are refused with a clear error.
    alice.say("during").await.unwrap();
    let (code, message) = alice.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::Unavailable, "{message}");

    nats.restart().await;
    alice
        .expect(
            "the cluster is back",
            |m| matches!(m, ServerMsg::Notice { text } if text.contains("reachable again")),
        )
        .await
        .unwrap();
    assert!(metrics.render().lines().any(|l| l == reachable(1)));
    // Traffic resumes: each message is either echoed (accepted, then delivered to bob) or
    // refused with an error; bob sees exactly the accepted ones, once each, in order.
    let mut accepted = Vec::new();
    for k in 0..20 {
        let text = format!("after-{k}");
        alice.say(&text).await.unwrap();
        match alice
            .expect("echo or refusal", |m| {
                matches!(m, ServerMsg::Message { .. } | ServerMsg::Error { .. })
            })
            .await
            .unwrap()
        {
            ServerMsg::Message { text: t, .. } => {
                assert_eq!(t, text);
                accepted.push(t);
            }
            ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::Unavailable),
            _ => unreachable!(),
        }
    }
    assert!(accepted.len() >= 10, "the node accepts messages again: {accepted:?}");
    let mut got = Vec::new();
    while got.len() < accepted.len() {
        if let ServerMsg::Message { text, .. } = bob.recv().await.unwrap()
            && text != "before"
        {
            got.push(text);
        }
    }
    assert_eq!(got, accepted);
    assert!(!got.iter().any(|t| t == "during"));
    // bob and alice still see each other (presence resynchronised after the outage).
    bob.send(&ClientMsg::Whois { nick: "alice".into() }).await.unwrap();
    bob.expect("alice is still listed", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap();
}

/// A `chataosrv` process in a cluster, on a free port, sharing `key_dir` with its peers.
struct Node {
    server: ServerProcess,
    addr: std::net::SocketAddr,
    _data: tempfile::TempDir,
}

async fn spawn_node(nats: &NatsServer, key_dir: &std::path::Path) -> Node {
    let data = tempfile::tempdir().unwrap();
    let server = Chataosrv::new(env!("CARGO_BIN_EXE_chataosrv"))
        .args(["--cluster", &nats.url(), "--rate-per-sec", "0", "--data-dir"])
        .arg(data.path())
        .arg("--key-dir")
        .arg(key_dir)
        .spawn()
        .await
        .drain_log();
    Node { addr: server.addr, server, _data: data }
}

#[tokio::test]
async fn a_killed_nodes_users_are_gone_within_the_ttl_and_move_without_loss() {
    let nats = NatsServer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let n1 = spawn_node(&nats, keys.path()).await;
    let n2 = spawn_node(&nats, keys.path()).await;
    let mut n3 = spawn_node(&nats, keys.path()).await;
    let mut alice = TestClient::connect_with(n1.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut carol = TestClient::connect_with(n3.addr, "carol", &fixed_keypair(3)).await.unwrap();
    alice.expect("carol", is_join("carol")).await.unwrap();
    let _dave = TestClient::connect_with(n3.addr, "dave", &fixed_keypair(4)).await.unwrap();
    alice.expect("dave", is_join("dave")).await.unwrap();
    alice.say("one").await.unwrap();
    let last = message_id(&carol.expect_text("one").await.unwrap()).0;

    n3.server.kill_9().await;
    let killed = Instant::now();
    alice.say("two, while carol is away").await.unwrap();
    alice.say("three, while carol is away").await.unwrap();

    // carol moves to node two at once (before anyone can know node three is dead), with the
    // same key, and catches up from her last id.
    let mut carol = TestClient::connect_with(n2.addr, "carol", &fixed_keypair(3)).await.unwrap();
    // (What the lobby replays on arrival; the catch-up below is what a client asks for.)
    carol
        .until_history_end(&ClientMsg::Who { room: "#lobby".into(), after: None }, "#lobby")
        .await
        .unwrap();
    let replay = carol
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since: last, limit: None, before: None },
            "#lobby",
        )
        .await
        .unwrap();
    let missed: Vec<String> = replay
        .iter()
        .filter(|m| matches!(m, ServerMsg::Message { history: true, .. }))
        .map(|m| message_id(m).1)
        .collect();
    assert_eq!(missed, ["two, while carol is away", "three, while carol is away"]);

    // dave, who did not move, is gone within the presence TTL (the binary runs with the
    // default); carol, who moved, is never announced gone, and is listed once.
    let mut seen = Vec::new();
    loop {
        let m = alice.recv().await.unwrap();
        let gone = matches!(&m, ServerMsg::Leave { nick, reason: LeaveReason::Lost, .. } if nick.as_str() == "dave");
        seen.push(m);
        if gone {
            break;
        }
    }
    // Expired by the presence TTL (the node's last heartbeat was at most one beat before the
    // kill): never sooner, however loaded the machine; how much later is only bounded by
    // `recv`'s wait, not asserted on the wall clock.
    let ttl = chatao_server::cluster::PRESENCE_TTL - chatao_server::cluster::HEARTBEAT;
    assert!(killed.elapsed() >= ttl, "dave gone after {:?}", killed.elapsed());
    alice.send(&ClientMsg::Who { room: "#lobby".into(), after: None }).await.unwrap();
    loop {
        let m = alice.recv().await.unwrap();
        let done = matches!(&m, ServerMsg::Members { .. });
        seen.push(m);
        if done {
            break;
        }
    }
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "carol")),
        "carol is not announced gone: {seen:?}"
    );
    let Some(ServerMsg::Members { members, .. }) = seen.last() else { unreachable!() };
    let nicks: Vec<&str> = members.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(nicks.iter().filter(|n| **n == "carol").count(), 1, "{nicks:?}");
    assert!(!nicks.contains(&"dave"), "{nicks:?}");
    alice.say("four").await.unwrap();
    carol.expect_text("four").await.unwrap();
}

#[tokio::test]
async fn the_allowlist_one_node_loads_applies_on_every_node() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow");
    std::fs::write(&allow, format!("{} alice\n", fixed_keypair(1).public().fingerprint())).unwrap();
    let _n1 =
        node_with(&nats, Default::default(), |c| c.access.allow_file = Some(allow.clone())).await;
    let n2 = node(&nats).await; // no allow file of its own
    let refused = timeout(Duration::from_secs(10), async {
        loop {
            match TestClient::connect_with(n2.addr, "mallory", &fixed_keypair(2)).await {
                Err(e) if e.to_string().contains("NotAllowed") => return e,
                _ => sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("node two enforces node one's allowlist");
    assert!(refused.to_string().contains("allowlist"), "{refused}");
    connect(&n2, "alice", 1).await;
}

/// A TCP proxy that can cut its connections and refuse new ones (a network partition).
struct Partition {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Partition {
    async fn start(target: std::net::SocketAddr) -> Partition {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = Partition { addr, up: Default::default(), links: Default::default() };
        p.up.store(true, Ordering::SeqCst);
        let (up, links) = (p.up.clone(), p.links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    continue;
                }
                links.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        p
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn mend(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_partitioned_node_does_not_stall_the_others_and_heals() {
    let nats = NatsServer::start().await;
    let nats_addr: std::net::SocketAddr = format!("127.0.0.1:{}", nats.port).parse().unwrap();
    let partition = Partition::start(nats_addr).await;
    let behind = format!("nats://{}", partition.addr);
    let n1 = TestServer::start_with(move |c| {
        let mut cluster = ClusterConfig::new(behind);
        cluster.presence_ttl = TTL;
        c.cluster = Some(cluster);
    })
    .await;
    let (n2, n3) = (node(&nats).await, node(&nats).await);
    let mut bob = connect(&n2, "bob", 2).await;
    let mut alice = connect(&n1, "alice", 1).await;
    bob.expect("alice", is_join("alice")).await.unwrap();
    let mut carol = connect(&n3, "carol", 3).await;
    bob.expect("carol", is_join("carol")).await.unwrap();

    partition.cut();
    alice
        .expect(
            "the partition",
            |m| matches!(m, ServerMsg::Notice { text } if text.contains("cannot reach")),
        )
        .await
        .unwrap();
    // The others go on at full speed, and drop the unreachable node's users after the TTL.
    for k in 0..20 {
        bob.say(&format!("meanwhile {k}")).await.unwrap();
    }
    for k in 0..20 {
        carol.expect_text(&format!("meanwhile {k}")).await.unwrap();
    }
    bob.expect("alice gone with her node", |m| {
        matches!(m, ServerMsg::Leave { nick, reason: LeaveReason::Lost, .. } if nick.as_str() == "alice")
    })
    .await
    .unwrap();

    partition.mend();
    alice
        .expect(
            "healed",
            |m| matches!(m, ServerMsg::Notice { text } if text.contains("reachable again")),
        )
        .await
        .unwrap();
    bob.expect("alice is back in view", is_join("alice")).await.unwrap();
    // alice's node catches up on the stream: she gets what was said during the partition.
    alice.expect_text("meanwhile 19").await.unwrap();
    alice.say("I am back").await.unwrap();
    carol.expect_text("I am back").await.unwrap();
}
