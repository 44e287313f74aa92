//! What the user types, parsed into what the client should do. Shared by line mode and the TUI,
//! so both accept exactly the same commands.
//!
//! A line that does not start with `/` is text for the current room; `//text` sends `/text`.
//! Room arguments may omit the `#`.

use chatao_proto::{ClientMsg, RoomFlag};

/// Every command: name, syntax and what it does. `/help` prints this and the TUI completes from
/// it, so a command added here is documented everywhere at once.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("join", "/join #ROOM", "join a room (created if new) and make it current"),
    ("part", "/part [#ROOM] [REASON]", "leave a room (default: the current one)"),
    ("switch", "/switch #ROOM", "make a room you are in the current one"),
    ("say", "/say #ROOM TEXT", "send text to a room other than the current one"),
    ("me", "/me ACTION", "send an action to the current room (* alice waves)"),
    ("msg", "/msg NICK TEXT", "send a private message (its conversation opens in the background)"),
    ("query", "/query NICK [TEXT]", "open the private conversation with NICK (and send TEXT)"),
    (
        "list",
        "/list [#AFTER]",
        "list rooms with member counts and topics (a page; the next after #AFTER)",
    ),
    (
        "who",
        "/who [#ROOM [NICK]]",
        "list the members of a room (default: the current one; a page, the next after NICK)",
    ),
    ("topic", "/topic [TEXT]", "show, or set, the current room's topic"),
    ("nick", "/nick NEWNICK", "change your nickname"),
    ("away", "/away [REASON]", "mark yourself away; without a reason, back"),
    ("back", "/back", "mark yourself back"),
    ("whois", "/whois NICK", "show who someone is, with their key fingerprint"),
    (
        "device",
        "/device add FINGERPRINT [NAME] | list | remove FINGERPRINT",
        "let a new device's key (chatao --fingerprint there) use your nickname; list your keys; revoke one",
    ),
    (
        "create",
        "/create [--e2e] #ROOM [--open]",
        "create a room; --e2e: end-to-end encrypted (invite-only, or --open to all)",
    ),
    (
        "invite",
        "/invite NICK",
        "invite someone into the current room (E2E: add them; plain: room operators, for +i)",
    ),
    ("remove", "/remove NICK", "remove someone from the current end-to-end encrypted room"),
    ("safety", "/safety", "list the current E2E room's members, key fingerprints, pin status"),
    ("op", "/op NICK", "room operators: make someone an operator of the current room"),
    ("deop", "/deop NICK", "room operators: take the current room's operator status away"),
    (
        "mode",
        "/mode +t|-t|+i|-i",
        "room operators: lock the topic (+t) or make the current room invite-only (+i); - undoes",
    ),
    ("topiclock", "/topiclock on|off", "room operators: the same as /mode +t or /mode -t"),
    ("kick", "/kick NICK [REASON]", "room operators: remove someone from the current room"),
    (
        "ban",
        "/ban NICK|FINGERPRINT [DURATION] [REASON]",
        "room operators: ban a key from the current room (DURATION like 30m, 2h, 7d; none: for good)",
    ),
    ("unban", "/unban NICK|FINGERPRINT", "room operators: lift a ban from the current room"),
    ("kill", "/kill NICK [REASON]", "server operators: disconnect someone from the server"),
    (
        "kline",
        "/kline NICK|FINGERPRINT [DURATION] [REASON]",
        "server operators: ban a key from the server (also /ban --server)",
    ),
    ("unkline", "/unkline NICK|FINGERPRINT", "server operators: lift a server ban"),
    ("mute", "/mute NICK [DURATION]", "operators: stop someone's key from sending"),
    ("unmute", "/unmute NICK", "operators: lift a mute"),
    (
        "bots",
        "/bots #ROOM hide|show",
        "operators: hide a room's bots (quiet sessions) from its member lists, or show them",
    ),
    (
        "search",
        "/search [TEXT]",
        "full-screen UI: search the buffer's scrollback, ignoring case (n / N: older / newer)",
    ),
    (
        "url",
        "/url [N]",
        "full-screen UI: list the last links of the buffer (N: show link N whole, and open it \
         with the config's url_command)",
    ),
    (
        "ignore",
        "/ignore [NICK|FINGERPRINT]",
        "hide someone's messages, actions and private messages, by key (alone: list)",
    ),
    ("unignore", "/unignore NICK|FINGERPRINT", "stop ignoring someone"),
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
    /// Open the private conversation with `nick` (in the TUI; line mode has no buffers) and
    /// send `text`, if any, there.
    Query {
        nick: String,
        text: Option<String>,
    },
    /// A page of the room list: the first, or the one after this room.
    List(Option<String>),
    Who(Option<String>),
    /// The page of `room`'s members after the nickname `after`.
    WhoPage {
        room: String,
        after: String,
    },
    /// Ask for (`None`) or set the current room's topic.
    Topic(Option<String>),
    Nick(String),
    /// Away with a reason, or back (`None`).
    Away(Option<String>),
    Whois(String),
    /// `/device add FINGERPRINT [NAME]`.
    DeviceAdd {
        fingerprint: String,
        name: Option<String>,
    },
    /// `/device remove FINGERPRINT`.
    DeviceRemove(String),
    /// `/device` or `/device list`.
    DeviceList,
    /// Room operators: remove `nick` from the current room.
    Kick {
        nick: String,
        reason: Option<String>,
    },
    /// Room operators: ban a key from the current room.
    Ban {
        target: String,
        duration_secs: Option<u64>,
        reason: Option<String>,
    },
    /// Room operators: lift a ban from the current room.
    Unban(String),
    /// Room operators: make `nick` an operator of the current room, or (`on: false`) no more.
    Op {
        nick: String,
        on: bool,
    },
    /// Room operators: turn a mode of the current room on or off.
    Mode {
        flag: RoomFlag,
        on: bool,
    },
    /// Server operators: disconnect `nick` from the server.
    Kill {
        nick: String,
        reason: Option<String>,
    },
    /// Server operators: ban a key from the server.
    Kline {
        target: String,
        duration_secs: Option<u64>,
        reason: Option<String>,
    },
    /// Server operators: lift a server ban.
    Unkline(String),
    Mute {
        nick: String,
        duration_secs: Option<u64>,
    },
    Unmute(String),
    /// Operators: hide (`hide`) or show again a room's quiet sessions in its member lists.
    Bots {
        room: String,
        hide: bool,
    },
    Help,
    Quit(Option<String>),
    /// Create a room (end-to-end encrypted with `e2e`; open to joiners with `open`).
    Create {
        room: String,
        e2e: bool,
        open: bool,
    },
    /// Add someone to the current E2E room.
    Invite(String),
    /// Remove someone from the current E2E room.
    Remove(String),
    /// List the current E2E room's members with their keys.
    Safety,
    /// Full-screen UI: search the buffer shown (`None`: start typing the query).
    Search(Option<String>),
    /// Full-screen UI: list the buffer's last links, or show link `N` (1 = the newest).
    Url(Option<usize>),
    /// Ignore someone by key (`None`: list the ignores). Local (a `whois` resolves a nickname).
    Ignore(Option<String>),
    /// Stop ignoring someone. Local.
    Unignore(String),
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

/// `90s`, `30m`, `2h`, `7d`, `1w` (or bare seconds) as seconds; `None` if not a duration.
pub fn parse_duration(s: &str) -> Option<u64> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(mult)
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
        "msg" | "m" if first.is_empty() || tail.is_empty() => return Err(usage("msg")),
        "msg" | "m" => Input::Msg { to: first.to_owned(), text: tail.to_owned() },
        "query" | "q" if first.is_empty() => return Err(usage("query")),
        "query" | "q" => Input::Query { nick: first.to_owned(), text: opt(tail) },
        "list" => Input::List((!first.is_empty()).then(|| room_arg(first))),
        "who" | "names" if !tail.is_empty() => {
            Input::WhoPage { room: room_arg(first), after: tail.to_owned() }
        }
        "who" | "names" => Input::Who((!first.is_empty()).then(|| room_arg(first))),
        "topic" => Input::Topic(opt(args)),
        "nick" if first.is_empty() || !tail.is_empty() => return Err(usage("nick")),
        "nick" => Input::Nick(first.to_owned()),
        "away" => Input::Away(opt(args)),
        "back" => Input::Away(None),
        "whois" if first.is_empty() || !tail.is_empty() => return Err(usage("whois")),
        "whois" => Input::Whois(first.to_owned()),
        "device" => {
            let (fingerprint, name) = word(tail);
            match first {
                "add" if !fingerprint.is_empty() => {
                    Input::DeviceAdd { fingerprint: fingerprint.to_owned(), name: opt(name) }
                }
                "remove" if !fingerprint.is_empty() && name.is_empty() => {
                    Input::DeviceRemove(fingerprint.to_owned())
                }
                "list" | "" if tail.is_empty() => Input::DeviceList,
                _ => return Err(usage("device")),
            }
        }
        "kick" if first.is_empty() => return Err(usage("kick")),
        "kick" => Input::Kick { nick: first.to_owned(), reason: opt(tail) },
        "kill" if first.is_empty() => return Err(usage("kill")),
        "kill" => Input::Kill { nick: first.to_owned(), reason: opt(tail) },
        "ban" if first == "--server" => {
            let (target, rest) = word(tail);
            match ban_args(target, rest) {
                Some((target, duration_secs, reason)) => {
                    Input::Kline { target, duration_secs, reason }
                }
                None => return Err(usage("kline")),
            }
        }
        "ban" | "kline" => match (ban_args(first, tail), name.as_str()) {
            (None, name) => return Err(usage(name)),
            (Some((target, duration_secs, reason)), "ban") => {
                Input::Ban { target, duration_secs, reason }
            }
            (Some((target, duration_secs, reason)), _) => {
                Input::Kline { target, duration_secs, reason }
            }
        },
        "unban" if first.is_empty() || !tail.is_empty() => return Err(usage("unban")),
        "unban" => Input::Unban(first.to_owned()),
        "unkline" if first.is_empty() || !tail.is_empty() => return Err(usage("unkline")),
        "unkline" => Input::Unkline(first.to_owned()),
        "op" | "deop" if first.is_empty() || !tail.is_empty() => return Err(usage(&name)),
        "op" => Input::Op { nick: first.to_owned(), on: true },
        "deop" => Input::Op { nick: first.to_owned(), on: false },
        "mode" => match (args.trim(), tail.is_empty()) {
            ("+t", _) => Input::Mode { flag: RoomFlag::TopicLock, on: true },
            ("-t", _) => Input::Mode { flag: RoomFlag::TopicLock, on: false },
            ("+i", _) => Input::Mode { flag: RoomFlag::InviteOnly, on: true },
            ("-i", _) => Input::Mode { flag: RoomFlag::InviteOnly, on: false },
            _ => return Err(usage("mode")),
        },
        "topiclock" => match args.trim().to_ascii_lowercase().as_str() {
            "on" => Input::Mode { flag: RoomFlag::TopicLock, on: true },
            "off" => Input::Mode { flag: RoomFlag::TopicLock, on: false },
            _ => return Err(usage("topiclock")),
        },
        "mute" if first.is_empty() => return Err(usage("mute")),
        "mute" => match (tail, parse_duration(tail)) {
            ("", _) => Input::Mute { nick: first.to_owned(), duration_secs: None },
            (_, Some(d)) => Input::Mute { nick: first.to_owned(), duration_secs: Some(d) },
            (_, None) => return Err(usage("mute")),
        },
        "unmute" if first.is_empty() || !tail.is_empty() => return Err(usage("unmute")),
        "unmute" => Input::Unmute(first.to_owned()),
        "bots" => match (first, tail.to_ascii_lowercase().as_str()) {
            ("", _) => return Err(usage("bots")),
            (room, "hide") => Input::Bots { room: room_arg(room), hide: true },
            (room, "show") => Input::Bots { room: room_arg(room), hide: false },
            _ => return Err(usage("bots")),
        },
        "create" => {
            let mut room = None;
            let (mut e2e, mut open) = (false, false);
            for w in args.split_whitespace() {
                match w {
                    "--e2e" => e2e = true,
                    "--open" => open = true,
                    w if room.is_none() && !w.starts_with('-') => room = Some(room_arg(w)),
                    _ => return Err(usage("create")),
                }
            }
            match room {
                Some(room) if e2e || !open => Input::Create { room, e2e, open },
                _ => return Err(usage("create")),
            }
        }
        "invite" if first.is_empty() || !tail.is_empty() => return Err(usage("invite")),
        "invite" => Input::Invite(first.to_owned()),
        "remove" if first.is_empty() || !tail.is_empty() => return Err(usage("remove")),
        "remove" => Input::Remove(first.to_owned()),
        "safety" => Input::Safety,
        "search" => Input::Search(opt(args)),
        "url" => match first {
            "" => Input::Url(None),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 && tail.is_empty() => Input::Url(Some(n)),
                _ => return Err(usage("url")),
            },
        },
        "ignore" if !tail.is_empty() => return Err(usage("ignore")),
        "ignore" => Input::Ignore(Some(first.to_owned()).filter(|t| !t.is_empty())),
        "unignore" if first.is_empty() || !tail.is_empty() => return Err(usage("unignore")),
        "unignore" => Input::Unignore(first.to_owned()),
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
            Input::Say(text) => ClientMsg::Say { cid: None, room: room(), text: text.clone() },
            Input::SayTo { room, text } => {
                ClientMsg::Say { cid: None, room: room.clone(), text: text.clone() }
            }
            Input::Me(text) => ClientMsg::Me { cid: None, room: room(), text: text.clone() },
            Input::Join(r) => ClientMsg::Join { room: r.clone(), since: None },
            Input::Part { room: r, reason } => {
                ClientMsg::Part { room: r.clone().unwrap_or_else(room), reason: reason.clone() }
            }
            Input::Msg { to, text } => {
                ClientMsg::Msg { cid: None, to: to.clone(), text: text.clone() }
            }
            Input::Query { nick, text: Some(text) } => {
                ClientMsg::Msg { cid: None, to: nick.clone(), text: text.clone() }
            }
            Input::List(after) => ClientMsg::List { after: after.clone() },
            Input::Who(r) => ClientMsg::Who { room: r.clone().unwrap_or_else(room), after: None },
            Input::WhoPage { room: r, after } => {
                ClientMsg::Who { room: r.clone(), after: Some(after.clone()) }
            }
            Input::Topic(text) => ClientMsg::Topic { room: room(), text: text.clone() },
            Input::Nick(nick) => ClientMsg::Nick { nick: nick.clone() },
            Input::Away(reason) => ClientMsg::Away { reason: reason.clone() },
            Input::Whois(nick) => ClientMsg::Whois { nick: nick.clone() },
            Input::DeviceAdd { fingerprint, name } => {
                ClientMsg::DeviceAdd { fingerprint: fingerprint.clone(), name: name.clone() }
            }
            Input::DeviceRemove(fingerprint) => {
                ClientMsg::DeviceRemove { fingerprint: fingerprint.clone() }
            }
            Input::DeviceList => ClientMsg::DeviceList,
            Input::Kick { nick, reason } => {
                ClientMsg::RoomKick { room: room(), nick: nick.clone(), reason: reason.clone() }
            }
            Input::Ban { target, duration_secs, reason } => ClientMsg::RoomBan {
                room: room(),
                target: target.clone(),
                duration_secs: *duration_secs,
                reason: reason.clone(),
            },
            Input::Unban(target) => ClientMsg::RoomUnban { room: room(), target: target.clone() },
            Input::Op { nick, on: true } => ClientMsg::Op { room: room(), nick: nick.clone() },
            Input::Op { nick, on: false } => ClientMsg::Deop { room: room(), nick: nick.clone() },
            Input::Mode { flag, on } => ClientMsg::Mode { room: room(), flag: *flag, on: *on },
            Input::Kill { nick, reason } => {
                ClientMsg::Kick { nick: nick.clone(), reason: reason.clone() }
            }
            Input::Kline { target, duration_secs, reason } => ClientMsg::Ban {
                target: target.clone(),
                duration_secs: *duration_secs,
                reason: reason.clone(),
            },
            Input::Unkline(target) => ClientMsg::Unban { target: target.clone() },
            Input::Mute { nick, duration_secs } => {
                ClientMsg::Mute { nick: nick.clone(), duration_secs: *duration_secs }
            }
            Input::Unmute(nick) => ClientMsg::Unmute { nick: nick.clone() },
            Input::Bots { room, hide } => ClientMsg::Bots { room: room.clone(), hide: *hide },
            Input::Quit(reason) => ClientMsg::Quit { reason: reason.clone() },
            Input::Create { room, e2e, open } => {
                ClientMsg::Create { room: room.clone(), e2e: *e2e, open: *open }
            }
            // The E2E layer turns the key package into the add (crate::e2e); for a room it
            // holds no group of (a plain room) it sends `invite` instead.
            Input::Invite(nick) => {
                ClientMsg::FetchKeyPackage { nick: nick.clone(), room: Some(room()) }
            }
            Input::Help
            | Input::Switch(_)
            | Input::Query { text: None, .. }
            | Input::Remove(_)
            | Input::Safety
            | Input::Search(_)
            | Input::Url(_)
            | Input::Ignore(_)
            | Input::Unignore(_) => return None,
        })
    }

    /// The request for the E2E layer, for the inputs that have no wire message of their own.
    pub fn to_request(&self, current: &str) -> Option<crate::e2e::Request> {
        match self {
            Input::Remove(nick) => {
                Some(crate::e2e::Request::Remove { room: current.to_owned(), nick: nick.clone() })
            }
            Input::Safety => Some(crate::e2e::Request::Safety { room: current.to_owned() }),
            _ => None,
        }
    }
}

/// `TARGET [DURATION] [REASON]` of `/ban` and `/kline`; `None` without a target.
fn ban_args(target: &str, tail: &str) -> Option<(String, Option<u64>, Option<String>)> {
    if target.is_empty() {
        return None;
    }
    let (maybe, rest) = word(tail);
    Some(match parse_duration(maybe) {
        Some(d) => (target.to_owned(), Some(d), opt(rest)),
        None => (target.to_owned(), None, opt(tail)),
    })
}

/// The `/help` text, one line per command.
pub fn help_lines() -> Vec<String> {
    COMMANDS.iter().map(|(_, syntax, what)| format!("{syntax:<42} {what}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_and_url_parse() {
        assert_eq!(
            parse("/search Deploy now").unwrap(),
            Some(Input::Search(Some("Deploy now".into())))
        );
        assert_eq!(parse("/search").unwrap(), Some(Input::Search(None)));
        assert_eq!(parse("/url").unwrap(), Some(Input::Url(None)));
        assert_eq!(parse("/url 3").unwrap(), Some(Input::Url(Some(3))));
        for bad in ["/url 0", "/url x", "/url 1 2"] {
            assert!(matches!(parse(bad), Err(CommandError::Usage(_))), "{bad}");
        }
        assert_eq!(Input::Search(None).to_msg("#a"), None, "local: nothing is sent");
    }

    #[test]
    fn e2e_commands_parse() {
        assert_eq!(
            parse("/create --e2e secret --open").unwrap(),
            Some(Input::Create { room: "#secret".into(), e2e: true, open: true })
        );
        assert_eq!(
            parse("/create #plain").unwrap(),
            Some(Input::Create { room: "#plain".into(), e2e: false, open: false })
        );
        assert!(parse("/create --open #x").is_err(), "--open needs --e2e");
        assert!(parse("/create --e2e").is_err());
        let invite = parse("/invite bob").unwrap().unwrap();
        assert_eq!(
            invite.to_msg("#sec"),
            Some(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) })
        );
        let remove = parse("/remove bob").unwrap().unwrap();
        assert_eq!(remove.to_msg("#sec"), None);
        assert_eq!(
            remove.to_request("#sec"),
            Some(crate::e2e::Request::Remove { room: "#sec".into(), nick: "bob".into() })
        );
        assert_eq!(
            parse("/safety").unwrap().unwrap().to_request("#sec"),
            Some(crate::e2e::Request::Safety { room: "#sec".into() })
        );
    }

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
        assert_eq!(ok("/query bob"), Input::Query { nick: "bob".into(), text: None });
        assert_eq!(
            ok("/query bob hi there"),
            Input::Query { nick: "bob".into(), text: Some("hi there".into()) }
        );
        assert_eq!(
            ok("/query bob hi").to_msg("#a"),
            Some(ClientMsg::Msg { cid: None, to: "bob".into(), text: "hi".into() })
        );
        assert_eq!(ok("/query bob").to_msg("#a"), None);
        assert_eq!(parse("/query"), Err(CommandError::Usage("/query NICK [TEXT]")));
        assert_eq!(ok("/who"), Input::Who(None));
        assert_eq!(ok("/who rust"), Input::Who(Some("#rust".into())));
        assert_eq!(ok("/topic"), Input::Topic(None));
        assert_eq!(ok("/topic Rust talk"), Input::Topic(Some("Rust talk".into())));
        assert_eq!(ok("/nick robert"), Input::Nick("robert".into()));
        assert_eq!(ok("/away lunch"), Input::Away(Some("lunch".into())));
        assert_eq!(ok("/away"), Input::Away(None));
        assert_eq!(ok("/back"), Input::Away(None));
        assert_eq!(ok("/whois bob"), Input::Whois("bob".into()));
        assert_eq!(
            ok("/device add SHA256:abc my phone"),
            Input::DeviceAdd { fingerprint: "SHA256:abc".into(), name: Some("my phone".into()) }
        );
        assert_eq!(ok("/device remove SHA256:abc"), Input::DeviceRemove("SHA256:abc".into()));
        assert_eq!(ok("/device"), Input::DeviceList);
        assert_eq!(ok("/device list"), Input::DeviceList);
        for bad in ["/device add", "/device remove", "/device remove a b", "/device frob"] {
            assert!(matches!(parse(bad), Err(CommandError::Usage(_))), "{bad}");
        }
        assert_eq!(ok("/list"), Input::List(None));
        assert_eq!(ok("/list rust"), Input::List(Some("#rust".into())));
        assert_eq!(
            ok("/who rust bob"),
            Input::WhoPage { room: "#rust".into(), after: "bob".into() }
        );
    }

    /// Issue 19: /kick, /ban, /unban act on the current room; /kill, /kline (or /ban --server)
    /// and /unkline on the server; /op, /deop, /mode, /topiclock on the current room.
    #[test]
    fn room_operator_commands_address_the_current_room_and_server_ones_the_server() {
        let msg = |line: &str| ok(line).to_msg("#rust").unwrap();
        assert_eq!(
            msg("/kick bob off topic"),
            ClientMsg::RoomKick {
                room: "#rust".into(),
                nick: "bob".into(),
                reason: Some("off topic".into())
            }
        );
        assert_eq!(
            msg("/kill bob flooding"),
            ClientMsg::Kick { nick: "bob".into(), reason: Some("flooding".into()) }
        );
        assert_eq!(
            msg("/ban bob 2h spam"),
            ClientMsg::RoomBan {
                room: "#rust".into(),
                target: "bob".into(),
                duration_secs: Some(7200),
                reason: Some("spam".into())
            }
        );
        let server_ban = ClientMsg::Ban {
            target: "bob".into(),
            duration_secs: Some(7200),
            reason: Some("spam".into()),
        };
        assert_eq!(msg("/kline bob 2h spam"), server_ban);
        assert_eq!(msg("/ban --server bob 2h spam"), server_ban);
        assert_eq!(
            msg("/unban bob"),
            ClientMsg::RoomUnban { room: "#rust".into(), target: "bob".into() }
        );
        assert_eq!(msg("/unkline bob"), ClientMsg::Unban { target: "bob".into() });
        assert_eq!(msg("/op bob"), ClientMsg::Op { room: "#rust".into(), nick: "bob".into() });
        assert_eq!(msg("/deop bob"), ClientMsg::Deop { room: "#rust".into(), nick: "bob".into() });
        let mode = |flag, on| ClientMsg::Mode { room: "#rust".into(), flag, on };
        assert_eq!(msg("/mode +t"), mode(RoomFlag::TopicLock, true));
        assert_eq!(msg("/mode -t"), mode(RoomFlag::TopicLock, false));
        assert_eq!(msg("/mode +i"), mode(RoomFlag::InviteOnly, true));
        assert_eq!(msg("/mode -i"), mode(RoomFlag::InviteOnly, false));
        assert_eq!(msg("/topiclock on"), mode(RoomFlag::TopicLock, true));
        assert_eq!(msg("/topiclock off"), mode(RoomFlag::TopicLock, false));
        for bad in [
            "/mode",
            "/mode +x",
            "/topiclock",
            "/op",
            "/op a b",
            "/kill",
            "/kline",
            "/ban --server",
        ] {
            assert!(matches!(parse(bad), Err(CommandError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn operator_commands_and_durations() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("spam"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(
            ok("/kick bob flooding"),
            Input::Kick { nick: "bob".into(), reason: Some("flooding".into()) }
        );
        assert_eq!(
            ok("/ban bob 2h spam links"),
            Input::Ban {
                target: "bob".into(),
                duration_secs: Some(7200),
                reason: Some("spam links".into())
            }
        );
        assert_eq!(
            ok("/ban SHA256:abc spam"),
            Input::Ban {
                target: "SHA256:abc".into(),
                duration_secs: None,
                reason: Some("spam".into())
            }
        );
        assert_eq!(ok("/unban bob"), Input::Unban("bob".into()));
        assert_eq!(
            ok("/mute bob 10m"),
            Input::Mute { nick: "bob".into(), duration_secs: Some(600) }
        );
        assert_eq!(ok("/mute bob"), Input::Mute { nick: "bob".into(), duration_secs: None });
        assert_eq!(parse("/mute bob forever"), Err(CommandError::Usage("/mute NICK [DURATION]")));
        assert_eq!(ok("/unmute bob"), Input::Unmute("bob".into()));
        assert_eq!(ok("/bots ci hide"), Input::Bots { room: "#ci".into(), hide: true });
        assert_eq!(ok("/bots #ci SHOW"), Input::Bots { room: "#ci".into(), hide: false });
        assert!(parse("/bots #ci").is_err() && parse("/bots").is_err());
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
            Some(ClientMsg::Say { cid: None, room: "#a".into(), text: "hi".into() })
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
