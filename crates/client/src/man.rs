//! `chatao --man`: the manual page, in roff. NAME, SYNOPSIS, DESCRIPTION and OPTIONS come from
//! the command-line definition through clap_mangen, so they cannot drift from `--help`;
//! COMMANDS and KEYS from the tables `/help` prints ([`crate::command::COMMANDS`],
//! [`crate::app::KEYS`]); FILES, ENVIRONMENT, EXIT STATUS, EXAMPLES and SEE ALSO are written
//! here.

use std::io::{self, Write};

use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

const DESCRIPTION: &str = "\
chatao is the client of the Chatao chat: it connects to a chataosrv(1) server over a Noise \
channel that authenticates both ends, pins the server's key on first contact (like SSH), and \
identifies you by your own key, to which your nickname belongs.

On a terminal it runs a full-screen interface; with --plain or --json, or when standard input or \
output is not a terminal, it runs in line mode: each line of standard input is a message or a \
command, each event one line of output (JSON objects with --json), for scripts, bots and pipes. \
At the end of input it quits once everything it sent has reached the server.

A lost connection is retried, on the next server of the list if there are several; the rooms \
you were in are caught up, each missed message shown once.

For bots: --state FILE keeps the last message id printed per server and room, so that a bot \
started again prints exactly what came after, once, in order, marked as history; \
--no-history prints no join replay; --quiet makes a session rooms are not told of (listed as a \
bot); a ready event (JSON) or line (plain) says when the catch-up is over and live messages \
follow.";

/// Writes the whole page for `cmd` (the binary's command-line definition).
pub fn render(cmd: clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = Man::new(cmd.long_about(DESCRIPTION));
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    sections().to_writer(w)?;
    man.render_version_section(w)
}

/// A `.TP` item: `tag` on its own line, then `text` indented below it.
fn item(roff: &mut Roff, tag: impl Into<Vec<Inline>>, text: &str) {
    roff.control("TP", []);
    roff.text(tag);
    roff.text([roman(text)]);
}

fn para(roff: &mut Roff, text: &str) {
    roff.control("PP", []);
    roff.text([roman(text)]);
}

fn sections() -> Roff {
    let mut r = Roff::new();

    r.control("SH", ["COMMANDS"]);
    para(
        &mut r,
        "The same in both modes. Text that does not start with / goes to the current room (the \
         one most recently joined or switched to; #lobby at first); //text sends /text. Room \
         names may omit the #.",
    );
    for (_, syntax, what) in crate::command::COMMANDS {
        item(&mut r, [bold(*syntax)], what);
    }

    r.control("SH", ["KEYS"]);
    para(&mut r, "In the full-screen interface (/help lists them too):");
    for (keys, what) in crate::app::KEYS {
        item(&mut r, [bold(*keys)], what);
    }

    r.control("SH", ["FILES"]);
    item(
        &mut r,
        [italic("KEY-DIR"), bold("/key.pem")],
        "Your key (X25519, PEM, mode 0600), made on first use: your identity, to which your \
         nicknames belong. KEY-DIR is --key-dir, by default $XDG_CONFIG_HOME/chatao/clientKey \
         (~/.config/chatao/clientKey), however chatao was installed. Back it up.",
    );
    item(
        &mut r,
        [italic("KEY-DIR"), bold("/known_servers")],
        "The servers' keys pinned on first contact, one HOST:PORT and fingerprint per line. A \
         server that presents another key is refused; remove its line only once you know why \
         the key changed.",
    );
    item(
        &mut r,
        [italic("KEY-DIR"), bold("/e2e/")],
        "The MLS state of end-to-end encrypted rooms (--e2e-dir moves it): one 0700 directory \
         per server key and identity, files 0600. One chatao process at a time uses a state \
         (its lock file names that process); other processes of the same key chat in ordinary \
         rooms, and say so, unless each has its own --e2e-dir.",
    );
    item(
        &mut r,
        [italic("STATE-FILE")],
        "Line mode's place (--state or CHATAO_STATE): JSON, {\"version\":1,\"servers\":\
         {KEY:{ROOM:ID}}}, the id of the last message printed per server key and room, \
         replaced atomically after each one. A file that cannot be read or is not this stops \
         chatao with status 2 before anything is sent; a missing one is created.",
    );
    item(
        &mut r,
        [bold("$XDG_CONFIG_HOME/chatao/config.toml")],
        "The config file (~/.config/chatao/config.toml; --config moves it), TOML, every setting \
         optional: servers, port, nickname, key_dir, highlight (words that count as mentions), \
         ignore (nicknames or fingerprints), timestamp (\"%H:%M\" or \"%H:%M:%S\"), bell, \
         url_command (what /url N runs to open a link, as \"xdg-open\": a program and its \
         options, never a shell, the link added last), hide_joins_parts (off, smart, all; per room in [rooms.\"#ROOM\"]), [notify] (enabled, \
         osc, command, e2e_text), [theme] (colours), [logs] (enabled, e2e, dir). A flag wins \
         over the environment, which wins over the file. A mistake stops chatao with status 2, \
         naming the file, line and setting; --check-config prints the settings in force and \
         where each came from.",
    );
    item(
        &mut r,
        [bold("$XDG_CONFIG_HOME/chatao/ignores.toml")],
        "What /ignore and /unignore keep (ignore = [...], 0600), beside the config file; the \
         config's ignore list applies too.",
    );
    item(
        &mut r,
        [
            bold("$XDG_STATE_HOME/chatao/logs/"),
            italic("SERVER"),
            bold("/"),
            italic("BUFFER"),
            bold(".YYYY-MM-DD.log"),
        ],
        "Chat logs, with [logs] enabled = true: one file per room or private conversation and \
         day, one sanitised line per event, files 0600, directories 0700; end-to-end \
         encrypted rooms only with [logs] e2e = true.",
    );
    item(
        &mut r,
        [bold("$XDG_STATE_HOME/chatao/chatao.log")],
        "The full-screen interface's log (~/.local/state/chatao/chatao.log; --log-file moves \
         it). Line mode logs to standard error.",
    );

    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        [bold(crate::servers::SERVERS_ENV)],
        "The server list (HOST[:PORT],...) used when only a NICKNAME is given.",
    );
    item(&mut r, [bold("CHATAO_STATE")], "The state file, when --state is not given.");
    item(
        &mut r,
        [bold("CHATAO_LOG"), roman(", "), bold("RUST_LOG")],
        "The log filter (e.g. debug).",
    );
    item(
        &mut r,
        [bold("XDG_CONFIG_HOME"), roman(", "), bold("XDG_STATE_HOME"), roman(", "), bold("HOME")],
        "Where the default key directory and log file are.",
    );

    r.control("SH", ["EXIT STATUS"]);
    item(
        &mut r,
        [bold("0")],
        "You quit (/quit, Ctrl-C, or the end of standard input in line mode) and the server \
         said goodbye; in line mode, only once every message line was delivered (acknowledged \
         by the server's echo of its client id).",
    );
    item(
        &mut r,
        [bold("1")],
        "The first connection failed (no server, a refused nickname, a changed server key), \
         the server ended the session, no server took the client back within \
         --reconnect-timeout, a message line was refused for good, or the server did not say \
         goodbye in time, or the state file could not be written. Line mode then lists each \
         message line not delivered on standard error (\"N message(s) were not delivered:\").",
    );
    item(
        &mut r,
        [bold("2")],
        "A usage error: an unknown option, a malformed server list or port, a nickname \
         against the rules, a state file that cannot be read or is not one; nothing was sent.",
    );
    para(
        &mut r,
        "Under systemd, Restart=on-failure restarts a bot that failed (1) and not one whose \
         input ended cleanly (0); add RestartPreventExitStatus=2, since restarting cannot fix \
         a usage error or a broken state file.",
    );

    r.control("SH", ["EXAMPLES"]);
    let examples: [(&str, &str); 8] = [
        ("chatao chat.example.org 7000 alice", "Chat as alice, full screen."),
        (
            "chatao --server-key SHA256:... chat.example.org 7000 alice",
            "The same, accepting only the server key its operator gave you, even the first time.",
        ),
        (
            "chatao node1:7000,node2:7000 alice",
            "A cluster: on losing one node the client moves to the next.",
        ),
        (
            "echo 'the build is green' | chatao --plain localhost 7000 ci-bot",
            "Say one line and quit once it reached the server.",
        ),
        (
            "chatao --json localhost 7000 bot < commands.txt | jq -r 'select(.type==\"message\") | .text'",
            "A bot reading the events as JSON.",
        ),
        (
            "echo 'deploy done' | chatao --plain --quiet --no-history localhost 7000 ci-bot",
            "A notifier: no join replay printed, no join or leave line in the room.",
        ),
        (
            "chatao --json --quiet --state relay.state localhost 7000 relay",
            "A bridge: started again, it prints exactly the messages it has not printed yet.",
        ),
        ("chatao --fingerprint", "Print your key's fingerprint, for others to compare."),
    ];
    for (command, what) in examples {
        r.control("TP", []);
        r.text([bold(command)]);
        r.text([roman(what)]);
    }

    r.control("SH", ["SEE ALSO"]);
    r.text([bold("chataosrv"), roman("(1), the README of the Chatao source.")]);
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn every_command_and_key_is_on_the_page() {
        let mut page = vec![];
        super::render(clap::Command::new("chatao").version("0"), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for (name, _, _) in crate::command::COMMANDS {
            assert!(page.contains(&format!("/{name}")), "/{name} missing");
        }
        for (keys, _) in crate::app::KEYS {
            // roff escapes '-' as '\-'.
            assert!(page.contains(&keys.replace('-', "\\-")), "{keys} missing");
        }
    }
}
