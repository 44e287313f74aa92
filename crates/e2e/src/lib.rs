//! Client-side MLS engine for Chatao's end-to-end encrypted rooms.
//!
//! The server is only the MLS delivery service: it stores key packages, orders each E2E room's
//! handshake and application messages, and relays welcomes. This crate is everything a client
//! does with MLS (RFC 9420, via openmls): its identity, one group per E2E room, encryption and
//! decryption, membership changes, key pinning, and the state kept on disk.
//!
//! Layout:
//! - [`engine`]: [`E2e`], the one type clients use (open, key packages, create/join, add/remove,
//!   pending commits, encrypt, process, members, log).
//! - [`identity`]: the Ed25519 MLS key derived from the Chatao X25519 key, and the credential
//!   that proves it (XEdDSA by the X25519 key); fingerprint checks.
//! - [`types`]: [`Event`], [`MemberInfo`], [`PinStatus`], [`Warning`], [`Pending`], [`Joined`].
//! - [`store`]: the state directory, its lock ([`StateLock`]: one process, one engine at a
//!   time), atomic writes. [`log`]: the decrypted-message log.
//! - [`error`]: the error type, [`E2eError`].
//!
//! Trust model in one paragraph: a member's MLS credential carries its Chatao fingerprint, its
//! X25519 public key (whose SHA-256 the fingerprint is) and an XEdDSA signature by that key over
//! its MLS signature key, so anyone can check that the MLS key belongs to the fingerprint
//! ([`verify_credential`]); a server cannot pass off a key of its own under a fingerprint the
//! user compared out of band. Every member is checked wherever the engine meets it (key package
//! on add, every member of a welcome, members added by commits, the sender of every message)
//! and flagged FORGED ([`PinStatus::is_forged`], [`E2eError::is_forgery`]) when the binding
//! fails, when its key differs from the key pinned on first sight (a second line of defence:
//! the key is derived from the Chatao key, so the pair never changes), or when it claims our own
//! fingerprint with another key. Adding a member also requires its credential to name exactly
//! the fingerprint the server lists for the nick. A room's mode (open or invite-only) is chosen
//! by its creator and read from the group id ([`E2e::is_open`]), never from the server.
//!
//! Every input that came from the network (key packages, welcomes, messages) is parsed with
//! bounds and errors, never panics; bodies above [`MAX_BODY_LEN`] are refused unread.
//!
//! # Example
//!
//! Alice makes a room's group and adds Bob; the server (here: plain variables) orders the
//! commit as message 1 and relays the welcome; then they chat.
//!
//! ```
//! # fn main() -> Result<(), chatao_e2e::E2eError> {
//! use chatao_e2e::{E2e, Event};
//! # let tmp = tempfile::tempdir().unwrap();
//! # let (alice_dir, bob_dir) = (tmp.path().join("a"), tmp.path().join("b"));
//! # let fp = |s: [u8; 32]| chatao_transport::Keypair::from_secret(s).public().fingerprint();
//! # let (alice_secret, bob_secret) = ([1u8; 32], [2u8; 32]);
//! # let (alice_fp, bob_fp) = (fp(alice_secret), fp(bob_secret));
//! let mut alice = E2e::open(&alice_dir, &alice_secret, &alice_fp)?;
//! let mut bob = E2e::open(&bob_dir, &bob_secret, &bob_fp)?;
//! let bob_package = bob.key_packages(1)?.remove(0); // uploaded, then fetched by Alice
//!
//! alice.create_group("#secret", false)?; // invite-only
//! assert_eq!(alice.is_open("#secret"), Some(false));
//! let pending = alice.add("#secret", &bob_package, &bob_fp)?; // checks and pins Bob's key
//! // The server accepts the commit at epoch `pending.epoch` as message 1 and echoes it.
//! let event = alice.process("#secret", 1, 0, &pending.commit)?;
//! assert!(matches!(event, Event::Commit { own: true, .. }));
//! let welcome = pending.welcome.expect("an add has a welcome");
//! let joined = bob.join("#secret", &welcome, 1)?;
//! assert!(joined.warnings.is_empty());
//! assert!(!joined.open);
//! assert_eq!(joined.inviter_fp.as_deref(), Some(alice_fp.as_str()));
//!
//! let body = alice.encrypt("#secret", b"hello Bob")?; // sent, ordered as message 2
//! match bob.process("#secret", 2, 0, &body)? {
//!     Event::Application { sender_fp, plaintext, .. } => {
//!         assert_eq!(sender_fp, alice_fp);
//!         assert_eq!(plaintext, b"hello Bob");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(bob.log("#secret", 10)?.len(), 1); // kept for after a restart
//! # Ok(())
//! # }
//! ```
//!
//! To add an operation: write it as a method of [`E2e`] whose body runs inside
//! `self.transact(..)` and ends with `s.save()`, so a failure rolls memory back and success is
//! on disk before the method returns; add its test in `tests/`.

pub mod engine;
pub mod error;
pub mod identity;
pub mod log;
pub mod store;
pub mod types;

pub use engine::{
    CIPHERSUITE, E2e, LAZY_SAVE_AFTER, LAZY_SAVE_EVERY, MAX_BODY_LEN, MAX_KEY_PACKAGES,
    MAX_PLAINTEXT_LEN, SENT_CACHE,
};
pub use error::E2eError;
pub use identity::{
    CREDENTIAL_LABEL, CREDENTIAL_LEN, SIGNATURE_KEY_INFO, display_identity, is_fingerprint,
    key_fingerprint, make_credential, verify_credential,
};
pub use log::{LogEntry, MAX_LOG_PER_ROOM};
pub use store::StateLock;
pub use types::{Event, Joined, MemberInfo, Pending, PinStatus, Warning};
