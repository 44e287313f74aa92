//! Validated names. A value of these types always satisfies its rules, so code that holds one
//! never re-checks it, and deserialising an invalid one fails.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Serialize};

/// Longest nickname, in characters (all allowed characters are ASCII, so also bytes).
pub const MAX_NICK_LEN: usize = 32;
/// Longest room name, `#` included.
pub const MAX_ROOM_LEN: usize = 33;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("nickname must be 1 to {MAX_NICK_LEN} letters, digits, '_' or '-'")]
    Nick,
    #[error("room name must be '#' followed by 1 to {} letters, digits, '_' or '-'", MAX_ROOM_LEN - 1)]
    Room,
    #[error("a key fingerprint is `SHA256:` followed by {FINGERPRINT_B64_LEN} base64 characters")]
    Fingerprint,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A nickname: 1 to 32 ASCII letters, digits, `_` or `-`. Comparison is case-sensitive on the
/// wire; the server treats nicknames that differ only in case, or only by ASCII look-alikes
/// (`alice`, `ALICE`, `aIice`, `a1ice`), as the same nickname ([`Nick::folded`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nick(String);

impl Nick {
    /// Checks `s` against the nickname rules.
    pub fn parse(s: &str) -> Result<Nick, NameError> {
        if s.is_empty() || s.len() > MAX_NICK_LEN || !s.chars().all(is_name_char) {
            return Err(NameError::Nick);
        }
        Ok(Nick(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The key used for uniqueness and ownership: the nickname's confusable [`skeleton`], so
    /// `Alice`, `aIice` and `a1ice` are one nickname. Shown nowhere: display keeps the
    /// nickname as typed.
    pub fn folded(&self) -> String {
        skeleton(&self.0)
    }
}

/// The confusable skeleton of a nickname (the idea of Unicode TR39's `skeleton`, for the ASCII
/// that nicknames allow): two nicknames that a reader could mistake for each other have the
/// same skeleton. Case is folded first; then `i`, `l`, `1` and `|` become `l` (with case
/// folded, capital `I` reads as `l` and as `i`, so the three are one class), `0` becomes `o`,
/// and the pairs `rn`, `vv` and `cl` become `m`, `w` and `d` (after the classes: `c1` is `d`
/// too). Idempotent: the skeleton of a skeleton is itself.
pub fn skeleton(s: &str) -> String {
    let classes = s.chars().map(|c| match c.to_ascii_lowercase() {
        'i' | 'l' | '1' | '|' => 'l',
        '0' => 'o',
        c => c,
    });
    let mut out = String::with_capacity(s.len());
    let mut chars = classes.peekable();
    while let Some(c) = chars.next() {
        let pair = match (c, chars.peek()) {
            ('r', Some('n')) => Some('m'),
            ('v', Some('v')) => Some('w'),
            ('c', Some('l')) => Some('d'),
            _ => None,
        };
        match pair {
            Some(p) => {
                chars.next();
                out.push(p);
            }
            None => out.push(c),
        }
    }
    out
}

/// A room name: `#` then 1 to 32 ASCII letters, digits, `_` or `-`, compared case-insensitively
/// (stored lower-cased).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(String);

impl RoomName {
    /// Checks `s` against the room-name rules and lower-cases it.
    pub fn parse(s: &str) -> Result<RoomName, NameError> {
        let rest = s.strip_prefix('#').ok_or(NameError::Room)?;
        if rest.is_empty() || s.len() > MAX_ROOM_LEN || !rest.chars().all(is_name_char) {
            return Err(NameError::Room);
        }
        Ok(RoomName(s.to_ascii_lowercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The default room, `#lobby`.
    pub fn lobby() -> RoomName {
        RoomName(crate::DEFAULT_ROOM.to_owned())
    }
}

/// Prefix of every fingerprint.
pub const FINGERPRINT_PREFIX: &str = "SHA256:";
/// Length of a fingerprint's base64 part: 32 bytes, unpadded.
pub const FINGERPRINT_B64_LEN: usize = 43;

/// A key's fingerprint: `SHA256:` and the unpadded standard base64 of the SHA-256 digest of the
/// raw 32-byte public key, like `ssh-keygen -l` (`chatao_transport::PublicKey::fingerprint`
/// computes it). A value is always in that canonical form, so two fingerprints of one key are
/// equal as strings. It reads as a `&str` (`Deref`, `Borrow`), so maps keyed by it are looked up
/// with a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Reads a fingerprint a person may have typed or pasted: surrounding whitespace, a
    /// lower-case `sha256:` and a trailing `=` are accepted; the result is canonical.
    /// Base64 whose unused trailing bits are set is refused (it is no digest's encoding).
    pub fn parse(s: &str) -> Result<Fingerprint, NameError> {
        let trimmed = s.trim();
        let (prefix, b64) =
            trimmed.split_at_checked(FINGERPRINT_PREFIX.len()).ok_or(NameError::Fingerprint)?;
        if !prefix.eq_ignore_ascii_case(FINGERPRINT_PREFIX) {
            return Err(NameError::Fingerprint);
        }
        let b64 = b64.strip_suffix('=').unwrap_or(b64);
        if b64.len() != FINGERPRINT_B64_LEN {
            return Err(NameError::Fingerprint);
        }
        let digest: [u8; 32] = STANDARD_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or(NameError::Fingerprint)?;
        Ok(Fingerprint::of_digest(&digest))
    }
    /// The fingerprint of a key whose SHA-256 digest is `digest`.
    pub fn of_digest(digest: &[u8; 32]) -> Fingerprint {
        Fingerprint(format!("{FINGERPRINT_PREFIX}{}", STANDARD_NO_PAD.encode(digest)))
    }
    /// A made-up fingerprint for tests, so a test can name its keys `alice` and `bob`: a
    /// label of fewer than 43 base64 characters (after any `SHA256:`) is the digest's start,
    /// padded with `A` (`example("alice")` is `SHA256:aliceAAAA...`, shown short as
    /// `SHA256:aliceAAA`); any other label's bytes are the digest, zero-padded and cut at 32.
    /// Always canonical. Only in tests (`test-util` feature, or this crate's own).
    #[cfg(any(test, feature = "test-util"))]
    pub fn example(label: &str) -> Fingerprint {
        let label = label.strip_prefix(FINGERPRINT_PREFIX).unwrap_or(label);
        let base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
        if label.len() < FINGERPRINT_B64_LEN && label.chars().all(base64) {
            let padded = format!("{FINGERPRINT_PREFIX}{label:A<FINGERPRINT_B64_LEN$}");
            if let Ok(fp) = Fingerprint::parse(&padded) {
                return fp;
            }
        }
        let mut digest = [0u8; 32];
        let n = label.len().min(32);
        digest[..n].copy_from_slice(&label.as_bytes()[..n]);
        Fingerprint::of_digest(&digest)
    }
    /// Whether `s` is a fingerprint exactly in canonical form (what a server sends).
    pub fn is_canonical(s: &str) -> bool {
        Fingerprint::parse(s).is_ok_and(|f| f.0 == s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The base64 digest, without `SHA256:`.
    pub fn digest_b64(&self) -> &str {
        &self.0[FINGERPRINT_PREFIX.len()..]
    }
    /// The digest in URL-safe base64 (`+` and `/` as `-` and `_`): for file names and headers.
    pub fn url_safe(&self) -> String {
        let url = |c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        };
        self.digest_b64().chars().map(url).collect()
    }
    /// `SHA256:` and the first 8 characters of the digest: enough to tell keys apart at a
    /// glance; the whole one is for comparing.
    pub fn short(&self) -> &str {
        &self.0[..FINGERPRINT_PREFIX.len() + 8]
    }
}

impl std::ops::Deref for Fingerprint {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}
impl AsRef<str> for Fingerprint {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
impl std::borrow::Borrow<str> for Fingerprint {
    fn borrow(&self) -> &str {
        &self.0
    }
}
macro_rules! eq_both_ways {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Fingerprint {
            fn eq(&self, other: &$t) -> bool {
                self.0.as_str() == AsRef::<str>::as_ref(other)
            }
        }
        impl PartialEq<Fingerprint> for $t {
            fn eq(&self, other: &Fingerprint) -> bool {
                AsRef::<str>::as_ref(self) == other.0.as_str()
            }
        }
    )*};
}
eq_both_ways!(str, &str, String);

macro_rules! string_newtype {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $t::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $t::parse(s)
            }
        }
    };
}
string_newtype!(Nick);
string_newtype!(RoomName);
string_newtype!(Fingerprint);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_rules() {
        for ok in ["a", "Alice", "bob_2", "x-y", &"n".repeat(32)] {
            assert!(Nick::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "é", "a\u{1b}", &"n".repeat(33), "#a", "a\n"] {
            assert_eq!(Nick::parse(bad), Err(NameError::Nick), "{bad:?}");
        }
    }

    #[test]
    fn room_rules_and_case_folding() {
        assert_eq!(RoomName::parse("#Rust").map(|r| r.to_string()), Ok("#rust".into()));
        for bad in ["rust", "#", "# a", "##", &format!("#{}", "r".repeat(33))] {
            assert_eq!(RoomName::parse(bad), Err(NameError::Room), "{bad:?}");
        }
    }

    #[test]
    fn look_alikes_share_a_skeleton_and_others_do_not() {
        let alice = Nick::parse("alice").unwrap().folded();
        for same in ["alice", "ALICE", "aIice", "a1ice", "AL1CE", "alIce", "a|ice"] {
            assert_eq!(skeleton(same), alice, "{same}");
        }
        assert_eq!(skeleton("b0b"), skeleton("bob"));
        assert_eq!(skeleton("BOB"), skeleton("bob"));
        assert_eq!(skeleton("rnallory"), skeleton("mallory"));
        assert_eq!(skeleton("vvalter"), skeleton("walter"));
        assert_eq!(skeleton("clave"), skeleton("dave"));
        assert_eq!(skeleton("c1ave"), skeleton("dave"));
        for (a, b) in [("alice", "alicf"), ("bob", "bop"), ("rm", "m"), ("v", "w"), ("a_b", "a-b")]
        {
            assert_ne!(skeleton(a), skeleton(b), "{a} {b}");
        }
        // Display keeps the nickname as typed.
        assert_eq!(Nick::parse("aIice").unwrap().to_string(), "aIice");
    }

    proptest::proptest! {
        #[test]
        fn skeleton_is_idempotent_and_case_insensitive(s in "[A-Za-z0-9_|-]{0,40}") {
            let k = skeleton(&s);
            proptest::prop_assert_eq!(skeleton(&k), k.clone());
            proptest::prop_assert_eq!(skeleton(&s.to_ascii_uppercase()), k.clone());
            proptest::prop_assert_eq!(skeleton(&s.to_ascii_lowercase()), k);
        }
    }

    const RFC7748: &str = "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4";

    #[test]
    fn fingerprints_are_canonical_and_lenient_input_is_normalised() {
        let fp = Fingerprint::parse(RFC7748).unwrap();
        assert_eq!(fp, RFC7748);
        assert_eq!(fp.digest_b64(), &RFC7748[7..]);
        assert_eq!(fp.short(), "SHA256:MAyclgO5");
        assert_eq!(fp.url_safe(), "MAyclgO5Kks57TlYv5JAEUgE20_TcwEsDKR0MtY0Ja4");
        let sloppy = format!("  sha256:{}=\n", &RFC7748[7..]);
        assert_eq!(Fingerprint::parse(&sloppy).unwrap(), fp);
        assert!(Fingerprint::is_canonical(RFC7748));
        assert!(!Fingerprint::is_canonical(&sloppy));
        for bad in [
            "",
            "SHA256:",
            "MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4",
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja",
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4A",
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja!",
            // Trailing bits set: no digest encodes to this.
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja5",
            "SHA256:\u{fc}",
            "SHA257:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4",
        ] {
            assert_eq!(Fingerprint::parse(bad), Err(NameError::Fingerprint), "{bad:?}");
        }
        assert!(serde_json::from_str::<Fingerprint>("\"SHA256:x\"").is_err());
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
    }

    #[test]
    fn examples_are_canonical_and_readable() {
        let alice = Fingerprint::example("alice");
        assert!(Fingerprint::is_canonical(&alice));
        assert_eq!(alice.short(), "SHA256:aliceAAA");
        assert_eq!(Fingerprint::example("SHA256:alice"), alice);
        assert_ne!(Fingerprint::example("bob"), alice);
        for odd in ["fp-a", "a b", &"x".repeat(43), &"y".repeat(60)] {
            assert!(Fingerprint::is_canonical(&Fingerprint::example(odd)), "{odd}");
        }
        assert_ne!(Fingerprint::example("fp-a"), Fingerprint::example("fp-b"));
    }

    #[test]
    fn a_fingerprint_map_is_looked_up_by_str() {
        let fp = Fingerprint::of_digest(&[7; 32]);
        let map: std::collections::HashMap<Fingerprint, u8> = [(fp.clone(), 1)].into();
        assert_eq!(map.get(fp.as_str()), Some(&1));
        assert!(fp.starts_with(FINGERPRINT_PREFIX));
    }

    proptest::proptest! {
        #[test]
        fn every_digest_round_trips(d in proptest::array::uniform32(proptest::num::u8::ANY)) {
            let fp = Fingerprint::of_digest(&d);
            proptest::prop_assert!(Fingerprint::is_canonical(&fp));
            let sloppy = format!(" sha256:{}= ", fp.digest_b64());
            proptest::prop_assert_eq!(Fingerprint::parse(&sloppy).unwrap(), fp);
        }
    }

    #[test]
    fn invalid_names_do_not_deserialize() {
        assert!(serde_json::from_str::<Nick>("\"a b\"").is_err());
        assert!(serde_json::from_str::<RoomName>("\"#ok\"").is_ok());
    }
}
