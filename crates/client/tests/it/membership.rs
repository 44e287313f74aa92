//! Membership that survives (issue 19), with the real binaries: a `chataosrv` process and the
//! real `chatao` in line mode (JSON). alice joins #a and #b and quits; bob says something in
//! each; alice started again is back in #a and #b with what was said meanwhile printed once;
//! she parts #b: started again, only #a; the server restarted on the same data directory:
//! still #a; `--rooms #c`: only #c (not even #lobby), text typed goes to #c, and the next ordinary start is back in
//! #a.
//!
//! Needs `cargo build -p chatao-server --bins` (the server binary is found next to chatao).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use chatao_proto::ClientMsg;
use chatao_testkit::{Chataosrv, ServerProcess, TestClient, bin, chatao, fixed_keypair, free_port};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// The longest any one step may take.
const LIMIT: Duration = Duration::from_secs(60);

async fn server(data: &Path, port: u16) -> ServerProcess {
    Chataosrv::new(bin("chataosrv"))
        .args(["--rate-per-sec", "0", "--data-dir"])
        .arg(data)
        .port(port)
        .spawn()
        .await
        .drain_log()
}

/// alice's `chatao --json`, her key in `keys`.
fn alice(
    keys: &Path,
    addr: std::net::SocketAddr,
    extra: &[&str],
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let mut child = chatao(env!("CARGO_BIN_EXE_chatao"), &[&host, &port], "alice", keys)
        .arg("--json")
        .args(extra)
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, out)
}

async fn next_event(out: &mut Lines<BufReader<ChildStdout>>) -> serde_json::Value {
    let line = tokio::time::timeout(LIMIT, out.next_line())
        .await
        .expect("no event in time")
        .unwrap()
        .expect("output ended");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Events until `done` says one is the last, that one included.
async fn until(
    out: &mut Lines<BufReader<ChildStdout>>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut seen = vec![];
    loop {
        let ev = next_event(out).await;
        let last = done(&ev);
        seen.push(ev);
        if last {
            return seen;
        }
    }
}

fn own_join(ev: &serde_json::Value, room: &str) -> bool {
    ev["type"] == "join" && ev["room"] == room && ev["nick"] == "alice"
}

/// The rooms alice's own `join` events name.
fn joined(events: &[serde_json::Value]) -> Vec<String> {
    let mut rooms: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "join" && e["nick"] == "alice")
        .map(|e| e["room"].as_str().unwrap().to_owned())
        .collect();
    rooms.sort();
    rooms
}

/// Says `text` in `room` as bob and waits for its echo.
async fn say(bob: &mut TestClient, room: &str, text: &str) {
    bob.send(&ClientMsg::Say { room: room.into(), text: text.into(), cid: None }).await.unwrap();
    bob.expect_text(text).await.unwrap();
}

/// Ends alice's input and returns everything else she printed; she must exit 0.
async fn finish(
    mut child: Child,
    mut out: Lines<BufReader<ChildStdout>>,
) -> Vec<serde_json::Value> {
    drop(child.stdin.take());
    let mut rest = vec![];
    while let Ok(Some(line)) = tokio::time::timeout(LIMIT, out.next_line()).await.unwrap() {
        rest.push(serde_json::from_str(&line).unwrap());
    }
    let status = tokio::time::timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "alice exited with {status}");
    rest
}

/// bob says `text` in `room`; returns alice's events until she has printed it and her own
/// joins of every room in `rooms` (in whatever order they come).
async fn mark(
    bob: &mut TestClient,
    out: &mut Lines<BufReader<ChildStdout>>,
    (room, text): (&str, &str),
    rooms: &[&str],
) -> Vec<serde_json::Value> {
    say(bob, room, text).await;
    let mut events = vec![];
    loop {
        events.push(next_event(out).await);
        let said = events.iter().any(|e| e["type"] == "message" && e["text"] == text);
        let all = rooms.iter().all(|r| events.iter().any(|e| own_join(e, r)));
        if said && all {
            return events;
        }
    }
}

#[tokio::test]
async fn rooms_stay_across_client_and_server_restarts_until_parted_and_rooms_fixes_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("alice"));
    let port = free_port();
    let mut srv = server(&data, port).await;
    let addr = srv.addr;
    let mut bob = TestClient::connect_with(addr, "bob", &fixed_keypair(2)).await.unwrap();
    bob.join("#a").await.unwrap();
    bob.join("#b").await.unwrap();

    // First run: joins #a and #b, then quits.
    let (mut child, mut out) = alice(&keys, addr, &[]);
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"/join #a\n/join #b\n").await.unwrap();
    until(&mut out, |e| own_join(e, "#b")).await;
    finish(child, out).await;

    // Said while she is away.
    say(&mut bob, "#a", "while away in a").await;
    say(&mut bob, "#b", "while away in b").await;

    // Second run: back in both with what was said, each once.
    let (mut child, mut out) = alice(&keys, addr, &[]);
    let mut events = mark(&mut bob, &mut out, ("#b", "live in b"), &["#a", "#b"]).await;
    assert_eq!(joined(&events), ["#a", "#b", "#lobby"], "{events:#?}");
    child.stdin.as_mut().unwrap().write_all(b"/part #b\n").await.unwrap();
    events.extend(until(&mut out, |e| e["type"] == "leave" && e["room"] == "#b").await);
    events.extend(finish(child, out).await);
    for text in ["while away in a", "while away in b"] {
        let n = events.iter().filter(|e| e["type"] == "message" && e["text"] == text).count();
        assert_eq!(n, 1, "{text:?} printed {n} times: {events:#?}");
    }

    // Third run: only #a (and the lobby).
    let (child, mut out) = alice(&keys, addr, &[]);
    let events = mark(&mut bob, &mut out, ("#a", "third run"), &["#a"]).await;
    assert_eq!(joined(&events), ["#a", "#lobby"], "{events:#?}");
    finish(child, out).await;

    // The server restarted on the same data directory: still #a.
    drop(bob);
    srv.kill_9().await;
    let srv = server(&data, port).await;
    let mut bob = TestClient::connect_with(srv.addr, "bob", &fixed_keypair(2)).await.unwrap();
    bob.join("#a").await.unwrap();
    bob.join("#c").await.unwrap();
    let (child, mut out) = alice(&keys, srv.addr, &[]);
    let events = mark(&mut bob, &mut out, ("#a", "after the restart"), &["#a"]).await;
    assert_eq!(joined(&events), ["#a", "#lobby"], "{events:#?}");
    finish(child, out).await;

    // A fixed set: only #c.
    let (mut child, mut out) = alice(&keys, srv.addr, &["--rooms", "#c"]);
    let events = mark(&mut bob, &mut out, ("#c", "fixed"), &["#c"]).await;
    assert_eq!(joined(&events), ["#c"], "{events:#?}");
    // Text without a room goes to the fixed set's first room (not the default room, which a
    // fixed-set session is not in: it was refused there with not_in_room).
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"to the first fixed room\n").await.unwrap();
    match bob.expect_text("to the first fixed room").await.unwrap() {
        chatao_proto::ServerMsg::Message { room, .. } => assert_eq!(room.as_str(), "#c"),
        other => panic!("{other:?}"),
    }
    finish(child, out).await;
    // ... which changed nothing remembered.
    let (child, mut out) = alice(&keys, srv.addr, &[]);
    let events = mark(&mut bob, &mut out, ("#a", "ordinary again"), &["#a"]).await;
    assert_eq!(joined(&events), ["#a", "#lobby"], "{events:#?}");
    finish(child, out).await;
}
