//! A session's inbox: the bounded queue through which the hub hands it encoded messages.
//!
//! The hub encodes a message once and puts the same `Bytes` (a reference count, not a copy)
//! into every recipient's mailbox; each session seals and writes its own queue in batches.
//! An entry is one or more whole records (the bus hands a run of events for one room over as
//! one shared chunk), so the capacity counts hand-offs, each at most one bus batch.
//!
//! Overflow policy: when a mailbox is full the message is not queued and the mailbox's
//! `overflow` token is cancelled; the session sees it and disconnects the client with
//! `too_slow`. The sender and the room never wait for a slow recipient, and a client never
//! silently misses a message while staying connected.

use std::sync::Arc;

use bytes::Bytes;
use chatao_proto::ServerMsg;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The hub's end: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Bytes>,
    overflow: CancellationToken,
    end: Ender,
}

/// How the hub ends a session (a kick, a ban, a takeover by a new connection of the same key):
/// it leaves the final `bye` here and cancels the token.
#[derive(Debug, Clone, Default)]
pub struct Ender {
    pub token: CancellationToken,
    bye: Arc<Mutex<Option<ServerMsg>>>,
}

impl Ender {
    /// The `bye` the hub left, if any.
    pub fn take_bye(&self) -> Option<ServerMsg> {
        self.bye.lock().take()
    }
}

/// The session's end.
#[derive(Debug)]
pub struct Inbox {
    pub rx: mpsc::Receiver<Bytes>,
    /// Cancelled when a message could not be queued because the mailbox was full.
    pub overflow: CancellationToken,
    /// Cancelled when the hub has ended the session.
    pub end: Ender,
}

/// A mailbox holding at most `capacity` messages.
pub fn mailbox(capacity: usize) -> (Mailbox, Inbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let overflow = CancellationToken::new();
    let end = Ender::default();
    (Mailbox { tx, overflow: overflow.clone(), end: end.clone() }, Inbox { rx, overflow, end })
}

impl Mailbox {
    /// Queues `msg` without waiting. A full mailbox trips the overflow token; a closed one
    /// (the session is ending and will be removed from the hub) drops the message.
    pub fn deliver(&self, msg: &Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(msg.clone()) {
            self.overflow.cancel();
        }
    }

    /// Ends the session: it sends `bye` (after nothing else) and closes.
    pub fn end(&self, bye: ServerMsg) {
        *self.end.bye.lock() = Some(bye);
        self.end.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_trips_the_token_instead_of_growing() {
        let (mb, mut inbox) = mailbox(2);
        let m = Bytes::from_static(b"x\n");
        mb.deliver(&m);
        mb.deliver(&m);
        assert!(!inbox.overflow.is_cancelled());
        mb.deliver(&m);
        assert!(inbox.overflow.is_cancelled());
        assert_eq!(inbox.rx.len(), 2);
        assert!(inbox.rx.try_recv().is_ok());
    }
}
