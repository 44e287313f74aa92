//! Who holds each nickname on this node, and which key owns it: two plain maps keyed by the
//! nickname's skeleton ([`Nick::folded`]), with the rules that read them. Pure: no lock, no
//! store, no I/O; the hub keeps one in its state and persists what changes through the bus.

use std::collections::HashMap;

use chatao_proto::Nick;

use super::{HubError, SessionId};
use chatao_proto::Fingerprint;

#[derive(Debug, Default)]
pub(super) struct Nicknames {
    /// Skeleton to the local sessions holding the nickname, the oldest first: one person (one
    /// key) on up to [`crate::limits::MAX_SESSIONS_PER_NICK`] devices at once.
    online: HashMap<String, Vec<SessionId>>,
    /// Skeleton to the fingerprint of the key that registered it (on a standalone server kept
    /// in step with `names::Names`; on a cluster node learned from the cluster).
    owners: HashMap<String, Fingerprint>,
}

impl Nicknames {
    /// A table with these owners, and no one online.
    pub fn with_owners(owners: impl IntoIterator<Item = (String, Fingerprint)>) -> Nicknames {
        Nicknames { online: HashMap::new(), owners: owners.into_iter().collect() }
    }

    /// The oldest local session holding the nickname whose skeleton is `folded` (the one that
    /// stands for the person where one session is asked for: a whois, a kick's name).
    pub fn holder(&self, folded: &str) -> Option<SessionId> {
        self.holders(folded).first().copied()
    }

    /// Every local session holding the nickname whose skeleton is `folded`, the oldest first.
    pub fn holders(&self, folded: &str) -> &[SessionId] {
        self.online.get(folded).map_or(&[], Vec::as_slice)
    }

    /// `id` now holds the nickname whose skeleton is `folded` too (after those holding it).
    pub fn hold(&mut self, folded: String, id: SessionId) {
        let ids = self.online.entry(folded).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// Session `id` no longer holds the nickname whose skeleton is `folded`; the nickname is
    /// free here when it was the last.
    pub fn let_go(&mut self, folded: &str, id: SessionId) {
        if let Some(ids) = self.online.get_mut(folded) {
            ids.retain(|h| *h != id);
            if ids.is_empty() {
                self.online.remove(folded);
            }
        }
    }

    /// The fingerprint of the key that owns the nickname whose skeleton is `folded`.
    pub fn owner(&self, folded: &str) -> Option<&Fingerprint> {
        self.owners.get(folded)
    }

    /// The key `fingerprint` owns the nickname whose skeleton is `folded`.
    pub fn set_owner(&mut self, folded: String, fingerprint: Fingerprint) {
        self.owners.insert(folded, fingerprint);
    }

    /// The nickname whose skeleton is `folded` has no owner any more (when `only` is given,
    /// only if that key owned it).
    pub fn forget_owner(&mut self, folded: &str, only: Option<&str>) {
        if only.is_none_or(|fp| self.owner(folded).is_some_and(|o| o == fp)) {
            self.owners.remove(folded);
        }
    }

    /// The one ownership rule, on a standalone server and a cluster node alike: the first key
    /// to register a nickname (or a look-alike of it) keeps it, so `fingerprint` may use `nick`
    /// only if no other key owns it (`nick_registered` otherwise).
    pub fn may_own(&self, nick: &Nick, fingerprint: &str) -> Result<(), HubError> {
        match self.owner(&nick.folded()) {
            Some(owner) if owner != fingerprint => Err(HubError::NickRegistered(nick.clone())),
            _ => Ok(()),
        }
    }

    /// Whether the key `fingerprint`, now called `old`, may be renamed `new`: ownership first,
    /// as at `hello` (a nickname of another key is `nick_registered` whether or not its owner
    /// is online: waiting will not help), then `nick_in_use` for one held by another session
    /// of this same key.
    pub fn may_rename(&self, old: &Nick, new: &Nick, fingerprint: &str) -> Result<(), HubError> {
        self.may_own(new, fingerprint)?;
        let folded = new.folded();
        if old.folded() != folded && self.online.contains_key(&folded) {
            return Err(HubError::NickInUse(new.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nick(s: &str) -> Nick {
        Nick::parse(s).unwrap()
    }

    #[test]
    fn a_rename_is_refused_onto_another_keys_name_first_then_onto_a_held_one() {
        let mut t = Nicknames::with_owners([(nick("bob").folded(), Fingerprint::example("B"))]);
        t.hold(nick("bob").folded(), 2);
        t.hold(nick("carol").folded(), 3);
        let (alice, bob, carol) = (nick("alice"), nick("bob"), nick("carol"));
        assert_eq!(
            t.may_rename(&alice, &bob, &Fingerprint::example("A")),
            Err(HubError::NickRegistered(bob.clone()))
        );
        assert_eq!(
            t.may_rename(&alice, &carol, &Fingerprint::example("A")),
            Err(HubError::NickInUse(carol.clone()))
        );
        assert_eq!(t.may_rename(&alice, &nick("dave"), &Fingerprint::example("A")), Ok(()));
        // The owner's other session renaming onto it, and a change of case of one's own name.
        assert_eq!(
            t.may_rename(&alice, &bob, &Fingerprint::example("B")),
            Err(HubError::NickInUse(bob.clone()))
        );
        assert_eq!(t.may_rename(&carol, &nick("Carol"), &Fingerprint::example("C")), Ok(()));
    }

    #[test]
    fn a_nickname_is_its_first_keys_in_every_spelling() {
        let t = Nicknames::with_owners([(nick("paul").folded(), Fingerprint::example("P"))]);
        assert_eq!(t.may_own(&nick("PAUL"), &Fingerprint::example("P")), Ok(()));
        assert_eq!(
            t.may_own(&nick("Pau1"), &Fingerprint::example("Q")),
            Err(HubError::NickRegistered(nick("Pau1")))
        );
        assert_eq!(t.may_own(&nick("quentin"), &Fingerprint::example("Q")), Ok(()));
    }

    #[test]
    fn look_alikes_are_one_nickname() {
        let mut t = Nicknames::default();
        t.hold(nick("paul").folded(), 1);
        t.set_owner(nick("paul").folded(), Fingerprint::example("P"));
        assert_eq!(t.holder(&nick("PAUL").folded()), Some(1));
        assert_eq!(t.owner(&nick("Paul").folded()), Some(&Fingerprint::example("P")));
        t.let_go(&nick("Paul").folded(), 1);
        assert_eq!(t.holder(&nick("paul").folded()), None);
    }

    #[test]
    fn one_nickname_is_held_by_several_sessions_and_freed_by_the_last() {
        let mut t = Nicknames::default();
        let f = nick("alice").folded();
        t.hold(f.clone(), 4);
        t.hold(f.clone(), 9);
        t.hold(f.clone(), 4);
        assert_eq!(t.holders(&f), [4, 9]);
        t.let_go(&f, 4);
        assert_eq!(t.holder(&f), Some(9), "the next oldest stands for the person");
        t.let_go(&f, 7);
        assert_eq!(t.holders(&f), [9]);
        t.let_go(&f, 9);
        assert_eq!(t.holders(&f), [] as [SessionId; 0]);
        assert!(t.online.is_empty());
    }

    #[test]
    fn an_owner_is_forgotten_only_by_its_own_key_when_one_is_named() {
        let mut t = Nicknames::with_owners([("x".to_owned(), Fingerprint::example("K"))]);
        t.forget_owner("x", Some("other"));
        assert_eq!(t.owner("x"), Some(&Fingerprint::example("K")));
        t.forget_owner("x", Some(&Fingerprint::example("K")));
        assert_eq!(t.owner("x"), None);
        t.set_owner("x".into(), Fingerprint::example("K"));
        t.forget_owner("x", None);
        assert_eq!(t.owner("x"), None);
    }
}
