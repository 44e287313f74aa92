//! Group life cycle with real openmls: chat, add, remove, late join, concurrent commits.
#![allow(clippy::unwrap_used)]

use crate::common::{Client, ROOM, Raw, Server, room_with, texts};
use chatao_e2e::{E2eError, Event, PinStatus};

#[test]
fn three_members_chat() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b, &mut c]);
    assert_eq!(a.e.epoch(ROOM), Some(2));
    assert_eq!(b.e.epoch(ROOM), Some(2));
    assert_eq!(c.e.epoch(ROOM), Some(2));

    server.send(a.e.encrypt(ROOM, b"hello from alice").unwrap());
    server.send(b.e.encrypt(ROOM, b"hi, bob here").unwrap());
    server.send(c.e.encrypt(ROOM, b"carol too").unwrap());

    let all = vec![
        (a.fp.clone(), "hello from alice".to_owned()),
        (b.fp.clone(), "hi, bob here".to_owned()),
        (c.fp.clone(), "carol too".to_owned()),
    ];
    for client in [&mut a, &mut b, &mut c] {
        let events = server.deliver(client);
        assert_eq!(texts(&events), all, "as seen by {}", client.fp);
        for e in &events {
            if let Event::Application { sender_fp, own, status, .. } = e {
                assert_eq!(*own, *sender_fp == client.fp);
                assert_eq!(*status, if *own { PinStatus::Own } else { PinStatus::Pinned });
            }
        }
        let log = client.e.log(ROOM, 100).unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].plaintext, b"hello from alice");
    }

    // The safety check: everyone sees the same three fingerprints and keys, all pinned.
    let mut seen = Vec::new();
    for client in [&a, &b, &c] {
        let mut members = client.e.members(ROOM);
        members.sort_by(|x, y| x.fingerprint.cmp(&y.fingerprint));
        assert_eq!(members.len(), 3);
        for m in &members {
            assert_eq!(m.is_self, m.fingerprint == client.fp);
            assert_eq!(m.status, if m.is_self { PinStatus::Own } else { PinStatus::Pinned });
        }
        seen.push(
            members
                .iter()
                .map(|m| (m.fingerprint.clone(), m.signature_key_fp.clone()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    assert!(seen[0].contains(&(b.fp.clone(), b.e.signature_key_fp())));
}

#[test]
fn removed_member_cannot_decrypt_later_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b, &mut c]);

    // Bob's state as it was while still a member, to try later with it as well.
    let bob_before = tmp.path().join("bob-copy");
    copy_dir(&b.dir, &bob_before);

    let pending = a.e.remove(ROOM, &b.fp).unwrap();
    assert_eq!(pending.removed, vec![b.fp.clone()]);
    let remove_id = server.commit(&pending).unwrap();
    // Nothing is encrypted while the removal is pending: it would be of the epoch Bob has.
    assert!(matches!(a.e.encrypt(ROOM, b"too early"), Err(E2eError::PendingCommit(_))));
    let ev = server.deliver(&mut a);
    assert!(
        matches!(&ev[0], Event::Commit { own: true, removed, .. } if *removed == vec![b.fp.clone()])
    );
    let secret_id = server.send(a.e.encrypt(ROOM, b"after bob left").unwrap());
    let ev = server.deliver(&mut c);
    assert!(
        matches!(&ev[0], Event::Commit { removed_me: false, removed, .. } if *removed == vec![b.fp.clone()])
    );
    assert_eq!(texts(&ev), vec![(a.fp.clone(), "after bob left".to_owned())]);

    // Bob processes his removal, then cannot read the next message.
    let (_, commit) = &server.messages[server.messages.len() - 2];
    let ev = b.e.process(ROOM, remove_id, 0, commit).unwrap();
    assert!(matches!(ev, Event::Commit { removed_me: true, .. }), "{ev:?}");
    assert!(!b.e.is_member(ROOM));
    let (_, secret) = server.messages.last().unwrap();
    let err = b.e.process(ROOM, secret_id, 0, secret).unwrap_err();
    assert!(matches!(err, E2eError::NotMember(_)), "{err:?}");
    assert!(b.e.log(ROOM, 100).unwrap().iter().all(|m| m.plaintext != b"after bob left"));

    // Bob's old state (before the removal commit) cannot decrypt it either: its keys are of
    // the previous epoch, and the new epoch's secrets were never sent to him.
    let mut old = Client { e: chatao_e2e::E2e::open(&bob_before, &b.secret, &b.fp).unwrap(), ..b };
    old.dir = bob_before;
    let err = old.e.process(ROOM, secret_id, 0, secret).unwrap_err();
    assert!(matches!(err, E2eError::Mls { .. }), "{err:?}");
    // Nor with the commit first: it is not in the new epoch's tree, so it cannot join it.
    assert!(old.e.log(ROOM, 100).unwrap().iter().all(|m| m.plaintext != b"after bob left"));
}

#[test]
fn late_joiner_cannot_decrypt_earlier_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b]);
    let early_id = server.send(a.e.encrypt(ROOM, b"before carol").unwrap());
    let early = server.messages.last().unwrap().1.clone();
    server.deliver(&mut a);
    assert_eq!(texts(&server.deliver(&mut b)).len(), 1);

    let kp = c.key_package();
    let pending = a.e.add(ROOM, &kp, &c.fp).unwrap();
    let id = server.commit(&pending).unwrap();
    server.deliver(&mut a);
    server.deliver(&mut b);
    let joined = c.e.join(ROOM, &pending.welcome.unwrap(), id).unwrap();
    assert_eq!(joined.members.len(), 3);
    assert_eq!(c.e.last_id(ROOM), Some(id));

    // History before the join is below Carol's last id: nothing to process.
    assert_eq!(c.e.process(ROOM, early_id, 0, &early).unwrap(), Event::Duplicate);

    // What is said after the join she reads.
    server.send(b.e.encrypt(ROOM, b"welcome carol").unwrap());
    let ev = server.deliver(&mut c);
    assert_eq!(texts(&ev), vec![(b.fp.clone(), "welcome carol".to_owned())]);

    // Even handed over as a new message, the earlier one does not decrypt: it is of an epoch
    // before hers.
    let err = c.e.process(ROOM, id + 100, 0, &early).unwrap_err();
    assert!(matches!(err, E2eError::Mls { .. }), "{err:?}");
    let log = c.e.log(ROOM, 100).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].plaintext, b"welcome carol");
    // The refused message still counts as processed: it is not retried.
    assert_eq!(c.e.last_id(ROOM), Some(id + 100));
}

#[test]
fn concurrent_commits_first_ordered_wins_other_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    let mut d = Client::new(tmp.path(), "dave", 4);
    room_with(&mut server, &mut a, &mut [&mut b]);
    let epoch = a.e.epoch(ROOM).unwrap();

    // Both commit in the same epoch; the server orders Alice's first and refuses Bob's.
    let kp_c = c.key_package();
    let kp_d = d.key_package();
    let pa = a.e.add(ROOM, &kp_c, &c.fp).unwrap();
    let pb = b.e.add(ROOM, &kp_d, &d.fp).unwrap();
    assert_eq!((pa.epoch, pb.epoch), (epoch, epoch));
    assert!(b.e.has_pending(ROOM));
    let id_a = server.commit(&pa).unwrap();
    assert_eq!(server.commit(&pb), None, "stale commit accepted");
    // While his commit is pending, Bob cannot make another.
    assert!(matches!(b.e.add(ROOM, &kp_d, &d.fp), Err(E2eError::PendingCommit(_))));

    let ev = server.deliver(&mut a);
    assert!(matches!(&ev[0], Event::Commit { own: true, discarded_pending: false, .. }));
    let ev = server.deliver(&mut b);
    assert!(
        matches!(&ev[0], Event::Commit { own: false, discarded_pending: true, added, .. } if *added == vec![c.fp.clone()]),
        "{ev:?}"
    );
    assert!(!b.e.has_pending(ROOM));
    c.e.join(ROOM, &pa.welcome.unwrap(), id_a).unwrap();

    // Bob retries at the new epoch, and this time uses the explicit merge path.
    let pb = b.e.add(ROOM, &kp_d, &d.fp).unwrap();
    assert_eq!(pb.epoch, epoch + 1);
    let id_b = server.commit(&pb).unwrap();
    let ev = b.e.merge_pending(ROOM, id_b).unwrap();
    assert!(matches!(ev, Event::Commit { own: true, .. }));
    assert_eq!(b.e.last_id(ROOM), Some(id_b));
    server.deliver(&mut a);
    server.deliver(&mut c);
    d.e.join(ROOM, &pb.welcome.unwrap(), id_b).unwrap();

    for client in [&a, &b, &c, &d] {
        assert_eq!(client.e.epoch(ROOM), Some(epoch + 2));
        assert_eq!(client.e.members(ROOM).len(), 4);
    }
    server.send(d.e.encrypt(ROOM, b"dave made it").unwrap());
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(texts(&server.deliver(client)), vec![(d.fp.clone(), "dave made it".to_owned())]);
    }
}

#[test]
fn stale_commit_discarded_explicitly_then_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b, &mut c]);

    // Alice and Bob both commit Carol's removal in the same epoch.
    let pa = a.e.remove(ROOM, &c.fp).unwrap();
    let pb = b.e.remove(ROOM, &c.fp).unwrap();
    server.commit(&pa).unwrap();
    assert_eq!(server.commit(&pb), None);
    // The client hears `stale_epoch` before the winning commit arrives: it discards, then
    // processes in order.
    b.e.discard_pending(ROOM).unwrap();
    b.e.discard_pending(ROOM).unwrap(); // idempotent
    let ev = server.deliver(&mut b);
    assert!(
        matches!(&ev[0], Event::Commit { discarded_pending: false, removed, .. } if *removed == vec![c.fp.clone()])
    );
    server.deliver(&mut a);
    // Nothing left to retry: Carol is gone.
    assert!(matches!(b.e.remove(ROOM, &c.fp), Err(E2eError::NoSuchMember(_))));
    server.send(b.e.encrypt(ROOM, b"just us").unwrap());
    assert_eq!(texts(&server.deliver(&mut a)), vec![(b.fp.clone(), "just us".to_owned())]);
}

#[test]
fn message_of_previous_epoch_still_decrypts_after_commit() {
    // The server does not check application epochs: a message sent just before a commit may
    // be ordered after it.
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b]);
    let late = b.e.encrypt(ROOM, b"sent in the old epoch").unwrap();
    let kp = c.key_package();
    let p = a.e.add(ROOM, &kp, &c.fp).unwrap();
    server.commit(&p).unwrap();
    server.send(late);
    let ev = server.deliver(&mut a);
    assert_eq!(texts(&ev), vec![(b.fp.clone(), "sent in the old epoch".to_owned())]);
    let ev = server.deliver(&mut b);
    assert!(matches!(&ev[1], Event::Application { own: true, .. }));
}

#[test]
fn create_group_refuses_an_active_group_and_forget_clears_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    a.e.create_group(ROOM, false).unwrap();
    assert!(matches!(a.e.create_group(ROOM, false), Err(E2eError::GroupExists(_))));
    assert_eq!(a.e.rooms(), vec![ROOM.to_owned()]);
    a.e.forget(ROOM).unwrap();
    assert!(a.e.rooms().is_empty());
    assert!(a.e.members(ROOM).is_empty());
    a.e.create_group(ROOM, false).unwrap();
    assert_eq!(a.e.epoch(ROOM), Some(0));
}

#[test]
fn a_welcome_never_replaces_an_active_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut m = Client::new(tmp.path(), "mallory", 9);
    room_with(&mut server, &mut a, &mut [&mut b]);
    // Mallory makes her own group under the same room name and invites Bob to it.
    m.e.create_group(ROOM, false).unwrap();
    let kp = b.key_package();
    let fake = m.e.add(ROOM, &kp, &b.fp).unwrap();
    let err = b.e.join(ROOM, &fake.welcome.clone().unwrap(), 99).unwrap_err();
    assert!(matches!(err, E2eError::GroupExists(_)), "{err:?}");
    // Bob is still in the real group with Alice.
    server.send(a.e.encrypt(ROOM, b"still the real room").unwrap());
    assert_eq!(
        texts(&server.deliver(&mut b)),
        vec![(a.fp.clone(), "still the real room".to_owned())]
    );
    // Once removed from it (or after forgetting it), a new welcome is accepted.
    let p = a.e.remove(ROOM, &b.fp).unwrap();
    server.commit(&p).unwrap();
    server.deliver(&mut a);
    assert!(matches!(server.deliver(&mut b)[..], [Event::Commit { removed_me: true, .. }]));
    b.e.join(ROOM, &fake.welcome.unwrap(), 99).unwrap();
    assert_eq!(b.e.members(ROOM).len(), 2);
    assert!(b.e.log(ROOM, 10).unwrap().is_empty(), "the old group's log went with it");
}

#[test]
fn room_mode_is_chosen_by_the_creator_and_carried_by_the_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    assert_eq!(a.e.is_open(ROOM), None);
    for (room, open) in [("#open", true), ("#closed", false)] {
        a.e.create_group(room, open).unwrap();
        assert_eq!(a.e.is_open(room), Some(open), "{room}");
        let kp = b.key_package();
        let p = a.e.add(room, &kp, &b.fp).unwrap();
        a.e.process(room, 1, 0, &p.commit).unwrap();
        let joined = b.e.join(room, &p.welcome.unwrap(), 1).unwrap();
        assert_eq!(joined.open, open, "{room}");
        assert_eq!(joined.inviter_fp.as_deref(), Some(a.fp.as_str()));
        assert_eq!(b.e.is_open(room), Some(open), "{room}");
    }
    a.reopen();
    b.reopen();
    for c in [&a, &b] {
        assert_eq!(c.e.is_open("#open"), Some(true));
        assert_eq!(c.e.is_open("#closed"), Some(false));
        assert_eq!(c.e.is_open("#unknown"), None);
    }

    // A welcome into a group whose id carries no mode (or an unknown one) is refused.
    for mode in [None, Some("closed")] {
        let mut other = Raw::new(a.e.credential().to_vec());
        other.create_group("#x", mode);
        let (_, welcome) = other.add(&b.key_package());
        let err = b.e.join("#x", &welcome, 1).unwrap_err();
        assert!(matches!(err, E2eError::RoomMismatch { .. }), "{mode:?}: {err:?}");
        assert_eq!(b.e.is_open("#x"), None);
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
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
