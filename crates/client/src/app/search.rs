//! Search in the scrollback of the buffer shown: Ctrl-R (or `/search TEXT`), ignoring case,
//! over everything the buffer holds, older pages loaded with PgUp included.
//!
//! Ctrl-R starts typing a query in the input line's place; each key moves to the newest match.
//! While in search mode, Ctrl-R or `n` goes to the next older match, Ctrl-S or `N` to the
//! next newer one (`n`/`N` once Enter has ended the typing, as `/search TEXT` does); Esc
//! leaves, the view staying where it is. Matches in the rows shown are highlighted
//! ([`crate::ui::messages`]); the match is put in the middle of the pane. Switching buffers
//! leaves the search.
//!
//! A match is remembered by a position that survives older pages landing above it and old
//! entries dropped by the limits ([`Search::at`]).

use super::buffer::{Buffer, Entry, Kind};
use super::{App, Effect};

/// Longest query, in bytes (a longer paste is cut at a character boundary).
pub const QUERY_MAX: usize = 256;

/// The search under way in the buffer shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub query: String,
    /// The query is being typed (keys edit it); otherwise `n`/`N` move.
    pub typing: bool,
    /// The entry of the current match, as `index + dropped - prepended` of its buffer (see
    /// [`Buffer::prepended`]): the same entry after pages land above it or old ones go.
    at: Option<i128>,
    /// The last move found nothing.
    pub failed: bool,
}

impl Search {
    /// The entry index of the current match in `b`, if it is still there.
    pub fn current(&self, b: &Buffer) -> Option<usize> {
        let i = self.at? - i128::from(b.dropped) + i128::from(b.prepended);
        usize::try_from(i).ok().filter(|&i| i < b.entries.len())
    }

    fn set(&mut self, b: &Buffer, i: usize) {
        self.at = Some(i as i128 + i128::from(b.dropped) - i128::from(b.prepended));
    }
}

/// The byte ranges of `text` that match `query`, ignoring case (per character, so the ranges
/// are those of `text` itself), without overlaps. An empty query matches nothing.
pub fn matches(text: &str, query: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = vec![];
    if query.is_empty() {
        return out;
    }
    let mut from = 0;
    'outer: while from < text.len() {
        let mut end = from;
        let mut q = query.chars();
        for c in text[from..].chars() {
            let Some(d) = q.clone().next() else { break };
            if !c.to_lowercase().eq(d.to_lowercase()) {
                break;
            }
            q.next();
            end += c.len_utf8();
        }
        if q.next().is_none() {
            out.push(from..end);
            from = end;
            continue 'outer;
        }
        from += text[from..].chars().next().map_or(1, char::len_utf8);
    }
    out
}

/// Whether entry `e` is one a search looks at and matches `query`.
fn hit(e: &Entry, query: &str) -> bool {
    e.kind != Kind::Marker && !matches(&e.text, query).is_empty()
}

impl App {
    /// Ctrl-R: starts typing a search, or (already searching) goes to the next older match.
    pub(super) fn search_key(&mut self) {
        match &self.search {
            Some(_) => self.search_move(true),
            None => self.search = Some(Search { typing: true, ..Search::default() }),
        }
    }

    /// `/search [TEXT]`: with a text, the newest match of it; without, starts typing one.
    pub(super) fn search_for(&mut self, text: Option<&str>) {
        match text {
            Some(t) => {
                self.search = Some(Search { query: cut(t), ..Search::default() });
                self.search_from_bottom();
            }
            None => self.search = Some(Search { typing: true, ..Search::default() }),
        }
    }

    /// A key while searching: `Some` when the search took it.
    pub(super) fn search_input(&mut self, key: &crossterm::event::KeyEvent) -> Option<Vec<Effect>> {
        use crossterm::event::{KeyCode, KeyModifiers};
        let typing = self.search.as_ref()?.typing;
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Esc => self.search = None,
            KeyCode::Char('r') if ctrl => self.search_move(true),
            KeyCode::Char('s') if ctrl => self.search_move(false),
            KeyCode::Enter if typing => {
                if let Some(s) = &mut self.search {
                    s.typing = false;
                }
            }
            KeyCode::Backspace if typing => {
                if let Some(s) = &mut self.search {
                    s.query.pop();
                }
                self.search_from_bottom();
            }
            KeyCode::Char(c) if typing && !ctrl && !alt => {
                if let Some(s) = &mut self.search
                    && s.query.len() + c.len_utf8() <= QUERY_MAX
                {
                    s.query.push(c);
                }
                self.search_from_bottom();
            }
            KeyCode::Char('n') if !typing && !ctrl && !alt => self.search_move(true),
            KeyCode::Char('N') if !typing && !ctrl && !alt => self.search_move(false),
            // Scrolling, buffer keys, Ctrl-C and the rest keep their meaning.
            _ => return None,
        }
        Some(vec![])
    }

    /// The newest match (the query changed).
    fn search_from_bottom(&mut self) {
        let Some(s) = &mut self.search else { return };
        s.at = None;
        self.search_move(true);
    }

    /// The next match older (`older`) or newer than the current one (from the bottom when
    /// there is none), scrolled into the middle of the pane; `failed` when there is none.
    fn search_move(&mut self, older: bool) {
        let Some(mut s) = self.search.take() else { return };
        let b = &self.buffers[self.current];
        let n = b.entries.len();
        let from = s.current(b);
        let found = if older {
            let end = from.unwrap_or(n);
            (0..end).rev().find(|&i| hit(&b.entries[i], &s.query))
        } else {
            let start = from.map_or(n, |i| i + 1);
            (start..n).find(|&i| hit(&b.entries[i], &s.query))
        };
        s.failed = found.is_none();
        if let Some(i) = found {
            s.set(b, i);
            self.search = Some(s);
            self.show_entry(i);
        } else {
            self.search = Some(s);
        }
    }

    /// Scrolls the buffer shown so that entry `i` is in the middle of the pane (or as near as
    /// the buffer allows).
    fn show_entry(&mut self, i: usize) {
        let (width, height) = self.pane_size();
        let days = self.days();
        let b = &self.buffers[self.current];
        let below: usize = (i + 1..b.entries.len())
            .map(|j| crate::ui::messages::entry_height(b, j, width, days))
            .sum();
        let total = crate::ui::messages::total_height(b, width, days);
        let max = total.saturating_sub(usize::from(height));
        let scroll = below.saturating_sub(usize::from(height) / 2).min(max);
        let b = &mut self.buffers[self.current];
        b.scroll = scroll;
        if scroll == 0 {
            b.below = 0;
        }
    }
}

/// `t` cut to [`QUERY_MAX`] bytes at a character boundary.
fn cut(t: &str) -> String {
    let mut end = t.len().min(QUERY_MAX);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_ignore_case_and_keep_the_text_s_own_ranges() {
        assert_eq!(matches("Deploy the DEPLOY", "deploy"), [0..6, 11..17]);
        assert_eq!(matches("ÉCOLE école", "école"), [0..6, 7..13]);
        assert_eq!(matches("aaa", "aa"), vec![0..2], "no overlaps");
        assert_eq!(matches("abc", ""), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(matches("ab", "abc"), Vec::<std::ops::Range<usize>>::new());
    }
}
