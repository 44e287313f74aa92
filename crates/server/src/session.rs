//! One connection, from handshake to goodbye, in one task.
//!
//! ```text
//! timeout(handshake_timeout, handshake + hello)  -> Connection, SessionState, Inbox
//! loop select! (biased) {
//!     shutdown            -> bye(shutdown)
//!     inbox overflow      -> drop the queue, bye(too_slow) (never mid-frame)
//!     inbox batch         -> seal and write the whole batch at once (never cut)
//!     conn.read_record()  -> decode -> (fakelag: a token, or wait in the backlog)
//!                            -> Command::apply(&hub, &mut state) -> reply / close
//!     lag timer           -> the backlog's head, once its token is due
//!     idle timer          -> ping, then bye(timeout)
//! }
//! hub.leave(...)          -> the room hears why
//! ```
//! A failure ends only this session. The departure is announced as `quit` (said goodbye),
//! `lost` (connection ended without one, or broke) or `dropped` (the server ended it).

mod fakelag;
mod registry;

pub use registry::{Membership, Registry};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatao_proto::{
    ClientMsg, ErrorCode, Fingerprint, LeaveReason, Nick, ServerMsg, decode_client, encode,
};
use chatao_transport::{Connection, RecordReader, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cmd::{Command, Replay, Reply, SessionState, error, hub_error};
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::{
    CLOSE_LINGER, FAKELAG_BACKLOG_SECS, MAX_RECORD_BYTES, MAX_RECORD_DISCARD, WRITE_BATCH,
    WRITE_TIMEOUT,
};
use crate::log_budget::LogBudget;
use crate::metrics::{Counted, Handshake};
use crate::outbox::{Outgoing, Status, WriteError, outbox};
use crate::replay;
use fakelag::{Backlog, Held, Next, OutputBudget};
use registry::REGISTRATION_WAIT;

/// Server software name and version, sent in `welcome`.
pub const SERVER_NAME: &str = concat!("chataosrv ", env!("CARGO_PKG_VERSION"));

/// Longest a `quit` waits for the bus to deliver what came before it.
const QUIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// What every session shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub hub: Hub,
    pub config: Arc<Config>,
    /// The server's counters ([`crate::config::Runtime::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    pub shutdown: CancellationToken,
    /// Where nicknames and the rooms a key stays in are kept: the store, or the cluster
    /// ([`Registry`]).
    pub registry: Registry,
    /// Refused connections logged at `info` (the rest at `debug`).
    pub refusals_logged: Arc<LogBudget>,
}

/// How a session ended, for the departure announcement and the log.
#[derive(Debug)]
struct Ending {
    reason: LeaveReason,
    message: Option<String>,
    /// The session already left the hub and counted its disconnect (an overflow: the room is
    /// told before the bye is written).
    left: bool,
}

impl Ending {
    fn new(reason: LeaveReason, message: &str) -> Ending {
        Ending { reason, message: Some(message.to_owned()), left: false }
    }
}

/// Runs one connection to its end. Never panics on anything the peer sends; every failure is
/// logged with the peer address and ends only this session.
pub async fn run(stream: TcpStream, peer: SocketAddr, ctx: Ctx) {
    let stream = Counted::new(stream, ctx.metrics.clone());
    let id = ctx.hub.next_session_id();
    let opened = tokio::select! {
        r = timeout(ctx.config.handshake_timeout, Box::pin(open(stream, id, &ctx))) => r,
        _ = ctx.shutdown.cancelled() => return,
    };
    let metrics = &ctx.metrics;
    let (conn, state, out) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(cause)) => {
            // The cause may quote what the peer sent (serde's "unknown variant" text): it is
            // logged with Debug formatting, escaped, so that it cannot forge log lines.
            let refused = matches!(cause, OpenError::Refused(..));
            let cause = cause.to_string();
            if !refused {
                metrics.handshake(Handshake::Failed);
                debug!(%peer, session = id, ?cause, "handshake failed");
                return;
            }
            metrics.handshake(Handshake::Refused);
            match ctx.refusals_logged.take(Instant::now().into_std()) {
                Some(0) => info!(%peer, session = id, ?cause, "session refused"),
                Some(held_back) => info!(%peer, session = id, ?cause, held_back, "session refused"),
                None => debug!(%peer, session = id, ?cause, "session refused"),
            }
            return;
        }
        Err(_) => {
            metrics.handshake(Handshake::Failed);
            debug!(%peer, session = id, "handshake timed out");
            return;
        }
    };
    metrics.handshake(Handshake::Ok);
    let fingerprint = conn.remote_key().fingerprint();
    info!(%peer, session = id, fp = %fingerprint, nick = %state.nick, "session opened");
    // From here the socket is split: this task reads, and the outbox (outbox.rs) holds the
    // write half with the Noise sealer, written by the bus thread and by this task.
    let (mut reader, sealer, writer) = conn.into_split(|s| {
        let (r, w) = s.into_inner().into_split();
        (Counted::new(r, metrics.clone()), w)
    });
    out.attach(sealer, writer, metrics.clone());
    let (ending, claim) = serve(&mut reader, state, &out, &ctx).await;
    if !ending.left {
        metrics.disconnected(ending.reason);
        ctx.hub.leave(id, ending.reason, ending.message.clone());
    }
    ctx.registry.release(claim).await;
    out.shutdown();
    // Closing a socket with unread input makes the kernel send a reset, which destroys a `bye`
    // still in flight (a flooder's, typically). Drain for a moment so that the close is a FIN;
    // not during shutdown, which must not wait for clients that keep their end open.
    let drain = async { while let Ok(Some(_)) = reader.read_record().await {} };
    tokio::select! {
        _ = timeout(CLOSE_LINGER, drain) => {}
        _ = ctx.shutdown.cancelled() => {}
    }
    info!(
        %peer, session = id, fp = %fingerprint, reason = ?ending.reason,
        detail = ending.message.as_deref().unwrap_or(""), "session ended"
    );
}

/// Why a connection was not admitted.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] chatao_transport::HandshakeError),
    #[error("before hello: {0}")]
    Transport(#[from] TransportError),
    /// Refused after the handshake: the code, the reason, and the client key's fingerprint.
    #[error("refused ({0}) key {2}: {1}")]
    Refused(ErrorCode, String, Fingerprint),
}

/// Handshake, then `hello`, then registration in the hub and `welcome`.
async fn open<S>(
    stream: S,
    id: u64,
    ctx: &Ctx,
) -> Result<(Connection<S>, SessionState, Outgoing), OpenError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = chatao_transport::accept(stream, &ctx.config.keys).await?;
    // Records over MAX_RECORD_BYTES are read to their end (up to MAX_RECORD_DISCARD) so that
    // they can be refused with a reason rather than by closing the connection.
    conn.set_max_record(MAX_RECORD_DISCARD);
    conn.set_stall_limit(Some(ctx.config.stall_timeout));
    let fingerprint = conn.remote_key().fingerprint();
    // A ban applies to the key and to its person (hub/devices.rs: a linked key's first key).
    let person = ctx.hub.person_of(&fingerprint);
    for key in [&fingerprint, &person] {
        if let Err(refusal) = ctx.hub.access().admit(key) {
            return Err(refuse(&mut conn, refusal.code, refusal.reason).await);
        }
    }
    let first = match conn.read_record().await {
        Err(TransportError::RecordTooLarge { .. }) => Err(()),
        Ok(Some(record)) if record.len() >= MAX_RECORD_BYTES => Err(()),
        other => Ok(other?),
    };
    let Ok(first) = first else {
        return Err(refuse(&mut conn, ErrorCode::TooLong, record_too_long()).await);
    };
    let nick = match first {
        None => return Err(TransportError::Truncated.into()),
        Some(record) => match decode_client(&record) {
            Ok(ClientMsg::Hello { nick }) => Nick::parse(&nick)
                .map(|nick| (nick, chatao_proto::decode_hello_flags(&record)))
                .map_err(|e| (ErrorCode::InvalidNick, e.to_string())),
            Ok(_) => Err((ErrorCode::BadSequence, "the first message must be hello".to_owned())),
            Err(e) => Err((ErrorCode::BadMessage, e.to_string())),
        },
    };
    let (nick, flags) = match nick {
        Ok(found) => found,
        Err((code, reason)) => return Err(refuse(&mut conn, code, reason).await),
    };
    // A muted key keeps its names but takes no new one: a nickname is text in front of others
    // (announced at every join), and a fresh connection is no way around the mute.
    let access = ctx.hub.access();
    if let Some(why) = access.muted(&fingerprint).or_else(|| access.muted(&person))
        && ctx.hub.owner_of(&nick).as_ref() != Some(&person)
    {
        let why = format!("{why}; a muted key takes no new nickname: connect with one it holds");
        return Err(refuse(&mut conn, ErrorCode::Muted, why).await);
    }
    // `welcome` acknowledges the nickname's registration: only once it is durable.
    let (mb, out) = outbox(ctx.config.mailbox_capacity);
    let claim =
        match ctx.registry.register(&ctx.hub, id, &nick, &fingerprint, (mb, flags.quiet)).await {
            Ok(claim) => claim,
            Err((code, reason)) => return Err(refuse(&mut conn, code, reason).await),
        };
    // The rooms the key stays in (hub/membership.rs): listed in `welcome` for the client to
    // join with its own catch-up; the default room is joined here when it is among them or
    // the key is remembered nowhere (the client tells the same from the list). A fixed-set
    // session is put nowhere. A store that cannot be read costs the list, not the session.
    let lobby = ctx.hub.config().default_room.clone();
    let remembered = if flags.fixed_rooms {
        ctx.hub.set_fixed_rooms(id);
        None
    } else {
        // The person's rooms: a linked key is put back where its first key is.
        let read = ctx.registry.remembered(&ctx.hub, &person).await;
        match read {
            Ok(rooms) => Some(rooms),
            Err(cause) => {
                warn!(session = id, %cause, "cannot read the rooms this key stays in");
                Some(Vec::new())
            }
        }
    };
    // E2E rooms are left out: a client rejoins those through its E2E layer, from its group
    // state (a process of the key without that state must not be sent into them).
    let join_lobby = remembered.is_some();
    let rooms: Vec<_> =
        remembered.unwrap_or_default().into_iter().filter(|r| !ctx.hub.is_e2e(r)).collect();
    let join_lobby = join_lobby && (rooms.is_empty() || rooms.contains(&lobby));
    let welcome = ServerMsg::Welcome {
        session: id,
        nick: nick.clone(),
        fingerprint: fingerprint.clone(),
        server: SERVER_NAME.to_owned(),
        limits: ctx.config.limits,
        rooms,
    };
    let mut records = vec![encode(&welcome)];
    if join_lobby && let Ok(joined) = ctx.hub.join(id, &lobby) {
        let joined_lobby = Membership::Join(lobby.clone());
        ctx.registry.after(&ctx.hub, id, Some(&joined_lobby)).await;
        let replay = Replay {
            joined,
            since: None,
            limit: ctx.hub.config().history_on_join,
            intro: true,
            before: None,
        };
        records.extend(replay::records(&ctx.hub, &replay).await);
    }
    if let Err(e) = conn.write_records(&records).await {
        ctx.hub.leave(id, LeaveReason::Lost, None);
        return Err(e.into());
    }
    let now = Instant::now().into_std();
    let mut state = SessionState::new(id, nick, fingerprint, ctx.config.limits, now);
    state.person = person;
    state.claim = claim;
    Ok((conn, state, out))
}

/// Why a record over [`MAX_RECORD_BYTES`] was refused.
fn record_too_long() -> String {
    format!("a message over {MAX_RECORD_BYTES} bytes (its newline included) was refused")
}

/// Sends a final `bye` with `code` and returns the refusal as an error.
async fn refuse<S>(conn: &mut Connection<S>, code: ErrorCode, reason: String) -> OpenError
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bye = encode(&ServerMsg::Bye { code: Some(code), reason: reason.clone() });
    let _ = timeout(WRITE_TIMEOUT, conn.write_record(&bye)).await;
    // The client may already have sent `hello`; closing with it unread would reset the
    // connection and could destroy the `bye`. Drain briefly so the close is a FIN.
    let _ = timeout(WRITE_TIMEOUT, conn.shutdown()).await;
    let _ =
        timeout(CLOSE_LINGER, async { while let Ok(Some(_)) = conn.read_record().await {} }).await;
    OpenError::Refused(code, reason, conn.remote_key().fingerprint())
}

/// Writes `batch` within `limit` (the configured [`WRITE_TIMEOUT`]), ahead of the deliveries
/// waiting in the outbox. After a timeout the connection may have a frame cut in the middle:
/// the caller ends the session and writes nothing more.
async fn write(out: &Outgoing, limit: Duration, batch: &[Bytes]) -> Result<(), Ending> {
    out.send(batch, limit).await.map_err(write_ending)
}

/// How a failed write ends the session.
fn write_ending(e: WriteError) -> Ending {
    match e {
        WriteError::TimedOut => Ending::new(LeaveReason::Dropped, "write timed out"),
        e => Ending::new(LeaveReason::Lost, &e.to_string()),
    }
}

/// Sends what is still queued, then `bye`, and returns `ending`.
async fn close(out: &Outgoing, limit: Duration, bye: ServerMsg, ending: Ending) -> Ending {
    let _ = out.finish(&encode(&bye), true, limit).await;
    ending
}

async fn serve(
    reader: &mut Reader,
    mut state: SessionState,
    out: &Outgoing,
    ctx: &Ctx,
) -> (Ending, Option<crate::cluster::Claim>) {
    let ending = serve_loop(reader, &mut state, out, ctx).await;
    (ending, state.claim.take())
}

/// The session's receiving half.
type Reader = RecordReader<Counted<OwnedReadHalf>>;

async fn serve_loop(
    reader: &mut Reader,
    state: &mut SessionState,
    out: &Outgoing,
    ctx: &Ctx,
) -> Ending {
    let cfg = &ctx.config;
    let wt = cfg.write_timeout;
    let mut last_heard = Instant::now();
    let mut ping_token: Option<u64> = None;
    // Fakelag (session/fakelag.rs): records over the rate wait here, in order, and are handled
    // when their token is due; bounded at `rate_per_sec` x FAKELAG_BACKLOG_SECS records (then
    // `bye rate_limited`) and FAKELAG_BACKLOG_BYTES bytes (then the socket is not read until
    // there is room). It also holds the output budget: every reply to the client's own request
    // is charged by its size, and while the budget is overdrawn nothing from the client is
    // handled (issue 15 item 14: `history` amplification).
    let output = OutputBudget::new(
        cfg.output_bytes_per_sec,
        cfg.output_burst_bytes,
        Instant::now().into_std(),
    );
    let mut backlog = Backlog::new(&state.limits, output);
    // Wakes the session when the backlog's head has its token.
    let lag_timer = sleep_until(Instant::now());
    // Answers the ping left in `state.pong_owed` by the pong pace (cmd/ping.rs).
    let pong_timer = sleep_until(Instant::now());
    // The futures the loop waits on besides the socket are made once, not on every turn: on a
    // busy session that setup was a measurable share of the CPU.
    let shutdown_token = ctx.shutdown.clone();
    let shutdown = shutdown_token.cancelled();
    let woken = out.woken();
    // The idle timer is not moved on every record (that would cost a timer update per
    // message): when it fires it checks how long the client has really been silent.
    let idle = sleep_until(last_heard + cfg.ping_after);
    tokio::pin!(shutdown, woken, idle, pong_timer, lag_timer);
    // No branch below races a write: each write is awaited to its end (or its timeout, after
    // which nothing more is written), so a `bye` always follows whole frames.
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                let bye = ServerMsg::Bye {
                    code: Some(ErrorCode::Shutdown),
                    reason: "the server is shutting down".into(),
                };
                return close(out, wt, bye, Ending::new(LeaveReason::Dropped, "server shutting down")).await;
            }
            _ = &mut woken => {
                woken.set(out.woken());
                // The outbox has something for us (outbox.rs): what the hub handed over, a
                // write of the bus thread that would have blocked, or a new status.
                match out.status() {
                    Status::Open => {
                        if let Err(e) = out.drain(wt).await {
                            // A client that stopped reading overflows its outbox while this
                            // write waits; when the write then fails or times out, that is
                            // still an overflow.
                            if out.status() == Status::Overflowed {
                                ctx.metrics.mailbox_overflows.inc();
                                return Ending::new(LeaveReason::Dropped, "too slow");
                            }
                            return write_ending(e);
                        }
                    }
                    Status::Overflowed => {
                        // Between writes: the frame in flight, if any, is finished. What
                        // waited is dropped, not sent, and the `bye` goes out alone, whole,
                        // within the write timeout.
                        let bye = ServerMsg::Bye {
                            code: Some(ErrorCode::TooSlow),
                            reason: "disconnected: you were not reading messages fast enough".into(),
                        };
                        ctx.metrics.mailbox_overflows.inc();
                        // The room is told at once, not after the write timeout: the frame in
                        // flight and the bye wait for a reader that may come back (a stalled
                        // terminal).
                        ctx.metrics.disconnected(LeaveReason::Dropped);
                        ctx.hub.leave(state.id, LeaveReason::Dropped, Some("too slow".into()));
                        let _ = out.finish(&encode(&bye), false, wt).await;
                        return Ending { left: true, ..Ending::new(LeaveReason::Dropped, "too slow") };
                    }
                    Status::Ended(bye) => {
                        // The hub has already taken us out of every room and said why.
                        let _ = out.finish(&encode(&bye), false, wt).await;
                        return Ending::new(LeaveReason::Kicked, "ended by the hub");
                    }
                    Status::Failed => return Ending::new(LeaveReason::Lost, "write failed"),
                    Status::Closed => return Ending::new(LeaveReason::Dropped, "closed"),
                }
            }
            record = reader.read_record(), if backlog.may_read() => {
                last_heard = Instant::now();
                ping_token = None;
                let (held, len) = match record {
                    Ok(Some(record)) => {
                        ctx.metrics.messages_in.inc();
                        let len = record.len();
                        (classify(&record), len)
                    }
                    Ok(None) => return Ending::new(LeaveReason::Lost, "connection lost"),
                    Err(TransportError::RecordTooLarge { .. }) => {
                        // No end of the record within MAX_RECORD_DISCARD: nothing after it can
                        // be read, but the frames were authentic, so the client is told why.
                        let bye = ServerMsg::Bye {
                            code: Some(ErrorCode::TooLong),
                            reason: format!(
                                "{}; nothing after it can be read (it did not end within \
                                 {MAX_RECORD_DISCARD} bytes)",
                                record_too_long()
                            ),
                        };
                        return close(out, wt, bye, Ending::new(LeaveReason::Dropped, "message too long")).await;
                    }
                    Err(TransportError::Stalled) => {
                        let bye = ServerMsg::Bye {
                            code: Some(ErrorCode::Timeout),
                            reason: "a message was started and never finished".into(),
                        };
                        return close(out, wt, bye, Ending::new(LeaveReason::Lost, "stalled mid-message")).await;
                    }
                    Err(e) => {
                        warn!(session = state.id, cause = %e, "connection broken");
                        return Ending::new(LeaveReason::Lost, "connection broken");
                    }
                };
                let now = Instant::now();
                let was_empty = backlog.is_empty();
                match backlog.arrive(held, len, &mut state.rate, now.into_std()) {
                    Ok(Some(held)) => {
                        if let Err(ending) = Box::pin(handle(out, state, ctx, held, &mut backlog, pong_timer.as_mut())).await {
                            return ending;
                        }
                    }
                    // Held: the lag timer is armed for a backlog that was empty (else it already
                    // runs for the head); its first turn works out the wait (a token or the
                    // output budget).
                    Ok(None) => {
                        if was_empty {
                            lag_timer.as_mut().reset(now);
                        }
                    }
                    Err(full) => {
                        let bye = ServerMsg::Bye {
                            code: Some(ErrorCode::RateLimited),
                            reason: format!(
                                "disconnected: you stayed over the rate ({} messages per second, \
                                 burst {}) for {FAKELAG_BACKLOG_SECS} s; {} messages were waiting \
                                 and were not handled",
                                state.limits.rate_per_sec, state.limits.burst, full.waiting
                            ),
                        };
                        info!(session = state.id, waiting = full.waiting, "flooding");
                        return close(out, wt, bye, Ending::new(LeaveReason::Dropped, "flooding")).await;
                    }
                }
            }
            _ = &mut lag_timer, if !backlog.is_empty() => {
                // Handles what is due, a few at a time so that the inbox gets its turn.
                for _ in 0..WRITE_BATCH {
                    let now = Instant::now();
                    match backlog.next(&mut state.rate, now.into_std()) {
                        Next::Ready(held) => {
                            if let Err(ending) = Box::pin(handle(out, state, ctx, held, &mut backlog, pong_timer.as_mut())).await {
                                return ending;
                            }
                        }
                        Next::Wait(wait) => {
                            lag_timer.as_mut().reset(now + wait);
                            break;
                        }
                        Next::Empty => break,
                    }
                }
            }
            _ = &mut pong_timer, if state.pong_owed.is_some() => {
                let now = Instant::now();
                if !state.pongs.try_take(now.into_std()) {
                    pong_timer.as_mut().reset(now + state.pongs.wait_time());
                    continue;
                }
                if let Some(token) = state.pong_owed.take()
                    && let Err(ending) = write(out, wt, &[encode(&ServerMsg::Pong { token })]).await
                {
                    return ending;
                }
            }
            _ = &mut idle => {
                if !backlog.is_empty() {
                    // A throttled client is not idle: what it sent is still being handled.
                    last_heard = Instant::now();
                    ping_token = None;
                }
                let due = match ping_token {
                    None => last_heard + cfg.ping_after,
                    Some(_) => last_heard + cfg.idle_timeout,
                };
                if Instant::now() < due {
                    idle.as_mut().reset(due);
                    continue;
                }
                if ping_token.is_some() {
                    let bye = ServerMsg::Bye { code: Some(ErrorCode::Timeout), reason: "no answer to ping".into() };
                    return close(out, wt, bye, Ending::new(LeaveReason::Dropped, "ping timeout")).await;
                }
                let token = crate::hub::now_millis();
                ping_token = Some(token);
                idle.as_mut().reset(last_heard + cfg.idle_timeout);
                if let Err(ending) = write(out, wt, &[encode(&ServerMsg::Ping { token })]).await {
                    return ending;
                }
            }
        }
    }
}

/// What a record read from the client is, before its turn comes.
fn classify(record: &[u8]) -> Held {
    if record.len() >= MAX_RECORD_BYTES {
        return Held::Oversized;
    }
    match decode_client(record) {
        Ok(msg) => Held::Msg(msg),
        Err(e) => Held::Bad(e.to_string()),
    }
}

/// Handles one record whose turn has come (its token taken). `Err` ends the session.
///
/// The bus is held off meanwhile ([`Outgoing::hold`]): what it delivers waits behind the reply
/// (a `joined` and its history come before the room's live messages) and is written after.
async fn handle(
    out: &Outgoing,
    state: &mut SessionState,
    ctx: &Ctx,
    held: Held,
    backlog: &mut Backlog,
    pong_timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<(), Ending> {
    out.hold();
    handle_held(out, state, ctx, held, backlog, pong_timer).await?;
    out.release(ctx.config.write_timeout).await.map_err(write_ending)
}

async fn handle_held(
    out: &Outgoing,
    state: &mut SessionState,
    ctx: &Ctx,
    held: Held,
    backlog: &mut Backlog,
    mut pong_timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<(), Ending> {
    let wt = ctx.config.write_timeout;
    let msg = match held {
        Held::Oversized => {
            // Too long, but whole: refused with a reason, skipped, and the session goes on.
            let reply = error(ErrorCode::TooLong, format!("{}; it was skipped", record_too_long()));
            return send(out, wt, reply, backlog).await;
        }
        Held::Bad(e) => {
            // serde quotes the peer's text: Debug-escaped, never raw.
            warn!(session = state.id, cause = ?e, "undecodable message");
            let bye = ServerMsg::Bye { code: Some(ErrorCode::BadMessage), reason: e };
            let ending = Ending::new(LeaveReason::Dropped, "protocol error");
            return Err(close(out, wt, bye, ending).await);
        }
        Held::Msg(msg) => msg,
    };
    let reply = match msg {
        ClientMsg::Nick { nick } => ctx.registry.rename(&ctx.hub, state, nick).await,
        msg => {
            // A refusal names the request's room (`error`'s `room`).
            let named = msg.room().and_then(|r| chatao_proto::RoomName::parse(r).ok());
            // The rooms a key stays in are the registry's around the hub's join and part.
            let change = Membership::of(&msg);
            if let Err(e) = ctx.registry.before(&ctx.hub, state.id, change.as_ref()).await {
                return send(out, wt, hub_error(e).with_room(named), backlog).await;
            }
            let owed = state.pong_owed.is_some();
            let now = Instant::now();
            let reply =
                Command::from_msg(msg).apply(&ctx.hub, state, now.into_std()).with_room(named);
            if !owed && state.pong_owed.is_some() {
                pong_timer.as_mut().reset(now + state.pongs.wait_time());
            }
            ctx.registry.after(&ctx.hub, state.id, change.as_ref()).await;
            reply
        }
    };
    match reply {
        Reply::Replay(r) => {
            let records = replay::records(&ctx.hub, &r).await;
            // Sent whole, then charged: the client is read again once the budget has paid
            // for it (fakelag.rs, the output budget).
            let bytes: usize = records.iter().map(Bytes::len).sum();
            for chunk in records.chunks(WRITE_BATCH) {
                write(out, wt, chunk).await?;
            }
            backlog.output.charge(bytes, Instant::now().into_std());
            Ok(())
        }
        Reply::Close(c) => {
            // What this client said just before (its last `say`, typically) may still be on its
            // way through the bus; let it arrive, so the client gets its echo before `bye`.
            let seq = ctx.hub.current_seq();
            let _ = timeout(QUIT_FLUSH, ctx.hub.bus().flushed(seq)).await;
            debug!(session = state.id, reason = ?c.reason, "closing on request");
            let ending = Ending { reason: c.reason, message: c.message, left: false };
            Err(close(out, wt, c.bye, ending).await)
        }
        Reply::Durable(d) => {
            let durable = timeout(REGISTRATION_WAIT, ctx.hub.bus().durable(d.after, d.upto)).await;
            let reply = if matches!(durable, Ok(Ok(()))) {
                Reply::Send(d.msg)
            } else {
                let why = "the server could not store that (its disk is failing): it is in force \
                           now but would not survive a restart; try again later";
                error(ErrorCode::Unavailable, why.to_owned())
            };
            send(out, wt, reply, backlog).await
        }
        reply => send(out, wt, reply, backlog).await,
    }
}

/// Sends a reply that is a record (or nothing), and charges it to the output budget
/// (`list`, `who`, `whois` replies can be large too).
async fn send(
    out: &Outgoing,
    wt: Duration,
    reply: Reply,
    backlog: &mut Backlog,
) -> Result<(), Ending> {
    let records = match reply {
        Reply::Send(msg) => vec![encode(&msg)],
        Reply::SendAll(msgs) => msgs.iter().map(encode).collect(),
        Reply::Raw(bytes) => vec![bytes],
        // `handle` writes these itself (a durable reply once the bus has stored it).
        Reply::Nothing | Reply::Replay(_) | Reply::Close(_) | Reply::Durable(_) => return Ok(()),
    };
    let len = records.iter().map(Bytes::len).sum();
    write(out, wt, &records).await?;
    backlog.output.charge(len, Instant::now().into_std());
    Ok(())
}
