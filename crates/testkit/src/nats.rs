//! A real `nats-server` with JetStream on a free loopback port, its data in a temporary
//! directory, for the cluster tests. The package is `nats-server` (Debian); `.ci/run`
//! installs it. A missing binary fails the test with that advice rather than skipping it.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

/// A running `nats-server`. Dropping it kills the process.
pub struct NatsServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream and waits until it accepts connections.
    pub async fn start() -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = NatsServer { port, dir: tempfile::tempdir().unwrap(), child: None };
        server.spawn().await;
        server
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server ({e}); install it: apt-get install -y nats-server")
            });
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start listening on {addr}");
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is read or answered,
    /// as with a stalled or unreachable peer. [`NatsServer::stop`] still kills it;
    /// [`NatsServer::thaw`] lets it go on.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let Some(pid) = self.child.as_ref().and_then(Child::id) else { return };
        let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {sig} {pid}");
    }

    /// Stops the server (SIGKILL: NATS is gone at once, as in a crash or a partition).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port with the same data (its streams and buckets).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}
