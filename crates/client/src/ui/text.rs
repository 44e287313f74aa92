//! Measuring and wrapping text for a terminal: display clusters, their widths, word wrapping.
//!
//! Rendering and the state that depends on geometry (scroll positions, the input cursor) both
//! use these functions, so what [`crate::app`] computes and what [`crate::ui`] draws agree.
//!
//! A *cluster* is a character followed by the zero-width characters that attach to it
//! (combining marks, variation selectors, a zero-width joiner and the character it joins): a
//! close approximation of a grapheme that needs no segmentation tables. Its width is
//! `unicode-width`'s width of the whole cluster, which is also what ratatui uses per grapheme,
//! so a ZWJ emoji sequence counts 2 columns, a CJK ideograph 2, a combining accent 0.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

const ZWJ: char = '\u{200D}';

/// The display clusters of `s`, with their byte offsets.
pub fn clusters(s: &str) -> Clusters<'_> {
    Clusters { s, pos: 0 }
}

/// Iterator returned by [`clusters`].
#[derive(Debug, Clone)]
pub struct Clusters<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Iterator for Clusters<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        let start = self.pos;
        let mut chars = self.s[start..].chars();
        let first = chars.next()?;
        let mut end = start + first.len_utf8();
        let mut joining = first == ZWJ;
        for c in chars {
            let attaches = joining || (c != '\n' && c.width() == Some(0));
            if !attaches {
                break;
            }
            joining = c == ZWJ;
            end += c.len_utf8();
        }
        self.pos = end;
        Some((start, &self.s[start..end]))
    }
}

/// Columns one cluster occupies (0 for a control character, which is never drawn).
pub fn cluster_width(cluster: &str) -> usize {
    if cluster.chars().any(char::is_control) { 0 } else { cluster.width() }
}

/// Columns `s` occupies: the sum of its clusters' widths.
pub fn width(s: &str) -> usize {
    clusters(s).map(|(_, c)| cluster_width(c)).sum()
}

/// The byte offset of the cluster boundary before `pos` (0 at the start).
pub fn prev_boundary(s: &str, pos: usize) -> usize {
    clusters(s).map(|(i, _)| i).take_while(|&i| i < pos).last().unwrap_or(0)
}

/// The byte offset of the cluster boundary after `pos` (`s.len()` at the end).
pub fn next_boundary(s: &str, pos: usize) -> usize {
    clusters(s).map(|(i, c)| i + c.len()).find(|&end| end > pos).unwrap_or(s.len())
}

/// The longest prefix of `s` that fits in `max` columns.
pub fn truncate(s: &str, max: usize) -> &str {
    let mut used = 0;
    for (i, c) in clusters(s) {
        used += cluster_width(c);
        if used > max {
            return &s[..i];
        }
    }
    s
}

/// Splits one line (no `\n`) into rows of at most `width` columns, breaking after spaces where
/// possible (the space at a break is dropped) and inside a word only when the word alone is
/// wider than a row. A cluster wider than the whole row gets a row of its own (the renderer
/// clips it). Always returns at least one row.
pub fn wrap(line: &str, width: usize) -> Vec<&str> {
    let width = width.max(1);
    let mut rows = Vec::new();
    let mut start = 0;
    let mut used = 0;
    // The last space in the current row: a break there ends the row before it.
    let mut space: Option<usize> = None;
    for (i, c) in clusters(line) {
        let w = cluster_width(c);
        if c == " " {
            if used + w > width {
                rows.push(&line[start..i]);
                start = i + 1;
                used = 0;
                space = None;
            } else {
                space = Some(i);
                used += w;
            }
            continue;
        }
        if used + w > width && i > start {
            match space.filter(|&s| s > start) {
                Some(s) => {
                    rows.push(&line[start..s]);
                    start = s + 1;
                    used = self::width(&line[start..i]);
                }
                None => {
                    rows.push(&line[start..i]);
                    start = i;
                    used = 0;
                }
            }
            space = None;
        }
        used += w;
    }
    if start < line.len() || rows.is_empty() {
        rows.push(&line[start..]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_keep_combining_marks_and_zwj_sequences_together() {
        let family = "👨\u{200D}👩\u{200D}👧";
        let s = format!("e\u{301}x{family}世");
        let got: Vec<&str> = clusters(&s).map(|(_, c)| c).collect();
        assert_eq!(got, vec!["e\u{301}", "x", family, "世"]);
        assert_eq!(width(&s), 1 + 1 + 2 + 2);
        assert_eq!(width("a\nb"), 2, "a newline is its own zero-width cluster");
    }

    #[test]
    fn boundaries_step_over_whole_clusters() {
        let s = "ae\u{301}世";
        assert_eq!(next_boundary(s, 0), 1);
        assert_eq!(next_boundary(s, 1), 4);
        assert_eq!(next_boundary(s, 4), 7);
        assert_eq!(next_boundary(s, 7), 7);
        assert_eq!(prev_boundary(s, 7), 4);
        assert_eq!(prev_boundary(s, 4), 1);
        assert_eq!(prev_boundary(s, 0), 0);
    }

    #[test]
    fn wrap_breaks_at_spaces_and_splits_long_words() {
        assert_eq!(wrap("hello brave new world", 11), vec!["hello brave", "new world"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a bcdefg", 5), vec!["a", "bcdef", "g"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(wrap("exact fit", 9), vec!["exact fit"]);
        assert_eq!(wrap("trailing ", 8), vec!["trailing"]);
    }

    #[test]
    fn wrap_never_splits_a_wide_character_across_rows() {
        let rows = wrap("世界世界世", 5);
        assert_eq!(rows, vec!["世界", "世界", "世"]);
        for r in &rows {
            assert!(width(r) <= 5);
        }
        // Wider than the row: alone on its row, never an endless loop.
        assert_eq!(wrap("世世", 1), vec!["世", "世"]);
        assert_eq!(wrap("👍 ok", 2), vec!["👍", "ok"]);
    }

    #[test]
    fn truncate_counts_columns() {
        assert_eq!(truncate("世界abc", 3), "世");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abc", 0), "");
    }
}
