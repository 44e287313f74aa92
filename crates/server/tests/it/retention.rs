//! Retention with the real server (issue 15 item 11): pruning is incremental and indexed, in
//! bounded steps between delivery batches. A room over its count keeps exactly its newest
//! messages; an honest pair keeps chatting, every message delivered in order, while a pass works
//! through 200,000 old rows, which takes many steps (counted in the store's `meta`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use chatao_proto::{ClientMsg, ServerMsg};
use chatao_server::store::{DB_FILE, PRUNE_CHUNK, Store};
use chatao_testkit::{TestClient, TestServer, fixed_keypair};
use tokio::time::timeout;

/// Inserts `per_room` messages in each of `rooms` (ids from 1, `time` in ms) with the real
/// schema, in one transaction, before the server starts.
fn preload(dir: &Path, rooms: &[String], per_room: u64, time: u64) {
    drop(Store::open(dir).unwrap());
    let mut db = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO messages (room, id, time, sender, kind, text)
                 VALUES (?1, ?2, ?3, 'old', 0, 'old')",
            )
            .unwrap();
        for room in rooms {
            for id in 1..=per_room {
                insert.execute(rusqlite::params![room, id as i64, time as i64]).unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

fn db(dir: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Retention steps taken so far.
fn steps(db: &rusqlite::Connection) -> i64 {
    count(db, "SELECT COALESCE((SELECT value FROM meta WHERE key = 'prune_steps'), 0)")
}

/// Polls the store (the server writes it; there is no event to wait on) until `done`.
async fn until(
    db: &rusqlite::Connection,
    what: &str,
    done: impl Fn(&rusqlite::Connection) -> bool,
) {
    timeout(Duration::from_secs(60), async {
        while !done(db) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn a_room_over_its_count_keeps_exactly_the_newest_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let total = 2 * PRUNE_CHUNK as u64 + 5_000;
    preload(dir.path(), &["#big".to_string()], total, 1);
    let server = TestServer::start_in(dir, |c| {
        c.limits.rate_per_sec = 0;
        c.retention.max_messages = 100;
    })
    .await;
    let db = db(server.data_dir());
    until(&db, "the count limit", |db| {
        count(db, "SELECT COUNT(*) FROM messages WHERE room = '#big'") == 100
    })
    .await;
    let (lo, hi): (i64, i64) = db
        .query_row("SELECT MIN(id), MAX(id) FROM messages WHERE room = '#big'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((lo as u64, hi as u64), (total - 99, total));
    assert!(steps(&db) >= 3, "{} steps for {} deletes", steps(&db), total - 100);
    let mut a = TestClient::connect(server.addr, "alice").await.unwrap();
    a.join("#big").await.unwrap();
    a.say_in("#big", "new").await.unwrap();
    let m = a.expect_text("new").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { id, .. } if id == total + 1), "{m:?}");
}

#[tokio::test]
async fn an_honest_pair_keeps_chatting_in_order_across_a_pass_over_200000_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rooms: Vec<String> = (0..200).map(|i| format!("#old{i}")).collect();
    // 200 rooms of 1,000 messages from 1970: all past the age limit.
    preload(dir.path(), &rooms, 1_000, 1);
    let server = TestServer::start_in(dir, |c| {
        c.limits.rate_per_sec = 0;
        c.retention.max_age = Some(Duration::from_secs(86_400));
    })
    .await;
    let db = db(server.data_dir());
    let mut a = TestClient::connect_with(server.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut b = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    a.join("#pair").await.unwrap();
    b.join("#pair").await.unwrap();
    // Chat until the pass is over (and at least 50 messages), each one awaited by bob.
    let mut sent = 0u64;
    let mut last_id = 0;
    while sent < 50 || count(&db, "SELECT COUNT(*) FROM messages WHERE sender = 'old'") > 0 {
        assert!(sent < 100_000, "the pass never ended");
        sent += 1;
        let text = format!("m{sent}");
        a.say_in("#pair", &text).await.unwrap();
        let m = b
            .expect(
                "the next message of #pair",
                |m| matches!(m, ServerMsg::Message { room, .. } if room.as_str() == "#pair"),
            )
            .await
            .unwrap();
        let ServerMsg::Message { id, text: got, .. } = m else { unreachable!() };
        assert_eq!(got, text, "in order, none lost");
        assert!(id > last_id, "ids increase");
        last_id = id;
    }
    let n = steps(&db);
    assert!(n >= (200_000 / PRUNE_CHUNK) as i64, "200,000 deletes in {n} steps");
    // Every room emptied by age still remembers its last id.
    let old: i64 =
        count(&db, "SELECT COUNT(*) FROM rooms WHERE room LIKE '#old%' AND last_id = 1000");
    assert_eq!(old, 200);
    let ok = b
        .until_history_end(&ClientMsg::Join { room: "#old7".into(), since: Some(0) }, "#old7")
        .await
        .unwrap();
    assert!(!ok.iter().any(|m| matches!(m, ServerMsg::Message { history: true, .. })));
}
