//! The binary's settings as an administrator meets them: the example config in packaging/,
//! config errors and exit codes, flags over the file, `--help`, `--version`, completions and the
//! man page, and SIGHUP reloading the config file. (Parsing and merging are unit-tested in
//! src/settings.rs.)
#![allow(clippy::unwrap_used)]

use chatao_testkit::line_with;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chatao_server::settings::{KEYS, parse_file};
use chatao_testkit::TestClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

fn chataosrv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chataosrv"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/chatao.toml")
}

#[test]
fn the_example_config_is_valid_and_shows_every_setting_with_a_valid_value() {
    let path = example();
    let out = chataosrv(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("data-dir = \"/var/lib/chatao\""), "{printed}");
    assert!(printed.contains("port = 7000"), "{printed}");

    // Every setting is there, set or commented out; with every comment of the form
    // `# key = value` turned into a setting, the file is still valid.
    let example = std::fs::read_to_string(&path).unwrap();
    let mut uncommented = String::new();
    for line in example.lines() {
        let bare = line.strip_prefix("# ").unwrap_or(line);
        let is_setting = KEYS.iter().any(|k| bare.starts_with(&format!("{k} = ")));
        uncommented.push_str(if is_setting { bare } else { line });
        uncommented.push('\n');
    }
    for key in KEYS {
        assert!(
            uncommented.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "packaging/chatao.toml does not show `{key}`"
        );
    }
    parse_file(&path, &uncommented).unwrap();
}

#[test]
fn an_invalid_config_exits_2_naming_the_file_the_line_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    std::fs::write(&path, "port = 7000\n\n# limits\nmax-connections = -1\n").unwrap();
    let out = chataosrv(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let want = format!("{}:4: max-connections: -1 is out of range", path.display());
    assert!(err.contains(&want), "{err}");

    std::fs::write(&path, "mailbox = 10\nunknown-thing = true\n").unwrap();
    let out = chataosrv(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(":2: unknown-thing: unknown setting"), "{out:?}");

    let out = chataosrv(&["--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read the config file"), "{out:?}");
}

#[test]
fn flags_override_the_file_and_the_default_port_stays_7000() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    std::fs::write(&path, "port = 7100\nburst = 3\nlog-level = \"debug\"\n").unwrap();
    let cfg = path.to_str().unwrap();
    let out = chataosrv(&["--config", cfg, "--check-config", "7200", "--burst", "20"]);
    let printed = text(&out.stdout);
    assert!(printed.contains("\nport = 7200\n"), "{printed}");
    assert!(printed.contains("\nburst = 20\n"), "{printed}");
    assert!(printed.contains("\nlog-level = \"debug\"\n"), "{printed}");
    let out = chataosrv(&["--check-config"]);
    assert!(text(&out.stdout).contains("\nport = 7000\n"));
}

#[test]
fn help_documents_every_option_and_version_prints_the_version() {
    let out = chataosrv(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for key in KEYS.iter().filter(|k| **k != "port") {
        assert!(help.contains(&format!("--{key} ")), "--help lacks --{key}:\n{help}");
    }
    for flag in ["--config", "--check-config", "--fingerprint", "--completions", "--man", "[PORT]"]
    {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let out = chataosrv(&["--version"]);
    assert_eq!(text(&out.stdout).trim(), concat!("chataosrv ", env!("CARGO_PKG_VERSION")));
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = chataosrv(&["--completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains("max-connections-per-ip"), "{shell}: {script}");
    }
    let out = chataosrv(&["--man"]);
    assert!(out.status.success());
    let man = text(&out.stdout);
    assert!(man.contains(".TH chataosrv 1"), "{man}");
    assert!(man.contains("max\\-connections\\-per\\-ip"), "{man}");
}

#[tokio::test]
async fn sighup_applies_the_log_level_names_what_needs_a_restart_and_survives_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    std::fs::write(&path, "listen = \"127.0.0.1\"\nport = 0\ndata-dir = \"data\"\n").unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chataosrv"))
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = line_with(&mut log, "listening").await;
    let field = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).unwrap();
    let addr: std::net::SocketAddr = field.parse().unwrap();
    assert!(dir.path().join("data/serverKey/key.pem").exists(), "data-dir is relative to the file");
    let hup = || {
        let pid = child.id().unwrap().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };

    std::fs::write(
        &path,
        "listen = \"127.0.0.1\"\nport = 0\ndata-dir = \"data\"\nlog-level = \"debug\"\n\
         max-connections = 5\n",
    )
    .unwrap();
    hup();
    line_with(&mut log, "log level changed").await;
    let line = line_with(&mut log, "next restart").await;
    assert!(line.contains("max-connections") && !line.contains("log-level"), "{line}");
    line_with(&mut log, "access lists reloaded").await;

    std::fs::write(&path, "listen = \"127.0.0.1\"\nport = \"zero\"\n").unwrap();
    hup();
    let line = line_with(&mut log, "the config file is invalid").await;
    assert!(line.contains(&format!("{}:2: port", path.display())), "{line}");
    // Still serving, with the settings it had.
    TestClient::connect(addr, "alice").await.unwrap();

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}
