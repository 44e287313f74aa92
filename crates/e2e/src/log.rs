//! The local log of decrypted messages, one file per group: `logs/<hash>.jsonl`.
//!
//! MLS message keys are used once and then deleted, so a client cannot decrypt a room's history
//! again after a restart; it shows what it decrypted before from this log and fetches ciphertext
//! only after the last processed id. Each line is one JSON [`LogEntry`]. Lines are appended (an
//! append of one short line either lands or leaves a torn last line, which reading skips);
//! when the file holds [`MAX_LOG_PER_ROOM`] + [`LOG_SLACK`] entries it is compacted to the newest
//! [`MAX_LOG_PER_ROOM`] with an atomic replace. Entries are appended before the state file records
//! the message as processed, so a crash in between can only duplicate an entry (reading keeps
//! the first entry of each id), never lose one.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::E2eError;
use crate::store::{open_append, write_atomic};

/// Most decrypted messages kept per room. Older ones are dropped at compaction: the oldest
/// history shown after a restart is the newest 10,000 messages.
pub const MAX_LOG_PER_ROOM: usize = 10_000;

/// Extra entries tolerated before a compaction, so compaction (a rewrite of the whole file)
/// happens once per this many messages, not on every message.
pub const LOG_SLACK: usize = 1_000;

/// Longest log line read; longer lines (damage) are skipped without being kept in memory whole.
const MAX_LOG_LINE: u64 = 4 * 1024 * 1024;

/// Directory of the log files inside the state directory.
pub(crate) const LOG_DIR: &str = "logs";

/// One decrypted message of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The server's message id.
    pub id: u64,
    /// The server's timestamp (Unix milliseconds), as relayed; not authenticated.
    pub time: u64,
    /// The sender's Chatao fingerprint, from its MLS credential (authenticated by MLS).
    pub sender_fp: String,
    /// True if this client sent it.
    pub own: bool,
    /// The decrypted application bytes.
    pub plaintext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    id: u64,
    time: u64,
    sender_fp: String,
    #[serde(default)]
    own: bool,
    /// Standard base64 of the plaintext.
    text: String,
}

impl From<&LogEntry> for Line {
    fn from(e: &LogEntry) -> Self {
        Line {
            id: e.id,
            time: e.time,
            sender_fp: e.sender_fp.clone(),
            own: e.own,
            text: STANDARD.encode(&e.plaintext),
        }
    }
}

/// The log file name of a group: hex of the first 16 bytes of SHA-256 of its id, so a room that
/// is re-created (a new group id) starts a fresh log.
pub(crate) fn file_name(group_id: &[u8]) -> String {
    let digest = Sha256::digest(group_id);
    let mut name = String::with_capacity(38);
    for b in &digest[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    name.push_str(".jsonl");
    name
}

pub(crate) fn path(dir: &Path, group_id: &[u8]) -> PathBuf {
    dir.join(LOG_DIR).join(file_name(group_id))
}

/// Appends one entry.
pub(crate) fn append(
    dir: &Path,
    group_id: &[u8],
    entry: &LogEntry,
    sync: bool,
) -> Result<(), E2eError> {
    let path = path(dir, group_id);
    let mut line = serde_json::to_vec(&Line::from(entry))
        .map_err(|e| E2eError::Corrupt { path: path.clone(), detail: e.to_string() })?;
    line.push(b'\n');
    let mut file = open_append(&path)?;
    let io = |source| E2eError::Io { path: path.clone(), source };
    file.write_all(&line).map_err(io)?;
    if sync {
        file.sync_data().map_err(io)?;
    }
    Ok(())
}

/// Reads the newest `limit` readable entries (in file order, which is processing order),
/// one per id (the first seen wins). Memory is bounded by `limit` entries, not the file.
pub(crate) fn read(dir: &Path, group_id: &[u8], limit: usize) -> Result<Vec<LogEntry>, E2eError> {
    let path = path(dir, group_id);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(E2eError::Io { path, source }),
    };
    let mut reader = BufReader::new(file);
    let mut out = VecDeque::new();
    let mut seen = HashSet::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LOG_LINE)
            .read_until(b'\n', &mut buf)
            .map_err(|source| E2eError::Io { path: path.clone(), source })?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && n as u64 == MAX_LOG_LINE {
            // An overlong line: skip the rest of it.
            let mut sink = Vec::new();
            reader
                .read_until(b'\n', &mut sink)
                .map_err(|source| E2eError::Io { path: path.clone(), source })?;
            continue;
        }
        let Ok(line) = serde_json::from_slice::<Line>(&buf) else {
            tracing::warn!(path = %path.display(), "skipping a damaged E2E log line");
            continue;
        };
        let Ok(plaintext) = STANDARD.decode(&line.text) else { continue };
        if seen.insert(line.id) {
            if out.len() == limit {
                out.pop_front();
            }
            if limit > 0 {
                out.push_back(LogEntry {
                    id: line.id,
                    time: line.time,
                    sender_fp: line.sender_fp,
                    own: line.own,
                    plaintext,
                });
            }
        }
    }
    Ok(out.into())
}

/// Rewrites the log with its newest [`MAX_LOG_PER_ROOM`] entries; returns how many it kept.
pub(crate) fn compact(dir: &Path, group_id: &[u8], sync: bool) -> Result<usize, E2eError> {
    let keep = read(dir, group_id, MAX_LOG_PER_ROOM)?;
    let mut bytes = Vec::new();
    for e in &keep {
        let line = serde_json::to_vec(&Line::from(e)).map_err(|err| E2eError::Corrupt {
            path: path(dir, group_id),
            detail: err.to_string(),
        })?;
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
    }
    write_atomic(&dir.join(LOG_DIR), &file_name(group_id), &bytes, sync)?;
    Ok(keep.len())
}

/// Deletes a group's log (the group was forgotten or replaced).
pub(crate) fn remove(dir: &Path, group_id: &[u8]) -> Result<(), E2eError> {
    let path = path(dir, group_id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(E2eError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry(id: u64) -> LogEntry {
        LogEntry {
            id,
            time: id * 10,
            sender_fp: "SHA256:x".into(),
            own: id.is_multiple_of(2),
            plaintext: vec![id as u8],
        }
    }

    #[test]
    fn torn_and_duplicate_lines_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(LOG_DIR)).unwrap();
        let gid = b"g";
        for id in [1, 2, 2, 3] {
            append(tmp.path(), gid, &entry(id), false).unwrap();
        }
        let mut f = open_append(&path(tmp.path(), gid)).unwrap();
        f.write_all(b"{\"id\":4,\"ti").unwrap(); // a crash mid-append
        drop(f);
        let got = read(tmp.path(), gid, usize::MAX).unwrap();
        assert_eq!(got, vec![entry(1), entry(2), entry(3)]);
        assert_eq!(read(tmp.path(), gid, 2).unwrap(), vec![entry(2), entry(3)]);
        assert!(read(tmp.path(), gid, 0).unwrap().is_empty());
        let mode = std::fs::metadata(path(tmp.path(), gid)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another group's log is another file.
        assert!(read(tmp.path(), b"h", 10).unwrap().is_empty());
        remove(tmp.path(), gid).unwrap();
        assert!(read(tmp.path(), gid, usize::MAX).unwrap().is_empty());
        remove(tmp.path(), gid).unwrap();
    }

    #[test]
    fn compaction_keeps_the_newest() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(LOG_DIR)).unwrap();
        let n = (MAX_LOG_PER_ROOM + 5) as u64;
        let mut bytes = Vec::new();
        for id in 1..=n {
            bytes.extend(serde_json::to_vec(&Line::from(&entry(id))).unwrap());
            bytes.push(b'\n');
        }
        std::fs::write(path(tmp.path(), b"g"), bytes).unwrap();
        assert_eq!(compact(tmp.path(), b"g", false).unwrap(), MAX_LOG_PER_ROOM);
        let got = read(tmp.path(), b"g", usize::MAX).unwrap();
        assert_eq!(got.len(), MAX_LOG_PER_ROOM);
        assert_eq!(got[0].id, 6);
        assert_eq!(got.last().unwrap().id, n);
    }
}
