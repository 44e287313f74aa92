//! What the engine hands back: events, members, warnings, pending commits.

use std::fmt;

/// How a member's MLS credential relates to what this client knows (its pins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinStatus {
    /// This client itself: its own fingerprint with its own derived key.
    Own,
    /// A bound credential (see [`crate::verify_credential`]) whose signature key equals the
    /// pinned one (pinned on first sight).
    Pinned,
    /// A bound credential not pinned yet (only seen by [`crate::E2e::members`] when the pins
    /// were lost; every commit or welcome pins what it shows).
    New,
    /// FORGED: a bound credential whose signature key differs from the pinned one. Since the
    /// key is derived from the Chatao key, this never happens legitimately (a second line of
    /// defence: only the holder of the X25519 key can bind another MLS key).
    Changed { pinned_key_fp: String },
    /// FORGED: the credential is not a Chatao credential, does not bind its MLS key to its
    /// fingerprint's X25519 key (see [`crate::verify_credential`]), or claims this client's own
    /// fingerprint with another key.
    Forged { reason: String },
    /// Not shown as FORGED, but not verified either: the sender's MLS key could not be checked
    /// (a message of a past epoch whose leaf this client has no record of). Show the sender as
    /// unverified.
    Unverified { reason: String },
}

impl PinStatus {
    /// True for the states to show loudly as FORGED.
    pub fn is_forged(&self) -> bool {
        matches!(self, PinStatus::Changed { .. } | PinStatus::Forged { .. })
    }
}

impl fmt::Display for PinStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinStatus::Own => f.write_str("you"),
            PinStatus::Pinned => f.write_str("pinned"),
            PinStatus::New => f.write_str("new (not pinned)"),
            PinStatus::Changed { pinned_key_fp } => {
                write!(f, "FORGED: key differs from the pinned key {pinned_key_fp}")
            }
            PinStatus::Forged { reason } => write!(f, "FORGED: {reason}"),
            PinStatus::Unverified { reason } => write!(f, "unverified: {reason}"),
        }
    }
}

/// One member of a room's group, for `/safety`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The credential's Chatao fingerprint, or `invalid:<hex>` (see [`crate::display_identity`]).
    pub fingerprint: String,
    /// Fingerprint of the member's MLS signature key (see [`crate::key_fingerprint`]).
    pub signature_key_fp: String,
    pub status: PinStatus,
    /// True for this client's own leaf.
    pub is_self: bool,
}

/// A member whose credential is forged, found while processing a commit or a welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The fingerprint the credential claims (or `invalid:<hex>`).
    pub fingerprint: String,
    /// Fingerprint of the signature key it carries.
    pub signature_key_fp: String,
    /// Always a forged status ([`PinStatus::is_forged`]).
    pub status: PinStatus,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "member {} (MLS key {}) is {}",
            self.fingerprint, self.signature_key_fp, self.status
        )
    }
}

/// Our commit, made but not yet ordered by the server. Send `commit` (and `welcome` to the
/// added member) with `epoch`; then merge when it comes back, or discard on `stale_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The group epoch the commit was made in: the epoch the server must still be at.
    pub epoch: u64,
    /// MLS wire bytes of the commit.
    pub commit: Vec<u8>,
    /// MLS wire bytes of the welcome for the added member, if the commit adds one.
    pub welcome: Option<Vec<u8>>,
    /// Fingerprints added by the commit.
    pub added: Vec<String>,
    /// Fingerprints removed by the commit.
    pub removed: Vec<String>,
}

/// Result of joining a group from a welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub room: String,
    pub epoch: u64,
    /// The room's mode, chosen by its creator and carried in the group id: true for an open
    /// room (members add whoever asks), false for invite-only.
    pub open: bool,
    /// The fingerprint of the member who signed the welcome (the inviter), from its MLS
    /// credential; `None` if that member's credential is forged (then it is in `warnings`).
    pub inviter_fp: Option<String>,
    pub members: Vec<MemberInfo>,
    /// Forged members found in the group: show loudly.
    pub warnings: Vec<Warning>,
}

/// What one ordered message of a room turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An application message, decrypted (and logged).
    Application {
        /// The sender's fingerprint from its MLS credential (or `invalid:<hex>`).
        sender_fp: String,
        /// The sender's pin status; show the message as FORGED if `status.is_forged()`.
        status: PinStatus,
        /// True for the echo of a message this client sent.
        own: bool,
        plaintext: Vec<u8>,
    },
    /// A commit, merged: the group moved to `epoch`.
    Commit {
        epoch: u64,
        /// The committer's fingerprint (None if it was not a member, which we never allow).
        committer_fp: Option<String>,
        /// True if it was our own pending commit.
        own: bool,
        added: Vec<String>,
        removed: Vec<String>,
        /// True if this commit removed this client: it can no longer read the room.
        removed_me: bool,
        /// True if we had a pending commit of our own that lost the race to this one; it was
        /// discarded, and the add/remove must be redone at the new epoch if still wanted.
        discarded_pending: bool,
        /// Forged members now in the group: show loudly.
        warnings: Vec<Warning>,
    },
    /// The message id was already processed; nothing was done.
    Duplicate,
    /// A message with nothing to show (a standalone proposal, which Chatao clients never send).
    Ignored,
}
