//! What the scenarios share: connecting many clients with a bounded number in flight, waiting
//! for a condition or a deadline, and waiting for the server to go quiet before measuring.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use crate::procfs::{self, ProcSample};
use crate::target::{self, Client, ClientSpec, Endpoint, Progress};

/// How often waiting loops look at the counters.
pub const POLL: Duration = Duration::from_millis(10);
/// A server counts as quiet once it uses less than this share of a core...
const QUIET_SHARE: f64 = 0.03;
/// ...over this window.
const QUIET_WINDOW: Duration = Duration::from_millis(250);

/// Connects `specs` with at most `concurrency` connects in flight, stopping at `deadline`.
/// Returns the clients in the order of `specs` (`None` where the connect failed) and the first
/// few errors with their count.
pub async fn connect_all(
    ep: &Endpoint,
    specs: Vec<ClientSpec>,
    concurrency: usize,
    progress: &Arc<Progress>,
    deadline: Instant,
) -> (Vec<Option<Client>>, Errors) {
    let n = specs.len();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let (ep, progress, permits) = (ep.clone(), progress.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result =
                tokio::time::timeout_at(deadline, target::connect(&ep, &spec, progress.clone()))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("bench deadline reached")));
            if result.is_ok() {
                progress.connected.fetch_add(1, Ordering::Relaxed);
            }
            (i, result)
        });
    }
    let mut clients: Vec<Option<Client>> = (0..n).map(|_| None).collect();
    let mut errors = Errors::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(client))) => clients[i] = Some(client),
            Ok((_, Err(e))) => errors.add(format!("{e:#}")),
            Err(e) => errors.add(e.to_string()),
        }
    }
    (clients, errors)
}

/// A count of errors and the first few messages.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    pub count: u64,
    pub first: Vec<String>,
}

impl Errors {
    pub fn add(&mut self, e: String) {
        self.count += 1;
        if self.first.len() < 3 && !self.first.contains(&e) {
            self.first.push(e);
        }
    }
}

/// Waits until `done()` or `deadline`; true if `done()`.
pub async fn wait_for(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

/// Waits (until `deadline`) for `pid` to use less than a few percent of a core, so that what
/// follows is measured from a quiet start; returns a sample taken then (`None` without a pid).
pub async fn settle(pid: Option<u32>, deadline: Instant) -> Option<ProcSample> {
    let pid = pid?;
    settle_with(|| procfs::sample(pid).ok(), deadline).await
}

/// [`settle`] for every process of `ep` together (a cluster's nodes and NATS).
pub async fn settle_ep(ep: &crate::target::Endpoint, deadline: Instant) -> Option<ProcSample> {
    settle_with(|| ep.sample(), deadline).await
}

async fn settle_with(
    sample: impl Fn() -> Option<ProcSample>,
    deadline: Instant,
) -> Option<ProcSample> {
    let mut last = sample()?;
    loop {
        sleep(QUIET_WINDOW).await;
        let now = sample()?;
        let busy = procfs::cpu_delta(&last, &now) / QUIET_WINDOW.as_secs_f64();
        last = now;
        if busy < QUIET_SHARE || Instant::now() >= deadline {
            return Some(last);
        }
    }
}

/// Per-second rate of `count` over `secs` (0 when no time passed).
pub fn per_sec(count: f64, secs: f64) -> f64 {
    if secs > 0.0 { count / secs } else { 0.0 }
}

/// While alive, prints the counters to stderr every [`TICK`], so that a long setup shows how far
/// it got. Abort the returned task to stop it.
pub fn ticker(label: String, progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            sleep(TICK).await;
            eprintln!(
                "{label}: connected {} ready {} joins {} deliveries {} closed {}",
                Progress::get(&progress.connected),
                Progress::get(&progress.ready),
                Progress::get(&progress.joins),
                Progress::get(&progress.deliveries),
                Progress::get(&progress.closed),
            );
        }
    })
}

/// How often [`ticker`] prints.
pub const TICK: Duration = Duration::from_secs(5);
