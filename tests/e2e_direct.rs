//! vxlan DirectRouting end to end, decided by each node's route to its peer (`ip route get`) as
//! flanneld decides it, not by the interface's prefixes: on node 1 a host route sends node 2's
//! address through node 3 (a router), so node 1 tunnels to node 2 while it reaches node 3
//! directly; pods of every pair ping. When the host route goes and node 1 audits (SIGHUP), node 2
//! is routed directly too. The same over IPv6 in a dual-stack lab (`ip -6 route get`), each
//! family decided on its own.
#[path = "common/lab.rs"]
mod common;
#[path = "common/dual.rs"]
mod dual;

use std::time::Duration;

use common::{routes_in, routes6_in, wait_until};
use weft_testkit::lab::{Lab, LabSpec, Signal};

const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);

/// Node 1's route to node k's subnet as (gateway, dev).
fn route_to(lab: &Lab, k: usize) -> Result<(String, String), String> {
    let dst = lab.subnet(k).map_err(|e| format!("{e:#}"))?.to_string();
    let routes = routes_in(lab.node_ns(1).map_err(|e| e.to_string())?)?;
    let r = routes
        .iter()
        .find(|r| r["dst"].as_str() == Some(dst.as_str()))
        .ok_or_else(|| format!("node 1 has no route to {dst}: {routes:?}"))?;
    Ok((
        r["gateway"].as_str().unwrap_or("-").to_owned(),
        r["dev"].as_str().unwrap_or("-").to_owned(),
    ))
}

/// Node 1's IPv6 route to node k's IPv6 subnet as (gateway, dev).
fn route6_to(lab: &Lab, k: usize) -> Result<(String, String), String> {
    let dst = lab
        .subnet_env(k)
        .map_err(|e| format!("{e:#}"))?
        .ipv6_subnet
        .ok_or("no FLANNEL_IPV6_SUBNET")?
        .trunc()
        .to_string();
    let routes = routes6_in(lab.node_ns(1).map_err(|e| e.to_string())?)?;
    let r = routes
        .iter()
        .find(|r| r["dst"].as_str() == Some(dst.as_str()))
        .ok_or_else(|| format!("node 1 has no route to {dst}: {routes:?}"))?;
    Ok((
        r["gateway"].as_str().unwrap_or("-").to_owned(),
        r["dev"].as_str().unwrap_or("-").to_owned(),
    ))
}

fn all_pods_ping(lab: &Lab) {
    let matrix = lab.ping_matrix().expect("ping matrix");
    let failed: Vec<_> = matrix.iter().filter(|&&(_, _, ok)| !ok).collect();
    assert!(failed.is_empty(), "pod pairs without replies: {failed:?}");
}

#[test]
fn direct_routing_follows_each_nodes_route_to_its_peers() {
    if !common::need::root("direct_routing_follows_each_nodes_route_to_its_peers") {
        return;
    }
    let mut spec = LabSpec::new(3, common::weft_bin());
    spec.backend = "vxlan".to_owned();
    spec.config = Some(
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#.to_owned(),
    );
    let mut lab = Lab::build(spec).expect("build lab");
    lab.ip(
        1,
        &[
            "route",
            "add",
            "198.18.0.2/32",
            "via",
            "198.18.0.3",
            "dev",
            "eth0",
        ],
    )
    .expect("host route through node 3");
    lab.start_all().expect("start agents");
    for k in 1..=3 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    let node2_vtep = lab.subnet(2).expect("subnet").network().to_string();
    wait_until(CONVERGE, || {
        let to2 = route_to(&lab, 2)?;
        let to3 = route_to(&lab, 3)?;
        (to2 == (node2_vtep.clone(), "flannel.1".to_owned())
            && to3 == ("198.18.0.3".to_owned(), "eth0".to_owned()))
            .then_some(())
            .ok_or(format!("node 1: to node 2 {to2:?}, to node 3 {to3:?}"))
    })
    .expect("node 1 tunnels to node 2 (behind a router) and routes node 3 directly");
    lab.add_pods().expect("pods");
    all_pods_ping(&lab);

    // The host route goes; the next audit decides again.
    lab.ip(1, &["route", "del", "198.18.0.2/32"]).expect("del");
    lab.signal_node(1, Signal::SIGHUP).expect("SIGHUP");
    wait_until(CONVERGE, || {
        let to2 = route_to(&lab, 2)?;
        (to2 == ("198.18.0.2".to_owned(), "eth0".to_owned()))
            .then_some(())
            .ok_or(format!("node 1: to node 2 {to2:?}"))
    })
    .expect("node 1 routes node 2 directly after the audit");
    all_pods_ping(&lab);
}

#[test]
fn ipv6_direct_routing_follows_each_nodes_route_to_its_peers() {
    if !common::need::root("ipv6_direct_routing_follows_each_nodes_route_to_its_peers") {
        return;
    }
    let mut spec = dual::spec(3);
    spec.backend = "vxlan".to_owned();
    spec.config = Some(format!(
        r#"{{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"{}","Backend":{{"Type":"vxlan","DirectRouting":true}}}}"#,
        dual::V6_NETWORK
    ));
    let mut lab = Lab::build(spec).expect("build lab");
    let node2 = lab.node_ip6(2).expect("node 2").to_string();
    let node3 = lab.node_ip6(3).expect("node 3").to_string();
    // Node 1 reaches node 2's IPv6 address through node 3 (a router); IPv4 stays direct.
    lab.ip(
        1,
        &[
            "-6",
            "route",
            "add",
            &format!("{node2}/128"),
            "via",
            &node3,
            "dev",
            "eth0",
        ],
    )
    .expect("IPv6 host route through node 3");
    lab.start_all().expect("start agents");
    for k in 1..=3 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    let node2_vtep6 = lab
        .subnet_env(2)
        .expect("env")
        .ipv6_subnet
        .expect("v6")
        .trunc()
        .network()
        .to_string();
    let node2_ip = lab.node_ip(2).expect("node 2").to_string();
    wait_until(CONVERGE, || {
        let to2 = route6_to(&lab, 2)?;
        let to3 = route6_to(&lab, 3)?;
        let to2_v4 = route_to(&lab, 2)?;
        (to2 == (node2_vtep6.clone(), "flannel-v6.1".to_owned())
            && to3 == (node3.clone(), "eth0".to_owned())
            && to2_v4 == (node2_ip.clone(), "eth0".to_owned()))
            .then_some(())
            .ok_or(format!(
                "node 1: IPv6 to node 2 {to2:?}, to node 3 {to3:?}; IPv4 to node 2 {to2_v4:?}"
            ))
    })
    .expect("node 1 tunnels IPv6 to node 2 (behind a router), routes node 3 directly, IPv4 direct");
    // The direct IPv6 route has the metric of weft's IPv6 routes.
    let routes = routes6_in(lab.node_ns(1).expect("ns")).expect("routes");
    let direct = routes
        .iter()
        .find(|r| r["gateway"].as_str() == Some(node3.as_str()))
        .expect("the direct route");
    assert_eq!(direct["metric"], 1024, "{direct}");
    lab.add_pods().expect("pods");
    dual::assert_pods_ping_over_both_families(&lab);

    // The host route goes; the next audit decides again.
    lab.ip(1, &["-6", "route", "del", &format!("{node2}/128")])
        .expect("del");
    lab.signal_node(1, Signal::SIGHUP).expect("SIGHUP");
    wait_until(CONVERGE, || {
        let to2 = route6_to(&lab, 2)?;
        (to2 == (node2.clone(), "eth0".to_owned()))
            .then_some(())
            .ok_or(format!("node 1: IPv6 to node 2 {to2:?}"))
    })
    .expect("node 1 routes node 2 directly over IPv6 after the audit");
    dual::assert_pods_ping_over_both_families(&lab);
}
