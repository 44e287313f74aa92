//! Issue 17: a member list is sent in records of at most 16 KiB. A small room (fewer than 100
//! members: its joiner gets the whole list) whose 95 members are away with 300-byte reasons
//! of quotes (doubled by JSON) is about 70 KB of list: one record would pass the 64 KiB every
//! client accepts, and the project's own client gave up on it ("record over the limit").
//! Over real sockets, against the real server: the raw records of a join and of a `who` are
//! each at most 16 KiB and carry `more` until the last, and the client's network actor
//! (the code `chatao` runs) hands the UI the whole list once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_client::net::{self, NetEvent};
use chatao_proto::members::MEMBERS_RECORD_BYTES;
use chatao_proto::{ClientMsg, ServerMsg, decode_server};
use chatao_testkit::{TestClient, TestServer};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);
const AWAY: usize = 95;

/// The `members` records of `room` that `c` reads up to the list's last record, each with its
/// size, after sending `ask`.
async fn raw_list(c: &mut TestClient, ask: &ClientMsg, room: &str) -> Vec<(usize, ServerMsg)> {
    c.send(ask).await.unwrap();
    let mut out = Vec::new();
    loop {
        let record = c.conn.read_record().await.unwrap().unwrap();
        let msg = decode_server(&record).unwrap();
        if let ServerMsg::Members { room: r, more, .. } = &msg
            && r.as_str() == room
        {
            let last = !more;
            out.push((record.len(), msg));
            if last {
                return out;
            }
        }
    }
}

fn check_records(records: &[(usize, ServerMsg)], want: usize) {
    assert!(records.len() > 1, "one record of {} bytes", records[0].0);
    let mut n = 0;
    for (i, (len, msg)) in records.iter().enumerate() {
        assert!(*len <= MEMBERS_RECORD_BYTES, "record {i} is {len} bytes");
        let ServerMsg::Members { members, more, .. } = msg else { unreachable!() };
        assert_eq!(*more, i + 1 < records.len(), "record {i}: more");
        n += members.len();
    }
    assert_eq!(n, want);
}

#[tokio::test]
async fn a_long_member_list_comes_in_records_of_16_kib_and_the_client_gets_it_whole() {
    timeout(LIMIT, async {
        let server = TestServer::start_with(|c| {
            c.max_connections_per_ip = 1000;
            c.handshakes_per_minute = 0;
        })
        .await;
        let reason = "\"".repeat(300);
        let mut away = Vec::new();
        for i in 0..AWAY {
            let mut c = TestClient::connect(server.addr, &format!("away{i:02}")).await.unwrap();
            c.join("#long").await.unwrap();
            c.send(&ClientMsg::Away { reason: Some(reason.clone()) }).await.unwrap();
            away.push(c);
        }
        // Everyone's away is applied once the last one's reply to a later request came.
        for c in &mut away {
            let _ =
                raw_list(c, &ClientMsg::Who { room: "#long".into(), after: None }, "#long").await;
        }

        // A raw joiner: the join's list and a `who` page, in records of at most 16 KiB.
        let mut raw = TestClient::connect(server.addr, "rawjoiner").await.unwrap();
        let join = ClientMsg::Join { room: "#long".into(), since: None };
        check_records(&raw_list(&mut raw, &join, "#long").await, AWAY + 1);
        let who = ClientMsg::Who { room: "#long".into(), after: None };
        check_records(&raw_list(&mut raw, &who, "#long").await, AWAY + 1);

        // The client's network actor: one whole list.
        let options = super::net::options(server.addr.port());
        let (_welcome, handle, mut events) = net::connect(&options).await.unwrap();
        handle.send(ClientMsg::Join { room: "#long".into(), since: None }).await.unwrap();
        let members = loop {
            match events.recv().await.expect("the actor ended") {
                NetEvent::Msg(ServerMsg::Members { room, members, more, .. })
                    if room.as_str() == "#long" =>
                {
                    assert!(!more);
                    break members;
                }
                NetEvent::Closed(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        };
        assert_eq!(members.len(), AWAY + 2, "the whole list, in one piece");
        assert!(members.iter().filter(|m| m.away.as_deref() == Some(&reason)).count() == AWAY);
    })
    .await
    .expect("timed out");
}
