//! Files under the state directory: the state file and the atomic write that replaces it.
//!
//! Layout of `dir` (mode 0700, every file 0600):
//! - `state.json`: one JSON document (`StateFile`) with the whole openmls storage (key
//!   packages' private keys, every group's secrets and tree), the pins, and per room the group
//!   id, the last processed message id and the pending commit. It is rewritten whole after every
//!   change, atomically (a temporary file renamed over `state.json`, by
//!   `chatao_transport::private_file`), so after a crash it
//!   is either the old or the new state, never a mix. Changes that must survive a power loss
//!   (new outgoing secrets) also fsync the file and the directory; bookkeeping of incoming
//!   messages is written later and without fsync (see `E2e::save_lazy`): a crash only makes
//!   the client process those messages again.
//! - `logs/<hash>.jsonl`: the decrypted message log of one group (see [`crate::log`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chatao_transport::private_file::{Publish, write_private};
use serde::{Deserialize, Serialize};

use crate::E2eError;

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// Version written into the state file; a file with another version is refused, not guessed at.
/// Version 2: credentials carry the XEdDSA binding, group ids the room's mode, rooms their past
/// epochs' keys (version 1 states are refused: there was no release with them).
const STATE_VERSION: u32 = 2;

/// Largest state file read, in bytes: a guard against reading a wrong file whole. A client in a
/// hundred rooms of a hundred members stays far below it.
const MAX_STATE_FILE_LEN: u64 = 256 * 1024 * 1024;

/// Everything but the logs, as stored in `state.json`. Bytes are standard base64.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StateFile {
    pub version: u32,
    /// The owner's Chatao fingerprint; a directory of another identity is refused.
    pub fingerprint: String,
    /// The openmls key-value storage: (key, value) pairs.
    pub storage: Vec<(String, String)>,
    /// Pinned MLS signature keys: Chatao fingerprint -> Ed25519 public key.
    pub pins: BTreeMap<String, String>,
    /// Per room (the room name the server uses).
    pub rooms: BTreeMap<String, RoomMeta>,
    /// Hash references of the key packages we made whose private keys are still kept, oldest
    /// first (bounded by [`crate::MAX_KEY_PACKAGES`]).
    pub key_packages: Vec<String>,
}

/// What the crate remembers about one room besides the openmls group state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoomMeta {
    /// The MLS group id, base64.
    pub group_id: String,
    /// The id of the last message processed (or skipped) in this room.
    pub last_id: Option<u64>,
    /// Our commit waiting for the server's verdict.
    pub pending: Option<PendingMeta>,
    /// Entries in the room's log file, to know when to compact it.
    pub log_len: usize,
    /// The leaves' signature keys of the newest past epochs (oldest first, at most the number
    /// of past epochs openmls keeps): who sent a message of a past epoch.
    #[serde(default)]
    pub past: Vec<PastEpoch>,
}

/// The leaves of one past epoch: (leaf index, signature public key as base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PastEpoch {
    pub epoch: u64,
    pub keys: Vec<(u32, String)>,
}

/// Our pending commit as the crate tracks it (openmls keeps the staged commit itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingMeta {
    /// SHA-256 of the commit's wire bytes, base64: how its echo from the server is recognised.
    pub commit_sha256: String,
    pub epoch: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl StateFile {
    pub(crate) fn new(fingerprint: &str) -> Self {
        StateFile {
            version: STATE_VERSION,
            fingerprint: fingerprint.to_owned(),
            ..Default::default()
        }
    }

    /// Reads `dir/state.json`; `Ok(None)` if there is none yet.
    pub(crate) fn load(dir: &Path) -> Result<Option<StateFile>, E2eError> {
        let path = dir.join(STATE_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(E2eError::Io { path, source }),
        };
        let mut text = Vec::new();
        file.take(MAX_STATE_FILE_LEN + 1)
            .read_to_end(&mut text)
            .map_err(|source| E2eError::Io { path: path.clone(), source })?;
        if text.len() as u64 > MAX_STATE_FILE_LEN {
            return Err(E2eError::Corrupt { path, detail: "too large".into() });
        }
        let state: StateFile = serde_json::from_slice(&text)
            .map_err(|e| E2eError::Corrupt { path: path.clone(), detail: e.to_string() })?;
        if state.version != STATE_VERSION {
            return Err(E2eError::Corrupt {
                path,
                detail: format!("version {} (this build reads {STATE_VERSION})", state.version),
            });
        }
        Ok(Some(state))
    }

    /// The openmls storage map held in the file.
    pub(crate) fn storage_map(&self, dir: &Path) -> Result<HashMap<Vec<u8>, Vec<u8>>, E2eError> {
        let corrupt = |what: &str| E2eError::Corrupt {
            path: dir.join(STATE_FILE),
            detail: format!("bad base64 in {what}"),
        };
        let mut map = HashMap::with_capacity(self.storage.len());
        for (k, v) in &self.storage {
            let k = STANDARD.decode(k).map_err(|_| corrupt("storage key"))?;
            let v = STANDARD.decode(v).map_err(|_| corrupt("storage value"))?;
            map.insert(k, v);
        }
        Ok(map)
    }

    /// Replaces `dir/state.json` atomically with this state.
    pub(crate) fn save(&self, dir: &Path, sync: bool) -> Result<(), E2eError> {
        let bytes = serde_json::to_vec(self).map_err(|e| E2eError::Corrupt {
            path: dir.join(STATE_FILE),
            detail: format!("cannot encode: {e}"),
        })?;
        write_atomic(dir, STATE_FILE, &bytes, sync)
    }
}

/// Encodes an openmls storage map for [`StateFile::storage`].
pub(crate) fn encode_storage(map: &HashMap<Vec<u8>, Vec<u8>>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        map.iter().map(|(k, v)| (STANDARD.encode(k), STANDARD.encode(v))).collect();
    // A stable order keeps the file diffable and its size independent of hash seeds.
    out.sort_unstable();
    out
}

/// Creates `dir` (and parents) with mode 0700, or tightens an existing one to 0700.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), E2eError> {
    let io = |source| E2eError::Io { path: dir.to_owned(), source };
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    let meta = fs::metadata(dir).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Name of the lock file inside the state directory. While locked it holds the pid of the
/// process that locked it, so that another one can say which process has the state.
pub const LOCK_FILE: &str = "lock";

/// The exclusive right of this process to one state directory: `dir/lock` (0600), locked
/// without waiting, until this value is dropped (or the process ends). One lock may serve
/// several [`crate::E2e`]s one after the other ([`crate::E2e::open_locked`]), never two at once,
/// so a client can keep the state across reconnections without another process taking it in
/// between.
#[derive(Debug)]
pub struct StateLock {
    dir: PathBuf,
    _file: File,
    /// True while an [`crate::E2e`] is open on this lock.
    engine: AtomicBool,
}

impl StateLock {
    /// Creates `dir` (0700) if needed and locks it for this process.
    ///
    /// Errors: [`E2eError::Locked`] (with the holder's pid when it wrote one) if another
    /// process, or another `StateLock` of this one, holds it; I/O errors.
    pub fn acquire(dir: &Path) -> Result<StateLock, E2eError> {
        ensure_private_dir(dir)?;
        let path = dir.join(LOCK_FILE);
        let io = |source| E2eError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid =
                    file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(E2eError::Locked { dir: dir.to_owned(), pid });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        // Only for others to read; the lock itself is what counts.
        let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(StateLock { dir: dir.to_owned(), _file: file, engine: AtomicBool::new(false) })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks an engine open on this lock; `None` if one already is.
    pub(crate) fn claim(lock: Arc<StateLock>) -> Option<EngineClaim> {
        lock.engine
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(EngineClaim(lock))
    }
}

/// An engine's hold on its [`StateLock`]: released when the engine is dropped.
#[derive(Debug)]
pub(crate) struct EngineClaim(Arc<StateLock>);

impl Drop for EngineClaim {
    fn drop(&mut self) {
        self.0.engine.store(false, Ordering::Release);
    }
}

/// Tightens an existing file to mode 0600.
pub(crate) fn ensure_private_file(path: &Path) -> Result<(), E2eError> {
    let io = |source| E2eError::Io { path: path.to_owned(), source };
    let meta = fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it with mode 0600.
pub(crate) fn open_append(path: &Path) -> Result<File, E2eError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| E2eError::Io { path: path.to_owned(), source })
}

/// Writes `bytes` to `dir/name` atomically and 0600 ([`write_private`]); `sync` fsyncs the
/// file and the directory (what must survive a power loss), otherwise a crash may leave the
/// old contents.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    sync: bool,
) -> Result<(), E2eError> {
    let target = dir.join(name);
    let publish = if sync { Publish::Replace } else { Publish::ReplaceUnsynced };
    write_private(&target, bytes, publish).map_err(|source| E2eError::Io { path: target, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "f", b"one", true).unwrap();
        write_atomic(tmp.path(), "f", b"two", false).unwrap();
        assert_eq!(fs::read(tmp.path().join("f")).unwrap(), b"two");
        assert!(!tmp.path().join("f.tmp").exists());
        let mode = fs::metadata(tmp.path().join("f")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn state_of_another_version_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(StateFile::load(tmp.path()).unwrap().is_none());
        let mut state = StateFile::new("SHA256:x");
        state.version = STATE_VERSION + 1;
        state.save(tmp.path(), false).unwrap();
        assert!(matches!(StateFile::load(tmp.path()), Err(E2eError::Corrupt { .. })));
    }

    #[test]
    fn lock_is_exclusive_until_dropped_and_names_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(tmp.path()).unwrap();
        match StateLock::acquire(tmp.path()) {
            Err(E2eError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(first);
        let lock = Arc::new(StateLock::acquire(tmp.path()).unwrap());
        let claim = StateLock::claim(lock.clone()).unwrap();
        assert!(StateLock::claim(lock.clone()).is_none(), "one engine at a time");
        drop(claim);
        assert!(StateLock::claim(lock).is_some());
    }
}
