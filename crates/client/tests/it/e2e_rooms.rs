//! End-to-end encrypted rooms with the real `chatao` binary (line mode, plain and JSON) against
//! a real server on loopback, real MLS (openmls) and real SQLite:
//!
//! - three members chat; the server's database, its logs and a recording proxy on the
//!   server's side of the encryption (what the server reads and writes, in clear) never contain
//!   the plaintext (with a plain-room message as the positive control);
//! - a removed member's client, even holding a copy of its MLS state, cannot decrypt what is
//!   said after its removal;
//! - a late joiner cannot decrypt what was said before it joined;
//! - a forged member slipped in by a modified server (a key package substituted in its SQLite
//!   database) is detected and refused, loudly;
//! - an E2E room's history replays after a client restart; the state files are 0600;
//! - a member who parts stays in the group until a member removes it (the server's `leave`
//!   removes nobody); a member removed while away keeps its group until its own /part;
//! - a server that turns an invite-only room open in its database gets nobody added;
//! - a garbage commit from a member does not freeze the room's membership (commit counts);
//! - the E2E layer's own words are marked apart from server notices (line mode and JSON);
//! - several processes of one key (README's quick start on one machine) all chat: the first
//!   holds the E2E state, the others say once who does and how to get their own.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chatao_testkit::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};

const LIMIT: Duration = Duration::from_secs(30);

/// Everything the server logs at debug level while the returned guard is held, for the "no
/// plaintext in the logs" check. The subscriber is this thread's default, not the process's: the
/// test runs on tokio's current-thread runtime, so the test server's tasks log here, and the
/// other tests in this binary are not captured.
fn capture_server_log() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || LogWriter(writer.clone()))
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.limits.rate_per_sec = 0).await
}

/// A recording proxy on the server's side of the encryption: it holds the server's key (the
/// test server's fixed key), so clients take it for the server; it finds each client's own key
/// in its key directory under `keys` and uses it to reach the real server, so the server takes
/// it for the client. It records every record both ways in clear: exactly what the server reads
/// and writes. (A plain-room message in the recording is the positive control.)
async fn recording_proxy(server: SocketAddr, keys: PathBuf) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = Arc::new(Mutex::new(Vec::new()));
    let rec = record.clone();
    tokio::spawn(async move {
        let server_keys = chatao_testkit::fixed_keypair(200);
        while let Ok((client, _)) = listener.accept().await {
            let (rec, keys, server_keys) = (rec.clone(), keys.clone(), server_keys.clone());
            tokio::spawn(async move {
                let Ok(mut down) = chatao_transport::accept(client, &server_keys).await else {
                    return;
                };
                let fp = down.remote_key().fingerprint();
                let Some(client_keys) = client_key(&keys, &fp) else { return };
                let Ok(stream) = TcpStream::connect(server).await else { return };
                let Ok(mut up) = chatao_transport::connect(stream, &client_keys, |_| Ok(())).await
                else {
                    return;
                };
                down.set_max_record(16 << 20);
                up.set_max_record(16 << 20);
                // Records come without their newline; put it back to forward them.
                let line = |r: bytes::Bytes| {
                    let mut v = r.to_vec();
                    v.push(b'\n');
                    bytes::Bytes::from(v)
                };
                loop {
                    tokio::select! {
                        r = down.read_record() => match r {
                            Ok(Some(r)) => {
                                rec.lock().unwrap().extend_from_slice(&r);
                                if up.write_record(&line(r)).await.is_err() { break }
                            }
                            _ => break,
                        },
                        r = up.read_record() => match r {
                            Ok(Some(r)) => {
                                rec.lock().unwrap().extend_from_slice(&r);
                                if down.write_record(&line(r)).await.is_err() { break }
                            }
                            _ => break,
                        },
                    }
                }
                let _ = up.shutdown().await;
                let _ = down.shutdown().await;
            });
        }
    });
    (addr, record)
}

/// The key pair in `KEYS/*/key.pem` whose fingerprint is `fp`.
fn client_key(keys: &Path, fp: &str) -> Option<chatao_transport::Keypair> {
    std::fs::read_dir(keys).ok()?.flatten().find_map(|d| {
        let k = chatao_transport::keys::load(&d.path().join("key.pem")).ok()?;
        (k.public().fingerprint() == fp).then_some(k)
    })
}

/// One `chatao` process in line mode.
struct Chatao {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines<BufReader<ChildStdout>>,
    key_dir: PathBuf,
    json: bool,
}

impl Chatao {
    async fn start(dir: &Path, addr: SocketAddr, nick: &str, extra: &[&str]) -> Chatao {
        Chatao::start_in(&dir.join(nick), addr, nick, extra).await
    }

    /// As [`Chatao::start`], with the key (and by default the E2E state) in `key_dir`.
    async fn start_in(key_dir: &Path, addr: SocketAddr, nick: &str, extra: &[&str]) -> Chatao {
        let key_dir = key_dir.to_owned();
        let target = [addr.ip().to_string(), addr.port().to_string()];
        let mut child = chatao_testkit::chatao(
            env!("CARGO_BIN_EXE_chatao"),
            &[&target[0], &target[1]],
            nick,
            &key_dir,
        )
        .args(extra)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let json = extra.contains(&"--json");
        let mut c = Chatao { child, stdin, out, key_dir, json };
        c.wait(if json { "\"welcome\"" } else { "connected to" }).await;
        c
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The lines up to and including the first containing `needle`.
    async fn until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = vec![];
        let found = tokio::time::timeout(LIMIT, async {
            loop {
                match self.out.next_line().await.unwrap() {
                    Some(line) => {
                        eprintln!(
                            "[{}] {line}",
                            self.key_dir.file_name().unwrap().to_string_lossy()
                        );
                        let hit = line.contains(needle);
                        seen.push(line);
                        if hit {
                            return true;
                        }
                    }
                    None => return false,
                }
            }
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "no line containing {needle:?}; got:\n{}",
            seen.join("\n")
        );
        seen
    }

    async fn wait(&mut self, needle: &str) -> String {
        self.until(needle).await.pop().unwrap()
    }

    /// Waits for a line containing each of `needles`, in any order; returns them in that order.
    async fn wait_all(&mut self, needles: &[&str]) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; needles.len()];
        while found.iter().any(Option::is_none) {
            let missing: Vec<&str> =
                needles.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| *n).collect();
            let line = tokio::time::timeout(LIMIT, self.out.next_line())
                .await
                .unwrap_or_else(|_| panic!("none of {missing:?} arrived"))
                .unwrap()
                .unwrap_or_else(|| panic!("output ended before {missing:?}"));
            eprintln!("[{}] {line}", self.key_dir.file_name().unwrap().to_string_lossy());
            for (n, f) in needles.iter().zip(found.iter_mut()) {
                if f.is_none() && line.contains(n) {
                    *f = Some(line.clone());
                }
            }
        }
        found.into_iter().flatten().collect()
    }

    async fn quit(mut self) {
        self.send("/quit").await;
        drop(self.stdin.take());
        let status = tokio::time::timeout(LIMIT, self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status:?}");
    }

    /// The MLS state directory (one server, one identity under `KEY_DIR/e2e`).
    fn state_dir(&self) -> PathBuf {
        let e2e = self.key_dir.join("e2e");
        let server = std::fs::read_dir(&e2e).unwrap().next().unwrap().unwrap().path();
        std::fs::read_dir(server).unwrap().next().unwrap().unwrap().path()
    }

    fn keypair(&self) -> chatao_transport::Keypair {
        chatao_transport::keys::load_or_generate(&self.key_dir).unwrap().0
    }
}

/// Every byte of the server's data directory (database, WAL).
fn data_bytes(dir: &Path) -> Vec<u8> {
    let mut all = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(path).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// alice creates `#sec` and adds each of `others`, who each see the welcome.
async fn room_with(alice: &mut Chatao, others: &mut [&mut Chatao], open: bool) {
    alice.send(if open { "/create --e2e #sec --open" } else { "/create --e2e #sec" }).await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    for o in others.iter_mut() {
        let nick = o.key_dir.file_name().unwrap().to_string_lossy().into_owned();
        // Its key packages went out before anything typed: once the server answers this, they
        // are there.
        o.send(&format!("/whois {nick}")).await;
        let answer = if o.json { "\"whois\"".to_owned() } else { format!("{nick}: key") };
        o.wait(&answer).await;
        alice.send(&format!("/invite {nick}")).await;
        alice.wait(&format!("{nick} (SHA256:")).await;
        o.wait("added you to the END-TO-END ENCRYPTED room #sec").await;
        o.wait("#sec is END-TO-END ENCRYPTED").await;
        o.send("/switch #sec").await;
    }
}

/// The sealed bodies of `room` with id > `after`, from the server's database.
fn sealed_after(db: &Path, after: u64) -> Vec<(u64, u64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db.join("chatao.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, time, body FROM sealed WHERE room = '#sec' AND id > ?1 AND kind = 2 ORDER BY id")
        .unwrap();
    stmt.query_map([after as i64], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, String>(2)?))
    })
    .unwrap()
    .map(|r| {
        let (id, time, body) = r.unwrap();
        (id, time, base64::engine::general_purpose::STANDARD.decode(body).unwrap())
    })
    .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Feeds `msgs` to a copy of an MLS state under ids it has not seen; returns how many decrypted.
fn decryptable(
    state: &Path,
    keys: &chatao_transport::Keypair,
    msgs: &[(u64, u64, Vec<u8>)],
) -> usize {
    let mut e2e =
        chatao_e2e::E2e::open(state, keys.secret_bytes(), &keys.public().fingerprint()).unwrap();
    let base = e2e.last_id("#sec").unwrap_or(0) + 1_000_000;
    msgs.iter()
        .filter(|(id, time, body)| {
            matches!(
                e2e.process("#sec", base + id, *time, body),
                Ok(chatao_e2e::Event::Application { .. })
            )
        })
        .count()
}

#[tokio::test]
async fn three_members_chat_and_the_server_never_sees_the_plaintext() {
    let (server_log, _log_guard) = capture_server_log();
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, recorded) = recording_proxy(server.addr, dir.path().to_path_buf()).await;
    let mut alice = Chatao::start(dir.path(), proxy, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), proxy, "bob", &[]).await;
    let mut carol = Chatao::start(dir.path(), proxy, "carol", &["--json"]).await;
    room_with(&mut alice, &mut [&mut bob, &mut carol], false).await;

    alice.send("ALPHA-7f3e secret from alice").await;
    bob.send("BRAVO-91ac secret from bob").await;
    carol.send("/me CHARLIE-2b5d waves secretly").await;
    // Line mode shows E2E messages as ordinary ones; JSON mode too.
    let got = alice.wait_all(&["BRAVO-91ac", "CHARLIE-2b5d"]).await;
    assert!(got[0].contains("#sec <bob> BRAVO-91ac"), "{got:?}");
    assert!(got[1].contains("#sec * carol CHARLIE-2b5d"), "{got:?}");
    bob.wait_all(&["ALPHA-7f3e", "CHARLIE-2b5d"]).await;
    let got = carol.wait_all(&["ALPHA-7f3e", "BRAVO-91ac"]).await;
    for (line, from) in got.iter().zip(["alice", "bob"]) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!((v["type"].as_str(), v["room"].as_str()), (Some("message"), Some("#sec")));
        assert_eq!(v["from"].as_str(), Some(from));
        assert!(v["id"].as_u64().unwrap() > 1);
    }
    // The positive control: a plain-room message does reach the database in clear.
    alice.send("/say #lobby PLAIN-CONTROL-55aa").await;
    bob.wait("PLAIN-CONTROL-55aa").await;

    let stored = data_bytes(server.data_dir());
    assert!(contains(&stored, "PLAIN-CONTROL-55aa"), "the control must be found");
    let logs = server_log.lock().unwrap().clone();
    assert!(!logs.is_empty(), "the server logged something");
    let wire = recorded.lock().unwrap().clone();
    assert!(contains(&wire, "PLAIN-CONTROL-55aa"), "the proxy sees what the server sees");
    for secret in ["ALPHA-7f3e", "BRAVO-91ac", "CHARLIE-2b5d"] {
        assert!(!contains(&stored, secret), "{secret} in the server's database");
        assert!(!contains(&logs, secret), "{secret} in the server's logs");
        assert!(!contains(&wire, secret), "{secret} in what the server read or wrote");
    }
    for c in [alice, bob, carol] {
        c.quit().await;
    }
}

#[tokio::test]
async fn a_removed_member_cannot_decrypt_what_is_said_after() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    let mut carol = Chatao::start(dir.path(), server.addr, "carol", &[]).await;
    room_with(&mut alice, &mut [&mut bob, &mut carol], false).await;
    // Keep a copy of carol's MLS state as it is before her removal: a client that refused to
    // forget it must still be unable to read what follows.
    bob.send("warm-up").await;
    carol.wait("warm-up").await;
    let kept = dir.path().join("carol-state-copy");
    copy_dir(&carol.state_dir(), &kept);
    let kept2 = dir.path().join("carol-state-copy-2");
    copy_dir(&kept, &kept2);
    let last_before = sealed_after(server.data_dir(), 0).last().unwrap().0;
    alice.send("before the removal").await;
    carol.wait("before the removal").await;
    let before = sealed_after(server.data_dir(), last_before);
    let last_before = before.last().unwrap().0;

    alice.send("/remove carol").await;
    alice.wait("carol (SHA256:").await;
    carol.wait("you were removed from the end-to-end encrypted room #sec").await;
    alice.send("SECRET-AFTER-REMOVAL one").await;
    bob.wait("SECRET-AFTER-REMOVAL one").await;
    bob.send("SECRET-AFTER-REMOVAL two").await;
    alice.wait("SECRET-AFTER-REMOVAL two").await;
    // carol's client shows nothing of it: everything up to a later lobby message.
    alice.send("/say #lobby marker after").await;
    let seen = carol.until("marker after").await;
    assert!(!seen.iter().any(|l| l.contains("SECRET-AFTER-REMOVAL")), "{seen:?}");

    let after = sealed_after(server.data_dir(), last_before);
    assert_eq!(after.len(), 2, "the two messages said after the removal are stored");
    // The copy does read what was said before the removal (the check can succeed), and none
    // of what was said after.
    assert_eq!(decryptable(&kept, &carol.keypair(), &before), 1, "the control decrypts");
    assert_eq!(decryptable(&kept2, &carol.keypair(), &after), 0, "carol's old state reads none");
    for c in [alice, bob, carol] {
        c.quit().await;
    }
}

#[tokio::test]
async fn a_late_joiner_cannot_decrypt_what_was_said_before() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    room_with(&mut alice, &mut [&mut bob], true).await;
    alice.send("EARLY-SECRET from alice").await;
    bob.wait("EARLY-SECRET from alice").await;
    let early = sealed_after(server.data_dir(), 0);
    assert_eq!(early.len(), 1);

    // dave asks to join the open room: a member's client adds him.
    let mut dave = Chatao::start(dir.path(), server.addr, "dave", &[]).await;
    dave.send("/join #sec").await;
    let seen = dave.until("added you to the END-TO-END ENCRYPTED room #sec").await;
    dave.wait("#sec is END-TO-END ENCRYPTED").await;
    alice.send("LATER-WORDS for dave too").await;
    let more = dave.until("LATER-WORDS for dave too").await;
    assert!(
        !seen.iter().chain(&more).any(|l| l.contains("EARLY-SECRET")),
        "dave must not see what was said before he joined"
    );
    // dave's own state cannot decrypt the earlier ciphertext either, even if handed it.
    let copy = dir.path().join("dave-state-copy");
    copy_dir(&dave.state_dir(), &copy);
    assert_eq!(decryptable(&copy, &dave.keypair(), &early), 0);
    for c in [alice, bob, dave] {
        c.quit().await;
    }
}

#[tokio::test]
async fn a_forged_member_slipped_in_by_a_modified_server_is_detected() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    // bob and mallory connect once: their nicknames are registered and their key packages
    // uploaded. Then they leave.
    let bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    let mallory = Chatao::start(dir.path(), server.addr, "mallory", &[]).await;
    let bob_fp = bob.keypair().public().fingerprint();
    let mallory_fp = mallory.keypair().public().fingerprint();
    bob.quit().await;
    mallory.quit().await;
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    alice.send("/create --e2e #sec").await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    alice.quit().await;

    // The "modified server": its operator swaps bob's key packages for mallory's in the
    // database, so that whoever adds bob adds mallory's key instead.
    let data = server.data_dir().to_owned();
    let server = server.restart(|_| {}).await;
    let _ = &data;
    {
        let conn = rusqlite::Connection::open(server.data_dir().join("chatao.db")).unwrap();
        let n = conn
            .execute(
                "UPDATE key_packages SET package = (SELECT package FROM key_packages WHERE fingerprint = ?1 LIMIT 1) WHERE fingerprint = ?2",
                [mallory_fp.as_str(), bob_fp.as_str()],
            )
            .unwrap();
        assert!(n > 0);
    }
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    alice.send("/switch #sec").await;
    alice.send("/invite bob").await;
    let warning = alice.wait("WARNING").await;
    assert!(warning.contains("FORGED"), "{warning}");
    assert!(
        warning.contains(mallory_fp.as_str()) && warning.contains(bob_fp.as_str()),
        "{warning}"
    );
    assert!(warning.contains("bob was NOT added to #sec"), "{warning}");
    alice.send("/safety").await;
    let lines = alice.until("MLS key").await;
    assert!(lines.iter().any(|l| l.contains("1 members")), "{lines:?}");
    alice.quit().await;

    // Second trick: the server now says the nickname bob belongs to mallory's key, and hands
    // out mallory's genuine key package for "bob". The package is consistent with the key the
    // server names, but alice's client pinned bob's key the first time: it refuses.
    let server = server.restart(|_| {}).await;
    {
        let conn = rusqlite::Connection::open(server.data_dir().join("chatao.db")).unwrap();
        conn.execute(
            "UPDATE nicks SET fingerprint = ?1 WHERE folded = 'bob'",
            [mallory_fp.as_str()],
        )
        .unwrap();
    }
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    alice.send("/switch #sec").await;
    alice.send("/invite bob").await;
    let warning = alice.wait("WARNING").await;
    assert!(
        warning.contains(&format!("the server says bob has the key {mallory_fp}")),
        "{warning}"
    );
    assert!(warning.contains(&format!("pinned to {bob_fp}")), "{warning}");
    alice.wait("bob was NOT added to #sec").await;
    alice.quit().await;
    // Nothing was committed: the room is still at epoch 0 with alice alone.
    let conn = rusqlite::Connection::open(server.data_dir().join("chatao.db")).unwrap();
    let epoch: i64 = conn
        .query_row("SELECT epoch FROM e2e_rooms WHERE room = '#sec'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(epoch, 0);
}

#[tokio::test]
async fn a_server_that_opens_an_invite_only_room_gets_nobody_in() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    alice.send("/create --e2e #sec").await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    alice.quit().await;
    // The "modified server" turns the room open in its database, so that it asks alice's
    // client to add whoever joins (here carol; it could be a key of its own).
    let server = server.restart(|_| {}).await;
    {
        let conn = rusqlite::Connection::open(server.data_dir().join("chatao.db")).unwrap();
        assert_eq!(
            conn.execute("UPDATE e2e_rooms SET open = 1 WHERE room = '#sec'", []).unwrap(),
            1
        );
    }
    let server = server.restart(|c| c.limits.rate_per_sec = 0).await;
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    let mut carol = Chatao::start(dir.path(), server.addr, "carol", &[]).await;
    carol.send("/whois carol").await;
    carol.wait("carol: key").await;
    carol.send("/join #sec").await;
    carol.wait("asked the members of #sec").await;
    // alice's group says invite-only: her client does not act on the request.
    let line = alice.wait("asks to join the invite-only room #sec").await;
    assert!(line.starts_with("[e2e] ") && line.contains("not added"), "{line}");
    alice.send("/say #lobby marker").await;
    let seen = carol.until("marker").await;
    assert!(!seen.iter().any(|l| l.contains("added you")), "{seen:?}");
    alice.quit().await;
    carol.quit().await;
    let conn = rusqlite::Connection::open(server.data_dir().join("chatao.db")).unwrap();
    let commits: i64 = conn
        .query_row("SELECT COUNT(*) FROM sealed WHERE room = '#sec' AND kind = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(commits, 0, "nobody was added");
}

#[tokio::test]
async fn history_replays_after_a_client_restart_and_the_state_is_private() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    room_with(&mut alice, &mut [&mut bob], false).await;
    alice.send("FIRST said while bob was here").await;
    bob.wait("FIRST said while bob was here").await;
    bob.send("SECOND from bob").await;
    alice.wait("SECOND from bob").await;
    bob.quit().await;
    alice.send("THIRD said while bob was away").await;
    alice.wait("THIRD said while bob was away").await;

    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    let got = bob
        .wait_all(&[
            "FIRST said while bob was here",
            "SECOND from bob",
            "THIRD said while bob was away",
        ])
        .await;
    assert!(got[0].contains("(history) #sec <alice>"), "{got:?}");
    assert!(got[1].contains("(history) #sec <bob>"), "{got:?}");
    assert!(got[2].contains("#sec <alice> THIRD"), "{got:?}");
    // And the room goes on.
    bob.send("/switch #sec").await;
    bob.send("FOURTH after the restart").await;
    alice.wait("FOURTH after the restart").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let state = bob.state_dir();
        let mut files = 0;
        let mut stack = vec![state];
        while let Some(d) = stack.pop() {
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o077, 0, "{d:?}");
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files += 1;
                    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                    assert_eq!(mode, 0o600, "{p:?}");
                }
            }
        }
        assert!(files > 0);
    }
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn a_member_who_parts_is_removed_on_her_own_signed_word() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    let mut carol = Chatao::start(dir.path(), server.addr, "carol", &[]).await;
    room_with(&mut alice, &mut [&mut bob, &mut carol], false).await;
    // carol's client tells the group, inside MLS, that she leaves, then parts; the first
    // member's client to read it commits her removal. (The server's `leave` alone removes
    // nobody: clients act only on the leaver's own signed message.)
    carol.send("/part #sec").await;
    carol.wait("carol left #sec (left the room)").await;
    alice.wait("carol left the end-to-end encrypted room #sec (signed by their key)").await;
    let removed = bob.wait("was removed by").await;
    assert!(removed.contains("#sec: carol (SHA256:"), "{removed}");
    alice.wait("was removed by").await;
    alice.send("/safety").await;
    let lines = alice.until("MLS key").await;
    assert!(lines.iter().any(|l| l.contains("2 members")), "{lines:?}");
    alice.send("AFTER-CAROL-LEFT").await;
    bob.wait("AFTER-CAROL-LEFT").await;
    alice.send("/say #lobby marker").await;
    let seen = carol.until("marker").await;
    assert!(!seen.iter().any(|l| l.contains("AFTER-CAROL-LEFT")), "{seen:?}");
    // She cannot come back on her own.
    carol.send("/join #sec").await;
    carol.wait("not_invited").await;
    for c in [alice, bob, carol] {
        c.quit().await;
    }
}

#[tokio::test]
async fn a_garbage_commit_from_a_member_does_not_freeze_the_room() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    let mut carol = Chatao::start(dir.path(), server.addr, "carol", &[]).await;
    room_with(&mut alice, &mut [&mut bob], false).await;
    // A second connection with bob's key (a member by key) sends garbage as a commit, at the
    // room's commit count (1: the commit that added bob).
    let mut rogue = chatao_testkit::TestClient::connect_with(server.addr, "rogue", &bob.keypair())
        .await
        .unwrap();
    rogue
        .until_history_end(
            &chatao_proto::ClientMsg::Join { room: "#sec".into(), since: None },
            "#sec",
        )
        .await
        .unwrap();
    rogue
        .send(&chatao_proto::ClientMsg::Commit {
            room: "#sec".into(),
            epoch: 1,
            body: "Z2FyYmFnZQ==".into(),
            welcome: None,
            adds: vec![],
            removes: vec![],
        })
        .await
        .unwrap();
    rogue
        .expect(
            "the garbage commit",
            |m| matches!(m, chatao_proto::ServerMsg::Sealed { body, .. } if body == "Z2FyYmFnZQ=="),
        )
        .await
        .unwrap();
    alice.wait("cannot decrypt message").await;
    // The room's membership still moves: alice adds carol, who reads what follows.
    carol.send("/whois carol").await;
    carol.wait("carol: key").await;
    alice.send("/invite carol").await;
    alice.wait("carol (SHA256:").await;
    carol.wait("added you to the END-TO-END ENCRYPTED room #sec").await;
    carol.wait("#sec is END-TO-END ENCRYPTED").await;
    alice.send("AFTER-THE-GARBAGE").await;
    carol.wait("AFTER-THE-GARBAGE").await;
    bob.wait("AFTER-THE-GARBAGE").await;
    // And bob (who counted the garbage too) can remove her again.
    bob.send("/remove carol").await;
    alice.wait("was removed by bob").await;
    for c in [alice, bob, carol] {
        c.quit().await;
    }
}

#[tokio::test]
async fn the_e2e_layers_words_cannot_be_confused_with_a_server_notice() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &["--json"]).await;
    alice.send("/create --e2e #sec --open").await;
    let line = alice.wait("#sec is END-TO-END ENCRYPTED").await;
    assert!(line.starts_with("[e2e] "), "{line}");
    // bob asks to join the open room: the server answers with a notice, marked as the server's;
    // his client's own words come as events of type e2e.
    bob.send("/join #sec").await;
    let notice = bob.wait("asked the members").await;
    assert!(notice.contains(r#""type":"notice""#), "{notice}");
    let added = bob.wait("added you to the END-TO-END ENCRYPTED room #sec").await;
    assert!(added.contains(r#""type":"e2e""#) && added.contains(r#""warning":false"#), "{added}");
    let line = alice.wait("asks to join the open room #sec").await;
    assert!(line.starts_with("[e2e] "), "{line}");
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn a_member_removed_while_away_learns_it_on_return_and_can_be_added_again() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    room_with(&mut alice, &mut [&mut bob], false).await;
    bob.quit().await;
    alice.send("/remove bob").await;
    alice.wait("was removed by alice").await;
    alice.send("WHILE-BOB-WAS-OUT").await;
    alice.wait("WHILE-BOB-WAS-OUT").await;

    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    let seen = bob.until("you are no longer a member of #sec").await;
    assert!(!seen.iter().any(|l| l.contains("WHILE-BOB-WAS-OUT")), "{seen:?}");
    // Only the server's word: the group is kept until bob himself lets it go.
    bob.send("/part #sec").await;
    bob.wait("you left the end-to-end encrypted room #sec").await;
    bob.send("/whois bob").await;
    bob.wait("bob: key").await;
    alice.send("/invite bob").await;
    // The inviter is named from the welcome's signer, by the nickname bob pinned for that key.
    let added = bob.wait("added you to the END-TO-END ENCRYPTED room #sec").await;
    assert!(added.starts_with("[e2e] alice (SHA256:"), "{added}");
    alice.send("WELCOME-BACK").await;
    let seen = bob.until("WELCOME-BACK").await;
    assert!(!seen.iter().any(|l| l.contains("WHILE-BOB-WAS-OUT")), "{seen:?}");
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn a_member_away_for_more_than_one_replay_catches_up_on_everything() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Chatao::start(dir.path(), server.addr, "alice", &[]).await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    room_with(&mut alice, &mut [&mut bob], false).await;
    bob.quit().await;
    // More than the 500 messages one replay carries.
    let lines: String = (1..=510).map(|i| format!("away-{i:03}\n")).collect();
    alice.send(lines.trim_end()).await;
    alice.wait("away-510").await;
    let mut bob = Chatao::start(dir.path(), server.addr, "bob", &[]).await;
    let seen = bob.until("away-510").await;
    let got = seen.iter().filter(|l| l.contains("<alice> away-")).count();
    assert_eq!(got, 510, "every message, once");
    alice.quit().await;
    bob.quit().await;
}

/// README's quick start on one machine: three `chatao` processes with one key (one key
/// directory) and three nicknames all chat in plain rooms. The first holds the E2E state; the
/// second and third say once, before anything else, which process holds it and how to give
/// them their own (`--e2e-dir`), refuse what needs it instead of half doing it, and are never
/// seen joining and leaving at once. With `--e2e-dir`, a fourth uses E2E rooms.
#[tokio::test]
async fn several_processes_of_one_key_chat_and_only_one_holds_the_e2e_state() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let mut alice = Chatao::start_in(&key, server.addr, "alice", &[]).await;
    alice.send("/create --e2e #sec").await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    alice.send("/switch #lobby").await;
    let holder = format!("in use by chatao process {}", alice.child.id().unwrap());

    let mut bob = Chatao::start_in(&key, server.addr, "bob", &[]).await;
    let note = bob.out.next_line().await.unwrap().unwrap();
    assert!(note.starts_with("[e2e] end-to-end encrypted rooms are off in this chatao"), "{note}");
    assert!(note.contains(&holder), "{note}");
    assert!(note.contains("Plain rooms work as usual"), "{note}");
    assert!(note.contains(&format!("--e2e-dir {}", key.join("e2e-bob").display())), "{note}");
    let mut carol = Chatao::start_in(&key, server.addr, "carol", &["--json"]).await;
    let note = carol.out.next_line().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&note).unwrap();
    assert_eq!(v["type"], "e2e", "{note}");
    assert!(v["text"].as_str().unwrap().contains(&holder), "{note}");

    // All three chat in the lobby.
    bob.send("hi from bob").await;
    carol.send("hi from carol").await;
    alice.send("hi from alice").await;
    alice.wait_all(&["<bob> hi from bob", "<carol> hi from carol"]).await;
    bob.wait_all(&["<alice> hi from alice", "<carol> hi from carol"]).await;
    carol.wait_all(&["hi from alice", "hi from bob"]).await;

    // Without the state, an E2E room is said to be unreadable here, and creating one is
    // refused by the client (an E2E room without its group would be broken).
    bob.send("/join #sec").await;
    bob.wait("#sec is end-to-end encrypted: its messages cannot be read or sent here").await;
    bob.send("/create --e2e #other").await;
    bob.wait("#other: not created").await;
    bob.send("/switch #lobby").await;
    bob.send("bob again").await;
    let seen = bob.until("<bob> bob again").await;
    alice.wait("<bob> bob again").await;
    assert!(!seen.iter().any(|l| l.contains("are off in this chatao")), "said once: {seen:?}");
    bob.send("/list").await;
    let rooms = bob.wait("* rooms:").await;
    assert!(!rooms.contains("#other"), "{rooms}");

    // With a state of its own, a process of the same key uses E2E rooms.
    let own = key.join("e2e-dave");
    let own = own.to_str().unwrap();
    let mut dave = Chatao::start_in(&key, server.addr, "dave", &["--e2e-dir", own]).await;
    dave.send("/create --e2e #dave").await;
    dave.wait("#dave is END-TO-END ENCRYPTED").await;
    dave.send("sealed words").await;
    dave.wait("<dave> sealed words").await;

    // Nobody was seen leaving: no process failed after its welcome.
    let seen = alice.until("dave joined #lobby").await;
    assert!(!seen.iter().any(|l| l.contains("left #lobby")), "{seen:?}");
    for c in [dave, carol, bob, alice] {
        c.quit().await;
    }
}

/// A process of a key whose E2E state another process holds still invites into a plain
/// room: `/invite` there is the room's invite list (the server's `invite`), which needs no
/// E2E state; into an E2E room it is refused here, with the reason.
#[tokio::test]
async fn without_the_e2e_state_invite_still_works_in_a_plain_room() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let mut alice = Chatao::start_in(&key, server.addr, "alice", &[]).await;
    alice.send("/create --e2e #sec").await;
    alice.wait("#sec is END-TO-END ENCRYPTED").await;
    let mut bob = Chatao::start_in(&key, server.addr, "bob", &[]).await;
    bob.wait("end-to-end encrypted rooms are off in this chatao").await;
    let mut carol = Chatao::start(dir.path(), server.addr, "carol", &[]).await;

    bob.send("/join #club").await;
    bob.wait("bob joined #club").await;
    bob.send("/mode +i").await;
    bob.wait("bob made #club invite-only (+i)").await;
    carol.send("/join #club").await;
    carol.wait("invite_only").await;
    bob.send("/invite carol").await;
    bob.wait("carol was invited to #club by bob").await;
    carol.send("/join #club").await;
    bob.wait("carol joined #club").await;

    // Into the E2E room (bob is in it, unable to read it): refused by bob's client.
    bob.send("/join #sec").await;
    bob.wait("#sec is end-to-end encrypted: its messages cannot be read or sent here").await;
    bob.send("/invite carol").await;
    bob.wait("/invite carol into #sec: not done: end-to-end encrypted rooms are off here").await;
    for c in [carol, bob, alice] {
        c.quit().await;
    }
}
