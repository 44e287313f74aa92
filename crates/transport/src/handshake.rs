//! The Noise XX handshake, after the cleartext preamble exchange (see [`crate::preamble`]).
//!
//! ```text
//! client -> server   preamble "CHATAO" v                      (clear)
//! server -> client   preamble "CHATAO" v                      (clear)
//! client -> server   XX message 1: e                          (len16 + bytes)
//! server -> client   XX message 2: e, ee, s, es               (server key revealed, encrypted)
//!                    -- client checks the server key here, before revealing anything --
//! client -> server   XX message 3: s, se                      (client key revealed, encrypted)
//! ```
//! All three handshake payloads are empty, so every message has one exact length (with
//! X25519 keys of 32 bytes and a 16-byte tag): message 1 is [`MSG1_LEN`] = 32 bytes, message 2
//! [`MSG2_LEN`] = 32 + 48 + 16 = 96, message 3 [`MSG3_LEN`] = 48 + 16 = 64. Each side reads a
//! message only if its length prefix announces exactly that length, into a stack buffer of that
//! size: a peer cannot make either side allocate before it is authenticated, and a prefix of any
//! other length ends the handshake at once with [`HandshakeError::WrongLength`], without
//! reading further. The preamble is a fixed [`PREAMBLE_LEN`] bytes, read the same way.
//!
//! Neither function has a timeout of its own: callers wrap them in one (the server's
//! `HANDSHAKE_TIMEOUT`), since the reads here are not cancel-safe and a cancelled handshake must
//! drop the stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::NOISE_PARAMS;
use crate::connection::Connection;
use crate::keys::{Keypair, PublicKey};
use crate::preamble::{PREAMBLE_LEN, Preamble, prologue};

/// Length of XX message 1 (`e`): the initiator's ephemeral key, in clear, empty payload.
pub const MSG1_LEN: usize = 32;

/// Length of XX message 2 (`e, ee, s, es`): the responder's ephemeral key, its static key
/// encrypted (32 + tag), and the empty payload's tag.
pub const MSG2_LEN: usize = 32 + (32 + crate::TAG_LEN) + crate::TAG_LEN;

/// Length of XX message 3 (`s, se`): the initiator's static key encrypted (32 + tag) and the
/// empty payload's tag.
pub const MSG3_LEN: usize = (32 + crate::TAG_LEN) + crate::TAG_LEN;

/// The largest handshake message either side writes or reads.
const MAX_MSG_LEN: usize = MSG2_LEN;

/// The protocol version this build speaks (the same as `chatao_proto::PROTOCOL_VERSION`).
pub const VERSION: u16 = 1;

/// A reason the client gives for refusing the server's key (for example a pinning mismatch).
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// Why a handshake failed. The connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("i/o during handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection during the handshake")]
    Closed,
    #[error("the peer does not speak the Chatao protocol")]
    NotChatao,
    #[error(
        "protocol version mismatch: this side speaks version {ours}, the peer speaks version {theirs}"
    )]
    VersionMismatch { ours: u16, theirs: u16 },
    /// Noise failed: a tampered handshake message, a man in the middle rewriting the preamble, or
    /// a bad key. Deliberately vague: details help attackers, not users.
    #[error("the encrypted handshake failed (tampered with, or not a Chatao peer)")]
    Noise(#[from] snow::Error),
    #[error("malformed handshake message")]
    Malformed,
    /// A length prefix announced a handshake message of another length than the one this step
    /// of the handshake has; nothing after the prefix was read.
    #[error("handshake message of {got} bytes where {want} were expected")]
    WrongLength { got: usize, want: usize },
    /// The client's verifier refused the server's key.
    #[error("{0}")]
    Rejected(Rejection),
}

fn noise_builder(keys: &Keypair) -> Result<snow::Builder<'_>, HandshakeError> {
    let params = NOISE_PARAMS.parse().map_err(|_| HandshakeError::Malformed)?;
    Ok(snow::Builder::new(params).local_private_key(keys.secret_bytes())?)
}

async fn read_preamble<S: AsyncRead + Unpin>(s: &mut S) -> Result<Preamble, HandshakeError> {
    let mut b = [0u8; PREAMBLE_LEN];
    read_exact(s, &mut b).await?;
    Preamble::parse(&b).ok_or(HandshakeError::NotChatao)
}

async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> Result<(), HandshakeError> {
    match s.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HandshakeError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Reads one handshake message that must be exactly `N` bytes long, into a buffer of `N` bytes
/// on the stack. A prefix announcing any other length fails before anything more is read.
async fn read_frame<S: AsyncRead + Unpin, const N: usize>(
    s: &mut S,
) -> Result<[u8; N], HandshakeError> {
    let mut len = [0u8; 2];
    read_exact(s, &mut len).await?;
    let got = usize::from(u16::from_be_bytes(len));
    if got != N {
        return Err(HandshakeError::WrongLength { got, want: N });
    }
    let mut frame = [0u8; N];
    read_exact(s, &mut frame).await?;
    Ok(frame)
}

async fn write_frame<S: AsyncWrite + Unpin>(
    s: &mut S,
    hs: &mut snow::HandshakeState,
    want: usize,
) -> Result<(), HandshakeError> {
    let mut buf = [0u8; 2 + MAX_MSG_LEN];
    let n = hs.write_message(&[], &mut buf[2..])?;
    // The peer accepts only the exact length, so this side must never write another.
    if n != want {
        return Err(HandshakeError::Malformed);
    }
    let len = u16::try_from(n).map_err(|_| HandshakeError::Malformed)?;
    buf[..2].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf[..2 + n]).await?;
    s.flush().await?;
    Ok(())
}

fn read_noise(hs: &mut snow::HandshakeState, frame: &[u8]) -> Result<(), HandshakeError> {
    // Room for the payload: a message's payload is never longer than the message.
    let mut payload = [0u8; MAX_MSG_LEN];
    let n = hs.read_message(frame, &mut payload)?;
    // Chatao sends empty handshake payloads; anything else is someone else's protocol.
    if n != 0 {
        return Err(HandshakeError::Malformed);
    }
    Ok(())
}

fn remote_key(hs: &snow::HandshakeState) -> Result<PublicKey, HandshakeError> {
    hs.get_remote_static().and_then(PublicKey::from_slice).ok_or(HandshakeError::Malformed)
}

/// Runs the client side: sends our preamble, checks the server's, performs Noise XX as
/// initiator, and calls `verify` with the server's static key before revealing our own key.
/// Returns the established connection, or the first error; `verify`'s error comes back as
/// [`HandshakeError::Rejected`].
pub async fn connect<S, F>(
    mut stream: S,
    keys: &Keypair,
    verify: F,
) -> Result<Connection<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&PublicKey) -> Result<(), Rejection>,
{
    let ours = Preamble { version: VERSION };
    stream.write_all(&ours.to_bytes()).await?;
    stream.flush().await?;
    let theirs = read_preamble(&mut stream).await?;
    if theirs.version != VERSION {
        return Err(HandshakeError::VersionMismatch { ours: VERSION, theirs: theirs.version });
    }
    let prologue = prologue(ours, theirs);
    let mut hs = noise_builder(keys)?.prologue(&prologue)?.build_initiator()?;
    write_frame(&mut stream, &mut hs, MSG1_LEN).await?;
    let msg2 = read_frame::<_, MSG2_LEN>(&mut stream).await?;
    read_noise(&mut hs, &msg2)?;
    let server_key = remote_key(&hs)?;
    verify(&server_key).map_err(HandshakeError::Rejected)?;
    write_frame(&mut stream, &mut hs, MSG3_LEN).await?;
    let noise = hs.into_stateless_transport_mode()?;
    Ok(Connection::new(stream, noise, server_key))
}

/// Runs the server side: reads the client's preamble, always answers with ours, then performs
/// Noise XX as responder. The caller decides what to do with the client's key
/// ([`Connection::remote_key`]): allowlists and bans are not this layer's business.
pub async fn accept<S>(mut stream: S, keys: &Keypair) -> Result<Connection<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let theirs = read_preamble(&mut stream).await?;
    let ours = Preamble { version: VERSION };
    stream.write_all(&ours.to_bytes()).await?;
    stream.flush().await?;
    if theirs.version != VERSION {
        return Err(HandshakeError::VersionMismatch { ours: VERSION, theirs: theirs.version });
    }
    let prologue = prologue(theirs, ours);
    let mut hs = noise_builder(keys)?.prologue(&prologue)?.build_responder()?;
    let msg1 = read_frame::<_, MSG1_LEN>(&mut stream).await?;
    read_noise(&mut hs, &msg1)?;
    write_frame(&mut stream, &mut hs, MSG2_LEN).await?;
    let msg3 = read_frame::<_, MSG3_LEN>(&mut stream).await?;
    read_noise(&mut hs, &msg3)?;
    let client_key = remote_key(&hs)?;
    let noise = hs.into_stateless_transport_mode()?;
    Ok(Connection::new(stream, noise, client_key))
}
