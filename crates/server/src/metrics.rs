//! Counters about what the server does, and the optional Prometheus endpoint that shows them.
//!
//! [`Metrics`] lives in [`Runtime::metrics`](crate::Runtime::metrics) (an `Arc`, so the binary
//! keeps a clone for the endpoint). The counters are `prometheus-client` counters (atomics)
//! bumped where things happen: the accept loop (connections, refusals), the session
//! (handshakes, messages in, deliveries out, disconnects, mailbox overflows), the [`Counted`]
//! wrapper around each socket (bytes), and the bus, which keeps its own [`BusStats`] (history
//! writes, queue drops) that `run` attaches here. They live in a `prometheus-client`
//! [`Registry`]; what is read at scrape time (sessions open, the bus's and the cluster link's
//! counters) is a [`Collector`] in the same registry. [`Metrics::render`] is
//! `prometheus-client`'s encoding of the Prometheus text format, version 0.0.4. Nothing is
//! counted per user, room or address, so the endpoint's size is fixed.
//!
//! [`serve`] answers HTTP/1.1 with `hyper`: one request per connection (no keep-alive), each
//! connection in its own task, its request head read within [`METRICS_HEAD_TIMEOUT`] of the
//! connection (hyper's header read timeout; a peer dribbling a byte a second does not extend
//! it) and at most [`METRICS_MAX_HEAD_BYTES`] long (else `431`), the answer taken within
//! [`METRICS_WRITE_TIMEOUT`] of the head. `GET` (or `HEAD`) `/metrics` is
//! answered with the exposition, any other path with `404`, any other method with `405`. At
//! most [`METRICS_CONNECTIONS`] are served at once, and a full endpoint closes the oldest
//! connection still sending its head: connections that dribble cannot keep an honest scrape
//! out. It is not authenticated: bind it to loopback or a private address.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chatao_proto::LeaveReason;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{self, ConstCounter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::admission::Refused;
use crate::bus::BusStats;
use crate::limits::{
    METRICS_CONNECTIONS, METRICS_HEAD_TIMEOUT, METRICS_MAX_HEAD_BYTES, METRICS_WRITE_TIMEOUT,
};

/// A monotonic counter: a handle on one sample of the registry (clones share it).
#[derive(Debug, Clone, Default)]
pub struct Counter(counter::Counter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
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
#[derive(Debug)]
pub struct Metrics {
    /// TCP connections accepted, admitted or not.
    pub connections: Counter,
    refused_server_full: Counter,
    refused_address_full: Counter,
    refused_rate_limited: Counter,
    handshakes_failed: Counter,
    handshakes_refused: Counter,
    /// Records received from clients with an open session.
    pub messages_in: Counter,
    /// Records taken from sessions' mailboxes and written to their clients.
    pub deliveries_out: Counter,
    /// Bytes read from and written to client sockets (ciphertext, handshakes included).
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Sessions ended because their mailbox overflowed (the client was too slow).
    pub mailbox_overflows: Counter,
    /// What the scrape reads when it happens (shared with the registry's collector).
    live: Arc<Live>,
    registry: Registry,
}

/// The samples computed at scrape time: the registry's [`Collector`].
#[derive(Debug, Default)]
struct Live {
    handshakes_ok: Counter,
    disconnects: [Counter; REASONS.len()],
    mailbox_overflows: Counter,
    /// The running bus's own counters (history writes, queue drops), attached by `run`.
    bus: RwLock<Option<Arc<BusStats>>>,
    /// A cluster node's link to the cluster (reachable or not, events dropped), attached by
    /// `run`.
    cluster: RwLock<Option<crate::hub::remote::ClusterLink>>,
}

/// Disconnect reasons, in the order of [`Live::disconnects`], with their label values.
const REASONS: [(LeaveReason, &str); 6] = [
    (LeaveReason::Quit, "quit"),
    (LeaveReason::Part, "part"),
    (LeaveReason::Lost, "lost"),
    (LeaveReason::Dropped, "dropped"),
    (LeaveReason::Kicked, "kicked"),
    (LeaveReason::Other, "other"),
];

/// One label, as the registry's families key their samples.
type Label = [(&'static str, &'static str); 1];

/// Registers a counter family whose samples all exist from the start (at 0), and returns a
/// handle on each.
fn counters<const N: usize>(
    registry: &mut Registry,
    (name, help): (&str, &str),
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Label, counter::Counter>::default();
    let handles = values.map(|value| Counter(family.get_or_create(&[(label, value)]).clone()));
    registry.register(name, help, family);
    handles
}

/// Registers one unlabelled counter and returns it.
fn counter(registry: &mut Registry, (name, help): (&str, &str)) -> Counter {
    let counter = Counter::default();
    registry.register(name, help, counter.0.clone());
    counter
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family registered, every counter at 0. Help texts are given without their final
    /// period: `prometheus-client` adds it.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "chatao_build",
            "The server's version, as a label; always 1",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let r = &mut registry;
        let connections =
            counter(r, ("chatao_connections", "TCP connections accepted, admitted or not"));
        let [refused_server_full, refused_address_full, refused_rate_limited] = counters(
            r,
            (
                "chatao_connections_refused",
                "Connections refused at accept, by the limit that refused them",
            ),
            "reason",
            ["server_full", "address_full", "rate_limited"],
        );
        let [handshakes_ok, handshakes_failed, handshakes_refused] = counters(
            r,
            (
                "chatao_handshakes",
                "Handshakes by result: ok (session opened), failed, refused (allowlist, ban, \
                 nickname)",
            ),
            "result",
            ["ok", "failed", "refused"],
        );
        let messages_in = counter(
            r,
            ("chatao_messages_in", "Messages received from clients with an open session"),
        );
        let deliveries_out = counter(
            r,
            (
                "chatao_deliveries_out",
                "Messages delivered from sessions' mailboxes to their clients",
            ),
        );
        let [bytes_in, bytes_out] = counters(
            r,
            (
                "chatao_bytes",
                "Bytes on client sockets (encrypted, handshakes included), by direction",
            ),
            "direction",
            ["in", "out"],
        );
        let disconnects = counters(
            r,
            (
                "chatao_disconnects",
                "Sessions ended, by reason (dropped: the server ended it; lost: the connection \
                 broke)",
            ),
            "reason",
            REASONS.map(|(_, name)| name),
        );
        let mailbox_overflows = Counter::default();
        let live = Arc::new(Live {
            handshakes_ok,
            disconnects,
            mailbox_overflows: mailbox_overflows.clone(),
            bus: RwLock::default(),
            cluster: RwLock::default(),
        });
        registry.register_collector(Box::new(live.clone()));
        Metrics {
            connections,
            refused_server_full,
            refused_address_full,
            refused_rate_limited,
            handshakes_failed,
            handshakes_refused,
            messages_in,
            deliveries_out,
            bytes_in,
            bytes_out,
            mailbox_overflows,
            live,
            registry,
        }
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
            Handshake::Ok => self.live.handshakes_ok.inc(),
            Handshake::Failed => self.handshakes_failed.inc(),
            Handshake::Refused => self.handshakes_refused.inc(),
        }
    }

    /// Counts a session's end.
    pub fn disconnected(&self, reason: LeaveReason) {
        let i = REASONS.iter().position(|(r, _)| *r == reason).unwrap_or(REASONS.len() - 1);
        self.live.disconnects[i].inc();
    }

    /// Shows the bus's counters from now on (each `run` has its own bus).
    pub fn attach_bus(&self, stats: Arc<BusStats>) {
        *self.live.bus.write() = Some(stats);
    }

    /// Shows the cluster link's state from now on (a cluster node only).
    pub fn attach_cluster(&self, link: crate::hub::remote::ClusterLink) {
        *self.live.cluster.write() = Some(link);
    }

    /// Sessions open now: every opened session ends with exactly one disconnect.
    pub fn sessions_open(&self) -> u64 {
        self.live.sessions_open()
    }

    /// The Prometheus text exposition (format 0.0.4) of every family.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and every family encodes.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

impl Live {
    fn sessions_open(&self) -> u64 {
        let ended: u64 = self.disconnects.iter().map(Counter::get).sum();
        self.handshakes_ok.get().saturating_sub(ended)
    }
}

/// One family of constant samples: `help` with its final period (a collector's help is
/// written as given), `samples` as (label, value) or `None` for an unlabelled sample.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Option<(&'static str, &'static str)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (label, sample) in samples {
        match label {
            Some(label) => sample.encode(metric.encode_family(&[label])?)?,
            None => sample.encode(metric.encode_family(&Vec::<(&str, &str)>::new())?)?,
        }
    }
    Ok(())
}

/// A counter family with one unlabelled sample.
fn one_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Counter, [(None, ConstCounter::new(value))])
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        family(
            e,
            "chatao_sessions_open",
            "Sessions open now.",
            MetricType::Gauge,
            [(None, ConstGauge::new(self.sessions_open()))],
        )?;
        let bus = self.bus.read().clone().unwrap_or_default();
        let relaxed = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        family(
            e,
            "chatao_queue_drops",
            "Queue overflows: a session's mailbox (the client was disconnected as too slow), or \
             the bus (a control event dropped).",
            MetricType::Counter,
            [
                (Some(("queue", "mailbox")), ConstCounter::new(self.mailbox_overflows.get())),
                (Some(("queue", "bus")), ConstCounter::new(relaxed(&bus.dropped))),
            ],
        )?;
        one_counter(
            e,
            "chatao_messages_refused_busy",
            "Messages refused with `busy` because the bus queue was nearly full.",
            relaxed(&bus.refused),
        )?;
        one_counter(
            e,
            "chatao_history_writes",
            "Events written to the history database (messages, topics, registrations, bans).",
            relaxed(&bus.persisted),
        )?;
        one_counter(
            e,
            "chatao_store_write_failures",
            "Transactions the history database could not write (a full or failing disk): their \
             messages were refused with `unavailable`, their registrations and bans not \
             acknowledged.",
            relaxed(&bus.write_errors),
        )?;
        one_counter(
            e,
            "chatao_messages_refused_unavailable",
            "Messages refused with `unavailable` because the history database could not store \
             them (never delivered).",
            relaxed(&bus.unstored),
        )?;
        if let Some(link) = self.cluster.read().as_ref() {
            family(
                e,
                "chatao_cluster_reachable",
                "1 while this cluster node is connected to NATS, 0 while it is not.",
                MetricType::Gauge,
                [(None, ConstGauge::new(u64::from(link.is_up())))],
            )?;
            one_counter(
                e,
                "chatao_cluster_events_dropped",
                "Events for the other nodes dropped because the queue to NATS was full (each is \
                 followed by a full presence resync).",
                relaxed(&link.dropped),
            )?;
        }
        Ok(())
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
                if let Err(cause) = answer(stream, metrics, head_read).await {
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
    #[error("the answer was not taken within {0:?}")]
    Timeout(Duration),
    /// hyper's own: a malformed or oversized head (answered with 4xx first), the head timeout,
    /// an I/O error.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Serves one connection: one request (its head within [`METRICS_HEAD_TIMEOUT`] of the start,
/// hyper's header read timeout; `head_read` set once it is in), one response within
/// [`METRICS_WRITE_TIMEOUT`] of the head, then close. A peer that closes before sending a
/// whole head gets no answer.
async fn answer<S>(
    stream: S,
    metrics: Arc<Metrics>,
    head_read: Arc<AtomicBool>,
) -> Result<(), ScrapeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_in = Arc::new(Notify::new());
    let service = hyper::service::service_fn({
        let head_in = head_in.clone();
        move |request: Request<hyper::body::Incoming>| {
            head_read.store(true, Ordering::Relaxed);
            // A permit if nobody waits yet: the wake-up is never lost.
            head_in.notify_one();
            let response = respond(request.method(), request.uri().path(), &metrics);
            async move { Ok::<_, Infallible>(response) }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(METRICS_HEAD_TIMEOUT)
        .max_header_size(METRICS_MAX_HEAD_BYTES)
        // The smallest read buffer hyper allows: what one connection can make it hold.
        .max_buf_size(8192)
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        done = &mut connection => done?,
        () = head_in.notified() => timeout(METRICS_WRITE_TIMEOUT, connection)
            .await
            .map_err(|_| ScrapeError::Timeout(METRICS_WRITE_TIMEOUT))??,
    }
    Ok(())
}

/// The response to one request.
fn respond(method: &Method, path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (method, path) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, prometheus_text::CONTENT_TYPE, metrics.render())
        }
        (&Method::GET | &Method::HEAD, _) => {
            (StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".to_owned())
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics only\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
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

    /// The stream, no longer counted.
    pub fn into_inner(self) -> S {
        self.inner
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
            "chatao_connections_refused_total{reason=\"server_full\"} 0",
            "chatao_history_writes_total 0",
            "# TYPE chatao_bytes_total counter",
            "# HELP chatao_sessions_open Sessions open now.",
            "# HELP chatao_connections_total TCP connections accepted, admitted or not.",
            "# TYPE chatao_build_info gauge",
            &format!("chatao_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line is `name{labels} value` or `name value`; every help ends with one
        // period; no OpenMetrics `# EOF`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(name.starts_with("chatao_"), "{l}");
            value.parse::<u64>().unwrap();
        }
        for l in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(l.ends_with('.') && !l.ends_with(".."), "{l}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    /// `request` to [`answer`] over an in-memory pipe; the whole response.
    async fn exchange(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(request).await.unwrap();
        let m = Arc::new(Metrics::new());
        let served = tokio::spawn(answer(server, m, Arc::new(AtomicBool::new(false))));
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        let _ = served.await.unwrap();
        got
    }

    #[tokio::test]
    async fn answers_get_metrics_and_refuses_the_rest() {
        for (request, status) in [
            ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"),
            ("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404"),
            ("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405"),
        ] {
            let got = exchange(request.as_bytes()).await;
            assert!(got.starts_with(status), "{request:?} -> {got}");
            assert!(got.contains("Connection: close\r\n"), "{request:?} -> {got}");
        }
        let got = exchange(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{got}");
        assert_eq!(body, "", "HEAD has no body");
        let got = exchange(&[b'a'; METRICS_MAX_HEAD_BYTES + 10]).await;
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    }
}
