//! The network actor: one task owns the connection; the rest of the client talks to it through
//! a bounded handle and hears from it through a bounded event queue. Both client modes (line and
//! TUI) use it unchanged.
//!
//! [`connect`] does everything up to `welcome` (TCP, handshake, trust decision, `hello`); the
//! actor then relays server messages as [`NetEvent`]s, answers the server's pings, pings a quiet
//! server itself, and paces what it sends to the limits the server announced, so a client that
//! sends faster (a pasted file, a script) is slowed down rather than refused.

use std::sync::Arc;
use std::time::Duration;

use chatao_proto::{
    ClientMsg, ErrorCode, Limits, Nick, ServerMsg, TokenBucket, decode_server, encode,
    sanitize_line,
};
use chatao_transport::{Connection, HandshakeError, Keypair, TransportError};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::trust::{Trust, TrustError, Trusted};
use chatao_transport::Fingerprint;

/// Time to connect, shake hands and be welcomed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Silence from the server after which the client pings it.
pub const PING_AFTER: Duration = Duration::from_secs(30);
/// Silence from the server after which the connection counts as lost.
pub const DEAD_AFTER: Duration = Duration::from_secs(75);
/// Largest record accepted from the server. Larger than the server accepts from clients, and
/// five times the largest an honest server sends (a `room_list` page of 100 rooms with their
/// topics, a `members` page of 200; a server that predates paging sends a room's whole list,
/// about 90 bytes per member, which fits for 2,800 members). Overflow policy: the connection
/// counts as lost. With [`EVENT_QUEUE`] it bounds what the actor holds for the UI: 256 MiB at
/// the very worst (a hostile server, and a UI that stopped reading).
pub const MAX_SERVER_RECORD: usize = 256 * 1024;
/// Events waiting for the UI. Overflow policy: the actor waits (stops reading the socket), so
/// nothing is dropped; a UI stalled for long enough gets the client disconnected as too slow.
pub const EVENT_QUEUE: usize = 1024;
/// Messages waiting to be sent. Overflow policy: `send` waits (line mode reads stdin no faster
/// than the server accepts); `try_send` reports [`SendError::Full`] for the TUI to show.
pub const OUTBOX: usize = 256;

/// Who to connect to, as whom, and how to judge the server's key.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub nick: String,
    pub keys: Arc<Keypair>,
    pub trust: Trust,
}

/// What the server said in `welcome`, plus what we learned of it during the handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub session: u64,
    pub nick: Nick,
    /// Our own key's fingerprint, as the server saw it.
    pub fingerprint: Fingerprint,
    pub server: String,
    pub limits: Limits,
    /// The rooms the server remembers our key in: the core joins them
    /// ([`crate::core::Core::join_remembered`]).
    pub rooms: Vec<chatao_proto::RoomName>,
    /// A fixed-set session (`--rooms`): `rooms` is our own list ([`crate::servers::Profile`]),
    /// the server put us in no room.
    pub fixed_rooms: bool,
    pub server_fingerprint: Fingerprint,
    pub trusted: Trusted,
}

/// Something from the network for the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum NetEvent {
    /// A server message (never `ping`, `pong` or `bye`, which the actor handles).
    Msg(ServerMsg),
    /// Sent just before `Closed` when the connection was lost (or the server said `bye` with
    /// code `shutdown`) with messages still queued (not yet written to the socket): they never
    /// reached the server, so resending them after a reconnect cannot duplicate anything. This
    /// matters for commands only: a message with a client id is kept by the connection core
    /// ([`crate::core`]) until acknowledged, written to the socket or not, and sent again.
    Unsent(Vec<ClientMsg>),
    /// The connection is over; no event follows.
    Closed(Closed),
    /// Said by a layer of this client (its end-to-end encryption), never by the server: shown apart from
    /// server `notice`s in every mode, so that a server cannot pass its words off as the
    /// layer's (a fake "END-TO-END ENCRYPTED" or a fake `WARNING`). `warning` marks what must
    /// not be missed (forged or changed keys, a server caught lying).
    E2e { text: String, warning: bool },
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// The server said goodbye; `code` is `None` after our own `quit`.
    Bye { code: Option<ErrorCode>, reason: String },
    /// The connection broke or went silent.
    Lost(String),
}

/// Why [`connect`] failed. Each message states its cause once (the causes are part of the
/// text, not a `source` chain printed after it) and, where there is one, what to do. What the
/// server said (a refusal's reason, a record it sent) is passed through
/// [`chatao_proto::sanitize_line`] when the error is displayed: an error is printed to a
/// terminal, and a hostile server must not be able to write escape sequences there.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot find the server {host}: {cause}; check the name, or give its IP address")]
    Resolve { host: String, cause: std::io::Error },
    #[error("cannot connect to {addr}: {cause}{}", tcp_hint(addr, cause))]
    Tcp { addr: String, cause: std::io::Error },
    #[error("{addr} did not answer within {}s", CONNECT_TIMEOUT.as_secs())]
    Timeout { addr: String },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("handshake with {addr} failed: {cause}")]
    Handshake { addr: String, cause: HandshakeError },
    #[error("the server refused: {} ({code})", sanitize_line(reason))]
    Refused { code: ErrorCode, reason: String },
    #[error("connection to {addr} failed: {}", sanitize_line(detail))]
    Protocol { addr: String, detail: String },
}

/// Why [`connect_with`] failed: the connection, or the caller's step before `hello`.
#[derive(Debug)]
pub enum OpenError<E> {
    Net(ConnectError),
    BeforeHello(E),
}

impl<E> From<ConnectError> for OpenError<E> {
    fn from(e: ConnectError) -> Self {
        OpenError::Net(e)
    }
}

/// What to check after a failed TCP connection, for the kinds that have an answer.
fn tcp_hint(addr: &str, cause: &std::io::Error) -> String {
    match cause.kind() {
        std::io::ErrorKind::ConnectionRefused => format!(
            "; is chataosrv running on {addr}? The default port is {}",
            crate::servers::DEFAULT_PORT
        ),
        _ => String::new(),
    }
}

/// Why a message could not be handed to the actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("not connected")]
    Closed,
    #[error("too many messages waiting to be sent")]
    Full,
}

/// The UI's end of the actor: cheap to clone.
#[derive(Debug, Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<ClientMsg>,
}

impl NetHandle {
    /// A handle whose messages go to `tx` (the actor's outbox, or a layer put before it).
    pub fn new(tx: mpsc::Sender<ClientMsg>) -> NetHandle {
        NetHandle { tx }
    }

    /// Queues `msg` from a thread outside the runtime, waiting while the outbox is full.
    pub fn blocking_send(&self, msg: ClientMsg) -> Result<(), SendError> {
        self.tx.blocking_send(msg).map_err(|_| SendError::Closed)
    }

    /// Queues `msg`, waiting while the outbox is full.
    pub async fn send(&self, msg: ClientMsg) -> Result<(), SendError> {
        self.tx.send(msg).await.map_err(|_| SendError::Closed)
    }

    /// Waits until the outbox has room for one message (for a caller that then uses
    /// [`NetHandle::try_send`] and is the only one sending). Errors once the actor is gone.
    pub async fn ready(&self) -> Result<(), SendError> {
        self.tx.reserve().await.map(drop).map_err(|_| SendError::Closed)
    }

    /// Queues `msg` without waiting.
    pub fn try_send(&self, msg: ClientMsg) -> Result<(), SendError> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// Connects, verifies the server's key against `opts.trust` before revealing ours, says
/// `hello`, and waits for `welcome`. On success the actor is running.
pub async fn connect(opts: &ConnectOptions) -> Result<Connected, ConnectError> {
    connect_among(opts, &[]).await
}

/// What a successful [`connect`] gives: the welcome, the handle, and the actor's events.
pub type Connected = (Welcome, NetHandle, mpsc::Receiver<NetEvent>);

/// As [`connect`], to one server of a list: `siblings` are the other servers' `HOST:PORT`,
/// whose pins vouch for this one's key on first contact ([`Trust::verify_among`]).
pub async fn connect_among(
    opts: &ConnectOptions,
    siblings: &[String],
) -> Result<Connected, ConnectError> {
    connect_as(opts, chatao_proto::HelloFlags::default(), siblings).await
}

/// As [`connect_among`], saying `hello` with `flags` (`quiet`: a bot's session).
pub async fn connect_as(
    opts: &ConnectOptions,
    flags: chatao_proto::HelloFlags,
    siblings: &[String],
) -> Result<Connected, ConnectError> {
    let none = |_: &Fingerprint| std::future::ready(Ok::<(), std::convert::Infallible>(()));
    match connect_with(opts, flags, siblings, none).await {
        Ok((welcome, handle, events, ())) => Ok((welcome, handle, events)),
        Err(OpenError::Net(e)) => Err(e),
        Err(OpenError::BeforeHello(never)) => match never {},
    }
}

/// As [`connect_as`], with a step of the caller's between the handshake and `hello`, given the
/// server key's fingerprint: what it returns comes back with the connection, and its failure
/// ends the attempt before the server sees a session (the E2E state is opened there,
/// `crate::connect`). [`CONNECT_TIMEOUT`] covers it too.
pub async fn connect_with<T, E, F, Fut>(
    opts: &ConnectOptions,
    flags: chatao_proto::HelloFlags,
    siblings: &[String],
    before_hello: F,
) -> Result<(Welcome, NetHandle, mpsc::Receiver<NetEvent>, T), OpenError<E>>
where
    F: FnOnce(&Fingerprint) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let addr = crate::servers::Server { host: opts.host.clone(), port: opts.port }.to_string();
    let opening = open(opts, flags, &addr, siblings, before_hello);
    let (welcome, conn, prepared) = timeout(CONNECT_TIMEOUT, opening)
        .await
        .map_err(|_| ConnectError::Timeout { addr: addr.clone() })??;
    let (tx, rx) = mpsc::channel(OUTBOX);
    let (etx, erx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(run(conn, welcome.limits, rx, etx));
    Ok((welcome, NetHandle::new(tx), erx, prepared))
}

async fn open<T, E, F, Fut>(
    opts: &ConnectOptions,
    flags: chatao_proto::HelloFlags,
    addr: &str,
    siblings: &[String],
    before_hello: F,
) -> Result<(Welcome, Connection<TcpStream>, T), OpenError<E>>
where
    F: FnOnce(&Fingerprint) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    // Resolved apart from the connection, so that an unknown name is not taken for a server
    // that is down.
    let resolve = |cause| ConnectError::Resolve { host: opts.host.clone(), cause };
    let targets: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((opts.host.as_str(), opts.port)).await.map_err(resolve)?.collect();
    if targets.is_empty() {
        return Err(resolve(std::io::Error::other("the name has no address")).into());
    }
    let stream = TcpStream::connect(&targets[..])
        .await
        .map_err(|cause| ConnectError::Tcp { addr: addr.to_owned(), cause })?;
    let _ = stream.set_nodelay(true);
    let mut verdict = None;
    let shake = chatao_transport::connect(stream, &opts.keys, |key| {
        let result = opts.trust.verify_among(key, siblings);
        let refusal = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string().into()),
        };
        verdict = Some(result);
        refusal
    })
    .await;
    let trusted = match (shake, verdict) {
        (Err(_), Some(Err(trust))) => return Err(ConnectError::from(trust).into()),
        (Err(cause), _) => {
            return Err(ConnectError::Handshake { addr: addr.to_owned(), cause }.into());
        }
        (Ok(conn), Some(Ok(trusted))) => (conn, trusted),
        (Ok(_), _) => {
            return Err(ConnectError::Protocol {
                addr: addr.to_owned(),
                detail: "handshake finished without a key check".into(),
            }
            .into());
        }
    };
    let (mut conn, trusted) = trusted;
    conn.set_max_record(MAX_SERVER_RECORD);
    let server_fingerprint = conn.remote_key().fingerprint();
    let protocol = |detail: String| ConnectError::Protocol { addr: addr.to_owned(), detail };
    // The caller's step, before `hello`: a failure ends the attempt unseen by the room.
    let prepared = before_hello(&server_fingerprint).await.map_err(OpenError::BeforeHello)?;
    conn.write_record(&chatao_proto::encode_hello(&opts.nick, flags))
        .await
        .map_err(|e| protocol(e.to_string()))?;
    loop {
        let record = conn
            .read_record()
            .await
            .map_err(|e| protocol(e.to_string()))?
            .ok_or_else(|| protocol("the server closed the connection".into()))?;
        match decode_server(&record).map_err(|e| protocol(e.to_string()))? {
            ServerMsg::Welcome { session, nick, fingerprint, server, limits, rooms } => {
                let welcome = Welcome {
                    session,
                    nick,
                    fingerprint,
                    server,
                    limits,
                    rooms,
                    fixed_rooms: flags.fixed_rooms,
                    server_fingerprint,
                    trusted,
                };
                return Ok((welcome, conn, prepared));
            }
            ServerMsg::Bye { code, reason } => {
                let code = code.unwrap_or(ErrorCode::Other);
                return Err(ConnectError::Refused { code, reason }.into());
            }
            ServerMsg::Ping { token } => {
                let _ = conn.write_record(&encode(&ClientMsg::Pong { token })).await;
            }
            other => return Err(protocol(format!("expected welcome, got {other:?}")).into()),
        }
    }
}

/// The actor. Ends when the server says `bye`, the connection breaks or goes silent, or the UI
/// drops its event receiver; the last event it sends is `Closed`.
async fn run(
    mut conn: Connection<TcpStream>,
    limits: Limits,
    mut outbox: mpsc::Receiver<ClientMsg>,
    events: mpsc::Sender<NetEvent>,
) {
    let mut pacer = TokenBucket::new(limits.rate_per_sec, limits.burst, Instant::now().into_std());
    let mut held: Option<ClientMsg> = None;
    let mut outbox_open = true;
    let mut last_heard = Instant::now();
    let mut pinged = false;
    // Member lists in several records, put back together (bounded: chatao_proto::members).
    let mut lists = chatao_proto::members::Assembler::default();
    let closed = loop {
        let deadline = last_heard + if pinged { DEAD_AFTER } else { PING_AFTER };
        let wait = match &held {
            Some(msg) if is_paced(msg) => pacer.wait_time(),
            _ => Duration::ZERO,
        };
        tokio::select! {
            record = conn.read_record() => {
                last_heard = Instant::now();
                pinged = false;
                let mut record = match record {
                    Ok(Some(r)) => r,
                    Ok(None) => break Closed::Lost("the server closed the connection".into()),
                    Err(e) => break Closed::Lost(lost_reason(&e)),
                };
                // Every record the frame carried, in one wake-up (a busy room's frame holds
                // many), before the next turn of the select.
                let ended = loop {
                    let msg = match decode_server(&record) {
                        Ok(m) => m,
                        Err(e) => break Some(Closed::Lost(format!("protocol error: {e}"))),
                    };
                    match msg {
                        ServerMsg::Ping { token } => {
                            let pong = encode(&ClientMsg::Pong { token });
                            if let Err(e) = conn.write_record(&pong).await {
                                break Some(Closed::Lost(lost_reason(&e)));
                            }
                        }
                        ServerMsg::Pong { .. } | ServerMsg::Unknown => {}
                        ServerMsg::Bye { code, reason } => break Some(Closed::Bye { code, reason }),
                        other => {
                            // A member list sent in several records goes up whole, once.
                            if let Some(other) = lists.take(other)
                                && events.send(NetEvent::Msg(other)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    record = match conn.buffered_record() {
                        Ok(Some(r)) => r,
                        Ok(None) => break None,
                        Err(e) => break Some(Closed::Lost(lost_reason(&e))),
                    };
                };
                if let Some(closed) = ended {
                    break closed;
                }
            }
            msg = outbox.recv(), if held.is_none() && outbox_open => {
                match msg {
                    Some(msg) => held = Some(msg),
                    None => outbox_open = false,
                }
            }
            _ = sleep(wait), if held.is_some() => {
                let paced = held.as_ref().is_some_and(is_paced);
                if paced && !pacer.try_take(Instant::now().into_std()) {
                    continue;
                }
                if let Some(msg) = held.take()
                    && let Err(e) = conn.write_record(&encode(&msg)).await
                {
                    break Closed::Lost(lost_reason(&e));
                }
            }
            _ = sleep_until(deadline) => {
                if pinged {
                    break Closed::Lost("the server stopped answering".into());
                }
                pinged = true;
                let token = u64::from(std::process::id());
                if let Err(e) = conn.write_record(&encode(&ClientMsg::Ping { token })).await {
                    break Closed::Lost(lost_reason(&e));
                }
            }
        }
    };
    // After a loss, or a server's shutdown (the client reconnects, perhaps elsewhere), what
    // was never written is reported so it can be sent again.
    if matches!(closed, Closed::Lost(_) | Closed::Bye { code: Some(ErrorCode::Shutdown), .. }) {
        let mut unsent: Vec<ClientMsg> = held.into_iter().collect();
        outbox.close();
        while let Ok(msg) = outbox.try_recv() {
            unsent.push(msg);
        }
        unsent.retain(|m| !matches!(m, ClientMsg::Ping { .. } | ClientMsg::Pong { .. }));
        if !unsent.is_empty() {
            let _ = events.send(NetEvent::Unsent(unsent)).await;
        }
    }
    let _ = events.send(NetEvent::Closed(closed)).await;
}

/// Messages the server counts against the rate: all but keepalives and goodbyes.
fn is_paced(msg: &ClientMsg) -> bool {
    !matches!(
        msg,
        ClientMsg::Ping { .. }
            | ClientMsg::Pong { .. }
            | ClientMsg::Quit { .. }
            | ClientMsg::Hello { .. }
    )
}

fn lost_reason(e: &TransportError) -> String {
    format!("connection lost: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection error is printed to a terminal (stderr, or a server list's report): what
    /// the server said shows there as harmless text, on one line.
    #[test]
    fn what_the_server_said_is_displayed_inert_in_connection_errors() {
        let nasty = "\u{1b}]0;PWNED-TITLE\u{7}\u{1b}[2J\u{9b}2J\u{202e}x\u{2028}\nPassword: ";
        let refused = ConnectError::Refused { code: ErrorCode::Other, reason: nasty.into() };
        let protocol = ConnectError::Protocol { addr: "h:1".into(), detail: nasty.into() };
        for e in [refused, protocol] {
            let text = e.to_string();
            assert!(!text.chars().any(chatao_proto::text::is_display_hazard), "{text:?}");
            assert!(text.contains("␛]0;PWNED-TITLE␇␛[2J\u{FFFD}2J\u{FFFD}x␤␊Password:"), "{text}");
        }
    }
}
