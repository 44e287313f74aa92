//! IRC clients for the side-by-side runs: registration (`NICK`/`USER`, wait for `001`), `JOIN`,
//! `PRIVMSG`, `QUIT`, over TLS with any certificate accepted (the peers use a self-signed one on
//! loopback) or in clear.
//!
//! Each client has the same shape as a Chatao client: a writer task fed by a bounded queue (one
//! TLS record and one write per line, as the Chatao actor writes one frame per message), and a
//! reader task that hands deliveries to the shared [`Recorder`]. TLS session resumption is off,
//! so every connect is a full handshake, as every Chatao connect is.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::payload::{self, Stamp};
use crate::target::{Client, ClientSpec, Progress, Recorder};

/// Time to connect, shake hands and be welcomed (`001`), as for Chatao clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines waiting to be written. Overflow policy: `say` waits, as with Chatao's outbox.
pub const OUTBOX: usize = 256;
/// Longest line read (the IRC limit is 512 bytes; tags may add more).
const MAX_LINE: usize = 8192;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Box<dyn Io>;

/// One parsed IRC line: `[:prefix] COMMAND params... [:trailing]` (the trailing parameter is
/// the last of `params`).
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub prefix: Option<&'a str>,
    pub command: &'a str,
    pub params: Vec<&'a str>,
}

/// Parses one line (with or without its `\r\n`); `None` for an empty or malformed one.
pub fn parse(line: &str) -> Option<Line<'_>> {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    if rest.starts_with('@') {
        rest = rest.split_once(' ')?.1.trim_start_matches(' ');
    }
    let prefix = match rest.strip_prefix(':') {
        Some(p) => {
            let (prefix, after) = p.split_once(' ')?;
            rest = after.trim_start_matches(' ');
            Some(prefix)
        }
        None => None,
    };
    let (command, mut rest) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    if command.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                params.push(p);
                rest = r;
            }
            None => {
                params.push(rest);
                break;
            }
        }
    }
    Some(Line { prefix, command, params })
}

/// The nickname in a `nick!user@host` prefix.
pub fn nick_of(prefix: &str) -> &str {
    prefix.split(['!', '@']).next().unwrap_or(prefix)
}

/// An IRC client's sending side.
#[derive(Debug, Clone)]
pub struct Sayer {
    tx: mpsc::Sender<String>,
    room: String,
}

impl Sayer {
    pub async fn say(&self, text: String) -> Result<()> {
        let line = format!("PRIVMSG {} :{text}\r\n", self.room);
        self.tx.send(line).await.map_err(|_| anyhow::anyhow!("connection closed"))
    }

    pub async fn quit(&self) {
        let quit = self.tx.send("QUIT :bye\r\n".to_owned());
        let _ = timeout(crate::target::QUIT_WAIT, quit).await;
    }
}

/// Accepts any server certificate (the peers' is self-signed), but still checks that the
/// handshake is signed by it, so the TLS work is the real work.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> Result<TlsConnector> {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    if let Some(c) = CONNECTOR.get() {
        return Ok(c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(CONNECTOR.get_or_init(|| TlsConnector::from(Arc::new(config))).clone())
}

/// The TLS version and cipher suite a handshake with `addr` settles on, for the report.
pub async fn describe_tls(addr: SocketAddr) -> Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector()?.connect(ServerName::try_from("bench.local")?, tcp).await?;
    let (_, conn) = tls.get_ref();
    Ok(format!(
        "{:?} {:?}",
        conn.protocol_version().context("no TLS version")?,
        conn.negotiated_cipher_suite().context("no cipher suite")?.suite()
    ))
}

async fn open(addr: SocketAddr, tls: bool) -> Result<Stream> {
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = ServerName::try_from("bench.local")?;
    Ok(Box::new(connector()?.connect(name, tcp).await.context("TLS handshake")?))
}

/// Writes queued lines, one write (one TLS record) each, until the queue closes.
async fn write_lines(mut w: tokio::io::WriteHalf<Stream>, mut rx: mpsc::Receiver<String>) {
    while let Some(line) = rx.recv().await {
        if w.write_all(line.as_bytes()).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

type Reader = BufReader<ReadHalf<Stream>>;

/// Reads one line into `buf`; `false` at the end of the stream.
async fn read_line(r: &mut Reader, buf: &mut String) -> Result<bool> {
    buf.clear();
    let n = r.read_line(buf).await?;
    if buf.len() > MAX_LINE {
        bail!("line too long");
    }
    Ok(n > 0)
}

/// Connects, registers as `nick`, and waits for `001`. Answers `PING` meanwhile.
async fn register(
    addr: SocketAddr,
    tls: bool,
    nick: &str,
) -> Result<(Reader, mpsc::Sender<String>)> {
    let stream = open(addr, tls).await?;
    let (r, w) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(OUTBOX);
    tokio::spawn(write_lines(w, rx));
    let mut reader = BufReader::with_capacity(16 * 1024, r);
    tx.send(format!("NICK {nick}\r\nUSER {nick} 0 * :bench\r\n")).await?;
    let mut buf = String::new();
    loop {
        if !read_line(&mut reader, &mut buf).await? {
            bail!("the server closed the connection during registration");
        }
        let Some(line) = parse(&buf) else { continue };
        match line.command {
            "001" => return Ok((reader, tx)),
            "PING" => tx.send(format!("PONG :{}\r\n", line.params.last().unwrap_or(&""))).await?,
            "ERROR" | "432" | "433" | "465" => bail!("refused: {}", buf.trim_end()),
            _ => {}
        }
    }
}

/// Connects, registers and joins `spec.room`; the reader task records from then on.
pub async fn connect(
    addr: SocketAddr,
    tls: bool,
    spec: &ClientSpec,
    progress: Arc<Progress>,
) -> Result<Client> {
    let (reader, tx) = timeout(CONNECT_TIMEOUT, register(addr, tls, &spec.nick))
        .await
        .context("timed out registering")??;
    tx.send(format!("JOIN {}\r\n", spec.room)).await?;
    let stop = CancellationToken::new();
    let recorder = Recorder::new(spec, progress);
    let task = tokio::spawn(record(reader, tx.clone(), recorder, stop.clone()));
    let sayer = crate::target::Sayer::Irc(Sayer { tx, room: spec.room.clone() });
    Ok(Client { sayer, task, stop })
}

async fn record(
    mut reader: Reader,
    tx: mpsc::Sender<String>,
    mut rec: Recorder,
    stop: CancellationToken,
) -> Recorder {
    let mut buf = String::new();
    loop {
        let more = tokio::select! {
            biased;
            _ = stop.cancelled() => return rec,
            more = read_line(&mut reader, &mut buf) => more,
        };
        match more {
            Ok(true) => {}
            Ok(false) => {
                rec.on_closed("the server closed the connection");
                return rec;
            }
            Err(e) => {
                rec.on_closed(&format!("{e:#}"));
                return rec;
            }
        }
        let Some(line) = parse(&buf) else { continue };
        match (line.command, line.params.as_slice()) {
            ("PRIVMSG", [target, text, ..]) if rec.is_room(target) => rec.on_text(text),
            ("JOIN", [room, ..]) if rec.is_room(room) => {
                rec.on_join(nick_of(line.prefix.unwrap_or("")))
            }
            ("PING", params) => {
                let _ = tx.send(format!("PONG :{}\r\n", params.last().unwrap_or(&""))).await;
            }
            ("ERROR", _) => {
                rec.on_closed(buf.trim_end());
                return rec;
            }
            _ => {}
        }
    }
}

/// Connect, register, join, say `messages` things, quit, and wait for the server to close.
pub async fn cycle(
    addr: SocketAddr,
    tls: bool,
    spec: &ClientSpec,
    messages: u32,
    size: usize,
) -> Result<()> {
    let (mut reader, tx) = timeout(CONNECT_TIMEOUT, register(addr, tls, &spec.nick))
        .await
        .context("timed out registering")??;
    tx.send(format!("JOIN {}\r\n", spec.room)).await?;
    let mut buf = String::new();
    loop {
        if !read_line(&mut reader, &mut buf).await? {
            bail!("closed before the join");
        }
        match parse(&buf) {
            Some(Line { command: "JOIN", prefix: Some(p), .. }) if nick_of(p) == spec.nick => break,
            Some(Line { command: "PING", params, .. }) => {
                tx.send(format!("PONG :{}\r\n", params.last().unwrap_or(&""))).await?
            }
            _ => {}
        }
    }
    for seq in 0..messages {
        let text =
            payload::encode(Stamp { sender: spec.index, seq, sent_us: payload::now_us() }, size);
        tx.send(format!("PRIVMSG {} :{text}\r\n", spec.room)).await?;
    }
    tx.send("QUIT :bye\r\n".to_owned()).await?;
    while read_line(&mut reader, &mut buf).await.unwrap_or(false) {}
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_lines_the_bench_reads() {
        let l = parse(":f12!f12@127.0.0.1 PRIVMSG #bench :b 1 2 3 ...\r\n").unwrap();
        assert_eq!(l.prefix, Some("f12!f12@127.0.0.1"));
        assert_eq!(l.command, "PRIVMSG");
        assert_eq!(l.params, ["#bench", "b 1 2 3 ..."]);
        assert_eq!(nick_of(l.prefix.unwrap()), "f12");
        let j = parse(":f1!~f1@localhost JOIN :#bench").unwrap();
        assert_eq!((j.command, j.params.as_slice()), ("JOIN", &["#bench"][..]));
        let j = parse(":f1!~f1@localhost JOIN #Bench").unwrap();
        assert_eq!(j.params, ["#Bench"]);
        let w = parse(":bench.local 001 f1 :Welcome to the Bench IRC Network f1!f1@127.0.0.1");
        assert_eq!(w.unwrap().command, "001");
        let p = parse("PING :bench.local\r\n").unwrap();
        assert_eq!(
            (p.prefix, p.command, p.params.as_slice()),
            (None, "PING", &["bench.local"][..])
        );
        let t = parse("@time=2024 :a!b@c PRIVMSG #x :hi  there").unwrap();
        assert_eq!(t.params, ["#x", "hi  there"]);
        assert_eq!(parse(""), None);
        assert_eq!(parse(":onlyprefix"), None);
        assert_eq!(parse("QUIT").unwrap().params, Vec::<&str>::new());
        assert_eq!(nick_of("server.name"), "server.name");
    }
}
