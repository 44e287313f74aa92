//! What the store keeps for end-to-end encrypted rooms: only what a delivery service needs,
//! never a group secret.
//!
//! - `e2e_rooms`: each E2E room's mode (open or invite-only) and current epoch;
//! - `e2e_members`: who the room is delivered to, by key fingerprint (persistent membership,
//!   not presence);
//! - `sealed`: the room's MLS messages (commits and application messages) as the clients sent
//!   them (base64 of ciphertext), under the room's message ids;
//! - `e2e_welcomes`: the welcome waiting for a key that was added while offline;
//! - `key_packages`: the MLS key packages each key uploaded (public by design), one row per
//!   package under a sequence number that only grows: an upload inserts its rows (and deletes
//!   those it replaced), a fetch deletes the one taken, an eviction the key's rows; nothing
//!   rewrites a key's set.
//!
//! The tables are created by [`migrate`] on open (additive: a schema 2 database gains them).

use chatao_proto::{Fingerprint, Nick, RoomName, SealedKind, ServerMsg};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Store, StoreError};

/// One stored MLS message of an E2E room.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSealed {
    pub room: RoomName,
    pub id: u64,
    pub time: u64,
    pub from: Nick,
    pub epoch: u64,
    pub kind: SealedKind,
    /// Base64 of the MLS message, exactly as the sender wrote it.
    pub body: String,
    /// The sender's key, when known (for its [`chatao_proto::Cid`]).
    pub sender: Option<Fingerprint>,
    /// The sender's id for the message, when it gave one; echoed in the wire message.
    pub cid: Option<chatao_proto::Cid>,
}

impl StoredSealed {
    /// The wire message, marked as history or live.
    pub fn to_msg(&self, history: bool) -> ServerMsg {
        ServerMsg::Sealed {
            cid: self.cid,
            room: self.room.clone(),
            id: self.id,
            time: self.time,
            from: self.from.clone(),
            epoch: self.epoch,
            kind: self.kind,
            body: self.body.clone(),
            history,
        }
    }
}

/// An E2E room as remembered across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct E2eRoomRecord {
    pub room: RoomName,
    pub open: bool,
    pub epoch: u64,
    pub members: Vec<Fingerprint>,
}

/// A welcome waiting for its key to come online.
#[derive(Debug, Clone, PartialEq)]
pub struct WelcomeRecord {
    pub fingerprint: Fingerprint,
    pub room: RoomName,
    pub from: Nick,
    pub id: u64,
    /// The room's commit count once the commit carrying this welcome is in (see
    /// docs/PROTOCOL.md 13: the `epoch` of `invited`).
    pub epoch: u64,
    pub body: String,
}

/// What the bus persists for E2E rooms.
#[derive(Debug, Clone, PartialEq)]
pub enum E2ePersist {
    /// A room's mode and epoch (created or moved to a new epoch).
    Room {
        room: RoomName,
        open: bool,
        epoch: u64,
    },
    /// A key added to (`true`) or removed from (`false`) a room's delivery list.
    Member {
        room: RoomName,
        fingerprint: Fingerprint,
        present: bool,
    },
    Sealed(StoredSealed),
    /// A welcome to keep until its key joins (replaces an older one for the same room).
    Welcome(WelcomeRecord),
    /// The welcome for `fingerprint` in `room` is no longer needed.
    WelcomeDone {
        fingerprint: Fingerprint,
        room: RoomName,
    },
    /// The room's delivery list became empty: the room, its MLS messages and its welcomes
    /// are forgotten (its name can be created again).
    RoomGone(RoomName),
    /// Key packages `fingerprint` uploaded, each with its sequence number, and the sequence
    /// numbers of its older packages they replaced.
    KeyPackagesAdded {
        fingerprint: Fingerprint,
        added: Vec<(u64, String)>,
        replaced: Vec<u64>,
    },
    /// The key package `seq` of `fingerprint` was handed out (each is used once).
    KeyPackageTaken {
        fingerprint: Fingerprint,
        seq: u64,
    },
    /// Every key package of `fingerprint` is forgotten (evicted from a full table).
    KeyPackagesForgotten {
        fingerprint: Fingerprint,
    },
}

fn kind_code(k: SealedKind) -> i64 {
    match k {
        SealedKind::Commit => 1,
        SealedKind::Application | SealedKind::Other => 2,
    }
}

/// A `sealed` row, selected by column name (`id, time, sender, epoch, kind, body, fingerprint,
/// cid`, and `room` unless `room` is given), as a [`StoredSealed`]; `None` for a row whose names
/// no longer parse.
fn sealed_row(
    r: &rusqlite::Row<'_>,
    room: Option<&RoomName>,
) -> rusqlite::Result<Option<StoredSealed>> {
    let Some((room, from)) = super::room_and_sender(r, room)? else { return Ok(None) };
    Ok(Some(StoredSealed {
        room,
        id: r.get::<_, i64>("id")? as u64,
        time: r.get::<_, i64>("time")? as u64,
        from,
        epoch: r.get::<_, i64>("epoch")?.max(0) as u64,
        kind: kind_from(r.get("kind")?),
        body: r.get("body")?,
        sender: super::sender_from(r.get("fingerprint")?),
        cid: super::cid_from(r.get("cid")?),
    }))
}

fn kind_from(code: i64) -> SealedKind {
    if code == 1 { SealedKind::Commit } else { SealedKind::Application }
}

/// Creates the E2E tables if missing.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS e2e_rooms (
             room TEXT PRIMARY KEY, open INTEGER NOT NULL, epoch INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS e2e_members (
             room TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (room, fingerprint))
             WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS sealed (
             room TEXT NOT NULL, id INTEGER NOT NULL, time INTEGER NOT NULL,
             sender TEXT NOT NULL, epoch INTEGER NOT NULL, kind INTEGER NOT NULL,
             body TEXT NOT NULL, PRIMARY KEY (room, id)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS e2e_welcomes (
             fingerprint TEXT NOT NULL, room TEXT NOT NULL, sender TEXT NOT NULL,
             id INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (fingerprint, room))
             WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS key_packages (
             fingerprint TEXT NOT NULL, seq INTEGER NOT NULL, package TEXT NOT NULL,
             PRIMARY KEY (fingerprint, seq)) WITHOUT ROWID;",
    )?;
    // Key packages are loaded newest first (`Store::load_key_packages`); added with the
    // incremental key-package rows, by shape rather than by schema version.
    conn.execute_batch("CREATE INDEX IF NOT EXISTS key_packages_seq ON key_packages (seq);")?;
    // Schema 4: the sender's key and client message id of each MLS message (NULL before).
    super::add_column(conn, "sealed", "fingerprint", "TEXT")?;
    super::add_column(conn, "sealed", "cid", "INTEGER")?;
    // Added after the first release of E2E rooms: the commit count a welcome starts from.
    let has_epoch = conn
        .prepare("SELECT 1 FROM pragma_table_info('e2e_welcomes') WHERE name = 'epoch'")?
        .exists([])?;
    if !has_epoch {
        conn.execute_batch(
            "ALTER TABLE e2e_welcomes ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    Ok(())
}

/// Keeps the newest `max_messages` MLS messages of E2E room `room` (0 keeps everything),
/// deleting at most `budget` (the oldest, by the `(room, id)` primary key); returns how many
/// were deleted and whether more are due. Only the count applies, not the age: a member
/// catching up needs every commit since it was last online, so an age limit would lock out
/// whoever was away longer, while the count bounds the table all the same (docs/PROTOCOL.md 13).
pub(super) fn prune(
    tx: &Transaction<'_>,
    room: &str,
    max_messages: u64,
    budget: usize,
) -> Result<(usize, bool), StoreError> {
    if max_messages == 0 {
        return Ok((0, false));
    }
    let cutoff: Option<i64> = tx
        .prepare_cached(SQL_SEALED_NTH_NEWEST)?
        .query_row(params![room, max_messages as i64], |r| r.get(0))
        .optional()?;
    match cutoff {
        Some(cutoff) => super::delete_upto(tx, "sealed", room, cutoff, budget),
        None => Ok((0, false)),
    }
}

/// The newest sealed id of a room that is not kept (the `max_messages + 1`th newest).
pub(super) const SQL_SEALED_NTH_NEWEST: &str =
    "SELECT id FROM sealed WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2";

/// Writes one E2E record inside the bus's transaction.
pub(super) fn write(tx: &Transaction<'_>, p: &E2ePersist) -> Result<(), StoreError> {
    match p {
        E2ePersist::Room { room, open, epoch } => {
            tx.prepare_cached(
                "INSERT INTO e2e_rooms (room, open, epoch) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room) DO UPDATE SET open = excluded.open, epoch = excluded.epoch",
            )?
            .execute(params![room.as_str(), *open as i64, *epoch as i64])?;
        }
        E2ePersist::Member { room, fingerprint, present: true } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO e2e_members (room, fingerprint) VALUES (?1, ?2)",
            )?
            .execute(params![room.as_str(), fingerprint.as_str()])?;
        }
        E2ePersist::Member { room, fingerprint, present: false } => {
            tx.prepare_cached("DELETE FROM e2e_members WHERE room = ?1 AND fingerprint = ?2")?
                .execute(params![room.as_str(), fingerprint.as_str()])?;
        }
        E2ePersist::Sealed(m) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO sealed
                     (room, id, time, sender, epoch, kind, body, fingerprint, cid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                m.room.as_str(),
                m.id as i64,
                m.time as i64,
                m.from.as_str(),
                m.epoch as i64,
                kind_code(m.kind),
                m.body,
                m.sender.as_deref(),
                m.cid.and_then(|c| i64::try_from(c).ok())
            ])?;
            // Message ids are shared with plain messages: remember the last one so that ids
            // continue after a restart.
            tx.prepare_cached(
                "INSERT INTO rooms (room, last_id) VALUES (?1, ?2)
                 ON CONFLICT (room) DO UPDATE SET last_id = MAX(rooms.last_id, excluded.last_id)",
            )?
            .execute(params![m.room.as_str(), m.id as i64])?;
        }
        E2ePersist::Welcome(w) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO e2e_welcomes (fingerprint, room, sender, id, body, epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                w.fingerprint.as_str(),
                w.room.as_str(),
                w.from.as_str(),
                w.id as i64,
                w.body,
                w.epoch as i64
            ])?;
        }
        E2ePersist::WelcomeDone { fingerprint, room } => {
            tx.prepare_cached("DELETE FROM e2e_welcomes WHERE fingerprint = ?1 AND room = ?2")?
                .execute(params![fingerprint.as_str(), room.as_str()])?;
        }
        E2ePersist::RoomGone(room) => {
            for sql in [
                "DELETE FROM e2e_rooms WHERE room = ?1",
                "DELETE FROM e2e_members WHERE room = ?1",
                "DELETE FROM sealed WHERE room = ?1",
                "DELETE FROM e2e_welcomes WHERE room = ?1",
            ] {
                tx.prepare_cached(sql)?.execute(params![room.as_str()])?;
            }
        }
        E2ePersist::KeyPackagesAdded { fingerprint, added, replaced } => {
            let mut delete = tx.prepare_cached(SQL_KEY_PACKAGE_DELETE)?;
            for seq in replaced {
                delete.execute(params![fingerprint.as_str(), seq_param(*seq)])?;
            }
            // OR REPLACE: a row left by an older version under the same number (those were
            // numbered from 0 per key) gives way.
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO key_packages (fingerprint, seq, package)
                 VALUES (?1, ?2, ?3)",
            )?;
            for (seq, p) in added {
                insert.execute(params![fingerprint.as_str(), seq_param(*seq), p])?;
            }
        }
        E2ePersist::KeyPackageTaken { fingerprint, seq } => {
            tx.prepare_cached(SQL_KEY_PACKAGE_DELETE)?
                .execute(params![fingerprint.as_str(), seq_param(*seq)])?;
        }
        E2ePersist::KeyPackagesForgotten { fingerprint } => {
            tx.prepare_cached("DELETE FROM key_packages WHERE fingerprint = ?1")?
                .execute(params![fingerprint.as_str()])?;
        }
    }
    Ok(())
}

const SQL_KEY_PACKAGE_DELETE: &str = "DELETE FROM key_packages WHERE fingerprint = ?1 AND seq = ?2";

/// A key package's sequence number as stored (they start at 1 and grow by one per package, so
/// never near the end of an i64).
fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Store {
    /// Every E2E room with its delivery list.
    pub fn load_e2e_rooms(&self) -> Result<Vec<E2eRoomRecord>, StoreError> {
        let conn = self.reader();
        let mut rooms = vec![];
        let mut stmt = conn.prepare("SELECT room, open, epoch FROM e2e_rooms")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })?;
        for row in rows {
            let (room, open, epoch) = row?;
            if let Ok(room) = RoomName::parse(&room) {
                rooms.push(E2eRoomRecord {
                    room,
                    open: open != 0,
                    epoch: epoch.max(0) as u64,
                    members: vec![],
                });
            }
        }
        let mut stmt = conn.prepare("SELECT fingerprint FROM e2e_members WHERE room = ?1")?;
        for rec in &mut rooms {
            let fps = stmt.query_map([rec.room.as_str()], |r| r.get::<_, String>(0))?;
            // A row that is not a fingerprint (never written so) is skipped, like a bad name.
            for fp in fps {
                rec.members.extend(Fingerprint::parse(&fp?).ok());
            }
        }
        Ok(rooms)
    }

    /// Every welcome still waiting for its key.
    pub fn load_welcomes(&self) -> Result<Vec<WelcomeRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT fingerprint, room, sender, id, body, epoch FROM e2e_welcomes")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (fingerprint, room, from, id, body, epoch) = row?;
            if let (Ok(fingerprint), Ok(room), Ok(from)) =
                (Fingerprint::parse(&fingerprint), RoomName::parse(&room), Nick::parse(&from))
            {
                let (id, epoch) = (id.max(0) as u64, epoch.max(0) as u64);
                out.push(WelcomeRecord { fingerprint, room, from, id, epoch, body });
            }
        }
        Ok(out)
    }

    /// Offers every stored key package to `keep`, newest first (by sequence number), as
    /// `(fingerprint, seq, package)`; the rows it does not keep (beyond the bounds, say from an
    /// older version) are deleted. At startup only, before the bus writes (like
    /// [`Store::set_meta`]).
    pub fn load_key_packages(
        &self,
        mut keep: impl FnMut(&Fingerprint, u64, String) -> bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.reader();
        let mut dropped: Vec<(String, i64)> = vec![];
        {
            let mut stmt = conn
                .prepare("SELECT fingerprint, seq, package FROM key_packages ORDER BY seq DESC")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (fp, seq): (String, i64) = (r.get(0)?, r.get(1)?);
                // A package that is not text (never written so) is dropped like one too big.
                let package: Option<String> = r.get(2).ok();
                let kept = match (package, Fingerprint::parse(&fp)) {
                    (Some(p), Ok(key)) if seq >= 0 => keep(&key, seq as u64, p),
                    _ => false,
                };
                if !kept {
                    dropped.push((fp, seq));
                }
            }
        }
        if !dropped.is_empty() {
            tracing::info!(rows = dropped.len(), "stored key packages beyond the bounds deleted");
            let tx = conn.transaction()?;
            {
                let mut delete = tx.prepare(SQL_KEY_PACKAGE_DELETE)?;
                for (fp, seq) in &dropped {
                    delete.execute(params![fp, seq])?;
                }
            }
            tx.commit()?;
        }
        Ok(())
    }

    /// MLS messages accepted at or after `since_ms` with a sender key and a client id, the
    /// newest `limit`, newest first (for [`Store::recent_cids`]).
    pub(super) fn recent_sealed(
        &self,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredSealed>, StoreError> {
        let conn = self.reader();
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare(
            "SELECT room, id, time, sender, epoch, kind, body, fingerprint, cid FROM sealed
             WHERE time >= ?1 AND fingerprint IS NOT NULL AND cid IS NOT NULL
             ORDER BY time DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit as i64], |r| sealed_row(r, None))?;
        let mut out = vec![];
        for row in rows {
            out.extend(row?);
        }
        Ok(out)
    }

    /// MLS messages of `room` with `since < id <= upto`, like [`Store::read`].
    pub fn read_sealed(
        &self,
        room: &RoomName,
        since: u64,
        upto: u64,
        limit: usize,
        oldest: bool,
    ) -> Result<Vec<StoredSealed>, StoreError> {
        let conn = self.reader();
        let sql = if oldest {
            "SELECT id, time, sender, epoch, kind, body, fingerprint, cid FROM sealed
             WHERE room = ?1 AND id > ?2 AND id <= ?3 ORDER BY id ASC LIMIT ?4"
        } else {
            "SELECT id, time, sender, epoch, kind, body, fingerprint, cid FROM sealed
             WHERE room = ?1 AND id > ?2 AND id <= ?3 ORDER BY id DESC LIMIT ?4"
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(params![room.as_str(), since as i64, upto as i64, limit as i64], |r| {
                sealed_row(r, Some(room))
            })?;
        let mut out = vec![];
        for row in rows {
            out.extend(row?);
        }
        if !oldest {
            out.reverse();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Persist, Retention};
    use super::*;

    #[test]
    fn e2e_rooms_members_sealed_welcomes_and_key_packages_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let room = RoomName::parse("#sec").unwrap();
        let alice = Nick::parse("alice").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut w = store.writer(Retention { max_messages: 0, max_age: None }).unwrap();
            let batch: Vec<Persist> = [
                E2ePersist::Room { room: room.clone(), open: true, epoch: 0 },
                E2ePersist::Member {
                    room: room.clone(),
                    fingerprint: Fingerprint::example("A"),
                    present: true,
                },
                E2ePersist::Member {
                    room: room.clone(),
                    fingerprint: Fingerprint::example("B"),
                    present: true,
                },
                E2ePersist::Member {
                    room: room.clone(),
                    fingerprint: Fingerprint::example("B"),
                    present: false,
                },
                E2ePersist::Room { room: room.clone(), open: true, epoch: 1 },
                E2ePersist::Sealed(StoredSealed {
                    room: room.clone(),
                    id: 1,
                    time: 5,
                    from: alice.clone(),
                    epoch: 0,
                    kind: SealedKind::Commit,
                    body: "AAE=".into(),
                    sender: Some(Fingerprint::example("a")),
                    cid: Some(9),
                }),
                E2ePersist::Welcome(WelcomeRecord {
                    fingerprint: Fingerprint::example("C"),
                    room: room.clone(),
                    from: alice.clone(),
                    id: 1,
                    epoch: 1,
                    body: "Ww==".into(),
                }),
                E2ePersist::KeyPackagesAdded {
                    fingerprint: Fingerprint::example("C"),
                    added: vec![(1, "k1".into()), (2, "k2".into())],
                    replaced: vec![],
                },
            ]
            .into_iter()
            .map(Persist::E2e)
            .collect();
            w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let rooms = store.load_e2e_rooms().unwrap();
        assert_eq!(
            rooms,
            vec![E2eRoomRecord {
                room: room.clone(),
                open: true,
                epoch: 1,
                members: vec![Fingerprint::example("A")]
            }]
        );
        assert_eq!(store.load_rooms().unwrap()[0].last_id, 1, "ids continue after a restart");
        let sealed = store.read_sealed(&room, 0, 1, 10, true).unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].kind, SealedKind::Commit);
        assert_eq!(
            (sealed[0].sender.as_deref(), sealed[0].cid),
            (Some(Fingerprint::example("a").as_str()), Some(9))
        );
        assert_eq!(store.load_welcomes().unwrap().len(), 1);
        let c = Fingerprint::example("C").to_string();
        assert_eq!(
            key_package_rows(&store),
            [(c.clone(), 1, "k1".to_owned()), (c, 2, "k2".into())]
        );
    }

    /// Every row `load_key_packages` offers, newest first, all kept.
    fn key_package_rows(store: &Store) -> Vec<(String, u64, String)> {
        let mut rows = vec![];
        store
            .load_key_packages(|fp, seq, p| {
                rows.push((fp.to_string(), seq, p));
                true
            })
            .unwrap();
        rows.reverse();
        rows
    }

    #[test]
    fn key_package_changes_touch_only_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Every row change of the table, by any connection, counted.
        let audit = Connection::open(store.path()).unwrap();
        audit
            .execute_batch(
                "CREATE TABLE audit (op TEXT, fingerprint TEXT, seq INTEGER);
                 CREATE TRIGGER kp_i AFTER INSERT ON key_packages
                     BEGIN INSERT INTO audit VALUES ('i', new.fingerprint, new.seq); END;
                 CREATE TRIGGER kp_d AFTER DELETE ON key_packages
                     BEGIN INSERT INTO audit VALUES ('d', old.fingerprint, old.seq); END;
                 CREATE TRIGGER kp_u AFTER UPDATE ON key_packages
                     BEGIN INSERT INTO audit VALUES ('u', old.fingerprint, old.seq); END;",
            )
            .unwrap();
        let changes = || -> Vec<(String, String, i64)> {
            let mut stmt = audit.prepare("SELECT op, fingerprint, seq FROM audit").unwrap();
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
            let out = rows.collect::<Result<Vec<_>, _>>().unwrap();
            audit.execute("DELETE FROM audit", []).unwrap();
            out
        };
        let mut w = store.writer(Retention { max_messages: 0, max_age: None }).unwrap();
        let mut write = |p: E2ePersist| w.write(&[&Persist::E2e(p)]).unwrap();
        let added = |fp: &str, seqs: std::ops::RangeInclusive<u64>, replaced: Vec<u64>| {
            E2ePersist::KeyPackagesAdded {
                fingerprint: Fingerprint::example(fp),
                added: seqs.map(|s| (s, format!("p{s}"))).collect(),
                replaced,
            }
        };
        let op =
            |o: &str, fp: &str, seq: i64| (o.to_owned(), Fingerprint::example(fp).to_string(), seq);
        write(added("A", 1..=3, vec![]));
        write(added("B", 4..=5, vec![]));
        assert_eq!(changes().len(), 5);
        // A's second upload of k = 3 inserts 3 rows and deletes the one it replaced, nothing else.
        write(added("A", 6..=8, vec![1]));
        assert_eq!(changes(), [op("d", "A", 1), op("i", "A", 6), op("i", "A", 7), op("i", "A", 8)]);
        write(E2ePersist::KeyPackageTaken { fingerprint: Fingerprint::example("A"), seq: 2 });
        assert_eq!(changes(), [op("d", "A", 2)]);
        write(E2ePersist::KeyPackagesForgotten { fingerprint: Fingerprint::example("B") });
        assert_eq!(changes(), [op("d", "B", 4), op("d", "B", 5)]);
        let seqs: Vec<u64> = key_package_rows(&store).iter().map(|r| r.1).collect();
        assert_eq!(seqs, [3, 6, 7, 8], "the others' rows are untouched");
        // Rows a load does not keep are deleted.
        store.load_key_packages(|_, seq, _| seq != 7).unwrap();
        assert_eq!(changes(), [op("d", "A", 7)]);
    }

    #[test]
    fn retention_keeps_the_newest_sealed_messages_of_each_room_and_gone_rooms_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.writer(Retention { max_messages: 2, max_age: None }).unwrap();
        let sealed = |room: &RoomName, id| {
            Persist::E2e(E2ePersist::Sealed(StoredSealed {
                room: room.clone(),
                id,
                time: 1,
                from: Nick::parse("alice").unwrap(),
                epoch: 0,
                kind: SealedKind::Application,
                body: "AA==".into(),
                sender: None,
                cid: None,
            }))
        };
        let (a, b) = (RoomName::parse("#a").unwrap(), RoomName::parse("#b").unwrap());
        let batch: Vec<Persist> =
            (1..=5).map(|i| sealed(&a, i)).chain((1..=3).map(|i| sealed(&b, i))).collect();
        w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(w.prune(0).unwrap(), 4);
        let ids = |r: &RoomName| -> Vec<u64> {
            store.read_sealed(r, 0, 100, 100, true).unwrap().iter().map(|m| m.id).collect()
        };
        assert_eq!(ids(&a), [4, 5]);
        assert_eq!(ids(&b), [2, 3]);
        let gone = Persist::E2e(E2ePersist::RoomGone(a.clone()));
        w.write(&[&gone]).unwrap();
        assert!(ids(&a).is_empty());
        assert_eq!(ids(&b), [2, 3]);
    }
}
