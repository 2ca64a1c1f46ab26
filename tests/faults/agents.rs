//! The agent processes seen from outside: pid, CPU seconds and memory of each `weft`.
use super::*;

/// The pid of node k's agent: the `weft` process in its namespace.
pub(crate) fn agent_pid(lab: &Lab, k: usize) -> u32 {
    let ns = lab.node_ns(k).expect("ns");
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "weft")
        })
        .collect();
    assert_eq!(pids.len(), 1, "node {k}: weft pids {pids:?}");
    pids[0]
}

pub(crate) fn clock_ticks() -> f64 {
    sh("getconf CLK_TCK")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / clock_ticks()
}

/// `(VmRSS, VmHWM)` of a process in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds of every agent, to diff over a window.
pub(crate) struct CpuWindow {
    pub(crate) pids: Vec<u32>,
    pub(crate) start: Vec<f64>,
    pub(crate) at: Instant,
}

impl CpuWindow {
    pub(crate) fn start(lab: &Lab) -> CpuWindow {
        let pids: Vec<u32> = (1..=lab.nodes()).map(|k| agent_pid(lab, k)).collect();
        let start = pids.iter().map(|&p| cpu_secs(p)).collect();
        CpuWindow {
            pids,
            start,
            at: Instant::now(),
        }
    }

    /// The busiest agent's CPU share over the window, in percent of one core.
    pub(crate) fn max_percent(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64();
        self.pids
            .iter()
            .zip(&self.start)
            .map(|(&p, &s)| (cpu_secs(p) - s) / wall * 100.0)
            .fold(0.0, f64::max)
    }
}
