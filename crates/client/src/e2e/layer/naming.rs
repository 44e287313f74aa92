//! Which name each key is shown under: a member's nickname as its pin says, checked against
//! what the server claims, or `key-...` for a key no nickname is pinned to.

use super::*;

impl Layer {
    /// The nick we know for key `fp`.
    pub(super) fn nick_for(&self, fp: &str, claimed: Option<&Nick>) -> Nick {
        if fp == self.e2e.fingerprint() {
            return self.me.clone();
        }
        if let Some(c) = claimed
            && self.pins.get(c.as_str()) == Some(fp)
        {
            return c.clone();
        }
        self.pins
            .nick_of(fp)
            .and_then(|n| Nick::parse(n).ok())
            .or_else(|| claimed.cloned())
            .unwrap_or_else(|| Nick::parse("unknown").unwrap_or_else(|_| self.me.clone()))
    }

    /// Checks what the server says about who `nick` is against the pin.
    /// Only a canonical fingerprint reaches here (and the pin file): a record whose
    /// fingerprint is not one does not decode.
    pub(super) fn observe(&mut self, nick: &Nick, fp: &chatao_proto::Fingerprint) -> bool {
        match self.pins.check(nick.as_str(), fp) {
            PinCheck::Known | PinCheck::New => true,
            PinCheck::Changed { pinned } => {
                self.warn(format!(
                    "the server says {nick} has the key {fp}, but {nick} was pinned to {pinned}: \
                     this may be someone else using that name"
                ));
                false
            }
        }
    }

    /// Like [`Layer::observe`] for what is not about an E2E room (`/whois`): a change against a
    /// pin is a warning, but nothing is pinned.
    pub(super) fn compare(&mut self, nick: &Nick, fp: &str) {
        if let PinCheck::Changed { pinned } = self.pins.peek(nick.as_str(), fp) {
            self.warn(format!(
                "the server says {nick} has the key {fp}, but {nick} was pinned to {pinned}: \
                 this may be someone else using that name"
            ));
        }
    }

    // ---- from the UI ----

    /// Who sent message `id`: the nickname pinned to the key that signed it. The server's
    /// `from` is only a claim: when it disagrees with the signer, the signer's pinned nickname
    /// is shown, or a name made of its fingerprint ([`key_nick`]), with a warning.
    pub(super) fn sender(&mut self, room: &RoomName, id: u64, from: &Nick, fp: &str) -> Nick {
        if self.pins.get(from.as_str()) == Some(fp) {
            return from.clone();
        }
        if let Some(known) = self.pins.nick_of(fp).and_then(|n| Nick::parse(n).ok()) {
            self.warn(format!(
                "{room}: the server says message {id} is from {from}, but it is signed by \
                 {known}'s key {fp}; shown as {known}'s"
            ));
            return known;
        }
        let shown = key_nick(fp).unwrap_or_else(|| self.nick_for(fp, None));
        self.warn(format!(
            "{room}: message {id} is signed by the key {fp}, which no nickname is pinned to \
             (the server says it is from {from}); shown as {shown}"
        ));
        shown
    }

    /// A member's pinned nickname, or its fingerprint.
    pub(super) fn member_name(&self, fp: &str) -> String {
        if fp == self.e2e.fingerprint() {
            return self.me.to_string();
        }
        match self.pins.nick_of(fp) {
            Some(n) => format!("{n} ({fp})"),
            None => fp.to_owned(),
        }
    }
}
