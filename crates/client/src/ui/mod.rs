//! Drawing the [`App`]: [`render`] reads the state and never changes it.
//!
//! Screen, top to bottom: a title bar (the room's topic), the message pane with the member
//! list on its right, the status bar, the input line. Small terminals lose the title bar, then
//! the pane, then the status bar; the input line goes last. Nothing panics at any size,
//! down to 0×0.
//!
//! Layout:
//! - [`text`]: display clusters, widths and wrapping (also used by the app for geometry).
//! - [`style`]: colours, nick colours, timestamps.
//! - [`messages`]: the message pane: prefix column, wrapping, scrolling.
//! - `status`: the title and status bars.
//! - `members`: the member list.
//! - [`nicks`]: labels that tell names apart in a column too narrow for them.
//! - `input`: the input line and the cursor (or the search being typed).
//! - [`links`]: URLs in messages, written as OSC 8 hyperlinks after each frame.

mod input;
pub mod links;
pub(crate) mod members;
pub mod messages;
pub mod nicks;
mod status;
pub mod style;
#[cfg(test)]
pub(crate) mod tests;
pub mod text;

use ratatui::Frame;
use ratatui::layout::Rect;

use crate::app::App;

/// Narrowest pane kept beside the member list; narrower terminals hide the list.
const MIN_PANE_WIDTH: u16 = 30;

/// Where each part of the screen goes; absent parts are zero-sized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    pub title: Rect,
    pub pane: Rect,
    pub members: Rect,
    pub status: Rect,
    pub input: Rect,
}

/// Splits `area`; `members` is the member list's width when it is wanted.
pub fn areas(area: Rect, members: Option<u16>) -> Areas {
    let mut a = Areas::default();
    let row = |y: u16| Rect::new(area.x, y, area.width, 1);
    let h = area.height;
    let bottom = area.y + h;
    if h >= 1 {
        a.input = row(bottom - 1);
    }
    if h >= 2 {
        a.status = row(bottom - 2);
    }
    let mut top = area.y;
    if h >= 6 {
        a.title = row(top);
        top += 1;
    }
    if h >= 3 {
        let pane_h = bottom - 2 - top;
        a.pane = Rect::new(area.x, top, area.width, pane_h);
        if let Some(w) = members
            && area.width >= w + MIN_PANE_WIDTH
        {
            a.pane.width -= w;
            a.members = Rect::new(area.x + a.pane.width, top, w, pane_h);
        }
    }
    a
}

/// Draws the whole screen; returns what the message pane's rows hold beyond their cells
/// (which are hard-wrapped), for [`links::regions`] to read the frame back.
pub fn render(app: &App, frame: &mut Frame<'_>) -> messages::Drawn {
    let a = areas(frame.area(), app.member_list_width());
    status::render_title(app, frame, a.title);
    let drawn = messages::render(app, frame, a.pane);
    members::render(app, frame, a.members);
    status::render_status(app, frame, a.status);
    input::render(app, frame, a.input);
    drawn
}
