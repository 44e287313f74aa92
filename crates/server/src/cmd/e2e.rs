//! The commands of end-to-end encrypted rooms: `create`, `key_packages`,
//! `fetch_key_package`, `commit` and `sealed`. The hub's side is in `hub/e2e.rs`; the server
//! never reads the MLS messages of a room, it only checks they are base64 within the size
//! limit. Key packages are the exception: they are public, and each is checked before it is
//! kept (`hub/e2e/key_packages.rs`).

use std::time::Instant;

use chatao_proto::{SealedWelcome, ServerMsg};

use super::{Replay, Reply, SessionState, error};
use crate::hub::{E2eRefusal, Hub};
use crate::limits::{
    KEY_PACKAGE_CHECK_WINDOW, KEY_PACKAGE_CHECKS, KEY_PACKAGE_FETCH_BURST, KEY_PACKAGE_FETCH_EVERY,
    KEY_PACKAGE_TARGET_WINDOW, KEY_PACKAGE_TARGETS_TRACKED, KEY_PACKAGES_PER_TARGET,
    MAX_KEY_PACKAGES_PER_UPLOAD,
};

/// A session's allowance of key-package fetches: [`KEY_PACKAGE_FETCH_BURST`] at once, one more
/// every [`KEY_PACKAGE_FETCH_EVERY`]. Each package is meant to be used once, so a session
/// fetching in a loop would otherwise drain every key's packages down to the last-resort one.
/// Besides, at most [`KEY_PACKAGES_PER_TARGET`] of one nickname per window. Also the
/// session's allowance of key packages checked on upload ([`KEY_PACKAGE_CHECKS`] per
/// [`KEY_PACKAGE_CHECK_WINDOW`]).
#[derive(Debug)]
pub struct FetchBudget {
    left: u32,
    since: Instant,
    /// Fetches per case-folded nickname since `window`.
    per_target: std::collections::HashMap<String, u32>,
    window: Instant,
    /// Key packages this session may still have checked, until `checks_since` plus the window.
    checks_left: u32,
    checks_since: Instant,
}

impl FetchBudget {
    pub fn new(now: Instant) -> FetchBudget {
        FetchBudget {
            left: KEY_PACKAGE_FETCH_BURST,
            since: now,
            per_target: Default::default(),
            window: now,
            checks_left: KEY_PACKAGE_CHECKS,
            checks_since: now,
        }
    }

    /// Takes `n` key-package checks if the allowance permits (all or none).
    pub fn take_checks(&mut self, n: usize, now: Instant) -> bool {
        if now.saturating_duration_since(self.checks_since) >= KEY_PACKAGE_CHECK_WINDOW {
            self.checks_left = KEY_PACKAGE_CHECKS;
            self.checks_since = now;
        }
        match u32::try_from(n) {
            Ok(n) if n <= self.checks_left => {
                self.checks_left -= n;
                true
            }
            _ => false,
        }
    }

    /// Takes one fetch of `nick`'s packages if the per-nickname and overall allowances permit.
    pub fn take_for(&mut self, nick: &str, now: Instant) -> bool {
        if now.saturating_duration_since(self.window) >= KEY_PACKAGE_TARGET_WINDOW {
            self.per_target.clear();
            self.window = now;
        }
        let key = nick.to_ascii_lowercase();
        let count = self.per_target.get(&key).copied().unwrap_or(0);
        if count >= KEY_PACKAGES_PER_TARGET
            || (count == 0 && self.per_target.len() >= KEY_PACKAGE_TARGETS_TRACKED)
        {
            return false;
        }
        if !self.take(now) {
            return false;
        }
        self.per_target.insert(key, count + 1);
        true
    }

    /// Takes one fetch if there is one left (after refilling for the time passed).
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.since).as_secs()
            / KEY_PACKAGE_FETCH_EVERY.as_secs().max(1);
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.left = self.left.saturating_add(earned).min(KEY_PACKAGE_FETCH_BURST);
            self.since = now;
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
}

/// The error reply for an E2E refusal (a join request sent is a notice, not an error).
pub fn refusal(e: E2eRefusal) -> Reply {
    match e {
        E2eRefusal::Requested(_) => Reply::Send(ServerMsg::Notice { text: e.to_string() }),
        e => error(e.code(), e.to_string()),
    }
}

/// `create`: a new room, plain or end-to-end encrypted; the creator joins it.
#[derive(Debug)]
pub struct Create {
    pub room: String,
    pub e2e: bool,
    pub open: bool,
}

impl Create {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        match hub.create(session.id, &room, self.e2e, self.open) {
            Ok(joined) => Reply::Replay(Box::new(Replay {
                joined,
                since: None,
                limit: hub.config().history_on_join,
                intro: true,
                before: None,
            })),
            Err(e) => refusal(e),
        }
    }
}

/// `key_packages`: this key's MLS key packages, for others to add it to rooms. At most
/// [`crate::limits::MAX_KEY_PACKAGES_PER_UPLOAD`]; each is checked (size, structure,
/// signatures, ciphersuite, and a credential for this session's key: `hub/e2e/key_packages.rs`)
/// before any is kept, outside the hub's lock. One bad package refuses the whole upload.
#[derive(Debug)]
pub struct KeyPackages {
    pub packages: Vec<String>,
}

impl KeyPackages {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        // Too many in one upload is refused by the hub, before any check is counted.
        let n = self.packages.len();
        if n <= MAX_KEY_PACKAGES_PER_UPLOAD && !session.fetches.take_checks(n, Instant::now()) {
            // Nothing is checked; an empty upload still hands out the waiting welcomes.
            let _ = hub.upload_key_packages(session.id, &session.fingerprint, vec![]);
            return refusal(E2eRefusal::TooManyUploads);
        }
        match hub.upload_key_packages(session.id, &session.fingerprint, self.packages) {
            Ok(()) => Reply::Nothing,
            Err(e) => {
                tracing::debug!(fingerprint = %session.fingerprint, cause = %e, "key packages refused");
                refusal(e)
            }
        }
    }
}

/// `fetch_key_package`: one key package of another user's key.
#[derive(Debug)]
pub struct FetchKeyPackage {
    pub nick: String,
    pub room: Option<String>,
}

impl FetchKeyPackage {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match self.room.map(|r| super::room(&r)).transpose() {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        if !session.fetches.take_for(&self.nick, Instant::now()) {
            return refusal(E2eRefusal::TooManyFetches);
        }
        match hub.fetch_key_package(&self.nick, room) {
            Ok(msg) => Reply::Send(msg),
            Err(e) => refusal(e),
        }
    }
}

/// `commit`: an MLS commit, ordered by epoch.
#[derive(Debug)]
pub struct Commit {
    pub room: String,
    pub epoch: u64,
    pub body: String,
    pub welcome: Option<SealedWelcome>,
    pub adds: Vec<String>,
    pub removes: Vec<String>,
}

impl Commit {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        match hub.commit(
            session.id,
            &room,
            self.epoch,
            self.body,
            self.welcome,
            self.adds,
            self.removes,
        ) {
            Ok(_) => Reply::Nothing,
            Err(e) => refusal(e),
        }
    }
}

/// `sealed`: an MLS application message.
#[derive(Debug)]
pub struct Sealed {
    pub room: String,
    pub epoch: u64,
    pub body: String,
    /// The client's id for the message (see `say.rs`).
    pub cid: Option<chatao_proto::Cid>,
}

impl Sealed {
    pub fn apply(self, hub: &Hub, session: &mut SessionState) -> Reply {
        super::once(hub, session, self.cid, |hub, session| self.accept(hub, session))
    }

    fn accept(self, hub: &Hub, session: &mut SessionState) -> Reply {
        let room = match super::room(&self.room) {
            Ok(room) => room,
            Err(reply) => return *reply,
        };
        if let Some(why) = super::muted(hub, session) {
            return error(chatao_proto::ErrorCode::Muted, why);
        }
        match hub.seal(session.id, &room, self.epoch, self.body, self.cid) {
            Ok(_) => Reply::Nothing,
            Err(e) => refusal(e),
        }
    }
}
