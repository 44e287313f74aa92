//! Deciding whether to trust the server's key, before we reveal anything: an explicit
//! `--server-key`, else trust on first use with the `known_servers` file (like SSH).

use std::path::PathBuf;

use chatao_transport::PublicKey;
use chatao_transport::known_servers::{KnownServers, KnownServersError, Verdict};

/// The client's policy for one connection.
#[derive(Debug, Clone)]
pub struct Trust {
    /// `HOST:PORT` as written in `known_servers`.
    pub host_port: String,
    /// Where pins live; `None` disables pinning (only with an explicit key or in tests).
    pub known_servers: Option<PathBuf>,
    /// A fingerprint the server must present (`--server-key`), checked even on first use.
    pub expected: Option<String>,
}

/// How the server's key was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trusted {
    /// It matched `--server-key`.
    Explicit,
    /// It matched the pinned key.
    Known,
    /// First contact: it is now pinned in the named file.
    NewlyPinned(PathBuf),
    /// No pinning was asked for.
    Unchecked,
}

/// Why the server's key was refused. Nothing has been sent when this happens.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @   WARNING: THE SERVER KEY FOR {host_port} HAS CHANGED!   \n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         Someone may be listening in on this connection (a man-in-the-middle attack),\n\
         or the server's key was replaced. Nothing was sent: not your key, not your nickname.\n\
         pinned key:    {pinned}\n\
         presented key: {presented}\n\
         Ask the server's operator for its fingerprint (`chataosrv --fingerprint`). If the change\n\
         is legitimate, delete the line starting with `{host_port} ` from\n\
         {file}\n\
         and connect again."
    )]
    Changed { host_port: String, pinned: String, presented: String, file: String },
    #[error(
        "the server at {host_port} presented key {presented}, but --server-key expects {expected}; \
         refusing to connect (nothing was sent)"
    )]
    NotExpected { host_port: String, expected: String, presented: String },
    #[error(transparent)]
    File(#[from] KnownServersError),
}

impl Trust {
    /// Checks `key` against the policy, pinning it on first contact.
    pub fn verify(&self, key: &PublicKey) -> Result<Trusted, TrustError> {
        let presented = key.fingerprint();
        let known = match &self.known_servers {
            Some(path) => Some(KnownServers::load(path)?),
            None => None,
        };
        if let Some(expected) = &self.expected {
            if *expected != presented {
                return Err(TrustError::NotExpected {
                    host_port: self.host_port.clone(),
                    expected: expected.clone(),
                    presented,
                });
            }
            if let Some(mut known) = known
                && known.check(&self.host_port, &presented) == Verdict::Unknown
            {
                known.pin(&self.host_port, &presented)?;
            }
            return Ok(Trusted::Explicit);
        }
        let Some(mut known) = known else { return Ok(Trusted::Unchecked) };
        match known.check(&self.host_port, &presented) {
            Verdict::Known => Ok(Trusted::Known),
            Verdict::Mismatch { pinned } => Err(TrustError::Changed {
                host_port: self.host_port.clone(),
                pinned,
                presented,
                file: known.path().display().to_string(),
            }),
            Verdict::Unknown => {
                known.pin(&self.host_port, &presented)?;
                Ok(Trusted::NewlyPinned(known.path().to_path_buf()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chatao_transport::Keypair;

    #[test]
    fn first_use_pins_then_a_changed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let trust = Trust {
            host_port: "example.org:7000".into(),
            known_servers: Some(dir.path().join("known_servers")),
            expected: None,
        };
        let k1 = Keypair::generate().unwrap();
        let k2 = Keypair::generate().unwrap();
        assert!(matches!(trust.verify(k1.public()), Ok(Trusted::NewlyPinned(_))));
        assert_eq!(trust.verify(k1.public()).unwrap(), Trusted::Known);
        let err = trust.verify(k2.public()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&k1.public().fingerprint()) && text.contains(&k2.public().fingerprint())
        );
        assert!(text.contains("man-in-the-middle") && text.contains("known_servers"));
    }

    #[test]
    fn an_explicit_key_is_checked_even_on_first_use() {
        let k1 = Keypair::generate().unwrap();
        let k2 = Keypair::generate().unwrap();
        let trust = Trust {
            host_port: "h:1".into(),
            known_servers: None,
            expected: Some(k1.public().fingerprint()),
        };
        assert_eq!(trust.verify(k1.public()).unwrap(), Trusted::Explicit);
        assert!(matches!(trust.verify(k2.public()), Err(TrustError::NotExpected { .. })));
    }
}
