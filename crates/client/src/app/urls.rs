//! `/url`: the last links of the buffer shown, newest first and numbered (`/url N` shows
//! link N whole, for copying). Links are found in the sanitized text of the buffer's
//! messages ([`crate::ui::links::find`]); nothing is opened.

use super::App;
use super::buffer::Kind;

/// Links `/url` lists.
pub const URLS_LISTED: usize = 10;

impl App {
    /// The buffer's links (in messages and server notices such as topics), newest first, each
    /// once.
    pub fn urls(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for e in self.current_buffer().entries.iter().rev() {
            // The client's own lines (this list among them) are not links of the buffer.
            if matches!(e.kind, Kind::Marker | Kind::Info) {
                continue;
            }
            let mut found: Vec<String> =
                crate::ui::links::find(&e.text).into_iter().map(|r| e.text[r].to_owned()).collect();
            found.reverse();
            for url in found {
                if !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        out
    }

    /// `/url` (`None`: the list) or `/url N`.
    pub(super) fn list_urls(&mut self, n: Option<usize>) {
        let urls = self.urls();
        match n {
            None if urls.is_empty() => self.info("no links in this buffer"),
            None => {
                let shown = urls.len().min(URLS_LISTED);
                self.info(&format!("last {shown} of {} links (newest first):", urls.len()));
                for (i, url) in urls.iter().take(URLS_LISTED).enumerate() {
                    self.info(&format!("{:>2}: {url}", i + 1));
                }
            }
            Some(n) => match n.checked_sub(1).and_then(|i| urls.get(i)) {
                Some(url) => {
                    let url = url.clone();
                    self.info(&url);
                }
                None => self.error(&format!("no link {n}: /url lists {} links", urls.len())),
            },
        }
    }
}
