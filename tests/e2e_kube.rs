//! End to end in kube mode (`--kube-subnet-mgr`): the real weft binary on lab nodes against
//! the test API server of `weft-testkit` (`testkit/src/kube_api/`, docs/kube-test-server.md)
//! with kube-flannel's RBAC: start-up, the Node objects, pings, outages and access problems.
//! The operations (live switch, status, a flanneld node, the peer cache) are in
//! `tests/e2e_kube_ops.rs`.
#[path = "common/lab.rs"]
mod common;
#[path = "common/kube.rs"]
mod kube;

use std::time::{Duration, Instant};

use common::{VxlanPeer, vxlan_mac, vxlan_peer_present, wait_until};
use kube::*;
use serde_json::json;
use weft_testkit::kube_api::NodeSpec;
use weft_testkit::lab::{Lab, Signal, pod_cidr};

#[test]
fn nodes_take_their_pod_cidrs_publish_flannels_annotations_and_pods_ping() {
    if !common::need::root("nodes_take_their_pod_cidrs_publish_flannels_annotations_and_pods_ping")
    {
        return;
    }
    let mut lab = started_lab(3);
    for k in 1..=3 {
        let cidr = pod_cidr("10.244.0.0/16", k).expect("cidr");
        assert_eq!(
            lab.subnet(k).expect("subnet"),
            cidr,
            "node {k}'s subnet is its podCIDR"
        );
    }
    assert_pings(&lab);
    for k in 1..=3 {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        let mac = vxlan_mac(&ns).expect("mac");
        let ip = lab.node_ip(k).expect("ip");
        let node = lab
            .kube()
            .expect("kube")
            .node(&Lab::node_name(k))
            .expect("node");
        let a = &node["metadata"]["annotations"];
        // Byte for byte what flanneld writes.
        assert_eq!(
            a[format!("{P}/backend-data")],
            json!(format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}"))
        );
        assert_eq!(a[format!("{P}/backend-type")], "vxlan");
        assert_eq!(a[format!("{P}/kube-subnet-manager")], "true");
        assert_eq!(a[format!("{P}/public-ip")], json!(ip.to_string()));
        // The kubelet's annotations are untouched.
        assert_eq!(a["node.alpha.kubernetes.io/ttl"], "0");
        wait_until(CONVERGE, || {
            let node = lab
                .kube()
                .map_err(|e| e.to_string())?
                .node(&Lab::node_name(k))
                .ok_or("gone")?;
            let conds = node["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let c = conds
                .iter()
                .find(|c| c["type"] == "NetworkUnavailable")
                .ok_or("no condition yet")?;
            if c["status"] == "False"
                && c["reason"] == "FlannelIsUp"
                && c["message"] == "Flannel is running on this node"
            {
                Ok(())
            } else {
                Err(format!("{c}"))
            }
        })
        .unwrap_or_else(|e| panic!("node {k}: NetworkUnavailable: {e}"));
        for j in (1..=3).filter(|&j| j != k) {
            vxlan_peer_present(&ns, &peer(&lab, j).expect("peer")).expect("peer entries");
        }
    }

    // A peer's annotation made unreadable by someone else: skipped with a warning, its route
    // stays everywhere, and its own agent writes the annotation back.
    let subnet2 = lab.subnet(2).expect("subnet").to_string();
    lab.kube()
        .expect("kube")
        .modify_node("node2", |n| {
            n["metadata"]["annotations"][format!("{P}/public-ip")] = json!("not-an-ip");
        })
        .expect("modify");
    wait_until(CONVERGE, || {
        match annotation(&mut lab, 2, "public-ip").as_deref() {
            Some("198.18.0.2") => Ok(()),
            other => Err(format!("node2's public-ip is {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(2, 30)));
    let log1 = lab.log(1).expect("log");
    assert!(
        log1.contains("not-an-ip"),
        "node 1 did not warn about the bad annotation:\n{log1}"
    );
    assert!(
        route_to(&lab, 1, &subnet2),
        "node 1 lost its route to node 2"
    );
    assert_pings(&lab);

    // A Node deleted: its routes go everywhere.
    let subnet3 = lab.subnet(3).expect("subnet").to_string();
    lab.stop_node(3, Signal::SIGTERM).expect("stop node 3");
    lab.kube()
        .expect("kube")
        .delete_node("node3")
        .expect("delete node3");
    for k in 1..=2 {
        wait_until(CONVERGE, || {
            if route_to(&lab, k, &subnet3) {
                Err(format!("node {k} still routes {subnet3}"))
            } else {
                Ok(())
            }
        })
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(k, 30)));
    }
}

/// `ping -i 0.1` from pod `from` to pod `to`; returns (child, output file).
fn start_pinger(lab: &Lab, from: usize, to: usize) -> (std::process::Child, std::path::PathBuf) {
    let out = lab.dir().join(format!("ping-{from}-{to}.txt"));
    let file = std::fs::File::create(&out).expect("ping output");
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.pod_ns(from).expect("pod ns"),
            "ping",
            "-n",
            "-i",
            "0.1",
            "-W",
            "1",
        ])
        .arg(lab.pod_ip(to).expect("pod ip").to_string())
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ping");
    wait_until(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        if t.contains("bytes from") {
            Ok(())
        } else {
            Err("no reply yet".to_string())
        }
    })
    .expect("pings flow before the outage");
    (child, out)
}

fn stop_pinger(child: std::process::Child, out: &std::path::Path) -> (u32, u32, String) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
    let _ = child.wait_with_output();
    let text = std::fs::read_to_string(out).expect("ping output");
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_owned();
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let sent = nums
        .next()
        .unwrap_or_else(|| panic!("no ping summary in:\n{text}"));
    let received = nums.next().unwrap_or(0);
    (sent, received, text)
}

#[test]
fn the_api_server_down_for_30s_loses_no_ping_and_what_changed_meanwhile_is_learned_after() {
    if !common::need::root(
        "the_api_server_down_for_30s_loses_no_ping_and_what_changed_meanwhile_is_learned_after",
    ) {
        return;
    }
    let mut lab = started_lab(3);
    let (pinger, out) = start_pinger(&lab, 1, 3);
    lab.kube().expect("kube").stop();
    let down = Instant::now();
    // 30 s without an API server: every agent keeps running and keeps its routes.
    let subnet3 = lab.subnet(3).expect("subnet").to_string();
    while down.elapsed() < Duration::from_secs(30) {
        for k in 1..=3 {
            assert!(
                lab.node_running(k).expect("status"),
                "node {k} exited:\n{}",
                lab.log_tail(k, 30)
            );
        }
        assert!(
            route_to(&lab, 1, &subnet3),
            "node 1 lost its route to node 3 during the outage"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Meanwhile a flannel node joined (as a flanneld node would publish itself), and the
    // history it was written in is compacted: the agents must re-list (410) to see it.
    let mac = "0e:11:22:33:44:55";
    let cidr = pod_cidr("10.244.0.0/16", 9).expect("cidr");
    {
        let api = lab.kube().expect("kube");
        api.create_node(
            &NodeSpec::new("node9")
                .pod_cidr(&cidr.to_string())
                .annotation(
                    &format!("{P}/backend-data"),
                    &format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}"),
                )
                .annotation(&format!("{P}/backend-type"), "vxlan")
                .annotation(&format!("{P}/kube-subnet-manager"), "true")
                .annotation(&format!("{P}/public-ip"), "198.18.0.9"),
        )
        .expect("node9");
        api.compact();
        api.restart().expect("restart the API server");
    }
    let node9 = VxlanPeer {
        subnet: cidr,
        ip: "198.18.0.9".parse().expect("ip"),
        mac: mac.to_owned(),
    };
    for k in 1..=3 {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        wait_until(Duration::from_secs(30), || vxlan_peer_present(&ns, &node9))
            .unwrap_or_else(|e| panic!("node {k}: {e}; log:\n{}", lab.log_tail(k, 30)));
        let log = lab.log(k).expect("log");
        assert!(
            log.contains("410 Gone"),
            "node {k} did not re-list after 410:\n{log}"
        );
    }
    let (sent, received, text) = stop_pinger(pinger, &out);
    eprintln!("API server outage: {sent} pings sent at 10/s, {received} received");
    assert!(sent >= 300, "too few pings to judge: {text}");
    assert_eq!(
        sent, received,
        "pings lost while the API server was down:\n{text}"
    );
}

#[test]
fn a_pod_cidr_outside_the_network_exits_1_naming_both() {
    if !common::need::root("a_pod_cidr_outside_the_network_exits_1_naming_both") {
        return;
    }
    let mut lab = kube_lab(
        1,
        r#"{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}"#,
    );
    lab.start_node(1).expect("start");
    let status = lab.wait_node_exit(1, READY).expect("exit");
    assert_eq!(status.code(), Some(1), "log:\n{}", lab.log_tail(1, 20));
    let log = lab.log(1).expect("log");
    assert!(
        log.contains(r#"subnet "10.245.0.0/16" specified in the flannel net config doesn't contain "10.244.1.0/24" PodCIDR of the "node1" node"#),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_missing_rbac_grant_is_one_clear_line_and_the_agent_goes_on_once_granted() {
    if !common::need::root(
        "a_missing_rbac_grant_is_one_clear_line_and_the_agent_goes_on_once_granted",
    ) {
        return;
    }
    let mut lab = kube_lab(1, VXLAN);
    let token = lab.kube_token().expect("token");
    let without_patch: Vec<(&str, &str)> = weft_testkit::kube_api::FLANNEL_GRANTS
        .iter()
        .copied()
        .filter(|g| *g != ("patch", "nodes/status"))
        .collect();
    lab.kube().expect("kube").set_grants(&token, &without_patch);
    lab.start_node(1).expect("start");
    let needle = r#"cannot patch resource "nodes/status""#;
    wait_until(READY, || {
        let log = lab.log(1).map_err(|e| e.to_string())?;
        if log.contains(needle) {
            Ok(())
        } else {
            Err(log)
        }
    })
    .expect("the refusal is logged");
    assert!(
        lab.node_running(1).expect("status"),
        "the agent exited:\n{}",
        lab.log_tail(1, 20)
    );
    let log = lab.log(1).expect("log");
    let line = log.lines().find(|l| l.contains(needle)).expect("line");
    assert!(line.contains("403 Forbidden"), "{line}");
    assert!(
        !log.contains("panicked") && !log.contains("stack backtrace"),
        "{log}"
    );
    lab.kube()
        .expect("kube")
        .set_grants(&token, weft_testkit::kube_api::FLANNEL_GRANTS);
    lab.wait_subnet_env(1, READY)
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", lab.log_tail(1, 20)));
}

#[test]
fn a_kubeconfig_that_does_not_parse_exits_1_naming_the_file() {
    if !common::need::root("a_kubeconfig_that_does_not_parse_exits_1_naming_the_file") {
        return;
    }
    let mut lab = kube_lab(1, VXLAN);
    let path = lab.kubeconfig_path();
    std::fs::write(&path, "apiVersion: v1\nclusters: [not, a, cluster\n").expect("write");
    lab.start_node(1).expect("start");
    let status = lab.wait_node_exit(1, READY).expect("exit");
    assert_eq!(status.code(), Some(1));
    let log = lab.log(1).expect("log");
    assert!(
        log.contains(&format!("--kubeconfig-file {}", path.display())),
        "{log}"
    );
}

#[test]
fn a_rotated_token_file_is_read_again() {
    if !common::need::root("a_rotated_token_file_is_read_again") {
        return;
    }
    let mut lab = kube_lab(1, VXLAN);
    let old = lab.kube_token().expect("token");
    let token_file = lab.dir().join("sa-token");
    std::fs::write(&token_file, &old).expect("token file");
    let kubeconfig = lab.kube().expect("kube").kubeconfig_token_file(&token_file);
    std::fs::write(lab.kubeconfig_path(), kubeconfig).expect("kubeconfig");
    lab.start_node(1).expect("start");
    lab.wait_subnet_env(1, READY)
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", lab.log_tail(1, 20)));
    // The token rotates: the new one in the file, the old one revoked.
    let new = lab.kube().expect("kube").add_token(
        weft_testkit::lab::FLANNEL_USER,
        weft_testkit::kube_api::FLANNEL_GRANTS,
    );
    std::fs::write(&token_file, &new).expect("rotate");
    lab.kube().expect("kube").remove_token(&old);
    // Someone overwrites our annotation: writing it back takes new requests, which only the
    // new token can make (kube-rs re-reads the file at least once a minute).
    lab.kube()
        .expect("kube")
        .modify_node("node1", |n| {
            n["metadata"]["annotations"][format!("{P}/public-ip")] = json!("203.0.113.1");
        })
        .expect("modify");
    wait_until(Duration::from_secs(120), || {
        match annotation(&mut lab, 1, "public-ip").as_deref() {
            Some("198.18.0.1") => Ok(()),
            other => Err(format!("public-ip is {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(1, 30)));
    assert!(lab.node_running(1).expect("status"));
}

#[test]
fn kube_mode_outside_a_cluster_without_a_kubeconfig_exits_1_saying_what_to_set() {
    // No namespace, no root: the client fails before anything else is touched.
    let out = std::process::Command::new(common::weft_bin())
        .args(["--kube-subnet-mgr", "--subnet-file=/nonexistent/subnet.env"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("NO_COLOR", "1")
        .output()
        .expect("weft");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kubeconfig-file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn the_node_found_through_its_pod_waits_for_its_pod_cidr_and_can_leave_the_condition_alone() {
    if !common::need::root(
        "the_node_found_through_its_pod_waits_for_its_pod_cidr_and_can_leave_the_condition_alone",
    ) {
        return;
    }
    let mut lab = kube_lab(1, VXLAN);
    // No NODE_NAME: the node comes from the pod (as in kube-flannel.yml); the controller
    // manager has not assigned the podCIDR yet.
    lab.kube()
        .expect("kube")
        .create_pod("kube-weft", "kube-weft-ds-abcde", "node1");
    lab.kube()
        .expect("kube")
        .modify_node("node1", |n| n["spec"] = json!({}))
        .expect("no podCIDR yet");
    lab.set_agent_env(vec![
        ("NODE_NAME".into(), String::new()),
        ("POD_NAME".into(), "kube-weft-ds-abcde".into()),
        ("POD_NAMESPACE".into(), "kube-weft".into()),
    ]);
    lab.set_extra_flags(vec!["--set-node-network-unavailable=false".into()]);
    lab.start_node(1).expect("start");
    wait_until(READY, || {
        let log = lab.log(1).map_err(|e| e.to_string())?;
        if log.contains(r#"node "node1" pod cidr not assigned"#) {
            Ok(())
        } else {
            Err(log)
        }
    })
    .expect("waits for the podCIDR, saying so");
    assert!(
        lab.node_running(1).expect("status"),
        "{}",
        lab.log_tail(1, 20)
    );
    lab.kube()
        .expect("kube")
        .modify_node("node1", |n| {
            n["spec"] = json!({"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]});
        })
        .expect("podCIDR assigned");
    lab.wait_subnet_env(1, READY)
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", lab.log_tail(1, 20)));
    assert_eq!(lab.subnet(1).expect("subnet").to_string(), "10.244.1.0/24");
    wait_until(CONVERGE, || {
        let log = lab.log(1).map_err(|e| e.to_string())?;
        if log.contains("weft is ready") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .expect("ready");
    let node = lab.kube().expect("kube").node("node1").expect("node");
    let conds = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conds.iter().all(|c| c["type"] != "NetworkUnavailable"),
        "--set-node-network-unavailable=false still set it: {conds:?}"
    );
    let requests = lab.kube().expect("kube").requests();
    assert!(
        requests
            .iter()
            .any(|r| r == "GET /api/v1/namespaces/kube-weft/pods/kube-weft-ds-abcde"),
        "{requests:?}"
    );
}
