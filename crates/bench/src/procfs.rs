//! What the kernel says about a server process: CPU time and memory, read from `/proc`.
//!
//! CPU time comes from two sources. The sum of `/proc/PID/task/*/schedstat` is in nanoseconds
//! but forgets threads that have exited; `/proc/PID/stat` (`utime + stime`) keeps them but
//! counts in clock ticks (10 ms). [`cpu_delta`] uses the precise one unless the coarse one
//! shows that a thread's time went missing.

use std::io;
use std::path::PathBuf;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, fixed at 100 by the Linux ABI
/// on the architectures this runs on).
pub const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds from `stat` (all threads, exited ones included; 10 ms steps).
    pub cpu_ticks_s: f64,
    /// CPU seconds of the live threads from `schedstat` (nanosecond precision).
    pub cpu_sched_s: f64,
    /// Resident memory now, KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far, KiB.
    pub hwm_kib: u64,
}

/// Reads `pid` now.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(base.join("stat"))?;
    let status = std::fs::read_to_string(base.join("status"))?;
    let ticks = parse_stat_ticks(&stat)
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))?;
    let mut sched_ns = 0u64;
    for task in std::fs::read_dir(base.join("task"))? {
        let path = task?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            sched_ns += parse_schedstat_ns(&text).unwrap_or(0);
        }
    }
    Ok(ProcSample {
        cpu_ticks_s: ticks as f64 / TICKS_PER_SEC,
        cpu_sched_s: sched_ns as f64 / 1e9,
        rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
        hwm_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
    })
}

/// The sum of several processes' samples (a cluster: its nodes and NATS); `None` if any
/// cannot be read.
pub fn sample_all(pids: impl IntoIterator<Item = u32>) -> Option<ProcSample> {
    let mut sum = ProcSample::default();
    for pid in pids {
        let s = sample(pid).ok()?;
        sum.cpu_ticks_s += s.cpu_ticks_s;
        sum.cpu_sched_s += s.cpu_sched_s;
        sum.rss_kib += s.rss_kib;
        sum.hwm_kib += s.hwm_kib;
    }
    Some(sum)
}

/// CPU seconds used between two samples: the precise count, unless the tick count grew by more
/// than two ticks beyond it (a thread exited and took its precise time with it).
pub fn cpu_delta(before: &ProcSample, after: &ProcSample) -> f64 {
    let sched = after.cpu_sched_s - before.cpu_sched_s;
    let ticks = after.cpu_ticks_s - before.cpu_ticks_s;
    if sched < 0.0 || ticks > sched + 2.0 / TICKS_PER_SEC { ticks } else { sched }
}

/// `utime + stime` in ticks from the text of `/proc/PID/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Time on CPU in nanoseconds: the first field of `/proc/PID/task/TID/schedstat`.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The value of `key` (e.g. `VmRSS`) in KiB from the text of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (chat (ao) srv) S 1 4242 4242 0 -1 4194304 900 0 0 0 1234 56 0 0 20 0 \
                    3 0 100 123456 789 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1";
        assert_eq!(parse_stat_ticks(stat), Some(1290));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_and_schedstat() {
        let status = "Name:\tchataosrv\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_schedstat_ns("123456789 2000 17\n"), Some(123_456_789));
    }

    #[test]
    fn cpu_delta_prefers_the_precise_count() {
        let at = |ticks: f64, sched: f64| ProcSample {
            cpu_ticks_s: ticks,
            cpu_sched_s: sched,
            ..Default::default()
        };
        assert!((cpu_delta(&at(1.0, 1.003), &at(1.5, 1.4987)) - 0.4957).abs() < 1e-9);
        // A thread that exited took 0.3 s of precise time with it: trust the ticks.
        assert!((cpu_delta(&at(1.0, 1.0), &at(2.0, 1.7)) - 1.0).abs() < 1e-9);
        assert!((cpu_delta(&at(1.0, 1.0), &at(1.5, 0.9)) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        assert!(s.cpu_sched_s > 0.0);
    }
}
