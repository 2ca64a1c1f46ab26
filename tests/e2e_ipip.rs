//! End to end with ipip, for real: the weft binary on nodes (network namespaces) with a real
//! etcd, pods behind cni0, checked by the kernel's own view (`ip -j -d link`, `ip -j route`,
//! the tunnel's counters) and by ping.
//!
//! The development/CI kernel has no ipip, so these tests need the VM: `scripts/vm-test.sh` runs
//! this target in a qemu guest with Debian's kernel (WEFT_IN_VM=1) and `--include-ignored`.
//! A plain `cargo test` lists them as ignored. The unsupported-kernel path is
//! `tests/e2e_ipip_unsupported.rs`.
#[path = "common/lab.rs"]
mod common;

use std::time::Duration;

use common::{WEFT_ROUTE_PROTOCOL, route_protocol_is, routes_in, wait_until};
use serde_json::Value;
use weft_testkit::lab::{Lab, LabSpec};

/// Debug agents under qemu TCG (about 10x slower than the host) on one vCPU: generous, still
/// bounded.
const READY: Duration = Duration::from_secs(90);
const CONVERGE: Duration = Duration::from_secs(45);
const TUNNEL: &str = "flannel.ipip";

fn in_vm() {
    assert_eq!(
        std::env::var("WEFT_IN_VM").as_deref(),
        Ok("1"),
        "this test needs a kernel with ipip; run it through scripts/vm-test.sh"
    );
}

/// A lab of `nodes` ipip nodes (`config` overrides the config JSON); no agent runs yet.
fn build_lab(nodes: usize, config: Option<&str>) -> Lab {
    let mut spec = LabSpec::new(nodes, common::weft_bin());
    spec.backend = "ipip".to_owned();
    spec.config = config.map(str::to_owned);
    Lab::build(spec).expect("build lab")
}

/// Starts every agent at the same moment and waits until each wrote its subnet.env.
fn start_all(lab: &mut Lab) {
    lab.start_all().expect("start agents");
    for k in 1..=lab.nodes() {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
}

/// Node `k`'s weft routes are exactly one per other node: `<subnet j> via 198.18.0.j dev
/// flannel.ipip onlink proto 87` (or `dev eth0` without onlink when `direct`).
fn ipip_routes_ok(lab: &Lab, k: usize, direct: bool) -> Result<(), String> {
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let routes = routes_in(ns)?;
    let mut expected = Vec::new();
    for j in (1..=lab.nodes()).filter(|&j| j != k) {
        let net = lab.subnet(j).map_err(|e| format!("{e:#}"))?;
        let via = lab.node_ip(j).map_err(|e| e.to_string())?;
        let (dev, onlink) = if direct {
            ("eth0", false)
        } else {
            (TUNNEL, true)
        };
        expected.push((net.to_string(), via.to_string(), dev.to_owned(), onlink));
    }
    let field = |r: &Value, name: &str| r[name].as_str().unwrap_or("-").to_owned();
    let mut ours: Vec<(String, String, String, bool)> = routes
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL))
        .map(|r| {
            let onlink = r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "onlink"));
            (
                field(r, "dst"),
                field(r, "gateway"),
                field(r, "dev"),
                onlink,
            )
        })
        .collect();
    ours.sort();
    expected.sort();
    if ours != expected {
        return Err(format!(
            "node {k}: weft routes (dst, via, dev, onlink) {ours:?}, expected {expected:?}; \
             all routes: {routes:?}"
        ));
    }
    Ok(())
}

/// `flannel.ipip` in node `k` as `ip -j -d link` and `ip -j addr` show it: type ipip, local =
/// the node's eth0 address, remote any, MTU 1480 (eth0's 1500 − 20), up, one address: the
/// node's subnet network address /32.
fn tunnel_ok(lab: &Lab, k: usize) -> Result<(), String> {
    let link = lab
        .ip_json(k, &["-d", "link", "show", TUNNEL])
        .map_err(|e| format!("node {k}: {e:#}"))?;
    let link = &link[0];
    let ip = lab.node_ip(k).map_err(|e| e.to_string())?.to_string();
    let info = &link["linkinfo"];
    let up = link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "UP"));
    if info["info_kind"] != "ipip"
        || info["info_data"]["local"] != ip.as_str()
        || info["info_data"]["remote"] != "any"
        || link["mtu"] != 1480
        || !up
    {
        return Err(format!(
            "node {k}: {TUNNEL} is not `ipip local {ip} remote any mtu 1480 up`: {link}"
        ));
    }
    let subnet = lab.subnet(k).map_err(|e| format!("{e:#}"))?;
    let addrs = lab
        .ip_json(k, &["addr", "show", "dev", TUNNEL])
        .map_err(|e| format!("node {k}: {e:#}"))?;
    let v4: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
                .collect()
        })
        .unwrap_or_default();
    let want = format!("{}/32", subnet.network());
    if v4 != [want.clone()] {
        return Err(format!(
            "node {k}: {TUNNEL} addresses {v4:?}, want [{want}]"
        ));
    }
    Ok(())
}

/// (rx packets, tx packets) of `flannel.ipip` in node `k` (`ip -j -s link show`).
fn tunnel_packets(lab: &Lab, k: usize) -> (u64, u64) {
    let v = lab
        .ip_json(k, &["-s", "link", "show", TUNNEL])
        .expect("ip -j -s link");
    let stats = &v[0]["stats64"];
    let get = |dir: &str| {
        stats[dir]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("node {k}: no {dir} packets in {v}"))
    };
    (get("rx"), get("tx"))
}

fn assert_all_pods_reach_each_other(lab: &Lab) {
    let matrix = lab.ping_matrix().expect("ping matrix");
    let n = lab.nodes();
    assert_eq!(matrix.len(), n * (n - 1));
    let failed: Vec<_> = matrix.iter().filter(|&&(_, _, ok)| !ok).collect();
    assert!(failed.is_empty(), "pod pairs without replies: {failed:?}");
}

fn assert_agents_alive(lab: &mut Lab) {
    for k in 1..=lab.nodes() {
        assert!(
            lab.node_running(k).expect("status"),
            "node {k}'s agent exited ({:?}); log:\n{}",
            lab.node_exit_status(k),
            lab.log_tail(k, 40)
        );
    }
}

#[test]
#[ignore = "needs the VM kernel (ipip): run scripts/vm-test.sh"]
fn three_ipip_nodes_pods_ping_through_the_tunnel_and_drift_is_repaired() {
    in_vm();
    let mut lab = build_lab(3, None);
    start_all(&mut lab);
    for k in 1..=3 {
        wait_until(CONVERGE, || ipip_routes_ok(&lab, k, false)).expect("ipip routes");
        tunnel_ok(&lab, k).expect("tunnel device");
        // FLANNEL_MTU is the tunnel's.
        assert_eq!(lab.subnet_env(k).expect("subnet.env").mtu, 1480, "node {k}");
        // The lease is flannel's, byte for byte.
        let net = lab.subnet(k).expect("subnet");
        let key = format!(
            "/coreos.com/network/subnets/{}-{}",
            net.network(),
            net.prefix_len()
        );
        let value = lab
            .etcdctl(&["get", &key, "--print-value-only"])
            .expect("etcdctl get");
        assert_eq!(
            value.trim(),
            format!(r#"{{"PublicIP":"198.18.0.{k}","PublicIPv6":null,"BackendType":"ipip"}}"#),
            "{key}"
        );
    }

    lab.add_pods().expect("pods");
    let before: Vec<(u64, u64)> = (1..=3).map(|k| tunnel_packets(&lab, k)).collect();
    assert_all_pods_reach_each_other(&lab);
    // The traffic went through the tunnels: each node sent an echo request to and a reply to
    // each of its two peers (2 + 2 packets at least), and received as many.
    for k in 1..=3 {
        let (rx, tx) = tunnel_packets(&lab, k);
        let (rx0, tx0) = before[k - 1];
        assert!(
            tx - tx0 >= 4 && rx - rx0 >= 4,
            "node {k}: {TUNNEL} counted rx +{} tx +{} packets during the ping matrix",
            rx - rx0,
            tx - tx0
        );
    }

    // A route deleted out of band comes back.
    let victim = lab.subnet(2).expect("subnet").to_string();
    lab.ip(1, &["route", "del", &victim]).expect("ip route del");
    wait_until(CONVERGE, || ipip_routes_ok(&lab, 1, false)).expect("route repaired");
    assert!(
        lab.ping(1, 2, 1, Duration::from_secs(10)).expect("ping"),
        "pod 1 -> pod 2 after the repair"
    );

    // The tunnel deleted out of band is re-created with its address and every route.
    lab.ip(2, &["link", "del", TUNNEL]).expect("ip link del");
    wait_until(CONVERGE, || {
        tunnel_ok(&lab, 2)?;
        ipip_routes_ok(&lab, 2, false)
    })
    .expect("tunnel re-created");
    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab);
    lab.teardown().expect("teardown");
}

#[test]
#[ignore = "needs the VM kernel (ipip): run scripts/vm-test.sh"]
fn direct_routing_routes_adjacent_peers_via_eth0() {
    in_vm();
    let config = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"ipip","DirectRouting":true}}"#;
    let mut lab = build_lab(2, Some(config));
    // Left over on node 1: a flannel.ipip with another local address (recreated); on node 2:
    // the right tunnel with another MTU (kept, MTU fixed in place).
    lab.ip(
        1,
        &[
            "link",
            "add",
            TUNNEL,
            "mtu",
            "1400",
            "type",
            "ipip",
            "local",
            "198.18.0.99",
        ],
    )
    .expect("stale tunnel on node 1");
    lab.ip(
        2,
        &[
            "link",
            "add",
            TUNNEL,
            "mtu",
            "1400",
            "type",
            "ipip",
            "local",
            "198.18.0.2",
        ],
    )
    .expect("tunnel with another MTU on node 2");
    let index2 = lab.ip_json(2, &["link", "show", TUNNEL]).expect("ip link")[0]["ifindex"].clone();
    start_all(&mut lab);
    let log1 = lab.log(1).expect("log");
    assert!(
        log1.contains("local 198.18.0.99 (want 198.18.0.1); recreating device"),
        "node 1 does not say why it recreated {TUNNEL}; log:\n{log1}"
    );
    let log2 = lab.log(2).expect("log");
    assert!(
        log2.contains("ip link set flannel.ipip mtu 1480") && !log2.contains("recreating"),
        "node 2 must keep {TUNNEL} and fix its MTU; log:\n{log2}"
    );
    let now2 = lab.ip_json(2, &["link", "show", TUNNEL]).expect("ip link")[0]["ifindex"].clone();
    assert_eq!(now2, index2, "node 2's {TUNNEL} was replaced");
    for k in 1..=2 {
        wait_until(CONVERGE, || ipip_routes_ok(&lab, k, true)).expect("direct routes");
        // The tunnel exists all the same (peers elsewhere would use it).
        tunnel_ok(&lab, k).expect("tunnel device");
    }
    lab.add_pods().expect("pods");
    let before: Vec<(u64, u64)> = (1..=2).map(|k| tunnel_packets(&lab, k)).collect();
    assert_all_pods_reach_each_other(&lab);
    for k in 1..=2 {
        assert_eq!(
            tunnel_packets(&lab, k),
            before[k - 1],
            "node {k}: traffic between adjacent nodes must bypass {TUNNEL}"
        );
    }
    assert_agents_alive(&mut lab);
    lab.teardown().expect("teardown");
}
