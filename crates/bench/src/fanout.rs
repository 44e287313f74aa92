//! Fanout: `clients` in one room, `senders` of them each sending `messages`, flat out or at an
//! aggregate `rate`; every receiver accounts for every delivery and its latency.
//!
//! Phases: connect everyone (not measured), wait until every join announcement has arrived
//! (`N(N+1)/2` of them) and the server is quiet, then measure from the first send to the last
//! delivery: server CPU from `/proc` over exactly that window, deliveries, loss, duplicates,
//! latency. Teardown is not measured.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::{Instant, sleep_until};

use crate::common::{self, per_sec};
use crate::ledger::Tally;
use crate::payload::{self, Stamp};
use crate::procfs;
use crate::report::{Better, Report};
use crate::stats;
use crate::target::{ClientSpec, Endpoint, Progress};

/// Setup is over when no join announcement came for this long (see `run`).
const JOINS_QUIET: Duration = Duration::from_secs(2);

/// Settings of a fanout run.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    pub clients: u32,
    pub senders: u32,
    pub messages: u32,
    /// Aggregate messages per second over all senders; 0: flat out.
    pub rate: f64,
    /// Message text size, bytes.
    pub size: usize,
    /// Connects in flight during setup.
    pub concurrency: usize,
    /// Time without a new delivery, once every sender is done, after which the rest count as
    /// lost.
    pub stall: Duration,
    /// Send `quit` from every client at the end (for servers the bench did not start).
    pub quit_at_end: bool,
}

/// Key tag of fanout clients.
const TAG: u8 = 1;

/// Runs one fanout against `ep`, finishing by `deadline`.
pub async fn run(ep: &Endpoint, o: &FanoutOptions, deadline: Instant) -> Result<Report> {
    if o.senders == 0 || o.senders > o.clients || o.messages == 0 {
        bail!("need 1 <= senders <= clients and messages >= 1");
    }
    let room = ep.fanout_room().to_owned();
    let progress = Arc::new(Progress::default());
    let specs: Vec<ClientSpec> = (0..o.clients)
        .map(|i| ClientSpec {
            index: i,
            tag: TAG,
            nick: format!("f{i}"),
            room: room.clone(),
            ledger: Some((o.senders, o.messages)),
        })
        .collect();
    let setup_start = Instant::now();
    let ticker = common::ticker(format!("fanout {}", ep.name), progress.clone());
    let _stop_ticker = AbortOnDrop(ticker);
    let (clients, errors) =
        common::connect_all(ep, specs, o.concurrency, &progress, deadline).await;
    if errors.count > 0 {
        bail!("{} of {} clients failed to connect: {:?}", errors.count, o.clients, errors.first);
    }
    let clients: Vec<_> = clients.into_iter().flatten().collect();
    let n = u64::from(o.clients);
    // Every join announced to everyone already in (an IRC server), or, in a large room where
    // Chatao announces a member only once it speaks (issue 15), the announcements stopped:
    // none seen for JOINS_QUIET once everyone is connected.
    let all_joins = n * (n + 1) / 2;
    let mut report = Report::new("fanout", &ep.name);
    let (mut last, mut since) = (u64::MAX, Instant::now());
    let setup_done = common::wait_for(deadline, || {
        let joins = Progress::get(&progress.joins);
        if joins != last {
            (last, since) = (joins, Instant::now());
        }
        joins >= all_joins || since.elapsed() >= JOINS_QUIET || progress.closures().is_some()
    })
    .await;
    if let Some((n, why)) = progress.closures() {
        bail!("{n} clients were disconnected during setup; first: {why}");
    }
    if !setup_done {
        report.notes.push(format!(
            "setup: {} of {all_joins} join announcements seen by the deadline",
            Progress::get(&progress.joins)
        ));
    }
    let quiet_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
    let before = common::settle_ep(ep, quiet_by).await;
    let setup_s = setup_start.elapsed().as_secs_f64();

    // Measured phase.
    eprintln!("fanout {}: setup done in {setup_s:.1} s; sending", ep.name);
    let first_send_us = payload::now_us();
    let mut senders = tokio::task::JoinSet::new();
    for (s, client) in clients.iter().take(o.senders as usize).enumerate() {
        let sayer = client.sayer.clone();
        let (messages, size, s) = (o.messages, o.size, s as u32);
        let interval = if o.rate > 0.0 {
            Duration::from_secs_f64(f64::from(o.senders) / o.rate)
        } else {
            Duration::ZERO
        };
        // Paced senders are staggered evenly over one interval.
        let start = Instant::now() + interval.mul_f64(f64::from(s) / f64::from(o.senders));
        senders.spawn(async move {
            for seq in 0..messages {
                if !interval.is_zero() {
                    sleep_until(start + interval * seq).await;
                }
                let text =
                    payload::encode(Stamp { sender: s, seq, sent_us: payload::now_us() }, size);
                sayer.say(text).await?;
            }
            anyhow::Ok(())
        });
    }
    let echo = ep.echoes();
    let per_stream = u64::from(o.messages);
    let expected: u64 = (0..n)
        .map(|i| {
            let own = !echo && i < u64::from(o.senders);
            (u64::from(o.senders) - u64::from(own)) * per_stream
        })
        .sum();
    let mut send_errors = common::Errors::default();
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let got = Progress::get(&progress.deliveries);
        if got >= expected || Instant::now() >= deadline {
            break;
        }
        while let Some(done) = senders.try_join_next() {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => send_errors.add(format!("{e:#}")),
                Err(e) => send_errors.add(e.to_string()),
            }
        }
        if got != last_count {
            last_count = got;
            last_change = Instant::now();
        } else if senders.is_empty() && last_change.elapsed() >= o.stall {
            break;
        }
        tokio::time::sleep(common::POLL).await;
    }
    let after = ep.sample();
    let last_us = Progress::get(&progress.last_delivery_us).max(first_send_us);
    senders.abort_all();

    // Accounting.
    let mut tally = Tally::default();
    let mut latencies: Vec<u32> = Vec::with_capacity(expected as usize);
    for client in clients.iter() {
        if o.quit_at_end {
            client.sayer.quit().await;
        }
    }
    for client in clients {
        if let Some(rec) = client.finish().await {
            tally += rec.tally();
            latencies.extend_from_slice(&rec.latencies_us);
        }
    }
    let latency = stats::summarize(&mut latencies);
    let elapsed = (last_us - first_send_us) as f64 / 1e6;
    let lost = expected.saturating_sub(tally.unique);
    report.push("clients", n as f64, "", Better::Neither);
    report.push("senders", f64::from(o.senders), "", Better::Neither);
    report.push("messages_per_sender", f64::from(o.messages), "", Better::Neither);
    report.push("offered_rate", o.rate, "msg/s (0: flat out)", Better::Neither);
    report.push("text_bytes", o.size as f64, "B", Better::Neither);
    report.push("setup_s", setup_s, "s", Better::Neither);
    report.push("expected", expected as f64, "deliveries", Better::Neither);
    report.push("delivered", tally.unique as f64, "deliveries", Better::Neither);
    report.push("lost", lost as f64, "deliveries", Better::Neither);
    report.push("duplicated", tally.duplicates as f64, "deliveries", Better::Neither);
    report.push("reordered", tally.reordered as f64, "deliveries", Better::Neither);
    report.push("send_errors", send_errors.count as f64, "", Better::Neither);
    report.push("elapsed_s", elapsed, "s", Better::Lower);
    report.push("deliveries_per_s", per_sec(tally.unique as f64, elapsed), "1/s", Better::Higher);
    report.push("latency_p50", latency.p50_ms, "ms", Better::Lower);
    report.push("latency_p90", latency.p90_ms, "ms", Better::Lower);
    report.push("latency_p99", latency.p99_ms, "ms", Better::Lower);
    report.push("latency_p999", latency.p999_ms, "ms", Better::Lower);
    report.push("latency_max", latency.max_ms, "ms", Better::Lower);
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = procfs::cpu_delta(&b, &a);
        report.push("server_cpu_s", cpu, "s", Better::Lower);
        report.push(
            "deliveries_per_cpu_s",
            per_sec(tally.unique as f64, cpu),
            "1/CPU-s",
            Better::Higher,
        );
        report.push(
            "cpu_ns_per_delivery",
            if tally.unique > 0 { cpu * 1e9 / tally.unique as f64 } else { f64::NAN },
            "ns",
            Better::Lower,
        );
        report.push("server_peak_rss", a.hwm_kib as f64 / 1024.0, "MiB", Better::Lower);
    }
    if let Some((n, why)) = progress.closures().filter(|_| !o.quit_at_end) {
        report.notes.push(format!("{n} clients were disconnected during the run; first: {why}"));
    }
    if tally.foreign > 0 {
        report.notes.push(format!("{} messages not from this run were ignored", tally.foreign));
    }
    if !send_errors.first.is_empty() {
        report.notes.push(format!("send errors: {:?}", send_errors.first));
    }
    Ok(report)
}

/// Aborts a task when dropped (so that every exit path stops the ticker).
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
