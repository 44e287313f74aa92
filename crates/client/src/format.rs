//! Events as lines of text, for line mode: readable plain text, or one JSON object per line.
//!
//! Plain lines pass every string from the network through [`chatao_proto::sanitize_line`], so
//! no control character, escape sequence or bidirectional control reaches the terminal, and no
//! padding can wrap a text onto a row of its own that passes for a line of ours. JSON lines are
//! written by [`json`], which `\u`-escapes C1 controls, bidirectional controls and the line
//! separators as well as what JSON itself escapes (C0), so that they are inert even when a person
//! reads them in a terminal.

use chatao_proto::{LeaveReason, MessageKind, ServerMsg, sanitize_line as sanitize};
use chrono::TimeZone;
use serde::Serialize;
use serde_json::json;

use crate::net::{Closed, Welcome};

/// Output style for line mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

/// `value` as one line of JSON, with every display hazard ([`chatao_proto::text::is_display_hazard`]:
/// C0 and C1 controls, bidirectional controls, U+2028/U+2029) `\u`-escaped. serde_json alone
/// escapes only C0, so a C1 CSI (U+009B) or a right-to-left override would otherwise reach a
/// terminal that shows the output. Empty if `value` cannot be serialized (never for our types).
pub fn json(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, InertFormatter);
    match value.serialize(&mut ser) {
        // The formatter writes whole characters only: the bytes are UTF-8.
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// serde_json's compact formatter, escaping display hazards in strings as well.
struct InertFormatter;

impl serde_json::ser::Formatter for InertFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if !chatao_proto::text::is_display_hazard(c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `text` of several lines (an error with its causes, written for stderr) made safe for a
/// terminal line by line: each keeps its layout, and loses its display hazards
/// ([`chatao_proto::sanitize`]). Network strings inside were already made single-line where
/// they were put into the text (see [`crate::net::ConnectError`]); this is the last guard.
pub fn inert_lines(text: &str) -> String {
    text.split('\n').map(chatao_proto::sanitize).collect::<Vec<_>>().join("\n")
}

/// The config file's `timestamp`, set once at start (`HH:MM:SS` until then).
static TIME_FORMAT: std::sync::OnceLock<crate::config::TimeFormat> = std::sync::OnceLock::new();

/// Sets how [`clock`] writes times (the config's `timestamp`); the first call wins.
pub fn set_time_format(format: crate::config::TimeFormat) {
    let _ = TIME_FORMAT.set(format);
}

/// `HH:MM:SS` (or `HH:MM`, per the config's `timestamp`) in local time for a server timestamp
/// (milliseconds since the epoch).
/// One key of a `devices` list as shown: its fingerprint, its name, whether it is online (or
/// when it was last seen, written by `when`) and whether it is the person's first key.
pub fn device(d: &chatao_proto::DeviceInfo, when: impl Fn(u64) -> String) -> String {
    let name = d.name.as_deref().map(|n| format!(" \"{}\"", sanitize(n))).unwrap_or_default();
    let first = if d.owner { ", first key" } else { "" };
    let state = match (d.online, d.last_seen) {
        (0, Some(t)) => format!("last seen {}", when(t)),
        (0, None) => "not seen since added".to_owned(),
        (1, _) => "online".to_owned(),
        (n, _) => format!("online on {n} sessions"),
    };
    format!("{}{name} ({state}{first})", sanitize(d.fingerprint.as_str()))
}

pub fn clock(millis: u64) -> String {
    let format = TIME_FORMAT.get().copied().unwrap_or_default();
    match chrono::Local.timestamp_millis_opt(millis as i64) {
        chrono::LocalResult::Single(t) => t.format(format.as_str()).to_string(),
        _ => "--:--:--".to_owned(),
    }
}

/// [`event`], with `"mention": true` added to a JSON message or private message that mentions
/// the user (their nickname or a `highlight` word); plain lines are unchanged.
pub fn event_marked(fmt: Format, msg: &ServerMsg, mention: bool) -> Option<String> {
    match (fmt, mention) {
        (Format::Json, true) => {
            let mut value = serde_json::to_value(msg).ok()?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("mention".to_owned(), serde_json::Value::Bool(true));
            }
            Some(json(&value))
        }
        _ => event(fmt, msg),
    }
}

/// The first line: who we are, where, and the server's key.
pub fn welcome(fmt: Format, w: &Welcome, addr: &str) -> String {
    match fmt {
        Format::Plain => format!(
            "* connected to {addr} as {} ({}, server key {})",
            w.nick,
            sanitize(&w.server),
            w.server_fingerprint
        ),
        Format::Json => json(&json!({
            "type": "welcome",
            "session": w.session,
            "nick": w.nick,
            "fingerprint": w.fingerprint,
            "server": w.server,
            "server_fingerprint": w.server_fingerprint,
            "limits": w.limits,
            "address": addr,
        })),
    }
}

/// The connection to `server` was lost (or the server is shutting down); reconnection starts.
pub fn disconnected(fmt: Format, server: &str, reason: &str) -> String {
    match fmt {
        Format::Plain => {
            format!("* connection to {server} lost: {}; reconnecting", sanitize(reason))
        }
        Format::Json => {
            json(&json!({ "type": "disconnected", "address": server, "reason": reason }))
        }
    }
}

/// Back online, on `server`; the catch-up follows.
pub fn reconnected(fmt: Format, w: &Welcome, server: &str) -> String {
    match fmt {
        Format::Plain => format!(
            "* reconnected to {server} as {} ({}, server key {})",
            w.nick,
            sanitize(&w.server),
            w.server_fingerprint
        ),
        Format::Json => json(&json!({
            "type": "reconnected",
            "address": server,
            "session": w.session,
            "nick": w.nick,
            "server": w.server,
            "server_fingerprint": w.server_fingerprint,
        })),
    }
}

/// A line that was not delivered, for the final report: its message and, when the server
/// refused it for good, why (`text (code)`); `None`: never acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Undelivered {
    pub msg: chatao_proto::ClientMsg,
    pub why: Option<String>,
}

/// The last line when line mode ends without every line delivered (reconnection given up, a
/// `bye` that ends the session, a line refused for good): why and, in JSON, each line not
/// delivered (its record, with `why` for those refused).
pub fn lost(fmt: Format, reason: &str, lost: &[Undelivered]) -> String {
    match fmt {
        Format::Plain => format!("* {}", sanitize(reason)),
        Format::Json => {
            let unsent: Vec<serde_json::Value> = lost
                .iter()
                .map(|u| {
                    let mut v = serde_json::to_value(&u.msg).unwrap_or_default();
                    if let (Some(why), Some(o)) = (&u.why, v.as_object_mut()) {
                        o.insert("why".into(), why.clone().into());
                    }
                    v
                })
                .collect();
            json(&json!({ "type": "lost", "reason": reason, "unsent": unsent }))
        }
    }
}

/// A message that was not sent, for the user: its room and text, or its JSON record.
pub fn unsent(msg: &chatao_proto::ClientMsg) -> String {
    use chatao_proto::ClientMsg;
    match msg {
        ClientMsg::Sealed { room, .. } => {
            format!("{}: (an end-to-end encrypted message)", sanitize(room))
        }
        ClientMsg::Say { cid: _, room, text } => format!("{room}: {}", sanitize(text)),
        ClientMsg::Me { cid: _, room, text } => format!("{room}: /me {}", sanitize(text)),
        ClientMsg::Msg { cid: _, to, text } => format!("to {}: {}", sanitize(to), sanitize(text)),
        other => json(other),
    }
}

/// True for what a person said (as opposed to the client's own bookkeeping, such as key
/// package uploads or catch-up requests): what a report of unsent messages lists.
pub fn is_said(msg: &chatao_proto::ClientMsg) -> bool {
    use chatao_proto::ClientMsg;
    matches!(
        msg,
        ClientMsg::Say { .. }
            | ClientMsg::Me { .. }
            | ClientMsg::Msg { .. }
            | ClientMsg::Sealed { .. }
    )
}

/// One server message as one line; `None` for messages that are not shown.
pub fn event(fmt: Format, msg: &ServerMsg) -> Option<String> {
    match fmt {
        Format::Json => match msg {
            ServerMsg::Ping { .. } | ServerMsg::Pong { .. } => None,
            m => Some(json(m)),
        },
        Format::Plain => plain(msg),
    }
}

fn plain(msg: &ServerMsg) -> Option<String> {
    Some(match msg {
        ServerMsg::Message { room, time, from, kind, text, history, .. } => {
            let mark = if *history { " (history)" } else { "" };
            match kind {
                MessageKind::Normal => {
                    format!("[{}]{mark} {room} <{from}> {}", clock(*time), sanitize(text))
                }
                MessageKind::Action => {
                    format!("[{}]{mark} {room} * {from} {}", clock(*time), sanitize(text))
                }
            }
        }
        ServerMsg::Private { time, from, to, kind, text, .. } => match kind {
            MessageKind::Normal => {
                format!("[{}] *{from} -> {to}* {}", clock(*time), sanitize(text))
            }
            MessageKind::Action => {
                format!("[{}] *{from} -> {to}* * {from} {}", clock(*time), sanitize(text))
            }
        },
        ServerMsg::Topic { room, text: Some(t), by: Some(by) } => {
            format!("* {by} set the topic of {room}: {}", sanitize(t))
        }
        ServerMsg::Topic { room, text: Some(t), by: None } => {
            format!("* topic of {room}: {}", sanitize(t))
        }
        ServerMsg::Topic { room, text: None, .. } => format!("* {room} has no topic"),
        ServerMsg::RoomList { rooms, next } => {
            let list: Vec<String> = rooms
                .iter()
                .map(|r| {
                    let mark = if r.e2e { " [E2E]" } else { "" };
                    match &r.topic {
                        Some(t) => format!("{}{mark} ({}): {}", r.room, r.members, sanitize(t)),
                        None => format!("{}{mark} ({})", r.room, r.members),
                    }
                })
                .collect();
            match next {
                Some(next) => format!("* rooms: {}; more: /list {next}", list.join("; ")),
                None => format!("* rooms: {}", list.join("; ")),
            }
        }
        ServerMsg::NickChange { old, new } => format!("* {old} is now known as {new}"),
        ServerMsg::Away { nick, reason: Some(r) } => format!("* {nick} is away: {}", sanitize(r)),
        ServerMsg::Away { nick, reason: None } => format!("* {nick} is back"),
        ServerMsg::Whois { nick, fingerprint, rooms, away, since, sessions } => {
            let rooms: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
            let away =
                away.as_deref().map(|a| format!(", away: {}", sanitize(a))).unwrap_or_default();
            let on = if *sessions > 1 { format!(" on {sessions} sessions") } else { String::new() };
            format!(
                "* {nick}: key {}, in {}, online{on} since {}{away}",
                sanitize(fingerprint),
                rooms.join(" "),
                clock(*since)
            )
        }
        ServerMsg::Devices { nick, devices } => {
            let keys: Vec<String> = devices.iter().map(|d| device(d, clock)).collect();
            format!("* {nick}'s keys: {}", keys.join(", "))
        }
        ServerMsg::Moderation { action, target, by, reason, until } => {
            let verb = action.past_tense();
            let until = until.map(|t| format!(" until {}", clock(t))).unwrap_or_default();
            let reason =
                reason.as_deref().map(|r| format!(": {}", sanitize(r))).unwrap_or_default();
            format!("* {by} {verb} {}{until}{reason}", sanitize(target))
        }
        ServerMsg::RoomModeration { room, action, target, by, reason, until } => {
            let target = target.as_deref().map(sanitize);
            let until = until.map(|t| format!(" until {}", clock(t))).unwrap_or_default();
            let reason =
                reason.as_deref().map(|r| format!(": {}", sanitize(r))).unwrap_or_default();
            format!("* {}{until}{reason}", action.describe(room, target.as_deref(), by))
        }
        ServerMsg::Notice { text } => format!("* {}", sanitize(text)),
        // The E2E layer (`crate::e2e`) consumes these and emits what they mean.
        ServerMsg::Unknown
        | ServerMsg::Sealed { .. }
        | ServerMsg::Invited { .. }
        | ServerMsg::JoinRequest { .. }
        | ServerMsg::KeyPackage { .. } => return None,
        ServerMsg::HistoryEnd { room, count, .. } => {
            let s = if *count == 1 { "" } else { "s" };
            format!("* {room}: end of history ({count} message{s})")
        }
        ServerMsg::Join { room, nick, fingerprint } => {
            format!("* {nick} joined {room} ({})", sanitize(fingerprint))
        }
        ServerMsg::Leave { room, nick, reason, message } => {
            let why = match reason {
                LeaveReason::Quit => "quit",
                LeaveReason::Part => "left the room",
                LeaveReason::Lost => "connection lost",
                LeaveReason::Dropped => "disconnected by the server",
                LeaveReason::Kicked => "kicked",
                LeaveReason::Other => "left",
            };
            match message {
                Some(m) => format!("* {nick} left {room} ({why}: {})", sanitize(m)),
                None => format!("* {nick} left {room} ({why})"),
            }
        }
        ServerMsg::Members { room, members, e2e, total, next, .. } => {
            // A quiet session (a bot) is marked, as the server marks it; a room operator is
            // @nick (issue 19).
            let nicks: Vec<String> = members
                .iter()
                .map(|m| {
                    let at = if m.op { "@" } else { "" };
                    match m.bot {
                        true => format!("{at}{} [bot]", m.nick),
                        false => format!("{at}{}", m.nick),
                    }
                })
                .collect();
            let mark = if *e2e { " [E2E]" } else { "" };
            match (nicks.is_empty(), *e2e) {
                // The server answers an unknown room like an empty one; a plain room lasts only
                // while someone is in it, so an empty list means there is no such room (the
                // TUI's wording, app/incoming.rs).
                (true, false) => format!("* no such room {room}: nobody is in it"),
                (true, true) => {
                    format!("* {room}{mark}: nobody is online in this end-to-end encrypted room")
                }
                _ => {
                    let count = match total {
                        Some(total) => format!("{} of {total} listed", nicks.len()),
                        None => format!("{} online", nicks.len()),
                    };
                    let more = next.as_ref().map(|n| format!("; more: /who {room} {n}"));
                    format!(
                        "* {room}{mark}: {} ({count}){}",
                        nicks.join(", "),
                        more.unwrap_or_default()
                    )
                }
            }
        }
        ServerMsg::Error { code, message, .. } => format!("! {code}: {}", sanitize(message)),
        ServerMsg::Welcome { .. } => return None,
        ServerMsg::Bye { code, reason } => match code {
            Some(code) => format!("* disconnected by the server: {} ({code})", sanitize(reason)),
            None => format!("* {}", sanitize(reason)),
        },
        ServerMsg::Ping { .. } | ServerMsg::Pong { .. } => return None,
    })
}

/// The last line, when the connection ends.
pub fn closed(fmt: Format, c: &Closed) -> String {
    match (fmt, c) {
        (Format::Json, Closed::Bye { code, reason }) => {
            json(&ServerMsg::Bye { code: *code, reason: reason.clone() })
        }
        (Format::Json, Closed::Lost(reason)) => json(&json!({ "type": "lost", "reason": reason })),
        (Format::Plain, Closed::Bye { code, reason }) => {
            plain(&ServerMsg::Bye { code: *code, reason: reason.clone() }).unwrap_or_default()
        }
        (Format::Plain, Closed::Lost(reason)) => format!("* {}", sanitize(reason)),
    }
}

/// What this client's E2E layer says ([`crate::net::NetEvent::E2e`]), in the chosen format:
/// in line mode `[e2e] ` (or `[e2e] WARNING: `) where server notices start with `* `, in JSON
/// an event of type `e2e`, which no server message has.
pub fn e2e(fmt: Format, text: &str, warning: bool) -> String {
    match fmt {
        Format::Plain if warning => format!("[e2e] WARNING: {}", sanitize(text)),
        Format::Plain => format!("[e2e] {}", sanitize(text)),
        Format::Json => json(&json!({ "type": "e2e", "warning": warning, "text": text })),
    }
}

/// The catch-up after a (re)connection is over: every message printed from here on is live
/// (or the answer to a later `/join`).
pub fn ready(fmt: Format) -> String {
    match fmt {
        Format::Plain => "* ready: caught up, live from here".to_owned(),
        Format::Json => json(&json!({ "type": "ready" })),
    }
}

/// A local notice (help text, the current room) in the chosen format.
pub fn notice(fmt: Format, text: &str) -> String {
    match fmt {
        Format::Plain => format!("* {}", sanitize(text)),
        Format::Json => json(&json!({ "type": "notice", "text": text })),
    }
}

/// The `code` of an `error` event that the client itself reports, not the server.
pub const CLIENT_ERROR: &str = "client";

/// A local error (a command that could not be parsed, input that could not be read): a line
/// starting `! ` like the server's errors, or a JSON `error` whose `code` is [`CLIENT_ERROR`],
/// so that a program sees every refusal under one type.
pub fn error(fmt: Format, text: &str) -> String {
    match fmt {
        Format::Plain => format!("! {}", sanitize(text)),
        Format::Json => json(&json!({ "type": "error", "code": CLIENT_ERROR, "message": text })),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chatao_proto::{Nick, RoomName};

    #[test]
    fn plain_lines_never_carry_escape_sequences() {
        let msg = ServerMsg::Message {
            cid: None,
            room: RoomName::lobby(),
            id: 1,
            time: 0,
            from: Nick::parse("eve").unwrap(),
            kind: MessageKind::Normal,
            text: "\u{1b}[2J\u{1b}]0;title\u{7}\u{202e}x\nsecond".into(),
            history: false,
        };
        let line = event(Format::Plain, &msg).unwrap();
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.ends_with("<eve> ␛[2J␛]0;title␇\u{FFFD}x␊second"), "{line}");
        let json = event(Format::Json, &msg).unwrap();
        assert!(!json.chars().any(|c| c.is_control()), "{json:?}");
        assert!(json.contains(r#""type":"message""#) && json.contains(r#""id":1"#));
    }

    /// serde_json escapes C0 only; `json` escapes C1 controls, bidirectional controls and the
    /// line separators too, and the line still decodes to the very same text.
    #[test]
    fn json_lines_escape_c1_and_bidi_controls_and_decode_to_the_same_text() {
        let text = "a\u{1b}[2J b\u{9b}6n c\u{85}d \u{202E}e\u{2066}f\u{200E}\u{200F}\u{061C} \u{2028}\u{2029} 🦀 é";
        let msg = ServerMsg::Message {
            cid: None,
            room: RoomName::lobby(),
            id: 7,
            time: 0,
            from: Nick::parse("eve").unwrap(),
            kind: MessageKind::Normal,
            text: text.into(),
            history: false,
        };
        let line = event(Format::Json, &msg).unwrap();
        let bad: Vec<char> =
            line.chars().filter(|&c| chatao_proto::text::is_display_hazard(c)).collect();
        assert!(bad.is_empty(), "{bad:?} in {line}");
        for escaped in [r"\u001b", r"\u009b", r"\u0085", r"\u202e", r"\u2066", r"\u200e", r"\u2028"]
        {
            assert!(line.contains(escaped), "{escaped} not in {line}");
        }
        assert!(line.contains("🦀 é"), "other text is written as it is: {line}");
        let back: ServerMsg = serde_json::from_str(&line).unwrap();
        assert_eq!(back, msg);
        // Every JSON line goes through it, the client's own events included.
        let notice = notice(Format::Json, "x\u{9b}y");
        assert!(notice.contains(r"x\u009by"), "{notice}");
        let bye = closed(Format::Json, &Closed::Bye { code: None, reason: "\u{202E}".into() });
        assert!(bye.contains(r"\u202e"), "{bye}");
    }

    /// Padding cannot push the end of a message onto a row of its own: long runs of blanks
    /// become one mark, trailing blanks go.
    #[test]
    fn plain_lines_collapse_padding_and_end_without_blanks() {
        let fake = "[18:20:29] #lobby <alice> your password please";
        let msg = ServerMsg::Message {
            cid: None,
            room: RoomName::lobby(),
            id: 1,
            time: 0,
            from: Nick::parse("eve").unwrap(),
            kind: MessageKind::Normal,
            text: format!("ok{}{fake}{}", " ".repeat(90), " \u{3000}".repeat(40)),
            history: false,
        };
        let line = event(Format::Plain, &msg).unwrap();
        assert!(line.ends_with(&format!("<eve> ok␠…{fake}")), "{line:?}");
    }

    /// Issue 19: line mode's who marks room operators @nick; a room operator's action is one
    /// sanitized line.
    #[test]
    fn who_marks_room_operators_and_room_moderation_is_a_line() {
        let member = |n: &str, op| chatao_proto::Member {
            nick: Nick::parse(n).unwrap(),
            fingerprint: chatao_proto::Fingerprint::example("x"),
            away: None,
            bot: false,
            op,
        };
        let room = RoomName::parse("#rust").unwrap();
        let who = ServerMsg::Members {
            room: room.clone(),
            members: vec![member("alice", true), member("bob", false)],
            e2e: false,
            total: None,
            next: None,
            more: false,
        };
        let line = event(Format::Plain, &who).unwrap();
        assert!(
            line.contains("@alice") && line.contains("bob") && !line.contains("@bob"),
            "{line}"
        );
        let kick = ServerMsg::RoomModeration {
            room,
            action: chatao_proto::RoomAction::Kick,
            target: Some("bob\u{1b}[2J".into()),
            by: Nick::parse("alice").unwrap(),
            reason: Some("off topic".into()),
            until: None,
        };
        let line = event(Format::Plain, &kick).unwrap();
        assert!(line.contains("was kicked from #rust by alice: off topic"), "{line}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }

    #[test]
    fn who_of_a_room_nobody_is_in_says_there_is_no_such_room() {
        let members = |e2e| ServerMsg::Members {
            room: RoomName::parse("#nosuch").unwrap(),
            members: vec![],
            e2e,
            total: None,
            next: None,
            more: false,
        };
        let plain = event(Format::Plain, &members(false)).unwrap();
        assert!(plain.ends_with("* no such room #nosuch: nobody is in it"), "{plain}");
        let sealed = event(Format::Plain, &members(true)).unwrap();
        assert!(sealed.ends_with("nobody is online in this end-to-end encrypted room"), "{sealed}");
    }
}
