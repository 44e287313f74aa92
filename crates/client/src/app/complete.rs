//! Tab completion of commands, rooms and nicknames.
//!
//! The word before the cursor decides what is completed: `/jo` a command (at the start of the
//! line), `#ru` a room, anything else a nickname of the current room; after `/join`, `/part`,
//! `/switch`, `/who` and `/say` a room (with or without `#`), after `/msg`, `/whois` and the
//! moderation commands any nickname we know. Matching ignores case. Tab again cycles through the
//! candidates of the word first completed, in place (`ca` Tab `carla: ` Tab `carol: `, never a
//! completion of what follows it), Shift-Tab backwards; any other key accepts the current one.

use crate::command::COMMANDS;

/// What kind of word is being completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Command,
    Room,
    /// A member of the current room.
    Member,
    /// Any nickname we know of.
    Nick,
}

/// Where the names come from.
#[derive(Debug, Default)]
pub struct Names<'a> {
    pub rooms: Vec<&'a str>,
    pub members: Vec<&'a str>,
    pub nicks: Vec<&'a str>,
}

/// A completion in progress: the candidates, which one is in the text, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Byte offset of the completed word.
    pub start: usize,
    /// Full replacements (candidate plus its suffix).
    pub candidates: Vec<String>,
    pub index: usize,
}

/// The start of the word before `cursor` and its slot.
pub fn slot(text: &str, cursor: usize) -> (usize, Slot) {
    let before = &text[..cursor];
    let start = before.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
    let word = &before[start..];
    if start == 0 && word.starts_with('/') {
        return (start, Slot::Command);
    }
    if word.starts_with('#') {
        return (start, Slot::Room);
    }
    let mut words = before[..start].split_whitespace();
    let slot = match (words.next(), words.next()) {
        (Some(cmd), None) if text.starts_with('/') => match cmd.to_ascii_lowercase().as_str() {
            "/join" | "/j" | "/part" | "/leave" | "/switch" | "/s" | "/who" | "/names" | "/say" => {
                Slot::Room
            }
            "/msg" | "/query" | "/q" | "/m" | "/whois" | "/kick" | "/ban" | "/unban" | "/mute"
            | "/unmute" => Slot::Nick,
            _ => Slot::Member,
        },
        _ => Slot::Member,
    };
    (start, slot)
}

/// The candidates for `word` in `slot`, each with the text that follows it: a space, or `: `
/// after a nickname that starts the line (addressing someone).
pub fn candidates(word: &str, slot: Slot, at_line_start: bool, names: &Names<'_>) -> Vec<String> {
    let lower = word.to_ascii_lowercase();
    let matches = |name: &str| name.to_ascii_lowercase().starts_with(&lower);
    let mut out: Vec<String> = match slot {
        Slot::Command => COMMANDS
            .iter()
            .map(|(name, _, _)| format!("/{name}"))
            .filter(|c| matches(c))
            .map(|c| c + " ")
            .collect(),
        Slot::Room => {
            let bare = !word.starts_with('#');
            names
                .rooms
                .iter()
                .filter(|r| matches(r) || (bare && matches(&r[1..])))
                .map(|r| format!("{r} "))
                .collect()
        }
        Slot::Member | Slot::Nick => {
            let pool = if slot == Slot::Member { &names.members } else { &names.nicks };
            let suffix = if at_line_start { ": " } else { " " };
            pool.iter().filter(|n| matches(n)).map(|n| format!("{n}{suffix}")).collect()
        }
    };
    out.sort_by_key(|c| c.to_ascii_lowercase());
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names<'static> {
        Names {
            rooms: vec!["#lobby", "#rust", "#rustaceans"],
            members: vec!["bob", "Barbara", "carol"],
            nicks: vec!["bob", "Barbara", "carol", "dave"],
        }
    }

    fn complete(text: &str) -> Vec<String> {
        let (start, slot) = slot(text, text.len());
        candidates(&text[start..], slot, start == 0, &names())
    }

    #[test]
    fn commands_rooms_and_nicks() {
        assert_eq!(complete("/jo"), vec!["/join "]);
        assert_eq!(complete("/w"), vec!["/who ", "/whois "]);
        assert_eq!(complete("hi #ru"), vec!["#rust ", "#rustaceans "]);
        assert_eq!(complete("/join ru"), vec!["#rust ", "#rustaceans "]);
        assert_eq!(complete("b"), vec!["Barbara: ", "bob: "]);
        assert_eq!(complete("hi B"), vec!["Barbara ", "bob "]);
        assert_eq!(complete("/msg d"), vec!["dave "]);
        assert_eq!(complete("d"), Vec::<String>::new(), "dave is not in this room");
        assert_eq!(complete("/quit b"), vec!["Barbara ", "bob "]);
    }
}
