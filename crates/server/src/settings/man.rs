//! `chataosrv --man`: the manual page, in roff. The NAME, SYNOPSIS, DESCRIPTION and OPTIONS
//! sections come from the command-line definition ([`Args`]) through clap_mangen, so they
//! cannot drift from `--help`; FILES, ENVIRONMENT, EXIT STATUS, SIGNALS, EXAMPLES and SEE ALSO
//! are written here.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use super::Args;

/// Where the commented example config is, as the FILES section says it.
pub const EXAMPLE_CONFIG: &str = "packaging/chatao.toml";

const DESCRIPTION: &str = "\
chataosrv serves the Chatao chat: rooms, private messages and end-to-end encrypted rooms, over \
Noise connections that authenticate both ends. Clients connect with chatao(1).

Settings come from the options below and from a TOML config file (--config FILE), where each \
option is a setting of the same name without the leading dashes; an option given on the command \
line wins over the file. Before it creates anything, chataosrv checks every setting and what it \
names (the allowlist and operator files, the server key, the data directory, the addresses to \
listen on) and reports every mistake at once, with the file, the line and what to do; \
--check-config does only that.

On its first start it creates the server key and the history database. It logs the key's \
fingerprint, which clients pin on first contact: give it to your users so that they can check it \
(chatao --server-key).";

/// Writes the whole page.
pub fn render(w: &mut dyn Write) -> io::Result<()> {
    let man = Man::new(Args::command().long_about(DESCRIPTION));
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

fn sections() -> Roff {
    let mut r = Roff::new();

    r.control("SH", ["FILES"]);
    item(
        &mut r,
        [bold("/etc/chatao/chatao.toml")],
        "The config file of the chatao systemd service (it runs chataosrv --config \
         /etc/chatao/chatao.toml); install.sh --system installs the example there. Any other \
         file is read with --config FILE. Relative paths in a config file are relative to its \
         directory.",
    );
    item(
        &mut r,
        [bold(EXAMPLE_CONFIG)],
        "In the source tree: an example config showing every setting with its default and a \
         comment. Copy it, uncomment what you change, and check it with --check-config.",
    );
    item(
        &mut r,
        [italic("PREFIX"), bold("/share/doc/chatao/chatao.toml")],
        "The same example, as install.sh installs it (--local: PREFIX is the folder given; \
         --system: --prefix, by default /usr/local).",
    );
    item(
        &mut r,
        [italic("DATA-DIR"), bold("/chatao.db")],
        "The history database (SQLite, with chatao.db-wal and chatao.db-shm beside it): \
         messages, topics, registered nicknames, bans. A cluster node keeps cluster.db instead. \
         Each is created mode 0600 (and made so if found readable by others), whatever the umask. \
         DATA-DIR is --data-dir, by default $XDG_DATA_HOME/chatao (~/.local/share/chatao); the \
         service uses /var/lib/chatao.",
    );
    item(
        &mut r,
        [italic("DATA-DIR"), bold("/serverKey/key.pem")],
        "The server's private key (X25519, PEM, mode 0600), created on the first start; \
         --key-dir puts it elsewhere. Back it up: clients pin its fingerprint and refuse a \
         server whose key changed. Every node of a cluster needs the same one.",
    );
    item(
        &mut r,
        [roman("The "), bold("allow"), roman(" and "), bold("ops-file"), roman(" files")],
        "Key fingerprints, one per line (SHA256: and 43 characters, as chatao --fingerprint \
         prints them), optionally followed by a comment such as a name; # starts a comment \
         line, as in SSH's authorized_keys. allow lists the only keys that may connect; \
         ops-file lists operators. Both are re-read on SIGHUP.",
    );
    item(
        &mut r,
        [bold("/etc/systemd/system/chatao.service")],
        "The systemd unit install.sh --system installs (from packaging/chatao.service).",
    );

    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        [bold("RUST_LOG")],
        "A log filter (such as info,chatao_server=debug) that wins over --log-level and the \
         config file's log-level; SIGHUP then leaves the level alone.",
    );
    item(
        &mut r,
        [bold("XDG_DATA_HOME"), roman(", "), bold("HOME")],
        "Where the default DATA-DIR is: $XDG_DATA_HOME/chatao, else ~/.local/share/chatao.",
    );
    item(
        &mut r,
        [bold("NOTIFY_SOCKET")],
        "Set by systemd for a Type=notify service: chataosrv reports there when it is ready (it \
         listens and its database is open) and when it stops.",
    );
    item(
        &mut r,
        [bold("JOURNAL_STREAM")],
        "Set by systemd when standard error goes to the journal: log lines then carry no \
         timestamp (the journal adds one) and no colours.",
    );

    r.control("SH", ["EXIT STATUS"]);
    item(
        &mut r,
        [bold("0")],
        "A clean shutdown after SIGINT or SIGTERM; --check-config found the settings valid; \
         --fingerprint, --man, --completions, --help or --version printed what was asked.",
    );
    item(
        &mut r,
        [bold("1")],
        "An error once the settings were found valid: the port taken by another program, the \
         database unusable, the cluster unreachable. The message says what failed and why.",
    );
    item(
        &mut r,
        [bold("2")],
        "Invalid settings: an unknown option or setting, a bad value, or a file, directory or \
         address that cannot be used. Every mistake is printed, each with the config file and \
         line (or the option) and what to do; nothing was created.",
    );

    r.control("SH", ["SIGNALS"]);
    item(
        &mut r,
        [bold("SIGHUP")],
        "Reload (systemctl reload chatao): re-reads the allow and ops-file files, leaving the \
         lists in force if one cannot be read; and re-reads the config file, of which log-level \
         takes effect at once, while any other changed setting is named in the log as waiting \
         for a restart. An invalid config file is logged and changes nothing. Nobody is \
         disconnected.",
    );
    item(
        &mut r,
        [bold("SIGTERM"), roman(", "), bold("SIGINT")],
        "Graceful shutdown (systemctl stop chatao, Ctrl-C): stops accepting connections, tells \
         every client (bye shutdown), gives the sessions 5 seconds to finish and the history \
         writer 5 more to flush, and exits 0.",
    );

    r.control("SH", ["EXAMPLES"]);
    let examples: [(&str, &str); 7] = [
        (
            "chataosrv",
            "Serve on port 7000 on every interface, with the key and database in \
             ~/.local/share/chatao.",
        ),
        (
            "chataosrv 7100 --listen 127.0.0.1 --data-dir ./state",
            "Serve on the loopback address only, port 7100, with the state in ./state.",
        ),
        (
            "chataosrv --config /etc/chatao/chatao.toml --check-config",
            "Check a config file and everything it names without starting or creating anything; \
             print every mistake, or the settings in force.",
        ),
        (
            "chataosrv --config /etc/chatao/chatao.toml --fingerprint",
            "Print the server key's fingerprint, for users to pin: chatao --server-key \
             SHA256:... HOST 7000 NICK.",
        ),
        (
            "chataosrv --allow /etc/chatao/allow --op SHA256:...",
            "Let only the keys listed in /etc/chatao/allow connect, and make one of them an \
             operator. After editing the file: systemctl reload chatao, or kill -HUP the process.",
        ),
        (
            "chataosrv --metrics 127.0.0.1:9700",
            "Also serve Prometheus metrics at http://127.0.0.1:9700/metrics.",
        ),
        ("chataosrv --man | man -l -", "Read this page."),
    ];
    for (command, what) in examples {
        item(&mut r, [bold(command)], what);
    }

    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("chatao"),
        roman("(1), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1). README.md and docs/PROTOCOL.md in the source tree."),
    ]);
    r
}
