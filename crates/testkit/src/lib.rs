//! Test helpers: a real server on `127.0.0.1:0` with its own temporary directory, and a raw
//! protocol client; the real binaries (`process`: `chataosrv` spawned and waited for, the
//! `chatao` command line); a real NATS server (`nats`). Not published; only tests depend on it.
#![allow(clippy::unwrap_used)]

mod nats;
mod process;

pub use nats::NatsServer;
pub use process::{Chataosrv, ServerProcess, bin, chatao, free_port};

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chatao_proto::{ClientMsg, ServerMsg, decode_server, encode};
use chatao_server::{Config, Runtime};
use chatao_transport::{Connection, Keypair};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for any one expected event before failing.
pub const STEP: Duration = Duration::from_secs(10);

/// The secret of [`fixed_keypair`]`(n)`.
pub fn fixed_secret(n: u8) -> [u8; 32] {
    let mut secret = [0x42u8; 32];
    secret[1] = n; // not byte 0: X25519 clamping clears its low bits
    secret
}

/// A deterministic key pair for tests: the same `n` always gives the same key.
pub fn fixed_keypair(n: u8) -> Keypair {
    Keypair::from_secret(fixed_secret(n))
}

/// `n` genuine MLS key packages (base64) of the key [`fixed_keypair`]`(k)`, made by the
/// client's engine (in a temporary state directory): the server checks each upload, and
/// refuses garbage and packages of another key.
pub fn key_packages(k: u8, n: usize) -> Vec<String> {
    use base64::Engine as _;
    let fp = fixed_keypair(k).public().fingerprint();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut e2e = chatao_e2e::E2e::open(dir.path(), &fixed_secret(k), &fp).expect("an E2E state");
    let packages = e2e.key_packages(n).expect("key packages");
    packages.iter().map(|p| base64::engine::general_purpose::STANDARD.encode(p)).collect()
}

/// A running server and the directory it owns. Dropping it stops the server abruptly; call
/// [`TestServer::stop`] for a graceful shutdown.
pub struct TestServer {
    pub addr: SocketAddr,
    pub fingerprint: chatao_proto::Fingerprint,
    /// The data directory (history database); `None` only transiently inside `restart`.
    dir: Option<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server with default settings.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server whose settings `adjust` may change first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_in(tempfile::tempdir().unwrap(), adjust).await
    }

    /// A server sharing `runtime` with the test (its clock to advance, its metrics to read),
    /// whose settings `adjust` may change first.
    pub async fn start_with_runtime(
        runtime: Runtime,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        TestServer::launch(tempfile::tempdir().unwrap(), runtime, adjust).await
    }

    /// A server over an existing data directory (to test what survives a restart).
    pub async fn start_in(dir: TempDir, adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::launch(dir, Runtime::default(), adjust).await
    }

    async fn launch(
        dir: TempDir,
        runtime: Runtime,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config::new(fixed_keypair(200), dir.path().to_path_buf());
        adjust(&mut config);
        let fingerprint = config.keys.public().fingerprint();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = chatao_server::run(listener, config, runtime, async move {
                let _ = rx.await;
            })
            .await;
            // A server that could not start (a cluster it could not join) closes its listener:
            // say why, or the test only sees "connection refused".
            if let Err(e) = &result {
                eprintln!("chatao_server::run ended with an error: {e}");
            }
            result
        });
        TestServer { addr, fingerprint, dir: Some(dir), stop: Some(tx), task: Some(task) }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.as_ref().map(|d| d.path()).unwrap()
    }

    /// Stops gracefully and starts a new server (new port) over the same data directory.
    pub async fn restart(mut self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = self.dir.take().unwrap();
        self.stop_inner().await.unwrap();
        TestServer::start_in(dir, adjust).await
    }

    /// [`TestServer::restart`], the new server sharing `runtime` with the test.
    pub async fn restart_with_runtime(
        mut self,
        runtime: Runtime,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = self.dir.take().unwrap();
        self.stop_inner().await.unwrap();
        TestServer::launch(dir, runtime, adjust).await
    }

    /// Graceful shutdown: returns what `run` returned.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.stop_inner().await
    }

    async fn stop_inner(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A protocol-level client over a real socket.
pub struct TestClient {
    pub conn: Connection<TcpStream>,
    pub nick: String,
    pub session: u64,
}

/// Opens a transport connection to `addr` with key `keys`, accepting any server key.
pub async fn open(addr: SocketAddr, keys: &Keypair) -> Result<Connection<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    Ok(chatao_transport::connect(stream, keys, |_| Ok(())).await?)
}

impl TestClient {
    /// Connects with a fresh key, says hello, and waits for `welcome`.
    pub async fn connect(addr: SocketAddr, nick: &str) -> Result<TestClient> {
        TestClient::connect_with(addr, nick, &Keypair::generate()?).await
    }

    /// Connects with `keys`, says hello, and waits for `welcome`; a `bye` is an error that
    /// carries the server's reason.
    pub async fn connect_with(addr: SocketAddr, nick: &str, keys: &Keypair) -> Result<TestClient> {
        TestClient::hello(open(addr, keys).await?, nick).await
    }

    /// Says hello as `nick` on an established connection and waits for `welcome`; a `bye` is
    /// an error that carries the server's reason.
    pub async fn hello(mut conn: Connection<TcpStream>, nick: &str) -> Result<TestClient> {
        conn.write_record(&encode(&ClientMsg::Hello { nick: nick.into() })).await?;
        let mut c = TestClient { conn, nick: nick.into(), session: 0 };
        match c.recv().await? {
            ServerMsg::Welcome { session, .. } => {
                c.session = session;
                Ok(c)
            }
            ServerMsg::Bye { code, reason } => bail!("refused: {code:?}: {reason}"),
            other => bail!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        self.conn.write_record(&encode(msg)).await?;
        Ok(())
    }

    /// The texts of the chat messages among `msgs`, in order.
    pub fn texts(msgs: &[ServerMsg]) -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match m {
                ServerMsg::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    /// Says `text` in `#lobby`.
    pub async fn say(&mut self, text: &str) -> Result<()> {
        self.send(&ClientMsg::Say { cid: None, room: "#lobby".into(), text: text.into() }).await
    }

    /// The next message, within [`STEP`]. A closed connection is an error.
    pub async fn recv(&mut self) -> Result<ServerMsg> {
        let record = tokio::time::timeout(STEP, self.conn.read_record())
            .await
            .context("timed out waiting for a message")??
            .context("connection closed")?;
        Ok(decode_server(&record)?)
    }

    /// Reads until a message matches `pred`, returning it (the others are skipped).
    pub async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&ServerMsg) -> bool,
    ) -> Result<ServerMsg> {
        loop {
            let m = self.recv().await.with_context(|| format!("while waiting for {what}"))?;
            if pred(&m) {
                return Ok(m);
            }
        }
    }

    /// Waits for the chat message with `text` and returns it.
    pub async fn expect_text(&mut self, text: &str) -> Result<ServerMsg> {
        self.expect(text, |m| matches!(m, ServerMsg::Message { text: t, .. } if t == text)).await
    }

    /// Sends `msg` and reads until the `history_end` of `room`, returning everything read
    /// (members, topic, history messages, and what else arrived meanwhile).
    pub async fn until_history_end(
        &mut self,
        msg: &ClientMsg,
        room: &str,
    ) -> Result<Vec<ServerMsg>> {
        self.send(msg).await?;
        let mut out = vec![];
        loop {
            let m =
                self.recv().await.with_context(|| format!("waiting for the history of {room}"))?;
            let end = matches!(&m, ServerMsg::HistoryEnd { room: r, .. } if r.as_str().eq_ignore_ascii_case(room));
            out.push(m);
            if end {
                return Ok(out);
            }
        }
    }

    /// Joins `room` and returns what came with it, up to its `history_end`.
    pub async fn join(&mut self, room: &str) -> Result<Vec<ServerMsg>> {
        self.until_history_end(&ClientMsg::Join { room: room.into(), since: None }, room).await
    }

    /// Says `text` in `room`.
    pub async fn say_in(&mut self, room: &str, text: &str) -> Result<()> {
        self.send(&ClientMsg::Say { cid: None, room: room.into(), text: text.into() }).await
    }

    /// Says `text` in `room` with the client message id `cid`.
    pub async fn say_with_cid(&mut self, room: &str, text: &str, cid: u64) -> Result<()> {
        self.send(&ClientMsg::Say { cid: Some(cid), room: room.into(), text: text.into() }).await
    }

    /// Sends the private message `text` to `to` with the client message id `cid`.
    pub async fn msg_with_cid(&mut self, to: &str, text: &str, cid: u64) -> Result<()> {
        self.send(&ClientMsg::Msg { cid: Some(cid), to: to.into(), text: text.into() }).await
    }

    /// Reads until what acknowledges this client's message `cid` arrives (docs/PROTOCOL.md
    /// 5.7): a live message, private message or sealed message from this client's nickname
    /// carrying `cid`, or an error carrying it. Returns it with its record exactly as received
    /// (to compare echoes byte for byte).
    pub async fn expect_cid(&mut self, cid: u64) -> Result<(ServerMsg, Vec<u8>)> {
        loop {
            let record = tokio::time::timeout(STEP, self.conn.read_record())
                .await
                .with_context(|| format!("timed out waiting for cid {cid}"))??
                .with_context(|| format!("connection closed before cid {cid}"))?;
            let m = decode_server(&record)?;
            let mine = match &m {
                ServerMsg::Message { from, history: false, .. }
                | ServerMsg::Sealed { from, history: false, .. }
                | ServerMsg::Private { from, .. } => from.as_str() == self.nick,
                ServerMsg::Error { .. } => true,
                _ => false,
            };
            if mine && cid_of(&m) == Some(cid) {
                return Ok((m, record.to_vec()));
            }
        }
    }

    /// Waits for the next `error` and returns its code and message.
    pub async fn expect_error(&mut self) -> Result<(chatao_proto::ErrorCode, String)> {
        match self.expect("an error", |m| matches!(m, ServerMsg::Error { .. })).await? {
            ServerMsg::Error { code, message, .. } => Ok((code, message)),
            _ => unreachable!(),
        }
    }

    /// Reads until the connection closes, returning everything received (within [`STEP`]).
    pub async fn read_to_end(&mut self) -> Result<Vec<ServerMsg>> {
        let mut out = vec![];
        loop {
            match tokio::time::timeout(STEP, self.conn.read_record()).await.context("timed out")? {
                Ok(Some(r)) => out.push(decode_server(&r)?),
                Ok(None) | Err(_) => return Ok(out),
            }
        }
    }
}

/// The client message id a server message carries, if any.
pub fn cid_of(m: &ServerMsg) -> Option<u64> {
    match m {
        ServerMsg::Message { cid, .. }
        | ServerMsg::Private { cid, .. }
        | ServerMsg::Sealed { cid, .. }
        | ServerMsg::Error { cid, .. } => *cid,
        _ => None,
    }
}

/// Like [`open`], with the client's socket receive buffer set to `bytes` before connecting (a
/// slow reader whose kernel buffer fills quickly).
pub async fn open_small(
    addr: SocketAddr,
    keys: &Keypair,
    bytes: u32,
) -> Result<Connection<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(bytes)?;
    let stream = socket.connect(addr).await?;
    Ok(chatao_transport::connect(stream, keys, |_| Ok(())).await?)
}

/// Reads `lines` (a child's output, a log) until one contains `needle`, waiting at most
/// [`STEP`] for each line; panics if none comes or the output ends first.
pub async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    loop {
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("output ended before {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}
