//! Handshake messages are bounded by what Noise XX needs, over real sockets on loopback: a peer
//! announcing a longer message (up to the 64 KiB a length prefix allows) is refused at its
//! length prefix, before the body is read or any room is made for it, on either side; the real
//! client still connects.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_transport::handshake::{MSG1_LEN, MSG2_LEN, MSG3_LEN};
use chatao_transport::preamble::{PREAMBLE_LEN, Preamble, prologue};
use chatao_transport::{HandshakeError, Keypair, NOISE_PARAMS, accept, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Guard against a hang: the refusals below come at once, this only turns a wait for a body
/// that never comes into a failure instead of a stuck test.
const LIMIT: Duration = Duration::from_secs(10);

const PREAMBLE: Preamble = Preamble { version: 1 };

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Reads until the peer closes; `None` if it did not within [`LIMIT`].
async fn until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(LIMIT, read).await.ok()?;
    Some(got)
}

/// A server that runs the real `accept` on one connection and hands back its outcome; the
/// socket is dropped (closed) as soon as `accept` returns.
fn serve_one(l: TcpListener) -> tokio::task::JoinHandle<Result<(), HandshakeError>> {
    tokio::spawn(async move {
        let (stream, _) = l.accept().await.unwrap();
        accept(stream, &Keypair::from_secret([0x5e; 32])).await.map(|_| ())
    })
}

#[tokio::test]
async fn a_64_kib_first_handshake_message_is_refused_at_its_length_prefix() {
    let (l, addr) = listener().await;
    let server = serve_one(l);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&PREAMBLE.to_bytes()).await.unwrap();
    // The length prefix only: the body never comes, and the socket stays open for writing.
    s.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
    let got = until_closed(&mut s).await.expect("the server waited for the 64 KiB body");
    assert_eq!(got, PREAMBLE.to_bytes(), "only the preamble came back");
    let err = server.await.unwrap().unwrap_err();
    assert!(matches!(err, HandshakeError::WrongLength { got: 65535, want: MSG1_LEN }), "{err:?}");
}

#[tokio::test]
async fn a_first_message_one_byte_too_long_is_refused_too() {
    let (l, addr) = listener().await;
    let server = serve_one(l);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&PREAMBLE.to_bytes()).await.unwrap();
    let len = u16::try_from(MSG1_LEN + 1).unwrap();
    s.write_all(&len.to_be_bytes()).await.unwrap();
    until_closed(&mut s).await.expect("the server waited for the body");
    let err = server.await.unwrap().unwrap_err();
    assert!(matches!(err, HandshakeError::WrongLength { want: MSG1_LEN, .. }), "{err:?}");
}

#[tokio::test]
async fn a_64_kib_third_handshake_message_is_refused_at_its_length_prefix() {
    let (l, addr) = listener().await;
    let server = serve_one(l);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&PREAMBLE.to_bytes()).await.unwrap();
    let mut theirs = [0u8; PREAMBLE_LEN];
    s.read_exact(&mut theirs).await.unwrap();
    // A genuine initiator up to message 3, whose length prefix then announces 64 KiB.
    let client = Keypair::from_secret([0x11; 32]);
    let mut hs = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
        .local_private_key(client.secret_bytes())
        .unwrap()
        .prologue(&prologue(PREAMBLE, Preamble::parse(&theirs).unwrap()))
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = [0u8; 128];
    let n = hs.write_message(&[], &mut msg).unwrap();
    assert_eq!(n, MSG1_LEN);
    s.write_all(&u16::try_from(n).unwrap().to_be_bytes()).await.unwrap();
    s.write_all(&msg[..n]).await.unwrap();
    let mut msg2 = [0u8; 2 + MSG2_LEN];
    s.read_exact(&mut msg2).await.unwrap();
    assert_eq!(usize::from(u16::from_be_bytes([msg2[0], msg2[1]])), MSG2_LEN);
    hs.read_message(&msg2[2..], &mut [0u8; 128]).unwrap();
    s.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
    let got = until_closed(&mut s).await.expect("the server waited for the 64 KiB body");
    assert!(got.is_empty(), "nothing more came back: {got:?}");
    let err = server.await.unwrap().unwrap_err();
    assert!(matches!(err, HandshakeError::WrongLength { got: 65535, want: MSG3_LEN }), "{err:?}");
}

#[tokio::test]
async fn a_hostile_server_announcing_64_kib_is_refused_by_the_client_at_the_prefix() {
    let (l, addr) = listener().await;
    let hostile = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut theirs = [0u8; PREAMBLE_LEN];
        s.read_exact(&mut theirs).await.unwrap();
        s.write_all(&PREAMBLE.to_bytes()).await.unwrap();
        let mut msg1 = [0u8; 2 + MSG1_LEN];
        s.read_exact(&mut msg1).await.unwrap();
        s.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
        // Keeps the socket open until the client gives up on it.
        until_closed(&mut s).await.expect("the client waited for the 64 KiB body");
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let outcome =
        tokio::time::timeout(LIMIT, connect(stream, &Keypair::from_secret([0x11; 32]), |_| Ok(())))
            .await
            .expect("the client waited for the 64 KiB body");
    let err = outcome.unwrap_err();
    assert!(matches!(err, HandshakeError::WrongLength { got: 65535, want: MSG2_LEN }), "{err:?}");
    hostile.await.unwrap();
}

#[tokio::test]
async fn the_real_client_still_connects_and_talks() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (stream, _) = l.accept().await.unwrap();
        let mut conn = accept(stream, &Keypair::from_secret([0x5e; 32])).await.unwrap();
        let record = conn.read_record().await.unwrap().unwrap();
        assert_eq!(record.strip_suffix(b"\n").unwrap_or(&record), b"hello");
        conn.write_record(&bytes::Bytes::from_static(b"welcome\n")).await.unwrap();
        conn.shutdown().await.unwrap();
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let server_key = *Keypair::from_secret([0x5e; 32]).public();
    let mut conn = tokio::time::timeout(
        LIMIT,
        connect(stream, &Keypair::from_secret([0x11; 32]), |k| {
            assert_eq!(*k, server_key);
            Ok(())
        }),
    )
    .await
    .unwrap()
    .unwrap();
    conn.write_record(&bytes::Bytes::from_static(b"hello\n")).await.unwrap();
    let reply = tokio::time::timeout(LIMIT, conn.read_record()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.strip_suffix(b"\n").unwrap_or(&reply), b"welcome");
    server.await.unwrap();
}
