//! Issue 15 item 17: joins into a large room cost the server a bounded amount each, not one
//! record per member. N idle members join `#lobby` one after another over real sockets; every
//! record every client receives is counted (records and bytes), and the total must grow
//! linearly: a room of 100 members or more is not told of a join until the newcomer speaks,
//! nor of the part of someone it was never told of, and a joiner gets the recent speakers and
//! the count instead of the whole list (the rest by `who` pages).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatao_proto::{ClientMsg, ServerMsg, decode_server, encode};
use chatao_testkit::{TestClient, TestServer};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Members in the test room (`CHATAO_LARGE_ROOM_N` changes it, for measurements). The
/// quadratic design delivers N²/2 join records (500,000 for 1,000).
fn members_n() -> usize {
    std::env::var("CHATAO_LARGE_ROOM_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

/// Connections opened at once.
const CONNECTING: usize = 8;

/// Everything one client received, and the way to make it send.
struct Member {
    nick: String,
    out: mpsc::Sender<ClientMsg>,
    seen: Arc<Mutex<Vec<ServerMsg>>>,
}

/// Counts shared by every client's reader.
#[derive(Default)]
struct Counts {
    records: AtomicU64,
    bytes: AtomicU64,
    changed: Notify,
}

/// Hands `c`'s connection to a task that counts and keeps what it receives and sends what it
/// is given, until `stop`.
fn spawn_reader(c: TestClient, counts: Arc<Counts>, stop: CancellationToken) -> Member {
    let (out, mut rx) = mpsc::channel::<ClientMsg>(16);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let nick = c.nick.clone();
    let mut conn = c.conn;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = conn.read_record() => {
                    let Ok(Some(record)) = r else { break };
                    counts.records.fetch_add(1, Ordering::Relaxed);
                    counts.bytes.fetch_add(record.len() as u64, Ordering::Relaxed);
                    if let Ok(m) = decode_server(&record) {
                        // Idle, not gone: a member answers the server's keepalive.
                        if let ServerMsg::Ping { token } = m {
                            let pong = encode(&ClientMsg::Pong { token });
                            if conn.write_record(&pong).await.is_err() {
                                break;
                            }
                        }
                        kept.lock().unwrap().push(m);
                    }
                    counts.changed.notify_waiters();
                }
                Some(msg) = rx.recv() => {
                    if conn.write_record(&encode(&msg)).await.is_err() {
                        break;
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
    });
    Member { nick, out, seen }
}

/// Waits (at most 60 s) until `done` holds, re-checking whenever a client receives something.
async fn until(counts: &Counts, what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let changed = counts.changed.notified();
        if done() {
            return;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() && !done() {
            panic!("timed out waiting for {what}");
        }
    }
}

fn saw(m: &Member, pred: impl Fn(&ServerMsg) -> bool) -> bool {
    m.seen.lock().unwrap().iter().any(pred)
}

fn said(text: &'static str) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Message { text: t, .. } if t == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_into_a_large_room_cost_linear_records_and_bytes() {
    #[allow(non_snake_case)]
    let N = members_n();
    assert!(N >= 300, "the room must be well past the large-room size");
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.max_connections = 4 * N;
        c.max_connections_per_ip = 4 * N;
        c.handshakes_per_minute = 1_000_000;
        c.handshake_burst = 1_000_000;
    })
    .await;
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let mut members = Vec::with_capacity(N);
    let started = std::time::Instant::now();
    // Connected a few at a time (the handshakes are the slow part, and the hub takes the joins
    // one after another anyway), in order of their numbers.
    let addr = server.addr;
    for batch in (0..N).collect::<Vec<_>>().chunks(CONNECTING) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in batch {
            tasks.spawn(async move { (i, TestClient::connect(addr, &format!("idle{i}")).await) });
        }
        let mut done: Vec<(usize, TestClient)> =
            tasks.join_all().await.into_iter().map(|(i, c)| (i, c.unwrap())).collect();
        done.sort_by_key(|(i, _)| *i);
        for (_, c) in done {
            members.push(spawn_reader(c, counts.clone(), stop.clone()));
        }
    }
    let connected = started.elapsed();
    // Every join is complete once the last member has its lobby's history_end; a message said
    // after that reaches everyone after everything queued before it.
    members[0]
        .out
        .send(ClientMsg::Say { cid: None, room: "#lobby".into(), text: "marker".into() })
        .await
        .unwrap();
    until(&counts, "the marker everywhere", || members.iter().all(|m| saw(m, said("marker"))))
        .await;
    let (records, bytes) =
        (counts.records.load(Ordering::Relaxed), counts.bytes.load(Ordering::Relaxed));
    eprintln!(
        "{N} joins into #lobby: {records} records, {bytes} bytes delivered, {} records and \
         {} bytes per join; connected in {connected:?}",
        records / N as u64,
        bytes / N as u64
    );
    // The first 100 joins are into a small room (each announced to all, each joiner given
    // the whole list: about 5,050 records and 1 MB); every join after costs a few records.
    let (n, small) = (N as u64, 100 * 101 / 2);
    assert!(records < small + 10 * n, "records grow linearly: {records} for {N} joins");
    assert!(bytes < 1_500_000 + 1024 * n, "bytes grow linearly: {bytes} for {N} joins");

    // A late member (hidden: the room was large when they joined) speaks: everyone is told of
    // their join, before their message.
    let late = N - 1;
    let late_nick = members[late].nick.clone();
    members[late]
        .out
        .send(ClientMsg::Say { cid: None, room: "#lobby".into(), text: "hello all".into() })
        .await
        .unwrap();
    until(&counts, "the late member's message", || {
        members.iter().all(|m| saw(m, said("hello all")))
    })
    .await;
    for m in &members[..N - 1] {
        let seen = m.seen.lock().unwrap();
        let join = seen
            .iter()
            .position(|s| matches!(s, ServerMsg::Join { nick, .. } if nick.as_str() == late_nick));
        let msg = seen.iter().position(said("hello all"));
        assert!(join.is_some() && join < msg, "{}: the speaker appears before speaking", m.nick);
    }

    // The member list, complete through `who` pages, each nickname once.
    let asker = &members[1];
    let mut listed: HashSet<String> = HashSet::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let before = asker.seen.lock().unwrap().len();
        asker
            .out
            .send(ClientMsg::Who { room: "#lobby".into(), after: after.clone() })
            .await
            .unwrap();
        // A page of 200 may come in several records (`more`, at most 16 KiB each).
        let page = || {
            let mut lists = chatao_proto::members::Assembler::default();
            asker.seen.lock().unwrap()[before..]
                .iter()
                .filter(|m| matches!(m, ServerMsg::Members { .. }))
                .find_map(|m| lists.take(m.clone()))
        };
        until(&counts, "a who page", || page().is_some()).await;
        let Some(ServerMsg::Members { members: page, total, next, .. }) = page() else {
            unreachable!()
        };
        pages += 1;
        assert!(page.len() <= 200, "a page is bounded");
        assert_eq!(total, Some(N as u32));
        for m in page {
            assert!(listed.insert(m.nick.to_string()), "{} listed twice", m.nick);
        }
        match next {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(listed.len(), N, "every member listed");
    assert_eq!(pages, N.div_ceil(200));

    // An idle member the room was never told of leaves quietly; the one who spoke does not.
    let idle = N - 2;
    let idle_nick = members[idle].nick.clone();
    members[idle].out.send(ClientMsg::Quit { reason: None }).await.unwrap();
    members[late].out.send(ClientMsg::Quit { reason: None }).await.unwrap();
    let is_leave = |who: String| move |m: &ServerMsg| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == who);
    until(&counts, "the speaker's departure", || {
        members[..idle].iter().all(|m| saw(m, is_leave(late_nick.clone())))
    })
    .await;
    members[0]
        .out
        .send(ClientMsg::Say { cid: None, room: "#lobby".into(), text: "after".into() })
        .await
        .unwrap();
    until(&counts, "the last marker", || members[..idle].iter().all(|m| saw(m, said("after"))))
        .await;
    let told = members[..idle].iter().filter(|m| saw(m, is_leave(idle_nick.clone()))).count();
    assert_eq!(told, 0, "nobody was told of the idle member's departure");
    stop.cancel();
}

#[cfg(feature = "cluster")]
/// The same rules across a cluster: node 2's members are not told of a newcomer on node 1 in a
/// large room until they speak (then before their message), nor of an idle one's departure;
/// a speaker's departure they are told of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_room_across_nodes_announces_speakers_only() {
    let nats = chatao_testkit::NatsServer::start().await;
    let url = nats.url();
    let node = || {
        let url = url.clone();
        TestServer::start_with(move |c| {
            c.cluster = Some(chatao_server::cluster::ClusterConfig::new(url));
            c.limits.rate_per_sec = 0;
            c.max_connections_per_ip = 1000;
            c.handshakes_per_minute = 1_000_000;
            c.handshake_burst = 1_000_000;
        })
    };
    let (n1, n2) = (node().await, node().await);
    let mut watcher = TestClient::connect(n2.addr, "watcher").await.unwrap();
    // 101 idle members on node 1 make the lobby large (node 2 hears of the first 99 joining).
    let mut idle = vec![];
    for i in 0..101 {
        idle.push(TestClient::connect(n1.addr, &format!("filler{i}")).await.unwrap());
    }
    watcher
        .expect(
            "the 99th join",
            |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "filler98"),
        )
        .await
        .unwrap();
    let mut late = TestClient::connect(n1.addr, "late").await.unwrap();
    let quiet = TestClient::connect(n1.addr, "quiet").await.unwrap();
    late.say("from a newcomer").await.unwrap();
    let mut seen = vec![];
    loop {
        let m = watcher.recv().await.unwrap();
        let done = matches!(&m, ServerMsg::Message { text, .. } if text == "from a newcomer");
        seen.push(m);
        if done {
            break;
        }
    }
    let join_of = |who: &'static str| move |m: &ServerMsg| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == who);
    let n = seen.len();
    assert!(
        matches!(&seen[n - 2], ServerMsg::Join { nick, .. } if nick.as_str() == "late"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(join_of("quiet")), "an idle newcomer is not announced: {seen:?}");
    drop(quiet);
    late.send(&ClientMsg::Quit { reason: None }).await.unwrap();
    let mut seen = vec![];
    loop {
        let m = watcher.recv().await.unwrap();
        let done = matches!(&m, ServerMsg::Leave { nick, .. } if nick.as_str() == "late");
        seen.push(m);
        if done {
            break;
        }
    }
    // A marker from node 1 after both departures: nothing about the quiet one before it.
    idle[0].say("marker").await.unwrap();
    loop {
        let m = watcher.recv().await.unwrap();
        assert!(
            !matches!(&m, ServerMsg::Leave { nick, .. } if nick.as_str() == "quiet"),
            "an idle member's departure is not announced"
        );
        if matches!(&m, ServerMsg::Message { text, .. } if text == "marker") {
            break;
        }
    }
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "quiet"))
    );
}
