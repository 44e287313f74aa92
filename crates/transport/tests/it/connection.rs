//! The transport over in-memory pipes: handshake outcomes, record framing and batching, and
//! that tampered, replayed, truncated and oversized input ends the connection.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use chatao_transport::{
    HandshakeError, Keypair, TransportError, accept, connect, handshake::Rejection,
    preamble::Preamble,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

const LIMIT: Duration = Duration::from_secs(10);

fn ok(_: &chatao_transport::PublicKey) -> Result<(), Rejection> {
    Ok(())
}

async fn pair()
-> (chatao_transport::Connection<DuplexStream>, chatao_transport::Connection<DuplexStream>) {
    let (c, s) = duplex(1 << 20);
    let ck = Keypair::generate().unwrap();
    let sk = Keypair::generate().unwrap();
    let server = tokio::spawn(async move { accept(s, &sk).await.unwrap() });
    let client = connect(c, &ck, ok).await.unwrap();
    (client, server.await.unwrap())
}

#[tokio::test]
async fn records_cross_in_both_directions_and_keys_are_authenticated() {
    tokio::time::timeout(LIMIT, async {
        let (c, s) = duplex(1 << 20);
        let ck = Keypair::generate().unwrap();
        let sk = Keypair::generate().unwrap();
        let (cpub, spub) = (*ck.public(), *sk.public());
        let server = tokio::spawn(async move { accept(s, &sk).await.unwrap() });
        let mut seen = None;
        let mut client = connect(c, &ck, |k| {
            seen = Some(*k);
            Ok(())
        })
        .await
        .unwrap();
        let mut server = server.await.unwrap();
        assert_eq!(seen, Some(spub));
        assert_eq!(*server.remote_key(), cpub);
        assert_eq!(*client.remote_key(), spub);

        client.write_record(&Bytes::from_static(b"hello\n")).await.unwrap();
        assert_eq!(server.read_record().await.unwrap().unwrap(), "hello");
        server
            .write_records(&[Bytes::from_static(b"a\n"), Bytes::from_static(b"b\n")])
            .await
            .unwrap();
        assert_eq!(client.read_record().await.unwrap().unwrap(), "a");
        assert_eq!(client.read_record().await.unwrap().unwrap(), "b");
        drop(server);
        assert!(client.read_record().await.unwrap().is_none(), "clean close reads as None");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_record_larger_than_a_frame_is_chunked_and_a_batch_shares_frames() {
    tokio::time::timeout(LIMIT, async {
        let (mut client, mut server) = pair().await;
        let mut big = vec![b'x'; 60_000];
        big.extend_from_slice(b"\n");
        let many: Vec<Bytes> =
            (0..1000).map(|i| Bytes::from(format!("message number {i}\n"))).collect();
        let mut batch = vec![Bytes::from(big.clone())];
        batch.extend(many.iter().cloned());
        let writer = tokio::spawn(async move {
            client.write_records(&batch).await.unwrap();
            client
        });
        assert_eq!(server.read_record().await.unwrap().unwrap().len(), 60_000);
        for m in &many {
            assert_eq!(server.read_record().await.unwrap().unwrap(), m[..m.len() - 1]);
        }
        writer.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_oversized_record_ends_the_connection() {
    tokio::time::timeout(LIMIT, async {
        let (mut client, mut server) = pair().await;
        server.set_max_record(1000);
        tokio::spawn(async move {
            let _ = client.write_record(&Bytes::from(vec![b'y'; 200_000])).await;
        });
        let err = server.read_record().await.unwrap_err();
        assert!(matches!(err, TransportError::RecordTooLarge { max: 1000 }), "{err:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_version_mismatch_names_both_versions() {
    tokio::time::timeout(LIMIT, async {
        let (c, mut s) = duplex(4096);
        tokio::spawn(async move {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&Preamble { version: 9 }.to_bytes()).await.unwrap();
            let _ = s.read(&mut b).await;
        });
        let err = connect(c, &Keypair::generate().unwrap(), ok).await.unwrap_err();
        assert!(matches!(err, HandshakeError::VersionMismatch { ours: 1, theirs: 9 }));
        let text = err.to_string();
        assert!(text.contains("version 1") && text.contains("version 9"), "{text}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_non_chatao_peer_is_refused() {
    tokio::time::timeout(LIMIT, async {
        let (mut c, s) = duplex(4096);
        let server = tokio::spawn(async move { accept(s, &Keypair::generate().unwrap()).await });
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(HandshakeError::NotChatao)));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_rejected_server_key_stops_the_client_before_it_reveals_its_key() {
    tokio::time::timeout(LIMIT, async {
        let (c, s) = duplex(4096);
        let server = tokio::spawn(async move { accept(s, &Keypair::generate().unwrap()).await });
        let err = connect(c, &Keypair::generate().unwrap(), |_| Err("pinned key differs".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Rejected(_)));
        assert_eq!(err.to_string(), "pinned key differs");
        // The server never received message 3, which carries the client's key.
        assert!(matches!(server.await.unwrap(), Err(HandshakeError::Closed)));
    })
    .await
    .unwrap();
}

/// What the man in the middle does to the first transport frame from the client.
#[derive(Clone, Copy)]
enum Tamper {
    FlipByte,
    Replay,
    Truncate,
}

/// Forwards client-to-server bytes frame by frame (after the 8-byte preamble) and applies
/// `tamper` to the first frame after the handshake's two client messages. Server-to-client bytes
/// pass untouched.
async fn mitm(client_side: DuplexStream, server_side: DuplexStream, tamper: Tamper) {
    let (mut cr, mut cw) = tokio::io::split(client_side);
    let (mut sr, mut sw) = tokio::io::split(server_side);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    });
    let mut pre = [0u8; 8];
    cr.read_exact(&mut pre).await.unwrap();
    sw.write_all(&pre).await.unwrap();
    for index in 0.. {
        let mut len = [0u8; 2];
        if cr.read_exact(&mut len).await.is_err() {
            break;
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        cr.read_exact(&mut body).await.unwrap();
        if index != 2 {
            sw.write_all(&len).await.unwrap();
            sw.write_all(&body).await.unwrap();
            continue;
        }
        match tamper {
            Tamper::FlipByte => {
                let mid = body.len() / 2;
                body[mid] ^= 0x01;
                sw.write_all(&len).await.unwrap();
                sw.write_all(&body).await.unwrap();
            }
            Tamper::Replay => {
                for _ in 0..2 {
                    sw.write_all(&len).await.unwrap();
                    sw.write_all(&body).await.unwrap();
                }
            }
            Tamper::Truncate => {
                sw.write_all(&len).await.unwrap();
                sw.write_all(&body[..body.len() / 2]).await.unwrap();
                sw.shutdown().await.unwrap();
                return;
            }
        }
    }
}

/// Runs a handshake through [`mitm`], sends one record, and returns what the server read: the
/// first read and, when that succeeded, the second.
async fn through_mitm(tamper: Tamper) -> Vec<Result<Option<Bytes>, TransportError>> {
    let (c, pc) = duplex(1 << 16);
    let (ps, s) = duplex(1 << 16);
    tokio::spawn(mitm(pc, ps, tamper));
    let sk = Keypair::generate().unwrap();
    let server = tokio::spawn(async move { accept(s, &sk).await.unwrap() });
    let mut client = connect(c, &Keypair::generate().unwrap(), ok).await.unwrap();
    let mut server = server.await.unwrap();
    client.write_record(&Bytes::from_static(b"attack at dawn\n")).await.unwrap();
    let first = server.read_record().await;
    let mut out = vec![];
    let go_on = first.is_ok();
    out.push(first);
    if go_on {
        out.push(server.read_record().await);
    }
    out
}

#[tokio::test]
async fn a_flipped_byte_ends_the_connection() {
    let reads = tokio::time::timeout(LIMIT, through_mitm(Tamper::FlipByte)).await.unwrap();
    assert!(matches!(reads[..], [Err(TransportError::Decrypt)]), "{reads:?}");
}

#[tokio::test]
async fn a_replayed_frame_ends_the_connection() {
    let reads = tokio::time::timeout(LIMIT, through_mitm(Tamper::Replay)).await.unwrap();
    assert_eq!(reads[0].as_ref().unwrap().as_deref(), Some(&b"attack at dawn"[..]));
    assert!(matches!(reads[1], Err(TransportError::Decrypt)), "{reads:?}");
}

#[tokio::test]
async fn a_truncated_frame_ends_the_connection() {
    let reads = tokio::time::timeout(LIMIT, through_mitm(Tamper::Truncate)).await.unwrap();
    assert!(matches!(reads[..], [Err(TransportError::Truncated)]), "{reads:?}");
}

#[tokio::test]
async fn buffered_records_come_without_a_read_and_none_means_a_read_is_needed() {
    tokio::time::timeout(LIMIT, async {
        let (mut client, mut server) = pair().await;
        assert!(client.buffered_record().unwrap().is_none(), "nothing received yet");
        // Two batches: two frames in the pipe before the client reads.
        let batch: Vec<Bytes> = (0..3).map(|i| Bytes::from(format!("r{i}\n"))).collect();
        server.write_records(&batch).await.unwrap();
        server.write_records(&[Bytes::from_static(b"late\n")]).await.unwrap();
        assert_eq!(client.read_record().await.unwrap().unwrap(), "r0");
        let mut rest = Vec::new();
        while let Some(r) = client.buffered_record().unwrap() {
            rest.push(String::from_utf8(r.to_vec()).unwrap());
        }
        // What the first read brought in: the rest of its frame, and the second frame if the
        // same read took it; never a record out of order.
        assert!(rest.len() >= 2, "{rest:?}");
        assert_eq!(&rest[..2], ["r1", "r2"]);
        if rest.len() == 2 {
            assert_eq!(client.read_record().await.unwrap().unwrap(), "late");
        } else {
            assert_eq!(rest[2], "late");
        }
        assert!(client.buffered_record().unwrap().is_none());
    })
    .await
    .unwrap();
}
