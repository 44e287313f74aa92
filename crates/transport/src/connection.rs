//! An established connection: Noise transport frames carrying newline-terminated records.
//!
//! On the wire every frame is a 2-byte big-endian length `n` followed by `n` bytes of Noise
//! ciphertext (at most 65535, tag included). The decrypted payloads, concatenated, form a
//! stream of records, each ending in `\n`. A record may span frames and a frame may hold many
//! records: the frame boundaries carry no meaning. This is what lets a busy sender pack a whole
//! queue of messages into one sealed frame and one `write`.
//!
//! Buffers are bounded: the ciphertext buffer holds at most one frame plus one read, the
//! plaintext buffer at most one record of `max_record` bytes; a peer that exceeds them gets
//! [`TransportError::RecordTooLarge`] and the connection ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::error::TransportError;
use crate::keys::PublicKey;
use crate::{MAX_FRAME_PLAINTEXT, TAG_LEN};

/// Default cap on one record (one JSON message), newline included.
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024;

/// Smallest spare capacity offered to a socket read. Small on purpose: an idle connection
/// holds only this much; a frame in progress gets the exact room it still needs.
const READ_CHUNK: usize = 1024;

/// Buffers that grew past this for a large message are released once empty, so that memory
/// per idle connection stays small.
const KEEP_CAPACITY: usize = 4 * 1024;

/// An authenticated, encrypted, ordered record stream over `S`.
pub struct Connection<S> {
    stream: S,
    reader: Reader,
    sealer: Sealer,
    remote: PublicKey,
    /// Plaintext waiting to be sealed, and the sealed frames waiting to be written.
    pending: Vec<u8>,
    wbuf: Vec<u8>,
}

impl<S> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("remote", &self.remote).finish_non_exhaustive()
    }
}

/// The sending half of a connection's Noise state: seals plaintext into frames, with no I/O
/// of its own. [`Connection::into_split`] hands it out so that the bytes it produces can be
/// written from wherever the caller likes (the server's delivery thread writes them with a
/// non-blocking write). Frames must reach the peer in the order they were sealed, none
/// skipped: each one's nonce is the next.
pub struct Sealer {
    noise: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

impl Sealer {
    /// Seals `plain` (whole records, or any part of the record stream) into as few frames as
    /// fit ([`MAX_FRAME_PLAINTEXT`] each), appended to `out` with their length prefixes.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TransportError> {
        for chunk in plain.chunks(MAX_FRAME_PLAINTEXT) {
            let start = out.len();
            out.resize(start + 2 + chunk.len() + TAG_LEN, 0);
            let n = self
                .noise
                .write_message(self.nonce, chunk, &mut out[start + 2..])
                .map_err(|_| TransportError::Encrypt)?;
            self.nonce = self.nonce.checked_add(1).ok_or(TransportError::Encrypt)?;
            let len = u16::try_from(n).map_err(|_| TransportError::Encrypt)?;
            out[start..start + 2].copy_from_slice(&len.to_be_bytes());
            out.truncate(start + 2 + n);
        }
        Ok(())
    }
}

/// The receiving half of a connection over its own stream (the read half of a split socket,
/// [`Connection::into_split`]).
pub struct RecordReader<R> {
    stream: R,
    reader: Reader,
    remote: PublicKey,
}

impl<R> std::fmt::Debug for RecordReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader").field("remote", &self.remote).finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// As [`Connection::read_record`].
    pub async fn read_record(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.reader.read_record(&mut self.stream).await
    }

    /// The peer's static public key, authenticated by the handshake.
    pub fn remote_key(&self) -> &PublicKey {
        &self.remote
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.stream
    }
}

/// What reading needs besides the stream: the receiving nonce and the bounded buffers.
struct Reader {
    noise: Arc<snow::StatelessTransportState>,
    /// The nonce the next frame must have been sealed with: a replayed, reordered or dropped
    /// frame fails authentication.
    nonce: u64,
    /// Ciphertext read but not yet decrypted (at most one frame plus one read).
    rbuf: BytesMut,
    /// Plaintext decrypted but not yet returned as records (at most `max_record` bytes).
    plain: BytesMut,
    /// How much of `plain` is known to contain no newline.
    scanned: usize,
    max_record: usize,
    /// Longest a started frame or record may take to complete (`None`: no limit).
    stall_limit: Option<Duration>,
    /// When the bytes now buffered without forming a whole record started arriving.
    partial_since: Option<Instant>,
}

impl<S> Connection<S> {
    pub(crate) fn new(stream: S, noise: snow::StatelessTransportState, remote: PublicKey) -> Self {
        let noise = Arc::new(noise);
        Connection {
            stream,
            reader: Reader {
                noise: noise.clone(),
                nonce: 0,
                rbuf: BytesMut::with_capacity(READ_CHUNK),
                plain: BytesMut::new(),
                scanned: 0,
                max_record: DEFAULT_MAX_RECORD,
                stall_limit: None,
                partial_since: None,
            },
            sealer: Sealer { noise, nonce: 0 },
            remote,
            pending: Vec::new(),
            wbuf: Vec::new(),
        }
    }

    /// The peer's static public key, authenticated by the handshake.
    pub fn remote_key(&self) -> &PublicKey {
        &self.remote
    }

    /// Sets the largest record accepted from the peer (newline included).
    pub fn set_max_record(&mut self, max: usize) {
        self.reader.max_record = max;
    }

    /// Sets the longest time a frame or record the peer has started may take to complete;
    /// past it [`Connection::read_record`] fails with [`TransportError::Stalled`]. `None` (the
    /// default) waits for ever. Time spent between records does not count.
    pub fn set_stall_limit(&mut self, limit: Option<Duration>) {
        self.reader.stall_limit = limit;
    }

    /// Splits the connection into its receiving half over `R`, its [`Sealer`], and `W`, with
    /// `split` dividing the stream (`TcpStream::into_split`). Whatever was read and not yet
    /// returned stays with the reader; nothing written is pending (writes finish before they
    /// return).
    pub fn into_split<R, W>(self, split: impl FnOnce(S) -> (R, W)) -> (RecordReader<R>, Sealer, W) {
        let (r, w) = split(self.stream);
        (RecordReader { stream: r, reader: self.reader, remote: self.remote }, self.sealer, w)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Reads the next record, without its trailing newline.
    ///
    /// Returns `Ok(None)` when the peer closed the connection cleanly between records. Any
    /// frame that fails authentication, a record over the limit, or a close in the middle of a
    /// frame or record is an error, after which the connection must be dropped.
    ///
    /// Cancel-safe: everything read so far stays buffered in `self`, so this can sit in a
    /// `select!` beside other branches.
    pub async fn read_record(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.reader.read_record(&mut self.stream).await
    }

    /// The next record already received, without reading from the socket: what a frame that
    /// carried several records still holds (or one more buffered frame, decrypted now). `None`
    /// when a read is needed. Errors as [`Connection::read_record`]'s. A reader that drains
    /// these after each `read_record` handles a batch of records in one wake-up.
    pub fn buffered_record(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.reader.buffered_record()
    }

    /// Writes `records` (each must end with `\n`) packed into as few frames as possible, with one
    /// `write` for the whole batch. The caller bounds the batch (its length times the record
    /// cap is the most this buffers).
    ///
    /// Not cancel-safe: once started it must finish, or the connection must be dropped (a
    /// partly written frame cannot be resumed). Wrap it in a timeout, not a `select!`.
    pub async fn write_records(&mut self, records: &[Bytes]) -> Result<(), TransportError> {
        self.wbuf.clear();
        self.pending.clear();
        for record in records {
            self.pending.extend_from_slice(record);
        }
        self.sealer.seal(&self.pending, &mut self.wbuf)?;
        self.pending.clear();
        self.stream.write_all(&self.wbuf).await?;
        self.stream.flush().await?;
        if self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = Vec::new();
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// Writes one record (which must end with `\n`).
    pub async fn write_record(&mut self, record: &Bytes) -> Result<(), TransportError> {
        self.write_records(std::slice::from_ref(record)).await
    }

    /// Shuts down the write side (a TCP FIN) after everything written so far.
    pub async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.stream.shutdown().await?;
        Ok(())
    }

    /// The underlying stream (for peer addresses and socket options).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl Reader {
    async fn read_record<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Result<Option<Bytes>, TransportError> {
        loop {
            if let Some(record) = self.next_buffered_record()? {
                // Progress: whatever follows gets a stall limit of its own.
                self.partial_since = None;
                return Ok(Some(record));
            }
            if self.decrypt_buffered_frame()? {
                continue;
            }
            let want = self.frame_len_needed().saturating_sub(self.rbuf.len()).max(READ_CHUNK);
            self.rbuf.reserve(want);
            let partial = !self.rbuf.is_empty() || !self.plain.is_empty();
            let since = match (partial, self.partial_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
            };
            self.partial_since = since;
            let read = stream.read_buf(&mut self.rbuf);
            let n = match (since, self.stall_limit) {
                (Some(since), Some(limit)) => {
                    timeout_at(since + limit, read).await.map_err(|_| TransportError::Stalled)??
                }
                _ => read.await?,
            };
            if n == 0 {
                if self.rbuf.is_empty() && self.plain.is_empty() {
                    return Ok(None);
                }
                return Err(TransportError::Truncated);
            }
        }
    }

    fn buffered_record(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            if let Some(record) = self.next_buffered_record()? {
                self.partial_since = None;
                return Ok(Some(record));
            }
            if !self.decrypt_buffered_frame()? {
                return Ok(None);
            }
        }
    }

    fn next_buffered_record(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.plain[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                if end >= self.max_record {
                    return Err(TransportError::RecordTooLarge { max: self.max_record });
                }
                let mut record = self.plain.split_to(end + 1);
                record.truncate(end);
                self.scanned = 0;
                if self.plain.is_empty() && self.plain.capacity() > KEEP_CAPACITY {
                    self.plain = BytesMut::new();
                }
                Ok(Some(record.freeze()))
            }
            None => {
                self.scanned = self.plain.len();
                if self.plain.len() >= self.max_record {
                    return Err(TransportError::RecordTooLarge { max: self.max_record });
                }
                Ok(None)
            }
        }
    }

    /// Total bytes (prefix included) of the frame at the head of `rbuf`, as far as known.
    fn frame_len_needed(&self) -> usize {
        if self.rbuf.len() < 2 {
            return 2;
        }
        2 + usize::from(u16::from_be_bytes([self.rbuf[0], self.rbuf[1]]))
    }

    /// Decrypts one whole frame from `rbuf` into `plain`; false if no whole frame is buffered.
    fn decrypt_buffered_frame(&mut self) -> Result<bool, TransportError> {
        let need = self.frame_len_needed();
        if self.rbuf.len() < 2 || self.rbuf.len() < need {
            return Ok(false);
        }
        let len = need - 2;
        if len < TAG_LEN {
            return Err(TransportError::FrameTooShort(len));
        }
        if self.plain.len() + len - TAG_LEN > self.max_record + MAX_FRAME_PLAINTEXT {
            return Err(TransportError::RecordTooLarge { max: self.max_record });
        }
        // Decrypt straight into the plaintext buffer: no scratch buffer per connection.
        let start = self.plain.len();
        self.plain.resize(start + len - TAG_LEN, 0);
        let n = self
            .noise
            .read_message(self.nonce, &self.rbuf[2..need], &mut self.plain[start..])
            .map_err(|_| TransportError::Decrypt)?;
        self.nonce = self.nonce.checked_add(1).ok_or(TransportError::Decrypt)?;
        self.plain.truncate(start + n);
        self.rbuf.advance(need);
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
            self.rbuf = BytesMut::new();
        }
        Ok(true)
    }
}
