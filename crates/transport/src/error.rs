//! Errors of an established connection. Every one of them ends the connection: a Noise
//! transport cannot skip a frame, so there is nothing to resume.

/// Why reading or writing an established connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Authentication of a frame failed: it was tampered with, replayed, reordered or forged.
    #[error("a frame failed authentication (tampered, replayed or forged)")]
    Decrypt,
    /// A length prefix announced a frame too short to hold the authentication tag.
    #[error("malformed frame: length {0} is shorter than the authentication tag")]
    FrameTooShort(usize),
    /// The peer sent more than `max` bytes without ending a record.
    #[error("record over the {max}-byte limit")]
    RecordTooLarge { max: usize },
    /// The peer closed the connection in the middle of a frame or a record.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The peer started a frame or record and did not finish it within the stall limit.
    #[error("the peer stalled in the middle of a message")]
    Stalled,
    /// Sealing failed (only on nonce exhaustion, after 2^64 frames).
    #[error("could not encrypt a frame")]
    Encrypt,
}
