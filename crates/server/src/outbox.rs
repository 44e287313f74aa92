//! A session's sending side: the bounded buffer through which the hub hands it encoded records,
//! and, once the session is open, the socket's write half with the connection's Noise sealer,
//! so that the bus thread writes what it delivers itself (write-through fan-out).
//!
//! The hub encodes a message once; the bus thread ([`crate::bus`]) hands each run of events of
//! a room to every member with [`Outbox::write_through`]: under the member's own short lock it
//! seals the run (after whatever was still waiting) into one frame, or as few as fit, and writes
//! it with a non-blocking write. No channel, no task wake-up and no allocation per delivery on
//! the common path; under load a batch of the bus carries more events, so each write carries
//! more messages. Only when the socket would block does the remainder stay here, and the
//! session's task is woken to wait for writability and finish it ([`Outgoing::drain`]).
//!
//! The records handed over under the hub's lock (a join announcement, a `whois` answer to
//! someone else, a nick change) are only appended ([`Outbox::deliver`], no system call under
//! that lock); the session's task is woken to write them, or the bus's next write takes them.
//!
//! While the session writes its own replies it holds the bus off ([`Outgoing::hold`]): what is
//! delivered meanwhile waits here and follows the reply, so a `joined` and its history reach the
//! client before the room's live messages, as when the session wrote everything itself.
//!
//! Order: everything written to the socket goes through [`Buf`] under its lock, sealed in the
//! order it is written, so frames are never interleaved and their nonces follow each other.
//!
//! Overflow policy: records are taken while fewer than `capacity` wait here unsealed, a run of
//! the bus whole; so at most `capacity` plus one batch of the bus ([`crate::bus`]'s `BATCH`
//! events) wait, besides the one frame being written (sealed from at most as many). A record
//! more and the outbox is marked overflowed: what waits unsealed is dropped, nothing more is
//! taken, and the session is woken to finish the frame already sealed (its nonce is spent) and
//! say `bye too_slow`. The sender and the room never wait for a slow recipient, and a client
//! never silently misses a message while staying connected.
//!
//! Memory: an idle outbox holds no buffer. The sealed frame a session wrote (`out`) is released
//! once written, and what waited unsealed (`plain`) once sealed: the common path seals into the
//! bus thread's buffer and keeps nothing here (DHAT showed a kept 1 KiB frame buffer on half the
//! idle connections).

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chatao_proto::ServerMsg;
use chatao_transport::Sealer;
use parking_lot::{Mutex, MutexGuard};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};

use crate::metrics::Metrics;

/// The hub's end: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// The session's end.
#[derive(Debug)]
pub struct Outgoing {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    buf: Mutex<Buf>,
    /// Wakes the session: records to write, a write that would block, an overflow, an end.
    wake: Notify,
    /// The socket's write half, once the session is open ([`Outgoing::attach`]).
    wire: OnceLock<Wire>,
}

#[derive(Debug)]
struct Wire {
    writer: OwnedWriteHalf,
    metrics: Arc<Metrics>,
}

/// What the outbox is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Open,
    /// More than `capacity` records were waiting (see the module's overflow policy).
    Overflowed,
    /// The hub ended the session (a kick, a ban, a takeover) with this `bye`.
    Ended(Box<ServerMsg>),
    /// A write failed: the connection is broken.
    Failed,
    /// The session is closing: nothing more is taken.
    Closed,
}

#[derive(Debug)]
struct Buf {
    /// Records waiting to be sealed, in order, and how many.
    plain: Vec<u8>,
    plain_records: usize,
    /// Sealed frames not yet written (from `pos`), and how many records they carry.
    out: Vec<u8>,
    pos: usize,
    out_records: usize,
    /// The connection's sending Noise state, once attached.
    sealer: Option<Sealer>,
    capacity: usize,
    status: Status,
    /// The session is writing a reply of its own: the bus appends, the session writes after.
    held: bool,
    /// A write would block: the session waits for writability and finishes `out` and `plain`.
    blocked: bool,
}

/// A session's write that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write failed: {0}")]
    Failed(io::Error),
    #[error("write timed out")]
    TimedOut,
    #[error("not attached to a connection")]
    Detached,
}

/// An outbox holding at most `capacity` records waiting to be written.
pub fn outbox(capacity: usize) -> (Outbox, Outgoing) {
    let inner = Arc::new(Inner {
        buf: Mutex::new(Buf {
            plain: Vec::new(),
            plain_records: 0,
            out: Vec::new(),
            pos: 0,
            out_records: 0,
            sealer: None,
            capacity: capacity.max(1),
            status: Status::Open,
            held: false,
            blocked: false,
        }),
        wake: Notify::new(),
        wire: OnceLock::new(),
    });
    (Outbox { inner: inner.clone() }, Outgoing { inner })
}

impl Buf {
    /// Whether `records` more pass the bound (`capacity` records already wait unsealed, as in
    /// a channel of that size; the frame being written is the session's in-flight write, at
    /// most one bound's worth plus one run: a run is taken
    /// whole while there is room, so a run of the bus longer than the bound is not mistaken for
    /// a slow reader while the session writes a reply); if so the outbox is overflowed.
    fn overflows(&mut self, records: usize) -> bool {
        if records == 0 || self.plain_records < self.capacity {
            return false;
        }
        self.status = Status::Overflowed;
        self.plain = Vec::new();
        self.plain_records = 0;
        true
    }

    fn append(&mut self, bytes: &[u8], records: usize) {
        self.plain.extend_from_slice(bytes);
        self.plain_records += records;
    }

    /// Seals what waits in `plain` behind `out`.
    fn seal_plain(&mut self) -> io::Result<()> {
        let Some(sealer) = &mut self.sealer else { return Ok(()) };
        sealer.seal(&self.plain, &mut self.out).map_err(io::Error::other)?;
        self.out_records += self.plain_records;
        self.plain = Vec::new();
        self.plain_records = 0;
        Ok(())
    }

    /// Writes `out` from `pos` without blocking: `Ok(true)` when all of it was written.
    fn write_out(&mut self, wire: &Wire) -> io::Result<bool> {
        while self.pos < self.out.len() {
            match wire.writer.try_write(&self.out[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    wire.metrics.bytes_out.add(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        wire.metrics.deliveries_out.add(self.out_records as u64);
        self.out = Vec::new();
        self.pos = 0;
        self.out_records = 0;
        Ok(true)
    }
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Buf> {
        self.inner.buf.lock()
    }

    /// Appends one record (or a few, counted as one) without writing: the session's task is
    /// woken to write it. For what is handed over under the hub's lock.
    pub fn deliver(&self, msg: &Bytes) {
        self.deliver_records(msg, 1);
    }

    /// As [`Outbox::deliver`], for `records` records.
    pub fn deliver_records(&self, msg: &[u8], records: usize) {
        let mut b = self.lock();
        if b.status != Status::Open {
            return;
        }
        if b.overflows(records) {
            drop(b);
            self.inner.wake.notify_one();
            return;
        }
        let first = b.plain.is_empty();
        b.append(msg, records);
        let wake = first && !b.held && !b.blocked;
        drop(b);
        if wake {
            self.inner.wake.notify_one();
        }
    }

    /// Delivers `records` records (`run`) from the bus thread: sealed after whatever waits and
    /// written at once with a non-blocking write, unless the session is writing (then they
    /// wait and the session writes them). `scratch` is the caller's buffer for sealing.
    pub fn write_through(&self, run: &[u8], records: usize, scratch: &mut Vec<u8>) {
        let mut b = self.lock();
        if b.status != Status::Open {
            return;
        }
        let wire = self.inner.wire.get();
        let writable = wire.is_some() && b.sealer.is_some() && !b.held && !b.blocked;
        let (Some(wire), true, true) = (wire, writable, b.out.is_empty()) else {
            // Not attached yet (the session writes it once it is), or the session is writing:
            // the run waits, within the bound.
            if b.overflows(records) {
                drop(b);
                self.inner.wake.notify_one();
            } else {
                b.append(run, records);
            }
            return;
        };
        let b = &mut *b;
        let Some(sealer) = &mut b.sealer else { return };
        // The common path: seal straight from the shared run into the bus thread's scratch
        // buffer, no copy into this outbox.
        scratch.clear();
        let sealed = if b.plain.is_empty() {
            sealer.seal(run, scratch)
        } else {
            b.plain.extend_from_slice(run);
            let sealed = sealer.seal(&b.plain, scratch);
            b.plain = Vec::new();
            sealed
        };
        let records = records + std::mem::take(&mut b.plain_records);
        if sealed.is_err() {
            b.status = Status::Failed;
            self.inner.wake.notify_one();
            return;
        }
        let mut pos = 0;
        while pos < scratch.len() {
            match wire.writer.try_write(&scratch[pos..]) {
                Ok(0) => {
                    b.status = Status::Failed;
                    self.inner.wake.notify_one();
                    return;
                }
                Ok(n) => {
                    pos += n;
                    wire.metrics.bytes_out.add(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The rest waits here; the session waits for writability.
                    b.out.extend_from_slice(&scratch[pos..]);
                    b.out_records = records;
                    b.blocked = true;
                    self.inner.wake.notify_one();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    b.status = Status::Failed;
                    self.inner.wake.notify_one();
                    return;
                }
            }
        }
        wire.metrics.deliveries_out.add(records as u64);
    }

    /// Ends the session: it sends `bye` (after nothing else) and closes.
    pub fn end(&self, bye: ServerMsg) {
        let mut b = self.lock();
        if matches!(b.status, Status::Open | Status::Overflowed) {
            b.status = Status::Ended(Box::new(bye));
        }
        drop(b);
        self.inner.wake.notify_one();
    }
}

impl Outgoing {
    fn lock(&self) -> MutexGuard<'_, Buf> {
        self.inner.buf.lock()
    }

    /// Connects the outbox to the open connection's sending half: from now on the bus writes
    /// through. Whatever was delivered before waits for [`Outgoing::drain`] (the session calls
    /// it next).
    pub fn attach(&self, sealer: Sealer, writer: OwnedWriteHalf, metrics: Arc<Metrics>) {
        let _ = self.inner.wire.set(Wire { writer, metrics });
        let mut b = self.lock();
        b.sealer = Some(sealer);
        drop(b);
        self.inner.wake.notify_one();
    }

    /// Resolves when there may be something to do: records to write, a blocked write, a new
    /// [`Status`]. Cancel-safe.
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.wake.notified()
    }

    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// Holds the bus off while the session handles a request: deliveries wait behind its reply
    /// ([`Outgoing::release`] writes them).
    pub fn hold(&self) {
        self.lock().held = true;
    }

    /// Ends a [`Outgoing::hold`] and writes what waited.
    pub async fn release(&self, limit: Duration) -> Result<(), WriteError> {
        self.lock().held = false;
        self.drain(limit).await
    }

    /// Writes `records` (each ending in `\n`) ahead of whatever deliveries wait, then those.
    pub async fn send(&self, records: &[Bytes], limit: Duration) -> Result<(), WriteError> {
        {
            let mut b = self.lock();
            let b = &mut *b;
            let Some(sealer) = &mut b.sealer else { return Err(WriteError::Detached) };
            // Sealed behind the frames already sealed, before the plaintext that waits.
            let mut plain = Vec::with_capacity(records.iter().map(Bytes::len).sum());
            for r in records {
                plain.extend_from_slice(r);
            }
            sealer.seal(&plain, &mut b.out).map_err(|e| WriteError::Failed(io::Error::other(e)))?;
            b.blocked = true;
        }
        self.drain(limit).await
    }

    /// Writes what waits: the sealed frames, then the records, each step within `limit`.
    /// Returns once everything was written, or after one more batch of records if deliveries
    /// keep coming (the session is woken again for the rest, so that it gets to its other
    /// work). Not cancel-safe in effect (a frame may be left half written): run it to its
    /// end, bounded by `limit`; after an error nothing more may be written.
    pub async fn drain(&self, limit: Duration) -> Result<(), WriteError> {
        let Some(wire) = self.inner.wire.get() else { return Err(WriteError::Detached) };
        let mut deadline = Instant::now() + limit;
        let mut sealed = 0;
        loop {
            {
                let mut b = self.lock();
                loop {
                    if b.pos >= b.out.len() {
                        // While the session handles a request, what the bus delivered waits
                        // for its reply, all of it (a history replay comes in several writes).
                        if b.plain.is_empty() || b.held || b.status == Status::Overflowed {
                            b.blocked = false;
                            return Ok(());
                        }
                        if sealed == 2 {
                            b.blocked = false;
                            drop(b);
                            self.inner.wake.notify_one();
                            return Ok(());
                        }
                        b.seal_plain().map_err(WriteError::Failed)?;
                        sealed += 1;
                        deadline = Instant::now() + limit;
                    }
                    match b.write_out(wire) {
                        Ok(true) => {}
                        Ok(false) => {
                            b.blocked = true;
                            break;
                        }
                        Err(e) => {
                            b.status = Status::Failed;
                            return Err(WriteError::Failed(e));
                        }
                    }
                }
            }
            // Waiting for writability, the session still hears of an overflow or an end: it
            // returns to say its `bye` (the wake is passed on to the session's loop).
            tokio::select! {
                r = timeout_at(deadline, wire.writer.writable()) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(WriteError::Failed(e)),
                    Err(_) => return Err(WriteError::TimedOut),
                },
                () = self.inner.wake.notified() => {
                    if self.status() != Status::Open {
                        self.inner.wake.notify_one();
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Closes the outbox and writes `bye` last: after what waits when `keep` (a close the
    /// session chose), alone when not (an overflow, a kick: the waiting records are dropped;
    /// only a frame already sealed is finished).
    pub async fn finish(&self, bye: &Bytes, keep: bool, limit: Duration) -> Result<(), WriteError> {
        {
            let mut b = self.lock();
            b.status = Status::Closed;
            if !keep {
                b.plain = Vec::new();
                b.plain_records = 0;
            }
            b.append(bye, 1);
            b.held = false;
            b.blocked = true;
        }
        self.drain_closed(limit).await
    }

    /// [`Outgoing::drain`] to the end, whatever the status.
    async fn drain_closed(&self, limit: Duration) -> Result<(), WriteError> {
        let Some(wire) = self.inner.wire.get() else { return Err(WriteError::Detached) };
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut b = self.lock();
                loop {
                    if b.pos >= b.out.len() {
                        if b.plain.is_empty() {
                            return Ok(());
                        }
                        b.seal_plain().map_err(WriteError::Failed)?;
                    }
                    match b.write_out(wire) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => return Err(WriteError::Failed(e)),
                    }
                }
            }
            match timeout_at(deadline, wire.writer.writable()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(WriteError::Failed(e)),
                Err(_) => return Err(WriteError::TimedOut),
            }
        }
    }

    /// Shuts the socket's write side (a FIN after what was written). Nothing is written after.
    pub fn shutdown(&self) {
        self.lock().status = Status::Closed;
        if let Some(wire) = self.inner.wire.get() {
            let _ =
                socket2::SockRef::from(wire.writer.as_ref()).shutdown(std::net::Shutdown::Write);
        }
    }

    /// What waits, unsealed (an outbox never attached: the hub's unit tests).
    #[cfg(test)]
    pub fn take_queued(&self) -> Bytes {
        let mut b = self.lock();
        b.plain_records = 0;
        Bytes::from(std::mem::take(&mut b.plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_what_waits_instead_of_growing() {
        let (ob, out) = outbox(2);
        let m = Bytes::from_static(b"x\n");
        ob.deliver(&m);
        ob.deliver(&m);
        assert_eq!(out.status(), Status::Open);
        ob.deliver(&m);
        assert_eq!(out.status(), Status::Overflowed);
        assert!(out.take_queued().is_empty(), "what waited is dropped");
        ob.deliver(&m);
        assert!(out.take_queued().is_empty(), "nothing more is taken");
    }

    #[test]
    fn an_end_wins_over_an_overflow_and_nothing_is_taken_after_it() {
        let (ob, out) = outbox(1);
        let m = Bytes::from_static(b"x\n");
        ob.deliver(&m);
        ob.deliver(&m);
        let bye = ServerMsg::Bye { code: None, reason: "kicked".into() };
        ob.end(bye.clone());
        assert_eq!(out.status(), Status::Ended(Box::new(bye)));
        ob.deliver(&m);
        assert!(out.take_queued().is_empty());
    }

    /// A real connection over loopback: the server's outbox attached to its write half, and
    /// the client's end.
    async fn pair(
        capacity: usize,
    ) -> (Outbox, Outgoing, chatao_transport::Connection<tokio::net::TcpStream>) {
        use chatao_transport::Keypair;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            chatao_transport::accept(s, &Keypair::from_secret([1; 32])).await.unwrap()
        });
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client =
            chatao_transport::connect(c, &Keypair::from_secret([2; 32]), |_| Ok(())).await.unwrap();
        let conn = server.await.unwrap();
        let (reader, sealer, writer) = conn.into_split(|s| s.into_split());
        drop(reader);
        let (ob, out) = outbox(capacity);
        out.attach(sealer, writer, Arc::new(Metrics::new()));
        (ob, out, client)
    }

    async fn read(client: &mut chatao_transport::Connection<tokio::net::TcpStream>) -> String {
        let r = tokio::time::timeout(Duration::from_secs(10), client.read_record()).await;
        String::from_utf8(r.unwrap().unwrap().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_bus_writes_through_and_a_reply_goes_ahead_of_what_waited_while_held() {
        let (ob, out, mut client) = pair(64).await;
        let mut scratch = Vec::new();
        // Delivered before the session drained what waited from before it was attached: it
        // waits behind that.
        ob.deliver(&Bytes::from_static(b"early\n"));
        ob.write_through(b"one\ntwo\n", 2, &mut scratch);
        out.drain(Duration::from_secs(5)).await.unwrap();
        ob.write_through(b"three\n", 1, &mut scratch);
        for want in ["early", "one", "two", "three"] {
            assert_eq!(read(&mut client).await, want);
        }
        // While held, the bus's deliveries wait behind the reply, even one sent in parts.
        out.hold();
        ob.write_through(b"live\n", 1, &mut scratch);
        let wt = Duration::from_secs(5);
        out.send(&[Bytes::from_static(b"reply 1\n")], wt).await.unwrap();
        ob.write_through(b"live 2\n", 1, &mut scratch);
        out.send(&[Bytes::from_static(b"reply 2\n")], wt).await.unwrap();
        out.release(wt).await.unwrap();
        for want in ["reply 1", "reply 2", "live", "live 2"] {
            assert_eq!(read(&mut client).await, want);
        }
    }

    #[tokio::test]
    async fn a_reader_that_stops_blocks_the_write_then_overflows_and_gets_bye_after_the_frame() {
        let (ob, out, mut client) = pair(4096).await;
        let mut scratch = Vec::new();
        let line = Bytes::from(format!("{}\n", "x".repeat(1000)));
        // The client reads nothing: the socket's buffers fill and a write would block.
        let mut n = 0;
        while out.status() == Status::Open && n < 100_000 {
            ob.write_through(&line, 1, &mut scratch);
            n += 1;
        }
        assert_eq!(out.status(), Status::Overflowed, "after {n} records");
        assert!(n > 4096, "the bound counts what waits, not what was written ({n})");
        let bye = Bytes::from_static(b"bye\n");
        let finish = tokio::spawn(async move {
            out.finish(&bye, false, Duration::from_secs(10)).await.map(|()| out)
        });
        // Read everything: whole records of x, then the bye, and the stream still authentic.
        let mut got = 0;
        loop {
            let r = read(&mut client).await;
            if r == "bye" {
                break;
            }
            assert_eq!(r.len(), 1000);
            got += 1;
        }
        assert!(got < n, "what waited unsealed was dropped ({got} of {n})");
        finish.await.unwrap().unwrap();
    }
}
