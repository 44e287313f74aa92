//! The harness of every fuzz target: each is a function that takes the fuzzer's bytes and
//! panics only on a broken contract (a message that does not survive its own round trip,
//! sanitised text that still holds a control character, a decoder that panics); errors are the
//! expected outcome of most inputs.
//!
//! [`TARGETS`] lists them; each `fuzz_targets/<name>.rs` is one line calling its function, and
//! crates/testkit/tests/fuzz_seeds.rs replays every target's `seeds/<name>/` through the same
//! functions in the normal (stable) test suite.
//!
//! Layout: this file has what the targets share (a runtime, fixed keys, an in-memory pipe that
//! two writers share, the chunked input format of `frame` and `server_records`) and the
//! server's side of the wire (`frame`, `message`, `handshake`); [`client`] the client's side
//! (`client_handshake`, `server_records`); [`e2e`] the MLS engine; [`cluster`] the JSON nodes
//! read from NATS; [`files`] the files an operator or user writes (`settings`,
//! `access_list`, `known_servers`, `pkcs8`).

pub mod client;
pub mod cluster;
pub mod e2e;
pub mod files;

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use chatao_proto::{
    ClientMsg, Nick, RoomName, ServerMsg, check_text, decode_client, decode_server, encode,
    sanitize,
};
use chatao_transport::{Keypair, accept, connect};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::runtime::Runtime;

/// Record limit the `frame` target sets on the server's connection: small, so that the
/// over-the-limit paths are reached often.
pub const MAX_RECORD: usize = 4096;

pub(crate) fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime")
    })
}

/// Every fuzz target: its name (the binary in fuzz_targets/, the folder in seeds/) and its
/// harness.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("frame", frame),
    ("message", message),
    ("handshake", handshake),
    ("client_handshake", client::client_handshake),
    ("server_records", client::server_records),
    ("e2e", e2e::e2e),
    ("cluster", cluster::cluster),
    ("settings", files::settings),
    ("access_list", files::access_list),
    ("known_servers", files::known_servers),
    ("pkcs8", files::pkcs8),
];

pub(crate) fn server_keys() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(|| Keypair::from_secret([0x5e; 32]))
}

pub(crate) fn client_keys() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(|| Keypair::from_secret([0xc1; 32]))
}

/// The server side of the handshake on arbitrary bytes. The first byte chooses whether a valid
/// preamble goes first (to get past it more often); the rest is what the "client" sends, then
/// the end of the stream. Whatever the server writes is discarded.
pub fn handshake(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut input = Vec::with_capacity(rest.len() + 8);
    if mode & 1 == 1 {
        input.extend_from_slice(b"CHATAO\x00\x01");
    }
    input.extend_from_slice(rest);
    runtime().block_on(async {
        let stream = tokio::io::join(&input[..], tokio::io::sink());
        if let Ok(mut conn) = accept(stream, server_keys()).await {
            // Only reachable if the input forged a whole handshake; then read what follows.
            while let Ok(Some(_)) = conn.read_record().await {}
        }
    });
}

/// One piece of the `frame` target's input.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes written to the server as they are, into the ciphertext stream.
    Raw(&'a [u8]),
    /// Plaintext the genuine client seals into frames and writes.
    Sealed(&'a [u8]),
}

/// Splits the `frame` target's input into chunks: a tag byte (even: raw, odd: sealed), a
/// little-endian `u16` length, then that many bytes (fewer if the input ends first).
pub fn chunks(mut data: &[u8]) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        out.push(if tag & 1 == 0 { Chunk::Raw(body) } else { Chunk::Sealed(body) });
        data = rest;
    }
    out
}

/// A stream that several owners write to (the genuine client's connection, and the raw
/// writer that goes around its encryption).
#[derive(Clone)]
pub(crate) struct Shared(pub(crate) Arc<Mutex<DuplexStream>>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *s).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *s).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *s).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *s).poll_shutdown(cx)
    }
}

/// The frame and record decoder: a real handshake over an in-memory pipe, then the input's
/// chunks (see [`chunks`]) into the server's connection, which reads records (each decoded
/// as a client message) until the end of the stream or the first error.
pub fn frame(data: &[u8]) {
    let chunks = chunks(data);
    runtime().block_on(async {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let client_end = Shared(Arc::new(Mutex::new(client_end)));
        let mut raw = client_end.clone();
        let (server, client) = tokio::join!(
            accept(server_end, server_keys()),
            connect(client_end, client_keys(), |_| Ok(()))
        );
        let (Ok(mut server), Ok(mut client)) = (server, client) else {
            panic!("the handshake between two genuine peers failed");
        };
        server.set_max_record(MAX_RECORD);
        let write = async move {
            for chunk in chunks {
                let sent = match chunk {
                    Chunk::Raw(b) => raw.write_all(b).await.is_ok(),
                    Chunk::Sealed(b) => {
                        client.write_records(&[Bytes::copy_from_slice(b)]).await.is_ok()
                    }
                };
                if !sent {
                    break;
                }
            }
            // Dropping both writers closes the pipe: the server sees the end of the stream.
        };
        let read = async move {
            while let Ok(Some(record)) = server.read_record().await {
                assert!(record.len() < MAX_RECORD, "a record over the limit was returned");
                assert!(!record.contains(&b'\n'), "a record with a newline inside");
                let _ = decode_client(&record);
            }
        };
        tokio::join!(write, read);
    });
}

/// The message decoder and the text rules: decoding never panics, whatever decodes survives
/// its own round trip, and [`sanitize`] leaves nothing a terminal would act on.
pub fn message(data: &[u8]) {
    if let Ok(m) = decode_client(data) {
        let again: ClientMsg = decode_client(&encode(&m)).expect("a decoded message re-decodes");
        assert_eq!(again, m);
    }
    if let Ok(m) = decode_server(data) {
        let again: ServerMsg = decode_server(&encode(&m)).expect("a decoded message re-decodes");
        assert_eq!(again, m);
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    let clean = sanitize(s);
    assert!(
        !clean.chars().any(|c| c.is_control() || is_bidi_control(c)),
        "sanitize left a control: {clean:?}"
    );
    if check_text(s, usize::MAX, false).is_ok() {
        assert_eq!(clean, s, "text that passes the rules is displayed unchanged");
    }
    let _ = check_text(s, 4000, true);
    if let Ok(nick) = Nick::parse(s) {
        assert_eq!(Nick::parse(nick.as_str()).ok().as_ref(), Some(&nick));
        assert!(!nick.as_str().chars().any(char::is_control));
    }
    if let Ok(room) = RoomName::parse(s) {
        assert_eq!(RoomName::parse(room.as_str()).ok().as_ref(), Some(&room));
    }
}

/// The bidirectional controls [`sanitize`] must replace (its own list is private).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}')
}
