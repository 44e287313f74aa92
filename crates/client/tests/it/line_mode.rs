//! The real `chatao` binary in line mode against a real server on loopback.
#![allow(clippy::unwrap_used)]

use crate::common::wait_line;
use std::process::Stdio;
use std::time::Duration;

use chatao_proto::{ServerMsg, decode_client, encode};
use chatao_testkit::{TestClient, TestServer, fixed_keypair};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const LIMIT: Duration = Duration::from_secs(30);

/// Starts `chatao` in line mode with its own key directory under `dir`.
fn chatao(dir: &std::path::Path, addr: std::net::SocketAddr, nick: &str, extra: &[&str]) -> Child {
    let target = [addr.ip().to_string(), addr.port().to_string()];
    chatao_testkit::chatao(
        env!("CARGO_BIN_EXE_chatao"),
        &[&target[0], &target[1]],
        nick,
        &dir.join(nick),
    )
    .args(extra)
    .spawn()
    .unwrap()
}

#[tokio::test]
async fn three_users_chat_and_everything_sent_before_eof_arrives() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut carol = TestClient::connect(server.addr, "carol").await.unwrap();

    let mut bob = chatao(dir.path(), server.addr, "bob", &[]);
    let mut bob_out = BufReader::new(bob.stdout.take().unwrap()).lines();
    wait_line(&mut bob_out, "connected to").await;
    carol
        .expect("bob", |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "bob"))
        .await
        .unwrap();

    let mut alice = chatao(dir.path(), server.addr, "alice", &[]);
    let mut stdin = alice.stdin.take().unwrap();
    stdin.write_all(b"hello everyone\n/me waves\nlast words\n").await.unwrap();
    drop(stdin); // EOF right after the last line
    let status = tokio::time::timeout(LIMIT, alice.wait()).await.unwrap().unwrap();
    assert!(status.success(), "alice exits 0 after EOF: {status:?}");

    // Everything alice sent reached the others, in order, before she left.
    assert!(wait_line(&mut bob_out, "alice joined #lobby").await.contains("SHA256:"));
    assert!(wait_line(&mut bob_out, "<alice> hello everyone").await.starts_with('['));
    wait_line(&mut bob_out, "* alice waves").await;
    wait_line(&mut bob_out, "<alice> last words").await;
    wait_line(&mut bob_out, "alice left #lobby (quit)").await;
    carol.expect_text("hello everyone").await.unwrap();
    carol.expect_text("last words").await.unwrap();

    carol.say("hi bob").await.unwrap();
    wait_line(&mut bob_out, "<carol> hi bob").await;
    bob.stdin.take().unwrap().write_all(b"/quit off to lunch\n").await.unwrap();
    let status = tokio::time::timeout(LIMIT, bob.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let m = carol
        .expect(
            "bob leaves",
            |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "bob"),
        )
        .await
        .unwrap();
    assert!(matches!(m, ServerMsg::Leave { message: Some(ref r), .. } if r == "off to lunch"));
}

#[tokio::test]
async fn json_mode_prints_one_object_per_event() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut carol = TestClient::connect(server.addr, "carol").await.unwrap();
    let mut bot = chatao(dir.path(), server.addr, "bot", &["--json"]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    let welcome: serde_json::Value =
        serde_json::from_str(&wait_line(&mut out, "welcome").await).unwrap();
    assert_eq!(welcome["nick"], "bot");
    assert_eq!(welcome["server_fingerprint"], server.fingerprint.as_str());
    carol
        .expect("bot", |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "bot"))
        .await
        .unwrap();
    carol.say("ping the bot").await.unwrap();
    let line = wait_line(&mut out, "ping the bot").await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["from"], "carol");
    assert_eq!(v["room"], "#lobby");
    assert!(v["id"].as_u64().unwrap() >= 1);
    assert!(v["time"].as_u64().unwrap() > 1_700_000_000_000);
    drop(carol);
    let v: serde_json::Value =
        serde_json::from_str(&wait_line(&mut out, "\"leave\"").await).unwrap();
    assert_eq!((v["nick"].as_str(), v["reason"].as_str()), (Some("carol"), Some("lost")));
    drop(bot.stdin.take());
    let status = tokio::time::timeout(LIMIT, bot.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_str(&wait_line(&mut out, "bye").await).unwrap();
    assert_eq!(v["type"], "bye");
}

/// What the client itself refuses (a command it cannot parse) is an `error` event in JSON,
/// like the server's refusals, and a `! ` line in plain text; the session goes on.
#[tokio::test]
async fn client_side_errors_are_error_events() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bot = chatao(dir.path(), server.addr, "bot", &["--json"]);
    let mut out = BufReader::new(bot.stdout.take().unwrap()).lines();
    wait_line(&mut out, "welcome").await;
    let mut stdin = bot.stdin.take().unwrap();
    stdin.write_all(b"/frobnicate\n/help\n").await.unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&wait_line(&mut out, "frobnicate").await).unwrap();
    assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some("client")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("/frobnicate"), "{v}");
    // Help stays a notice.
    let v: serde_json::Value = serde_json::from_str(&wait_line(&mut out, "/join").await).unwrap();
    assert_eq!(v["type"], "notice");
    drop(stdin);
    assert!(tokio::time::timeout(LIMIT, bot.wait()).await.unwrap().unwrap().success());

    let mut plain = chatao(dir.path(), server.addr, "plain", &[]);
    let mut out = BufReader::new(plain.stdout.take().unwrap()).lines();
    wait_line(&mut out, "connected to").await;
    let mut stdin = plain.stdin.take().unwrap();
    stdin.write_all(b"/frobnicate\n").await.unwrap();
    assert!(wait_line(&mut out, "frobnicate").await.starts_with("! "));
    // `/query NICK` opens a conversation in the TUI; line mode says how to write to NICK instead
    // of doing nothing. `/who` of a room nobody is in says there is no such room.
    stdin.write_all(b"/query bot\n/who #nosuch\n").await.unwrap();
    let query = wait_line(&mut out, "/query bot TEXT").await;
    assert!(query.starts_with("! ") && query.contains("/msg bot TEXT"), "{query}");
    assert!(wait_line(&mut out, "#nosuch").await.contains("no such room #nosuch"));
    drop(stdin);
    assert!(tokio::time::timeout(LIMIT, plain.wait()).await.unwrap().unwrap().success());
}

#[tokio::test]
async fn a_refused_nickname_is_an_error_on_stderr_and_a_failure_exit() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let child = chatao(dir.path(), server.addr, "alice", &[]);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.contains("belongs to another key"), "{err}");
    assert!(out.stdout.is_empty());
}

/// A nickname the server would refuse is a usage error before any connection: nothing reaches
/// the server (no `joined`/`left` in the lobby, no nickname registered), and the message names
/// the rule and the character that breaks it.
#[tokio::test]
async fn a_nickname_against_the_rules_is_refused_before_connecting() {
    // Nothing listens here: a client that tried to connect would say "cannot connect".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    for (nick, bad) in [("élodie", Some("'é'")), ("bad nick", Some("' '")), ("", None)] {
        let child = chatao(dir.path(), addr, nick, &[]);
        let out = tokio::time::timeout(LIMIT, child.wait_with_output()).await.unwrap().unwrap();
        assert_eq!(out.status.code(), Some(2), "{nick:?}: a usage error");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("1 to 32 ASCII letters"), "{nick:?}: {err}");
        if let Some(bad) = bad {
            assert!(err.contains(&format!("({bad} is not one of them)")), "{nick:?}: {err}");
        }
        assert!(!err.contains("cannot connect"), "{nick:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// Each failure says its cause once, and what to check.
#[tokio::test]
async fn a_server_that_cannot_be_reached_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = tokio::time::timeout(LIMIT, chatao(dir.path(), addr, "x", &[]).wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot connect to {addr}")), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "the cause once: {err}");
    assert!(err.contains(&format!("is chataosrv running on {addr}? The default port is 7000")));

    // An unknown host (`.invalid` never resolves, RFC 2606): said as such, once.
    let out = tokio::time::timeout(
        LIMIT,
        Command::new(env!("CARGO_BIN_EXE_chatao"))
            .args(["nosuch.invalid", "7000", "x", "--key-dir"])
            .arg(dir.path().join("x"))
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot find the server nosuch.invalid"), "{err}");
    assert!(err.contains("check the name"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let cause = err.split("nosuch.invalid: ").nth(1).unwrap().split(';').next().unwrap();
    assert_eq!(err.matches(cause).count(), 1, "the cause once: {err}");
}

/// A hostile server: completes the handshake, welcomes the client, then sends text full of
/// terminal escape sequences (a real server refuses such text; this one does not).
#[tokio::test]
async fn escape_sequences_from_a_hostile_server_print_as_harmless_text() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = chatao_transport::accept(stream, &fixed_keypair(9)).await.unwrap();
        let hello = conn.read_record().await.unwrap().unwrap();
        assert!(decode_client(&hello).is_ok());
        let raw = concat!(
            r#"{"type":"welcome","session":1,"nick":"x","fingerprint":"SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4","server":"evil\u001b[31m","#,
            r#""limits":{"max_text_bytes":100,"rate_per_sec":5,"burst":5}}"#,
            "\n",
            r##"{"type":"message","room":"#lobby","id":1,"time":0,"from":"eve","text":"\u001b]0;pwned\u0007\u001b[2J\u009b6n\u202eevil"}"##,
            "\n",
            r#"{"type":"error","code":"other","message":"\u001b[?1049h"}"#,
            "\n",
        );
        conn.write_record(&bytes::Bytes::from(raw)).await.unwrap();
        conn.write_record(&encode(&ServerMsg::Bye { code: None, reason: "\u{1b}c".into() }))
            .await
            .unwrap();
        let _ = conn.read_record().await;
    });
    let dir = tempfile::tempdir().unwrap();
    let child = chatao(dir.path(), addr, "x", &[]);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    for text in [&stdout, &stderr] {
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    }
    assert!(stdout.contains("<eve> ␛]0;pwned␇␛[2J"), "{stdout}");
}

/// What a hostile server puts in every string it sends: an OSC title set, a screen clear and a
/// cursor move, C1 controls (CSI U+009B, OSC U+009D, ST U+009C, NEL U+0085), bidirectional
/// controls and marks, a line separator, CR LF and a fake password prompt, a terminal reset.
const NASTY: &str = "\u{1b}]0;PWNED-TITLE\u{7}\u{1b}[2J\u{1b}[H\u{9b}2J\u{9d}0;C1-TITLE\u{9c}\
                     \u{202e}evil\u{2066}\u{200f}\u{61c}\u{200e}\u{2028}\u{2029}Password: \r\n\
                     \u{85}\u{1b}c";

/// True for what must never reach a terminal from the network: every C0 control but the
/// newline that ends a line (ESC among them), DEL, every C1 control, the bidirectional
/// controls and marks, and the line separators. Written out here, not taken from the crate.
fn is_forbidden_on_a_terminal(c: char) -> bool {
    let u = c as u32;
    (u < 0x20 && c != '\n')
        || (0x7f..=0x9f).contains(&u)
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

fn assert_inert(what: &str, bytes: &[u8]) {
    assert!(!bytes.contains(&0x1b), "{what}: an ESC byte in {:?}", String::from_utf8_lossy(bytes));
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    let bad: Vec<char> = text.chars().filter(|&c| is_forbidden_on_a_terminal(c)).collect();
    assert!(bad.is_empty(), "{what}: {bad:?} in {text:?}");
}

/// A hostile server with key 9: for its `i`th connection, after the handshake and `hello`, the
/// records of `script[i]` (JSON objects, written as they are: a real server would refuse such
/// text, this one does not); then it reads until the client closes. Connections past the script
/// are closed at once.
async fn hostile_server(script: Vec<Vec<serde_json::Value>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for records in script {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut conn = chatao_transport::accept(stream, &fixed_keypair(9)).await.unwrap();
                let hello = conn.read_record().await.unwrap().unwrap();
                assert!(decode_client(&hello).is_ok());
                for record in records {
                    let line = format!("{record}\n");
                    if conn.write_record(&bytes::Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                while let Ok(Some(_)) = conn.read_record().await {}
            });
        }
    });
    addr
}

/// A fingerprint, the one string a hostile server cannot fill (it does not decode otherwise:
/// `a_fingerprint_that_is_not_one_ends_the_session`).
const SOME_FP: &str = "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4";

fn welcome_record(nick: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "welcome", "session": 1, "nick": nick, "fingerprint": SOME_FP, "server": NASTY,
        "limits": {"max_text_bytes": 4000, "rate_per_sec": 5, "burst": 5},
    })
}

/// A server that says a key is something other than a fingerprint (here: escape sequences,
/// once at `welcome` and once in a `join`) breaks the protocol: the record does not decode,
/// the connection ends with a clear error (a protocol error, as for any record that does not
/// decode: the client tries again, then gives up), and nothing of it reaches the terminal.
#[tokio::test]
async fn a_fingerprint_that_is_not_one_ends_the_session() {
    let mut bad_welcome = welcome_record("x");
    bad_welcome["fingerprint"] = NASTY.into();
    let bad_join =
        serde_json::json!({"type": "join", "room": "#lobby", "nick": "eve", "fingerprint": NASTY});
    for script in [vec![bad_welcome], vec![welcome_record("x"), bad_join]] {
        let addr = hostile_server(vec![script]).await;
        let out = run_to_end(addr, "x", &["--reconnect-timeout", "1"]).await;
        assert_inert("stdout", &out.stdout);
        assert_inert("stderr", &out.stderr);
        // At `welcome` it is the first connection's error; in a session, the give-up's
        // last failure (and the `disconnected` line on stdout).
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("is `SHA256:` followed by 43 base64 characters"), "{stderr}");
        assert_eq!(out.status.code(), Some(1), "{stderr}");
    }
}

/// Runs `chatao` (line mode, `extra` flags) against `addr` to its end, stdin open throughout.
async fn run_to_end(
    addr: std::net::SocketAddr,
    nick: &str,
    extra: &[&str],
) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut child = chatao(dir.path(), addr, nick, extra);
    let _stdin = child.stdin.take();
    tokio::time::timeout(LIMIT, child.wait_with_output()).await.unwrap().unwrap()
}

/// Issue 15, item 3: a server that answers `hello` with a `bye` full of escape sequences (in
/// its reason, and an unknown code) cannot write them to the terminal: the refusal printed on
/// stderr by `main` shows them as harmless text, in plain and in JSON mode.
#[tokio::test]
async fn a_refusal_at_hello_cannot_take_over_the_terminal() {
    let bye = serde_json::json!({"type": "bye", "code": NASTY, "reason": NASTY});
    let addr = hostile_server(vec![vec![bye.clone()], vec![bye]]).await;
    for flags in [&[][..], &["--json"][..]] {
        let out = run_to_end(addr, "x", flags).await;
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert_inert("stdout", &out.stdout);
        assert_inert("stderr", &out.stderr);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("the server refused: ␛]0;PWNED-TITLE␇␛[2J"), "{flags:?}: {err}");
        assert!(err.contains("(other)"), "an unknown code is `other`: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line, no fake prompt: {err}");
    }
}

/// Issue 15, item 3: every string of a hostile server, once welcomed (its name, messages,
/// errors, notices, topics, reasons, a `bye` for shutdown, then a refusal on reconnection and a
/// `bye` that ends the session), reaches stdout and stderr without a single control, C1 or
/// bidi character, in plain mode and in JSON (where they are `\u`-escaped and decode intact).
#[tokio::test]
async fn a_hostile_server_cannot_write_controls_anywhere() {
    use serde_json::json;
    let session = || {
        vec![
            welcome_record("x"),
            json!({"type": "message", "room": "#lobby", "id": 1, "time": 0, "from": "eve", "text": NASTY}),
            json!({"type": "private", "id": 2, "time": 0, "from": "eve", "to": "x", "text": NASTY}),
            json!({"type": "error", "code": "other", "message": NASTY}),
            json!({"type": "notice", "text": NASTY}),
            json!({"type": "topic", "room": "#lobby", "text": NASTY, "by": "eve"}),
            json!({"type": "away", "nick": "eve", "reason": NASTY}),
            json!({"type": "join", "room": "#lobby", "nick": "eve", "fingerprint": SOME_FP}),
            json!({"type": "leave", "room": "#lobby", "nick": "eve", "reason": "part", "message": NASTY}),
            json!({"type": "moderation", "action": "kick", "target": NASTY, "by": "eve", "reason": NASTY}),
        ]
    };
    let shutdown = json!({"type": "bye", "code": "shutdown", "reason": NASTY});
    let refusal = json!({"type": "bye", "code": "other", "reason": NASTY});
    let kicked = json!({"type": "bye", "code": "kicked", "reason": NASTY});
    for flags in [&[][..], &["--json"][..]] {
        // Welcomed, then `bye shutdown`: reconnection, refused for good (the give-up report).
        let mut first = session();
        first.push(shutdown.clone());
        let addr = hostile_server(vec![first, vec![refusal.clone()]]).await;
        let gave_up = run_to_end(addr, "x", flags).await;
        // Welcomed, then disconnected for good by the server.
        let mut only = session();
        only.push(kicked.clone());
        let addr = hostile_server(vec![only]).await;
        let kicked_out = run_to_end(addr, "x", flags).await;
        for out in [&gave_up, &kicked_out] {
            assert_eq!(out.status.code(), Some(1), "{flags:?}");
            assert_inert("stdout", &out.stdout);
            assert_inert("stderr", &out.stderr);
        }
        let stdout = String::from_utf8(gave_up.stdout).unwrap();
        let stderr = String::from_utf8(gave_up.stderr).unwrap();
        assert!(stderr.contains("the server refused: ␛]0;PWNED-TITLE"), "{stderr}");
        let kicked_err = String::from_utf8(kicked_out.stderr).unwrap();
        assert!(kicked_err.contains("disconnected by the server: ␛]0;PWNED"), "{kicked_err}");
        if flags.is_empty() {
            assert!(stdout.contains("<eve> ␛]0;PWNED-TITLE␇␛[2J␛[H"), "{stdout}");
            assert!(stdout.contains("reconnecting"), "{stdout}");
        } else {
            let events: Vec<serde_json::Value> =
                stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            let of = |t: &str| events.iter().find(|e| e["type"] == t).unwrap();
            assert_eq!(of("welcome")["server"], NASTY, "escaped, not altered");
            assert_eq!(of("message")["text"], NASTY);
            assert_eq!(of("notice")["text"], NASTY);
            assert!(stdout.contains(r"\u009b2J") && stdout.contains(r"\u202eevil"), "{stdout}");
        }
    }
}

/// Issue 15, item 6: `ok` and ninety spaces would push the rest of a message to the start of
/// the next terminal row, where it passes for a line of its own. Plain output collapses long
/// runs of blanks (zero-width characters between them included) and drops trailing ones.
#[tokio::test]
async fn padding_cannot_make_a_message_look_like_another_line() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = chatao(dir.path(), server.addr, "bob", &[]);
    let mut out = BufReader::new(bob.stdout.take().unwrap()).lines();
    wait_line(&mut out, "connected to").await;
    alice
        .expect("bob", |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "bob"))
        .await
        .unwrap();
    let fake = "[18:20:29] #lobby <alice> please type your password";
    alice.say(&format!("ok{}{fake}", " ".repeat(90))).await.unwrap();
    alice.say(&format!("two{}{fake}", " \u{200B}\u{3000}\u{2800}".repeat(30))).await.unwrap();
    alice.say(&format!("trailing{}", " ".repeat(200))).await.unwrap();
    alice.say("a   b").await.unwrap();
    let first = wait_line(&mut out, "<alice> ok").await;
    assert!(first.ends_with(&format!("<alice> ok␠…{fake}")), "{first:?}");
    let second = wait_line(&mut out, "<alice> two").await;
    assert!(second.ends_with(&format!("<alice> two␠…{fake}")), "{second:?}");
    let third = wait_line(&mut out, "<alice> trailing").await;
    assert!(third.ends_with("<alice> trailing"), "{third:?}");
    let fourth = wait_line(&mut out, "<alice> a").await;
    assert!(fourth.ends_with("<alice> a   b"), "short runs stay: {fourth:?}");
    drop(bob.stdin.take());
    assert!(tokio::time::timeout(LIMIT, bob.wait()).await.unwrap().unwrap().success());
}

#[tokio::test]
async fn a_changed_server_key_is_refused_before_anything_is_sent() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("alice");
    std::fs::create_dir_all(&key_dir).unwrap();
    let wrong = fixed_keypair(1).public().fingerprint();
    let host_port = format!("{}:{}", server.addr.ip(), server.addr.port());
    std::fs::write(key_dir.join("known_servers"), format!("{host_port} {wrong}\n")).unwrap();
    let out = tokio::time::timeout(
        LIMIT,
        chatao(dir.path(), server.addr, "alice", &[]).wait_with_output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HAS CHANGED")
            && err.contains(wrong.as_str())
            && err.contains(server.fingerprint.as_str()),
        "{err}"
    );
    // The server never saw alice: her nickname is free.
    TestClient::connect(server.addr, "alice").await.unwrap();
}

#[tokio::test]
async fn an_explicit_server_key_is_enforced_on_first_use() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = fixed_keypair(1).public().fingerprint();
    let out = tokio::time::timeout(
        LIMIT,
        chatao(dir.path(), server.addr, "a", &["--server-key", &wrong]).wait_with_output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-key expects"));
    let mut ok = chatao(dir.path(), server.addr, "b", &["--server-key", &server.fingerprint]);
    drop(ok.stdin.take());
    let status = tokio::time::timeout(LIMIT, ok.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

/// `chatao --man` is a whole manual page: beyond `--help`'s options, every /command, the
/// full-screen keys, the files, the environment, the exit status and examples.
#[test]
fn the_manual_page_has_every_section() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_chatao")).arg("--man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "KEYS",
        "FILES",
        "ENVIRONMENT",
        "EXIT STATUS",
        "EXAMPLES",
    ] {
        assert!(
            page.contains(&format!(".SH {section}\n"))
                || page.contains(&format!(".SH \"{section}\"\n")),
            "no {section}"
        );
    }
    for name in chatao_client::command::COMMANDS.iter().map(|(n, _, _)| n) {
        assert!(page.contains(&format!("/{name}")), "/{name} is not on the page");
    }
    for needle in ["Ctrl\\-N", "known_servers", "CHATAO_SERVERS", "\\-\\-e2e\\-dir"] {
        assert!(page.contains(needle), "{needle} is not on the page");
    }
}
