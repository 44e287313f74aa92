//! Nickname → key pins for E2E rooms: the fingerprint the server first said a nickname belongs
//! to, kept per server and identity (in the E2E state directory). A later claim of another key
//! for the same nickname is a loud warning: the server cannot quietly swap who "bob" is.
//! (The engine in `chatao-e2e` pins each fingerprint's MLS key; this pins the names.)
//!
//! Only names met in an E2E context are pinned (members of E2E rooms, keys fetched to add), at
//! most [`MAX_PINS`]; changes are written once per batch ([`NickPins::flush`]), not per pin.

use chatao_proto::Fingerprint;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The pin file inside the E2E state directory: `nick fingerprint` lines.
pub const PIN_FILE: &str = "nick_pins";
/// Most nicknames pinned. Overflow policy: a new nickname is not pinned (checked as first
/// sight every time, and logged); existing pins are never dropped, since forgetting one would
/// let the server swap that name's key unnoticed.
pub const MAX_PINS: usize = 4096;

/// Nickname (case-folded) to fingerprint, mirrored in a 0600 file.
#[derive(Debug)]
pub struct NickPins {
    path: PathBuf,
    pins: BTreeMap<String, Fingerprint>,
    /// Pinned since the last [`NickPins::flush`].
    dirty: bool,
}

/// What checking a (nick, fingerprint) pair against the pins found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// Seen before with this key.
    Known,
    /// First sight: pinned now.
    New,
    /// The nickname was pinned to another key.
    Changed { pinned: Fingerprint },
}

impl NickPins {
    /// Loads the pins in `dir` (none if the file is absent; unreadable lines are skipped).
    pub fn load(dir: &Path) -> NickPins {
        let path = dir.join(PIN_FILE);
        let pins = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(n, _)| chatao_proto::Nick::parse(n).is_ok())
            .filter_map(|(n, f)| Some((n.to_owned(), Fingerprint::parse(f).ok()?)))
            .collect();
        NickPins { path, pins, dirty: false }
    }

    /// Checks `nick`'s key against its pin, pinning it on first sight.
    pub fn check(&mut self, nick: &str, fingerprint: &Fingerprint) -> PinCheck {
        let folded = nick.to_ascii_lowercase();
        match self.pins.get(&folded) {
            Some(p) if p == fingerprint => PinCheck::Known,
            Some(p) => PinCheck::Changed { pinned: p.clone() },
            None if self.pins.len() >= MAX_PINS => {
                tracing::warn!(nick, "nickname pin table full; not pinned");
                PinCheck::New
            }
            None => {
                self.pins.insert(folded, fingerprint.clone());
                self.dirty = true;
                PinCheck::New
            }
        }
    }

    /// Checks `nick`'s key against its pin without pinning it.
    pub fn peek(&self, nick: &str, fingerprint: &str) -> PinCheck {
        match self.pins.get(&nick.to_ascii_lowercase()) {
            Some(p) if p == fingerprint => PinCheck::Known,
            Some(p) => PinCheck::Changed { pinned: p.clone() },
            None => PinCheck::New,
        }
    }

    /// Writes the pins made since the last call, if any (one write per batch of inputs).
    pub fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        match self.save() {
            Ok(()) => self.dirty = false,
            Err(cause) => tracing::warn!(%cause, "cannot save the nickname pins"),
        }
    }

    /// The pinned fingerprint of `nick`.
    pub fn get(&self, nick: &str) -> Option<&str> {
        self.pins.get(&nick.to_ascii_lowercase()).map(Fingerprint::as_str)
    }

    /// A nickname pinned to `fingerprint`.
    pub fn nick_of(&self, fingerprint: &str) -> Option<&str> {
        self.pins.iter().find(|(_, f)| *f == fingerprint).map(|(n, _)| n.as_str())
    }

    /// Writes the pins atomically (temporary file, then rename), mode 0600.
    fn save(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for (n, fp) in &self.pins {
            let _ = writeln!(text, "{n} {fp}");
        }
        super::write_private(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_nickname_is_pinned_on_first_sight_and_a_change_is_reported_after_reloading() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = NickPins::load(dir.path());
        assert_eq!(pins.check("Bob", &Fingerprint::example("b")), PinCheck::New);
        assert_eq!(pins.check("bob", &Fingerprint::example("b")), PinCheck::Known);
        assert!(!dir.path().join(PIN_FILE).exists(), "written once per batch");
        pins.flush();
        let mut pins = NickPins::load(dir.path());
        assert_eq!(
            pins.check("BOB", &Fingerprint::example("m")),
            PinCheck::Changed { pinned: Fingerprint::example("b") }
        );
        assert_eq!(pins.nick_of(&Fingerprint::example("b")), Some("bob"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(PIN_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_pin_table_is_capped_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = NickPins::load(dir.path());
        for i in 0..MAX_PINS + 10 {
            pins.check(&format!("n{i}"), &Fingerprint::example(&i.to_string()));
        }
        pins.flush();
        let pins = NickPins::load(dir.path());
        assert_eq!(pins.pins.len(), MAX_PINS);
        assert_eq!(pins.get("n0"), Some(Fingerprint::example("0").as_str()));
        assert_eq!(pins.get(&format!("n{}", MAX_PINS + 5)), None);
    }
}
