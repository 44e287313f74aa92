//! The files an operator or a user writes, read by the programs at start or reload: the
//! server's settings file, its access lists (allowlist and operators), the client's
//! `known_servers` and the PKCS#8 key files of both. Each is read through its public
//! function; those that take a path get the input in a temporary file.

use std::io::Write;
use std::path::Path;

use chatao_server::access::{List, scan_list};
use chatao_server::settings::parse_file;
use chatao_transport::keys::{self, parse_fingerprint};
use chatao_transport::known_servers::KnownServers;
use tempfile::NamedTempFile;

/// `data` in a new temporary file (removed when the value drops).
fn file(data: &[u8]) -> NamedTempFile {
    let mut f = NamedTempFile::new().expect("a temporary file");
    f.write_all(data).expect("the temporary file is written");
    f
}

/// The server's settings file (`chataosrv --config`, TOML): any text into `parse_file`; its
/// errors are rendered, as the server prints them.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = parse_file(Path::new("/etc/chatao/chataosrv.toml"), text) {
        let _ = errors.to_string();
    }
}

/// An access list (`allow` file, `ops-file`: a fingerprint a line): no panic, and every key
/// read is in the canonical form [`parse_fingerprint`] gives, so it re-parses to itself.
pub fn access_list(data: &[u8]) {
    let f = file(data);
    for list in [List::Allow, List::Ops] {
        let (keys, errors) = scan_list(f.path(), list);
        for key in keys {
            assert_eq!(parse_fingerprint(&key).ok(), Some(key.clone()), "{key:?} is not canonical");
        }
        for e in errors {
            let _ = e.to_string();
        }
    }
}

/// The client's `known_servers` (a `HOST:PORT FINGERPRINT` line per pin): any bytes into
/// `KnownServers::load`, then a check against what was read.
pub fn known_servers(data: &[u8]) {
    let f = file(data);
    match KnownServers::load(f.path()) {
        Ok(known) => {
            let _ = known
                .check("example.org:7000", &chatao_transport::Fingerprint::of_digest(&[7; 32]));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A PKCS#8 key file (PEM, as `openssl genpkey -algorithm X25519` writes it): any bytes
/// into `keys::load`; a key that loads is written back with `to_pem` and loads again as the
/// same key.
pub fn pkcs8(data: &[u8]) {
    let f = file(data);
    match keys::load(f.path()) {
        Ok(key) => {
            let again = keys::load(file(key.to_pem().as_bytes()).path())
                .expect("a key written by to_pem loads");
            assert_eq!(again.public(), key.public(), "a key changed through to_pem");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
