//! Whether the server can start with settings whose values are valid: what they name exists and
//! can be used. Creates nothing (no key, no database, no directory): a directory's writability
//! is tried with a file created and removed at once, in the nearest directory that exists.
//!
//! Each mistake is a [`SettingsError`] said where the setting came from (the config file's line,
//! the option, or the default), with what to do.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use chatao_transport::keys::{self, KeyError};

use super::{Settings, SettingsError};
use crate::access::{AccessError, List, io_reason, scan_list};
use crate::store::{CLUSTER_DB_FILE, DB_FILE};

/// Settings the server can start with.
#[derive(Debug)]
pub struct Checked {
    pub settings: Settings,
    /// What is fine now but may not be when the server starts (the port taken, say), one
    /// sentence each.
    pub notes: Vec<String>,
}

/// Adds to `errors` every reason the server could not start with `settings`, except for the
/// settings in `bad` (their values are mistakes already); returns the notes.
pub(super) fn environment(
    settings: &Settings,
    bad: &BTreeSet<&'static str>,
    errors: &mut Vec<SettingsError>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let mut wrong =
        |key: &'static str, message: String| errors.push(settings.mistake(key, message));
    for (key, list, path) in [
        ("allow", List::Allow, &settings.values.allow),
        ("ops-file", List::Ops, &settings.values.ops_file),
    ] {
        if let (Some(path), false) = (path, bad.contains(key)) {
            for err in scan_list(path, list).1 {
                wrong(key, list_mistake(&err, &settings.unset_hint(key)));
            }
        }
    }
    let mut data_dir_ok = !bad.contains("data-dir");
    if data_dir_ok {
        let db = if settings.values.cluster.is_some() { CLUSTER_DB_FILE } else { DB_FILE };
        if let Err(message) = data_dir(&settings.data_dir(), db) {
            wrong("data-dir", message);
            data_dir_ok = false;
        }
    }
    // A key-dir nobody gave is DATA-DIR/serverKey: its mistakes are data-dir's, and said once.
    let key_setting = match settings.origins.get("key-dir") {
        Some(super::Origin::Default) => "data-dir",
        _ => "key-dir",
    };
    let within_bad_data_dir = !data_dir_ok && settings.key_dir().starts_with(settings.data_dir());
    if !bad.contains(key_setting)
        && !within_bad_data_dir
        && let Err(message) = key_dir(&settings.key_dir(), key_setting)
    {
        wrong(key_setting, message);
    }
    if !bad.contains("listen") && !bad.contains("port") {
        let addr = settings.addr();
        match try_listen(addr) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AddrInUse => notes.push(format!(
                "{addr} is in use now (by a running chataosrv?); the server cannot start while it is"
            )),
            Err(err) => {
                let key = if err.kind() == ErrorKind::PermissionDenied { "port" } else { "listen" };
                wrong(key, listen_error("", addr, &err));
            }
        }
    }
    if let (Some(metrics), false) = (settings.values.metrics, bad.contains("metrics")) {
        let chat = settings.addr();
        let overlap = metrics.port() == chat.port()
            && metrics.port() != 0
            && (metrics.ip() == chat.ip()
                || metrics.ip().is_unspecified()
                || chat.ip().is_unspecified());
        if overlap {
            wrong(
                "metrics",
                format!(
                    "{metrics} would share port {} with the chat server ({chat}); give metrics \
                     another port, such as 9700",
                    chat.port()
                ),
            );
        } else {
            match try_listen(metrics) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::AddrInUse => notes.push(format!(
                    "{metrics} (metrics) is in use now; the server cannot start while it is"
                )),
                Err(err) => wrong("metrics", listen_error("for metrics ", metrics, &err)),
            }
        }
    }
    notes
}

/// "cannot listen {what}on ADDR: CAUSE; WHAT TO DO", for a failed bind, here and in `main`.
pub fn listen_error(what: &str, addr: SocketAddr, err: &io::Error) -> String {
    let hint = match err.kind() {
        ErrorKind::AddrInUse => format!(
            "another program (another chataosrv?) listens on port {}: stop it, or choose another \
             port",
            addr.port()
        ),
        ErrorKind::PermissionDenied if addr.port() < 1024 => "ports below 1024 need root or the \
             CAP_NET_BIND_SERVICE capability: choose a port above 1023, or grant it"
            .to_owned(),
        ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: give one of its addresses, or 0.0.0.0 (every \
             IPv4 interface) or :: (IPv6 too)",
            addr.ip()
        ),
        _ => "check the address".to_owned(),
    };
    format!("cannot listen {what}on {addr}: {}; {hint}", io_reason(err))
}

/// Binds `addr` and lets it go at once.
fn try_listen(addr: SocketAddr) -> io::Result<()> {
    TcpListener::bind(addr).map(drop)
}

fn list_mistake(err: &AccessError, unset: &str) -> String {
    match err {
        AccessError::Io { cause, .. } if cause.kind() == ErrorKind::NotFound => format!(
            "{err}; create it (one SHA256:... key fingerprint per line, as `chatao --fingerprint` \
             prints it; `#` starts a comment) or {unset}"
        ),
        AccessError::Io { .. } => {
            format!("{err}; make it a file readable by the user that runs chataosrv, or {unset}")
        }
        AccessError::Malformed { .. } => format!(
            "{err}; start the line with a fingerprint (SHA256: and 43 characters), or make it a \
             comment with `#`"
        ),
    }
}

/// The data directory `dir` is usable (or can be created), and its database `db`, if there
/// is one, can be opened for writing.
fn data_dir(dir: &Path, db: &str) -> Result<(), String> {
    writable_dir(dir, "the data directory", "data-dir")?;
    let path = dir.join(db);
    match fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => Err(format!(
            "the history database {} is not a file; move it aside, or choose another data-dir",
            path.display()
        )),
        Ok(_) => OpenOptions::new().read(true).write(true).open(&path).map(drop).map_err(|err| {
            format!(
                "cannot open the history database {} for writing: {}; make it writable by the \
                 user that runs chataosrv",
                path.display(),
                io_reason(&err)
            )
        }),
        Err(_) => Ok(()),
    }
}

/// The server key in `dir` loads, or `dir` can hold a new one. `setting` is what to change.
fn key_dir(dir: &Path, setting: &str) -> Result<(), String> {
    let path = dir.join(keys::KEY_FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() && !path.exists() => Err(format!(
            "the server key {} is a symbolic link to a missing file; restore the key it points \
             to, or remove the link to have a new key made",
            path.display()
        )),
        Ok(_) => match keys::load(&path) {
            Ok(_) => Ok(()),
            Err(KeyError::Io { path, source }) => Err(format!(
                "cannot read the server key {}: {}; make it readable by the user that runs \
                 chataosrv, or choose another {setting}",
                path.display(),
                io_reason(&source)
            )),
            Err(err) => Err(err.to_string()),
        },
        Err(err) if err.kind() == ErrorKind::NotFound => {
            writable_dir(dir, "the key directory", setting)
        }
        Err(err) => Err(format!(
            "cannot use the server key {}: {}; check the permissions of {}, or choose another \
             {setting}",
            path.display(),
            io_reason(&err),
            dir.display()
        )),
    }
}

/// `dir` is a writable directory, or does not exist and its nearest existing ancestor is one
/// (so that the server can create it).
fn writable_dir(dir: &Path, what: &str, setting: &str) -> Result<(), String> {
    let shown = dir.display();
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => try_write(dir).map_err(|err| {
            format!(
                "{what} {shown} is not writable: {}; make it writable by the user that runs \
                 chataosrv (chown or chmod), or choose another {setting}",
                io_reason(&err)
            )
        }),
        Ok(_) => Err(format!("{what} {shown} is not a directory; choose another {setting}")),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            let parent = nearest_existing(dir);
            let parent_shown = parent.display();
            match fs::metadata(&parent) {
                Ok(meta) if meta.is_dir() => try_write(&parent).map_err(|err| {
                    format!(
                        "cannot create {what} {shown}: {parent_shown} is not writable: {}; \
                         create {shown} yourself, writable by the user that runs chataosrv, or \
                         choose another {setting}",
                        io_reason(&err)
                    )
                }),
                _ => Err(format!(
                    "cannot create {what} {shown}: {parent_shown} is not a directory; choose \
                     another {setting}"
                )),
            }
        }
        Err(err) => Err(format!(
            "cannot use {what} {shown}: {}; check the permissions of the directories above it, \
             or choose another {setting}",
            io_reason(&err)
        )),
    }
}

/// The nearest of `dir`'s ancestors that exists (as anything); `.` for a relative path none of
/// whose ancestors exist.
fn nearest_existing(dir: &Path) -> PathBuf {
    let mut at = dir;
    while let Some(parent) = at.parent() {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        if fs::symlink_metadata(parent).is_ok() {
            return parent.to_owned();
        }
        at = parent;
    }
    PathBuf::from(".")
}

/// Creates a file in `dir` and removes it: the only sure test that the server may write there
/// (permissions, ACLs, a read-only mount, root).
fn try_write(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".chataosrv-check-{}", std::process::id()));
    OpenOptions::new().write(true).create_new(true).open(&probe)?;
    fs::remove_file(&probe)
}
