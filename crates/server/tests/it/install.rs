//! install.sh, driven with bash in temporary folders, never touching the real system: a local
//! install from which the installed server and client chat over loopback; a system install
//! into a DESTDIR-style root, checking every file it places, run twice, then uninstalled; the
//! systemd unit checked by `systemd-analyze` where that tool exists; and the messages for a
//! missing cargo and for a missing answer.
//!
//! The script installs the binaries this test run built (`--bin-dir`), so no release build
//! happens here. The client binary is another package's: `cargo test --workspace` builds it; a
//! test run that did not (`cargo test -p chatao-server`) skips the tests that need it, saying so.
#![allow(clippy::unwrap_used)]

use chatao_testkit::line_with;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The directory holding this build's chataosrv and chatao, if both are there.
fn bin_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_BIN_EXE_chataosrv")).parent().unwrap().to_owned();
    if dir.join("chatao").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {} has no chatao; run cargo test --workspace", dir.display());
        None
    }
}

/// Runs install.sh with `args`, standard input `input`, and a clean environment as far as the
/// script cares.
fn install_sh(args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("install.sh"))
        .args(args)
        .env_remove("DESTDIR")
        .env_remove("CHATAO_BIN_DIR")
        .env_remove("SUDO_USER")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "install.sh failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file and directory under `root`, relative, with its mode.
fn tree(root: &Path) -> BTreeMap<String, u32> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u32>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, mode(&path));
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Whether this build's client can generate completions (it may not yet).
fn client_has_docs(bins: &Path) -> bool {
    Command::new(bins.join("chatao"))
        .args(["--completions", "bash"])
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

#[tokio::test]
async fn a_local_install_runs_the_server_and_clients_from_its_folder() {
    let Some(bins) = bin_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("chatao");
    let d = dir.to_str().unwrap();
    let printed = ok(install_sh(&["--local", d, "--bin-dir", bins.to_str().unwrap()], "", &[]));

    // The commands it prints are the README's, with the full path.
    assert!(
        printed.contains(&format!("  {d}/bin/chataosrv --data-dir {d}/data 7000\n")),
        "{printed}"
    );
    // The client as printed uses the user's own key, like any chatao (issue 16: a key of the
    // install's own gave the user two identities).
    assert!(printed.contains(&format!("  {d}/bin/chatao localhost 7000 alice\n")), "{printed}");
    assert!(!printed.contains("--key-dir"), "{printed}");
    assert!(printed.contains(&format!("nohup {d}/bin/chataosrv --data-dir {d}/data 7000 >>")));
    assert_eq!(mode(&dir.join("bin/chataosrv")), 0o755);
    assert_eq!(mode(&dir.join("bin/chatao")), 0o755);
    assert_eq!(mode(&dir.join("data")), 0o700);
    assert!(!dir.join("clientKey").exists(), "no client key of the install's own");
    assert!(dir.join("share/man/man1/chataosrv.1").exists());
    // The commented config example the server's manual points to.
    let example = std::fs::read_to_string(dir.join("share/doc/chatao/chatao.toml")).unwrap();
    assert_eq!(example, std::fs::read_to_string(repo().join("packaging/chatao.toml")).unwrap());
    assert!(printed.contains("share/doc/chatao/chatao.toml"), "{printed}");
    assert!(dir.join("share/bash-completion/completions/chataosrv").exists());

    // The server, as printed but on a free loopback port.
    let mut server = tokio::process::Command::new(dir.join("bin/chataosrv"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1", "0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(server.stderr.take().unwrap()).lines();
    let line = line_with(&mut log, "listening").await;
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).unwrap();
    let port = addr.rsplit_once(':').unwrap().1.to_owned();

    // Bob listens (with a key of his own); alice, with the install's key, says one line.
    let mut bob = tokio::process::Command::new(dir.join("bin/chatao"))
        .arg("--key-dir")
        .arg(tmp.path().join("bobKey"))
        .args(["--plain", "127.0.0.1", &port, "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut bob_out = BufReader::new(bob.stdout.take().unwrap()).lines();
    line_with(&mut bob_out, "connected to").await;
    // Alice, as the script says and with the folder on her PATH: `chatao localhost PORT alice`,
    // in a home of her own.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap());
    let mut alice = tokio::process::Command::new("chatao")
        .env("PATH", &path)
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .args(["localhost", &port, "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = alice.stdin.take().unwrap();
    stdin.write_all(b"hello from the local install\n").await.unwrap();
    drop(stdin);
    let said = timeout(STEP, alice.wait_with_output()).await.unwrap().unwrap();
    assert!(said.status.success(), "alice: {}", text(&said.stderr));
    line_with(&mut bob_out, "<alice> hello from the local install").await;
    drop(bob.stdin.take());
    timeout(STEP, bob.wait()).await.unwrap().unwrap();

    let pid = server.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = timeout(STEP, server.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    for file in ["data/chatao.db", "data/serverKey/key.pem"] {
        assert!(dir.join(file).exists(), "{file} is not in the install's folder");
    }
    // Her key is the user's default one, the key any chatao of hers uses (this build's too).
    let user_key = home.join(".config/chatao/clientKey");
    assert!(user_key.join("key.pem").exists() && user_key.join("known_servers").exists());
    let fingerprint = |bin: &Path| {
        let out = Command::new(bin)
            .arg("--fingerprint")
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap();
        assert!(out.status.success());
        text(&out.stdout)
    };
    assert_eq!(fingerprint(&dir.join("bin/chatao")), fingerprint(&bins.join("chatao")));

    // Again: an upgrade keeps the data. Then uninstalling keeps it, unless purged.
    ok(install_sh(&["--local", d, "--bin-dir", bins.to_str().unwrap()], "", &[]));
    assert!(dir.join("data/serverKey/key.pem").exists());
    ok(install_sh(&["--uninstall", "--local", d], "", &[]));
    assert!(!dir.join("bin").exists() && !dir.join("share").exists());
    assert!(dir.join("data/chatao.db").exists());
    ok(install_sh(&["--uninstall", "--purge", "--local", d], "", &[]));
    assert!(!dir.exists());
    assert!(user_key.join("key.pem").exists(), "the user's own key is not the install's");
}

#[test]
fn a_system_install_into_a_destdir_places_every_file_and_can_run_twice_and_be_removed() {
    let Some(bins) = bin_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let r = root.to_str().unwrap();
    let b = bins.to_str().unwrap();
    let args = ["--system", "--destdir", r, "--prefix", "/usr", "--bin-dir", b];
    let printed = ok(install_sh(&args, "", &[]));
    for would in [
        "would run: useradd --system --user-group --home-dir /var/lib/chatao",
        "would run: chown chatao:chatao /var/lib/chatao",
        "would run: systemctl daemon-reload",
        "would run: systemctl enable chatao.service",
    ] {
        assert!(printed.contains(would), "{would:?} not in:\n{printed}");
    }

    let mut expected: BTreeMap<String, u32> = [
        ("etc", 0o755),
        ("etc/chatao", 0o755),
        ("etc/chatao/chatao.toml", 0o640),
        ("etc/systemd", 0o755),
        ("etc/systemd/system", 0o755),
        ("etc/systemd/system/chatao.service", 0o644),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/bin/chatao", 0o755),
        ("usr/bin/chataosrv", 0o755),
        ("usr/share", 0o755),
        ("usr/share/bash-completion", 0o755),
        ("usr/share/bash-completion/completions", 0o755),
        ("usr/share/bash-completion/completions/chataosrv", 0o644),
        ("usr/share/doc", 0o755),
        ("usr/share/doc/chatao", 0o755),
        ("usr/share/doc/chatao/chatao.toml", 0o644),
        ("usr/share/fish", 0o755),
        ("usr/share/fish/vendor_completions.d", 0o755),
        ("usr/share/fish/vendor_completions.d/chataosrv.fish", 0o644),
        ("usr/share/man", 0o755),
        ("usr/share/man/man1", 0o755),
        ("usr/share/man/man1/chataosrv.1", 0o644),
        ("usr/share/zsh", 0o755),
        ("usr/share/zsh/site-functions", 0o755),
        ("usr/share/zsh/site-functions/_chataosrv", 0o644),
        ("var", 0o755),
        ("var/lib", 0o755),
        ("var/lib/chatao", 0o750),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m))
    .collect();
    if client_has_docs(&bins) {
        for (p, m) in [
            ("usr/share/bash-completion/completions/chatao", 0o644),
            ("usr/share/fish/vendor_completions.d/chatao.fish", 0o644),
            ("usr/share/man/man1/chatao.1", 0o644),
            ("usr/share/zsh/site-functions/_chatao", 0o644),
        ] {
            expected.insert(p.to_owned(), m);
        }
    }
    // The directories the script creates follow the umask; compare the files' modes exactly
    // and the directories' existence.
    let strip_dirs = |t: &BTreeMap<String, u32>| -> BTreeMap<String, Option<u32>> {
        t.iter().map(|(p, m)| (p.clone(), root.join(p).is_file().then_some(*m))).collect()
    };
    let placed = tree(&root);
    assert_eq!(strip_dirs(&placed), strip_dirs(&expected));
    assert_eq!(placed["var/lib/chatao"], 0o750);

    let packaging = repo().join("packaging");
    let config = std::fs::read_to_string(root.join("etc/chatao/chatao.toml")).unwrap();
    assert_eq!(config, std::fs::read_to_string(packaging.join("chatao.toml")).unwrap());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/chatao.service")).unwrap();
    let shipped = std::fs::read_to_string(packaging.join("chatao.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/chataosrv --config /etc/chatao/chatao.toml\n"));
    assert_eq!(unit, shipped.replace("/usr/local/bin/chataosrv", "/usr/bin/chataosrv"));
    assert_eq!(
        std::fs::read(root.join("usr/bin/chataosrv")).unwrap(),
        std::fs::read(bins.join("chataosrv")).unwrap()
    );
    // The installed server accepts the installed config.
    let check = Command::new(root.join("usr/bin/chataosrv"))
        .arg("--config")
        .arg(root.join("etc/chatao/chatao.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    // Twice: same files, and the administrator's config is kept.
    std::fs::write(root.join("etc/chatao/chatao.toml"), "port = 7100\n").unwrap();
    let again = ok(install_sh(&args, "", &[]));
    assert!(again.contains("Kept the existing /etc/chatao/chatao.toml"), "{again}");
    assert_eq!(strip_dirs(&tree(&root)), strip_dirs(&expected));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/chatao/chatao.toml")).unwrap(),
        "port = 7100\n"
    );

    // Uninstall: programs, docs and unit go; settings and state stay.
    let removed = ok(install_sh(&["--uninstall", "--destdir", r, "--prefix", "/usr"], "", &[]));
    assert!(removed.contains("would run: systemctl disable --now chatao.service"), "{removed}");
    let left: Vec<String> = tree(&root).into_keys().filter(|p| root.join(p).is_file()).collect();
    assert_eq!(left, ["etc/chatao/chatao.toml"]);
    assert!(root.join("var/lib/chatao").is_dir());
    let purged =
        ok(install_sh(&["--uninstall", "--purge", "--destdir", r, "--prefix", "/usr"], "", &[]));
    assert!(purged.contains("would run: userdel chatao"), "{purged}");
    assert!(!root.join("etc/chatao").exists() && !root.join("var/lib/chatao").exists());
}

#[test]
fn the_unit_passes_systemd_analyze_where_it_is_installed() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    eprintln!("{}", text(&version.stdout).lines().next().unwrap_or_default());
    let tmp = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's program exists: point it at this build's.
    let shipped = std::fs::read_to_string(repo().join("packaging/chatao.service")).unwrap();
    let unit = tmp.path().join("chatao.service");
    std::fs::write(
        &unit,
        shipped.replace("/usr/local/bin/chataosrv", env!("CARGO_BIN_EXE_chataosrv")),
    )
    .unwrap();
    let verify =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&unit).output().unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify.stderr)
    );
    // The exposure score (0 to 100, lower is safer) of the hardening, offline.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(security.status.success(), "systemd-analyze security:\n{}", text(&security.stdout));
}

#[test]
fn without_cargo_it_says_what_is_missing_and_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    let out =
        install_sh(&["--local", dir.to_str().unwrap()], "", &[("CARGO", "/nonexistent/cargo")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("cargo (the Rust toolchain) is needed"), "{err}");
    assert!(err.contains("https://sh.rustup.rs") && err.contains("--bin-dir"), "{err}");
    assert!(!dir.join("bin").exists());
}

#[test]
fn without_a_mode_it_asks_and_a_script_without_answers_is_told_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let out = install_sh(&[], "", &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("say --local DIR or --system"), "{out:?}");

    let Some(bins) = bin_dir() else { return };
    let dir = tmp.path().join("asked");
    let answers = format!("1\n{}\n", dir.display());
    let printed = ok(install_sh(&["--bin-dir", bins.to_str().unwrap()], &answers, &[]));
    assert!(printed.contains("1) in one folder"), "{printed}");
    assert!(dir.join("bin/chataosrv").exists());

    let out = install_sh(&["--frobnicate"], "", &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown option: --frobnicate"));
    let help = ok(install_sh(&["--help"], "", &[]));
    assert!(help.contains("--local [DIR]") && help.contains("--destdir DIR"), "{help}");
}

#[test]
fn shellcheck_finds_nothing_where_it_is_installed() {
    let Ok(out) = Command::new("shellcheck").arg(repo().join("install.sh")).output() else {
        eprintln!("skipped: shellcheck is not installed (apt-get install shellcheck)");
        return;
    };
    assert!(out.status.success(), "{}", text(&out.stdout));
}
