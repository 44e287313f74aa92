//! Hardening (issue 15) over real sockets: a mute silences every way a key puts text in front
//! of others (topic, away reason, nickname, part and quit reasons, a new nickname at hello); moderation durations that do
//! not fit are refused and never vanish across a restart; the data directory's files are
//! private to the server's user; a peer cannot forge log lines, and failed handshakes do not
//! write a line each at the default level (the real binary, its log read).
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, ModAction, ServerMsg};
use chatao_server::clock::Clock;
use chatao_server::{Config, Runtime};
use chatao_testkit::{Chataosrv, TestClient, TestServer, fixed_keypair};

struct Ops {
    server: TestServer,
    op: TestClient,
    bob: TestClient,
    carol: TestClient,
}

fn op_config() -> impl FnOnce(&mut Config) {
    let op_fp = fixed_keypair(9).public().fingerprint();
    move |c: &mut Config| c.access.ops = vec![op_fp.to_string()]
}

fn with_clock(clock: &Clock) -> Runtime {
    Runtime { clock: clock.clone(), ..Runtime::default() }
}

async fn with_operator(clock: Clock) -> Ops {
    let server = TestServer::start_with_runtime(with_clock(&clock), op_config()).await;
    let op = TestClient::connect_with(server.addr, "op", &fixed_keypair(9)).await.unwrap();
    let bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let carol = TestClient::connect_with(server.addr, "carol", &fixed_keypair(3)).await.unwrap();
    Ops { server, op, bob, carol }
}

fn moderation(action: ModAction) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Moderation { action: a, .. } if *a == action)
}

/// Reads until the chat message `text`, returning everything read before it.
async fn until_text(c: &mut TestClient, text: &str) -> Vec<ServerMsg> {
    let mut seen = vec![];
    loop {
        let m = c.recv().await.unwrap();
        if matches!(&m, ServerMsg::Message { text: t, .. } if t == text) {
            return seen;
        }
        seen.push(m);
    }
}

#[tokio::test]
async fn a_muted_key_reaches_nobody_through_topic_away_nick_part_or_quit() {
    let Ops { server: _server, mut op, mut bob, mut carol, .. } =
        with_operator(Clock::default()).await;
    bob.join("#side").await.unwrap();
    carol.join("#side").await.unwrap();
    op.send(&ClientMsg::Mute { nick: "bob".into(), duration_secs: None }).await.unwrap();
    bob.expect("notice", moderation(ModAction::Mute)).await.unwrap();

    let refused = [
        ClientMsg::Topic {
            room: "#lobby".into(),
            text: Some("FREE CRYPTO at evil.example".into()),
        },
        ClientMsg::Away { reason: Some("FREE CRYPTO at evil.example".into()) },
        ClientMsg::Nick { nick: "FREE_CRYPTO".into() },
    ];
    for msg in &refused {
        bob.send(msg).await.unwrap();
        let (code, message) = bob.expect_error().await.unwrap();
        assert_eq!(code, ErrorCode::Muted, "{msg:?}: {message}");
    }
    // Being away (without a reason) is not text: it still works.
    bob.send(&ClientMsg::Away { reason: None }).await.unwrap();
    // The part itself goes ahead; only its reason is dropped.
    bob.send(&ClientMsg::Part { room: "#side".into(), reason: Some("FREE CRYPTO".into()) })
        .await
        .unwrap();
    let left = carol
        .expect(
            "bob parts",
            |m| matches!(m, ServerMsg::Leave { room, .. } if room.as_str() == "#side"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&left, ServerMsg::Leave { reason: LeaveReason::Part, message: None, .. }),
        "{left:?}"
    );
    op.say("barrier").await.unwrap();
    let before = until_text(&mut carol, "barrier").await;
    for m in &before {
        let leaked = match m {
            ServerMsg::Topic { text, .. } => text.is_some(),
            ServerMsg::Away { reason, .. } => reason.is_some(),
            ServerMsg::NickChange { .. } => true,
            _ => false,
        };
        assert!(!leaked, "a muted key's text reached carol: {m:?}");
    }
    carol.send(&ClientMsg::Whois { nick: "bob".into() }).await.unwrap();
    let whois = carol.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap();
    assert!(!format!("{whois:?}").contains("CRYPTO"), "{whois:?}");

    bob.send(&ClientMsg::Quit { reason: Some("FREE CRYPTO".into()) }).await.unwrap();
    let left = carol
        .expect(
            "bob quits",
            |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "bob"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&left, ServerMsg::Leave { reason: LeaveReason::Quit, message: None, .. }),
        "{left:?}"
    );
}

/// A muted key that reconnects under a name it never held is refused (its new name would be
/// announced to the room); under its own name it gets in, still muted.
#[tokio::test]
async fn a_muted_key_cannot_come_back_under_a_new_nickname() {
    let Ops { server, mut op, mut bob, mut carol } = with_operator(Clock::default()).await;
    op.send(&ClientMsg::Mute { nick: "bob".into(), duration_secs: None }).await.unwrap();
    bob.expect("notice", moderation(ModAction::Mute)).await.unwrap();
    bob.send(&ClientMsg::Quit { reason: None }).await.unwrap();
    drop(bob);
    let err = TestClient::connect_with(server.addr, "FREE_CRYPTO", &fixed_keypair(2)).await;
    let text = refused(err.err().expect("a new nickname for a muted key"), "muted");
    assert!(text.contains("new nickname"), "{text}");
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    bob.say("still muted?").await.unwrap();
    assert_eq!(bob.expect_error().await.unwrap().0, ErrorCode::Muted);
    // Another key is not affected by bob's mute.
    let dave = TestClient::connect_with(server.addr, "dave", &fixed_keypair(4)).await;
    assert!(dave.is_ok());
    op.say("barrier").await.unwrap();
    for m in until_text(&mut carol, "barrier").await {
        let leaked = matches!(&m, ServerMsg::Join { nick, .. } if nick.as_str() == "FREE_CRYPTO");
        assert!(!leaked, "{m:?}");
    }
}

fn refused(err: anyhow::Error, code: &str) -> String {
    let text = err.to_string();
    assert!(text.contains(code), "expected {code}: {text}");
    text
}

#[tokio::test]
async fn a_huge_ban_is_refused_and_the_longest_one_survives_a_restart() {
    let clock = Clock::default();
    let Ops { server, mut op, mut bob, mut carol } = with_operator(clock.clone()).await;
    // 16534391535w: once accepted, stored as a negative end and gone after a restart.
    for secs in [16_534_391_535 * 604_800, u64::MAX] {
        op.send(&ClientMsg::Ban { target: "bob".into(), duration_secs: Some(secs), reason: None })
            .await
            .unwrap();
        let (code, message) = op.expect_error().await.unwrap();
        assert_eq!(code, ErrorCode::Invalid, "{message}");
        assert!(message.contains("at most") && message.contains("for good"), "{message}");
        op.send(&ClientMsg::Mute { nick: "bob".into(), duration_secs: Some(secs) }).await.unwrap();
        assert_eq!(op.expect_error().await.unwrap().0, ErrorCode::Invalid);
    }
    bob.say("still here").await.unwrap();
    carol.expect_text("still here").await.unwrap();

    let longest = chatao_server::limits::MAX_MODERATION_DURATION.as_secs();
    op.send(&ClientMsg::Ban { target: "bob".into(), duration_secs: Some(longest), reason: None })
        .await
        .unwrap();
    let all = bob.read_to_end().await.unwrap();
    assert!(
        matches!(all.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Banned), .. })),
        "{all:?}"
    );
    // A ban row an older server wrote with a wrapped (negative) end: read back as for good.
    let carol_fp = fixed_keypair(3).public().fingerprint();
    let db = rusqlite::Connection::open(server.data_dir().join("chatao.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute(
        "INSERT INTO bans (fingerprint, until, reason, by) VALUES (?1, ?2, 'old', 'op')",
        rusqlite::params![carol_fp.as_str(), (16_534_391_535u64 * 604_800_000) as i64],
    )
    .unwrap();
    drop(db);
    drop((op, carol));

    let server = server.restart_with_runtime(with_clock(&clock), op_config()).await;
    let text = refused(
        TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.err().unwrap(),
        "Banned",
    );
    assert!(text.contains("36499d") || text.contains("36500d"), "the ban survived: {text}");
    let text = refused(
        TestClient::connect_with(server.addr, "carol", &fixed_keypair(3)).await.err().unwrap(),
        "Banned",
    );
    assert!(text.contains("permanently"), "the wrapped ban is for good: {text}");
}

#[cfg(unix)]
#[tokio::test]
async fn every_file_in_a_fresh_data_dir_is_private_to_the_server_user() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    alice.say("written to the log").await.unwrap();
    alice.expect_text("written to the log").await.unwrap();
    let mut files = vec![];
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        files.push((entry.file_name().into_string().unwrap(), mode));
    }
    files.sort();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["chatao.db", "chatao.db-shm", "chatao.db-wal"] {
        assert!(names.contains(&expected), "{files:?}");
    }
    assert!(files.iter().all(|(_, m)| *m & 0o077 == 0), "readable by others: {files:?}");
}

/// A log line a peer would like to plant: it starts like a real one, on a date never logged.
const FORGED: &str =
    "1999-01-01T00:00:00.000000Z  INFO chataosrv: session opened fp=SHA256:x nick=root";

/// A record whose `type` carries a newline and then [`FORGED`].
fn forging_record() -> bytes::Bytes {
    let mut record =
        serde_json::to_vec(&serde_json::json!({ "type": format!("x\n{FORGED}\n") })).unwrap();
    record.push(b'\n');
    record.into()
}

/// Reads records until the server closes the connection (within `STEP` each).
async fn drain(conn: &mut chatao_transport::Connection<tokio::net::TcpStream>) {
    while let Ok(Ok(Some(_))) = tokio::time::timeout(chatao_testkit::STEP, conn.read_record()).await
    {
    }
}

#[tokio::test]
async fn a_peer_cannot_forge_log_lines_and_failed_handshakes_stay_out_of_the_default_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FAILED_HANDSHAKES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Chataosrv::new(env!("CARGO_BIN_EXE_chataosrv"))
        .default_log()
        .arg("--data-dir")
        .arg(dir.path())
        .spawn()
        .await;
    let (addr, listening, mut log) = (server.addr, server.listening.clone(), server.take_log());

    // Instead of hello, and after it.
    let mut conn = chatao_testkit::open(addr, &fixed_keypair(5)).await.unwrap();
    conn.write_record(&forging_record()).await.unwrap();
    drain(&mut conn).await;
    drop(conn); // the server lingers until the peer closes, then logs the refusal
    let mut lines = vec![listening];
    lines.extend(until_line(&mut log, "session refused").await);
    let mut alice = TestClient::connect_with(addr, "alice", &fixed_keypair(6)).await.unwrap();
    alice.conn.write_record(&forging_record()).await.unwrap();
    drain(&mut alice.conn).await;
    lines.extend(until_line(&mut log, "undecodable message").await);
    // A burst of connections that fail their handshake.
    for _ in 0..FAILED_HANDSHAKES {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0x5a; 100]).await.unwrap();
        let mut sink = vec![];
        let _ = tokio::time::timeout(chatao_testkit::STEP, s.read_to_end(&mut sink)).await;
    }
    let marker = TestClient::connect_with(addr, "marker", &fixed_keypair(7)).await.unwrap();
    drop(marker);

    server.signal("-TERM");
    while let Some(line) =
        tokio::time::timeout(chatao_testkit::STEP, log.next_line()).await.unwrap().unwrap()
    {
        lines.push(line);
    }
    let all = lines.join("\n");
    assert!(lines.iter().any(|l| l.contains("nick=marker")), "{all}");
    assert!(!lines.iter().any(|l| l.starts_with("1999-01-01")), "a forged line:\n{all}");
    let escaped = lines.iter().filter(|l| l.contains("1999-01-01")).count();
    assert_eq!(escaped, 2, "both attempts are logged, escaped on their own line:\n{all}");
    assert!(
        lines.len() < FAILED_HANDSHAKES / 2,
        "{} lines: the failed handshakes wrote one each:\n{all}",
        lines.len()
    );
    assert!(timeout_wait(&mut server.child).await.success());
}

/// Reads log lines up to and including the first containing `needle`, returning them all.
async fn until_line<R: tokio::io::AsyncBufRead + Unpin>(
    log: &mut tokio::io::Lines<R>,
    needle: &str,
) -> Vec<String> {
    let mut lines = vec![];
    loop {
        let line = tokio::time::timeout(chatao_testkit::STEP, log.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?}: {lines:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the log ended before {needle:?}: {lines:#?}"));
        let found = line.contains(needle);
        lines.push(line);
        if found {
            return lines;
        }
    }
}

async fn timeout_wait(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await.unwrap().unwrap()
}
