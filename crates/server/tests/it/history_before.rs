//! `history` with `before` (scrollback into the past) over real sockets: pages going back
//! return every message once, in id order, then an empty page; the memory tail and the store
//! give the same pages; a non-member is refused; a record without `since` is accepted.
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ErrorCode, ServerMsg};
use chatao_testkit::{TestClient, TestServer};

/// The page below `before`: its messages' `(id, text)` and its `history_end`'s count and
/// `before`.
async fn page(
    c: &mut TestClient,
    room: &str,
    before: u64,
    limit: u32,
) -> (Vec<(u64, String)>, u32) {
    let ask = ClientMsg::History {
        room: room.into(),
        since: 0,
        limit: Some(limit),
        before: Some(before),
    };
    let got = c.until_history_end(&ask, room).await.unwrap();
    let msgs = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Message { id, text, history: true, .. } => Some((*id, text.clone())),
            _ => None,
        })
        .collect();
    match got.last() {
        Some(ServerMsg::HistoryEnd { count, before: Some(b), .. }) => {
            assert_eq!(*b, before, "history_end carries the request's before");
            (msgs, *count)
        }
        other => panic!("a page ends with history_end and its before: {other:?}"),
    }
}

/// 300 messages, read back in pages of 100 from past the newest: 201-300, 101-200, 1-100,
/// then an empty page. `tail`: the room's memory tail holds them all (`history_on_join` 500)
/// or only the newest 50 (the store answers).
async fn pages_back(tail: usize) {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.history_on_join = tail;
    })
    .await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#past").await.unwrap();
    for i in 1..=300u64 {
        a.say_in("#past", &format!("m{i}")).await.unwrap();
    }
    a.expect_text("m300").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    b.join("#past").await.unwrap();
    let mut all = vec![];
    let mut before = 301;
    loop {
        let (msgs, count) = page(&mut b, "#past", before, 100).await;
        assert_eq!(count as usize, msgs.len());
        if msgs.is_empty() {
            break;
        }
        assert!(msgs.len() <= 100, "at most the limit");
        assert!(msgs.windows(2).all(|w| w[0].0 < w[1].0), "in id order");
        assert!(msgs.last().unwrap().0 < before, "below before");
        before = msgs[0].0;
        let mut older = msgs;
        older.extend(all);
        all = older;
        assert!(all.len() <= 300, "never more than were sent (a page repeated?)");
    }
    let want: Vec<(u64, String)> = (1..=300).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(all, want, "every message exactly once, in order (tail {tail})");
    // `before` past the room's last id is the newest page; 1 is an empty one.
    let (msgs, _) = page(&mut b, "#past", u64::MAX, 3).await;
    assert_eq!(msgs.iter().map(|m| m.0).collect::<Vec<_>>(), [298, 299, 300]);
    assert_eq!(page(&mut b, "#past", 1, 100).await, (vec![], 0));
}

#[tokio::test]
async fn pages_before_from_the_store_return_every_message_once_then_an_empty_page() {
    pages_back(50).await;
}

#[tokio::test]
async fn pages_before_from_the_memory_tail_return_every_message_once_then_an_empty_page() {
    pages_back(500).await;
}

#[tokio::test]
async fn history_before_is_refused_to_a_non_member_and_capped() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#closed").await.unwrap();
    a.say_in("#closed", "secret").await.unwrap();
    a.expect_text("secret").await.unwrap();
    let mut b = TestClient::connect(server.addr, "bob").await.unwrap();
    let ask =
        ClientMsg::History { room: "#closed".into(), since: 0, limit: None, before: Some(10) };
    b.send(&ask).await.unwrap();
    assert_eq!(b.expect_error().await.unwrap().0, ErrorCode::NotInRoom);
    // A limit above the server's cap (500) is cut to it.
    let (msgs, _) = page(&mut a, "#closed", 2, u32::MAX).await;
    assert_eq!(msgs, [(1, "secret".to_string())]);
}

#[test]
fn a_history_record_without_since_or_before_still_decodes() {
    let old = chatao_proto::decode_client(br##"{"type":"history","room":"#a","since":4}"##);
    assert!(matches!(old, Ok(ClientMsg::History { since: 4, before: None, .. })), "{old:?}");
    let back = chatao_proto::decode_client(br##"{"type":"history","room":"#a","before":9}"##);
    assert!(matches!(back, Ok(ClientMsg::History { since: 0, before: Some(9), .. })), "{back:?}");
    let end = chatao_proto::encode(&ServerMsg::HistoryEnd {
        room: chatao_proto::RoomName::parse("#a").unwrap(),
        count: 0,
        before: None,
    });
    assert!(!String::from_utf8_lossy(&end).contains("before"), "skipped when None");
}
