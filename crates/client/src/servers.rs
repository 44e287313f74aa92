//! The servers a client may use: one, or the nodes of one cluster (which serve the same chat and
//! all present the same key). This module owns the list as the user writes it
//! (`host1:7000,[::1]:7001,host3`), the command line's two forms, and the order and pace in
//! which a lost connection tries them again.
//!
//! Rotation: after losing server *i* the client tries *i+1*, *i+2*, ... and *i* itself last
//! (one round), without waiting between them; only after a whole round failed does it wait,
//! 1 s, then 2 s, 4 s ... up to [`MAX_BACKOFF`] between rounds. With a single server that is
//! the old rule: 1 s, 2 s, 4 s ... before each attempt.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatao_transport::Keypair;
use chatao_transport::known_servers::host_key;

use crate::connect::{self, ConnectError, Connected};
use crate::net::{self, ConnectOptions};
use crate::trust::Trust;

/// The port of a server written without one.
pub const DEFAULT_PORT: u16 = 7000;
/// Most servers in one list (a cluster is a handful of nodes; this bounds the work of one
/// round and of each trust decision).
pub const MAX_SERVERS: usize = 32;
/// Longest wait between two rounds of reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The environment variable that may hold the server list (`chatao NICKNAME` then suffices).
pub const SERVERS_ENV: &str = "CHATAO_SERVERS";

/// One server address. `host` is a name or an address, IPv6 without brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

impl Server {
    /// How `known_servers` names it (`host:port`, `[v6]:port`, lower case).
    pub fn pin_key(&self) -> String {
        host_key(&self.host, self.port)
    }
}

/// `host:port`, or `[v6]:port`.
impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a server list or the command line's addresses were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerListError {
    #[error(
        "no server given: `chatao ADDRESS PORT NICKNAME`, `chatao HOST:PORT[,HOST:PORT...] NICKNAME`, or set {SERVERS_ENV} and run `chatao NICKNAME`"
    )]
    Missing,
    #[error("empty entry in the server list `{list}` (entries are separated by single commas)")]
    EmptyEntry { list: String },
    #[error("`{entry}`: {reason}")]
    Entry { entry: String, reason: &'static str },
    #[error("`{entry}`: the port must be a number from 1 to 65535")]
    Port { entry: String },
    #[error("`{entry}` is listed twice")]
    Duplicate { entry: String },
    #[error("more than {MAX_SERVERS} servers in the list")]
    TooMany,
    #[error("PORT `{0}` is not a port number (1 to 65535)")]
    PortArg(String),
    #[error("NICKNAME is missing: `{0}` looks like a port; write `chatao ADDRESS PORT NICKNAME`")]
    NickMissing(String),
    #[error("too many arguments: `chatao ADDRESS [PORT] NICKNAME`")]
    TooManyArgs,
    /// The nickname breaks [`chatao_proto::Nick`]'s rules: refused before connecting.
    #[error(
        "nickname `{nick}` is not allowed: a nickname is 1 to {} ASCII letters (a-z, A-Z), \
         digits, '_' or '-'{}",
        chatao_proto::names::MAX_NICK_LEN,
        match bad { Some(c) => format!(" ({c:?} is not one of them)"), None => String::new() }
    )]
    Nick { nick: String, bad: Option<char> },
}

/// Checks `nick` with the server's own rules ([`chatao_proto::Nick`]), naming the first
/// character that breaks them.
pub fn check_nick(nick: &str) -> Result<(), ServerListError> {
    if chatao_proto::Nick::parse(nick).is_ok() {
        return Ok(());
    }
    let bad = nick.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'));
    Err(ServerListError::Nick { nick: nick.to_owned(), bad })
}

fn parse_port(entry: &str, port: &str) -> Result<u16, ServerListError> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(ServerListError::Port { entry: entry.to_owned() }),
    }
}

/// One entry: `host`, `host:port`, `[v6]` or `[v6]:port`; `None` for the port when absent.
fn parse_entry(entry: &str) -> Result<(String, Option<u16>), ServerListError> {
    let bad = |reason| ServerListError::Entry { entry: entry.to_owned(), reason };
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address between the brackets"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("expected `:PORT` after `]`"))?),
        };
        (v6, port)
    } else {
        match entry.matches(':').count() {
            0 => (entry, None),
            1 => match entry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            },
            _ => return Err(bad("an IPv6 address needs brackets: `[::1]:7000`")),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control() || "[]/#@".contains(c)) {
        return Err(bad("not a host name or address"));
    }
    let port = port.map(|p| parse_port(entry, p)).transpose()?;
    Ok((host.to_owned(), port))
}

/// Parses a comma-separated list; entries without a port get `default_port`. Spaces around
/// entries are ignored. Errors name the faulty entry: empty, malformed, a bad port, an IPv6
/// address without brackets, a server listed twice, more than [`MAX_SERVERS`].
pub fn parse_list(list: &str, default_port: u16) -> Result<Vec<Server>, ServerListError> {
    if list.trim().is_empty() {
        return Err(ServerListError::Missing);
    }
    let mut servers: Vec<Server> = vec![];
    for entry in list.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(ServerListError::EmptyEntry { list: list.to_owned() });
        }
        if servers.len() == MAX_SERVERS {
            return Err(ServerListError::TooMany);
        }
        let (host, port) = parse_entry(entry)?;
        let server = Server { host, port: port.unwrap_or(default_port) };
        if servers.iter().any(|s| s.pin_key() == server.pin_key()) {
            return Err(ServerListError::Duplicate { entry: entry.to_owned() });
        }
        servers.push(server);
    }
    Ok(servers)
}

/// The servers and nickname from the command line's positional arguments (and the
/// [`SERVERS_ENV`] value, used only when the nickname is the one argument):
/// - `ADDRESS PORT NICKNAME`: entries of ADDRESS without a port use PORT;
/// - `ADDRESS NICKNAME`: entries without a port use [`DEFAULT_PORT`] (a NICKNAME that looks
///   like a port, after an ADDRESS lacking one, is taken for a forgotten nickname);
/// - `NICKNAME`: the list comes from the environment.
pub fn from_args(
    args: &[String],
    env: Option<&str>,
) -> Result<(Vec<Server>, String), ServerListError> {
    let (servers, nick) = servers_and_nick(args, env)?;
    check_nick(&nick)?;
    Ok((servers, nick))
}

fn servers_and_nick(
    args: &[String],
    env: Option<&str>,
) -> Result<(Vec<Server>, String), ServerListError> {
    match args {
        [address, port, nick] => {
            let port =
                parse_port(port, port).map_err(|_| ServerListError::PortArg(port.clone()))?;
            Ok((parse_list(address, port)?, nick.clone()))
        }
        [address, nick] => {
            let any_without_port = address
                .split(',')
                .map(str::trim)
                .any(|e| parse_entry(e).is_ok_and(|(_, port)| port.is_none()));
            if any_without_port && parse_port(nick, nick).is_ok() {
                return Err(ServerListError::NickMissing(nick.clone()));
            }
            Ok((parse_list(address, DEFAULT_PORT)?, nick.clone()))
        }
        [nick] => match env {
            Some(list) if !list.trim().is_empty() => {
                Ok((parse_list(list, DEFAULT_PORT)?, nick.clone()))
            }
            _ => Err(ServerListError::Missing),
        },
        [] => Err(ServerListError::Missing),
        _ => Err(ServerListError::TooManyArgs),
    }
}

/// The wait before reconnection attempt `failures + 1` (`failures` attempts have failed since
/// the loss) with `n` servers: none within a round of several servers; between rounds 1 s,
/// doubling, at most [`MAX_BACKOFF`].
pub fn delay(failures: u32, n: usize) -> Duration {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let backoff = |rounds: u32| Duration::from_secs(1u64 << rounds.min(5)).min(MAX_BACKOFF);
    if n == 1 {
        backoff(failures)
    } else if !failures.is_multiple_of(n) || failures == 0 {
        Duration::ZERO
    } else {
        backoff(failures / n - 1)
    }
}

/// The server of reconnection attempt `failures + 1` after losing server `lost` of `n`: the
/// next ones in turn, the lost one last in each round.
pub fn next_server(lost: usize, failures: u32, n: usize) -> usize {
    let n = n.max(1);
    (lost + 1 + (failures as usize % n)) % n
}

/// Who the user is and where they may connect: everything needed to connect to any server
/// of the list.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Never empty.
    pub servers: Vec<Server>,
    pub nick: String,
    pub keys: Arc<Keypair>,
    /// The `known_servers` file; `None` disables pinning.
    pub known_servers: Option<PathBuf>,
    /// `--server-key`: the key every server of the list must present.
    pub expected: Option<chatao_transport::Fingerprint>,
    /// Where end-to-end encrypted rooms keep their MLS state (one directory per server key and
    /// identity is made under it, [`crate::e2e::state_dir`]); `None`: no E2E rooms.
    pub e2e_dir: Option<PathBuf>,
    /// The E2E state this profile's connections hold, kept from one to the next (clones of
    /// the profile share it).
    pub e2e_claims: crate::e2e::StateClaims,
    /// What `hello` says beside the nickname (`--quiet`, `--rooms`).
    pub hello: chatao_proto::HelloFlags,
    /// `--rooms`: the fixed set of rooms to join (with `hello.fixed_rooms`).
    pub rooms: Vec<chatao_proto::RoomName>,
}

impl Profile {
    /// Options to connect to server `i` (taken modulo the list's length).
    pub fn options(&self, i: usize) -> ConnectOptions {
        // An empty list (only a library caller can make one) gives an address that fails.
        let server = self
            .servers
            .get(i % self.servers.len().max(1))
            .cloned()
            .unwrap_or(Server { host: String::new(), port: DEFAULT_PORT });
        ConnectOptions {
            host: server.host.clone(),
            port: server.port,
            nick: self.nick.clone(),
            keys: self.keys.clone(),
            trust: Trust {
                host_port: server.pin_key(),
                known_servers: self.known_servers.clone(),
                expected: self.expected.clone(),
            },
        }
    }

    /// Server `i` as the user reads it.
    pub fn name(&self, i: usize) -> String {
        self.servers.get(i).map(Server::to_string).unwrap_or_default()
    }

    /// Connects to server `i`; its first contact is vouched for by the others' pins.
    pub async fn connect(&self, i: usize) -> Result<Connected, ConnectError> {
        let me = self.servers.get(i).map(Server::pin_key);
        let siblings: Vec<String> =
            self.servers.iter().map(Server::pin_key).filter(|k| Some(k) != me.as_ref()).collect();
        let (opts, dir) = (self.options(i), self.e2e_dir.as_deref());
        let mut connected =
            connect::connect_as(&opts, self.hello, &siblings, dir, &self.e2e_claims).await?;
        if self.hello.fixed_rooms {
            connected.0.rooms = self.rooms.clone();
        }
        Ok(connected)
    }

    /// The first connection: each server in list order until one welcomes us. A failure that
    /// trying elsewhere cannot fix (a refused key, a refused nickname) ends it at once; when
    /// every server failed, the error names each one's failure. On success, also the failures
    /// of the servers skipped on the way (`HOST:PORT: why`), for the caller to report.
    pub async fn connect_first(&self) -> anyhow::Result<(usize, Connected, Vec<String>)> {
        if self.servers.is_empty() {
            anyhow::bail!(ServerListError::Missing);
        }
        let mut failures = vec![];
        for i in 0..self.servers.len() {
            match self.connect(i).await {
                Ok(connected) => {
                    let skipped =
                        failures.iter().map(|(j, e)| format!("{}: {e}", self.name(*j))).collect();
                    return Ok((i, connected, skipped));
                }
                Err(e) if !is_transient(&e) || self.servers.len() == 1 => return Err(e.into()),
                Err(e) => failures.push((i, e)),
            }
        }
        let lines: Vec<String> =
            failures.iter().map(|(i, e)| format!("  {}: {e}", self.name(*i))).collect();
        anyhow::bail!("no server of the list could be reached:\n{}", lines.join("\n"))
    }
}

/// Whether a failed connection is worth retrying (here or on another server). A refused key,
/// a refused nickname or an explicit refusal is final; network trouble, a busy or full or
/// restarting server, and a nickname still held by our own lost session (it times out) are not.
pub fn is_transient(e: &ConnectError) -> bool {
    use chatao_proto::ErrorCode;
    use net::ConnectError as Net;
    let e = match e {
        ConnectError::Net(e) => e,
        // Still held by this process's previous connection, which is winding down.
        ConnectError::E2e(e) => return e.is_busy(),
        // A damaged E2E state stays damaged; a layer that could not start, likewise.
        ConnectError::Layer(_) => return false,
    };
    match e {
        Net::Trust(_) => false,
        Net::Refused { code, .. } => matches!(
            code,
            ErrorCode::NickInUse
                | ErrorCode::ServerFull
                | ErrorCode::Busy
                | ErrorCode::Shutdown
                | ErrorCode::Unavailable
        ),
        Net::Resolve { .. }
        | Net::Tcp { .. }
        | Net::Timeout { .. }
        | Net::Handshake { .. }
        | Net::Protocol { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(host: &str, port: u16) -> Server {
        Server { host: host.into(), port }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_take_names_addresses_ports_and_bracketed_ipv6() {
        let list = parse_list("a.example:7001, 10.0.0.2,[::1]:7002,[fe80::1], B.example", 7000);
        assert_eq!(
            list.unwrap(),
            vec![
                s("a.example", 7001),
                s("10.0.0.2", 7000),
                s("::1", 7002),
                s("fe80::1", 7000),
                s("B.example", 7000)
            ]
        );
        assert_eq!(s("::1", 7002).to_string(), "[::1]:7002");
        assert_eq!(s("B.example", 7000).pin_key(), "b.example:7000");
    }

    #[test]
    fn bad_lists_say_which_entry_is_wrong() {
        let err = |list: &str| parse_list(list, 7000).unwrap_err().to_string();
        assert!(err("a:7000,,b").contains("empty entry"));
        assert!(err("a:7000,").contains("empty entry"));
        assert!(err("").contains("no server given"));
        assert!(err("a:70000").contains("`a:70000`: the port must be"));
        assert!(err("a:0").contains("port"));
        assert!(err("a:+7").contains("port"));
        assert!(err("a:").contains("port"));
        assert!(err("::1").contains("needs brackets"));
        assert!(err("[::1").contains("without `]`"));
        assert!(err("[nope]:7").contains("not an IPv6"));
        assert!(err("[::1]7000").contains("`:PORT`"));
        assert!(err(":7000").contains("no host"));
        assert!(err("a b:7000").contains("not a host"));
        assert!(err("a:7000,A:7000").contains("listed twice"));
        let many = vec!["h:1"; MAX_SERVERS + 1]
            .iter()
            .enumerate()
            .map(|(i, _)| format!("h{i}:1"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(err(&many).contains("more than"));
    }

    #[test]
    fn a_nickname_is_checked_with_the_servers_rules() {
        assert_eq!(
            check_nick("Élodie_2"),
            Err(ServerListError::Nick { nick: "Élodie_2".into(), bad: Some('É') })
        );
        assert!(check_nick(&"a".repeat(33)).is_err());
        for ok in ["a", "alice_-9", &"b".repeat(32)] {
            assert_eq!(check_nick(ok), Ok(()), "{ok}");
            assert!(chatao_proto::Nick::parse(ok).is_ok());
        }
        assert!(matches!(
            from_args(&args(&["h", "7000", "élodie"]), None),
            Err(ServerListError::Nick { .. })
        ));
    }

    #[test]
    fn the_command_line_takes_three_forms() {
        // The old form; PORT applies to entries without one.
        assert_eq!(
            from_args(&args(&["h", "7100", "alice"]), None).unwrap(),
            (vec![s("h", 7100)], "alice".into())
        );
        assert_eq!(
            from_args(&args(&["h1,h2:7200", "7100", "alice"]), None).unwrap(),
            (vec![s("h1", 7100), s("h2", 7200)], "alice".into())
        );
        // A list with ports, and the nickname.
        assert_eq!(
            from_args(&args(&["h1:7000,[::1]:7001", "alice"]), Some("ignored:1")).unwrap(),
            (vec![s("h1", 7000), s("::1", 7001)], "alice".into())
        );
        // No port anywhere: the default.
        assert_eq!(from_args(&args(&["h", "bob"]), None).unwrap().0, vec![s("h", DEFAULT_PORT)]);
        // Only the nickname: the list from the environment.
        assert_eq!(
            from_args(&args(&["alice"]), Some("h1:7000,h2")).unwrap(),
            (vec![s("h1", 7000), s("h2", 7000)], "alice".into())
        );
        let err = |a: &[&str], env| from_args(&args(a), env).unwrap_err();
        assert_eq!(err(&["alice"], None), ServerListError::Missing);
        assert_eq!(err(&[], Some("h:1")), ServerListError::Missing);
        assert_eq!(err(&["h", "x", "alice"], None), ServerListError::PortArg("x".into()));
        assert_eq!(err(&["h", "7000"], None), ServerListError::NickMissing("7000".into()));
        assert_eq!(err(&["a", "b", "c", "d"], None), ServerListError::TooManyArgs);
        // A numeric nickname is fine after addresses that all have ports.
        assert_eq!(from_args(&args(&["h:1", "7000"]), None).unwrap().1, "7000");
    }

    #[test]
    fn a_round_tries_every_other_server_at_once_and_the_lost_one_last() {
        let order: Vec<usize> = (0..6).map(|f| next_server(1, f, 3)).collect();
        assert_eq!(order, vec![2, 0, 1, 2, 0, 1]);
        let waits: Vec<u64> = (0..10).map(|f| delay(f, 3).as_secs()).collect();
        assert_eq!(waits, vec![0, 0, 0, 1, 0, 0, 2, 0, 0, 4]);
        assert_eq!(delay(3 * 40, 3), MAX_BACKOFF);
    }

    #[test]
    fn only_temporary_failures_are_retried() {
        use chatao_proto::ErrorCode;
        let refused =
            |code| ConnectError::from(net::ConnectError::Refused { code, reason: String::new() });
        assert!(is_transient(&refused(ErrorCode::NickInUse)));
        assert!(is_transient(&refused(ErrorCode::ServerFull)));
        assert!(is_transient(&refused(ErrorCode::Shutdown)));
        assert!(!is_transient(&refused(ErrorCode::InvalidNick)));
        assert!(!is_transient(&refused(ErrorCode::Other)));
        let timeout = net::ConnectError::Timeout { addr: "h:1".into() };
        assert!(is_transient(&timeout.into()));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_transient(&net::ConnectError::Tcp { addr: "h:1".into(), cause: io }.into()));
    }

    #[test]
    fn a_single_server_keeps_the_plain_backoff() {
        let waits: Vec<u64> = (0..8).map(|f| delay(f, 1).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(delay(u32::MAX, 1), MAX_BACKOFF);
        assert_eq!(next_server(0, 5, 1), 0);
    }
}
