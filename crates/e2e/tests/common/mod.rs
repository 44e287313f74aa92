//! Test helpers: clients with real keys and state directories, and a stand-in for the server's
//! delivery role (the real server is tested with real clients in the workspace's other crates;
//! here only its ordering rules matter: one id sequence per room, commits accepted only at the
//! room's current epoch).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chatao_e2e::{CIPHERSUITE, E2e, Event, Pending};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

pub const ROOM: &str = "#secret";

pub struct Client {
    pub e: E2e,
    pub fp: String,
    pub secret: [u8; 32],
    pub dir: PathBuf,
}

impl Client {
    pub fn new(root: &Path, name: &str, seed: u8) -> Client {
        let secret = [seed; 32];
        let fp = chatao_transport::Keypair::from_secret(secret).public().fingerprint();
        let dir = root.join(name);
        let mut e = E2e::open(&dir, &secret, &fp).unwrap();
        e.set_sync(false);
        Client { e, fp, secret, dir }
    }

    /// Closes and reopens the state (as after a restart).
    pub fn reopen(&mut self) {
        // The old instance is dropped before the state is opened again, so nothing of it is
        // alive; a throwaway instance in another directory holds its place meanwhile.
        let scratch = tempfile::tempdir().unwrap();
        let placeholder = E2e::open(scratch.path(), &self.secret, &self.fp).unwrap();
        drop(std::mem::replace(&mut self.e, placeholder));
        self.e = E2e::open(&self.dir, &self.secret, &self.fp).unwrap();
        self.e.set_sync(false);
    }

    pub fn key_package(&mut self) -> Vec<u8> {
        self.e.key_packages(1).unwrap().remove(0)
    }
}

/// One room's message order as the server keeps it.
#[derive(Default)]
pub struct Server {
    pub epoch: u64,
    pub messages: Vec<(u64, Vec<u8>)>,
    next_id: u64,
}

impl Server {
    /// Accepts a commit at the current epoch (the id it got), or refuses it as stale.
    pub fn commit(&mut self, pending: &Pending) -> Option<u64> {
        if pending.epoch != self.epoch {
            return None;
        }
        self.epoch += 1;
        Some(self.push(pending.commit.clone()))
    }

    pub fn send(&mut self, body: Vec<u8>) -> u64 {
        self.push(body)
    }

    fn push(&mut self, body: Vec<u8>) -> u64 {
        self.next_id += 1;
        self.messages.push((self.next_id, body));
        self.next_id
    }

    /// Hands the client every message after its last processed id, in order; returns the
    /// events (errors fail the test).
    pub fn deliver(&self, c: &mut Client) -> Vec<Event> {
        let last = c.e.last_id(ROOM).unwrap_or(0);
        self.messages
            .iter()
            .filter(|(id, _)| *id > last)
            .map(|(id, body)| c.e.process(ROOM, *id, 1_764_000_000_000 + id, body).unwrap())
            .collect()
    }
}

/// A key package with the given credential identity and a fresh signature key that is not
/// derived from any Chatao key: what a malicious server or member would forge.
pub fn forged_key_package(identity: &str) -> Vec<u8> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
        signature_key: signer.to_public_vec().into(),
    };
    let bundle = KeyPackage::builder().build(CIPHERSUITE, &provider, &signer, cwk).unwrap();
    MlsMessageOut::from(bundle.key_package().clone()).to_bytes().unwrap()
}

/// Application plaintexts of the events.
pub fn texts(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Application { sender_fp, plaintext, .. } => {
                Some((sender_fp.clone(), String::from_utf8(plaintext.clone()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// `creator` makes the room and adds each of `others` in turn (each add ordered by the server,
/// echoed to all current members, the new member joining from its welcome).
pub fn room_with(server: &mut Server, creator: &mut Client, others: &mut [&mut Client]) {
    creator.e.create_group(ROOM).unwrap();
    let mut joined: Vec<usize> = Vec::new();
    for i in 0..others.len() {
        let kp = others[i].key_package();
        let fp = others[i].fp.clone();
        let pending = creator.e.add(ROOM, &kp, &fp).unwrap();
        let id = server.commit(&pending).unwrap();
        let ev = server.deliver(creator);
        assert!(matches!(ev.last(), Some(Event::Commit { own: true, .. })), "{ev:?}");
        for &j in &joined {
            let ev = server.deliver(others[j]);
            assert!(matches!(ev.last(), Some(Event::Commit { own: false, .. })), "{ev:?}");
        }
        let welcome = pending.welcome.unwrap();
        let j = others[i].e.join(ROOM, &welcome, id).unwrap();
        assert!(j.warnings.is_empty(), "{:?}", j.warnings);
        joined.push(i);
    }
}
