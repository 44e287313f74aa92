//! Real key packages for the `keypackages` attack: made before the run by the project's own
//! E2E engine (`chatao_e2e`, the one the client uploads from), each set for its own attacker
//! key, so that the server's validation accepts and stores them and the attack measures the
//! storage, not the refusal of garbage.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::chatao::bench_key;

/// Key packages made per key (the most one upload may carry).
pub const PER_KEY: usize = chatao_e2e::MAX_KEY_PACKAGES;

/// Keys with their key packages (base64), handed out in turn; after the last, the first again
/// (an upload for a key that has packages replaces them).
#[derive(Debug)]
pub struct Pool {
    keys: Vec<(u32, Vec<String>)>,
    next: AtomicUsize,
}

impl Pool {
    /// Makes `n` keys of `tag` from index `first`, [`PER_KEY`] packages each (on a blocking
    /// thread: this is CPU work and file writes).
    pub async fn make(tag: u8, first: u32, n: u32) -> Result<Pool> {
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::Builder::new().prefix("chatao-bench-kp-").tempdir()?;
            let mut keys = Vec::with_capacity(n as usize);
            for i in first..first + n {
                let key = bench_key(tag, i);
                let state = dir.path().join(i.to_string());
                let mut e2e =
                    chatao_e2e::E2e::open(&state, key.secret_bytes(), &key.public().fingerprint())
                        .context("opening an E2E state")?;
                let packages = e2e.key_packages(PER_KEY).context("making key packages")?;
                keys.push((i, packages.iter().map(|p| B64.encode(p)).collect()));
            }
            anyhow::Ok(Pool { keys, next: AtomicUsize::new(0) })
        })
        .await?
    }

    /// The next key and its packages.
    pub fn take(&self) -> Option<&(u32, Vec<String>)> {
        if self.keys.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.keys.len();
        self.keys.get(i)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes of base64 packages per upload, on average.
    pub fn upload_bytes(&self) -> usize {
        let total: usize = self.keys.iter().flat_map(|(_, p)| p).map(String::len).sum();
        total / self.keys.len().max(1)
    }
}
