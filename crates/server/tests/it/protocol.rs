//! docs/PROTOCOL.md's claims, checked against the real server: each test is named after the
//! section it pins, so that a change to the server or to the document that breaks one of them
//! fails here. Wire-level details the document defines beyond the other test files: text and
//! length errors, nickname refusals, oversized records, `history` with `limit` 0, the spelling
//! of `private.to`, flooding, the attempt burst, handshake payloads, the E2E error codes,
//! key-package order, forgotten E2E rooms, mutes in E2E rooms, and the version table.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use chatao_proto::{
    ClientMsg, ErrorCode, LeaveReason, RoomName, SealedKind, SealedWelcome, ServerMsg,
};
use chatao_testkit::{STEP, TestClient, TestServer, fixed_keypair, key_packages};
use chatao_transport::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const PROTOCOL: &str = include_str!("../../../../docs/PROTOCOL.md");

/// A server without a message rate, for tests that send many commands.
async fn unpaced() -> TestServer {
    TestServer::start_with(|c| c.limits.rate_per_sec = 0).await
}

async fn error_for(c: &mut TestClient, msg: ClientMsg) -> (ErrorCode, String) {
    c.send(&msg).await.unwrap();
    c.expect_error().await.unwrap()
}

fn say(room: &str, text: &str) -> ClientMsg {
    ClientMsg::Say { cid: None, room: room.into(), text: text.into() }
}

fn create(room: &str, e2e: bool, open: bool) -> ClientMsg {
    ClientMsg::Create { room: room.into(), e2e, open }
}

fn commit(room: &str, epoch: u64, body: &str, welcome: Option<SealedWelcome>) -> ClientMsg {
    ClientMsg::Commit {
        room: room.into(),
        epoch,
        body: body.into(),
        welcome,
        adds: vec![],
        removes: vec![],
    }
}

fn sealed(room: &str, body: &str) -> ClientMsg {
    ClientMsg::Sealed { cid: None, room: room.into(), epoch: 0, body: body.into() }
}

/// Waits for the `sealed` record with `body`; returns its id and kind.
async fn expect_sealed(c: &mut TestClient, body: &str) -> (u64, SealedKind) {
    match c
        .expect(body, |m| matches!(m, ServerMsg::Sealed { body: b, .. } if b == body))
        .await
        .unwrap()
    {
        ServerMsg::Sealed { id, kind, .. } => (id, kind),
        _ => unreachable!(),
    }
}

/// Whether `got` holds the `members` record of an E2E room.
fn e2e_members(got: &[ServerMsg]) -> bool {
    got.iter().any(|m| matches!(m, ServerMsg::Members { e2e: true, .. }))
}

// 3.1 ----------------------------------------------------------------------------------------

/// The client side of the handshake done by hand, with `payload` in message 3. Returns the
/// stream and the transport state.
async fn handshake(
    addr: std::net::SocketAddr,
    payload: &[u8],
) -> (TcpStream, snow::TransportState) {
    let keys = Keypair::generate().unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let preamble = *b"CHATAO\x00\x01";
    s.write_all(&preamble).await.unwrap();
    let mut theirs = [0u8; 8];
    s.read_exact(&mut theirs).await.unwrap();
    let prologue = [preamble, theirs].concat();
    let mut hs = snow::Builder::new(chatao_transport::NOISE_PARAMS.parse().unwrap())
        .local_private_key(keys.secret_bytes())
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = hs.write_message(&[], &mut buf).unwrap();
    s.write_all(&[&(n as u16).to_be_bytes()[..], &buf[..n]].concat()).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut msg2 = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg2).await.unwrap();
    hs.read_message(&msg2, &mut buf).unwrap();
    let n = hs.write_message(payload, &mut buf).unwrap();
    s.write_all(&[&(n as u16).to_be_bytes()[..], &buf[..n]].concat()).await.unwrap();
    (s, hs.into_transport_mode().unwrap())
}

/// The room an `error` names, reading up to it.
async fn error_room(c: &mut TestClient, msg: ClientMsg) -> (ErrorCode, Option<RoomName>) {
    c.send(&msg).await.unwrap();
    match c.expect("an error", |m| matches!(m, ServerMsg::Error { .. })).await.unwrap() {
        ServerMsg::Error { code, room, .. } => (code, room),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn section_5_5_an_error_names_the_room_of_the_request_it_refuses() {
    let server = unpaced().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let rust = Some(RoomName::parse("#rust").unwrap());
    let lobby = Some(RoomName::lobby());
    assert_eq!(
        error_room(&mut alice, say("#rust", "crabs")).await,
        (ErrorCode::NotInRoom, rust.clone())
    );
    assert_eq!(
        error_room(&mut alice, say("#lobby", "\u{1b}[2J")).await,
        (ErrorCode::InvalidText, lobby)
    );
    let part = ClientMsg::Part { room: "#rust".into(), reason: None };
    assert_eq!(error_room(&mut alice, part).await.1, rust.clone());
    let sealed = sealed("#rust", "");
    assert_eq!(error_room(&mut alice, sealed).await.1, rust);
    // A name that breaks the rules is not echoed; a request without a room names none.
    assert_eq!(error_room(&mut alice, say("no spaces", "x")).await, (ErrorCode::InvalidRoom, None));
    let nick = ClientMsg::Nick { nick: "not a nick".into() };
    assert_eq!(error_room(&mut alice, nick).await, (ErrorCode::InvalidNick, None));
    let msg = ClientMsg::Msg { to: "nobody".into(), text: "hi".into(), cid: None };
    assert_eq!(error_room(&mut alice, msg).await, (ErrorCode::NoSuchNick, None));
}

#[tokio::test]
async fn section_3_1_a_payload_in_message_3_ends_the_connection_without_a_word() {
    let server = TestServer::start().await;
    // The same handshake with the empty payload works: hello is answered with welcome.
    let (mut s, mut noise) = handshake(server.addr, b"").await;
    let mut frame = vec![0u8; 1024];
    let n = noise.write_message(b"{\"type\":\"hello\",\"nick\":\"alice\"}\n", &mut frame).unwrap();
    s.write_all(&[&(n as u16).to_be_bytes()[..], &frame[..n]].concat()).await.unwrap();
    let mut len = [0u8; 2];
    timeout(STEP, s.read_exact(&mut len)).await.unwrap().unwrap();
    let mut sealed = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut sealed).await.unwrap();
    let mut plain = vec![0u8; sealed.len()];
    let n = noise.read_message(&sealed, &mut plain).unwrap();
    assert!(plain[..n].starts_with(b"{\"type\":\"welcome\""));

    // With a payload in message 3 the server closes the TCP connection: no frame, no bye.
    let (mut s, _) = handshake(server.addr, b"not empty").await;
    let mut rest = Vec::new();
    let read = timeout(STEP, s.read_to_end(&mut rest)).await.expect("the server closes");
    assert!(rest.is_empty(), "nothing is sent: {} bytes ({read:?})", rest.len());
}

// 4.3, 7.2 -----------------------------------------------------------------------------------

#[tokio::test]
async fn section_7_2_a_record_over_16_kib_is_refused_with_too_long_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#lobby").await.unwrap();
    // 3000 control characters: a text within max_text_bytes, but each is escaped as \u0001,
    // so the record is 18 KB.
    let text = "\u{1}".repeat(3000);
    let record = chatao_proto::encode(&say("#lobby", &text));
    assert!(record.len() > 16384);
    a.conn.write_record(&record).await.unwrap();
    let (code, message) = a.expect_error().await.unwrap();
    assert_eq!(code, ErrorCode::TooLong, "{message}");
    // The session goes on.
    a.say("still here").await.unwrap();
    a.expect_text("still here").await.unwrap();
    // Exactly at the limit (16384 bytes, the newline included) the record is read as usual.
    let room = 16384 - chatao_proto::encode(&say("#lobby", "")).len();
    let text = format!("{}{}", "\u{1}".repeat(room / 6), "a".repeat(room % 6));
    let record = chatao_proto::encode(&say("#lobby", &text));
    assert_eq!(record.len(), 16384);
    a.conn.write_record(&record).await.unwrap();
    assert_eq!(a.expect_error().await.unwrap().0, ErrorCode::InvalidText);
}

#[tokio::test]
async fn section_5_4_a_first_record_over_16_kib_gets_bye_too_long() {
    let server = TestServer::start().await;
    let mut conn = chatao_testkit::open(server.addr, &Keypair::generate().unwrap()).await.unwrap();
    let hello =
        format!("{{\"type\":\"hello\",\"nick\":\"alice\",\"pad\":\"{}\"}}\n", "x".repeat(20_000));
    conn.write_record(&Bytes::from(hello)).await.unwrap();
    let record = timeout(STEP, conn.read_record()).await.unwrap().unwrap().unwrap();
    let bye = chatao_proto::decode_server(&record).unwrap();
    assert!(matches!(bye, ServerMsg::Bye { code: Some(ErrorCode::TooLong), .. }), "{bye:?}");
}

#[tokio::test]
async fn section_4_3_a_record_that_does_not_end_within_64_kib_gets_bye_too_long() {
    let server = TestServer::start().await;
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    bob.join("#lobby").await.unwrap();
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#lobby").await.unwrap();
    a.conn.write_record(&Bytes::from(vec![b'x'; 70_000])).await.unwrap();
    let rest = a.read_to_end().await.unwrap();
    assert!(
        matches!(rest.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::TooLong), .. })),
        "{rest:?}"
    );
    bob.expect("alice's leave", |m| {
        matches!(m, ServerMsg::Leave { nick, reason: LeaveReason::Dropped, .. } if nick.as_str() == "alice")
    })
    .await
    .unwrap();
}

// 5.3 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn section_5_3_empty_or_whitespace_only_text_is_invalid_text() {
    let server = unpaced().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    TestClient::connect(server.addr, "bob").await.unwrap();
    for text in ["", "   ", " \n \u{3000}"] {
        let (code, message) = error_for(&mut a, say("#lobby", text)).await;
        assert_eq!((code, message.as_str()), (ErrorCode::InvalidText, "text is empty"), "{text:?}");
        let msg = ClientMsg::Msg { cid: None, to: "alice".into(), text: text.into() };
        assert_eq!(error_for(&mut a, msg).await.0, ErrorCode::InvalidText);
    }
    let topic = ClientMsg::Topic { room: "#lobby".into(), text: Some(" ".into()) };
    assert_eq!(error_for(&mut a, topic).await.0, ErrorCode::InvalidText);
    let away = ClientMsg::Away { reason: Some("".into()) };
    assert_eq!(error_for(&mut a, away).await.0, ErrorCode::InvalidText);
}

#[tokio::test]
async fn section_5_3_a_topic_or_away_reason_over_300_bytes_is_too_long() {
    let server = unpaced().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let long = "x".repeat(301);
    let topic = ClientMsg::Topic { room: "#lobby".into(), text: Some(long.clone()) };
    assert_eq!(error_for(&mut a, topic).await.0, ErrorCode::TooLong);
    let away = ClientMsg::Away { reason: Some(long) };
    assert_eq!(error_for(&mut a, away).await.0, ErrorCode::TooLong);
    // 300 bytes are fine.
    a.send(&ClientMsg::Away { reason: Some("x".repeat(300)) }).await.unwrap();
    a.expect("away", |m| matches!(m, ServerMsg::Away { reason: Some(_), .. })).await.unwrap();
}

// 5.4 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn section_5_4_history_with_limit_0_sends_only_history_end() {
    let server = unpaced().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#lobby").await.unwrap();
    a.say("one").await.unwrap();
    a.expect_text("one").await.unwrap();
    let got = a
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since: 0, limit: Some(0), before: None },
            "#lobby",
        )
        .await
        .unwrap();
    assert!(matches!(got[..], [ServerMsg::HistoryEnd { count: 0, .. }]), "{got:?}");
    let got = a
        .until_history_end(
            &ClientMsg::History { room: "#lobby".into(), since: 0, limit: None, before: None },
            "#lobby",
        )
        .await
        .unwrap();
    assert_eq!(TestClient::texts(&got), ["one"]);
}

#[tokio::test]
async fn section_5_4_ban_of_a_malformed_fingerprint_is_invalid() {
    let op = fixed_keypair(1);
    let op_fp = op.public().fingerprint();
    let server = TestServer::start_with(|c| c.access.ops = vec![op_fp.to_string()]).await;
    let mut o = TestClient::connect_with(server.addr, "op", &op).await.unwrap();
    let ban = ClientMsg::Ban { target: "SHA256:nope".into(), duration_secs: None, reason: None };
    assert_eq!(error_for(&mut o, ban).await.0, ErrorCode::Invalid);
}

// 5.5 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn section_5_5_private_to_carries_the_recipients_own_spelling() {
    let server = TestServer::start().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect(server.addr, "Bob").await.unwrap();
    a.send(&ClientMsg::Msg { cid: None, to: "bOB".into(), text: "psst".into() }).await.unwrap();
    for c in [&mut a, &mut b] {
        let got = c.expect("private", |m| matches!(m, ServerMsg::Private { .. })).await.unwrap();
        assert!(matches!(got, ServerMsg::Private { to, .. } if to.as_str() == "Bob"));
    }
}

#[tokio::test]
async fn section_5_5_the_servers_version_is_in_the_documents_version_table() {
    let server = TestServer::start().await;
    let mut conn = chatao_testkit::open(server.addr, &Keypair::generate().unwrap()).await.unwrap();
    conn.write_record(&chatao_proto::encode(&ClientMsg::Hello { nick: "alice".into() }))
        .await
        .unwrap();
    let record = timeout(STEP, conn.read_record()).await.unwrap().unwrap().unwrap();
    let ServerMsg::Welcome { server: name, .. } = chatao_proto::decode_server(&record).unwrap()
    else {
        panic!("no welcome")
    };
    let row = format!("| `{name}` |");
    assert!(PROTOCOL.contains(&row), "docs/PROTOCOL.md 5.5 has no row {row}");
}

// 6.4 / 11.3 ---------------------------------------------------------------------------------

#[tokio::test]
async fn section_11_3_the_frobnicate_example_is_what_the_server_answers() {
    let server = TestServer::start().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.conn.write_record(&Bytes::from_static(b"{\"type\":\"frobnicate\"}\n")).await.unwrap();
    let rest = a.read_to_end().await.unwrap();
    let Some(ServerMsg::Bye { code: Some(ErrorCode::BadMessage), reason }) = rest.last() else {
        panic!("{rest:?}")
    };
    let example = PROTOCOL.lines().find(|l| l.contains("unknown variant `frobnicate`")).unwrap();
    let json = example.trim().trim_start_matches("←").trim();
    let documented: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(documented["reason"].as_str(), Some(reason.as_str()));
}

// 7.1 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn section_7_1_over_the_rate_is_read_slower_and_30_s_of_backlog_is_bye() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.burst = 1;
    })
    .await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    for _ in 0..60 {
        a.send(&ClientMsg::List { after: None }).await.unwrap();
    }
    let got = a.read_to_end().await.unwrap();
    let Some(ServerMsg::Bye { code: Some(ErrorCode::RateLimited), reason }) = got.last() else {
        panic!("{got:?}")
    };
    // The burst (1, and one of slack) at once, 30 waiting (30 s at 1/s), the 33rd is the end;
    // nothing refused with an error.
    assert!(reason.contains("messages were waiting"), "{reason}");
    assert!(!got.iter().any(|m| matches!(m, ServerMsg::Error { .. })), "{got:?}");
    let answered = got.iter().filter(|m| matches!(m, ServerMsg::RoomList { .. })).count();
    assert!((2..=3).contains(&answered), "{answered} answered before the end");
}

// 7.4 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn section_7_4_the_attempt_burst_is_64_whatever_the_rate() {
    let server = TestServer::start_with(|c| c.handshakes_per_minute = 1).await;
    for i in 0..64 {
        let c = TestClient::connect(server.addr, &format!("u{i}")).await;
        assert!(c.is_ok(), "attempt {i}: {:?}", c.err());
    }
    let err = TestClient::connect(server.addr, "late").await.err().unwrap();
    assert!(err.to_string().contains("RateLimited"), "{err}");
}

// 9.1 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn section_9_1_a_nickname_of_another_key_is_nick_registered_online_or_not() {
    let server = unpaced().await;
    let alice = fixed_keypair(1);
    let mut b = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    TestClient::connect_with(server.addr, "carol", &fixed_keypair(3)).await.unwrap(); // offline now
    let mut a = TestClient::connect_with(server.addr, "alice", &alice).await.unwrap();
    // bob is online, carol is not: the same answer.
    for (nick, owner) in [("BOB", "online"), ("carol", "offline")] {
        let (code, _) = error_for(&mut a, ClientMsg::Nick { nick: nick.into() }).await;
        assert_eq!(code, ErrorCode::NickRegistered, "owner {owner}");
    }
    // At hello, the same code (in bye).
    let err = TestClient::connect(server.addr, "bob").await.err().unwrap();
    assert!(err.to_string().contains("NickRegistered"), "{err}");
    // nick_in_use: only another session of one's own key holding it.
    let mut a2 = TestClient::connect_with(server.addr, "alice2", &alice).await.unwrap();
    let (code, _) = error_for(&mut a2, ClientMsg::Nick { nick: "Alice".into() }).await;
    assert_eq!(code, ErrorCode::NickInUse);
    b.send(&ClientMsg::Ping { token: 1 }).await.unwrap();
    b.expect("pong", |m| matches!(m, ServerMsg::Pong { .. })).await.unwrap();
}

// 13 -----------------------------------------------------------------------------------------

#[tokio::test]
async fn section_13_malformed_bodies_are_invalid_and_oversized_ones_too_long() {
    let server = unpaced().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.until_history_end(&create("#sec", true, false), "#sec").await.unwrap();
    a.send(&ClientMsg::Whois { nick: "alice".into() }).await.unwrap();
    let fp = match a.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap() {
        ServerMsg::Whois { fingerprint, .. } => fingerprint,
        _ => unreachable!(),
    };
    let long = "A".repeat(14_340);
    let welcome = |body: &str| Some(SealedWelcome { to: fp.to_string(), body: body.into() });
    let with_add = |mut m: ClientMsg| {
        if let ClientMsg::Commit { adds, .. } = &mut m {
            adds.push(fp.to_string());
        }
        m
    };
    let cases: Vec<(ClientMsg, ErrorCode)> = vec![
        (sealed("#sec", ""), ErrorCode::Invalid),
        (sealed("#sec", "not base64!"), ErrorCode::Invalid),
        (sealed("#sec", &long), ErrorCode::TooLong),
        (commit("#sec", 0, "", None), ErrorCode::Invalid),
        (commit("#sec", 0, &long, None), ErrorCode::TooLong),
        (with_add(commit("#sec", 0, "QUFBQQ==", welcome(""))), ErrorCode::Invalid),
        (commit("#sec", 0, "QUFBQQ==", welcome("QUFBQQ==")), ErrorCode::Invalid),
        (ClientMsg::KeyPackages { packages: vec!["".into()] }, ErrorCode::Invalid),
        (ClientMsg::KeyPackages { packages: vec![long.clone()] }, ErrorCode::TooLong),
    ];
    for (msg, want) in cases {
        let (code, message) = error_for(&mut a, msg).await;
        assert_eq!(code, want, "{message}");
    }
    // Nothing was counted: the commit count is still 0.
    a.send(&commit("#sec", 0, "QUFBQQ==", None)).await.unwrap();
    expect_sealed(&mut a, "QUFBQQ==").await;
}

#[tokio::test]
async fn section_13_2_key_packages_are_handed_out_oldest_first_and_the_last_is_kept() {
    let server = unpaced().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut b = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let packages = key_packages(2, 3);
    b.send(&ClientMsg::KeyPackages { packages: packages.clone() }).await.unwrap();
    b.send(&ClientMsg::Ping { token: 1 }).await.unwrap();
    b.expect("pong", |m| matches!(m, ServerMsg::Pong { .. })).await.unwrap();
    let mut got = vec![];
    for _ in 0..4 {
        a.send(&ClientMsg::FetchKeyPackage { nick: "bob".into(), room: None }).await.unwrap();
        match a.expect("key_package", |m| matches!(m, ServerMsg::KeyPackage { .. })).await.unwrap()
        {
            ServerMsg::KeyPackage { package, .. } => got.push(package),
            _ => unreachable!(),
        }
    }
    assert_eq!(got, [packages[0].as_str(), &packages[1], &packages[2], &packages[2]]);
    let fetch = ClientMsg::FetchKeyPackage { nick: "nobody".into(), room: None };
    assert_eq!(error_for(&mut a, fetch).await.0, ErrorCode::NoSuchNick);
    let fetch = ClientMsg::FetchKeyPackage { nick: "alice".into(), room: None };
    assert_eq!(error_for(&mut a, fetch).await.0, ErrorCode::NoKeyPackage);
    let fetch = ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("lobby".into()) };
    assert_eq!(error_for(&mut a, fetch).await.0, ErrorCode::InvalidRoom);
}

#[tokio::test]
async fn section_13_2_create_with_open_and_no_e2e_makes_a_plain_room() {
    let server = unpaced().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let got = a.until_history_end(&create("#plain", false, true), "#plain").await.unwrap();
    assert!(got.iter().any(|m| matches!(m, ServerMsg::Members { e2e: false, .. })), "{got:?}");
    a.say_in("#plain", "in clear").await.unwrap();
    a.expect_text("in clear").await.unwrap();
}

#[tokio::test]
async fn section_13_2_a_mute_refuses_sealed_but_not_commit() {
    let op = fixed_keypair(1);
    let op_fp = op.public().fingerprint();
    let server = TestServer::start_with(|c| {
        c.access.ops = vec![op_fp.to_string()];
        c.limits.rate_per_sec = 0;
    })
    .await;
    let mut o = TestClient::connect_with(server.addr, "op", &op).await.unwrap();
    let mut a = TestClient::connect_with(server.addr, "alice", &fixed_keypair(3)).await.unwrap();
    a.until_history_end(&create("#sec", true, false), "#sec").await.unwrap();
    o.send(&ClientMsg::Mute { nick: "alice".into(), duration_secs: None }).await.unwrap();
    a.expect("moderation", |m| matches!(m, ServerMsg::Moderation { .. })).await.unwrap();
    assert_eq!(error_for(&mut a, sealed("#sec", "QUFBQQ==")).await.0, ErrorCode::Muted);
    a.send(&commit("#sec", 0, "Q09NTUlU", None)).await.unwrap();
    assert_eq!(expect_sealed(&mut a, "Q09NTUlU").await.1, SealedKind::Commit);
    a.send(&ClientMsg::KeyPackages { packages: key_packages(3, 1) }).await.unwrap();
    a.send(&ClientMsg::FetchKeyPackage { nick: "alice".into(), room: None }).await.unwrap();
    a.expect("key_package", |m| matches!(m, ServerMsg::KeyPackage { .. })).await.unwrap();
}

/// Creates the E2E room `#again`, has one MLS message stored in it, and parts: its delivery
/// list is empty, so the room is forgotten. Returns the id the message got.
async fn make_and_forget(c: &mut TestClient) -> u64 {
    let got = c.until_history_end(&create("#again", true, false), "#again").await.unwrap();
    assert!(e2e_members(&got), "{got:?}");
    assert!(!got.iter().any(|m| matches!(m, ServerMsg::Topic { .. })), "no old topic: {got:?}");
    c.send(&sealed("#again", "QUFBQQ==")).await.unwrap();
    let (id, _) = expect_sealed(c, "QUFBQQ==").await;
    c.send(&ClientMsg::Topic { room: "#again".into(), text: Some("old".into()) }).await.unwrap();
    c.expect("topic", |m| matches!(m, ServerMsg::Topic { by: Some(_), .. })).await.unwrap();
    c.send(&ClientMsg::Part { room: "#again".into(), reason: None }).await.unwrap();
    c.expect("leave", |m| matches!(m, ServerMsg::Leave { .. })).await.unwrap();
    id
}

#[tokio::test]
async fn section_13_a_forgotten_e2e_room_can_be_created_again_its_ids_continuing() {
    let server = unpaced().await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    let first = make_and_forget(&mut a).await;
    // Created anew (before the change: room_exists), without the old topic, ids continuing.
    let second = make_and_forget(&mut a).await;
    assert!(second > first, "ids continue: {first} then {second}");
    // The same across a restart.
    drop(a);
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    let mut c = TestClient::connect(server.addr, "carol").await.unwrap();
    let got = c.until_history_end(&create("#again", true, false), "#again").await.unwrap();
    assert!(e2e_members(&got), "created anew after a restart: {got:?}");
    assert!(!got.iter().any(|m| matches!(m, ServerMsg::Topic { .. })), "no old topic: {got:?}");
    c.send(&sealed("#again", "Q0NDQw==")).await.unwrap();
    assert!(expect_sealed(&mut c, "Q0NDQw==").await.0 > second, "ids continue");
}
