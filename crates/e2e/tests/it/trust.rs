//! Identity binding and pinning: forged key packages and forged members are refused or flagged.
//! "Forged" here means made by someone without the member's X25519 secret (a malicious server
//! or member): a genuine credential copied next to another MLS key, a bare fingerprint, or a
//! credential signed by another X25519 key.
#![allow(clippy::unwrap_used)]

use crate::common::{
    Client, ROOM, Raw, Server, credential_of, forged_key_package, room_with, texts,
};
use chatao_e2e::{E2eError, Event, PinStatus, make_credential, verify_credential};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::types::SignatureScheme;

const NOT_SIGNED: &str = "its MLS key is not signed by its Chatao key";

#[test]
fn key_package_naming_another_fingerprint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let c = Client::new(tmp.path(), "carol", 3);
    a.e.create_group(ROOM, false).unwrap();

    // The server says the nick is Carol's, but hands out Bob's key package.
    let kp = b.key_package();
    let err = a.e.add(ROOM, &kp, &c.fp).unwrap_err();
    assert!(err.is_forgery());
    match err {
        E2eError::FingerprintMismatch { expected, found } => {
            assert_eq!(expected, c.fp);
            assert_eq!(found, b.fp);
        }
        other => panic!("{other:?}"),
    }

    // A credential that is not a fingerprint at all.
    let err = a.e.add(ROOM, &forged_key_package("carol"), &c.fp).unwrap_err();
    assert!(
        matches!(&err, E2eError::FingerprintMismatch { found, .. } if found == "invalid:6361726f6c"),
        "{err:?}"
    );
    // Nothing was committed or pinned.
    assert!(!a.e.has_pending(ROOM));
    assert_eq!(a.e.epoch(ROOM), Some(0));
    assert_eq!(a.e.pin(&c.fp), None);
    assert_eq!(a.e.pin(&b.fp), None);
}

#[test]
fn key_package_whose_key_is_not_bound_to_its_fingerprint_is_refused_at_first_sight() {
    // Alice has never seen Bob: before the binding, the first key shown for his fingerprint
    // was pinned. Now every forgery is refused, and the genuine key package still goes in.
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let m = Client::new(tmp.path(), "mallory", 9);
    a.e.create_group(ROOM, false).unwrap();
    let genuine = b.key_package();
    assert_eq!(credential_of(&genuine), b.e.credential());

    // Bob's genuine credential (public: it is in every key package of his) with another key.
    let copied = Raw::new(b.e.credential().to_vec()).key_package();
    // A bare fingerprint, as before the binding.
    let bare = forged_key_package(&b.fp);
    // Mallory's own proper binding of her key, with Bob's fingerprint written over hers; and
    // the same with Bob's X25519 key as well.
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let mut relabelled = make_credential(&m.secret, signer.public()).unwrap();
    relabelled[..b.fp.len()].copy_from_slice(b.fp.as_bytes());
    let relabelled_kp = Raw::with_signer(relabelled.clone(), signer).key_package();
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let mut stolen_key = make_credential(&m.secret, signer.public()).unwrap();
    stolen_key[..b.fp.len()].copy_from_slice(b.fp.as_bytes());
    stolen_key[b.fp.len()..b.fp.len() + 32].copy_from_slice(&credential_of(&genuine)[50..82]);
    let stolen_key_kp = Raw::with_signer(stolen_key, signer).key_package();

    for (what, kp, reason) in [
        ("copied credential", &copied, NOT_SIGNED),
        (
            "bare fingerprint",
            &bare,
            "its credential carries no proof binding its MLS key to its Chatao key",
        ),
        ("relabelled credential", &relabelled_kp, "its Chatao key does not match its fingerprint"),
        ("Bob's X25519 key, Mallory's signature", &stolen_key_kp, NOT_SIGNED),
    ] {
        let err = a.e.add(ROOM, kp, &b.fp).unwrap_err();
        assert!(err.is_forgery(), "{what}: {err:?}");
        match &err {
            E2eError::ForgedCredential { fingerprint, reason: r } => {
                assert_eq!(*fingerprint, b.fp, "{what}");
                assert_eq!(r, reason, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(err.to_string().contains("FORGED"));
        assert!(!a.e.has_pending(ROOM), "{what}");
        assert_eq!(a.e.pin(&b.fp), None, "{what}: nothing pinned");
    }
    let p = a.e.add(ROOM, &genuine, &b.fp).unwrap();
    assert_eq!(p.added, vec![b.fp.clone()]);
    assert_eq!(a.e.pin(&b.fp), Some(b.e.signature_key().as_slice()));
}

#[test]
fn key_package_with_a_key_other_than_the_pinned_one_is_refused() {
    // The pins are the second line of defence: a key properly bound by Bob's own X25519 key
    // (only a modified client of Bob's could make it) but not the one pinned is refused.
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    room_with(&mut server, &mut a, &mut [&mut b]);
    assert_eq!(a.e.pin(&b.fp), Some(b.e.signature_key().as_slice()));

    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let cred = make_credential(&b.secret, signer.public()).unwrap();
    assert_eq!(verify_credential(&cred, signer.public()).as_deref(), Ok(b.fp.as_str()));
    let other_key = Raw::with_signer(cred, signer).key_package();
    a.e.create_group("#other", false).unwrap();
    let err = a.e.add("#other", &other_key, &b.fp).unwrap_err();
    assert!(err.is_forgery());
    match err {
        E2eError::KeyChanged { fingerprint, pinned_key_fp, offered_key_fp } => {
            assert_eq!(fingerprint, b.fp);
            assert_eq!(pinned_key_fp, b.e.signature_key_fp());
            assert_ne!(offered_key_fp, pinned_key_fp);
        }
        other => panic!("{other:?}"),
    }
    assert!(!a.e.has_pending("#other"));
    // The genuine key package still goes in.
    let kp = b.key_package();
    a.e.add("#other", &kp, &b.fp).unwrap();
}

#[test]
fn welcome_into_a_group_with_an_unbound_member_flags_it() {
    // A malicious server builds a group whose creator claims Bob with Bob's copied credential
    // and its own key, and invites Dave, who has never seen Bob.
    let tmp = tempfile::tempdir().unwrap();
    let b = Client::new(tmp.path(), "bob", 2);
    let mut d = Client::new(tmp.path(), "dave", 4);
    let mut forger = Raw::new(b.e.credential().to_vec());
    forger.create_group(ROOM, Some("invite"));
    let (_, welcome) = forger.add(&d.key_package());
    let joined = d.e.join(ROOM, &welcome, 1).unwrap();
    assert_eq!(joined.warnings.len(), 1, "{:?}", joined.warnings);
    assert_eq!(joined.warnings[0].fingerprint, b.fp);
    assert_eq!(joined.warnings[0].status, PinStatus::Forged { reason: NOT_SIGNED.into() });
    assert!(joined.warnings[0].to_string().contains("FORGED"));
    assert_eq!(joined.inviter_fp, None, "a forged inviter is not named");
    assert!(!joined.open);
    // The forged key was not pinned, and the safety check keeps flagging it.
    assert_eq!(d.e.pin(&b.fp), None);
    let forged: Vec<_> = d.e.members(ROOM).into_iter().filter(|x| x.status.is_forged()).collect();
    assert_eq!(forged.len(), 1);
    assert_eq!(forged[0].fingerprint, b.fp);
}

#[test]
fn commit_adding_an_unbound_member_is_flagged_by_everyone_including_the_impersonated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    room_with(&mut server, &mut a, &mut [&mut b]);

    // Mallory runs a modified client: her own key is properly bound (so Alice adds her), but
    // she then adds a member that claims Bob with Bob's copied credential and her key.
    let m = Client::new(tmp.path(), "mallory", 9);
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let cred = make_credential(&m.secret, signer.public()).unwrap();
    let mut mallory = Raw::with_signer(cred, signer);
    let p = a.e.add(ROOM, &mallory.key_package(), &m.fp).unwrap();
    let id = server.commit(&p).unwrap();
    server.deliver(&mut a);
    server.deliver(&mut b);
    mallory.join(&p.welcome.unwrap());
    assert!(id > 0);
    let (commit, _) = mallory.add(&Raw::new(b.e.credential().to_vec()).key_package());
    let add_id = server.commit_raw(commit);

    let (b_fp, b_key) = (b.fp.clone(), b.e.signature_key());
    for (who, c) in [("bob", &mut b), ("alice", &mut a)] {
        let ev = server.deliver(c);
        let Event::Commit { warnings, added, committer_fp, .. } = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(*added, vec![b_fp.clone()], "{who}");
        assert_eq!(committer_fp.as_deref(), Some(m.fp.as_str()));
        assert_eq!(warnings.len(), 1, "{who}: {warnings:?}");
        assert_eq!(warnings[0].fingerprint, b_fp);
        assert_eq!(warnings[0].status, PinStatus::Forged { reason: NOT_SIGNED.into() }, "{who}");
        // The safety check lists both leaves that claim Bob; only the forged one is marked.
        let claims: Vec<_> =
            c.e.members(ROOM).into_iter().filter(|x| x.fingerprint == b_fp).collect();
        assert_eq!(claims.len(), 2, "{who}");
        assert_eq!(claims.iter().filter(|x| x.status.is_forged()).count(), 1, "{who}");
    }

    // A newcomer who never saw Bob pins the genuine Bob and flags the forged one.
    let mut d = Client::new(tmp.path(), "dave", 4);
    let kp = d.key_package();
    let p = a.e.add(ROOM, &kp, &d.fp).unwrap();
    let id = server.commit(&p).unwrap();
    assert!(id > add_id);
    server.deliver(&mut a);
    let joined = d.e.join(ROOM, &p.welcome.unwrap(), id).unwrap();
    assert_eq!(joined.warnings.len(), 1, "{:?}", joined.warnings);
    assert_eq!(joined.warnings[0].fingerprint, b.fp);
    assert_eq!(joined.inviter_fp.as_deref(), Some(a.fp.as_str()));
    assert_eq!(d.e.pin(&b.fp), Some(b_key.as_slice()));

    // Bob can remove every leaf that claims him but his own.
    server.deliver(&mut b);
    let p = b.e.remove(ROOM, &b.fp);
    assert!(p.is_ok(), "removing the impostor of oneself is allowed: {p:?}");
}

#[test]
fn past_epoch_message_is_checked_with_the_key_of_its_epoch() {
    // Alice pinned the genuine Bob elsewhere. A forger claiming Bob (copied credential, its own
    // key) makes a group with Alice and Carol and sends a message; Carol's commit removing it
    // is ordered first, so Alice decrypts the message with the past epoch's secrets. Its
    // fingerprint is pinned, but its key is not Bob's: it must not show as Bob (pinned).
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    a.e.create_group("#other", false).unwrap();
    let kp = b.key_package();
    a.e.add("#other", &kp, &b.fp).unwrap();
    assert!(a.e.pin(&b.fp).is_some());

    let mut forger = Raw::new(b.e.credential().to_vec());
    forger.create_group(ROOM, Some("open"));
    let (commit, welcome) = forger.add(&a.key_package());
    let id = server.commit_raw(commit);
    let joined = a.e.join(ROOM, &welcome, id).unwrap();
    assert_eq!(joined.warnings.len(), 1);
    assert!(joined.open);
    let (commit, welcome) = forger.add(&c.key_package());
    let id = server.commit_raw(commit);
    c.e.join(ROOM, &welcome, id).unwrap();
    server.deliver(&mut a);

    let lie = forger.encrypt(b"this is Bob, trust me");
    let p = c.e.remove(ROOM, &b.fp).unwrap();
    server.commit(&p).unwrap();
    server.send(lie);
    server.deliver(&mut c);
    let ev = server.deliver(&mut a);
    assert!(matches!(&ev[0], Event::Commit { removed, .. } if *removed == vec![b.fp.clone()]));
    let Event::Application { sender_fp, status, plaintext, .. } = &ev[1] else { panic!("{ev:?}") };
    assert_eq!(*sender_fp, b.fp);
    assert_eq!(plaintext, b"this is Bob, trust me");
    assert_ne!(*status, PinStatus::Pinned);
    assert_eq!(*status, PinStatus::Forged { reason: NOT_SIGNED.into() });

    // A genuine member's message of a past epoch is still attributed to it, also when the
    // commit that ended its epoch was processed before a restart.
    let hello = c.e.encrypt(ROOM, b"carol, one epoch ago").unwrap();
    let mut d = Client::new(tmp.path(), "dave", 4);
    let p = a.e.add(ROOM, &d.key_package(), &d.fp).unwrap();
    let commit_id = server.commit(&p).unwrap();
    let hello_id = server.send(hello);
    let ev = a.e.process(ROOM, commit_id, 0, &server.messages[commit_id as usize - 1].1).unwrap();
    assert!(matches!(ev, Event::Commit { own: true, .. }));
    a.reopen();
    let body = server.messages[hello_id as usize - 1].1.clone();
    match a.e.process(ROOM, hello_id, 0, &body).unwrap() {
        Event::Application { sender_fp, status, .. } => {
            assert_eq!(sender_fp, c.fp);
            assert_eq!(status, PinStatus::Pinned);
        }
        other => panic!("{other:?}"),
    }
    let ev = server.deliver(&mut c);
    assert_eq!(texts(&ev), vec![(c.fp.clone(), "carol, one epoch ago".to_owned())]);
}

#[test]
fn past_epoch_message_without_a_recorded_key_is_unverified_not_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b]);
    let hello = b.e.encrypt(ROOM, b"old epoch").unwrap();
    let p = a.e.add(ROOM, &c.key_package(), &c.fp).unwrap();
    let commit_id = server.commit(&p).unwrap();
    let hello_id = server.send(hello.clone());
    a.e.process(ROOM, commit_id, 0, &p.commit).unwrap();

    // The record of the past epoch's keys is lost (a state written without it).
    let scratch = tempfile::tempdir().unwrap();
    drop(std::mem::replace(
        &mut a.e,
        chatao_e2e::E2e::open(scratch.path(), &a.secret, &a.fp).unwrap(),
    ));
    let path = a.dir.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let past = state["rooms"][ROOM]["past"].as_array_mut().unwrap();
    assert!(!past.is_empty());
    past.clear();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    a.reopen();

    match a.e.process(ROOM, hello_id, 0, &hello).unwrap() {
        Event::Application { sender_fp, status, plaintext, .. } => {
            assert_eq!(sender_fp, b.fp);
            assert_eq!(plaintext, b"old epoch");
            assert!(matches!(status, PinStatus::Unverified { .. }), "{status:?}");
            assert!(!status.is_forged());
            assert!(status.to_string().starts_with("unverified"));
        }
        other => panic!("{other:?}"),
    }
}
