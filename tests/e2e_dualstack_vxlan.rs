//! End to end, dual-stack vxlan (issue 13): `flannel-v6.<VNI>` beside `flannel.<VNI>` on three
//! nodes of a dual-stack underlay, a live switch to host-gw and back under pings of both
//! families, cleanup, and a node programmed as flanneld does. host-gw and the rest are in
//! `e2e_dualstack.rs`.
#[path = "common/lab.rs"]
mod common;
#[path = "common/dual.rs"]
mod dual;

use std::process::Command;
use std::time::Duration;

use common::{hostgw_routes_ok, hostgw_routes6_ok, route_protocol_is, routes6_in, wait_until};
use dual::{CONVERGE, READY, assert_pods_ping_over_both_families, exec_in, spec, weft_cleanup};
use weft_testkit::lab::{Lab, Signal};

const VXLAN6: &str = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;
const HOST_GW6: &str = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}"#;

/// Node `k` tunnels IPv6 to every peer over `flannel-v6.1`: `<peer IPv6 subnet> via <its
/// network address> dev flannel-v6.1 onlink`, and the device carries its own subnet's
/// network address /128.
fn vxlan6_ok(lab: &Lab, k: usize) -> Result<(), String> {
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let routes = routes6_in(ns)?;
    for j in (1..=lab.nodes()).filter(|&j| j != k) {
        let sub6 = lab
            .subnet_env(j)
            .map_err(|e| format!("{e:#}"))?
            .ipv6_subnet
            .ok_or("no FLANNEL_IPV6_SUBNET")?
            .trunc();
        let found = routes.iter().any(|r| {
            r["dst"] == sub6.to_string()
                && r["dev"] == "flannel-v6.1"
                && r["gateway"] == sub6.network().to_string()
        });
        if !found {
            return Err(format!(
                "node {k}: no route {sub6} via {} dev flannel-v6.1; routes: {routes:?}",
                sub6.network()
            ));
        }
    }
    Ok(())
}

/// Nodes `1..=n` have no device named `dev`.
fn no_device(lab: &Lab, dev: &str) -> Result<(), String> {
    for k in 1..=lab.nodes() {
        let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
        let out = Command::new("ip")
            .args(["-n", ns, "link", "show", dev])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            return Err(format!("node {k} still has {dev}"));
        }
    }
    Ok(())
}

/// `ping -i 0.1` from pod `from` to `to` until stopped.
fn start_ping(lab: &Lab, from: usize, to: String) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", lab.pod_ns(from).expect("pod ns")])
        .args(["ping", "-n", "-i", "0.1", "-W", "1", "-w", "600", &to])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ping")
}

/// Stops a ping started by [`start_ping`]: (sent, received) and its output.
fn stop_ping(child: std::process::Child) -> (u32, u32, String) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGINT).expect("stop ping");
    let out = child.wait_with_output().expect("ping output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in:\n{text}"));
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let sent = nums.next().expect("sent");
    let received = nums.next().expect("received");
    (sent, received, text)
}

/// vxlan on a dual-stack network: `flannel-v6.1` beside `flannel.1`, pods ping over both
/// families, and a live switch to host-gw and back loses no ping on either family.
#[test]
fn dual_stack_vxlan_and_a_live_switch_to_host_gw_and_back_lose_no_ping() {
    if !common::need::root("dual_stack_vxlan_and_a_live_switch_to_host_gw_and_back_lose_no_ping") {
        return;
    }
    let mut spec = spec(3);
    spec.backend = "vxlan".to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=3 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for k in 1..=3 {
        wait_until(CONVERGE, || vxlan6_ok(&lab, k)).expect("IPv6 over flannel-v6.1");
    }
    // The IPv6 device: MTU 70 below the underlay's (an IPv6 outer header), its subnet's /128.
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let link = common::json_in(&ns1, "ip", &["-d", "link", "show", "flannel-v6.1"]).expect("link");
    assert_eq!(link[0]["mtu"], 1430, "{link:?}");
    let sub6 = lab
        .subnet_env(1)
        .expect("env")
        .ipv6_subnet
        .expect("v6")
        .trunc();
    let addrs = exec_in(&ns1, "ip", &["-6", "addr", "show", "dev", "flannel-v6.1"]).expect("addr");
    assert!(
        addrs.contains(&format!("{}/128", sub6.network())),
        "{addrs}"
    );
    // The lease carries the IPv6 VTEP as flanneld writes it.
    let v4 = lab.subnet(1).expect("subnet");
    let key = format!(
        "/coreos.com/network/subnets/{}-24&{}-64",
        v4.network(),
        sub6.network()
    );
    let value = lab
        .etcdctl(&["get", &key, "--print-value-only"])
        .expect("get");
    assert!(
        value.contains(r#""PublicIPv6":"fd00:198:18::1""#)
            && value.contains(r#""BackendV6Data":{"VNI":1,"VtepMAC":""#),
        "{value}"
    );
    lab.add_pods().expect("pods");
    assert_pods_ping_over_both_families(&lab);

    let ping4 = start_ping(&lab, 1, lab.pod_ip(3).expect("pod").to_string());
    let ping6 = start_ping(&lab, 1, lab.pod_ip6(3).expect("pod").to_string());
    lab.put_config(HOST_GW6).expect("config host-gw");
    let to_hostgw = wait_until(CONVERGE, || {
        (1..=3).try_for_each(|k| {
            hostgw_routes_ok(&lab, k)?;
            hostgw_routes6_ok(&lab, k)
        })?;
        no_device(&lab, "flannel-v6.1")?;
        no_device(&lab, "flannel.1")
    });
    std::thread::sleep(Duration::from_millis(500));
    lab.put_config(VXLAN6).expect("config vxlan");
    let back = wait_until(CONVERGE, || (1..=3).try_for_each(|k| vxlan6_ok(&lab, k)));
    std::thread::sleep(Duration::from_millis(1000));
    let (sent4, got4, text4) = stop_ping(ping4);
    let (sent6, got6, text6) = stop_ping(ping6);
    to_hostgw.expect("every node on host-gw, both families, no vxlan device left");
    back.unwrap_or_else(|e| {
        panic!(
            "every node back on vxlan over both families: {e}\nnode 1's links:\n{}\nnode 1's log:\n{}",
            lab.ip(1, &["-o", "link"]).unwrap_or_default(),
            lab.log_tail(1, 60)
        )
    });
    eprintln!("dual-stack switch round trip: IPv4 {got4}/{sent4}, IPv6 {got6}/{sent6} replies");
    assert!(
        sent4 >= 10 && sent6 >= 10,
        "too few pings:\n{text4}\n{text6}"
    );
    assert_eq!(sent4 - got4, 0, "IPv4 pings lost:\n{text4}");
    assert_eq!(sent6 - got6, 0, "IPv6 pings lost:\n{text6}");
    assert_pods_ping_over_both_families(&lab);

    // `weft cleanup` on a stopped node removes both vxlan devices and every IPv6 entry.
    lab.stop_node(3, Signal::SIGTERM).expect("stop node 3");
    let out = weft_cleanup(&lab, 3, &[]);
    assert!(out.status.success(), "weft cleanup: {out:?}");
    let ns3 = lab.node_ns(3).expect("ns").to_owned();
    for dev in ["flannel.1", "flannel-v6.1"] {
        let out = Command::new("ip")
            .args(["-n", &ns3, "link", "show", dev])
            .output()
            .expect("ip link");
        assert!(!out.status.success(), "{dev} left by cleanup");
    }
    let left: Vec<_> = routes6_in(&ns3)
        .expect("routes")
        .into_iter()
        .filter(|r| route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
        .collect();
    assert!(left.is_empty(), "IPv6 routes left by cleanup: {left:?}");
    let neigh = exec_in(&ns3, "ip", &["-6", "neigh", "show", "nud", "permanent"]).expect("neigh");
    assert!(neigh.trim().is_empty(), "IPv6 neighbours left: {neigh}");
}

/// `ip -n <ns> <args>`, asserting success.
fn ip_ok(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("ip");
    assert!(out.status.success(), "ip {}: {out:?}", args.join(" "));
}

/// A node programmed as flanneld does for dual-stack vxlan (its devices, its lease with
/// `BackendV6Data`, its entries to the weft nodes by hand) and weft nodes reach each other's
/// pods over both families.
#[test]
fn dual_stack_vxlan_beside_a_flanneld_node() {
    if !common::need::root("dual_stack_vxlan_beside_a_flanneld_node") {
        return;
    }
    let mut spec = spec(3);
    spec.backend = "vxlan".to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    let ns3 = lab.node_ns(3).expect("ns").to_owned();
    // flanneld's two devices and addresses (flanneld asks for underlay − 50 on both; over an
    // IPv6 underlay the kernel refuses more than underlay − 70, its default, which stays).
    for (dev, local, addr) in [
        ("flannel.1", "198.18.0.3", "10.244.200.0/32"),
        ("flannel-v6.1", "fd00:198:18::3", "fd00:10:244:c8::/128"),
    ] {
        ip_ok(
            &ns3,
            &[
                "link",
                "add",
                dev,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                local,
                "dev",
                "eth0",
                "dstport",
                "8472",
                "nolearning",
            ],
        );
        ip_ok(&ns3, &["link", "set", dev, "up"]);
        ip_ok(&ns3, &["addr", "add", addr, "dev", dev, "nodad"]);
    }
    let mac_of = |dev: &str| -> String {
        common::json_in(&ns3, "ip", &["link", "show", dev]).expect("link")[0]["address"]
            .as_str()
            .expect("mac")
            .to_owned()
    };
    let (mac4, mac6) = (mac_of("flannel.1"), mac_of("flannel-v6.1"));
    dual::flanneld_node3_and_two_weft_nodes(
        &mut lab,
        &format!(
            r#"{{"PublicIP":"198.18.0.3","PublicIPv6":"fd00:198:18::3","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac4}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
        ),
        1450,
    );
    // flanneld's entries on node 3 for each weft node, from the weft node's lease.
    for k in 1..=2 {
        let env = lab.subnet_env(k).expect("env");
        let (sub, sub6) = (
            env.subnet.expect("v4").trunc(),
            env.ipv6_subnet.expect("v6").trunc(),
        );
        let key = format!(
            "/coreos.com/network/subnets/{}-24&{}-64",
            sub.network(),
            sub6.network()
        );
        let value: serde_json::Value = serde_json::from_str(
            lab.etcdctl(&["get", &key, "--print-value-only"])
                .expect("get")
                .trim(),
        )
        .expect("lease JSON");
        let vtep4 = value["BackendData"]["VtepMAC"].as_str().expect("VtepMAC");
        let vtep6 = value["BackendV6Data"]["VtepMAC"]
            .as_str()
            .unwrap_or_else(|| panic!("node {k}'s lease has no BackendV6Data: {value}"));
        for (fam, dev, gw, net, mac, public) in [
            (
                "-4",
                "flannel.1",
                sub.network().to_string(),
                sub.to_string(),
                vtep4,
                format!("198.18.0.{k}"),
            ),
            (
                "-6",
                "flannel-v6.1",
                sub6.network().to_string(),
                sub6.to_string(),
                vtep6,
                format!("fd00:198:18::{k}"),
            ),
        ] {
            ip_ok(
                &ns3,
                &[
                    fam,
                    "neigh",
                    "replace",
                    &gw,
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ],
            );
            let out = Command::new("bridge")
                .args(["-n", &ns3, "fdb", "replace", mac, "dev", dev])
                .args(["dst", &public, "self", "permanent"])
                .output()
                .expect("bridge");
            assert!(out.status.success(), "bridge fdb: {out:?}");
            ip_ok(
                &ns3,
                &[
                    fam, "route", "replace", &net, "via", &gw, "dev", dev, "onlink",
                ],
            );
        }
    }
    for k in 1..=2 {
        wait_until(CONVERGE, || vxlan6_ok(&lab, k)).expect("IPv6 to node 3 over flannel-v6.1");
    }
    lab.add_pods().expect("pods");
    assert_pods_ping_over_both_families(&lab);
}
