//! The server under attack, over real sockets on loopback. In every test with an in-process
//! server, two honest users (a [`Chatter`]) connect before the attack, chat in turns all through
//! it, and must still chat after it, with no round slower than [`WORST_ROUND`]: an attack may end
//! the attacker's connections, never anyone else's.
//!
//! Index:
//! - hostile bytes before the handshake: random garbage, port scans and other protocols'
//!   greetings; a handshake length prefix of 65535 (refused at once); slowloris connections (silent,
//!   dribbling, or stopping before `hello`);
//! - hostile bytes inside a session: a length prefix of 65535 then nothing, a truncated frame
//!   (closed, or stalled), garbage after a valid handshake (before and after `hello`), garbage
//!   inside valid frames, a record that never ends; a replayed session;
//! - load: a message flood from one client; a ping flood (pongs paced, the latest answered); a client that never reads (the real binary: its
//!   memory stays bounded, the sloth is dropped, the reader misses nothing);
//! - admission: many connections from one address, a full server, a handshake flood, refusal
//!   slots running out;
//! - the real `chataosrv` binary: running out of file descriptors, and SIGTERM/SIGINT during
//!   traffic (everyone told, nothing accepted lost, history intact after a restart, exit 0).
//!
//! Every wait is bounded; every socket is on 127.0.0.0/8 (Linux routes the whole block to the
//! loopback interface, so 127.0.0.2 and 127.0.0.3 play other hosts). Linux only: the binary tests
//! read `/proc` and use `sh` and `kill`.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use chatao_proto::{ClientMsg, ErrorCode, LeaveReason, ServerMsg, decode_server, encode};
use chatao_testkit::{Chataosrv, STEP, ServerProcess, TestClient, TestServer};
use chatao_transport::{Connection, Keypair};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;

/// The honest users' host; attackers use 127.0.0.1 unless a test says otherwise.
const HONEST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Some other host, neither honest user nor attacker.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Pause between two rounds of the honest chat: 4 messages a second per user, under the
/// default rate of 5.
const PACE: Duration = Duration::from_millis(250);
/// Longest a round of the honest chat may take while the server is under attack.
const WORST_ROUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A small deterministic generator (xorshift64*), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A TCP connection to `addr` from the local address `from`.
async fn tcp_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Like [`TestClient::connect`], from the local address `from`.
async fn client_from(from: IpAddr, addr: SocketAddr, nick: &str) -> Result<TestClient> {
    let stream = tcp_from(from, addr).await?;
    let keys = Keypair::generate()?;
    let conn = chatao_transport::connect(stream, &keys, |_| Ok(())).await?;
    TestClient::hello(conn, nick).await
}

/// Writes `bytes` as they are, around the encryption, on a connection's socket.
async fn write_raw(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the server's answer to a client's first handshake message: its preamble and its
/// message 2 (length-prefixed), or whatever came before it closed (within [`STEP`]).
async fn read_handshake_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let whole = |got: &Vec<u8>| {
        got.len() >= 10 && got.len() >= 10 + usize::from(u16::from_be_bytes([got[8], got[9]]))
    };
    while !whole(&got) {
        match timeout(STEP, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    got
}

/// Reads until the peer closes (EOF or reset), for at most `within`. Returns what was read and
/// when the close came, or `None` if the connection was still open.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    timeout(within, read_all).await.ok()?;
    Some((got, start.elapsed()))
}

/// Reads records until the server closes the connection, for at most `within`: the messages
/// received, or `None` if it stayed open. Undecodable records are a test failure.
async fn records_until_closed(
    conn: &mut Connection<TcpStream>,
    within: Duration,
) -> Option<Vec<ServerMsg>> {
    let mut out = Vec::new();
    let read_all = async {
        loop {
            match conn.read_record().await {
                Ok(Some(r)) => out.push(decode_server(&r).unwrap()),
                Ok(None) | Err(_) => return,
            }
        }
    };
    timeout(within, read_all).await.ok()?;
    Some(out)
}

/// A third honest user, carol, who watches the room through an attack (answering pings, so
/// that short idle timers do not end her) and reports everything she saw.
struct Observer {
    stop: CancellationToken,
    task: JoinHandle<Result<Vec<ServerMsg>>>,
}

impl Observer {
    async fn start(addr: SocketAddr) -> Observer {
        let mut carol = client_from(HONEST, addr, "carol").await.unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let record = tokio::select! {
                    _ = stopped.cancelled() => break,
                    r = carol.conn.read_record() => r?.context("carol's connection closed")?,
                };
                match decode_server(&record)? {
                    ServerMsg::Ping { token } => carol.send(&ClientMsg::Pong { token }).await?,
                    m => seen.push(m),
                }
            }
            // Whatever the room heard before this marker, carol has seen.
            carol.say("carol is done").await?;
            loop {
                let m = carol.recv().await?;
                if matches!(&m, ServerMsg::Message { text, .. } if text == "carol is done") {
                    return Ok(seen);
                }
                seen.push(m);
            }
        });
        Observer { stop, task }
    }

    /// Everything carol saw, up to now.
    async fn finish(self) -> Vec<ServerMsg> {
        self.stop.cancel();
        timeout(STEP * 2, self.task)
            .await
            .expect("the observer is stuck")
            .unwrap()
            .expect("the observer's connection broke during the attack")
    }
}

fn is_leave(m: &ServerMsg, nick: &str) -> bool {
    matches!(m, ServerMsg::Leave { nick: n, .. } if n.as_str() == nick)
}

fn is_join(m: &ServerMsg, nick: &str) -> bool {
    matches!(m, ServerMsg::Join { nick: n, .. } if n.as_str() == nick)
}

/// Two honest users who chat in turns (alice says, bob hears; bob says, alice hears) from
/// before an attack until [`Chatter::finish`].
struct Chatter {
    stop: CancellationToken,
    task: JoinHandle<Result<(TestClient, TestClient, Stats)>>,
}

#[derive(Debug, Default)]
struct Stats {
    rounds: u32,
    worst: Duration,
}

impl Chatter {
    /// Connects alice and bob from [`HONEST`] and starts their chat.
    async fn start(addr: SocketAddr) -> Chatter {
        let mut alice = client_from(HONEST, addr, "alice").await.unwrap();
        let mut bob = client_from(HONEST, addr, "bob").await.unwrap();
        alice.expect("bob's join", |m| is_join(m, "bob")).await.unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let (rounds, mut rounds_seen) = tokio::sync::watch::channel(0u32);
        let task = tokio::spawn(async move {
            let mut stats = Stats::default();
            while !stopped.is_cancelled() {
                let n = stats.rounds;
                let start = Instant::now();
                alice.say(&format!("alice {n}")).await?;
                bob.expect_text(&format!("alice {n}")).await?;
                bob.say(&format!("bob {n}")).await?;
                alice.expect_text(&format!("bob {n}")).await?;
                stats.worst = stats.worst.max(start.elapsed());
                stats.rounds += 1;
                rounds.send_replace(stats.rounds);
                tokio::select! {
                    _ = stopped.cancelled() => {}
                    _ = sleep(PACE) => {}
                }
            }
            Ok((alice, bob, stats))
        });
        // At least one round before the attack starts.
        timeout(STEP, rounds_seen.wait_for(|n| *n >= 1))
            .await
            .expect("no honest round before the attack")
            .expect("the honest chat ended before its first round");
        Chatter { stop, task }
    }

    /// Stops the chat, and checks that it went on through the attack and that both can still
    /// send and receive.
    async fn finish(self) {
        self.stop.cancel();
        let (mut alice, mut bob, stats) = timeout(STEP * 2, self.task)
            .await
            .expect("the honest chat is stuck")
            .unwrap()
            .expect("the honest chat broke during the attack");
        assert!(stats.rounds >= 1, "the honest users chatted during the attack");
        assert!(stats.worst < WORST_ROUND, "an honest round took {:?}", stats.worst);
        alice.say("still here?").await.unwrap();
        bob.expect_text("still here?").await.unwrap();
        bob.say("still here.").await.unwrap();
        alice.expect_text("still here.").await.unwrap();
    }
}

/// A client connected over the transport from 127.0.0.1 that has said `hello` as `nick`.
async fn mallory(addr: SocketAddr, nick: &str) -> TestClient {
    TestClient::connect(addr, nick).await.unwrap()
}

/// The cleartext preamble of protocol version 1.
const PREAMBLE: &[u8; 8] = b"CHATAO\x00\x01";

// ---------------------------------------------------------------------------------------------
// Hostile bytes before the handshake

#[tokio::test]
async fn random_garbage_and_foreign_protocols_are_closed_without_an_answer() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    let chat = Chatter::start(server.addr).await;
    let mut rng = Rng::new(1);
    let mut openers: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        // The start of a TLS ClientHello.
        vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
        b"CHATAO".to_vec(),
        b"CHATAO\xff\xff".to_vec(),
        vec![0; 64 * 1024],
    ];
    for _ in 0..24 {
        let len = 1 + rng.below(8192) as usize;
        openers.push(rng.bytes(len));
    }
    // The valid preamble followed by garbage: the server answers the preamble, then the
    // handshake fails or stalls and the handshake timeout ends it.
    for _ in 0..8 {
        let len = rng.below(300) as usize;
        let mut b = PREAMBLE.to_vec();
        b.extend(rng.bytes(len));
        openers.push(b);
    }
    let mut attackers = Vec::new();
    for bytes in &openers {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        attackers.push(s);
    }
    for (i, s) in attackers.iter_mut().enumerate() {
        let (got, _) = until_closed(s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("garbage connection {i} still open"));
        assert!(
            got.is_empty() || got == PREAMBLE,
            "the server answered garbage {i} with more than its preamble: {got:?}"
        );
    }
    // A port scanner: connect and close at once, many times.
    for _ in 0..20 {
        drop(TcpStream::connect(server.addr).await.unwrap());
    }
    chat.finish().await;
}

/// Handshake messages have exact lengths (issue 15 item 13): a prefix announcing 64 KiB is
/// refused at once, without waiting for (or making room for) the body. The handshake timeout is
/// an hour here, so only the refusal can close the connection within the wait.
#[tokio::test]
async fn a_length_prefix_of_65535_during_the_handshake_is_refused_at_once() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_secs(3600)).await;
    let chat = Chatter::start(server.addr).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(PREAMBLE).await.unwrap();
    s.write_all(&[0xff, 0xff]).await.unwrap();
    let (got, _) = until_closed(&mut s, STEP).await.expect("still open: waiting for the body");
    assert_eq!(got, PREAMBLE, "only the preamble came back");
    chat.finish().await;
}

#[tokio::test]
async fn slowloris_connections_are_closed_at_the_handshake_timeout() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    let chat = Chatter::start(server.addr).await;
    let started = Instant::now();
    // Silent: connect and send nothing.
    let silent: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(TcpStream::connect(server.addr).await.unwrap());
        }
        v
    };
    // Dribbling: one byte of a valid handshake every 200 ms; progress does not extend the time.
    let dribbler = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let start = Instant::now();
            let mut probe = [0u8; 64];
            for b in PREAMBLE.iter().chain(&[0x00, 0x20]).chain(&[7; 32]) {
                if s.write_all(&[*b]).await.is_err() {
                    return start.elapsed();
                }
                // Watch for the close while waiting to send the next byte.
                if let Ok(Ok(0) | Err(_)) =
                    timeout(Duration::from_millis(200), s.read(&mut probe)).await
                {
                    return start.elapsed();
                }
            }
            panic!("the dribbler was never cut off");
        }
    });
    // Finished the handshake, never said hello: the handshake timeout covers hello too.
    let mut quiet = chatao_testkit::open(server.addr, &Keypair::generate().unwrap()).await.unwrap();

    // Closed by the handshake timeout: never before it (a lower bound holds however loaded
    // the machine is), and each within `until_closed`'s wait (the test's only bound).
    for mut s in silent {
        let (got, _) = until_closed(&mut s, Duration::from_secs(5)).await.expect("still open");
        assert!(got.is_empty());
    }
    let silent_for = started.elapsed();
    assert!(silent_for >= Duration::from_millis(950), "closed after {silent_for:?}");
    // Progress does not extend the time: the dribbler is cut off before its last byte (its 42
    // bytes take 8.4 s at one per 200 ms), and not before the timeout.
    let dribbled = timeout(STEP, dribbler).await.unwrap().unwrap();
    assert!(dribbled >= Duration::from_millis(950), "the dribbler was cut off after {dribbled:?}");
    let rest = records_until_closed(&mut quiet, Duration::from_secs(5)).await;
    assert_eq!(rest.expect("no hello: closed"), vec![]);
    chat.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile bytes inside a session

/// A server whose idle timers are short enough for a test: a stalled client is closed ~1.5 s
/// after its last complete record.
async fn quick_idle_server() -> TestServer {
    TestServer::start_with(|c| {
        c.handshake_timeout = Duration::from_secs(1);
        c.ping_after = Duration::from_millis(500);
        c.idle_timeout = Duration::from_millis(1500);
    })
    .await
}

#[tokio::test]
async fn a_length_prefix_of_65535_then_nothing_inside_a_session_is_closed_when_idle() {
    let server = quick_idle_server().await;
    let chat = Chatter::start(server.addr).await;
    let mut m = mallory(server.addr, "mallory").await;
    write_raw(m.conn.get_ref(), &[0xff, 0xff]).await.unwrap();
    // The server waits for the rest of the frame, holding at most one frame of buffer; the
    // idle timer ends the wait (a ping first, then `bye` with `timeout`).
    let rest = records_until_closed(&mut m.conn, Duration::from_secs(6)).await.expect("open");
    assert!(
        matches!(rest.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Timeout), .. })),
        "{rest:?}"
    );
    chat.finish().await;
}

#[tokio::test]
async fn a_truncated_frame_ends_only_that_session() {
    let server = quick_idle_server().await;
    let chat = Chatter::start(server.addr).await;
    let carol = Observer::start(server.addr).await;

    // Half a frame, then the end of the stream.
    let mut m = mallory(server.addr, "mallory").await;
    let mut frame = vec![0x00, 0x64];
    frame.extend(Rng::new(2).bytes(50));
    write_raw(m.conn.get_ref(), &frame).await.unwrap();
    m.conn.shutdown().await.unwrap();
    records_until_closed(&mut m.conn, Duration::from_secs(5)).await.expect("still open");

    // Half a frame, then silence: closed by the idle timer (shorter here than the stall limit),
    // which counts as the server dropping it.
    let mut stall = mallory(server.addr, "stall").await;
    write_raw(stall.conn.get_ref(), &frame).await.unwrap();
    let rest = records_until_closed(&mut stall.conn, Duration::from_secs(6)).await.expect("open");
    assert!(matches!(rest.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Timeout), .. })));

    let seen = carol.finish().await;
    let left: Vec<_> = seen.iter().filter(|m| matches!(m, ServerMsg::Leave { .. })).collect();
    assert!(
        matches!(left[..], [ServerMsg::Leave { nick: a, reason: LeaveReason::Lost, .. },
                            ServerMsg::Leave { nick: b, reason: LeaveReason::Dropped, .. }]
                 if a.as_str() == "mallory" && b.as_str() == "stall"),
        "{left:?}"
    );
    chat.finish().await;
}

#[tokio::test]
async fn garbage_after_a_valid_handshake_ends_only_that_connection() {
    let server = quick_idle_server().await;
    let chat = Chatter::start(server.addr).await;
    let mut attacks = Vec::new();
    for round in 0..16u64 {
        let addr = server.addr;
        attacks.push(tokio::spawn(async move {
            let mut rng = Rng::new(100 + round);
            let len = 1 + rng.below(20_000) as usize;
            let garbage = rng.bytes(len);
            // Before hello.
            let mut conn = chatao_testkit::open(addr, &Keypair::generate().unwrap()).await.unwrap();
            let _ = write_raw(conn.get_ref(), &garbage).await;
            let rest = records_until_closed(&mut conn, Duration::from_secs(5)).await;
            assert!(rest.is_some(), "round {round}: still open before hello");
            // After hello.
            let mut m = mallory(addr, &format!("mallory{round}")).await;
            let _ = write_raw(m.conn.get_ref(), &garbage).await;
            let rest = records_until_closed(&mut m.conn, Duration::from_secs(5)).await;
            assert!(rest.is_some(), "round {round}: still open after hello");
        }));
    }
    for attack in attacks {
        timeout(STEP, attack).await.unwrap().unwrap();
    }
    chat.finish().await;
}

#[tokio::test]
async fn garbage_inside_valid_frames_is_refused_and_closed() {
    let server = TestServer::start().await;
    let chat = Chatter::start(server.addr).await;
    let mut rng = Rng::new(4);
    for round in 0..8 {
        let mut m = mallory(server.addr, &format!("m{round}")).await;
        let len = 1 + rng.below(2000) as usize;
        let mut record = rng.bytes(len);
        record.retain(|&b| b != b'\n');
        record.insert(0, b'#'); // never valid JSON
        record.push(b'\n');
        m.conn.write_record(&Bytes::from(record)).await.unwrap();
        let rest = records_until_closed(&mut m.conn, Duration::from_secs(5)).await.expect("open");
        assert!(
            matches!(rest.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::BadMessage), .. })),
            "{rest:?}"
        );
    }
    // A record that never ends: refused at the record limit, without buffering the rest.
    let mut m = mallory(server.addr, "endless").await;
    let endless = Bytes::from(vec![b'x'; 1 << 20]);
    let writing = tokio::spawn(async move {
        let _ = m.conn.write_record(&endless).await;
        m
    });
    let mut m = timeout(STEP, writing).await.unwrap().unwrap();
    records_until_closed(&mut m.conn, Duration::from_secs(5)).await.expect("still open");
    chat.finish().await;
}

/// A stream that keeps a copy of everything written to it.
struct Recorder {
    inner: TcpStream,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.sent.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_replayed_session_is_refused_and_repeats_nothing() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    let chat = Chatter::start(server.addr).await;
    let carol = Observer::start(server.addr).await;

    // A victim's whole session, recorded on the wire: handshake, hello, a message, quit.
    let sent = Arc::new(Mutex::new(Vec::new()));
    let stream =
        Recorder { inner: TcpStream::connect(server.addr).await.unwrap(), sent: sent.clone() };
    let keys = Keypair::generate().unwrap();
    let conn = chatao_transport::connect(stream, &keys, |_| Ok(())).await.unwrap();
    let mut victim = TestRecorded(conn);
    victim.send(&ClientMsg::Hello { nick: "victim".into() }).await;
    victim.expect(|m| matches!(m, ServerMsg::Welcome { .. })).await;
    victim
        .send(&ClientMsg::Say { cid: None, room: "#lobby".into(), text: "transfer 100".into() })
        .await;
    victim.expect(|m| matches!(m, ServerMsg::Message { text, .. } if text == "transfer 100")).await;
    victim.send(&ClientMsg::Quit { reason: None }).await;
    victim.expect(|m| matches!(m, ServerMsg::Bye { .. })).await;
    let recorded = sent.lock().unwrap().clone();

    // The attacker replays it byte for byte, twice: once all at once, once after the server's
    // answer to the first handshake message (as a real client would pace it).
    for paced in [false, true] {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let mut answer = Vec::new();
        if paced {
            s.write_all(&recorded[..8 + 2 + 32]).await.unwrap();
            answer = read_handshake_answer(&mut s).await;
            let _ = s.write_all(&recorded[8 + 2 + 32..]).await;
        } else {
            s.write_all(&recorded).await.unwrap();
        }
        let (rest, _) = until_closed(&mut s, Duration::from_secs(5)).await.expect("still open");
        let got = [answer, rest].concat();
        // At most the server's preamble and its handshake message, never anything after.
        if !got.is_empty() {
            assert!(got.starts_with(PREAMBLE) && got.len() >= 10, "{got:?}");
            let msg2_len = usize::from(u16::from_be_bytes([got[8], got[9]]));
            assert_eq!(got.len(), 8 + 2 + msg2_len, "the server said more than its handshake");
        }
    }

    // Carol saw the victim once, and its message once.
    let seen = carol.finish().await;
    assert_eq!(seen.iter().filter(|m| is_join(m, "victim")).count(), 1, "{seen:?}");
    let said = seen
        .iter()
        .filter(|m| matches!(m, ServerMsg::Message { text, .. } if text == "transfer 100"))
        .count();
    assert_eq!(said, 1);
    chat.finish().await;
}

/// A transport connection over a [`Recorder`], with the few operations the replay test needs.
struct TestRecorded(Connection<Recorder>);

impl TestRecorded {
    async fn send(&mut self, msg: &ClientMsg) {
        self.0.write_record(&encode(msg)).await.unwrap();
    }
    async fn expect(&mut self, pred: impl Fn(&ServerMsg) -> bool) {
        loop {
            let r = timeout(STEP, self.0.read_record()).await.unwrap().unwrap().unwrap();
            if pred(&decode_server(&r).unwrap()) {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load

#[tokio::test]
async fn a_message_flood_is_cut_to_the_rate_and_then_disconnected() {
    let server = TestServer::start().await; // default rate 5/s, burst 20
    let chat = Chatter::start(server.addr).await;
    let carol = Observer::start(server.addr).await;
    let mut flood = mallory(server.addr, "flood").await;
    let start = Instant::now();
    // Short messages, so that the backlog's bound in records (30 s at 5/s: 150) comes before its
    // bound in bytes (which only stops the reading).
    let text = "f".repeat(100);
    for _ in 0..5000 {
        if flood.say(&text).await.is_err() {
            break;
        }
    }
    let rest = records_until_closed(&mut flood.conn, STEP).await.expect("the flooder stayed");
    let elapsed = start.elapsed();
    // Slowed down (fakelag), never refused...
    let refusals = rest.iter().filter(|m| matches!(m, ServerMsg::Error { .. })).count();
    assert_eq!(refusals, 0, "nothing is refused for rate");
    // ...then disconnected (the connection closed above). The server writes `bye` with
    // `rate_limited` first, but a flooder that never reads has a full receive window, so the
    // `bye` may still be queued when the server closes with the flood unread, and that close
    // is a reset that discards it.
    if let Some(last @ ServerMsg::Bye { .. }) = rest.last() {
        assert!(matches!(last, ServerMsg::Bye { code: Some(ErrorCode::RateLimited), .. }));
    }
    // The room heard the burst and the steady rate, nothing more.
    let seen = carol.finish().await;
    let flooded = seen
        .iter()
        .filter(|m| matches!(m, ServerMsg::Message { from, .. } if from.as_str() == "flood"))
        .count();
    let allowed = 20 + (5.0 * elapsed.as_secs_f64()).ceil() as usize + 1;
    assert!(flooded <= allowed, "{flooded} flood messages reached the room (at most {allowed})");
    let left = seen.iter().find(|m| is_leave(m, "flood")).expect("the flooder left");
    assert!(matches!(left, ServerMsg::Leave { reason: LeaveReason::Dropped, .. }), "{left:?}");
    chat.finish().await;
}

/// Issue 15 item 16: pings are answered at most `PONG_BURST` at once, then `PONGS_PER_SEC`; a
/// ping over that is not refused, its answer comes later as one pong for the latest ping. (The
/// flood used to get one pong per ping, each its own frame and write.)
#[tokio::test]
async fn a_ping_flood_gets_a_bounded_number_of_pongs_and_the_latest_is_answered() {
    const PINGS: u64 = 10_000;
    let server = TestServer::start().await;
    let chat = Chatter::start(server.addr).await;
    let mut flood = mallory(server.addr, "pinger").await;
    let start = Instant::now();
    let pings: Vec<Bytes> = (0..PINGS).map(|token| encode(&ClientMsg::Ping { token })).collect();
    for batch in pings.chunks(100) {
        flood.conn.write_records(batch).await.unwrap();
    }
    let mut pongs = 0;
    loop {
        match flood.recv().await.unwrap() {
            ServerMsg::Pong { token } => {
                pongs += 1;
                if token == PINGS - 1 {
                    break;
                }
            }
            ServerMsg::Bye { .. } => panic!("a ping flood is slowed, never disconnected"),
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    let allowed = 10 + (2.0 * elapsed.as_secs_f64()).ceil() as usize + 1;
    assert!(pongs <= allowed, "{pongs} pongs for {PINGS} pings in {elapsed:?} (at most {allowed})");
    // Still connected, and its other commands are not charged for the pings.
    flood.say("after the pings").await.unwrap();
    flood.expect_text("after the pings").await.unwrap();
    chat.finish().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_server_memory_stays_bounded() {
    const VOLUME: usize = 32 << 20; // bytes alice sends in all
    const GROWTH: usize = 16 << 20; // most the server may grow meanwhile
    let mut srv = Binary::start("", &["--rate-per-sec", "0", "--mailbox", "256"]).await;
    let mut alice = TestClient::connect(srv.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(srv.addr, "bob").await.unwrap();
    let sloth = client_from(OTHER, srv.addr, "sloth").await.unwrap();
    alice.expect("sloth", |m| is_join(m, "sloth")).await.unwrap();
    bob.expect("sloth", |m| is_join(m, "sloth")).await.unwrap();
    let before = srv.rss();

    // Bob reads everything, checking that he misses nothing of alice's, until "done".
    let reader = tokio::spawn(async move {
        let mut next = 0u32;
        let mut sloth_left = None;
        loop {
            let m = bob.recv().await?;
            match &m {
                ServerMsg::Message { from, text, .. } if from.as_str() == "alice" => {
                    if text == "done" {
                        return anyhow::Ok((bob, next, sloth_left));
                    }
                    let n: u32 = text[..8].parse()?;
                    anyhow::ensure!(n == next, "bob got message {n}, expected {next}");
                    next += 1;
                }
                m if is_leave(m, "sloth") => sloth_left = Some(m.clone()),
                _ => {}
            }
        }
    });

    let filler = "z".repeat(3900);
    let per_msg = 8 + filler.len();
    let mut peak = before;
    let mut sent = 0u32;
    while (sent as usize) * per_msg < VOLUME {
        alice.say(&format!("{sent:08}{filler}")).await.unwrap();
        sent += 1;
        // Alice reads her own copies as they come, like any client that keeps up.
        while let Ok(Ok(Some(_))) = timeout(Duration::ZERO, alice.conn.read_record()).await {}
        if sent.is_multiple_of(512) {
            peak = peak.max(srv.rss());
        }
    }
    alice.say("done").await.unwrap();
    let (mut bob, got, sloth_left) = timeout(STEP * 3, reader).await.unwrap().unwrap().unwrap();
    assert_eq!(got, sent, "bob received every message alice sent, in order");
    let left = sloth_left.expect("the sloth was disconnected");
    assert!(matches!(left, ServerMsg::Leave { reason: LeaveReason::Dropped, .. }), "{left:?}");
    let growth = peak.saturating_sub(before);
    assert!(
        growth < GROWTH,
        "the server grew by {} MiB while {} MiB went past a client that never reads",
        growth >> 20,
        VOLUME >> 20
    );
    drop(sloth);
    bob.say("bob is fine").await.unwrap();
    alice.expect_text("bob is fine").await.unwrap();
    srv.signal("-TERM");
    assert!(srv.exit(Duration::from_secs(8)).await.success());
}

// ---------------------------------------------------------------------------------------------
// Admission

#[tokio::test]
async fn many_connections_from_one_address_are_capped_with_a_reason() {
    let server = TestServer::start_with(|c| {
        c.max_connections_per_ip = 8;
        c.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let chat = Chatter::start(server.addr).await;
    // Half the allowance in sessions, half in idle sockets that never handshake: both count.
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(mallory(server.addr, &format!("m{i}")).await);
    }
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    for _ in 0..3 {
        let err = TestClient::connect(server.addr, "one-more").await.err().expect("refused");
        let err = format!("{err:#}");
        assert!(err.contains("ServerFull") && err.contains("too many connections"), "{err}");
    }
    // Other hosts are not affected.
    let mut other = client_from(OTHER, server.addr, "other").await.unwrap();
    // A place given back can be taken again.
    drop(held.pop());
    let again = retry(|| TestClient::connect(server.addr, "again")).await;
    drop(idle);
    drop(held);
    other.say("other is fine").await.unwrap();
    other.expect_text("other is fine").await.unwrap();
    drop(again);
    chat.finish().await;
}

/// Calls `f` until it succeeds, for at most [`STEP`]: for limits that free up asynchronously.
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(t) => return t,
            Err(e) if start.elapsed() > STEP => panic!("still failing: {e:#}"),
            Err(_) => sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_full_server_refuses_with_a_reason() {
    let server = TestServer::start_with(|c| c.max_connections = 3).await;
    let chat = Chatter::start(server.addr).await;
    let _third = client_from(OTHER, server.addr, "third").await.unwrap();
    let err = client_from(OTHER, server.addr, "fourth").await.err().expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("ServerFull") && err.contains("server is full"), "{err}");
    chat.finish().await;
}

#[tokio::test]
async fn a_handshake_flood_from_one_address_is_told_once_then_closed() {
    let server = TestServer::start_with(|c| {
        c.handshakes_per_minute = 6;
        c.handshake_burst = 5;
    })
    .await;
    let chat = Chatter::start(server.addr).await;
    // The burst: five full sessions from 127.0.0.1, one after the other.
    for i in 0..5 {
        let c = TestClient::connect(server.addr, &format!("f{i}")).await.unwrap();
        drop(c);
    }
    // Over the rate: told once why, with a handshake...
    let err = format!("{:#}", TestClient::connect(server.addr, "f5").await.err().unwrap());
    assert!(err.contains("RateLimited") && err.contains("connection attempts"), "{err}");
    // ...then closed at once, with no handshake: nothing but the close comes back (each
    // within 5 s, far less than the handshake timeout a held connection would wait for).
    let mut answered = 0;
    for _ in 0..200 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let _ = s.write_all(PREAMBLE).await;
        let (got, _) = until_closed(&mut s, Duration::from_secs(5)).await.expect("still open");
        answered += usize::from(!got.is_empty());
    }
    assert_eq!(answered, 0, "attempts over the rate got an answer");
    // Another address is not affected.
    let mut other = client_from(OTHER, server.addr, "other").await.unwrap();
    other.say("hi").await.unwrap();
    other.expect_text("hi").await.unwrap();
    chat.finish().await;
}

#[tokio::test]
async fn refusals_past_the_refusal_slots_are_silent() {
    let server = TestServer::start_with(|c| {
        c.max_connections = 2;
        c.refusal_slots = 1;
        c.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let chat = Chatter::start(server.addr).await;
    // A refused connection that never handshakes holds the only refusal slot...
    let mut holder = tcp_from(OTHER, server.addr).await.unwrap();
    holder.write_all(PREAMBLE).await.unwrap();
    let mut answer = [0u8; 8];
    timeout(STEP, holder.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(&answer, PREAMBLE, "the refusal is under way");
    // ...so the next refusal is a bare close.
    let err = format!("{:#}", client_from(OTHER, server.addr, "x").await.err().unwrap());
    assert!(!err.contains("ServerFull"), "{err}");
    // Once the holder is gone (here: timed out), refusals are explained again.
    until_closed(&mut holder, Duration::from_secs(5)).await.expect("holder still open");
    let err = format!(
        "{:#}",
        retry(|| async {
            match client_from(OTHER, server.addr, "y").await {
                Err(e) if format!("{e:#}").contains("ServerFull") => Ok(e),
                Err(e) => Err(e),
                Ok(_) => Ok(anyhow::anyhow!("admitted")),
            }
        })
        .await
    );
    assert!(err.contains("server is full"), "{err}");
    chat.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// A `chataosrv` process on a free loopback port, with its own data directory; its log is
/// collected as it comes.
struct Binary {
    server: ServerProcess,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// Every log line so far, and a counter bumped on each.
    log: Arc<Mutex<Vec<String>>>,
    logged: tokio::sync::watch::Receiver<usize>,
}

impl Binary {
    /// Starts `chataosrv` with `args` in a new data directory, through `sh -c` with
    /// `shell_prefix` run first (`ulimit -n 24 &&`, say).
    async fn start(shell_prefix: &str, args: &[&str]) -> Binary {
        Binary::start_in(tempfile::tempdir().unwrap(), shell_prefix, args).await
    }

    /// Like [`Binary::start`], in the data directory `dir`; returned once it listens.
    async fn start_in(dir: tempfile::TempDir, shell_prefix: &str, args: &[&str]) -> Binary {
        let mut server = Chataosrv::in_shell(shell_prefix, env!("CARGO_BIN_EXE_chataosrv"))
            .default_log()
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--log-level", "debug"])
            .args(args)
            .spawn()
            .await;
        let log = Arc::new(Mutex::new(server.startup.clone()));
        let (bump, logged) = tokio::sync::watch::channel(0usize);
        let mut lines = server.take_log();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
                bump.send_modify(|n| *n += 1);
            }
        });
        Binary { addr: server.addr, server, dir, log, logged }
    }

    /// Waits (at most [`STEP`]) for a log line containing `needle`.
    async fn wait_log(&mut self, needle: &str) {
        let log = self.log.clone();
        let found = timeout(
            STEP,
            self.logged.wait_for(|_| log.lock().unwrap().iter().any(|l| l.contains(needle))),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(found, "no {needle:?} in the log:\n{}", self.log());
    }

    /// Resident memory of the server process, in bytes (Linux).
    fn rss(&self) -> usize {
        let pid = self.server.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn signal(&self, name: &str) {
        self.server.signal(name);
    }

    /// Waits for the process to exit, for at most `within`.
    async fn exit(&mut self, within: Duration) -> std::process::ExitStatus {
        match timeout(within, self.server.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("chataosrv did not exit within {within:?}; log:\n{}", self.log()),
        }
    }
}

/// SIGTERM or SIGINT while alice sends: both users are told, bob got every message the server
/// accepted from alice (her own copy is the acknowledgement), the process exits 0, and the
/// history on disk holds every accepted message.
async fn shutdown_during_traffic(signal: &str) {
    let mut srv = Binary::start("", &[]).await;
    let mut alice = TestClient::connect(srv.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(srv.addr, "bob").await.unwrap();
    alice.expect("bob", |m| is_join(m, "bob")).await.unwrap();
    let (acks, mut acked_so_far) = tokio::sync::watch::channel(0usize);
    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0.. {
            if alice.say(&format!("m{i}")).await.is_err() {
                break;
            }
            // Within the default rate: 4 a second.
            let deadline = tokio::time::Instant::now() + PACE;
            loop {
                match tokio::time::timeout_at(deadline, alice.conn.read_record()).await {
                    Err(_) => break,
                    Ok(Ok(Some(r))) => match decode_server(&r).unwrap() {
                        ServerMsg::Message { text, .. } => {
                            acked.push(text);
                            acks.send_replace(acked.len());
                        }
                        ServerMsg::Bye { code, .. } => return (acked, code),
                        _ => {}
                    },
                    Ok(_) => return (acked, None),
                }
            }
        }
        (acked, None)
    });
    // Traffic flowing: a few of alice's messages accepted.
    timeout(STEP, acked_so_far.wait_for(|n| *n >= 3)).await.unwrap().unwrap();
    srv.signal(signal);
    let (acked, alice_bye) = timeout(STEP, sender).await.unwrap().unwrap();
    let bob_saw = bob.read_to_end().await.unwrap();
    let status = srv.exit(Duration::from_secs(8)).await;
    assert!(status.success(), "exit status {status:?}; log:\n{}", srv.log());
    assert_eq!(alice_bye, Some(ErrorCode::Shutdown), "alice was told");
    assert!(
        matches!(bob_saw.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Shutdown), .. })),
        "bob was told: {:?}",
        bob_saw.last()
    );
    let bob_texts: Vec<&str> = bob_saw
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(acked.len() >= 3, "traffic was flowing: {acked:?}");
    for text in &acked {
        assert!(
            bob_texts.contains(&text.as_str()),
            "bob never got {text}, which alice saw accepted"
        );
    }
    assert!(TcpStream::connect(srv.addr).await.is_err(), "no longer listening");

    // History intact: a server started on the same data directory replays every message it
    // had accepted to a newcomer.
    let Binary { dir, .. } = srv;
    let mut again = Binary::start_in(dir, "", &[]).await;
    let mut carol = TestClient::connect(again.addr, "carol").await.unwrap();
    let mut replayed = Vec::new();
    loop {
        match carol.recv().await.unwrap() {
            ServerMsg::Message { text, history: true, .. } => replayed.push(text),
            ServerMsg::HistoryEnd { .. } => break,
            _ => {}
        }
    }
    assert!(acked.len() <= chatao_server::limits::HISTORY_ON_JOIN);
    for text in &acked {
        assert!(replayed.contains(text), "{text} is missing from the history: {replayed:?}");
    }
    again.signal(signal);
    assert!(again.exit(Duration::from_secs(8)).await.success());
}

#[tokio::test]
async fn sigterm_during_traffic_tells_everyone_keeps_history_and_exits_0() {
    shutdown_during_traffic("-TERM").await;
}

#[tokio::test]
async fn sigint_during_traffic_tells_everyone_keeps_history_and_exits_0() {
    shutdown_during_traffic("-INT").await;
}

#[tokio::test]
async fn running_out_of_file_descriptors_does_not_stop_the_server() {
    // 32 descriptors: at rest the server holds 17 (standard streams, the runtime, the listener,
    // the history database and its WAL), the honest pair takes two, and the attackers the rest,
    // and more.
    let mut srv = Binary::start("ulimit -n 32 &&", &[]).await;
    let chat = Chatter::start(srv.addr).await;
    let mut hogs = Vec::new();
    for _ in 0..40 {
        hogs.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // The server hits the wall (and backs off) while the others chat.
    srv.wait_log("accept failed").await;
    assert!(srv.server.child.try_wait().unwrap().is_none(), "the server died");
    drop(hogs);
    // The descriptors come back; new clients are accepted again.
    let mut newcomer = retry(|| TestClient::connect(srv.addr, "newcomer")).await;
    newcomer.say("made it").await.unwrap();
    newcomer.expect_text("made it").await.unwrap();
    chat.finish().await;
    srv.signal("-TERM");
    assert!(srv.exit(Duration::from_secs(8)).await.success());
}

#[tokio::test]
async fn a_frame_started_and_never_finished_is_closed_at_the_stall_timeout() {
    let server = TestServer::start_with(|c| {
        c.stall_timeout = Duration::from_millis(500);
        c.ping_after = Duration::from_secs(20);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let chat = Chatter::start(server.addr).await;
    let mut m = mallory(server.addr, "mallory").await;
    let started = Instant::now();
    write_raw(m.conn.get_ref(), &[0xff, 0xff, 1, 2, 3]).await.unwrap();
    let rest = records_until_closed(&mut m.conn, Duration::from_secs(5)).await.expect("open");
    assert!(
        matches!(rest.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::Timeout), .. })),
        "{rest:?}"
    );
    let stalled = started.elapsed();
    assert!(stalled >= Duration::from_millis(450), "closed after {stalled:?}");
    // A sender that keeps completing messages is never "stalled", however long it sends.
    let mut steady = mallory(server.addr, "steady").await;
    for i in 0..8 {
        steady.say(&format!("steady {i}")).await.unwrap();
        steady.expect_text(&format!("steady {i}")).await.unwrap();
        sleep(Duration::from_millis(150)).await;
    }
    chat.finish().await;
}

/// Guards the close linger: without it, the server closes with the rest of the flood unread,
/// the kernel answers with a reset, and the `bye` still queued behind a full window is lost.
#[tokio::test]
async fn a_flooder_that_stops_and_reads_gets_its_bye() {
    let server = TestServer::start().await;
    let mut flood = mallory(server.addr, "flood").await;
    // Past the backlog's 150 records (30 s at 5/s) with plenty left unread behind the `bye`.
    let text = "f".repeat(100);
    for _ in 0..1000 {
        if flood.say(&text).await.is_err() {
            break;
        }
    }
    let rest = records_until_closed(&mut flood.conn, STEP).await.expect("the flooder stayed");
    assert!(
        matches!(rest.last(), Some(ServerMsg::Bye { code: Some(ErrorCode::RateLimited), .. })),
        "{:?}",
        rest.last()
    );
}
