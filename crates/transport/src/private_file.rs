//! The one atomic writer of private files (mode 0600): key files (`keys.rs`), the E2E engine's
//! state and logs (`chatao-e2e`), the client's E2E bookkeeping (pins, commit counts).
//!
//! Every write goes to a fresh temporary file beside the target ([`tempfile::NamedTempFile`],
//! created 0600), which is then published under the target's name in one step
//! (`NamedTempFile::persist`, a `rename`; or `persist_noclobber` for [`Publish::CreateNew`]).
//! A reader, or a crash, sees the old contents or the new ones, never a mix. Unless the
//! [`Publish`] says otherwise, the file is fsynced before it is published and the directory
//! after, so what was written survives a power loss. A write that fails removes its temporary
//! file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// How [`write_private`] publishes the new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Replace whatever is at the path; the file and the directory are fsynced.
    Replace,
    /// Replace whatever is at the path, without fsync: after a power loss the path may hold the
    /// old contents (never a mix). For bookkeeping that can be redone.
    ReplaceUnsynced,
    /// Only if nothing is at the path (a symbolic link, even a dangling one, counts):
    /// [`io::ErrorKind::AlreadyExists`] otherwise. The file and the directory are fsynced.
    CreateNew,
}

/// Writes `contents` to `path`, readable and writable by its owner only (0600), atomically as
/// [`Publish`] says.
///
/// Errors: the parent directory is missing or not writable, the disk is full, fsync failed,
/// or (for [`Publish::CreateNew`]) `AlreadyExists`. On a filesystem that can neither rename
/// without replacing nor hard-link, a `CreateNew` falls back to an exclusive create at `path`
/// (the only way left to never replace a file; a crash then may leave it incomplete).
pub fn write_private(path: &Path, contents: &[u8], publish: Publish) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(contents)?;
    let sync = publish != Publish::ReplaceUnsynced;
    if sync {
        tmp.as_file().sync_all()?;
    }
    match publish {
        Publish::Replace | Publish::ReplaceUnsynced => tmp.persist(path).map(drop)?,
        Publish::CreateNew => match tmp.persist_noclobber(path) {
            Ok(_) => {}
            Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => return Err(err.error),
            // No hard links here (the temporary file is removed as `err` drops).
            Err(_) => create_new_synced(path, contents)?,
        },
    }
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `contents` to a new file at `path` (0600, never through a symbolic link), synced;
/// the file is removed again if the write fails.
fn create_new_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;

    /// A fresh temporary directory and the path `name` in it.
    fn place(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    /// The permission bits of `path` (0o600 where there are none to read).
    fn mode(path: &Path) -> u32 {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(path).unwrap().permissions().mode() & 0o777
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            0o600
        }
    }

    /// Fails unless `path` is private (0600) and alone in its directory (no temporary file
    /// left behind).
    fn assert_private_and_alone(path: &Path) {
        assert_eq!(mode(path), 0o600);
        let others: Vec<String> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != path.file_name().unwrap())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(others, Vec::<String>::new());
    }

    /// Writes `contents` to `path` as `publish` says, and reads them back.
    fn write_and_check(path: &Path, contents: &[u8], publish: Publish) {
        write_private(path, contents, publish).unwrap();
        assert_eq!(fs::read(path).unwrap(), contents);
    }

    #[test]
    fn writes_the_contents_with_mode_0600_and_leaves_no_temporary_file() {
        let (_dir, path) = place("f");
        for publish in [Publish::Replace, Publish::ReplaceUnsynced] {
            write_and_check(&path, b"contents", publish);
        }
        assert_private_and_alone(&path);
    }

    #[test]
    fn replace_swaps_the_file_in_one_step() {
        let (_dir, path) = place("state");
        write_and_check(&path, b"old", Publish::Replace);
        // A reader holding the old file keeps reading the old contents: the new ones are a new
        // file renamed over the name, not the old file rewritten in place.
        let held = fs::File::open(&path).unwrap();
        #[cfg(unix)]
        let old_inode = std::os::unix::fs::MetadataExt::ino(&held.metadata().unwrap());
        write_and_check(&path, b"new, longer contents", Publish::Replace);
        assert_eq!(io::read_to_string(held).unwrap(), "old");
        #[cfg(unix)]
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()), old_inode);
        // A wider mode on the old file does not carry over.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            write_private(&path, b"again", Publish::ReplaceUnsynced).unwrap();
        }
        assert_private_and_alone(&path);
    }

    #[test]
    fn create_new_never_replaces() {
        let (_dir, path) = place("key");
        write_and_check(&path, b"first", Publish::CreateNew);
        let err = write_private(&path, b"second", Publish::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_private_and_alone(&path);
    }

    #[cfg(unix)]
    #[test]
    fn create_new_does_not_write_through_a_dangling_symlink() {
        let (dir, path) = place("key");
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = write_private(&path, b"secret", Publish::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!target.exists());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f");
        for publish in [Publish::Replace, Publish::ReplaceUnsynced, Publish::CreateNew] {
            let err = write_private(&path, b"x", publish).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{publish:?}");
        }
        assert!(!dir.path().join("missing").exists());
    }
}
