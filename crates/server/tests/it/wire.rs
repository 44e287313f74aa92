//! What crosses the wire: a recording relay between real clients and the real server shows no
//! nickname or message text in either direction, and a byte flipped in transit ends that
//! connection (the others carry on).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chatao_proto::{LeaveReason, ServerMsg};
use chatao_testkit::{TestClient, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A relay in front of `upstream` that records every byte in both directions and, when
/// `flip_at` is set, flips the bit 0 of the client-to-server byte at that offset.
async fn relay(upstream: SocketAddr, flip_at: Option<usize>) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let wire: Arc<Mutex<Vec<u8>>> = Arc::default();
    let w = wire.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let server = TcpStream::connect(upstream).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (w1, w2) = (w.clone(), w.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut offset = 0;
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    w1.lock().unwrap().extend_from_slice(&buf[..n]);
                    if let Some(at) = flip_at
                        && (offset..offset + n).contains(&at)
                    {
                        buf[at - offset] ^= 1;
                    }
                    offset += n;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    w2.lock().unwrap().extend_from_slice(&buf[..n]);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, wire)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_nickname_or_text_ever_crosses_the_wire_in_clear() {
    let server = TestServer::start().await;
    let (addr, wire) = relay(server.addr, None).await;
    let mut alice = TestClient::connect(addr, "alicewonderland").await.unwrap();
    let mut bob = TestClient::connect(addr, "bobthebuilder").await.unwrap();
    alice.join("#secretroom").await.unwrap();
    bob.join("#secretroom").await.unwrap();
    alice.say_in("#secretroom", "the eagle lands at midnight").await.unwrap();
    bob.expect_text("the eagle lands at midnight").await.unwrap();
    bob.send(&chatao_proto::ClientMsg::Msg {
        cid: None,
        to: "alicewonderland".into(),
        text: "private words".into(),
    })
    .await
    .unwrap();
    alice.expect("private", |m| matches!(m, ServerMsg::Private { .. })).await.unwrap();
    let wire = wire.lock().unwrap();
    assert!(wire.len() > 500, "traffic was recorded");
    for secret in [
        "alicewonderland",
        "bobthebuilder",
        "secretroom",
        "eagle",
        "midnight",
        "private words",
        "\"type\"",
    ] {
        assert!(!contains(&wire, secret), "{secret:?} crossed the wire in clear");
    }
    assert!(contains(&wire, "CHATAO"), "only the version preamble is clear text");
}

#[tokio::test]
async fn a_byte_flipped_in_transit_ends_that_connection_only() {
    let server = TestServer::start().await;
    let mut watcher = TestClient::connect(server.addr, "watcher").await.unwrap();
    // Client-to-server: 8 (preamble) + 34 (message 1) + 66 (message 3) bytes of handshake, then
    // the hello frame (2 + 33 + 16); flip a byte inside the first transport frame after hello.
    let hello = 2 + r#"{"type":"hello","nick":"victim"}"#.len() + 1 + 16;
    let (addr, _wire) = relay(server.addr, Some(8 + 34 + 66 + hello + 12)).await;
    let mut victim = TestClient::connect(addr, "victim").await.unwrap();
    victim.say("this frame will be corrupted").await.unwrap();
    let rest = victim.read_to_end().await.unwrap();
    assert!(!rest.iter().any(|m| matches!(m, ServerMsg::Message { .. })), "{rest:?}");
    let m = watcher
        .expect(
            "victim leaves",
            |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "victim"),
        )
        .await
        .unwrap();
    assert!(matches!(m, ServerMsg::Leave { reason: LeaveReason::Lost, .. }));
    watcher.say("still fine").await.unwrap();
    watcher.expect_text("still fine").await.unwrap();
}
