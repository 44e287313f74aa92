//! Key packages with the real server, real sockets, real SQLite and real MLS key packages (made
//! by the client's engine, `chatao_e2e`): every upload is checked before anything is kept
//! (garbage, oversize, truncated, another ciphersuite, another key's credential, too many at
//! once are refused with an error and leave nothing behind); a valid package is kept and
//! handed out as uploaded; a flood of uploads from one key keeps at most the per-key count and
//! writes only the rows it adds (and deletes only those it replaces), counted by triggers on
//! the table; a restart over a table holding more than the bounds loads the newest within
//! them and deletes the rest.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chatao_proto::{ClientMsg, ErrorCode, ServerMsg};
use chatao_testkit::{TestClient, TestServer};
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, KeyPackage, MlsMessageOut, SignatureScheme,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

const LIMIT: Duration = Duration::from_secs(30);

/// The Chatao secret of test identity `n` (as `chatao_testkit::fixed_keypair` makes it).
fn secret(n: u8) -> [u8; 32] {
    let mut s = [0x42u8; 32];
    s[1] = n;
    s
}

fn keypair(n: u8) -> chatao_transport::Keypair {
    chatao_transport::Keypair::from_secret(secret(n))
}

/// `count` genuine key packages of identity `n`, base64, as the client uploads them.
fn real_packages(n: u8, count: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let fp = keypair(n).public().fingerprint();
    let mut e2e = chatao_e2e::E2e::open(dir.path(), &secret(n), &fp).unwrap();
    e2e.key_packages(count).unwrap().iter().map(|p| B64.encode(p)).collect()
}

/// A key package of identity `n` whose credential is genuine (the XEdDSA proof binds its MLS
/// key to `n`'s fingerprint) but built for `suite`.
fn package_for_suite(n: u8, suite: Ciphersuite) -> String {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let identity = chatao_e2e::make_credential(&secret(n), signer.public()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(identity).into(),
        signature_key: signer.public().into(),
    };
    let bundle = KeyPackage::builder().build(suite, &provider, &signer, credential).unwrap();
    B64.encode(MlsMessageOut::from(bundle.key_package().clone()).to_bytes().unwrap())
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.limits.rate_per_sec = 0).await
}

async fn upload_error(c: &mut TestClient, packages: Vec<String>) -> (ErrorCode, String) {
    c.send(&ClientMsg::KeyPackages { packages }).await.unwrap();
    tokio::time::timeout(LIMIT, c.expect_error()).await.unwrap().unwrap()
}

/// Uploads and waits for the server to have handled it (a ping after it is answered after).
async fn upload(c: &mut TestClient, packages: Vec<String>) {
    c.send(&ClientMsg::KeyPackages { packages }).await.unwrap();
    c.send(&ClientMsg::Ping { token: 7 }).await.unwrap();
    let got = c.expect("pong", |m| matches!(m, ServerMsg::Pong { .. } | ServerMsg::Error { .. }));
    let got = tokio::time::timeout(LIMIT, got).await.unwrap().unwrap();
    assert!(matches!(got, ServerMsg::Pong { .. }), "upload refused: {got:?}");
}

/// `nick`'s next key package, or the error code.
async fn fetch(c: &mut TestClient, nick: &str) -> Result<String, ErrorCode> {
    c.send(&ClientMsg::FetchKeyPackage { nick: nick.into(), room: None }).await.unwrap();
    let got = c.expect("key_package", |m| {
        matches!(m, ServerMsg::KeyPackage { .. } | ServerMsg::Error { .. })
    });
    match tokio::time::timeout(LIMIT, got).await.unwrap().unwrap() {
        ServerMsg::KeyPackage { package, .. } => Ok(package),
        ServerMsg::Error { code, .. } => Err(code),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn invalid_key_packages_are_refused_with_an_error_and_leave_nothing_behind() {
    let server = server().await;
    let mut alice = TestClient::connect_with(server.addr, "alice", &keypair(1)).await.unwrap();
    let mut carol = TestClient::connect_with(server.addr, "carol", &keypair(3)).await.unwrap();
    let genuine = real_packages(1, 2);
    let bobs = real_packages(2, 1);
    let decoded = B64.decode(&genuine[0]).unwrap();
    assert!(decoded.len() < 1024, "a real key package is {} bytes", decoded.len());

    let truncated = B64.encode(&decoded[..decoded.len() - 10]);
    let mut trailing = decoded.clone();
    trailing.push(0);
    let mut flipped = decoded.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1; // inside the package's signature
    let other_suite =
        package_for_suite(1, Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519);
    let cases: Vec<(Vec<String>, ErrorCode, &str)> = vec![
        (vec!["".into()], ErrorCode::Invalid, "empty"),
        (vec!["not base64!".into()], ErrorCode::Invalid, "not base64"),
        (vec![B64.encode([7u8; 300])], ErrorCode::Invalid, "not an MLS message"),
        (vec![B64.encode(vec![0u8; 2049])], ErrorCode::TooLong, "over the limit"),
        (vec!["A".repeat(5_000)], ErrorCode::TooLong, "over the limit"),
        (vec![truncated], ErrorCode::Invalid, "not an MLS message"),
        (vec![B64.encode(&trailing)], ErrorCode::Invalid, "not an MLS message"),
        (vec![B64.encode(&flipped)], ErrorCode::Invalid, "do not verify"),
        (vec![other_suite], ErrorCode::Invalid, "ciphersuite"),
        // One good package does not carry a bad one in.
        (vec![genuine[0].clone(), bobs[0].clone()], ErrorCode::Invalid, "another key"),
        (vec![genuine[0].clone(); 17], ErrorCode::Invalid, "in one upload"),
    ];
    for (packages, want, words) in cases {
        let (code, message) = upload_error(&mut alice, packages).await;
        assert_eq!(code, want, "{message}");
        assert!(message.contains(words), "{message:?} should say {words:?}");
        assert!(message.starts_with("invalid key package"), "{message}");
    }
    assert_eq!(fetch(&mut carol, "alice").await, Err(ErrorCode::NoKeyPackage), "nothing kept");

    // The control: a package built like `other_suite` but of Chatao's ciphersuite is kept.
    upload(&mut alice, vec![package_for_suite(1, chatao_e2e::CIPHERSUITE)]).await;
    // Genuine packages are kept and handed out exactly as uploaded, oldest first.
    upload(&mut alice, genuine.clone()).await;
    let first = fetch(&mut carol, "alice").await.unwrap();
    assert_ne!(first, genuine[0]);
    assert_eq!(fetch(&mut carol, "alice").await.unwrap(), genuine[0]);
    assert_eq!(fetch(&mut carol, "alice").await.unwrap(), genuine[1]);
    // (A session may fetch 4 of one nickname a minute: another one asks.)
    let mut dave = TestClient::connect_with(server.addr, "dave", &keypair(4)).await.unwrap();
    assert_eq!(fetch(&mut dave, "alice").await.unwrap(), genuine[1], "the last is kept");
}

/// Counts every row change of `key_packages` by the server's own connection (triggers are
/// part of the schema, so they fire for every connection).
fn audit(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "CREATE TABLE audit (op TEXT NOT NULL);
         CREATE TRIGGER kp_ins AFTER INSERT ON key_packages BEGIN INSERT INTO audit VALUES ('i'); END;
         CREATE TRIGGER kp_del AFTER DELETE ON key_packages BEGIN INSERT INTO audit VALUES ('d'); END;
         CREATE TRIGGER kp_upd AFTER UPDATE ON key_packages BEGIN INSERT INTO audit VALUES ('u'); END;",
    )
    .unwrap();
}

/// (inserts, deletes, updates) so far.
fn changes(db: &Path) -> (usize, usize, usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let n = |op: &str| -> usize {
        conn.query_row("SELECT COUNT(*) FROM audit WHERE op = ?1", [op], |r| r.get::<_, i64>(0))
            .unwrap() as usize
    };
    (n("i"), n("d"), n("u"))
}

fn rows_of(db: &Path, fp: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT package FROM key_packages WHERE fingerprint = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([fp], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Waits (bounded) for the store to show `want`: the bus writes shortly after the hub.
async fn until_changes(db: &Path, want: (usize, usize, usize)) {
    let waited = tokio::time::timeout(LIMIT, async {
        loop {
            if changes(db) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "row changes {:?}, want {want:?}", changes(db));
}

#[tokio::test]
async fn a_flood_of_uploads_writes_only_the_rows_it_adds_and_keeps_at_most_the_cap() {
    let server = server().await;
    let fp = keypair(1).public().fingerprint();
    let mut alice = TestClient::connect_with(server.addr, "alice", &keypair(1)).await.unwrap();
    let mut carol = TestClient::connect_with(server.addr, "carol", &keypair(3)).await.unwrap();
    // The server is up (it answered), so its tables exist.
    let db = server.data_dir().join("chatao.db");
    audit(&db);
    let (uploads, k, cap) = (20, 5, 16);
    let all = real_packages(1, uploads * k);
    let mut batches = all.chunks(k);
    // One session may have 64 packages checked a minute: 12 uploads of 5, then refused with
    // nothing kept (the rows counted below include none of it).
    for batch in batches.by_ref().take(12) {
        upload(&mut alice, batch.to_vec()).await;
    }
    let (code, message) = upload_error(&mut alice, real_packages(1, k)).await;
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    // The same key on a new connection goes on.
    let mut again = TestClient::connect_with(server.addr, "alice2", &keypair(1)).await.unwrap();
    for batch in batches {
        upload(&mut again, batch.to_vec()).await;
    }
    // Each upload inserted its k rows and deleted only the ones it replaced beyond the cap:
    // writes proportional to what was accepted, never a rewrite of the key's set (which would
    // be 5 + 10 + 15 + 16 * 17 inserts).
    until_changes(&db, (uploads * k, uploads * k - cap, 0)).await;
    assert_eq!(rows_of(&db, &fp), all[all.len() - cap..], "the newest 16 are kept");
    // A fetch deletes the one row it takes, and hands out the oldest kept.
    assert_eq!(fetch(&mut carol, "alice").await.unwrap(), all[all.len() - cap]);
    until_changes(&db, (uploads * k, uploads * k - cap + 1, 0)).await;
    assert_eq!(rows_of(&db, &fp).len(), cap - 1);
}

#[tokio::test]
async fn a_restart_over_more_than_the_bounds_loads_the_newest_within_them_and_deletes_the_rest() {
    let server = server().await;
    let fp = keypair(1).public().fingerprint();
    {
        // alice's nickname is registered to her key (fetches go by nickname).
        let mut alice = TestClient::connect_with(server.addr, "alice", &keypair(1)).await.unwrap();
        alice.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        alice.read_to_end().await.unwrap();
    }
    // An older version's table: 30 rows for alice, numbered from 0, and an oversize one.
    let db = server.data_dir().join("chatao.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        for seq in 0..30 {
            conn.execute(
                "INSERT INTO key_packages (fingerprint, seq, package) VALUES (?1, ?2, ?3)",
                rusqlite::params![fp.as_str(), seq, format!("UEtf{seq:02}")],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO key_packages (fingerprint, seq, package) VALUES (?1, 99, ?2)",
            rusqlite::params![fp.as_str(), "A".repeat(14 * 1024)],
        )
        .unwrap();
    }
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    // Once it answers, the server has loaded its tables.
    let mut carol = TestClient::connect_with(server.addr, "carol", &keypair(3)).await.unwrap();
    let want: Vec<String> = (14..30).map(|seq| format!("UEtf{seq:02}")).collect();
    let rows = rows_of(&db, &fp);
    assert!(
        rows == want,
        "the newest 16 that fit are loaded, the rest deleted: {} rows",
        rows.len()
    );
    assert_eq!(fetch(&mut carol, "alice").await.unwrap(), "UEtf14");
    // New uploads continue after the largest stored number: they are the newest.
    let mut alice = TestClient::connect_with(server.addr, "alice", &keypair(1)).await.unwrap();
    let fresh = real_packages(1, 1);
    upload(&mut alice, fresh.clone()).await;
    let got = tokio::time::timeout(LIMIT, async {
        loop {
            let rows = rows_of(&db, &fp);
            if rows.last() == fresh.last() {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let mut want: Vec<String> = (15..30).map(|seq| format!("UEtf{seq:02}")).collect();
    want.extend(fresh);
    assert_eq!(got, want, "the fetched row is gone, the new one is the newest");
}

#[tokio::test]
async fn a_refused_upload_still_hands_out_the_welcomes_waiting_for_the_key() {
    let server = server().await;
    let bob_fp = keypair(2).public().fingerprint();
    {
        // bob registers his nickname once, then goes offline.
        let mut b = TestClient::connect_with(server.addr, "bob", &keypair(2)).await.unwrap();
        b.send(&ClientMsg::Quit { reason: None }).await.unwrap();
        b.read_to_end().await.unwrap();
    }
    let mut a = TestClient::connect_with(server.addr, "alice", &keypair(1)).await.unwrap();
    let create = ClientMsg::Create { room: "#sec".into(), e2e: true, open: false };
    a.until_history_end(&create, "#sec").await.unwrap();
    a.send(&ClientMsg::Commit {
        room: "#sec".into(),
        epoch: 0,
        body: "Q09NTUlU".into(),
        welcome: Some(chatao_proto::SealedWelcome {
            to: bob_fp.to_string(),
            body: "V0VMQw==".into(),
        }),
        adds: vec![bob_fp.to_string()],
        removes: vec![],
    })
    .await
    .unwrap();
    let committed = a.expect("commit", |m| matches!(m, ServerMsg::Sealed { .. }));
    tokio::time::timeout(LIMIT, committed).await.unwrap().unwrap();
    // bob's client uploads a package the server refuses (here: alice's): the welcome comes
    // anyway, with the error.
    let mut b = TestClient::connect_with(server.addr, "bob", &keypair(2)).await.unwrap();
    b.send(&ClientMsg::KeyPackages { packages: real_packages(1, 1) }).await.unwrap();
    let (mut invited, mut refused) = (false, false);
    while !(invited && refused) {
        let got = tokio::time::timeout(LIMIT, b.recv()).await.unwrap().unwrap();
        match got {
            ServerMsg::Invited { body, .. } => invited = body == "V0VMQw==",
            ServerMsg::Error { code, .. } => refused = code == ErrorCode::Invalid,
            _ => {}
        }
    }
}
