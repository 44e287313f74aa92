//! Running a scenario against each target, `repeat` times, interleaved (Chatao, peer, Chatao,
//! peer, ...), each run on a fresh server when the bench starts the servers itself, so that
//! both targets see the same machine load over the session.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::irc;
use crate::report::Report;
use crate::server::{self, ChataoSpawn, Spawned};
use crate::target::{Endpoint, Kind};

/// Where the Chatao server comes from.
#[derive(Debug, Clone)]
pub enum ChataoSource {
    /// Started by the bench for each run.
    Spawn(ChataoSpawn),
    /// Already running (its CPU and memory are measured only with a pid).
    Attach { addr: SocketAddr, pid: Option<u32>, server_key: Option<chatao_proto::Fingerprint> },
    /// Started by the bench for each run: a `nats-server` and `nodes` servers in a cluster;
    /// clients are spread over the nodes, and CPU and memory are summed over every process.
    Cluster { spawn: ChataoSpawn, nodes: u32, nats_bin: PathBuf },
}

/// Where the IRC peer comes from.
#[derive(Debug, Clone)]
pub enum PeerSource {
    /// Started by the bench for each run with `shared/peers/start.sh KIND`.
    Spawn { script: PathBuf, kind: String, tls: bool },
    /// Already running.
    Attach { addr: SocketAddr, pid: Option<u32>, tls: bool, name: String },
}

/// What to run against.
#[derive(Debug, Clone)]
pub struct Plan {
    pub chatao: Option<ChataoSource>,
    pub peer: Option<PeerSource>,
    pub repeat: u32,
    /// Nothing runs past this.
    pub deadline: Instant,
}

impl Plan {
    /// True if the bench started nothing, so clients must say goodbye themselves.
    pub fn attached(&self, peer: bool) -> bool {
        if peer {
            matches!(self.peer, Some(PeerSource::Attach { .. }))
        } else {
            matches!(self.chatao, Some(ChataoSource::Attach { .. }))
        }
    }
}

/// A target made ready for one run, and the processes to stop after it.
async fn prepare(plan: &Plan, peer: bool) -> Result<Option<(Endpoint, Vec<Spawned>)>> {
    let prepared = if peer {
        match &plan.peer {
            None => return Ok(None),
            Some(PeerSource::Spawn { script, kind, tls }) => {
                let (spawned, plain_port) = server::start_peer(script, kind).await?;
                let addr = if *tls {
                    spawned.addr
                } else {
                    SocketAddr::from(([127, 0, 0, 1], plain_port))
                };
                let name = if *tls { kind.clone() } else { format!("{kind}-plain") };
                let ep = Endpoint::single(name, Kind::Irc { tls: *tls }, addr, Some(spawned.pid));
                (ep, vec![spawned])
            }
            Some(PeerSource::Attach { addr, pid, tls, name }) => {
                let ep = Endpoint::single(name.clone(), Kind::Irc { tls: *tls }, *addr, *pid);
                (ep, vec![])
            }
        }
    } else {
        match &plan.chatao {
            None => return Ok(None),
            Some(ChataoSource::Spawn(spawn)) => {
                let spawned = spawn.start().await?;
                let kind = Kind::Chatao { server_key: spawned.fingerprint.clone() };
                let ep = Endpoint::single("chatao".into(), kind, spawned.addr, Some(spawned.pid));
                (ep, vec![spawned])
            }
            Some(ChataoSource::Attach { addr, pid, server_key }) => {
                let kind = Kind::Chatao { server_key: server_key.clone() };
                (Endpoint::single("chatao".into(), kind, *addr, *pid), vec![])
            }
            Some(ChataoSource::Cluster { spawn, nodes, nats_bin }) => {
                let spawned = spawn.start_cluster(*nodes, nats_bin).await?;
                let (first, rest) = spawned.split_first().context("no node started")?;
                let nodes = &rest[..rest.len().saturating_sub(1)];
                let ep = Endpoint {
                    name: format!("chatao-cluster{}", nodes.len() + 1),
                    kind: Kind::Chatao { server_key: first.fingerprint.clone() },
                    addr: first.addr,
                    pid: Some(first.pid),
                    nodes: nodes.iter().map(|s| s.addr).collect(),
                    other_pids: rest.iter().map(|s| s.pid).collect(),
                };
                (ep, spawned)
            }
        }
    };
    Ok(Some(prepared))
}

/// Runs `scenario` against every target of `plan`, `plan.repeat` times. A failed run is
/// reported on stderr and counted; the others go on. Returns the reports and the failures.
pub async fn run_all<F, Fut>(plan: &Plan, scenario: F) -> (Vec<Report>, u32)
where
    F: Fn(Endpoint, bool, Instant) -> Fut,
    Fut: Future<Output = Result<Report>>,
{
    run_all_many(plan, |ep, attached, deadline| {
        let run = scenario(ep, attached, deadline);
        async move { run.await.map(|r| vec![r]) }
    })
    .await
}

/// [`run_all`] for a scenario that makes several reports per run (e.g. `e2e-fanout`: a plain
/// room and an E2E room on the same server).
pub async fn run_all_many<F, Fut>(plan: &Plan, scenario: F) -> (Vec<Report>, u32)
where
    F: Fn(Endpoint, bool, Instant) -> Fut,
    Fut: Future<Output = Result<Vec<Report>>>,
{
    let mut reports = vec![];
    let mut failures = 0;
    for run in 1..=plan.repeat.max(1) {
        for peer in [false, true] {
            if Instant::now() >= plan.deadline {
                eprintln!("global --timeout reached; stopping");
                return (reports, failures + 1);
            }
            let (ep, spawned) = match prepare(plan, peer).await {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!(
                        "run {run}: cannot start the {} server: {e:#}",
                        if peer { "peer" } else { "chatao" }
                    );
                    failures += 1;
                    continue;
                }
            };
            let tls_note = match ep.kind {
                Kind::Irc { tls: true } => irc::describe_tls(ep.addr).await.ok(),
                _ => None,
            };
            let result = scenario(ep.clone(), plan.attached(peer), plan.deadline).await;
            for s in spawned {
                s.stop().await;
            }
            match result {
                Ok(many) => {
                    for mut report in many {
                        report.run = run;
                        if let Some(t) = &tls_note {
                            report.notes.push(format!("TLS: {t}"));
                        }
                        eprintln!("{}", summary_line(&report));
                        reports.push(report);
                    }
                }
                Err(e) => {
                    eprintln!("run {run} against {}: {e:#}", ep.name);
                    failures += 1;
                }
            }
        }
    }
    (reports, failures)
}

/// One line per finished run, for the operator watching stderr.
fn summary_line(r: &Report) -> String {
    let keys = [
        "deliveries_per_cpu_s",
        "deliveries_per_s",
        "clients_cpu_ns_per_delivery",
        "latency_p99",
        "lost",
        "duplicated",
        "kib_per_connection",
        "cpu_ms_per_connect",
        "cycles_per_s",
        "cycles_per_cpu_s",
        "errors",
    ];
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|k| r.get(k).map(|v| format!("{k}={}", crate::report::fmt_value(v))))
        .collect();
    let notes =
        if r.notes.is_empty() { String::new() } else { format!(" [{}]", r.notes.join("; ")) };
    format!("run {} {} {}: {}{notes}", r.run, r.scenario, r.target, parts.join(" "))
}
