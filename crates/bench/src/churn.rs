//! Churn: `workers` clients, each connecting, saying `messages` things, saying goodbye, and
//! starting over, for `duration` or until `cycles` in all. Every cycle is one full handshake.
//! Reports cycles (handshakes) per second, server CPU per cycle, and errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::common::{self, Errors, per_sec};
use crate::procfs;
use crate::report::{Better, Report};
use crate::target::{self, ClientSpec, Endpoint};

/// Settings of a churn run.
#[derive(Debug, Clone)]
pub struct ChurnOptions {
    pub workers: u32,
    pub duration: Duration,
    /// Stop after this many cycles in all (0: only the duration bounds it).
    pub cycles: u64,
    /// Messages said per cycle.
    pub messages: u32,
    pub size: usize,
}

const TAG: u8 = 3;

pub async fn run(ep: &Endpoint, o: &ChurnOptions, deadline: Instant) -> Result<Report> {
    let quiet_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
    let before = common::settle_ep(ep, quiet_by).await;
    let start = Instant::now();
    let stop_at = (start + o.duration).min(deadline);
    let done = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let mut set = tokio::task::JoinSet::new();
    for w in 0..o.workers {
        let (ep, o, done, started, errors) =
            (ep.clone(), o.clone(), done.clone(), started.clone(), errors.clone());
        let room = match ep.kind {
            target::Kind::Chatao { .. } => chatao_proto::DEFAULT_ROOM.to_owned(),
            target::Kind::Irc { .. } => "#churn".to_owned(),
        };
        let spec = ClientSpec { index: w, tag: TAG, nick: format!("c{w}"), room, ledger: None };
        set.spawn(async move {
            while Instant::now() < stop_at
                && (o.cycles == 0 || started.fetch_add(1, Ordering::Relaxed) < o.cycles)
            {
                let cycle = target::cycle(&ep, &spec, o.messages, o.size);
                match tokio::time::timeout_at(deadline, cycle).await {
                    Ok(Ok(())) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => errors.lock().await.add(format!("{e:#}")),
                    Err(_) => break,
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let after = ep.sample();
    let cycles = done.load(Ordering::Relaxed);
    let errors = errors.lock().await.clone();

    let mut report = Report::new("churn", &ep.name);
    report.push("workers", f64::from(o.workers), "", Better::Neither);
    report.push("messages_per_cycle", f64::from(o.messages), "", Better::Neither);
    report.push("cycles", cycles as f64, "", Better::Neither);
    report.push("errors", errors.count as f64, "", Better::Neither);
    report.push("elapsed_s", elapsed, "s", Better::Neither);
    report.push("cycles_per_s", per_sec(cycles as f64, elapsed), "1/s", Better::Higher);
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = procfs::cpu_delta(&b, &a);
        report.push("server_cpu_s", cpu, "s", Better::Lower);
        report.push(
            "cpu_ms_per_cycle",
            if cycles > 0 { cpu * 1e3 / cycles as f64 } else { f64::NAN },
            "ms",
            Better::Lower,
        );
        report.push("cycles_per_cpu_s", per_sec(cycles as f64, cpu), "1/CPU-s", Better::Higher);
        report.push("server_cpu_share", per_sec(cpu, elapsed), "cores", Better::Neither);
    }
    if !errors.first.is_empty() {
        report.notes.push(format!("errors: {:?}", errors.first));
    }
    Ok(report)
}
