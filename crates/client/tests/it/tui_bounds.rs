//! Issue 15, item 18: a hostile server cannot exhaust the full-screen client. The real
//! `chatao` runs in tmux against a hand-made server that floods it: 500 messages as large as
//! the client accepts in a record ([`chatao_client::net::MAX_SERVER_RECORD`], 256 KiB), a
//! thousand private conversations, then one message of as many lines as a record holds
//! (120,000). Afterwards the
//! client's resident memory (`VmRSS`) is under [`RSS_LIMIT_KB`], the screen says what the
//! limits cut and closed, and the UI still answers keys: a typed line reaches the server.
//!
//! tmux is required, as for `tui_tmux.rs`. No timing is asserted: every wait is on an event,
//! with a generous deadline.
#![allow(clippy::unwrap_used)]

use crate::common;
use std::time::Duration;

use crate::common::tmux::Tmux;
use chatao_client::net::MAX_SERVER_RECORD;
use chatao_proto::{
    ClientMsg, Limits, MessageKind, Nick, RoomName, ServerMsg, decode_client, encode,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Longest wait for the flood to be shown (the largest records, debug builds, shared cores).
const FLOOD_DEADLINE: Duration = Duration::from_secs(600);
/// Longest wait for anything else.
const DEADLINE: Duration = Duration::from_secs(30);
/// Newlines in the long message: as many as fit in one record (each is `\n` in JSON).
const LINES: usize = 120_000;
/// The client's resident memory after the flood must stay under this. Unbounded, the flood
/// below takes it past 500 MB (2,000 records of 256 KiB).
const RSS_LIMIT_KB: u64 = 200 * 1024;
/// Messages of the largest size flooded.
const HUGE_MESSAGES: usize = 2000;
/// Private conversations opened.
const CONVERSATIONS: usize = 1000;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A room message record `id` from mallory whose text fills the record to exactly `len`
/// bytes, the `\n` included.
fn huge_record(id: u64, len: usize) -> bytes::Bytes {
    let msg = |text: String| ServerMsg::Message {
        cid: None,
        room: RoomName::lobby(),
        id,
        time: 1_700_000_000_000 + id,
        from: Nick::parse("mallory").unwrap(),
        kind: MessageKind::Normal,
        text,
        history: false,
    };
    let empty = encode(&msg(String::new())).len();
    let mut text = format!("huge {id} ");
    text.push_str(&"x".repeat(len - empty - text.len()));
    let record = encode(&msg(text));
    assert_eq!(record.len(), len);
    record
}

/// The flood, then the typed lines it receives (`say` texts) sent on `typed`, each echoed so
/// the client shows it as delivered.
async fn flood(listener: TcpListener, typed: mpsc::Sender<String>) {
    let (mut conn, nick) = common::accept_hello(&listener, 77).await;
    let nick = Nick::parse(&nick).unwrap();
    let lobby = RoomName::lobby();
    let welcome = ServerMsg::Welcome {
        session: 1,
        nick: nick.clone(),
        fingerprint: chatao_proto::Fingerprint::example("you"),
        server: "hostile".into(),
        limits: Limits { max_text_bytes: 4000, rate_per_sec: 5, burst: 5 },
        rooms: Vec::new(),
    };
    let join = ServerMsg::Join {
        room: lobby.clone(),
        nick: nick.clone(),
        fingerprint: chatao_proto::Fingerprint::example("x"),
    };
    for m in [welcome, join] {
        conn.write_record(&encode(&m)).await.unwrap();
    }
    let mut id = 1;
    for _ in 0..HUGE_MESSAGES {
        conn.write_record(&huge_record(id, MAX_SERVER_RECORD)).await.unwrap();
        id += 1;
    }
    let said = |id: u64, from: &str, text: String| ServerMsg::Message {
        cid: None,
        room: lobby.clone(),
        id,
        time: 1_700_000_000_000 + id,
        from: Nick::parse(from).unwrap(),
        kind: MessageKind::Normal,
        text,
        history: false,
    };
    for n in 0..CONVERSATIONS {
        let pm = ServerMsg::Private {
            cid: None,
            id,
            time: 1_700_000_000_000 + id,
            from: Nick::parse(&format!("stranger{n}")).unwrap(),
            to: nick.clone(),
            kind: MessageKind::Normal,
            text: format!("hello {n}"),
        };
        conn.write_record(&encode(&pm)).await.unwrap();
        id += 1;
    }
    let lines = format!("lines start{}", "\n".repeat(LINES));
    conn.write_record(&encode(&said(id, "mallory", lines))).await.unwrap();
    id += 1;
    conn.write_record(&encode(&said(id, "mallory", "flood done".into()))).await.unwrap();
    id += 1;
    while let Ok(Some(record)) = conn.read_record().await {
        if let Ok(ClientMsg::Say { cid, room, text }) = decode_client(&record) {
            let mut echo = said(id, nick.as_str(), text.clone());
            if let ServerMsg::Message { cid: c, room: r, .. } = &mut echo {
                *c = cid;
                *r = RoomName::parse(&room).unwrap_or_else(|_| RoomName::lobby());
            }
            id += 1;
            let _ = conn.write_record(&encode(&echo)).await;
            let _ = typed.send(text).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_server_cannot_exhaust_the_full_screen_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (typed_tx, mut typed) = mpsc::channel(4);
    let server = tokio::spawn(flood(listener, typed_tx));
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        "exec '{bin}' {ip} {port} alice --key-dir '{dir}/alice' --log-file '{dir}/alice.log'",
        bin = env!("CARGO_BIN_EXE_chatao"),
        ip = addr.ip(),
        port = addr.port(),
        dir = dir.path().display(),
    );
    let tmux = Tmux::start(&command, 100, 30).await;
    let pid = tmux.pid().await;

    // The flood is over when its last message shows. The thousand conversations left the
    // buffers the client allows (256): #lobby and the last 255, from stranger745 on.
    let screen =
        tmux.wait_within("the flood", FLOOD_DEADLINE, |s| s.contains("mallory │ flood done")).await;
    assert!(screen.contains("1:#lobby │ act: 2:stranger745(1!) 3:stranger746(1!)"), "{screen}");
    // The message of 120,001 lines (240 kB of `\n` in JSON) ends with its fold row: 10,000
    // lines kept.
    let fold = format!("… {} more lines, ", LINES + 1 - 10_000);
    assert!(screen.contains(&fold) && screen.contains("not kept (client limit)"), "{screen}");
    let rss = status_kb(pid, "VmRSS");
    let peak = status_kb(pid, "VmHWM");
    eprintln!("after the flood: VmRSS {rss} kB, VmHWM {peak} kB");
    assert!(
        rss < RSS_LIMIT_KB,
        "{HUGE_MESSAGES} messages of {MAX_SERVER_RECORD} bytes left the client at {rss} kB \
         resident (peak {peak} kB), over {RSS_LIMIT_KB} kB"
    );

    // Still responsive: a typed line goes out and comes back.
    tmux.type_text("still here").await;
    tmux.keys(&["Enter"]).await;
    let got = tokio::time::timeout(DEADLINE, typed.recv()).await.unwrap().unwrap();
    assert_eq!(got, "still here");
    tmux.wait_for("alice │ still here").await;

    tmux.keys(&["C-c"]).await;
    server.abort();
}
