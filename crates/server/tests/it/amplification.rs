//! Issue 15 item 14, `history` amplification: replies a client asks for are charged by their
//! size against its output budget, and while the budget is overdrawn the server handles
//! nothing more from that client (it is read more slowly, never refused). Real server, real
//! sockets; the assertions are about the order of events on the attacker's connection, not
//! about time.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{ClientMsg, ServerMsg};
use chatao_testkit::{TestClient, TestServer};

const STORED: usize = 500;
const REQUESTS: usize = 50;
const HONEST: usize = 20;

#[tokio::test]
async fn a_history_flood_gets_one_budget_of_replies_and_the_honest_pair_keeps_chatting() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let server = TestServer::start_with(|c| {
            // The command rate out of the way (and a large backlog bound): only the output
            // budget holds the attacker back. It refills at 1 byte a second, so once overdrawn
            // the attacker stays overdrawn for the whole test.
            c.limits.rate_per_sec = 1000;
            c.limits.burst = 1000;
            c.history_on_join = 1;
            c.output_bytes_per_sec = 1;
            c.output_burst_bytes = 64 * 1024;
        })
        .await;
        let mut filler = TestClient::connect(server.addr, "filler").await.unwrap();
        let body = "x".repeat(3000);
        for i in 0..STORED {
            filler.say(&format!("{i} {body}")).await.unwrap();
        }
        let last = format!("{} {body}", STORED - 1);
        filler.expect_text(&last).await.unwrap();
        drop(filler);

        let mut attacker = TestClient::connect(server.addr, "mallory").await.unwrap();
        // The lobby's replay with `welcome` (history_on_join = 1 message).
        let end = attacker
            .expect("the welcome replay", |m| matches!(m, ServerMsg::HistoryEnd { .. }))
            .await
            .unwrap();
        assert!(matches!(end, ServerMsg::HistoryEnd { count: 1, .. }));
        let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
        let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
        // 50 requests of a full history (each reply about 1.5 MB), then a ping, all at once.
        let ask = ClientMsg::History { room: "#lobby".into(), since: 0, limit: None, before: None };
        for _ in 0..REQUESTS {
            attacker.send(&ask).await.unwrap();
        }
        attacker.send(&ClientMsg::Ping { token: 7 }).await.unwrap();
        // The first reply is within the budget when it starts: it goes out whole.
        let first = attacker
            .expect("the first reply", |m| matches!(m, ServerMsg::HistoryEnd { .. }))
            .await
            .unwrap();
        assert!(matches!(first, ServerMsg::HistoryEnd { count, .. } if count as usize == STORED));

        // The honest pair chats meanwhile; every message is delivered.
        for i in 0..HONEST {
            let text = format!("honest {i}");
            alice.say(&text).await.unwrap();
            bob.expect_text(&text).await.unwrap();
            alice.expect_text(&text).await.unwrap();
        }
        // The attacker is in #lobby too: live messages are not charged and reach it. Up to the
        // last honest message it gets no second reply and no pong (the ping waits in order
        // behind the held requests). Without the budget the session reads the next request as
        // soon as the first reply is written, so a second replay comes before the first
        // honest message.
        let mut replies = 0;
        let mut pongs = 0;
        let mut honest = 0;
        while honest < HONEST {
            match attacker.recv().await.unwrap() {
                ServerMsg::HistoryEnd { .. } => replies += 1,
                ServerMsg::Pong { .. } => pongs += 1,
                ServerMsg::Message { text, history: false, .. } if text.starts_with("honest ") => {
                    assert_eq!(text, format!("honest {honest}"), "live messages in order");
                    honest += 1;
                }
                _ => {}
            }
        }
        assert_eq!((replies, pongs), (0, 0), "overdrawn: nothing more handled for the attacker");
        server.stop().await.unwrap();
    })
    .await
    .expect("test timed out");
}
