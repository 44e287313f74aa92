//! A real terminal for the full-screen tests: one tmux server on its own socket, running one
//! session (`send-keys` to type, `capture-pane` to read the screen, format variables for the
//! terminal's modes), killed on drop. Used by the tests that drive the TUI (tui_tmux, tui_bounds).
// Each test binary uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::process::Command;

/// Longest a tmux command, or a wait without its own deadline, may take.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How often a wait reads the screen.
const POLL: Duration = Duration::from_millis(100);

/// One tmux server on its own socket, running one session; killed on drop.
pub struct Tmux {
    socket: String,
    /// The socket file, removed on drop (`kill-server` leaves it behind).
    socket_path: Option<std::path::PathBuf>,
}

impl Tmux {
    /// Starts `command` in a detached `width`×`height` session.
    pub async fn start(command: &str, width: u16, height: u16) -> Tmux {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let version = Command::new("tmux").arg("-V").output().await;
        match version {
            Ok(out) if out.status.success() => {}
            other => panic!(
                "these tests need tmux (`apt-get install tmux`; CI installs it): `tmux -V` gave {other:?}"
            ),
        }
        let socket =
            format!("chatao-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut tmux = Tmux { socket, socket_path: None };
        let (w, h) = (width.to_string(), height.to_string());
        tmux.run(&["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", &w, "-y", &h, command])
            .await;
        tmux.socket_path = Some(tmux.format("#{socket_path}").await.into());
        tmux
    }

    /// Runs a tmux command on this server; panics if it fails.
    pub async fn run(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(
            DEADLINE,
            Command::new("tmux").arg("-L").arg(&self.socket).args(args).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("tmux {args:?} hung"))
        .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses keys (tmux names: `Enter`, `M-1`, `C-n`).
    pub async fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args).await;
    }

    /// Types `text` literally.
    pub async fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]).await;
    }

    /// Pastes `text` as the terminal would (bracketed, if the program asked for it).
    pub async fn paste(&self, text: &str) {
        self.run(&["set-buffer", "-b", "chatao-test", text]).await;
        self.run(&["paste-buffer", "-p", "-d", "-b", "chatao-test", "-t", "t"]).await;
    }

    pub async fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"]).await
    }

    /// A tmux format variable of the pane (`#{alternate_on}`).
    pub async fn format(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "t", format]).await.trim().to_owned()
    }

    /// The pid of the program the pane runs.
    pub async fn pid(&self) -> u32 {
        self.format("#{pane_pid}").await.parse().unwrap()
    }

    /// Waits until the screen satisfies `pred`; panics with the screen after `limit`.
    pub async fn wait_within(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let screen = self.screen().await;
            if pred(&screen) {
                return screen;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{screen}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the screen satisfies `pred`; panics with the screen after [`DEADLINE`].
    pub async fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_within(what, DEADLINE, pred).await
    }

    /// Waits until the screen contains `needle`.
    pub async fn wait_for(&self, needle: &str) -> String {
        self.wait(needle, |s| s.contains(needle)).await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
