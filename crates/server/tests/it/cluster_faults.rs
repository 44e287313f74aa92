//! Faults in a cluster, with a real `nats-server` and real nodes (the `chataosrv` binary where
//! a node must be frozen with SIGSTOP, `server::run` in this process elsewhere), real clients
//! sending with client message ids (cids):
//!
//! - a node frozen for 20 s while its users send: nobody disconnected, every message once and
//!   in order per sender on every node, no false departures, no nickname listed twice;
//! - NATS killed for 45 s: every message delivered once, refused for good (and never
//!   delivered), or answered `unconfirmed`; a re-send with the same cid is delivered once;
//! - a re-send of a cid through another node: an echo, and one delivery;
//! - a sender's messages in order across a NATS restart;
//! - a nickname taken over from a node that looked dead: that node ends its session when it
//!   wakes, and every node lists the nickname once.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, ServerMsg, decode_server, encode};
use chatao_server::cluster::ClusterConfig;
use chatao_testkit::{Chataosrv, NatsServer, ServerProcess, TestClient, TestServer, fixed_keypair};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout};

/// A node of this process, with presence TTL `ttl`.
async fn node(nats: &NatsServer, ttl: Duration) -> TestServer {
    let url = nats.url();
    TestServer::start_with(move |c| {
        let mut cluster = ClusterConfig::new(url);
        cluster.presence_ttl = ttl;
        c.cluster = Some(cluster);
        c.limits.rate_per_sec = 0;
    })
    .await
}

/// A `chataosrv` process in the cluster (default limits and presence TTL), to freeze.
struct Node {
    server: ServerProcess,
    addr: std::net::SocketAddr,
    _data: tempfile::TempDir,
}

impl Node {
    async fn spawn(nats: &NatsServer, key_dir: &std::path::Path) -> Node {
        let data = tempfile::tempdir().unwrap();
        let server = Chataosrv::new(env!("CARGO_BIN_EXE_chataosrv"))
            .args(["--cluster", &nats.url(), "--data-dir"])
            .arg(data.path())
            .arg("--key-dir")
            .arg(key_dir)
            .spawn()
            .await
            .drain_log();
        Node { addr: server.addr, server, _data: data }
    }

    fn signal(&self, sig: &str) {
        self.server.signal(sig);
    }
}

/// A client whose connection is served by a task: everything received is logged (pings are
/// answered), and messages to send are queued to it, so a client keeps reading while others
/// send and while its node is frozen.
struct Peer {
    nick: String,
    tx: mpsc::Sender<ClientMsg>,
    log: Arc<Mutex<Vec<ServerMsg>>>,
    /// Bumped on every message and when the connection ends.
    changed: watch::Receiver<u64>,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Peer {
    async fn connect(addr: std::net::SocketAddr, nick: &str, key: u8) -> Peer {
        let client = TestClient::connect_with(addr, nick, &fixed_keypair(key)).await.unwrap();
        let (tx, mut rx) = mpsc::channel::<ClientMsg>(1024);
        let log = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (bump, changed) = watch::channel(0u64);
        let (task_log, task_closed) = (log.clone(), closed.clone());
        let mut conn = client.conn;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = rx.recv() => {
                        let Some(out) = out else { break };
                        if conn.write_record(&encode(&out)).await.is_err() {
                            break;
                        }
                    }
                    record = conn.read_record() => {
                        let Ok(Some(record)) = record else { break };
                        let Ok(m) = decode_server(&record) else { break };
                        if let ServerMsg::Ping { token } = m {
                            let _ = conn.write_record(&encode(&ClientMsg::Pong { token })).await;
                        }
                        task_log.lock().unwrap().push(m);
                        bump.send_modify(|n| *n += 1);
                    }
                }
            }
            task_closed.store(true, std::sync::atomic::Ordering::SeqCst);
            bump.send_modify(|n| *n += 1);
        });
        Peer { nick: nick.into(), tx, log, changed, closed }
    }

    async fn send(&self, m: ClientMsg) {
        self.tx.send(m).await.unwrap();
    }

    async fn say(&self, text: &str, cid: u64) {
        self.send(ClientMsg::Say { cid: Some(cid), room: "#lobby".into(), text: text.into() })
            .await;
    }

    fn log(&self) -> Vec<ServerMsg> {
        self.log.lock().unwrap().clone()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (at most `within`) until `f` finds what it looks for in everything received.
    async fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        f: impl Fn(&[ServerMsg]) -> Option<T>,
    ) -> T {
        let mut changed = self.changed.clone();
        let found = timeout(within, async {
            loop {
                let found = f(&self.log.lock().unwrap());
                if let Some(t) = found {
                    return t;
                }
                if changed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("{}: {what}: not within {within:?}", self.nick))
    }

    /// Waits (at most 15 s) until this client's node lists `nick` `times` times in `#lobby`.
    async fn until_listed(&self, nick: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let who = self.who().await;
            if who.iter().filter(|n| *n == nick).count() == times {
                return;
            }
            assert!(Instant::now() < deadline, "{}: {nick} listed as {who:?}", self.nick);
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// The members of `#lobby` as this client's node lists them now.
    async fn who(&self) -> Vec<String> {
        let before = self.log.lock().unwrap().len();
        self.send(ClientMsg::Who { room: "#lobby".into(), after: None }).await;
        self.wait_for("the lobby's members", Duration::from_secs(10), |log| {
            log[before..].iter().find_map(|m| match m {
                ServerMsg::Members { room, members, .. } if room.as_str() == "#lobby" => {
                    Some(members.iter().map(|m| m.nick.to_string()).collect())
                }
                _ => None,
            })
        })
        .await
    }
}

/// The texts of the chat messages in `log`, in order.
fn texts(log: &[ServerMsg]) -> Vec<String> {
    log.iter()
        .filter_map(|m| match m {
            ServerMsg::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// What `sender`'s message `cid` came to, as the sender was told: an echo or an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Echo,
    Refused(ErrorCode),
}

/// The outcome of each cid in a sender's log (the first one told).
fn outcomes(log: &[ServerMsg], nick: &str) -> HashMap<u64, Outcome> {
    let mut out = HashMap::new();
    for m in log {
        match m {
            ServerMsg::Message { cid: Some(c), from, .. } if from.as_str() == nick => {
                out.entry(*c).or_insert(Outcome::Echo);
            }
            ServerMsg::Private { cid: Some(c), from, .. } if from.as_str() == nick => {
                out.entry(*c).or_insert(Outcome::Echo);
            }
            ServerMsg::Error { cid: Some(c), code, .. } => {
                out.entry(*c).or_insert(Outcome::Refused(*code));
            }
            _ => {}
        }
    }
    out
}

/// Asserts that each sender's messages (`<prefix>-<number>`) in `seen` come in increasing
/// order, and that no text is there twice.
fn assert_once_and_in_order(who: &str, seen: &[String], prefixes: &[&str]) {
    let mut once = HashSet::new();
    for t in seen {
        assert!(once.insert(t), "{who} got {t} twice: {seen:?}");
    }
    for p in prefixes {
        let mine: Vec<u64> =
            seen.iter().filter_map(|t| t.strip_prefix(&format!("{p}-"))?.parse().ok()).collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "{who}: {p}'s messages out of order: {mine:?}"
        );
    }
}

fn text(prefix: &str, k: u64) -> String {
    format!("{prefix}-{k:03}")
}

/// A cid for message `k` of sender `s` (distinct, in 1..=MAX_CID).
fn cid(s: u64, k: u64) -> u64 {
    (s << 32) + 1000 + k
}

/// How many private messages with `cid` are in `log`.
fn privates(log: &[ServerMsg], cid: u64) -> usize {
    log.iter().filter(|m| matches!(m, ServerMsg::Private { cid: Some(c), .. } if *c == cid)).count()
}

fn lobby_leaves(log: &[ServerMsg]) -> Vec<String> {
    log.iter()
        .filter_map(|m| match m {
            ServerMsg::Leave { nick, reason, message, .. } => {
                Some(format!("{nick} ({reason:?}: {message:?})"))
            }
            _ => None,
        })
        .collect()
}

fn byes(log: &[ServerMsg]) -> Vec<String> {
    log.iter()
        .filter_map(|m| match m {
            ServerMsg::Bye { code, reason } => Some(format!("{code:?}: {reason}")),
            _ => None,
        })
        .collect()
}

fn assert_listed_once(where_: &str, members: &[String]) {
    let mut once = HashSet::new();
    for m in members {
        assert!(once.insert(m), "{where_} lists {m} twice: {members:?}");
    }
}

#[tokio::test]
async fn a_node_frozen_for_20s_wakes_without_losses_departures_or_disconnects() {
    let nats = NatsServer::start().await;
    let keys = tempfile::tempdir().unwrap();
    // The frozen node is a process (with the default presence TTL, 5 s: after 20 s of its own
    // silence it must not conclude that everyone else left). The other node is patient (its
    // TTL outlasts the freeze), so no departure anywhere is expected.
    let frozen = Node::spawn(&nats, keys.path()).await;
    let other = node(&nats, Duration::from_secs(60)).await;
    let a = Peer::connect(frozen.addr, "a", 1).await;
    let b = Peer::connect(frozen.addr, "b", 2).await;
    let c = Peer::connect(other.addr, "c", 3).await;
    let w = Peer::connect(other.addr, "w", 4).await;
    let everyone = [&a, &b, &c, &w];
    // Everyone sees everyone before anything is sent.
    for p in everyone {
        for nick in ["a", "b", "c", "w"] {
            p.until_listed(nick, 1).await;
        }
    }
    let starts: Vec<usize> = everyone.iter().map(|p| p.log().len()).collect();

    // Three senders at 4 lines/s for 26 s; node one frozen from second 3 to second 23.
    const EACH: u64 = 104;
    let senders = [(&a, "a", 1u64), (&b, "b", 2), (&c, "c", 3)];
    let sending = async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        for k in 0..EACH {
            tick.tick().await;
            for (p, prefix, s) in senders {
                p.say(&text(prefix, k), cid(s, k)).await;
            }
        }
    };
    // A private message to a user of the frozen node: its node cannot answer, so the outcome
    // is unknown (it is delivered when the node wakes), never "not delivered".
    const PSST: u64 = 99;
    let psst = || ClientMsg::Msg { cid: Some(PSST), to: "a".into(), text: "psst".into() };
    let freezing = async {
        sleep(Duration::from_secs(3)).await;
        frozen.signal("-STOP");
        let stopped = Instant::now();
        sleep(Duration::from_secs(1)).await;
        c.send(psst()).await;
        let told = c
            .wait_for("the private message's outcome", Duration::from_secs(15), |log| {
                outcomes(log, "c").get(&PSST).copied()
            })
            .await;
        assert_eq!(told, Outcome::Refused(ErrorCode::Unconfirmed));
        tokio::time::sleep_until(stopped + Duration::from_secs(20)).await;
        frozen.signal("-CONT");
    };
    tokio::join!(sending, freezing);

    let all: HashSet<String> =
        senders.iter().flat_map(|(_, prefix, _)| (0..EACH).map(|k| text(prefix, k))).collect();
    for (p, start) in everyone.iter().zip(&starts) {
        p.wait_for("every message", Duration::from_secs(60), |log| {
            let got: HashSet<String> = texts(&log[*start..]).into_iter().collect();
            all.is_subset(&got).then_some(())
        })
        .await;
    }
    for (p, start) in everyone.iter().zip(&starts) {
        let log = p.log();
        let log = &log[*start..];
        assert!(!p.is_closed(), "{} was disconnected: {:?}", p.nick, byes(log));
        assert_eq!(lobby_leaves(log), Vec::<String>::new(), "{} was told of departures", p.nick);
        assert_once_and_in_order(&p.nick, &texts(log), &["a", "b", "c"]);
        let errors: Vec<&ServerMsg> = log
            .iter()
            .filter(|m| matches!(m, ServerMsg::Error { cid, .. } if *cid != Some(PSST)))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", p.nick);
        assert_listed_once(&format!("{}'s node", p.nick), &p.who().await);
    }
    // The private message reached a once; sent again, it is answered and not repeated.
    a.wait_for("the private message", Duration::from_secs(10), |log| {
        (privates(log, PSST) == 1).then_some(())
    })
    .await;
    c.send(psst()).await;
    c.wait_for("the private echo", Duration::from_secs(10), |log| {
        (privates(log, PSST) == 1).then_some(())
    })
    .await;
    marker(&c, &a, "last", 5).await;
    assert_eq!(privates(&a.log(), PSST), 1, "delivered once");
}

/// Sends `prefix`-numbered messages from `p` at 4/s until `stop` is set, returning how many.
async fn send_until(p: &Peer, prefix: &str, s: u64, stop: &watch::Receiver<bool>) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut k = 0;
    while !*stop.borrow() {
        tick.tick().await;
        p.say(&text(prefix, k), cid(s, k)).await;
        k += 1;
    }
    k
}

/// `p`'s outcome for each of its messages 0..n, waiting (at most `within`) until each has one.
async fn all_outcomes(p: &Peer, s: u64, n: u64, within: Duration) -> HashMap<u64, Outcome> {
    let nick = p.nick.clone();
    p.wait_for("an outcome for every message", within, |log| {
        let out = outcomes(log, &nick);
        (0..n).all(|k| out.contains_key(&cid(s, k))).then_some(out)
    })
    .await
}

/// Sends a marker from `from` and waits until `to` has it: everything `from` sent before was
/// published (or given up) before it.
async fn marker(from: &Peer, to: &Peer, name: &str, cid: u64) {
    from.say(name, cid).await;
    to.wait_for(name, Duration::from_secs(30), |log| {
        texts(log).iter().any(|t| t == name).then_some(())
    })
    .await;
}

/// After a fault: waits for an outcome for each of `s`'s messages 0..n, checks that those
/// refused for good were never delivered and the echoed ones were, once and in order, at `o`;
/// then sends again every one not echoed, with its cid, and checks each is then delivered
/// exactly once. `refusals` says whether the fault must have refused some for good.
async fn settle_and_resend(s: &Peer, o: &Peer, n: u64, refusals: bool) {
    let out = all_outcomes(s, 1, n, Duration::from_secs(45)).await;
    let unconfirmed: Vec<u64> =
        (0..n).filter(|k| out[&cid(1, *k)] == Outcome::Refused(ErrorCode::Unconfirmed)).collect();
    let refused: Vec<u64> = (0..n)
        .filter(|k| matches!(out[&cid(1, *k)], Outcome::Refused(c) if c != ErrorCode::Unconfirmed))
        .collect();
    for k in &refused {
        let code = out[&cid(1, *k)];
        assert!(
            matches!(code, Outcome::Refused(ErrorCode::Unavailable | ErrorCode::Busy)),
            "s-{k}: {code:?}"
        );
    }
    assert!(!refusals || !refused.is_empty(), "messages sent while NATS is down are refused");
    assert!(out.values().any(|o| *o == Outcome::Echo), "messages are delivered after NATS is back");

    // Everything published is in the stream before a marker sent now: a message refused for
    // good was never delivered; what was delivered, was delivered once and in order.
    marker(s, o, "after the outage", 2).await;
    let before = texts(&o.log());
    assert_once_and_in_order("o", &before, &["s"]);
    for k in &refused {
        assert!(!before.contains(&text("s", *k)), "s-{k} was refused for good, then delivered");
    }
    for k in (0..n).filter(|k| out[&cid(1, *k)] == Outcome::Echo) {
        assert!(before.contains(&text("s", k)), "s-{k} was echoed but not delivered to o");
    }

    // Sent again with the same ids: every one echoed, each delivered exactly once.
    let again: Vec<u64> = unconfirmed.iter().chain(&refused).copied().collect();
    let resent_from = s.log().len();
    for k in &again {
        s.say(&text("s", *k), cid(1, *k)).await;
    }
    s.wait_for("an echo for every re-sent message", Duration::from_secs(30), |log| {
        let out = outcomes(&log[resent_from..], "s");
        again.iter().all(|k| out.get(&cid(1, *k)) == Some(&Outcome::Echo)).then_some(())
    })
    .await;
    marker(s, o, "after the re-sends", 3).await;
    let seen = texts(&o.log());
    for k in 0..n {
        let t = text("s", k);
        assert_eq!(seen.iter().filter(|x| **x == t).count(), 1, "{t} in {seen:?}");
    }
    eprintln!(
        "{n} sent: {} unconfirmed, {} refused, {} delivered at once",
        unconfirmed.len(),
        refused.len(),
        n as usize - unconfirmed.len() - refused.len()
    );
}

#[tokio::test]
async fn nats_killed_for_45s_every_message_has_one_outcome_and_resends_deliver_once() {
    let mut nats = NatsServer::start().await;
    let (n1, n2) =
        (node(&nats, Duration::from_secs(2)).await, node(&nats, Duration::from_secs(2)).await);
    let s = Peer::connect(n1.addr, "s", 1).await;
    let o = Peer::connect(n2.addr, "o", 2).await;
    marker(&s, &o, "hello", 1).await;

    let (stop_tx, stop) = watch::channel(false);
    let faults = async {
        sleep(Duration::from_secs(2)).await;
        // Frozen first, so that messages are in flight (written, never acknowledged) when it
        // dies; then down for 45 s; then back with its data.
        nats.freeze();
        sleep(Duration::from_secs(1)).await;
        nats.stop().await;
        sleep(Duration::from_secs(45)).await;
        nats.restart().await;
        sleep(Duration::from_secs(4)).await;
        stop_tx.send_replace(true);
    };
    let (n, ()) = tokio::join!(send_until(&s, "s", 1, &stop), faults);

    settle_and_resend(&s, &o, n, true).await;
}

#[tokio::test]
async fn nats_frozen_past_the_deadline_is_unconfirmed_never_falsely_refused() {
    let nats = NatsServer::start().await;
    let ttl = Duration::from_secs(2);
    let (n1, n2) = (node(&nats, ttl).await, node(&nats, ttl).await);
    let s = Peer::connect(n1.addr, "s", 1).await;
    let o = Peer::connect(n2.addr, "o", 2).await;
    marker(&s, &o, "hello", 1).await;

    // NATS stalls (connections open, nothing answered) for longer than the publish deadline:
    // what the node handed to it may still be delivered when it resumes, so no message may be
    // reported as refused for good and then delivered.
    let (stop_tx, stop) = watch::channel(false);
    let faults = async {
        sleep(Duration::from_secs(2)).await;
        nats.freeze();
        sleep(Duration::from_secs(35)).await;
        nats.thaw();
        sleep(Duration::from_secs(3)).await;
        stop_tx.send_replace(true);
    };
    let (n, ()) = tokio::join!(send_until(&s, "s", 1, &stop), faults);
    settle_and_resend(&s, &o, n, false).await;
}

#[tokio::test]
async fn a_resend_through_another_node_is_echoed_and_delivered_once() {
    let nats = NatsServer::start().await;
    let ttl = Duration::from_secs(2);
    let (n1, n2, n3) = (node(&nats, ttl).await, node(&nats, ttl).await, node(&nats, ttl).await);
    let o = Peer::connect(n3.addr, "o", 9).await;

    // Moved: sent on node one, sent again from node two after a reconnection.
    // The same for a private message to a user on a third node.
    let s = Peer::connect(n1.addr, "s", 1).await;
    s.until_listed("o", 1).await;
    s.say("moved", 77).await;
    let psst = || ClientMsg::Msg { cid: Some(55), to: "o".into(), text: "psst".into() };
    s.send(psst()).await;
    o.wait_for("moved", Duration::from_secs(15), |log| {
        texts(log).contains(&"moved".to_owned()).then_some(())
    })
    .await;
    s.wait_for("the private echo", Duration::from_secs(15), |log| {
        (outcomes(log, "s").get(&55) == Some(&Outcome::Echo)).then_some(())
    })
    .await;
    // Sent again on the same node: answered, not delivered again.
    s.send(psst()).await;
    s.wait_for("the private echo again", Duration::from_secs(15), |log| {
        (privates(log, 55) == 2).then_some(())
    })
    .await;
    drop(s);
    let s = Peer::connect(n2.addr, "s", 1).await;
    s.until_listed("o", 1).await;
    s.say("moved", 77).await;
    s.send(psst()).await;
    s.wait_for("the echoes of the re-sends", Duration::from_secs(15), |log| {
        let out = outcomes(log, "s");
        (out.get(&77) == Some(&Outcome::Echo) && out.get(&55) == Some(&Outcome::Echo)).then_some(())
    })
    .await;

    // Raced: one key's two sessions (two nicknames) send the same ids at once through two
    // nodes; each gets an echo, and each message is delivered once.
    let t = Peer::connect(n1.addr, "t", 1).await;
    const RACED: u64 = 40;
    for k in 0..RACED {
        let (x, y) = (
            ClientMsg::Say { cid: Some(cid(5, k)), room: "#lobby".into(), text: text("r", k) },
            ClientMsg::Say { cid: Some(cid(5, k)), room: "#lobby".into(), text: text("r", k) },
        );
        tokio::join!(s.send(x), t.send(y));
    }
    for (p, nick) in [(&s, "s"), (&t, "t")] {
        p.wait_for("a message with every raced id", Duration::from_secs(20), |log| {
            let ids: HashSet<u64> = log
                .iter()
                .filter_map(|m| match m {
                    ServerMsg::Message { cid: Some(c), .. } => Some(*c),
                    _ => None,
                })
                .collect();
            (0..RACED).all(|k| ids.contains(&cid(5, k))).then_some(())
        })
        .await;
        let _ = nick;
    }
    marker(&t, &o, "raced done", 1).await;
    let seen = texts(&o.log());
    assert_eq!(seen.iter().filter(|x| *x == "moved").count(), 1, "{seen:?}");
    assert_eq!(privates(&o.log(), 55), 1, "the private message is delivered once");
    for k in 0..RACED {
        let r = text("r", k);
        assert_eq!(seen.iter().filter(|x| **x == r).count(), 1, "{r} in {seen:?}");
    }
}

#[tokio::test]
async fn a_senders_messages_stay_in_order_across_a_nats_restart() {
    let mut nats = NatsServer::start().await;
    let ttl = Duration::from_secs(2);
    let (n1, n2) = (node(&nats, ttl).await, node(&nats, ttl).await);
    let s = Peer::connect(n1.addr, "s", 1).await;
    let o = Peer::connect(n2.addr, "o", 2).await;
    marker(&s, &o, "hello", 1).await;

    // A burst in flight when NATS freezes and dies (written, not acknowledged), more while it
    // is down (refused), and more once it is back.
    nats.freeze();
    for k in 0..40 {
        s.say(&text("s", k), cid(1, k)).await;
    }
    sleep(Duration::from_millis(500)).await;
    nats.stop().await;
    let (stop_tx, stop) = watch::channel(false);
    let faults = async {
        sleep(Duration::from_secs(3)).await;
        nats.restart().await;
        sleep(Duration::from_secs(3)).await;
        stop_tx.send_replace(true);
    };
    let later = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut k = 40;
        while !*stop.borrow() {
            tick.tick().await;
            s.say(&text("s", k), cid(1, k)).await;
            k += 1;
        }
        k
    };
    let (n, ()) = tokio::join!(later, faults);
    let out = all_outcomes(&s, 1, n, Duration::from_secs(45)).await;
    marker(&s, &o, "done", 2).await;
    let seen = texts(&o.log());
    assert_once_and_in_order("o", &seen, &["s"]);
    let echoed = (0..n).filter(|k| out[&cid(1, *k)] == Outcome::Echo).count();
    assert!(echoed >= 40, "the burst in flight is delivered: {out:?}");
    for k in 0..n {
        if out[&cid(1, k)] == Outcome::Echo {
            assert!(seen.contains(&text("s", k)), "s-{k} echoed, not delivered");
        }
    }
    // The order the sender saw its echoes in is the order it sent.
    assert_once_and_in_order("s", &texts(&s.log()), &["s"]);
}

#[tokio::test]
async fn a_nickname_taken_from_a_frozen_node_is_ended_there_when_it_wakes() {
    let nats = NatsServer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(2);
    let frozen = Node::spawn(&nats, keys.path()).await;
    let (n2, n3) = (node(&nats, ttl).await, node(&nats, ttl).await);
    let old = Peer::connect(frozen.addr, "r2", 5).await;
    let w1 = Peer::connect(frozen.addr, "w1", 6).await;
    let w3 = Peer::connect(n3.addr, "w3", 7).await;
    w3.until_listed("r2", 1).await;

    // Frozen long enough for the others to take it for dead; r2 comes back on node two.
    frozen.signal("-STOP");
    w3.wait_for("r2 gone with its node", Duration::from_secs(15), |log| {
        log.iter()
            .any(|m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "r2"))
            .then_some(())
    })
    .await;
    sleep(ttl).await; // node two has taken it for dead too
    let new = Peer::connect(n2.addr, "r2", 5).await;
    sleep(Duration::from_secs(3)).await;
    frozen.signal("-CONT");

    // The old session is ended when its node wakes, with a reason.
    old.wait_for("the old session's bye", Duration::from_secs(20), |log| {
        log.iter().any(|m| matches!(m, ServerMsg::Bye { .. })).then_some(())
    })
    .await;
    let bye = byes(&old.log());
    assert!(bye.iter().any(|b| b.contains("replaced")), "{bye:?}");
    // Every node lists r2 once, and keeps doing so.
    for p in [&w1, &new, &w3] {
        p.until_listed("r2", 1).await;
    }
    sleep(Duration::from_secs(3)).await;
    for p in [&w1, &new, &w3] {
        let who = p.who().await;
        assert_eq!(who.iter().filter(|n| *n == "r2").count(), 1, "{}: {who:?}", p.nick);
        assert_listed_once(&p.nick, &who);
    }
    assert!(!new.is_closed(), "the new session stays: {:?}", byes(&new.log()));
}
