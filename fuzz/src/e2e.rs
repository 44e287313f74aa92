//! The MLS engine (`chatao_e2e::E2e`) on what the server relays: room messages
//! (`process`), welcomes (`join`), fetched key packages (`add`) and credentials.

use std::cell::RefCell;

use chatao_e2e::{E2e, verify_credential};
use chatao_transport::Keypair;
use tempfile::TempDir;

/// The secret of the engine under test.
pub const OWN_SECRET: [u8; 32] = [0xe1; 32];
/// The secret whose key packages `add` expects: seeds hold genuine packages of this key
/// (crates/testkit/tests/fuzz_seeds.rs writes them), so mutations start from a valid one.
pub const PEER_SECRET: [u8; 32] = [0xe2; 32];
/// The E2E room the engine under test created (invite-only); `process` and `add` go there.
pub const ROOM: &str = "#fuzz";

/// One engine for the life of the process (opening one derives keys and writes its state),
/// in a temporary directory removed by [`reset`].
struct Harness {
    engine: E2e,
    peer_fp: String,
    next_id: u64,
    _dir: TempDir,
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn fingerprint(secret: [u8; 32]) -> chatao_transport::Fingerprint {
    Keypair::from_secret(secret).public().fingerprint()
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut engine = E2e::open(&dir.path().join("state"), &OWN_SECRET, &fingerprint(OWN_SECRET))
        .expect("a fresh E2E state opens");
    engine.set_sync(false);
    engine.create_group(ROOM, false).expect("a group for the fuzzed room");
    Harness { engine, peer_fp: fingerprint(PEER_SECRET).to_string(), next_id: 1, _dir: dir }
}

/// Drops this thread's engine and removes its directory.
pub fn reset() {
    HARNESS.with(|h| h.borrow_mut().take());
}

/// The first byte chooses the entry point, the rest is its input:
/// - 0: `process` in the room, as the next message id (a commit, a proposal or an
///   application message from a member, as the server delivers it);
/// - 1: `join` another room from the bytes as a welcome;
/// - 2: `add` the bytes as a fetched key package of [`PEER_SECRET`]'s key; a package that is
///   accepted makes a pending commit, which is discarded, so the group stays as it was;
/// - 3: `verify_credential`: a big-endian `u16` length, that many bytes of identity, the rest
///   as the signature key.
///
/// No panic; the engine stays usable (a failure rolls its state back).
pub fn e2e(data: &[u8]) {
    let Some((&op, rest)) = data.split_first() else { return };
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let h = cell.get_or_insert_with(harness);
        match op % 4 {
            0 => {
                h.next_id += 1;
                let _ = h.engine.process(ROOM, h.next_id, 0, rest);
            }
            1 => {
                h.next_id += 1;
                if h.engine.join("#joined", rest, h.next_id).is_ok() {
                    let _ = h.engine.forget("#joined");
                }
            }
            2 => {
                if h.engine.add(ROOM, rest, &h.peer_fp).is_ok() {
                    h.engine.discard_pending(ROOM).expect("a pending add is discarded");
                }
            }
            _ => {
                let (len, rest) = match rest {
                    [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
                    _ => (0, rest),
                };
                let (identity, key) = rest.split_at(len.min(rest.len()));
                let _ = verify_credential(identity, key);
            }
        }
        assert!(h.engine.is_member(ROOM), "the engine left its room on hostile input");
    });
}
