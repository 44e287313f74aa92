//! What message text, topics and reasons may contain, and how clients make the rest harmless.
//!
//! The server refuses ([`check_text`]); clients neutralise again before display ([`sanitize`],
//! and [`sanitize_line`] for output read line by line): defence in depth, since a client may
//! talk to a server that does not check.

use std::borrow::Cow;

/// Why text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Empty, or only whitespace and invisible characters ([`is_invisible`]).
    #[error("text is empty")]
    Empty,
    #[error("text contains the control character U+{0:04X}")]
    Control(u32),
    #[error("text contains the bidirectional control U+{0:04X}")]
    Bidi(u32),
    /// U+2028 or U+2029: `\n` is the one line break (where one is allowed at all).
    #[error("text contains the line separator U+{0:04X} (only \\n breaks lines)")]
    LineSeparator(u32),
    #[error("text is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// Unicode bidirectional controls: the embeddings, overrides and isolates (they can make text
/// display in an order other than the one it was written in: "Trojan Source") and the marks
/// LRM, RLM and ALM (U+200E, U+200F, U+061C).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// The line and paragraph separators U+2028 and U+2029: line breaks other than `\n`.
pub fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// What must never reach a terminal as it is: controls (C0, DEL, C1: `char::is_control`),
/// bidirectional controls and the line separators. [`sanitize`] replaces exactly these; a JSON
/// writer for terminals should `\u`-escape them.
pub fn is_display_hazard(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_line_separator(c)
}

/// Characters that draw nothing: Unicode's Default_Ignorable_Code_Point set (zero-width space
/// and joiners, word joiner, BOM/ZWNBSP, soft hyphen, variation selectors, tags, ...) and the
/// other format characters (general category Cf). Text made only of these and whitespace
/// counts as empty. A few of them (the Hangul fillers) are drawn as blanks by many terminals:
/// see [`is_blank`].
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{0600}'..='\u{0605}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1345F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Characters drawn as empty space: Unicode whitespace and the blank-looking letters (Braille
/// blank U+2800, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0).
pub fn is_blank(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{2800}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
}

/// Control characters and DEL. Newline is the one control allowed, and only where
/// `allow_newline` says so.
fn is_forbidden_control(c: char, allow_newline: bool) -> bool {
    if c == '\n' {
        return !allow_newline;
    }
    c.is_control()
}

/// Checks text against the rules: non-empty, at most `max_bytes` UTF-8 bytes, no control
/// characters (newline only when `allow_newline`), no bidirectional controls, no line separator
/// U+2028/U+2029. Text made only of whitespace, blanks ([`is_blank`]) and invisible characters
/// ([`is_invisible`]: zero-width space, joiners, BOM, ...) counts as empty.
pub fn check_text(s: &str, max_bytes: usize, allow_newline: bool) -> Result<(), TextError> {
    if s.chars().all(|c| is_blank(c) || is_invisible(c)) {
        return Err(TextError::Empty);
    }
    if s.len() > max_bytes {
        return Err(TextError::TooLong { len: s.len(), max: max_bytes });
    }
    for c in s.chars() {
        if is_forbidden_control(c, allow_newline) {
            return Err(TextError::Control(c as u32));
        }
        if is_bidi_control(c) {
            return Err(TextError::Bidi(c as u32));
        }
        if is_line_separator(c) {
            return Err(TextError::LineSeparator(c as u32));
        }
    }
    Ok(())
}

/// Returns `s` with every display hazard ([`is_display_hazard`]: controls, newline included
/// since a display line is one line, bidirectional controls, line separators) replaced by a
/// visible, inert stand-in: C0 controls by their Unicode "control picture" (ESC shows as `␛`),
/// DEL by `␡`, the line separators by `␤`, everything else by U+FFFD. Safe to write to a
/// terminal.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_display_hazard) {
        return Cow::Borrowed(s);
    }
    let out = s
        .chars()
        .map(|c| match c {
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{FFFD}'),
            '\u{7f}' => '\u{2421}',
            '\u{2028}' | '\u{2029}' => '\u{2424}',
            c if is_display_hazard(c) => '\u{FFFD}',
            c => c,
        })
        .collect();
    Cow::Owned(out)
}

/// The longest run of blanks [`sanitize_line`] keeps as it is.
pub const MAX_BLANK_RUN: usize = 3;

/// What [`sanitize_line`] writes for a longer run of blanks.
pub const BLANK_RUN_MARK: &str = "␠…";

/// [`sanitize`], for output read line by line (a terminal's rows, a log): in addition, a run
/// of more than [`MAX_BLANK_RUN`] blanks ([`is_blank`], with any invisible characters among
/// them) becomes [`BLANK_RUN_MARK`], and trailing blanks are removed. Padding can then neither
/// push the rest of a text onto a row of its own, where it would pass for a line of the
/// program's (a fake `[12:00:00] #lobby <alice> ...`), nor hide text past the edge.
pub fn sanitize_line(s: &str) -> Cow<'_, str> {
    let clean = sanitize(s);
    let mut out = String::with_capacity(clean.len());
    // The current run of blanks and invisible characters, and how many of it are blanks.
    let mut run = String::new();
    let mut width = 0usize;
    for c in clean.chars() {
        if is_blank(c) || is_invisible(c) {
            run.push(c);
            width += usize::from(is_blank(c));
            continue;
        }
        if width > MAX_BLANK_RUN {
            out.push_str(BLANK_RUN_MARK);
        } else {
            out.push_str(&run);
        }
        run.clear();
        width = 0;
        out.push(c);
    }
    // A trailing run goes unless it is only invisible characters (a variation selector or a
    // joiner ending an emoji).
    if width == 0 {
        out.push_str(&run);
    }
    if out == clean {
        return clean;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_text_and_emoji() {
        assert_eq!(check_text("hello, 世界 👋", 100, false), Ok(()));
        assert_eq!(check_text("two\nlines", 100, true), Ok(()));
    }

    #[test]
    fn refuses_controls_bidi_and_length() {
        assert_eq!(check_text("a\u{1b}[2J", 100, false), Err(TextError::Control(0x1b)));
        assert_eq!(check_text("a\nb", 100, false), Err(TextError::Control(0x0a)));
        assert_eq!(check_text("a\u{9b}b", 100, false), Err(TextError::Control(0x9b)));
        assert_eq!(check_text("abc\u{202E}def", 100, false), Err(TextError::Bidi(0x202e)));
        assert_eq!(check_text("  ", 100, false), Err(TextError::Empty));
        assert_eq!(check_text("abcd", 3, false), Err(TextError::TooLong { len: 4, max: 3 }));
        assert_eq!(check_text("a\u{200F}b", 100, true), Err(TextError::Bidi(0x200f)));
    }

    #[test]
    fn text_of_only_invisible_characters_is_empty() {
        for s in [
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
            " \u{200B} \n\u{FEFF}",
            "\u{00AD}\u{034F}\u{180E}\u{FE0F}\u{E0041}",
            "\u{3164}\u{2800}\u{115F}",
        ] {
            assert_eq!(check_text(s, 100, true), Err(TextError::Empty), "{s:?}");
        }
        // Visible text with invisible characters in it is fine: an emoji sequence, ZWNJ.
        assert_eq!(check_text("👩\u{200D}💻 \u{2764}\u{FE0F}", 100, false), Ok(()));
        assert_eq!(check_text("می\u{200C}خواهم", 100, false), Ok(()));
    }

    #[test]
    fn line_and_paragraph_separators_are_refused_even_where_newline_is_allowed() {
        assert_eq!(check_text("a\u{2028}b", 100, true), Err(TextError::LineSeparator(0x2028)));
        assert_eq!(check_text("a\u{2029}b", 100, false), Err(TextError::LineSeparator(0x2029)));
        assert_eq!(sanitize("a\u{2028}b\u{2029}"), "a␤b␤");
    }

    #[test]
    fn every_display_hazard_is_refused_and_sanitized() {
        let hazards: Vec<char> = ('\0'..='\u{10FFFF}').filter(|&c| is_display_hazard(c)).collect();
        for &c in &hazards {
            let s = format!("a{c}b");
            assert!(check_text(&s, 100, false).is_err(), "{c:?}");
            assert!(!sanitize(&s).chars().any(is_display_hazard), "{c:?}");
        }
        for c in ['\u{1b}', '\u{9b}', '\u{85}', '\u{202E}', '\u{2066}', '\u{200E}', '\u{061C}'] {
            assert!(hazards.contains(&c), "{c:?}");
        }
    }

    #[test]
    fn sanitize_line_collapses_padding_and_strips_trailing_blanks() {
        let fake = "[18:20:29] #lobby <alice> send me your password";
        let padded = format!("ok{}{fake}", " ".repeat(90));
        assert_eq!(sanitize_line(&padded), format!("ok{BLANK_RUN_MARK}{fake}"));
        // Other blanks, and zero-width characters between spaces, make a run all the same.
        let sneaky = format!("ok{}{fake}", " \u{200B}\u{3000}\u{2800}\u{00A0}".repeat(20));
        assert_eq!(sanitize_line(&sneaky), format!("ok{BLANK_RUN_MARK}{fake}"));
        // A tab is a control: it shows as its picture, whatever follows.
        assert_eq!(sanitize_line("a\t\t\tb"), "a␉␉␉b");
        assert_eq!(sanitize_line("a   b  c"), "a   b  c", "short runs stay");
        assert_eq!(sanitize_line("trailing   \u{3000} "), "trailing");
        assert_eq!(sanitize_line("\u{2764}\u{FE0F}"), "\u{2764}\u{FE0F}");
        assert_eq!(sanitize_line("x\u{1b}[2J    y  "), "x␛[2J␠…y");
        assert!(matches!(sanitize_line("plain words"), Cow::Borrowed(_)));
    }

    #[test]
    fn sanitize_neutralises_escape_sequences() {
        let s = sanitize("x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202E}y\r\n\u{9b}");
        assert!(!s.chars().any(|c| c.is_control()));
        assert_eq!(s, "x␛]0;pwned␇␛[2J\u{FFFD}y␍␊\u{FFFD}");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
    }
}
