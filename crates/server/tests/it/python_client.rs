//! An independent client against the real server: docs/examples/chatao_client.py was written in
//! Python from docs/PROTOCOL.md alone, so this test checks that the document is enough to
//! interoperate (preamble, Noise XX, framing, records, hello, join, chat, ping, quit).
//!
//! Needs `python3` with the `noiseprotocol` package: `pip install -r
//! docs/examples/requirements.txt`. Without them the test fails (it does not skip), so that CI
//! cannot pass without running it.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use chatao_proto::{LeaveReason, ServerMsg, decode_server};
use chatao_testkit::{TestClient, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples/chatao_client.py");
const INSTALL: &str = "pip install -r docs/examples/requirements.txt";
/// Longest wait for any one thing the Python client should do.
const STEP: Duration = Duration::from_secs(20);

/// Fails with instructions when python3 or noiseprotocol is missing.
async fn require_python() {
    let probe = Command::new("python3")
        .args(["-c", "from noise.connection import NoiseConnection"])
        .output()
        .await;
    match probe {
        Err(e) => panic!(
            "this test needs python3, which could not be run ({e}): install Python 3, then `{INSTALL}`"
        ),
        Ok(out) if !out.status.success() => panic!(
            "this test needs the Python package noiseprotocol: run `{INSTALL}`\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}

/// The Python client as a child process: its stdin, its stdout as decoded server messages.
struct Python {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
    stderr: JoinHandle<String>,
}

impl Python {
    fn start(port: u16, nick: &str) -> Python {
        let mut child = Command::new("python3")
            .arg(CLIENT)
            .args(["127.0.0.1", &port.to_string(), nick])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Python { child, stdin, stdout, seen: vec![], stderr }
    }

    /// Reads the client's output until a server message matches `pred`. Every line must be one
    /// server message: the client prints exactly what it received.
    async fn expect(&mut self, what: &str, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let line = match timeout(STEP, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => self.fail(&format!("output ended while waiting for {what}")).await,
                Ok(Err(e)) => self.fail(&format!("reading output: {e}")).await,
                Err(_) => self.fail(&format!("timed out waiting for {what}")).await,
            };
            self.seen.push(line.clone());
            match decode_server(line.as_bytes()) {
                Ok(m) if pred(&m) => return m,
                Ok(_) => {}
                Err(e) => {
                    self.fail(&format!("printed a line that is not a server message: {e}")).await
                }
            }
        }
    }

    /// Panics with everything the client printed.
    async fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill().await;
        let stderr = timeout(STEP, &mut self.stderr).await.ok().and_then(Result::ok);
        panic!(
            "python client: {why}\n--- its stdout:\n{}\n--- its stderr:\n{}",
            self.seen.join("\n"),
            stderr.unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn the_python_client_written_from_the_protocol_document_chats_with_the_real_server() {
    require_python().await;
    let server = TestServer::start().await;
    let mut rusty = TestClient::connect(server.addr, "rusty").await.unwrap();
    rusty
        .expect(
            "own join",
            |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "rusty"),
        )
        .await
        .unwrap();

    let mut py = Python::start(server.addr.port(), "pybot");
    let is_pybot = |nick: &chatao_proto::Nick| nick.as_str() == "pybot";
    if let Err(e) = rusty
        .expect("pybot's join", |m| matches!(m, ServerMsg::Join { nick, .. } if is_pybot(nick)))
        .await
    {
        py.fail(&format!("never joined: {e:#}")).await;
    }
    let welcome = py.expect("welcome", |m| matches!(m, ServerMsg::Welcome { .. })).await;
    assert!(
        matches!(&welcome, ServerMsg::Welcome { nick, fingerprint, .. } if is_pybot(nick) && fingerprint.starts_with("SHA256:")),
        "{welcome:?}"
    );
    py.expect(
        "the lobby's members",
        |m| matches!(m, ServerMsg::Members { members, .. } if members.len() == 2),
    )
    .await;

    // Python -> Rust: a line on the client's standard input becomes a message in the room.
    let stdin = py.stdin.as_mut().unwrap();
    stdin.write_all("hello from python, ünïcode ✓\n".as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    match rusty.expect_text("hello from python, ünïcode ✓").await {
        Ok(ServerMsg::Message { from, .. }) if is_pybot(&from) => {}
        Ok(other) => py.fail(&format!("unexpected message {other:?}")).await,
        Err(e) => py.fail(&format!("its message never arrived: {e:#}")).await,
    }

    // Rust -> Python: a message in the room is printed by the client.
    rusty.say("hello from rust").await.unwrap();
    let m = py
        .expect(
            "rusty's message",
            |m| matches!(m, ServerMsg::Message { text, .. } if text == "hello from rust"),
        )
        .await;
    assert!(
        matches!(&m, ServerMsg::Message { from, history: false, .. } if from.as_str() == "rusty"),
        "{m:?}"
    );

    // End of input: the client says quit, the server answers bye, the room hears a quit.
    drop(py.stdin.take());
    let bye = py.expect("bye", |m| matches!(m, ServerMsg::Bye { .. })).await;
    assert_eq!(bye, ServerMsg::Bye { code: None, reason: "goodbye".into() });
    let leave = rusty
        .expect("pybot's leave", |m| matches!(m, ServerMsg::Leave { nick, .. } if is_pybot(nick)))
        .await
        .unwrap();
    assert!(matches!(leave, ServerMsg::Leave { reason: LeaveReason::Quit, .. }), "{leave:?}");
    let status = match timeout(STEP, py.child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => py.fail("did not exit after bye").await,
    };
    if !status.success() {
        py.fail(&format!("exited with {status}")).await;
    }
}
