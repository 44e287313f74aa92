//! The server's settings as an administrator gives them: command-line flags ([`Args`]) and a
//! TOML config file (`--config FILE`), merged into one [`Settings`] that [`Settings::apply`]
//! copies into a [`Config`].
//!
//! Every setting has one name, used both as the flag (`--max-connections 500`) and as the key
//! in the file (`max-connections = 500`); the only exceptions are the port, a positional
//! argument on the command line, and `op`, which the file takes as a list. Precedence: a flag
//! given on the command line, else the file, else the default shown by `--help`.
//!
//! The file is flat (no tables). Unknown keys, values of the wrong type and values that fail
//! the same checks as the flags are errors that name the file, the line and the setting
//! ([`SettingsError`]), so a typo never silently leaves a default in place. Relative paths in the
//! file are relative to the file's directory.
//!
//! Every mistake is reported, not only the first ([`SettingsErrors`]). [`Cli::settings`] checks
//! the values; [`Cli::check`] also checks what they refer to (the allowlist and operator files,
//! the key, the data directory, the addresses to listen on: see `check.rs`) without creating
//! anything, so that the server creates its key and database only once it knows it can start.
//! `man.rs` renders the manual page.

mod check;
pub mod man;

pub use check::{Checked, listen_error};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chatao_proto::RoomName;
use chatao_transport::keys::parse_fingerprint;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use toml::Spanned;

use crate::config::Config;
use crate::limits;

const AFTER_HELP: &str = "\
Every option except --config, --fingerprint, --check-config, --completions and --man may also be \
set in the config file, under the option's long name without the leading `--` (`max-connections = 500`; the \
port is `port = 7000`; operators are `op = [\"SHA256:...\"]`). Options given here override the \
file. An example showing every setting: packaging/chatao.toml in the source, installed as \
/etc/chatao/chatao.toml by install.sh --system; `chataosrv --man` lists the files.

Signals: SIGINT and SIGTERM shut down gracefully. SIGHUP re-reads the allowlist and operator \
files and the config file; of the config file, only log-level takes effect at once, and the log \
names any other changed setting as waiting for a restart.";

/// Declares every setting once: its doc (the `--help` text), its clap attributes (flag name,
/// value name, default), its config-file key and how a TOML value becomes the field's type.
/// From that one list come the fields clap fills ([`SettingArgs`]), [`KEYS`], the config
/// file's reader, the merge (a flag given wins over the file, the file over the default) and
/// the settings printed as a file ([`Settings::entries`]). What a value must satisfy beyond its
/// type (a room name, a fingerprint, a range) is checked once, on the merged value, in
/// [`Settings::check_values`], wherever it came from.
macro_rules! settings {
    ($( $(#[$attr:meta])* $field:ident : $ty:ty, $key:literal, $read:expr; )*) => {
        /// Every setting's value, as clap fills it from the command line; [`Settings::values`]
        /// holds the same struct once the config file and the defaults are merged in.
        #[derive(Debug, Clone, PartialEq, clap::Args)]
        pub struct SettingArgs {
            $( $(#[$attr])* pub $field: $ty, )*
        }

        /// The settings a config file may hold, in the order `--check-config` prints them. Each
        /// is the flag's long name.
        pub const KEYS: &[&str] = &[$($key),*];

        /// Each key with the id of its argument in clap (the field's name).
        const IDS: &[(&str, &str)] = &[$(($key, stringify!($field))),*];

        /// What a config file set, each value of the right type.
        #[derive(Debug, Default)]
        struct FileValues {
            $( $field: Option<$ty>, )*
        }

        impl FileValues {
            /// Reads `v` as the setting `key` (relative paths are relative to `base`); `None` for
            /// a key that is no setting.
            fn read(&mut self, key: &str, v: &toml::Value, base: &Path) -> Option<Result<(), String>> {
                match key {
                    $( $key => {
                        let read: fn(&toml::Value, &Path) -> Result<$ty, String> = $read;
                        Some(read(v, base).map(|value| self.$field = Some(value)))
                    } )*
                    _ => None,
                }
            }
        }

        impl SettingArgs {
            /// Takes each value `file` holds unless `given` says the command line gave it.
            fn overlay(&mut self, file: FileValues, given: impl Fn(&str) -> bool) {
                $( if let Some(value) = file.$field && !given(stringify!($field)) {
                    self.$field = value;
                } )*
            }

            /// Puts the setting `key` back to its value in `defaults`.
            fn reset(&mut self, key: &str, defaults: &SettingArgs) {
                match key {
                    $( $key => self.$field = defaults.$field.clone(), )*
                    _ => {}
                }
            }

            /// Every setting as `(key, value in TOML syntax)`, in [`KEYS`] order; unset optional
            /// settings are left out.
            fn entries(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                $( if let Some(value) = ToToml::to_toml(&self.$field) {
                    out.push(($key, value));
                } )*
                out
            }
        }
    };
}

settings! {
    /// TCP port to listen on.
    #[arg(default_value_t = 7000)]
    port: u16, "port", |v, _| integer(v, "a port number (0 to 65535)");
    /// Address to listen on (all interfaces by default).
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    listen: IpAddr, "listen", |v, _| parsed(v, "an IP address, such as \"0.0.0.0\" or \"::\"");
    /// Directory for the server's state; `serverKey/` lives here unless --key-dir says
    /// otherwise. Default: $XDG_DATA_HOME/chatao (~/.local/share/chatao).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>, "data-dir", |v, base| file_path(v, base).map(Some);
    /// Directory holding the server key (`key.pem`), created with a new key if absent.
    /// Default: DATA_DIR/serverKey.
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>, "key-dir", |v, base| file_path(v, base).map(Some);
    /// The room every user starts in.
    #[arg(long, value_name = "#ROOM", default_value = chatao_proto::DEFAULT_ROOM)]
    default_room: String, "default-room", |v, _| string(v);
    /// Messages replayed to a user joining a room.
    #[arg(long, value_name = "N", default_value_t = limits::HISTORY_ON_JOIN)]
    history: usize, "history", |v, _| integer(v, "a number of messages");
    /// Messages kept per room (0: keep everything).
    #[arg(long, value_name = "N", default_value_t = limits::RETENTION_MESSAGES)]
    retention_messages: u64, "retention-messages", |v, _| integer(v, "a number of messages (0: all)");
    /// Days of history kept (0: no age limit).
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    retention_days: u64, "retention-days", |v, _| integer(v, "a number of days (0: no limit)");
    /// Messages per second each connection may send (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = limits::RATE_PER_SEC)]
    rate_per_sec: u32, "rate-per-sec", |v, _| integer(v, "messages per second (0: unlimited)");
    /// Messages a connection may send at once above the steady rate.
    #[arg(long, value_name = "N", default_value_t = limits::BURST)]
    burst: u32, "burst", |v, _| integer(v, "a number of messages");
    /// Longest message text, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = limits::MAX_TEXT_BYTES)]
    max_text_bytes: u32, "max-text-bytes", |v, _| integer(v, "a number of bytes");
    /// Simultaneous connections in all; past it new ones are refused with `server_full`. At
    /// least 1 (0 would refuse everyone).
    #[arg(long, value_name = "N", default_value_t = limits::MAX_CONNECTIONS)]
    max_connections: usize, "max-connections", |v, _| integer(v, "a number of connections");
    /// Simultaneous connections from one IP address (IPv6: one /64); past it new ones from
    /// that address are refused. 0: no per-address limit, only --max-connections.
    #[arg(long, value_name = "N", default_value_t = limits::MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: usize, "max-connections-per-ip",
        |v, _| integer(v, "a number of connections");
    /// Connection attempts per IP address per minute (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = limits::HANDSHAKES_PER_MINUTE)]
    handshakes_per_minute: u32, "handshakes-per-minute",
        |v, _| integer(v, "attempts per minute (0: unlimited)");
    /// Messages queued for one client before it is disconnected as too slow.
    #[arg(long, value_name = "N", default_value_t = limits::MAILBOX_CAPACITY)]
    mailbox: usize, "mailbox", |v, _| integer(v, "a number of messages");
    /// Only keys listed in FILE may connect (one fingerprint per line, `#` comments, like
    /// authorized_keys). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    allow: Option<PathBuf>, "allow", |v, base| file_path(v, base).map(Some);
    /// An operator's key fingerprint (repeatable; the config file's `op` is a list).
    #[arg(long = "op", value_name = "FINGERPRINT")]
    ops: Vec<String>, "op", |v, _| strings(v, "a list of fingerprints");
    /// Operators' key fingerprints, one per line. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    ops_file: Option<PathBuf>, "ops-file", |v, base| file_path(v, base).map(Some);
    /// Log filter, e.g. `info`, `debug`, `chatao_server=trace`. RUST_LOG wins when set.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String, "log-level", |v, _| string(v);
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9700 (off by default).
    /// Not authenticated: keep it on loopback or a private network.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>, "metrics",
        |v, _| parsed(v, "an address and port, such as \"127.0.0.1:9700\"").map(Some);
    /// Join a cluster of nodes serving one chat through NATS with JetStream, e.g.
    /// nats://127.0.0.1:4222 (several URLs comma-separated). Every node must use the same
    /// server key. Off by default: the server runs alone on its local store.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>, "cluster", |v, _| string(v).map(Some);
}

/// The Chatao chat server.
#[derive(Debug, Clone, Parser)]
#[command(name = "chataosrv", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Args {
    /// Every setting, as the command line gave it or at its default.
    #[command(flatten)]
    pub values: SettingArgs,
    /// Read settings from this TOML file; options given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the settings (config file and options) and the files and addresses they name,
    /// creating nothing; print every mistake, or the settings as a config file would say them;
    /// exit 0 if valid, 2 if not.
    #[arg(long)]
    pub check_config: bool,
    /// Print the server key's fingerprint and exit.
    #[arg(long)]
    pub fingerprint: bool,
    /// Print a completion script for SHELL and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
    /// Print the manual page (roff) and exit.
    #[arg(long)]
    pub man: bool,
}

/// A setting's value in TOML syntax, for [`Settings::entries`]; `None` leaves it out (an
/// optional setting not set).
trait ToToml {
    fn to_toml(&self) -> Option<String>;
}

macro_rules! to_toml_integer {
    ($($t:ty),*) => {$(
        impl ToToml for $t {
            fn to_toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
to_toml_integer!(u16, u32, u64, usize);

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

impl ToToml for String {
    fn to_toml(&self) -> Option<String> {
        Some(toml_string(self))
    }
}

impl ToToml for IpAddr {
    fn to_toml(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

impl ToToml for SocketAddr {
    fn to_toml(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

impl ToToml for PathBuf {
    fn to_toml(&self) -> Option<String> {
        Some(toml_string(&self.to_string_lossy()))
    }
}

impl<T: ToToml> ToToml for Option<T> {
    fn to_toml(&self) -> Option<String> {
        self.as_ref().and_then(ToToml::to_toml)
    }
}

impl ToToml for Vec<String> {
    fn to_toml(&self) -> Option<String> {
        let items: Vec<String> = self.iter().map(|s| toml_string(s)).collect();
        Some(format!("[{}]", items.join(", ")))
    }
}

/// Settings that a config file may change while the server runs (on SIGHUP).
pub const RELOADABLE: &[&str] = &["log-level"];

/// A setting that cannot be used, with where it came from. Each says its cause once (no
/// `source`, so a printed chain does not repeat it) and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "cannot read the config file {}: {}; {}",
        .path.display(),
        crate::access::io_reason(.cause),
        read_hint(.cause)
    )]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{}:{line}: {message}", .path.display())]
    Syntax { path: PathBuf, line: usize, message: String },
    /// A setting of the config file, at `line`.
    #[error("{}:{line}: {setting}: {message}", .path.display())]
    Setting { path: PathBuf, line: usize, setting: String, message: String },
    /// A command-line option (`port`: the PORT argument).
    #[error("{}: {message}", flag_text(.flag, .value))]
    Flag { flag: &'static str, value: String, message: String },
    /// A setting neither the file nor an option gave, at its default.
    #[error("{setting} (default {value}): {message}")]
    Default { setting: &'static str, value: String, message: String },
}

fn read_hint(cause: &std::io::Error) -> &'static str {
    match cause.kind() {
        std::io::ErrorKind::NotFound => "give the path of an existing file to --config",
        _ => "make it readable by the user that runs chataosrv",
    }
}

fn flag_text(flag: &str, value: &str) -> String {
    if flag == "port" { format!("PORT {value}") } else { format!("--{flag} {value}") }
}

/// Every mistake found in the settings, in the order of the config file's lines, then the
/// options, then the defaults. Displayed one per line.
#[derive(Debug)]
pub struct SettingsErrors(pub Vec<SettingsError>);

impl std::fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsErrors {}

impl From<SettingsError> for SettingsErrors {
    fn from(err: SettingsError) -> Self {
        SettingsErrors(vec![err])
    }
}

impl SettingsErrors {
    fn sorted(mut errors: Vec<SettingsError>) -> SettingsErrors {
        errors.sort_by_key(|e| match e {
            SettingsError::Read { .. } | SettingsError::Syntax { .. } => (0, 0),
            SettingsError::Setting { line, .. } => (0, *line),
            SettingsError::Flag { .. } => (1, 0),
            SettingsError::Default { .. } => (2, 0),
        });
        SettingsErrors(errors)
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// The config file, at this line.
    File(usize),
    /// Neither: the default.
    Default,
}

/// The command line: the parsed [`Args`] and, to know which were given, clap's matches.
#[derive(Debug, Clone)]
pub struct Cli {
    pub args: Args,
    matches: ArgMatches,
}

impl Cli {
    /// Parses the process's arguments; prints help, the version or a usage error and exits
    /// when clap says so.
    pub fn parse() -> Cli {
        let matches = Args::command().get_matches();
        match Args::from_arg_matches(&matches) {
            Ok(args) => Cli { args, matches },
            Err(e) => e.exit(),
        }
    }

    /// Parses `argv` (its first item is the program name).
    pub fn try_parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Args::command().try_get_matches_from(argv)?;
        let args = Args::from_arg_matches(&matches)?;
        Ok(Cli { args, matches })
    }

    /// No option given: every setting at its default.
    fn defaults() -> Cli {
        // Every setting has a default or is optional, so an empty command line always parses.
        #[allow(clippy::expect_used)]
        Cli::try_parse_from(["chataosrv"]).expect("an empty command line parses")
    }

    /// The flags merged over the config file, read now (so calling it again after the file
    /// changed sees the change). Checks the values only; every mistake is in the error.
    pub fn settings(&self) -> Result<Settings, SettingsErrors> {
        let resolved = self.resolve()?;
        if resolved.errors.is_empty() {
            Ok(resolved.settings)
        } else {
            Err(SettingsErrors::sorted(resolved.errors))
        }
    }

    /// [`Cli::settings`], and whether the server can start with them: the files they name exist
    /// and parse, the key loads (or its directory can be made), the data directory is writable
    /// (or can be made), the addresses can be listened on. Creates nothing. Every mistake, of
    /// the values and of what they name, is in the error.
    pub fn check(&self) -> Result<Checked, SettingsErrors> {
        let mut resolved = self.resolve()?;
        let notes = check::environment(&resolved.settings, &resolved.bad, &mut resolved.errors);
        if resolved.errors.is_empty() {
            Ok(Checked { settings: resolved.settings, notes })
        } else {
            Err(SettingsErrors::sorted(resolved.errors))
        }
    }

    /// The settings, with the mistakes found on the way; `Err` only when the config file
    /// cannot be read or is not TOML, which leaves nothing else to check.
    fn resolve(&self) -> Result<Resolved, SettingsError> {
        let (file, errors) = match &self.args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|cause| SettingsError::Read { path: path.clone(), cause })?;
                read_file(path, &text)?
            }
            None => (FileSettings::default(), Vec::new()),
        };
        Ok(Settings::merge(&self.args, &self.matches, file, errors))
    }
}

/// Settings merged, the mistakes found, and the keys whose value was a mistake (left at their
/// default, so that what they name is not checked).
struct Resolved {
    settings: Settings,
    errors: Vec<SettingsError>,
    bad: BTreeSet<&'static str>,
}

fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
}

/// Every setting, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Every value merged and checked: `data_dir` and `key_dir` are always set (to their
    /// defaults when nothing said), `default_room` is the room's name as the server spells it,
    /// `ops` holds valid fingerprints only.
    pub values: SettingArgs,
    /// Where each setting came from, for messages about it.
    pub origins: BTreeMap<&'static str, Origin>,
}

/// Parses a config file's `text` (`path` is for error messages and relative paths) into the
/// settings it says, every other one at its default. Every mistake is in the error.
pub fn parse_file(path: &Path, text: &str) -> Result<Settings, SettingsErrors> {
    let (file, errors) = read_file(path, text)?;
    let cli = Cli::defaults();
    let resolved = Settings::merge(&cli.args, &cli.matches, file, errors);
    if resolved.errors.is_empty() {
        Ok(resolved.settings)
    } else {
        Err(SettingsErrors::sorted(resolved.errors))
    }
}

/// A config file's settings: the values, the line of each setting it holds (valid or not),
/// and the settings whose value is a mistake.
#[derive(Debug, Default)]
struct FileSettings {
    path: Option<PathBuf>,
    values: FileValues,
    lines: BTreeMap<&'static str, usize>,
    bad: BTreeSet<&'static str>,
}

/// Parses a config file's `text`: the settings of the right type, and a mistake for each other
/// one. `Err` when it is not TOML at all.
fn read_file(path: &Path, text: &str) -> Result<(FileSettings, Vec<SettingsError>), SettingsError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    type Entries = std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>;
    let entries: Entries = toml::from_str(text).map_err(|e| SettingsError::Syntax {
        path: path.to_owned(),
        line: e.span().map(|s| line_of(s.start)).unwrap_or(1),
        message: e.message().trim_end().to_owned(),
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut f = FileSettings { path: Some(path.to_owned()), ..FileSettings::default() };
    // In the file's order, so that the mistakes are reported in the file's order.
    let mut entries: Vec<_> = entries.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut errors = Vec::new();
    for (key, value) in entries {
        let line = line_of(key.span().start);
        let known = KEYS.iter().find(|k| **k == key.get_ref().as_str());
        if let Some(known) = known {
            f.lines.insert(known, line);
        }
        let read = f.values.read(key.get_ref(), value.get_ref(), base);
        if let Err(message) = read.unwrap_or_else(|| Err(unknown(key.get_ref()))) {
            if let Some(known) = known {
                f.bad.insert(known);
            }
            errors.push(SettingsError::Setting {
                path: path.to_owned(),
                line,
                setting: key.get_ref().clone(),
                message,
            });
        }
    }
    Ok((f, errors))
}

fn cluster_url(s: &str) -> Result<String, String> {
    if !cfg!(feature = "cluster") {
        return Err("this chataosrv was built without cluster support (cargo feature `cluster`); \
                    build it with the default features to join a cluster"
            .into());
    }
    let ok = !s.is_empty()
        && s.split(',').all(|u| {
            let u = u.trim();
            (u.starts_with("nats://") || u.starts_with("tls://")) && u.len() > 7
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("expected NATS URLs such as \"nats://127.0.0.1:4222\", found \"{s}\""))
    }
}

fn unknown(key: &str) -> String {
    let dashed = key.replace('_', "-");
    if dashed != key && KEYS.contains(&dashed.as_str()) {
        return format!("unknown setting; did you mean `{dashed}`?");
    }
    if key == "ops" {
        return "unknown setting; did you mean `op` (a list of fingerprints)?".into();
    }
    format!("unknown setting; the settings are: {}", KEYS.join(", "))
}

fn found(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {:?}", s),
        toml::Value::Integer(i) => format!("the number {i}"),
        other if other.type_str().starts_with(['a', 'e', 'i', 'o', 'u']) => {
            format!("an {}", other.type_str())
        }
        other => format!("a {}", other.type_str()),
    }
}

fn integer<T: TryFrom<i64>>(v: &toml::Value, what: &str) -> Result<T, String> {
    match v {
        toml::Value::Integer(i) => {
            T::try_from(*i).map_err(|_| format!("{i} is out of range: expected {what}"))
        }
        other => Err(format!("expected {what}, found {}", found(other))),
    }
}

fn string(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string in quotes, found {}", found(other))),
    }
}

fn parsed<T: std::str::FromStr>(v: &toml::Value, what: &str) -> Result<T, String> {
    let s = string(v).map_err(|_| format!("expected {what}, found {}", found(v)))?;
    s.parse().map_err(|_| format!("expected {what}, found {s:?}"))
}

fn file_path(v: &toml::Value, base: &Path) -> Result<PathBuf, String> {
    let s = string(v)?;
    if s.is_empty() {
        return Err("expected a path, found an empty string".into());
    }
    Ok(base.join(s))
}

fn room(s: &str) -> Result<RoomName, String> {
    RoomName::parse(s).map_err(|e| format!("{s:?}: {e}"))
}

fn fingerprint(s: &str) -> Result<String, String> {
    parse_fingerprint(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

fn strings(v: &toml::Value, what: &str) -> Result<Vec<String>, String> {
    let items = match v {
        toml::Value::Array(items) => items.clone(),
        toml::Value::String(_) => vec![v.clone()],
        other => return Err(format!("expected {what}, found {}", found(other))),
    };
    items.iter().map(string).collect()
}

fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{s:?} is not a log filter: {e}"))
}

/// Where the server keeps its state when neither flag nor file says:
/// `$XDG_DATA_HOME/chatao`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().map(|d| d.join("chatao")).unwrap_or_else(|| PathBuf::from("chatao-data"))
}

impl Settings {
    /// The flags in `args` given on the command line (per `matches`) win over `file`, which
    /// wins over the defaults. `errors` (the file's) gains the mistakes of the merged values; a
    /// setting that is a mistake keeps its default.
    fn merge(
        args: &Args,
        matches: &ArgMatches,
        file: FileSettings,
        errors: Vec<SettingsError>,
    ) -> Resolved {
        let pick = |id: &str| given(matches, id);
        let mut values = args.values.clone();
        values.overlay(file.values, pick);
        let origins = IDS
            .iter()
            .map(|(key, id)| {
                let origin = match file.lines.get(key) {
                    _ if pick(id) => Origin::Flag,
                    Some(line) => Origin::File(*line),
                    None => Origin::Default,
                };
                (*key, origin)
            })
            .collect();
        let mut settings = Settings { config_file: file.path, values, origins };
        let (mut errors, mut bad) = (errors, file.bad);
        settings.check_values(&mut errors, &mut bad);
        Resolved { settings, errors, bad }
    }

    /// Checks what each value must satisfy beyond its type, the same whether a flag, the file or
    /// the default gave it; a mistake is said where the value came from and the setting goes
    /// back to its default. Then fills in the directories' defaults and spells the default
    /// room as the server does.
    fn check_values(&mut self, errors: &mut Vec<SettingsError>, bad: &mut BTreeSet<&'static str>) {
        // Each operator on its own: a mistaken one is left out, the others stay.
        let flag = self.origins.get("op") == Some(&Origin::Flag);
        let mut ops = std::mem::take(&mut self.values.ops);
        ops.retain(|op| match fingerprint(op) {
            Ok(_) => true,
            Err(message) => {
                bad.insert("op");
                errors.push(if flag {
                    SettingsError::Flag { flag: "op", value: op.clone(), message }
                } else {
                    self.mistake("op", message)
                });
                false
            }
        });
        self.values.ops = ops;
        let defaults = Cli::defaults().args.values;
        let mut wrong = |s: &mut Settings, key: &'static str, message: String| {
            if bad.insert(key) {
                errors.push(s.mistake(key, message));
            }
            s.values.reset(key, &defaults);
        };
        match room(&self.values.default_room) {
            Ok(room) => self.values.default_room = room.as_str().to_owned(),
            Err(m) => wrong(self, "default-room", m),
        }
        if let Err(m) = log_filter(&self.values.log_level) {
            wrong(self, "log-level", m);
        }
        if let Some(url) = &self.values.cluster
            && let Err(m) = cluster_url(url)
        {
            wrong(self, "cluster", m);
        }
        let most_text = limits::MAX_RECORD_BYTES - 1024;
        let text = self.values.max_text_bytes;
        if text == 0 || text as usize > most_text {
            let max = limits::MAX_RECORD_BYTES;
            wrong(
                self,
                "max-text-bytes",
                format!(
                    "{text} is out of range: a message record is at most {max} bytes with its \
                     JSON around the text, so give 1 to {most_text}"
                ),
            );
        }
        if self.values.max_connections == 0 {
            wrong(
                self,
                "max-connections",
                format!(
                    "0 would refuse every connection; give the most connections to hold at once \
                     (default {})",
                    limits::MAX_CONNECTIONS
                ),
            );
        }
        let data_dir = self.data_dir();
        self.values.key_dir = Some(self.key_dir());
        self.values.data_dir = Some(data_dir);
    }

    /// A mistake in setting `key`, said where its value came from: the config file's line, the
    /// option, or the default.
    fn mistake(&self, key: &'static str, message: String) -> SettingsError {
        let value = || {
            let entry = self.entries().into_iter().find(|(k, _)| *k == key);
            let value = entry.map(|(_, v)| v).unwrap_or_default();
            // A string without its TOML quotes and escapes, as it was typed.
            match toml::from_str::<toml::Table>(&format!("v = {value}")).map(|mut t| t.remove("v"))
            {
                Ok(Some(toml::Value::String(s))) => s,
                _ => value,
            }
        };
        match self.origins.get(key).copied().unwrap_or(Origin::Default) {
            Origin::File(line) => SettingsError::Setting {
                path: self.config_file.clone().unwrap_or_default(),
                line,
                setting: key.to_owned(),
                message,
            },
            Origin::Flag => SettingsError::Flag { flag: key, value: value(), message },
            Origin::Default => SettingsError::Default { setting: key, value: value(), message },
        }
    }

    /// How to stop using the setting `key`, where it was given: "remove `allow` from the config
    /// file" or "leave out --allow".
    fn unset_hint(&self, key: &str) -> String {
        match self.origins.get(key) {
            Some(Origin::File(_)) => format!("remove `{key}` from the config file"),
            _ => format!("leave out --{key}"),
        }
    }

    /// The address to listen on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.values.listen, self.values.port)
    }

    /// Where the server keeps its state: `data-dir`, else [`default_data_dir`].
    pub fn data_dir(&self) -> PathBuf {
        self.values.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// Where the server key is: `key-dir`, else `serverKey` in [`Settings::data_dir`].
    pub fn key_dir(&self) -> PathBuf {
        self.values.key_dir.clone().unwrap_or_else(|| self.data_dir().join("serverKey"))
    }

    /// The room every user starts in (checked when the settings were merged).
    pub fn default_room(&self) -> RoomName {
        RoomName::parse(&self.values.default_room).unwrap_or_else(|_| RoomName::lobby())
    }

    /// Copies every setting into `config` (built with the key and [`Settings::data_dir`]).
    pub fn apply(&self, config: &mut Config) {
        let v = &self.values;
        config.default_room = self.default_room();
        config.history_on_join = v.history;
        config.retention.max_messages = v.retention_messages;
        config.retention.max_age =
            (v.retention_days > 0).then(|| Duration::from_secs(v.retention_days * 86_400));
        config.limits.rate_per_sec = v.rate_per_sec;
        config.limits.burst = v.burst;
        config.limits.max_text_bytes = v.max_text_bytes;
        config.max_connections = v.max_connections;
        config.max_connections_per_ip = v.max_connections_per_ip;
        config.handshakes_per_minute = v.handshakes_per_minute;
        config.mailbox_capacity = v.mailbox.max(1);
        config.access.allow_file = v.allow.clone();
        config.access.ops_file = v.ops_file.clone();
        config.access.ops = v.ops.clone();
        config.cluster = v.cluster.as_ref().map(crate::cluster::ClusterConfig::new);
    }

    /// Every setting as `(key, value in TOML syntax)`, in [`KEYS`] order; unset optional
    /// settings are left out.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        self.values.entries()
    }

    /// The settings as a config file that says exactly them.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.entries() {
            let _ = writeln!(out, "{key} = {value}");
        }
        out
    }

    /// The keys whose values differ between `self` and `newer`, in [`KEYS`] order.
    pub fn changed(&self, newer: &Settings) -> Vec<&'static str> {
        let (old, new) = (self.entries(), newer.entries());
        KEYS.iter()
            .copied()
            .filter(|k| {
                let find = |e: &[(&str, String)]| {
                    e.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
                };
                find(&old) != find(&new)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OP: &str = "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4";

    #[test]
    fn a_cluster_url_is_checked_or_refused_by_a_build_without_the_cluster() {
        let url = cluster_url("nats://127.0.0.1:4222");
        if cfg!(feature = "cluster") {
            assert_eq!(url.unwrap(), "nats://127.0.0.1:4222");
            assert!(cluster_url("http://x").unwrap_err().contains("expected NATS URLs"));
        } else {
            assert!(url.unwrap_err().contains("built without cluster support"));
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatao.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn settings(argv: &[&str]) -> Result<Settings, SettingsErrors> {
        let argv = std::iter::once("chataosrv").chain(argv.iter().copied());
        Cli::try_parse_from(argv).unwrap().settings()
    }

    #[test]
    fn defaults_match_the_limits_and_port_7000() {
        let s = settings(&["--data-dir", "/d"]).unwrap();
        assert_eq!(s.addr(), "0.0.0.0:7000".parse().unwrap());
        assert_eq!(s.key_dir(), Path::new("/d/serverKey"));
        assert_eq!(s.values.max_connections, limits::MAX_CONNECTIONS);
        assert_eq!(s.values.mailbox, limits::MAILBOX_CAPACITY);
        assert_eq!(s.default_room(), RoomName::lobby());
        assert_eq!(s.values.metrics, None);
        assert_eq!(s.values.log_level, "info");
    }

    #[test]
    fn every_key_is_a_flag_and_every_setting_flag_is_a_key() {
        let cmd = Args::command();
        let ids: Vec<String> = cmd.get_arguments().map(|a| a.get_id().to_string()).collect();
        for key in KEYS {
            let id = if *key == "op" { "ops".to_owned() } else { key.replace('-', "_") };
            assert!(ids.contains(&id), "{key} has no flag");
        }
        let actions =
            ["config", "check_config", "fingerprint", "completions", "man", "help", "version"];
        for id in &ids {
            let key = if id == "ops" { "op".to_owned() } else { id.replace('_', "-") };
            assert!(
                KEYS.contains(&key.as_str()) || actions.contains(&id.as_str()),
                "{id} is not a key"
            );
        }
    }

    #[test]
    fn the_file_sets_every_setting_and_flags_override_it() {
        let (dir, path) = file(&format!(
            "# a comment\nport = 7100\nlisten = \"127.0.0.1\"\ndata-dir = \"state\"\n\
             default-room = \"#Main\"\nhistory = 10\nretention-messages = 5\nretention-days = 2\n\
             rate-per-sec = 3\nburst = 4\nmax-text-bytes = 100\nmax-connections = 9\n\
             max-connections-per-ip = 8\nhandshakes-per-minute = 7\nmailbox = 6\n\
             allow = \"/etc/chatao/allow\"\nop = [\"{OP}\"]\nops-file = \"ops\"\n\
             log-level = \"debug\"\nmetrics = \"127.0.0.1:9700\"\n"
        ));
        let cfg = path.to_str().unwrap();
        let s = settings(&["--config", cfg]).unwrap();
        assert_eq!(s.addr(), "127.0.0.1:7100".parse().unwrap());
        assert_eq!(s.data_dir(), dir.path().join("state"), "relative to the file");
        assert_eq!(s.key_dir(), dir.path().join("state/serverKey"));
        assert_eq!(s.default_room().as_str(), "#main");
        assert_eq!(
            (
                s.values.history,
                s.values.retention_messages,
                s.values.retention_days,
                s.values.rate_per_sec,
                s.values.burst
            ),
            (10, 5, 2, 3, 4)
        );
        assert_eq!(
            (
                s.values.max_text_bytes,
                s.values.max_connections,
                s.values.max_connections_per_ip,
                s.values.handshakes_per_minute
            ),
            (100, 9, 8, 7)
        );
        assert_eq!(s.values.mailbox, 6);
        assert_eq!(s.values.allow.as_deref(), Some(Path::new("/etc/chatao/allow")));
        assert_eq!(s.values.ops, vec![OP.to_owned()]);
        assert_eq!(s.values.ops_file, Some(dir.path().join("ops")));
        assert_eq!(s.values.log_level, "debug");
        assert_eq!(s.values.metrics, Some("127.0.0.1:9700".parse().unwrap()));

        let s = settings(&[
            "--config",
            cfg,
            "7200",
            "--max-connections",
            "20000",
            "--mailbox",
            "4096",
            "--log-level",
            "warn",
            "--default-room",
            "#lobby",
            "--metrics",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(s.values.port, 7200);
        assert_eq!(s.values.max_connections, 20_000, "a flag equal to the default still wins");
        assert_eq!(s.values.mailbox, 4096);
        assert_eq!(s.values.log_level, "warn");
        assert_eq!(s.default_room(), RoomName::lobby());
        assert_eq!(s.values.metrics, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(s.values.burst, 4, "what no flag says still comes from the file");
    }

    #[test]
    fn the_printed_settings_read_back_the_same() {
        let s = settings(&["--data-dir", "/var/lib/chatao", "--op", OP, "--metrics", "[::1]:9700"])
            .unwrap();
        let (_dir, path) = file(&s.to_toml());
        let again = settings(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(Settings { config_file: None, origins: s.origins.clone(), ..again }, s);
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_setting() {
        let cases = [
            (
                "port = 7000\nmax-connections = \"many\"\n",
                ":2: max-connections: expected a number of connections, found the string \"many\"",
            ),
            ("\n\nport = 70000\n", ":3: port: 70000 is out of range"),
            (
                "max_connections = 5\n",
                ":1: max_connections: unknown setting; did you mean `max-connections`?",
            ),
            ("prot = 5\n", ":1: prot: unknown setting; the settings are: port,"),
            ("[limits]\nburst = 3\n", ":1: limits: unknown setting"),
            ("listen = \"localhost\"\n", ":1: listen: expected an IP address"),
            ("default-room = \"lobby\"\n", ":1: default-room: \"lobby\":"),
            ("op = [\"SHA256:x\"]\n", ":1: op: "),
            ("log-level = \"[\"\n", ":1: log-level: \"[\" is not a log filter"),
            ("metrics = 9700\n", ":1: metrics: expected an address and port"),
            ("port = 1\nport = 2\n", ":2: duplicate key"),
            ("port = = 1\n", ":1: "),
        ];
        for (text, expected) in cases {
            let (_dir, path) = file(text);
            let err = settings(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
            let want = format!("{}{expected}", path.display());
            assert!(err.starts_with(&want), "{text:?}:\n got  {err}\n want {want}");
        }
        let err = settings(&["--config", "/nonexistent/chatao.toml"]).unwrap_err().to_string();
        assert!(err.starts_with("cannot read the config file /nonexistent/chatao.toml"), "{err}");
    }

    #[test]
    fn every_mistake_of_the_file_and_the_options_is_reported_in_order() {
        let (_dir, path) = file(
            "port = \"x\"\nmax-connections = 0\nprot = 1\nmax-text-bytes = 20000\nburst = 3\n",
        );
        let err = settings(&["--config", path.to_str().unwrap(), "--op", "nope"]).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(|e| e.to_string()).collect();
        let p = path.display();
        let want = [
            format!("{p}:1: port: "),
            format!("{p}:2: max-connections: 0 would refuse every connection"),
            format!("{p}:3: prot: unknown setting"),
            format!("{p}:4: max-text-bytes: 20000 is out of range"),
            "--op nope: ".to_owned(),
        ];
        assert_eq!(lines.len(), want.len(), "{lines:#?}");
        for (line, want) in lines.iter().zip(&want) {
            assert!(line.starts_with(want.as_str()), "got {line}\nwant {want}");
        }
        assert_eq!(err.to_string().lines().count(), 5, "one mistake per line");
    }

    #[test]
    fn a_mistake_found_later_is_said_where_the_setting_came_from() {
        let (_dir, path) = file("\nmax-connections = 0\n");
        let err = settings(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2: max-connections: ", path.display())), "{err}");
        let err = settings(&["--max-connections", "0"]).unwrap_err().to_string();
        assert!(err.starts_with("--max-connections 0: 0 would refuse"), "{err}");
        let err = settings(&["--max-text-bytes", "0"]).unwrap_err().to_string();
        assert!(err.starts_with("--max-text-bytes 0: "), "{err}");
        let s = settings(&["--allow", "/a"]).unwrap();
        assert_eq!(s.unset_hint("allow"), "leave out --allow");
        assert_eq!(
            s.mistake("data-dir", "m".into()).to_string(),
            format!("data-dir (default {}): m", s.data_dir().display())
        );
        assert_eq!(s.mistake("port", "m".into()).to_string(), "port (default 7000): m");
        let s = settings(&["8000"]).unwrap();
        assert_eq!(s.mistake("port", "m".into()).to_string(), "PORT 8000: m");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let err = settings(&["--default-room", "lobby"]).unwrap_err().to_string();
        assert!(err.starts_with("--default-room lobby: "), "{err}");
        let err = settings(&["--op", "nope"]).unwrap_err().to_string();
        assert!(err.starts_with("--op nope: "), "{err}");
        assert!(Cli::try_parse_from(["chataosrv", "--max-connections", "x"]).is_err());
    }

    #[test]
    fn apply_copies_into_the_config() {
        let s = settings(&["--retention-days", "2", "--mailbox", "0", "--op", OP, "--burst", "9"])
            .unwrap();
        let mut config = Config::new(chatao_transport::Keypair::generate().unwrap(), "/d".into());
        s.apply(&mut config);
        assert_eq!(config.retention.max_age, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(config.mailbox_capacity, 1, "an empty mailbox could hold nothing");
        assert_eq!(config.access.ops, vec![OP.to_owned()]);
        assert_eq!(config.limits.burst, 9);
    }

    #[test]
    fn changed_lists_the_settings_that_differ() {
        let a = settings(&["--data-dir", "/d"]).unwrap();
        let b = settings(&["--data-dir", "/d", "--log-level", "debug", "--burst", "1"]).unwrap();
        assert_eq!(a.changed(&b), vec!["burst", "log-level"]);
        assert!(a.changed(&a).is_empty());
    }
}
