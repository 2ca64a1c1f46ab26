//! Helpers of the end-to-end tests that drive a `weft_testkit::lab::Lab` (included with
//! `#[path = "common/lab.rs"] mod common;`, apart from the async etcd helpers in mod.rs).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a test needs (root, tools) and the rule when it is missing: fail under `CI=true`,
/// `SKIPPED` elsewhere. `if !common::need::root("test name") { return; }`
#[allow(unused_imports)] // not every test file including this one needs it
pub use weft_testkit::need;

/// The weft binary under test: `$WEFT_TEST_BIN` (e.g. `target/release/weft`), else the one
/// cargo built for this test run: the package's own (`CARGO_BIN_EXE_weft`) in weft's tests,
/// `weft` in the same target directory in other packages' tests (cni/tests), which
/// `cargo test --workspace` builds beside them.
pub fn weft_bin() -> PathBuf {
    match std::env::var_os("WEFT_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => match option_env!("CARGO_BIN_EXE_weft") {
            Some(p) => PathBuf::from(p),
            // target/<profile>/deps/<test> → target/<profile>/weft
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.parent()?.join("weft")))
                .unwrap_or_else(|| PathBuf::from("target/debug/weft")),
        },
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

/// The routes of `ip -j route show` in `ns` (plain commands, so a watcher thread can use it
/// while the test holds the lab mutably). A route on a nexthop object (`"nhid": N`) gets its
/// `gateway`, `dev` and `onlink` flag from `ip -j nexthop show` (the route itself carries them
/// only in `net.ipv4.nexthop_compat_mode`), and the nexthop's protocol as `nh_protocol`.
pub fn routes_in(ns: &str) -> Result<Vec<serde_json::Value>, String> {
    routes_of(ns, "-4")
}

/// [`routes_in`] for IPv6: `ip -6 -j route show` with `ip -6 -j nexthop show`.
pub fn routes6_in(ns: &str) -> Result<Vec<serde_json::Value>, String> {
    routes_of(ns, "-6")
}

fn routes_of(ns: &str, family: &str) -> Result<Vec<serde_json::Value>, String> {
    let json = |args: &[&str]| -> Result<Vec<serde_json::Value>, String> {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, family, "-j"])
            .args(args)
            .output()
            .map_err(|e| format!("ip -n {ns} {family} -j {}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "ip -n {ns} {family} -j {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("ip -n {ns} {family} -j {}: bad JSON: {e}", args.join(" ")))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    };
    let mut routes = json(&["route", "show"])?;
    if routes.iter().any(|r| r.get("nhid").is_some()) {
        let nexthops = json(&["nexthop", "show"])?;
        for r in &mut routes {
            let Some(id) = r["nhid"].as_u64() else {
                continue;
            };
            let nh = nexthops
                .iter()
                .find(|n| n["id"].as_u64() == Some(id))
                .ok_or_else(|| format!("{ns}: route {r} on a missing nexthop {id}"))?;
            let onlink = nh["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "onlink"));
            let obj = r.as_object_mut().ok_or("route is not a JSON object")?;
            obj.insert("gateway".into(), nh["gateway"].clone());
            obj.insert("dev".into(), nh["dev"].clone());
            obj.insert("nh_protocol".into(), nh["protocol"].clone());
            let mut flags: Vec<serde_json::Value> = obj
                .get("flags")
                .and_then(|f| f.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != "onlink")
                .collect();
            if onlink {
                flags.push("onlink".into());
            }
            obj.insert("flags".into(), flags.into());
        }
    }
    Ok(routes)
}

/// How node `ns`'s weft routes (protocol 87) are written: (plain, on nexthop objects).
pub fn weft_route_forms(ns: &str) -> Result<(usize, usize), String> {
    let routes = routes_in(ns)?;
    let ours = routes
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL));
    let on_nh = ours.clone().filter(|r| r.get("nhid").is_some()).count();
    Ok((ours.count() - on_nh, on_nh))
}

/// Whether a weft route is written as weft writes it: plain, or on one of weft's own nexthops
/// (protocol 87), never on someone else's.
pub fn on_weft_nexthop_or_plain(route: &serde_json::Value) -> bool {
    route.get("nhid").is_none()
        || route_protocol_is(
            &serde_json::json!({"protocol": route["nh_protocol"]}),
            WEFT_ROUTE_PROTOCOL,
        )
}

/// Checks that node `k`'s weft routes are exactly the host-gw routes: one
/// `<peer subnet> via <peer ip> dev eth0 proto 87` per other node, nothing else with proto 87.
pub fn hostgw_routes_ok(lab: &weft_testkit::lab::Lab, k: usize) -> Result<(), String> {
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let routes = routes_in(ns)?;
    let mut expected = Vec::new();
    for j in (1..=lab.nodes()).filter(|&j| j != k) {
        let net = lab.subnet(j).map_err(|e| format!("{e:#}"))?;
        let via = lab.node_ip(j).map_err(|e| e.to_string())?;
        expected.push((net.to_string(), via.to_string(), "eth0".to_owned()));
    }
    let field = |r: &serde_json::Value, name: &str| r[name].as_str().unwrap_or("-").to_owned();
    // Peer routes only: the node's own blackhole (`--ip-blackhole-route`) is not one.
    let mut ours: Vec<(String, String, String)> = routes
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL) && r["type"] != "blackhole")
        .map(|r| (field(r, "dst"), field(r, "gateway"), field(r, "dev")))
        .collect();
    if let Some(bad) = routes
        .iter()
        .find(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL) && !on_weft_nexthop_or_plain(r))
    {
        return Err(format!(
            "node {k}: weft route on someone else's nexthop: {bad}"
        ));
    }
    ours.sort();
    expected.sort();
    if ours != expected {
        return Err(format!(
            "node {k}: weft routes (dst, via, dev) {ours:?}, expected {expected:?}; all routes: {routes:?}"
        ));
    }
    Ok(())
}

/// [`hostgw_routes_ok`] for IPv6 in a dual-stack lab: one `<peer IPv6 subnet> via <peer
/// fd00:198:18::j> dev eth0 proto 87` per other node, no other IPv6 route with proto 87.
pub fn hostgw_routes6_ok(lab: &weft_testkit::lab::Lab, k: usize) -> Result<(), String> {
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let routes = routes6_in(ns)?;
    let mut expected = Vec::new();
    for j in (1..=lab.nodes()).filter(|&j| j != k) {
        let env = lab.subnet_env(j).map_err(|e| format!("{e:#}"))?;
        let net = env
            .ipv6_subnet
            .ok_or_else(|| format!("node {j}'s subnet.env has no FLANNEL_IPV6_SUBNET"))?;
        let via = lab.node_ip6(j).map_err(|e| e.to_string())?;
        expected.push((net.trunc().to_string(), via.to_string(), "eth0".to_owned()));
    }
    let field = |r: &serde_json::Value, name: &str| r[name].as_str().unwrap_or("-").to_owned();
    let mut ours: Vec<(String, String, String)> = routes
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL) && r["type"] != "blackhole")
        .map(|r| (field(r, "dst"), field(r, "gateway"), field(r, "dev")))
        .collect();
    ours.sort();
    expected.sort();
    if ours != expected {
        return Err(format!(
            "node {k}: weft IPv6 routes (dst, via, dev) {ours:?}, expected {expected:?}; all: {routes:?}"
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

// ===== vxlan helpers =====

/// `<prog> -n <ns> -j <args>` (`prog` is `ip` or `bridge`), parsed as a JSON array (empty
/// output is an empty array).
pub fn json_in(ns: &str, prog: &str, args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let text = run_in(ns, prog, &[&["-j"], args].concat())?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{prog} -n {ns} -j {}: bad JSON ({e}): {text}",
            args.join(" ")
        )
    })?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// `<prog> -n <ns> <args>` (`ip` or `bridge`); stdout, or an error with stderr.
pub fn run_in(ns: &str, prog: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(prog)
        .args(["-n", ns])
        .args(args)
        .output()
        .map_err(|e| format!("{prog} -n {ns} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The vxlan device weft (and flanneld) use with the default VNI.
pub const VXLAN_DEV: &str = "flannel.1";

/// What a node must have programmed for one vxlan peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VxlanPeer {
    /// The peer's subnet (`10.244.7.0/24`); its network address is the gateway.
    pub subnet: ipnet::Ipv4Net,
    /// The peer's PublicIP.
    pub ip: std::net::Ipv4Addr,
    /// The peer's VtepMAC, lower case with colons.
    pub mac: String,
}

impl VxlanPeer {
    pub fn gateway(&self) -> String {
        self.subnet.network().to_string()
    }
}

/// `ip -j -d link show flannel.1` in `ns`: the one link object.
pub fn vxlan_link(ns: &str) -> Result<serde_json::Value, String> {
    let links = json_in(ns, "ip", &["-d", "link", "show", VXLAN_DEV])?;
    match links.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "{ns}: `ip -d link show {VXLAN_DEV}` gave {links:?}"
        )),
    }
}

/// Makes `flannel.1` in `ns` exactly as flanneld's vxlan backend does (VNI 1, port 8472, no
/// learning, MTU 1450, `local` the node's address, `<subnet>.0/32` on it, up): for the tests'
/// hand-made flanneld nodes.
pub fn make_device_as_flanneld(
    ns: &str,
    mac: &str,
    local: std::net::Ipv4Addr,
    subnet: ipnet::Ipv4Net,
) -> Result<(), String> {
    let local = local.to_string();
    run_in(
        ns,
        "ip",
        &[
            "link",
            "add",
            VXLAN_DEV,
            "address",
            mac,
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &local,
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ],
    )?;
    let addr = format!("{}/32", subnet.network());
    run_in(ns, "ip", &["addr", "add", &addr, "dev", VXLAN_DEV])?;
    run_in(ns, "ip", &["link", "set", VXLAN_DEV, "up"])?;
    Ok(())
}

/// Programs `peer` on `flannel.1` in `ns` exactly as flanneld's vxlan backend does (FDB entry,
/// permanent ARP entry, onlink route, with iproute2's default protocol): for the tests'
/// hand-made flanneld nodes.
pub fn program_peer_as_flanneld(ns: &str, peer: &VxlanPeer) -> Result<(), String> {
    let (mac, gw, dst) = (peer.mac.as_str(), peer.gateway(), peer.ip.to_string());
    let net = peer.subnet.to_string();
    run_in(
        ns,
        "bridge",
        &[
            "fdb",
            "append",
            mac,
            "dev",
            VXLAN_DEV,
            "dst",
            &dst,
            "self",
            "permanent",
        ],
    )?;
    run_in(
        ns,
        "ip",
        &[
            "neigh",
            "replace",
            &gw,
            "lladdr",
            mac,
            "dev",
            VXLAN_DEV,
            "nud",
            "permanent",
        ],
    )?;
    run_in(
        ns,
        "ip",
        &[
            "route", "replace", &net, "via", &gw, "dev", VXLAN_DEV, "onlink",
        ],
    )?;
    Ok(())
}

/// The MAC of `flannel.1` in `ns`.
pub fn vxlan_mac(ns: &str) -> Result<String, String> {
    let link = vxlan_link(ns)?;
    link["address"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{ns}: {VXLAN_DEV} has no address: {link}"))
}

fn neigh_entries(ns: &str) -> Result<Vec<serde_json::Value>, String> {
    json_in(ns, "ip", &["neigh", "show", "dev", VXLAN_DEV])
}

fn fdb_entries(ns: &str) -> Result<Vec<serde_json::Value>, String> {
    json_in(ns, "bridge", &["fdb", "show", "dev", VXLAN_DEV])
}

fn is_permanent_neigh(n: &serde_json::Value) -> bool {
    n["state"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == "PERMANENT"))
}

fn is_self_permanent_fdb(f: &serde_json::Value) -> bool {
    f["state"] == "permanent"
        && f["flags"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "self"))
}

fn is_onlink(r: &serde_json::Value) -> bool {
    r["flags"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == "onlink"))
}

/// The three entries of one peer, compared from JSON:
/// `ip neigh`: `<gw> lladdr <mac> PERMANENT`; `bridge fdb`: `<mac> dst <ip> self permanent`;
/// `ip route`: `<subnet> via <gw> dev flannel.1 proto 87 onlink`.
pub fn vxlan_peer_present(ns: &str, peer: &VxlanPeer) -> Result<(), String> {
    let gw = peer.gateway();
    let neighs = neigh_entries(ns)?;
    if !neighs.iter().any(|n| {
        n["dst"] == gw.as_str() && n["lladdr"] == peer.mac.as_str() && is_permanent_neigh(n)
    }) {
        return Err(format!(
            "{ns}: no `{gw} lladdr {} PERMANENT` on {VXLAN_DEV}: {neighs:?}",
            peer.mac
        ));
    }
    let fdb = fdb_entries(ns)?;
    let ip = peer.ip.to_string();
    if !fdb.iter().any(|f| {
        f["mac"] == peer.mac.as_str() && f["dst"] == ip.as_str() && is_self_permanent_fdb(f)
    }) {
        return Err(format!(
            "{ns}: no `{} dst {ip} self permanent` in the fdb of {VXLAN_DEV}: {fdb:?}",
            peer.mac
        ));
    }
    let routes = routes_in(ns)?;
    let dst = peer.subnet.to_string();
    if !routes.iter().any(|r| {
        r["dst"] == dst.as_str()
            && r["gateway"] == gw.as_str()
            && r["dev"] == VXLAN_DEV
            && is_onlink(r)
            && route_protocol_is(r, WEFT_ROUTE_PROTOCOL)
    }) {
        return Err(format!(
            "{ns}: no `{dst} via {gw} dev {VXLAN_DEV} proto 87 onlink`: {routes:?}"
        ));
    }
    Ok(())
}

/// Node state is exactly the vxlan entries of `peers`, nothing more: the PERMANENT neighbours
/// of flannel.1, its FDB entries (each `self permanent`) and the routes with protocol 87 are
/// each the expected set (so an FDB entry of a peer's old MAC is an error).
pub fn vxlan_entries_exact(ns: &str, peers: &[VxlanPeer]) -> Result<(), String> {
    type Triple = (String, String, String);
    let mut want_neigh: Vec<(String, String)> =
        peers.iter().map(|p| (p.gateway(), p.mac.clone())).collect();
    let mut want_fdb: Vec<(String, String)> = peers
        .iter()
        .map(|p| (p.mac.clone(), p.ip.to_string()))
        .collect();
    let mut want_routes: Vec<Triple> = peers
        .iter()
        .map(|p| (p.subnet.to_string(), p.gateway(), VXLAN_DEV.to_owned()))
        .collect();
    want_neigh.sort();
    want_fdb.sort();
    want_routes.sort();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();

    let neighs = neigh_entries(ns)?;
    let mut have_neigh: Vec<(String, String)> = neighs
        .iter()
        .filter(|n| is_permanent_neigh(n))
        .map(|n| (s(&n["dst"]), s(&n["lladdr"])))
        .collect();
    have_neigh.sort();
    if have_neigh != want_neigh {
        return Err(format!(
            "{ns}: permanent neighbours (ip, lladdr) {have_neigh:?}, expected {want_neigh:?}"
        ));
    }
    let fdb = fdb_entries(ns)?;
    if let Some(bad) = fdb.iter().find(|f| !is_self_permanent_fdb(f)) {
        return Err(format!("{ns}: fdb entry not `self permanent`: {bad}"));
    }
    let mut have_fdb: Vec<(String, String)> =
        fdb.iter().map(|f| (s(&f["mac"]), s(&f["dst"]))).collect();
    have_fdb.sort();
    if have_fdb != want_fdb {
        return Err(format!(
            "{ns}: fdb (mac, dst) {have_fdb:?}, expected {want_fdb:?}"
        ));
    }
    let routes = routes_in(ns)?;
    let ours: Vec<&serde_json::Value> = routes
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL))
        .collect();
    if let Some(bad) = ours.iter().find(|r| !is_onlink(r)) {
        return Err(format!("{ns}: weft route without onlink: {bad}"));
    }
    if let Some(bad) = ours.iter().find(|r| !on_weft_nexthop_or_plain(r)) {
        return Err(format!("{ns}: weft route on someone else's nexthop: {bad}"));
    }
    let mut have_routes: Vec<Triple> = ours
        .iter()
        .map(|r| (s(&r["dst"]), s(&r["gateway"]), s(&r["dev"])))
        .collect();
    have_routes.sort();
    if have_routes != want_routes {
        return Err(format!(
            "{ns}: weft routes (dst, via, dev) {have_routes:?}, expected {want_routes:?}"
        ));
    }
    Ok(())
}

/// Polls `check` on its own thread every 20 ms until stopped; `stop()` returns how many polls
/// ran and every failure seen (with the time since the start). Like [`RouteWatch`], for any
/// condition that must hold all along.
pub struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Watch {
    pub fn start(check: impl Fn() -> Result<(), String> + Send + 'static) -> Watch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut rounds = 0;
            let mut failures = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = check() {
                    failures.push(format!("{:?}: {e}", started.elapsed()));
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (rounds, failures)
        });
        Watch { stop, handle }
    }

    /// Stops the watch; returns (polls made, failures).
    pub fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or_else(|_| (0, vec!["watch thread panicked".to_owned()]))
    }
}

/// `ping -c 1 -W <timeout>` from namespace `ns` to `dst`: true on a reply.
pub fn ping_once(ns: &str, dst: std::net::Ipv4Addr, timeout: Duration) -> bool {
    let w = format!("{:.3}", timeout.as_secs_f64());
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", &w])
        .arg(dst.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `/proc/loadavg`, for failure messages of timing assertions on a shared machine.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// `GET <path>` on 127.0.0.1:`port` inside network namespace `ns` (from a thread that joins
/// the namespace; no curl needed). Returns (status code, body).
pub fn http_get_in_netns(ns: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    let ns = ns.to_owned();
    let path = path.to_owned();
    std::thread::spawn(move || -> Result<(u16, String), String> {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| e.to_string())?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns {ns}: {e}"))?;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        std::io::Write::write_fmt(
            &mut s,
            format_args!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).map_err(|e| e.to_string())?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
        let code = head
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((code, body.to_owned()))
    })
    .join()
    .map_err(|_| "scrape thread panicked".to_owned())?
}

/// `ping` from namespace `ns` to `to`: the replies to `count` pings 100 ms apart (each waits at
/// most 1 s).
pub fn ping_replies(ns: &str, to: impl std::fmt::Display, count: u32) -> u32 {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-q", "-i", "0.1", "-W", "1",
        ])
        .args(["-c", &count.to_string(), &to.to_string()])
        .output()
        .expect("ping");
    String::from_utf8_lossy(&out.stdout)
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received")?.parse().ok())
        .unwrap_or(0)
}

/// `n` /24s of the lab's 10.244.0.0/16 that no node holds, from 10.244.250.0 down (lab subnets
/// are random: a fixed one may be a node's).
pub fn free_subnets(lab: &weft_testkit::lab::Lab, n: usize) -> Vec<String> {
    let held: Vec<String> = (1..=lab.nodes())
        .map(|k| lab.subnet(k).expect("subnet").to_string())
        .collect();
    (0..=250u8)
        .rev()
        .map(|third| format!("10.244.{third}.0/24"))
        .filter(|s| !held.contains(s))
        .take(n)
        .collect()
}

/// `weft status --json` in node k, in kube mode: (exit code, report).
pub fn kube_status(lab: &weft_testkit::lab::Lab, k: usize) -> (i32, serde_json::Value) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", lab.node_ns(k).expect("ns")])
        .arg(weft_bin())
        .args(["status", "--json", "--kube-subnet-mgr"])
        .arg(format!(
            "--kubeconfig-file={}",
            lab.kubeconfig_path().display()
        ))
        .arg(format!(
            "--net-config-path={}",
            lab.net_conf_path().display()
        ))
        .arg(format!(
            "--subnet-file={}",
            lab.subnet_file(k).expect("path").display()
        ))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("weft status");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}
