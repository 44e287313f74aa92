//! Trust-on-first-use pinning of server keys, like SSH's `known_hosts`.
//!
//! This module owns the client's `known_servers` file: one line per server, `HOST:PORT
//! SHA256:<fingerprint>`, with `#` comments and blank lines allowed. Host names are lower-case and
//! IPv6 addresses bracketed (`[::1]:7000`); [`host_key`] makes that form. The client asks
//! [`KnownServers::check`] before it reveals its own identity, [`KnownServers::pin`]s a server
//! seen for the first time (after asking the user, or not, as its policy says), and refuses a
//! [`Verdict::Mismatch`]. The file is only ever appended to; to forget a server or accept its
//! new key, the user deletes its line.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use crate::keys::{Fingerprint, create_private_dir};

/// Why the known-servers file could not be read or extended.
#[derive(Debug, thiserror::Error)]
pub enum KnownServersError {
    /// The file or its directory could not be read or written.
    #[error("known servers file {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },

    /// A line that is neither blank, a `#` comment nor `HOST:PORT SHA256:<fingerprint>`.
    /// `line_no` counts from 1.
    #[error(
        "{}:{line_no}: expected `HOST:PORT SHA256:<fingerprint>`, found `{line}`; fix or delete \
         this line",
        .path.display()
    )]
    Malformed { path: PathBuf, line_no: usize, line: String },

    /// [`KnownServers::pin`] was given something that cannot be written as an entry.
    #[error("cannot pin `{host_port} {fingerprint}`: {reason}")]
    InvalidEntry { host_port: String, fingerprint: String, reason: &'static str },
}

/// What the known-servers file says about a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is pinned for this server.
    Known,
    /// The server has no entry: first contact.
    Unknown,
    /// The server is pinned to another key (`pinned`, a fingerprint): refuse to connect.
    Mismatch { pinned: Fingerprint },
}

/// The pinned server keys, as loaded from one file and extended by [`pin`](Self::pin).
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: PathBuf,
    /// `host_key` form → fingerprints in file order. Several lines for one server are allowed
    /// (key rotation): any of them is accepted.
    entries: HashMap<String, Vec<Fingerprint>>,
}

impl KnownServers {
    /// Loads the file; a missing file is an empty set. Malformed lines →
    /// [`KnownServersError::Malformed`] with the first bad line's number. Host names and
    /// fingerprints are normalized as [`host_key`] and [`parse_fingerprint`] do.
    pub fn load(path: &Path) -> Result<Self, KnownServersError> {
        let mut known = Self { path: path.to_owned(), entries: HashMap::new() };
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(known),
            Err(source) => return Err(KnownServersError::Io { path: path.to_owned(), source }),
        };
        let text = String::from_utf8_lossy(&bytes);
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (host_port, fingerprint) =
                parse_line(line).ok_or_else(|| KnownServersError::Malformed {
                    path: path.to_owned(),
                    line_no: index + 1,
                    line: line.to_owned(),
                })?;
            known.insert(host_port, fingerprint);
        }
        Ok(known)
    }

    /// Whether `fp` is the pinned key of `host_port` (`HOST:PORT`, best made by [`host_key`]).
    /// On a mismatch, `pinned` is the first fingerprint on file for the server.
    pub fn check(&self, host_port: &str, fp: &Fingerprint) -> Verdict {
        let host_port = normalize_host_port(host_port).unwrap_or_else(|| host_port.to_lowercase());
        match self.entries.get(&host_port) {
            None => Verdict::Unknown,
            Some(pinned) if pinned.contains(fp) => Verdict::Known,
            Some(pinned) => Verdict::Mismatch { pinned: pinned[0].clone() },
        }
    }

    /// Appends one line (creating the file mode 0600 and its dir), atomically enough (open
    /// append). Pinning an entry that is already there does nothing; pinning a second key for a
    /// server keeps the first one too. Errors when `host_port` is not `HOST:PORT`, or on I/O
    /// failure (the set is then unchanged).
    pub fn pin(&mut self, host_port: &str, fp: &Fingerprint) -> Result<(), KnownServersError> {
        let invalid = |reason| KnownServersError::InvalidEntry {
            host_port: host_port.to_owned(),
            fingerprint: fp.to_string(),
            reason,
        };
        let host_port = normalize_host_port(host_port).ok_or_else(|| invalid("not HOST:PORT"))?;
        if self.check(&host_port, fp) == Verdict::Known {
            return Ok(());
        }

        let io_err = |source| KnownServersError::Io { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).map_err(io_err)?;
        }
        let mut file = open_append(&self.path).map_err(io_err)?;
        // A hand-edited file may lack its final newline; do not glue our line onto the last one.
        let separator = if ends_with_newline(&mut file).map_err(io_err)? { "" } else { "\n" };
        // One write on an O_APPEND file: concurrent clients cannot interleave within a line.
        let line = format!("{separator}{host_port} {fp}\n");
        file.write_all(line.as_bytes()).and_then(|()| file.sync_data()).map_err(io_err)?;

        self.insert(host_port, fp.clone());
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn insert(&mut self, host_port: String, fp: Fingerprint) {
        let pinned = self.entries.entry(host_port).or_default();
        if !pinned.contains(&fp) {
            pinned.push(fp);
        }
    }
}

/// The `HOST:PORT` key of a server: host names lower-cased, IPv6 addresses in canonical form and
/// bracketed (`[::1]:7000`). `host` may already be bracketed.
pub fn host_key(host: &str, port: u16) -> String {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        format!("[{v6}]:{port}")
    } else if bare.contains(':') {
        // Not a plain IPv6 address (a zone index, say): still bracket it to keep the port apart.
        format!("[{}]:{port}", bare.to_lowercase())
    } else {
        format!("{}:{port}", bare.to_lowercase())
    }
}

/// `HOST:PORT` (or `[V6]:PORT`) in [`host_key`] form; `None` if it is not one.
fn normalize_host_port(s: &str) -> Option<String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?,
        None => s.rsplit_once(':').filter(|(host, _)| !host.contains(':'))?,
    };
    let port_ok = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let host_ok =
        !host.is_empty() && !host.contains(|c: char| c.is_whitespace() || "[]#".contains(c));
    if !port_ok || !host_ok {
        return None;
    }
    Some(host_key(host, port.parse().ok()?))
}

/// A non-comment line → (host key, fingerprint), both normalized.
fn parse_line(line: &str) -> Option<(String, Fingerprint)> {
    let mut fields = line.split_whitespace();
    let (host_port, fp) = (fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    Some((normalize_host_port(host_port)?, Fingerprint::parse(fp).ok()?))
}

/// Opens for appending, creating the file with mode 0600; readable to check its last byte.
fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// True for an empty file or one whose last byte is `\n`.
fn ends_with_newline(file: &mut File) -> io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const A: &str = "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4";
    const B: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::parse(s).unwrap()
    }

    #[test]
    fn host_key_normalizes() {
        assert_eq!(host_key("Chat.Example.ORG", 7000), "chat.example.org:7000");
        assert_eq!(host_key("::1", 7000), "[::1]:7000");
        assert_eq!(host_key("[::1]", 7000), "[::1]:7000");
        assert_eq!(host_key("2001:DB8:0:0::1", 1), "[2001:db8::1]:1");
        assert_eq!(host_key("127.0.0.1", 7000), "127.0.0.1:7000");
        assert_eq!(host_key("fe80::1%ETH0", 7), "[fe80::1%eth0]:7");
    }

    #[test]
    fn normalize_host_port_accepts_only_host_port() {
        assert_eq!(normalize_host_port("Example.org:7000").unwrap(), "example.org:7000");
        assert_eq!(normalize_host_port("[::0001]:7000").unwrap(), "[::1]:7000");
        for bad in ["example.org", "::1:7000", "host:", ":7000", "host:70000", "host:+1", "[::1]"] {
            assert_eq!(normalize_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_are_normalized_on_load_and_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        fs::write(&path, format!("CHAT.example.org:7000 sha256:{}\n", &A[7..])).unwrap();
        let known = KnownServers::load(&path).unwrap();
        assert_eq!(known.check("chat.example.org:7000", &fp(A)), Verdict::Known);
        assert_eq!(known.check("Chat.Example.org:7000", &fp(A)), Verdict::Known);
        assert_eq!(known.check("chat.example.org:7001", &fp(A)), Verdict::Unknown);
    }

    #[test]
    fn pin_does_not_glue_onto_an_unterminated_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        fs::write(&path, format!("a:1 {A}")).unwrap();
        let mut known = KnownServers::load(&path).unwrap();
        known.pin("b:2", &fp(B)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("a:1 {A}\nb:2 {B}\n"));
        assert_eq!(KnownServers::load(&path).unwrap().check("b:2", &fp(B)), Verdict::Known);
    }

    #[test]
    fn pin_is_idempotent_and_keeps_older_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        let mut known = KnownServers::load(&path).unwrap();
        known.pin("a:1", &fp(A)).unwrap();
        known.pin("A:1", &fp(A)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1);
        known.pin("a:1", &fp(B)).unwrap();
        assert_eq!(known.check("a:1", &fp(A)), Verdict::Known);
        assert_eq!(known.check("a:1", &fp(B)), Verdict::Known);
    }

    #[test]
    fn pin_refuses_an_invalid_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        let mut known = KnownServers::load(&path).unwrap();
        assert!(matches!(
            known.pin("no-port", &fp(A)),
            Err(KnownServersError::InvalidEntry { .. })
        ));
        assert!(!path.exists());
    }
}
