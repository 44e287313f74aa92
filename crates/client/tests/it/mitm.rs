//! A man in the middle between the real `chatao` binary and a real server: the first
//! connection goes through a transparent relay (the client pins the real server's key); the
//! second meets a proxy that terminates the handshake with its own key. The client must refuse,
//! show both fingerprints, and send nothing the user typed.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatao_testkit::{TestServer, fixed_keypair};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `chatao` against `port` with `input` on stdin; returns (exit code, stdout, stderr).
async fn chatao(
    key_dir: &std::path::Path,
    port: u16,
    input: &str,
) -> (Option<i32>, String, String) {
    let mut child = chatao_testkit::chatao(
        env!("CARGO_BIN_EXE_chatao"),
        &["127.0.0.1", &port.to_string()],
        "alice",
        key_dir,
    )
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output()).await.unwrap().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_man_in_the_middle_is_refused_and_learns_nothing() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = proxy.local_addr().unwrap().port();
    let upstream = server.addr;
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let handshake_result: Arc<Mutex<Option<String>>> = Arc::default();
    let (seen2, result2) = (seen.clone(), handshake_result.clone());
    tokio::spawn(async move {
        // Connection 1: a transparent relay to the real server.
        let (mut client, _) = proxy.accept().await.unwrap();
        let mut server = TcpStream::connect(upstream).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        // Connection 2: the attacker answers with its own key and records every byte.
        let (client, _) = proxy.accept().await.unwrap();
        let recorder = Recorder { inner: client, seen: seen2 };
        let outcome = chatao_transport::accept(recorder, &fixed_keypair(66)).await;
        *result2.lock().unwrap() = Some(match outcome {
            Ok(_) => "completed".into(),
            Err(e) => e.to_string(),
        });
    });

    let (code, stdout, stderr) = chatao(dir.path(), port, "first contact\n").await;
    assert_eq!(code, Some(0), "first connection through the relay: {stderr}");
    assert!(stdout.contains(server.fingerprint.as_str()));
    assert!(stderr.contains("now pinned"), "{stderr}");

    let (code, stdout, stderr) = chatao(dir.path(), port, "my secret plans\n").await;
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    let attacker = fixed_keypair(66).public().fingerprint();
    assert!(stderr.contains("HAS CHANGED"), "{stderr}");
    assert!(
        stderr.contains(server.fingerprint.as_str()) && stderr.contains(attacker.as_str()),
        "{stderr}"
    );
    assert!(stderr.contains("man-in-the-middle"), "{stderr}");

    tokio::time::timeout(LIMIT, async {
        while handshake_result.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let result = handshake_result.lock().unwrap().clone().unwrap();
    assert!(result.contains("closed"), "the client never completed the handshake: {result}");
    let seen = seen.lock().unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(!text.contains("secret") && !text.contains("alice"), "the proxy saw: {text:?}");
    // Only the preamble and Noise message 1 (32 bytes of ephemeral key) reached the proxy.
    assert_eq!(seen.len(), 8 + 2 + 32);
}

/// A stream that records everything read from it.
struct Recorder {
    inner: TcpStream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Recorder {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&new);
        r
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
