//! The message pane: one row per wrapped line, in three columns.
//!
//! ```text
//! 12:01    alice │ hello there
//! 12:02      bob │ a long message wraps under its own text column, so a continuation
//!                │ row never starts where a nick or a notice marker goes
//! 12:02      --> │ carol joined #lobby (SHA256:Xk3v9QaB)
//! 12:03        * │ bob waves
//! 12:03    *bob* │ a private message
//! 12:04       -> │ bob: our private message, echoed in the room where we typed it
//! -- Wednesday, 15 November 2023 --
//! 00:01    alice │ the day changed before this line
//! ```
//!
//! The time and prefix columns are drawn by the client only: remote text is confined to the
//! text column, and a prefix is a validated nickname or a marker no nickname can spell, so no
//! remote user can imitate a notice, an action or a private message. The prefix column is as
//! wide as the widest prefix in the buffer, up to [`MAX_PREFIX`]; a longer nick keeps its start
//! and end around a `+` (`admini+rator`), and no two different nicks of the buffer get the
//! same label: the column widens until their cuts differ, and those that still look the same
//! are numbered (`admini~1`, see [`nicks`]). Narrow panes drop the time column and narrow the
//! prefix column.
//!
//! A day-change line (`-- Wednesday, 15 November 2023 --`, from the first column, where no
//! remote text can go) comes before an entry whose date differs from the previous entry's, and
//! before the first entry of a buffer when that is not from today ([`day_change`]); dates are
//! in the zone of the timestamps.
//!
//! Scrolling counts rows up from the bottom ([`crate::app::buffer::Buffer::scroll`]); the
//! app uses [`entry_height`] and [`total_height`] so that its arithmetic matches what is drawn.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use std::collections::BTreeSet;

use super::nicks::{self, Labels};
use super::style;
use super::text::{truncate, width, wrap};
use crate::app::buffer::{Buffer, Entry, Kind};
use crate::app::{App, Zone};

/// Widest prefix column.
pub const MAX_PREFIX: usize = 12;
/// Panes narrower than this drop the time column.
const TIME_MIN_WIDTH: usize = 40;
/// `HH:MM ` before the prefix.
const TIME_WIDTH: usize = 6;
/// Between the prefix and the text.
const SEPARATOR: &str = " │ ";

/// Column widths for one buffer in a pane of a given width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub time: bool,
    pub prefix: usize,
    pub text: usize,
}

/// What decides where day-change lines go: the zone of the timestamps and today's date in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub zone: Zone,
    pub today: Option<chrono::NaiveDate>,
}

impl Days {
    pub fn new(zone: Zone, now_ms: u64) -> Days {
        Days { zone, today: style::date(now_ms, zone) }
    }
}

/// The day announced before entry `e`, whose predecessor in its buffer is `prev`: its date if
/// that differs from `prev`'s, or (for the first entry) from today's.
pub fn day_change(prev: Option<&Entry>, e: &Entry, days: Days) -> Option<chrono::NaiveDate> {
    let day = style::date(e.time, days.zone)?;
    let before = match prev {
        Some(p) => style::date(p.time, days.zone),
        None => days.today,
    };
    (before != Some(day)).then_some(day)
}

/// The day announced before entry `index` of `b`.
fn day_before(b: &Buffer, index: usize, days: Days) -> Option<chrono::NaiveDate> {
    let e = b.entries.get(index)?;
    let prev = index.checked_sub(1).and_then(|p| b.entries.get(p));
    day_change(prev, e, days)
}

/// The marker or nickname in an entry's prefix column.
fn prefix_text(e: &Entry) -> String {
    match &e.kind {
        Kind::Message { from } => from.to_string(),
        Kind::Action { .. } => "*".into(),
        Kind::Private { from, .. } => format!("*{from}*"),
        Kind::Sent { .. } => "->".into(),
        Kind::Join => "-->".into(),
        Kind::Leave => "<--".into(),
        Kind::Notice | Kind::Info => "--".into(),
        Kind::Error => "!!".into(),
    }
}

/// The different prefixes of `b`'s entries: the names the prefix column must tell apart.
fn prefixes(b: &Buffer) -> BTreeSet<String> {
    b.entries.iter().map(prefix_text).collect()
}

pub fn geometry(b: &Buffer, pane_width: u16) -> Geometry {
    geometry_of(&prefixes(b), pane_width)
}

/// The columns for a buffer whose prefixes are `names`: the prefix column is as wide as the
/// widest up to [`MAX_PREFIX`], wider where two cut names would look the same
/// ([`nicks::column`]), and never more than a third of what the time column leaves.
fn geometry_of(names: &BTreeSet<String>, pane_width: u16) -> Geometry {
    let w = usize::from(pane_width);
    let time = w >= TIME_MIN_WIDTH;
    let avail = w.saturating_sub(SEPARATOR.chars().count() + if time { TIME_WIDTH } else { 0 });
    let prefix = nicks::column(names.iter().map(String::as_str), MAX_PREFIX, avail / 3);
    Geometry { time, prefix, text: avail.saturating_sub(prefix).max(1) }
}

/// The text as shown: actions start with the actor's nickname, an echo with the recipient.
fn shown_text(e: &Entry) -> String {
    match &e.kind {
        Kind::Action { from } | Kind::Private { from, action: true } => {
            format!("{from} {}", e.text)
        }
        Kind::Sent { to, action: false } => format!("{to}: {}", e.text),
        Kind::Sent { to, action: true } => format!("{to}: * {}", e.text),
        _ => e.text.clone(),
    }
}

/// Rows entry `index` of `b` takes in a pane `pane_width` wide, with its day-change line.
pub fn entry_height(b: &Buffer, index: usize, pane_width: u16, days: Days) -> usize {
    let g = geometry(b, pane_width);
    let day = usize::from(day_before(b, index, days).is_some());
    b.entries.get(index).map(|e| rows_of(e, &g) + day).unwrap_or(0)
}

/// Rows all of `b` takes in a pane `pane_width` wide.
pub fn total_height(b: &Buffer, pane_width: u16, days: Days) -> usize {
    let g = geometry(b, pane_width);
    let mut prev = None;
    let mut rows = 0;
    for e in &b.entries {
        rows += rows_of(e, &g) + usize::from(day_change(prev, e, days).is_some());
        prev = Some(e);
    }
    rows
}

fn rows_of(e: &Entry, g: &Geometry) -> usize {
    shown_text(e).split('\n').map(|l| wrap(l, g.text).len()).sum()
}

/// Pads a prefix's label to the column, right-aligned (a label wider than the column, only
/// in panes too narrow to tell names apart, is cut).
fn fit_prefix(label: &str, col: usize) -> String {
    let label = truncate(label, col);
    format!("{}{label}", " ".repeat(col - width(label)))
}

fn prefix_style(e: &Entry) -> Style {
    // In a conversation every line is for us: the magenta marks it, not a highlight.
    if matches!(e.kind, Kind::Private { .. } | Kind::Sent { .. }) {
        return style::PRIVATE;
    }
    if e.mention && !e.history {
        return style::MENTION;
    }
    match &e.kind {
        Kind::Message { from } if e.own => style::nick(from.as_str()).bold(),
        Kind::Message { from } => style::nick(from.as_str()),
        Kind::Action { .. } => Style::new().bold(),
        Kind::Private { .. } | Kind::Sent { .. } => style::PRIVATE,
        Kind::Join => style::JOIN,
        Kind::Leave => style::LEAVE,
        Kind::Notice => style::NOTICE,
        Kind::Info => style::INFO,
        Kind::Error => style::ERROR,
    }
}

fn text_style(e: &Entry) -> Style {
    let base = match &e.kind {
        Kind::Message { .. }
        | Kind::Private { action: false, .. }
        | Kind::Sent { action: false, .. } => Style::new(),
        Kind::Action { .. }
        | Kind::Private { action: true, .. }
        | Kind::Sent { action: true, .. } => style::ACTION,
        Kind::Join => style::JOIN,
        Kind::Leave => style::LEAVE,
        Kind::Notice => style::NOTICE,
        Kind::Info => style::INFO,
        Kind::Error => style::ERROR,
    };
    let base = if e.history { base.patch(style::HISTORY_TEXT) } else { base };
    if e.mention && !e.history { base.bold() } else { base }
}

/// The rows of one entry; `labels` are the prefix column's labels.
fn entry_lines(app: &App, e: &Entry, g: &Geometry, labels: &Labels) -> Vec<Line<'static>> {
    let text = shown_text(e);
    let actor = match &e.kind {
        Kind::Action { from } | Kind::Private { from, action: true } => Some(from.as_str()),
        _ => None,
    };
    let pstyle = prefix_style(e);
    let tstyle = text_style(e);
    let sep = Span::styled(SEPARATOR, style::SEPARATOR);
    let blank = " ".repeat(g.prefix + if g.time { TIME_WIDTH } else { 0 });
    let mut lines = Vec::new();
    for (ln, line) in text.split('\n').enumerate() {
        for (rn, row) in wrap(line, g.text).into_iter().enumerate() {
            let mut spans = Vec::with_capacity(5);
            if ln == 0 && rn == 0 {
                if g.time {
                    let tstyle_time = if e.history { style::HISTORY_TIME } else { style::TIME };
                    let clock = style::clock(e.time, app.config.zone);
                    spans.push(Span::styled(format!("{clock} "), tstyle_time));
                }
                let label = labels.get(&prefix_text(e));
                spans.push(Span::styled(fit_prefix(&label, g.prefix), pstyle));
            } else {
                spans.push(Span::raw(blank.clone()));
            }
            spans.push(sep.clone());
            match actor {
                Some(nick) if ln == 0 && rn == 0 => {
                    let cut = nick.len().min(row.len());
                    let nick_style = tstyle.patch(style::nick(nick));
                    spans.push(Span::styled(row[..cut].to_owned(), nick_style));
                    spans.push(Span::styled(row[cut..].to_owned(), tstyle));
                }
                _ => spans.push(Span::styled(row.to_owned(), tstyle)),
            }
            lines.push(Line::from(spans));
        }
    }
    lines
}

/// Draws the current buffer's lines into `area`, bottom rows newest, `scroll` rows up.
pub fn render(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.is_empty() {
        return;
    }
    let b = app.current_buffer();
    let names = prefixes(b);
    let g = geometry_of(&names, area.width);
    let labels = Labels::new(names.iter().map(String::as_str), g.prefix);
    let height = usize::from(area.height);
    let want = b.scroll.saturating_add(height);
    let days = app.days();
    // Newest first, only as far back as the view needs.
    let mut rows: Vec<Line<'static>> = Vec::new();
    for (i, e) in b.entries.iter().enumerate().rev() {
        if rows.len() >= want {
            break;
        }
        rows.extend(entry_lines(app, e, &g, &labels).into_iter().rev());
        if let Some(day) = day_before(b, i, days) {
            let text = truncate(&style::day_change(day), usize::from(area.width)).to_owned();
            rows.push(Line::from(Span::styled(text, style::DAY_CHANGE)));
        }
    }
    let skip = b.scroll.min(rows.len().saturating_sub(height));
    let mut visible: Vec<Line<'static>> = rows.into_iter().skip(skip).take(height).collect();
    visible.reverse();
    frame.render_widget(Paragraph::new(visible), area);
    if b.scroll > 0 && skip > 0 {
        let text = match b.below {
            0 => " more below: PgDn ".to_owned(),
            1 => " 1 new message below: PgDn ".to_owned(),
            n => format!(" {n} new messages below: PgDn "),
        };
        let marker = Rect::new(area.x, area.y + area.height - 1, area.width, 1);
        let line = Line::from(Span::styled(format!("──{text}"), style::MARKER));
        frame.render_widget(Clear, marker);
        frame.render_widget(Paragraph::new(line).style(style::MARKER), marker);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::app::buffer::Target;
    use chatao_proto::{Nick, RoomName};

    fn buffer(nicks: &[&str]) -> Buffer {
        let mut b = Buffer::new(Target::Room(RoomName::lobby()));
        for n in nicks {
            b.push(Entry::new(0, Kind::Message { from: Nick::parse(n).unwrap() }, "hi"));
        }
        b
    }

    #[test]
    fn prefix_column_follows_the_widest_nick_up_to_the_maximum() {
        assert_eq!(geometry(&buffer(&["al", "bob"]), 100).prefix, 3);
        let long = "a".repeat(30);
        let g = geometry(&buffer(&["al", &long]), 100);
        assert_eq!(g, Geometry { time: true, prefix: MAX_PREFIX, text: 100 - 6 - 3 - 12 });
        let narrow = geometry(&buffer(&["al", &long]), 20);
        assert!(!narrow.time);
        assert_eq!(narrow.prefix + narrow.text + 3, 20);
        // Degenerate widths never underflow.
        assert_eq!(geometry(&buffer(&["al"]), 0).text, 1);
    }

    #[test]
    fn labels_are_padded_to_the_column() {
        assert_eq!(fit_prefix("bob", 5), "  bob");
        assert_eq!(fit_prefix("bartholomew", 5), "barth");
        assert_eq!(fit_prefix("bob", 0), "");
    }

    #[test]
    fn the_prefix_column_widens_where_cut_nicks_would_look_the_same() {
        let (a, b) = ("abcdefXXXXXXXXghijkl", "abcdefYYYYYYYYghijkl");
        assert_eq!(geometry(&buffer(&[a, b]), 100).prefix, 14);
        assert_eq!(geometry(&buffer(&[a, "zed"]), 100).prefix, MAX_PREFIX);
        // A narrow pane caps it at a third of what the time column leaves.
        assert_eq!(geometry(&buffer(&[a, b]), 45).prefix, (45 - 6 - 3) / 3);
    }
}
