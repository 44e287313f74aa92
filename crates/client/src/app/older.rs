//! Scrollback into the past: PgUp (or the wheel) reaching the top of a room's buffer asks the
//! server for the page of messages before the oldest one held (`history` with `before`,
//! through [`crate::core::Core::ask_older`]), page after page until the server answers an
//! empty one. The buffer's [`Older`] says where that stands; the pane draws it as a line
//! above the oldest entry ("loading older messages…", "start of history").
//!
//! The messages of a page are older than anything shown: they go above it, are not unread,
//! and do not move the view (it counts rows from the bottom) or count as "new below". They
//! are held until the page's `history_end`: a server from before `before` answers as for
//! `since` (the room's oldest messages, not the page) with a `history_end` without `before`,
//! and then the answer is dropped and the buffer says "this server cannot load older
//! messages" instead of "loading…" forever. (A catch-up's `history_end` arriving while a
//! page is under way reads the same way; the page is then asked for again on the next
//! connection.)

use super::buffer::{Entry, Older};
use super::limits::SCROLLBACK;
use super::{App, Effect};

/// Messages asked for per page.
pub const OLDER_PAGE: u32 = 100;

impl App {
    /// Asks for the page before the oldest message of the buffer shown, if it is a room we
    /// are in, nothing is under way, the start was not reached, and the buffer has room
    /// (a buffer that dropped entries for its limits would drop the page at once).
    pub(super) fn load_older(&mut self) {
        let b = &self.buffers[self.current];
        let Some(room) = b.target.room().cloned() else { return };
        if !b.joined || b.older != Older::Idle || b.dropped > 0 || b.entries.len() >= SCROLLBACK {
            return;
        }
        // No message held (an empty join replay): the newest page.
        let before = b.oldest_id().unwrap_or(u64::MAX);
        if self.core.ask_older(&room, before, OLDER_PAGE) {
            self.buffers[self.current].older = Older::Loading { before };
            // The view was at the top: keep it there, with the new marker line in view.
            let (width, height) = self.pane_size();
            let days = self.days();
            let b = &mut self.buffers[self.current];
            let total = crate::ui::messages::total_height(b, width, days);
            b.scroll = total.saturating_sub(usize::from(height));
        }
    }

    /// Whether a replayed room message for buffer `i` belongs to the page asked for: below
    /// its `before` (the oldest id held when it was asked for).
    pub(super) fn is_older(&self, i: usize, id: u64) -> bool {
        matches!(self.buffers[i].older, Older::Loading { before } if id < before)
    }

    /// Holds an entry of the older page under way for buffer `i` until the page ends
    /// ([`App::older_ended`]); past [`OLDER_PAGE`] (more than was asked for) it is dropped.
    pub(super) fn push_older(&mut self, i: usize, entry: Entry) -> Vec<Effect> {
        let page = &mut self.buffers[i].page;
        if page.len() < OLDER_PAGE as usize {
            page.push(entry);
        }
        vec![]
    }

    /// The end of a page for `room`'s buffer `i`: its messages go above what the buffer holds
    /// (not unread, the view unmoved); an empty page is the start of history.
    pub(super) fn older_ended(&mut self, i: usize, count: u32) {
        let b = &mut self.buffers[i];
        b.replayed = 0;
        b.older = if count == 0 { Older::Start } else { Older::Idle };
        for entry in std::mem::take(&mut b.page) {
            b.push_older(entry);
        }
        self.bound_total();
    }

    /// A `history_end` without `before` for buffer `i`: if a page was under way, the server
    /// answered it as a catch-up (it predates `before`): what it sent is dropped and nothing
    /// more is asked. Whether it was (the caller then ignores it as a catch-up's end).
    pub(super) fn older_unsupported(&mut self, i: usize) -> bool {
        let b = &mut self.buffers[i];
        if !matches!(b.older, Older::Loading { .. }) {
            return false;
        }
        b.older = Older::Unsupported;
        b.page.clear();
        b.replayed = 0;
        true
    }

    /// A lost connection forgets the requests under way (the core does too): PgUp asks again,
    /// also of a server that could not page back (the next may be a newer one).
    pub(super) fn older_lost(&mut self) {
        for b in &mut self.buffers {
            if matches!(b.older, Older::Loading { .. } | Older::Unsupported) {
                b.older = Older::Idle;
                b.page.clear();
            }
        }
    }
}
