//! E2E fanout: the cost of an end-to-end encrypted room's fanout beside a plain room's, on the
//! same Chatao server in the same run. `clients` members in one room, `senders` of them sending
//! `messages` each; every member (the senders too: their echo is their acknowledgement)
//! accounts for every message. Two reports: `chatao-plain` and `chatao-e2e`.
//!
//! In the E2E room every client runs the real client E2E layer (`chatao_client::e2e`, MLS via
//! openmls, state in a temporary directory), exactly as `chatao` does: senders encrypt, the
//! server relays ciphertext, every member decrypts. Setup (not measured) has the first client
//! create the room and add the others one by one. Measured: delivery rate and latency, the
//! server's CPU (it only relays opaque bytes) and the bench process's CPU, which is where the
//! clients' encryption and decryption happen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chatao_client::connect::{self, Handle};
use chatao_client::net::{ConnectOptions, NetEvent};
use chatao_client::trust::Trust;
use chatao_proto::{ClientMsg, DEFAULT_ROOM, ServerMsg};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};

use crate::chatao::bench_key;
use crate::common::per_sec;
use crate::ledger::Tally;
use crate::payload::{self, Stamp};
use crate::procfs;
use crate::report::{Better, Report};
use crate::stats;
use crate::target::{ClientSpec, Endpoint, Kind, Progress, Recorder};

/// Settings of an E2E fanout run.
#[derive(Debug, Clone)]
pub struct E2eFanoutOptions {
    pub clients: u32,
    pub senders: u32,
    pub messages: u32,
    pub size: usize,
    /// Time without a new delivery, once every sender is done, after which the rest are lost.
    pub stall: Duration,
}

/// Key tag of these clients (distinct from the other scenarios').
const TAG: u8 = 4;
/// Longest wait for one setup step (a member added, a join confirmed).
const STEP: Duration = Duration::from_secs(60);

struct Member {
    handle: Handle,
    events: mpsc::Receiver<NetEvent>,
    nick: String,
}

/// Runs the plain room, then the E2E room, against `ep`; returns both reports.
pub async fn run(ep: &Endpoint, o: &E2eFanoutOptions, deadline: Instant) -> Result<Vec<Report>> {
    if o.senders == 0 || o.senders > o.clients || o.messages == 0 || o.clients < 2 {
        bail!("need 2 <= clients, 1 <= senders <= clients and messages >= 1");
    }
    let Kind::Chatao { server_key } = &ep.kind else { bail!("E2E rooms exist only on Chatao") };
    let state = tempfile::tempdir().context("a directory for the clients' MLS state")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000)
        .unwrap_or(0);
    let mut reports = vec![];
    for e2e in [false, true] {
        let room = format!("#bench-{}-{stamp}", if e2e { "e2e" } else { "plain" });
        let name = if e2e { "chatao-e2e" } else { "chatao-plain" };
        let dir = e2e.then(|| state.path().join(&room[1..]));
        let members = setup(ep, server_key.clone(), o, &room, dir, deadline).await?;
        reports.push(measure(ep, o, &room, name, members, deadline).await?);
    }
    Ok(reports)
}

async fn connect(
    ep: &Endpoint,
    server_key: Option<chatao_proto::Fingerprint>,
    index: u32,
    dir: Option<PathBuf>,
) -> Result<Member> {
    let nick = format!("e{index}");
    let opts = ConnectOptions {
        host: ep.addr.ip().to_string(),
        port: ep.addr.port(),
        nick: nick.clone(),
        keys: Arc::new(bench_key(TAG, index)),
        trust: Trust { host_port: ep.addr.to_string(), known_servers: None, expected: server_key },
    };
    let dir = dir.map(|d| d.join(&nick));
    let (welcome, handle, events) = connect::connect(&opts, dir.as_deref()).await?;
    // The server puts a key in the default room only when it remembers no room for it, or the
    // default room among them (a key that parted it, in the first run, is not put back).
    let lobby = chatao_proto::RoomName::lobby();
    if welcome.rooms.is_empty() || welcome.rooms.contains(&lobby) {
        handle.send(ClientMsg::Part { room: DEFAULT_ROOM.into(), reason: None }).await?;
    }
    Ok(Member { handle, events, nick })
}

/// Reads `m`'s events until `pred` matches one (others are dropped), within [`STEP`].
async fn expect(m: &mut Member, what: &str, pred: impl Fn(&ServerMsg) -> bool) -> Result<()> {
    let limit = Instant::now() + STEP;
    loop {
        let ev = tokio::time::timeout_at(limit, m.events.recv())
            .await
            .with_context(|| format!("{}: timed out waiting for {what}", m.nick))?;
        match ev {
            Some(NetEvent::Msg(msg)) if pred(&msg) => return Ok(()),
            Some(NetEvent::Msg(ServerMsg::Error { code, message, .. })) => {
                bail!("{}: error {code} while waiting for {what}: {message}", m.nick)
            }
            Some(NetEvent::Closed(c)) => {
                bail!("{}: closed while waiting for {what}: {c:?}", m.nick)
            }
            None => bail!("{}: the client stopped", m.nick),
            Some(_) => {}
        }
    }
}

fn joined(room: &str, nick: &str) -> impl Fn(&ServerMsg) -> bool {
    let (room, nick) = (room.to_owned(), nick.to_owned());
    move |m| matches!(m, ServerMsg::Join { room: r, nick: n, .. } if r.as_str() == room && n.as_str() == nick)
}

/// Connects everyone and puts them in `room`: plain (everyone joins), or E2E (the first
/// creates it and adds the others one by one).
async fn setup(
    ep: &Endpoint,
    server_key: Option<chatao_proto::Fingerprint>,
    o: &E2eFanoutOptions,
    room: &str,
    dir: Option<PathBuf>,
    deadline: Instant,
) -> Result<Vec<Member>> {
    let e2e = dir.is_some();
    let mut members = Vec::with_capacity(o.clients as usize);
    for i in 0..o.clients {
        if Instant::now() >= deadline {
            bail!("setup past the deadline");
        }
        members.push(connect(ep, server_key.clone(), i, dir.clone()).await?);
    }
    if !e2e {
        for m in &mut members {
            m.handle.send(ClientMsg::Join { room: room.into(), since: None }).await?;
            let nick = m.nick.clone();
            expect(m, "the join", joined(room, &nick)).await?;
        }
        return Ok(members);
    }
    let (first, rest) = members.split_first_mut().context("no clients")?;
    first.handle.send(ClientMsg::Create { room: room.into(), e2e: true, open: false }).await?;
    expect(first, "the room", joined(room, &first.nick.clone())).await?;
    for m in rest.iter_mut() {
        // The key packages are uploaded right after the welcome; ask for one only once the
        // member's own messages are known to have been handled.
        m.handle.send(ClientMsg::Whois { nick: m.nick.clone() }).await?;
        expect(m, "whois", |msg| matches!(msg, ServerMsg::Whois { .. })).await?;
        first
            .handle
            .send(ClientMsg::FetchKeyPackage { nick: m.nick.clone(), room: Some(room.into()) })
            .await?;
        let nick = m.nick.clone();
        expect(m, "being added", joined(room, &nick)).await?;
        expect(first, "the new member", joined(room, &nick)).await?;
        eprintln!("e2e-fanout: {nick} added to {room}");
    }
    Ok(members)
}

/// The CPU time of this process (the clients), seconds.
fn own_cpu() -> Option<procfs::ProcSample> {
    procfs::sample(std::process::id()).ok()
}

async fn measure(
    ep: &Endpoint,
    o: &E2eFanoutOptions,
    room: &str,
    name: &str,
    members: Vec<Member>,
    deadline: Instant,
) -> Result<Report> {
    let progress = Arc::new(Progress::default());
    let mut recorders = tokio::task::JoinSet::new();
    let mut handles = vec![];
    for (i, mut m) in members.into_iter().enumerate() {
        let spec = ClientSpec {
            index: i as u32,
            tag: TAG,
            nick: m.nick.clone(),
            room: room.to_owned(),
            ledger: Some((o.senders, o.messages)),
        };
        let mut rec = Recorder::new(&spec, progress.clone());
        handles.push(m.handle.clone());
        recorders.spawn(async move {
            while let Some(ev) = m.events.recv().await {
                match ev {
                    NetEvent::Msg(ServerMsg::Message { room, text, history: false, .. })
                        if rec.is_room(room.as_str()) =>
                    {
                        rec.on_text(&text)
                    }
                    // The goodbye to our own quit at the end is not a disconnection.
                    NetEvent::Closed(chatao_client::net::Closed::Bye { code: None, .. }) => break,
                    NetEvent::Closed(c) => {
                        rec.on_closed(&format!("{c:?}"));
                        break;
                    }
                    _ => {}
                }
            }
            rec
        });
    }
    sleep(Duration::from_millis(500)).await;
    let server_before = ep.pid.and_then(|pid| procfs::sample(pid).ok());
    let clients_before = own_cpu();
    let first_send_us = payload::now_us();
    let mut senders = tokio::task::JoinSet::new();
    for (s, handle) in handles.iter().take(o.senders as usize).enumerate() {
        let (handle, room, messages, size) = (handle.clone(), room.to_owned(), o.messages, o.size);
        senders.spawn(async move {
            for seq in 0..messages {
                let stamp = Stamp { sender: s as u32, seq, sent_us: payload::now_us() };
                let text = payload::encode(stamp, size);
                handle.send(ClientMsg::Say { cid: None, room: room.clone(), text }).await?;
            }
            anyhow::Ok(())
        });
    }
    let n = handles.len() as u64;
    let expected = n * u64::from(o.senders) * u64::from(o.messages);
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let got = Progress::get(&progress.deliveries);
        if got >= expected || Instant::now() >= deadline {
            break;
        }
        while senders.try_join_next().is_some() {}
        if got != last {
            (last, last_change) = (got, Instant::now());
        } else if senders.is_empty() && last_change.elapsed() >= o.stall {
            break;
        }
        sleep(crate::common::POLL).await;
    }
    let server_after = ep.pid.and_then(|pid| procfs::sample(pid).ok());
    let clients_after = own_cpu();
    let last_us = Progress::get(&progress.last_delivery_us).max(first_send_us);
    senders.abort_all();
    for h in &handles {
        let _ = tokio::time::timeout(
            crate::target::QUIT_WAIT,
            h.send(ClientMsg::Quit { reason: None }),
        )
        .await;
    }
    drop(handles);
    let mut tally = Tally::default();
    let mut latencies = vec![];
    while let Some(done) = tokio::time::timeout(STEP, recorders.join_next()).await.ok().flatten() {
        if let Ok(rec) = done {
            tally += rec.tally();
            latencies.extend_from_slice(&rec.latencies_us);
        }
    }
    let latency = stats::summarize(&mut latencies);
    let elapsed = (last_us - first_send_us) as f64 / 1e6;
    let mut report = Report::new("e2e-fanout", name);
    report.push("clients", n as f64, "", Better::Neither);
    report.push("senders", f64::from(o.senders), "", Better::Neither);
    report.push("messages_per_sender", f64::from(o.messages), "", Better::Neither);
    report.push("text_bytes", o.size as f64, "B", Better::Neither);
    report.push("expected", expected as f64, "deliveries", Better::Neither);
    report.push("delivered", tally.unique as f64, "deliveries", Better::Neither);
    report.push(
        "lost",
        expected.saturating_sub(tally.unique) as f64,
        "deliveries",
        Better::Neither,
    );
    report.push("duplicated", tally.duplicates as f64, "deliveries", Better::Neither);
    report.push("elapsed_s", elapsed, "s", Better::Lower);
    report.push("deliveries_per_s", per_sec(tally.unique as f64, elapsed), "1/s", Better::Higher);
    report.push("latency_p50", latency.p50_ms, "ms", Better::Lower);
    report.push("latency_p99", latency.p99_ms, "ms", Better::Lower);
    report.push("latency_max", latency.max_ms, "ms", Better::Lower);
    let per = |cpu: f64| if tally.unique > 0 { cpu * 1e9 / tally.unique as f64 } else { f64::NAN };
    if let (Some(b), Some(a)) = (server_before, server_after) {
        let cpu = procfs::cpu_delta(&b, &a);
        report.push("server_cpu_s", cpu, "s", Better::Lower);
        report.push("server_cpu_ns_per_delivery", per(cpu), "ns", Better::Lower);
    }
    if let (Some(b), Some(a)) = (clients_before, clients_after) {
        let cpu = procfs::cpu_delta(&b, &a);
        report.push("clients_cpu_s", cpu, "s", Better::Lower);
        report.push("clients_cpu_ns_per_delivery", per(cpu), "ns", Better::Lower);
    }
    if let Some((n, why)) = progress.closures() {
        report.notes.push(format!("{n} clients were disconnected; first: {why}"));
    }
    Ok(report)
}
