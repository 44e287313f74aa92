//! The member list: the room's members sorted case-insensitively, away ones dimmed, each in
//! its nickname's colour, bots (quiet sessions, marked `bot` by the server) followed by a dim
//! [`BOT_MARK`] as line mode's `/who` shows them; a last row counts those that do not fit. The list is as wide as the
//! longest name up to a third of the terminal ([`App::member_list_width`]); a name longer than
//! that is cut so that no two look the same ([`super::nicks`]).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::nicks::Labels;
use super::style;
use super::text::{truncate, width};
use crate::app::App;
use crate::app::buffer::Member;

/// What follows a bot's name, dimmed. Left out when the list is too narrow for it (the name
/// is never cut further for it: names stay apart).
pub const BOT_MARK: &str = " [bot]";

/// What precedes an operator's name (issue 19), as IRC clients show it.
pub const OP_MARK: &str = "@";

/// The columns `m` wants in the list (its name, the operator and bot marks).
pub(crate) fn row_width(m: &Member) -> usize {
    let op = if m.op { width(OP_MARK) } else { 0 };
    op + width(m.nick.as_str()) + if m.bot { width(BOT_MARK) } else { 0 }
}

pub fn render(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.is_empty() {
        return;
    }
    let b = app.current_buffer();
    let block = Block::new().borders(Borders::LEFT).border_style(style::SEPARATOR);
    let inner = block.inner(area);
    let rows = usize::from(inner.height);
    let col = usize::from(inner.width).saturating_sub(1);
    let total = b.members.len();
    let shown = if total > rows { rows.saturating_sub(1) } else { total };
    let labels = Labels::new(b.members.values().map(|m| m.nick.as_str()), col);
    let mut lines: Vec<Line<'_>> = b
        .members
        .values()
        .take(shown)
        .map(|m| {
            let nick = m.nick.as_str();
            let st = if m.away.is_some() {
                style::AWAY
            } else if m.nick == app.me {
                style::nick(nick).bold()
            } else {
                style::nick(nick)
            };
            let label = labels.get(nick);
            let name = if m.op { format!("{OP_MARK}{label}") } else { label.to_string() };
            let name = truncate(&name, col).to_owned();
            let mut row = vec![Span::raw(" "), Span::styled(name, st)];
            if m.bot && width(row[1].content.as_ref()) + width(BOT_MARK) <= col {
                row.push(Span::styled(BOT_MARK, style::INFO));
            }
            Line::from(row)
        })
        .collect();
    if shown < total {
        let more = format!(" +{} more", total - shown);
        let more = if width(&more) <= usize::from(inner.width) {
            more
        } else {
            format!(" +{}", total - shown)
        };
        lines.push(Line::styled(more, style::INFO));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
