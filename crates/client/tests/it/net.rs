//! The network actor against a scripted server: pacing to the announced limits, and messages
//! still queued when the connection drops (or the server shuts down) come back as `Unsent`
//! instead of vanishing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatao_client::net::{self, Closed, ConnectOptions, NetEvent};
use chatao_client::trust::Trust;
use chatao_proto::{ClientMsg, Limits, Nick, ServerMsg, decode_client, encode};
use chatao_testkit::fixed_keypair;
use chatao_transport::Keypair;
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(20);

/// A server that welcomes one client with `limits`, reads `read` records after hello (with
/// their arrival times), then closes.
async fn scripted(
    limits: Limits,
    read: usize,
) -> (u16, tokio::task::JoinHandle<Vec<(Instant, ClientMsg)>>) {
    scripted_then(limits, read, None).await
}

/// As [`scripted`], saying `last` before it closes.
async fn scripted_then(
    limits: Limits,
    read: usize,
    last: Option<ServerMsg>,
) -> (u16, tokio::task::JoinHandle<Vec<(Instant, ClientMsg)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = chatao_transport::accept(stream, &fixed_keypair(5)).await.unwrap();
        let hello = conn.read_record().await.unwrap().unwrap();
        assert!(matches!(decode_client(&hello).unwrap(), ClientMsg::Hello { .. }));
        let welcome = ServerMsg::Welcome {
            session: 1,
            nick: Nick::parse("alice").unwrap(),
            fingerprint: chatao_proto::Fingerprint::example("x"),
            server: "scripted".into(),
            limits,
            rooms: Vec::new(),
        };
        conn.write_record(&encode(&welcome)).await.unwrap();
        let mut got = vec![];
        while got.len() < read {
            let r = conn.read_record().await.unwrap().unwrap();
            got.push((Instant::now(), decode_client(&r).unwrap()));
        }
        if let Some(last) = last {
            conn.write_record(&encode(&last)).await.unwrap();
        }
        got
    });
    (port, task)
}

/// Options for a fresh key as `alice` on loopback `port`, trusting whatever key it presents.
pub(crate) fn options(port: u16) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".into(),
        port,
        nick: "alice".into(),
        keys: Arc::new(Keypair::generate().unwrap()),
        trust: Trust {
            host_port: format!("127.0.0.1:{port}"),
            known_servers: None,
            expected: None,
        },
    }
}

fn say(i: usize) -> ClientMsg {
    ClientMsg::Say { cid: None, room: "#lobby".into(), text: format!("line {i}") }
}

#[tokio::test]
async fn says_are_paced_to_the_announced_rate() {
    tokio::time::timeout(LIMIT, async {
        let (port, server) =
            scripted(Limits { max_text_bytes: 100, rate_per_sec: 10, burst: 2 }, 6).await;
        let (_w, handle, _events) = net::connect(&options(port)).await.unwrap();
        let start = Instant::now();
        for i in 0..6 {
            handle.send(say(i)).await.unwrap();
        }
        let got = server.await.unwrap();
        let texts: Vec<ClientMsg> = got.iter().map(|(_, m)| m.clone()).collect();
        assert_eq!(texts, (0..6).map(say).collect::<Vec<_>>(), "all sent, in order");
        // Burst of 2 at once, then 10 per second: the 6th goes out at least 0.35 s later.
        let last = got.last().unwrap().0.duration_since(start);
        assert!(last >= Duration::from_millis(350), "paced: {last:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn messages_queued_when_the_connection_drops_are_reported_unsent() {
    tokio::time::timeout(LIMIT, async {
        // One message a second and a burst of one: the server reads one, then hangs up while
        // the rest wait for the pacer.
        let (port, server) =
            scripted(Limits { max_text_bytes: 100, rate_per_sec: 1, burst: 1 }, 1).await;
        let (_w, handle, mut events) = net::connect(&options(port)).await.unwrap();
        for i in 0..4 {
            handle.send(say(i)).await.unwrap();
        }
        let got = server.await.unwrap();
        assert_eq!(got[0].1, say(0));
        let mut unsent = None;
        loop {
            match events.recv().await.unwrap() {
                NetEvent::Unsent(msgs) => unsent = Some(msgs),
                NetEvent::Closed(Closed::Lost(_)) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(unsent.unwrap(), (1..4).map(say).collect::<Vec<_>>());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn messages_queued_when_the_server_shuts_down_are_reported_unsent() {
    tokio::time::timeout(LIMIT, async {
        let bye = ServerMsg::Bye {
            code: Some(chatao_proto::ErrorCode::Shutdown),
            reason: "restarting".into(),
        };
        let (port, server) =
            scripted_then(Limits { max_text_bytes: 100, rate_per_sec: 1, burst: 1 }, 1, Some(bye))
                .await;
        let (_w, handle, mut events) = net::connect(&options(port)).await.unwrap();
        for i in 0..3 {
            handle.send(say(i)).await.unwrap();
        }
        server.await.unwrap();
        let mut unsent = None;
        loop {
            match events.recv().await.unwrap() {
                NetEvent::Unsent(msgs) => unsent = Some(msgs),
                NetEvent::Closed(Closed::Bye { code, .. }) => {
                    assert_eq!(code, Some(chatao_proto::ErrorCode::Shutdown));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            unsent.unwrap(),
            (1..3).map(say).collect::<Vec<_>>(),
            "kept for the next server"
        );
    })
    .await
    .unwrap();
}
