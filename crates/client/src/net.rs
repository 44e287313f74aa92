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
    /// Where end-to-end encrypted rooms keep their MLS state (one directory per server key and
    /// identity is made under it, see [`crate::e2e::state_dir`]); `None`: no E2E rooms.
    pub e2e_dir: Option<std::path::PathBuf>,
}

/// What the server said in `welcome`, plus what we learned of it during the handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub session: u64,
    pub nick: Nick,
    /// Our own key's fingerprint, as the server saw it.
    pub fingerprint: String,
    pub server: String,
    pub limits: Limits,
    /// The rooms the server remembers our key in: the core joins them
    /// ([`crate::core::Core::join_remembered`]).
    pub rooms: Vec<chatao_proto::RoomName>,
    /// A fixed-set session (`--rooms`): `rooms` is our own list ([`crate::servers::Profile`]),
    /// the server put us in no room.
    pub fixed_rooms: bool,
    pub server_fingerprint: String,
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
    /// Said by this client's E2E layer ([`crate::e2e`]), never by the server: shown apart from
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
    /// The E2E state could not be opened (damaged, unreadable); found before `hello`.
    #[error("{0}")]
    E2e(String),
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
    /// The E2E layer's requests, when it is attached.
    requests: Option<mpsc::Sender<crate::e2e::Request>>,
    /// Without the E2E state ([`crate::e2e::off`]): where the messages that need it go
    /// instead of the server.
    refused: Option<mpsc::Sender<ClientMsg>>,
}

impl NetHandle {
    /// A handle over the E2E layer's channels ([`crate::e2e::attach`]).
    pub(crate) fn with_requests(
        tx: mpsc::Sender<ClientMsg>,
        requests: mpsc::Sender<crate::e2e::Request>,
    ) -> NetHandle {
        NetHandle { tx, requests: Some(requests), refused: None }
    }

    /// This handle, with what needs the E2E state ([`crate::e2e::off::needs_state`]) and the
    /// E2E requests sent to `refused` and `requests` instead.
    pub(crate) fn refusing(
        self,
        refused: mpsc::Sender<ClientMsg>,
        requests: mpsc::Sender<crate::e2e::Request>,
    ) -> NetHandle {
        NetHandle { tx: self.tx, requests: Some(requests), refused: Some(refused) }
    }

    /// Where `msg` goes: the actor, or the refusals of a connection without E2E state.
    fn route(&self, msg: &ClientMsg) -> &mpsc::Sender<ClientMsg> {
        match &self.refused {
            Some(refused) if crate::e2e::off::needs_state(msg) => refused,
            _ => &self.tx,
        }
    }

    /// Queues `msg` from a thread outside the runtime, waiting while the outbox is full.
    pub(crate) fn blocking_send(&self, msg: ClientMsg) -> Result<(), SendError> {
        self.route(&msg).blocking_send(msg).map_err(|_| SendError::Closed)
    }

    /// Hands `req` to the E2E layer without waiting; [`SendError::Closed`] when there is none.
    pub fn try_request(&self, req: crate::e2e::Request) -> Result<(), SendError> {
        match &self.requests {
            Some(tx) => tx.try_send(req).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            }),
            None => Err(SendError::Closed),
        }
    }

    /// Hands `req` to the E2E layer, waiting while its queue is full.
    pub async fn request(&self, req: crate::e2e::Request) -> Result<(), SendError> {
        match &self.requests {
            Some(tx) => tx.send(req).await.map_err(|_| SendError::Closed),
            None => Err(SendError::Closed),
        }
    }

    /// Queues `msg`, waiting while the outbox is full.
    pub async fn send(&self, msg: ClientMsg) -> Result<(), SendError> {
        self.route(&msg).send(msg).await.map_err(|_| SendError::Closed)
    }

    /// Waits until the outbox has room for one message (for a caller that then uses
    /// [`NetHandle::try_send`] and is the only one sending). Errors once the actor is gone.
    pub async fn ready(&self) -> Result<(), SendError> {
        self.tx.reserve().await.map(drop).map_err(|_| SendError::Closed)
    }

    /// Queues `msg` without waiting.
    pub fn try_send(&self, msg: ClientMsg) -> Result<(), SendError> {
        self.route(&msg).try_send(msg).map_err(|e| match e {
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
/// whose pins vouch for this one's key on first contact ([`Trust::verify_among`]). The E2E
/// state is this connection's only (see [`connect_claiming`]).
pub async fn connect_among(
    opts: &ConnectOptions,
    siblings: &[String],
) -> Result<Connected, ConnectError> {
    connect_claiming(opts, siblings, &crate::e2e::StateClaims::default()).await
}

/// As [`connect_among`], with the E2E state held through `claims` (kept from one connection
/// to the next). Whether this connection has the E2E state is decided after the handshake
/// and before `hello`: a state another process holds makes a connection without E2E rooms
/// ([`crate::e2e::off`]), never a session the server sees begin and end at once.
pub async fn connect_claiming(
    opts: &ConnectOptions,
    siblings: &[String],
    claims: &crate::e2e::StateClaims,
) -> Result<Connected, ConnectError> {
    connect_as(opts, chatao_proto::HelloFlags::default(), siblings, claims).await
}

/// As [`connect_claiming`], saying `hello` with `flags` (`quiet`: a bot's session).
pub async fn connect_as(
    opts: &ConnectOptions,
    flags: chatao_proto::HelloFlags,
    siblings: &[String],
    claims: &crate::e2e::StateClaims,
) -> Result<Connected, ConnectError> {
    let addr = crate::servers::Server { host: opts.host.clone(), port: opts.port }.to_string();
    let opening = open(opts, flags, &addr, siblings, claims);
    let (welcome, conn, setup) = timeout(CONNECT_TIMEOUT, opening)
        .await
        .map_err(|_| ConnectError::Timeout { addr: addr.clone() })??;
    let (tx, rx) = mpsc::channel(OUTBOX);
    let (etx, erx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(run(conn, welcome.limits, rx, etx));
    let handle = NetHandle { tx, requests: None, refused: None };
    let failed = |detail: String| ConnectError::Protocol { addr: addr.clone(), detail };
    match setup {
        None => Ok((welcome, handle, erx)),
        Some(crate::e2e::Setup::Off { holder, say }) => {
            let (handle, erx) = crate::e2e::off::attach(holder, say, handle, erx);
            Ok((welcome, handle, erx))
        }
        // End-to-end encrypted rooms: the layer sits between the actor and the UI.
        Some(crate::e2e::Setup::Engine { e2e, dir }) => {
            let w = welcome.clone();
            let layer = tokio::task::spawn_blocking(move || crate::e2e::prepare(*e2e, &dir, &w))
                .await
                .map_err(|e| failed(e.to_string()))?;
            let (handle, erx) =
                crate::e2e::attach(layer, handle, erx).map_err(|e| failed(e.to_string()))?;
            Ok((welcome, handle, erx))
        }
    }
}

async fn open(
    opts: &ConnectOptions,
    flags: chatao_proto::HelloFlags,
    addr: &str,
    siblings: &[String],
    claims: &crate::e2e::StateClaims,
) -> Result<(Welcome, Connection<TcpStream>, Option<crate::e2e::Setup>), ConnectError> {
    // Resolved apart from the connection, so that an unknown name is not taken for a server
    // that is down.
    let resolve = |cause| ConnectError::Resolve { host: opts.host.clone(), cause };
    let targets: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((opts.host.as_str(), opts.port)).await.map_err(resolve)?.collect();
    if targets.is_empty() {
        return Err(resolve(std::io::Error::other("the name has no address")));
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
        (Err(_), Some(Err(trust))) => return Err(trust.into()),
        (Err(cause), _) => return Err(ConnectError::Handshake { addr: addr.to_owned(), cause }),
        (Ok(conn), Some(Ok(trusted))) => (conn, trusted),
        (Ok(_), _) => {
            return Err(ConnectError::Protocol {
                addr: addr.to_owned(),
                detail: "handshake finished without a key check".into(),
            });
        }
    };
    let (mut conn, trusted) = trusted;
    conn.set_max_record(MAX_SERVER_RECORD);
    let server_fingerprint = conn.remote_key().fingerprint();
    let protocol = |detail: String| ConnectError::Protocol { addr: addr.to_owned(), detail };
    // The E2E state, before `hello`: a failure to open it ends the attempt unseen by the room.
    let setup = match &opts.e2e_dir {
        None => None,
        Some(base) => {
            let dir =
                crate::e2e::state_dir(base, &server_fingerprint, &opts.keys.public().fingerprint());
            let (claims, keys, nick) = (claims.clone(), opts.keys.clone(), opts.nick.clone());
            let setup = tokio::task::spawn_blocking(move || claims.setup(&dir, &keys, &nick))
                .await
                .map_err(|e| protocol(e.to_string()))?
                .map_err(|e| match e.is_busy() {
                    true => protocol(e.to_string()),
                    false => ConnectError::E2e(e.to_string()),
                })?;
            Some(setup)
        }
    };
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
                return Ok((welcome, conn, setup));
            }
            ServerMsg::Bye { code, reason } => {
                return Err(ConnectError::Refused {
                    code: code.unwrap_or(ErrorCode::Other),
                    reason,
                });
            }
            ServerMsg::Ping { token } => {
                let _ = conn.write_record(&encode(&ClientMsg::Pong { token })).await;
            }
            other => return Err(protocol(format!("expected welcome, got {other:?}"))),
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
