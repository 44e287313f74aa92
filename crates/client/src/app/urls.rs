//! `/url`: the last links of the buffer shown, newest first and numbered; `/url N` shows link
//! N whole (for copying) and, when the config file sets `url_command`, has it opened
//! ([`Effect::OpenUrl`]: the shell runs the program, this module does no I/O). Links are found
//! in the sanitized text of the buffer's messages ([`crate::ui::links::find`]).
//!
//! Only a link's checked target is ever handed out ([`openable`]): the one an OSC 8 hyperlink
//! would get ([`crate::ui::links::target`]: printable ASCII, at most
//! [`crate::ui::links::MAX_URL`] bytes, `www.` given `https://`), and only `http://` or
//! `https://`, so the program gets a URL and never an option. Another link is shown and
//! said not to be opened.

use super::buffer::Kind;
use super::{App, Effect};

/// Links `/url` lists.
pub const URLS_LISTED: usize = 10;

/// The target `/url N` may have opened for the link `url` as shown, or `None`:
/// [`crate::ui::links::target`]'s checked form, when it is `http://` or `https://`.
pub fn openable(url: &str) -> Option<String> {
    let target = crate::ui::links::target(url)?;
    let (scheme, _) = target.split_once("://")?;
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    web.then_some(target)
}

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

    /// `/url` (`None`: the list) or `/url N`: [`Effect::OpenUrl`] for link N when
    /// `url_command` is set and the link is [`openable`].
    pub(super) fn list_urls(&mut self, n: Option<usize>) -> Vec<Effect> {
        let urls = self.urls();
        let Some(n) = n else {
            if urls.is_empty() {
                self.info("no links in this buffer");
                return vec![];
            }
            let shown = urls.len().min(URLS_LISTED);
            self.info(&format!("last {shown} of {} links (newest first):", urls.len()));
            for (i, url) in urls.iter().take(URLS_LISTED).enumerate() {
                self.info(&format!("{:>2}: {url}", i + 1));
            }
            return vec![];
        };
        let Some(url) = n.checked_sub(1).and_then(|i| urls.get(i)).cloned() else {
            self.error(&format!("no link {n}: /url lists {} links", urls.len()));
            return vec![];
        };
        self.info(&url);
        let Some(target) = openable(&url) else {
            self.error(
                "this link is not opened: it holds characters other than printable ASCII, \
                 or is too long",
            );
            return vec![];
        };
        if !self.config.url_command.is_empty() {
            return vec![Effect::OpenUrl(target)];
        }
        if !self.url_hint_given {
            self.url_hint_given = true;
            self.info("to open links with /url N, set url_command = \"xdg-open\" in config.toml");
        }
        vec![]
    }
}
