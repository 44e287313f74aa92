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
//!
//! [`render`] also says what the cells cannot: which rows are one word cut by a hard wrap
//! (a URL wider than the text column), so that the links read back from the frame are whole
//! ([`Drawn`], for [`crate::ui::links::regions`]). A row is joined to the next when
//! [`wrap`] broke inside a word, which it tells by the next row starting at the byte right
//! after this one ends (`joins`); a break at a space drops the space, so a word that fits
//! its row exactly is never joined to the next.
//!
//! Drawing is lazy (issue 15, item 18): only the rows shown are built, an entry's lines are
//! wrapped from its last line up only as far as the view reaches, and the heights of the
//! entries below the view come from their cache, so a keystroke on a screen showing a message
//! of thousands of lines lays out a screenful. What the limits took away is said where it was:
//! an entry whose text was cut ends with a fold row (`… 1990001 more lines, 1.9 MiB, not kept
//! (client limit)`), and a buffer that dropped old entries starts with
//! `-- 12 older messages dropped (memory limit) --` ([`crate::app::limits`]).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use std::collections::BTreeSet;

use super::nicks::{self, Labels};
use super::style;
use super::text::{truncate, width, wrap};
use crate::app::buffer::{Buffer, Entry, Kind, Older, Omitted};
use crate::app::{App, Zone};

/// Widest prefix column.
pub const MAX_PREFIX: usize = 12;
/// Panes narrower than this drop the time column.
const TIME_MIN_WIDTH: usize = 40;
/// `HH:MM ` before the prefix.
const TIME_WIDTH: usize = 6;
/// The time column with seconds (`timestamp = "%H:%M:%S"`): `HH:MM:SS `.
const TIME_WIDTH_SECONDS: usize = 9;
/// Between the prefix and the text.
const SEPARATOR: &str = " │ ";

/// Column widths for one buffer in a pane of a given width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub time: bool,
    /// The time column's width (with its space): 0 without one.
    pub clock: usize,
    pub prefix: usize,
    pub text: usize,
}

/// What decides where day-change lines go: the zone of the timestamps and today's date in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub zone: Zone,
    pub today: Option<chrono::NaiveDate>,
    /// Times with seconds (the config's `timestamp = "%H:%M:%S"`): a wider time column.
    pub seconds: bool,
}

impl Days {
    pub fn new(zone: Zone, now_ms: u64) -> Days {
        Days { zone, today: style::date(now_ms, zone), seconds: false }
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
        Kind::Marker => String::new(),
    }
}

/// The different prefixes of `b`'s entries: the names the prefix column must tell apart.
fn prefixes(b: &Buffer) -> BTreeSet<String> {
    b.entries.iter().filter(|e| e.kind != Kind::Marker).map(prefix_text).collect()
}

pub fn geometry(b: &Buffer, pane_width: u16, seconds: bool) -> Geometry {
    geometry_of(&prefixes(b), pane_width, seconds)
}

/// The columns for a buffer whose prefixes are `names`: the prefix column is as wide as the
/// widest up to [`MAX_PREFIX`], wider where two cut names would look the same
/// ([`nicks::column`]), and never more than a third of what the time column leaves.
fn geometry_of(names: &BTreeSet<String>, pane_width: u16, seconds: bool) -> Geometry {
    let w = usize::from(pane_width);
    let time = w >= TIME_MIN_WIDTH;
    let clock = match (time, seconds) {
        (false, _) => 0,
        (true, false) => TIME_WIDTH,
        (true, true) => TIME_WIDTH_SECONDS,
    };
    let avail = w.saturating_sub(SEPARATOR.chars().count() + clock);
    let prefix = nicks::column(names.iter().map(String::as_str), MAX_PREFIX, avail / 3);
    Geometry { time, clock, prefix, text: avail.saturating_sub(prefix).max(1) }
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
    let g = geometry(b, pane_width, days.seconds);
    let day = usize::from(day_before(b, index, days).is_some());
    b.entries.get(index).map(|e| rows_of(e, &g) + day).unwrap_or(0)
}

/// Rows all of `b` takes in a pane `pane_width` wide, with the marker of dropped entries.
pub fn total_height(b: &Buffer, pane_width: u16, days: Days) -> usize {
    let g = geometry(b, pane_width, days.seconds);
    let mut prev = None;
    let mut rows = usize::from(top_banner(b).is_some());
    for e in &b.entries {
        rows += rows_of(e, &g) + usize::from(day_change(prev, e, days).is_some());
        prev = Some(e);
    }
    rows
}

/// Rows an entry's text takes (with its fold row), laid out once per text width
/// ([`crate::app::buffer::RowsCache`]).
fn rows_of(e: &Entry, g: &Geometry) -> usize {
    e.rows.get_or(g.text, || {
        let text = shown_text(e);
        let rows: usize = text.split('\n').map(|l| wrap_line(l, g.text).len()).sum();
        rows + usize::from(e.omitted.is_some())
    })
}

#[cfg(test)]
thread_local! {
    /// Lines of text wrapped on this thread: what a test reads to see that drawing a screen
    /// lays out only what it shows.
    pub static LAID_OUT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// [`wrap`], counted in [`LAID_OUT`] by tests.
fn wrap_line(line: &str, width: usize) -> Vec<&str> {
    #[cfg(test)]
    LAID_OUT.with(|n| n.set(n.get() + 1));
    wrap(line, width)
}

/// Whether row `k` of `rows` (one line's rows from [`wrap_line`]) goes on directly in row
/// `k + 1`: the next row starts at the byte right after this one ends, so the break took no
/// space and cut a word wider than the text column (a long URL) in two. The rows are slices
/// of the same line, so their addresses say it.
fn joins(rows: &[&str], k: usize) -> bool {
    match (rows.get(k), rows.get(k + 1)) {
        (Some(row), Some(next)) => row.as_bytes().as_ptr_range().end == next.as_ptr(),
        _ => false,
    }
}

/// One row of the pane as laid out: what is drawn, whether its text goes on directly in the
/// row below (`joined`) and whether it comes directly from the row above (`continued`), as
/// [`joins`] says. Rows other than an entry's text (day changes, fold rows, banners) are
/// neither.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    line: Line<'static>,
    joined: bool,
    continued: bool,
}

impl Row {
    fn alone(line: Line<'static>) -> Row {
        Row { line, joined: false, continued: false }
    }
}

/// What [`render`] drew in the message pane, for reading its links back from the frame
/// ([`crate::ui::links::regions`]): which rows are one line of text cut by a hard wrap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drawn {
    /// The rows holding messages: the pane, less the "more below" marker when it is drawn.
    pub area: Rect,
    /// The text column's first x: where a continuation row's text starts (before it, blank
    /// time and prefix columns and the separator).
    pub text_x: u16,
    /// Per row of `area`, top first (rows past its end: `false`): the row's text goes on
    /// directly in the next row, a word hard-wrapped; for the last row, in a row below the
    /// area that is not shown.
    pub joined: Vec<bool>,
    /// The first row's text comes directly from a row above the area that is not shown.
    pub continued: bool,
}

impl Drawn {
    /// Whether row `y` (a screen row) goes on directly in row `y + 1`.
    pub fn joined_at(&self, y: u16) -> bool {
        y.checked_sub(self.area.y)
            .and_then(|i| self.joined.get(usize::from(i)))
            .copied()
            .unwrap_or(false)
    }
}

/// The marker above the oldest entry kept when limits dropped older ones.
pub fn dropped_text(n: u64) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("-- {n} older message{s} dropped (memory limit) --")
}

/// A search match in the rows shown ([`crate::app::search`]).
pub const SEARCH_MATCH: Style = Style::new().fg(Color::Black).bg(Color::Yellow);
/// The read marker's rule.
pub const READ_MARKER: Style = Style::new().fg(Color::Cyan);

/// `text` in `base`, with the matches of `query` (ignoring case) in [`SEARCH_MATCH`]. Each
/// row is matched on its own, so a match that a wrap cuts in two is not highlighted.
fn highlighted(text: &str, base: Style, query: Option<&str>) -> Vec<Span<'static>> {
    let Some(query) = query else { return vec![Span::styled(text.to_owned(), base)] };
    let mut out = vec![];
    let mut at = 0;
    for r in crate::app::search::matches(text, query) {
        if r.start > at {
            out.push(Span::styled(text[at..r.start].to_owned(), base));
        }
        out.push(Span::styled(text[r.clone()].to_owned(), base.patch(SEARCH_MATCH)));
        at = r.end;
    }
    if at < text.len() || out.is_empty() {
        out.push(Span::styled(text[at..].to_owned(), base));
    }
    out
}

/// The read marker's rule, `width` columns wide: the client's own, from the first column.
pub fn marker_text(width: usize) -> String {
    let label = "── read up to here (Alt-U) ";
    let mut text = truncate(label, width).to_owned();
    text.push_str(&"─".repeat(width.saturating_sub(super::text::width(&text))));
    text
}

/// The line above the oldest entry: the marker of dropped entries, else where scrollback into
/// the past stands ([`crate::app::buffer::Older`]).
pub fn top_banner(b: &Buffer) -> Option<String> {
    if b.dropped > 0 {
        return Some(dropped_text(b.dropped));
    }
    match b.older {
        Older::Idle => None,
        Older::Loading { .. } => Some("-- loading older messages… --".into()),
        Older::Start => Some("-- start of history --".into()),
        Older::Unsupported => Some("-- this server cannot load older messages --".into()),
    }
}

/// The fold row of an entry whose text was cut ([`crate::app::limits::MAX_ENTRY_BYTES`]).
pub fn fold_text(o: &Omitted) -> String {
    let size = size_text(o.bytes);
    match o.lines {
        0 => format!("… {size} more not kept (client limit)"),
        1 => format!("… 1 more line, {size}, not kept (client limit)"),
        n => format!("… {n} more lines, {size}, not kept (client limit)"),
    }
}

/// A byte count for people: `512 B`, `64.0 KiB`, `4.0 MiB`.
fn size_text(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
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
        Kind::Marker => style::MARKER,
    }
}

/// The `[theme]` colour of `e`'s kind (private, join, leave, notice, error), if set.
fn kind_colour(e: &Entry, theme: &crate::config::Theme) -> Option<ratatui::style::Color> {
    match &e.kind {
        Kind::Private { .. } | Kind::Sent { .. } => theme.private,
        Kind::Join => theme.join,
        Kind::Leave => theme.leave,
        Kind::Notice => theme.notice,
        Kind::Error => theme.error,
        _ => None,
    }
}

/// [`text_style`] in the theme's colours.
fn themed_text(base: Style, e: &Entry, theme: &crate::config::Theme) -> Style {
    if matches!(e.kind, Kind::Marker) {
        return style::themed(base, theme.marker, true);
    }
    style::themed(base, kind_colour(e, theme), false)
}

/// [`prefix_style`] in the theme's colours: a mention's prefix gets `mention` as background.
fn themed_prefix(e: &Entry, theme: &crate::config::Theme) -> Style {
    let base = prefix_style(e);
    let private = matches!(e.kind, Kind::Private { .. } | Kind::Sent { .. });
    if e.mention && !e.history && !private {
        return style::themed(base, theme.mention, true);
    }
    if matches!(e.kind, Kind::Marker) {
        return style::themed(base, theme.marker, true);
    }
    style::themed(base, kind_colour(e, theme), false)
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
        Kind::Marker => style::MARKER,
    };
    let base = if e.history { base.patch(style::HISTORY_TEXT) } else { base };
    if e.mention && !e.history { base.bold() } else { base }
}

/// What the rows of one entry are drawn with: the pane's columns, labels and width.
struct Layout<'a> {
    app: &'a App,
    g: Geometry,
    labels: &'a Labels,
    width: usize,
}

impl Layout<'_> {
    /// One row of entry `e`'s text: with the time and the prefix if it is the entry's first.
    fn row(&self, e: &Entry, first: bool, row: &str) -> Line<'static> {
        if e.kind == Kind::Marker {
            return Line::from(Span::styled(marker_text(self.width), READ_MARKER));
        }
        let g = &self.g;
        let theme = &self.app.config.theme;
        let tstyle = themed_text(text_style(e), e, theme);
        let mut spans = Vec::with_capacity(5);
        if first {
            if g.time {
                let tstyle_time = if e.history { style::HISTORY_TIME } else { style::TIME };
                let tstyle_time = style::themed(tstyle_time, theme.time, false);
                let clock = style::clock_as(e.time, self.app.config.zone, self.app.config.seconds);
                spans.push(Span::styled(format!("{clock} "), tstyle_time));
            }
            let label = self.labels.get(&prefix_text(e));
            spans.push(Span::styled(fit_prefix(&label, g.prefix), themed_prefix(e, theme)));
        } else {
            spans.push(Span::raw(" ".repeat(g.prefix + g.clock)));
        }
        spans.push(Span::styled(SEPARATOR, style::SEPARATOR));
        let actor = match &e.kind {
            Kind::Action { from } | Kind::Private { from, action: true } => Some(from.as_str()),
            _ => None,
        };
        let query = self.app.search.as_ref().map(|s| s.query.as_str()).filter(|q| !q.is_empty());
        match actor {
            Some(nick) if first => {
                let cut = nick.len().min(row.len());
                let nick_style = tstyle.patch(style::nick(nick));
                spans.extend(highlighted(&row[..cut], nick_style, query));
                spans.extend(highlighted(&row[cut..], tstyle, query));
            }
            _ => spans.extend(highlighted(row, tstyle, query)),
        }
        Line::from(spans)
    }

    /// The fold row of an entry that did not keep all its text: in the text column, in the
    /// client's own style.
    fn fold(&self, o: &Omitted) -> Line<'static> {
        let blank = " ".repeat(self.g.prefix + self.g.clock);
        let text = truncate(&fold_text(o), self.g.text).to_owned();
        Line::from(vec![
            Span::raw(blank),
            Span::styled(SEPARATOR, style::SEPARATOR),
            Span::styled(text, style::INFO),
        ])
    }

    /// A line from the first column in the day-change style (a day change, the marker of
    /// dropped entries): no remote text can go there.
    fn banner(&self, text: &str) -> Line<'static> {
        let day = style::themed(style::DAY_CHANGE, self.app.config.theme.day_change, false);
        Line::from(Span::styled(truncate(text, self.width).to_owned(), day))
    }

    /// Rows `from..from + count` of entry `e`, counted from its bottom (its fold row, its
    /// text's rows, its day-change line `day`), pushed onto `out` bottom first. Only the
    /// lines of text that reach those rows are wrapped, from whichever end of the entry is
    /// nearer: the other rows are never laid out. (From the top needs the entry's height,
    /// known once it is scrolled into, [`skip_rows`].)
    fn entry_rows(
        &self,
        e: &Entry,
        day: Option<chrono::NaiveDate>,
        from: usize,
        count: usize,
        out: &mut Vec<Row>,
    ) {
        let end = from.saturating_add(count);
        if from > 0 {
            let height = rows_of(e, &self.g) + usize::from(day.is_some());
            if height.saturating_sub(end) < from {
                let mut rows =
                    self.rows_from_top(e, day, height.saturating_sub(end), height - from);
                rows.reverse();
                out.extend(rows);
                return;
            }
        }
        let mut r = 0;
        if let Some(o) = &e.omitted {
            if (from..end).contains(&r) {
                out.push(Row::alone(self.fold(o)));
            }
            r += 1;
        }
        let text = shown_text(e);
        let mut stop = text.len();
        while r < end {
            let start = text[..stop].rfind('\n').map_or(0, |i| i + 1);
            let rows = wrap_line(&text[start..stop], self.g.text);
            for (k, row) in rows.iter().enumerate().rev() {
                if (from..end).contains(&r) {
                    out.push(Row {
                        line: self.row(e, start == 0 && k == 0, row),
                        joined: joins(&rows, k),
                        continued: k > 0 && joins(&rows, k - 1),
                    });
                }
                r += 1;
            }
            if start == 0 {
                break;
            }
            stop = start - 1;
        }
        if let Some(day) = day
            && (from..end).contains(&r)
        {
            out.push(Row::alone(self.banner(&style::day_change(day))));
        }
    }

    /// Rows `from..end` of entry `e` counted from its top (its day-change line `day`, its
    /// text's rows, its fold row), top first; the lines below them are not laid out.
    fn rows_from_top(
        &self,
        e: &Entry,
        day: Option<chrono::NaiveDate>,
        from: usize,
        end: usize,
    ) -> Vec<Row> {
        let mut rows = Vec::with_capacity(end.saturating_sub(from));
        let mut t = 0;
        if let Some(day) = day {
            if (from..end).contains(&t) {
                rows.push(Row::alone(self.banner(&style::day_change(day))));
            }
            t += 1;
        }
        let text = shown_text(e);
        for (ln, line) in text.split('\n').enumerate() {
            if t >= end {
                return rows;
            }
            let wrapped = wrap_line(line, self.g.text);
            for (k, row) in wrapped.iter().enumerate() {
                if (from..end).contains(&t) {
                    rows.push(Row {
                        line: self.row(e, ln == 0 && k == 0, row),
                        joined: joins(&wrapped, k),
                        continued: k > 0 && joins(&wrapped, k - 1),
                    });
                }
                t += 1;
            }
        }
        if let Some(o) = &e.omitted
            && (from..end).contains(&t)
        {
            rows.push(Row::alone(self.fold(o)));
        }
        rows
    }
}

/// Rows the view is scrolled up by, as drawn: `b.scroll`, but never past the top page.
fn skip_rows(b: &Buffer, g: &Geometry, height: usize, days: Days) -> usize {
    if b.scroll == 0 {
        return 0;
    }
    let want = b.scroll.saturating_add(height);
    let mut total = 0;
    for i in (0..b.entries.len()).rev() {
        if total >= want {
            return b.scroll;
        }
        let day = usize::from(day_before(b, i, days).is_some());
        total += rows_of(&b.entries[i], g) + day;
    }
    total += usize::from(top_banner(b).is_some());
    b.scroll.min(total.saturating_sub(height))
}

/// The rows shown in a pane `height` rows tall, top first, and how many rows up from the
/// bottom they start. Entries are visited newest first, only as far back as the view reaches;
/// entries below the view are skipped by their heights (laid out once,
/// [`crate::app::buffer::RowsCache`]) and only the rows shown are built.
fn window(b: &Buffer, layout: &Layout<'_>, height: usize, days: Days) -> (Vec<Row>, usize) {
    let skip = skip_rows(b, &layout.g, height, days);
    let mut out = Vec::with_capacity(height);
    let mut pos = 0;
    for i in (0..b.entries.len()).rev() {
        if out.len() >= height {
            break;
        }
        let e = &b.entries[i];
        let day = day_before(b, i, days);
        let from = if pos < skip {
            let h = rows_of(e, &layout.g) + usize::from(day.is_some());
            if pos + h <= skip {
                pos += h;
                continue;
            }
            let from = skip - pos;
            pos += h;
            from
        } else {
            0
        };
        layout.entry_rows(e, day, from, height - out.len(), &mut out);
    }
    if out.len() < height
        && let Some(text) = top_banner(b)
    {
        out.push(Row::alone(layout.banner(&text)));
    }
    out.reverse();
    (out, skip)
}

/// Draws the current buffer's lines into `area`, bottom rows newest, `scroll` rows up;
/// returns which of the rows drawn are hard-wrapped ([`Drawn`]).
pub fn render(app: &App, frame: &mut Frame<'_>, area: Rect) -> Drawn {
    if area.is_empty() {
        return Drawn::default();
    }
    let b = app.current_buffer();
    let names = prefixes(b);
    let g = geometry_of(&names, area.width, app.config.seconds);
    let labels = Labels::new(names.iter().map(String::as_str), g.prefix);
    let layout = Layout { app, g, labels: &labels, width: usize::from(area.width) };
    let (visible, skip) = window(b, &layout, usize::from(area.height), app.days());
    let columns = g.clock + g.prefix + width(SEPARATOR);
    let text_x = area.x.saturating_add(u16::try_from(columns).unwrap_or(u16::MAX));
    let mut drawn = Drawn {
        area,
        text_x: text_x.min(area.right()),
        joined: visible.iter().map(|r| r.joined).collect(),
        continued: visible.first().is_some_and(|r| r.continued),
    };
    frame.render_widget(
        Paragraph::new(visible.into_iter().map(|r| r.line).collect::<Vec<_>>()),
        area,
    );
    if b.scroll > 0 && skip > 0 {
        // The marker hides the last row: the row above it goes on in a row not shown.
        drawn.area.height -= 1;
        drawn.joined.truncate(usize::from(drawn.area.height));
        let text = match b.below {
            0 => " more below: PgDn ".to_owned(),
            1 => " 1 new message below: PgDn ".to_owned(),
            n => format!(" {n} new messages below: PgDn "),
        };
        let marker = Rect::new(area.x, area.y + area.height - 1, area.width, 1);
        let look = style::themed(style::MARKER, app.config.theme.marker, true);
        let line = Line::from(Span::styled(format!("──{text}"), look));
        frame.render_widget(Clear, marker);
        frame.render_widget(Paragraph::new(line).style(look), marker);
    }
    drawn
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
        assert_eq!(geometry(&buffer(&["al", "bob"]), 100, false).prefix, 3);
        let long = "a".repeat(30);
        let g = geometry(&buffer(&["al", &long]), 100, false);
        assert_eq!(
            g,
            Geometry { time: true, clock: 6, prefix: MAX_PREFIX, text: 100 - 6 - 3 - 12 }
        );
        let narrow = geometry(&buffer(&["al", &long]), 20, false);
        assert!(!narrow.time);
        assert_eq!(narrow.prefix + narrow.text + 3, 20);
        // Degenerate widths never underflow.
        assert_eq!(geometry(&buffer(&["al"]), 0, false).text, 1);
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
        assert_eq!(geometry(&buffer(&[a, b]), 100, false).prefix, 14);
        assert_eq!(geometry(&buffer(&[a, "zed"]), 100, false).prefix, MAX_PREFIX);
        // A narrow pane caps it at a third of what the time column leaves.
        assert_eq!(geometry(&buffer(&[a, b]), 45, false).prefix, (45 - 6 - 3) / 3);
    }

    /// The lazy window (from either end of an entry, heights from the cache) shows exactly
    /// the rows of the whole buffer laid out eagerly, cut to the view, at every scroll
    /// position: with wrapped lines, multi-line entries, day changes, an action, a cut entry,
    /// a URL hard-wrapped over several rows (the same rows joined either way) and the marker
    /// of dropped entries.
    #[test]
    fn the_lazy_window_is_the_eager_layout_cut_to_the_view() {
        use crate::app::testing::{T0, app};
        let mut a = app(60, 12);
        let nick = |n: &str| Nick::parse(n).unwrap();
        let day = 86_400_000;
        let long = "lorem ipsum dolor sit amet ".repeat(6);
        let entries = [
            Entry::new(T0, Kind::Message { from: nick("bob") }, "one"),
            Entry::new(T0, Kind::Message { from: nick("carol") }, &format!("a\n{long}\nb")),
            Entry::new(T0 + day, Kind::Action { from: nick("bob") }, &long),
            Entry::new(
                T0 + day,
                Kind::Message { from: nick("carol") },
                &format!("see https://x.example/{} there", "y".repeat(150)),
            ),
            Entry::new(
                T0 + day,
                Kind::Info,
                &"x\n".repeat(crate::app::limits::MAX_ENTRY_LINES + 5),
            ),
            Entry::new(
                T0 + 2 * day,
                Kind::Message { from: nick("dave") },
                &format!("{long}\n\nend"),
            ),
        ];
        let b = &mut a.buffers[0];
        b.entries.clear();
        for e in entries {
            b.push(e);
        }
        b.dropped = 3;
        let (width, height) = a.pane_size();
        let h = usize::from(height);
        let days = a.days();
        let total = total_height(&a.buffers[0], width, days);
        for scroll in (0..=total + 2).filter(|s| *s < 40 || s % 97 == 0 || *s + 40 > total) {
            a.buffers[0].scroll = scroll;
            let b = &a.buffers[0];
            let names = prefixes(b);
            let g = geometry_of(&names, width, a.config.seconds);
            let labels = Labels::new(names.iter().map(String::as_str), g.prefix);
            let layout = Layout { app: &a, g, labels: &labels, width: usize::from(width) };
            let (rows, skip) = window(b, &layout, h, days);

            let mut all = vec![Row::alone(layout.banner(&dropped_text(b.dropped)))];
            for (i, e) in b.entries.iter().enumerate() {
                all.extend(layout.rows_from_top(e, day_before(b, i, days), 0, total));
            }
            assert_eq!(all.len(), total);
            let want_skip = scroll.min(total.saturating_sub(h));
            assert_eq!(skip, want_skip, "scroll {scroll}");
            let end = total - want_skip;
            assert_eq!(rows, all[end.saturating_sub(h)..end], "scroll {scroll}");
        }
    }

    #[test]
    fn rows_cut_inside_a_word_are_joined_and_rows_broken_at_a_space_are_not() {
        let rows = wrap("see https://example.org/abcdefghij next", 12);
        assert_eq!(rows, ["see", "https://exam", "ple.org/abcd", "efghij next"]);
        let joined: Vec<bool> = (0..rows.len()).map(|k| joins(&rows, k)).collect();
        assert_eq!(joined, [false, true, true, false]);
        // A URL that fits its row exactly: the break took the space, the next word is not it.
        let rows = wrap("https://a.example next", 17);
        assert_eq!(rows, ["https://a.example", "next"]);
        assert!(!joins(&rows, 0));
    }
}
