//! Arbitrary bytes against the transport, as property tests in the normal suite; the fuzz
//! targets in fuzz/ (`handshake`, `frame`) run the same entry points for longer.
//!
//! - The server side of the handshake fails cleanly on anything but a genuine client.
//! - An established connection fed a mix of raw ciphertext and genuinely sealed plaintext never
//!   panics, and never returns a record over its limit or with a newline inside.
//! - Records round-trip through the framing however a sender batches them.
//!
//! Regression tests for inputs the fuzzers found go at the end, named after what they guard.
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use chatao_transport::{Connection, Keypair, accept, connect};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

const MAX_RECORD: usize = 4096;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn server_keys() -> Keypair {
    Keypair::from_secret([0x5e; 32])
}

/// A stream with two writers: the genuine client's connection, and a raw writer that goes
/// around its encryption.
#[derive(Clone)]
struct Shared(Arc<Mutex<DuplexStream>>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.lock().unwrap()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.lock().unwrap()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.lock().unwrap()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.lock().unwrap()).poll_shutdown(cx)
    }
}

/// What goes into the server's connection after the handshake.
#[derive(Debug, Clone)]
enum Chunk {
    /// Written as it is into the ciphertext stream.
    Raw(Vec<u8>),
    /// Sealed into frames by the genuine client.
    Sealed(Vec<u8>),
}

/// Runs a genuine handshake over an in-memory pipe, writes `chunks`, closes, and returns
/// every record the server read before the end of the stream or its first error, and whether
/// it ended in an error.
async fn feed(chunks: Vec<Chunk>) -> (Vec<Bytes>, bool) {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let client_end = Shared(Arc::new(Mutex::new(client_end)));
    let mut raw = client_end.clone();
    let sk = server_keys();
    let ck = Keypair::from_secret([0xc1; 32]);
    let (server, client) =
        tokio::join!(accept(server_end, &sk), connect(client_end, &ck, |_| Ok(())));
    let (mut server, mut client): (Connection<DuplexStream>, Connection<Shared>) =
        (server.unwrap(), client.unwrap());
    server.set_max_record(MAX_RECORD);
    let write = async move {
        for chunk in chunks {
            let sent = match chunk {
                Chunk::Raw(b) => raw.write_all(&b).await.is_ok(),
                Chunk::Sealed(b) => client.write_records(&[Bytes::from(b)]).await.is_ok(),
            };
            if !sent {
                break;
            }
        }
    };
    let read = async move {
        let mut records = Vec::new();
        loop {
            match server.read_record().await {
                Ok(Some(r)) => records.push(r),
                Ok(None) => return (records, false),
                Err(_) => return (records, true),
            }
        }
    };
    tokio::join!(write, read).1
}

fn chunk() -> impl Strategy<Value = Chunk> {
    let bytes = prop::collection::vec(any::<u8>(), 0..3000);
    // Sealed chunks are mostly text with newlines, so that whole records come out.
    let lines = prop::collection::vec("[a-z{}\":,]{0,200}\n?", 0..12).prop_map(|v| v.concat());
    prop_oneof![
        bytes.clone().prop_map(Chunk::Raw),
        bytes.prop_map(Chunk::Sealed),
        lines.prop_map(|s| Chunk::Sealed(s.into_bytes())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_server_handshake_refuses_arbitrary_bytes(
        preamble in any::<bool>(),
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut input = if preamble { b"CHATAO\x00\x01".to_vec() } else { vec![] };
        input.extend(bytes);
        let result = block_on(async {
            accept(tokio::io::join(&input[..], tokio::io::sink()), &server_keys()).await.map(|_| ())
        });
        prop_assert!(result.is_err());
    }

    #[test]
    fn an_established_connection_survives_arbitrary_chunks(
        chunks in prop::collection::vec(chunk(), 0..8),
    ) {
        let (records, _) = block_on(feed(chunks));
        for r in records {
            prop_assert!(r.len() < MAX_RECORD);
            prop_assert!(!r.contains(&b'\n'));
        }
    }

    #[test]
    fn records_round_trip_however_they_are_batched(
        lines in prop::collection::vec("[^\n]{0,600}", 1..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        // One sealed chunk per batch, the batches cut at arbitrary points (mid-record too).
        let stream: Vec<u8> = lines.iter().flat_map(|l| l.bytes().chain([b'\n'])).collect();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        at.extend([0, stream.len()]);
        at.sort_unstable();
        at.dedup();
        let chunks = at.windows(2).map(|w| Chunk::Sealed(stream[w[0]..w[1]].to_vec())).collect();
        let (records, failed) = block_on(feed(chunks));
        prop_assert!(!failed);
        let got: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
        let want: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn raw_bytes_after_sealed_records_end_the_connection_after_those_records() {
    let (records, failed) = block_on(feed(vec![
        Chunk::Sealed(b"one\ntwo\n".to_vec()),
        Chunk::Raw(vec![0x00, 0x20, 7, 7, 7]),
    ]));
    assert_eq!(records, [&b"one"[..], &b"two"[..]]);
    assert!(failed, "a truncated frame at the end is an error, not a clean close");
}

#[test]
fn a_frame_shorter_than_its_tag_is_an_error() {
    let (records, failed) = block_on(feed(vec![Chunk::Raw(vec![0x00, 0x05, 1, 2, 3, 4, 5])]));
    assert!(records.is_empty() && failed);
}
