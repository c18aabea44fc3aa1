//! Process figures from /proc: RSS, CPU time, open files, listen overflows.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) rss: u64,
    pub(crate) cpu: f64,
}

pub(crate) fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name, in parentheses, may hold spaces: count after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / sys::clock_ticks())
}

pub(crate) fn sample_process(pid: Option<u32>) -> Option<Sample> {
    let pid = pid?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Sample {
        rss: rss_kb * 1024,
        cpu: cpu_seconds(&format!("/proc/{pid}/stat"))?,
    })
}

/// Per-CPU jiffies from /proc/stat: (busy, total) for each CPU.
pub(crate) fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = fields.iter().take(8).sum();
            // idle and iowait are not busy.
            let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// How busy each CPU of the machine was between two `cpu_jiffies` readings,
/// all processes together (steal counts as busy): tells whether something
/// else competed with the server or the load generator.
pub(crate) fn cpu_busy(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.1.saturating_sub(b.1);
            if total == 0 {
                0.0
            } else {
                round(a.0.saturating_sub(b.0) as f64 / total as f64, 2)
            }
        })
        .collect()
}

/// The kernel's count of connections dropped because a listening socket's
/// accept queue was full (TcpExt ListenOverflows), machine-wide: on a quiet
/// loopback run, the server's accept backlog overflowing.
pub(crate) fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
}

pub(crate) fn own_cpu() -> f64 {
    cpu_seconds("/proc/self/stat").unwrap_or(0.0)
}

pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since this process started measuring: the send timestamps.
pub(crate) fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}
