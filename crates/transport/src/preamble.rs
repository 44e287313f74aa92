//! The cleartext version exchange that precedes the Noise handshake.
//!
//! Each side sends 8 bytes: the magic `CHATAO` and its protocol version as a big-endian u16. The
//! client speaks first; the server always answers with its own preamble, even when the versions
//! differ, so that both sides can say which two versions met. Both preambles (client's, then
//! server's) form the Noise prologue, so a man in the middle who rewrites either one makes the
//! handshake fail.

/// The 6 magic bytes that open every Chatao connection.
pub const MAGIC: &[u8; 6] = b"CHATAO";

/// Length of a preamble on the wire.
pub const PREAMBLE_LEN: usize = 8;

/// One side's preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    pub version: u16,
}

impl Preamble {
    pub fn to_bytes(self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[..6].copy_from_slice(MAGIC);
        b[6..].copy_from_slice(&self.version.to_be_bytes());
        b
    }

    /// Parses a received preamble; `None` if the magic is wrong (not a Chatao peer).
    pub fn parse(b: &[u8; PREAMBLE_LEN]) -> Option<Preamble> {
        if &b[..6] != MAGIC {
            return None;
        }
        Some(Preamble { version: u16::from_be_bytes([b[6], b[7]]) })
    }
}

/// The Noise prologue: the client's preamble followed by the server's.
pub fn prologue(client: Preamble, server: Preamble) -> [u8; 2 * PREAMBLE_LEN] {
    let mut p = [0u8; 2 * PREAMBLE_LEN];
    p[..PREAMBLE_LEN].copy_from_slice(&client.to_bytes());
    p[PREAMBLE_LEN..].copy_from_slice(&server.to_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_bytes() {
        let p = Preamble { version: 1 };
        assert_eq!(p.to_bytes(), *b"CHATAO\x00\x01");
        assert_eq!(Preamble::parse(&p.to_bytes()), Some(p));
        assert_eq!(Preamble::parse(b"SSH-2.0-"), None);
        assert_eq!(prologue(p, Preamble { version: 2 }), *b"CHATAO\x00\x01CHATAO\x00\x02");
    }
}
