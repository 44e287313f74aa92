//! Idle: `clients` connections that register, join a room (rooms of `room_size`, so that no
//! room's join announcements grow with the square of the client count) and stay. Measures the
//! connect phase (rate, server CPU per connect) and the server memory each connection holds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use crate::common::{self, per_sec};
use crate::procfs;
use crate::report::{Better, Report};
use crate::target::{ClientSpec, Endpoint, Progress};

/// Settings of an idle run.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    pub clients: u32,
    /// Clients per room.
    pub room_size: u32,
    pub concurrency: usize,
    /// How long everyone stays connected before memory is read again.
    pub hold: Duration,
    pub quit_at_end: bool,
}

const TAG: u8 = 2;

pub async fn run(ep: &Endpoint, o: &IdleOptions, deadline: Instant) -> Result<Report> {
    let progress = Arc::new(Progress::default());
    let room_size = o.room_size.max(1);
    let specs: Vec<ClientSpec> = (0..o.clients)
        .map(|i| ClientSpec {
            index: i,
            tag: TAG,
            nick: format!("i{i}"),
            room: format!("#idle{}", i / room_size),
            ledger: None,
        })
        .collect();
    let quiet_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
    let before = common::settle_ep(ep, quiet_by).await;
    let start = Instant::now();
    let _ticker =
        crate::fanout::AbortOnDrop(common::ticker(format!("idle {}", ep.name), progress.clone()));
    let (clients, errors) =
        common::connect_all(ep, specs, o.concurrency, &progress, deadline).await;
    let clients: Vec<_> = clients.into_iter().flatten().collect();
    let connected = clients.len() as u64;
    let all_in = common::wait_for(deadline, || {
        Progress::get(&progress.ready) + Progress::get(&progress.closed) >= connected
    })
    .await;
    let connect_s = start.elapsed().as_secs_f64();
    let quiet_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
    let after_connect = common::settle_ep(ep, quiet_by).await;
    let hold_until = (Instant::now() + o.hold).min(deadline);
    tokio::time::sleep_until(hold_until).await;
    let after_hold = ep.sample();
    let still = connected.saturating_sub(Progress::get(&progress.closed));

    let mut report = Report::new("idle", &ep.name);
    report.push("clients", f64::from(o.clients), "", Better::Neither);
    report.push("room_size", f64::from(room_size), "", Better::Neither);
    report.push("connected", connected as f64, "", Better::Neither);
    report.push("connect_errors", errors.count as f64, "", Better::Neither);
    report.push("held_to_end", still as f64, "", Better::Neither);
    report.push("connect_s", connect_s, "s", Better::Lower);
    report.push("connects_per_s", per_sec(connected as f64, connect_s), "1/s", Better::Higher);
    if let (Some(b), Some(c), Some(h)) = (before, after_connect, after_hold) {
        let cpu = procfs::cpu_delta(&b, &c);
        let n = connected.max(1) as f64;
        report.push("server_cpu_s", cpu, "s", Better::Lower);
        report.push("cpu_ms_per_connect", cpu * 1e3 / n, "ms", Better::Lower);
        report.push(
            "connects_per_cpu_s",
            per_sec(connected as f64, cpu),
            "1/CPU-s",
            Better::Higher,
        );
        report.push("rss_before", b.rss_kib as f64 / 1024.0, "MiB", Better::Neither);
        report.push("rss_held", h.rss_kib as f64 / 1024.0, "MiB", Better::Lower);
        let per_conn = (h.rss_kib.saturating_sub(b.rss_kib)) as f64 / n;
        report.push("kib_per_connection", per_conn, "KiB", Better::Lower);
        report.push("server_peak_rss", h.hwm_kib as f64 / 1024.0, "MiB", Better::Lower);
    }
    if !all_in {
        report.notes.push(format!(
            "only {} of {connected} clients saw their own join by the deadline",
            Progress::get(&progress.ready)
        ));
    }
    if let Some((n, why)) = progress.closures() {
        report.notes.push(format!("{n} clients were disconnected while idle; first: {why}"));
    }
    if !errors.first.is_empty() {
        report.notes.push(format!("connect errors: {:?}", errors.first));
    }
    if o.quit_at_end {
        for c in &clients {
            c.sayer.quit().await;
        }
    }
    for c in clients {
        c.finish().await;
    }
    Ok(report)
}
