//! CPU time of processes and threads from `/proc` (Linux), to show where a run spent its cores.
//! Values are clock ticks (`USER_HZ`, 100 on every mainstream Linux build).

use std::collections::HashMap;
use std::path::Path;

pub const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a `/proc/.../stat` file, and the thread or process name.
fn read_stat(path: &Path) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU ticks used so far by a whole process.
pub fn process_ticks(pid: u32) -> Option<u64> {
    read_stat(Path::new(&format!("/proc/{pid}/stat"))).map(|(_, t)| t)
}

/// CPU ticks of this process, split into (simulator threads, everything else): the in-process
/// sandbox runs on threads named `sandbox` and `actix-*`, loadgen's own work on tokio's.
pub fn own_ticks_split() -> (u64, u64) {
    let mut sim = 0;
    let mut other = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            if let Some((comm, t)) = read_stat(&entry.path().join("stat")) {
                if comm.starts_with("sandbox") || comm.starts_with("actix") {
                    sim += t;
                } else {
                    other += t;
                }
            }
        }
    }
    (sim, other)
}

/// CPU ticks of each thread of a process: thread id → (name, ticks).
pub fn thread_ticks(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if let Some(v) = read_stat(&entry.path().join("stat")) {
                out.insert(tid, v);
            }
        }
    }
    out
}

/// The busiest threads between two [`thread_ticks`] readings: (name, percent of one core).
pub fn busiest_threads(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    wall_secs: f64,
    top: usize,
) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(tid, (name, t))| {
            let b = before.get(tid).map_or(0, |(_, b)| *b);
            (format!("{name}/{tid}"), percent(b, *t, wall_secs))
        })
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(top);
    v
}

/// Resident memory of a process from `/proc/<pid>/status`: (`VmRSS`, `VmHWM`) in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_memory(&s)
}

fn parse_status_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Percent of one core used between two readings over `wall_secs`.
pub fn percent(before: u64, after: u64, wall_secs: f64) -> f64 {
    if wall_secs <= 0.0 {
        return 0.0;
    }
    after.saturating_sub(before) as f64 / TICKS_PER_SEC / wall_secs * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        if !Path::new("/proc/self/stat").exists() {
            return;
        }
        assert!(process_ticks(std::process::id()).is_some());
        let (_, other) = own_ticks_split();
        let _ = other;
        assert!((percent(0, 100, 2.0) - 50.0).abs() < 1e-9);
        let (rss, hwm) = memory_kib(std::process::id()).unwrap_or_default();
        assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
    }

    #[test]
    fn parses_status_memory() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t3\n";
        assert_eq!(parse_status_memory(s), Some((1024, 2048)));
        assert_eq!(parse_status_memory("Name: x"), None);
    }
}
