//! The real binaries as tests start them: [`Chataosrv`] spawns `chataosrv` on loopback and
//! returns once its log says it listens (with the address it gave); [`chatao`] is the command
//! line of a real client. Both children are killed when dropped.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use crate::STEP;

/// A free loopback port (bound, then released: for a server that must come back on the same
/// port after a restart).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("a bound address").port()
}

/// A binary built next to the test binary that calls this (`target/debug/NAME`: another
/// package's binary, built by `cargo build -p chatao-server -p chatao-client --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/<test> -> target/debug/<name>
    let path = exe.parent().and_then(Path::parent).expect("target/debug").join(name);
    assert!(path.exists(), "{} is missing: cargo build -p chatao-server --bins", path.display());
    path
}

/// How to start one `chataosrv`: on 127.0.0.1, on a free port unless [`Chataosrv::port`]
/// says which, with `RUST_LOG=info` and its log on a pipe (the `listening` line is how
/// [`Chataosrv::spawn`] knows it is up).
pub struct Chataosrv {
    cmd: Command,
    args: Vec<std::ffi::OsString>,
    /// The port argument, last; `None` for [`Chataosrv::config`] (the file says).
    port: Option<u16>,
}

impl Chataosrv {
    /// `chataosrv` at `bin` (in the server's tests `env!("CARGO_BIN_EXE_chataosrv")`, else
    /// [`bin`]`("chataosrv")`).
    pub fn new(bin: impl AsRef<OsStr>) -> Chataosrv {
        let mut cmd = Command::new(bin);
        cmd.env("RUST_LOG", "info");
        Chataosrv { cmd, args: vec!["--listen".into(), "127.0.0.1".into()], port: Some(0) }
    }

    /// `chataosrv --config FILE` and nothing else: the file says where it listens.
    pub fn config(bin: impl AsRef<OsStr>, file: &Path) -> Chataosrv {
        let mut cmd = Command::new(bin);
        cmd.env("RUST_LOG", "info");
        Chataosrv { cmd, args: vec!["--config".into(), file.into()], port: None }
    }

    /// As [`Chataosrv::new`], run by `sh -c "PREFIX exec BIN ARGS"`: e.g. `ulimit -f 400 &&`
    /// to start it under a shell limit.
    pub fn in_shell(prefix: &str, bin: impl AsRef<OsStr>) -> Chataosrv {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("{prefix} exec \"$0\" \"$@\"")).arg(bin);
        cmd.env("RUST_LOG", "info");
        Chataosrv { cmd, args: vec!["--listen".into(), "127.0.0.1".into()], port: Some(0) }
    }

    /// Listens on `port` (the last argument) instead of a free one.
    pub fn port(mut self, port: u16) -> Chataosrv {
        self.port = Some(port);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Chataosrv {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Chataosrv {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Chataosrv {
        self.cmd.env(key, value);
        self
    }

    /// Without `RUST_LOG`: the server's default log level.
    pub fn default_log(mut self) -> Chataosrv {
        self.cmd.env_remove("RUST_LOG");
        self
    }

    /// Starts it and waits (at most [`crate::STEP`]) for its `listening` line; panics if it
    /// exits or says nothing first.
    pub async fn spawn(mut self) -> ServerProcess {
        let mut child = self
            .cmd
            .args(&self.args)
            .args(self.port.map(|p| p.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chataosrv starts");
        let mut log = BufReader::new(child.stderr.take().expect("a piped stderr")).lines();
        let mut startup = Vec::new();
        let listening = loop {
            let line = tokio::time::timeout(STEP, log.next_line())
                .await
                .unwrap_or_else(|_| panic!("chataosrv did not say it listens: {startup:#?}"))
                .expect("chataosrv's log")
                .unwrap_or_else(|| panic!("chataosrv ended before it listened: {startup:#?}"));
            startup.push(line.clone());
            if line.contains("listening") {
                break line;
            }
        };
        let addr = listening
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {listening:?}"));
        ServerProcess { child, addr, listening, startup, log: Some(log) }
    }
}

/// A running `chataosrv` (killed when dropped).
pub struct ServerProcess {
    pub child: Child,
    /// The address it said it listens on.
    pub addr: SocketAddr,
    /// Its `listening` log line.
    pub listening: String,
    /// Its log up to the `listening` line (included).
    pub startup: Vec<String>,
    log: Option<Lines<BufReader<ChildStderr>>>,
}

impl ServerProcess {
    /// Its log after the `listening` line, to read more of it.
    pub fn log(&mut self) -> &mut Lines<BufReader<ChildStderr>> {
        self.log.as_mut().expect("the log is not drained")
    }

    /// Takes its log after the `listening` line (to read it while using the process).
    pub fn take_log(&mut self) -> Lines<BufReader<ChildStderr>> {
        self.log.take().expect("the log is not drained")
    }

    /// Reads (and drops) the rest of its log in a task, so that it never blocks on a full
    /// pipe; returns `self` for chaining.
    pub fn drain_log(mut self) -> ServerProcess {
        if let Some(mut log) = self.log.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        }
        self
    }

    /// Sends `sig` (`-STOP`, `-CONT`, `-HUP`, `-TERM`...) with `kill`.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().expect("kill");
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill_9(&mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        self.child.wait().await.expect("the server reaped");
    }
}

/// The real client at `bin` (`env!("CARGO_BIN_EXE_chatao")`) as `chatao TARGET.. NICK
/// --key-dir KEY_DIR`, its standard streams piped and killed when dropped. `target` names the
/// server(s) as the command line does: `["HOST", "PORT"]`, or one `HOST:PORT,HOST:PORT` list.
/// Add options with `.args(..)` and start it with `.spawn()`.
///
/// Hermetic: the runner's own `~/.config/chatao/config.toml`, `ignores.toml`, chat logs and
/// `CHATAO_*` variables never reach the client (its config and state directories are under
/// KEY_DIR); a test that wants a config passes `--config` or sets the variables after this.
pub fn chatao(bin: impl AsRef<OsStr>, target: &[&str], nick: &str, key_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(target)
        .arg(nick)
        .arg("--key-dir")
        .arg(key_dir)
        .env("XDG_CONFIG_HOME", key_dir.join("xdg-config"))
        .env("XDG_STATE_HOME", key_dir.join("xdg-state"))
        .env_remove("CHATAO_SERVERS")
        .env_remove("CHATAO_STATE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}
