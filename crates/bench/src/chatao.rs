//! Chatao clients, through the client's own network actor (`chatao_client::net`): the bench
//! connects, trusts, says hello and sends exactly as the `chatao` program does.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chatao_client::net::{self, Closed, ConnectOptions, NetEvent, NetHandle};
use chatao_client::trust::Trust;
use chatao_proto::{ClientMsg, DEFAULT_ROOM, ServerMsg};
use chatao_transport::Keypair;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::payload::{self, Stamp};
use crate::target::{Client, ClientSpec, Progress, Recorder};

/// A Chatao client's sending side.
#[derive(Debug, Clone)]
pub struct Sayer {
    handle: NetHandle,
    room: String,
}

impl Sayer {
    pub async fn say(&self, text: String) -> Result<()> {
        self.handle.send(ClientMsg::Say { cid: None, room: self.room.clone(), text }).await?;
        Ok(())
    }

    pub async fn quit(&self) {
        let quit = self.handle.send(ClientMsg::Quit { reason: None });
        let _ = tokio::time::timeout(crate::target::QUIT_WAIT, quit).await;
    }
}

/// The key of client `index` in the scenario tagged `tag`: the same every run, so that a
/// nickname is always claimed by the same key (Chatao binds nicknames to keys).
pub fn bench_key(tag: u8, index: u32) -> Keypair {
    let mut secret = [0x42u8; 32];
    secret[1] = tag;
    secret[2..6].copy_from_slice(&index.to_le_bytes());
    Keypair::from_secret(secret)
}

fn options(
    addr: SocketAddr,
    server_key: Option<chatao_proto::Fingerprint>,
    spec: &ClientSpec,
) -> ConnectOptions {
    ConnectOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        nick: spec.nick.clone(),
        keys: Arc::new(bench_key(spec.tag, spec.index)),
        trust: Trust { host_port: addr.to_string(), known_servers: None, expected: server_key },
    }
}

/// Connects and welcomes `spec`; if its room is not the default room, leaves that and joins
/// its own.
pub async fn connect(
    addr: SocketAddr,
    server_key: Option<chatao_proto::Fingerprint>,
    spec: &ClientSpec,
    progress: Arc<Progress>,
) -> Result<Client> {
    let (welcome, handle, events) = net::connect(&options(addr, server_key, spec)).await?;
    if !spec.room.eq_ignore_ascii_case(DEFAULT_ROOM) {
        // The server put the key in the default room only if it remembers no room for it, or
        // that one among them (a server that keeps its data across runs remembers the rest).
        let lobby = chatao_proto::RoomName::lobby();
        if welcome.rooms.is_empty() || welcome.rooms.contains(&lobby) {
            handle.send(ClientMsg::Part { room: DEFAULT_ROOM.into(), reason: None }).await?;
        }
        handle.send(ClientMsg::Join { room: spec.room.clone(), since: None }).await?;
    }
    let stop = CancellationToken::new();
    let recorder = Recorder::new(spec, progress);
    let task = tokio::spawn(record(events, recorder, stop.clone()));
    let sayer = crate::target::Sayer::Chatao(Sayer { handle, room: spec.room.clone() });
    Ok(Client { sayer, task, stop })
}

/// Feeds the client's events to its recorder until the connection ends or `stop`.
async fn record(
    mut events: mpsc::Receiver<NetEvent>,
    mut rec: Recorder,
    stop: CancellationToken,
) -> Recorder {
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            event = events.recv() => event,
        };
        match event {
            Some(NetEvent::Msg(ServerMsg::Message { room, text, history: false, .. }))
                if rec.is_room(room.as_str()) =>
            {
                rec.on_text(&text)
            }
            Some(NetEvent::Msg(ServerMsg::Join { room, nick, .. }))
                if rec.is_room(room.as_str()) =>
            {
                rec.on_join(nick.as_str())
            }
            Some(NetEvent::Closed(closed)) => {
                rec.on_closed(&format!("{closed:?}"));
                break;
            }
            None => {
                rec.on_closed("the client actor stopped");
                break;
            }
            Some(_) => {}
        }
    }
    rec
}

/// Connect, say `messages` things and wait for the echo of the last, quit, wait for `bye`.
pub async fn cycle(
    addr: SocketAddr,
    server_key: Option<chatao_proto::Fingerprint>,
    spec: &ClientSpec,
    messages: u32,
    size: usize,
) -> Result<()> {
    let (_welcome, handle, mut events) = net::connect(&options(addr, server_key, spec)).await?;
    for seq in 0..messages {
        let text =
            payload::encode(Stamp { sender: spec.index, seq, sent_us: payload::now_us() }, size);
        handle.send(ClientMsg::Say { cid: None, room: DEFAULT_ROOM.into(), text }).await?;
    }
    let last = messages.checked_sub(1);
    let mut quit_sent = false;
    if last.is_none() {
        handle.send(ClientMsg::Quit { reason: None }).await?;
        quit_sent = true;
    }
    loop {
        match events.recv().await.context("the client actor stopped")? {
            NetEvent::Msg(ServerMsg::Message { from, text, history: false, .. })
                if !quit_sent && from.as_str() == spec.nick =>
            {
                let stamp = payload::decode(&text);
                if stamp.is_some_and(|s| Some(s.seq) == last && s.sender == spec.index) {
                    handle.send(ClientMsg::Quit { reason: None }).await?;
                    quit_sent = true;
                }
            }
            NetEvent::Msg(ServerMsg::Error { code, message, .. }) => {
                bail!("server error {code}: {message}")
            }
            NetEvent::Closed(Closed::Bye { code: None, .. }) if quit_sent => return Ok(()),
            NetEvent::Closed(closed) => bail!("closed before goodbye: {closed:?}"),
            _ => {}
        }
    }
}
