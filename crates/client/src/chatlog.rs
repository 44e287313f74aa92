//! Chat logs: one plain-text file per buffer and day, `LOGS/SERVER/BUFFER.YYYY-MM-DD.log`
//! (`LOGS` is `[logs] dir`, default `$XDG_STATE_HOME/chatao/logs`; SERVER is `host_port`; a
//! room's BUFFER is its name, `#lobby`; a private conversation's is the other person's
//! nickname). A new day starts a new file (the date is in the name: nothing is renamed).
//!
//! One line per event, `YYYY-MM-DD HH:MM:SS TEXT` in local time, passed through
//! [`chatao_proto::sanitize_line`]: no control character or escape sequence from a nickname or
//! a text reaches the file. Files are created 0600, directories 0700. End-to-end encrypted
//! rooms are logged only with `[logs] e2e = true` (the caller says which rooms are).
//!
//! A write that fails is reported once (the first [`ChatLog::write`] error is returned, later
//! ones only traced), and never stops the chat; each later event tries again.

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chatao_proto::{MessageKind, ServerMsg};
use chrono::{DateTime, Local, NaiveDate, TimeZone};

/// Most files kept open at once; past it all are closed (they are opened again on the next
/// write: appending, nothing is lost).
const MAX_OPEN: usize = 64;

/// Creates `dir` and its missing parents, 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// `name` as one safe path component: ASCII letters, digits, `#`, `_`, `-` and `.` kept,
/// anything else `_`, no leading `.`, at most 100 bytes.
pub fn safe_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "#_-.".contains(c) { c } else { '_' })
        .take(100)
        .collect();
    while out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() { "_".to_owned() } else { out }
}

/// A log failure, said once.
#[derive(Debug, thiserror::Error)]
#[error("chat log {}: {cause} (chat logs stop being reported; the chat goes on)", .path.display())]
pub struct ChatLogError {
    pub path: PathBuf,
    pub cause: io::Error,
}

/// The chat logs of one server.
#[derive(Debug)]
pub struct ChatLog {
    dir: PathBuf,
    e2e: bool,
    open: HashMap<PathBuf, File>,
    reported: bool,
}

impl ChatLog {
    /// Logs under `logs_dir/SERVER` for `server` (`host:port`); `e2e`: E2E rooms too.
    pub fn new(logs_dir: &Path, server: &str, e2e: bool) -> ChatLog {
        let server = safe_name(&server.replace(':', "_"));
        ChatLog { dir: logs_dir.join(server), e2e, open: HashMap::new(), reported: false }
    }

    /// The file for `buffer` on `day`.
    pub fn path(&self, buffer: &str, day: NaiveDate) -> PathBuf {
        self.dir.join(format!("{}.{}.log", safe_name(buffer), day.format("%Y-%m-%d")))
    }

    /// Appends `text` to `buffer`'s log at `when`, unless `buffer` is an E2E room
    /// (`in_e2e`) and E2E logging is off. `Err` only for the first failure.
    pub fn write<Tz: TimeZone>(
        &mut self,
        buffer: &str,
        in_e2e: bool,
        when: DateTime<Tz>,
        text: &str,
    ) -> Result<(), ChatLogError>
    where
        Tz::Offset: std::fmt::Display,
    {
        if in_e2e && !self.e2e {
            return Ok(());
        }
        let path = self.path(buffer, when.date_naive());
        let line = format!(
            "{} {}\n",
            when.format("%Y-%m-%d %H:%M:%S"),
            chatao_proto::sanitize_line(&text.replace(['\n', '\r'], " "))
        );
        match self.append(&path, &line) {
            Ok(()) => Ok(()),
            Err(cause) => {
                self.open.remove(&path);
                tracing::warn!(path = %path.display(), %cause, "chat log write failed");
                if self.reported {
                    Ok(())
                } else {
                    self.reported = true;
                    Err(ChatLogError { path, cause })
                }
            }
        }
    }

    fn append(&mut self, path: &Path, line: &str) -> io::Result<()> {
        if !self.open.contains_key(path) {
            private_dir(&self.dir)?;
            if self.open.len() >= MAX_OPEN {
                self.open.clear();
            }
            let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
            self.open.insert(path.to_owned(), file);
        }
        match self.open.get_mut(path) {
            Some(f) => f.write_all(line.as_bytes()),
            None => Ok(()),
        }
    }

    /// Logs `msg` (a server event, as line mode and the TUI receive it) for the user `me`:
    /// messages, actions, private messages, joins, parts, topics. `in_e2e(room)` says whether
    /// a room is end-to-end encrypted.
    pub fn event(
        &mut self,
        me: &str,
        msg: &ServerMsg,
        in_e2e: impl Fn(&str) -> bool,
    ) -> Result<(), ChatLogError> {
        let Some((buffer, time, text)) = describe(me, msg) else { return Ok(()) };
        let e2e = buffer.starts_with('#') && in_e2e(&buffer);
        let when = match time {
            Some(ms) => Local.timestamp_millis_opt(ms as i64).single().unwrap_or_else(Local::now),
            None => Local::now(),
        };
        self.write(&buffer, e2e, when, &text)
    }
}

/// The buffer, the time (ms) and the text of a log line for `msg`, if it is logged.
fn describe(me: &str, msg: &ServerMsg) -> Option<(String, Option<u64>, String)> {
    let said = |from: &str, kind: &MessageKind, text: &str| match kind {
        MessageKind::Action => format!("* {from} {text}"),
        _ => format!("<{from}> {text}"),
    };
    Some(match msg {
        ServerMsg::Message { room, time, from, kind, text, .. } => {
            (room.to_string(), Some(*time), said(from.as_str(), kind, text))
        }
        ServerMsg::Private { time, from, to, kind, text, .. } => {
            let other = if from.as_str().eq_ignore_ascii_case(me) { to } else { from };
            (other.to_string(), Some(*time), said(from.as_str(), kind, text))
        }
        ServerMsg::Join { room, nick, .. } => {
            (room.to_string(), None, format!("--> {nick} joined"))
        }
        ServerMsg::Leave { room, nick, message, .. } => {
            let why = message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
            (room.to_string(), None, format!("<-- {nick} left{why}"))
        }
        ServerMsg::Topic { room, text, by: Some(by) } => {
            let t = text.as_deref().unwrap_or("");
            (room.to_string(), None, format!("-- {by} set the topic: {t}"))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use chrono::{FixedOffset, TimeZone};

    use super::*;

    fn at(day: u32, h: u32) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(0).unwrap().with_ymd_and_hms(2026, 12, day, h, 0, 0).unwrap()
    }

    #[test]
    fn hostile_text_leaves_no_escape_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ChatLog::new(dir.path(), "host:7000", false);
        log.write("#lobby", false, at(1, 10), "<ev\u{1b}[31mil> hi\u{7}\u{9b}2J\u{202e}x\nfake")
            .unwrap();
        let text = std::fs::read_to_string(log.path("#lobby", at(1, 10).date_naive())).unwrap();
        assert!(text.starts_with("2026-12-01 10:00:00 "), "{text}");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(
            !text
                .trim_end()
                .chars()
                .any(|c| c.is_control() || chatao_proto::text::is_display_hazard(c)),
            "{text:?}"
        );
    }

    #[test]
    fn a_new_day_is_a_new_file_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ChatLog::new(dir.path(), "[::1]:7000", false);
        log.write("#a", false, at(1, 23), "one").unwrap();
        log.write("#a", false, at(2, 0), "two").unwrap();
        log.write("#a", false, at(2, 1), "three").unwrap();
        let server = dir.path().join("___1__7000");
        let d1 = std::fs::read_to_string(server.join("#a.2026-12-01.log")).unwrap();
        let d2 = std::fs::read_to_string(server.join("#a.2026-12-02.log")).unwrap();
        assert_eq!(d1.lines().count(), 1);
        assert_eq!(d2.lines().count(), 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&server), 0o700);
        assert_eq!(mode(&server.join("#a.2026-12-02.log")), 0o600);
    }

    #[test]
    fn e2e_rooms_are_logged_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut off = ChatLog::new(dir.path(), "h:1", false);
        off.write("#secret", true, at(1, 1), "x").unwrap();
        assert!(!off.path("#secret", at(1, 1).date_naive()).exists());
        let mut on = ChatLog::new(dir.path(), "h:1", true);
        on.write("#secret", true, at(1, 1), "x").unwrap();
        assert!(on.path("#secret", at(1, 1).date_naive()).exists());
    }

    #[test]
    fn a_failure_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        // The server's directory is a file: every write fails.
        std::fs::write(dir.path().join("h_1"), b"").unwrap();
        let mut log = ChatLog::new(dir.path(), "h:1", false);
        assert!(log.write("#a", false, at(1, 1), "x").is_err());
        assert!(log.write("#a", false, at(1, 1), "y").is_ok());
    }

    #[test]
    fn names_are_safe() {
        assert_eq!(safe_name("../etc"), "_._etc");
        assert_eq!(safe_name("#lobby"), "#lobby");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("a/b"), "a_b");
    }
}

/// The full-screen UI's chat logs: `App` hands out [`crate::app::Effect::Log`], `tui.rs` writes
/// it as here.
#[cfg(test)]
mod app_tests {
    use chatao_proto::ServerMsg;

    use crate::app::Effect;
    use crate::app::testing::{app, members, net, say};

    use super::*;

    #[test]
    fn tui_logs_a_shown_message_and_no_e2e_room_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ChatLog::new(dir.path(), "127.0.0.1:7000", false);
        let mut a = app(80, 24);
        a.config.chat_log = true;
        a.config.filters.ignores = crate::filter::Ignores::new(["eve"]);
        let mut e2e_members = members("#sec", &["alice", "bob"]);
        if let ServerMsg::Members { e2e, .. } = &mut e2e_members {
            *e2e = true;
        }
        let mut effects = net(&mut a, e2e_members);
        effects.extend(net(&mut a, say("#lobby", 1, "bob", "hello log")));
        effects.extend(net(&mut a, say("#lobby", 1, "bob", "hello log")));
        effects.extend(net(&mut a, say("#lobby", 2, "eve", "ignored")));
        effects.extend(net(&mut a, say("#sec", 1, "bob", "secret")));
        let logged: Vec<(ServerMsg, bool)> = effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Log { msg, e2e } => Some((msg, e2e)),
                _ => None,
            })
            .collect();
        let texts: Vec<bool> = logged.iter().map(|(_, e2e)| *e2e).collect();
        for (msg, e2e) in &logged {
            log.event("alice", msg, |_| *e2e).unwrap();
        }
        let day = Local.timestamp_millis_opt(crate::app::testing::T0 as i64 + 60_000).unwrap();
        let lobby = std::fs::read_to_string(log.path("#lobby", day.date_naive())).unwrap();
        assert_eq!(lobby.lines().count(), 1, "the duplicate and eve's are not logged: {lobby}");
        assert!(lobby.trim_end().ends_with("<bob> hello log"), "{lobby}");
        assert!(texts.contains(&true), "the E2E room's message is handed out as E2E: {texts:?}");
        let files: Vec<_> = std::fs::read_dir(dir.path().join("127.0.0.1_7000"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!files.iter().any(|f| f.starts_with("#sec")), "{files:?}");
        // Logs off (the default): nothing is handed out.
        a.config.chat_log = false;
        let effects = net(&mut a, say("#lobby", 3, "bob", "unlogged"));
        assert!(!effects.iter().any(|e| matches!(e, Effect::Log { .. })), "{effects:?}");
    }
}
