//! Lab helpers of the scenarios: building and waiting for a converged lab, checking the
//! programmed routes, `ip`/`sh` in a namespace, etcd keys and revisions, and a watch on a
//! route's gateway.
use super::*;

pub(crate) fn spec(nodes: usize, backend: &str) -> LabSpec {
    let mut s = LabSpec::new(nodes, common::weft_bin());
    s.backend = backend.to_owned();
    s
}

/// Builds a lab, starts every agent at once, waits until all wrote subnet.env and (host-gw)
/// programmed every peer, or (vxlan) every peer's route exists.
pub(crate) fn converged_lab(nodes: usize, backend: &str) -> Lab {
    let mut lab = Lab::build(spec(nodes, backend)).expect("build lab");
    lab.start_all().expect("start agents");
    wait_ready(&mut lab);
    lab
}

pub(crate) fn wait_ready(lab: &mut Lab) {
    for k in 1..=lab.nodes() {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for k in 1..=lab.nodes() {
        wait_until(CONVERGE, || peers_programmed(lab, k))
            .unwrap_or_else(|e| panic!("node {k} not converged: {e}"));
    }
}

/// Node k has a weft route to every other node's subnet through the right next hop: host-gw
/// `via <peer ip> dev eth0`, vxlan `via <subnet>.0 dev flannel.1 onlink`.
pub(crate) fn peers_programmed(lab: &Lab, k: usize) -> Result<(), String> {
    if lab.spec().backend == "host-gw" {
        return hostgw_routes_ok(lab, k);
    }
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let routes = routes_in(ns)?;
    for j in (1..=lab.nodes()).filter(|&j| j != k) {
        let net = lab.subnet(j).map_err(|e| format!("{e:#}"))?;
        let ok = routes.iter().any(|r| {
            r["dst"] == net.to_string().as_str()
                && r["dev"] == "flannel.1"
                && r["gateway"] == net.network().to_string().as_str()
        });
        if !ok {
            return Err(format!("node {k}: no vxlan route to {net}: {routes:?}"));
        }
    }
    Ok(())
}

pub(crate) fn assert_agents_alive(lab: &mut Lab, down: &[usize]) {
    for k in (1..=lab.nodes()).filter(|k| !down.contains(k)) {
        assert!(
            lab.node_running(k).expect("status"),
            "node {k}'s agent exited ({:?}); log:\n{}",
            lab.node_exit_status(k),
            lab.log_tail(k, 60)
        );
    }
}

pub(crate) fn all_ns(lab: &Lab, except: usize) -> Vec<String> {
    (1..=lab.nodes())
        .filter(|&k| k != except)
        .map(|k| lab.node_ns(k).expect("ns").to_owned())
        .collect()
}

/// `ip -n <ns> <args>`; stdout, or the error text.
pub(crate) fn ip(ns: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn ip_json(ns: &str, args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let text = ip(ns, &full)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("ip {full:?}: bad JSON: {e}"))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

pub(crate) fn sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The route to exactly `dst` in `ns`, if any.
pub(crate) fn route_to(ns: &str, dst: &str) -> Option<serde_json::Value> {
    routes_in(ns).ok()?.into_iter().find(|r| r["dst"] == dst)
}

/// Polls `check` every 5 ms until it holds; the time it took, or None after `deadline`.
pub(crate) fn time_until(deadline: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The etcd key of a lease.
pub(crate) fn lease_key(net: &str) -> String {
    format!("{PREFIX}/subnets/{}", net.replace('/', "-"))
}

pub(crate) fn host_gw_value(ip: Ipv4Addr) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
}

/// The current etcd revision (from a Range's header).
pub(crate) fn etcd_revision(lab: &Lab) -> i64 {
    let out = lab
        .etcdctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ])
        .expect("etcdctl get");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("etcdctl JSON");
    v["header"]["revision"].as_i64().expect("revision")
}

/// Polls, on its own thread, that every namespace in `ns` routes `dst` via `gateway`; `stop()`
/// returns (polls, moments the route was missing or pointed elsewhere).
pub(crate) struct GatewayWatch {
    pub(crate) stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl GatewayWatch {
    pub(crate) fn start(ns: Vec<String>, dst: String, gateway: String) -> GatewayWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let (mut polls, mut bad) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                for n in &ns {
                    match route_to(n, &dst) {
                        Some(r) if r["gateway"] == gateway.as_str() => {}
                        other => bad.push(format!(
                            "{:?}: {n}: route to {dst} is {other:?}",
                            started.elapsed()
                        )),
                    }
                }
                polls += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (polls, bad)
        });
        GatewayWatch { stop, handle }
    }

    pub(crate) fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or_else(|_| (0, vec!["gateway watch thread panicked".to_owned()]))
    }
}
