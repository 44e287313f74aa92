//! Each E2E room's commit count: the `epoch` a `commit` must state (docs/PROTOCOL.md 13).
//!
//! The server accepts a commit only at its count of the room's commit records, valid or not;
//! this client counts the same records (`sealed` of kind `commit`, live or from history, each id
//! once), starting from 0 for a room it created or from the `epoch` of the `invited` that
//! brought it in. Counting records rather than using the MLS epoch keeps both sides in step
//! even when a member sends garbage as a commit (the MLS group does not move, the count does).
//!
//! Kept per server and identity in the E2E state directory, one `room count last_id` line per
//! room, and written before the record is handed to the engine: after a crash the count is
//! never behind what the engine processed (a record counted but not processed comes back in
//! the replay and is recognised by its id).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The file inside the E2E state directory.
pub const COUNT_FILE: &str = "commit_counts";

/// Room to (commit count, id of the last commit record counted).
#[derive(Debug)]
pub struct CommitCounts {
    path: PathBuf,
    rooms: BTreeMap<String, (u64, u64)>,
}

impl CommitCounts {
    /// Loads the counts in `dir` (none if the file is absent; unreadable lines are skipped).
    pub fn load(dir: &Path) -> CommitCounts {
        let path = dir.join(COUNT_FILE);
        let rooms = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let room = chatao_proto::RoomName::parse(f.next()?).ok()?;
                let count = f.next()?.parse().ok()?;
                let last = f.next()?.parse().ok()?;
                Some((room.to_string(), (count, last)))
            })
            .collect();
        CommitCounts { path, rooms }
    }

    /// The room's count, if known.
    pub fn get(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).map(|(c, _)| *c)
    }

    /// Starts the room's count at `count`, as of message `id` (a created room: 0, 0; a welcome:
    /// its `epoch` and the id of its commit).
    pub fn set(&mut self, room: &str, count: u64, id: u64) {
        self.rooms.insert(room.to_owned(), (count, id));
        self.save();
    }

    /// Counts the commit record `id` of the room, once; false if it was counted already.
    pub fn record(&mut self, room: &str, id: u64, fallback: u64) -> bool {
        let (count, last) = self.rooms.entry(room.to_owned()).or_insert((fallback, 0));
        if id <= *last {
            return false;
        }
        *count += 1;
        *last = id;
        self.save();
        true
    }

    /// Forgets the room.
    pub fn remove(&mut self, room: &str) {
        if self.rooms.remove(room).is_some() {
            self.save();
        }
    }

    fn save(&self) {
        if let Err(cause) = self.write() {
            tracing::warn!(%cause, "cannot save the E2E commit counts");
        }
    }

    /// Writes the file atomically (temporary file, then rename), mode 0600.
    fn write(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for (room, (count, last)) in &self.rooms {
            let _ = writeln!(text, "{room} {count} {last}");
        }
        super::write_private(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_commit_record_counts_once_and_the_count_survives_reloading() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = CommitCounts::load(dir.path());
        c.set("#sec", 2, 10);
        assert!(!c.record("#sec", 10, 0), "the welcome's own commit is in its epoch");
        assert!(c.record("#sec", 12, 0));
        assert!(!c.record("#sec", 12, 0), "a replayed record is not counted again");
        let mut c = CommitCounts::load(dir.path());
        assert_eq!(c.get("#sec"), Some(3));
        c.remove("#sec");
        assert_eq!(CommitCounts::load(dir.path()).get("#sec"), None);
    }
}
