//! End to end, IPv6-only networks (issue 13: `EnableIPv4: false`, kube mode only, as in
//! flannel): the real weft binary on three nodes of a kube-mode lab whose Nodes have an IPv6
//! podCIDR only and whose pods have an IPv6 address only; checked by subnet.env (IPv6 lines
//! only), the Nodes' annotations (the IPv6 side only), the kernel (IPv6 routes or
//! `flannel-v6.<VNI>` and its entries, no IPv4 object of weft) and ping -6 between every pair of
//! pods. etcd mode refuses such a config with a reason.
#[path = "common/lab.rs"]
mod common;
#[path = "common/dual.rs"]
mod dual;

use std::time::Duration;

use common::{
    hostgw_routes6_ok, kube_status, route_protocol_is, routes_in, routes6_in, wait_until,
};
use dual::{CONVERGE, READY, V6_NETWORK, exec_in, golden_nat6, nat6_rules, spec};
use weft_testkit::lab::{Lab, LabSpec, Signal};

const ANN: &str = "flannel.alpha.coreos.com";

fn v6_only_spec(backend: &str) -> LabSpec {
    let mut spec = spec(3).kube();
    spec.ipv6_only = true;
    spec.backend = backend.to_owned();
    spec
}

/// Every pair of pods replies over ping -6.
fn assert_pods_ping6(lab: &Lab) {
    let matrix = lab.ping6_matrix().expect("ping6 matrix");
    assert_eq!(matrix.len(), 6);
    let failed: Vec<_> = matrix.iter().filter(|&&(_, _, ok)| !ok).collect();
    assert!(failed.is_empty(), "pod pairs without replies: {failed:?}");
}

/// subnet.env has the IPv6 lines only, with the Node's IPv6 podCIDR; returns its MTU.
fn assert_ipv6_only_subnet_env(lab: &mut Lab, k: usize) -> u32 {
    let env = lab.wait_subnet_env(k, READY).expect("subnet.env");
    let text = lab.subnet_env_text(k).expect("subnet.env text");
    assert_eq!(
        (env.network, env.subnet),
        (None, None),
        "node {k}: IPv4 lines in an IPv6-only subnet.env:\n{text}"
    );
    assert_eq!(
        env.ipv6_network.map(|n| n.to_string()).as_deref(),
        Some(V6_NETWORK)
    );
    assert_eq!(
        env.ipv6_subnet.map(|n| n.to_string()),
        Some(format!("fd00:10:244:{k}::/64")),
        "node {k}: the Node's IPv6 podCIDR"
    );
    // flanneld's line order, `*_SUBNET` = network address + 1.
    let keys: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
    assert_eq!(
        keys,
        [
            "FLANNEL_IPV6_NETWORK",
            "FLANNEL_IPV6_SUBNET",
            "FLANNEL_MTU",
            "FLANNEL_IPMASQ"
        ],
        "{text}"
    );
    assert!(
        text.contains(&format!("FLANNEL_IPV6_SUBNET=fd00:10:244:{k}::1/64\n")),
        "{text}"
    );
    env.mtu
}

/// No route of weft's protocol in node k's IPv4 table: an IPv6-only network has none.
fn no_ipv4_routes_of_weft(lab: &Lab, k: usize) {
    let ns = lab.node_ns(k).expect("ns");
    let v4: Vec<_> = routes_in(ns)
        .expect("routes")
        .into_iter()
        .filter(|r| route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
        .collect();
    assert!(v4.is_empty(), "node {k}: IPv4 routes of weft: {v4:?}");
}

/// The annotations node k published: the IPv6 side (`public-ipv6`, `backend-v6-data`), and
/// none of the IPv4 side.
fn node_annotations(lab: &mut Lab, k: usize) -> serde_json::Value {
    let node = lab
        .kube()
        .expect("kube")
        .node(&Lab::node_name(k))
        .expect("node");
    let a = node["metadata"]["annotations"].clone();
    assert_eq!(
        a[format!("{ANN}/public-ipv6")],
        format!("fd00:198:18::{k}"),
        "{a}"
    );
    assert_eq!(a[format!("{ANN}/kube-subnet-manager")], "true", "{a}");
    for v4_side in ["public-ip", "backend-data"] {
        assert!(
            a.get(format!("{ANN}/{v4_side}")).is_none(),
            "node {k}: {v4_side} on an IPv6-only network: {a}"
        );
    }
    a
}

/// host-gw: `<peer IPv6 subnet> via <peer PublicIPv6> dev eth0` for each peer, nothing in
/// IPv4, ping -6 between every pair; a route deleted out of band comes back.
#[test]
fn ipv6_only_host_gw_kube_mode() {
    if !common::need::root("ipv6_only_host_gw_kube_mode") {
        return;
    }
    let mut lab = Lab::build(v6_only_spec("host-gw")).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=3 {
        let mtu = assert_ipv6_only_subnet_env(&mut lab, k);
        assert_eq!(mtu, 1500, "node {k}: host-gw's MTU is the interface's");
    }
    for k in 1..=3 {
        wait_until(CONVERGE, || hostgw_routes6_ok(&lab, k)).expect("IPv6 host-gw routes");
        no_ipv4_routes_of_weft(&lab, k);
        let a = node_annotations(&mut lab, k);
        assert_eq!(a[format!("{ANN}/backend-type")], "host-gw", "{a}");
        assert_eq!(a[format!("{ANN}/backend-v6-data")], "null", "{a}");
    }
    lab.add_pods().expect("pods");
    for k in 1..=3 {
        let pod = lab.pod_ns(k).expect("pod ns").to_owned();
        let v4 = exec_in(&pod, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"]).expect("ip");
        assert!(v4.trim().is_empty(), "pod {k} has IPv4: {v4}");
    }
    assert_pods_ping6(&lab);

    // `weft status` reads the Nodes as the agent does: node 1's own lease by its PublicIPv6,
    // both peers, in sync.
    let (code, report) = wait_until(CONVERGE, || {
        let (code, report) = kube_status(&lab, 1);
        (code == 0)
            .then_some((code, report.clone()))
            .ok_or(format!("exit {code}: {report}"))
    })
    .expect("status in sync");
    assert_eq!(code, 0);
    assert_eq!(
        report["own_lease"]["subnet"], "fd00:10:244:1::/64",
        "{report}"
    );
    assert_eq!(
        report["own_lease"]["public_ipv6"], "fd00:198:18::1",
        "{report}"
    );
    assert_eq!(report["node"]["public_ipv6"], "fd00:198:18::1", "{report}");
    assert_eq!(report["config"]["ipv6_network"], V6_NETWORK, "{report}");
    assert_eq!(report["required"]["routes"], 2, "{report}");
    let peers: Vec<&str> = report["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["subnet"].as_str())
        .collect();
    assert_eq!(
        peers,
        ["fd00:10:244:2::/64", "fd00:10:244:3::/64"],
        "{report}"
    );

    // Drift: node 1's route to node 2 deleted behind weft's back comes back.
    let n1 = lab.node_ns(1).expect("ns").to_owned();
    exec_in(&n1, "ip", &["-6", "route", "del", "fd00:10:244:2::/64"]).expect("delete route");
    wait_until(CONVERGE, || hostgw_routes6_ok(&lab, 1)).expect("route repaired");
    assert!(lab.ping6(1, 2, 1, Duration::from_secs(5)).expect("ping6"));
    let log = lab.log(1).expect("log");
    assert!(
        !log.contains("own address"),
        "node 1 took its own Node for a peer:\n{}",
        lab.log_tail(1, 30)
    );

    // `weft cleanup --ipv6-network` on a stopped node: this network's IPv6 routes go; another
    // network's routes of weft's protocol, IPv4 or IPv6, stay.
    lab.stop_node(1, Signal::SIGTERM).expect("stop node 1");
    for (family, dst, via) in [
        ("-4", "10.250.0.0/24", "198.18.0.2"),
        ("-6", "fd00:99:0:1::/64", "fd00:198:18::2"),
    ] {
        exec_in(
            &n1,
            "ip",
            &[
                family, "route", "add", dst, "via", via, "dev", "eth0", "proto", "87",
            ],
        )
        .expect("another network's route");
    }
    let out = dual::weft(&lab, 1, &["cleanup", "--ipv6-network", V6_NETWORK]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "weft cleanup --ipv6-network: {text}");
    let v6: Vec<String> = routes6_in(&n1)
        .expect("routes")
        .iter()
        .filter(|r| route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
        .filter_map(|r| r["dst"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(v6, ["fd00:99:0:1::/64"], "{text}");
    let v4: Vec<String> = routes_in(&n1)
        .expect("routes")
        .iter()
        .filter(|r| route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
        .filter_map(|r| r["dst"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(v4, ["10.250.0.0/24"], "{text}");
}

/// vxlan with `--ip-masq`: `flannel-v6.1` only (no `flannel.1`), MTU the underlay's − 70, its
/// MAC in `backend-v6-data`, per peer an onlink route through it, flanneld's IPv6 nat chain and
/// no IPv4 one; ping -6 between every pair.
#[test]
fn ipv6_only_vxlan_kube_mode() {
    if !common::need::root("ipv6_only_vxlan_kube_mode") {
        return;
    }
    let mut spec = v6_only_spec("vxlan");
    spec.extra_flags = vec!["--ip-masq".into()];
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=3 {
        let mtu = assert_ipv6_only_subnet_env(&mut lab, k);
        assert_eq!(mtu, 1430, "node {k}: the IPv6 device's MTU (1500 − 70)");
    }
    for k in 1..=3 {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        let links = exec_in(&ns, "ip", &["-o", "link", "show"]).expect("links");
        assert!(links.contains("flannel-v6.1:"), "node {k}: {links}");
        assert!(
            !links.contains("flannel.1:"),
            "node {k}: an IPv4 device: {links}"
        );
        let a = node_annotations(&mut lab, k);
        assert_eq!(a[format!("{ANN}/backend-type")], "vxlan", "{a}");
        let data: serde_json::Value = serde_json::from_str(
            a[format!("{ANN}/backend-v6-data")]
                .as_str()
                .expect("backend-v6-data"),
        )
        .expect("JSON");
        let mac = exec_in(&ns, "cat", &["/sys/class/net/flannel-v6.1/address"]).expect("mac");
        assert_eq!(data["VNI"], 1, "{data}");
        assert_eq!(data["VtepMAC"], mac.trim(), "node {k}: {data}");
        no_ipv4_routes_of_weft(&lab, k);
        // --ip-masq: flanneld's IPv6 nat chain, and no IPv4 chain at all.
        let subnet = format!("fd00:10:244:{k}::/64");
        wait_until(CONVERGE, || {
            let have = nat6_rules(&ns)?;
            (have == golden_nat6(&subnet))
                .then_some(())
                .ok_or(format!("node {k}: ip6tables nat {have:?}"))
        })
        .expect("IPv6 masquerade rules");
        let nat4 = exec_in(&ns, "iptables-save", &["-t", "nat"]).expect("iptables-save");
        assert!(!nat4.contains("FLANNEL"), "node {k}: IPv4 rules: {nat4}");
        // An onlink route to each peer's IPv6 subnet through flannel-v6.1.
        wait_until(CONVERGE, || {
            let routes = routes6_in(&ns)?;
            let ours: Vec<String> = routes
                .iter()
                .filter(|r| route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
                .filter(|r| r["dev"] == "flannel-v6.1")
                .filter_map(|r| r["dst"].as_str().map(str::to_owned))
                .collect();
            let mut want: Vec<String> = (1..=3)
                .filter(|&j| j != k)
                .map(|j| format!("fd00:10:244:{j}::/64"))
                .collect();
            want.sort();
            let mut got = ours.clone();
            got.sort();
            (got == want).then_some(()).ok_or(format!(
                "node {k}: routes via flannel-v6.1 {got:?}, want {want:?}"
            ))
        })
        .expect("vxlan IPv6 routes");
    }
    lab.add_pods().expect("pods");
    assert_pods_ping6(&lab);
}

/// etcd mode cannot lease an IPv6-only network (flannel's etcd keys always hold an IPv4
/// subnet): the agent exits with a reason that names the way out, and writes no subnet.env.
#[test]
fn ipv6_only_is_refused_in_etcd_mode() {
    if !common::need::root("ipv6_only_is_refused_in_etcd_mode") {
        return;
    }
    let mut spec = spec(1);
    spec.config = Some(format!(
        r#"{{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"{V6_NETWORK}","Backend":{{"Type":"host-gw"}}}}"#
    ));
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agent");
    let err = lab
        .wait_subnet_env(1, READY)
        .expect_err("an IPv6-only network leased in etcd");
    let text = format!("{err:#}");
    assert!(
        text.contains("EnableIPv4 false") && text.contains("--kube-subnet-mgr"),
        "{text}"
    );
}
