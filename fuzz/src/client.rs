//! The client's side of the wire: what a hostile server can send it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chatao_client::format::{self, Format};
use chatao_client::net::MAX_SERVER_RECORD;
use chatao_proto::text::is_display_hazard;
use chatao_proto::{ServerMsg, decode_server, encode};
use chatao_transport::{accept, connect};
use tokio::io::AsyncWriteExt;

use crate::{Chunk, Shared, chunks, client_keys, runtime, server_keys};

/// The client side of the handshake on arbitrary bytes, as `chatao_transport::connect` runs it
/// for `chatao` (any server key accepted, so the key check is no shortcut). The first byte
/// chooses whether a valid preamble goes first; the rest is what the "server" sends, then the
/// end of the stream. Whatever the client writes is discarded.
pub fn client_handshake(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut input = Vec::with_capacity(rest.len() + 8);
    if mode & 1 == 1 {
        input.extend_from_slice(b"CHATAO\x00\x01");
    }
    input.extend_from_slice(rest);
    runtime().block_on(async {
        let stream = tokio::io::join(&input[..], tokio::io::sink());
        if let Ok(mut conn) = connect(stream, client_keys(), |_| Ok(())).await {
            // Only reachable if the input forged a whole handshake; then read what follows.
            conn.set_max_record(MAX_SERVER_RECORD);
            while let Ok(Some(record)) = conn.read_record().await {
                shown(&record);
            }
        }
    });
}

/// Records from a hostile server: a genuine handshake over an in-memory pipe, then the
/// input's chunks ([`chunks`]: raw bytes into the ciphertext stream, or plaintext the genuine
/// server seals) into the client's connection, which reads records with the client's bound
/// ([`MAX_SERVER_RECORD`]) until the end of the stream or the first error. Each record is
/// decoded as `chatao` does and every message shown as line mode shows it.
pub fn server_records(data: &[u8]) {
    let chunks = chunks(data);
    runtime().block_on(async {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let server_end = Shared(Arc::new(Mutex::new(server_end)));
        let mut raw = server_end.clone();
        let (server, client) = tokio::join!(
            accept(server_end, server_keys()),
            connect(client_end, client_keys(), |_| Ok(()))
        );
        let (Ok(mut server), Ok(mut client)) = (server, client) else {
            panic!("the handshake between two genuine peers failed");
        };
        client.set_max_record(MAX_SERVER_RECORD);
        let write = async move {
            for chunk in chunks {
                let sent = match chunk {
                    Chunk::Raw(b) => raw.write_all(b).await.is_ok(),
                    Chunk::Sealed(b) => {
                        server.write_records(&[Bytes::copy_from_slice(b)]).await.is_ok()
                    }
                };
                if !sent {
                    break;
                }
            }
            // Dropping both writers closes the pipe: the client sees the end of the stream.
        };
        let read = async move {
            while let Ok(Some(record)) = client.read_record().await {
                assert!(record.len() < MAX_SERVER_RECORD, "a record over the limit was returned");
                assert!(!record.contains(&b'\n'), "a record with a newline inside");
                shown(&record);
            }
        };
        tokio::join!(write, read);
    });
}

/// Decodes one record as the client does; a message that decodes must survive its own round
/// trip, and line mode's output of it (plain and JSON) must hold no display hazard (controls,
/// bidirectional controls, line separators) but the newlines between plain lines.
fn shown(record: &[u8]) {
    let Ok(msg) = decode_server(record) else { return };
    let again: ServerMsg = decode_server(&encode(&msg)).expect("a decoded message re-decodes");
    assert_eq!(again, msg);
    if let Some(line) = format::event(Format::Plain, &msg) {
        assert!(
            !line.chars().any(|c| c != '\n' && is_display_hazard(c)),
            "plain output holds a display hazard: {line:?}"
        );
    }
    if let Some(line) = format::event(Format::Json, &msg) {
        assert!(
            !line.chars().any(is_display_hazard),
            "JSON output holds a display hazard: {line:?}"
        );
    }
}
