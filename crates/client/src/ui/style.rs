//! Colours and formats. Styles mark what only the client decides (who is speaking, what is a
//! notice, a private message, history, a mention); remote text is always drawn in the text
//! column in a plain style, so it cannot pass for any of them.

use chrono::TimeZone;
use ratatui::style::{Color, Modifier, Style};

use crate::app::Zone;

/// The channel levels of the 256-colour palette's 6×6×6 cube (indices 16 to 231).
const CUBE_LEVELS: [i32; 6] = [0, 95, 135, 175, 215, 255];

/// Whether cube colour `index` is a readable nickname colour: not greyish (the colour of
/// times and client notes), bright enough on a dark background, and neither red nor magenta
/// (errors and private messages), nor pink or purple, which are too close to them.
const fn readable(index: u8) -> bool {
    if index < 16 || index > 231 {
        return false;
    }
    let c = (index - 16) as usize;
    let (r, g, b) = (c / 36, (c / 6) % 6, c % 6);
    let (hi, lo) = (max3(r, g, b), min3(r, g, b));
    if hi - lo < 2 {
        return false;
    }
    let (rv, gv, bv) = (CUBE_LEVELS[r], CUBE_LEVELS[g], CUBE_LEVELS[b]);
    if (299 * rv + 587 * gv + 114 * bv) / 1000 < 110 {
        return false;
    }
    let (hi, lo) = (max3i(rv, gv, bv), min3i(rv, gv, bv));
    let d = hi - lo;
    let hue = if hi == rv {
        (60 * (gv - bv) / d + 360) % 360
    } else if hi == gv {
        120 + 60 * (bv - rv) / d
    } else {
        240 + 60 * (rv - gv) / d
    };
    hue >= 25 && hue < 280
}

const fn max3(a: usize, b: usize, c: usize) -> usize {
    let m = if a > b { a } else { b };
    if m > c { m } else { c }
}
const fn min3(a: usize, b: usize, c: usize) -> usize {
    let m = if a < b { a } else { b };
    if m < c { m } else { c }
}
const fn max3i(a: i32, b: i32, c: i32) -> i32 {
    let m = if a > b { a } else { b };
    if m > c { m } else { c }
}
const fn min3i(a: i32, b: i32, c: i32) -> i32 {
    let m = if a < b { a } else { b };
    if m < c { m } else { c }
}

/// How many of the 256 colours are [`readable`] (103).
const NICK_COLOR_COUNT: usize = {
    let mut n = 0;
    let mut i = 16;
    while i <= 231 {
        if readable(i as u8) {
            n += 1;
        }
        i += 1;
    }
    n
};

/// Nickname colours: the readable ones of the 256-colour palette, as weechat hashes into
/// (ten named colours made look-alike nicknames share a colour too often).
const NICK_COLORS: [u8; NICK_COLOR_COUNT] = {
    let mut out = [0u8; NICK_COLOR_COUNT];
    let (mut n, mut i) = (0, 16);
    while i <= 231 {
        if readable(i as u8) {
            out[n] = i as u8;
            n += 1;
        }
        i += 1;
    }
    out
};

/// A nickname's colour: the same on every run and every machine (FNV-1a of the folded nick,
/// not the standard library's randomised hasher).
pub fn nick_color(nick: &str) -> Color {
    let mut h: u32 = 0x811c_9dc5;
    for b in nick.to_ascii_lowercase().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    Color::Indexed(NICK_COLORS[h as usize % NICK_COLORS.len()])
}

pub fn nick(nick: &str) -> Style {
    Style::new().fg(nick_color(nick))
}

fn at(millis: u64, zone: Zone) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let millis = i64::try_from(millis).ok()?;
    match zone {
        Zone::Local => {
            chrono::Local.timestamp_millis_opt(millis).single().map(|t| t.fixed_offset())
        }
        Zone::Fixed(off) => off.timestamp_millis_opt(millis).single(),
    }
}

/// `HH:MM` for a time in milliseconds since the epoch.
pub fn clock(millis: u64, zone: Zone) -> String {
    at(millis, zone).map(|t| t.format("%H:%M").to_string()).unwrap_or_else(|| "--:--".into())
}

/// `HH:MM:SS` with `seconds`, else [`clock`]'s `HH:MM`.
pub fn clock_as(millis: u64, zone: Zone, seconds: bool) -> String {
    if !seconds {
        return clock(millis, zone);
    }
    at(millis, zone).map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_else(|| "--:--:--".into())
}

/// The calendar day of a time in milliseconds since the epoch.
pub fn date(millis: u64, zone: Zone) -> Option<chrono::NaiveDate> {
    at(millis, zone).map(|t| t.date_naive())
}

/// The line drawn where the day changes: `-- Tuesday, 14 November 2023 --`.
pub fn day_change(day: chrono::NaiveDate) -> String {
    format!("-- {} --", day.format("%A, %-d %B %Y"))
}

/// `YYYY-MM-DD HH:MM`, for times that may be days away (the end of a ban).
pub fn date_time(millis: u64, zone: Zone) -> String {
    at(millis, zone).map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_else(|| "?".into())
}

/// `base` with the config's `[theme]` colour `colour`, if set: as its background (`bg`: the
/// mention's prefix and the bars, which their background marks), else its foreground.
pub fn themed(base: Style, colour: Option<Color>, bg: bool) -> Style {
    match (colour, bg) {
        (None, _) => base,
        (Some(c), true) => base.bg(c),
        (Some(c), false) => base.fg(c),
    }
}

pub const TIME: Style = Style::new().fg(Color::DarkGray);
/// Timestamps of lines replayed from history.
pub const HISTORY_TIME: Style = Style::new().fg(Color::DarkGray).add_modifier(Modifier::ITALIC);
/// Text of lines replayed from history.
pub const HISTORY_TEXT: Style = Style::new().fg(Color::Gray);
/// The day-change line, drawn from the first column, where no remote text can go.
pub const DAY_CHANGE: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
pub const SEPARATOR: Style = Style::new().fg(Color::DarkGray);
pub const JOIN: Style = Style::new().fg(Color::Green);
pub const LEAVE: Style = Style::new().fg(Color::Red);
pub const NOTICE: Style = Style::new().fg(Color::Cyan);
pub const INFO: Style = Style::new().fg(Color::DarkGray);
pub const ERROR: Style = Style::new().fg(Color::LightRed).add_modifier(Modifier::BOLD);
pub const PRIVATE: Style = Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD);
/// The prefix of a line that mentions us.
pub const MENTION: Style =
    Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD);
pub const ACTION: Style = Style::new().add_modifier(Modifier::ITALIC);
pub const TITLE_BAR: Style = Style::new().fg(Color::White).bg(Color::Blue);
pub const STATUS_BAR: Style = Style::new().fg(Color::White).bg(Color::DarkGray);
pub const STATUS_OK: Style = Style::new().fg(Color::LightGreen).bg(Color::DarkGray);
pub const STATUS_WARN: Style =
    Style::new().fg(Color::Yellow).bg(Color::DarkGray).add_modifier(Modifier::BOLD);
pub const STATUS_BAD: Style =
    Style::new().fg(Color::LightRed).bg(Color::DarkGray).add_modifier(Modifier::BOLD);
pub const STATUS_UNREAD: Style =
    Style::new().fg(Color::White).bg(Color::DarkGray).add_modifier(Modifier::BOLD);
pub const STATUS_MENTION: Style =
    Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD);
/// The "new messages below" bar over the bottom of a scrolled pane.
/// The mark of an end-to-end encrypted room in the status bar.
pub const STATUS_E2E: Style =
    Style::new().fg(Color::Black).bg(Color::LightGreen).add_modifier(Modifier::BOLD);
pub const MARKER: Style = Style::new().fg(Color::Black).bg(Color::Cyan);
pub const PROMPT: Style = Style::new().fg(Color::Cyan);
/// Newlines in the input line, shown as `↵`.
pub const NEWLINE: Style = Style::new().fg(Color::DarkGray);
pub const AWAY: Style = Style::new().fg(Color::DarkGray).add_modifier(Modifier::ITALIC);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    const PINNED_ALICE: Color = Color::Indexed(147);

    #[test]
    fn nick_colours_are_stable_and_ignore_case() {
        assert_eq!(nick_color("alice"), nick_color("ALICE"));
        // Pinned: a change here changes everyone's colours.
        assert_eq!(nick_color("alice"), PINNED_ALICE);
        let all: std::collections::HashSet<String> =
            ["alice", "bob", "carol", "dave", "eve", "mallory"]
                .iter()
                .map(|n| format!("{:?}", nick_color(n)))
                .collect();
        assert!(all.len() >= 5, "nicks spread over the palette: {all:?}");
    }

    #[test]
    fn the_palette_is_large_and_readable() {
        assert_eq!(NICK_COLORS.len(), 103);
        for bad in [
            16,  // black
            196, // red
            201, // magenta
            213, // pink
            244, // grey (not in the cube at all)
            102, // greyish
            17,  // dark blue
        ] {
            assert!(!NICK_COLORS.contains(&bad), "{bad}");
        }
        for good in [46, 51, 226, 214, 75, 120] {
            assert!(NICK_COLORS.contains(&good), "{good}");
        }
    }

    #[test]
    fn administrator_and_administrator2_differ_in_colour() {
        assert_ne!(nick_color("administrator"), nick_color("administratoR2"));
    }

    #[test]
    fn clock_uses_the_zone() {
        let utc = Zone::Fixed(FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
        assert_eq!(clock(0, utc), "00:00");
        assert_eq!(clock(1_700_000_000_000, utc), "22:13");
        let plus2 = Zone::Fixed(FixedOffset::east_opt(7200).unwrap_or_else(|| unreachable!()));
        assert_eq!(clock(0, plus2), "02:00");
        assert_eq!(date_time(0, plus2), "1970-01-01 02:00");
        assert_eq!(clock(u64::MAX, utc), "--:--");
    }
}
