//! Durability with the real binary: a full disk (a real `EFBIG` from a file size limit, set
//! with `ulimit -f` in a shell that then runs `chataosrv`, `SIGXFSZ` ignored) is never silent
//! loss and never makes ids go backwards; a nickname registration and a ban acknowledged before a
//! `kill -9` hold after the restart (issue 15 items 1 and 2).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use chatao_proto::{ClientMsg, ErrorCode, RoomName, ServerMsg, decode_server, encode};
use chatao_server::store::Store;
use chatao_testkit::{Chataosrv, STEP, ServerProcess, TestClient, fixed_keypair, free_port, open};
use chatao_transport::keys::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// Starts `chataosrv` on `port` over `dir`, returned once it listens; with `blocks`, under
/// `ulimit -f blocks` (the shell's 512- or 1024-byte blocks: a few hundred KiB) with `SIGXFSZ`
/// ignored, so that a write past the limit fails with `EFBIG` as on a full disk. `extra`: more
/// arguments.
async fn start(dir: &Path, port: u16, blocks: Option<u32>, extra: &[String]) -> ServerProcess {
    let bin = env!("CARGO_BIN_EXE_chataosrv");
    let server = match blocks {
        Some(n) => Chataosrv::in_shell(&format!("ulimit -f {n} && trap '' XFSZ &&"), bin),
        None => Chataosrv::new(bin),
    };
    server
        .args(["--rate-per-sec", "0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .port(port)
        .spawn()
        .await
        .drain_log()
}

/// Connects `nick` with `keys` (the server is up: [`start`] returned).
async fn connect(addr: SocketAddr, nick: &str, keys: &Keypair) -> TestClient {
    TestClient::connect_with(addr, nick, keys).await.unwrap()
}

/// Says hello as `nick` with `keys` and returns the first answer (welcome or bye).
async fn hello(addr: SocketAddr, nick: &str, keys: &Keypair) -> ServerMsg {
    let mut conn = open(addr, keys).await.unwrap();
    conn.write_record(&encode(&ClientMsg::Hello { nick: nick.into() })).await.unwrap();
    let record = timeout(STEP, conn.read_record()).await.unwrap().unwrap().unwrap();
    decode_server(&record).unwrap()
}

/// Kills the server with SIGKILL and waits for it.
async fn kill_9(mut server: ServerProcess) {
    server.kill_9().await;
}

/// Every stored message of `#lobby`: id to cid.
fn stored(dir: &Path) -> HashMap<u64, Option<u64>> {
    let store = Store::open(dir).unwrap();
    let all = store.read(&RoomName::lobby(), 0, i64::MAX as u64, 1_000_000, true).unwrap();
    all.into_iter().map(|m| (m.id, m.cid)).collect()
}

/// The value of `name` in a scrape of the metrics endpoint at `addr`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let mut body = String::new();
    timeout(STEP, s.read_to_string(&mut body)).await.unwrap().unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in the scrape"))
}

/// The disk fills while alice talks to bob: each message is either stored and delivered to
/// both, or refused to alice with its cid (`unavailable`) and seen by nobody; a registration
/// and a ban the store cannot write are refused, not acknowledged; after a restart with room
/// to write, new ids come after every id anyone saw.
///
/// Fails without the fix: the old bus delivered a batch whose write failed (no refusal, bob
/// sees messages the store lacks, the restarted server reuses their ids), sent `welcome` for a
/// registration it could not store and the ban's notice for a ban it could not store.
#[tokio::test]
async fn a_full_disk_refuses_what_it_cannot_store_and_ids_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let op_keys = fixed_keypair(10);
    let extra = [
        "--op".to_owned(),
        op_keys.public().fingerprint().to_string(),
        "--metrics".to_owned(),
        metrics_addr.to_string(),
    ];
    let server = start(dir.path(), port, Some(512), &extra).await;
    let (alice_keys, bob_keys) = (fixed_keypair(1), fixed_keypair(2));
    let mut alice = connect(addr, "alice", &alice_keys).await;
    let mut bob = connect(addr, "bob", &bob_keys).await;
    let mut op = connect(addr, "oper", &op_keys).await;

    // An end-to-end room (the server never reads its bodies, so any base64 does).
    let create = ClientMsg::Create { room: "#sec".into(), e2e: true, open: false };
    alice.until_history_end(&create, "#sec").await.unwrap();

    // Alice sends until the disk has refused a good number of messages, in pipelined rounds.
    let pad = "x".repeat(1500);
    let (mut echoed, mut refused) = (HashMap::new(), BTreeSet::new());
    let mut cid = 1000u64;
    'rounds: for _ in 0..100 {
        let round: Vec<u64> = (0..20).map(|i| cid + i).collect();
        cid += 20;
        for c in &round {
            alice.say_with_cid("#lobby", &format!("m{c} {pad}"), *c).await.unwrap();
        }
        for c in &round {
            match alice.expect_cid(*c).await.unwrap().0 {
                ServerMsg::Message { id, .. } => {
                    echoed.insert(*c, id);
                }
                ServerMsg::Error { code: ErrorCode::Unavailable, .. } => {
                    refused.insert(*c);
                }
                other => panic!("cid {c}: {other:?}"),
            }
        }
        if refused.len() >= 40 {
            break 'rounds;
        }
    }
    assert!(refused.len() >= 40, "the disk never filled: {} echoed", echoed.len());
    assert!(!echoed.is_empty(), "nothing was stored before the disk filled");

    // Bob got exactly the echoed messages, in order, and nothing else from alice.
    let mut seen: Vec<(u64, Option<u64>)> = vec![];
    let want: BTreeSet<u64> = echoed.values().copied().collect();
    while seen.iter().filter(|(id, _)| want.contains(id)).count() < want.len() {
        match timeout(STEP, bob.recv()).await.unwrap().unwrap() {
            ServerMsg::Message { id, cid, history: false, .. } => seen.push((id, cid)),
            _ => continue,
        }
    }
    for (id, cid) in &seen {
        let cid = cid.unwrap();
        assert!(!refused.contains(&cid), "bob saw message {id} (cid {cid}), refused to alice");
        assert_eq!(echoed.get(&cid), Some(id), "bob saw message {id} (cid {cid}) alice did not");
    }

    // Sealed (E2E application) messages likewise: echoed only if stored, else refused.
    let (mut sealed_echoed, mut sealed_refused) = (HashMap::new(), None);
    let body = "QUFB".repeat(400);
    for c in 5000..5040u64 {
        let msg =
            ClientMsg::Sealed { cid: Some(c), room: "#sec".into(), epoch: 0, body: body.clone() };
        alice.send(&msg).await.unwrap();
        match alice.expect_cid(c).await.unwrap().0 {
            ServerMsg::Sealed { id, .. } => {
                sealed_echoed.insert(c, id);
            }
            ServerMsg::Error { code: ErrorCode::Unavailable, .. } => {
                sealed_refused = Some(c);
                break;
            }
            other => panic!("sealed cid {c}: {other:?}"),
        }
    }
    let sealed_refused = sealed_refused.expect("every sealed message was echoed on a full disk");

    // New registrations: each is welcomed only if stored. A failed transaction leaves room
    // behind its last good frame, so small writes may still fit for a while; the room is
    // finite, so one is refused within a few tries.
    let (mut registered, mut unregistered) = (vec![], None);
    for n in 0..20u8 {
        let nick = format!("carol{n}");
        match hello(addr, &nick, &fixed_keypair(50 + n)).await {
            ServerMsg::Welcome { .. } => registered.push((n, nick)),
            ServerMsg::Bye { code: Some(ErrorCode::Unavailable), .. } => {
                unregistered = Some(nick);
                break;
            }
            other => panic!("{nick}: {other:?}"),
        }
    }
    let unregistered = unregistered.expect("every registration was welcomed on a full disk");
    // A rename to a new name is a registration too: acknowledged only if stored (checked
    // after the restart either way).
    bob.send(&ClientMsg::Nick { nick: "robert".into() }).await.unwrap();
    let answer = |m: &ServerMsg| {
        matches!(m, ServerMsg::Error { .. })
            || matches!(m, ServerMsg::NickChange { new, .. } if new.as_str() == "robert")
    };
    let renamed = match bob.expect("the rename's answer", answer).await.unwrap() {
        ServerMsg::NickChange { .. } => true,
        ServerMsg::Error { code: ErrorCode::Unavailable, .. } => false,
        other => panic!("the rename: {other:?}"),
    };
    // Bans likewise: the notice only for a stored one; the operator told of one not stored,
    // and nobody else hears of it.
    let (mut bans, mut unsaved) = (vec![], false);
    for n in 0..20u8 {
        let target = fixed_keypair(80 + n).public().fingerprint();
        op.send(&ClientMsg::Ban { target: target.to_string(), duration_secs: None, reason: None })
            .await
            .unwrap();
        let is_answer =
            |m: &ServerMsg| matches!(m, ServerMsg::Error { .. } | ServerMsg::Moderation { .. });
        match op.expect("the ban's answer", is_answer).await.unwrap() {
            ServerMsg::Moderation { .. } => bans.push(n),
            ServerMsg::Error { code: ErrorCode::Unavailable, .. } => {
                unsaved = true;
                break;
            }
            other => panic!("ban {n}: {other:?}"),
        }
    }
    assert!(unsaved, "every ban was acknowledged on a full disk");
    // The failing disk shows in the metrics.
    assert!(metric(metrics_addr, "chatao_store_write_failures_total").await > 0);
    assert!(
        metric(metrics_addr, "chatao_messages_refused_unavailable_total").await
            >= refused.len() as u64
    );

    kill_9(server).await;
    drop((alice, bob, op));

    // Everything anyone saw is in the store; nothing refused is.
    let on_disk = stored(dir.path());
    for (cid, id) in &echoed {
        assert_eq!(on_disk.get(id), Some(&Some(*cid)), "echoed message {id} (cid {cid}) stored");
    }
    for (id, c) in &on_disk {
        assert!(!c.is_some_and(|c| refused.contains(&c)), "refused cid {c:?} stored as {id}");
    }
    let store = Store::open(dir.path()).unwrap();
    let sec = RoomName::parse("#sec").unwrap();
    let sealed_on_disk: HashMap<u64, Option<u64>> = store
        .read_sealed(&sec, 0, i64::MAX as u64, 1_000_000, true)
        .unwrap()
        .into_iter()
        .map(|m| (m.id, m.cid))
        .collect();
    drop(store);
    for (cid, id) in &sealed_echoed {
        assert_eq!(sealed_on_disk.get(id), Some(&Some(*cid)), "echoed sealed {id} stored");
    }
    assert!(
        !sealed_on_disk.values().any(|c| *c == Some(sealed_refused)),
        "the refused sealed message was stored"
    );
    let highest_seen = echoed.values().chain(seen.iter().map(|(id, _)| id)).max().copied();

    // With room to write again, the next message's id is past every id anyone saw.
    let _server = start(dir.path(), port, None, &[]).await;
    let mut alice = connect(addr, "alice", &alice_keys).await;
    alice.say_with_cid("#lobby", "after the restart", 1).await.unwrap();
    let (m, _) = alice.expect_cid(1).await.unwrap();
    let ServerMsg::Message { id, .. } = m else { panic!("not stored after the restart: {m:?}") };
    assert!(Some(id) > highest_seen, "id {id} after the restart, {highest_seen:?} seen before");
    // What was acknowledged held; what was refused was not kept.
    for (n, nick) in &registered {
        match hello(addr, nick, &fixed_keypair(120 + n)).await {
            ServerMsg::Bye { code: Some(ErrorCode::NickRegistered), .. } => {}
            other => panic!("{nick}, welcomed before the restart, went to another key: {other:?}"),
        }
    }
    match hello(addr, &unregistered, &fixed_keypair(150)).await {
        ServerMsg::Welcome { .. } => {}
        other => panic!("{unregistered}, refused before the restart, is not free: {other:?}"),
    }
    match (renamed, hello(addr, "robert", &fixed_keypair(151)).await) {
        (true, ServerMsg::Bye { code: Some(ErrorCode::NickRegistered), .. }) => {}
        (false, ServerMsg::Welcome { .. }) => {}
        (renamed, other) => panic!("robert (renamed before the restart: {renamed}): {other:?}"),
    }
    for n in &bans {
        match hello(addr, "banned", &fixed_keypair(80 + n)).await {
            ServerMsg::Bye { code: Some(ErrorCode::Banned), .. } => {}
            other => panic!("ban {n}, acknowledged before the restart, is gone: {other:?}"),
        }
    }
    // The refused messages sent again are new messages now, stored and echoed.
    let again = *refused.iter().next().unwrap();
    alice.say_with_cid("#lobby", "sent again", again).await.unwrap();
    let (m, _) = alice.expect_cid(again).await.unwrap();
    assert!(matches!(m, ServerMsg::Message { .. }), "{m:?}");
}

/// `welcome` for a new nickname and a ban's notice come only once they are on disk: a `kill -9`
/// right after them loses neither.
#[tokio::test]
async fn a_registration_and_a_ban_acknowledged_before_kill_9_hold_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let op_keys = fixed_keypair(10);
    let extra = ["--op".to_owned(), op_keys.public().fingerprint().to_string()];
    let server = start(dir.path(), port, None, &extra).await;
    let mut op = connect(addr, "oper", &op_keys).await;
    let banned = fixed_keypair(11);
    op.send(&ClientMsg::Ban {
        target: banned.public().fingerprint().to_string(),
        duration_secs: None,
        reason: None,
    })
    .await
    .unwrap();
    op.expect("the ban's notice", |m| matches!(m, ServerMsg::Moderation { .. })).await.unwrap();
    // Several first-time nicknames at once; the server dies as soon as the last is welcomed.
    let mut welcomed = vec![];
    let mut tasks = vec![];
    for n in 0..8u8 {
        tasks.push(tokio::spawn(async move {
            let nick = format!("first{n}");
            (n, nick.clone(), hello(addr, &nick, &fixed_keypair(20 + n)).await)
        }));
    }
    for t in tasks {
        let (n, nick, answer) = t.await.unwrap();
        assert!(matches!(answer, ServerMsg::Welcome { .. }), "{nick}: {answer:?}");
        welcomed.push((n, nick));
    }
    kill_9(server).await;
    drop(op);

    let _server = start(dir.path(), port, None, &extra).await;
    // Wait for the server to be up (the operator's own name is registered too).
    let _op = connect(addr, "oper", &op_keys).await;
    for (n, nick) in &welcomed {
        match hello(addr, nick, &fixed_keypair(40 + n)).await {
            ServerMsg::Bye { code: Some(ErrorCode::NickRegistered), .. } => {}
            other => panic!("{nick} taken by another key after the restart: {other:?}"),
        }
        match hello(addr, nick, &fixed_keypair(20 + n)).await {
            ServerMsg::Welcome { .. } => {}
            other => panic!("{nick} refused to its owner after the restart: {other:?}"),
        }
    }
    match hello(addr, "mallory", &banned).await {
        ServerMsg::Bye { code: Some(ErrorCode::Banned), .. } => {}
        other => panic!("the ban did not survive kill -9: {other:?}"),
    }
}

/// A nickname change to a new name is acknowledged (`nick_change` to the renamer) only once the
/// new name's registration is on disk: a `kill -9` right after the last acknowledgement loses
/// none of them.
#[tokio::test]
async fn renames_acknowledged_before_kill_9_hold_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = start(dir.path(), port, None, &[]).await;
    let mut users = vec![];
    for n in 0..8u8 {
        users.push(connect(addr, &format!("before{n}"), &fixed_keypair(60 + n)).await);
    }
    for (n, user) in users.iter_mut().enumerate() {
        user.send(&ClientMsg::Nick { nick: format!("after{n}") }).await.unwrap();
    }
    for (n, user) in users.iter_mut().enumerate() {
        let answer = |m: &ServerMsg| {
            matches!(m, ServerMsg::NickChange { old, .. } if old.as_str() == format!("before{n}"))
                || matches!(m, ServerMsg::Error { .. })
        };
        let got = user.expect("the rename's answer", answer).await.unwrap();
        assert!(matches!(got, ServerMsg::NickChange { .. }), "after{n}: {got:?}");
    }
    kill_9(server).await;
    drop(users);

    let _server = start(dir.path(), port, None, &[]).await;
    let _up = connect(addr, "watcher", &fixed_keypair(99)).await;
    for n in 0..8u8 {
        let nick = format!("after{n}");
        match hello(addr, &nick, &fixed_keypair(70 + n)).await {
            ServerMsg::Bye { code: Some(ErrorCode::NickRegistered), .. } => {}
            other => panic!("{nick} taken by another key after the restart: {other:?}"),
        }
        match hello(addr, &nick, &fixed_keypair(60 + n)).await {
            ServerMsg::Welcome { .. } => {}
            other => panic!("{nick} refused to its owner after the restart: {other:?}"),
        }
    }
}

/// Issue 19: a `part` whose forgetting the full disk refuses is told (`unavailable`, naming the
/// room): the session is out of the room, but the server may put it back at
/// its next connection. A part alone is a small write that may still fit after the disk refused
/// the large messages, so each is sent right behind a large one, until one is refused.
#[tokio::test]
async fn a_part_the_full_disk_cannot_store_is_told_to_the_one_who_parted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = start(dir.path(), port, Some(512), &[]).await;
    let mut alice = connect(addr, "alice", &fixed_keypair(1)).await;
    // Fill the disk: messages until one is refused, then smaller ones until one of those is,
    // down to a few bytes, so that what is left is too little even for a small write.
    let mut c = 0u64;
    for size in [1500, 300, 50, 1] {
        let pad = "x".repeat(size);
        let mut full = false;
        for _ in 0..2000 {
            c += 1;
            alice.say_with_cid("#lobby", &format!("m{c} {pad}"), c).await.unwrap();
            if let ServerMsg::Error { code: ErrorCode::Unavailable, .. } =
                alice.expect_cid(c).await.unwrap().0
            {
                full = true;
                break;
            }
        }
        assert!(full, "the disk never refused a message of {size} bytes");
    }
    let pad = "x".repeat(1500);
    let mut told = None;
    for n in 0..50u64 {
        let room = format!("#r{n}");
        let name = RoomName::parse(&room).unwrap();
        alice
            .until_history_end(&ClientMsg::Join { room: room.clone(), since: None }, &room)
            .await
            .unwrap();
        // A large message just before the part: queued together, they are likely written in
        // one transaction, which the full disk refuses whole. A message after it is answered
        // once the bus has handled the part's batch: the barrier for its outcome (the parting
        // session's own `leave` is sent to it at once).
        alice.say_with_cid("#lobby", &format!("filler {n} {pad}"), 10_000 + n).await.unwrap();
        alice.send(&ClientMsg::Part { room: room.clone(), reason: None }).await.unwrap();
        alice.say_with_cid("#lobby", "barrier", 20_000 + n).await.unwrap();
        let (mut refused, mut left) = (None, false);
        loop {
            match timeout(STEP, alice.recv()).await.unwrap().unwrap() {
                ServerMsg::Error { code: ErrorCode::Unavailable, room: Some(r), message, cid }
                    if r == name && cid.is_none() =>
                {
                    refused = Some(message)
                }
                ServerMsg::Leave { room: r, nick, .. } if r == name && nick.as_str() == "alice" => {
                    left = true;
                }
                m if chatao_testkit::cid_of(&m) == Some(20_000 + n) => break,
                _ => {}
            }
        }
        assert!(left, "{room}: no leave");
        if let Some(message) = refused {
            told = Some((room, message));
            break;
        }
    }
    let (room, message) = told.expect("every part was stored on a full disk");
    assert!(message.contains(&format!("could not store that you left {room}")), "{message}");
    assert!(message.contains(&format!("/part {room} again later")), "{message}");
    // Still a working session, out of the room.
    let who = ClientMsg::Who { room: room.clone(), after: None };
    alice.send(&who).await.unwrap();
    alice
        .expect("the room without alice", |m| {
            matches!(m, ServerMsg::Members { members, .. } if !members.iter().any(|m| m.nick.as_str() == "alice"))
        })
        .await
        .unwrap();
    kill_9(server).await;
}
