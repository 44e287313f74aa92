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
    noise: snow::TransportState,
    remote: PublicKey,
    /// Ciphertext read but not yet decrypted (at most one frame plus one read).
    rbuf: BytesMut,
    /// Plaintext decrypted but not yet returned as records (at most `max_record` bytes).
    plain: BytesMut,
    /// How much of `plain` is known to contain no newline.
    scanned: usize,
    /// Plaintext waiting to be sealed, and the sealed frames waiting to be written.
    pending: Vec<u8>,
    wbuf: Vec<u8>,
    max_record: usize,
    /// Longest a started frame or record may take to complete (`None`: no limit).
    stall_limit: Option<Duration>,
    /// When the bytes now buffered without forming a whole record started arriving.
    partial_since: Option<Instant>,
}

impl<S> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("remote", &self.remote).finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(crate) fn new(stream: S, noise: snow::TransportState, remote: PublicKey) -> Self {
        Connection {
            stream,
            noise,
            remote,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            plain: BytesMut::new(),
            scanned: 0,
            pending: Vec::new(),
            wbuf: Vec::new(),
            max_record: DEFAULT_MAX_RECORD,
            stall_limit: None,
            partial_since: None,
        }
    }

    /// The peer's static public key, authenticated by the handshake.
    pub fn remote_key(&self) -> &PublicKey {
        &self.remote
    }

    /// Sets the largest record accepted from the peer (newline included).
    pub fn set_max_record(&mut self, max: usize) {
        self.max_record = max;
    }

    /// Sets the longest time a frame or record the peer has started may take to complete;
    /// past it [`Connection::read_record`] fails with [`TransportError::Stalled`]. `None` (the
    /// default) waits for ever. Time spent between records does not count.
    pub fn set_stall_limit(&mut self, limit: Option<Duration>) {
        self.stall_limit = limit;
    }

    /// Reads the next record, without its trailing newline.
    ///
    /// Returns `Ok(None)` when the peer closed the connection cleanly between records. Any
    /// frame that fails authentication, a record over the limit, or a close in the middle of a
    /// frame or record is an error, after which the connection must be dropped.
    ///
    /// Cancel-safe: everything read so far stays buffered in `self`, so this can sit in a
    /// `select!` beside other branches.
    pub async fn read_record(&mut self) -> Result<Option<Bytes>, TransportError> {
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
            let read = self.stream.read_buf(&mut self.rbuf);
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
            .read_message(&self.rbuf[2..need], &mut self.plain[start..])
            .map_err(|_| TransportError::Decrypt)?;
        self.plain.truncate(start + n);
        self.rbuf.advance(need);
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
            self.rbuf = BytesMut::new();
        }
        Ok(true)
    }

    /// Writes `records` (each must end with `\n`) packed into as few frames as possible, with one
    /// `write` for the whole batch. The caller bounds the batch (its length times the record
    /// cap is the most this buffers).
    ///
    /// Not cancel-safe: once started it must finish, or the connection must be dropped (a
    /// partly written frame cannot be resumed). Wrap it in a timeout, not a `select!`.
    pub async fn write_records(&mut self, records: &[Bytes]) -> Result<(), TransportError> {
        self.wbuf.clear();
        for record in records {
            let mut data: &[u8] = record;
            while !data.is_empty() {
                let take = (MAX_FRAME_PLAINTEXT - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.pending.len() == MAX_FRAME_PLAINTEXT {
                    self.seal_pending()?;
                }
            }
        }
        if !self.pending.is_empty() {
            self.seal_pending()?;
        }
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

    fn seal_pending(&mut self) -> Result<(), TransportError> {
        let start = self.wbuf.len();
        self.wbuf.resize(start + 2 + self.pending.len() + TAG_LEN, 0);
        let n = self
            .noise
            .write_message(&self.pending, &mut self.wbuf[start + 2..])
            .map_err(|_| TransportError::Encrypt)?;
        let len = u16::try_from(n).map_err(|_| TransportError::Encrypt)?;
        self.wbuf[start..start + 2].copy_from_slice(&len.to_be_bytes());
        self.wbuf.truncate(start + 2 + n);
        self.pending.clear();
        Ok(())
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
