//! The honest pair: alice and bob in `#lobby`, both through the client's own network actor
//! (`chatao_client::net`, the one `chatao` uses: it stamps client ids, keeps messages until
//! acknowledged and sends them again after `unconfirmed`/`busy`). Alice says a stamped line
//! every [`INTERVAL`]; for each line the pair records when alice handed it to her actor, when
//! bob received it, and when alice received her own echo (her acknowledgement).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chatao_client::net::{self, ConnectOptions, NetEvent, NetHandle};
use chatao_client::trust::Trust;
use chatao_proto::{ClientMsg, DEFAULT_ROOM, ServerMsg};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::payload::{self, Stamp};

/// How often alice speaks.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Text size of alice's lines.
const SIZE: usize = 64;
/// Key tag of the honest pair (see [`crate::chatao::bench_key`]).
const TAG: u8 = 20;

/// One of alice's lines: when it was sent, received by bob, echoed to alice (µs, one clock).
#[derive(Debug, Clone, Copy, Default)]
pub struct Line {
    pub sent_us: u64,
    pub received_us: Option<u64>,
    pub echoed_us: Option<u64>,
}

/// What the pair saw. A blocking (parking_lot) mutex: short updates from the recorder tasks, never held across
/// an await.
#[derive(Debug, Default)]
struct Seen {
    lines: Vec<Line>,
    /// Everything else worth a note: errors to alice, a connection closing.
    notes: Vec<String>,
}

/// The running pair.
pub struct Pair {
    seen: Arc<Mutex<Seen>>,
    stop_talking: CancellationToken,
    stop_recording: CancellationToken,
    talker: JoinHandle<()>,
    recorders: Vec<JoinHandle<()>>,
    handles: Vec<NetHandle>,
}

fn options(
    addr: std::net::SocketAddr,
    server_key: Option<chatao_proto::Fingerprint>,
    i: u32,
) -> ConnectOptions {
    ConnectOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        nick: if i == 0 { "alice".into() } else { "bob".into() },
        keys: Arc::new(crate::chatao::bench_key(TAG, i)),
        trust: Trust { host_port: addr.to_string(), known_servers: None, expected: server_key },
    }
}

impl Pair {
    /// Connects bob, then alice, and starts alice talking.
    pub async fn start(
        addr: std::net::SocketAddr,
        server_key: Option<chatao_proto::Fingerprint>,
    ) -> Result<Pair> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop_recording = CancellationToken::new();
        let (_, bob, bob_events) =
            net::connect(&options(addr, server_key.clone(), 1)).await.context("bob")?;
        let (_, alice, alice_events) =
            net::connect(&options(addr, server_key, 0)).await.context("alice")?;
        let recorders = vec![
            tokio::spawn(record(alice_events, "alice", seen.clone(), stop_recording.clone())),
            tokio::spawn(record(bob_events, "bob", seen.clone(), stop_recording.clone())),
        ];
        let stop_talking = CancellationToken::new();
        let talker = tokio::spawn(talk(alice.clone(), seen.clone(), stop_talking.clone()));
        Ok(Pair {
            seen,
            stop_talking,
            stop_recording,
            talker,
            recorders,
            handles: vec![alice, bob],
        })
    }

    /// Stops alice talking, waits up to `grace` for every line to reach bob and echo to alice,
    /// says goodbye, and returns the lines and notes.
    pub async fn finish(self, grace: Duration) -> (Vec<Line>, Vec<String>) {
        self.stop_talking.cancel();
        let _ = self.talker.await;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let done = {
                let s = self.seen.lock();
                s.lines.iter().all(|l| l.received_us.is_some() && l.echoed_us.is_some())
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop_recording.cancel();
        for r in self.recorders {
            let _ = r.await;
        }
        for h in &self.handles {
            let quit = h.send(ClientMsg::Quit { reason: None });
            let _ = tokio::time::timeout(crate::target::QUIT_WAIT, quit).await;
        }
        let s = self.seen.lock();
        (s.lines.clone(), s.notes.clone())
    }
}

/// Alice's line every [`INTERVAL`], stamped with its number and the time it was handed over.
async fn talk(alice: NetHandle, seen: Arc<Mutex<Seen>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sent_us = payload::now_us();
        let seq = {
            let mut s = seen.lock();
            s.lines.push(Line { sent_us, ..Line::default() });
            s.lines.len() as u32 - 1
        };
        let text = payload::encode(Stamp { sender: 0, seq, sent_us }, SIZE);
        let say = ClientMsg::Say { cid: None, room: DEFAULT_ROOM.into(), text };
        if let Err(e) = alice.send(say).await {
            seen.lock().notes.push(format!("alice could not send: {e}"));
            return;
        }
    }
}

/// Records one client's view: bob's receipts and alice's echoes of alice's lines, errors and
/// closings as notes. Drains the actor's events at once, so that the bench never slows it.
async fn record(
    mut events: mpsc::Receiver<NetEvent>,
    who: &'static str,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            e = events.recv() => e,
        };
        let now = payload::now_us();
        let mut s = seen.lock();
        match event {
            Some(NetEvent::Msg(ServerMsg::Message { from, text, history: false, .. }))
                if from.as_str() == "alice" =>
            {
                let Some(stamp) = payload::decode(&text) else { continue };
                if let Some(line) = s.lines.get_mut(stamp.seq as usize) {
                    let slot =
                        if who == "bob" { &mut line.received_us } else { &mut line.echoed_us };
                    if slot.is_none() {
                        *slot = Some(now);
                    } else {
                        s.notes.push(format!("{who} got alice's line {} twice", stamp.seq));
                    }
                }
            }
            Some(NetEvent::Msg(ServerMsg::Error { code, message, .. })) => {
                if s.notes.len() < 20 {
                    s.notes
                        .push(format!("{who} got error {code}: {}", super::raw::short(&message)));
                }
            }
            Some(NetEvent::Closed(closed)) => {
                // Debug formatting escapes every control in the server's words.
                s.notes.push(format!("{who}'s connection closed: {closed:?}"));
                return;
            }
            None => return,
            Some(_) => {}
        }
    }
}
