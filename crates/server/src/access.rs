//! Who may connect and who may moderate: the allowlist, operators, bans and mutes, all keyed by
//! key fingerprint.
//!
//! The allowlist and operator files list one fingerprint per line (`SHA256:...`), optionally
//! followed by a comment (a name, say); `#` starts a comment line; blank lines are ignored, as
//! in SSH's `authorized_keys`. They are read at start and again on SIGHUP; a file that fails to
//! parse on reload leaves the previous list in force. Bans are persisted (through the bus);
//! mutes live in memory only.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chatao_proto::ErrorCode;
use chatao_transport::keys::{Fingerprint, parse_fingerprint};
use parking_lot::{Mutex, MutexGuard};
use tracing::{info, warn};

use crate::clock::{Clock, human};

/// A ban on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub fingerprint: Fingerprint,
    /// End of the ban (clock milliseconds); `None`: permanent.
    pub until: Option<u64>,
    pub reason: Option<String>,
    /// Nickname of the operator who banned.
    pub by: String,
}

/// Which fingerprint file, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// `allow`: the keys that may connect.
    Allow,
    /// `ops-file`: the operators' keys.
    Ops,
}

impl std::fmt::Display for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            List::Allow => "allowlist",
            List::Ops => "operators file",
        })
    }
}

/// A fingerprint file that could not be used. The `Display` text says everything once: the
/// file, the line and the cause; the I/O error is not also a `source`, so that a printed chain
/// does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read the {list} {}: {}", .path.display(), io_reason(.cause))]
    Io { list: List, path: PathBuf, cause: std::io::Error },
    #[error("{}:{line}: expected a key fingerprint (SHA256:...), found `{text}`", .path.display())]
    Malformed { path: PathBuf, line: usize, text: String },
}

/// An I/O error's text without the `(os error N)` that std appends: "No such file or
/// directory". For messages that already name the file and say what to do.
pub fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_owned(),
        _ => text,
    }
}

/// Why a key is refused at connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
}

/// Where the lists come from.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Only these keys may connect (`None`: everyone may).
    pub allow_file: Option<PathBuf>,
    /// Operators listed in a file.
    pub ops_file: Option<PathBuf>,
    /// Operators given on the command line.
    pub ops: Vec<String>,
    /// A cluster node: the allowlist in force is the cluster's shared one (set with
    /// [`Access::set_allow`]); the allow file, if any, is only what this node publishes.
    pub shared_allow: bool,
}

#[derive(Debug, Default)]
struct State {
    allow: Option<HashSet<Fingerprint>>,
    ops: HashSet<Fingerprint>,
    bans: HashMap<Fingerprint, Ban>,
    mutes: HashMap<Fingerprint, Option<u64>>,
}

/// The access lists, shared by the accept path and the operator commands.
#[derive(Debug)]
pub struct Access {
    config: AccessConfig,
    clock: Clock,
    /// Short, synchronous sections only.
    state: Mutex<State>,
}

/// Reads a fingerprint file; the first unusable line is the error.
pub fn read_list(path: &Path, list: List) -> Result<HashSet<Fingerprint>, AccessError> {
    let (keys, mut errors) = scan_list(path, list);
    if errors.is_empty() { Ok(keys) } else { Err(errors.swap_remove(0)) }
}

/// Reads a fingerprint file, for a check: its keys and every unusable line (or the one error
/// that it cannot be read).
pub fn scan_list(path: &Path, list: List) -> (HashSet<Fingerprint>, Vec<AccessError>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(cause) => {
            return (HashSet::new(), vec![AccessError::Io { list, path: path.to_owned(), cause }]);
        }
    };
    let mut keys = HashSet::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        match parse_fingerprint(first) {
            Ok(fp) => {
                keys.insert(fp);
            }
            Err(_) => errors.push(AccessError::Malformed {
                path: path.to_owned(),
                line: i + 1,
                text: line.to_owned(),
            }),
        }
    }
    (keys, errors)
}

impl Access {
    /// Reads the files named in `config`; `bans` come from the store.
    pub fn load(config: AccessConfig, clock: Clock, bans: Vec<Ban>) -> Result<Access, AccessError> {
        let access = Access { config, clock, state: Mutex::new(State::default()) };
        access.reload()?;
        let mut st = access.lock();
        for ban in bans {
            st.bans.insert(ban.fingerprint.clone(), ban);
        }
        drop(st);
        Ok(access)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Re-reads the allowlist and operator files. On error the lists in force stay as they
    /// were and the error is returned (and logged by the caller).
    pub fn reload(&self) -> Result<(), AccessError> {
        let allow = match &self.config.allow_file {
            Some(path) => Some(read_list(path, List::Allow)?),
            None => None,
        };
        let mut ops = match &self.config.ops_file {
            Some(path) => read_list(path, List::Ops)?,
            None => HashSet::new(),
        };
        for op in &self.config.ops {
            match parse_fingerprint(op) {
                Ok(fp) => {
                    ops.insert(fp);
                }
                Err(_) => warn!(op = %op, "ignoring an operator that is not a fingerprint"),
            }
        }
        let mut st = self.lock();
        match &allow {
            Some(keys) => {
                info!(allowlist_entries = keys.len(), operators = ops.len(), "access lists loaded")
            }
            None => info!(allowlist = "off", operators = ops.len(), "access lists loaded"),
        }
        if !self.config.shared_allow {
            st.allow = allow;
        }
        st.ops = ops;
        Ok(())
    }

    /// The allow file's keys (`None`: no allow file), for a cluster node to publish.
    pub fn allow_file_list(&self) -> Result<Option<HashSet<Fingerprint>>, AccessError> {
        self.config.allow_file.as_deref().map(|path| read_list(path, List::Allow)).transpose()
    }

    /// Sets the allowlist in force (a cluster's shared list; `None`: everyone may connect).
    pub fn set_allow(&self, allow: Option<HashSet<Fingerprint>>) {
        match &allow {
            Some(keys) => info!(allowlist_entries = keys.len(), "shared allowlist applied"),
            None => info!(allowlist = "off", "shared allowlist applied"),
        }
        self.lock().allow = allow;
    }

    /// Whether `fp` may connect now.
    pub fn admit(&self, fp: &str) -> Result<(), Refusal> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if let Some(allow) = &st.allow
            && !allow.contains(fp)
        {
            return Err(Refusal {
                code: ErrorCode::NotAllowed,
                reason: format!(
                    "your key {fp} is not on this server's allowlist; send this fingerprint to the server's operator"
                ),
            });
        }
        if let Some(ban) = st.bans.get(fp) {
            match ban.until {
                Some(until) if until <= now => {
                    st.bans.remove(fp);
                }
                until => {
                    let left = match until {
                        Some(until) => format!("{} left", human(until - now)),
                        None => "permanently".into(),
                    };
                    let why = ban.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                    return Err(Refusal {
                        code: ErrorCode::Banned,
                        reason: format!("your key is banned ({left}){why}"),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn is_op(&self, fp: &str) -> bool {
        self.lock().ops.contains(fp)
    }

    /// Records a ban (replacing any earlier one on the same key).
    pub fn ban(&self, ban: Ban) {
        self.lock().bans.insert(ban.fingerprint.clone(), ban);
    }

    /// Lifts a ban; false if there was none.
    pub fn unban(&self, fp: &str) -> bool {
        self.lock().bans.remove(fp).is_some()
    }

    /// Mutes a key until `until` (`None`: until unmuted).
    pub fn mute(&self, fp: &Fingerprint, until: Option<u64>) {
        self.lock().mutes.insert(fp.clone(), until);
    }

    /// Lifts a mute; false if there was none.
    pub fn unmute(&self, fp: &str) -> bool {
        self.lock().mutes.remove(fp).is_some()
    }

    /// If `fp` is muted now, the sentence to tell them.
    pub fn muted(&self, fp: &str) -> Option<String> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        match st.mutes.get(fp).copied()? {
            Some(until) if until <= now => {
                st.mutes.remove(fp);
                None
            }
            Some(until) => Some(format!("you are muted for {} more", human(until - now))),
            None => Some("you are muted until an operator unmutes you".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: &str = "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4";

    #[test]
    fn lists_parse_like_authorized_keys_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("allow");
        std::fs::write(&p, format!("# friends\n\n{A} alice's laptop\n")).unwrap();
        assert_eq!(
            read_list(&p, List::Allow).unwrap(),
            HashSet::from([Fingerprint::parse(A).unwrap()])
        );
        std::fs::write(&p, format!("{A}\nnot-a-key\n# fine\nalso-not\n")).unwrap();
        let err = read_list(&p, List::Allow).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("not-a-key"), "{err}");
        let (keys, errors) = scan_list(&p, List::Allow);
        assert_eq!(keys.len(), 1);
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(lines.len() == 2 && lines[1].contains(":4:"), "every bad line: {lines:?}");
    }

    #[test]
    fn a_missing_file_is_said_once_without_the_errno() {
        let err = read_list(Path::new("/nonexistent/allow"), List::Allow).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read the allowlist /nonexistent/allow: No such file or directory"
        );
        assert!(std::error::Error::source(&err).is_none(), "the cause is not printed twice");
    }

    #[test]
    fn bans_and_mutes_expire_on_the_clock() {
        let clock = Clock::default();
        let access = Access::load(AccessConfig::default(), clock.clone(), vec![]).unwrap();
        let until = Some(clock.now_ms() + 60_000);
        access.ban(Ban {
            fingerprint: Fingerprint::parse(A).unwrap(),
            until,
            reason: Some("spam".into()),
            by: "op".into(),
        });
        let refusal = access.admit(A).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Banned);
        assert!(
            refusal.reason.contains("1m left") && refusal.reason.contains("spam"),
            "{refusal:?}"
        );
        access.mute(&Fingerprint::parse(A).unwrap(), Some(clock.now_ms() + 30_000));
        assert!(access.muted(A).unwrap().contains("30s"));
        clock.advance(Duration::from_secs(61));
        assert_eq!(access.admit(A), Ok(()));
        assert_eq!(access.muted(A), None);
    }
}
