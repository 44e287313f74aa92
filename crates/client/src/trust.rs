//! Deciding whether to trust the server's key, before we reveal anything: an explicit
//! `--server-key`, else trust on first use with the `known_servers` file (like SSH).
//!
//! With several servers (the nodes of one cluster, which all present the same key), an
//! address seen for the first time is judged by its list: if another address of the list is
//! pinned, the new one must present that key (it is then pinned silently); any other key is
//! refused as a possible man in the middle ([`Trust::verify_among`]).

use std::path::PathBuf;

use chatao_transport::Fingerprint;
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
    pub expected: Option<Fingerprint>,
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
    /// First contact with this address, but its key is the one pinned for `sibling`, another
    /// address of the same server list (a node of the same cluster): now pinned in `file`.
    PinnedAsSibling { sibling: String, file: PathBuf },
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
    Changed { host_port: String, pinned: Fingerprint, presented: Fingerprint, file: String },
    #[error(
        "the server at {host_port} presented key {presented}, but --server-key expects {expected}; \
         refusing to connect (nothing was sent)"
    )]
    NotExpected { host_port: String, expected: Fingerprint, presented: Fingerprint },
    #[error(
        "\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @   WARNING: {host_port} PRESENTS ANOTHER KEY THAN ITS CLUSTER!   \n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         All the servers of one list are nodes of one cluster and present the same key, but\n\
         {host_port} (never seen before) presented {presented},\n\
         while {sibling} is pinned to {pinned}.\n\
         Someone may be listening in on this connection (a man-in-the-middle attack). Nothing was\n\
         sent: not your key, not your nickname. If {host_port} really is another server, connect\n\
         to it on its own (not in a list with {sibling})."
    )]
    NotSibling { host_port: String, presented: Fingerprint, sibling: String, pinned: Fingerprint },
    #[error(transparent)]
    File(#[from] KnownServersError),
}

impl Trust {
    /// Checks `key` against the policy, pinning it on first contact.
    pub fn verify(&self, key: &PublicKey) -> Result<Trusted, TrustError> {
        self.verify_among(key, &[])
    }

    /// As [`Trust::verify`], for an address that is one of a list: `siblings` are the other
    /// addresses (`HOST:PORT` as in `known_servers`). A pin for this address decides as usual
    /// (a contradicting key is refused). Without one: if some sibling is pinned, the key must
    /// be pinned for one of them ([`Trusted::PinnedAsSibling`], and it is pinned for this
    /// address too), else it is refused ([`TrustError::NotSibling`]); if none is, this is a
    /// plain first use.
    pub fn verify_among(
        &self,
        key: &PublicKey,
        siblings: &[String],
    ) -> Result<Trusted, TrustError> {
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
                let mut pinned_sibling = None;
                for sibling in siblings {
                    match known.check(sibling, &presented) {
                        Verdict::Known => {
                            known.pin(&self.host_port, &presented)?;
                            return Ok(Trusted::PinnedAsSibling {
                                sibling: sibling.clone(),
                                file: known.path().to_path_buf(),
                            });
                        }
                        Verdict::Mismatch { pinned } => {
                            pinned_sibling.get_or_insert((sibling.clone(), pinned));
                        }
                        Verdict::Unknown => {}
                    }
                }
                if let Some((sibling, pinned)) = pinned_sibling {
                    return Err(TrustError::NotSibling {
                        host_port: self.host_port.clone(),
                        presented,
                        sibling,
                        pinned,
                    });
                }
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
            text.contains(k1.public().fingerprint().as_str())
                && text.contains(k2.public().fingerprint().as_str())
        );
        assert!(text.contains("man-in-the-middle") && text.contains("known_servers"));
    }

    #[test]
    fn a_new_address_of_a_list_must_present_the_key_of_its_pinned_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let trust = |host_port: &str| Trust {
            host_port: host_port.into(),
            known_servers: Some(dir.path().join("known_servers")),
            expected: None,
        };
        let list = ["a.example:7000".to_owned(), "b.example:7000".into(), "c.example:7000".into()];
        let others = |me: &str| list.iter().filter(|s| *s != me).cloned().collect::<Vec<_>>();
        let cluster = Keypair::generate().unwrap();
        let intruder = Keypair::generate().unwrap();
        // Nobody pinned yet: the first address is a plain first use.
        let first = trust(&list[0]).verify_among(cluster.public(), &others(&list[0])).unwrap();
        assert!(matches!(first, Trusted::NewlyPinned(_)));
        // The second presents the same key: pinned silently, as a sibling of the first.
        let second = trust(&list[1]).verify_among(cluster.public(), &others(&list[1])).unwrap();
        assert!(
            matches!(second, Trusted::PinnedAsSibling { ref sibling, .. } if sibling == &list[0])
        );
        assert_eq!(trust(&list[1]).verify(cluster.public()).unwrap(), Trusted::Known);
        // The third presents another key: refused, naming both keys, and not pinned.
        let err = trust(&list[2]).verify_among(intruder.public(), &others(&list[2])).unwrap_err();
        assert!(matches!(err, TrustError::NotSibling { .. }));
        let text = err.to_string();
        assert!(text.contains(intruder.public().fingerprint().as_str()), "{text}");
        assert!(text.contains(cluster.public().fingerprint().as_str()), "{text}");
        assert!(text.contains("man-in-the-middle"), "{text}");
        assert!(matches!(
            trust(&list[2]).verify_among(cluster.public(), &others(&list[2])),
            Ok(Trusted::PinnedAsSibling { .. })
        ));
        // A pinned address that changes its key is refused as ever, whatever its siblings say.
        let err = trust(&list[0]).verify_among(intruder.public(), &others(&list[0])).unwrap_err();
        assert!(matches!(err, TrustError::Changed { .. }));
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
