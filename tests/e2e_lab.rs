//! The lab itself, without agents: namespaces, underlay, pods, ping and teardown work, so a
//! failing weft end-to-end test points at weft and not at the lab.
#[path = "common/lab.rs"]
mod common;

use std::time::Duration;

use weft_testkit::lab::{Lab, LabSpec};

#[test]
fn topology_pods_routes_and_teardown() {
    if !common::need::root("topology_pods_routes_and_teardown") {
        return;
    }
    let mut lab = Lab::build(LabSpec::new(3, common::weft_bin())).expect("build lab");
    let name = lab.name().to_owned();

    // etcd runs in the underlay and holds the config.
    let cfg = lab
        .etcdctl(&["get", "/coreos.com/network/config", "--print-value-only"])
        .expect("etcdctl get");
    let cfg: serde_json::Value = serde_json::from_str(cfg.trim()).expect("config is JSON");
    assert_eq!(
        cfg,
        serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}})
    );

    // Each node: eth0 198.18.0.k/24 and a default route via 198.18.0.254 on eth0.
    for k in 1..=3 {
        let routes = lab.routes(k).expect("routes");
        let default = routes
            .as_array()
            .expect("array")
            .iter()
            .find(|r| r["dst"] == "default")
            .unwrap_or_else(|| panic!("node {k} has no default route: {routes}"));
        assert_eq!(default["gateway"], "198.18.0.254");
        assert_eq!(default["dev"], "eth0");
        let addrs = lab
            .ip_json(k, &["addr", "show", "dev", "eth0"])
            .expect("addr");
        let local = &addrs[0]["addr_info"][0]["local"];
        assert_eq!(local, &serde_json::json!(format!("198.18.0.{k}")));
    }

    // Play the agent's part by hand: a subnet.env per node (what weft writes) and the
    // host-gw routes, so the pods can be built and must reach each other.
    for k in 1..=3 {
        let env = format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.{k}.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
        );
        std::fs::write(lab.subnet_file(k).expect("path"), env).expect("write subnet.env");
        let ip = lab.add_pod(k).expect("add pod");
        assert_eq!(ip.to_string(), format!("10.244.{k}.2"));
    }
    // Without routes between nodes, pods on different nodes cannot talk.
    assert!(!lab.ping(1, 2, 1, Duration::from_secs(1)).expect("ping"));
    for k in 1..=3 {
        for j in (1..=3).filter(|&j| j != k) {
            let dst = format!("10.244.{j}.0/24");
            let via = format!("198.18.0.{j}");
            lab.ip(k, &["route", "replace", &dst, "via", &via, "dev", "eth0"])
                .expect("route");
        }
    }
    let matrix = lab.ping_matrix().expect("ping matrix");
    assert_eq!(matrix.len(), 6);
    assert!(matrix.iter().all(|&(_, _, ok)| ok), "{matrix:?}");

    lab.teardown().expect("teardown");
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "namespaces left behind: {left}"
    );
}
