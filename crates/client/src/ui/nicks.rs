//! Names in a column too narrow for them: every name of a set gets a label that fits, and two
//! different names never get the same label, so nobody can pass for someone else by a name
//! that only differs where it is cut (`administrator` and `administratoR2`).
//!
//! A name that fits is drawn whole. A longer one keeps its start and its end around a `+`
//! (`admini+rator`, `admini+atoR2`): names tend to differ at their ends, and a `+` cannot be
//! in a nickname, so a cut label never equals a whole name. Names whose cut labels would still
//! be equal are numbered instead (`admini~1`, `admini~2`; `~` cannot be in a nickname either),
//! numbered across the whole set, so those labels differ from each other and from all others.
//!
//! [`column`] chooses how wide such a column must be: widened from a preferred width until the
//! cut labels differ, up to a cap. Names are ASCII (nicknames and the client's own markers).

use std::collections::{BTreeSet, HashMap};

use super::text::{truncate, width};

/// Narrowest column in which labels can always be told apart: a letter, `~` and a number.
pub const MIN_DISTINCT: usize = 3;

/// `name` cut to `col` columns, keeping its start and end around a `+`.
fn cut(name: &str, col: usize) -> String {
    if width(name) <= col {
        return name.to_owned();
    }
    if col == 0 {
        return String::new();
    }
    // Names are ASCII: characters, bytes and columns are the same.
    let tail = (col - 1) / 2;
    let head = col - 1 - tail;
    let end = name.len().saturating_sub(tail);
    format!("{}+{}", truncate(name, head), name.get(end..).unwrap_or(""))
}

/// Whether two different names of `names` have the same cut at `col`.
fn collide<'a>(names: impl IntoIterator<Item = &'a str>, col: usize) -> bool {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().any(|n| !seen.insert(cut(n, col)))
}

/// The width for a column of `names`: the widest name if it is at most `preferred`, else
/// `preferred` widened until no two cut names are equal, up to `cap` (the widest name, at
/// most). At least 1.
pub fn column<'a>(
    names: impl IntoIterator<Item = &'a str> + Clone,
    preferred: usize,
    cap: usize,
) -> usize {
    let widest = names.clone().into_iter().map(width).max().unwrap_or(0);
    let cap = cap.min(widest);
    let mut col = widest.min(preferred).min(cap);
    while col < cap && collide(names.clone(), col) {
        col += 1;
    }
    col.max(1)
}

/// The labels of a set of names in a column of a given width.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    col: usize,
    /// Only the names that do not fit; the others are drawn whole.
    cut: HashMap<String, String>,
}

impl Labels {
    /// Labels for `names` (duplicates are fine) in a column `col` wide. Different names get
    /// different labels whenever `col >= MIN_DISTINCT` and there are fewer than 10^(col-2)
    /// numbered ones.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, col: usize) -> Labels {
        let long: BTreeSet<&str> = names.into_iter().filter(|n| width(n) > col).collect();
        let mut by_cut: HashMap<String, Vec<&str>> = HashMap::new();
        for n in &long {
            by_cut.entry(cut(n, col)).or_default().push(n);
        }
        let mut labels = Labels { col, cut: HashMap::new() };
        let mut number = 0;
        // In name order, so that numbers do not depend on the hash map's order.
        for n in &long {
            let c = cut(n, col);
            let label = if by_cut[&c].len() == 1 {
                c
            } else {
                number += 1;
                let tag = format!("~{number}");
                let keep = col.saturating_sub(tag.len()).max(1);
                format!("{}{tag}", truncate(n, keep))
            };
            labels.cut.insert((*n).to_owned(), label);
        }
        labels
    }

    /// The label of `name`: the name itself if it fits, else its cut (computed on the spot for
    /// a name that was not in the set).
    pub fn get(&self, name: &str) -> String {
        match self.cut.get(name) {
            Some(label) => label.clone(),
            None => cut(name, self.col),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_start_and_end() {
        assert_eq!(cut("bob", 5), "bob");
        assert_eq!(cut("bartholomew", 5), "ba+ew");
        assert_eq!(cut("administrator", 12), "admini+rator");
        assert_eq!(cut("administratoR2", 12), "admini+atoR2");
        assert_eq!(cut("bob", 2), "b+");
        assert_eq!(cut("bob", 1), "+");
        assert_eq!(cut("bob", 0), "");
    }

    #[test]
    fn administrator_and_administrator2_get_different_labels() {
        let names = ["administrator", "administratoR2", "bob"];
        for col in 3..=14 {
            let labels = Labels::new(names, col);
            let shown: BTreeSet<String> = names.iter().map(|n| labels.get(n)).collect();
            assert_eq!(shown.len(), 3, "at {col}: {shown:?}");
            assert!(shown.iter().all(|l| width(l) <= col), "at {col}: {shown:?}");
        }
    }

    #[test]
    fn names_equal_at_both_ends_are_numbered() {
        let a = "abcdefXXXXXXXXghijkl";
        let b = "abcdefYYYYYYYYghijkl";
        let labels = Labels::new([a, b, "zed"], 12);
        assert_eq!(labels.get(a), "abcdefXXXX~1");
        assert_eq!(labels.get(b), "abcdefYYYY~2");
        assert_eq!(labels.get("zed"), "zed");
        // A cut name can never read as a whole one: nicknames have no `+` or `~`.
        assert!(chatao_proto::Nick::parse("admini+rator").is_err());
        assert!(chatao_proto::Nick::parse("abc~1").is_err());
    }

    #[test]
    fn the_column_widens_until_cut_names_differ() {
        let a = "abcdefXXXXXXXXghijkl";
        let b = "abcdefYYYYYYYYghijkl";
        // Cut at 12 or 13 they are equal; at 14 the start shows where they differ.
        assert_eq!(cut(a, 13), cut(b, 13));
        assert_eq!(column([a, b], 12, 30), 14);
        assert_eq!(cut(a, 14), "abcdefX+ghijkl");
        assert_eq!(column([a, b], 12, 13), 13, "the cap holds");
        assert_eq!(column(["al", "bob"], 12, 30), 3, "no wider than the widest");
        assert_eq!(column(["administrator", "administratoR2"], 12, 30), 12);
        assert_eq!(column([], 12, 30), 1);
    }
}
