//! Bots and bridges (issue 22), with the real binaries: a `chataosrv` process, the real
//! `chatao` in line mode, and docs/examples/bridge_bot.py (python3) over it.
//!
//! - the example bridge, killed with SIGKILL while numbered messages arrive and started
//!   again, has each message in its log once, in order;
//! - `--state`: started again after messages arrived while it was down (more than a join
//!   replay holds), chatao prints exactly those, once, in order, marked as history, then
//!   `ready`, then live ones; a corrupt state file is a clear error (exit 2), nothing sent;
//! - with `--state`, a connection cut while 520 messages arrive (more than one `history`
//!   page of 500): after reconnecting, each printed once, in order, then `ready`;
//! - `--no-history`: no join replay;
//! - `--quiet`: no join or leave seen by another client, `who` marks the bot, an operator's
//!   `bots hide` takes it out of the list and `show` puts it back; the same across two
//!   nodes of a cluster (real NATS).
//!
//! Needs `cargo build -p chatao-server --bins` (the server binary is found next to chatao).
#![allow(clippy::unwrap_used)]

use crate::common;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chatao_proto::{ClientMsg, ServerMsg};
use chatao_testkit::{TestClient, fixed_keypair, line_with};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The longest any one step may take.
const LIMIT: Duration = Duration::from_secs(60);

fn bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_chatao")).with_file_name(name);
    assert!(path.exists(), "{} is missing: cargo build -p chatao-server --bins", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `chataosrv` on 127.0.0.1 with no rate limit (the senders here are fast), returned once
/// it listens, with its address.
async fn chataosrv(data: &Path, extra: &[&str]) -> (Child, std::net::SocketAddr) {
    let port = free_port();
    let mut child = Command::new(bin("chataosrv"))
        .arg(port.to_string())
        .args(["--listen", "127.0.0.1", "--rate-per-sec", "0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(LIMIT, line_with(&mut lines, "listening")).await.unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("127.0.0.1:{port}").parse().unwrap())
}

/// `chatao ADDR NICK` in line mode with its key under `dir`, stdin and stdout piped.
fn chatao(dir: &Path, addr: std::net::SocketAddr, nick: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chatao"))
        .arg(addr.to_string())
        .arg(nick)
        .arg("--key-dir")
        .arg(dir.join(nick))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The next JSON event of a `chatao --json`, within [`LIMIT`].
async fn next_event(out: &mut Lines<BufReader<ChildStdout>>) -> serde_json::Value {
    let line = tokio::time::timeout(LIMIT, out.next_line())
        .await
        .expect("no event in time")
        .unwrap()
        .expect("output ended");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Events up to and including the first of type `kind`.
async fn events_until(
    out: &mut Lines<BufReader<ChildStdout>>,
    kind: &str,
) -> Vec<serde_json::Value> {
    let mut seen = vec![];
    loop {
        let ev = next_event(out).await;
        let done = ev["type"] == kind;
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// The texts of the room messages among `events`, each with whether it was marked history.
fn messages(events: &[serde_json::Value]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| (e["text"].as_str().unwrap().to_owned(), e["history"] == true))
        .collect()
}

async fn exit_status(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(LIMIT, child.wait()).await.expect("did not exit").unwrap()
}

/// Says `texts` in #lobby as `sender`, and waits for the last one's echo (so all are in).
async fn say_all(sender: &mut TestClient, texts: impl IntoIterator<Item = String>) {
    let mut last = String::new();
    for text in texts {
        sender.say(&text).await.unwrap();
        last = text;
    }
    tokio::time::timeout(LIMIT, sender.expect_text(&last)).await.unwrap().unwrap();
}

/// The example bridge's log: its messages' texts, in the file's order.
fn logged(log: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else { return vec![] };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until the bridge's log holds at least `n` messages (polling the file: the bridge
/// says nothing else).
async fn until_logged(log: &Path, n: usize) -> Vec<String> {
    tokio::time::timeout(LIMIT, async {
        loop {
            let got = logged(log);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the log never held {n} messages: {:?}", logged(log).len()))
}

fn bridge(dir: &Path, addr: std::net::SocketAddr) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/bridge_bot.py");
    Command::new("python3")
        .arg(script)
        .arg("--log")
        .arg(dir.join("room.log"))
        .arg("--state")
        .arg(dir.join("bridge.state"))
        .arg("--chatao")
        .arg(env!("CARGO_BIN_EXE_chatao"))
        .arg("--")
        .arg(addr.to_string())
        .arg("bridge")
        .arg("--key-dir")
        .arg(dir.join("bridge-key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn the_example_bridge_killed_mid_stream_relays_every_message_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = chataosrv(&dir.path().join("srv"), &[]).await;
    let mut bot = bridge(dir.path(), addr);
    let mut err = BufReader::new(bot.stderr.take().unwrap()).lines();
    tokio::time::timeout(LIMIT, line_with(&mut err, "caught up, live")).await.unwrap();
    let mut sender = TestClient::connect(addr, "counter").await.unwrap();
    let log = dir.path().join("room.log");
    const N: usize = 200;
    let numbered: Vec<String> = (1..=N).map(|i| format!("n{i:04}")).collect();
    // The other client sends while the bot relays; the bot is killed in the middle of it
    // (each line it relays is fsynced, so it is far behind the sender), and more than a
    // join replay holds (50) arrive while it is down.
    let first = numbered[..180].to_vec();
    let sending = tokio::spawn(async move {
        say_all(&mut sender, first).await;
        sender
    });
    until_logged(&log, 20).await;
    bot.start_kill().unwrap();
    bot.wait().await.unwrap();
    let at_kill = logged(&log).len();
    let mut sender = tokio::time::timeout(LIMIT, sending).await.unwrap().unwrap();
    let mut bot = bridge(dir.path(), addr);
    let mut err = BufReader::new(bot.stderr.take().unwrap()).lines();
    tokio::time::timeout(LIMIT, line_with(&mut err, "caught up, live")).await.unwrap();
    say_all(&mut sender, numbered[180..].to_vec()).await;
    let got = until_logged(&log, N).await;
    eprintln!("the bridge had relayed {at_kill} of the first 180 when it was killed");
    assert_eq!(got, numbered, "every message once, in order");
    bot.start_kill().unwrap();
}

#[tokio::test]
async fn a_restart_with_its_state_prints_exactly_what_came_meanwhile_once_as_history() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = chataosrv(&dir.path().join("srv"), &[]).await;
    let mut sender = TestClient::connect(addr, "counter").await.unwrap();
    say_all(&mut sender, (1..=3).map(|i| format!("old {i}"))).await;
    let state = dir.path().join("bot.state");
    let state_arg = state.to_str().unwrap();
    let mut bot = chatao(dir.path(), addr, "bot", &["--json", "--state", state_arg]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    // First run: the join replay, `ready`, then live messages.
    let first = events_until(&mut out, "ready").await;
    assert_eq!(messages(&first), (1..=3).map(|i| (format!("old {i}"), true)).collect::<Vec<_>>());
    say_all(&mut sender, ["live 1".to_owned()]).await;
    let live = events_until(&mut out, "message").await;
    assert_eq!(messages(&live), [("live 1".to_owned(), false)]);
    drop(bot.stdin.take());
    assert_eq!(exit_status(&mut bot).await.code(), Some(0), "end of input: exit 0");

    // While it is down: more than the join replay of 50.
    let missed: Vec<String> = (1..=70).map(|i| format!("missed {i}")).collect();
    say_all(&mut sender, missed.clone()).await;
    let mut bot = chatao(dir.path(), addr, "bot", &["--json", "--state", state_arg]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    let second = events_until(&mut out, "ready").await;
    let expected: Vec<(String, bool)> = missed.iter().map(|t| (t.clone(), true)).collect();
    assert_eq!(messages(&second), expected, "exactly the missed ones, once, in order, history");
    say_all(&mut sender, ["after ready".to_owned()]).await;
    let after = events_until(&mut out, "message").await;
    assert_eq!(messages(&after), [("after ready".to_owned(), false)]);
    drop(bot.stdin.take());
    assert_eq!(exit_status(&mut bot).await.code(), Some(0));

    // A third start with nothing new prints no message at all before `ready`.
    let mut bot = chatao(dir.path(), addr, "bot", &["--json", "--state", state_arg]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    assert_eq!(messages(&events_until(&mut out, "ready").await), []);
    drop(bot.stdin.take());
    assert_eq!(exit_status(&mut bot).await.code(), Some(0));
}

#[tokio::test]
async fn with_a_state_file_a_reconnection_pages_through_everything_missed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // A join replay of 5: only a second `history` page brings 501..515.
    let (_server, addr) = chataosrv(&dir.path().join("srv"), &["--history", "5"]).await;
    let proxy = common::Proxy::start(addr).await;
    let mut sender = TestClient::connect(addr, "counter").await.unwrap();
    say_all(&mut sender, ["before".to_owned()]).await;
    let state = dir.path().join("bot.state");
    let mut bot =
        chatao(dir.path(), proxy.addr, "bot", &["--json", "--state", state.to_str().unwrap()]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    assert_eq!(messages(&events_until(&mut out, "ready").await), [("before".to_owned(), true)]);
    proxy.cut();
    events_until(&mut out, "disconnected").await;
    let missed: Vec<String> = (1..=520).map(|i| format!("missed {i}")).collect();
    say_all(&mut sender, missed.clone()).await;
    proxy.mend();
    events_until(&mut out, "reconnected").await;
    let caught_up = events_until(&mut out, "ready").await;
    let expected: Vec<(String, bool)> = missed.iter().map(|t| (t.clone(), true)).collect();
    assert_eq!(messages(&caught_up), expected, "every missed one once, in order, over two pages");
    say_all(&mut sender, ["live".to_owned()]).await;
    assert_eq!(messages(&events_until(&mut out, "message").await), [("live".to_owned(), false)]);
    drop(bot.stdin.take());
    assert_eq!(exit_status(&mut bot).await.code(), Some(0));
}

#[tokio::test]
async fn a_corrupt_state_file_is_a_clear_error_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = chataosrv(&dir.path().join("srv"), &[]).await;
    let mut watcher = TestClient::connect(addr, "watcher").await.unwrap();
    let state = dir.path().join("bot.state");
    let corrupt = b"{\"version\":1,\"servers\":{\"SHA256:x\":{\"#lobby\":";
    std::fs::write(&state, corrupt).unwrap();
    let mut bot = chatao(dir.path(), addr, "bot", &["--plain", "--state", state.to_str().unwrap()]);
    let mut stdin = bot.stdin.take().unwrap();
    stdin.write_all(b"must not be sent\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(LIMIT, bot.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("is not a chatao state file"), "{err}");
    assert!(output.stdout.is_empty(), "nothing printed");
    assert_eq!(std::fs::read(&state).unwrap(), corrupt, "the file is left as it was");
    // It never connected: the watcher, up to its own probe, saw no join and no message.
    watcher.say("probe").await.unwrap();
    let seen =
        until(&mut watcher, |m| matches!(m, ServerMsg::Message { text, .. } if text == "probe"))
            .await;
    assert_eq!(about(&seen, "bot"), 0, "{seen:?}");
    assert_eq!(seen.iter().filter(|m| matches!(m, ServerMsg::Message { .. })).count(), 1);
}

#[tokio::test]
async fn no_history_prints_no_join_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = chataosrv(&dir.path().join("srv"), &[]).await;
    let mut sender = TestClient::connect(addr, "counter").await.unwrap();
    say_all(&mut sender, (1..=3).map(|i| format!("old {i}"))).await;
    let mut bot = chatao(dir.path(), addr, "notifier", &["--json", "--no-history"]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    let mut stdin = bot.stdin.take().unwrap();
    stdin.write_all(b"deployed\n").await.unwrap();
    drop(stdin);
    let events = events_until(&mut out, "bye").await;
    assert_eq!(messages(&events), [("deployed".to_owned(), false)], "{events:?}");
    assert!(events.iter().all(|e| e["type"] != "history_end"));
    assert!(events.iter().any(|e| e["type"] == "ready"));
    assert_eq!(exit_status(&mut bot).await.code(), Some(0));
    sender.expect_text("deployed").await.unwrap();
}

/// Reads `c`'s events until `pred`, returning them all.
async fn until(c: &mut TestClient, pred: impl Fn(&ServerMsg) -> bool) -> Vec<ServerMsg> {
    let mut seen = vec![];
    tokio::time::timeout(LIMIT, async {
        loop {
            let m = c.recv().await.unwrap();
            let done = pred(&m);
            seen.push(m);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not seen; got {seen:?}"));
    seen
}

fn about(events: &[ServerMsg], who: &str) -> usize {
    events
        .iter()
        .filter(|m| match m {
            ServerMsg::Join { nick, .. } | ServerMsg::Leave { nick, .. } => nick.as_str() == who,
            _ => false,
        })
        .count()
}

fn listed(m: &ServerMsg) -> Vec<(String, bool)> {
    match m {
        ServerMsg::Members { members, .. } => {
            members.iter().map(|m| (m.nick.to_string(), m.bot)).collect()
        }
        _ => vec![],
    }
}

#[tokio::test]
async fn a_quiet_bot_is_neither_announced_nor_unmarked_and_an_operator_can_hide_it() {
    let dir = tempfile::tempdir().unwrap();
    let op_key = fixed_keypair(7);
    let op_fp = op_key.public().fingerprint();
    let (_server, addr) = chataosrv(&dir.path().join("srv"), &["--op", &op_fp]).await;
    let mut op = TestClient::connect_with(addr, "op", &op_key).await.unwrap();

    // A one-shot notifier: its message arrives, and neither its arrival nor its departure.
    let mut notifier = chatao(dir.path(), addr, "notifier", &["--plain", "--quiet"]);
    let mut stdin = notifier.stdin.take().unwrap();
    stdin.write_all(b"build 41 is green\n").await.unwrap();
    drop(stdin);
    assert_eq!(exit_status(&mut notifier).await.code(), Some(0));
    // A plain client coming and going after it: once its leave is here, the notifier's
    // would have been too.
    let plain = TestClient::connect(addr, "plain").await.unwrap();
    drop(plain);
    let seen =
        until(&mut op, |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "plain"))
            .await;
    assert_eq!(about(&seen, "notifier"), 0, "{seen:?}");
    assert_eq!(about(&seen, "plain"), 2, "without --quiet both are announced");
    assert!(
        seen.iter()
            .any(|m| matches!(m, ServerMsg::Message { text, .. } if text == "build 41 is green"))
    );

    // A bot that stays: `who` marks it, in JSON and in its own plain output.
    let mut bot = chatao(dir.path(), addr, "ci", &["--plain", "--quiet"]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    let mut bot_in = bot.stdin.take().unwrap();
    tokio::time::timeout(LIMIT, line_with(&mut out, "ready")).await.unwrap();
    bot_in.write_all(b"/who #lobby\n").await.unwrap();
    let line = tokio::time::timeout(LIMIT, line_with(&mut out, "online")).await.unwrap();
    assert!(line.contains("ci [bot]") && line.contains("op"), "{line}");
    let who = ClientMsg::Who { room: "#lobby".into(), after: None };
    let mut seen = vec![];
    let listing = async |op: &mut TestClient, seen: &mut Vec<ServerMsg>| {
        op.send(&who).await.unwrap();
        let page = until(op, |m| matches!(m, ServerMsg::Members { .. })).await;
        let members = listed(page.last().unwrap());
        seen.extend(page);
        members
    };
    let members = listing(&mut op, &mut seen).await;
    assert!(members.contains(&("ci".into(), true)) && members.contains(&("op".into(), false)));

    // The operator hides the room's bots, then shows them again; others may not.
    bot_in.write_all(b"/bots #lobby hide\n").await.unwrap();
    tokio::time::timeout(LIMIT, line_with(&mut out, "not_operator")).await.unwrap();
    op.send(&ClientMsg::Bots { room: "#lobby".into(), hide: true }).await.unwrap();
    let hidden = |m: &ServerMsg| matches!(m, ServerMsg::Notice { text } if text.contains("hidden"));
    seen.extend(until(&mut op, hidden).await);
    assert_eq!(listing(&mut op, &mut seen).await, [("op".to_owned(), false)]);
    op.send(&ClientMsg::Bots { room: "#lobby".into(), hide: false }).await.unwrap();
    assert!(listing(&mut op, &mut seen).await.contains(&("ci".into(), true)));

    drop(bot_in);
    assert_eq!(exit_status(&mut bot).await.code(), Some(0));
    // Neither its arrival nor its departure was announced (up to the probe, after it left).
    op.say("probe").await.unwrap();
    seen.extend(
        until(&mut op, |m| matches!(m, ServerMsg::Message { text, .. } if text == "probe")).await,
    );
    assert_eq!(about(&seen, "ci"), 0, "{seen:?}");
}

/// `who #lobby` from `c` until `pred` holds for its list (a remote user's arrival travels
/// beside the room's messages and may come a little after them), within [`LIMIT`].
async fn who_until(
    c: &mut TestClient,
    seen: &mut Vec<ServerMsg>,
    pred: impl Fn(&[(String, bool)]) -> bool,
) {
    let who = ClientMsg::Who { room: "#lobby".into(), after: None };
    tokio::time::timeout(LIMIT, async {
        loop {
            c.send(&who).await.unwrap();
            let page = until(c, |m| matches!(m, ServerMsg::Members { .. })).await;
            let done = pred(&listed(page.last().unwrap()));
            seen.extend(page);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the member list never matched");
}

/// The quiet flag crosses a cluster: a bot on node A is never announced to a user of node B
/// (who lists it as a bot), and B's operator can hide it there.
#[tokio::test]
async fn on_a_cluster_a_quiet_bot_on_another_node_is_not_announced_and_is_marked() {
    let nats = chatao_testkit::NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let op_key = fixed_keypair(7);
    let op_fp = op_key.public().fingerprint();
    let key_dir = dir.path().join("server-key");
    let key_dir = key_dir.to_str().unwrap();
    let node = |data: &str| {
        let data = dir.path().join(data);
        let args =
            ["--cluster", &nats.url(), "--key-dir", key_dir, "--op", &op_fp].map(str::to_owned);
        async move { chataosrv(&data, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let (_a, a_addr) = node("a").await;
    let (_b, b_addr) = node("b").await;
    let mut op = TestClient::connect_with(b_addr, "op", &op_key).await.unwrap();
    let mut seen = vec![];

    let mut bot = chatao(dir.path(), a_addr, "ci", &["--plain", "--quiet"]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    let mut bot_in = bot.stdin.take().unwrap();
    tokio::time::timeout(LIMIT, line_with(&mut out, "ready")).await.unwrap();
    bot_in.write_all(b"from node A\n").await.unwrap();
    seen.extend(
        until(&mut op, |m| matches!(m, ServerMsg::Message { text, .. } if text == "from node A"))
            .await,
    );
    who_until(&mut op, &mut seen, |l| l.contains(&("ci".into(), true))).await;
    op.send(&ClientMsg::Bots { room: "#lobby".into(), hide: true }).await.unwrap();
    who_until(&mut op, &mut seen, |l| l == [("op".to_owned(), false)]).await;
    drop(bot_in);
    assert_eq!(exit_status(&mut bot).await.code(), Some(0));

    // A plain user of node A coming and going after the bot left: node A's presence changes
    // arrive in order, so once its leave is here the bot's would have been.
    let plain = TestClient::connect(a_addr, "plain").await.unwrap();
    seen.extend(
        until(&mut op, |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "plain"))
            .await,
    );
    drop(plain);
    seen.extend(
        until(&mut op, |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "plain"))
            .await,
    );
    assert_eq!(about(&seen, "ci"), 0, "{seen:?}");
}
