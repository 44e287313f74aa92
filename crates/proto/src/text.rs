//! What message text, topics and reasons may contain, and how clients make the rest harmless.
//!
//! The server refuses ([`check_text`]); clients neutralise again before display ([`sanitize`]):
//! defence in depth, since a client may talk to a server that does not check.

/// Why text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text is empty")]
    Empty,
    #[error("text contains the control character U+{0:04X}")]
    Control(u32),
    #[error("text contains the bidirectional control U+{0:04X}")]
    Bidi(u32),
    #[error("text is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// Unicode bidirectional embedding, override and isolate controls (they can make text display in
/// an order other than the one it was written in: "Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}')
}

/// C0 and C1 controls and DEL. Newline is the one control allowed, and only where
/// `allow_newline` says so.
fn is_forbidden_control(c: char, allow_newline: bool) -> bool {
    if c == '\n' {
        return !allow_newline;
    }
    c.is_control()
}

/// Checks text against the rules: non-empty, at most `max_bytes` UTF-8 bytes, no control
/// characters (newline only when `allow_newline`), no bidirectional controls. Text that is only
/// whitespace counts as empty.
pub fn check_text(s: &str, max_bytes: usize, allow_newline: bool) -> Result<(), TextError> {
    if s.trim().is_empty() {
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
    }
    Ok(())
}

/// Returns `s` with every control character (newline included, since a display line is one
/// line) and bidirectional control replaced by a visible, inert stand-in: C0 controls by their
/// Unicode "control picture" (ESC shows as `␛`), everything else by U+FFFD. Safe to write to a
/// terminal.
pub fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let out = s
        .chars()
        .map(|c| match c {
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{FFFD}'),
            '\u{7f}' => '\u{2421}',
            c if c.is_control() || is_bidi_control(c) => '\u{FFFD}',
            c => c,
        })
        .collect();
    std::borrow::Cow::Owned(out)
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
    }

    #[test]
    fn sanitize_neutralises_escape_sequences() {
        let s = sanitize("x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202E}y\r\n\u{9b}");
        assert!(!s.chars().any(|c| c.is_control()));
        assert_eq!(s, "x␛]0;pwned␇␛[2J\u{FFFD}y␍␊\u{FFFD}");
        assert!(matches!(sanitize("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
