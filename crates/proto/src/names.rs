//! Validated names. A value of these types always satisfies its rules, so code that holds one
//! never re-checks it, and deserialising an invalid one fails.

use std::fmt;

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

    #[test]
    fn invalid_names_do_not_deserialize() {
        assert!(serde_json::from_str::<Nick>("\"a b\"").is_err());
        assert!(serde_json::from_str::<RoomName>("\"#ok\"").is_ok());
    }
}
