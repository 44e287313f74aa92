//! The binary's settings as an administrator meets them: the example config in packaging/,
//! config errors and exit codes, every mistake reported in one run, nothing created before the
//! settings are good, startup errors said once with what to do, flags over the file, `--help`,
//! `--version`, completions and the man page, the access lists in the log, and SIGHUP
//! reloading the config file. (Parsing and merging are unit-tested in src/settings.rs.)
#![allow(clippy::unwrap_used)]

use chatao_testkit::line_with;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chatao_server::settings::{Cli, KEYS, parse_file};
use chatao_testkit::{Chataosrv, TestClient};
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
    let cfg = path.to_str().unwrap();
    let settings = Cli::try_parse_from(["chataosrv", "--config", cfg]).unwrap().settings().unwrap();
    assert_eq!(settings.data_dir(), Path::new("/var/lib/chatao"));
    // The check also tries the data directory, which a test cannot write in /var/lib.
    let state = tempfile::tempdir().unwrap();
    let data = state.path().to_str().unwrap();
    let out = chataosrv(&["--config", cfg, "--check-config", "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("port = 7000"), "{printed}");

    // Every setting is there, set or commented out; with every comment of the form
    // `# key = value` turned into a setting, the file is still valid.
    let example = std::fs::read_to_string(&path).unwrap();
    let mut uncommented = String::new();
    for line in example.lines() {
        let bare = line.strip_prefix("# ").unwrap_or(line);
        let is_setting = KEYS.iter().any(|k| bare.starts_with(&format!("{k} = ")))
            // A build without the cluster refuses `cluster` (settings.rs unit tests).
            && (cfg!(feature = "cluster") || !bare.starts_with("cluster = "));
        uncommented.push_str(if is_setting { bare } else { line });
        uncommented.push('\n');
    }
    for key in KEYS.iter().filter(|k| cfg!(feature = "cluster") || **k != "cluster") {
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

/// A directory's entries, recursively, as paths relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(dir).unwrap().to_owned());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn check_config_reports_every_mistake_of_a_file_in_one_run_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    std::fs::write(dir.path().join("ops"), "# operators\nSHA256:short\nnot-a-key bob\n").unwrap();
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    std::fs::write(
        &path,
        "port = 7000\n\
         allow = \"missing-allow\"\n\
         ops-file = \"ops\"\n\
         data-dir = \"a-file\"\n\
         max-conections = 5\n\
         max-connections = 0\n\
         listen = \"localhost\"\n\
         max-text-bytes = 100000\n\
         metrics = \"127.0.0.1:7000\"\n",
    )
    .unwrap();
    let before = tree(dir.path());
    let out = chataosrv(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(text(&out.stdout), "", "nothing is said valid");
    let err = text(&out.stderr);
    let p = path.display();
    let expected = [
        format!("{p}:2: allow: cannot read the allowlist "),
        format!(
            "{p}:3: ops-file: {}:2: expected a key fingerprint",
            dir.path().join("ops").display()
        ),
        format!(
            "{p}:3: ops-file: {}:3: expected a key fingerprint",
            dir.path().join("ops").display()
        ),
        format!(
            "{p}:4: data-dir: the data directory {} is not a directory",
            dir.path().join("a-file").display()
        ),
        format!("{p}:5: max-conections: unknown setting"),
        format!("{p}:6: max-connections: 0 would refuse every connection"),
        format!("{p}:7: listen: expected an IP address"),
        format!("{p}:8: max-text-bytes: 100000 is out of range"),
        format!("{p}:9: metrics: 127.0.0.1:7000 would share port 7000"),
        "chataosrv: 9 mistakes; nothing was started or created".to_owned(),
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.contains(want.as_str()), "got  {line}\nwant {want}");
    }
    assert_eq!(tree(dir.path()), before, "nothing created");
}

#[test]
fn a_missing_allow_file_fails_check_config_saying_the_cause_once_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    let data = dir.path().join("data");
    std::fs::write(&path, "allow = \"/nonexistent/allow\"\n").unwrap();
    let out = chataosrv(&[
        "--config",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--check-config",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "chataosrv: {}:1: allow: cannot read the allowlist /nonexistent/allow: No such file \
             or directory; create it (one SHA256:... key fingerprint per line, as `chatao \
             --fingerprint` prints it; `#` starts a comment) or remove `allow` from the config \
             file",
            path.display()
        )
    );
    // Given as an option, the hint says to leave the option out.
    let out = chataosrv(&["--allow", "/nonexistent/allow", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.starts_with("chataosrv: --allow /nonexistent/allow: cannot read"), "{err}");
    assert!(err.trim_end().ends_with("or leave out --allow"), "{err}");
    assert!(!data.exists());
}

#[test]
fn a_real_start_with_a_bad_setting_creates_no_key_no_database_and_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1\"\nport = 0\ndata-dir = \"data\"\nkey-dir = \"keys\"\n\
         allow = \"allow\"\n",
    )
    .unwrap();
    let out = chataosrv(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains(":5: allow: cannot read the allowlist"), "{out:?}");
    assert_eq!(tree(dir.path()), [PathBuf::from("chatao.toml")], "nothing created");

    // A bad value too: the same.
    std::fs::write(&path, "port = 0\ndata-dir = \"data\"\nop = [\"SHA256:x\"]\n").unwrap();
    let out = chataosrv(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(tree(dir.path()), [PathBuf::from("chatao.toml")], "nothing created");
}

#[test]
fn a_port_in_use_is_said_once_with_what_to_do_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let args = ["--listen", "127.0.0.1", "--data-dir", data.to_str().unwrap(), port.as_str()];

    // --check-config: valid settings, with a note that the port is taken now.
    let out = chataosrv(&[&args[..], &["--check-config"]].concat());
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("note: 127.0.0.1:{port} is in use now")),
        "{out:?}"
    );

    // A real start: a runtime error (1), before any key or database is made.
    let out = chataosrv(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    let want = format!(
        "chataosrv: cannot listen on 127.0.0.1:{port}: Address already in use; another program \
         (another chataosrv?) listens on port {port}: stop it, or choose another port\n"
    );
    assert_eq!(err, want);
    assert!(!data.exists(), "no data directory, no key");
}

#[tokio::test]
async fn the_log_says_whether_there_is_an_allowlist_and_how_long_it_is() {
    const KEY: &str = "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4";
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow");
    std::fs::write(&allow, format!("# friends\n{KEY} alice\n")).unwrap();
    for (extra, want) in [
        (vec![], "allowlist=\"off\""),
        (vec!["--allow".to_owned(), allow.display().to_string()], "allowlist_entries=1"),
    ] {
        let mut server = Chataosrv::new(env!("CARGO_BIN_EXE_chataosrv"))
            .default_log()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(&extra)
            .spawn()
            .await;
        let line = server.startup.iter().find(|l| l.contains("access lists loaded"));
        let line = line.expect("the access lists are loaded before the server listens");
        assert!(line.contains(want) && !line.contains("allowlist=-1"), "{line}");
        server.child.kill().await.unwrap();
    }
}

#[test]
fn flags_override_the_file_and_the_default_port_stays_7000() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    std::fs::write(&path, "port = 7100\nburst = 3\nlog-level = \"debug\"\n").unwrap();
    let cfg = path.to_str().unwrap();
    let out = chataosrv(&["--config", cfg, "--check-config", "7200", "--burst", "20"]);
    assert!(out.status.success(), "{out:?}");
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
    assert!(help.contains("0: no per-address limit"), "{help}");
    assert!(help.contains("At least 1 (0 would refuse everyone)"), "{help}");
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

#[test]
fn the_man_page_has_files_environment_exit_status_signals_and_examples() {
    let out = chataosrv(&["--man"]);
    assert!(out.status.success());
    let man = text(&out.stdout);
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "FILES",
        "ENVIRONMENT",
        "EXIT STATUS",
        "SIGNALS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        let heading = if section.contains(' ') {
            format!("\n.SH \"{section}\"\n")
        } else {
            format!("\n.SH {section}\n")
        };
        assert!(man.contains(&heading), "no {section} section:\n{man}");
    }
    for said in ["packaging/chatao.toml", "/etc/chatao/chatao.toml", "SIGHUP", "RUST_LOG"] {
        assert!(man.contains(said), "the page does not mention {said}");
    }
    // Valid roff: groff renders it without a warning, where groff is installed.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("chataosrv.1");
    std::fs::write(&page, &man).unwrap();
    match Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&page).output() {
        Ok(out) => {
            assert!(out.status.success() && out.stderr.is_empty(), "groff: {}", text(&out.stderr))
        }
        Err(err) => eprintln!("groff not run ({err}): only the headings were checked"),
    }
}

#[tokio::test]
async fn sighup_applies_the_log_level_names_what_needs_a_restart_and_survives_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatao.toml");
    std::fs::write(&path, "listen = \"127.0.0.1\"\nport = 0\ndata-dir = \"data\"\n").unwrap();
    let mut server =
        Chataosrv::config(env!("CARGO_BIN_EXE_chataosrv"), &path).default_log().spawn().await;
    let (addr, mut log) = (server.addr, server.take_log());
    assert!(dir.path().join("data/serverKey/key.pem").exists(), "data-dir is relative to the file");
    let hup = || server.signal("-HUP");

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

    server.signal("-TERM");
    let status = timeout(Duration::from_secs(20), server.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}
