//! CPU time and memory of processes, read from /proc (Linux only).

use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second of /proc/<pid>/stat times. 100 on every Linux
/// x86_64 and aarch64 kernel we run on (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// User + system CPU time so far, seconds.
    pub cpu_secs: f64,
    /// Resident memory now, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory so far, bytes.
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/<pid>` (`"self"` for this process); None if it is gone.
pub fn sample(pid: &str) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Sample {
        cpu_secs: ticks / TICKS_PER_SEC,
        rss_bytes: kib("VmRSS:") * 1024,
        peak_rss_bytes: kib("VmHWM:") * 1024,
    })
}

/// What a process used over a run.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub pid: String,
    pub cpu_secs: f64,
    /// CPU seconds per wall-clock second (1.0 = one core busy).
    pub cores_busy: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

pub fn usage(pid: &str, before: Sample, after: Sample, wall: Duration) -> Usage {
    let cpu = (after.cpu_secs - before.cpu_secs).max(0.0);
    Usage {
        pid: pid.to_owned(),
        cpu_secs: cpu,
        cores_busy: cpu / wall.as_secs_f64().max(1e-9),
        rss_bytes: after.rss_bytes,
        peak_rss_bytes: after.peak_rss_bytes,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample("self").expect("/proc/self");
        assert!(s.rss_bytes > 0);
        assert!(s.peak_rss_bytes >= s.rss_bytes);
    }
}
