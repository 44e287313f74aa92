//! The binding between a Chatao identity and its MLS credential.
//!
//! A Chatao identity is an X25519 static key, shown as its fingerprint (`SHA256:` + base64 of the
//! SHA-256 of the public key, see `chatao_transport::keys`). MLS needs a signature key, so the
//! Ed25519 signing key is derived from the X25519 secret with HKDF-SHA256 (no salt, info
//! [`SIGNATURE_KEY_INFO`]): it is the same after every restart and on every device that holds the
//! Chatao key, and nobody without that secret can make it. The MLS `BasicCredential` identity is
//! the UTF-8 fingerprint. So a (fingerprint, signature key) pair never legitimately changes, which
//! is what makes pinning it on first sight meaningful.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::types::SignatureScheme;
use sha2::{Digest, Sha256};

use crate::E2eError;

/// HKDF info string of the signature key derivation. Changing it changes every member's MLS key.
pub const SIGNATURE_KEY_INFO: &[u8] = b"chatao mls signature v1";

/// Most bytes of an invalid identity shown (hex) in [`display_identity`].
const MAX_SHOWN_IDENTITY: usize = 32;

/// Derives the MLS signing key pair of the Chatao identity whose X25519 secret is `secret`.
pub(crate) fn derive_signer(secret: &[u8; 32]) -> Result<SignatureKeyPair, E2eError> {
    let mut seed = [0u8; 32];
    // `expand` only fails for outputs longer than 255 hash lengths; 32 bytes always fit.
    Hkdf::<Sha256>::new(None, secret)
        .expand(SIGNATURE_KEY_INFO, &mut seed)
        .map_err(|e| E2eError::Identity(format!("cannot derive the MLS key: {e}")))?;
    let signing = SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes().to_vec();
    let pair = SignatureKeyPair::from_raw(SignatureScheme::ED25519, seed.to_vec(), public);
    // SigningKey zeroizes itself on drop; clear our copy of the seed as well.
    seed.fill(0);
    Ok(pair)
}

/// The fingerprint of the Chatao identity whose X25519 secret is `secret`.
pub(crate) fn fingerprint_of_secret(secret: &[u8; 32]) -> String {
    chatao_transport::Keypair::from_secret(*secret).public().fingerprint()
}

/// True if `s` is a Chatao fingerprint in its one canonical spelling.
pub fn is_fingerprint(s: &str) -> bool {
    chatao_transport::keys::parse_fingerprint(s).is_ok_and(|canonical| canonical == s)
}

/// The canonical fingerprint an MLS credential identity names, if it names one.
pub(crate) fn identity_fingerprint(identity: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(identity).ok()?;
    is_fingerprint(s).then(|| s.to_owned())
}

/// A printable form of a credential identity: the fingerprint if it is one, else `invalid:`
/// followed by the hex of its first bytes. Never contains control characters.
pub fn display_identity(identity: &[u8]) -> String {
    match identity_fingerprint(identity) {
        Some(fp) => fp,
        None => {
            let shown = identity.get(..MAX_SHOWN_IDENTITY).unwrap_or(identity);
            let mut out = String::from("invalid:");
            for b in shown {
                out.push_str(&format!("{b:02x}"));
            }
            if identity.len() > MAX_SHOWN_IDENTITY {
                out.push_str("...");
            }
            out
        }
    }
}

/// How an MLS signature key is shown to people: `SHA256:` + base64 of its SHA-256, like a
/// Chatao fingerprint (but of the Ed25519 key, so the two are never confused by value).
pub fn key_fingerprint(signature_key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(signature_key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_identity_bound() {
        let a = derive_signer(&[7u8; 32]).unwrap();
        let b = derive_signer(&[7u8; 32]).unwrap();
        let c = derive_signer(&[8u8; 32]).unwrap();
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), c.public());
        assert_eq!(a.public().len(), 32);
    }

    #[test]
    fn only_canonical_fingerprints_are_identities() {
        let fp = fingerprint_of_secret(&[1u8; 32]);
        assert!(is_fingerprint(&fp));
        assert_eq!(identity_fingerprint(fp.as_bytes()), Some(fp.clone()));
        assert!(!is_fingerprint(&fp.to_lowercase()));
        assert!(!is_fingerprint(&format!(" {fp}")));
        assert!(!is_fingerprint("alice"));
        assert_eq!(display_identity(b"a\x1b[2J"), "invalid:611b5b324a");
        assert!(display_identity(&[0u8; 40]).ends_with("..."));
    }
}
