//! Key, paste, mouse and resize events. The bindings are listed in `/help` ([`KEYS`]) and in
//! the README.

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};

use super::complete::{self, Completion, Names};
use super::{App, Effect};

/// Rows the mouse wheel scrolls per notch.
const WHEEL_ROWS: isize = 3;

/// The key bindings, for `/help`.
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "send; Alt-Enter or Ctrl-J adds a line"),
    ("Alt-1..9, Alt-0", "show buffer 1..9, 10"),
    ("Ctrl-N / Ctrl-P", "next / previous buffer"),
    ("Alt-A", "next buffer with activity (mentions first)"),
    ("Alt-U", "jump to the read marker (where you left the buffer)"),
    ("Ctrl-R", "search the buffer; again / Ctrl-S: older / newer match (n / N after Enter)"),
    ("Esc", "leave the search"),
    ("PgUp / PgDn, wheel", "scroll back / forward; at the top, load older history"),
    ("Tab / Shift-Tab", "complete nick, command or room"),
    ("Up / Down", "input history"),
    ("Ctrl-A / Ctrl-E", "start / end of input (Home / End)"),
    ("Alt-B / Alt-F", "word back / forward"),
    ("Ctrl-W / Alt-D", "delete word back / forward"),
    ("Ctrl-U / Ctrl-K", "delete to start / end; Ctrl-Y puts it back"),
    ("F2", "show / hide the member list"),
    ("Ctrl-L", "redraw the screen"),
    ("Ctrl-C", "quit"),
];

impl App {
    pub(super) fn on_term(&mut self, ev: TermEvent) -> Vec<Effect> {
        match ev {
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            TermEvent::Paste(text) => {
                self.completion = None;
                // A trailing newline is how most copied lines end, not a request to send.
                self.editor.insert_str(text.trim_end_matches(['\r', '\n']));
                vec![]
            }
            TermEvent::Mouse(m) => {
                match m.kind {
                    MouseEventKind::ScrollUp => self.scroll(WHEEL_ROWS),
                    MouseEventKind::ScrollDown => self.scroll(-WHEEL_ROWS),
                    _ => {}
                }
                vec![]
            }
            TermEvent::FocusLost => {
                self.focused = false;
                self.buffers[self.current].marker_pending = true;
                vec![]
            }
            TermEvent::FocusGained => {
                self.focused = true;
                self.buffers[self.current].marker_pending = false;
                vec![]
            }
            TermEvent::Resize(w, h) => {
                self.size = (w, h);
                self.scroll(0);
                vec![]
            }
            _ => vec![],
        }
    }

    fn page(&self) -> isize {
        (self.pane_size().1 as isize - 1).max(1)
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        if !matches!(key.code, KeyCode::Tab | KeyCode::BackTab) {
            self.completion = None;
        }
        if let Some(effects) = self.search_input(&key) {
            return effects;
        }
        let e = &mut self.editor;
        match key.code {
            KeyCode::Char('c') if ctrl => return self.quit(None),
            KeyCode::Char('l') if ctrl => return vec![Effect::Redraw],
            KeyCode::Char('r') if ctrl => self.search_key(),
            KeyCode::Enter if alt || shift => e.insert_char('\n'),
            KeyCode::Char('j') if ctrl => e.insert_char('\n'),
            KeyCode::Enter => return self.submit(),
            KeyCode::Char('a') if ctrl => e.home(),
            KeyCode::Char('e') if ctrl => e.end(),
            KeyCode::Home => e.home(),
            KeyCode::End => e.end(),
            KeyCode::Char('b') if ctrl => e.left(),
            KeyCode::Char('f') if ctrl => e.right(),
            KeyCode::Left if ctrl || alt => e.word_left(),
            KeyCode::Right if ctrl || alt => e.word_right(),
            KeyCode::Left => e.left(),
            KeyCode::Right => e.right(),
            KeyCode::Char('b') if alt => e.word_left(),
            KeyCode::Char('f') if alt => e.word_right(),
            KeyCode::Char('d') if alt => e.kill_word_forward(),
            KeyCode::Backspace if ctrl || alt => e.kill_word_back(),
            KeyCode::Char('w') if ctrl => e.kill_word_back(),
            KeyCode::Char('u') if ctrl => e.kill_to_start(),
            KeyCode::Char('k') if ctrl => e.kill_to_end(),
            KeyCode::Char('y') if ctrl => e.yank(),
            KeyCode::Char('h') if ctrl => e.backspace(),
            KeyCode::Backspace => e.backspace(),
            KeyCode::Char('d') if ctrl => e.delete(),
            KeyCode::Delete => e.delete(),
            KeyCode::Up => e.history_prev(),
            KeyCode::Down => e.history_next(),
            KeyCode::PageUp => self.scroll(self.page()),
            KeyCode::PageDown => self.scroll(-self.page()),
            KeyCode::Tab => self.complete(true),
            KeyCode::BackTab => self.complete(false),
            KeyCode::F(2) => self.show_members = !self.show_members,
            KeyCode::Char('n') if ctrl => self.cycle(1),
            KeyCode::Char('p') if ctrl => self.cycle(-1),
            KeyCode::Char('a') if alt => self.next_active(),
            KeyCode::Char('u') if alt => self.jump_to_marker(),
            KeyCode::Char(d @ '0'..='9') if alt => {
                let n = d.to_digit(10).unwrap_or(0) as usize;
                self.switch_to(if n == 0 { 9 } else { n - 1 });
            }
            KeyCode::Char(c) if !ctrl && !alt => e.insert_char(c),
            _ => {}
        }
        vec![]
    }

    /// Scrolls the buffer shown so that its read marker is the top row (or as near as the
    /// buffer allows); nothing without a marker.
    fn jump_to_marker(&mut self) {
        let (width, height) = self.pane_size();
        let days = self.days();
        let b = &self.buffers[self.current];
        let Some(at) = b.marker() else { return };
        let below: usize = (at + 1..b.entries.len())
            .map(|j| crate::ui::messages::entry_height(b, j, width, days))
            .sum();
        let total = crate::ui::messages::total_height(b, width, days);
        let max = total.saturating_sub(usize::from(height));
        let scroll = (below + 1).saturating_sub(usize::from(height)).min(max);
        let b = &mut self.buffers[self.current];
        b.scroll = scroll;
        if scroll == 0 {
            b.below = 0;
        }
    }

    /// Shows the next (`step` 1) or previous (-1) buffer, wrapping around.
    fn cycle(&mut self, step: isize) {
        let n = self.buffers.len() as isize;
        let next = (self.current as isize + step).rem_euclid(n);
        self.switch_to(next as usize);
    }

    /// Shows the next buffer with a mention, else the next with unread lines, else the next
    /// with anything not seen (a conversation opened by `/msg`).
    fn next_active(&mut self) {
        let n = self.buffers.len();
        let order = (1..n).map(|k| (self.current + k) % n);
        let pick = order
            .clone()
            .find(|&i| self.buffers[i].mentioned)
            .or_else(|| order.clone().find(|&i| self.buffers[i].unread > 0))
            .or_else(|| order.clone().find(|&i| self.buffers[i].unseen));
        if let Some(i) = pick {
            self.switch_to(i);
        }
    }

    /// Tab (`forward`) or Shift-Tab: starts a completion or moves to the next candidate.
    fn complete(&mut self, forward: bool) {
        if let Some(c) = &mut self.completion {
            let n = c.candidates.len();
            c.index = if forward { (c.index + 1) % n } else { (c.index + n - 1) % n };
            let cursor = self.editor.cursor();
            self.editor.replace(c.start, cursor, &c.candidates[c.index]);
            return;
        }
        let text = self.editor.text();
        let cursor = self.editor.cursor();
        let (start, slot) = complete::slot(text, cursor);
        let rooms: Vec<&str> = self
            .buffers
            .iter()
            .filter_map(|b| b.target.room().map(|r| r.as_str()))
            .chain(self.known_rooms.iter().map(String::as_str))
            .collect();
        let members: Vec<&str> = self
            .current_buffer()
            .members
            .values()
            .map(|m| m.nick.as_str())
            .filter(|n| *n != self.me.as_str())
            .collect();
        let names = Names { rooms, members, nicks: self.known_nicks() };
        let candidates = complete::candidates(&text[start..cursor], slot, start == 0, &names);
        let Some(first) = candidates.first().cloned() else { return };
        self.editor.replace(start, cursor, &first);
        // Kept even for a single candidate: Tab again cycles these (here, stays), rather than
        // completing the empty word after the completion.
        self.completion = Some(Completion { start, candidates, index: 0 });
    }
}
