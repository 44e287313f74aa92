//! Attacker connections below the client actor: a TCP socket bound to a chosen loopback source
//! address, the project's own Noise handshake (`chatao_transport`), `hello`, and then records
//! written and read directly (`chatao_proto` encoding), so that an attacker can send what no
//! well-behaved client would (floods far over the rate, requests in a loop) and be counted
//! exactly: records and bytes each way, how its sessions ended.
//!
//! Source addresses: every attacker connection takes its address from a [`Sources`] pool,
//! which hands each loopback address (127.1.0.1 onwards; the honest pair uses 127.0.0.1) to at
//! most `per_address` connections over the whole run. With the default 60, no address ever
//! reaches the server's per-address cap (64 at once) or its handshake rate (a burst of 64, then
//! 60 a minute): the attacker is a botnet whose every host stays within the limits, the
//! strongest attacker the limits let through.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chatao_proto::{ClientMsg, ErrorCode, ServerMsg};
use chatao_transport::{Connection, Keypair, TransportError};
use parking_lot::Mutex;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Time an attacker connection has to be welcomed.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// After a failed write, how long the attacker goes on reading to find the server's `bye`.
const BYE_WAIT: Duration = Duration::from_secs(1);
/// How often a flooding connection writes a batch.
const TICK: Duration = Duration::from_millis(20);
/// Most records written in one batch (one `write`).
const MAX_BATCH: usize = 512;

/// Loopback source addresses, each handed out at most `per_address` times.
#[derive(Debug)]
pub struct Sources {
    per_address: u32,
    taken: AtomicU32,
}

impl Sources {
    pub fn new(per_address: u32) -> Sources {
        Sources { per_address: per_address.max(1), taken: AtomicU32::new(0) }
    }

    /// The next source address: 127.1.0.1, then 127.1.0.2 after `per_address` uses, and so on.
    pub fn take(&self) -> Ipv4Addr {
        let n = self.taken.fetch_add(1, Ordering::Relaxed) / self.per_address;
        // 127.1.0.1 + n, staying inside 127/8 (16 million addresses: never reached).
        Ipv4Addr::from((0x7F01_0001u32.wrapping_add(n) & 0x00FF_FFFF) | 0x7F00_0000)
    }

    /// How many distinct addresses were used.
    pub fn addresses(&self) -> u32 {
        self.taken.load(Ordering::Relaxed).div_ceil(self.per_address)
    }
}

/// What one attack kind's connections did, summed over all of them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections welcomed (or, for raw sockets, opened).
    pub connects: AtomicU64,
    /// Connections refused or failed before `welcome`.
    pub connect_failures: AtomicU64,
    pub records_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub records_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Sessions the server ended (a `bye`, or the connection closed) while the attack went on.
    pub closed_by_server: AtomicU64,
    /// How sessions and connect attempts ended, by reason (`bye rate_limited`, `lost`, ...);
    /// a blocking (parking_lot) mutex: updated once per session, never held across an await.
    endings: Mutex<BTreeMap<String, u64>>,
    /// `error` replies by code; a blocking mutex for the same reason.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn ended(&self, why: &str) {
        *self.endings.lock().entry(why.to_owned()).or_default() += 1;
    }

    fn error(&self, code: &str) {
        *self.errors.lock().entry(code.to_owned()).or_default() += 1;
    }

    /// `reason xN, ...` of the endings.
    pub fn endings(&self) -> String {
        summary(&self.endings.lock())
    }

    /// `code xN, ...` of the error replies.
    pub fn errors(&self) -> String {
        summary(&self.errors.lock())
    }
}

fn summary(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
}

/// The first words of a server's `reason` or `message`, safe to print.
pub fn short(text: &str) -> String {
    let clean = chatao_proto::sanitize_line(text);
    let mut out: String = clean.chars().take(60).collect();
    if clean.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// A TCP connection to `server` from `source`.
pub async fn tcp_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The attack was over; the bench closed it.
    Stopped,
    /// The server said `bye` (its code, or `none` after our `quit`).
    Bye(String),
    /// The connection broke or closed without `bye`.
    Lost(String),
}

impl End {
    pub fn describe(&self) -> String {
        match self {
            End::Stopped => "stopped".into(),
            End::Bye(code) => format!("bye {code}"),
            End::Lost(why) => format!("lost ({why})"),
        }
    }
}

/// A welcomed attacker session.
pub struct Session {
    conn: Connection<TcpStream>,
    counters: std::sync::Arc<Counters>,
}

/// Why [`open`] failed, in a few words (a `bye` code, a handshake error).
pub type OpenError = String;

/// Connects from `source` with `keys`, says `hello` as `nick` and waits for `welcome`.
pub async fn open(
    server: SocketAddr,
    source: Ipv4Addr,
    keys: &Keypair,
    nick: &str,
    counters: std::sync::Arc<Counters>,
) -> Result<Session, OpenError> {
    let attempt = async {
        let tcp = tcp_from(source, server).await.map_err(|e| format!("tcp: {}", e.kind()))?;
        // The attacker does not care who the server is.
        let conn = chatao_transport::connect(tcp, keys, |_| Ok(()))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut s = Session { conn, counters: counters.clone() };
        s.send(&[chatao_proto::encode(&ClientMsg::Hello { nick: nick.to_owned() })])
            .await
            .map_err(|e| format!("hello: {e}"))?;
        loop {
            let record = match s.conn.read_record().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err("closed before welcome".to_owned()),
                Err(e) => return Err(format!("before welcome: {e}")),
            };
            s.count_received(&record);
            match chatao_proto::decode_server(&record) {
                Ok(ServerMsg::Welcome { .. }) => return Ok(s),
                Ok(ServerMsg::Bye { code: Some(ErrorCode::Other), reason }) => {
                    return Err(format!("bye other ({})", short(&reason)));
                }
                Ok(ServerMsg::Bye { code, .. }) => {
                    return Err(format!("bye {}", code.map_or("none".into(), |c| c.to_string())));
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(OPEN_TIMEOUT, attempt).await {
        Ok(Ok(s)) => {
            Counters::add(&counters.connects, 1);
            Ok(s)
        }
        Ok(Err(e)) => {
            Counters::add(&counters.connect_failures, 1);
            counters.ended(&format!("refused: {e}"));
            Err(e)
        }
        Err(_) => {
            Counters::add(&counters.connect_failures, 1);
            counters.ended("refused: no welcome in time");
            Err("no welcome in time".into())
        }
    }
}

/// What the server sent, seen cheaply: most records (messages, joins, replays) are only
/// counted; the few kinds that matter are decoded.
enum Seen {
    Other,
    Ping(u64),
    Bye(String),
}

impl Session {
    /// Writes `records` in one batch.
    pub async fn send(&mut self, records: &[Bytes]) -> Result<(), TransportError> {
        self.conn.write_records(records).await?;
        Counters::add(&self.counters.records_sent, records.len() as u64);
        let bytes: usize = records.iter().map(Bytes::len).sum();
        Counters::add(&self.counters.bytes_sent, bytes as u64);
        Ok(())
    }

    fn count_received(&self, record: &[u8]) {
        Counters::add(&self.counters.records_received, 1);
        Counters::add(&self.counters.bytes_received, record.len() as u64 + 1);
    }

    fn look(&self, record: &[u8]) -> Seen {
        self.count_received(record);
        let interesting: [&[u8]; 3] =
            [b"{\"type\":\"bye\"", b"{\"type\":\"ping\"", b"{\"type\":\"error\""];
        if !interesting.iter().any(|p| record.starts_with(p)) {
            return Seen::Other;
        }
        match chatao_proto::decode_server(record) {
            Ok(ServerMsg::Ping { token }) => Seen::Ping(token),
            Ok(ServerMsg::Bye { code, reason }) => Seen::Bye(match code {
                None => "none".into(),
                // `other` says little: keep the start of the reason, neutralised (it is a
                // network string, and it is printed to a terminal).
                Some(ErrorCode::Other) => format!("other ({})", short(&reason)),
                Some(c) => c.to_string(),
            }),
            Ok(ServerMsg::Error { code, .. }) => {
                self.counters.error(&code.to_string());
                Seen::Other
            }
            _ => Seen::Other,
        }
    }

    /// Handles one record read; `Some` when the session is over.
    async fn on_read(&mut self, read: Result<Option<Bytes>, TransportError>) -> Option<End> {
        match read {
            Ok(Some(record)) => match self.look(&record) {
                Seen::Other => None,
                Seen::Ping(token) => {
                    let pong = chatao_proto::encode(&ClientMsg::Pong { token });
                    self.send(&[pong]).await.err().map(|e| End::Lost(e.to_string()))
                }
                Seen::Bye(code) => Some(End::Bye(code)),
            },
            Ok(None) => Some(End::Lost("closed".into())),
            Err(e) => Some(End::Lost(e.to_string())),
        }
    }

    /// After a failed write: the server may have said `bye` before it closed; read what is
    /// left for a moment to find it.
    async fn find_bye(&mut self, write_error: TransportError) -> End {
        let deadline = Instant::now() + BYE_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.conn.read_record()).await {
                Ok(read) => {
                    if let Some(end) = self.on_read(read).await {
                        return match end {
                            End::Bye(code) => End::Bye(code),
                            End::Lost(_) | End::Stopped => End::Lost(write_error.to_string()),
                        };
                    }
                }
                Err(_) => return End::Lost(write_error.to_string()),
            }
        }
    }

    /// Reads and counts everything the server sends (answering its pings), sending nothing,
    /// until `stop` or the server ends the session: an idle member.
    pub async fn hold(&mut self, stop: &CancellationToken) -> End {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return End::Stopped,
                read = self.conn.read_record() => {
                    if let Some(end) = self.on_read(read).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Sends the records `next(seq)` makes, `per_sec` a second (0: as fast as the server
    /// reads), reading and counting everything the server sends meanwhile (answering its
    /// pings), until `stop`, the server ends the session, or `limit` records were sent (then
    /// `quit`, and the server's `bye` ends it).
    pub async fn flood(
        &mut self,
        stop: &CancellationToken,
        per_sec: f64,
        limit: Option<u64>,
        mut next: impl FnMut(u64) -> ClientMsg,
    ) -> End {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut seq = 0u64;
        let mut quit_sent = false;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return End::Stopped,
                read = self.conn.read_record() => {
                    if let Some(end) = self.on_read(read).await {
                        return end;
                    }
                }
                _ = tick.tick(), if !quit_sent => {
                    let due = if per_sec > 0.0 {
                        (started.elapsed().as_secs_f64() * per_sec) as u64
                    } else {
                        seq + MAX_BATCH as u64
                    };
                    let mut n = due.saturating_sub(seq).min(MAX_BATCH as u64);
                    if let Some(limit) = limit {
                        n = n.min(limit.saturating_sub(seq));
                    }
                    let mut batch: Vec<Bytes> =
                        (0..n).map(|i| chatao_proto::encode(&next(seq + i))).collect();
                    seq += n;
                    if limit.is_some_and(|l| seq >= l) {
                        batch.push(chatao_proto::encode(&ClientMsg::Quit { reason: None }));
                        quit_sent = true;
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    // The write waits while the server does not read (fakelag); the attack's
                    // end still interrupts it (the connection is then dropped).
                    let written = tokio::select! {
                        biased;
                        _ = stop.cancelled() => return End::Stopped,
                        w = self.send(&batch) => w,
                    };
                    if let Err(e) = written {
                        return self.find_bye(e).await;
                    }
                }
            }
        }
    }
}
