//! Nickname accounting: who owns each nickname, how many a key holds, and how fast a key
//! changes nickname.
//!
//! A nickname's key is its confusable skeleton ([`Nick::folded`]): `alice`, `ALICE`, `aIice`
//! and `a1ice` are one nickname, owned by the key that registered it first. The owner may use
//! any spelling of it (as it could already change its case); the spelling registered is what
//! the store keeps.
//!
//! Squatting is bounded ([`MAX_NICKS_PER_KEY`], [`NICK_GRACE`], [`NICK_CHANGE_INTERVAL`]):
//! - a key holds at most `MAX_NICKS_PER_KEY` names: the ones its sessions use or last used
//!   (*current*; a name is current until the key renames away from it), and the ones it
//!   renamed away from less than `NICK_GRACE` ago (*reserved*: only the key may take them back);
//! - a reserved name is free for any key once its grace has run out;
//! - a key at its limit that takes another name first releases its oldest reserved name, at
//!   once (so renaming away from a name when at the limit releases that name at once); a key
//!   whose names are all current is refused with the limit and its names;
//! - one nickname change per `NICK_CHANGE_INTERVAL` per key, all its sessions together.
//!
//! On a standalone server the registrations are the store's `nicks` table, recomputed at load:
//! two names registered before look-alikes were one name (now one skeleton) go to the older
//! registration, and the younger is dropped from the store. A cluster node keeps ownership in
//! the cluster's bucket (`cluster/identity.rs`), keyed by the skeleton's hex; there only the
//! rate applies (the per-key limit is standalone).

use std::collections::HashMap;

use bytes::Bytes;
use chatao_proto::{Nick, ServerMsg, encode};

use super::{Hub, HubError, State};
use crate::bus::{BusEvent, BusHandle};
use crate::clock::human;
use crate::limits::{MAX_NICKS_PER_KEY, NICK_CHANGE_INTERVAL, NICK_CHANGES_REMEMBERED, NICK_GRACE};
use crate::store::{NickRecord, Persist};
use chatao_proto::Fingerprint;

/// The registrations of a standalone server and every key's last nickname change.
#[derive(Debug, Default)]
pub(super) struct Names {
    /// Skeleton to its registration.
    regs: HashMap<String, Registration>,
    /// Fingerprint to the skeletons of the names it holds (at most [`MAX_NICKS_PER_KEY`] once
    /// it registers anything new; more only if loaded so).
    by_key: HashMap<Fingerprint, Vec<String>>,
    /// Fingerprint to the clock time (ms) of its last nickname change. Bounded by
    /// [`NICK_CHANGES_REMEMBERED`] (see there).
    changed: HashMap<Fingerprint, u64>,
}

#[derive(Debug, Clone)]
struct Registration {
    /// As registered (the store's row is found by it).
    nick: Nick,
    fingerprint: Fingerprint,
    /// When the key renamed away from it; `None`: current.
    released: Option<u64>,
}

impl Registration {
    /// True while the name is the key's: current, or reserved within its grace.
    fn held(&self, now: u64) -> bool {
        self.released.is_none_or(|at| now < at.saturating_add(grace_ms()))
    }
}

fn grace_ms() -> u64 {
    NICK_GRACE.as_millis() as u64
}

impl Names {
    /// The nicknames key `fp` holds registered (as registered).
    pub fn names_of(&self, fp: &Fingerprint) -> Vec<String> {
        let skels = self.by_key.get(fp).map_or(&[][..], Vec::as_slice);
        skels.iter().filter_map(|s| self.regs.get(s)).map(|r| r.nick.to_string()).collect()
    }

    /// The registrations in `records` (oldest first), and the store rows to drop: a record
    /// whose skeleton an older record already has (look-alikes registered by two keys before
    /// they were one nickname). Records that break today's nickname rules are skipped (kept
    /// in the store).
    pub(super) fn load(records: Vec<NickRecord>) -> (Names, Vec<Persist>) {
        let mut names = Names::default();
        let mut drops = Vec::new();
        for rec in records {
            // A row that breaks today's rules is skipped (kept in the store).
            let (Ok(nick), Ok(fingerprint)) =
                (Nick::parse(&rec.nick), Fingerprint::parse(&rec.fingerprint))
            else {
                continue;
            };
            let skel = nick.folded();
            if names.regs.contains_key(&skel) {
                tracing::info!(
                    nick = ?rec.nick,
                    "a look-alike of an older registered nickname is dropped"
                );
                drops.push(Persist::NickDropped { nick, fingerprint });
                continue;
            }
            names.by_key.entry(fingerprint.clone()).or_default().push(skel.clone());
            let reg = Registration { nick, fingerprint, released: rec.released };
            names.regs.insert(skel, reg);
        }
        (names, drops)
    }

    /// Every registration: (skeleton, owner's fingerprint).
    pub(super) fn owners(&self) -> impl Iterator<Item = (String, Fingerprint)> + '_ {
        self.regs.iter().map(|(k, r)| (k.clone(), r.fingerprint.clone()))
    }
}

/// The `notice` telling a user which of its names were released at once to make room.
pub(super) fn released_notice(released: &[Nick]) -> Option<Bytes> {
    if released.is_empty() {
        return None;
    }
    let names: Vec<String> = released.iter().map(Nick::to_string).collect();
    let text = format!(
        "released at once to stay within {MAX_NICKS_PER_KEY} nicknames per key: {}",
        names.join(", ")
    );
    Some(encode(&ServerMsg::Notice { text }))
}

impl Hub {
    /// Registers `new` to the key of session `id` ahead of a nickname change (standalone only),
    /// with the checks [`Hub::rename`] makes: so that the change is acknowledged only once the
    /// registration is on disk. Returns the bus sequence numbers the registration's records
    /// took (`after`, `upto`: nothing to wait for when they are equal, a name the key already
    /// held), and the names it released to make room (for [`Hub::tell_released`] once the
    /// change is made). The change itself is [`Hub::rename`], which then finds the name
    /// registered.
    pub fn register_for_rename(
        &self,
        id: super::SessionId,
        new: &Nick,
    ) -> Result<(u64, u64, Vec<Nick>), HubError> {
        let now = self.access().clock().now_ms();
        let mut st = self.lock();
        let user = st.user(id)?;
        let (old, fingerprint) = (user.nick.clone(), user.person.clone());
        let after = st.seq;
        if old.folded() == new.folded() || !st.sequencer.registers_names() {
            return Ok((after, after, Vec::new()));
        }
        st.check_change_rate(&fingerprint, now)?;
        st.nicknames.may_rename(&old, new, &fingerprint)?;
        let released = st.claim(new, &fingerprint, Some(&old), now, self.bus())?;
        Ok((after, st.seq, released))
    }

    /// Tells session `id` which of its names were released to make room for a new one.
    pub fn tell_released(&self, id: super::SessionId, released: &[Nick]) {
        let st = self.lock();
        if let (Some(bytes), Some(u)) = (released_notice(released), st.users.get(&id)) {
            u.outbox.deliver(&bytes);
        }
    }

    /// The key that owns `nick` or a look-alike of it, as far as this node knows (on a cluster
    /// node: what it learned from the cluster's bucket, legacy keys included).
    pub fn owner_of(&self, nick: &Nick) -> Option<Fingerprint> {
        self.lock().nicknames.owner(&nick.folded()).cloned()
    }

    /// Whether key `fingerprint` may use `nick`, by the one ownership rule
    /// ([`super::nicknames::Nicknames::may_own`]): as far as this node knows, no other key owns it.
    pub fn may_own(&self, nick: &Nick, fingerprint: &Fingerprint) -> Result<(), HubError> {
        self.lock().nicknames.may_own(nick, fingerprint)
    }
}

impl State {
    /// Refuses a nickname change of `fingerprint` within [`NICK_CHANGE_INTERVAL`] of its last.
    pub(super) fn check_change_rate(&self, fingerprint: &str, now: u64) -> Result<(), HubError> {
        let interval = NICK_CHANGE_INTERVAL.as_millis() as u64;
        match self.names.changed.get(fingerprint) {
            Some(&last) if now < last.saturating_add(interval) => {
                Err(HubError::NickChangeTooSoon {
                    wait: human(last.saturating_add(interval) - now),
                })
            }
            _ => Ok(()),
        }
    }

    /// Remembers that `fingerprint` changed nickname at `now`.
    pub(super) fn note_change(&mut self, fingerprint: &Fingerprint, now: u64) {
        let changed = &mut self.names.changed;
        if changed.len() >= NICK_CHANGES_REMEMBERED {
            let interval = NICK_CHANGE_INTERVAL.as_millis() as u64;
            changed.retain(|_, last| now < last.saturating_add(interval));
        }
        changed.insert(fingerprint.clone(), now);
    }

    /// Checks that `nick` is free, or registered to `fingerprint`, or reserved past its grace,
    /// and registers it to `fingerprint` (making room under [`MAX_NICKS_PER_KEY`] if needed).
    /// `leaving`: the nickname the session renames away from (a candidate to release at once).
    /// Returns the names released at once to make room.
    pub(super) fn claim(
        &mut self,
        nick: &Nick,
        fingerprint: &Fingerprint,
        leaving: Option<&Nick>,
        now: u64,
        bus: &BusHandle,
    ) -> Result<Vec<Nick>, HubError> {
        let skel = nick.folded();
        if let Some(reg) = self.names.regs.get_mut(&skel) {
            if &reg.fingerprint == fingerprint {
                if reg.released.take().is_some() {
                    let (nick, fingerprint) = (reg.nick.clone(), reg.fingerprint.clone());
                    self.persist(bus, Persist::NickReleased { nick, fingerprint, at: None });
                }
                return Ok(Vec::new());
            }
            if reg.held(now) {
                return Err(HubError::NickRegistered(nick.clone()));
            }
            // Reserved past its grace: free.
            self.drop_name(&skel, bus);
        }
        self.drop_expired(fingerprint, now, bus);
        let mut released = Vec::new();
        let held = self.names.by_key.get(fingerprint).map_or(0, Vec::len);
        if held >= MAX_NICKS_PER_KEY {
            // The oldest reserved name goes; the name being left counts as reserved now.
            let leaving = leaving.map(Nick::folded);
            let oldest = self.names.by_key.get(fingerprint).and_then(|names| {
                names
                    .iter()
                    .filter_map(|k| {
                        let at = self.names.regs.get(k)?.released;
                        let at = if leaving.as_ref() == Some(k) { Some(now) } else { at };
                        Some((at?, k.clone()))
                    })
                    .min()
            });
            let Some((_, oldest)) = oldest else {
                return Err(self.too_many(fingerprint));
            };
            if let Some(reg) = self.drop_name(&oldest, bus) {
                released.push(reg.nick);
            }
        }
        self.names.by_key.entry(fingerprint.clone()).or_default().push(skel.clone());
        self.nicknames.set_owner(skel.clone(), fingerprint.clone());
        let reg =
            Registration { nick: nick.clone(), fingerprint: fingerprint.clone(), released: None };
        self.names.regs.insert(skel, reg);
        let time = now;
        self.persist(
            bus,
            Persist::Nick { nick: nick.clone(), fingerprint: fingerprint.clone(), time },
        );
        Ok(released)
    }

    /// `fingerprint` renamed away from `old` at `now`: reserved for it for [`NICK_GRACE`].
    pub(super) fn release(&mut self, old: &Nick, fingerprint: &str, now: u64, bus: &BusHandle) {
        let Some(reg) = self.names.regs.get_mut(&old.folded()) else { return };
        if reg.fingerprint != fingerprint || reg.released.is_some() {
            return;
        }
        reg.released = Some(now);
        let (nick, fingerprint) = (reg.nick.clone(), reg.fingerprint.clone());
        self.persist(bus, Persist::NickReleased { nick, fingerprint, at: Some(now) });
    }

    /// Undoes the registration of `nick` to `fingerprint` whose record the store could not
    /// write (`Shared::unstored`), so that the key asking again registers it again. Nothing if
    /// the name is registered otherwise by now.
    pub(super) fn forget_claim(&mut self, nick: &Nick, fingerprint: &str) {
        let skel = nick.folded();
        if self.names.regs.get(&skel).is_some_and(|r| r.fingerprint == fingerprint) {
            self.names.regs.remove(&skel);
            if let Some(names) = self.names.by_key.get_mut(fingerprint) {
                names.retain(|k| *k != skel);
                if names.is_empty() {
                    self.names.by_key.remove(fingerprint);
                }
            }
        }
        self.nicknames.forget_owner(&skel, Some(fingerprint));
    }

    /// The refusal of a key at its limit, naming the limit and its names.
    fn too_many(&self, fingerprint: &str) -> HubError {
        let names: Vec<String> = self
            .names
            .by_key
            .get(fingerprint)
            .into_iter()
            .flatten()
            .filter_map(|k| self.names.regs.get(k).map(|r| r.nick.to_string()))
            .collect();
        HubError::TooManyNicks { limit: MAX_NICKS_PER_KEY, names: names.join(", ") }
    }

    /// Forgets `fingerprint`'s reserved names whose grace has run out.
    fn drop_expired(&mut self, fingerprint: &str, now: u64, bus: &BusHandle) {
        let expired: Vec<String> = self
            .names
            .by_key
            .get(fingerprint)
            .into_iter()
            .flatten()
            .filter(|k| self.names.regs.get(*k).is_some_and(|r| !r.held(now)))
            .cloned()
            .collect();
        for k in expired {
            self.drop_name(&k, bus);
        }
    }

    /// Forgets the registration under skeleton `skel`, in memory and in the store.
    fn drop_name(&mut self, skel: &str, bus: &BusHandle) -> Option<Registration> {
        let reg = self.names.regs.remove(skel)?;
        self.nicknames.forget_owner(skel, None);
        if let Some(names) = self.names.by_key.get_mut(reg.fingerprint.as_str()) {
            names.retain(|k| k != skel);
            if names.is_empty() {
                self.names.by_key.remove(reg.fingerprint.as_str());
            }
        }
        let (nick, fingerprint) = (reg.nick.clone(), reg.fingerprint.clone());
        self.persist(bus, Persist::NickDropped { nick, fingerprint });
        Some(reg)
    }

    /// Queues `p` for the store (through the bus, in order with everything else).
    fn persist(&mut self, bus: &BusHandle, p: Persist) {
        let seq = self.next_seq();
        bus.send_control(BusEvent { seq, room: None, bytes: Bytes::new(), persist: p });
    }
}
