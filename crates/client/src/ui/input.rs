//! The input line: `[nick] ` then the text, scrolled sideways to keep the cursor in view.
//! A multi-line message shows its newlines as `↵` and starts with `[N lines]`, so it is plain
//! that Enter sends all of it as one message. While searching ([`crate::app::search`]) the
//! line shows the query instead.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::style;
use super::text::{cluster_width, clusters, width};
use crate::app::App;

/// How a newline in the input is drawn.
const NEWLINE: &str = "↵";

pub fn render(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.is_empty() {
        return;
    }
    if let Some(s) = &app.search {
        return render_search(s, app, frame, area);
    }
    let editor = &app.editor;
    let mut prompt = format!("[{}] ", app.me);
    if editor.line_count() > 1 {
        prompt = format!("{prompt}[{} lines] ", editor.line_count());
    }
    let cols = usize::from(area.width);
    // A narrow terminal keeps the text and drops the prompt.
    if width(&prompt) * 2 > cols {
        prompt.clear();
    }
    let avail = cols.saturating_sub(width(&prompt)).max(1);
    let text = editor.text();
    let col_of = |s: &str| -> usize {
        clusters(s).map(|(_, c)| if c == "\n" { 1 } else { cluster_width(c) }).sum()
    };
    let cursor_col = col_of(&text[..editor.cursor()]);
    // Columns of text hidden on the left so that the cursor is on screen.
    let hide = (cursor_col + 1).saturating_sub(avail);
    let look = style::themed(style::PROMPT, app.config.theme.prompt, false);
    let mut spans = vec![Span::styled(prompt.clone(), look)];
    let mut col = 0;
    let mut shown_from = 0;
    let mut run = String::new();
    for (_, c) in clusters(text) {
        let w = if c == "\n" { 1 } else { cluster_width(c) };
        if col < hide {
            col += w;
            shown_from = col;
            continue;
        }
        col += w;
        if c == "\n" {
            spans.push(Span::raw(std::mem::take(&mut run)));
            spans.push(Span::styled(NEWLINE, style::NEWLINE));
        } else {
            run.push_str(c);
        }
    }
    spans.push(Span::raw(run));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
    let x = width(&prompt) + cursor_col.saturating_sub(shown_from);
    let x = area.x + (x.min(cols.saturating_sub(1)) as u16);
    frame.set_cursor_position((x, area.y));
}

/// The search being typed (or moved through) in the input line's place.
fn render_search(s: &crate::app::search::Search, app: &App, frame: &mut Frame<'_>, area: Rect) {
    let state = match (s.typing, s.failed) {
        (_, true) => "(search, no more matches) ",
        (true, false) => "(search) ",
        (false, false) => "(search: n/N older/newer, Esc leaves) ",
    };
    let cols = usize::from(area.width);
    let clean = chatao_proto::sanitize(&s.query);
    let query = crate::ui::text::truncate(&clean, cols.saturating_sub(width(state) + 1));
    let look = style::themed(style::PROMPT, app.config.theme.prompt, false);
    let line = Line::from(vec![Span::styled(state, look), Span::raw(query.to_owned())]);
    frame.render_widget(Paragraph::new(line), area);
    if s.typing {
        let x = (width(state) + width(query)).min(cols.saturating_sub(1));
        frame.set_cursor_position((area.x + x as u16, area.y));
    }
}
