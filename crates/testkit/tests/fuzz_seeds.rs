//! Every fuzz target's seeds (fuzz/seeds/<target>/), replayed through the same harness the
//! fuzzer runs (the `chatao-fuzz` library, built here on stable without libFuzzer), so a
//! crash once found and added as a seed stays fixed in the normal test suite.
//!
//! `write_seeds` (ignored) writes the generated seeds: real encodings captured from a real
//! server session over loopback, from the MLS engine and from the key code, beside the
//! hand-written malformed ones. Run it after a wire change:
//! `cargo test -p chatao-testkit --test fuzz_seeds -- --ignored write_seeds`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chatao_fuzz::TARGETS;
use chatao_proto::{ClientMsg, ServerMsg, decode_server, encode};
use chatao_testkit::{STEP, TestClient, TestServer, fixed_keypair};
use chatao_transport::Keypair;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The seed files of `target`, sorted.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .map(|p| {
            let name = p.file_name().expect("a file name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("a seed file"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_replays_its_seeds() {
    for (target, harness) in TARGETS {
        let seeds = seeds(target);
        assert!(seeds.len() >= 3, "{target} has {} seeds, want at least 3", seeds.len());
        for (name, data) in &seeds {
            eprintln!("{target}/{name}");
            harness(data);
        }
    }
    chatao_fuzz::e2e::reset();
}

#[test]
fn every_target_has_a_binary_and_every_seed_folder_a_target() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        let bin = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        assert!(bin.exists(), "{} is missing", bin.display());
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} not in fuzz/Cargo.toml"
        );
    }
    for entry in std::fs::read_dir(fuzz_dir().join("seeds")).expect("fuzz/seeds") {
        let name = entry.expect("an entry").file_name().to_string_lossy().into_owned();
        assert!(TARGETS.iter().any(|(t, _)| *t == name), "seeds/{name} belongs to no target");
    }
}

/// The generated seeds are what they claim: the valid ones (`ok_*`) are accepted, so the
/// fuzzer starts past the decoders' first checks.
#[test]
fn valid_seeds_are_accepted() {
    for (name, data) in seeds("cluster") {
        // Every JSON object is some kind (a stored mute has only optional fields), so only the
        // valid ones are checked.
        let kinds = chatao_server::cluster::decode_wire(&data).expect("round trip");
        assert!(kinds > 0 || !name.starts_with("ok_"), "cluster/{name} decodes as no kind");
    }
    for (name, data) in seeds("pkcs8") {
        let f = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(f.path(), &data).expect("written");
        let loaded = chatao_transport::keys::load(f.path());
        assert_eq!(loaded.is_ok(), name.starts_with("ok_"), "pkcs8/{name}: {loaded:?}");
    }
    for (name, data) in seeds("settings") {
        let text = String::from_utf8(data).expect("UTF-8");
        let parsed = chatao_server::settings::parse_file(Path::new("x.toml"), &text);
        assert_eq!(parsed.is_ok(), name.starts_with("ok_"), "settings/{name}");
    }
    for (name, data) in seeds("access_list") {
        let f = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(f.path(), &data).expect("written");
        let (keys, errors) =
            chatao_server::access::scan_list(f.path(), chatao_server::access::List::Allow);
        assert_eq!(errors.is_empty(), name.starts_with("ok_"), "access_list/{name}: {errors:?}");
        assert!(!name.starts_with("ok_") || !keys.is_empty(), "access_list/{name} has no key");
    }
    for (name, data) in seeds("known_servers") {
        let f = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(f.path(), &data).expect("written");
        let loaded = chatao_transport::known_servers::KnownServers::load(f.path());
        assert_eq!(loaded.is_ok(), name.starts_with("ok_"), "known_servers/{name}: {loaded:?}");
    }
    {
        use chatao_fuzz::e2e::{OWN_SECRET, PEER_SECRET, ROOM};
        let fp = |s: [u8; 32]| Keypair::from_secret(s).public().fingerprint();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut e2e = chatao_e2e::E2e::open(dir.path(), &OWN_SECRET, &fp(OWN_SECRET)).unwrap();
        e2e.create_group(ROOM, false).unwrap();
        let (_, add) = seeds("e2e").into_iter().find(|(n, _)| n == "ok_add_key_package").unwrap();
        e2e.add(ROOM, &add[1..], &fp(PEER_SECRET)).expect("the seed's key package is added");
    }
    for (name, data) in seeds("server_records") {
        if name.starts_with("ok_") {
            // A chunk stream of sealed records, each a server message.
            for chunk in chatao_fuzz::chunks(&data) {
                let chatao_fuzz::Chunk::Sealed(record) = chunk else { panic!("{name}: raw") };
                decode_server(record).unwrap_or_else(|e| panic!("server_records/{name}: {e}"));
            }
        }
    }
}

/// Writes one seed file.
fn put(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("the seeds folder");
    std::fs::write(dir.join(name), data).expect("a seed written");
}

/// A stream that keeps a copy of everything read from it.
struct Recorder<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().expect("not poisoned").extend_from_slice(&new);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One chunk of the `frame`/`server_records` input format: tag, little-endian length, bytes.
fn chunk(sealed: bool, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("a chunk under 64 KiB");
    let mut out = vec![u8::from(sealed)];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads records until the `pong` answering `token`, returning them all (the pong included).
async fn records_until_pong(c: &mut TestClient, token: u64) -> Vec<Vec<u8>> {
    c.send(&ClientMsg::Ping { token }).await.expect("ping sent");
    let mut out = Vec::new();
    loop {
        let record = tokio::time::timeout(STEP, c.conn.read_record())
            .await
            .expect("a record in time")
            .expect("a record")
            .expect("the connection open");
        let done = matches!(decode_server(&record), Ok(ServerMsg::Pong { token: t }) if t == token);
        out.push(record.to_vec());
        if done {
            return out;
        }
    }
}

/// A real server session over loopback: the bytes the client read during the handshake and
/// welcome (the `client_handshake` seed), then records of most kinds (the `server_records`
/// seeds).
async fn server_seeds() {
    let server = TestServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stream = TcpStream::connect(server.addr).await.expect("connected");
    let stream = Recorder { inner: stream, seen: seen.clone() };
    let conn = chatao_transport::connect(stream, &fixed_keypair(1), |_| Ok(())).await.expect("hs");
    let handshake_len = seen.lock().expect("not poisoned").len();
    let mut conn = conn;
    conn.write_record(&encode(&ClientMsg::Hello { nick: "alice".into() })).await.expect("hello");
    let welcome = conn.read_record().await.expect("read").expect("welcome");
    assert!(matches!(decode_server(&welcome), Ok(ServerMsg::Welcome { .. })));
    let captured = seen.lock().expect("not poisoned").clone();
    put(
        "client_handshake",
        "ok_real_server_handshake",
        &[[0u8].as_slice(), &captured[..handshake_len]].concat(),
    );
    put("client_handshake", "ok_real_server_welcome", &[[0u8].as_slice(), &captured].concat());
    // Malformed: another version, a message 2 cut short, a length prefix past the 64 KiB bound.
    let mut other_version = captured[..handshake_len].to_vec();
    other_version[7] ^= 0x7f;
    put("client_handshake", "other_version", &[[0u8].as_slice(), &other_version].concat());
    put(
        "client_handshake",
        "short_message_2",
        &[[0u8].as_slice(), &captured[..handshake_len - 5]].concat(),
    );
    put("client_handshake", "huge_length", &[1, 0xff, 0xff, 0, 1, 2, 3]);
    drop(conn);

    let mut alice =
        TestClient::connect_with(server.addr, "alice", &fixed_keypair(1)).await.unwrap();
    let mut bob = TestClient::connect_with(server.addr, "bob", &fixed_keypair(2)).await.unwrap();
    let mut lobby = records_until_pong(&mut alice, 1).await;
    let say =
        |room: &str, text: &str, cid| ClientMsg::Say { cid, room: room.into(), text: text.into() };
    for m in [
        say("#lobby", "hello \u{1b}[2J world", Some(7)),
        ClientMsg::Me { cid: None, room: "#lobby".into(), text: "waves".into() },
        ClientMsg::Msg { cid: Some(9), to: "bob".into(), text: "psst".into() },
        ClientMsg::Join { room: "#rust".into(), since: None },
        ClientMsg::Topic { room: "#rust".into(), text: Some("borrowck\nlines".into()) },
        say("#rust", "line one\nline two", None),
        say("#nowhere", "refused", Some(11)),
        ClientMsg::Who { room: "#lobby".into(), after: None },
        ClientMsg::List { after: None },
        ClientMsg::Whois { nick: "bob".into() },
        ClientMsg::History { room: "#lobby".into(), since: 0, limit: Some(10), before: None },
        ClientMsg::Away { reason: Some("lunch".into()) },
        ClientMsg::Nick { nick: "bob".into() },
    ] {
        alice.send(&m).await.expect("sent");
    }
    lobby.extend(records_until_pong(&mut alice, 2).await);
    bob.send(&ClientMsg::Quit { reason: Some("bye".into()) }).await.expect("quit");
    let mut quit = Vec::new();
    while let Ok(Some(r)) = bob.conn.read_record().await {
        quit.push(r.to_vec());
    }
    let mut all: Vec<u8> = Vec::new();
    for (i, r) in lobby.iter().enumerate() {
        put("server_records", &format!("ok_record_{i:02}"), &chunk(true, r));
        all.extend(chunk(true, r));
    }
    put("server_records", "ok_session", &all);
    let bye: Vec<u8> = quit.iter().flat_map(|r| chunk(true, r)).collect();
    put("server_records", "ok_quit", &bye);
    server.stop().await.expect("stopped");
}

/// Genuine MLS inputs: a commit and an application message of a real group, a welcome, key
/// packages (of the key the `e2e` harness expects, and of another), a credential.
fn e2e_seeds() {
    use chatao_fuzz::e2e::{OWN_SECRET, PEER_SECRET};
    let fp = |s: [u8; 32]| Keypair::from_secret(s).public().fingerprint();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let other = [0xe3u8; 32];
    let mut peer =
        chatao_e2e::E2e::open(&dir.path().join("p"), &PEER_SECRET, &fp(PEER_SECRET)).unwrap();
    let mut third = chatao_e2e::E2e::open(&dir.path().join("t"), &other, &fp(other)).unwrap();
    let _ = OWN_SECRET;
    let op = |op: u8, body: &[u8]| [[op].as_slice(), body].concat();
    let package = peer.key_packages(1).unwrap().remove(0);
    put("e2e", "ok_add_key_package", &op(2, &package));
    let foreign = third.key_packages(1).unwrap().remove(0);
    put("e2e", "add_package_of_another_key", &op(2, &foreign));
    // A real group of `third` with `peer`: its commit, welcome and a message.
    third.create_group("#fuzz", true).unwrap();
    let pending = third.add("#fuzz", &package, &fp(PEER_SECRET)).unwrap();
    put("e2e", "ok_process_commit", &op(0, &pending.commit));
    put("e2e", "ok_join_welcome", &op(1, pending.welcome.as_deref().expect("a welcome")));
    third.process("#fuzz", 1, 0, &pending.commit).unwrap();
    let message = third.encrypt("#fuzz", b"hello").unwrap();
    put("e2e", "ok_process_application", &op(0, &message));
    put("e2e", "process_key_package", &op(0, &package));
    let credential = peer.credential().to_vec();
    let len = u16::try_from(credential.len()).unwrap().to_be_bytes();
    put(
        "e2e",
        "ok_credential",
        &[[3u8].as_slice(), &len, &credential, &peer.signature_key()].concat(),
    );
    put("e2e", "truncated_package", &op(2, &package[..package.len() / 2]));
    put("e2e", "empty_process", &[0]);
}

/// Real key files and pins, made by the key code.
fn file_seeds() {
    let key = fixed_keypair(1);
    put("pkcs8", "ok_to_pem", key.to_pem().as_bytes());
    let pem = key.to_pem();
    put("pkcs8", "ok_crlf", pem.replace('\n', "\r\n").as_bytes());
    let body: String = pem.lines().nth(1).expect("a body line").to_owned();
    put(
        "pkcs8",
        "truncated_body",
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", &body[..40])
            .as_bytes(),
    );
    put("pkcs8", "ed25519_oid", b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBERERERERERERERERERERERERERERERERERERERERER\n-----END PRIVATE KEY-----\n");
    put("pkcs8", "no_footer", format!("-----BEGIN PRIVATE KEY-----\n{body}\n").as_bytes());
    put("pkcs8", "raw_der", &{
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&body).expect("base64")
    });

    let fps: Vec<String> =
        (1..=3).map(|n| fixed_keypair(n).public().fingerprint().to_string()).collect();
    put(
        "access_list",
        "ok_keys_and_comments",
        format!("# operators\n{}\n\n  {} alice's laptop\n{}\n", fps[0], fps[1], fps[2]).as_bytes(),
    );
    let bare = fps[0].trim_start_matches("SHA256:");
    put("access_list", "without_prefix", format!("{bare}\n").as_bytes());
    put(
        "access_list",
        "malformed_lines",
        format!("{}\nSHA256:short\nnot a key\n\u{feff}{}\n", fps[0], fps[1]).as_bytes(),
    );

    put("known_servers", "ok_pins", format!("# Chatao known servers\nchat.example.org:7000 {}\n[::1]:7000 {}\n127.0.0.1:7001 {}\nchat.example.org:7000 {}\n", fps[0], fps[1], fps[2], fps[1]).as_bytes());
    put("known_servers", "missing_port", format!("chat.example.org {}\n", fps[0]).as_bytes());
    put(
        "known_servers",
        "three_fields",
        format!("h:1 {} extra\n[::1:7000 {}\n", fps[0], fps[1]).as_bytes(),
    );
    put("known_servers", "bad_fingerprint", b"h:1 SHA256:abc\n");

    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/chatao.toml"))
            .expect("packaging/chatao.toml");
    put("settings", "ok_packaging_example", &example);
    put("settings", "ok_every_kind", format!("port = 7001\nlisten = \"127.0.0.1\"\nmax-connections = 100\nop = [\"{}\"]\nlog-level = \"debug\"\ndefault-room = \"#lobby\"\nrate-per-sec = 5\n", fps[0]).as_bytes());
    put(
        "settings",
        "unknown_and_wrong_types",
        b"listen = 7000\nmax-connectoins = 1\nmax-connections = -1\nretention-days = \"x\"\n",
    );
    put("settings", "not_toml", b"listen = [\n\xc3\xa9 =\n");
}

/// Presence, room, private and moderation JSON as nodes send it, and the buckets' values.
fn cluster_seeds() {
    let fp = fixed_keypair(1).public().fingerprint();
    let user = format!(
        r##"{{"session":3,"nick":"alice","fingerprint":"{fp}","rooms":["#lobby","#rust"],"away":"lunch","since":1700000000000}}"##
    );
    let seeds = [
        ("ok_room_message", format!(r##"{{"room":"#lobby","time":1700000000000,"from":"alice","node":77,"session":3,"fingerprint":"{fp}","cid":42,"event":"message","kind":"say","text":"hello"}}"##)),
        ("ok_room_topic", r##"{"room":"#rust","time":1,"from":"bob","node":1,"session":2,"event":"topic","text":"borrowck"}"##.to_owned()),
        ("ok_private", format!(r#"{{"id":5,"time":1,"from":"alice","to":"bob","kind":"me","text":"psst","session":3,"fingerprint":"{fp}","cid":9}}"#)),
        ("ok_moderation", format!(r#"[77,{{"action":"ban","target":"mallory","fingerprint":"{fp}","by":"alice","reason":"spam","until":1700000600000}}]"#)),
        ("ok_session", "12345".to_owned()),
        ("ok_presence_heartbeat", r#"{"node":77,"seq":10,"kind":"heartbeat"}"#.to_owned()),
        ("ok_presence_online", format!(r#"{{"node":77,"seq":11,"kind":"change","change":{{"event":"online","user":{user}}}}}"#)),
        ("ok_presence_part", r##"{"node":77,"seq":12,"kind":"change","change":{"event":"part","session":3,"room":"#rust","reason":"part","message":"later"}}"##.to_owned()),
        ("ok_presence_snapshot", format!(r#"{{"node":77,"seq":13,"kind":"snapshot","users":[{user}]}}"#)),
        ("ok_presence_resync", r#"{"node":78,"seq":1,"kind":"resync","target":77}"#.to_owned()),
        ("ok_presence_goodbye", r#"{"node":77,"seq":14,"kind":"goodbye"}"#.to_owned()),
        ("ok_online_holder", format!(r#"{{"node":77,"session":3,"fingerprint":"{fp}"}}"#)),
        ("ok_stored_ban", r#"{"until":null,"reason":"spam","by":"alice"}"#.to_owned()),
        ("ok_allow_list", format!(r#"["{fp}"]"#)),
        ("ok_private_reply", r#"{"error":"no such nick"}"#.to_owned()),
        ("ok_hex_key", "616c696365".to_owned()),
        ("bad_nick_in_event", r##"{"room":"#lobby","time":1,"from":"a b","node":1,"session":2,"event":"message","text":"x"}"##.to_owned()),
        ("bad_number", r#"{"node":-1,"seq":1e400,"kind":"heartbeat"}"#.to_owned()),
        ("bad_odd_hex", "abc".to_owned()),
    ];
    for (name, json) in seeds {
        put("cluster", name, json.as_bytes());
    }
}

#[tokio::test]
#[ignore = "writes fuzz/seeds; run by hand after a wire change"]
async fn write_seeds() {
    server_seeds().await;
    tokio::task::spawn_blocking(|| {
        e2e_seeds();
        file_seeds();
        cluster_seeds();
    })
    .await
    .expect("the seeds written");
}
