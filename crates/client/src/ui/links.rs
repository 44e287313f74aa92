//! Links: URLs in messages (`http://`, `https://`, and bare `www.`), found in text ([`find`])
//! for `/url`, and drawn as OSC 8 hyperlinks, clickable in terminals that know them.
//!
//! ratatui has no hyperlinks, and an escape sequence put in a cell's symbol upsets its width
//! arithmetic, so links are written after each frame ([`Links::write`]): the message pane's
//! rows are read back from the frame's buffer, each link found there whole on one row
//! ([`regions`]) is printed again over itself, cell by cell with the cell's own style, between
//! `ESC ] 8 ; ; URL ESC \` and `ESC ] 8 ; ; ESC \`, inside a saved and restored cursor
//! (`ESC 7` … `ESC 8`). A row that was a link in the last frame and is not any more is printed
//! again the same way without the link, so no cell keeps an old target. A link is what the
//! screen shows: its target is the text drawn, never hidden.
//!
//! The target written into the sequence is checked again ([`target`]) whatever the buffer's
//! sanitising already did: only printable ASCII (no ESC, BEL, space, C0 or C1 control, no
//! other character), at most [`MAX_URL`] bytes; anything else is not linked (it stays plain
//! text). A URL wrapped over two rows is not linked either (the part on one row is not it).

use std::fmt::Write as _;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};

/// Longest URL drawn as a link, in bytes.
pub const MAX_URL: usize = 2048;

/// Characters a link may not end with (sentence punctuation after a URL).
const TRAILING: &[char] = &['.', ',', ';', ':', '!', '?', ')', ']', '}', '\'', '"', '>'];

/// The byte ranges of `text` that are URLs: from `http://`, `https://` or `www.` (at the
/// start of a word) to the next white space, less trailing punctuation (a `)` is kept when
/// the URL opened one).
pub fn find(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = vec![];
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let word_start = text[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let starts = ["https://", "http://", "www."]
            .iter()
            .any(|p| rest.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p)));
        if word_start && starts {
            let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let mut url = &rest[..len];
            while let Some(c) = url.chars().next_back() {
                let balanced = c == ')' && url.matches('(').count() >= url.matches(')').count();
                if !TRAILING.contains(&c) || balanced {
                    break;
                }
                url = &url[..url.len() - c.len_utf8()];
            }
            let bare = ["https://", "http://", "www."].iter().any(|p| url.len() <= p.len());
            if !bare {
                out.push(i..i + url.len());
            }
            i += len.max(1);
            while !text.is_char_boundary(i) {
                i += 1;
            }
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

/// The target to write into an OSC 8 sequence for `url` as shown (`www.` gets `https://`),
/// or `None` when it must not be linked: anything but printable ASCII (`!` to `~`), or
/// longer than [`MAX_URL`].
pub fn target(url: &str) -> Option<String> {
    let full = if url.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("www.")) {
        format!("https://{url}")
    } else {
        url.to_owned()
    };
    let printable = full.bytes().all(|b| (0x21..=0x7e).contains(&b));
    (printable && full.len() <= MAX_URL).then_some(full)
}

/// A link on screen: row `y`, columns `x..x + len`, and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub y: u16,
    pub x: u16,
    pub len: u16,
    pub url: String,
}

/// The links drawn whole on one row of `area` in `buf`. A row is read cell by cell; only
/// cells of one ASCII character count, so columns and bytes agree. A URL that reaches the
/// area's right edge may go on in the next row: it is left out.
pub fn regions(buf: &Buffer, area: Rect) -> Vec<Region> {
    let area = area.intersection(buf.area);
    let mut out = vec![];
    for y in area.top()..area.bottom() {
        let row: String = (area.left()..area.right())
            .map(|x| {
                let s = buf[(x, y)].symbol();
                let mut c = s.chars();
                match (c.next(), c.next()) {
                    (Some(ch), None) if ch.is_ascii() && !ch.is_ascii_control() => ch,
                    _ => '\u{1}',
                }
            })
            .collect();
        for r in find(&row) {
            if r.end >= row.len() {
                continue;
            }
            let Some(url) = target(&row[r.clone()]) else { continue };
            out.push(Region { y, x: area.left() + r.start as u16, len: r.len() as u16, url });
        }
    }
    out
}

/// The links of the last frame, to write over the next.
#[derive(Debug, Default)]
pub struct Links {
    last: Vec<Region>,
}

impl Links {
    /// The bytes to write after a frame whose links are `now` in `buf`: each link printed
    /// again with its target, and each of the last frame's links that is gone printed again
    /// without one. Empty when there is nothing to do.
    pub fn write(&mut self, buf: &Buffer, now: Vec<Region>) -> String {
        let mut out = String::new();
        let gone: Vec<&Region> = self.last.iter().filter(|r| !now.contains(r)).collect();
        if gone.is_empty() && now.is_empty() {
            self.last = now;
            return out;
        }
        out.push_str("\x1b7");
        for r in gone {
            reprint(&mut out, buf, r, None);
        }
        for r in &now {
            reprint(&mut out, buf, r, Some(&r.url));
        }
        out.push_str("\x1b[0m\x1b8");
        self.last = now;
        out
    }
}

/// Prints region `r`'s cells again, each in its style, as a link to `url` when given.
fn reprint(out: &mut String, buf: &Buffer, r: &Region, url: Option<&str>) {
    let _ = write!(out, "\x1b[{};{}H", r.y + 1, r.x + 1);
    if let Some(url) = url {
        let _ = write!(out, "\x1b]8;;{url}\x1b\\");
    }
    for x in r.x..r.x + r.len {
        let Some(cell) = buf.cell((x, r.y)) else { break };
        out.push_str(&sgr(cell.fg, cell.bg, cell.modifier));
        // Only single ASCII characters make a region ([`regions`]).
        out.push_str(cell.symbol());
    }
    if url.is_some() {
        out.push_str("\x1b]8;;\x1b\\");
    }
}

/// The SGR sequence for a cell's colours and modifiers, from a reset.
fn sgr(fg: Color, bg: Color, m: Modifier) -> String {
    let mut codes = vec!["0".to_owned()];
    for (flag, code) in [
        (Modifier::BOLD, "1"),
        (Modifier::DIM, "2"),
        (Modifier::ITALIC, "3"),
        (Modifier::UNDERLINED, "4"),
        (Modifier::REVERSED, "7"),
        (Modifier::CROSSED_OUT, "9"),
    ] {
        if m.contains(flag) {
            codes.push(code.to_owned());
        }
    }
    codes.extend(colour(fg, false));
    codes.extend(colour(bg, true));
    format!("\x1b[{}m", codes.join(";"))
}

fn colour(c: Color, bg: bool) -> Option<String> {
    let base = if bg { 40 } else { 30 };
    let ext = if bg { 48 } else { 38 };
    Some(match c {
        Color::Reset => return None,
        Color::Black => format!("{base}"),
        Color::Red => format!("{}", base + 1),
        Color::Green => format!("{}", base + 2),
        Color::Yellow => format!("{}", base + 3),
        Color::Blue => format!("{}", base + 4),
        Color::Magenta => format!("{}", base + 5),
        Color::Cyan => format!("{}", base + 6),
        Color::Gray => format!("{}", base + 7),
        Color::DarkGray => format!("{}", base + 60),
        Color::LightRed => format!("{}", base + 61),
        Color::LightGreen => format!("{}", base + 62),
        Color::LightYellow => format!("{}", base + 63),
        Color::LightBlue => format!("{}", base + 64),
        Color::LightMagenta => format!("{}", base + 65),
        Color::LightCyan => format!("{}", base + 66),
        Color::White => format!("{}", base + 67),
        Color::Indexed(i) => format!("{ext};5;{i}"),
        Color::Rgb(r, g, b) => format!("{ext};2;{r};{g};{b}"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        find(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn urls_are_found_without_their_trailing_punctuation() {
        assert_eq!(
            found("see https://a.example/x?y=1, or (http://b.example/p) and www.c.example."),
            ["https://a.example/x?y=1", "http://b.example/p", "www.c.example"]
        );
        assert_eq!(
            found("https://en.wikipedia.org/wiki/Rust_(language)"),
            ["https://en.wikipedia.org/wiki/Rust_(language)"]
        );
        assert_eq!(found("xhttps://no notwww.no https:// www."), Vec::<&str>::new());
        assert_eq!(found("HTTPS://UP.EXAMPLE é"), ["HTTPS://UP.EXAMPLE"]);
    }

    #[test]
    fn a_hostile_url_is_never_written_into_the_sequence() {
        assert_eq!(target("https://ok.example/a").as_deref(), Some("https://ok.example/a"));
        assert_eq!(target("www.ok.example").as_deref(), Some("https://www.ok.example"));
        for bad in [
            "https://a.example/\x1b]8;;https://evil\x1b\\",
            "https://a.example/\x07",
            "https://a.example/\u{9b}31m",
            "https://a.example/\u{9d}8;;x\u{9c}",
            "https://a.example/\u{202e}",
            "https://a.example/␛[2J",
            "https://a.example/ b",
        ] {
            assert_eq!(target(bad), None, "{bad:?}");
        }
        let long = format!("https://a.example/{}", "x".repeat(MAX_URL));
        assert_eq!(target(&long), None);
    }

    #[test]
    fn links_on_screen_are_written_again_with_their_target_and_forgotten_when_gone() {
        let area = Rect::new(0, 0, 40, 3);
        let mut buf = Buffer::empty(area);
        buf.set_string(0, 0, "go to https://a.example now", ratatui::style::Style::new());
        // Wrapped at the edge: not a link.
        buf.set_string(20, 1, "https://b.example/xx", ratatui::style::Style::new());
        buf.set_string(0, 2, "https://a.example/é/x ", ratatui::style::Style::new());
        let now = regions(&buf, area);
        assert_eq!(
            now,
            [Region { y: 0, x: 6, len: 17, url: "https://a.example".into() }],
            "whole on one row, printable ASCII only"
        );
        let mut links = Links::default();
        let out = links.write(&buf, now);
        assert!(out.starts_with("\x1b7\x1b[1;7H\x1b]8;;https://a.example\x1b\\"), "{out:?}");
        assert!(out.ends_with("\x1b]8;;\x1b\\\x1b[0m\x1b8"), "{out:?}");
        // The next frame has no link there: printed again without one.
        let blank = Buffer::empty(area);
        let out = links.write(&blank, vec![]);
        assert!(out.contains("\x1b[1;7H") && !out.contains("]8;;https"), "{out:?}");
        assert_eq!(links.write(&blank, vec![]), "", "then nothing");
    }
}
