//! Desktop notifications: a mention or a private message while the terminal is not focused
//! (crossterm's focus events, `FocusLost` / `FocusGained`; a terminal that does not report
//! focus is taken as focused, so it never notifies).
//!
//! Two ways out, both optional ([`NotifySettings`]):
//! - the terminal's own notification, an OSC escape sequence written to the terminal:
//!   OSC 9 (`ESC ] 9 ; text BEL`: iTerm2, kitty, WezTerm, foot, Windows Terminal) or OSC 777
//!   (`ESC ] 777 ; notify ; title ; body ESC \`: foot, WezTerm, urxvt, Ghostty). Inside tmux
//!   (`$TMUX` set) the sequence is wrapped in tmux's DCS passthrough
//!   (`ESC P tmux; … ESC \`, each ESC doubled), which tmux 3.3+ forwards only with
//!   `set -g allow-passthrough on`;
//! - a command (`notify-send`), run directly, never through a shell: a program (with options
//!   of its own, `notify-send -u low`) gets the title and the body as two more arguments
//!   (`notify-send -u low TITLE BODY`); arguments holding `{sender}`, `{room}`, `{title}` or
//!   `{text}` are templates instead, each replaced on its own (so the sender and the room can
//!   be separate arguments) and nothing is added.
//!
//! Everything in a notification comes from the network and is cleaned first ([`clean`]): no
//! C0 or C1 control (so no ESC, BEL or newline can end the sequence or start another), no
//! bidirectional override, `;` replaced where it separates OSC 777's fields, each part cut to
//! a length, and an argument that would start with `-` is given a leading space so that a
//! command cannot take it for an option. The text of an end-to-end encrypted room is left out
//! unless [`NotifySettings::e2e_text`] allows it: the notification says who and where only.
//! At most one notification per [`NOTIFY_GAP`] (overflow policy: the later ones are dropped;
//! the status bar's activity list still shows them).

use std::time::Duration;

use super::buffer::{Entry, Kind};
use super::{App, Effect};

/// The shortest time between two notifications.
pub const NOTIFY_GAP: Duration = Duration::from_secs(3);
/// Longest sender or room name in a notification, in characters.
const NAME_MAX: usize = 64;
/// Longest text in a notification, in characters (then `…`).
const TEXT_MAX: usize = 200;

/// Which terminal notification to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Osc {
    /// None: only the command, if any.
    Off,
    /// `OSC 9`.
    #[default]
    Nine,
    /// `OSC 777;notify`.
    SevenSevenSeven,
}

/// The `[notify]` settings (filled from the client's config file; these defaults otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// Notify at all.
    pub enabled: bool,
    /// The terminal's own notification.
    pub osc: Osc,
    /// A command to run: a program and its argument templates (see the module's
    /// documentation); empty: none.
    pub command: Vec<String>,
    /// Include the text of messages in end-to-end encrypted rooms (default: who and where only).
    pub e2e_text: bool,
}

impl Default for NotifySettings {
    fn default() -> NotifySettings {
        NotifySettings { enabled: true, osc: Osc::default(), command: Vec::new(), e2e_text: false }
    }
}

/// One notification, cleaned ([`clean`]) when it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub sender: String,
    /// The room; `None` for a private message.
    pub room: Option<String>,
    /// The message's text; `None` when it must not be shown (an E2E room).
    pub text: Option<String>,
}

impl Notification {
    /// A notification of `text` from `sender` in `room` (`None`: private), the text kept only
    /// when `show_text`.
    pub fn new(sender: &str, room: Option<&str>, text: &str, show_text: bool) -> Notification {
        Notification {
            sender: clean(sender, NAME_MAX),
            room: room.map(|r| clean(r, NAME_MAX)),
            text: show_text.then(|| clean(text, TEXT_MAX)),
        }
    }

    /// `bob in #rust`, or `bob (private message)`.
    pub fn title(&self) -> String {
        match &self.room {
            Some(room) => format!("{} in {room}", self.sender),
            None => format!("{} (private message)", self.sender),
        }
    }

    /// The text, or what stands for it when it is not shown.
    pub fn body(&self) -> String {
        match &self.text {
            Some(text) => text.clone(),
            None => "new message (end-to-end encrypted)".to_owned(),
        }
    }

    /// The terminal's notification sequence for `osc`, wrapped for tmux's passthrough when
    /// `tmux`; empty for [`Osc::Off`].
    pub fn escape(&self, osc: Osc, tmux: bool) -> String {
        let seq = match osc {
            Osc::Off => return String::new(),
            // A text starting with a number and `;` would be another OSC 9 command
            // (ConEmu's progress, `9;4;…`): the title comes first, and never starts so.
            Osc::Nine => format!("\x1b]9;chatao: {}: {}\x07", self.title(), self.body()),
            Osc::SevenSevenSeven => format!(
                "\x1b]777;notify;{};{}\x1b\\",
                self.title().replace(';', ","),
                self.body().replace(';', ",")
            ),
        };
        if tmux { format!("\x1bPtmux;{}\x1b\\", seq.replace('\x1b', "\x1b\x1b")) } else { seq }
    }

    /// The command line for `command` (program first), or `None` when there is no command.
    pub fn command(&self, command: &[String]) -> Option<Vec<String>> {
        let (program, templates) = command.split_first()?;
        // What came from the network never starts an argument with `-`.
        let value = |a: String| if a.starts_with('-') { format!(" {a}") } else { a };
        let placeholder =
            |t: &String| ["{sender}", "{room}", "{title}", "{text}"].iter().any(|p| t.contains(p));
        let args: Vec<String> = if !templates.iter().any(placeholder) {
            // A program with options of its own (`notify-send -u low`): the title and the
            // body follow them.
            let own = templates.iter().cloned();
            own.chain([value(self.title()), value(self.body())]).collect()
        } else {
            let room = self.room.clone().unwrap_or_default();
            templates
                .iter()
                .map(|t| {
                    let a = t
                        .replace("{sender}", &self.sender)
                        .replace("{room}", &room)
                        .replace("{title}", &self.title())
                        .replace("{text}", &self.body());
                    // The user's own options (`--from`) stay as written.
                    if t.starts_with('-') { a } else { value(a) }
                })
                .collect()
        };
        Some(std::iter::once(program.clone()).chain(args).collect())
    }
}

/// `s` fit for a notification: every control character (C0, DEL, C1: ESC, BEL, CR, LF …)
/// becomes a space, bidirectional and other invisible format controls are dropped, runs of
/// spaces collapse, and the result is cut to `max` characters (the last one then `…`).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if is_invisible(c) || (c == ' ' && (out.is_empty() || out.ends_with(' '))) {
            continue;
        }
        if n == max {
            out.pop();
            out.push('…');
            break;
        }
        out.push(c);
        n += 1;
    }
    out.trim_end().to_owned()
}

/// Bidirectional overrides and isolates, zero-width and other format characters.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

impl App {
    /// The notification for `entry` (a mention or a private message) arriving in buffer `i`,
    /// if the terminal is not focused, notifications are on and the last was long enough ago.
    pub(super) fn notification(&mut self, i: usize, entry: &Entry) -> Option<Effect> {
        let settings = &self.config.notify;
        if self.focused || !settings.enabled {
            return None;
        }
        if self.last_notify.is_some_and(|t| self.now.saturating_duration_since(t) < NOTIFY_GAP) {
            return None;
        }
        let sender = match &entry.kind {
            Kind::Message { from } | Kind::Action { from } | Kind::Private { from, .. } => from,
            _ => return None,
        };
        let b = &self.buffers[i];
        let room = b.target.room().map(|r| r.as_str());
        let show_text = !b.e2e || settings.e2e_text;
        self.last_notify = Some(self.now);
        Some(Effect::Notify(Notification::new(sender.as_str(), room, &entry.text, show_text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "hi\x1b]0;pwned\x07\u{9b}2J\u{9d}8;;x\u{9c}\r\nrm -rf; \u{202E}txt";

    #[test]
    fn nothing_hostile_reaches_a_notification() {
        let n = Notification::new("bob", Some("#rust"), HOSTILE, true);
        let text = n.text.clone().unwrap();
        assert!(!text.chars().any(|c| c.is_control() || is_invisible(c)), "{text:?}");
        assert_eq!(text, "hi ]0;pwned 2J 8;;x rm -rf; txt");
        for osc in [Osc::Nine, Osc::SevenSevenSeven] {
            let seq = n.escape(osc, false);
            // One sequence: its own introducer and terminator, nothing else.
            assert_eq!(seq.matches('\x1b').count(), if osc == Osc::Nine { 1 } else { 2 });
            assert_eq!(seq.matches('\x07').count(), usize::from(osc == Osc::Nine));
            assert!(!seq.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)), "{seq:?}");
        }
        let seq = n.escape(Osc::SevenSevenSeven, false);
        assert_eq!(seq.matches(';').count(), 3, "only the field separators: {seq:?}");
        assert_eq!(n.escape(Osc::Off, false), "");
    }

    #[test]
    fn parts_are_cut_to_their_length() {
        let n = Notification::new(&"n".repeat(100), Some("#r"), &"x".repeat(1000), true);
        assert_eq!(n.sender.chars().count(), NAME_MAX);
        assert!(n.sender.ends_with('…'));
        assert_eq!(n.text.unwrap().chars().count(), TEXT_MAX);
    }

    #[test]
    fn the_text_of_an_e2e_room_is_left_out_unless_allowed() {
        let n = Notification::new("bob", Some("#secret"), "the launch code", false);
        assert_eq!(n.text, None);
        let all =
            [n.escape(Osc::Nine, false), n.command(&["notify-send".into()]).unwrap().join(" ")];
        for out in all {
            assert!(!out.contains("launch"), "{out}");
            assert!(out.contains("bob in #secret"), "{out}");
        }
    }

    #[test]
    fn inside_tmux_the_sequence_goes_through_the_passthrough() {
        let n = Notification::new("bob", None, "hi", true);
        assert_eq!(
            n.escape(Osc::Nine, true),
            "\x1bPtmux;\x1b\x1b]9;chatao: bob (private message): hi\x07\x1b\\"
        );
    }

    #[test]
    fn a_command_gets_separate_arguments_and_never_an_option_from_the_network() {
        let n = Notification::new("bob", Some("#rust"), "--icon=/etc/passwd", true);
        assert_eq!(
            n.command(&["notify-send".into()]).unwrap(),
            ["notify-send", "bob in #rust", " --icon=/etc/passwd"]
        );
        let templated =
            ["notifier", "--from", "{sender}", "--room", "{room}", "{text}"].map(String::from);
        assert_eq!(
            n.command(&templated).unwrap(),
            ["notifier", "--from", "bob", "--room", "#rust", " --icon=/etc/passwd"]
        );
        let with_options = ["notify-send", "-u", "low"].map(String::from);
        assert_eq!(
            n.command(&with_options).unwrap(),
            ["notify-send", "-u", "low", "bob in #rust", " --icon=/etc/passwd"]
        );
        assert_eq!(n.command(&[]), None);
    }
}
