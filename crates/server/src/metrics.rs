//! Counters about what the server does, and the optional Prometheus endpoint that shows them.
//!
//! [`Metrics`] lives in [`Config::metrics`](crate::Config::metrics) (an `Arc`, so the binary
//! keeps a clone for the endpoint). The counters are plain atomics bumped where things happen:
//! the accept loop (connections, refusals), the session (handshakes, messages in, deliveries out,
//! disconnects, mailbox overflows), the [`Counted`] wrapper around each socket (bytes), and the
//! bus, which keeps its own [`BusStats`] (history writes, queue drops) that `run` attaches here.
//! Nothing is counted per user, room or address, so the endpoint's size is fixed.
//!
//! [`serve`] is a deliberately small HTTP/1.1 responder: one request per connection, each in
//! its own task, a bounded request head read with a deadline counted from the connection
//! ([`METRICS_HEAD_TIMEOUT`], [`METRICS_MAX_HEAD_BYTES`]), `GET /metrics` answered with the text
//! exposition format (version 0.0.4) and everything else with an error status. At most
//! [`METRICS_CONNECTIONS`] are served at once, and a full endpoint closes the oldest connection
//! still sending its head: connections that dribble cannot keep an honest scrape out. It is not
//! authenticated: bind it to loopback or a private address.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use chatao_proto::LeaveReason;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::admission::Refused;
use crate::bus::BusStats;
use crate::limits::{
    METRICS_CONNECTIONS, METRICS_HEAD_TIMEOUT, METRICS_MAX_HEAD_BYTES, METRICS_WRITE_TIMEOUT,
};

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How a handshake (with `hello` and registration) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The session opened.
    Ok,
    /// Noise failed, the peer broke off, or it sent no valid `hello` in time.
    Failed,
    /// The handshake completed but the key or nickname was refused (allowlist, ban, nickname
    /// in use), with a `bye` saying why.
    Refused,
}

/// Every counter the endpoint shows. Cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted, admitted or not.
    pub connections: Counter,
    refused_server_full: Counter,
    refused_address_full: Counter,
    refused_rate_limited: Counter,
    handshakes_ok: Counter,
    handshakes_failed: Counter,
    handshakes_refused: Counter,
    /// Records received from clients with an open session.
    pub messages_in: Counter,
    /// Records taken from sessions' mailboxes and written to their clients.
    pub deliveries_out: Counter,
    /// Bytes read from and written to client sockets (ciphertext, handshakes included).
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    disconnects: [Counter; REASONS.len()],
    /// Sessions ended because their mailbox overflowed (the client was too slow).
    pub mailbox_overflows: Counter,
    /// The running bus's own counters (history writes, queue drops), attached by `run`.
    bus: RwLock<Option<Arc<BusStats>>>,
    /// A cluster node's link to the cluster (reachable or not, events dropped), attached by
    /// `run`.
    cluster: RwLock<Option<crate::hub::remote::ClusterLink>>,
}

/// Disconnect reasons, in the order of [`Metrics::disconnects`], with their label values.
const REASONS: [(LeaveReason, &str); 6] = [
    (LeaveReason::Quit, "quit"),
    (LeaveReason::Part, "part"),
    (LeaveReason::Lost, "lost"),
    (LeaveReason::Dropped, "dropped"),
    (LeaveReason::Kicked, "kicked"),
    (LeaveReason::Other, "other"),
];

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts a connection refused at `accept`.
    pub fn refused(&self, why: Refused) {
        match why {
            Refused::ServerFull => self.refused_server_full.inc(),
            Refused::AddressFull => self.refused_address_full.inc(),
            Refused::TooManyAttempts => self.refused_rate_limited.inc(),
        }
    }

    /// Counts the outcome of one connection's handshake.
    pub fn handshake(&self, outcome: Handshake) {
        match outcome {
            Handshake::Ok => self.handshakes_ok.inc(),
            Handshake::Failed => self.handshakes_failed.inc(),
            Handshake::Refused => self.handshakes_refused.inc(),
        }
    }

    /// Counts a session's end.
    pub fn disconnected(&self, reason: LeaveReason) {
        let i = REASONS.iter().position(|(r, _)| *r == reason).unwrap_or(REASONS.len() - 1);
        self.disconnects[i].inc();
    }

    /// Shows the bus's counters from now on (each `run` has its own bus).
    pub fn attach_bus(&self, stats: Arc<BusStats>) {
        *self.bus.write().unwrap_or_else(|p| p.into_inner()) = Some(stats);
    }

    /// Shows the cluster link's state from now on (a cluster node only).
    pub fn attach_cluster(&self, link: crate::hub::remote::ClusterLink) {
        *self.cluster.write().unwrap_or_else(|p| p.into_inner()) = Some(link);
    }

    /// Sessions open now: every opened session ends with exactly one disconnect.
    pub fn sessions_open(&self) -> u64 {
        let ended: u64 = self.disconnects.iter().map(Counter::get).sum();
        self.handshakes_ok.get().saturating_sub(ended)
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.one(
            "chatao_build_info",
            "gauge",
            "The server's version, as a label; always 1.",
            &[(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
        );
        out.one(
            "chatao_connections_total",
            "counter",
            "TCP connections accepted, admitted or not.",
            &[("", self.connections.get())],
        );
        out.one(
            "chatao_connections_refused_total",
            "counter",
            "Connections refused at accept, by the limit that refused them.",
            &[
                ("reason=\"server_full\"", self.refused_server_full.get()),
                ("reason=\"address_full\"", self.refused_address_full.get()),
                ("reason=\"rate_limited\"", self.refused_rate_limited.get()),
            ],
        );
        out.one(
            "chatao_handshakes_total",
            "counter",
            "Handshakes by result: ok (session opened), failed, refused (allowlist, ban, nickname).",
            &[
                ("result=\"ok\"", self.handshakes_ok.get()),
                ("result=\"failed\"", self.handshakes_failed.get()),
                ("result=\"refused\"", self.handshakes_refused.get()),
            ],
        );
        out.one(
            "chatao_sessions_open",
            "gauge",
            "Sessions open now.",
            &[("", self.sessions_open())],
        );
        out.one(
            "chatao_messages_in_total",
            "counter",
            "Messages received from clients with an open session.",
            &[("", self.messages_in.get())],
        );
        out.one(
            "chatao_deliveries_out_total",
            "counter",
            "Messages delivered from sessions' mailboxes to their clients.",
            &[("", self.deliveries_out.get())],
        );
        out.one(
            "chatao_bytes_total",
            "counter",
            "Bytes on client sockets (encrypted, handshakes included), by direction.",
            &[
                ("direction=\"in\"", self.bytes_in.get()),
                ("direction=\"out\"", self.bytes_out.get()),
            ],
        );
        let labels: Vec<String> =
            REASONS.iter().map(|(_, name)| format!("reason=\"{name}\"")).collect();
        let disconnects: Vec<(&str, u64)> = labels
            .iter()
            .map(String::as_str)
            .zip(self.disconnects.iter().map(Counter::get))
            .collect();
        out.one(
            "chatao_disconnects_total",
            "counter",
            "Sessions ended, by reason (dropped: the server ended it; lost: the connection broke).",
            &disconnects,
        );
        let bus = self.bus.read().unwrap_or_else(|p| p.into_inner()).clone();
        let bus = bus.unwrap_or_default();
        out.one(
            "chatao_queue_drops_total",
            "counter",
            "Queue overflows: a session's mailbox (the client was disconnected as too slow), or \
             the bus (a control event dropped).",
            &[
                ("queue=\"mailbox\"", self.mailbox_overflows.get()),
                ("queue=\"bus\"", bus.dropped.load(Ordering::Relaxed)),
            ],
        );
        out.one(
            "chatao_messages_refused_busy_total",
            "counter",
            "Messages refused with `busy` because the bus queue was nearly full.",
            &[("", bus.refused.load(Ordering::Relaxed))],
        );
        out.one(
            "chatao_history_writes_total",
            "counter",
            "Events written to the history database (messages, topics, registrations, bans).",
            &[("", bus.persisted.load(Ordering::Relaxed))],
        );
        out.one(
            "chatao_store_write_failures_total",
            "counter",
            "Transactions the history database could not write (a full or failing disk): their \
             messages were refused with `unavailable`, their registrations and bans not \
             acknowledged.",
            &[("", bus.write_errors.load(Ordering::Relaxed))],
        );
        out.one(
            "chatao_messages_refused_unavailable_total",
            "counter",
            "Messages refused with `unavailable` because the history database could not store \
             them (never delivered).",
            &[("", bus.unstored.load(Ordering::Relaxed))],
        );
        if let Some(link) = self.cluster.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            out.one(
                "chatao_cluster_reachable",
                "gauge",
                "1 while this cluster node is connected to NATS, 0 while it is not.",
                &[("", u64::from(link.is_up()))],
            );
            out.one(
                "chatao_cluster_events_dropped_total",
                "counter",
                "Events for the other nodes dropped because the queue to NATS was full (each is \
                 followed by a full presence resync).",
                &[("", link.dropped.load(Ordering::Relaxed))],
            );
        }
        out.text
    }
}

/// Builds the text format.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// One metric family: `samples` are (labels without braces, value).
    fn one(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
        use std::fmt::Write;
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.text, "{name} {value}");
            } else {
                let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
            }
        }
    }
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled; scrapes in progress are
/// then abandoned. Never fails: a broken scrape ends only itself.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint listening");
    }
    let mut scrapes = JoinSet::new();
    // The connections being served, oldest first; bounded by METRICS_CONNECTIONS. Overflow
    // policy: the oldest one still sending its request head is closed to make room (an honest
    // scrape sends its head at once, so it is never the oldest for long; a dribbler loses its
    // slot); if every one is past its head (being answered), the new connection is closed.
    let mut slots: VecDeque<Slot> = VecDeque::with_capacity(METRICS_CONNECTIONS);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while scrapes.try_join_next().is_some() {}
        slots.retain(|slot| !slot.task.is_finished());
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(cause) => {
                debug!(%cause, "metrics accept failed");
                // Out of descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if slots.len() >= METRICS_CONNECTIONS {
            match slots.iter().position(|slot| !slot.head_read.load(Ordering::Relaxed)) {
                Some(oldest) => {
                    if let Some(slot) = slots.remove(oldest) {
                        slot.task.abort();
                        debug!(%peer, "metrics endpoint full; closed the oldest unfinished request");
                    }
                }
                None => {
                    debug!(%peer, "metrics endpoint full of answers in progress; closing");
                    continue;
                }
            }
        }
        let metrics = metrics.clone();
        let head_read = Arc::new(AtomicBool::new(false));
        let task = scrapes.spawn({
            let head_read = head_read.clone();
            async move {
                if let Err(cause) = answer(stream, &metrics, &head_read).await {
                    debug!(%peer, %cause, "metrics scrape failed");
                }
            }
        });
        slots.push_back(Slot { task, head_read });
    }
    scrapes.shutdown().await;
}

/// One connection being served by [`serve`].
struct Slot {
    task: AbortHandle,
    /// Set once the whole request head is in: from then on the connection is being answered
    /// and is no longer the one closed to make room.
    head_read: Arc<AtomicBool>,
}

/// Why one scrape ended without its answer.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("no complete request head within {0:?}")]
    HeadTimeout(Duration),
    #[error("the answer was not taken within {0:?}")]
    WriteTimeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one request head (within [`METRICS_HEAD_TIMEOUT`], sets `head_read` once it is in) and
/// writes one response (within [`METRICS_WRITE_TIMEOUT`]). A peer that closes before sending a
/// whole head gets no answer.
async fn answer<S>(
    mut stream: S,
    metrics: &Metrics,
    head_read: &AtomicBool,
) -> Result<(), ScrapeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = timeout(METRICS_HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| ScrapeError::HeadTimeout(METRICS_HEAD_TIMEOUT))??;
    head_read.store(true, Ordering::Relaxed);
    let response = match head {
        Head::Complete(head) => respond(&head, metrics),
        Head::TooLarge => response(
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n",
            true,
        ),
        Head::Closed => return Ok(()),
    };
    timeout(METRICS_WRITE_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| ScrapeError::WriteTimeout(METRICS_WRITE_TIMEOUT))??;
    Ok(())
}

/// What [`read_head`] found.
enum Head {
    /// A head ended by a blank line (and any bytes after it).
    Complete(Vec<u8>),
    /// [`METRICS_MAX_HEAD_BYTES`] read without the end of a head.
    TooLarge,
    /// The peer closed first.
    Closed,
}

/// Reads until the blank line that ends a request head, at most [`METRICS_MAX_HEAD_BYTES`].
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Head::Complete(head));
        }
        if head.len() >= METRICS_MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
        // Never read past the bound, so the head held is at most METRICS_MAX_HEAD_BYTES.
        let room = (METRICS_MAX_HEAD_BYTES - head.len()).min(buf.len());
        let n = stream.read(&mut buf[..room]).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// The response to one request head.
fn respond(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics.render(),
            method == "GET",
        ),
        ("GET" | "HEAD", _) => response("404 Not Found", "text/plain", "try /metrics\n", true),
        _ => response("405 Method Not Allowed", "text/plain", "GET /metrics only\n", true),
    }
}

fn response(status: &str, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A client socket that counts its bytes into [`Metrics::bytes_in`] and
/// [`Metrics::bytes_out`]; otherwise it is the socket itself.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Counted<S> {
        Counted { inner, metrics }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.metrics.bytes_in.add((buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.metrics.bytes_out.add(n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.metrics.bytes_out.add(n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn render_is_the_text_format_with_every_family() {
        let m = Metrics::new();
        m.connections.inc();
        m.handshake(Handshake::Ok);
        m.handshake(Handshake::Ok);
        m.disconnected(LeaveReason::Quit);
        m.refused(Refused::TooManyAttempts);
        let text = m.render();
        for line in [
            "chatao_connections_total 1",
            "chatao_handshakes_total{result=\"ok\"} 2",
            "chatao_sessions_open 1",
            "chatao_disconnects_total{reason=\"quit\"} 1",
            "chatao_connections_refused_total{reason=\"rate_limited\"} 1",
            "chatao_history_writes_total 0",
            "# TYPE chatao_bytes_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(name.starts_with("chatao_"), "{l}");
            value.parse::<u64>().unwrap();
        }
    }

    #[tokio::test]
    async fn answers_get_metrics_and_refuses_the_rest() {
        let m = Metrics::new();
        for (request, status) in [
            ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"),
            ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404"),
            ("POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405"),
        ] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            client.write_all(request.as_bytes()).await.unwrap();
            answer(server, &m, &AtomicBool::new(false)).await.unwrap();
            let mut got = String::new();
            client.read_to_string(&mut got).await.unwrap();
            assert!(got.starts_with(status), "{request:?} -> {got}");
        }
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; METRICS_MAX_HEAD_BYTES + 10]).await.unwrap();
        answer(server, &m, &AtomicBool::new(false)).await.unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    }
}
