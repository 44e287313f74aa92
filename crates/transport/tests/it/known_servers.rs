//! The `known_servers` file: first use, pinning, mismatches, the file format users edit by hand,
//! and the file's permissions.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use chatao_transport::Keypair;
use chatao_transport::keys::Fingerprint;
use chatao_transport::known_servers::{KnownServers, KnownServersError, Verdict, host_key};

fn fingerprint() -> Fingerprint {
    Keypair::generate().unwrap().public().fingerprint()
}

#[test]
fn missing_file_is_an_empty_set() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clientKey").join("known_servers");
    let known = KnownServers::load(&path).unwrap();
    assert_eq!(known.path(), path);
    assert_eq!(known.check(&host_key("localhost", 7000), &fingerprint()), Verdict::Unknown);
    assert!(!path.exists(), "loading must not create the file");
}

#[test]
fn pin_then_check_is_known_and_survives_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clientKey").join("known_servers");
    let (v4, v6, fp) = (host_key("127.0.0.1", 7000), host_key("::1", 7000), fingerprint());

    let mut known = KnownServers::load(&path).unwrap();
    known.pin(&v4, &fp).unwrap();
    known.pin(&v6, &fp).unwrap();
    assert_eq!(known.check(&v4, &fp), Verdict::Known);

    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("127.0.0.1:7000 {fp}\n[::1]:7000 {fp}\n"));
    let reloaded = KnownServers::load(&path).unwrap();
    assert_eq!(reloaded.check(&v4, &fp), Verdict::Known);
    assert_eq!(reloaded.check(&v6, &fp), Verdict::Known);
    assert_eq!(reloaded.check(&host_key("::1", 7001), &fp), Verdict::Unknown);
}

#[test]
fn a_different_key_is_a_mismatch_naming_the_pinned_one() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("known_servers");
    let (pinned, other) = (fingerprint(), fingerprint());
    let mut known = KnownServers::load(&path).unwrap();
    known.pin("chat.example.org:7000", &pinned).unwrap();

    let verdict = known.check("chat.example.org:7000", &other);
    assert_eq!(verdict, Verdict::Mismatch { pinned: pinned.clone() });
    let reloaded = KnownServers::load(&path).unwrap();
    assert_eq!(reloaded.check("chat.example.org:7000", &other), Verdict::Mismatch { pinned });
}

#[test]
fn comments_and_blank_lines_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("known_servers");
    let fp = fingerprint();
    fs::write(
        &path,
        format!("# my servers\n\n   \n  # indented comment\r\nhome.lan:7000   {fp}  \r\n\n"),
    )
    .unwrap();
    let known = KnownServers::load(&path).unwrap();
    assert_eq!(known.check("home.lan:7000", &fp), Verdict::Known);
}

#[test]
fn malformed_line_is_reported_with_its_number() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("known_servers");
    let fp = fingerprint();
    for (bad, why) in [
        ("home.lan:7000".to_owned(), "no fingerprint"),
        (format!("home.lan {fp}"), "no port"),
        (format!("::1:7000 {fp}"), "unbracketed IPv6"),
        ("home.lan:7000 SHA256:tooshort".to_owned(), "bad fingerprint"),
        (format!("home.lan:7000 {fp} extra"), "extra field"),
    ] {
        fs::write(&path, format!("# header\nok.lan:1 {fp}\n\n{bad}\nlater.lan:2 {fp}\n")).unwrap();
        match KnownServers::load(&path) {
            Err(KnownServersError::Malformed { path: p, line_no, line }) => {
                assert_eq!(
                    (p.as_path(), line_no, line.as_str()),
                    (path.as_path(), 4, bad.as_str())
                );
            }
            other => panic!("{why}: expected Malformed, got {other:?}"),
        }
        let msg = KnownServers::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:4: ", path.display())), "{msg}");
    }
}

#[test]
fn new_file_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clientKey");
    let path = dir.join("known_servers");
    let mut known = KnownServers::load(&path).unwrap();
    known.pin(&host_key("localhost", 7000), &fingerprint()).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn pinning_appends_to_a_hand_edited_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("known_servers");
    let (a, b) = (fingerprint(), fingerprint());
    let original = format!("# kept as is\nold.lan:7000 {a}\n");
    fs::write(&path, &original).unwrap();

    let mut known = KnownServers::load(&path).unwrap();
    known.pin("new.lan:7000", &b).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), format!("{original}new.lan:7000 {b}\n"));
}
