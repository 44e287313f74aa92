//! What the user types, parsed into what the client should do. Shared by line mode and the TUI,
//! so both accept exactly the same commands.
//!
//! A line that does not start with `/` is text for the current room; `//text` sends `/text`.

/// Every command: name, syntax and what it does. `/help` prints this and the TUI completes from
/// it, so a command added here is documented everywhere at once.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("me", "/me ACTION", "send an action to the current room (* alice waves)"),
    ("quit", "/quit [REASON]", "leave the chat, telling others why"),
    ("help", "/help", "list the commands"),
];

/// One line of user input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text for the current room.
    Say(String),
    /// An action for the current room.
    Me(String),
    Quit(Option<String>),
    Help,
}

/// A line the client could not understand; the message says the right syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command /{0}; type /help for the list")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
}

fn syntax(name: &str) -> &'static str {
    COMMANDS.iter().find(|(n, _, _)| *n == name).map(|(_, s, _)| *s).unwrap_or("/help")
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
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let name = name.to_ascii_lowercase();
    let input = match name.as_str() {
        "me" if args.is_empty() => return Err(CommandError::Usage(syntax("me"))),
        "me" => Input::Me(args.to_owned()),
        "quit" | "exit" => Input::Quit((!args.is_empty()).then(|| args.to_owned())),
        "help" => Input::Help,
        _ => return Err(CommandError::Unknown(name)),
    };
    Ok(Some(input))
}

/// The `/help` text, one line per command.
pub fn help_lines() -> Vec<String> {
    COMMANDS.iter().map(|(_, syntax, what)| format!("{syntax:<24} {what}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_commands() {
        assert_eq!(parse("hello"), Ok(Some(Input::Say("hello".into()))));
        assert_eq!(parse("  "), Ok(None));
        assert_eq!(parse("//not a command"), Ok(Some(Input::Say("/not a command".into()))));
        assert_eq!(parse("/me waves"), Ok(Some(Input::Me("waves".into()))));
        assert_eq!(parse("/ME  waves "), Ok(Some(Input::Me("waves".into()))));
        assert_eq!(parse("/quit"), Ok(Some(Input::Quit(None))));
        assert_eq!(
            parse("/quit gone fishing\n"),
            Ok(Some(Input::Quit(Some("gone fishing".into()))))
        );
        assert_eq!(parse("/help"), Ok(Some(Input::Help)));
    }

    #[test]
    fn errors_say_the_syntax() {
        assert_eq!(parse("/me"), Err(CommandError::Usage("/me ACTION")));
        assert_eq!(
            parse("/frobnicate x").unwrap_err().to_string(),
            "unknown command /frobnicate; type /help for the list"
        );
    }
}
