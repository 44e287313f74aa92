//! What the user types, parsed into what the client should do. Shared by line mode and the TUI,
//! so both accept exactly the same commands.
//!
//! A line that does not start with `/` is text for the current room; `//text` sends `/text`.
//! Room arguments may omit the `#`.

use chatao_proto::ClientMsg;

/// Every command: name, syntax and what it does. `/help` prints this and the TUI completes from
/// it, so a command added here is documented everywhere at once.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("join", "/join #ROOM", "join a room (created if new) and make it current"),
    ("part", "/part [#ROOM] [REASON]", "leave a room (default: the current one)"),
    ("switch", "/switch #ROOM", "make a room you are in the current one"),
    ("say", "/say #ROOM TEXT", "send text to a room other than the current one"),
    ("me", "/me ACTION", "send an action to the current room (* alice waves)"),
    ("msg", "/msg NICK TEXT", "send a private message"),
    ("list", "/list", "list rooms with member counts and topics"),
    ("who", "/who [#ROOM]", "list the members of a room (default: the current one)"),
    ("topic", "/topic [TEXT]", "show, or set, the current room's topic"),
    ("nick", "/nick NEWNICK", "change your nickname"),
    ("away", "/away [REASON]", "mark yourself away; without a reason, back"),
    ("back", "/back", "mark yourself back"),
    ("whois", "/whois NICK", "show who someone is, with their key fingerprint"),
    ("help", "/help", "list the commands"),
    ("quit", "/quit [REASON]", "leave the chat, telling others why"),
];

/// One line of user input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text for the current room.
    Say(String),
    /// Text for a named room.
    SayTo {
        room: String,
        text: String,
    },
    /// An action for the current room.
    Me(String),
    Join(String),
    /// Leave a room (`None`: the current one).
    Part {
        room: Option<String>,
        reason: Option<String>,
    },
    /// Make a room current (local: nothing is sent).
    Switch(String),
    Msg {
        to: String,
        text: String,
    },
    List,
    Who(Option<String>),
    /// Ask for (`None`) or set the current room's topic.
    Topic(Option<String>),
    Nick(String),
    /// Away with a reason, or back (`None`).
    Away(Option<String>),
    Whois(String),
    Help,
    Quit(Option<String>),
}

/// A line the client could not understand; the message says the right syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command /{0}; type /help for the list")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
}

fn usage(name: &str) -> CommandError {
    CommandError::Usage(
        COMMANDS.iter().find(|(n, _, _)| *n == name).map(|(_, s, _)| *s).unwrap_or("/help"),
    )
}

/// `rust` and `#rust` both name `#rust`.
fn room_arg(s: &str) -> String {
    if s.starts_with('#') { s.to_owned() } else { format!("#{s}") }
}

/// Splits off the first word.
fn word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim()),
        None => (s, ""),
    }
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Parses one line. `Ok(None)` for a blank line (nothing to do).
pub fn parse(line: &str) -> Result<Option<Input>, CommandError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Some(Input::Say(line.to_owned())));
    };
    if rest.starts_with('/') {
        return Ok(Some(Input::Say(rest.to_owned())));
    }
    let (name, args) = word(rest);
    let name = name.to_ascii_lowercase();
    let (first, tail) = word(args);
    let input = match name.as_str() {
        "me" if args.is_empty() => return Err(usage("me")),
        "me" => Input::Me(args.to_owned()),
        "join" | "j" if first.is_empty() || !tail.is_empty() => return Err(usage("join")),
        "join" | "j" => Input::Join(room_arg(first)),
        "part" | "leave" if first.starts_with('#') => {
            Input::Part { room: Some(first.to_owned()), reason: opt(tail) }
        }
        "part" | "leave" => Input::Part { room: None, reason: opt(args) },
        "switch" | "s" if first.is_empty() || !tail.is_empty() => return Err(usage("switch")),
        "switch" | "s" => Input::Switch(room_arg(first)),
        "say" if first.is_empty() || tail.is_empty() => return Err(usage("say")),
        "say" => Input::SayTo { room: room_arg(first), text: tail.to_owned() },
        "msg" | "query" | "m" if first.is_empty() || tail.is_empty() => return Err(usage("msg")),
        "msg" | "query" | "m" => Input::Msg { to: first.to_owned(), text: tail.to_owned() },
        "list" => Input::List,
        "who" | "names" => Input::Who((!first.is_empty()).then(|| room_arg(first))),
        "topic" => Input::Topic(opt(args)),
        "nick" if first.is_empty() || !tail.is_empty() => return Err(usage("nick")),
        "nick" => Input::Nick(first.to_owned()),
        "away" => Input::Away(opt(args)),
        "back" => Input::Away(None),
        "whois" if first.is_empty() || !tail.is_empty() => return Err(usage("whois")),
        "whois" => Input::Whois(first.to_owned()),
        "help" => Input::Help,
        "quit" | "exit" => Input::Quit(opt(args)),
        _ => return Err(CommandError::Unknown(name)),
    };
    Ok(Some(input))
}

impl Input {
    /// The protocol message for this input, with `current` as the current room. `None` for
    /// what the client handles itself (`/help`, `/switch`).
    pub fn to_msg(&self, current: &str) -> Option<ClientMsg> {
        let room = || current.to_owned();
        Some(match self {
            Input::Say(text) => ClientMsg::Say { room: room(), text: text.clone() },
            Input::SayTo { room, text } => {
                ClientMsg::Say { room: room.clone(), text: text.clone() }
            }
            Input::Me(text) => ClientMsg::Me { room: room(), text: text.clone() },
            Input::Join(r) => ClientMsg::Join { room: r.clone(), since: None },
            Input::Part { room: r, reason } => {
                ClientMsg::Part { room: r.clone().unwrap_or_else(room), reason: reason.clone() }
            }
            Input::Msg { to, text } => ClientMsg::Msg { to: to.clone(), text: text.clone() },
            Input::List => ClientMsg::List,
            Input::Who(r) => ClientMsg::Who { room: r.clone().unwrap_or_else(room) },
            Input::Topic(text) => ClientMsg::Topic { room: room(), text: text.clone() },
            Input::Nick(nick) => ClientMsg::Nick { nick: nick.clone() },
            Input::Away(reason) => ClientMsg::Away { reason: reason.clone() },
            Input::Whois(nick) => ClientMsg::Whois { nick: nick.clone() },
            Input::Quit(reason) => ClientMsg::Quit { reason: reason.clone() },
            Input::Help | Input::Switch(_) => return None,
        })
    }
}

/// The `/help` text, one line per command.
pub fn help_lines() -> Vec<String> {
    COMMANDS.iter().map(|(_, syntax, what)| format!("{syntax:<24} {what}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Input {
        parse(line).unwrap().unwrap()
    }

    #[test]
    fn text_and_commands() {
        assert_eq!(ok("hello"), Input::Say("hello".into()));
        assert_eq!(parse("  "), Ok(None));
        assert_eq!(ok("//not a command"), Input::Say("/not a command".into()));
        assert_eq!(ok("/me waves"), Input::Me("waves".into()));
        assert_eq!(ok("/ME  waves "), Input::Me("waves".into()));
        assert_eq!(ok("/quit"), Input::Quit(None));
        assert_eq!(ok("/quit gone fishing\n"), Input::Quit(Some("gone fishing".into())));
        assert_eq!(ok("/help"), Input::Help);
        assert_eq!(ok("/join rust"), Input::Join("#rust".into()));
        assert_eq!(ok("/join #rust"), Input::Join("#rust".into()));
        assert_eq!(ok("/part"), Input::Part { room: None, reason: None });
        assert_eq!(ok("/part so long"), Input::Part { room: None, reason: Some("so long".into()) });
        assert_eq!(
            ok("/part #rust bye"),
            Input::Part { room: Some("#rust".into()), reason: Some("bye".into()) }
        );
        assert_eq!(ok("/switch rust"), Input::Switch("#rust".into()));
        assert_eq!(
            ok("/say #a hi there"),
            Input::SayTo { room: "#a".into(), text: "hi there".into() }
        );
        assert_eq!(
            ok("/msg bob hi there"),
            Input::Msg { to: "bob".into(), text: "hi there".into() }
        );
        assert_eq!(ok("/who"), Input::Who(None));
        assert_eq!(ok("/who rust"), Input::Who(Some("#rust".into())));
        assert_eq!(ok("/topic"), Input::Topic(None));
        assert_eq!(ok("/topic Rust talk"), Input::Topic(Some("Rust talk".into())));
        assert_eq!(ok("/nick robert"), Input::Nick("robert".into()));
        assert_eq!(ok("/away lunch"), Input::Away(Some("lunch".into())));
        assert_eq!(ok("/away"), Input::Away(None));
        assert_eq!(ok("/back"), Input::Away(None));
        assert_eq!(ok("/whois bob"), Input::Whois("bob".into()));
        assert_eq!(ok("/list"), Input::List);
    }

    #[test]
    fn errors_say_the_syntax() {
        assert_eq!(parse("/me"), Err(CommandError::Usage("/me ACTION")));
        assert_eq!(parse("/join"), Err(CommandError::Usage("/join #ROOM")));
        assert_eq!(parse("/join a b"), Err(CommandError::Usage("/join #ROOM")));
        assert_eq!(parse("/msg bob"), Err(CommandError::Usage("/msg NICK TEXT")));
        assert_eq!(parse("/say #a"), Err(CommandError::Usage("/say #ROOM TEXT")));
        assert_eq!(parse("/nick"), Err(CommandError::Usage("/nick NEWNICK")));
        assert_eq!(
            parse("/frobnicate x").unwrap_err().to_string(),
            "unknown command /frobnicate; type /help for the list"
        );
    }

    #[test]
    fn inputs_become_protocol_messages_for_the_current_room() {
        assert_eq!(
            ok("hi").to_msg("#a"),
            Some(ClientMsg::Say { room: "#a".into(), text: "hi".into() })
        );
        assert_eq!(
            ok("/part").to_msg("#a"),
            Some(ClientMsg::Part { room: "#a".into(), reason: None })
        );
        assert_eq!(
            ok("/topic").to_msg("#a"),
            Some(ClientMsg::Topic { room: "#a".into(), text: None })
        );
        assert_eq!(ok("/switch b").to_msg("#a"), None);
        assert_eq!(ok("/help").to_msg("#a"), None);
    }
}
