//! Linked keys (issue 20): one person, several keys. A person is their first key, which owns
//! their nicknames; `device_add` from a session of the person links another key (a new
//! device's) to it, which may then use every nickname the person owns, as if it were the
//! first key: the hub asks [`Devices::person`] wherever a nickname's ownership, a key's
//! nickname changes or its remembered rooms are concerned, and the session asks it for bans
//! and mutes (which apply to the person and to the key). Each device keeps its own key for
//! everything else: its sessions show its own fingerprint, its client message ids are its own,
//! and it is its own member of end-to-end encrypted rooms.
//!
//! Bounds: at most [`MAX_KEYS_PER_PERSON`] keys a person, the first included (a `device_add`
//! past it is refused, saying so); a device's name at most [`MAX_DEVICE_NAME_BYTES`]. Stored in
//! the store's `devices` table (schema 7) through the bus; a change is in force in memory at
//! once and told to every session of the person (`devices`); one the store could not write is
//! told to the session that asked (`Shared::unstored`). Standalone only for now: on a cluster
//! node `device_add` is refused (the cluster's identity store has no device list yet).

use std::collections::HashMap;

use bytes::Bytes;
use chatao_proto::{DeviceInfo, ErrorCode, Fingerprint, ServerMsg, check_text, encode};

use super::{Hub, HubError, SessionId, State, now_millis};
use crate::bus::BusEvent;
use crate::store::{DeviceRecord, Persist};

pub use crate::limits::{MAX_DEVICE_NAME_BYTES, MAX_KEYS_PER_PERSON};

/// Every linked key and the person it is linked to. Pure: no lock, no store, no I/O.
#[derive(Debug, Default)]
pub(super) struct Devices {
    /// Each key of a person with more than one, the first key's own row included.
    rows: HashMap<Fingerprint, DeviceRecord>,
    /// Each person's keys, the first key first, then in the order they were added.
    keys: HashMap<Fingerprint, Vec<Fingerprint>>,
}

impl Devices {
    /// The table the store holds (rows in the order they were added).
    pub fn load(records: Vec<DeviceRecord>) -> Devices {
        let mut d = Devices::default();
        for r in records {
            d.insert(r);
        }
        d
    }

    fn insert(&mut self, r: DeviceRecord) {
        let keys = self.keys.entry(r.owner.clone()).or_default();
        if r.fingerprint == r.owner {
            keys.retain(|k| *k != r.fingerprint);
            keys.insert(0, r.fingerprint.clone());
        } else if !keys.contains(&r.fingerprint) {
            keys.push(r.fingerprint.clone());
        }
        self.rows.insert(r.fingerprint.clone(), r);
    }

    /// The person key `fp` belongs to: its first key (`fp` itself for a key not linked).
    pub fn person<'a>(&'a self, fp: &'a Fingerprint) -> &'a Fingerprint {
        self.rows.get(fp).map_or(fp, |r| &r.owner)
    }

    /// The keys of `person`, the first key first (just `person` when it has no other).
    pub fn keys_of(&self, person: &Fingerprint) -> Vec<Fingerprint> {
        self.keys.get(person).cloned().unwrap_or_else(|| vec![person.clone()])
    }

    /// The stored rows of `person`'s keys, in [`Devices::keys_of`] order.
    pub fn rows_of(&self, person: &Fingerprint) -> Vec<DeviceRecord> {
        self.keys_of(person).iter().filter_map(|k| self.rows.get(k)).cloned().collect()
    }

    /// Links `fp` to `person`; returns the rows to store (the first key's own row too, the
    /// first time). The caller checked [`Devices::refuse_add`].
    pub fn add(
        &mut self,
        person: &Fingerprint,
        fp: Fingerprint,
        name: Option<String>,
        now: u64,
    ) -> Vec<DeviceRecord> {
        let mut new = Vec::new();
        if !self.rows.contains_key(person) {
            new.push(DeviceRecord {
                fingerprint: person.clone(),
                owner: person.clone(),
                name: None,
                added: now,
                last_seen: None,
            });
        }
        new.push(DeviceRecord {
            fingerprint: fp,
            owner: person.clone(),
            name,
            added: now,
            last_seen: None,
        });
        for r in &new {
            self.insert(r.clone());
        }
        new
    }

    /// Why `fp` cannot be linked to `person`, if it cannot (`names_of_fp`: the nicknames the
    /// key owns itself).
    pub fn refuse_add(
        &self,
        person: &Fingerprint,
        fp: &Fingerprint,
        names_of_fp: &[String],
    ) -> Option<String> {
        if self.keys_of(person).contains(fp) {
            return Some(format!("{fp} is one of your keys already"));
        }
        if let Some(r) = self.rows.get(fp) {
            return Some(format!(
                "{fp} is a key of another person (since {}); it cannot be linked to two",
                r.added
            ));
        }
        if !names_of_fp.is_empty() {
            return Some(format!(
                "{fp} owns nicknames of its own ({}): it is a person of its own, and cannot be \
                 linked to you; a new device's key (chatao --fingerprint before its first \
                 connection) can",
                names_of_fp.join(", ")
            ));
        }
        if self.keys_of(person).len() >= MAX_KEYS_PER_PERSON {
            return Some(format!(
                "you have {MAX_KEYS_PER_PERSON} keys already, the most one person may have; \
                 /device remove one first"
            ));
        }
        None
    }

    /// Unlinks `fp`; the person's first key's row goes too when it is left alone. Returns the
    /// keys whose rows are gone.
    pub fn remove(&mut self, fp: &Fingerprint) -> Vec<Fingerprint> {
        let Some(r) = self.rows.remove(fp) else { return Vec::new() };
        let mut gone = vec![fp.clone()];
        if let Some(keys) = self.keys.get_mut(&r.owner) {
            keys.retain(|k| k != fp);
            if keys.len() <= 1 {
                self.keys.remove(&r.owner);
                if self.rows.remove(&r.owner).is_some() {
                    gone.push(r.owner.clone());
                }
            }
        }
        gone
    }

    /// A session of `fp` ended at `at`: its last-seen time, when it is in the table.
    pub fn seen(&mut self, fp: &Fingerprint, at: u64) -> bool {
        match self.rows.get_mut(fp) {
            Some(r) => {
                r.last_seen = Some(at);
                true
            }
            None => false,
        }
    }
}

impl State {
    /// The `devices` record of `person`, with the sessions of each key online now.
    fn devices_msg(&self, person: &Fingerprint, nick: &chatao_proto::Nick) -> ServerMsg {
        let rows = self.devices.rows_of(person);
        let online =
            |fp: &Fingerprint| self.users.values().filter(|u| u.fingerprint == *fp).count() as u32;
        let devices = if rows.is_empty() {
            vec![DeviceInfo {
                fingerprint: person.clone(),
                name: None,
                owner: true,
                added: 0,
                last_seen: None,
                online: online(person),
            }]
        } else {
            rows.iter()
                .map(|r| DeviceInfo {
                    fingerprint: r.fingerprint.clone(),
                    name: r.name.clone(),
                    owner: r.fingerprint == r.owner,
                    added: r.added,
                    last_seen: r.last_seen,
                    online: online(&r.fingerprint),
                })
                .collect()
        };
        ServerMsg::Devices { nick: nick.clone(), devices }
    }

    /// Every local session of the person `person` (each of their keys), sorted.
    fn sessions_of_keys(&self, person: &Fingerprint) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> =
            self.users.iter().filter(|(_, u)| u.person == *person).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// Queues the store's change for the devices table on the bus, on behalf of session `from`.
    fn persist_device(&mut self, hub: &Hub, persist: Persist, from: Option<SessionId>) {
        let seq = self.next_seq();
        hub.bus()
            .send_control_from(BusEvent { seq, room: None, bytes: Bytes::new(), persist }, from);
    }
}

impl Hub {
    /// The person key `fp` belongs to (its first key; `fp` itself when it is not linked).
    pub fn person_of(&self, fp: &Fingerprint) -> Fingerprint {
        self.lock().devices.person(fp).clone()
    }

    /// `device_list`: the keys of session `id`'s person.
    pub fn device_list(&self, id: SessionId) -> Result<ServerMsg, HubError> {
        let st = self.lock();
        let user = st.user(id)?;
        Ok(st.devices_msg(&user.person, &user.nick))
    }

    /// `device_add`: links the key `fingerprint` (named `name`) to session `id`'s person; every
    /// session of the person is told the new list.
    pub fn device_add(
        &self,
        id: SessionId,
        fingerprint: &str,
        name: Option<String>,
    ) -> Result<(), HubError> {
        let fp = Fingerprint::parse(fingerprint.trim()).map_err(|_| {
            HubError::Invalid(format!(
                "{} is not a fingerprint: run chatao --fingerprint on the new device and give \
                 what it prints (SHA256:...)",
                fingerprint.trim()
            ))
        })?;
        if let Some(n) = &name {
            check_text(n, MAX_DEVICE_NAME_BYTES, false)
                .map_err(|e| HubError::Invalid(format!("device name: {e}")))?;
        }
        let mut st = self.lock();
        if !st.sequencer.registers_names() {
            return Err(HubError::Unsupported(
                "linked keys (/device) need a standalone server for now; on a cluster, use the \
                 same key on every device"
                    .into(),
            ));
        }
        let (person, nick) = {
            let u = st.user(id)?;
            (u.person.clone(), u.nick.clone())
        };
        if let Err(refusal) = self.access().admit(&fp) {
            return Err(HubError::Invalid(format!(
                "{fp} cannot connect to this server: {}",
                refusal.reason
            )));
        }
        let names: Vec<String> = st.names.names_of(&fp);
        if let Some(why) = st.devices.refuse_add(&person, &fp, &names) {
            return Err(HubError::Invalid(why));
        }
        for r in st.devices.add(&person, fp, name, now_millis()) {
            st.persist_device(self, Persist::DeviceAdded(r), Some(id));
        }
        let msg = encode(&st.devices_msg(&person, &nick));
        let ids = st.sessions_of_keys(&person);
        st.tell(&ids, &msg);
        Ok(())
    }

    /// `device_remove`: revokes the key `fingerprint` of session `id`'s person (not its first
    /// key): its sessions end, and every remaining session of the person is told the new list.
    pub fn device_remove(&self, id: SessionId, fingerprint: &str) -> Result<(), HubError> {
        let fp = Fingerprint::parse(fingerprint.trim()).map_err(|_| {
            HubError::Invalid(format!("{} is not a fingerprint", fingerprint.trim()))
        })?;
        let mut st = self.lock();
        let (person, nick, by) = {
            let u = st.user(id)?;
            (u.person.clone(), u.nick.clone(), u.fingerprint.clone())
        };
        if fp == person {
            return Err(HubError::Invalid(format!(
                "{fp} is your first key, which owns your nicknames: it cannot be removed"
            )));
        }
        if !st.devices.keys_of(&person).contains(&fp) {
            return Err(HubError::NotFound(format!("{fp} is not one of your keys (/device list)")));
        }
        for gone in st.devices.remove(&fp) {
            st.persist_device(self, Persist::DeviceRemoved { fingerprint: gone }, Some(id));
        }
        let ended: Vec<SessionId> =
            st.users.iter().filter(|(_, u)| u.fingerprint == fp).map(|(s, _)| *s).collect();
        for s in ended {
            let bye = ServerMsg::Bye {
                code: Some(ErrorCode::Other),
                reason: format!("this device's key was removed from {nick} (by {by})"),
            };
            st.remove_user(
                s,
                chatao_proto::LeaveReason::Quit,
                Some("device removed".into()),
                Some(bye),
                self.bus(),
            );
        }
        let msg = encode(&st.devices_msg(&person, &nick));
        let ids = st.sessions_of_keys(&person);
        st.tell(&ids, &msg);
        Ok(())
    }
}

impl State {
    /// A session of key `fp` ended: remembered as its last-seen time when `fp` is a linked
    /// key (or a first key with some).
    pub(super) fn device_seen(&mut self, hub_bus: &crate::bus::BusHandle, fp: &Fingerprint) {
        let at = now_millis();
        if self.devices.seen(fp, at) {
            let seq = self.next_seq();
            let persist = Persist::DeviceSeen { fingerprint: fp.clone(), at };
            hub_bus.send_control(BusEvent { seq, room: None, bytes: Bytes::new(), persist });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::example(s)
    }

    #[test]
    fn a_linked_key_is_its_persons_and_the_first_key_stays_first() {
        let mut d = Devices::default();
        let (a, p, t) = (fp("A"), fp("P"), fp("T"));
        assert_eq!(d.person(&p), &p);
        assert_eq!(d.refuse_add(&a, &p, &[]), None);
        let rows = d.add(&a, p.clone(), Some("phone".into()), 5);
        assert_eq!(rows.len(), 2, "the first key's own row, then the phone's");
        assert_eq!(d.person(&p), &a);
        assert_eq!(d.person(&a), &a);
        d.add(&a, t.clone(), None, 6);
        assert_eq!(d.keys_of(&a), [a.clone(), p.clone(), t.clone()]);
        assert!(d.refuse_add(&a, &p, &[]).unwrap().contains("already"));
        assert!(d.refuse_add(&fp("B"), &p, &[]).unwrap().contains("another person"));
        assert!(d.refuse_add(&a, &fp("N"), &["nora".into()]).unwrap().contains("nora"));
        // Read back as stored, in the order added.
        let again = Devices::load(d.rows_of(&a));
        assert_eq!(again.keys_of(&a), [a.clone(), p.clone(), t.clone()]);
        assert_eq!(d.remove(&p), std::slice::from_ref(&p));
        assert_eq!(d.person(&p), &p);
        // The last linked key gone, the first key is a person alone again.
        assert_eq!(d.remove(&t), [t.clone(), a.clone()]);
        assert!(d.rows_of(&a).is_empty());
        assert_eq!(d.keys_of(&a), [a]);
    }

    #[test]
    fn a_person_has_a_bounded_number_of_keys() {
        let mut d = Devices::default();
        let a = fp("A");
        for i in 1..MAX_KEYS_PER_PERSON {
            let k = fp(&format!("K{i}"));
            assert_eq!(d.refuse_add(&a, &k, &[]), None);
            d.add(&a, k, None, i as u64);
        }
        assert_eq!(d.keys_of(&a).len(), MAX_KEYS_PER_PERSON);
        assert!(d.refuse_add(&a, &fp("Z"), &[]).unwrap().contains("the most"));
    }
}
