//! Client message ids and acknowledgements (docs/PROTOCOL.md 5.7), fakelag (7.1) and a `bye`
//! that is never cut (7.5), on a standalone server over real sockets: an echo carries its `cid`,
//! a repeated `cid` is answered with the first echo and delivered to nobody again (also after a
//! restart, and after a `kill -9` of the real binary), refusals carry the `cid`; a client over
//! the rate is slowed, never refused, until its backlog is 30 s deep; a slow reader's last
//! record is a whole `bye too_slow`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, MAX_CID, ServerMsg, decode_server};
use chatao_testkit::{
    Chataosrv, STEP, TestClient, TestServer, cid_of, fixed_keypair, free_port, open_small,
};

/// The texts of the room messages in `msgs` (live or history), in order.
fn texts(msgs: &[ServerMsg]) -> Vec<String> {
    TestClient::texts(msgs)
}

/// Reads everything up to the room message `text`, returning it all.
async fn until_text(c: &mut TestClient, text: &str) -> Vec<ServerMsg> {
    let mut out = vec![];
    loop {
        let m = c.recv().await.unwrap();
        let end = matches!(&m, ServerMsg::Message { text: t, .. } if t == text);
        out.push(m);
        if end {
            return out;
        }
    }
}

#[tokio::test]
async fn a_repeated_cid_gets_the_first_echo_and_reaches_nobody_twice() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let mut carol = TestClient::connect(server.addr, "carol").await.unwrap();

    alice.say_with_cid("#lobby", "hello", 77).await.unwrap();
    let (echo, first) = alice.expect_cid(77).await.unwrap();
    let ServerMsg::Message { id, cid: Some(77), text, .. } = &echo else {
        panic!("expected the echo with its cid, got {echo:?}")
    };
    assert_eq!(text, "hello");
    let id = *id;
    alice.say_with_cid("#lobby", "hello", 77).await.unwrap();
    let (_, again) = alice.expect_cid(77).await.unwrap();
    assert_eq!(again, first, "a repeat is answered with the first echo, byte for byte");
    // The text of a repeat does not matter: the id names the message.
    alice.say_with_cid("#lobby", "changed my mind", 77).await.unwrap();
    assert_eq!(alice.expect_cid(77).await.unwrap().1, first);

    // Another key's 77 is another message.
    carol.say_with_cid("#lobby", "mine", 77).await.unwrap();
    let (theirs, _) = carol.expect_cid(77).await.unwrap();
    assert!(
        matches!(&theirs, ServerMsg::Message { id: other, text, .. } if *other == id + 1 && text == "mine"),
        "{theirs:?}"
    );

    alice.say_with_cid("#lobby", "end", 78).await.unwrap();
    let seen = until_text(&mut bob, "end").await;
    assert_eq!(texts(&seen), ["hello", "mine", "end"], "bob got the first message once");
    let cids: Vec<_> = seen.iter().filter_map(cid_of).collect();
    assert_eq!(cids, [77, 77, 78], "everyone's copy carries the sender's cid");

    // Refusals carry the cid: not in the room, text not allowed, out-of-range ids.
    alice.say_with_cid("#elsewhere", "x", 79).await.unwrap();
    let (err, _) = alice.expect_cid(79).await.unwrap();
    assert!(matches!(err, ServerMsg::Error { code: ErrorCode::NotInRoom, .. }), "{err:?}");
    alice.say_with_cid("#lobby", "\u{200b}", 80).await.unwrap();
    let (err, _) = alice.expect_cid(80).await.unwrap();
    assert!(matches!(err, ServerMsg::Error { code: ErrorCode::InvalidText, .. }), "{err:?}");
    for bad in [0, MAX_CID + 1] {
        alice.say_with_cid("#lobby", "x", bad).await.unwrap();
        let (err, _) = alice.expect_cid(bad).await.unwrap();
        assert!(matches!(err, ServerMsg::Error { code: ErrorCode::Invalid, .. }), "{err:?}");
    }
    // A refused id was not remembered: it can still be used.
    alice.say_in("#elsewhere", "no cid").await.unwrap();
    let err = alice.expect("an error", |m| matches!(m, ServerMsg::Error { .. })).await.unwrap();
    assert_eq!(cid_of(&err), None, "a message without a cid is refused without one");
    alice.say_with_cid("#lobby", "now", 79).await.unwrap();
    let (ok, _) = alice.expect_cid(79).await.unwrap();
    assert!(matches!(ok, ServerMsg::Message { .. }), "{ok:?}");
}

#[tokio::test]
async fn a_repeated_private_message_reaches_its_recipient_once() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    alice.msg_with_cid("bob", "psst", 5).await.unwrap();
    let (echo, first) = alice.expect_cid(5).await.unwrap();
    assert!(matches!(&echo, ServerMsg::Private { text, .. } if text == "psst"), "{echo:?}");
    alice.msg_with_cid("bob", "psst", 5).await.unwrap();
    assert_eq!(alice.expect_cid(5).await.unwrap().1, first);
    alice.msg_with_cid("nobody", "psst", 6).await.unwrap();
    let (err, _) = alice.expect_cid(6).await.unwrap();
    assert!(matches!(err, ServerMsg::Error { code: ErrorCode::NoSuchNick, .. }), "{err:?}");
    alice.msg_with_cid("bob", "end", 7).await.unwrap();
    let mut got = vec![];
    loop {
        match bob.recv().await.unwrap() {
            ServerMsg::Private { text, cid, .. } => {
                got.push((text.clone(), cid));
                if text == "end" {
                    break;
                }
            }
            _ => continue,
        }
    }
    assert_eq!(got, [("psst".to_owned(), Some(5)), ("end".to_owned(), Some(7))]);
}

#[tokio::test]
async fn a_cid_accepted_before_a_restart_is_still_answered_with_its_echo() {
    let server = TestServer::start().await;
    let keys = fixed_keypair(1);
    let mut alice = TestClient::connect_with(server.addr, "alice", &keys).await.unwrap();
    alice.say_with_cid("#lobby", "before", 42).await.unwrap();
    let (_, first) = alice.expect_cid(42).await.unwrap();
    drop(alice);
    let server = server.restart(|_| {}).await;
    let mut alice = TestClient::connect_with(server.addr, "alice", &keys).await.unwrap();
    alice.say_with_cid("#lobby", "before", 42).await.unwrap();
    let (_, again) = alice.expect_cid(42).await.unwrap();
    assert_eq!(decode_server(&again).unwrap(), decode_server(&first).unwrap());
    assert_eq!(again, first, "the echo is encoded again from the store, identically");
    alice.say_with_cid("#lobby", "after", 43).await.unwrap();
    alice.expect_cid(43).await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    bob.expect("lobby replay", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    let got = bob
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since: 0, limit: None, before: None },
            "#lobby",
        )
        .await
        .unwrap();
    let history: Vec<_> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Message { text, cid, history: true, .. } => Some((text.clone(), *cid)),
            _ => None,
        })
        .collect();
    let expected = [("before".to_owned(), Some(42)), ("after".to_owned(), Some(43))];
    assert_eq!(history, expected, "once each, with their cids");
}

/// The real binary, killed with SIGKILL while a client sends 500 messages flat out: the client
/// sends again every message whose echo it did not get, and each of the 500 is in the history
/// exactly once, in the sender's order.
#[tokio::test]
async fn kill_9_then_resending_the_unacknowledged_gives_each_message_once_in_order() {
    const N: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let start = |port: u16| {
        Chataosrv::new(env!("CARGO_BIN_EXE_chataosrv"))
            .args(["--rate-per-sec", "0", "--data-dir"])
            .arg(dir.path())
            .port(port)
            .spawn()
    };
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let keys = fixed_keypair(3);
    // Each start returns once the server listens.
    let connect = |nick: &'static str, keys| async move {
        TestClient::connect_with(addr, nick, &keys).await.unwrap()
    };
    let cid = |i: u64| 1_000_000 + i;
    let text = |i: u64| format!("line {i}");
    let mut server = start(port).await.drain_log();
    let mut alice = connect("alice", keys.clone()).await;
    let mut acked = std::collections::HashSet::new();
    // Everything written at once (the server reads and relays as fast as it can), then the
    // echoes read; the server is killed after the 100th.
    for i in 1..=N {
        alice.say_with_cid("#lobby", &text(i), cid(i)).await.unwrap();
    }
    let mut killed = false;
    loop {
        let record = match tokio::time::timeout(STEP, alice.conn.read_record()).await {
            Ok(Ok(Some(record))) => record,
            Ok(Ok(None) | Err(_)) => break,
            Err(_) => panic!("no echo and no end within {STEP:?}"),
        };
        if let Some(c) = cid_of(&decode_server(&record).unwrap()) {
            acked.insert(c);
        }
        if acked.len() == 100 && !killed {
            server.kill_9().await;
            killed = true;
        }
        if acked.len() as u64 == N {
            break;
        }
    }
    assert!(killed, "the server was killed mid-stream");
    drop(alice);
    let _server = start(port).await.drain_log();
    let mut alice = connect("alice", keys).await;
    let unacked: Vec<u64> = (1..=N).filter(|i| !acked.contains(&cid(*i))).collect();
    for &i in &unacked {
        alice.say_with_cid("#lobby", &text(i), cid(i)).await.unwrap();
    }
    for &i in &unacked {
        let (echo, _) = alice.expect_cid(cid(i)).await.unwrap();
        assert!(matches!(&echo, ServerMsg::Message { text: t, .. } if *t == text(i)), "{echo:?}");
    }
    let mut bob = connect("bob", fixed_keypair(4)).await;
    bob.expect("lobby replay", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    let mut history = vec![];
    let mut since = 0;
    loop {
        let got = bob
            .until_history_end(
                &ClientMsg::History {
                    room: "#lobby".into(),
                    since,
                    limit: Some(500),
                    before: None,
                },
                "#lobby",
            )
            .await
            .unwrap();
        let page: Vec<(u64, String)> = got
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Message { id, text, history: true, .. } => Some((*id, text.clone())),
                _ => None,
            })
            .collect();
        let Some((last, _)) = page.last() else { break };
        since = *last;
        history.extend(page.into_iter().map(|(_, t)| t));
    }
    let expected: Vec<String> = (1..=N).map(text).collect();
    assert_eq!(history, expected, "each message once, in order ({} re-sent)", unacked.len());
}

#[tokio::test]
async fn messages_over_the_rate_are_delayed_in_order_never_refused() {
    // 50 a second after a burst of 20: 300 at once take about 6 s.
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 50).await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    for i in 1..=300u64 {
        alice.say_with_cid("#lobby", &format!("m{i}"), i).await.unwrap();
    }
    let mut got = vec![];
    while got.len() < 300 {
        let m = alice.recv().await.unwrap();
        match m {
            ServerMsg::Message { cid, text, .. } => got.push((cid, text)),
            ServerMsg::Error { .. } | ServerMsg::Bye { .. } => panic!("refused: {m:?}"),
            _ => {}
        }
    }
    let expected: Vec<_> = (1..=300u64).map(|i| (Some(i), format!("m{i}"))).collect();
    assert_eq!(got, expected, "all delivered, in order");
}

#[tokio::test]
async fn a_client_that_floods_on_ends_with_bye_rate_limited_as_its_last_record() {
    // Default limits: 5 a second, burst 20, so a backlog of 150 messages ends the session.
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    for i in 1..=1000u64 {
        alice.say_with_cid("#lobby", &format!("m{i}"), i).await.unwrap();
    }
    let all = alice.read_to_end().await.unwrap();
    let last = all.last().unwrap();
    let ServerMsg::Bye { code: Some(ErrorCode::RateLimited), reason } = last else {
        panic!("the last record must be bye rate_limited, got {last:?}")
    };
    assert!(reason.contains("messages were waiting"), "{reason}");
    assert!(
        !all.iter().any(|m| matches!(m, ServerMsg::Error { .. })),
        "nothing is refused for rate"
    );
    let echoed = texts(&all);
    assert!(echoed.len() < 1000 - 150, "the backlog was cut at its bound: {}", echoed.len());
    let expected: Vec<String> = (1..=echoed.len()).map(|i| format!("m{i}")).collect();
    assert_eq!(echoed, expected, "what was handled came in order");
}

#[tokio::test]
async fn a_slow_reader_gets_a_whole_bye_too_slow_as_its_last_record() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.mailbox_capacity = 16;
        // The write in flight when the mailbox overflows waits for the reader to come back;
        // long enough that a busy machine's flood does not run it out.
        c.write_timeout = Duration::from_secs(300);
    })
    .await;
    let conn = open_small(server.addr, &chatao_transport::Keypair::generate().unwrap(), 32 * 1024)
        .await
        .unwrap();
    let mut slow = TestClient::hello(conn, "slow").await.unwrap();
    slow.expect("lobby replay", |m| matches!(m, ServerMsg::HistoryEnd { .. })).await.unwrap();
    let mut flood = TestClient::connect(server.addr, "flood").await.unwrap();
    let text = "x".repeat(3900);
    // About 12 MB, well over what the socket buffers and the 16 queued entries hold.
    for round in 0..400u64 {
        for i in 0..8 {
            flood.say_with_cid("#lobby", &text, round * 8 + i + 1).await.unwrap();
        }
        flood.expect_cid(round * 8 + 8).await.unwrap();
    }
    let mut last = None;
    let mut count = 0;
    loop {
        match tokio::time::timeout(STEP, slow.conn.read_record()).await {
            Err(_) => panic!("the slow reader's connection neither ended nor spoke"),
            Ok(Err(e)) => panic!("transport error after {count} records (a cut frame?): {e}"),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(record))) => {
                last = Some(decode_server(&record).unwrap());
                count += 1;
            }
        }
    }
    assert!(
        matches!(last, Some(ServerMsg::Bye { code: Some(ErrorCode::TooSlow), .. })),
        "after {count} records the last was {last:?}"
    );
}

#[tokio::test]
async fn a_quit_behind_a_backlog_comes_after_every_echo_and_a_throttled_client_is_not_idle() {
    // 2 a second: ten messages take about 4 s, far past the idle timeout of 600 ms; the client
    // never answers the server's ping, yet it is not timed out while its messages wait.
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 2;
        c.limits.burst = 1;
        c.ping_after = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    for i in 1..=10u64 {
        alice.say_with_cid("#lobby", &format!("m{i}"), i).await.unwrap();
    }
    alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
    let all = alice.read_to_end().await.unwrap();
    let echoes: Vec<_> = all
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Message { cid, history: false, .. } => *cid,
            _ => None,
        })
        .collect();
    assert_eq!(echoes, (1..=10).collect::<Vec<u64>>(), "every echo, in order, before the bye");
    assert!(matches!(all.last(), Some(ServerMsg::Bye { code: None, .. })), "{:?}", all.last());
}
