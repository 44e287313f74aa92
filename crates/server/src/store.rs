//! History and room state on disk, in SQLite (rusqlite, bundled: nothing to install).
//!
//! One file, `chatao.db` in the data directory, in WAL mode with `synchronous=NORMAL`: a
//! committed transaction survives the server being killed (`kill -9`); only a power failure can
//! lose the last ones. Messages and everything acknowledged are written by the bus thread
//! ([`Writer`], one transaction per batch); the hub's rare bookkeeping (`set_meta`,
//! `clear_rooms`) goes through the reader. Reads (history on join and catch-up) use a separate
//! connection from blocking tasks, never from a session's own task. Checkpoints (the WAL copied
//! into the database file, two fsyncs) run on a thread of their own, never in a commit
//! (`store/checkpoint.rs`).
//!
//! Private messages are never stored. End-to-end encrypted rooms have their own tables
//! ([`e2e`]): ciphertext only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chatao_proto::{MessageKind, Nick, RoomName, ServerMsg};
use parking_lot::{Mutex, MutexGuard};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rusqlite_migration::{HookError, M, Migrations};

use crate::access::Ban;
use chatao_proto::Fingerprint;
use checkpoint::Checkpointer;

mod checkpoint;
pub mod e2e;

pub use e2e::{E2ePersist, StoredSealed};

/// The database file inside the data directory.
pub const DB_FILE: &str = "chatao.db";
/// The database file of a cluster node: its replica of the cluster's room stream, kept apart
/// from a standalone server's history (whose message ids are numbered differently).
pub const CLUSTER_DB_FILE: &str = "cluster.db";

/// The schema version this code writes: the number of [`migrations`]; older files are
/// migrated on open. Version 4 added each message's sender key (`fingerprint`) and client
/// message id (`cid`), both nullable: older messages have neither. Version 5 added each room's
/// `bots_hidden` (an operator's `bots #room hide`, nullable: a room without it shows its bots).
/// Version 6 added the rooms each key is remembered in (`memberships`, `hub/membership.rs`) and
/// each room's moderation state (`room_modes`, `hub/room_ops.rs`): new tables, so an older file
/// gains them empty. Version 7 added the keys linked to a person (`devices`, `hub/devices.rs`).
const SCHEMA_VERSION: i64 = 7;

/// The schema's steps, applied by `rusqlite_migration` from the file's `PRAGMA user_version`,
/// each in its own transaction (a crash mid-way leaves the version before it).
///
/// Versions 1 to 6 were made by hand-written code that brought any older file to the current
/// schema in one idempotent pass (tables created if missing, columns added if missing); which
/// columns each of 1 to 5 had was not recorded. So 1 to 5 have no step of their own and step 6
/// is that pass ([`catch_up_to_6`]): a file at any version up to 6 ends with the schema 6 has.
/// From 7 on, each change is one ordinary step appended here (`M::up`), and
/// [`SCHEMA_VERSION`] grows with it.
fn migrations() -> Migrations<'static> {
    let mut steps: Vec<M<'static>> = (1..6).map(|_| M::up("")).collect();
    steps.push(M::up_with_hook("", |tx: &Transaction| {
        catch_up_to_6(tx).map_err(|e| match e {
            StoreError::Sql(e) => HookError::RusqliteError(e),
            other => HookError::Hook(other.to_string()),
        })
    }));
    // 7 (issue 20): a person's keys. `owner` is the key that owns the person's nicknames (its
    // own row has owner = fingerprint); a key is linked to one person at most.
    steps.push(M::up(
        "CREATE TABLE devices (
             fingerprint TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT,
             added INTEGER NOT NULL, last_seen INTEGER);
         CREATE INDEX devices_owner ON devices (owner);",
    ));
    debug_assert_eq!(steps.len() as i64, SCHEMA_VERSION);
    Migrations::new(steps)
}

/// Schema 6 from any earlier version (or from nothing): see [`migrations`].
fn catch_up_to_6(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (
             room TEXT NOT NULL, id INTEGER NOT NULL, time INTEGER NOT NULL,
             sender TEXT NOT NULL, kind INTEGER NOT NULL, text TEXT NOT NULL,
             PRIMARY KEY (room, id)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS messages_time ON messages (time);
         CREATE TABLE IF NOT EXISTS rooms (
             room TEXT PRIMARY KEY, topic TEXT, last_id INTEGER NOT NULL DEFAULT 0);
         CREATE TABLE IF NOT EXISTS nicks (
             folded TEXT PRIMARY KEY, nick TEXT NOT NULL, fingerprint TEXT NOT NULL,
             registered INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS bans (
             fingerprint TEXT PRIMARY KEY, until INTEGER, reason TEXT, by TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    )?;
    add_column(conn, "messages", "fingerprint", "TEXT")?;
    add_column(conn, "messages", "cid", "INTEGER")?;
    add_column(conn, "nicks", "released", "INTEGER")?;
    add_column(conn, "rooms", "bots_hidden", "INTEGER")?;
    // Schema 6 (issue 19): each room's moderation state (`hub/room_ops.rs`), one JSON row.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS room_modes (room TEXT PRIMARY KEY, state TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS memberships (
             fingerprint TEXT NOT NULL, room TEXT NOT NULL,
             PRIMARY KEY (fingerprint, room)) WITHOUT ROWID;",
    )?;
    e2e::migrate(conn)
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(
        "history database {path} has schema version {found}, newer than this server ({SCHEMA_VERSION}); upgrade chataosrv"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("history database {path}: cannot make it private to this user: {source}")]
    Private { path: PathBuf, source: std::io::Error },
    #[error("history database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("history database {path}: cannot bring its schema up to date: {source}")]
    Migration { path: PathBuf, source: rusqlite_migration::Error },
    #[error("cannot start the history writer: {0}")]
    Thread(#[from] std::io::Error),
}

/// One room message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub room: RoomName,
    pub id: u64,
    pub time: u64,
    pub from: Nick,
    pub kind: MessageKind,
    pub text: String,
    /// The sender's key, when known (for its [`chatao_proto::Cid`]).
    pub sender: Option<Fingerprint>,
    /// The sender's id for the message, when it gave one; echoed in the wire message.
    pub cid: Option<chatao_proto::Cid>,
}

impl StoredMessage {
    /// The wire message, marked as history or live.
    pub fn to_msg(&self, history: bool) -> ServerMsg {
        ServerMsg::Message {
            cid: self.cid,
            room: self.room.clone(),
            id: self.id,
            time: self.time,
            from: self.from.clone(),
            kind: self.kind,
            text: self.text.clone(),
            history,
        }
    }
}

/// A recent message with a client id, as [`Store::recent_cids`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Recent {
    Message(StoredMessage),
    Sealed(StoredSealed),
}

impl Recent {
    pub fn time(&self) -> u64 {
        match self {
            Recent::Message(m) => m.time,
            Recent::Sealed(m) => m.time,
        }
    }
}

/// What the bus persists besides messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Persist {
    Nothing,
    Message(StoredMessage),
    Topic {
        room: RoomName,
        text: Option<String>,
    },
    /// A nickname registered to a key (first use wins; never overwritten).
    Nick {
        nick: Nick,
        fingerprint: Fingerprint,
        time: u64,
    },
    /// The key renamed away from its nickname `nick` at `at` (`None`: took it back); it is
    /// released a grace period later (`hub/names.rs`).
    NickReleased {
        nick: Nick,
        fingerprint: Fingerprint,
        at: Option<u64>,
    },
    /// The registration of `nick` (as registered) to `fingerprint` is gone.
    NickDropped {
        nick: Nick,
        fingerprint: Fingerprint,
    },
    Ban(Ban),
    Unban {
        fingerprint: Fingerprint,
    },
    /// An operator hid (`hidden`) or showed again the quiet sessions in `room`'s member lists
    /// (`hub/bots.rs`); acknowledged only once stored.
    Bots {
        room: RoomName,
        hidden: bool,
    },
    /// A room's moderation state as a whole (`hub/room_ops.rs`: its operators, modes, invite
    /// list and bans, as JSON), replacing the stored one.
    RoomOps {
        room: RoomName,
        state: String,
    },
    /// Key `fingerprint` is remembered in `room` (`keep`: a join; at most
    /// [`crate::limits::MAX_ROOMS_PER_USER`] rooms a key, a join past that is not remembered)
    /// or no longer (`!keep`: its `part`, or a room kick or ban). `hub/membership.rs`.
    Membership {
        fingerprint: Fingerprint,
        room: RoomName,
        keep: bool,
    },
    /// Key `device.fingerprint` is linked to the person whose first key is `device.owner`
    /// (`hub/devices.rs`); the owner's own row has the two equal.
    DeviceAdded(DeviceRecord),
    /// The key is no longer linked to anyone.
    DeviceRemoved {
        fingerprint: Fingerprint,
    },
    /// A session of the linked key ended at `at` (ms since the epoch).
    DeviceSeen {
        fingerprint: Fingerprint,
        at: u64,
    },
    /// A cluster node has applied its stream up to this sequence number.
    Applied(u64),
    /// End-to-end encrypted rooms ([`e2e`]).
    E2e(E2ePersist),
}

/// A key of a person as stored (`hub/devices.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub fingerprint: Fingerprint,
    pub owner: Fingerprint,
    pub name: Option<String>,
    pub added: u64,
    pub last_seen: Option<u64>,
}

/// A nickname registration as stored: the nickname as registered (not validated here: the hub
/// skips one that breaks today's rules), its key, and when it was registered and released.
#[derive(Debug, Clone, PartialEq)]
pub struct NickRecord {
    pub nick: String,
    pub fingerprint: String,
    pub registered: u64,
    pub released: Option<u64>,
}

/// A room as remembered across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomRecord {
    pub room: RoomName,
    pub last_id: u64,
    pub topic: Option<String>,
    /// Whether chat messages of the room are stored (its ids may also have been used by an
    /// E2E room since forgotten, whose messages are gone).
    pub messages: bool,
}

/// One room as the store knows it ([`Store::room_state`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomState {
    /// The last message id used in the room (0: none).
    pub last_id: u64,
    pub topic: Option<String>,
    /// Chat messages of the room are stored.
    pub messages: bool,
    /// An operator hid the room's bots from its member lists (`hub/bots.rs`).
    pub bots_hidden: bool,
}

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per room (0: no limit).
    pub max_messages: u64,
    /// Oldest message kept (`None`: no limit).
    pub max_age: Option<Duration>,
}

/// The store: a path and a connection for reads.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// Reads are rare (joins and catch-ups) and run in blocking tasks; a blocking (parking_lot)
    /// mutex around one connection is enough.
    reader: Mutex<Connection>,
    /// A connection only for [`Store::room_state`], which the hub calls under its lock when a
    /// room not in memory is joined: one indexed lookup that never waits behind a history read
    /// on `reader` (WAL readers do not wait for the writer either).
    rooms_reader: Mutex<Connection>,
    /// Message ids are a cluster stream's sequence numbers: increasing but not consecutive.
    sparse_ids: bool,
}

fn kind_code(k: MessageKind) -> i64 {
    match k {
        MessageKind::Normal => 0,
        MessageKind::Action => 1,
    }
}

/// The room (`room`, or the row's `room` column) and the `sender` column of a stored row;
/// `None` when either no longer parses (written under older rules).
pub(crate) fn room_and_sender(
    r: &rusqlite::Row<'_>,
    room: Option<&RoomName>,
) -> rusqlite::Result<Option<(RoomName, Nick)>> {
    let room = match room {
        Some(room) => room.clone(),
        None => match RoomName::parse(&r.get::<_, String>("room")?) {
            Ok(room) => room,
            Err(_) => return Ok(None),
        },
    };
    Ok(Nick::parse(&r.get::<_, String>("sender")?).ok().map(|from| (room, from)))
}

/// A `messages` row, selected by column name (`id, time, sender, kind, text, fingerprint, cid`,
/// and `room` unless `room` is given), as a [`StoredMessage`]; `None` for a row whose names no
/// longer parse (written under older rules).
fn message_row(
    r: &rusqlite::Row<'_>,
    room: Option<&RoomName>,
) -> rusqlite::Result<Option<StoredMessage>> {
    let Some((room, from)) = room_and_sender(r, room)? else { return Ok(None) };
    Ok(Some(StoredMessage {
        room,
        id: r.get::<_, i64>("id")? as u64,
        time: r.get::<_, i64>("time")? as u64,
        from,
        kind: kind_from(r.get("kind")?),
        text: r.get("text")?,
        sender: sender_from(r.get("fingerprint")?),
        cid: cid_from(r.get("cid")?),
    }))
}

fn kind_from(code: i64) -> MessageKind {
    if code == 1 { MessageKind::Action } else { MessageKind::Normal }
}

/// A stored sender's key: only a canonical fingerprint counts (one edited by hand reads as none,
/// and its message's client id is then not remembered).
fn sender_from(fp: Option<String>) -> Option<Fingerprint> {
    fp.filter(|f| Fingerprint::is_canonical(f)).and_then(|f| Fingerprint::parse(&f).ok())
}

/// A stored client message id: only the protocol's range ([`chatao_proto::MAX_CID`]) counts;
/// anything else (edited by hand) reads as none.
fn cid_from(cid: Option<i64>) -> Option<chatao_proto::Cid> {
    cid.and_then(|c| u64::try_from(c).ok()).filter(|c| (1..=chatao_proto::MAX_CID).contains(c))
}

/// Adds `column` to `table` unless it is there already (a migration step; the new column is
/// nullable, so existing rows read as NULL).
fn add_column(conn: &Connection, table: &str, column: &str, ty: &str) -> Result<(), StoreError> {
    let exists = conn
        .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?
        .exists([column])?;
    if !exists {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty};"))?;
    }
    Ok(())
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Open { path: path.to_owned(), source };
    let conn = Connection::open(path).map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(wrap)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(wrap)?;
    // Only the checkpointing thread checkpoints (store/checkpoint.rs): never a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(wrap)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(wrap)?;
    Ok(conn)
}

/// Makes the database file readable by this user only (0600, like the server key), whatever
/// the umask: it is created 0600 before SQLite opens it, and an existing one (or its `-wal` and
/// `-shm`, left by an older server) loses its group and other bits. SQLite creates `-wal` and
/// `-shm` with the database file's mode, so they follow. Chosen over setting the process umask:
/// it holds for `server::run` embedded in any process, and changes nothing else the process
/// creates.
#[cfg(unix)]
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let wrap = |source| StoreError::Private { path: path.to_owned(), source };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(wrap)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        let mode = match std::fs::metadata(&file) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(wrap(e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(wrap)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl Store {
    /// Opens (creating if needed, readable by this user only) `dir/chatao.db` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_file(dir.join(DB_FILE), false)
    }

    /// Opens (creating if needed) a cluster node's replica, `dir/cluster.db`.
    pub fn open_cluster(dir: &Path) -> Result<Store, StoreError> {
        Store::open_file(dir.join(CLUSTER_DB_FILE), true)
    }

    fn open_file(path: PathBuf, sparse_ids: bool) -> Result<Store, StoreError> {
        make_private(&path)?;
        let mut conn = open_conn(&path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path, found: version });
        }
        migrations().to_latest(&mut conn).map_err(|e| match e {
            rusqlite_migration::Error::RusqliteError { err, .. } => StoreError::Sql(err),
            other => StoreError::Migration { path: path.clone(), source: other },
        })?;
        let rooms_reader = Mutex::new(open_conn(&path)?);
        Ok(Store { path, reader: Mutex::new(conn), rooms_reader, sparse_ids })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second connection for the bus thread, the writer of everything the chat changes. (The
    /// others: the migrations at open, and `set_meta` and `clear_rooms` through the reader, at a
    /// cluster node's start, before the bus writes.)
    pub fn writer(&self, retention: Retention) -> Result<Writer, StoreError> {
        self.writer_checkpointing(retention, checkpoint::CHECKPOINT_EVERY)
    }

    /// [`Store::writer`], with its checkpoints `every` this long after a commit.
    fn writer_checkpointing(
        &self,
        retention: Retention,
        every: Duration,
    ) -> Result<Writer, StoreError> {
        Ok(Writer {
            conn: open_conn(&self.path)?,
            checkpointer: Checkpointer::spawn(&self.path, every, open_conn)?,
            retention,
            sparse_ids: self.sparse_ids,
            written: BTreeSet::new(),
            written_sealed: BTreeSet::new(),
            sweep_next: true,
            pass: None,
        })
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock()
    }

    /// A number kept under `key` (a cluster node's stream position, the stream's identity).
    pub fn meta(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets `key` (outside the bus: only at startup, before the bus writes).
    pub fn set_meta(&self, key: &str, value: i64) -> Result<(), StoreError> {
        self.reader().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Forgets every room and message (a cluster node whose stream was recreated).
    pub fn clear_rooms(&self) -> Result<(), StoreError> {
        self.reader().execute_batch(
            "DELETE FROM messages; DELETE FROM rooms; DELETE FROM meta; DELETE FROM room_modes;",
        )?;
        Ok(())
    }

    /// What the store knows of `room`, by index (its row in `rooms`, its newest message): the
    /// hub reads it when a room that is not in memory is joined (rooms are loaded lazily, not
    /// at startup) and when `create` asks whether a name is taken.
    pub fn room_state(&self, room: &RoomName) -> Result<RoomState, StoreError> {
        let conn = self.rooms_reader.lock();
        let mut stmt = conn.prepare_cached(SQL_ROOM_STATE)?;
        let (last_id, topic, messages, bots_hidden) = stmt.query_row([room.as_str()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<bool>>(3)?.unwrap_or(false),
            ))
        })?;
        Ok(RoomState { last_id: last_id.max(0) as u64, topic, messages, bots_hidden })
    }

    /// `room`'s stored moderation state (`hub/room_ops.rs` reads it when it first needs the
    /// room's operators), by primary key; `None`: no row.
    pub fn room_ops(&self, room: &RoomName) -> Result<Option<String>, StoreError> {
        let conn = self.rooms_reader.lock();
        let mut stmt = conn.prepare_cached("SELECT state FROM room_modes WHERE room = ?1")?;
        Ok(stmt.query_row([room.as_str()], |r| r.get(0)).optional()?)
    }

    /// Every room with a message or a topic, with its last message id (ids continue from
    /// there after a restart, even if retention pruned the messages). Not read at startup
    /// any more (see [`Store::room_state`]); kept for tests and tools.
    pub fn load_rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT r.room, MAX(r.last_id, COALESCE((SELECT MAX(id) FROM messages m WHERE m.room = r.room), 0)), r.topic,
                    EXISTS (SELECT 1 FROM messages m WHERE m.room = r.room)
             FROM rooms r
             UNION
             SELECT room, MAX(id), NULL, 1 FROM messages WHERE room NOT IN (SELECT room FROM rooms) GROUP BY room",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (room, last_id, topic, messages) = row?;
            // A name that no longer validates (edited by hand) is skipped, not fatal.
            if let Ok(room) = RoomName::parse(&room) {
                out.push(RoomRecord { room, last_id: last_id.max(0) as u64, topic, messages });
            }
        }
        Ok(out)
    }

    /// Messages of `room` with `since < id <= upto`: the oldest `limit` of them when `oldest`,
    /// else the newest `limit`; in id order either way. Both search the primary key
    /// `(room, id)` (the plan test below checks it): a catch-up reads forward, `history` with
    /// `before` reads back from `upto` = `before - 1`.
    pub fn read(
        &self,
        room: &RoomName,
        since: u64,
        upto: u64,
        limit: usize,
        oldest: bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conn = self.reader();
        let sql = if oldest { SQL_READ_OLDEST } else { SQL_READ_NEWEST };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(params![room.as_str(), since as i64, upto as i64, limit as i64], |r| {
                message_row(r, Some(room))
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

    /// The messages (chat and MLS) accepted at or after `since_ms` that have a sender key and a
    /// client id: the newest `limit` of them, oldest first. The hub loads them at startup so that
    /// a client re-sending a message whose echo it never got (the server was killed first) is
    /// answered with that echo, not given a second message ([`crate::hub::sent`]).
    pub fn recent_cids(&self, since_ms: u64, limit: usize) -> Result<Vec<Recent>, StoreError> {
        let conn = self.reader();
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let mut out = vec![];
        let mut stmt = conn.prepare(
            "SELECT room, id, time, sender, kind, text, fingerprint, cid FROM messages
             WHERE time >= ?1 AND fingerprint IS NOT NULL AND cid IS NOT NULL
             ORDER BY time DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit as i64], |r| message_row(r, None))?;
        for row in rows {
            out.extend(row?.map(Recent::Message));
        }
        drop(stmt);
        drop(conn);
        out.extend(self.recent_sealed(since_ms, limit)?.into_iter().map(Recent::Sealed));
        out.sort_by_key(|r| std::cmp::Reverse(r.time()));
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }

    /// Number of stored messages in `room` (for tests and metrics).
    pub fn count(&self, room: &RoomName) -> Result<u64, StoreError> {
        let n: i64 = self.reader().query_row(
            "SELECT COUNT(*) FROM messages WHERE room = ?1",
            [room.as_str()],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Every registered nickname, oldest registration first.
    /// The rooms key `fingerprint` is remembered in, in name order (at most
    /// [`crate::limits::MAX_ROOMS_PER_USER`]; a stored name that is not a valid room name any
    /// more is skipped). Reads by the primary key.
    pub fn memberships(&self, fingerprint: &str) -> Result<Vec<RoomName>, StoreError> {
        let conn = self.rooms_reader.lock();
        let mut stmt = conn.prepare_cached(SQL_MEMBERSHIPS)?;
        let rows = stmt.query_map([fingerprint], |r| r.get::<_, String>(0))?;
        let mut rooms = Vec::new();
        for row in rows {
            if let Ok(room) = RoomName::parse(&row?) {
                rooms.push(room);
            }
        }
        Ok(rooms)
    }

    pub fn load_nicks(&self) -> Result<Vec<NickRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT nick, fingerprint, registered, released FROM nicks
             ORDER BY registered, rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NickRecord {
                nick: r.get(0)?,
                fingerprint: r.get(1)?,
                registered: r.get::<_, i64>(2)?.max(0) as u64,
                released: r.get::<_, Option<i64>>(3)?.map(|t| t.max(0) as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every linked key on record, in the order they were added (a row whose keys are not
    /// fingerprints, never written so, is skipped).
    pub fn load_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT fingerprint, owner, name, added, last_seen FROM devices ORDER BY added, rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?.max(0) as u64,
                r.get::<_, Option<i64>>(4)?.map(|t| t.max(0) as u64),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (fp, owner, name, added, last_seen) = row?;
            if let (Ok(fingerprint), Ok(owner)) =
                (Fingerprint::parse(&fp), Fingerprint::parse(&owner))
            {
                out.push(DeviceRecord { fingerprint, owner, name, added, last_seen });
            }
        }
        Ok(out)
    }

    /// Every ban on record.
    pub fn load_bans(&self) -> Result<Vec<Ban>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT fingerprint, until, reason, by FROM bans")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                // NULL is for good. A negative end was written by an older server that let a
                // huge duration wrap (`16534391535w`): it was meant as practically for good, so
                // it is read as that rather than as long expired.
                r.get::<_, Option<i64>>(1)?.and_then(|u| u64::try_from(u).ok()),
                r.get(2)?,
                r.get(3)?,
            ))
        })?;
        // A row whose key is not a fingerprint (never written so) is skipped.
        let mut bans = vec![];
        for row in rows {
            let (fp, until, reason, by) = row?;
            if let Ok(fingerprint) = Fingerprint::parse(&fp) {
                bans.push(Ban { fingerprint, until, reason, by });
            }
        }
        Ok(bans)
    }

    /// The stored topic of `room`.
    pub fn topic(&self, room: &RoomName) -> Result<Option<String>, StoreError> {
        Ok(self
            .reader()
            .query_row("SELECT topic FROM rooms WHERE room = ?1", [room.as_str()], |r| r.get(0))
            .optional()?
            .flatten())
    }
}

/// The bus thread's connection.
#[derive(Debug)]
pub struct Writer {
    conn: Connection,
    /// After `conn` (dropped first), so that its last checkpoint follows the last commit.
    checkpointer: Checkpointer,
    retention: Retention,
    sparse_ids: bool,
    /// Rooms given messages (and sealed messages) since the last retention pass began; at most
    /// [`WRITTEN_ROOMS`] each, see there.
    written: BTreeSet<String>,
    written_sealed: BTreeSet<String>,
    /// The next pass checks every room: the first one, and after an overflow or a failure.
    sweep_next: bool,
    pass: Option<Pass>,
}

impl Writer {
    /// Writes a batch in one transaction.
    pub fn write(&mut self, batch: &[&Persist]) -> Result<(), StoreError> {
        if batch.iter().all(|p| matches!(p, Persist::Nothing)) {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO messages (room, id, time, sender, kind, text, fingerprint, cid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut nick = tx.prepare_cached(
                "INSERT OR IGNORE INTO nicks (folded, nick, fingerprint, registered)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut nick_released = tx.prepare_cached(
                "UPDATE nicks SET released = ?3 WHERE nick = ?1 AND fingerprint = ?2",
            )?;
            let mut nick_dropped =
                tx.prepare_cached("DELETE FROM nicks WHERE nick = ?1 AND fingerprint = ?2")?;
            let mut ban = tx.prepare_cached(
                "INSERT OR REPLACE INTO bans (fingerprint, until, reason, by) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut unban = tx.prepare_cached("DELETE FROM bans WHERE fingerprint = ?1")?;
            let mut device_added = tx.prepare_cached(
                "INSERT OR REPLACE INTO devices (fingerprint, owner, name, added, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut device_removed =
                tx.prepare_cached("DELETE FROM devices WHERE fingerprint = ?1")?;
            let mut device_seen =
                tx.prepare_cached("UPDATE devices SET last_seen = ?2 WHERE fingerprint = ?1")?;
            let mut applied = tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('applied', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            )?;
            let mut topic = tx.prepare_cached(
                "INSERT INTO rooms (room, topic) VALUES (?1, ?2)
                 ON CONFLICT (room) DO UPDATE SET topic = excluded.topic",
            )?;
            let mut bots = tx.prepare_cached(
                "INSERT INTO rooms (room, bots_hidden) VALUES (?1, ?2)
                 ON CONFLICT (room) DO UPDATE SET bots_hidden = excluded.bots_hidden",
            )?;
            let mut room_ops = tx.prepare_cached(
                "INSERT OR REPLACE INTO room_modes (room, state) VALUES (?1, ?2)",
            )?;
            // Bounded per key: a join past the limit is not remembered.
            let mut remember = tx.prepare_cached(SQL_REMEMBER)?;
            let mut forget =
                tx.prepare_cached("DELETE FROM memberships WHERE fingerprint = ?1 AND room = ?2")?;
            for p in batch {
                match p {
                    Persist::Nothing => {}
                    Persist::Membership { fingerprint, room, keep: true } => {
                        remember.execute(params![
                            fingerprint.as_str(),
                            room.as_str(),
                            crate::limits::MAX_ROOMS_PER_USER as i64
                        ])?;
                    }
                    Persist::Membership { fingerprint, room, keep: false } => {
                        forget.execute(params![fingerprint.as_str(), room.as_str()])?;
                    }
                    Persist::Message(m) => {
                        insert.execute(params![
                            m.room.as_str(),
                            m.id as i64,
                            m.time as i64,
                            m.from.as_str(),
                            kind_code(m.kind),
                            m.text,
                            m.sender.as_deref(),
                            m.cid.and_then(|c| i64::try_from(c).ok())
                        ])?;
                        note_written(&mut self.written, &mut self.sweep_next, m.room.as_str());
                    }
                    Persist::Topic { room, text } => {
                        topic.execute(params![room.as_str(), text])?;
                    }
                    Persist::Bots { room, hidden } => {
                        bots.execute(params![room.as_str(), hidden])?;
                    }
                    Persist::Nick { nick: n, fingerprint, time } => {
                        nick.execute(params![
                            n.folded(),
                            n.as_str(),
                            fingerprint.as_str(),
                            *time as i64
                        ])?;
                    }
                    Persist::NickReleased { nick: n, fingerprint, at } => {
                        let at = at.and_then(|t| i64::try_from(t).ok());
                        nick_released.execute(params![n.as_str(), fingerprint.as_str(), at])?;
                    }
                    Persist::NickDropped { nick: n, fingerprint } => {
                        nick_dropped.execute(params![n.as_str(), fingerprint.as_str()])?;
                    }
                    Persist::Ban(b) => {
                        ban.execute(params![
                            b.fingerprint.as_str(),
                            // NULL is for good. Ends are bounded by `MAX_MODERATION_DURATION`
                            // (hub/moderation.rs); one past i64 would be for good too.
                            b.until.and_then(|u| i64::try_from(u).ok()),
                            b.reason,
                            b.by
                        ])?;
                    }
                    Persist::Unban { fingerprint } => {
                        unban.execute(params![fingerprint.as_str()])?;
                    }
                    Persist::DeviceAdded(d) => {
                        device_added.execute(params![
                            d.fingerprint.as_str(),
                            d.owner.as_str(),
                            d.name,
                            i64::try_from(d.added).unwrap_or(i64::MAX),
                            d.last_seen.and_then(|t| i64::try_from(t).ok())
                        ])?;
                    }
                    Persist::DeviceRemoved { fingerprint } => {
                        device_removed.execute(params![fingerprint.as_str()])?;
                    }
                    Persist::DeviceSeen { fingerprint, at } => {
                        let at = i64::try_from(*at).unwrap_or(i64::MAX);
                        device_seen.execute(params![fingerprint.as_str(), at])?;
                    }
                    Persist::RoomOps { room, state } => {
                        room_ops.execute(params![room.as_str(), state])?;
                    }
                    Persist::Applied(seq) => {
                        applied.execute(params![*seq as i64])?;
                    }
                    Persist::E2e(p) => {
                        if let E2ePersist::Sealed(m) = p {
                            note_written(
                                &mut self.written_sealed,
                                &mut self.sweep_next,
                                m.room.as_str(),
                            );
                        }
                        e2e::write(&tx, p)?
                    }
                }
            }
        }
        tx.commit()?;
        self.checkpointer.committed();
        Ok(())
    }

    /// Applies the whole retention policy at once (a pass run to its end, step after step);
    /// returns how many messages were deleted. Used at shutdown and by tests; the bus runs the
    /// steps one at a time between its batches ([`Writer::start_pass`], [`Writer::prune_step`]).
    pub fn prune(&mut self, now_millis: u64) -> Result<usize, StoreError> {
        self.start_pass(now_millis);
        let mut deleted = 0;
        while self.pruning() {
            deleted += self.prune_step()?;
        }
        Ok(deleted)
    }

    /// Whether a retention pass has steps left.
    pub fn pruning(&self) -> bool {
        self.pass.is_some()
    }

    /// Begins a retention pass (nothing if one is under way): the count limit is checked in the
    /// rooms written since the last pass (in every room on the first pass and after the set of
    /// written rooms overflowed), the age limit against `now_millis`. Nothing is read here.
    pub fn start_pass(&mut self, now_millis: u64) {
        if self.pass.is_some() {
            return;
        }
        let sweep = std::mem::take(&mut self.sweep_next);
        let count = self.retention.max_messages > 0;
        let pass = Pass {
            rooms: if count {
                std::mem::take(&mut self.written).into_iter().collect()
            } else {
                vec![]
            },
            sealed: if count {
                std::mem::take(&mut self.written_sealed).into_iter().collect()
            } else {
                vec![]
            },
            sweep: (count && sweep).then(String::new),
            sweep_sealed: (count && sweep).then(String::new),
            age_cutoff: self.retention.max_age.map(|age| {
                now_millis.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            }),
        };
        // Nothing due (no room written, no age limit): no step at all.
        if !pass.done() {
            self.pass = Some(pass);
        }
    }

    /// One step of the pass under way, in one transaction: at most [`PRUNE_CHUNK`] messages
    /// deleted and at most [`PRUNE_ROOMS`] rooms looked at, every statement a search of an index
    /// (the `(room, id)` primary keys, `messages_time`), never a scan of a table; returns how
    /// many were deleted. When it fails the pass is dropped and the next one checks every room.
    pub fn prune_step(&mut self) -> Result<usize, StoreError> {
        let Some(mut pass) = self.pass.take() else { return Ok(0) };
        match self.step(&mut pass) {
            Ok(deleted) => {
                if !pass.done() {
                    self.pass = Some(pass);
                }
                Ok(deleted)
            }
            Err(e) => {
                self.sweep_next = true;
                Err(e)
            }
        }
    }

    fn step(&mut self, pass: &mut Pass) -> Result<usize, StoreError> {
        let max = self.retention.max_messages;
        let tx = self.conn.transaction()?;
        let mut budget = PRUNE_CHUNK;
        let mut rooms = PRUNE_ROOMS;
        // By count, room messages then sealed ones.
        while budget > 0 && rooms > 0 {
            let Some(room) = next_room(&tx, "messages", &mut pass.rooms, &mut pass.sweep)? else {
                break;
            };
            rooms -= 1;
            let cutoff = if self.sparse_ids {
                tx.prepare_cached(SQL_NTH_NEWEST)?
                    .query_row(params![room, max as i64], |r| r.get::<_, i64>(0))
                    .optional()?
            } else {
                let last: i64 = tx.prepare_cached(SQL_LAST_ID)?.query_row([&room], |r| r.get(0))?;
                Some(last - max as i64).filter(|c| *c > 0)
            };
            if let Some(cutoff) = cutoff {
                let (n, more) = delete_upto(&tx, "messages", &room, cutoff, budget)?;
                budget -= n;
                if more {
                    pass.rooms.push(room);
                }
            }
        }
        while budget > 0 && rooms > 0 {
            let Some(room) = next_room(&tx, "sealed", &mut pass.sealed, &mut pass.sweep_sealed)?
            else {
                break;
            };
            rooms -= 1;
            let (n, more) = e2e::prune(&tx, &room, max, budget)?;
            budget -= n;
            if more {
                pass.sealed.push(room);
            }
        }
        // By age, the oldest first, through `messages_time`. Each room's last id is recorded
        // before its messages go, so that ids keep increasing after a restart even when a room
        // loses every message.
        if let (Some(cutoff), true) = (pass.age_cutoff, budget > 0) {
            let due: Vec<(String, i64)> = tx
                .prepare_cached(SQL_AGE_DUE)?
                .query_map(params![cutoff as i64, budget as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            if due.len() < budget {
                pass.age_cutoff = None;
            }
            let rooms: BTreeSet<&str> = due.iter().map(|(r, _)| r.as_str()).collect();
            let mut record = tx.prepare_cached(SQL_RECORD_LAST_ID)?;
            for room in rooms {
                record.execute([room])?;
            }
            let mut delete = tx.prepare_cached(SQL_DELETE_ONE)?;
            for (room, id) in &due {
                delete.execute(params![room, id])?;
            }
            budget -= due.len();
        }
        tx.prepare_cached(SQL_COUNT_STEP)?.execute([])?;
        tx.commit()?;
        self.checkpointer.committed();
        Ok(PRUNE_CHUNK - budget)
    }
}

/// Most messages one retention step deletes, in one transaction: a step holds the bus thread
/// (and SQLite's write lock) for the time of this many deletes by primary key, tens of
/// milliseconds, so delivery is never behind by more than one step. A room or an age backlog
/// larger than this takes more steps.
pub const PRUNE_CHUNK: usize = 10_000;
/// Most rooms one retention step looks at (a few index lookups each).
pub const PRUNE_ROOMS: usize = 256;
/// Rooms remembered as written since the last pass, for each table. Overflow policy: the set is
/// dropped and the next pass checks every room (a sweep in name order, by index).
const WRITTEN_ROOMS: usize = 65_536;

/// A retention pass under way.
#[derive(Debug, Default)]
struct Pass {
    /// Rooms of `messages` to check by count (taken from the end).
    rooms: Vec<String>,
    /// Rooms of `sealed` to check by count.
    sealed: Vec<String>,
    /// Every room of `messages` after this name is still to check (a sweep).
    sweep: Option<String>,
    sweep_sealed: Option<String>,
    /// Messages older than this (ms) are still to delete.
    age_cutoff: Option<u64>,
}

impl Pass {
    fn done(&self) -> bool {
        self.rooms.is_empty()
            && self.sealed.is_empty()
            && self.sweep.is_none()
            && self.sweep_sealed.is_none()
            && self.age_cutoff.is_none()
    }
}

/// History forward (a catch-up): the oldest `?4` messages with `?2 < id <= ?3`, by the key.
const SQL_READ_OLDEST: &str = "SELECT id, time, sender, kind, text, fingerprint, cid FROM messages
             WHERE room = ?1 AND id > ?2 AND id <= ?3 ORDER BY id ASC LIMIT ?4";
/// History back (a join's replay, `history` with `before`): the newest `?4` with
/// `?2 < id <= ?3`, by the key.
const SQL_READ_NEWEST: &str = "SELECT id, time, sender, kind, text, fingerprint, cid FROM messages
             WHERE room = ?1 AND id > ?2 AND id <= ?3 ORDER BY id DESC LIMIT ?4";
/// A room's last id, topic, whether it has chat messages and whether its bots are hidden, by
/// index.
/// A key's remembered rooms (`Store::memberships`), by the primary key.
const SQL_MEMBERSHIPS: &str =
    "SELECT room FROM memberships WHERE fingerprint = ?1 ORDER BY room LIMIT 50";
/// Remembers key ?1 in room ?2 unless it is remembered in ?3 rooms already.
const SQL_REMEMBER: &str = "INSERT OR IGNORE INTO memberships (fingerprint, room)
     SELECT ?1, ?2 WHERE (SELECT COUNT(*) FROM memberships WHERE fingerprint = ?1) < ?3";

const SQL_ROOM_STATE: &str = "SELECT MAX(COALESCE((SELECT last_id FROM rooms WHERE room = ?1), 0),
            COALESCE((SELECT MAX(id) FROM messages WHERE room = ?1), 0)),
        (SELECT topic FROM rooms WHERE room = ?1),
        EXISTS (SELECT 1 FROM messages WHERE room = ?1),
        (SELECT bots_hidden FROM rooms WHERE room = ?1)";
/// A room's last id: the larger of what `rooms` records and its newest message.
const SQL_LAST_ID: &str = "SELECT MAX(COALESCE((SELECT last_id FROM rooms WHERE room = ?1), 0),
            COALESCE((SELECT MAX(id) FROM messages WHERE room = ?1), 0))";
/// With sparse ids: the newest id that is not kept (the `max_messages + 1`th newest).
const SQL_NTH_NEWEST: &str =
    "SELECT id FROM messages WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2";
/// Messages past the age limit, the oldest first, at most `?2`.
const SQL_AGE_DUE: &str = "SELECT room, id FROM messages WHERE time < ?1 ORDER BY time LIMIT ?2";
const SQL_RECORD_LAST_ID: &str = "INSERT INTO rooms (room, last_id)
     VALUES (?1, COALESCE((SELECT MAX(id) FROM messages WHERE room = ?1), 0))
     ON CONFLICT (room) DO UPDATE SET last_id = MAX(rooms.last_id, excluded.last_id)";
const SQL_DELETE_ONE: &str = "DELETE FROM messages WHERE room = ?1 AND id = ?2";
/// Steps taken by retention, kept in `meta` (a diagnostic).
const SQL_COUNT_STEP: &str = "INSERT INTO meta (key, value) VALUES ('prune_steps', 1)
     ON CONFLICT (key) DO UPDATE SET value = value + 1";

fn sql_next_room(table: &str) -> String {
    format!("SELECT room FROM {table} WHERE room > ?1 ORDER BY room LIMIT 1")
}

fn sql_chunk_bound(table: &str) -> String {
    format!("SELECT id FROM {table} WHERE room = ?1 AND id <= ?2 ORDER BY id LIMIT 1 OFFSET ?3")
}

fn sql_delete_upto(table: &str) -> String {
    format!("DELETE FROM {table} WHERE room = ?1 AND id <= ?2")
}

/// Remembers that `room` was written, within [`WRITTEN_ROOMS`].
fn note_written(set: &mut BTreeSet<String>, sweep_next: &mut bool, room: &str) {
    if *sweep_next || set.contains(room) {
        return;
    }
    if set.len() >= WRITTEN_ROOMS {
        set.clear();
        *sweep_next = true;
    } else {
        set.insert(room.to_owned());
    }
}

/// The next room to check: a written one, else the next of a sweep of `table` (by its primary
/// key, in name order), ending the sweep when there is none.
fn next_room(
    tx: &Transaction<'_>,
    table: &str,
    listed: &mut Vec<String>,
    sweep: &mut Option<String>,
) -> Result<Option<String>, StoreError> {
    if let Some(room) = listed.pop() {
        return Ok(Some(room));
    }
    let Some(after) = sweep.as_deref() else { return Ok(None) };
    let next: Option<String> =
        tx.prepare_cached(&sql_next_room(table))?.query_row([after], |r| r.get(0)).optional()?;
    *sweep = next.clone();
    Ok(next)
}

/// Deletes the messages of `room` in `table` with ids up to `cutoff`, at most `budget` of them
/// (the oldest); returns how many, and whether some are left.
pub(crate) fn delete_upto(
    tx: &Transaction<'_>,
    table: &str,
    room: &str,
    cutoff: i64,
    budget: usize,
) -> Result<(usize, bool), StoreError> {
    let Some(offset) = budget.checked_sub(1) else { return Ok((0, true)) };
    let bound: Option<i64> = tx
        .prepare_cached(&sql_chunk_bound(table))?
        .query_row(params![room, cutoff, offset as i64], |r| r.get(0))
        .optional()?;
    let upto = bound.unwrap_or(cutoff);
    let n = tx.prepare_cached(&sql_delete_upto(table))?.execute(params![room, upto])?;
    Ok((n, bound.is_some() && upto < cutoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &RoomName, id: u64, time: u64) -> Persist {
        Persist::Message(StoredMessage {
            room: room.clone(),
            id,
            time,
            from: Nick::parse("alice").unwrap(),
            kind: if id.is_multiple_of(2) { MessageKind::Action } else { MessageKind::Normal },
            text: format!("message {id}"),
            sender: None,
            cid: None,
        })
    }

    /// Issue 15 item 14: a commit that takes the WAL past SQLite's 1,000-page automatic
    /// checkpoint does not checkpoint (two fsyncs and a copy on the bus thread); the
    /// checkpointing thread does, after the commit, and everything is then in the file.
    #[test]
    fn commits_never_checkpoint_and_the_checkpointer_moves_the_wal_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = dir.path().join(DB_FILE);
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let before = size(&db);
        let lobby = RoomName::lobby();
        let big = |id: u64| {
            let Persist::Message(mut m) = msg(&lobby, id, 1000 + id) else { unreachable!() };
            m.text = format!("{id} {}", "x".repeat(3900));
            Persist::Message(m)
        };
        // 1,500 messages of 3.9 KB: about 6 MB, 1,500 pages and more in the WAL.
        let hour = Duration::from_secs(3600);
        let mut w =
            store.writer_checkpointing(Retention { max_messages: 0, max_age: None }, hour).unwrap();
        for chunk in (1..=1500).collect::<Vec<u64>>().chunks(100) {
            let batch: Vec<Persist> = chunk.iter().map(|&id| big(id)).collect();
            w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        }
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        assert!(size(&wal) > 6_000_000, "the WAL holds the writes: {}", size(&wal));
        assert!(
            size(&db) < before + 1_000_000,
            "nothing was checkpointed by a commit: the file grew from {before} to {}",
            size(&db)
        );
        assert_eq!(w.checkpointer.completed(), 0);
        // Everything committed is readable before any checkpoint.
        assert_eq!(store.read(&lobby, 0, 1500, 2000, true).unwrap().len(), 1500);

        // A writer that checkpoints soon after a commit: the WAL goes into the file.
        drop(w);
        assert!(size(&db) > 6_000_000, "the last checkpoint at the writer's end: {}", size(&db));
        let mut w = store
            .writer_checkpointing(
                Retention { max_messages: 0, max_age: None },
                Duration::from_millis(10),
            )
            .unwrap();
        w.write(&[&big(1501)]).unwrap();
        let done = w.checkpointer.wait_past(0, Duration::from_secs(30));
        assert!(done >= 1, "a checkpoint followed the commit");
        let rows: i64 = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1501);
    }

    #[cfg(unix)]
    #[test]
    fn both_databases_and_their_wal_and_shm_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // A database an older server left world-readable is fixed on open.
        let old = dir.path().join(DB_FILE);
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let stores = [Store::open(dir.path()).unwrap(), Store::open_cluster(dir.path()).unwrap()];
        let mut writers = vec![];
        for store in &stores {
            let mut w = store.writer(Retention { max_messages: 0, max_age: None }).unwrap();
            w.write(&[&msg(&RoomName::lobby(), 1, 1000)]).unwrap();
            writers.push(w);
        }
        let mut files = vec![];
        for name in [DB_FILE, CLUSTER_DB_FILE] {
            for suffix in ["", "-wal", "-shm"] {
                let path = dir.path().join(format!("{name}{suffix}"));
                assert!(path.exists(), "{} exists while open", path.display());
                files.push((path.clone(), mode(&path)));
            }
        }
        assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
    }

    #[test]
    fn messages_and_topics_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let lobby = RoomName::lobby();
        let rust = RoomName::parse("#rust").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut w = store.writer(Retention { max_messages: 0, max_age: None }).unwrap();
            let batch: Vec<Persist> = (1..=10)
                .map(|i| msg(&lobby, i, 1000 + i))
                .chain([Persist::Topic { room: rust.clone(), text: Some("crabs".into()) }])
                .collect();
            w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut rooms = store.load_rooms().unwrap();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        assert_eq!(
            rooms,
            vec![
                RoomRecord { room: lobby.clone(), last_id: 10, topic: None, messages: true },
                RoomRecord {
                    room: rust.clone(),
                    last_id: 0,
                    topic: Some("crabs".into()),
                    messages: false
                },
            ]
        );
        let state = |room: &str| store.room_state(&RoomName::parse(room).unwrap()).unwrap();
        let lobby_state =
            RoomState { last_id: 10, topic: None, messages: true, bots_hidden: false };
        assert_eq!(state("#lobby"), lobby_state);
        let crabs = Some("crabs".into());
        let rust_state =
            RoomState { last_id: 0, topic: crabs, messages: false, bots_hidden: false };
        assert_eq!(state("#rust"), rust_state);
        assert_eq!(state("#never"), RoomState::default(), "a room never used");
        let newest = store.read(&lobby, 0, 10, 3, false).unwrap();
        assert_eq!(newest.iter().map(|m| m.id).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(newest[0].kind, MessageKind::Action);
        let after = store.read(&lobby, 4, 10, 3, true).unwrap();
        assert_eq!(after.iter().map(|m| m.id).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(store.read(&lobby, 0, 6, 100, true).unwrap().len(), 6, "upto bounds the read");
    }

    #[test]
    fn the_migrations_are_valid_and_end_at_the_schema_version() {
        migrations().validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let version: i64 =
            store.reader().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_database_from_a_newer_server_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
        }
        match Store::open(dir.path()) {
            Err(e @ StoreError::TooNew { found: 99, .. }) => {
                assert!(e.to_string().contains("upgrade chataosrv"), "{e}");
            }
            other => panic!("expected TooNew, got {:?}", other.map(|_| ())),
        }
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, 99, "left as it was");
    }

    /// Issue 22: a schema 4 database (rooms without `bots_hidden`) gains the column, its rooms
    /// keep their topics and show their bots, and an operator's setting is read back after
    /// reopening, beside the topic it does not disturb.
    #[test]
    fn a_schema_4_database_gains_bots_hidden_and_the_setting_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (ops, rust) = (RoomName::parse("#ops").unwrap(), RoomName::parse("#rust").unwrap());
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE rooms (
                     room TEXT PRIMARY KEY, topic TEXT, last_id INTEGER NOT NULL DEFAULT 0);
                 INSERT INTO rooms VALUES ('#ops', 'builds', 3);
                 PRAGMA user_version = 4;",
            )
            .unwrap();
        }
        {
            let store = Store::open(dir.path()).unwrap();
            let ops_state = store.room_state(&ops).unwrap();
            assert_eq!(
                (ops_state.topic.as_deref(), ops_state.bots_hidden),
                (Some("builds"), false)
            );
            let mut w = store.writer(Retention { max_messages: 0, max_age: None }).unwrap();
            let batch = [
                Persist::Bots { room: ops.clone(), hidden: true },
                Persist::Bots { room: rust.clone(), hidden: true },
                Persist::Bots { room: rust.clone(), hidden: false },
                Persist::Topic { room: ops.clone(), text: Some("deploys".into()) },
            ];
            w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let version: i64 =
            store.reader().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let ops_state = store.room_state(&ops).unwrap();
        assert_eq!(
            ops_state,
            RoomState {
                last_id: 3,
                topic: Some("deploys".into()),
                messages: false,
                bots_hidden: true
            }
        );
        assert!(!store.room_state(&rust).unwrap().bots_hidden, "shown again");
        assert!(!store.room_state(&RoomName::lobby()).unwrap().bots_hidden, "never set");
    }

    #[test]
    fn a_schema_3_database_gains_sender_and_cid_and_recent_ids_come_back_newest_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let lobby = RoomName::lobby();
        {
            // A database as schema 3 made it: no fingerprint or cid columns.
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE messages (
                     room TEXT NOT NULL, id INTEGER NOT NULL, time INTEGER NOT NULL,
                     sender TEXT NOT NULL, kind INTEGER NOT NULL, text TEXT NOT NULL,
                     PRIMARY KEY (room, id)) WITHOUT ROWID;
                 INSERT INTO messages VALUES ('#lobby', 1, 1000, 'alice', 0, 'old');
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.writer(Retention { max_messages: 0, max_age: None }).unwrap();
        let with_cid = |id: u64, time: u64, cid: Option<u64>| {
            Persist::Message(StoredMessage {
                room: lobby.clone(),
                id,
                time,
                from: Nick::parse("alice").unwrap(),
                kind: MessageKind::Normal,
                text: format!("m{id}"),
                sender: Some(Fingerprint::example("a")),
                cid,
            })
        };
        let batch =
            [with_cid(2, 2000, Some(7)), with_cid(3, 3000, None), with_cid(4, 4000, Some(8))];
        w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        let read = store.read(&lobby, 0, 10, 10, true).unwrap();
        let got: Vec<_> = read.iter().map(|m| (m.id, m.sender.as_deref(), m.cid)).collect();
        assert_eq!(
            got,
            [
                (1, None, None),
                (2, Some(Fingerprint::example("a").as_str()), Some(7)),
                (3, Some(Fingerprint::example("a").as_str()), None),
                (4, Some(Fingerprint::example("a").as_str()), Some(8))
            ],
            "the old row reads with neither"
        );
        let ids = |since, limit| -> Vec<u64> {
            store.recent_cids(since, limit).unwrap().iter().map(Recent::time).collect()
        };
        assert_eq!(ids(0, 10), [2000, 4000], "only messages with a cid, oldest first");
        assert_eq!(ids(0, 1), [4000], "the newest within the bound");
        assert_eq!(ids(2001, 10), [4000], "none before the window");
    }

    #[test]
    fn retention_prunes_by_count_and_age_and_ids_still_continue() {
        let dir = tempfile::tempdir().unwrap();
        let lobby = RoomName::lobby();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.writer(Retention { max_messages: 5, max_age: None }).unwrap();
        let batch: Vec<Persist> = (1..=20).map(|i| msg(&lobby, i, i * 1000)).collect();
        w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(w.prune(0).unwrap(), 15);
        assert_eq!(store.count(&lobby).unwrap(), 5);
        let mut w = store
            .writer(Retention { max_messages: 0, max_age: Some(Duration::from_secs(3)) })
            .unwrap();
        // Now is t=20s: keep messages from t>=17s: ids 17..=20.
        w.prune(20_000).unwrap();
        assert_eq!(store.count(&lobby).unwrap(), 4);
        w.prune(100_000).unwrap();
        assert_eq!(store.count(&lobby).unwrap(), 0);
        assert_eq!(store.load_rooms().unwrap()[0].last_id, 20, "ids continue after pruning");
    }

    /// Every statement retention runs searches an index; none scans a table (issue 15 item 11:
    /// the old pass grouped and numbered the whole `messages` table every minute).
    #[test]
    fn every_retention_statement_searches_an_index_and_scans_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let conn = store.reader();
        let mut statements: Vec<String> = [
            SQL_LAST_ID,
            SQL_ROOM_STATE,
            SQL_NTH_NEWEST,
            SQL_AGE_DUE,
            SQL_RECORD_LAST_ID,
            SQL_DELETE_ONE,
            SQL_COUNT_STEP,
            e2e::SQL_SEALED_NTH_NEWEST,
            SQL_READ_OLDEST,
            SQL_READ_NEWEST,
        ]
        .map(String::from)
        .into();
        for table in ["messages", "sealed"] {
            statements.extend([
                sql_next_room(table),
                sql_chunk_bound(table),
                sql_delete_upto(table),
            ]);
        }
        for sql in &statements {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            // "SCAN CONSTANT ROW" is a `SELECT` without `FROM`, not a table.
            let scans = plan.iter().any(|d| d.contains("SCAN") && d != "SCAN CONSTANT ROW");
            assert!(!scans, "{sql}: {plan:?}");
            if sql.contains("messages") || sql.contains("sealed") {
                assert!(plan.iter().any(|d| d.contains("SEARCH")), "{sql}: {plan:?}");
            }
        }
    }

    /// A step deletes at most `PRUNE_CHUNK` messages; a backlog takes several steps and the
    /// pass converges on exactly what the policy keeps, by count (dense and sparse ids, sealed
    /// messages too) and by age.
    #[test]
    fn a_step_deletes_at_most_the_chunk_and_the_pass_converges() {
        let dir = tempfile::tempdir().unwrap();
        let room = RoomName::parse("#big").unwrap();
        let total = 2 * PRUNE_CHUNK as u64 + 500;
        for sparse in [false, true] {
            let store =
                if sparse { Store::open_cluster(dir.path()) } else { Store::open(dir.path()) }
                    .unwrap();
            let mut w = store.writer(Retention { max_messages: 10, max_age: None }).unwrap();
            let id = |i: u64| if sparse { i * 7 } else { i };
            let batch: Vec<Persist> = (1..=total).map(|i| msg(&room, id(i), i)).collect();
            w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
            w.start_pass(0);
            let mut steps = vec![];
            while w.pruning() {
                steps.push(w.prune_step().unwrap());
                assert!(steps.len() < 10, "{steps:?}");
            }
            assert!(steps.iter().all(|n| *n <= PRUNE_CHUNK), "{steps:?}");
            assert!(steps.len() >= 3, "{steps:?}");
            assert_eq!(steps.iter().sum::<usize>() as u64, total - 10);
            let kept: Vec<u64> = store
                .read(&room, 0, u64::MAX >> 1, 100, true)
                .unwrap()
                .iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(kept, (total - 9..=total).map(id).collect::<Vec<_>>(), "sparse {sparse}");
            let n: i64 = store.meta("prune_steps").unwrap().unwrap();
            assert!(n >= steps.len() as i64);
        }
        // By age, over many rooms.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store
            .writer(Retention { max_messages: 0, max_age: Some(Duration::from_millis(1000)) })
            .unwrap();
        let rooms: Vec<RoomName> =
            (0..50).map(|i| RoomName::parse(&format!("#r{i}")).unwrap()).collect();
        let batch: Vec<Persist> =
            (1..=total).map(|i| msg(&rooms[(i % 50) as usize], i, i)).collect();
        w.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        w.start_pass(total + 1000 - 100);
        let mut steps = vec![];
        while w.pruning() {
            steps.push(w.prune_step().unwrap());
            assert!(steps.len() < 10, "{steps:?}");
        }
        assert!(steps.iter().all(|n| *n <= PRUNE_CHUNK) && steps.len() >= 3, "{steps:?}");
        // Times 1..=total; kept: time >= total - 100.
        assert_eq!(steps.iter().sum::<usize>() as u64, total - 101);
        // Every room's last id is remembered though its messages are gone.
        let last = store.load_rooms().unwrap();
        assert!(last.iter().all(|r| r.last_id > total - 100), "{last:?}");
    }
}
