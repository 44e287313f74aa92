//! The client's config file: `$XDG_CONFIG_HOME/chatao/config.toml` (`~/.config/chatao/
//! config.toml`; `--config FILE` elsewhere), and the ignore list the client writes itself
//! (`ignores.toml` beside it).
//!
//! Precedence: a command-line flag, then the environment, then the file, then the default;
//! [`Settings::origins`] says which gave each setting (`chatao --check-config` prints them).
//! A missing file is the defaults; an unreadable one, a syntax error, an unknown setting (with
//! the closest known name), a wrong type (with what was expected) or a bad value is a
//! [`ConfigError`] naming the file, the line and the setting.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::Color;
use serde::Deserialize;

use crate::app::notify::{NotifySettings, Osc};
use crate::filter::HideJoins;

/// The config file's name in the client's config directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The ignore list the client writes (`/ignore`), beside the config file.
pub const IGNORES_FILE: &str = "ignores.toml";

/// A mistake in the config file (or the ignore file).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {cause}", .path.display())]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{}:{line}: {message}", .path.display())]
    Syntax { path: PathBuf, line: usize, message: String },
    #[error("{}:{line}: {setting}: {message}", .path.display())]
    Setting { path: PathBuf, line: usize, setting: String, message: String },
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// The config file, at this line.
    File(usize),
    /// This environment variable.
    Env(&'static str),
    /// This command-line flag or argument.
    Flag(&'static str),
}

/// How times are written, in the TUI and in line mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// `%H:%M`.
    Minutes,
    /// `%H:%M:%S`.
    #[default]
    Seconds,
}

impl TimeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeFormat::Minutes => "%H:%M",
            TimeFormat::Seconds => "%H:%M:%S",
        }
    }
}

impl FromStr for TimeFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<TimeFormat, String> {
        match s {
            "%H:%M" => Ok(TimeFormat::Minutes),
            "%H:%M:%S" => Ok(TimeFormat::Seconds),
            _ => Err(format!("expected \"%H:%M\" or \"%H:%M:%S\", found {s:?}")),
        }
    }
}

/// The `[theme]` colours: the styles the UI draws in (see `ui/style.rs`). `None`: the built-in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Theme {
    pub time: Option<Color>,
    pub join: Option<Color>,
    pub leave: Option<Color>,
    pub notice: Option<Color>,
    pub error: Option<Color>,
    pub private: Option<Color>,
    pub mention: Option<Color>,
    pub title_bar: Option<Color>,
    pub status_bar: Option<Color>,
    /// The day-change lines (and the notice of dropped lines): foreground.
    pub day_change: Option<Color>,
    /// The read marker, search and "more below" markers: background.
    pub marker: Option<Color>,
    /// The input line's prompt (`[alice] `, the search's state): foreground.
    pub prompt: Option<Color>,
    /// A buffer with unread lines in the status bar's activity list: foreground.
    pub activity: Option<Color>,
    /// A buffer with a mention (or a private message) in the activity list: foreground.
    pub activity_mention: Option<Color>,
}

/// The `[logs]` settings: per-buffer chat logs (see [`crate::chatlog`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    pub enabled: bool,
    /// Log end-to-end encrypted rooms (and private messages in them) too.
    pub e2e: bool,
    pub dir: PathBuf,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file read (or that would be, when missing).
    pub path: PathBuf,
    /// Whether it existed.
    pub file_found: bool,
    /// The server list, as ADDRESS or CHATAO_SERVERS take it.
    pub servers: Option<String>,
    pub port: Option<u16>,
    pub nickname: Option<String>,
    pub key_dir: PathBuf,
    pub highlight: Vec<String>,
    /// The config's ignore list (nicknames or fingerprints); `/ignore` writes [`IGNORES_FILE`].
    pub ignore: Vec<String>,
    pub notify: NotifySettings,
    pub timestamp: TimeFormat,
    pub theme: Theme,
    pub hide_joins_parts: HideJoins,
    /// Per room `hide_joins_parts` (`[rooms."#name"]`).
    pub rooms: BTreeMap<String, HideJoins>,
    /// A fixed set of rooms for a bot (`--rooms`): joined instead of those the server
    /// remembers for the key. `None`: the remembered rooms.
    pub fixed_rooms: Option<Vec<chatao_proto::RoomName>>,
    pub bell: bool,
    /// What opens a link for `/url N` in the full-screen UI: a program and its own options,
    /// run directly (never by a shell) with the link's target as one more argument
    /// ([`crate::app::Effect::OpenUrl`]). Empty: `/url N` only shows the link.
    pub url_command: Vec<String>,
    pub logs: Logs,
    /// Where each setting came from, by its name in the file.
    pub origins: BTreeMap<&'static str, Origin>,
}

/// Most rooms in `fixed_rooms`: a server's default limit of rooms per user (more could never
/// all be joined).
pub const MAX_FIXED_ROOMS: usize = 50;

/// The settings, their names in the file, in the order `--check-config` prints them.
pub const KEYS: &[&str] = &[
    "servers",
    "port",
    "nickname",
    "key_dir",
    "highlight",
    "ignore",
    "timestamp",
    "bell",
    "url_command",
    "hide_joins_parts",
    "rooms",
    "fixed_rooms",
    "notify",
    "theme",
    "logs",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    servers: Option<String>,
    port: Option<u16>,
    nickname: Option<String>,
    key_dir: Option<PathBuf>,
    highlight: Option<Vec<String>>,
    ignore: Option<Vec<String>>,
    timestamp: Option<String>,
    bell: Option<bool>,
    url_command: Option<Command>,
    hide_joins_parts: Option<HideJoins>,
    rooms: Option<BTreeMap<String, RoomSettings>>,
    fixed_rooms: Option<Vec<String>>,
    notify: Option<NotifyFile>,
    theme: Option<BTreeMap<String, String>>,
    logs: Option<LogsFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomSettings {
    hide_joins_parts: Option<HideJoins>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    enabled: Option<bool>,
    /// `"9"`, `"777"` or `"off"`.
    osc: Option<String>,
    command: Option<Command>,
    e2e_text: Option<bool>,
}

/// A command in the file: a line split at white space (never given to a shell), or a list
/// of arguments.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Command {
    Line(String),
    Args(Vec<String>),
}

impl Command {
    /// The program and its arguments.
    fn argv(self) -> Vec<String> {
        match self {
            Command::Line(l) => l.split_whitespace().map(str::to_owned).collect(),
            Command::Args(a) => a,
        }
    }
}

/// Why `url_command`'s `argv` cannot be run as meant, if it cannot: it is run directly, the
/// link added as its last argument, so shell syntax or a placeholder would reach the program
/// as a literal argument.
fn url_command_problem(argv: &[String]) -> Option<String> {
    if argv.first().is_none_or(|p| p.trim().is_empty()) {
        return Some("an empty command; for example url_command = \"xdg-open\"".to_owned());
    }
    let shell = |a: &str| {
        ["|", "||", "&", "&&", ";", "<", ">", ">>"].contains(&a)
            || a.starts_with('$')
            || a.contains("$(")
            || a.contains('`')
            || a.ends_with(';')
            || a.ends_with('&')
    };
    if let Some(a) = argv.iter().find(|a| shell(a)) {
        return Some(format!(
            "{a:?} is shell syntax, but the command is run directly, never by a shell: give \
             a program and its own options"
        ));
    }
    if let Some(a) = argv.iter().find(|a| a.contains("{url}")) {
        return Some(format!(
            "{a:?}: the link is added as the last argument, nothing is replaced; leave out {{url}}"
        ));
    }
    None
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsFile {
    enabled: Option<bool>,
    e2e: Option<bool>,
    dir: Option<PathBuf>,
}

const THEME_KEYS: &[&str] = &[
    "time",
    "join",
    "leave",
    "notice",
    "error",
    "private",
    "mention",
    "title_bar",
    "status_bar",
    "day_change",
    "marker",
    "prompt",
    "activity",
    "activity_mention",
];

/// `$XDG_CONFIG_HOME/chatao` (`~/.config/chatao`).
pub fn config_dir() -> PathBuf {
    dirs::config_dir().map(|d| d.join("chatao")).unwrap_or_else(|| PathBuf::from("."))
}

/// The default config file.
pub fn default_path() -> PathBuf {
    config_dir().join(CONFIG_FILE)
}

/// `$XDG_STATE_HOME/chatao/logs` (`~/.local/state/chatao/logs`).
pub fn default_logs_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local").join("state")))
        .map(|d| d.join("chatao").join("logs"))
        .unwrap_or_else(|| PathBuf::from("logs"))
}

impl Settings {
    /// The defaults, for a config file at `path` that does not exist.
    pub fn defaults(path: PathBuf) -> Settings {
        let mut origins = BTreeMap::new();
        for k in KEYS {
            origins.insert(*k, Origin::Default);
        }
        Settings {
            path,
            file_found: false,
            servers: None,
            port: None,
            nickname: None,
            key_dir: config_dir().join("clientKey"),
            url_command: Vec::new(),
            highlight: Vec::new(),
            ignore: Vec::new(),
            notify: NotifySettings::default(),
            timestamp: TimeFormat::default(),
            theme: Theme::default(),
            hide_joins_parts: HideJoins::Off,
            rooms: BTreeMap::new(),
            fixed_rooms: None,
            bell: true,
            logs: Logs { enabled: false, e2e: false, dir: default_logs_dir() },
            origins,
        }
    }

    /// Reads the config file at `path`: missing is the defaults.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Settings::parse(path, &text),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Settings::defaults(path.to_owned())),
            Err(cause) => Err(ConfigError::Read { path: path.to_owned(), cause }),
        }
    }

    /// Parses a config file's `text` (`path` names it in errors and anchors relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let file: FileSettings = toml::from_str(text).map_err(|e| de_error(path, text, &e))?;
        let mut s = Settings::defaults(path.to_owned());
        s.file_found = true;
        let base = path.parent().unwrap_or(Path::new(""));
        let at = |section: Option<&str>, key: &str| Origin::File(locate(text, section, key));
        let bad = |section: Option<&str>, key: &str, message: String| {
            let setting = match section {
                Some(sec) => format!("{sec}.{key}"),
                None => key.to_owned(),
            };
            ConfigError::Setting {
                path: path.to_owned(),
                line: locate(text, section, key),
                setting,
                message,
            }
        };
        if let Some(v) = file.servers {
            if let Err(e) = crate::servers::parse_list(&v, crate::servers::DEFAULT_PORT) {
                return Err(bad(None, "servers", e.to_string()));
            }
            s.servers = Some(v);
            s.origins.insert("servers", at(None, "servers"));
        }
        if let Some(v) = file.port {
            s.port = Some(v);
            s.origins.insert("port", at(None, "port"));
        }
        if let Some(v) = file.nickname {
            if let Err(e) = chatao_proto::Nick::parse(&v) {
                return Err(bad(None, "nickname", e.to_string()));
            }
            s.nickname = Some(v);
            s.origins.insert("nickname", at(None, "nickname"));
        }
        if let Some(v) = file.key_dir {
            s.key_dir = base.join(expand_home(&v));
            s.origins.insert("key_dir", at(None, "key_dir"));
        }
        if let Some(v) = file.highlight {
            if let Some(w) = v.iter().find(|w| w.trim().is_empty()) {
                return Err(bad(None, "highlight", format!("an empty word ({w:?})")));
            }
            s.highlight = v;
            s.origins.insert("highlight", at(None, "highlight"));
        }
        if let Some(v) = file.ignore {
            s.ignore = v;
            s.origins.insert("ignore", at(None, "ignore"));
        }
        if let Some(v) = file.timestamp {
            s.timestamp = v.parse().map_err(|m| bad(None, "timestamp", m))?;
            s.origins.insert("timestamp", at(None, "timestamp"));
        }
        if let Some(v) = file.bell {
            s.bell = v;
            s.origins.insert("bell", at(None, "bell"));
        }
        if let Some(v) = file.url_command {
            let argv = v.argv();
            if let Some(m) = url_command_problem(&argv) {
                return Err(bad(None, "url_command", m));
            }
            s.url_command = argv;
            s.origins.insert("url_command", at(None, "url_command"));
        }
        if let Some(v) = file.hide_joins_parts {
            s.hide_joins_parts = v;
            s.origins.insert("hide_joins_parts", at(None, "hide_joins_parts"));
        }
        if let Some(rooms) = file.rooms {
            for (room, r) in rooms {
                if chatao_proto::RoomName::parse(&room).is_err() {
                    return Err(bad(
                        None,
                        "rooms",
                        format!("{room:?} is not a room name (write [rooms.\"#name\"])"),
                    ));
                }
                if let Some(h) = r.hide_joins_parts {
                    s.rooms.insert(room, h);
                }
            }
            s.origins.insert("rooms", Origin::File(locate_header(text, "rooms")));
        }
        if let Some(v) = file.fixed_rooms {
            let mut rooms = Vec::with_capacity(v.len());
            for room in &v {
                match chatao_proto::RoomName::parse(room) {
                    Ok(r) if !rooms.contains(&r) => rooms.push(r),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(bad(None, "fixed_rooms", format!("{room:?}: {e}")));
                    }
                }
            }
            if rooms.len() > MAX_FIXED_ROOMS {
                let (n, most) = (rooms.len(), MAX_FIXED_ROOMS);
                return Err(bad(None, "fixed_rooms", format!("{n} rooms; at most {most}")));
            }
            s.fixed_rooms = Some(rooms);
            s.origins.insert("fixed_rooms", at(None, "fixed_rooms"));
        }
        if let Some(n) = file.notify {
            let sec = Some("notify");
            if let Some(v) = n.enabled {
                s.notify.enabled = v;
            }
            if let Some(v) = n.e2e_text {
                s.notify.e2e_text = v;
            }
            if let Some(v) = n.osc {
                s.notify.osc = match v.as_str() {
                    "9" => Osc::Nine,
                    "777" => Osc::SevenSevenSeven,
                    "off" => Osc::Off,
                    _ => {
                        return Err(bad(
                            sec,
                            "osc",
                            format!("expected \"9\", \"777\" or \"off\", found {v:?}"),
                        ));
                    }
                };
            }
            if let Some(c) = n.command {
                s.notify.command = c.argv();
            }
            s.origins.insert("notify", Origin::File(locate_header(text, "notify")));
        }
        if let Some(theme) = file.theme {
            for (key, value) in theme {
                let Some(&name) = THEME_KEYS.iter().find(|k| **k == key) else {
                    return Err(bad(Some("theme"), &key, unknown_message(&key, THEME_KEYS)));
                };
                let colour = parse_colour(&value).map_err(|m| bad(Some("theme"), &key, m))?;
                let slot = match name {
                    "time" => &mut s.theme.time,
                    "join" => &mut s.theme.join,
                    "leave" => &mut s.theme.leave,
                    "notice" => &mut s.theme.notice,
                    "error" => &mut s.theme.error,
                    "private" => &mut s.theme.private,
                    "mention" => &mut s.theme.mention,
                    "title_bar" => &mut s.theme.title_bar,
                    "day_change" => &mut s.theme.day_change,
                    "marker" => &mut s.theme.marker,
                    "prompt" => &mut s.theme.prompt,
                    "activity" => &mut s.theme.activity,
                    "activity_mention" => &mut s.theme.activity_mention,
                    _ => &mut s.theme.status_bar,
                };
                *slot = Some(colour);
            }
            s.origins.insert("theme", Origin::File(locate_header(text, "theme")));
        }
        if let Some(l) = file.logs {
            if let Some(v) = l.enabled {
                s.logs.enabled = v;
            }
            if let Some(v) = l.e2e {
                s.logs.e2e = v;
            }
            if let Some(v) = l.dir {
                s.logs.dir = base.join(expand_home(&v));
            }
            s.origins.insert("logs", Origin::File(locate_header(text, "logs")));
        }
        Ok(s)
    }

    /// The setting `key` was given by `origin` (a flag or the environment).
    pub fn given(&mut self, key: &'static str, origin: Origin) {
        self.origins.insert(key, origin);
    }

    /// Where `key` came from, in words.
    pub fn origin_text(&self, key: &str) -> String {
        match self.origins.get(key).unwrap_or(&Origin::Default) {
            Origin::Default => "default".to_owned(),
            Origin::File(line) => format!("file {}:{line}", self.path.display()),
            Origin::Env(var) => format!("env {var}"),
            Origin::Flag(flag) => format!("flag {flag}"),
        }
    }

    /// The settings in force, one per line with where each came from (`--check-config`).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let found = if self.file_found { "" } else { " (not found: defaults)" };
        let _ = writeln!(out, "# config file: {}{found}", self.path.display());
        let list = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let opt =
            |v: &Option<String>| v.as_ref().map(|s| format!("{s:?}")).unwrap_or("(none)".into());
        let mut line = |key: &'static str, value: String| {
            let _ = writeln!(out, "{key} = {value}    # {}", self.origin_text(key));
        };
        line("servers", opt(&self.servers));
        line("port", self.port.map(|p| p.to_string()).unwrap_or("(none: 7000)".into()));
        line("nickname", opt(&self.nickname));
        line("key_dir", format!("{:?}", self.key_dir.display().to_string()));
        line("highlight", list(&self.highlight));
        line("ignore", list(&self.ignore));
        line("timestamp", format!("{:?}", self.timestamp.as_str()));
        line("bell", self.bell.to_string());
        let url_command = match self.url_command.as_slice() {
            [] => "(none: /url N shows a link, opens nothing)".to_owned(),
            argv => list(argv),
        };
        line("url_command", url_command);
        line("hide_joins_parts", format!("{:?}", self.hide_joins_parts.as_str()));
        let rooms: Vec<String> =
            self.rooms.iter().map(|(r, h)| format!("{r:?} = {:?}", h.as_str())).collect();
        line("rooms", format!("{{ {} }}", rooms.join(", ")));
        let fixed = match &self.fixed_rooms {
            Some(v) => list(&v.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>()),
            None => "(none: the rooms the server remembers)".to_owned(),
        };
        line("fixed_rooms", fixed);
        let osc = match self.notify.osc {
            Osc::Off => "off",
            Osc::Nine => "9",
            Osc::SevenSevenSeven => "777",
        };
        line(
            "notify",
            format!(
                "{{ enabled = {}, osc = {osc:?}, command = {}, e2e_text = {} }}",
                self.notify.enabled,
                list(&self.notify.command),
                self.notify.e2e_text
            ),
        );
        let t = &self.theme;
        let theme: Vec<String> = [
            ("time", t.time),
            ("join", t.join),
            ("leave", t.leave),
            ("notice", t.notice),
            ("error", t.error),
            ("private", t.private),
            ("mention", t.mention),
            ("title_bar", t.title_bar),
            ("status_bar", t.status_bar),
            ("day_change", t.day_change),
            ("marker", t.marker),
            ("prompt", t.prompt),
            ("activity", t.activity),
            ("activity_mention", t.activity_mention),
        ]
        .iter()
        .filter_map(|(k, c)| c.map(|c| format!("{k} = \"{c}\"")))
        .collect();
        line("theme", format!("{{ {} }}", theme.join(", ")));
        line(
            "logs",
            format!(
                "{{ enabled = {}, e2e = {}, dir = {:?} }}",
                self.logs.enabled,
                self.logs.e2e,
                self.logs.dir.display().to_string()
            ),
        );
        out
    }

    /// The command line's positional arguments (ADDRESS [PORT] NICKNAME) completed from the
    /// file: a nickname not given is the file's `nickname`; a server list not given (nor by
    /// CHATAO_SERVERS, `env`) is the file's `servers` with its `port`. Returns the arguments
    /// and the environment's list for [`crate::servers::from_args`], and notes the origins.
    pub fn command_line(
        &mut self,
        mut args: Vec<String>,
        env: Option<&str>,
    ) -> (Vec<String>, Option<String>) {
        let env = env.filter(|v| !v.trim().is_empty()).map(str::to_owned);
        if args.len() >= 2 {
            self.servers = Some(args[0].clone());
            self.given("servers", Origin::Flag("ADDRESS"));
            if args.len() == 3 {
                self.port = args[1].parse().ok();
                self.given("port", Origin::Flag("PORT"));
            }
            self.nickname = args.last().cloned();
            self.given("nickname", Origin::Flag("NICKNAME"));
            return (args, env);
        }
        if args.len() == 1 {
            self.nickname = Some(args[0].clone());
            self.given("nickname", Origin::Flag("NICKNAME"));
        } else if let Some(nick) = &self.nickname {
            args.push(nick.clone());
        } else {
            return (args, env);
        }
        if let Some(list) = env {
            self.servers = Some(list.clone());
            self.given("servers", Origin::Env(crate::servers::SERVERS_ENV));
            return (args, Some(list));
        }
        if let Some(list) = &self.servers {
            let nick = args.pop().unwrap_or_default();
            args = vec![list.clone()];
            if let Some(port) = self.port {
                args.push(port.to_string());
            }
            args.push(nick);
        }
        (args, None)
    }

    /// The full-screen UI's filters: the config's and `ignores.toml`'s ignores, highlight
    /// words, hidden joins/parts. A broken `ignores.toml` is traced and left out.
    pub fn filters(&self) -> crate::filter::Filters {
        let file = self.path.parent().unwrap_or(Path::new(".")).join(IGNORES_FILE);
        let saved = load_ignores(&file).unwrap_or_else(|e| {
            tracing::warn!(cause = %e, "ignore file not read");
            Vec::new()
        });
        crate::filter::Filters {
            ignores: crate::filter::Ignores::new(
                self.ignore.iter().chain(saved.iter()).map(String::as_str),
            ),
            highlight: self.highlight.clone(),
            hide: self.hide_joins_parts,
            rooms: self.rooms.clone(),
            smart: Default::default(),
            ignores_file: Some(file),
            from_config: self.ignore.clone(),
            saved,
        }
    }

    /// Whether the full-screen UI shows seconds: only when the file sets
    /// `timestamp = "%H:%M:%S"` (its own default is `%H:%M`, line mode's `%H:%M:%S`).
    pub fn tui_seconds(&self) -> bool {
        self.timestamp == TimeFormat::Seconds
            && self.origins.get("timestamp").is_some_and(|o| *o != Origin::Default)
    }

    /// `hide_joins_parts` for `room` (its override, else the global one).
    pub fn hide_joins_in(&self, room: &str) -> HideJoins {
        self.rooms.get(room).copied().unwrap_or(self.hide_joins_parts)
    }
}

/// `~/x` as the home directory's `x`.
fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), dirs::home_dir()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_owned(),
    }
}

/// A colour by name (`red`, `lightblue`, `darkgray`, ...), `#rrggbb`, or a 256-colour index.
pub fn parse_colour(s: &str) -> Result<Color, String> {
    let ok_hex = s
        .strip_prefix('#')
        .is_some_and(|h| h.len() == 6 && h.chars().all(|c| c.is_ascii_hexdigit()));
    if s.starts_with('#') && !ok_hex {
        return Err(format!("expected a colour as #rrggbb, found {s:?}"));
    }
    Color::from_str(s).map_err(|_| {
        format!(
            "expected a colour: a name (black, red, green, yellow, blue, magenta, cyan, gray, \
             darkgray, lightred, ..., white), #rrggbb or 0 to 255; found {s:?}"
        )
    })
}

/// The line (1-based) of `key` in `section` (`None`: the top level), else of the section's
/// header, else 1.
fn locate(text: &str, section: Option<&str>, key: &str) -> usize {
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(h) = l.strip_prefix('[') {
            current =
                Some(h.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_owned());
            continue;
        }
        let k = l.split('=').next().unwrap_or("").trim().trim_matches('"');
        let here = match (section, &current) {
            (None, None) => true,
            (Some(s), Some(c)) => c == s,
            _ => false,
        };
        if here && k == key && l.contains('=') {
            return i + 1;
        }
    }
    section.map(|s| locate_header(text, s)).unwrap_or(1)
}

/// The line of the first `[section...]` header (or `section =` line), else 1.
fn locate_header(text: &str, section: &str) -> usize {
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        let name = l.trim_start_matches('[').split([']', '.', '=']).next().unwrap_or("").trim();
        if name == section && (l.starts_with('[') || l.contains('=')) {
            return i + 1;
        }
    }
    1
}

/// The line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The setting at `line`: its key, prefixed with the section it is in.
fn setting_at(text: &str, line: usize) -> Option<String> {
    let mut section: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(h) = l.strip_prefix('[') {
            section =
                Some(h.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_owned());
        }
        if i + 1 == line {
            if l.starts_with('[') {
                return section;
            }
            let key = l.split('=').next()?.trim().trim_matches('"');
            if key.is_empty() {
                return None;
            }
            return Some(match section {
                Some(s) => format!("{s}.{key}"),
                None => key.to_owned(),
            });
        }
    }
    None
}

/// The known names an "unknown field" error lists, and the closest to `key`.
fn unknown_message(key: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min();
    match best {
        Some((_, k)) => format!("unknown setting; did you mean `{k}`?"),
        None => format!("unknown setting; the settings here are: {}", known.join(", ")),
    }
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// toml's error, as a [`ConfigError`] with the line and the setting.
fn de_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
    let mut message = e.message().trim_end().to_owned();
    if message.contains("untagged enum Command") {
        message = "expected a command: a string (split at spaces) or a list of strings".to_owned();
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or("").to_owned();
        let known: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
        let setting = setting_at(text, line).unwrap_or(key.clone());
        return ConfigError::Setting {
            path: path.to_owned(),
            line,
            setting,
            message: unknown_message(&key, &known),
        };
    }
    match setting_at(text, line) {
        Some(setting) if message.starts_with("invalid") || message.contains("expected") => {
            ConfigError::Setting { path: path.to_owned(), line, setting, message }
        }
        _ => ConfigError::Syntax { path: path.to_owned(), line, message },
    }
}

/// The ignore list `/ignore` keeps: `ignores.toml`, `ignore = [...]`.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct IgnoresFile {
    #[serde(default)]
    ignore: Vec<String>,
}

/// Reads the ignore file at `path` (missing: empty).
pub fn load_ignores(path: &Path) -> Result<Vec<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str::<IgnoresFile>(&text)
            .map(|f| f.ignore)
            .map_err(|e| de_error(path, &text, &e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(cause) => Err(ConfigError::Read { path: path.to_owned(), cause }),
    }
}

/// Writes `entries` as the ignore file at `path` (atomically, 0600, its directory 0700).
pub fn save_ignores(path: &Path, entries: &[String]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::chatlog::private_dir(dir)?;
    }
    let mut text = String::from(
        "# Written by chatao's /ignore and /unignore; the config file's `ignore` list adds to it.\n",
    );
    let body = toml::to_string(&IgnoresFile { ignore: entries.to_vec() }).unwrap_or_default();
    text.push_str(&body);
    chatao_transport::private_file::write_private(
        path,
        text.as_bytes(),
        chatao_transport::private_file::Publish::Replace,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String, String) {
        match Settings::parse(Path::new("/x/config.toml"), text) {
            Err(ConfigError::Setting { line, setting, message, .. }) => (line, setting, message),
            other => panic!("expected a setting error, got {other:?}"),
        }
    }

    #[test]
    fn a_full_file_is_read() {
        let s = Settings::parse(
            Path::new("/x/config.toml"),
            r##"
servers = "a:7000,b"
port = 7001
nickname = "alice"
key_dir = "keys"
highlight = ["deploy", "Bob"]
ignore = ["mallory"]
timestamp = "%H:%M"
bell = false
hide_joins_parts = "smart"
url_command = "xdg-open"

[rooms."#ops"]
hide_joins_parts = "all"

[notify]
enabled = true
command = "notify-send -u low"
e2e_text = false

[theme]
time = "darkgray"
mention = "#ff8800"

[logs]
enabled = true
dir = "/tmp/l"
"##,
        )
        .unwrap();
        assert_eq!(s.servers.as_deref(), Some("a:7000,b"));
        assert_eq!(s.port, Some(7001));
        assert_eq!(s.key_dir, PathBuf::from("/x/keys"));
        assert_eq!(s.highlight, vec!["deploy", "Bob"]);
        assert_eq!(s.timestamp, TimeFormat::Minutes);
        assert!(!s.bell);
        assert_eq!(s.hide_joins_in("#ops"), HideJoins::All);
        assert_eq!(s.hide_joins_in("#lobby"), HideJoins::Smart);
        assert_eq!(s.notify.command, vec!["notify-send", "-u", "low"]);
        assert_eq!(s.theme.mention, Some(Color::Rgb(0xff, 0x88, 0)));
        assert!(s.logs.enabled && !s.logs.e2e);
        assert_eq!(s.origins["port"], Origin::File(3));
        assert_eq!(s.origins["logs"], Origin::File(25));
        assert_eq!(s.origins["ignore"], Origin::File(7));
        assert_eq!(s.url_command, vec!["xdg-open"]);
        assert!(s.describe().contains("port = 7001    # file /x/config.toml:3"));
        assert!(s.describe().contains("url_command = [\"xdg-open\"]    # file /x/config.toml:11"));
    }

    #[test]
    fn url_command_is_a_program_and_its_options_never_a_shell_line() {
        let parse = |text: &str| Settings::parse(Path::new("/x/config.toml"), text).unwrap();
        let s = parse("url_command = \"firefox --new-tab\"\n");
        assert_eq!(s.url_command, vec!["firefox", "--new-tab"]);
        let s = parse("url_command = [\"/opt/My Browser/open\", \"-n\"]\n");
        assert_eq!(s.url_command, vec!["/opt/My Browser/open", "-n"]);
        let unset = parse("");
        assert!(unset.url_command.is_empty());
        assert!(unset.describe().contains("url_command = (none: /url N shows a link"));
        for (text, says) in [
            ("url_command = \"\"", "an empty command"),
            ("url_command = []", "an empty command"),
            ("url_command = \"firefox &\"", "never by a shell"),
            ("url_command = \"open $URL\"", "never by a shell"),
            ("url_command = \"xdg-open > /dev/null\"", "never by a shell"),
            ("url_command = [\"firefox\", \"{url}\"]", "added as the last argument"),
        ] {
            let (line, setting, message) = err(&format!("bell = true\n{text}\n"));
            assert_eq!((line, setting.as_str()), (2, "url_command"), "{text}");
            assert!(message.contains(says), "{text}: {message}");
        }
        let (line, setting, message) = err("url_command = 1\n");
        assert_eq!((line, setting.as_str()), (1, "url_command"));
        assert!(message.contains("expected a command"), "{message}");
    }

    #[test]
    fn every_theme_key_is_read_and_shown() {
        let text = THEME_KEYS
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = \"{}\"\n", 100 + i))
            .collect::<String>();
        let s = Settings::parse(Path::new("/x/config.toml"), &format!("[theme]\n{text}")).unwrap();
        assert_eq!(s.theme.prompt, Some(Color::Indexed(111)));
        assert_eq!(s.theme.activity_mention, Some(Color::Indexed(113)));
        let shown = s.describe();
        for k in THEME_KEYS {
            assert!(shown.contains(&format!("{k} = ")), "{k} not in --check-config: {shown}");
        }
    }

    #[test]
    fn fixed_rooms_are_room_names_without_repeats_and_bounded() {
        let s = Settings::parse(
            Path::new("/x/config.toml"),
            "fixed_rooms = [\"#ci\", \"#ops\", \"#ci\"]\n",
        )
        .unwrap();
        let names: Vec<&str> = s.fixed_rooms.as_ref().unwrap().iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["#ci", "#ops"]);
        assert_eq!(s.origins["fixed_rooms"], Origin::File(1));
        assert!(s.describe().contains("fixed_rooms = [\"#ci\", \"#ops\"]    # file"));
        let unset = Settings::parse(Path::new("/x/config.toml"), "").unwrap();
        assert!(unset.fixed_rooms.is_none());
        let (line, setting, message) = err("\nfixed_rooms = [\"ci\"]\n");
        assert_eq!((line, setting.as_str()), (2, "fixed_rooms"));
        assert!(message.contains("\"ci\""), "{message}");
        let many: Vec<String> = (0..=MAX_FIXED_ROOMS).map(|i| format!("\"#r{i}\"")).collect();
        let (_, setting, message) = err(&format!("fixed_rooms = [{}]\n", many.join(", ")));
        assert_eq!(setting, "fixed_rooms");
        assert!(message.contains("at most 50"), "{message}");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_a_suggestion() {
        let (line, setting, message) = err("nickname = \"a\"\nhighlights = [\"x\"]\n");
        assert_eq!((line, setting.as_str()), (2, "highlights"));
        assert!(message.contains("did you mean `highlight`"), "{message}");
        let (line, setting, message) = err("[logs]\nenabled = true\ndri = \"x\"\n");
        assert_eq!((line, setting.as_str()), (3, "logs.dri"));
        assert!(message.contains("`dir`"), "{message}");
        let (line, setting, message) = err("[theme]\nmentoin = \"red\"\n");
        assert_eq!((line, setting.as_str()), (2, "theme.mentoin"));
        assert!(message.contains("`mention`"), "{message}");
    }

    #[test]
    fn a_wrong_type_says_what_was_expected() {
        let (line, setting, message) = err("\n\nport = \"seven\"\n");
        assert_eq!((line, setting.as_str()), (3, "port"));
        assert!(message.contains("expected"), "{message}");
        let (line, setting, message) = err("[notify]\nenabled = 1\n");
        assert_eq!((line, setting.as_str()), (2, "notify.enabled"));
        assert!(message.contains("bool"), "{message}");
    }

    #[test]
    fn bad_values_are_named() {
        let (line, setting, _) = err("bell = true\ntimestamp = \"%Y\"\n");
        assert_eq!((line, setting.as_str()), (2, "timestamp"));
        let (line, setting, m) = err("hide_joins_parts = \"some\"\n");
        assert_eq!((line, setting.as_str()), (1, "hide_joins_parts"));
        assert!(m.contains("off") && m.contains("smart"), "{m}");
        let (line, setting, _) = err("[theme]\nerror = \"#12345\"\n");
        assert_eq!((line, setting.as_str()), (2, "theme.error"));
        let (line, setting, _) = err("x = 1\nnickname = \"no spaces\"\n");
        // The unknown key comes first.
        assert_eq!((line, setting.as_str()), (1, "x"));
        let (line, setting, _) = err("nickname = \"no spaces\"\n");
        assert_eq!((line, setting.as_str()), (1, "nickname"));
        let (line, setting, _) = err("\nservers = \"a:99999\"\n");
        assert_eq!((line, setting.as_str()), (2, "servers"));
        let (line, setting, _) = err("[notify]\nosc = \"8\"\n");
        assert_eq!((line, setting.as_str()), (2, "notify.osc"));
    }

    #[test]
    fn the_packaged_example_is_valid() {
        let text = include_str!("../../../packaging/chatao-client.example.toml");
        let s = Settings::parse(Path::new("/x/config.toml"), text).unwrap();
        assert_eq!(s.hide_joins_in("#lobby"), HideJoins::All);
        assert_eq!(s.hide_joins_parts, HideJoins::Smart);
        assert_eq!(s.highlight, vec!["deploy"]);
        assert_eq!(s.url_command, vec!["xdg-open"]);
    }

    #[test]
    fn a_syntax_error_has_its_line() {
        match Settings::parse(Path::new("c.toml"), "bell = true\nport = \n") {
            Err(ConfigError::Syntax { line: 2, .. }) => {}
            Err(ConfigError::Setting { line: 2, setting, .. }) if setting == "port" => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_file_is_the_defaults_and_an_unreadable_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load(&dir.path().join("none.toml")).unwrap();
        assert!(!s.file_found && s.bell && !s.logs.enabled);
        assert_eq!(s.origin_text("bell"), "default");
        // A directory cannot be read as a file.
        assert!(matches!(Settings::load(dir.path()), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn the_ignore_file_round_trips_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(IGNORES_FILE);
        assert!(load_ignores(&path).unwrap().is_empty());
        save_ignores(&path, &["SHA256:abc".to_owned(), "eve".to_owned()]).unwrap();
        assert_eq!(load_ignores(&path).unwrap(), vec!["SHA256:abc", "eve"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
