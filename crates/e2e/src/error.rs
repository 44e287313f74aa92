//! The crate's error type. Variants that mean "someone may be impersonating a member" are marked
//! by [`E2eError::is_forgery`] so the client can show them loudly instead of as a plain failure.

use std::io;
use std::path::PathBuf;

/// Why an E2E operation failed. Nothing here carries secret material; strings that came from the
/// network (fingerprints found in credentials, room names found in group ids) are already made
/// printable (see [`crate::display_identity`]).
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// Reading or writing the state directory failed.
    #[error("E2E state {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },

    /// The state file exists but cannot be understood (damaged, or written by a newer version).
    #[error("E2E state {} is damaged: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },

    /// Another process (or another open [`crate::E2e`]) uses this state directory; `pid` is
    /// the holder's, when it wrote one into the lock file.
    #[error(
        "E2E state {} is in use by {}",
        .dir.display(),
        match .pid { Some(p) => format!("chatao process {p}"), None => "another chatao process".into() }
    )]
    Locked { dir: PathBuf, pid: Option<u32> },

    /// `open` was given a fingerprint that is not the one of the secret, or the state directory
    /// belongs to another identity.
    #[error("E2E state identity mismatch: {0}")]
    Identity(String),

    /// There is no local group for this room (never joined, or forgotten).
    #[error("no E2E group for room {0}")]
    NoGroup(String),

    /// `create_group` for a room that already has an active group.
    #[error("an E2E group for room {0} already exists")]
    GroupExists(String),

    /// This client is no longer a member of the room's group (it was removed).
    #[error("this client is not a member of the E2E group of room {0} any more")]
    NotMember(String),

    /// A commit of ours is waiting for the server's verdict; merge or discard it first.
    #[error("a commit for room {0} is still pending; merge or discard it first")]
    PendingCommit(String),

    /// `merge_pending` / `discard_pending` without a pending commit.
    #[error("no pending commit for room {0}")]
    NoPendingCommit(String),

    /// The key package's credential names another fingerprint than the one the server listed for
    /// that nick. FORGED: never add such a member.
    #[error("FORGED key package: it claims fingerprint {found}, but {expected} was expected")]
    FingerprintMismatch { expected: String, found: String },

    /// The key package's signature key differs from the key pinned for that fingerprint.
    /// FORGED: the server (or someone) is trying to slip in another key under a known identity.
    #[error(
        "FORGED key package: the MLS key of {fingerprint} changed (pinned {pinned_key_fp}, \
         offered {offered_key_fp})"
    )]
    KeyChanged { fingerprint: String, pinned_key_fp: String, offered_key_fp: String },

    /// The key package's credential names `fingerprint` but does not prove that its MLS key
    /// belongs to that identity (no valid XEdDSA binding by the fingerprint's X25519 key, see
    /// [`crate::verify_credential`]). FORGED: someone without that key made it.
    #[error("FORGED key package: it claims {fingerprint}, but {reason}")]
    ForgedCredential { fingerprint: String, reason: String },

    /// The fingerprint is already a member of the group.
    #[error("{0} is already a member of the E2E group")]
    AlreadyMember(String),

    /// `remove` of a fingerprint that is not in the group.
    #[error("{0} is not a member of the E2E group")]
    NoSuchMember(String),

    /// A welcome made for another room than the one the server said.
    #[error("welcome is for room {found}, not {expected}")]
    RoomMismatch { expected: String, found: String },

    /// A message of another group arrived for this room.
    #[error("message belongs to another E2E group than room {0}'s")]
    WrongGroup(String),

    /// The bytes are not an MLS message of the expected kind.
    #[error("malformed MLS body: {0}")]
    Malformed(String),

    /// A body or plaintext above the crate's size limit.
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },

    /// An MLS message from this client that it cannot recognise any more (MLS cannot decrypt
    /// its own messages; the plaintext cache is in memory only).
    #[error("own MLS message of room {0} whose content is no longer known")]
    OwnMessage(String),

    /// openmls refused the operation (bad signature, wrong epoch, undecryptable, ...).
    #[error("MLS {op} failed: {detail}")]
    Mls { op: &'static str, detail: String },
}

impl E2eError {
    /// True for the variants that mean a forged or substituted member key: show them loudly.
    pub fn is_forgery(&self) -> bool {
        matches!(
            self,
            E2eError::FingerprintMismatch { .. }
                | E2eError::KeyChanged { .. }
                | E2eError::ForgedCredential { .. }
        )
    }

    pub(crate) fn mls(op: &'static str, err: impl std::fmt::Display) -> Self {
        E2eError::Mls { op, detail: err.to_string() }
    }
}
