//! `chatao-bench`: parses flags, runs one scenario against Chatao and, with `--peer irc`, an IRC
//! server, and prints the table (and JSON or CSV for the record). BENCHMARKS.md has the method.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chatao_bench::attack::{self, AttackOptions};
use chatao_bench::churn::{self, ChurnOptions};
use chatao_bench::e2e_fanout::{self, E2eFanoutOptions};
use chatao_bench::fanout::{self, FanoutOptions};
use chatao_bench::idle::{self, IdleOptions};
use chatao_bench::report::{self, Report};
use chatao_bench::run::{self, ChataoSource, PeerSource, Plan};
use chatao_bench::server::{self, ChataoSpawn};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::time::Instant;

/// Load scenarios against Chatao, side by side with an IRC server.
#[derive(Debug, Parser)]
#[command(name = "chatao-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The chataosrv binary the bench starts (fresh, in a temporary directory, for each run).
    #[arg(long, global = true, default_value = "target/release/chataosrv")]
    server_bin: PathBuf,
    /// Extra flag for the started chataosrv (repeatable), e.g. `--server-arg=--history=0`.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Start a cluster of N Chatao nodes and a NATS server (on this machine) instead of one
    /// server; clients are spread over the nodes, CPU and memory are summed over every process.
    #[arg(long, global = true, value_name = "N")]
    cluster: Option<u32>,
    /// The nats-server binary for --cluster.
    #[arg(long, global = true, default_value = "nats-server")]
    nats_bin: PathBuf,
    /// Use a running Chatao server instead of starting one.
    #[arg(long, global = true)]
    addr: Option<SocketAddr>,
    /// The pid of the server at --addr (for its CPU and memory).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// The fingerprint the server at --addr must present.
    #[arg(long, global = true)]
    server_key: Option<chatao_proto::Fingerprint>,
    /// Skip Chatao (peer only).
    #[arg(long, global = true)]
    no_chatao: bool,
    /// Also run the scenario against a peer.
    #[arg(long, global = true, value_enum)]
    peer: Option<PeerKind>,
    /// Start the peer for each run with the peers script: `inspircd` or `ngircd`.
    #[arg(long, global = true)]
    peer_start: Option<String>,
    /// The peers script (`start.sh inspircd|ngircd TLS_PORT PLAIN_PORT`).
    #[arg(long, global = true, default_value = "../shared/peers/start.sh")]
    peers_script: PathBuf,
    /// A running peer's address (its TLS port unless --peer-plain).
    #[arg(long, global = true)]
    peer_addr: Option<SocketAddr>,
    /// The running peer's pid.
    #[arg(long, global = true)]
    peer_pid: Option<u32>,
    /// Name of the running peer in reports.
    #[arg(long, global = true, default_value = "irc")]
    peer_name: String,
    /// Talk to the peer in clear instead of TLS.
    #[arg(long, global = true)]
    peer_plain: bool,
    /// Connects in flight for the peer (default: --concurrency). ngIRCd's backlog is 10.
    #[arg(long, global = true)]
    peer_concurrency: Option<usize>,
    /// Connects in flight during setup.
    #[arg(long, global = true, default_value_t = 64)]
    concurrency: usize,
    /// Pin every server the bench starts (Chatao, the peers, NATS) to these CPUs (a `taskset -c`
    /// list, e.g. `0`); run the bench itself under `taskset -c 1` to keep the clients apart.
    #[arg(long, global = true, value_name = "CPUS")]
    server_cpus: Option<String>,
    /// Runs per target, interleaved; the table shows medians.
    #[arg(long, global = true, default_value_t = 1)]
    repeat: u32,
    /// Bound on the whole invocation, seconds.
    #[arg(long, global = true, default_value_t = 600)]
    timeout: u64,
    /// Append one JSON line per run to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Append one CSV row per metric to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// A label stored with the JSON and CSV records.
    #[arg(long, global = true, default_value = "")]
    label: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PeerKind {
    Irc,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N clients in one room, S of them sending; deliveries, loss, latency, server CPU.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        clients: u32,
        #[arg(long, default_value_t = 10)]
        senders: u32,
        /// Messages per sender.
        #[arg(long, default_value_t = 100)]
        messages: u32,
        /// Aggregate messages per second over all senders (0: flat out).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Text size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seconds without a delivery, after the senders finish, before the rest count as lost.
        #[arg(long, default_value_t = 5)]
        stall: u64,
    },
    /// The same fanout in a plain room and in an end-to-end encrypted (MLS) room, side by
    /// side on one Chatao server: delivery rate, latency, server CPU, and the clients' CPU
    /// (encryption and decryption happen in the bench process). Chatao only.
    E2eFanout {
        #[arg(long, default_value_t = 20)]
        clients: u32,
        #[arg(long, default_value_t = 5)]
        senders: u32,
        /// Messages per sender.
        #[arg(long, default_value_t = 50)]
        messages: u32,
        /// Text size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seconds without a delivery, after the senders finish, before the rest count as lost.
        #[arg(long, default_value_t = 5)]
        stall: u64,
    },
    /// C clients that connect, join and stay; memory per connection, connect rate and CPU.
    Idle {
        #[arg(long, default_value_t = 1000)]
        clients: u32,
        /// Clients per room.
        #[arg(long, default_value_t = 100)]
        room_size: u32,
        /// Seconds to hold every connection before memory is read.
        #[arg(long, default_value_t = 3)]
        hold: u64,
    },
    /// Clients connecting, chatting and leaving continuously; handshakes per second, errors.
    Churn {
        #[arg(long, default_value_t = 32)]
        workers: u32,
        /// Seconds to churn.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Stop after this many cycles (0: the duration alone bounds it).
        #[arg(long, default_value_t = 0)]
        cycles: u64,
        /// Messages said per cycle.
        #[arg(long, default_value_t = 1)]
        messages: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Draws the chart BENCHMARKS.md shows (SVG) from JSON lines written by `--json`:
    /// deliveries per server CPU-second against room size for each target, and the latency
    /// percentiles at one room size (medians of the flat-out fanout runs with the label).
    Chart {
        /// JSON lines files (`--json` output).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The SVG to write.
        #[arg(long, default_value = "bench/results/fanout.svg")]
        out: PathBuf,
        /// Only runs recorded with this `--label`.
        #[arg(long = "of-label", default_value = "pinned")]
        of_label: String,
        /// The room size whose latency distribution is drawn.
        #[arg(long, default_value_t = 1000)]
        latency_clients: u64,
    },
    /// Issue 15's adversarial run: for each KIND (default: all), a fresh server with default
    /// limits, an honest pair chatting every 200 ms in #lobby alone, then during the attack,
    /// then after it; their latency, loss, and the server's memory and CPU. Chatao only.
    Attack {
        /// The attacks to run, in this order (default: all of them).
        #[arg(value_enum)]
        kinds: Vec<attack::Kind>,
        /// Seconds of attack.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Seconds of the honest pair alone before the attack.
        #[arg(long, default_value_t = 5)]
        baseline: u64,
        /// Seconds of the honest pair alone after the attack.
        #[arg(long, default_value_t = 5)]
        after: u64,
        /// Idle members for `joins`.
        #[arg(long, default_value_t = 2000)]
        joins: u32,
        /// Stalled handshakes held at once for `handshake`.
        #[arg(long, default_value_t = 4000)]
        handshakes: u32,
        /// Keys with real key packages (16 each, made before the run) for `keypackages`.
        #[arg(long, default_value_t = 500)]
        key_package_keys: u32,
        /// Attacker connections per loopback source address over the whole run (60 keeps
        /// every address within the per-address cap and handshake rate; a large number puts
        /// the whole attack on one address, which the limits then hold to 64 connections).
        #[arg(long, default_value_t = 60)]
        per_address: u32,
        /// Writes every honest line to FILE-KIND.txt: seconds since the attack began, bob's
        /// latency and alice's echo latency in ms (-1: never), one line each, to see when the
        /// slow ones happened.
        #[arg(long, value_name = "FILE")]
        lines: Option<std::path::PathBuf>,
    },
}

fn plan(c: &Common, deadline: Instant) -> Result<Plan> {
    let chatao = if c.no_chatao {
        None
    } else if let Some(addr) = c.addr {
        Some(ChataoSource::Attach { addr, pid: c.server_pid, server_key: c.server_key.clone() })
    } else {
        if !c.server_bin.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p chatao-server`, or pass \
                 --server-bin or --addr",
                c.server_bin.display()
            );
        }
        let spawn = ChataoSpawn { bin: c.server_bin.clone(), extra_args: c.server_args.clone() };
        Some(match c.cluster {
            Some(nodes) => {
                ChataoSource::Cluster { spawn, nodes: nodes.max(1), nats_bin: c.nats_bin.clone() }
            }
            None => ChataoSource::Spawn(spawn),
        })
    };
    let tls = !c.peer_plain;
    let peer = match (c.peer, &c.peer_start, c.peer_addr) {
        (None, None, None) => None,
        (_, Some(kind), _) => {
            Some(PeerSource::Spawn { script: c.peers_script.clone(), kind: kind.clone(), tls })
        }
        (_, None, Some(addr)) => {
            Some(PeerSource::Attach { addr, pid: c.peer_pid, tls, name: c.peer_name.clone() })
        }
        (Some(PeerKind::Irc), None, None) => bail!("--peer irc needs --peer-addr or --peer-start"),
    };
    if chatao.is_none() && peer.is_none() {
        bail!("nothing to run against");
    }
    Ok(Plan { chatao, peer, repeat: c.repeat, deadline })
}

async fn run_scenario(cli: &Cli, plan: &Plan) -> (Vec<Report>, u32) {
    let c = &cli.common;
    let concurrency = |attached_peer: bool| {
        if attached_peer { c.peer_concurrency.unwrap_or(c.concurrency) } else { c.concurrency }
    };
    match cli.scenario {
        Scenario::Fanout { clients, senders, messages, rate, size, stall } => {
            run::run_all(plan, |ep, attached, deadline| {
                let peer = matches!(ep.kind, chatao_bench::target::Kind::Irc { .. });
                let o = FanoutOptions {
                    clients,
                    senders,
                    messages,
                    rate,
                    size,
                    concurrency: concurrency(peer),
                    stall: Duration::from_secs(stall),
                    quit_at_end: attached,
                };
                async move { fanout::run(&ep, &o, deadline).await }
            })
            .await
        }
        Scenario::E2eFanout { clients, senders, messages, size, stall } => {
            let o = E2eFanoutOptions {
                clients,
                senders,
                messages,
                size,
                stall: Duration::from_secs(stall),
            };
            run::run_all_many(plan, |ep, _attached, deadline| {
                let o = o.clone();
                async move {
                    if matches!(ep.kind, chatao_bench::target::Kind::Irc { .. }) {
                        anyhow::bail!("e2e-fanout runs against Chatao only");
                    }
                    e2e_fanout::run(&ep, &o, deadline).await
                }
            })
            .await
        }
        Scenario::Idle { clients, room_size, hold } => {
            run::run_all(plan, |ep, attached, deadline| {
                let peer = matches!(ep.kind, chatao_bench::target::Kind::Irc { .. });
                let o = IdleOptions {
                    clients,
                    room_size,
                    concurrency: concurrency(peer),
                    hold: Duration::from_secs(hold),
                    quit_at_end: attached,
                };
                async move { idle::run(&ep, &o, deadline).await }
            })
            .await
        }
        Scenario::Attack { .. } | Scenario::Chart { .. } => (vec![], 0),
        Scenario::Churn { workers, duration, cycles, messages, size } => {
            run::run_all(plan, |ep, _attached, deadline| {
                let o = ChurnOptions {
                    workers,
                    duration: Duration::from_secs(duration),
                    cycles,
                    messages,
                    size,
                };
                async move { churn::run(&ep, &o, deadline).await }
            })
            .await
        }
    }
}

/// The `attack` scenario: one fresh server per kind (default limits), the kinds in order.
async fn run_attacks(
    c: &Common,
    kinds: &[attack::Kind],
    o: &AttackOptions,
    deadline: Instant,
) -> (Vec<Report>, u32) {
    let kinds = if kinds.is_empty() { attack::Kind::ALL.to_vec() } else { kinds.to_vec() };
    let spawn = ChataoSpawn { bin: c.server_bin.clone(), extra_args: c.server_args.clone() };
    let mut reports = vec![];
    let mut failures = 0;
    for kind in kinds {
        let metrics = match kind {
            attack::Kind::Metrics => match chatao_bench::server::free_port() {
                Ok(port) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
                Err(e) => {
                    eprintln!("attack {}: no port for metrics: {e}", kind.name());
                    failures += 1;
                    continue;
                }
            },
            _ => None,
        };
        let extra: Vec<String> =
            metrics.iter().flat_map(|m| ["--metrics".to_owned(), m.to_string()]).collect();
        let spawned = match spawn.start_with_default_limits(&extra).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("attack {}: cannot start the server: {e:#}", kind.name());
                failures += 1;
                continue;
            }
        };
        let target = attack::Target {
            name: "chatao".into(),
            addr: spawned.addr,
            server_key: spawned.fingerprint.clone(),
            pid: Some(spawned.pid),
            metrics,
        };
        eprintln!(
            "attack {}: running ({} s)",
            kind.name(),
            o.baseline.as_secs() + o.duration.as_secs() + o.after.as_secs()
        );
        let result = attack::run(&target, kind, o, deadline).await;
        spawned.stop().await;
        match result {
            Ok(r) => {
                eprintln!(
                    "attack {}: p99 base/during/after {}/{}/{} ms, lost {}, unacked {}",
                    kind.name(),
                    r.get("base_p99").map_or("-".into(), report::fmt_value),
                    r.get("during_p99").map_or("-".into(), report::fmt_value),
                    r.get("after_p99").map_or("-".into(), report::fmt_value),
                    r.get("lost").map_or("-".into(), report::fmt_value),
                    r.get("unacked").map_or("-".into(), report::fmt_value),
                );
                reports.push(r);
            }
            Err(e) => {
                eprintln!("attack {}: {e:#}", kind.name());
                failures += 1;
            }
        }
        if Instant::now() >= deadline {
            eprintln!("global --timeout reached; stopping");
            failures += 1;
            break;
        }
    }
    (reports, failures)
}

async fn real_main() -> Result<u32> {
    let cli = Cli::parse();
    let c = &cli.common;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    if let Scenario::Chart { files, out, of_label, latency_clients } = &cli.scenario {
        chatao_bench::chart::draw(files, of_label, *latency_clients, out)?;
        eprintln!("wrote {}", out.display());
        return Ok(0);
    }
    if let Some(cpus) = &c.server_cpus {
        server::pin_servers(cpus)?;
    }
    if let Scenario::Attack {
        kinds,
        duration,
        baseline,
        after,
        joins,
        handshakes,
        key_package_keys,
        per_address,
        lines,
    } = &cli.scenario
    {
        if c.addr.is_some() || c.cluster.is_some() || c.peer.is_some() || c.peer_start.is_some() {
            bail!(
                "attack starts its own standalone Chatao server for each kind: no --addr, --cluster or --peer"
            );
        }
        if !c.server_bin.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p chatao-server`, or pass \
                 --server-bin",
                c.server_bin.display()
            );
        }
        let o = AttackOptions {
            baseline: Duration::from_secs(*baseline),
            duration: Duration::from_secs(*duration),
            after: Duration::from_secs(*after),
            sizes: attack::kinds::Sizes {
                joins: *joins,
                handshakes: *handshakes,
                key_package_keys: *key_package_keys,
            },
            per_address: *per_address,
            lines: lines.clone(),
        };
        let (reports, failures) = run_attacks(c, kinds, &o, deadline).await;
        if !reports.is_empty() {
            print!("{}", attack::table(&reports));
            for r in reports.iter().filter(|r| !r.notes.is_empty()) {
                println!("note: {}: {}", r.scenario, r.notes.join("; "));
            }
        }
        if let Some(path) = &c.json {
            report::append_json(path, &reports, &c.label).context("writing --json")?;
        }
        if let Some(path) = &c.csv {
            report::append_csv(path, &reports, &c.label).context("writing --csv")?;
        }
        return Ok(failures);
    }
    let plan = plan(c, deadline)?;
    let (reports, failures) = run_scenario(&cli, &plan).await;
    if !reports.is_empty() {
        print!("{}", report::table(&reports));
        for r in reports.iter().filter(|r| !r.notes.is_empty()) {
            println!("note: run {} {}: {}", r.run, r.target, r.notes.join("; "));
        }
    }
    if let Some(path) = &c.json {
        report::append_json(path, &reports, &c.label).context("writing --json")?;
    }
    if let Some(path) = &c.csv {
        report::append_csv(path, &reports, &c.label).context("writing --csv")?;
    }
    Ok(failures)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main().await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("{n} run(s) failed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("chatao-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
