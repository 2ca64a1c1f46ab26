//! vxlan DirectRouting end to end, decided by each node's route to its peer (`ip route get`) as
//! flanneld decides it, not by the interface's prefixes: on node 1 a host route sends node 2's
//! address through node 3 (a router), so node 1 tunnels to node 2 while it reaches node 3
//! directly; pods of every pair ping. When the host route goes and node 1 audits (SIGHUP), node 2
//! is routed directly too.
#[path = "common/lab.rs"]
mod common;

use std::time::Duration;

use common::{routes_in, wait_until};
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
