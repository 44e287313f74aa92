//! Test helpers: clients with real keys and state directories, and a stand-in for the server's
//! delivery role (the real server is tested with real clients in the workspace's other crates;
//! here only its ordering rules matter: one id sequence per room, commits accepted only at the
//! room's current epoch).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chatao_e2e::{CIPHERSUITE, E2e, Event, Pending};
use openmls::prelude::tls_codec::DeserializeBytes as _;
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
        Client { e, fp: fp.to_string(), secret, dir }
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

    /// Accepts a commit made outside the engine (by a [`Raw`] client) at the current epoch.
    pub fn commit_raw(&mut self, body: Vec<u8>) -> u64 {
        self.epoch += 1;
        self.push(body)
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

/// A client run on raw openmls, outside the engine and its checks: a modified client, or a
/// malicious server holding its own MLS keys. Its credential identity is whatever the test
/// gives it (a copied genuine credential, a bare fingerprint, a properly bound one, ...).
pub struct Raw {
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    pub identity: Vec<u8>,
    pub group: Option<MlsGroup>,
}

impl Raw {
    /// A raw client with a fresh MLS key that no Chatao key has bound.
    pub fn new(identity: Vec<u8>) -> Raw {
        Raw::with_signer(identity, SignatureKeyPair::new(SignatureScheme::ED25519).unwrap())
    }

    pub fn with_signer(identity: Vec<u8>, signer: SignatureKeyPair) -> Raw {
        Raw { provider: OpenMlsRustCrypto::default(), signer, identity, group: None }
    }

    fn cwk(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.identity.clone()).into(),
            signature_key: self.signer.to_public_vec().into(),
        }
    }

    pub fn key_package(&self) -> Vec<u8> {
        let bundle = KeyPackage::builder()
            .build(CIPHERSUITE, &self.provider, &self.signer, self.cwk())
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone()).to_bytes().unwrap()
    }

    /// Creates a group with the id `chatao/<room>/<mode>/<16 bytes>` (mode as given, or none).
    pub fn create_group(&mut self, room: &str, mode: Option<&str>) {
        let mut gid = b"chatao/".to_vec();
        gid.extend_from_slice(room.as_bytes());
        if let Some(mode) = mode {
            gid.push(b'/');
            gid.extend_from_slice(mode.as_bytes());
        }
        gid.push(b'/');
        gid.extend_from_slice(&[7u8; 16]);
        let group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(&gid))
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .with_wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .build(&self.provider, &self.signer, self.cwk())
            .unwrap();
        self.group = Some(group);
    }

    /// Commits the addition of `key_package` (bytes), merges it; returns (commit, welcome).
    pub fn add(&mut self, key_package: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let kp = match MlsMessageIn::tls_deserialize_exact_bytes(key_package).unwrap().extract() {
            MlsMessageBodyIn::KeyPackage(kp) => {
                kp.validate(self.provider.crypto(), ProtocolVersion::Mls10).unwrap()
            }
            other => panic!("{other:?}"),
        };
        let group = self.group.as_mut().unwrap();
        let (commit, welcome, _) = group.add_members(&self.provider, &self.signer, &[kp]).unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        (commit.to_bytes().unwrap(), welcome.to_bytes().unwrap())
    }

    /// Joins from a welcome (MLS wire bytes).
    pub fn join(&mut self, welcome: &[u8]) {
        let welcome = match MlsMessageIn::tls_deserialize_exact_bytes(welcome).unwrap().extract() {
            MlsMessageBodyIn::Welcome(w) => w,
            other => panic!("{other:?}"),
        };
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .build();
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None).unwrap();
        self.group = Some(staged.into_group(&self.provider).unwrap());
    }

    pub fn encrypt(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let group = self.group.as_mut().unwrap();
        group.create_message(&self.provider, &self.signer, plaintext).unwrap().to_bytes().unwrap()
    }
}

/// The credential identity inside a key package (MLS wire bytes).
pub fn credential_of(key_package: &[u8]) -> Vec<u8> {
    let provider = OpenMlsRustCrypto::default();
    match MlsMessageIn::tls_deserialize_exact_bytes(key_package).unwrap().extract() {
        MlsMessageBodyIn::KeyPackage(kp) => {
            let kp = kp.validate(provider.crypto(), ProtocolVersion::Mls10).unwrap();
            BasicCredential::try_from(kp.leaf_node().credential().clone())
                .unwrap()
                .identity()
                .to_vec()
        }
        other => panic!("{other:?}"),
    }
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
    creator.e.create_group(ROOM, false).unwrap();
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
