//! The attackers, one per kind of issue 15's adversarial run. Each runs until the attack's
//! stop token; flooding kinds reconnect when the server ends a session (as a real attacker
//! would), so the server is under attack for the whole period, and every ending is counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use chatao_proto::{ClientMsg, DEFAULT_ROOM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use super::Kind;
use super::keypackages;
use super::raw::{self, Counters, End, Sources};
use crate::chatao::bench_key;

/// What every attacker of one run shares.
#[derive(Debug)]
pub struct Ctx {
    pub kind: Kind,
    pub server: SocketAddr,
    /// The server's metrics endpoint (the `metrics` kind).
    pub metrics: Option<SocketAddr>,
    pub sources: Sources,
    pub counters: Arc<Counters>,
    pub stop: CancellationToken,
    /// When the attack started (for [`Counters::done_ms`]-like figures).
    started: std::sync::OnceLock<Instant>,
    /// Milliseconds from the attack's start to the end of its work, where it has one
    /// (`joins`: the last member welcomed); 0 if never.
    pub done_ms: AtomicU64,
    pub scrapes_ok: AtomicU64,
    pub scrapes_failed: AtomicU64,
    pub scrape_max_ms: AtomicU64,
    /// The `keypackages` kind's keys and packages, made by [`prepare`].
    pool: std::sync::OnceLock<keypackages::Pool>,
}

/// Sizes of the attacks that have one (flags of `chatao-bench attack`).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Members for `joins`.
    pub joins: u32,
    /// Stalled handshakes held open at once for `handshake`.
    pub handshakes: u32,
    /// Keys with real key packages for `keypackages` (each uploads its 16 in turn).
    pub key_package_keys: u32,
}

impl Ctx {
    pub fn new(
        kind: Kind,
        server: SocketAddr,
        metrics: Option<SocketAddr>,
        per_address: u32,
    ) -> Ctx {
        Ctx {
            kind,
            server,
            metrics,
            sources: Sources::new(per_address),
            counters: Arc::new(Counters::default()),
            stop: CancellationToken::new(),
            started: std::sync::OnceLock::new(),
            done_ms: AtomicU64::new(0),
            scrapes_ok: AtomicU64::new(0),
            scrapes_failed: AtomicU64::new(0),
            scrape_max_ms: AtomicU64::new(0),
            pool: std::sync::OnceLock::new(),
        }
    }

    fn tag(&self) -> u8 {
        30 + self.kind as u8
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.get().map_or(0, |s| s.elapsed().as_millis() as u64)
    }

    async fn open(&self, key: u32, nick: &str) -> Result<raw::Session, raw::OpenError> {
        self.open_counted(key, nick, self.counters.clone()).await
    }

    /// As [`Ctx::open`], counting the session's traffic in `counters`.
    async fn open_counted(
        &self,
        key: u32,
        nick: &str,
        counters: Arc<Counters>,
    ) -> Result<raw::Session, raw::OpenError> {
        let keys = bench_key(self.tag(), key);
        let source = self.sources.take();
        tokio::select! {
            _ = self.stop.cancelled() => Err("stopped".into()),
            s = raw::open(self.server, source, &keys, nick, counters) => s,
        }
    }

    /// Sleeps `d` unless the attack ends first; false if it ended.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = sleep(d) => true,
        }
    }
}

/// Which key a flooding connection uses.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// One key per connection slot, the same across its reconnections.
    PerSlot,
    /// One key for every connection (one user on several connections).
    Shared,
}

/// A flooding attack: `connections` slots, each a session sending `next(slot, seq)` at
/// `per_sec(slot)` records a second after `setup(slot)`.
struct Flood {
    connections: u32,
    nick: &'static str,
    keys: Keys,
    per_sec: fn(u32) -> f64,
    setup: fn(u32) -> Vec<ClientMsg>,
    next: fn(u32, u64) -> ClientMsg,
}

/// The history room the `history` kind fills and then asks for.
const HISTORY_ROOM: &str = "#hist";
/// Connections of the `history` kind (the issue's figure).
const HISTORY_CONNECTIONS: u32 = 16;
/// Messages each `history` connection says into [`HISTORY_ROOM`] before the run: 16 x 32 =
/// 512, more than one `history` reply holds (500).
const HISTORY_FILL: u64 = 32;
/// Text size of those messages (near the 4000-byte default limit: the largest replies).
const HISTORY_TEXT: usize = 3900;

fn no_setup(_: u32) -> Vec<ClientMsg> {
    vec![]
}

/// Join, then part, a room never seen before: every pair of records creates a room.
fn join_part(prefix: &str, slot: u32, seq: u64) -> ClientMsg {
    let room = format!("#{prefix}{slot}-{}", seq / 2);
    if seq.is_multiple_of(2) {
        ClientMsg::Join { room, since: None }
    } else {
        ClientMsg::Part { room, reason: None }
    }
}

fn flood_plan(kind: Kind) -> Option<Flood> {
    Some(match kind {
        // Item 14: 16 connections asking for the largest history over and over.
        Kind::History => Flood {
            connections: HISTORY_CONNECTIONS,
            nick: "hist",
            keys: Keys::PerSlot,
            per_sec: |_| 10.0,
            setup: |_| vec![ClientMsg::Join { room: HISTORY_ROOM.into(), since: None }],
            next: |_, _| ClientMsg::History {
                room: HISTORY_ROOM.into(),
                since: 0,
                limit: Some(500),
                before: None,
            },
        },
        // Item 12: 4 connections creating rooms (join and part new names), 5 more asking for
        // the room list, 23 a second in all.
        Kind::List => Flood {
            connections: 9,
            nick: "lister",
            keys: Keys::PerSlot,
            per_sec: |slot| if slot < 4 { 5.0 } else { 23.0 / 5.0 },
            setup: no_setup,
            next: |slot, seq| {
                if slot < 4 { join_part("c", slot, seq) } else { ClientMsg::List { after: None } }
            },
        },
        // Item 12 (memory): one connection creating rooms at the announced rate.
        Kind::Rooms => Flood {
            connections: 1,
            nick: "roomer",
            keys: Keys::PerSlot,
            per_sec: |_| 5.0,
            setup: no_setup,
            next: |slot, seq| join_part("r", slot, seq),
        },
        // Item 16: pings, 4 connections of 25,000 a second.
        Kind::Ping => Flood {
            connections: 4,
            nick: "pinger",
            keys: Keys::PerSlot,
            per_sec: |_| 25_000.0,
            setup: no_setup,
            next: |_, seq| ClientMsg::Ping { token: seq },
        },
        // Item 9: one key on 8 connections renaming 10 times a second each.
        Kind::Nick => Flood {
            connections: 8,
            nick: "squat",
            keys: Keys::Shared,
            per_sec: |_| 10.0,
            setup: no_setup,
            next: |slot, seq| ClientMsg::Nick { nick: format!("n{slot}x{seq}") },
        },
        // The message flood: 8 connections saying 50 lines a second each into #lobby (10
        // times the announced rate).
        Kind::Spam => Flood {
            connections: 8,
            nick: "spammer",
            keys: Keys::PerSlot,
            per_sec: |_| 50.0,
            setup: no_setup,
            next: |slot, seq| {
                let mut text = format!("spam {slot} {seq} ");
                text.extend(std::iter::repeat_n('x', 200 - text.len()));
                ClientMsg::Say { room: DEFAULT_ROOM.into(), text, cid: None }
            },
        },
        Kind::Joins | Kind::Handshake | Kind::Metrics | Kind::Keypackages => return None,
    })
}

/// What a kind needs in place before the honest pair's baseline: `history` fills its room.
pub async fn prepare(ctx: &Arc<Ctx>, sizes: Sizes) -> Result<()> {
    match ctx.kind {
        Kind::Metrics if ctx.metrics.is_none() => {
            bail!("the metrics attack needs the server's metrics endpoint")
        }
        Kind::Keypackages => {
            let pool = keypackages::Pool::make(ctx.tag(), 0, sizes.key_package_keys).await?;
            let _ = ctx.pool.set(pool);
            return Ok(());
        }
        Kind::History => {}
        _ => return Ok(()),
    }
    // The filling sessions are not the attack: their traffic is not counted.
    let uncounted = Arc::new(Counters::default());
    let fill = CancellationToken::new();
    let mut set = JoinSet::new();
    for slot in 0..HISTORY_CONNECTIONS {
        let ctx = ctx.clone();
        let (fill, uncounted) = (fill.clone(), uncounted.clone());
        set.spawn(async move {
            let mut s = ctx
                .open_counted(slot, &format!("hist{slot}"), uncounted)
                .await
                .map_err(anyhow::Error::msg)?;
            let join = ClientMsg::Join { room: HISTORY_ROOM.into(), since: None };
            s.send(&[chatao_proto::encode(&join)]).await?;
            // A little over the rate for 2.7 s: within the burst, so nothing waits long.
            let end = s
                .flood(&fill, 12.0, Some(HISTORY_FILL), |seq| {
                    let mut text = format!("history {slot} {seq} ");
                    text.extend(std::iter::repeat_n('h', HISTORY_TEXT - text.len()));
                    ClientMsg::Say { room: HISTORY_ROOM.into(), text, cid: None }
                })
                .await;
            match end {
                End::Bye(code) if code == "none" => Ok(()),
                other => bail!("filling the history room: {}", other.describe()),
            }
        });
    }
    let filled = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = set.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
    .await;
    match filled {
        Ok(r) => r,
        Err(_) => bail!("filling the history room took over 60 s"),
    }
}

/// Starts the attackers of `ctx.kind`; they run until `ctx.stop`.
pub fn start(ctx: &Arc<Ctx>, sizes: Sizes, duration: Duration) -> JoinSet<()> {
    let _ = ctx.started.set(Instant::now());
    let mut set = JoinSet::new();
    if let Some(plan) = flood_plan(ctx.kind) {
        let plan = Arc::new(plan);
        for slot in 0..plan.connections {
            set.spawn(flood_slot(ctx.clone(), plan.clone(), slot));
        }
        return set;
    }
    match ctx.kind {
        Kind::Joins => joins(ctx, &mut set, sizes.joins, duration),
        Kind::Keypackages => {
            for _ in 0..UPLOADERS {
                set.spawn(upload(ctx.clone()));
            }
        }
        Kind::Handshake => {
            for slot in 0..sizes.handshakes {
                // Spread the first openings over two seconds.
                let delay = Duration::from_millis(
                    u64::from(slot) * 2000 / u64::from(sizes.handshakes.max(1)),
                );
                set.spawn(stalled_handshake(ctx.clone(), delay));
            }
        }
        Kind::Metrics => {
            for _ in 0..SLOWLORIS {
                set.spawn(slowloris(ctx.clone()));
            }
            set.spawn(scraper(ctx.clone()));
        }
        _ => {}
    }
    set
}

/// One connection slot of a flood: connect, set up, flood until the server ends the session,
/// then connect again, until the attack ends.
async fn flood_slot(ctx: Arc<Ctx>, plan: Arc<Flood>, slot: u32) {
    while !ctx.stop.is_cancelled() {
        let (key, nick) = match plan.keys {
            Keys::PerSlot => (slot, format!("{}{slot}", plan.nick)),
            Keys::Shared => (0, format!("{}{slot}", plan.nick)),
        };
        let mut s = match ctx.open(key, &nick).await {
            Ok(s) => s,
            Err(_) => {
                // Refused (a key over its nickname limit, the server full): try again soon.
                if !ctx.pause(Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        let setup: Vec<_> = (plan.setup)(slot).iter().map(chatao_proto::encode).collect();
        if !setup.is_empty() && s.send(&setup).await.is_err() {
            continue;
        }
        let next = plan.next;
        let end = s.flood(&ctx.stop, (plan.per_sec)(slot), None, |seq| next(slot, seq)).await;
        match &end {
            End::Stopped => return,
            _ => {
                Counters::add(&ctx.counters.closed_by_server, 1);
                ctx.counters.ended(&end.describe());
                if !ctx.pause(Duration::from_millis(100)).await {
                    return;
                }
            }
        }
    }
}

/// Connections of the `keypackages` kind.
const UPLOADERS: u32 = 16;

/// Item 15: connect as the pool's next key, upload its 16 real key packages (two records),
/// quit, and again with the next key, as fast as the server lets it: storage for ever more
/// keys (each offline after its upload).
async fn upload(ctx: Arc<Ctx>) {
    let Some(pool) = ctx.pool.get() else { return };
    while !ctx.stop.is_cancelled() {
        let Some((key, packages)) = pool.take() else { return };
        let Ok(mut s) = ctx.open(*key, &format!("kp{key}")).await else {
            if !ctx.pause(Duration::from_millis(200)).await {
                return;
            }
            continue;
        };
        // Two records of 8: the 16 together are longer than a record may be.
        let halves: Vec<Vec<String>> = packages.chunks(8).map(<[String]>::to_vec).collect();
        let end = s
            .flood(&ctx.stop, 0.0, Some(halves.len() as u64), |seq| ClientMsg::KeyPackages {
                packages: halves.get(seq as usize).cloned().unwrap_or_default(),
            })
            .await;
        match &end {
            End::Stopped => return,
            End::Bye(code) if code == "none" => {}
            _ => {
                Counters::add(&ctx.counters.closed_by_server, 1);
                ctx.counters.ended(&end.describe());
            }
        }
    }
}

/// Workers connecting the `joins` members.
const JOINERS: u32 = 8;

/// Item 17: `n` idle members joining #lobby one after another (paced over three quarters of
/// the attack, eight connecting at a time), each staying and reading everything (every later
/// join is announced to it) until the attack ends; they then all leave at once.
fn joins(ctx: &Arc<Ctx>, set: &mut JoinSet<()>, n: u32, duration: Duration) {
    let next = Arc::new(AtomicU32::new(0));
    let joined = Arc::new(AtomicU32::new(0));
    let pace = duration.mul_f64(0.75) / n.max(1);
    let start = Instant::now();
    for _ in 0..JOINERS {
        let (ctx, next, joined) = (ctx.clone(), next.clone(), joined.clone());
        set.spawn(async move {
            let mut members = JoinSet::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || ctx.stop.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep_until(start + pace * i) => {}
                }
                let Ok(mut s) = ctx.open(i, &format!("member{i}")).await else { continue };
                if joined.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    ctx.done_ms.store(ctx.elapsed_ms(), Ordering::Relaxed);
                }
                let ctx = ctx.clone();
                members.spawn(async move {
                    let end = s.hold(&ctx.stop).await;
                    if end != End::Stopped {
                        Counters::add(&ctx.counters.closed_by_server, 1);
                        ctx.counters.ended(&end.describe());
                    }
                });
            }
            while members.join_next().await.is_some() {}
        });
    }
}

/// Item 13: a connection that sends the preamble and half of the first Noise message, then
/// nothing; when the server closes it, another takes its place.
async fn stalled_handshake(ctx: Arc<Ctx>, delay: Duration) {
    if !ctx.pause(delay).await {
        return;
    }
    let mut opening =
        chatao_transport::preamble::Preamble { version: chatao_transport::handshake::VERSION }
            .to_bytes()
            .to_vec();
    let len = chatao_transport::handshake::MSG1_LEN as u16;
    opening.extend_from_slice(&len.to_be_bytes());
    opening.extend(std::iter::repeat_n(0x55u8, chatao_transport::handshake::MSG1_LEN / 2));
    while !ctx.stop.is_cancelled() {
        let source = ctx.sources.take();
        let mut tcp = match raw::tcp_from(source, ctx.server).await {
            Ok(t) => t,
            Err(e) => {
                Counters::add(&ctx.counters.connect_failures, 1);
                ctx.counters.ended(&format!("connect failed: {}", e.kind()));
                if !ctx.pause(Duration::from_millis(200)).await {
                    return;
                }
                continue;
            }
        };
        Counters::add(&ctx.counters.connects, 1);
        let opened = Instant::now();
        if tcp.write_all(&opening).await.is_err() {
            ctx.counters.ended("reset before the opening was written");
            continue;
        }
        Counters::add(&ctx.counters.records_sent, 1);
        Counters::add(&ctx.counters.bytes_sent, opening.len() as u64);
        let mut buf = [0u8; 512];
        let why = loop {
            let read = tokio::select! {
                _ = ctx.stop.cancelled() => return,
                r = tcp.read(&mut buf) => r,
            };
            match read {
                Ok(0) => break "closed",
                Ok(n) => Counters::add(&ctx.counters.bytes_received, n as u64),
                Err(_) => break "reset",
            }
        };
        Counters::add(&ctx.counters.closed_by_server, 1);
        ctx.counters.ended(&format!("{why} after ~{}s", opened.elapsed().as_secs_f64().round()));
    }
}

/// Slow connections to the metrics endpoint, as in the issue's figure.
const SLOWLORIS: u32 = 8;
/// How often a slow connection sends one more byte of its request head.
const DRIBBLE: Duration = Duration::from_millis(500);
/// How often the scraper asks for the metrics, and how long it waits for an answer.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Item 19: a connection to the metrics endpoint that sends half a request head and then one
/// byte at a time, never finishing; when the server closes it, another takes its place.
async fn slowloris(ctx: Arc<Ctx>) {
    let Some(addr) = ctx.metrics else { return };
    let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    while !ctx.stop.is_cancelled() {
        let mut tcp = match raw::tcp_from(ctx.sources.take(), addr).await {
            Ok(t) => t,
            Err(e) => {
                Counters::add(&ctx.counters.connect_failures, 1);
                ctx.counters.ended(&format!("connect failed: {}", e.kind()));
                if !ctx.pause(Duration::from_millis(200)).await {
                    return;
                }
                continue;
            }
        };
        Counters::add(&ctx.counters.connects, 1);
        let opened = Instant::now();
        let mut sent = 0usize;
        let mut buf = [0u8; 512];
        let why = loop {
            let chunk: &[u8] = if sent == 0 { head } else { b"X" };
            if tcp.write_all(chunk).await.is_err() {
                break "reset";
            }
            sent += chunk.len();
            Counters::add(&ctx.counters.bytes_sent, chunk.len() as u64);
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                r = tcp.read(&mut buf) => match r {
                    Ok(0) => break "closed",
                    Ok(n) => Counters::add(&ctx.counters.bytes_received, n as u64),
                    Err(_) => break "reset",
                },
                _ = sleep(DRIBBLE) => {}
            }
        };
        Counters::add(&ctx.counters.closed_by_server, 1);
        ctx.counters.ended(&format!("{why} after ~{}s", opened.elapsed().as_secs_f64().round()));
    }
}

/// An honest scrape every [`SCRAPE_EVERY`]: succeeded if a `200` answer came whole within
/// [`SCRAPE_TIMEOUT`].
async fn scraper(ctx: Arc<Ctx>) {
    let Some(addr) = ctx.metrics else { return };
    let mut tick = tokio::time::interval(SCRAPE_EVERY);
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let ok = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(addr)).await.unwrap_or(false);
        let ms = started.elapsed().as_millis() as u64;
        if ok {
            Counters::add(&ctx.scrapes_ok, 1);
            ctx.scrape_max_ms.fetch_max(ms, Ordering::Relaxed);
        } else {
            Counters::add(&ctx.scrapes_failed, 1);
        }
    }
}

async fn scrape(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
    let request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if tcp.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    // Bounded: the metrics page is a few KiB; stop reading past 1 MiB.
    let mut limited = (&mut tcp).take(1 << 20);
    if limited.read_to_end(&mut answer).await.is_err() {
        return false;
    }
    answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200")
}
