//! End to end in kube mode, operations: a ConfigMap update switches the backend live, `weft
//! status` reads the Nodes, a hand-made flanneld node shares the cluster, and a node boots from
//! its peer cache while the API server is down.
#[path = "common/lab.rs"]
mod common;
#[path = "common/kube.rs"]
mod kube;

use common::{VxlanPeer, kube_status, vxlan_peer_present, wait_until};
use kube::*;
use serde_json::json;
use weft_testkit::lab::{Signal, pod_cidr};

#[test]
fn a_configmap_update_switches_the_backend_live_and_republishes_the_annotations() {
    if !common::need::root(
        "a_configmap_update_switches_the_backend_live_and_republishes_the_annotations",
    ) {
        return;
    }
    let mut lab = started_lab(2);
    let subnets: Vec<_> = (1..=2).map(|k| lab.subnet(k).expect("subnet")).collect();
    assert_pings(&lab);
    lab.put_config(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
        .expect("net-conf.json");
    for k in 1..=2 {
        wait_until(CONVERGE, || {
            match (
                annotation(&mut lab, k, "backend-type").as_deref(),
                annotation(&mut lab, k, "backend-data").as_deref(),
            ) {
                (Some("host-gw"), Some("null")) => Ok(()),
                other => Err(format!("node {k}: {other:?}")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(k, 30)));
    }
    // host-gw routes via the peer's eth0, the old vxlan device gone.
    for (k, j) in [(1, 2), (2, 1)] {
        let dst = lab.subnet(j).expect("subnet").to_string();
        let via = format!("via {} dev eth0", lab.node_ip(j).expect("ip"));
        wait_until(CONVERGE, || {
            let routes = lab.routes_text(k).map_err(|e| e.to_string())?;
            let links = lab.ip(k, &["link", "show"]).map_err(|e| e.to_string())?;
            if routes
                .lines()
                .any(|l| l.starts_with(&dst) && l.contains(&via))
                && !links.contains("flannel.1")
            {
                Ok(())
            } else {
                Err(format!("node {k}: routes\n{routes}\nlinks\n{links}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(k, 30)));
    }
    let after: Vec<_> = (1..=2).map(|k| lab.subnet(k).expect("subnet")).collect();
    assert_eq!(subnets, after, "the podCIDRs stay the subnets");
    assert_pings(&lab);
}

#[test]
fn status_reads_the_nodes_in_kube_mode_and_reports_drift() {
    if !common::need::root("status_reads_the_nodes_in_kube_mode_and_reports_drift") {
        return;
    }
    let mut lab = started_lab(2);
    let peer = lab.subnet(2).expect("subnet").to_string();
    let (code, report) = wait_until(CONVERGE, || {
        let (code, report) = kube_status(&lab, 1);
        if code == 0 {
            Ok((code, report))
        } else {
            Err(format!("exit {code}: {report}"))
        }
    })
    .expect("in sync");
    assert_eq!(code, 0);
    assert_eq!(report["own_lease"]["subnet"], "10.244.1.0/24", "{report}");
    assert_eq!(report["own_lease"]["node"], true, "{report}");
    assert_eq!(
        report["own_lease"]["key"], "Node with podCIDR 10.244.1.0/24",
        "{report}"
    );
    assert_eq!(report["peers"][0]["subnet"], json!(peer), "{report}");
    assert_eq!(report["peers"][0]["public_ip"], "198.18.0.2", "{report}");
    // A route taken away behind the agent's back is drift until it repairs it; stop the agent
    // first so that the drift stays.
    lab.stop_node(1, Signal::SIGTERM).expect("stop");
    lab.ip(1, &["route", "del", &peer]).expect("ip route del");
    let (code, report) = kube_status(&lab, 1);
    assert_eq!(code, 1, "{report}");
    let missing = report["drift"]["missing"].to_string();
    assert!(missing.contains(&peer), "{report}");
}

#[test]
fn a_hand_made_flanneld_node_and_weft_nodes_share_one_cluster() {
    if !common::need::root("a_hand_made_flanneld_node_and_weft_nodes_share_one_cluster") {
        return;
    }
    // Node 3 runs no weft: it is programmed as flanneld does it in kube mode (its podCIDR as the
    // subnet, flannel.1, its annotations on its Node as flanneld's strategic merge patch leaves
    // them), and it programs the weft nodes from their annotations, read strictly.
    let mut lab = kube_lab(3, VXLAN);
    let n3 = lab.node_ns(3).expect("ns").to_owned();
    let net3 = pod_cidr("10.244.0.0/16", 3).expect("cidr");
    let mac3 = "0e:2a:fa:00:00:03";
    common::make_device_as_flanneld(&n3, mac3, "198.18.0.3".parse().expect("ip"), net3)
        .expect("node 3's flannel.1");
    lab.kube()
        .expect("kube")
        .modify_node("node3", |n| {
            let a = &mut n["metadata"]["annotations"];
            a[format!("{P}/backend-data")] = json!(format!("{{\"VNI\":1,\"VtepMAC\":\"{mac3}\"}}"));
            a[format!("{P}/backend-type")] = json!("vxlan");
            a[format!("{P}/kube-subnet-manager")] = json!("true");
            a[format!("{P}/public-ip")] = json!("198.18.0.3");
        })
        .expect("node 3's annotations");
    std::fs::write(
        lab.subnet_file(3).expect("path"),
        format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
            net3.hosts().next().expect("host")
        ),
    )
    .expect("node 3's subnet.env");
    for k in 1..=2 {
        lab.start_node(k).expect("start");
    }
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY)
            .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", lab.log_tail(k, 30)));
    }
    let node3 = VxlanPeer {
        subnet: net3,
        ip: "198.18.0.3".parse().expect("ip"),
        mac: mac3.to_owned(),
    };
    for k in 1..=2 {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        wait_until(CONVERGE, || vxlan_peer_present(&ns, &node3))
            .unwrap_or_else(|e| panic!("node {k}: {e}; log:\n{}", lab.log_tail(k, 30)));
    }
    // "flanneld" on node 3 reads the weft nodes' annotations as flanneld does (strict JSON).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BackendData {
        #[serde(rename = "VNI")]
        vni: u32,
        #[serde(rename = "VtepMAC")]
        vtep_mac: String,
    }
    for k in 1..=2 {
        let data = annotation(&mut lab, k, "backend-data").expect("backend-data");
        let data: BackendData = serde_json::from_str(&data).expect("flannel's backend-data");
        assert_eq!(data.vni, 1);
        let ip = annotation(&mut lab, k, "public-ip").expect("public-ip");
        let net = lab.subnet(k).expect("subnet");
        let peer = VxlanPeer {
            subnet: net,
            ip: ip.parse().expect("public ip"),
            mac: data.vtep_mac,
        };
        common::program_peer_as_flanneld(&n3, &peer).expect("program the weft node by hand");
    }
    lab.add_pods().expect("pods");
    assert_pings(&lab);
    for k in 1..=2 {
        assert!(
            lab.node_running(k).expect("status"),
            "node {k}:\n{}",
            lab.log_tail(k, 30)
        );
    }
}

#[test]
fn a_node_that_starts_while_the_api_server_is_down_boots_from_its_peer_cache() {
    if !common::need::root(
        "a_node_that_starts_while_the_api_server_is_down_boots_from_its_peer_cache",
    ) {
        return;
    }
    let mut lab = started_lab(2);
    let peer = lab.subnet(2).expect("subnet").to_string();
    // Node 1 goes down with its cache written, the routes stay; then they are lost too (a
    // reboot), and the API server is unreachable when it comes back.
    let cache = lab.peer_cache_file(1).expect("cache");
    wait_until(CONVERGE, || {
        let text = std::fs::read_to_string(&cache).map_err(|e| e.to_string())?;
        // Keys as flannel writes them: 10.244.2.0-24.
        if text.contains(&peer.replace('/', "-")) {
            Ok(())
        } else {
            Err(text)
        }
    })
    .expect("node 1's peer cache holds node 2");
    lab.stop_node(1, Signal::SIGTERM).expect("stop");
    lab.ip(1, &["link", "del", "flannel.1"])
        .expect("reboot: device gone");
    assert!(!route_to(&lab, 1, &peer));
    lab.kube().expect("kube").stop();
    let ready_before = lab.log(1).expect("log").matches("weft is ready").count();
    lab.start_node(1).expect("start");
    wait_until(READY, || {
        if route_to(&lab, 1, &peer) {
            Ok(())
        } else {
            Err("no route from the cache yet".into())
        }
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(1, 30)));
    let log = lab.log(1).expect("log");
    assert!(log.contains("cached peers"), "{log}");
    assert_pings(&lab);
    // The API server returns: node 1 gets ready the normal way.
    lab.kube().expect("kube").restart().expect("restart");
    wait_until(READY, || {
        let log = lab.log(1).map_err(|e| e.to_string())?;
        if log.matches("weft is ready").count() > ready_before {
            Ok(())
        } else {
            Err("not ready".into())
        }
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(1, 30)));
    assert_pings(&lab);
}
