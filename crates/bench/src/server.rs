//! Servers the bench starts itself: `chataosrv` in a temporary data directory, or an IRC peer
//! through `shared/peers/start.sh`. Each is fresh for each run and stopped after it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::procfs;

/// Time a started server has to start listening (an IRC peer may first be apt-installed).
pub const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Time a server has to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The CPUs every server the bench starts is pinned to (`--server-cpus`, a `taskset -c` list),
/// set once at startup; unset, servers run where the scheduler puts them.
static SERVER_CPUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Pins every server started from now on to `cpus` (a `taskset -c` list such as `0`).
pub fn pin_servers(cpus: &str) -> Result<()> {
    let ok = std::process::Command::new("taskset")
        .args(["-c", cpus, "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "cannot pin to CPUs {cpus:?}: `taskset -c {cpus} true` failed (util-linux, a valid list)"
        );
    }
    SERVER_CPUS.set(cpus.to_owned()).ok();
    Ok(())
}

/// A command for a server process: `program` itself, or `taskset -c CPUS program` when servers
/// are pinned (taskset execs the program, so the child's pid is the server's).
fn server_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match SERVER_CPUS.get() {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A server process the bench started.
#[derive(Debug)]
pub struct Spawned {
    pub addr: SocketAddr,
    pub pid: u32,
    /// The Chatao server's key fingerprint.
    pub fingerprint: Option<chatao_proto::Fingerprint>,
    child: Child,
    /// Chatao's data directory (its log is `server.log` there); removed on drop.
    dir: Option<TempDir>,
    /// A cluster's shared key directory, kept by its first node; removed on drop.
    keys: Option<TempDir>,
}

/// What the bench passes to a Chatao server it starts.
#[derive(Debug, Clone)]
pub struct ChataoSpawn {
    pub bin: PathBuf,
    /// Passed after the bench's own flags, so they win.
    pub extra_args: Vec<String>,
}

/// A free loopback port (bound then released: racy in principle, fine on a bench machine).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The flags that lift Chatao's limits on a bench server: no message rate, no handshake rate,
/// no per-address cap (every bench client comes from 127.0.0.1), room for 100,000 connections.
pub fn chatao_bench_flags() -> Vec<String> {
    [
        "--rate-per-sec",
        "0",
        "--burst",
        "1000",
        "--handshakes-per-minute",
        "0",
        "--max-connections",
        "100000",
        "--max-connections-per-ip",
        "100000",
        "--log-level",
        "warn",
    ]
    .map(String::from)
    .to_vec()
}

impl ChataoSpawn {
    /// Starts the server on a free loopback port in a new temporary data directory, and waits
    /// until it accepts connections.
    pub async fn start(&self) -> Result<Spawned> {
        self.start_node(None, None, &chatao_bench_flags()).await
    }

    /// As [`ChataoSpawn::start`], but with the server's default limits (only `--log-level
    /// warn` and `extra` before the user's extra flags): for the `attack` scenario, which
    /// measures the limits themselves.
    pub async fn start_with_default_limits(&self, extra: &[String]) -> Result<Spawned> {
        let mut flags = vec!["--log-level".to_owned(), "warn".to_owned()];
        flags.extend(extra.iter().cloned());
        self.start_node(None, None, &flags).await
    }

    /// Starts a cluster on this machine: a `nats-server` with JetStream (from `nats_bin`) and
    /// `nodes` servers joined to it, sharing one key. Returns the nodes, then NATS.
    pub async fn start_cluster(&self, nodes: u32, nats_bin: &Path) -> Result<Vec<Spawned>> {
        let nats = start_nats(nats_bin).await?;
        let url = format!("nats://{}", nats.addr);
        let keys = tempfile::Builder::new().prefix("chatao-bench-keys-").tempdir()?;
        let mut out = Vec::new();
        for _ in 0..nodes.max(1) {
            out.push(self.start_node(Some(keys.path()), Some(&url), &chatao_bench_flags()).await?);
        }
        // The key directory lives as long as the first node's data directory.
        if let Some(first) = out.first_mut() {
            first.keys = Some(keys);
        }
        out.push(nats);
        Ok(out)
    }

    async fn start_node(
        &self,
        key_dir: Option<&Path>,
        cluster: Option<&str>,
        flags: &[String],
    ) -> Result<Spawned> {
        let dir = tempfile::Builder::new().prefix("chatao-bench-").tempdir()?;
        let data = dir.path().to_string_lossy().into_owned();
        let mut key_args = vec!["--data-dir".to_owned(), data.clone()];
        if let Some(keys) = key_dir {
            key_args.extend(["--key-dir".to_owned(), keys.to_string_lossy().into_owned()]);
        }
        let fp = Command::new(&self.bin)
            .args(&key_args)
            .arg("--fingerprint")
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if !fp.status.success() {
            bail!(
                "{} --fingerprint failed: {}",
                self.bin.display(),
                String::from_utf8_lossy(&fp.stderr)
            );
        }
        let printed = String::from_utf8_lossy(&fp.stdout);
        let fingerprint = chatao_proto::Fingerprint::parse(&printed)
            .with_context(|| format!("{} --fingerprint printed {printed:?}", self.bin.display()))?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut args = vec![port.to_string(), "--listen".into(), "127.0.0.1".into()];
        args.extend(key_args);
        if let Some(url) = cluster {
            args.extend(["--cluster".into(), url.to_owned()]);
        }
        args.extend(flags.iter().cloned());
        args.extend(self.extra_args.iter().cloned());
        let child = server_command(&self.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut spawned = Spawned {
            addr,
            pid,
            fingerprint: Some(fingerprint),
            child,
            dir: Some(dir),
            keys: None,
        };
        spawned.wait_listening().await?;
        Ok(spawned)
    }
}

/// Starts `nats-server` with JetStream on a free loopback port, its store in a temporary
/// directory.
pub async fn start_nats(bin: &Path) -> Result<Spawned> {
    let dir = tempfile::Builder::new().prefix("chatao-bench-nats-").tempdir()?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.path().join("server.log"))?;
    let child = server_command(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("cannot run {} (apt-get install nats-server, or --nats-bin)", bin.display())
        })?;
    let pid = child.id().context("nats-server exited at once")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut spawned = Spawned { addr, pid, fingerprint: None, child, dir: Some(dir), keys: None };
    spawned.wait_listening().await?;
    Ok(spawned)
}

/// Starts an IRC peer (`inspircd` or `ngircd`) with `script` (shared/peers/start.sh) on free
/// ports, and waits for its TLS port. The script execs the server, so the child's pid is the
/// server's.
pub async fn start_peer(script: &Path, kind: &str) -> Result<(Spawned, u16)> {
    let tls_port = free_port()?;
    let plain_port = free_port()?;
    let child = server_command("bash")
        .arg(script)
        .args([kind, &tls_port.to_string(), &plain_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let pid = child.id().context("the peer script exited at once")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let mut spawned = Spawned { addr, pid, fingerprint: None, child, dir: None, keys: None };
    spawned.wait_listening().await?;
    Ok((spawned, plain_port))
}

impl Spawned {
    async fn wait_listening(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited before listening ({status}){}", self.log_hint());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("the server did not listen on {} in time{}", self.addr, self.log_hint());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_hint(&self) -> String {
        self.dir.as_ref().map_or(String::new(), |d| {
            let log = std::fs::read_to_string(d.path().join("server.log")).unwrap_or_default();
            format!("; its log:\n{}", log.lines().rev().take(20).collect::<Vec<_>>().join("\n"))
        })
    }

    /// The server's peak memory so far (to put in the report before stopping it).
    pub fn sample(&self) -> Option<procfs::ProcSample> {
        procfs::sample(self.pid).ok()
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. A peer that crashes on the way out
    /// (InspIRCd 3 may) is of no concern: its work is done.
    pub async fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
