//! State on disk: a restart continues every group, keeps the pins and the decrypted history,
//! and the files are private.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{Client, ROOM, Server, room_with, texts};
use chatao_e2e::{
    E2e, E2eError, Event, LAZY_SAVE_EVERY, MAX_KEY_PACKAGES, MAX_LOG_PER_ROOM, PinStatus,
    SENT_CACHE, verify_credential,
};

#[test]
fn state_survives_reopen_and_chat_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    a.e.set_sync(true); // one client exercises the fsync path
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b, &mut c]);
    server.send(a.e.encrypt(ROOM, b"before restart").unwrap());
    server.send(b.e.encrypt(ROOM, b"me too").unwrap());
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(texts(&server.deliver(client)).len(), 2);
    }
    let last = a.e.last_id(ROOM);

    // Alice starts a commit and restarts before its echo comes back.
    let mut d = Client::new(tmp.path(), "dave", 4);
    let kp = d.key_package();
    let pending = a.e.add(ROOM, &kp, &d.fp).unwrap();
    for client in [&mut a, &mut b, &mut c] {
        client.reopen();
    }
    assert_eq!(a.e.last_id(ROOM), last);
    assert!(a.e.has_pending(ROOM));
    assert_eq!(a.e.pin(&b.fp), Some(b.e.signature_key().as_slice()));
    let id = server.commit(&pending).unwrap();
    assert!(matches!(server.deliver(&mut a)[0], Event::Commit { own: true, .. }));
    server.deliver(&mut b);
    server.deliver(&mut c);
    d.e.join(ROOM, &pending.welcome.unwrap(), id).unwrap();

    // History from before the restart comes from the local log.
    for client in [&a, &b, &c] {
        let log = client.e.log(ROOM, 10).unwrap();
        let got: Vec<_> = log.iter().map(|m| m.plaintext.as_slice()).collect();
        assert_eq!(got, vec![&b"before restart"[..], b"me too"]);
        assert!(log[0].own == (client.fp == a.fp));
    }

    // Everyone keeps chatting after a second restart.
    for client in [&mut a, &mut b, &mut c, &mut d] {
        client.reopen();
    }
    server.send(c.e.encrypt(ROOM, b"after restart").unwrap());
    server.send(d.e.encrypt(ROOM, b"new here").unwrap());
    for client in [&mut a, &mut b] {
        let got = texts(&server.deliver(client));
        assert_eq!(
            got,
            vec![(c.fp.clone(), "after restart".into()), (d.fp.clone(), "new here".into())]
        );
    }
    assert_eq!(a.e.log(ROOM, 1).unwrap()[0].plaintext, b"new here");

    // Private files: directories 0700, files 0600.
    for client in [&a, &b, &c, &d] {
        assert_private(&client.dir);
    }
}

#[test]
fn member_bindings_verify_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    room_with(&mut server, &mut a, &mut [&mut b]);
    let (cred_a, cred_b) = (a.e.credential().to_vec(), b.e.credential().to_vec());
    a.reopen();
    b.reopen();

    // The same credential after a restart, and on another device with the same Chatao key.
    assert_eq!(a.e.credential(), cred_a.as_slice());
    assert_eq!(b.e.credential(), cred_b.as_slice());
    let other_device = Client::new(tmp.path(), "bob-laptop", 2);
    assert_eq!(other_device.e.credential(), cred_b.as_slice());
    assert_eq!(verify_credential(&cred_b, &b.e.signature_key()).as_deref(), Ok(b.fp.as_str()));

    // Members checked from the stored group: bound and pinned, nobody forged.
    for (c, other) in [(&a, &b.fp), (&b, &a.fp)] {
        for m in c.e.members(ROOM) {
            let expected = if m.is_self { PinStatus::Own } else { PinStatus::Pinned };
            assert_eq!(m.status, expected, "{} sees {}", c.fp, m.fingerprint);
            assert!(m.is_self || m.fingerprint == *other);
        }
    }
    // A key package Bob makes after his restart names the same member: not a new one.
    let kp = b.key_package();
    assert!(matches!(a.e.add(ROOM, &kp, &b.fp), Err(E2eError::AlreadyMember(_))));

    // Messages after the restart are attributed as pinned.
    server.send(b.e.encrypt(ROOM, b"still me").unwrap());
    let ev = server.deliver(&mut a);
    assert!(
        matches!(&ev[..], [Event::Application { status: PinStatus::Pinned, sender_fp, .. }] if *sender_fp == b.fp),
        "{ev:?}"
    );
}

#[test]
fn a_crash_before_deferred_writes_only_means_processing_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    room_with(&mut server, &mut a, &mut [&mut b]);
    b.e.flush().unwrap();
    let last_saved = b.e.last_id(ROOM).unwrap();
    // Fewer than LAZY_SAVE_EVERY incoming messages: Bob processes them, nothing is written yet.
    let n = (LAZY_SAVE_EVERY / 2) as u64;
    for i in 0..n {
        server.send(a.e.encrypt(ROOM, format!("m{i}").as_bytes()).unwrap());
    }
    assert_eq!(texts(&server.deliver(&mut b)).len(), n as usize);
    // The disk as a crash (power cut, kill -9) would leave it now.
    let crashed = tmp.path().join("bob-crashed");
    copy_dir(&b.dir, &crashed);
    let mut again = E2e::open(&crashed, &b.secret, &b.fp).unwrap();
    let from = again.last_id(ROOM).unwrap();
    // Nothing was written unless this machine was slow enough to reach LAZY_SAVE_AFTER.
    assert!((last_saved..=last_saved + n).contains(&from), "{from}");
    // Catching up from the server's history processes the same messages again, fine.
    for (id, body) in server.messages.iter().filter(|(id, _)| *id > from) {
        again.process(ROOM, *id, 0, body).unwrap();
    }
    let log = again.log(ROOM, usize::MAX).unwrap();
    assert_eq!(log.len(), n as usize, "no duplicate entries");
    // And the group goes on.
    let id = server.send(a.e.encrypt(ROOM, b"after the crash").unwrap());
    let body = server.messages.last().unwrap().1.clone();
    let ev = again.process(ROOM, id, 0, &body).unwrap();
    assert_eq!(texts(&[ev]), vec![(a.fp.clone(), "after the crash".to_owned())]);
    // A clean close writes the deferred changes.
    let (dir, secret) = (b.dir.clone(), b.secret);
    drop(b);
    let reopened = E2e::open(&dir, &secret, again.fingerprint()).unwrap();
    assert_eq!(reopened.last_id(ROOM), Some(last_saved + n));
}

#[test]
fn reopen_refuses_another_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Client::new(tmp.path(), "alice", 1);
    let b = Client::new(tmp.path(), "bob", 2);
    // Shadowing alone would keep Alice's E2e (and its lock) alive to the end of the test.
    let closed = Closed { dir: a.dir.clone(), secret: a.secret, fp: a.fp.clone() };
    drop(a);
    let a = closed;
    // The fingerprint of another key.
    let err = E2e::open(&a.dir, &a.secret, &b.fp).unwrap_err();
    assert!(matches!(err, E2eError::Identity(_)), "{err:?}");
    // Another identity's key on Alice's directory.
    let err = E2e::open(&a.dir, &b.secret, &b.fp).unwrap_err();
    assert!(matches!(err, E2eError::Identity(_)), "{err:?}");
    // A damaged state file is an error, not a panic and not a silent reset.
    std::fs::write(a.dir.join("state.json"), b"{not json").unwrap();
    let err = E2e::open(&a.dir, &a.secret, &a.fp).unwrap_err();
    assert!(matches!(err, E2eError::Corrupt { .. }), "{err:?}");
}

#[test]
fn one_instance_per_state_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Client::new(tmp.path(), "alice", 1);
    let err = E2e::open(&a.dir, &a.secret, &a.fp).unwrap_err();
    assert!(matches!(err, E2eError::Locked { .. }), "{err:?}");
    let (dir, secret, fp) = (a.dir.clone(), a.secret, a.fp.clone());
    drop(a);
    E2e::open(&dir, &secret, &fp).unwrap();
}

/// A lock kept by the caller serves one engine after another, and keeps everyone else out in
/// between (a client's reconnection), naming this process as the holder.
#[test]
fn a_kept_lock_serves_one_engine_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let secret = [7u8; 32];
    let fp = chatao_transport::Keypair::from_secret(secret).public().fingerprint();
    let lock = std::sync::Arc::new(chatao_e2e::StateLock::acquire(&dir).unwrap());
    let first = E2e::open_locked(lock.clone(), &secret, &fp).unwrap();
    let err = E2e::open_locked(lock.clone(), &secret, &fp).unwrap_err();
    assert!(matches!(err, E2eError::Locked { .. }), "{err:?}");
    drop(first);
    let err = E2e::open(&dir, &secret, &fp).unwrap_err();
    match err {
        E2eError::Locked { pid, .. } => assert_eq!(pid, Some(std::process::id())),
        other => panic!("{other:?}"),
    }
    assert!(err_text(&dir).contains(&format!("in use by chatao process {}", std::process::id())));
    E2e::open_locked(lock, &secret, &fp).unwrap();
}

fn err_text(dir: &std::path::Path) -> String {
    let secret = [7u8; 32];
    let fp = chatao_transport::Keypair::from_secret(secret).public().fingerprint();
    E2e::open(dir, &secret, &fp).unwrap_err().to_string()
}

#[test]
fn open_tightens_a_wide_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wide");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = [5u8; 32];
    let fp = chatao_transport::Keypair::from_secret(secret).public().fingerprint();
    E2e::open(&dir, &secret, &fp).unwrap();
    assert_private(&dir);
}

#[test]
fn log_is_capped_per_room() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    a.e.create_group(ROOM, false).unwrap();
    let n = MAX_LOG_PER_ROOM as u64 + 1_000;
    for id in 1..=n {
        a.e.record_own(ROOM, id, id, format!("m{id}").as_bytes()).unwrap();
    }
    let log = a.e.log(ROOM, usize::MAX).unwrap();
    assert_eq!(log.len(), MAX_LOG_PER_ROOM);
    assert_eq!(log[0].id, n - MAX_LOG_PER_ROOM as u64 + 1);
    assert_eq!(log.last().unwrap().plaintext, format!("m{n}").as_bytes());
    a.reopen();
    assert_eq!(a.e.log(ROOM, usize::MAX).unwrap().len(), MAX_LOG_PER_ROOM);
    assert_eq!(a.e.last_id(ROOM), Some(n));
}

/// A client's identity and directory, its E2e dropped (closed).
struct Closed {
    dir: std::path::PathBuf,
    secret: [u8; 32],
    fp: String,
}

#[test]
fn own_echoes_are_recognised_from_a_bounded_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    room_with(&mut server, &mut a, &mut [&mut b]);
    server.deliver(&mut a);
    // One more than the cache holds: the first one's echo is no longer recognised.
    for i in 0..=SENT_CACHE {
        server.send(a.e.encrypt(ROOM, format!("m{i}").as_bytes()).unwrap());
    }
    let base = a.e.last_id(ROOM).unwrap();
    let (first_id, first) = server.messages.iter().find(|(id, _)| *id == base + 1).unwrap().clone();
    let err = a.e.process(ROOM, first_id, 0, &first).unwrap_err();
    assert!(matches!(err, E2eError::OwnMessage(_)), "{err:?}");
    // The caller can still log it itself, knowing the text.
    a.e.record_own(ROOM, first_id, 0, b"m0").unwrap();
    let events = server.deliver(&mut a);
    assert_eq!(events.len(), SENT_CACHE);
    assert!(events.iter().all(|e| matches!(e, Event::Application { own: true, .. })));
    assert_eq!(a.e.log(ROOM, usize::MAX).unwrap().len(), SENT_CACHE + 1);
    // Bob reads them all.
    assert_eq!(texts(&server.deliver(&mut b)).len(), SENT_CACHE + 1);

    // After a restart the cache is empty: an own echo is an error to skip, not a panic.
    let body = a.e.encrypt(ROOM, b"just before the restart").unwrap();
    let id = server.send(body.clone());
    a.reopen();
    assert!(matches!(a.e.process(ROOM, id, 0, &body), Err(E2eError::OwnMessage(_))));
}

#[test]
fn only_the_newest_key_packages_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let oldest = b.key_package();
    assert_eq!(b.e.key_packages(MAX_KEY_PACKAGES + 50).unwrap().len(), MAX_KEY_PACKAGES);
    let newest = b.key_package();
    for (room, kp, joins) in [("#old", oldest, false), ("#new", newest, true)] {
        a.e.create_group(room, false).unwrap();
        let p = a.e.add(room, &kp, &b.fp).unwrap();
        let joined = b.e.join(room, &p.welcome.unwrap(), 1);
        assert_eq!(joined.is_ok(), joins, "{room}: {joined:?}");
    }
    b.reopen();
    assert!(b.e.is_member("#new"));
    assert!(!b.e.is_member("#old"));
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

fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            assert_private(&path);
        } else {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
}
