//! Key files against the real `openssl` binary: keys it makes load with the same fingerprint,
//! keys we write are keys it reads, and every wrong kind of file gets its own clear error without
//! ever being modified.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use chatao_transport::keys::{self, KEY_FILE, KeyOrigin};
use chatao_transport::{KeyError, Keypair};

const FIX: &str = "openssl genpkey -algorithm X25519 -out";

/// Runs `openssl ARGS` in `dir`, panicking with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl binary is needed for these tests");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a shell pipeline in `dir` and returns its trimmed stdout.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).current_dir(dir).output().expect("sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// openssl's own view of the fingerprint of the private key in `file`.
fn openssl_fingerprint(dir: &Path, file: &str) -> String {
    let b64 = sh(
        dir,
        &format!(
            "openssl pkey -in {file} -pubout -outform DER | tail -c 32 \
             | openssl dgst -sha256 -binary | base64 | tr -d '='"
        ),
    );
    format!("SHA256:{b64}")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generated_key_is_private_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("serverKey");

    let (first, origin) = keys::load_or_generate(&dir).unwrap();
    assert_eq!(origin, KeyOrigin::Generated);
    let path = dir.join(KEY_FILE);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left behind");
    let written = fs::read(&path).unwrap();

    let (second, origin) = keys::load_or_generate(&dir).unwrap();
    assert_eq!(origin, KeyOrigin::Loaded);
    assert_eq!(second.public(), first.public());
    assert_eq!(second.secret_bytes(), first.secret_bytes());
    assert_eq!(fs::read(&path).unwrap(), written, "loading must not rewrite the file");
}

#[test]
fn openssl_key_loads_with_openssl_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    openssl(tmp.path(), &["genpkey", "-algorithm", "X25519", "-out", "key.pem"]);
    let before = fs::read(tmp.path().join("key.pem")).unwrap();

    let key = keys::load(&tmp.path().join("key.pem")).unwrap();
    assert_eq!(key.public().fingerprint(), openssl_fingerprint(tmp.path(), "key.pem"));
    // Our writer produces exactly openssl's bytes for the same key.
    assert_eq!(key.to_pem().as_bytes(), before.as_slice());

    let (same, origin) = keys::load_or_generate(tmp.path()).unwrap();
    assert_eq!(origin, KeyOrigin::Loaded);
    assert_eq!(same.public(), key.public());
}

#[test]
fn openssl_reads_our_key_with_our_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = keys::load_or_generate(tmp.path()).unwrap();
    assert_eq!(openssl_fingerprint(tmp.path(), KEY_FILE), key.public().fingerprint());
    let text = sh(tmp.path(), &format!("openssl pkey -in {KEY_FILE} -noout -text"));
    assert!(text.starts_with("X25519 Private-Key:"), "{text}");
}

#[test]
fn group_readable_key_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(KEY_FILE);
    fs::write(&path, Keypair::generate().unwrap().to_pem()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    keys::load(&path).unwrap();
    assert_eq!(mode(&path), 0o644, "the permissions are the user's to change");
}

/// One wrong kind of key file: how to make it, and what we must say about it.
struct Case {
    name: &'static str,
    /// openssl invocations, run in order in an empty directory; they leave the file in `key.pem`.
    make: &'static [&'static [&'static str]],
    check: fn(&KeyError) -> bool,
}

fn wrong_algorithm(found: &'static str) -> impl Fn(&KeyError) -> bool {
    move |err| matches!(err, KeyError::WrongAlgorithm { found: f, .. } if f == found)
}

#[test]
fn each_wrong_kind_of_file_gets_its_own_error_and_is_left_alone() {
    let cases = [
        Case {
            name: "RSA, PKCS#8 (openssl 3 default)",
            make: &[&["genrsa", "-out", KEY_FILE, "2048"]],
            check: |e| wrong_algorithm("RSA")(e),
        },
        Case {
            name: "RSA, traditional",
            make: &[&["genrsa", "-traditional", "-out", KEY_FILE, "2048"]],
            check: |e| wrong_algorithm("RSA")(e),
        },
        Case {
            name: "Ed25519",
            make: &[&["genpkey", "-algorithm", "ED25519", "-out", KEY_FILE]],
            check: |e| wrong_algorithm("Ed25519")(e),
        },
        Case {
            name: "X448",
            make: &[&["genpkey", "-algorithm", "X448", "-out", KEY_FILE]],
            check: |e| wrong_algorithm("X448")(e),
        },
        Case {
            name: "Ed448",
            make: &[&["genpkey", "-algorithm", "ED448", "-out", KEY_FILE]],
            check: |e| wrong_algorithm("Ed448")(e),
        },
        Case {
            name: "EC, PKCS#8",
            make: &[&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                KEY_FILE,
            ]],
            check: |e| wrong_algorithm("EC")(e),
        },
        Case {
            name: "EC, traditional",
            make: &[&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", KEY_FILE]],
            check: |e| wrong_algorithm("EC")(e),
        },
        Case {
            name: "encrypted X25519",
            make: &[&[
                "genpkey",
                "-algorithm",
                "X25519",
                "-aes256",
                "-pass",
                "pass:x",
                "-out",
                KEY_FILE,
            ]],
            check: |e| matches!(e, KeyError::Encrypted { .. }),
        },
        Case {
            name: "X25519 as DER",
            make: &[&["genpkey", "-algorithm", "X25519", "-outform", "DER", "-out", KEY_FILE]],
            check: |e| matches!(e, KeyError::NotPem { .. }),
        },
        Case {
            name: "X25519 public key",
            make: &[
                &["genpkey", "-algorithm", "X25519", "-out", "private.pem"],
                &["pkey", "-in", "private.pem", "-pubout", "-out", KEY_FILE],
            ],
            check: |e| matches!(e, KeyError::PublicKeyOnly { .. }),
        },
        Case {
            name: "garbage",
            make: &[&["rand", "-out", KEY_FILE, "200"]],
            check: |e| matches!(e, KeyError::NotPem { .. }),
        },
    ];

    for case in cases {
        let tmp = tempfile::tempdir().unwrap();
        for args in case.make {
            openssl(tmp.path(), args);
        }
        let files = fs::read_dir(tmp.path()).unwrap().count();
        let path = tmp.path().join(KEY_FILE);
        let before = fs::read(&path).unwrap();

        let err = keys::load(&path).unwrap_err();
        assert!((case.check)(&err), "{}: unexpected {err:?}", case.name);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{}: {msg}", case.name);
        assert!(msg.contains(&format!("{FIX} {}", path.display())), "{}: {msg}", case.name);
        let text = String::from_utf8_lossy(&before);
        for line in text.lines().filter(|l| l.len() >= 16 && !l.starts_with("-----")) {
            assert!(!msg.contains(line), "{}: file contents in {msg}", case.name);
        }

        // load_or_generate must refuse it too, not replace it.
        let err = keys::load_or_generate(tmp.path()).unwrap_err();
        assert!((case.check)(&err), "{}: unexpected {err:?}", case.name);
        assert_eq!(fs::read(&path).unwrap(), before, "{}: the file was modified", case.name);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), files, "{}", case.name);
    }
}

#[test]
fn error_messages_say_what_was_found() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(KEY_FILE);
    openssl(tmp.path(), &["genpkey", "-algorithm", "ED25519", "-out", KEY_FILE]);
    let msg = keys::load(&path).unwrap_err().to_string();
    assert!(msg.contains("wrong type (Ed25519)"), "{msg}");

    openssl(
        tmp.path(),
        &["genpkey", "-algorithm", "X25519", "-aes256", "-pass", "pass:x", "-out", KEY_FILE],
    );
    let msg = keys::load(&path).unwrap_err().to_string();
    assert!(msg.contains("passphrase-protected keys"), "{msg}");
    assert!(msg.contains("not support"), "{msg}");
}

#[test]
fn empty_key_file_is_refused_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(KEY_FILE);
    fs::write(&path, b"").unwrap();
    assert!(matches!(keys::load_or_generate(tmp.path()), Err(KeyError::NotPem { .. })));
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn missing_key_file_is_an_io_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nope.pem");
    let err = keys::load(&path).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

#[test]
fn no_key_is_written_through_a_dangling_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("elsewhere.pem");
    symlink(&target, tmp.path().join(KEY_FILE)).unwrap();
    let err = keys::load_or_generate(tmp.path()).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err:?}");
    assert!(!target.exists());
}

#[test]
fn a_symlink_to_a_real_key_is_followed_for_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("real.pem");
    let key = Keypair::generate().unwrap();
    fs::write(&target, key.to_pem()).unwrap();
    let dir = tmp.path().join("keys");
    fs::create_dir(&dir).unwrap();
    symlink(&target, dir.join(KEY_FILE)).unwrap();
    let (loaded, origin) = keys::load_or_generate(&dir).unwrap();
    assert_eq!(origin, KeyOrigin::Loaded);
    assert_eq!(loaded.public(), key.public());
}
