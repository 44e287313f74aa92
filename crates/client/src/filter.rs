//! What the user chose not to see, or to be told about: ignored keys, highlight words, and
//! weechat's "smart" filter for joins, parts and nickname changes. Pure (no I/O; time is passed
//! in as an `Instant`), shared by both modes.
//!
//! Messages name their sender by nickname only; `members`, `join` and `whois` carry the key's
//! fingerprint. [`Ignores`] keeps the nickname → fingerprint map those events give, follows
//! `nick_change`, and matches a sender by its key, so a rename does not escape an ignore. An
//! ignore given as a nickname whose key is not known yet matches that nickname until the key is
//! learned, then the key.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Most nickname → fingerprint pairs kept; past it the oldest learned is forgotten (an ignore
/// by key still holds, by nickname it falls back to the nickname).
pub const MAX_KNOWN_KEYS: usize = 10_000;

/// Most (room, nickname) pairs the smart filter remembers; past it the oldest speaker is
/// forgotten (their next join/part is then hidden, as for someone who has not spoken).
pub const MAX_SPEAKERS: usize = 10_000;

/// Folds a nickname for comparison (the server compares nicknames ignoring ASCII case).
fn fold(nick: &str) -> String {
    nick.to_ascii_lowercase()
}

/// `s` as a whole key fingerprint in canonical form (a lower-case `sha256:` or a trailing `=`
/// typed are accepted); `None` when it is not one, so it is taken as a nickname.
fn as_fingerprint(s: &str) -> Option<String> {
    chatao_proto::Fingerprint::parse(s).ok().map(String::from)
}

/// The ignore list, and the keys it needs to match senders.
#[derive(Debug, Default, Clone)]
pub struct Ignores {
    /// Ignored keys (fingerprints).
    keys: BTreeSet<String>,
    /// Ignored nicknames (folded) whose key is not known yet.
    nicks: BTreeSet<String>,
    /// Folded nickname → fingerprint, as `members`, `join` and `whois` said.
    known: HashMap<String, String>,
    /// The order `known` was filled in, to forget the oldest (bounded by [`MAX_KNOWN_KEYS`]).
    order: VecDeque<String>,
}

/// What `/ignore X` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Ignored by key (X was a fingerprint, or a nickname whose key is known).
    Key(String),
    /// Ignored by nickname until its key is learned.
    Nick(String),
    /// Already ignored.
    Already,
}

impl Ignores {
    /// An ignore list from the config's and the state file's entries (nicknames or
    /// fingerprints).
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> Ignores {
        let mut ignores = Ignores::default();
        for e in entries {
            ignores.add(e);
        }
        ignores
    }

    /// Ignores `target`: a fingerprint, or a nickname (resolved to its key when known).
    pub fn add(&mut self, target: &str) -> Added {
        let target = target.trim();
        if let Some(fp) = as_fingerprint(target) {
            return if self.keys.insert(fp.clone()) { Added::Key(fp) } else { Added::Already };
        }
        let folded = fold(target);
        match self.known.get(&folded).cloned() {
            Some(fp) => {
                if self.keys.insert(fp.clone()) {
                    Added::Key(fp)
                } else {
                    Added::Already
                }
            }
            None => {
                if self.nicks.insert(folded) {
                    Added::Nick(target.to_owned())
                } else {
                    Added::Already
                }
            }
        }
    }

    /// Stops ignoring `target` (a fingerprint or a nickname, by its key when known); whether
    /// anything was removed.
    pub fn remove(&mut self, target: &str) -> bool {
        let target = target.trim();
        if let Some(fp) = as_fingerprint(target) {
            return self.keys.remove(&fp);
        }
        let folded = fold(target);
        let by_nick = self.nicks.remove(&folded);
        let by_key = match self.known.get(&folded) {
            Some(fp) => self.keys.remove(fp),
            None => false,
        };
        by_nick || by_key
    }

    /// The entries, fingerprints then nicknames, to list or to save.
    pub fn entries(&self) -> Vec<String> {
        self.keys.iter().chain(self.nicks.iter()).cloned().collect()
    }

    /// The nicknames currently known for `fp` (for listing).
    pub fn nicks_of(&self, fp: &str) -> Vec<String> {
        let mut out: Vec<String> =
            self.known.iter().filter(|(_, f)| f.as_str() == fp).map(|(n, _)| n.clone()).collect();
        out.sort();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.nicks.is_empty()
    }

    /// `nick` holds the key `fp` (from `members`, `join`, `whois`, `key_package`). An ignore by
    /// that nickname becomes an ignore by that key.
    pub fn learn(&mut self, nick: &str, fp: &str) {
        let folded = fold(nick);
        if self.nicks.remove(&folded) {
            self.keys.insert(fp.to_owned());
        }
        if self.known.insert(folded.clone(), fp.to_owned()).is_none() {
            self.order.push_back(folded);
            while self.order.len() > MAX_KNOWN_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.known.remove(&old);
                }
            }
        }
    }

    /// `old` is now called `new` (`nick_change`): its key goes with it.
    pub fn rename(&mut self, old: &str, new: &str) {
        let (old, new) = (fold(old), fold(new));
        if let Some(fp) = self.known.remove(&old) {
            self.order.retain(|n| *n != old);
            self.learn(&new, &fp);
        } else if self.nicks.remove(&old) {
            // Ignored by nickname, key unknown: the ignore follows the person.
            self.nicks.insert(new);
        }
    }

    /// Whether a message from `nick` is hidden.
    pub fn ignores_nick(&self, nick: &str) -> bool {
        let folded = fold(nick);
        if let Some(fp) = self.known.get(&folded) {
            return self.keys.contains(fp);
        }
        self.nicks.contains(&folded)
    }

    /// Whether the key `fp` is ignored.
    pub fn ignores_key(&self, fp: &str) -> bool {
        self.keys.contains(fp)
    }
}

/// Whether `word` occurs in `text` as a whole word, ignoring case (a word: letters, digits,
/// `_` and `-`, as nicknames are made).
pub fn has_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let hay = text.to_lowercase();
    let needle = word.to_lowercase();
    hay.match_indices(&needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

/// Whether `text` is a mention for the user `me` with the highlight words `words`.
pub fn is_mention(text: &str, me: &str, words: &[String]) -> bool {
    has_word(text, me) || words.iter().any(|w| has_word(text, w))
}

/// Which joins, parts and nickname changes are shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HideJoins {
    /// All are shown.
    #[default]
    Off,
    /// Those of people who have not spoken in the room in the last [`SMART_WINDOW`] are hidden.
    Smart,
    /// All are hidden.
    All,
}

impl HideJoins {
    pub fn as_str(self) -> &'static str {
        match self {
            HideJoins::Off => "off",
            HideJoins::Smart => "smart",
            HideJoins::All => "all",
        }
    }
}

/// The smart filter's window (weechat's `irc.look.smart_filter_delay`, 5 there; 10 here).
pub const SMART_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The smart filter's memory: when each nickname last spoke in each room.
#[derive(Debug, Clone)]
pub struct Smart {
    window: Duration,
    spoke: HashMap<(String, String), Instant>,
    order: VecDeque<(String, String)>,
}

impl Default for Smart {
    fn default() -> Smart {
        Smart::new(SMART_WINDOW)
    }
}

impl Smart {
    pub fn new(window: Duration) -> Smart {
        Smart { window, spoke: HashMap::new(), order: VecDeque::new() }
    }

    /// `nick` spoke in `room` at `now`.
    pub fn spoke(&mut self, room: &str, nick: &str, now: Instant) {
        let key = (room.to_owned(), fold(nick));
        if self.spoke.insert(key.clone(), now).is_none() {
            self.order.push_back(key);
            while self.order.len() > MAX_SPEAKERS {
                if let Some(old) = self.order.pop_front() {
                    self.spoke.remove(&old);
                }
            }
        }
    }

    /// `old` is now `new`: what they said in every room counts for the new name.
    pub fn rename(&mut self, old: &str, new: &str) {
        let old = fold(old);
        let moved: Vec<((String, String), Instant)> = self
            .spoke
            .iter()
            .filter(|((_, n), _)| *n == old)
            .map(|(k, t)| (k.clone(), *t))
            .collect();
        for ((room, _), t) in moved {
            self.spoke.remove(&(room.clone(), old.clone()));
            self.order.retain(|k| !(k.0 == room && k.1 == old));
            self.spoke(&room, new, t);
        }
    }

    /// Whether `nick` spoke in `room` within the window before `now`.
    pub fn recent(&self, room: &str, nick: &str, now: Instant) -> bool {
        self.spoke
            .get(&(room.to_owned(), fold(nick)))
            .is_some_and(|t| now.saturating_duration_since(*t) <= self.window)
    }

    /// Whether `nick`'s join or part in `room` is hidden under `mode`.
    pub fn hides(&self, mode: HideJoins, room: &str, nick: &str, now: Instant) -> bool {
        match mode {
            HideJoins::Off => false,
            HideJoins::All => true,
            HideJoins::Smart => !self.recent(room, nick, now),
        }
    }

    /// Whether `old`'s nickname change is hidden under `mode` (smart: shown if they spoke in any
    /// room recently). Call before [`Smart::rename`].
    pub fn hides_rename(&self, mode: HideJoins, old: &str, now: Instant) -> bool {
        match mode {
            HideJoins::Off => false,
            HideJoins::All => true,
            HideJoins::Smart => {
                let old = fold(old);
                !self.spoke.iter().any(|((_, n), t)| {
                    *n == old && now.saturating_duration_since(*t) <= self.window
                })
            }
        }
    }
}

/// The filters the full-screen UI applies (`app/incoming.rs` calls these), from the config.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub ignores: Ignores,
    pub highlight: Vec<String>,
    pub hide: HideJoins,
    /// Per room `hide_joins_parts`.
    pub rooms: std::collections::BTreeMap<String, HideJoins>,
    pub smart: Smart,
    /// `ignores.toml`, beside the config file: what `/ignore` and `/unignore` change (`None`:
    /// nothing is written, as in tests).
    pub ignores_file: Option<std::path::PathBuf>,
    /// The config's own ignore entries: they stay in the config, not in `ignores_file`.
    pub from_config: Vec<String>,
    /// The entries last written to (or read from) `ignores_file`.
    pub saved: Vec<String>,
}

impl Filters {
    /// Learns from `msg` (keys, renames, who spoke) and says whether it is an ignored person's
    /// message, action or private message, not to be shown, counted or notified.
    pub fn ignored(&mut self, me: &str, msg: &chatao_proto::ServerMsg, now: Instant) -> bool {
        use chatao_proto::ServerMsg;
        match msg {
            ServerMsg::Members { members, .. } => {
                for m in members {
                    self.ignores.learn(m.nick.as_str(), &m.fingerprint);
                }
                false
            }
            ServerMsg::Join { nick, fingerprint, .. }
            | ServerMsg::Whois { nick, fingerprint, .. } => {
                self.ignores.learn(nick.as_str(), fingerprint);
                false
            }
            ServerMsg::Message { room, from, history, .. } => {
                let hidden = !from.as_str().eq_ignore_ascii_case(me)
                    && self.ignores.ignores_nick(from.as_str());
                if !hidden && !history {
                    self.smart.spoke(room.as_str(), from.as_str(), now);
                }
                hidden
            }
            ServerMsg::Private { from, .. } => {
                !from.as_str().eq_ignore_ascii_case(me) && self.ignores.ignores_nick(from.as_str())
            }
            _ => false,
        }
    }

    /// Whether `nick`'s join or part line in `room` is hidden (their member list entry is
    /// still updated).
    pub fn hides_join(&self, me: &str, room: &str, nick: &str, now: Instant) -> bool {
        let mode = self.rooms.get(room).copied().unwrap_or(self.hide);
        !nick.eq_ignore_ascii_case(me) && self.smart.hides(mode, room, nick, now)
    }

    /// Whether `old`'s nickname change is hidden in `room`'s buffer, as their join or part
    /// there would be: under the room's `hide_joins_parts` (its override, else the global
    /// setting), smart hides it unless they spoke recently in that room, as weechat's smart
    /// filter does per buffer; our own is always shown. Call before [`Filters::rename`].
    pub fn hides_rename_in(&self, me: &str, room: &str, old: &str, now: Instant) -> bool {
        self.hides_join(me, room, old, now)
    }

    /// Whether `old`'s nickname change is hidden where it is printed once for every room (line
    /// mode): under the global `hide_joins_parts`, smart hides it unless they spoke recently in
    /// any room; our own is always shown. Call before [`Filters::rename`].
    pub fn hides_rename(&self, me: &str, old: &str, now: Instant) -> bool {
        !old.eq_ignore_ascii_case(me) && self.smart.hides_rename(self.hide, old, now)
    }

    /// Follows `old`'s rename to `new`: their ignore and what they said move with them.
    /// `app/incoming.rs` calls it for `nick_change` ([`Filters::ignored`] does not).
    pub fn rename(&mut self, old: &str, new: &str) {
        self.ignores.rename(old, new);
        self.smart.rename(old, new);
    }

    /// Whether `text` holds a highlight word.
    pub fn highlighted(&self, text: &str) -> bool {
        self.highlight.iter().any(|w| has_word(text, w))
    }

    /// The ignore file and the entries to write to it, when they changed since the last call
    /// (an `/ignore`, or a nickname resolved to its key); the config's own entries are left
    /// out. Marks them saved: the caller writes them (the app does no I/O).
    pub fn unsaved(&mut self) -> Option<(std::path::PathBuf, Vec<String>)> {
        let path = self.ignores_file.clone()?;
        let own: Vec<String> =
            self.ignores.entries().into_iter().filter(|e| !self.from_config.contains(e)).collect();
        if own == self.saved {
            return None;
        }
        self.saved = own.clone();
        Some((path, own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFA";
    const FP2: &str = "SHA256:ZZZdefghijklmnopqrstuvwxyz0123456789ABCDEFA";

    #[test]
    fn an_ignore_by_key_survives_a_rename() {
        let mut ig = Ignores::default();
        ig.learn("mallory", FP);
        assert_eq!(ig.add("Mallory"), Added::Key(FP.to_owned()));
        assert!(ig.ignores_nick("mallory"));
        ig.rename("mallory", "notmallory");
        assert!(ig.ignores_nick("NotMallory"));
        assert!(!ig.ignores_nick("mallory"), "the old name is free for someone else");
        ig.learn("mallory", FP2);
        assert!(!ig.ignores_nick("mallory"));
    }

    #[test]
    fn an_ignore_by_nickname_becomes_by_key_when_the_key_is_learned() {
        let mut ig = Ignores::new(["eve"]);
        assert!(ig.ignores_nick("EVE"));
        ig.learn("eve", FP);
        assert!(ig.ignores_key(FP));
        assert_eq!(ig.entries(), vec![FP.to_owned()]);
        ig.rename("eve", "eve2");
        assert!(ig.ignores_nick("eve2"));
        // Someone else takes "eve": not ignored, their key differs.
        ig.learn("eve", FP2);
        assert!(!ig.ignores_nick("eve"));
    }

    #[test]
    fn an_unresolved_nickname_ignore_follows_a_rename() {
        let mut ig = Ignores::new(["eve"]);
        ig.rename("eve", "eve_");
        assert!(ig.ignores_nick("eve_"));
        assert!(!ig.ignores_nick("eve"));
    }

    #[test]
    fn unignore_by_nickname_or_key() {
        let mut ig = Ignores::new([FP]);
        ig.learn("bob", FP);
        assert_eq!(ig.add(FP), Added::Already);
        assert!(ig.remove("BOB"));
        assert!(!ig.ignores_nick("bob"));
        assert!(!ig.remove("bob"));
        ig.add("carol");
        assert!(ig.remove("carol"));
        assert!(ig.is_empty());
    }

    #[test]
    fn the_known_keys_are_bounded() {
        let mut ig = Ignores::default();
        for i in 0..MAX_KNOWN_KEYS + 5 {
            ig.learn(&format!("n{i}"), FP);
        }
        assert_eq!(ig.known.len(), MAX_KNOWN_KEYS);
        assert!(!ig.known.contains_key("n0"));
    }

    #[test]
    fn highlight_words_are_whole_words_ignoring_case() {
        let words = vec!["deploy".to_owned(), "Ünïcode".to_owned()];
        assert!(is_mention("DEPLOY now", "me", &words));
        assert!(is_mention("ping me", "me", &words));
        assert!(is_mention("ünïcode!", "me", &words));
        assert!(!is_mention("redeployed", "me", &words));
        assert!(!is_mention("deploy-bot", "me", &words));
        assert!(!is_mention("meme", "me", &words));
        assert!(!has_word("x", ""));
    }

    #[test]
    fn the_smart_filter_hides_those_who_have_not_spoken_recently() {
        let t0 = Instant::now();
        let mut s = Smart::new(Duration::from_secs(600));
        assert!(s.hides(HideJoins::Smart, "#a", "bob", t0));
        s.spoke("#a", "Bob", t0);
        assert!(!s.hides(HideJoins::Smart, "#a", "bob", t0 + Duration::from_secs(600)));
        assert!(s.hides(HideJoins::Smart, "#a", "bob", t0 + Duration::from_secs(601)));
        assert!(s.hides(HideJoins::Smart, "#b", "bob", t0), "per room");
        assert!(!s.hides(HideJoins::Off, "#a", "zed", t0));
        assert!(s.hides(HideJoins::All, "#a", "bob", t0));
        // A nickname change: shown (they spoke), and their speaking moves to the new name.
        let t1 = t0 + Duration::from_secs(60);
        assert!(!s.hides_rename(HideJoins::Smart, "bob", t1));
        assert!(s.hides_rename(HideJoins::Smart, "carol", t1));
        s.rename("bob", "robert");
        assert!(!s.hides(HideJoins::Smart, "#a", "robert", t1));
        assert!(s.hides(HideJoins::Smart, "#a", "bob", t1));
    }

    #[test]
    fn the_tuis_filters_hide_an_ignored_key_through_a_rename() {
        use chatao_proto::{Nick, RoomName, ServerMsg};
        let t0 = Instant::now();
        let mut f = Filters { ignores: Ignores::new(["eve"]), ..Filters::default() };
        let nick = |n: &str| Nick::parse(n).unwrap();
        let say = |from: &str| ServerMsg::Message {
            room: RoomName::parse("#a").unwrap(),
            id: 1,
            time: 0,
            from: nick(from),
            kind: Default::default(),
            text: "hi".into(),
            history: false,
            cid: None,
        };
        let join = ServerMsg::Join {
            room: RoomName::parse("#a").unwrap(),
            nick: nick("eve"),
            fingerprint: chatao_proto::Fingerprint::parse(FP).unwrap(),
        };
        assert!(!f.ignored("me", &join, t0));
        let rename = ServerMsg::NickChange { old: nick("eve"), new: nick("eve2") };
        assert!(!f.ignored("me", &rename, t0));
        assert!(!f.hides_rename("me", "eve", t0), "hide_joins_parts off: shown");
        assert!(!f.hides_rename_in("me", "#a", "eve", t0), "hide_joins_parts off: shown");
        f.rename("eve", "eve2");
        assert!(f.ignored("me", &say("eve2"), t0));
        assert!(!f.ignored("me", &say("bob"), t0));
        f.hide = HideJoins::Smart;
        assert!(!f.hides_join("me", "#a", "bob", t0), "bob just spoke");
        assert!(f.hides_join("me", "#a", "carol", t0));
        assert!(!f.hides_join("me", "#a", "me", t0));
    }

    #[test]
    fn fingerprints_are_told_from_nicknames() {
        assert_eq!(as_fingerprint(FP).as_deref(), Some(FP));
        assert_eq!(as_fingerprint(&FP.replace("SHA256:", "sha256:")).as_deref(), Some(FP));
        assert_eq!(as_fingerprint("alice"), None);
        assert_eq!(as_fingerprint("SHA256:"), None);
        // The short form shown beside a join is not a key: it would match nobody.
        assert_eq!(as_fingerprint(&FP[..15]), None);
    }
}

/// The full-screen UI with these filters (through `app/incoming.rs`'s hooks).
#[cfg(test)]
mod app_tests {
    use crate::app::Effect;
    use crate::app::testing::{app, joined, net, say};

    use super::*;

    #[test]
    fn the_tui_hides_an_ignored_key_marks_highlights_and_hides_joins() {
        let mut a = app(80, 24);
        a.config.filters = Filters {
            ignores: Ignores::new(["eve"]),
            highlight: vec!["deploy".into()],
            hide: HideJoins::Smart,
            ..Filters::default()
        };
        // eve joins (her key is learned; the join is hidden: she has not spoken), renames.
        net(&mut a, joined("#lobby", "eve"));
        let before = a.buffers[0].entries.len();
        let rename = chatao_proto::ServerMsg::NickChange {
            old: chatao_proto::Nick::parse("eve").unwrap(),
            new: chatao_proto::Nick::parse("eve2").unwrap(),
        };
        net(&mut a, rename);
        let after_rename = a.buffers[0].entries.len();
        assert!(net(&mut a, say("#lobby", 1, "eve2", "ping alice")).is_empty(), "no bell");
        assert_eq!(a.buffers[0].entries.len(), after_rename, "eve2's line is not drawn");
        assert!(after_rename >= before);
        let effects = net(&mut a, say("#lobby", 2, "bob", "time to Deploy"));
        assert!(effects.contains(&Effect::Bell), "{effects:?}");
        assert!(a.buffers[0].entries.back().unwrap().mention);
        // bob spoke: his join/part lines show; carol's do not.
        let n = a.buffers[0].entries.len();
        net(&mut a, joined("#lobby", "carol"));
        assert_eq!(a.buffers[0].entries.len(), n, "carol's join is hidden");
        net(&mut a, joined("#lobby", "bob"));
        assert_eq!(a.buffers[0].entries.len(), n + 1, "bob's join shows");
    }

    fn texts(a: &crate::app::App) -> Vec<String> {
        a.current_buffer().entries.iter().map(|e| e.text.clone()).collect()
    }

    #[test]
    fn tui_ignore_by_nickname_looks_up_the_key_saves_it_and_unignore_lists_it_off() {
        let mut a = app(80, 24);
        let file = std::path::PathBuf::from("/nonexistent/ignores.toml");
        a.config.filters = Filters { ignores_file: Some(file.clone()), ..Filters::default() };
        let effects = crate::app::testing::enter(&mut a, "/ignore");
        assert!(effects.is_empty(), "{effects:?}");
        assert!(texts(&a).last().unwrap().contains("nobody is ignored"), "{:?}", texts(&a));
        // A nickname whose key is unknown: ignored by name, looked up with whois, saved.
        let effects = crate::app::testing::enter(&mut a, "/ignore eve");
        assert!(a.editor.text().is_empty());
        assert!(texts(&a).last().unwrap().contains("ignoring eve (by nickname"));
        assert!(
            effects.contains(&Effect::Send {
                msg: chatao_proto::ClientMsg::Whois { nick: "eve".into() },
                restore: None
            }),
            "{effects:?}"
        );
        assert!(
            effects
                .contains(&Effect::SaveIgnores { path: file.clone(), entries: vec!["eve".into()] }),
            "{effects:?}"
        );
        // Her join teaches her key: the ignore file now names it.
        let effects = net(&mut a, joined("#lobby", "eve"));
        let key = chatao_proto::Fingerprint::example("evekey0000").to_string();
        assert!(
            effects
                .contains(&Effect::SaveIgnores { path: file.clone(), entries: vec![key.clone()] }),
            "{effects:?}"
        );
        let n = a.buffers[0].entries.len();
        net(&mut a, say("#lobby", 1, "eve", "hello"));
        assert_eq!(a.buffers[0].entries.len(), n, "eve's line is not drawn");
        crate::app::testing::enter(&mut a, "/ignore");
        let listed = texts(&a).last().unwrap().clone();
        assert!(listed.contains(&format!("ignored: {key} (eve)")), "{listed}");
        let effects = crate::app::testing::enter(&mut a, "/unignore eve");
        assert!(texts(&a).last().unwrap().contains("no longer ignoring eve"), "{:?}", texts(&a));
        assert!(
            effects.contains(&Effect::SaveIgnores { path: file, entries: vec![] }),
            "{effects:?}"
        );
        let n = a.buffers[0].entries.len();
        net(&mut a, say("#lobby", 2, "eve", "back"));
        assert_eq!(a.buffers[0].entries.len(), n + 1, "eve is shown again");
    }

    #[test]
    fn tui_smart_filter_hides_the_rename_of_someone_who_has_not_spoken() {
        let mut a = app(80, 24);
        a.config.filters = Filters { hide: HideJoins::Smart, ..Filters::default() };
        net(&mut a, crate::app::testing::members("#lobby", &["alice", "bob", "carol"]));
        net(&mut a, say("#lobby", 1, "bob", "hi"));
        let rename = |old: &str, new: &str| chatao_proto::ServerMsg::NickChange {
            old: chatao_proto::Nick::parse(old).unwrap(),
            new: chatao_proto::Nick::parse(new).unwrap(),
        };
        net(&mut a, rename("carol", "carol2"));
        assert!(!texts(&a).iter().any(|t| t.contains("carol is now known")), "{:?}", texts(&a));
        assert!(a.buffers[0].members.contains_key("carol2"), "the member list follows");
        net(&mut a, rename("bob", "bob2"));
        assert!(texts(&a).iter().any(|t| t.contains("bob is now known as bob2")));
        // bob2 spoke as bob: still recent under his new name.
        net(&mut a, rename("bob2", "bob3"));
        assert!(texts(&a).iter().any(|t| t.contains("bob2 is now known as bob3")));
        net(&mut a, rename("alice", "alice2"));
        assert!(texts(&a).iter().any(|t| t.contains("alice is now known as alice2")), "our own");
    }

    /// A rename is hidden or shown per room buffer, as a join there would be: by the room's
    /// own setting and by whether they spoke in that room; a query with them always shows it.
    #[test]
    fn tui_rename_lines_follow_each_rooms_filter_and_show_in_a_query() {
        let mut a = app(80, 24);
        let rooms = [("#all".to_owned(), HideJoins::All), ("#off".to_owned(), HideJoins::Off)];
        a.config.filters =
            Filters { hide: HideJoins::Smart, rooms: rooms.into(), ..Filters::default() };
        for r in ["#lobby", "#all", "#off"] {
            net(&mut a, crate::app::testing::joined(r, "alice"));
            net(&mut a, crate::app::testing::members(r, &["alice", "bob", "carol"]));
        }
        // carol spoke in #lobby only (smart there), and in #all (hidden whatever she said).
        net(&mut a, say("#lobby", 1, "carol", "hi"));
        net(&mut a, say("#all", 2, "carol", "hi"));
        let rename = |old: &str, new: &str| chatao_proto::ServerMsg::NickChange {
            old: chatao_proto::Nick::parse(old).unwrap(),
            new: chatao_proto::Nick::parse(new).unwrap(),
        };
        let shown_in = |a: &crate::app::App, line: &str| -> Vec<String> {
            a.buffers
                .iter()
                .filter(|b| b.entries.iter().any(|e| e.text == line))
                .map(|b| b.target.name().to_owned())
                .collect()
        };
        net(&mut a, rename("carol", "carol2"));
        assert_eq!(shown_in(&a, "carol is now known as carol2"), ["#lobby", "#off"]);
        net(&mut a, rename("bob", "bob2"));
        assert_eq!(shown_in(&a, "bob is now known as bob2"), ["#off"], "bob never spoke");
        // A query with bob2: his next rename shows there, whatever the rooms say.
        net(&mut a, crate::app::testing::private(3, "bob2", "alice", "psst"));
        net(&mut a, rename("bob2", "bob3"));
        assert_eq!(shown_in(&a, "bob2 is now known as bob3"), ["#off", "bob3"]);
        // carol2 still counts as having spoken in #lobby under her new name.
        net(&mut a, rename("carol2", "carol3"));
        assert_eq!(shown_in(&a, "carol2 is now known as carol3"), ["#lobby", "#off"]);
        net(&mut a, rename("alice", "alice2"));
        assert_eq!(shown_in(&a, "alice is now known as alice2"), ["#lobby", "#all", "#off"]);
    }
}
