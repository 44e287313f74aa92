//! Chatao's secure transport: Noise XX over any `AsyncRead + AsyncWrite`.
//!
//! Layout (one layer per file):
//! - [`preamble`]: the 8-byte cleartext version exchange that precedes the handshake and is
//!   bound into it as the Noise prologue.
//! - [`handshake`]: `connect` (initiator, client) and `accept` (responder, server); both return a
//!   [`Connection`]. The client verifies the server's static key *before* it reveals its own.
//! - [`connection`]: length-prefixed Noise transport frames carrying a stream of newline-terminated
//!   records (one JSON message per record). Reads are cancel-safe; writes pack many records into
//!   as few frames as possible and issue one `write` per batch.
//! - [`keys`]: X25519 static keys in PKCS#8 PEM files: load, generate (mode 0600), fingerprint.
//! - [`known_servers`]: trust-on-first-use pinning of server keys (like SSH's `known_hosts`).
//! - [`private_file`]: the one atomic writer of private (0600) files, used by `keys` and by the
//!   E2E state of `chatao-e2e` and the client.
//!
//! This crate knows nothing of chat messages: it moves opaque records. `chatao-proto` gives them
//! meaning.

pub mod connection;
pub mod error;
pub mod handshake;
pub mod keys;
pub mod known_servers;
pub mod preamble;
pub mod private_file;

pub use connection::{Connection, RecordReader, Sealer};
pub use error::TransportError;
pub use handshake::{HandshakeError, accept, connect};
pub use keys::{Fingerprint, KeyError, Keypair, PublicKey};

/// The Noise protocol name. Changing it is a protocol version change.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Largest Noise message (the 2-byte length prefix caps it), authentication tag included.
pub const MAX_FRAME_LEN: usize = 65535;

/// Poly1305 tag appended to every sealed frame.
pub const TAG_LEN: usize = 16;

/// Largest plaintext one transport frame carries.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_FRAME_LEN - TAG_LEN;
