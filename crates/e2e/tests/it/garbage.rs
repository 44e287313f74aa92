//! Bodies from the network that are not what they should be give errors, never panics, and
//! leave the group working.
#![allow(clippy::unwrap_used)]

use crate::common::{Client, ROOM, Server, room_with, texts};
use chatao_e2e::{E2eError, MAX_BODY_LEN};
use proptest::prelude::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    server: Server,
    a: Client,
    b: Client,
    c: Client,
    valid: Vec<Vec<u8>>,
}

/// Alice and Bob in a room, Carol outside with a fresh key package; a few valid bodies of
/// every kind to mutate.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::default();
    let mut a = Client::new(tmp.path(), "alice", 1);
    let mut b = Client::new(tmp.path(), "bob", 2);
    let mut c = Client::new(tmp.path(), "carol", 3);
    room_with(&mut server, &mut a, &mut [&mut b]);
    let message = a.e.encrypt(ROOM, b"a valid message").unwrap();
    let kp = c.key_package();
    let mut scratch = Client::new(tmp.path(), "scratch", 7);
    scratch.e.create_group(ROOM, false).unwrap();
    let pending = scratch.e.add(ROOM, &kp, &c.fp).unwrap();
    let valid = vec![message, kp, pending.commit, pending.welcome.unwrap()];
    Fixture { _tmp: tmp, server, a, b, c, valid }
}

/// After garbage, the room still works both ways.
fn still_works(f: &mut Fixture) {
    f.server.messages.clear();
    let body = f.a.e.encrypt(ROOM, b"still here").unwrap();
    let id = f.b.e.last_id(ROOM).unwrap() + 1;
    let ev = f.b.e.process(ROOM, id, 0, &body).unwrap();
    assert_eq!(texts(&[ev]), vec![(f.a.fp.clone(), "still here".to_owned())]);
}

#[test]
fn known_bad_bodies_are_errors() {
    let mut f = fixture();
    let mut id = f.b.e.last_id(ROOM).unwrap();
    let mut next = || {
        id += 1;
        id
    };
    for body in [&[][..], b"\0", b"\x00\x01\x00\x02", &[0xff; 64]] {
        assert!(f.b.e.process(ROOM, next(), 0, body).is_err());
        assert!(f.b.e.add(ROOM, body, &f.c.fp).is_err());
        assert!(f.c.e.join(ROOM, body, 1).is_err());
    }
    // The wrong kind of valid body in each place.
    let [message, kp, commit, welcome] = f.valid.clone().try_into().unwrap();
    assert!(matches!(f.b.e.process(ROOM, next(), 0, &kp), Err(E2eError::Malformed(_))));
    assert!(matches!(f.b.e.process(ROOM, next(), 0, &welcome), Err(E2eError::Malformed(_))));
    // A commit of another group (same room name, other group id).
    assert!(matches!(f.b.e.process(ROOM, next(), 0, &commit), Err(E2eError::WrongGroup(_))));
    assert!(matches!(f.b.e.add(ROOM, &message, &f.c.fp), Err(E2eError::Malformed(_))));
    assert!(matches!(f.c.e.join(ROOM, &kp, 1), Err(E2eError::Malformed(_))));
    // A welcome for another room name than the server claims.
    assert!(matches!(f.c.e.join("#elsewhere", &welcome, 1), Err(E2eError::RoomMismatch { .. })));
    // Oversized bodies are refused unread.
    let huge = vec![0u8; MAX_BODY_LEN + 1];
    assert!(matches!(f.b.e.process(ROOM, next(), 0, &huge), Err(E2eError::TooLarge { .. })));
    // Unknown rooms.
    assert!(matches!(f.b.e.process("#nope", 1, 0, &message), Err(E2eError::NoGroup(_))));
    assert!(matches!(f.b.e.encrypt("#nope", b"x"), Err(E2eError::NoGroup(_))));
    // And the valid message, after all that, still decrypts.
    let ev = f.b.e.process(ROOM, next(), 0, &message).unwrap();
    assert_eq!(texts(&[ev]), vec![(f.a.fp.clone(), "a valid message".to_owned())]);
    // Carol's welcome (made by another group) still joins after the refused attempts.
    f.c.e.join(ROOM, &welcome, 1).unwrap();
    still_works(&mut f);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut f = fixture();
        let id = f.b.e.last_id(ROOM).unwrap() + 1;
        prop_assert!(f.b.e.process(ROOM, id, 0, &body).is_err());
        prop_assert!(f.b.e.add(ROOM, &body, &f.c.fp).is_err());
        prop_assert!(f.c.e.join(ROOM, &body, 1).is_err());
        still_works(&mut f);
    }

    #[test]
    fn mutated_valid_bodies_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut f = fixture();
        let mut body = f.valid[which].clone();
        for (at, byte) in &edits {
            let i = at.index(body.len());
            body[i] ^= byte | 1; // always a change
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len()));
        }
        let id = f.b.e.last_id(ROOM).unwrap() + 1;
        // Any outcome but a panic is acceptable for the wrong kinds; a damaged message of the
        // right kind must not decrypt.
        let processed = f.b.e.process(ROOM, id, 0, &body);
        if which == 0 {
            prop_assert!(processed.is_err(), "{processed:?}");
        }
        let _ = f.b.e.add(ROOM, &body, &f.c.fp);
        if f.b.e.has_pending(ROOM) {
            f.b.e.discard_pending(ROOM).unwrap();
        }
        let _ = f.c.e.join(ROOM, &body, 1);
        still_works(&mut f);
    }
}
