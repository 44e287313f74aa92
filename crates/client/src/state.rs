//! Line mode's place across restarts (`--state FILE`, issue 22): per server and room, the id of
//! the last room message printed. Started again with the same file, line mode asks for exactly
//! what came after ([`crate::core::Core::resume_from`]) and prints each of those once.
//!
//! The file is JSON, written whole after each message printed, atomically and private (0600),
//! by the workspace's one writer ([`chatao_transport::private_file`]: a temporary file in the
//! same directory, fsync, rename, fsync of the directory), so a crash leaves either the old
//! place or the new one, never half a file:
//!
//! ```json
//! {"version":1,"servers":{"SHA256:o4KR…":{"#lobby":1234,"#ops":77}}}
//! ```
//!
//! A server is named by its key's fingerprint: the nodes of one cluster share the key and the
//! ids, so the place survives a move to another node. A file that is missing is an empty
//! place (created at the first message printed); one that cannot be read, is not this JSON,
//! names a room or server that breaks the rules, or is larger than [`MAX_STATE_BYTES`] is an
//! error ([`StateError`]) before anything is sent: never a crash, never a silent new start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatao_transport::private_file::{Publish, write_private};
use serde::{Deserialize, Serialize};

/// The largest state file read. Far more than [`MAX_STATE_ROOMS`] entries for every server of
/// a list need; a larger file is refused as not ours.
pub const MAX_STATE_BYTES: u64 = 1 << 20;
/// Rooms kept per server. Overflow policy (only a server that names endless rooms gets
/// there): a new room is not recorded (a warning is logged), so after a restart its messages
/// follow the ordinary join replay; the rooms already recorded keep their place.
pub const MAX_STATE_ROOMS: usize = 1024;
/// Servers kept in one file. Overflow policy as for rooms: a new server is not recorded.
pub const MAX_STATE_SERVERS: usize = 64;
/// The format written, and the only one read.
const VERSION: u32 = 1;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {}: {cause}", path.display())]
    Read { path: PathBuf, cause: std::io::Error },
    #[error(
        "the state file {} is not a chatao state file ({why}); fix it or move it away (without \
         it the bot starts from the join replay)",
        path.display()
    )]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot write the state file {}: {cause}", path.display())]
    Write { path: PathBuf, cause: std::io::Error },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    /// Server key fingerprint to (room, last id printed).
    servers: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The place of one line-mode client, kept in a file.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    file: File,
}

impl State {
    /// Reads the state at `path` (a missing file is an empty state). See the module's
    /// documentation for what is refused.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let read = |cause| StateError::Read { path: path.to_owned(), cause };
        let corrupt = |why: String| StateError::Corrupt { path: path.to_owned(), why };
        let bytes = match std::fs::File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State { path: path.to_owned(), file: File::default() });
            }
            Err(e) => return Err(read(e)),
            Ok(f) => {
                use std::io::Read;
                let mut bytes = Vec::new();
                f.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
                if bytes.len() as u64 > MAX_STATE_BYTES {
                    return Err(corrupt(format!("larger than {MAX_STATE_BYTES} bytes")));
                }
                bytes
            }
        };
        let mut file: File = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != VERSION {
            return Err(corrupt(format!("version {}, this chatao reads {VERSION}", file.version)));
        }
        for (server, rooms) in &file.servers {
            if chatao_proto::Fingerprint::parse(server).is_err() {
                return Err(corrupt(format!("{server:?} is not a server key fingerprint")));
            }
            for room in rooms.keys() {
                if chatao_proto::RoomName::parse(room).is_err() {
                    return Err(corrupt(format!("{room:?} is not a room name")));
                }
            }
        }
        // Room names compare in lower case: `#Ops` written by hand is `#ops`.
        for rooms in file.servers.values_mut() {
            let named = std::mem::take(rooms);
            for (room, id) in named {
                let room = room.to_ascii_lowercase();
                let last = rooms.entry(room).or_insert(id);
                *last = (*last).max(id);
            }
        }
        Ok(State { path: path.to_owned(), file })
    }

    /// The rooms recorded for the server with key `server` (lower case, as room names
    /// compare), with the last id printed in each.
    pub fn places(&self, server: &str) -> Vec<(String, u64)> {
        let Some(rooms) = self.file.servers.get(server) else { return vec![] };
        rooms.iter().map(|(r, id)| (r.clone(), *id)).collect()
    }

    /// Records that message `id` of `room` (lower case) on server `server` was printed, and
    /// writes the file if that moved the place forward. An id at or below the one recorded
    /// changes nothing.
    pub fn printed(&mut self, server: &str, room: &str, id: u64) -> Result<(), StateError> {
        if !self.file.servers.contains_key(server) && self.file.servers.len() >= MAX_STATE_SERVERS {
            tracing::warn!(server, "state file: too many servers, this one is not recorded");
            return Ok(());
        }
        self.file.version = VERSION;
        let rooms = self.file.servers.entry(server.to_owned()).or_default();
        let full = rooms.len() >= MAX_STATE_ROOMS;
        match rooms.get_mut(room) {
            Some(last) if *last >= id => return Ok(()),
            Some(last) => *last = id,
            None if full => {
                tracing::warn!(room, "state file: too many rooms, this one is not recorded");
                return Ok(());
            }
            None => {
                rooms.insert(room.to_owned(), id);
            }
        }
        let bytes = serde_json::to_vec(&self.file).map_err(|e| StateError::Write {
            path: self.path.clone(),
            cause: std::io::Error::other(e),
        })?;
        write_private(&self.path, &bytes, Publish::Replace)
            .map_err(|cause| StateError::Write { path: self.path.clone(), cause })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_place_survives_a_reload_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bot.state");
        let mut s = State::load(&path).unwrap();
        assert!(
            s.places("SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_empty(),
            "a missing file is an empty place"
        );
        s.printed("SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "#lobby", 5).unwrap();
        s.printed("SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "#lobby", 3).unwrap();
        s.printed("SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "#ops", 9).unwrap();
        s.printed("SHA256:bAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "#lobby", 1).unwrap();
        let again = State::load(&path).unwrap();
        assert_eq!(
            again.places("SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            vec![("#lobby".into(), 5), ("#ops".into(), 9)]
        );
        assert_eq!(
            again.places("SHA256:bAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            vec![("#lobby".into(), 1)]
        );
        // A room written by hand in capitals is the same room.
        std::fs::write(&path, br##"{"version":1,"servers":{"SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA":{"#Ops":4}}}"##).unwrap();
        assert_eq!(
            State::load(&path)
                .unwrap()
                .places("SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            vec![("#ops".into(), 4)]
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_bad_state_file_is_a_clear_error_never_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bot.state");
        for (content, says) in [
            (&b"{\"version\":1,\"servers\":{\"SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\":{\"#lobby\":"[..], "EOF"),
            (b"garbage", "expected"),
            (b"{\"version\":2,\"servers\":{}}", "version 2"),
            (b"{\"version\":1,\"servers\":{\"SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\":{\"#lobby\":-1}}}", "invalid value"),
            (b"{\"version\":1,\"servers\":{\"SHA256:aAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\":{\"no room\":1}}}", "not a room name"),
            (b"{\"version\":1,\"servers\":{\"x\":{}}}", "not a server key"),
        ] {
            std::fs::write(&path, content).unwrap();
            let err = State::load(&path).unwrap_err().to_string();
            assert!(err.contains("not a chatao state file") && err.contains(says), "{err}");
        }
        std::fs::write(&path, vec![b' '; MAX_STATE_BYTES as usize + 1]).unwrap();
        assert!(State::load(&path).unwrap_err().to_string().contains("larger than"));
        let err = State::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot read") || err.contains("not a chatao"), "{err}");
    }
}
