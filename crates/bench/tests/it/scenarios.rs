//! The scenarios against an in-process server, tiny and bounded: every delivery accounted for,
//! nothing lost or duplicated, and numbers that make sense. No timing assertions: this runs on
//! busy CI machines.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_bench::churn::{self, ChurnOptions};
use chatao_bench::e2e_fanout::{self, E2eFanoutOptions};
use chatao_bench::fanout::{self, FanoutOptions};
use chatao_bench::idle::{self, IdleOptions};
use chatao_bench::target::{Endpoint, Kind};
use chatao_testkit::TestServer;
use tokio::time::Instant;

/// The server runs in this process, so its CPU and memory are this process's.
fn endpoint(server: &TestServer) -> Endpoint {
    Endpoint::single(
        "chatao".into(),
        Kind::Chatao { server_key: Some(server.fingerprint.clone()) },
        server.addr,
        Some(std::process::id()),
    )
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fanout_delivers_every_message_exactly_once() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let o = FanoutOptions {
        clients: 5,
        senders: 5,
        messages: 20,
        rate: 0.0,
        size: 64,
        concurrency: 5,
        stall: Duration::from_secs(5),
        quit_at_end: true,
    };
    let r = fanout::run(&endpoint(&server), &o, deadline()).await.unwrap();
    let get = |k: &str| r.get(k).unwrap_or_else(|| panic!("no {k} in {r:?}"));
    // Every client (the sender too: its copy is its acknowledgement) gets 5 x 20 messages.
    assert_eq!(get("expected"), 500.0);
    assert_eq!(get("delivered"), 500.0);
    assert_eq!(get("lost"), 0.0);
    assert_eq!(get("duplicated"), 0.0);
    assert_eq!(get("reordered"), 0.0);
    assert_eq!(get("send_errors"), 0.0);
    assert!(get("latency_p50") <= get("latency_p99") && get("latency_p99") <= get("latency_max"));
    assert!(get("deliveries_per_s") > 0.0);
    assert!(get("server_cpu_s") >= 0.0 && get("server_peak_rss") > 0.0);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}

/// The cluster mode: clients spread over three nodes of one chat (a real nats-server), every
/// message delivered exactly once to everyone on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_over_a_three_node_cluster_delivers_every_message_exactly_once() {
    let nats = chatao_testkit::NatsServer::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let url = nats.url();
        nodes.push(
            TestServer::start_with(move |c| {
                c.limits.rate_per_sec = 0;
                c.cluster = Some(chatao_server::cluster::ClusterConfig::new(url));
            })
            .await,
        );
    }
    let mut ep = endpoint(&nodes[0]);
    ep.nodes = nodes[1..].iter().map(|n| n.addr).collect();
    let o = FanoutOptions {
        clients: 6,
        senders: 3,
        messages: 20,
        rate: 0.0,
        size: 64,
        concurrency: 6,
        stall: Duration::from_secs(5),
        quit_at_end: true,
    };
    let r = fanout::run(&ep, &o, deadline()).await.unwrap();
    let get = |k: &str| r.get(k).unwrap_or_else(|| panic!("no {k} in {r:?}"));
    assert_eq!(get("expected"), 6.0 * 3.0 * 20.0);
    assert_eq!(get("delivered"), get("expected"));
    assert_eq!((get("lost"), get("duplicated"), get("reordered")), (0.0, 0.0, 0.0));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_all_arrive_and_churn_cycles_complete() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.handshakes_per_minute = 0;
    })
    .await;
    let ep = endpoint(&server);
    let o = IdleOptions {
        clients: 6,
        room_size: 4,
        concurrency: 3,
        hold: Duration::ZERO,
        quit_at_end: true,
    };
    let r = idle::run(&ep, &o, deadline()).await.unwrap();
    assert_eq!(r.get("connected"), Some(6.0));
    assert_eq!(r.get("held_to_end"), Some(6.0));
    assert_eq!(r.get("connect_errors"), Some(0.0));
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    let o = ChurnOptions {
        workers: 2,
        duration: Duration::from_secs(30),
        cycles: 6,
        messages: 2,
        size: 64,
    };
    let r = churn::run(&ep, &o, deadline()).await.unwrap();
    assert_eq!(r.get("cycles"), Some(6.0));
    assert_eq!(r.get("errors"), Some(0.0), "{:?}", r.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_e2e_room_and_a_plain_room_deliver_the_same_fanout_side_by_side() {
    let server = TestServer::start_with(|c| c.limits.rate_per_sec = 0).await;
    let o = E2eFanoutOptions {
        clients: 3,
        senders: 2,
        messages: 5,
        size: 64,
        stall: Duration::from_secs(5),
    };
    let reports = e2e_fanout::run(&endpoint(&server), &o, deadline()).await.unwrap();
    let targets: Vec<&str> = reports.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["chatao-plain", "chatao-e2e"]);
    for r in &reports {
        let get = |k: &str| r.get(k).unwrap_or_else(|| panic!("no {k} in {r:?}"));
        assert_eq!(get("expected"), 30.0, "3 members x 2 senders x 5 messages");
        assert_eq!(get("delivered"), 30.0, "{r:?}");
        assert_eq!(get("lost"), 0.0);
        assert_eq!(get("duplicated"), 0.0);
        assert!(get("clients_cpu_s") >= 0.0 && get("server_cpu_s") >= 0.0);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }
}
