//! The input line: text with a cursor, Emacs-style editing, a one-slot kill buffer and the
//! history of what was sent. Pure state; the key bindings that drive it live in
//! `app/keys.rs`.
//!
//! The text may hold newlines (a multi-line message, from a paste or Alt-Enter); it never holds
//! other control characters, which [`Editor::insert_str`] drops. The cursor is a byte offset,
//! always on a display-cluster boundary ([`crate::ui::text`]), so it never lands inside an
//! emoji or between a letter and its accent.

use crate::ui::text::{clusters, next_boundary, prev_boundary};

/// Sent lines remembered for Up/Down.
pub const HISTORY_LEN: usize = 500;

#[derive(Debug, Clone, Default)]
pub struct Editor {
    text: String,
    cursor: usize,
    history: Vec<String>,
    /// Position in `history` while browsing it (Up/Down); `None` when editing the draft.
    browsing: Option<usize>,
    /// What was being typed when browsing started; Down past the newest entry restores it.
    draft: String,
    /// The last text removed by Ctrl-W/U/K or Alt-D, for Ctrl-Y.
    killed: String,
}

fn is_word_char(c: &str) -> bool {
    !c.chars().all(char::is_whitespace)
}

impl Editor {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor, as a byte offset into [`Editor::text`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Lines in the text (1 for a single line; newlines add one each).
    pub fn line_count(&self) -> usize {
        self.text.matches('\n').count() + 1
    }

    /// Inserts `s` at the cursor. Carriage returns become newlines (`\r\n` one newline), tabs
    /// become four spaces, and other control characters are dropped: the server refuses them.
    pub fn insert_str(&mut self, s: &str) {
        let clean = clean_input(s);
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
        self.browsing = None;
    }

    pub fn insert_char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.insert_str(c.encode_utf8(&mut buf));
    }

    /// Replaces the whole text, cursor at the end (history browsing, completion).
    pub fn set(&mut self, text: &str) {
        self.text = clean_input(text);
        self.cursor = self.text.len();
    }

    /// Replaces `start..end` with `s` and puts the cursor after it; does nothing if the range
    /// is not on character boundaries.
    pub fn replace(&mut self, start: usize, end: usize, s: &str) {
        let end = end.min(self.text.len());
        let start = start.min(end);
        if !self.text.is_char_boundary(start) || !self.text.is_char_boundary(end) {
            return;
        }
        self.text.replace_range(start..end, s);
        self.cursor = start + s.len();
    }

    pub fn left(&mut self) {
        self.cursor = prev_boundary(&self.text, self.cursor);
    }

    pub fn right(&mut self) {
        self.cursor = next_boundary(&self.text, self.cursor);
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// The start of the word before the cursor (skipping whitespace first), as Alt-B.
    fn word_start(&self) -> usize {
        let before: Vec<(usize, &str)> =
            clusters(&self.text).take_while(|&(i, _)| i < self.cursor).collect();
        let mut iter = before.iter().rev().peekable();
        while iter.next_if(|(_, c)| !is_word_char(c)).is_some() {}
        let mut start = iter.peek().map(|&&(i, _)| i).unwrap_or(0);
        for &(i, c) in iter {
            if !is_word_char(c) {
                break;
            }
            start = i;
        }
        start
    }

    /// The end of the word after the cursor (skipping whitespace first), as Alt-F.
    fn word_end(&self) -> usize {
        let mut iter = clusters(&self.text).filter(|&(i, _)| i >= self.cursor).peekable();
        while iter.next_if(|(_, c)| !is_word_char(c)).is_some() {}
        let mut end = iter.peek().map(|&(i, _)| i).unwrap_or(self.text.len());
        for (i, c) in iter {
            if !is_word_char(c) {
                break;
            }
            end = i + c.len();
        }
        end
    }

    pub fn word_left(&mut self) {
        self.cursor = self.word_start();
    }

    pub fn word_right(&mut self) {
        self.cursor = self.word_end();
    }

    pub fn backspace(&mut self) {
        let start = prev_boundary(&self.text, self.cursor);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    pub fn delete(&mut self) {
        let end = next_boundary(&self.text, self.cursor);
        self.text.replace_range(self.cursor..end, "");
    }

    fn kill(&mut self, start: usize, end: usize) {
        if start < end {
            self.killed = self.text[start..end].to_owned();
            self.text.replace_range(start..end, "");
            self.cursor = start;
        }
    }

    /// Ctrl-W: deletes the word before the cursor.
    pub fn kill_word_back(&mut self) {
        self.kill(self.word_start(), self.cursor);
    }

    /// Alt-D: deletes the word after the cursor.
    pub fn kill_word_forward(&mut self) {
        self.kill(self.cursor, self.word_end());
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn kill_to_start(&mut self) {
        self.kill(0, self.cursor);
    }

    /// Ctrl-K: deletes everything after the cursor.
    pub fn kill_to_end(&mut self) {
        self.kill(self.cursor, self.text.len());
    }

    /// Ctrl-Y: inserts the last deleted text.
    pub fn yank(&mut self) {
        let killed = self.killed.clone();
        self.insert_str(&killed);
    }

    /// Up: the previous sent line; the text being typed is kept as a draft.
    pub fn history_prev(&mut self) {
        let pos = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = std::mem::take(&mut self.text);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(p) => p - 1,
        };
        self.browsing = Some(pos);
        let line = self.history[pos].clone();
        self.set(&line);
    }

    /// Down: the next sent line, or back to the draft after the newest.
    pub fn history_next(&mut self) {
        let Some(pos) = self.browsing else { return };
        if pos + 1 < self.history.len() {
            self.browsing = Some(pos + 1);
            let line = self.history[pos + 1].clone();
            self.set(&line);
        } else {
            self.browsing = None;
            let draft = std::mem::take(&mut self.draft);
            self.set(&draft);
        }
    }

    /// Empties the line and remembers it in the history (not twice in a row).
    pub fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            if self.history.len() == HISTORY_LEN {
                self.history.remove(0);
            }
            self.history.push(text.clone());
        }
        text
    }

    /// Puts back a line that could not be sent, unless something new was typed meanwhile (then
    /// it stays reachable with Up: [`Editor::take`] recorded it).
    pub fn restore(&mut self, text: &str) {
        if self.text.is_empty() {
            self.set(text);
        }
    }
}

/// What input may contain: newlines (`\r\n` and `\r` become `\n`), tabs as spaces, nothing
/// else below U+0020 or in the C1 range.
fn clean_input(s: &str) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn editor(text: &str) -> Editor {
        let mut e = Editor::default();
        e.insert_str(text);
        e
    }

    #[test]
    fn typing_and_moving_by_cluster() {
        let mut e = editor("héllo 世界");
        assert_eq!(e.cursor(), e.text().len());
        e.left();
        e.backspace();
        assert_eq!(e.text(), "héllo 界");
        e.home();
        e.right();
        e.right();
        e.insert_char('X');
        assert_eq!(e.text(), "héXllo 界");
        e.end();
        e.insert_str("!");
        assert_eq!(e.text(), "héXllo 界!");
        e.home();
        e.delete();
        assert_eq!(e.text(), "éXllo 界!");
        let mut accent = editor("e\u{301}");
        accent.left();
        assert_eq!(accent.cursor(), 0, "the accent goes with its letter");
    }

    #[test]
    fn words_and_kills() {
        let mut e = editor("one two  three");
        e.word_left();
        assert_eq!(&e.text()[e.cursor()..], "three");
        e.word_left();
        assert_eq!(&e.text()[e.cursor()..], "two  three");
        e.word_right();
        assert_eq!(&e.text()[e.cursor()..], "  three");
        e.kill_word_back();
        assert_eq!(e.text(), "one   three");
        e.yank();
        assert_eq!(e.text(), "one two  three");
        e.home();
        e.kill_word_forward();
        assert_eq!(e.text(), " two  three");
        e.end();
        e.word_left();
        e.kill_to_end();
        assert_eq!(e.text(), " two  ");
        e.kill_to_start();
        assert_eq!(e.text(), "");
        e.yank();
        assert_eq!(e.text(), " two  ");
    }

    #[test]
    fn history_keeps_the_draft() {
        let mut e = Editor::default();
        for line in ["first", "second", "second"] {
            e.insert_str(line);
            e.take();
        }
        e.insert_str("draft");
        e.history_prev();
        assert_eq!(e.text(), "second");
        e.history_prev();
        assert_eq!(e.text(), "first", "a repeated line is remembered once");
        e.history_prev();
        assert_eq!(e.text(), "first");
        e.history_next();
        assert_eq!(e.text(), "second");
        e.history_next();
        assert_eq!(e.text(), "draft");
        e.history_next();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn pasted_text_keeps_newlines_and_drops_controls() {
        let e = editor("a\r\nb\rc\td\u{1b}[2J\u{7}");
        assert_eq!(e.text(), "a\nb\nc    d[2J");
        assert_eq!(e.line_count(), 3);
    }

    #[test]
    fn restore_only_fills_an_empty_line() {
        let mut e = editor("lost");
        let sent = e.take();
        e.restore(&sent);
        assert_eq!(e.text(), "lost");
        e.take();
        e.insert_str("new");
        e.restore("lost");
        assert_eq!(e.text(), "new");
    }
}
