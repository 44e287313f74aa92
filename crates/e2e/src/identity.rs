//! The binding between a Chatao identity and its MLS credential.
//!
//! A Chatao identity is an X25519 static key, shown as its fingerprint (`SHA256:` + base64 of the
//! SHA-256 of the public key, see `chatao_transport::keys`). MLS needs a signature key, so the
//! Ed25519 signing key is derived from the X25519 secret with HKDF-SHA256 (no salt, info
//! [`SIGNATURE_KEY_INFO`]): it is the same after every restart and on every device that holds the
//! Chatao key. The derivation is kept (rather than signing MLS messages with the X25519 key
//! itself through XEdDSA) so the X25519 key signs exactly one kind of statement, the binding
//! below, and MLS uses openmls' stock Ed25519 signer.
//!
//! Nobody else can check that derivation, so the credential carries a proof instead. The MLS
//! `BasicCredential` identity is [`CREDENTIAL_LEN`] bytes:
//!
//! ```text
//! fingerprint (50 ASCII bytes, canonical) || X25519 public key (32) || XEdDSA signature (64)
//! ```
//!
//! where the signature is Signal's XEdDSA (XEd25519), made with the X25519 private key, over
//! [`CREDENTIAL_LABEL`] || MLS signature public key (32) || fingerprint (50). A member is bound
//! (see [`verify_credential`]) when the fingerprint is the SHA-256 of that X25519 key and the
//! signature verifies for the leaf's MLS signature key; anything else is FORGED. A server that
//! copies a genuine credential next to its own MLS key fails the check (the statement names the
//! key), and one without the X25519 secret cannot sign a new statement.
//!
//! XEdDSA comes from the `xeddsa` crate (1.1.x) for signing and for the Montgomery-to-Edwards
//! conversion; verification is done here with `ed25519_dalek::VerifyingKey::verify_strict`
//! (the crate's own verify accepts small-order keys) after refusing non-canonical X25519 keys,
//! as the XEdDSA specification requires. The 64-byte nonce input `Z` is derived from the secret
//! with HKDF ([`XEDDSA_NONCE_INFO`]), so the credential is the same bytes after every restart
//! (a deterministic nonce as in Ed25519; the signed statement is fixed per MLS key anyway).
//! The crate feeds the clamped scalar, not its reduction mod q, into the nonce hash when the
//! sign bit needs no negation; that only changes the secret nonce, not what verifies. The unit
//! tests cross-check the crate against an implementation of the specification.

use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::types::SignatureScheme;
use sha2::{Digest, Sha256};
use xeddsa::xed25519::{PrivateKey as XPrivateKey, PublicKey as XPublicKey};
use xeddsa::{ConvertMont as _, Sign as _};

use chatao_transport::Fingerprint;

use crate::E2eError;

/// Domain separation of the statement the X25519 key signs (see the module docs).
pub const CREDENTIAL_LABEL: &[u8] = b"chatao mls credential v1";

/// HKDF info string of the XEdDSA nonce input `Z` of the credential signature.
pub const XEDDSA_NONCE_INFO: &[u8] = b"chatao xeddsa nonce v1";

/// Length of a canonical fingerprint: `SHA256:` + 43 base64 characters.
pub const FINGERPRINT_LEN: usize = 50;

/// Length of a credential identity: fingerprint, X25519 public key, XEdDSA signature.
pub const CREDENTIAL_LEN: usize = FINGERPRINT_LEN + 32 + 64;

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
pub(crate) fn fingerprint_of_secret(secret: &[u8; 32]) -> Fingerprint {
    chatao_transport::Keypair::from_secret(*secret).public().fingerprint()
}

/// The MLS credential identity of the Chatao identity `secret` for the MLS signature key
/// `signature_key`: fingerprint, X25519 public key and the XEdDSA signature binding the two
/// (see the module docs). Deterministic: the same inputs give the same bytes.
pub fn make_credential(secret: &[u8; 32], signature_key: &[u8]) -> Result<Vec<u8>, E2eError> {
    let keypair = chatao_transport::Keypair::from_secret(*secret);
    let public = *keypair.public().as_bytes();
    let fp = keypair.public().fingerprint();
    if fp.len() != FINGERPRINT_LEN {
        return Err(E2eError::Identity(format!("unexpected fingerprint form {fp}")));
    }
    let mut z = [0u8; 64];
    Hkdf::<Sha256>::new(None, secret)
        .expand(XEDDSA_NONCE_INFO, &mut z)
        .map_err(|e| E2eError::Identity(format!("cannot derive the XEdDSA nonce: {e}")))?;
    let statement = statement(signature_key, &fp);
    let signature: [u8; 64] = XPrivateKey(*secret).sign(&statement, FixedNonce(z));
    z.fill(0);
    let mut out = Vec::with_capacity(CREDENTIAL_LEN);
    out.extend_from_slice(fp.as_bytes());
    out.extend_from_slice(&public);
    out.extend_from_slice(&signature);
    Ok(out)
}

/// Checks that the credential identity `identity` binds its fingerprint to the MLS signature
/// key `signature_key`: the right length, a canonical fingerprint that is the SHA-256 of the
/// X25519 key it carries, and an XEdDSA signature by that key over [`CREDENTIAL_LABEL`] ||
/// `signature_key` || fingerprint. Returns the fingerprint, or why the member is FORGED.
pub fn verify_credential(
    identity: &[u8],
    signature_key: &[u8],
) -> Result<Fingerprint, &'static str> {
    let Some(fp) = claimed_fingerprint(identity) else {
        return Err("its credential is not a Chatao fingerprint");
    };
    if identity.len() != CREDENTIAL_LEN {
        return Err("its credential carries no proof binding its MLS key to its Chatao key");
    }
    let (Some(x_pub), Some(sig)) =
        (identity.get(FINGERPRINT_LEN..FINGERPRINT_LEN + 32), identity.get(FINGERPRINT_LEN + 32..))
    else {
        return Err("its credential carries no proof binding its MLS key to its Chatao key");
    };
    let (Ok(x_pub), Ok(sig)) = (<[u8; 32]>::try_from(x_pub), <[u8; 64]>::try_from(sig)) else {
        return Err("its credential carries no proof binding its MLS key to its Chatao key");
    };
    if chatao_transport::keys::PublicKey::from_bytes(x_pub).fingerprint() != fp {
        return Err("its Chatao key does not match its fingerprint");
    }
    if signature_key.len() != 32 {
        return Err("its MLS key is not an Ed25519 key");
    }
    if !xeddsa_verify(&x_pub, &statement(signature_key, &fp), &sig) {
        return Err("its MLS key is not signed by its Chatao key");
    }
    Ok(fp)
}

/// The statement the X25519 key signs for `signature_key`.
fn statement(signature_key: &[u8], fp: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CREDENTIAL_LABEL.len() + signature_key.len() + fp.len());
    m.extend_from_slice(CREDENTIAL_LABEL);
    m.extend_from_slice(signature_key);
    m.extend_from_slice(fp.as_bytes());
    m
}

/// XEdDSA verification (XEdDSA spec section 2.6): refuses a non-canonical Montgomery `u`
/// (u >= p, or the unused top bit set), converts it to the Edwards key with sign bit 0, and
/// verifies strictly (canonical `s`, no small-order key or `R`).
pub(crate) fn xeddsa_verify(x_pub: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    if !is_canonical_u(x_pub) {
        return false;
    }
    let Ok(ed_pub) = XPublicKey(*x_pub).convert_mont(0) else { return false };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&ed_pub) else { return false };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
}

/// True if `u` (little-endian) is below p = 2^255 - 19 (so also without the top bit).
fn is_canonical_u(u: &[u8; 32]) -> bool {
    // p in little-endian: 0xed, then 30 bytes of 0xff, then 0x7f.
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    for i in (0..32).rev() {
        if u[i] != p[i] {
            return u[i] < p[i];
        }
    }
    false // u == p
}

/// The "random" source handed to the XEdDSA signer: yields the derived 64-byte `Z` (and zeros
/// after it, never asked for). See the module docs for why a derived nonce input is sound.
struct FixedNonce([u8; 64]);

impl rand_core::TryRng for FixedNonce {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        rand_core::utils::next_word_via_fill(self)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        rand_core::utils::next_word_via_fill(self)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        for (i, b) in dest.iter_mut().enumerate() {
            *b = self.0.get(i).copied().unwrap_or(0);
        }
        self.0.fill(0);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for FixedNonce {}

/// The fingerprint a credential identity claims (verified or not): its first
/// [`FINGERPRINT_LEN`] bytes when they are a canonical fingerprint and the identity has the
/// length of a credential or of a bare fingerprint.
pub(crate) fn claimed_fingerprint(identity: &[u8]) -> Option<Fingerprint> {
    if identity.len() != CREDENTIAL_LEN && identity.len() != FINGERPRINT_LEN {
        return None;
    }
    let s = std::str::from_utf8(identity.get(..FINGERPRINT_LEN)?).ok()?;
    Fingerprint::parse(s).ok().filter(|f| *f == s)
}

/// True if `s` is a Chatao fingerprint in its one canonical spelling.
pub fn is_fingerprint(s: &str) -> bool {
    Fingerprint::is_canonical(s)
}

/// A printable form of a credential identity: the fingerprint it claims (verified or not: see
/// [`verify_credential`]), else `invalid:` followed by the hex of its first bytes. Never
/// contains control characters.
pub fn display_identity(identity: &[u8]) -> String {
    match claimed_fingerprint(identity) {
        Some(fp) => fp.into(),
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
    Fingerprint::of_digest(&Sha256::digest(signature_key).into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD_NO_PAD;

    #[test]
    fn derivation_is_deterministic_and_identity_bound() {
        let a = derive_signer(&[7u8; 32]).unwrap();
        let b = derive_signer(&[7u8; 32]).unwrap();
        let c = derive_signer(&[8u8; 32]).unwrap();
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), c.public());
        assert_eq!(a.public().len(), 32);
    }

    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::montgomery::MontgomeryPoint;
    use curve25519_dalek::scalar::{Scalar, clamp_integer};
    use sha2::Sha512;

    /// XEdDSA's calculate_key_pair, written from the specification (section 2.3) with
    /// curve25519-dalek alone: the Edwards key with sign bit 0 and its scalar.
    fn spec_key_pair(k: [u8; 32]) -> ([u8; 32], Scalar) {
        let k = Scalar::from_bytes_mod_order(clamp_integer(k));
        let e = EdwardsPoint::mul_base(&k).compress().to_bytes();
        let a = if e[31] & 0x80 != 0 { -k } else { k };
        let mut a_pub = EdwardsPoint::mul_base(&a).compress().to_bytes();
        assert_eq!(a_pub[31] & 0x80, 0);
        a_pub[31] &= 0x7f;
        (a_pub, a)
    }

    fn sha512_scalar(parts: &[&[u8]]) -> Scalar {
        let mut h = Sha512::new();
        for p in parts {
            h.update(p);
        }
        Scalar::from_bytes_mod_order_wide(&h.finalize().into())
    }

    /// xeddsa_sign from the specification (section 2.5), hash1 = SHA-512(0xfe 0xff*31 || ..).
    fn spec_sign(k: [u8; 32], m: &[u8], z: &[u8; 64]) -> [u8; 64] {
        let (a_pub, a) = spec_key_pair(k);
        let mut pad = [0xffu8; 32];
        pad[0] = 0xfe;
        let r = sha512_scalar(&[&pad, a.as_bytes(), m, z]);
        let big_r = EdwardsPoint::mul_base(&r).compress().to_bytes();
        let h = sha512_scalar(&[&big_r, &a_pub, m]);
        let s = r + h * a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&big_r);
        out[32..].copy_from_slice(s.as_bytes());
        out
    }

    /// xeddsa_verify from the specification (section 2.6), without any Ed25519 library.
    fn spec_verify(u: [u8; 32], m: &[u8], sig: &[u8; 64]) -> bool {
        let Some(a) = MontgomeryPoint(u).to_edwards(0) else { return false };
        let a_pub = a.compress().to_bytes();
        let r: [u8; 32] = sig[..32].try_into().unwrap();
        let Some(s) =
            Option::<Scalar>::from(Scalar::from_canonical_bytes(sig[32..].try_into().unwrap()))
        else {
            return false;
        };
        let h = sha512_scalar(&[&r, &a_pub, m]);
        let check = EdwardsPoint::mul_base(&s) - h * a;
        check.compress().to_bytes() == r
    }

    fn x25519_public(k: [u8; 32]) -> [u8; 32] {
        *chatao_transport::Keypair::from_secret(k).public().as_bytes()
    }

    #[test]
    fn xeddsa_crate_agrees_with_the_specification() {
        // The xeddsa crate's own calculate_key_pair vector, reproduced from the spec.
        let priv_in: [u8; 32] = [
            0xf8, 0xce, 0xd4, 0x2b, 0x07, 0xe7, 0x81, 0x0a, 0x04, 0xcc, 0x85, 0x4b, 0x03, 0x57,
            0x6d, 0xf1, 0xe4, 0xc0, 0xfe, 0xb1, 0x6d, 0x68, 0x5e, 0x0a, 0xc0, 0x42, 0x5e, 0x1c,
            0x3c, 0x5e, 0xb2, 0x47,
        ];
        let expected: [u8; 32] = [
            0xd7, 0x6d, 0x40, 0x33, 0x2e, 0xd1, 0x13, 0x88, 0xca, 0xa6, 0x9b, 0x50, 0x67, 0x6d,
            0x63, 0x08, 0x25, 0xcd, 0xda, 0xd0, 0x32, 0x46, 0xed, 0xd6, 0x1e, 0xd3, 0xca, 0x72,
            0xe6, 0xcb, 0x2c, 0x2e,
        ];
        assert_eq!(spec_key_pair(priv_in).0, expected);

        for seed in 0u8..24 {
            let k = [seed.wrapping_mul(37).wrapping_add(1); 32];
            let u = x25519_public(k);
            // convert_mont(u) is the Edwards key of the secret with sign bit 0.
            assert_eq!(XPublicKey(u).convert_mont(0).unwrap(), spec_key_pair(k).0);
            let m = [b"chatao test ".as_slice(), &[seed]].concat();
            let z = [seed; 64];
            // The crate's signatures verify under the spec's verification and ours...
            let crate_sig: [u8; 64] = XPrivateKey(k).sign(&m, FixedNonce(z));
            assert!(spec_verify(u, &m, &crate_sig), "seed {seed}");
            assert!(xeddsa_verify(&u, &m, &crate_sig));
            // ...and the spec's signatures verify under ours.
            let spec_sig = spec_sign(k, &m, &z);
            assert!(xeddsa_verify(&u, &m, &spec_sig), "seed {seed}");
            assert!(spec_verify(u, &m, &spec_sig));
            // Another message, another key, or a flipped bit do not verify.
            assert!(!xeddsa_verify(&u, b"other", &spec_sig));
            assert!(!xeddsa_verify(&x25519_public([seed ^ 0x55; 32]), &m, &spec_sig));
            for bit in [0usize, 255, 256, 511] {
                let mut bad = spec_sig;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!xeddsa_verify(&u, &m, &bad), "bit {bit}");
            }
        }
    }

    #[test]
    fn non_canonical_or_weak_x25519_keys_never_verify() {
        let k = [9u8; 32];
        let u = x25519_public(k);
        let m = b"m";
        let sig = spec_sign(k, m, &[1; 64]);
        assert!(xeddsa_verify(&u, m, &sig));
        let mut high = u;
        high[31] |= 0x80; // the same u with the unused bit set: refused, not masked
        assert!(!xeddsa_verify(&high, m, &sig));
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(!is_canonical_u(&p));
        p[0] = 0xec;
        assert!(is_canonical_u(&p));
        // u = 0 is a small-order point: its "signatures" are refused whatever they are.
        assert!(!xeddsa_verify(&[0u8; 32], m, &sig));
    }

    #[test]
    fn credential_binds_the_mls_key_to_the_fingerprint() {
        let secret = [5u8; 32];
        let fp = fingerprint_of_secret(&secret);
        let signer = derive_signer(&secret).unwrap();
        let cred = make_credential(&secret, signer.public()).unwrap();
        assert_eq!(cred.len(), CREDENTIAL_LEN);
        assert_eq!(cred, make_credential(&secret, signer.public()).unwrap(), "deterministic");
        assert_eq!(verify_credential(&cred, signer.public()), Ok(fp.clone()));
        assert_eq!(display_identity(&cred), fp);

        // A genuine credential next to another MLS key (copied by a server).
        let other = derive_signer(&[6u8; 32]).unwrap();
        assert_eq!(
            verify_credential(&cred, other.public()),
            Err("its MLS key is not signed by its Chatao key")
        );
        // A credential for the other key signed by another X25519 key, naming our fingerprint.
        let mut forged = make_credential(&[6u8; 32], other.public()).unwrap();
        forged[..FINGERPRINT_LEN].copy_from_slice(fp.as_bytes());
        assert_eq!(
            verify_credential(&forged, other.public()),
            Err("its Chatao key does not match its fingerprint")
        );
        // ...also with our X25519 key swapped in (the signature is then not ours).
        forged[FINGERPRINT_LEN..FINGERPRINT_LEN + 32].copy_from_slice(&x25519_public(secret));
        assert_eq!(
            verify_credential(&forged, other.public()),
            Err("its MLS key is not signed by its Chatao key")
        );
        // A bare fingerprint (no proof) or garbage.
        assert!(verify_credential(fp.as_bytes(), signer.public()).is_err());
        assert_eq!(display_identity(fp.as_bytes()), fp);
        assert!(verify_credential(&cred[..CREDENTIAL_LEN - 1], signer.public()).is_err());
        assert!(verify_credential(&cred, &signer.public()[..31]).is_err());
    }

    /// The credential bytes and the MLS key of a fixed identity, as the releases before the
    /// RustCrypto upgrade (issue 18: sha2 0.11, hkdf 0.13, xeddsa 1.1) made them: a member's
    /// credential and signature key must not change when a dependency does.
    #[test]
    fn credential_and_mls_key_bytes_are_pinned() {
        let secret = [5u8; 32];
        let signer = derive_signer(&secret).unwrap();
        let cred = make_credential(&secret, signer.public()).unwrap();
        assert_eq!(STANDARD_NO_PAD.encode(signer.public()), PINNED_MLS_KEY);
        assert_eq!(key_fingerprint(&cred), PINNED_CREDENTIAL_SHA256);
    }

    const PINNED_MLS_KEY: &str = "eTGhfarBYvz5Gx3M5tDHQg04TXMscb8F9g8czUiQgYE";
    const PINNED_CREDENTIAL_SHA256: &str = "SHA256:bv7IGQII575O1jCun5fqXMT5SBEED2vH0HkztqmDw6Y";

    #[test]
    fn only_canonical_fingerprints_are_identities() {
        let fp = fingerprint_of_secret(&[1u8; 32]);
        assert!(is_fingerprint(&fp));
        assert_eq!(claimed_fingerprint(fp.as_bytes()), Some(fp.clone()));
        assert!(!is_fingerprint(&fp.to_lowercase()));
        assert!(!is_fingerprint(&format!(" {fp}")));
        assert!(!is_fingerprint("alice"));
        assert_eq!(display_identity(b"a\x1b[2J"), "invalid:611b5b324a");
        assert!(display_identity(&[0u8; 40]).ends_with("..."));
    }
}
