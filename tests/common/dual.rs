//! Helpers of the dual-stack end-to-end tests (`tests/e2e_dualstack*.rs`, included with
//! `#[path = "common/dual.rs"] mod dual;` beside `common/lab.rs` as `common`).
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{hostgw_routes_ok, hostgw_routes6_ok, wait_until};
use weft_testkit::lab::{Lab, LabSpec};

/// Agents are debug builds on a shared 2-core machine: generous, still bounded.
pub const READY: Duration = Duration::from_secs(30);
pub const CONVERGE: Duration = Duration::from_secs(15);
pub const V6_NETWORK: &str = "fd00:10:244::/56";

pub fn spec(nodes: usize) -> LabSpec {
    let mut spec = LabSpec::new(nodes, crate::common::weft_bin());
    spec.ipv6_network = Some(V6_NETWORK.to_owned());
    spec
}

/// Every node's subnet.env and host-gw routes of both families in place.
pub fn converge(lab: &mut Lab, nodes: &[usize]) {
    for &k in nodes {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for &k in nodes {
        wait_until(CONVERGE, || hostgw_routes_ok(lab, k)).expect("IPv4 host-gw routes");
        wait_until(CONVERGE, || hostgw_routes6_ok(lab, k)).expect("IPv6 host-gw routes");
    }
}

pub fn assert_pods_ping_over_both_families(lab: &Lab) {
    for (family, matrix) in [
        ("IPv4", lab.ping_matrix().expect("ping matrix")),
        ("IPv6", lab.ping6_matrix().expect("ping6 matrix")),
    ] {
        let n = lab.nodes();
        assert_eq!(matrix.len(), n * (n - 1));
        let failed: Vec<_> = matrix.iter().filter(|&&(_, _, ok)| !ok).collect();
        assert!(
            failed.is_empty(),
            "{family}: pod pairs without replies: {failed:?}"
        );
    }
}

pub fn weft(lab: &Lab, k: usize, args: &[&str]) -> Output {
    let ns = lab.node_ns(k).expect("ns");
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(crate::common::weft_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run weft")
}

/// `weft cleanup <scope…>` on etcd-mode lab node k, with the node's etcd endpoint, subnet file
/// and peer cache (as its agent ran).
pub fn weft_cleanup(lab: &Lab, k: usize, scope: &[&str]) -> Output {
    let endpoint = lab.etcd_endpoint().expect("endpoint");
    let mut args: Vec<String> = vec!["cleanup".into()];
    args.extend(scope.iter().map(|s| s.to_string()));
    args.push(format!("--etcd-endpoints={endpoint}"));
    args.push(format!(
        "--subnet-file={}",
        lab.subnet_file(k).expect("path").display()
    ));
    args.push(format!(
        "--peer-cache-file={}",
        lab.peer_cache_file(k).expect("path").display()
    ));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    weft(lab, k, &args)
}

/// `ip netns exec <ns> <prog> <args>`: stdout, or an error with stderr.
pub fn exec_in(ns: &str, prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, prog])
        .args(args)
        .output()
        .map_err(|e| format!("{prog} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {} in {ns}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes node 3 "flanneld": its lease `value` under flanneld's dual-stack key for
/// 10.244.200.0/24 and fd00:10:244:c8::/64 (beyond the 100 candidates a weft node picks from,
/// so no weft node can take them first) and its subnet.env with `mtu`; then starts the weft
/// agents of nodes 1 and 2 and waits for their subnet.env.
pub fn flanneld_node3_and_two_weft_nodes(lab: &mut Lab, value: &str, mtu: u32) {
    lab.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.200.0-24&fd00:10:244:c8::-64",
        value,
    ])
    .expect("put node 3's lease");
    std::fs::write(
        lab.subnet_file(3).expect("path"),
        format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.200.1/24\n\
             FLANNEL_IPV6_NETWORK={V6_NETWORK}\nFLANNEL_IPV6_SUBNET=fd00:10:244:c8::1/64\n\
             FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n"
        ),
    )
    .expect("node 3's subnet.env");
    lab.start_node(1).expect("start node 1");
    lab.start_node(2).expect("start node 2");
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
}

/// flanneld's nat chain for IPv6 (flannel-reference §6.1: IPv4's with `ff00::/8`), as
/// `ip6tables-save -t nat` prints it.
pub fn golden_nat6(subnet: &str) -> Vec<String> {
    let c = r#"-m comment --comment "flanneld masq""#;
    let n = V6_NETWORK;
    vec![
        format!("-A POSTROUTING {c} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {subnet} -d {n} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {n} -d {subnet} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {n} -d {subnet} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {n} ! -d ff00::/8 {c} -j MASQUERADE --random-fully"),
        format!("-A FLANNEL-POSTRTG ! -s {n} -d {n} {c} -j MASQUERADE --random-fully"),
    ]
}

pub fn nat6_rules(ns: &str) -> Result<Vec<String>, String> {
    Ok(exec_in(ns, "ip6tables-save", &["-t", "nat"])?
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect())
}
