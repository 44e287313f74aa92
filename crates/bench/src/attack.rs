//! `attack`: issue 15's adversarial run as a scenario. For each attack kind, against a fresh
//! server with default limits: an honest pair chats in #lobby (alice says a line every 200 ms,
//! bob receives it; [`honest`]) alone for a baseline, then during the attack ([`kinds`], over
//! raw connections: [`raw`]), then alone again after it. Reported per kind: the honest pair's
//! latency (alice's send to bob's receipt) in each phase and alice's echo, lines lost or never
//! acknowledged (both must be 0), the server's memory (before, peak, at the attack's end,
//! after) and CPU per phase from `/proc`, the bench's own CPU during the attack, and what the
//! attacker sent and received and how its sessions ended.

pub mod honest;
pub mod keypackages;
pub mod kinds;
pub mod raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::{Instant, sleep};

use crate::payload;
use crate::procfs::{self, ProcSample};
use crate::report::{Better, Report, fmt_value};
use crate::stats;
use raw::Counters;

/// The attack kinds, each after an item of issue 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// 16 connections asking for a 500-message history over and over (item 14).
    History,
    /// Connections creating rooms, and `list` 23 times a second (item 12).
    List,
    /// One connection creating rooms at the announced rate (item 12, memory).
    Rooms,
    /// Thousands of idle members joining #lobby one after another (item 17).
    Joins,
    /// Key-package uploads (real ones) from many keys in turn (item 15).
    Keypackages,
    /// A ping flood (item 16).
    Ping,
    /// Thousands of stalled handshakes (item 13).
    Handshake,
    /// A rename flood: one key on 8 connections (item 9).
    Nick,
    /// A message flood over the rate, into #lobby (fakelag).
    Spam,
    /// 8 slow connections to the metrics endpoint while it is scraped every second (item 19).
    Metrics,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::History,
        Kind::List,
        Kind::Rooms,
        Kind::Joins,
        Kind::Keypackages,
        Kind::Ping,
        Kind::Handshake,
        Kind::Nick,
        Kind::Spam,
        Kind::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::History => "history",
            Kind::List => "list",
            Kind::Rooms => "rooms",
            Kind::Joins => "joins",
            Kind::Keypackages => "keypackages",
            Kind::Ping => "ping",
            Kind::Handshake => "handshake",
            Kind::Nick => "nick",
            Kind::Spam => "spam",
            Kind::Metrics => "metrics",
        }
    }

    /// The scenario name in reports (`attack-ping`).
    pub fn scenario(self) -> &'static str {
        match self {
            Kind::History => "attack-history",
            Kind::List => "attack-list",
            Kind::Rooms => "attack-rooms",
            Kind::Joins => "attack-joins",
            Kind::Keypackages => "attack-keypackages",
            Kind::Ping => "attack-ping",
            Kind::Handshake => "attack-handshake",
            Kind::Nick => "attack-nick",
            Kind::Spam => "attack-spam",
            Kind::Metrics => "attack-metrics",
        }
    }
}

/// Settings of an attack run.
#[derive(Debug, Clone)]
pub struct AttackOptions {
    /// The honest pair alone before the attack.
    pub baseline: Duration,
    /// The attack, with the pair chatting.
    pub duration: Duration,
    /// The pair alone after it.
    pub after: Duration,
    pub sizes: kinds::Sizes,
    /// Attacker connections per loopback source address (see [`raw::Sources`]).
    pub per_address: u32,
    /// Where to write each honest line's timing (`--lines`), with the kind's name appended.
    pub lines: Option<std::path::PathBuf>,
}

/// The server under attack.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub server_key: Option<chatao_proto::Fingerprint>,
    /// For memory and CPU.
    pub pid: Option<u32>,
    /// The metrics endpoint, if served.
    pub metrics: Option<SocketAddr>,
}

/// How often the server's memory is read.
const RSS_EVERY: Duration = Duration::from_millis(250);
/// After the run, how long the pair waits for lines still on their way.
const GRACE: Duration = Duration::from_secs(10);
/// After the attack's stop, how long its tasks have to wind down before they are aborted.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// Peak and last resident memory seen by the sampler, KiB.
#[derive(Debug, Default)]
struct Rss {
    peak: AtomicU64,
    last: AtomicU64,
}

/// The 1-minute load average from `/proc/loadavg` (`?` if unreadable).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Runs one attack kind against `target` and reports it.
pub async fn run(
    target: &Target,
    kind: Kind,
    o: &AttackOptions,
    deadline: Instant,
) -> Result<Report> {
    let work = run_inner(target, kind, o);
    tokio::time::timeout_at(deadline, work).await.context("bench deadline reached")?
}

async fn run_inner(target: &Target, kind: Kind, o: &AttackOptions) -> Result<Report> {
    let ctx = Arc::new(kinds::Ctx::new(kind, target.addr, target.metrics, o.per_address));
    kinds::prepare(&ctx, o.sizes).await.context("preparing the attack")?;
    let pair = honest::Pair::start(target.addr, target.server_key.clone())
        .await
        .context("connecting the honest pair")?;

    let sample = || target.pid.and_then(|p| procfs::sample(p).ok());
    let me = || procfs::sample(std::process::id()).ok();
    let rss = Arc::new(Rss::default());
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rss, sampling, pid) = (rss.clone(), sampling.clone(), target.pid);
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(s) = pid.and_then(|p| procfs::sample(p).ok()) {
                    rss.peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                    rss.last.store(s.rss_kib, Ordering::Relaxed);
                }
                sleep(RSS_EVERY).await;
            }
        })
    };

    let t0 = payload::now_us();
    let s0 = sample();
    sleep(o.baseline).await;
    let (t1, s1, b1) = (payload::now_us(), sample(), me());
    let load_before = loadavg();
    let mut attackers = kinds::start(&ctx, o.sizes, o.duration);
    sleep(o.duration).await;
    ctx.stop.cancel();
    let (t2, s2, b2) = (payload::now_us(), sample(), me());
    let load_after = loadavg();
    let wound_down =
        tokio::time::timeout(WIND_DOWN, async { while attackers.join_next().await.is_some() {} })
            .await
            .is_ok();
    attackers.abort_all();
    let remaining = o.after.saturating_sub(Duration::from_micros(payload::now_us() - t2));
    sleep(remaining).await;
    let (t3, s3) = (payload::now_us(), sample());
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let (lines, mut honest_notes) = pair.finish(GRACE).await;

    let mut r = Report::new(kind.scenario(), &target.name);
    r.push("attack_s", o.duration.as_secs_f64(), "s", Better::Neither);
    let phases = [("base", t0, t1), ("during", t1, t2), ("after", t2, t3 + 1)];
    let mut lost = 0u64;
    let mut unacked = 0u64;
    for l in &lines {
        lost += u64::from(l.received_us.is_none());
        unacked += u64::from(l.echoed_us.is_none());
    }
    r.push("lines", lines.len() as f64, "msgs", Better::Neither);
    if let Some(base) = &o.lines {
        let mut out = String::new();
        for l in &lines {
            let ms =
                |at: Option<u64>| at.map_or(-1.0, |at| at.saturating_sub(l.sent_us) as f64 / 1e3);
            let since = (l.sent_us as f64 - t1 as f64) / 1e6;
            out.push_str(&format!("{since:.3} {:.2} {:.2}\n", ms(l.received_us), ms(l.echoed_us)));
        }
        let path = format!("{}-{}.txt", base.display(), kind.name());
        if let Err(e) = std::fs::write(&path, out) {
            honest_notes.push(format!("cannot write {path}: {e}"));
        }
    }
    r.push("lost", lost as f64, "msgs", Better::Neither);
    r.push("unacked", unacked as f64, "msgs", Better::Neither);
    for (phase, from, to) in phases {
        let in_phase = || lines.iter().filter(|l| l.sent_us >= from && l.sent_us < to);
        let mut recv: Vec<u32> = in_phase()
            .filter_map(|l| l.received_us.map(|at| at.saturating_sub(l.sent_us) as u32))
            .collect();
        let mut echo: Vec<u32> = in_phase()
            .filter_map(|l| l.echoed_us.map(|at| at.saturating_sub(l.sent_us) as u32))
            .collect();
        let lat = stats::summarize(&mut recv);
        let echo = stats::summarize(&mut echo);
        let (k50, k99, kmax, kecho) = match phase {
            "base" => ("base_p50", "base_p99", "base_max", "base_echo_p99"),
            "during" => ("during_p50", "during_p99", "during_max", "during_echo_p99"),
            _ => ("after_p50", "after_p99", "after_max", "after_echo_p99"),
        };
        r.push(k50, lat.p50_ms, "ms", Better::Lower);
        r.push(k99, lat.p99_ms, "ms", Better::Lower);
        r.push(kmax, lat.max_ms, "ms", Better::Lower);
        r.push(kecho, echo.p99_ms, "ms", Better::Lower);
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    if let (Some(s0), Some(s1), Some(s2), Some(s3)) = (s0, s1, s2, s3) {
        r.push("rss_before", mib(s1.rss_kib), "MiB", Better::Lower);
        r.push(
            "rss_peak",
            mib(rss.peak.load(Ordering::Relaxed).max(s2.rss_kib)),
            "MiB",
            Better::Lower,
        );
        r.push("rss_attack_end", mib(s2.rss_kib), "MiB", Better::Lower);
        r.push("rss_after", mib(s3.rss_kib), "MiB", Better::Lower);
        let share = |a: &ProcSample, b: &ProcSample, from: u64, to: u64| {
            procfs::cpu_delta(a, b) / ((to.saturating_sub(from)) as f64 / 1e6).max(1e-3)
        };
        r.push("cpu_base", share(&s0, &s1, t0, t1), "cores", Better::Lower);
        r.push("cpu_during", share(&s1, &s2, t1, t2), "cores", Better::Lower);
        r.push("cpu_after", share(&s2, &s3, t2, t3), "cores", Better::Lower);
    }
    if let (Some(b1), Some(b2)) = (b1, b2) {
        let cores = procfs::cpu_delta(&b1, &b2) / ((t2 - t1) as f64 / 1e6).max(1e-3);
        r.push("bench_cpu_during", cores, "cores", Better::Neither);
    }
    let c = &ctx.counters;
    let count = |a: &AtomicU64| Counters::get(a) as f64;
    r.push("attacker_connects", count(&c.connects), "", Better::Neither);
    r.push("attacker_refused", count(&c.connect_failures), "", Better::Neither);
    r.push("attacker_addresses", f64::from(ctx.sources.addresses()), "", Better::Neither);
    r.push("attacker_records_sent", count(&c.records_sent), "", Better::Neither);
    r.push("attacker_mb_sent", count(&c.bytes_sent) / 1e6, "MB", Better::Neither);
    r.push("attacker_records_received", count(&c.records_received), "", Better::Neither);
    r.push("attacker_mb_received", count(&c.bytes_received) / 1e6, "MB", Better::Neither);
    r.push("attacker_ended_by_server", count(&c.closed_by_server), "", Better::Neither);
    match kind {
        Kind::Joins => {
            r.push("members", count(&c.connects), "", Better::Neither);
            let done = Counters::get(&ctx.done_ms);
            r.push(
                "all_joined_s",
                if done > 0 { done as f64 / 1e3 } else { f64::NAN },
                "s",
                Better::Lower,
            );
        }
        Kind::Metrics => {
            r.push("scrapes_ok", count(&ctx.scrapes_ok), "", Better::Neither);
            r.push("scrapes_failed", count(&ctx.scrapes_failed), "", Better::Neither);
            r.push("scrape_max_ms", count(&ctx.scrape_max_ms), "ms", Better::Lower);
        }
        _ => {}
    }
    let endings = c.endings();
    if !endings.is_empty() {
        r.notes.push(format!("attacker sessions ended: {endings}"));
    }
    let errors = c.errors();
    if !errors.is_empty() {
        r.notes.push(format!("errors to the attacker: {errors}"));
    }
    // Other work on the machine skews every figure: say how busy it was.
    r.notes.push(format!(
        "load average (1 min) at the attack's start {load_before}, at its end {load_after}"
    ));
    if !wound_down {
        r.notes.push("some attacker tasks did not stop in time and were aborted".into());
    }
    r.notes.extend(honest_notes.into_iter().map(|n| format!("honest pair: {n}")));
    Ok(r)
}

/// Issue 15's goal for the honest pair's p99, in every phase.
pub const P99_GOAL_MS: f64 = 100.0;

/// What `r` missed of issue 15's goals: a phase's p99 at or over [`P99_GOAL_MS`], a line lost
/// or never acknowledged, a missing figure.
pub fn verdict(r: &Report) -> Vec<String> {
    let mut misses = vec![];
    for k in ["base_p99", "during_p99", "after_p99"] {
        match r.get(k) {
            Some(v) if v < P99_GOAL_MS => {}
            Some(v) => misses.push(format!("{k} {} ms", fmt_value(v))),
            None => misses.push(format!("no {k}")),
        }
    }
    for k in ["lost", "unacked"] {
        match r.get(k) {
            Some(0.0) => {}
            Some(v) => misses.push(format!("{k} {}", fmt_value(v))),
            None => misses.push(format!("no {k}")),
        }
    }
    misses
}

/// The attack table: one row per kind, the figures issue 15 asks for.
pub fn table(reports: &[Report]) -> String {
    let cols: [(&str, &str); 17] = [
        ("base_p99", "p99 base"),
        ("during_p50", "p50 during"),
        ("during_p99", "p99 during"),
        ("during_max", "max during"),
        ("after_p99", "p99 after"),
        ("lost", "lost"),
        ("unacked", "unacked"),
        ("rss_before", "RSS before"),
        ("rss_peak", "RSS peak"),
        ("rss_after", "RSS after"),
        ("cpu_during", "CPU during"),
        ("bench_cpu_during", "bench CPU"),
        ("attacker_records_sent", "att. sent"),
        ("attacker_mb_sent", "MB sent"),
        ("attacker_records_received", "att. recv"),
        ("attacker_mb_received", "MB recv"),
        ("attacker_ended_by_server", "ended"),
    ];
    let mut rows = vec![];
    let mut header = vec!["kind".to_owned()];
    header.extend(cols.iter().map(|(_, h)| (*h).to_owned()));
    rows.push(header);
    let mut units = vec!["".to_owned()];
    units.extend(cols.iter().map(|(k, _)| {
        let unit =
            reports.iter().flat_map(|r| &r.metrics).find(|m| m.key == *k).map_or("", |m| m.unit);
        unit.to_owned()
    }));
    rows.push(units);
    for r in reports {
        let mut row = vec![r.scenario.trim_start_matches("attack-").to_owned()];
        row.extend(cols.iter().map(|(k, _)| r.get(k).map_or("-".into(), fmt_value)));
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 1 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    for r in reports {
        let misses = verdict(r);
        let kind = r.scenario.trim_start_matches("attack-");
        if misses.is_empty() {
            out.push_str(&format!(
                "{kind}: ok (p99 under {P99_GOAL_MS} ms in every phase, nothing lost)\n"
            ));
        } else {
            out.push_str(&format!("{kind}: MISSED: {}\n", misses.join(", ")));
        }
    }
    let extra = ["members", "all_joined_s", "scrapes_ok", "scrapes_failed", "scrape_max_ms"];
    for r in reports {
        let figures: Vec<String> = extra
            .iter()
            .filter_map(|k| r.get(k).map(|v| format!("{k}={}", fmt_value(v))))
            .collect();
        if !figures.is_empty() {
            out.push_str(&format!("{}: {}\n", r.scenario, figures.join(" ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(during_p99: f64, lost: f64) -> Report {
        let mut r = Report::new(Kind::Spam.scenario(), "chatao");
        for (k, v) in [("base_p99", 5.0), ("during_p99", during_p99), ("after_p99", 6.0)] {
            r.push(k, v, "ms", Better::Lower);
        }
        r.push("lost", lost, "msgs", Better::Neither);
        r.push("unacked", 0.0, "msgs", Better::Neither);
        r
    }

    #[test]
    fn the_verdict_names_every_missed_goal() {
        assert!(verdict(&report(99.9, 0.0)).is_empty());
        assert_eq!(verdict(&report(100.0, 2.0)), ["during_p99 100 ms", "lost 2"]);
        let t = table(&[report(250.0, 0.0)]);
        assert!(t.contains("spam: MISSED: during_p99 250 ms"), "{t}");
        assert!(table(&[report(20.0, 0.0)]).contains("spam: ok"));
    }
}
