//! The `attack` scenario against an in-process server with default limits, tiny and bounded:
//! the report has every figure, the honest pair lost nothing, and the attacker's traffic was
//! counted. No timing assertions: this runs on busy CI machines.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_bench::attack::{self, AttackOptions, Kind, Target, kinds::Sizes};
use chatao_testkit::TestServer;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ping_flood_reports_every_figure_and_the_honest_pair_loses_nothing() {
    let server = TestServer::start().await;
    let target = Target {
        name: "chatao".into(),
        addr: server.addr,
        server_key: Some(server.fingerprint.clone()),
        // The server runs in this process, so its memory and CPU are this process's.
        pid: Some(std::process::id()),
        metrics: None,
    };
    let lines_dir = tempfile::tempdir().unwrap();
    let o = AttackOptions {
        baseline: Duration::from_secs(1),
        duration: Duration::from_secs(2),
        after: Duration::from_secs(1),
        sizes: Sizes { joins: 0, handshakes: 0, key_package_keys: 0 },
        per_address: 60,
        lines: Some(lines_dir.path().join("lines")),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = attack::run(&target, Kind::Ping, &o, deadline).await.unwrap();
    let get = |k: &str| r.get(k).unwrap_or_else(|| panic!("no {k} in {r:?}"));
    assert_eq!(r.scenario, "attack-ping");
    // About 4 s of a line every 200 ms, every one received by bob and echoed to alice.
    assert!(get("lines") >= 10.0, "{r:?}");
    // `--lines`: one row per line, each received and echoed (no -1).
    let rows = std::fs::read_to_string(lines_dir.path().join("lines-ping.txt")).unwrap();
    assert_eq!(rows.lines().count() as f64, get("lines"), "{rows}");
    assert!(rows.lines().all(|l| l.split(' ').count() == 3 && !l.contains(" -1")), "{rows}");
    assert_eq!(get("lost"), 0.0, "{r:?}");
    assert_eq!(get("unacked"), 0.0, "{r:?}");
    for phase in ["base", "during", "after"] {
        let p50 = get(&format!("{phase}_p50"));
        let p99 = get(&format!("{phase}_p99"));
        let max = get(&format!("{phase}_max"));
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{phase}: {r:?}");
        assert!(get(&format!("{phase}_echo_p99")) > 0.0, "{phase}: {r:?}");
    }
    for k in ["rss_before", "rss_peak", "rss_attack_end", "rss_after"] {
        assert!(get(k) > 0.0, "{k}: {r:?}");
    }
    assert!(get("rss_peak") >= get("rss_before"));
    for k in ["cpu_base", "cpu_during", "cpu_after", "bench_cpu_during"] {
        assert!(get(k) >= 0.0, "{k}: {r:?}");
    }
    // The four pingers were welcomed, sent pings and got (paced) pongs back.
    assert_eq!(get("attacker_connects"), 4.0, "{r:?}");
    assert!(get("attacker_records_sent") > 1000.0, "{r:?}");
    assert!(get("attacker_records_received") > 0.0, "{r:?}");
    assert!(get("attacker_mb_sent") > 0.0);
    assert!(r.notes.iter().any(|n| n.starts_with("load average")), "{:?}", r.notes);
    assert!(
        !r.notes.iter().any(|n| n.starts_with("honest pair")),
        "the honest pair saw something wrong: {:?}",
        r.notes
    );
    let table = attack::table(std::slice::from_ref(&r));
    assert!(table.lines().any(|l| l.starts_with("ping ")), "{table}");
    assert!(r.to_json("t")["metrics"]["during_p99"].is_number());
}
