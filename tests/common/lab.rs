//! Helpers of the end-to-end tests that drive a `weft::lab::Lab` (included with
//! `#[path = "common/lab.rs"] mod common;`, apart from the async etcd helpers in mod.rs).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// True when running as root. Otherwise prints why the test is skipped and returns false.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces); run `sudo scripts/test.sh`");
    false
}

/// The weft binary under test: the one cargo built for this test run, or `$WEFT_TEST_BIN`
/// (e.g. `target/release/weft`).
pub fn weft_bin() -> PathBuf {
    match std::env::var_os("WEFT_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_weft")),
    }
}

/// Polls `check` every 50 ms until it returns `Ok`, or returns its last error at `deadline`.
pub fn wait_until<T>(
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let until = Instant::now() + deadline;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > until => {
                return Err(format!("still failing after {deadline:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// weft's route protocol number (`proto 87` in `ip route`), how it finds its own routes.
pub const WEFT_ROUTE_PROTOCOL: u64 = 87;

/// Whether a route from `ip -j route` carries `protocol` (ip prints names it knows and
/// numbers as strings otherwise).
pub fn route_protocol_is(route: &serde_json::Value, protocol: u64) -> bool {
    match &route["protocol"] {
        serde_json::Value::String(s) => s.parse::<u64>().ok() == Some(protocol),
        serde_json::Value::Number(n) => n.as_u64() == Some(protocol),
        _ => false,
    }
}

/// The routes of `ip -j route show` in `ns` (a plain command, so a watcher thread can use it
/// while the test holds the lab mutably).
pub fn routes_in(ns: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "route", "show"])
        .output()
        .map_err(|e| format!("ip -n {ns} -j route: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} -j route: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ip -n {ns} -j route: bad JSON: {e}"))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Checks that node `k`'s weft routes are exactly the host-gw routes: one
/// `<peer subnet> via <peer ip> dev eth0 proto 87` per other node, nothing else with proto 87.
pub fn hostgw_routes_ok(lab: &weft::lab::Lab, k: usize) -> Result<(), String> {
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let routes = routes_in(ns)?;
    let mut expected = Vec::new();
    for j in (1..=lab.nodes()).filter(|&j| j != k) {
        let net = lab.subnet(j).map_err(|e| format!("{e:#}"))?;
        let via = lab.node_ip(j).map_err(|e| e.to_string())?;
        expected.push((net.to_string(), via.to_string(), "eth0".to_owned()));
    }
    let field = |r: &serde_json::Value, name: &str| r[name].as_str().unwrap_or("-").to_owned();
    let mut ours: Vec<(String, String, String)> = routes
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL))
        .map(|r| (field(r, "dst"), field(r, "gateway"), field(r, "dev")))
        .collect();
    ours.sort();
    expected.sort();
    if ours != expected {
        return Err(format!(
            "node {k}: weft routes (dst, via, dev) {ours:?}, expected {expected:?}; all routes: {routes:?}"
        ));
    }
    Ok(())
}

/// Polls, on its own thread, that every namespace in `ns` keeps a route to `dst` until
/// stopped; `stop()` returns every moment one was missing.
pub struct RouteWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl RouteWatch {
    pub fn start(ns: Vec<String>, dst: String) -> RouteWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut rounds = 0;
            let mut missing = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                for n in &ns {
                    match routes_in(n) {
                        Ok(routes) if routes.iter().any(|r| r["dst"] == dst.as_str()) => {}
                        Ok(routes) => missing.push(format!(
                            "{:?}: {n} has no route to {dst}: {routes:?}",
                            started.elapsed()
                        )),
                        Err(e) => missing.push(e),
                    }
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (rounds, missing)
        });
        RouteWatch { stop, handle }
    }

    /// Stops the watch; returns (polls made, violations).
    pub fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or_else(|_| (0, vec!["route watch thread panicked".to_owned()]))
    }
}
