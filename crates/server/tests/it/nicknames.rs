//! Nicknames against squatting and impersonation, over real sockets (SECURITY.md, "Attacks
//! considered"): ASCII look-alikes are one nickname (`alice`, `aIice`, `a1ice`, `ALICE`), also
//! for registrations made before that rule; one key holds at most `MAX_NICKS_PER_KEY` names
//! and changes nickname at most once per `NICK_CHANGE_INTERVAL`; a name renamed away from is
//! free for others after `NICK_GRACE` (also across a restart). Durations run on the server's
//! clock, which the tests advance instead of waiting.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, ServerMsg};
use chatao_server::Runtime;
use chatao_server::clock::Clock;
use chatao_server::limits::{MAX_NICKS_PER_KEY, NICK_CHANGE_INTERVAL, NICK_GRACE};
use chatao_testkit::{TestClient, TestServer, fixed_keypair};

/// The refusal text of a connection that was refused with `code` (Debug spelling).
fn refused(result: anyhow::Result<TestClient>, code: &str) -> String {
    let text = result.err().expect("the connection should have been refused").to_string();
    assert!(text.contains(code), "expected {code}: {text}");
    text
}

/// Sends `/nick new` and waits for its `nick_change` (or fails on an error).
async fn rename(c: &mut TestClient, new: &str) {
    c.send(&ClientMsg::Nick { nick: new.into() }).await.unwrap();
    let m = c
        .expect("the nick change or an error", |m| {
            matches!(m, ServerMsg::NickChange { .. } | ServerMsg::Error { .. })
        })
        .await
        .unwrap();
    match m {
        ServerMsg::NickChange { new: n, .. } if n.as_str() == new => c.nick = new.into(),
        other => panic!("renaming to {new}: {other:?}"),
    }
}

/// Sends `/nick new` and returns the error it gets.
async fn rename_refused(c: &mut TestClient, new: &str) -> (ErrorCode, String) {
    c.send(&ClientMsg::Nick { nick: new.into() }).await.unwrap();
    c.expect_error().await.unwrap()
}

async fn server_with(clock: &Clock) -> TestServer {
    let runtime = Runtime { clock: clock.clone(), ..Runtime::default() };
    TestServer::start_with_runtime(runtime, |_| {}).await
}

#[tokio::test]
async fn look_alikes_of_a_nickname_are_that_nickname() {
    let (ka, kb) = (fixed_keypair(1), fixed_keypair(2));
    let clock = Clock::default();
    let server = server_with(&clock).await;
    let mut alice = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    for look_alike in ["aIice", "a1ice", "ALICE", "AL1CE", "alIce"] {
        let text =
            refused(TestClient::connect_with(server.addr, look_alike, &kb).await, "NickRegistered");
        assert!(text.contains("look-alike"), "{text}");
    }
    TestClient::connect_with(server.addr, "mallory", &kb).await.unwrap();
    refused(
        TestClient::connect_with(server.addr, "rnallory", &fixed_keypair(3)).await,
        "NickRegistered",
    );

    // Another key online cannot rename to one either.
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(4)).await.unwrap();
    assert_eq!(rename_refused(&mut bob, "a1ice").await.0, ErrorCode::NickRegistered);
    // The owner's other session: the name is held online by its first session.
    let mut alice2 = TestClient::connect_with(server.addr, "alice_2", &ka).await.unwrap();
    assert_eq!(rename_refused(&mut alice2, "A1ICE").await.0, ErrorCode::NickInUse);

    // The owner may use any spelling of its nickname; it is shown as typed.
    rename(&mut alice, "aIice").await;
    drop(alice);
    let mut again = TestClient::connect_with(server.addr, "A1ice", &ka).await.unwrap();
    let who = again
        .expect("the lobby's member list", |m| matches!(m, ServerMsg::Members { .. }))
        .await
        .unwrap();
    let ServerMsg::Members { members, .. } = who else { unreachable!() };
    assert!(members.iter().any(|m| m.nick.as_str() == "A1ice"), "{members:?}");
}

#[tokio::test]
async fn look_alikes_registered_before_the_rule_go_to_the_older_registration() {
    let (ka, kb) = (fixed_keypair(1), fixed_keypair(2));
    let (fa, fb) = (ka.public().fingerprint(), kb.public().fingerprint());
    let server = TestServer::start().await;
    TestClient::connect_with(server.addr, "carol", &ka).await.unwrap();
    // Rows as an older server wrote them: keyed by the lower-cased nickname, so `alice` (older,
    // key A) and `a1ice` (younger, key B) could both be registered.
    let db_file = server.data_dir().join(chatao_server::store::DB_FILE);
    let db = db_file.clone();
    let server = server
        .restart(move |_| {
            let db = rusqlite::Connection::open(db).unwrap();
            db.execute(
                "INSERT INTO nicks (folded, nick, fingerprint, registered) VALUES
                 ('a1ice', 'a1ice', ?2, 2000), ('alice', 'alice', ?1, 1000)",
                rusqlite::params![fa.as_str(), fb.as_str()],
            )
            .unwrap();
        })
        .await;
    refused(TestClient::connect_with(server.addr, "a1ice", &kb).await, "NickRegistered");
    refused(TestClient::connect_with(server.addr, "alice", &kb).await, "NickRegistered");
    let a = TestClient::connect_with(server.addr, "a1ice", &ka).await.unwrap();
    drop(a);
    // The younger row left the store: it does not come back after another restart.
    let (tx, rx) = std::sync::mpsc::channel();
    let _server = server
        .restart(move |_| {
            let db = rusqlite::Connection::open(db_file).unwrap();
            let owners: Vec<String> = db
                .prepare("SELECT fingerprint FROM nicks WHERE nick IN ('alice', 'a1ice')")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            tx.send(owners).unwrap();
        })
        .await;
    assert_eq!(rx.recv().unwrap(), vec![ka.public().fingerprint()]);
}

#[tokio::test]
async fn one_key_on_eight_connections_holds_at_most_the_limit() {
    let key = fixed_keypair(1);
    let clock = Clock::default();
    let server = server_with(&clock).await;
    let mut held = Vec::new();
    let mut refusals = Vec::new();
    for i in 0..8 {
        match TestClient::connect_with(server.addr, &format!("squat{i}"), &key).await {
            Ok(c) => held.push(c),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    assert_eq!(held.len(), MAX_NICKS_PER_KEY, "{refusals:?}");
    for text in &refusals {
        assert!(text.contains(&format!("{MAX_NICKS_PER_KEY} nicknames")), "{text}");
        assert!(text.contains("squat0, squat1, squat2, squat3"), "the key's names: {text}");
    }
    // Renaming away at the limit releases the name left at once (the user is told), so the
    // key still holds the limit, and another key may take the released name now.
    rename(&mut held[0], "moved0").await;
    let notice = held[0]
        .expect("the release notice", |m| matches!(m, ServerMsg::Notice { .. }))
        .await
        .unwrap();
    assert!(format!("{notice:?}").contains("squat0"), "{notice:?}");
    TestClient::connect_with(server.addr, "squat0", &fixed_keypair(2)).await.unwrap();
    refused(TestClient::connect_with(server.addr, "squat9", &key).await, "4 nicknames");

    // One change per interval per key, whichever session asks.
    let (code, text) = rename_refused(&mut held[1], "moved1").await;
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(
        text.contains("one nickname change per 10s") && text.contains("try again in"),
        "{text}"
    );
    clock.advance(NICK_CHANGE_INTERVAL);
    rename(&mut held[1], "moved1").await;
    TestClient::connect_with(server.addr, "squat1", &fixed_keypair(3)).await.unwrap();

    // At hello, a key at the limit with a reserved name: the oldest reserved goes at once.
    let other = fixed_keypair(4);
    let mut c = TestClient::connect_with(server.addr, "r0", &other).await.unwrap();
    for new in ["r1", "r2", "r3"] {
        clock.advance(NICK_CHANGE_INTERVAL);
        rename(&mut c, new).await;
    }
    let mut d = TestClient::connect_with(server.addr, "r4", &other).await.unwrap();
    let notice =
        d.expect("the release notice", |m| matches!(m, ServerMsg::Notice { .. })).await.unwrap();
    assert!(format!("{notice:?}").contains("r0"), "{notice:?}");
    TestClient::connect_with(server.addr, "r0", &fixed_keypair(5)).await.unwrap();
    refused(TestClient::connect_with(server.addr, "r1", &fixed_keypair(5)).await, "NickRegistered");
}

#[tokio::test]
async fn a_name_renamed_away_from_is_free_for_others_after_the_grace_also_across_a_restart() {
    let (ka, kb) = (fixed_keypair(1), fixed_keypair(2));
    let clock = Clock::default();
    let server = server_with(&clock).await;
    let mut alice = TestClient::connect_with(server.addr, "alice", &ka).await.unwrap();
    rename(&mut alice, "alice_away").await;
    // Reserved for its key: another key is refused, the owner takes it back.
    refused(TestClient::connect_with(server.addr, "alice", &kb).await, "NickRegistered");
    clock.advance(NICK_CHANGE_INTERVAL);
    rename(&mut alice, "alice").await;
    clock.advance(NICK_CHANGE_INTERVAL);
    rename(&mut alice, "alice_away").await;
    drop(alice);

    let runtime = Runtime { clock: clock.clone(), ..Runtime::default() };
    let server = server.restart_with_runtime(runtime, |_| {}).await;
    clock.advance(NICK_GRACE - Duration::from_secs(60));
    refused(TestClient::connect_with(server.addr, "alice", &kb).await, "NickRegistered");
    clock.advance(Duration::from_secs(61));
    TestClient::connect_with(server.addr, "alice", &kb).await.unwrap();
    // The name still current for its key (the one it last used) is not released.
    refused(TestClient::connect_with(server.addr, "alice_away", &kb).await, "NickRegistered");
}

#[cfg(feature = "cluster")]
#[tokio::test]
async fn in_a_cluster_look_alikes_are_one_nickname_also_under_bucket_keys_written_before() {
    let nats = chatao_testkit::NatsServer::start().await;
    let (ka, kb) = (fixed_keypair(1), fixed_keypair(2));
    let node = |url: String| {
        TestServer::start_with(move |c: &mut chatao_server::Config| {
            c.cluster = Some(chatao_server::cluster::ClusterConfig::new(url));
        })
    };
    // A first node makes the buckets (a session opens once it has joined the cluster).
    let first = node(nats.url()).await;
    TestClient::connect_with(first.addr, "carol", &fixed_keypair(9)).await.unwrap();
    first.stop().await.unwrap();
    // A registration as an older node wrote it: keyed by the hex of the lower-cased nickname.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let bucket = js.get_key_value("chatao_nicks").await.unwrap();
    let legacy: String = "alice".bytes().map(|b| format!("{b:02x}")).collect();
    bucket.put(legacy, ka.public().fingerprint().to_string().into()).await.unwrap();

    let (n1, n2) = (node(nats.url()).await, node(nats.url()).await);
    for (server, look_alike) in [(&n1, "alice"), (&n2, "a1ice"), (&n2, "ALICE")] {
        refused(TestClient::connect_with(server.addr, look_alike, &kb).await, "NickRegistered");
    }
    TestClient::connect_with(n2.addr, "aIice", &ka).await.unwrap();
    // A new registration on one node covers its look-alikes on the other.
    TestClient::connect_with(n1.addr, "bob", &kb).await.unwrap();
    let text = refused(
        TestClient::connect_with(n2.addr, "B0B", &fixed_keypair(3)).await,
        "NickRegistered",
    );
    assert!(text.contains("look-alike"), "{text}");
}
