//! Links: URLs in messages (`http://`, `https://`, and bare `www.`), found in text ([`find`])
//! for `/url`, and drawn as OSC 8 hyperlinks, clickable in terminals that know them.
//!
//! ratatui has no hyperlinks, and an escape sequence put in a cell's symbol upsets its width
//! arithmetic, so links are written after each frame ([`Links::write`]): the message pane's
//! rows are read back from the frame's buffer, each link found there ([`regions`]) is printed
//! again over itself, cell by cell with the cell's own style, between
//! `ESC ] 8 ; id=N ; URL ESC \` and `ESC ] 8 ; ; ESC \`, inside a saved and restored cursor
//! (`ESC 7` … `ESC 8`). A row that was a link in the last frame and is not any more is printed
//! again the same way without the link, so no cell keeps an old target. A link is what the
//! screen shows: its target is the text drawn, never hidden.
//!
//! A URL wider than the text column is hard-wrapped over several rows, and the read-back
//! alone cannot tell that from a URL that fits a row exactly, followed by the next word on the
//! next row (the wrap took the space between them). So the pane's layout says which rows go
//! on directly in the next ([`Drawn`], from [`crate::ui::messages::render`]): such rows are
//! read as one line of text (the first from the pane's left, the others from the text column,
//! after their blank time and prefix columns), and a URL found there becomes one [`Region`]
//! per row it covers, all with its whole target and the same `id=N` (one number per link in a
//! frame), so that terminals treat the pieces as one link. A URL that ends at the right edge
//! of a row not joined to the next is whole, and linked. Only what the pane shows is linked:
//! the part of a URL that goes on in a row above or below the pane (scrolled away, or under
//! the "more below" marker) is left plain, never linked to a partial target.
//!
//! The target written into the sequence is checked again ([`target`]) whatever the buffer's
//! sanitising already did: only printable ASCII (no ESC, BEL, space, C0 or C1 control, no
//! other character), at most [`MAX_URL`] bytes; anything else is not linked (it stays plain
//! text). `/url N` opens only a target that passes the same check ([`crate::app::urls::openable`]).

use std::fmt::Write as _;

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};

use super::messages::Drawn;

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

/// A link's piece on one row: row `y`, columns `x..x + len`, its whole target, and the
/// number that ties the pieces of one link together (OSC 8's `id=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub y: u16,
    pub x: u16,
    pub len: u16,
    pub url: String,
    pub id: u32,
}

impl Region {
    /// The same cells linked to the same target (whatever the frame numbered it).
    fn same_link(&self, other: &Region) -> bool {
        (self.y, self.x, self.len, &self.url) == (other.y, other.x, other.len, &other.url)
    }
}

/// A cell as one byte of a row read back: its symbol when that is one printable ASCII
/// character, else `\u{1}` (which no link may hold), so columns and bytes agree.
fn ascii(symbol: &str) -> char {
    let mut c = symbol.chars();
    match (c.next(), c.next()) {
        (Some(ch), None) if ch.is_ascii() && !ch.is_ascii_control() => ch,
        _ => '\u{1}',
    }
}

/// The links drawn in the message pane `pane` of `buf`, in pieces of one row each, numbered
/// from 1 in the order found (top first). Rows `pane` says are joined are read as one line
/// of text: the first from the pane's left, each continuation from the text column. A URL
/// is whole unless it reaches the end of a line that goes on below the pane (`pane.joined`
/// of its last row) or starts a line that comes from above it (`pane.continued`): those are
/// left out.
pub fn regions(buf: &Buffer, pane: &Drawn) -> Vec<Region> {
    let area = pane.area.intersection(buf.area);
    let text_x = pane.text_x.clamp(area.left(), area.right());
    let mut out = vec![];
    let mut links = 0;
    let mut y = area.top();
    while y < area.bottom() {
        let top = y;
        let continued = top == area.top() && pane.continued;
        let mut text = String::new();
        // The cell (x, y) of each byte of `text`.
        let mut cells = vec![];
        let cut = loop {
            let from = if y == top && !continued { area.left() } else { text_x };
            for x in from..area.right() {
                text.push(ascii(buf[(x, y)].symbol()));
                cells.push((x, y));
            }
            let joined = pane.joined_at(y);
            y += 1;
            if !joined {
                break false;
            }
            if y >= area.bottom() {
                break true;
            }
        };
        for r in find(&text) {
            if (continued && r.start == 0) || (cut && r.end == text.len()) {
                continue;
            }
            let Some(url) = target(&text[r.clone()]) else { continue };
            links += 1;
            for piece in cells[r].chunk_by(|a, b| a.1 == b.1) {
                let (x, y) = piece[0];
                let len = u16::try_from(piece.len()).unwrap_or(u16::MAX);
                out.push(Region { y, x, len, url: url.clone(), id: links });
            }
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
        let gone: Vec<&Region> =
            self.last.iter().filter(|r| !now.iter().any(|n| n.same_link(r))).collect();
        if gone.is_empty() && now.is_empty() {
            self.last = now;
            return out;
        }
        out.push_str("\x1b7");
        for r in gone {
            reprint(&mut out, buf, r, None);
        }
        for r in &now {
            reprint(&mut out, buf, r, Some((r.id, &r.url)));
        }
        out.push_str("\x1b[0m\x1b8");
        self.last = now;
        out
    }
}

/// Prints region `r`'s cells again, each in its style, as a link (its id, its target) when
/// given.
fn reprint(out: &mut String, buf: &Buffer, r: &Region, link: Option<(u32, &str)>) {
    let _ = write!(out, "\x1b[{};{}H", r.y + 1, r.x + 1);
    if let Some((id, url)) = link {
        let _ = write!(out, "\x1b]8;id={id};{url}\x1b\\");
    }
    for x in r.x..r.x + r.len {
        let Some(cell) = buf.cell((x, r.y)) else { break };
        out.push_str(&sgr(cell.fg, cell.bg, cell.modifier));
        // Only single ASCII characters make a region ([`regions`]).
        out.push_str(cell.symbol());
    }
    if link.is_some() {
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
    use ratatui::layout::Rect;

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

    /// A pane `area` whose text column starts at `text_x`, its rows joined as `joined` says.
    fn pane(area: Rect, text_x: u16, joined: &[bool], continued: bool) -> Drawn {
        Drawn { area, text_x, joined: joined.to_vec(), continued }
    }

    #[test]
    fn links_on_screen_are_written_again_with_their_target_and_forgotten_when_gone() {
        let area = Rect::new(0, 0, 40, 3);
        let mut buf = Buffer::empty(area);
        buf.set_string(0, 0, "go to https://a.example now", ratatui::style::Style::new());
        // At the right edge of a row not joined to the next: whole, a link.
        buf.set_string(20, 1, "https://b.example/xx", ratatui::style::Style::new());
        buf.set_string(0, 2, "https://a.example/é/x ", ratatui::style::Style::new());
        let now = regions(&buf, &pane(area, 0, &[], false));
        assert_eq!(
            now,
            [
                Region { y: 0, x: 6, len: 17, url: "https://a.example".into(), id: 1 },
                Region { y: 1, x: 20, len: 20, url: "https://b.example/xx".into(), id: 2 },
            ],
            "printable ASCII only"
        );
        let mut links = Links::default();
        let out = links.write(&buf, now);
        assert!(out.starts_with("\x1b7\x1b[1;7H\x1b]8;id=1;https://a.example\x1b\\"), "{out:?}");
        assert!(out.contains("\x1b[2;21H\x1b]8;id=2;https://b.example/xx\x1b\\"), "{out:?}");
        assert!(out.ends_with("\x1b]8;;\x1b\\\x1b[0m\x1b8"), "{out:?}");
        // The next frame has no link there: printed again without one.
        let blank = Buffer::empty(area);
        let out = links.write(&blank, vec![]);
        assert!(out.contains("\x1b[1;7H") && !out.contains("]8;id"), "{out:?}");
        assert_eq!(links.write(&blank, vec![]), "", "then nothing");
    }

    /// A hard-wrapped URL is one link in a piece per row, with its whole target; one that fits
    /// a row exactly, the next word on the next row (not joined), is linked alone.
    #[test]
    fn a_url_over_joined_rows_is_one_link_and_one_that_fits_exactly_is_whole() {
        let area = Rect::new(0, 0, 24, 5);
        let mut buf = Buffer::empty(area);
        let st = ratatui::style::Style::new();
        // Text column from x = 6; row 0 reaches the right edge and goes on in row 1.
        buf.set_string(0, 0, "bob | see https://a.exam", st);
        buf.set_string(0, 1, "    | ple/x/y now", st);
        // Fits row 2 exactly; row 3 is the next word, after the space the wrap took.
        buf.set_string(0, 2, "eve | www.b.example/abcd", st);
        buf.set_string(0, 3, "    | next", st);
        buf.set_string(0, 4, "    | http://c.example/", st);
        let drawn = pane(area, 6, &[true, false, false, false, false], false);
        let now = regions(&buf, &drawn);
        let ab = "https://a.example/x/y";
        let b = "https://www.b.example/abcd";
        assert_eq!(
            now,
            [
                Region { y: 0, x: 10, len: 14, url: ab.into(), id: 1 },
                Region { y: 1, x: 6, len: 7, url: ab.into(), id: 1 },
                Region { y: 2, x: 6, len: 18, url: b.into(), id: 2 },
                Region { y: 4, x: 6, len: 17, url: "http://c.example/".into(), id: 3 },
            ]
        );
        let out = Links::default().write(&buf, now);
        assert!(out.contains("\x1b[1;11H\x1b]8;id=1;https://a.example/x/y\x1b\\"), "{out:?}");
        assert!(out.contains("\x1b[2;7H\x1b]8;id=1;https://a.example/x/y\x1b\\"), "{out:?}");
        // Without the join, row 0's part is a URL of its own and row 1's is no URL.
        let unjoined = regions(&buf, &pane(area, 6, &[], false));
        assert_eq!(unjoined[0].url, "https://a.exam");
        assert_eq!(unjoined[1].url, b);
    }

    /// The part of a URL whose line goes on above or below the pane is not a link to it.
    #[test]
    fn a_url_cut_by_the_pane_s_edge_is_not_linked() {
        let area = Rect::new(0, 0, 24, 2);
        let mut buf = Buffer::empty(area);
        let st = ratatui::style::Style::new();
        buf.set_string(0, 0, "    | https://q.ex/a www", st);
        buf.set_string(0, 1, "eve | see https://d.exam", st);
        // Row 0 comes from a row above the pane; row 1 goes on below it.
        let cut = regions(&buf, &pane(area, 6, &[false, true], true));
        assert_eq!(cut, []);
        let whole = regions(&buf, &pane(area, 6, &[], false));
        let urls: Vec<&str> = whole.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(urls, ["https://q.ex/a", "https://d.exam"]);
    }
}
