//! Identity binding and pinning: forged key packages and forged members are refused or flagged.
#![allow(clippy::unwrap_used)]

mod common;

use chatao_e2e::{E2eError, Event, PinStatus};
use common::{Client, ROOM, Server, forged_key_package, room_with};

#[test]
fn key_package_naming_another_fingerprint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let c = Client::new(tmp.path(), "carol", 3);
    a.e.create_group(ROOM).unwrap();

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
fn key_package_with_a_key_other_than_the_pinned_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    room_with(&mut server, &mut a, &mut [&mut b]);
    assert_eq!(a.e.pin(&b.fp), Some(b.e.signature_key().as_slice()));

    // Bob's fingerprint with a key that is not derived from Bob's Chatao key.
    let forged = forged_key_package(&b.fp);
    a.e.create_group("#other").unwrap();
    let err = a.e.add("#other", &forged, &b.fp).unwrap_err();
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
fn first_sight_pins_whatever_key_comes_first() {
    // Trust on first use, stated as a test: a client that has never seen Bob pins the first
    // key it is shown for his fingerprint, and from then on refuses the genuine one. The fix
    // is out of band: compare fingerprints with `/safety`.
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    a.e.create_group(ROOM).unwrap();
    let p = a.e.add(ROOM, &forged_key_package(&b.fp), &b.fp).unwrap();
    assert_eq!(p.added, vec![b.fp.clone()]);
    a.e.discard_pending(ROOM).unwrap();
    let kp = b.key_package();
    assert!(matches!(a.e.add(ROOM, &kp, &b.fp), Err(E2eError::KeyChanged { .. })));
}

#[test]
fn forged_member_is_flagged_by_everyone_including_the_impersonated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut m = Client::new(tmp.path(), "mallory", 9);
    room_with(&mut server, &mut a, &mut [&mut b, &mut m]);

    // Mallory runs a modified client: it forgets Bob's pin, then adds a member that claims
    // Bob's fingerprint with Mallory's own key.
    drop_pin(&m, &b.fp);
    m.reopen();
    assert_eq!(m.e.pin(&b.fp), None);
    let p = m.e.add(ROOM, &forged_key_package(&b.fp), &b.fp).unwrap();
    let add_id = server.commit(&p).unwrap();
    server.deliver(&mut m);

    // Bob sees himself added with a key that is not his.
    let ev = server.deliver(&mut b);
    let Event::Commit { warnings, added, .. } = &ev[0] else { panic!("{ev:?}") };
    assert_eq!(*added, vec![b.fp.clone()]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].fingerprint, b.fp);
    assert!(
        matches!(&warnings[0].status, PinStatus::Forged { reason } if reason.contains("own fingerprint"))
    );
    assert!(warnings[0].to_string().contains("FORGED"));

    // Alice sees Bob's fingerprint with a key other than the pinned one.
    let ev = server.deliver(&mut a);
    let Event::Commit { warnings, .. } = &ev[0] else { panic!("{ev:?}") };
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].status, PinStatus::Changed { pinned_key_fp: b.e.signature_key_fp() });

    // The safety check lists both leaves that claim Bob; the forged one is marked.
    for (client, expected) in [
        (&a, PinStatus::Changed { pinned_key_fp: b.e.signature_key_fp() }),
        (
            &b,
            PinStatus::Forged {
                reason: "it claims this client's own fingerprint with another key".into(),
            },
        ),
    ] {
        let claims: Vec<_> =
            client.e.members(ROOM).into_iter().filter(|x| x.fingerprint == b.fp).collect();
        assert_eq!(claims.len(), 2);
        assert_eq!(claims.iter().filter(|x| x.status.is_forged()).count(), 1);
        assert!(claims.iter().any(|x| x.status == expected));
    }

    // A newcomer who never saw Bob pins one of the two and flags the other at once.
    let mut d = Client::new(tmp.path(), "dave", 4);
    let kp = d.key_package();
    let p = a.e.add(ROOM, &kp, &d.fp).unwrap();
    let id = server.commit(&p).unwrap();
    assert!(id > add_id);
    server.deliver(&mut a);
    let joined = d.e.join(ROOM, &p.welcome.unwrap(), id).unwrap();
    assert_eq!(joined.warnings.len(), 1, "{:?}", joined.warnings);
    assert_eq!(joined.warnings[0].fingerprint, b.fp);

    // Anyone can remove the forged leaves (all leaves claiming Bob), Bob can be re-added.
    server.deliver(&mut b);
    let p = b.e.remove(ROOM, &b.fp);
    assert!(p.is_ok(), "removing the impostor of oneself is allowed: {p:?}");
}

#[test]
fn member_joining_a_group_with_an_impostor_of_itself_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut m = Client::new(tmp.path(), "mallory", 9);
    // Alice knows Bob's key from another room; Mallory has never seen Bob.
    a.e.create_group("#other").unwrap();
    let kp = b.key_package();
    a.e.add("#other", &kp, &b.fp).unwrap();
    room_with(&mut server, &mut a, &mut [&mut m]);

    let p = m.e.add(ROOM, &forged_key_package(&b.fp), &b.fp).unwrap();
    server.commit(&p).unwrap();
    server.deliver(&mut m);
    let ev = server.deliver(&mut a);
    assert!(
        matches!(&ev[0], Event::Commit { warnings, .. } if warnings.len() == 1 && warnings[0].status.is_forged())
    );

    // Alice adds the genuine Bob; an impostor leaf does not count as Bob being a member.
    let kp = b.key_package();
    let p = a.e.add(ROOM, &kp, &b.fp).unwrap();
    let id = server.commit(&p).unwrap();
    server.deliver(&mut a);
    let ev = server.deliver(&mut m);
    assert!(matches!(&ev[0], Event::Commit { warnings, .. } if warnings.len() == 1), "{ev:?}");
    let joined = b.e.join(ROOM, &p.welcome.unwrap(), id).unwrap();
    assert_eq!(joined.warnings.len(), 1, "{:?}", joined.warnings);
    assert_eq!(joined.warnings[0].fingerprint, b.fp);
    assert!(
        matches!(&joined.warnings[0].status, PinStatus::Forged { reason } if reason.contains("own fingerprint"))
    );
    let own: Vec<_> = joined.members.iter().filter(|x| x.is_self).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].status, PinStatus::Own);
}

/// Removes a pin from a closed client's state file, as a modified client would ignore it.
fn drop_pin(c: &Client, fp: &str) {
    let path = c.dir.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let pins = state.get_mut("pins").unwrap().as_object_mut().unwrap();
    assert!(pins.remove(fp).is_some());
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
}
