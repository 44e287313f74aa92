//! The title bar (what the buffer shown is: a room and its topic, or a conversation) and the
//! status bar: connection state, the buffer shown, activity in the others, and on the right,
//! when it fits, the server and its key.
//!
//! ```text
//!  connected │ 2:#rust │ act: 3:bob(1!) 1:#lobby(3)          127.0.0.1:7000 SHA256:Xk3v9QaB
//! ```
//!
//! The activity list puts mentions (and private messages) first, then unread chat, then
//! conversations with only our own words (`4:carol`, after a `/msg`); what does not fit is
//! counted at its end (`+3`, in the mention colour if a mention is among them).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::style;
use super::text::width;
use crate::app::buffer::Target;
use crate::app::{App, Conn};

pub fn render_title(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.is_empty() {
        return;
    }
    let b = app.current_buffer();
    let text = match &b.target {
        Target::Room(room) if !b.joined => format!(" {room} (you are not in this room)"),
        Target::Room(room) if b.e2e => match &b.topic {
            Some(topic) => format!(" [E2E] {room} (end-to-end encrypted): {topic}"),
            None => format!(" [E2E] {room} (end-to-end encrypted)"),
        },
        Target::Room(room) => match &b.topic {
            Some(topic) => format!(" {room}: {topic}"),
            None => format!(" {room}"),
        },
        Target::Query(nick) => format!(" private conversation with {nick}"),
    };
    let bar = style::themed(style::TITLE_BAR, app.config.theme.title_bar, true);
    frame.render_widget(Paragraph::new(text).style(bar), area);
}

/// The connection state, as words and a style.
fn connection(app: &App) -> Span<'static> {
    match &app.conn {
        Conn::Connected => Span::styled(" connected ", style::STATUS_OK),
        Conn::Reconnecting { attempt, at, server, .. } => {
            let wait = at.saturating_duration_since(app.now);
            // With several servers, say which one is next.
            let to = match app.config.servers.get(*server) {
                Some(name) if app.config.servers.len() > 1 => {
                    format!(" to {}", chatao_proto::sanitize(name))
                }
                _ => String::new(),
            };
            let text = if wait.is_zero() {
                format!(" reconnecting{to}... ")
            } else {
                // Round up: "in 1s" until the attempt starts, never "in 0s".
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                format!(" reconnecting{to} in {secs}s (attempt {attempt}) ")
            };
            Span::styled(text, style::STATUS_WARN)
        }
        Conn::Quitting { .. } => Span::styled(" quitting ", style::STATUS_WARN),
        Conn::Closed { .. } => Span::styled(" disconnected ", style::STATUS_BAD),
    }
}

/// The other buffers with something new, in the order the status bar lists them: mentions
/// (and private messages) first, then unread chat, then the rest (a conversation opened by
/// `/msg`, which has no count); by buffer number within each.
fn activity(app: &App) -> Vec<(String, Style)> {
    let mut active: Vec<(u8, String, Style)> = app
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.has_activity())
        .map(|(i, b)| {
            let (n, name) = (i + 1, b.target.name());
            let theme = &app.config.theme;
            let mention = style::themed(style::STATUS_MENTION, theme.activity_mention, false);
            let unread = style::themed(style::STATUS_UNREAD, theme.activity, false);
            if b.mentioned {
                (0, format!("{n}:{name}({}!)", b.unread), mention)
            } else if b.unread > 0 {
                (1, format!("{n}:{name}({})", b.unread), unread)
            } else {
                (2, format!("{n}:{name}"), unread)
            }
        })
        .collect();
    active.sort_by_key(|(rank, _, _)| *rank);
    active.into_iter().map(|(_, text, st)| (text, st)).collect()
}

/// How many of `items` (each drawn after a space) fit in `room` columns, leaving space for the
/// ` +N` that counts the others.
fn fitting(items: &[(String, Style)], room: usize) -> usize {
    let mut used = 0;
    let mut fit = 0;
    for (k, (text, _)) in items.iter().enumerate() {
        used += 1 + width(text);
        let rest = items.len() - k - 1;
        let more = if rest == 0 { 0 } else { 2 + rest.to_string().len() };
        if used + more > room {
            break;
        }
        fit = k + 1;
    }
    fit
}

pub fn render_status(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.is_empty() {
        return;
    }
    let bar = style::themed(style::STATUS_BAR, app.config.theme.status_bar, true);
    let sep = || Span::styled("│", bar);
    let mut left = vec![connection(app), sep()];
    let current = app.current_buffer();
    left.push(Span::styled(format!(" {}:{} ", app.current + 1, current.target.name()), bar.bold()));
    if current.e2e {
        left.push(Span::styled(" E2E ", style::STATUS_E2E));
    }
    if app.outbox_full {
        left.push(sep());
        left.push(Span::styled(" outbox full ", style::STATUS_BAD));
    }
    let mut active = activity(app);
    if !active.is_empty() {
        left.push(sep());
        left.push(Span::styled(" act:", bar));
        let used: usize = left.iter().map(|s| width(&s.content)).sum();
        // The list and its trailing space fit in what is left; the server's name gives way.
        let room = usize::from(area.width).saturating_sub(used + 1);
        let hidden = active.split_off(fitting(&active, room));
        for (text, st) in active {
            left.push(Span::styled(" ", bar));
            left.push(Span::styled(text, st));
        }
        if !hidden.is_empty() {
            let mention = hidden.iter().any(|(_, st)| *st == style::STATUS_MENTION);
            let st = if mention { style::STATUS_MENTION } else { style::STATUS_UNREAD };
            left.push(Span::styled(" ", bar));
            left.push(Span::styled(format!("+{}", hidden.len()), st));
        }
        left.push(Span::styled(" ", bar));
    }
    // The server we are on; with several, its place in the list too.
    let of = match app.config.servers.len() {
        1 => String::new(),
        n => format!(" ({}/{n})", app.on + 1),
    };
    let right = format!(
        "{}{of} {} ",
        chatao_proto::sanitize(app.server_name()),
        app.server_fingerprint.short()
    );
    let used: usize = left.iter().map(|s| width(&s.content)).sum();
    let room = usize::from(area.width).saturating_sub(used);
    if room > width(&right) {
        left.push(Span::styled(format!("{right:>room$}"), bar));
    }
    frame.render_widget(Paragraph::new(Line::from(left)).style(bar), area);
}
