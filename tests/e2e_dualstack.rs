//! End to end on a dual-stack underlay (issue 13): the real weft binary on three nodes whose
//! `eth0` has 198.18.0.k and fd00:198:18::k, a network with `EnableIPv6`, pods with an address of
//! each family behind `cni0`; checked by flannel's lease keys and values in etcd, subnet.env,
//! the kernel's IPv4 and IPv6 routes, and ping / ping -6 between every pair of pods. host-gw,
//! kube mode and masquerade here; vxlan in `e2e_dualstack_vxlan.rs`.
#[path = "common/lab.rs"]
mod common;
#[path = "common/dual.rs"]
mod dual;

use std::process::Command;
use std::time::Duration;

use common::{hostgw_routes_ok, hostgw_routes6_ok, route_protocol_is, routes6_in, wait_until};
use dual::{
    CONVERGE, READY, V6_NETWORK, assert_pods_ping_over_both_families, converge, exec_in,
    golden_nat6, nat6_rules, spec, weft, weft_cleanup,
};
use weft_testkit::lab::{Lab, Signal};

#[test]
fn dual_stack_host_gw_leases_subnet_env_routes_and_pings() {
    if !common::need::root("dual_stack_host_gw_leases_subnet_env_routes_and_pings") {
        return;
    }
    let mut lab = Lab::build(spec(3)).expect("build lab");
    lab.start_all().expect("start agents");
    converge(&mut lab, &[1, 2, 3]);

    for k in 1..=3 {
        // subnet.env as flanneld writes it for a dual-stack network.
        let env = lab.subnet_env(k).expect("subnet.env");
        let v4 = env.subnet.expect("FLANNEL_SUBNET");
        let v6 = env.ipv6_subnet.expect("FLANNEL_IPV6_SUBNET");
        assert_eq!(v6.prefix_len(), 64, "node {k}");
        let text = lab.subnet_env_text(k).expect("text");
        let first6 = std::net::Ipv6Addr::from(u128::from(v6.trunc().network()) + 1);
        assert!(
            text.contains(&format!(
                "FLANNEL_IPV6_NETWORK={V6_NETWORK}\nFLANNEL_IPV6_SUBNET={first6}/64\n"
            )),
            "node {k}: {text}"
        );
        // The lease: flannel's dual-stack key and value.
        let key = format!(
            "10.244.{}.0-24&{}-64",
            v4.addr().octets()[2],
            v6.trunc().addr()
        );
        let value = lab
            .etcdctl(&[
                "get",
                &format!("/coreos.com/network/subnets/{key}"),
                "--print-value-only",
            ])
            .expect("etcdctl get");
        assert_eq!(
            value.trim(),
            format!(
                r#"{{"PublicIP":"198.18.0.{k}","PublicIPv6":"fd00:198:18::{k}","BackendType":"host-gw"}}"#
            ),
            "node {k}'s lease {key}"
        );
    }
    lab.add_pods().expect("pods");
    assert_pods_ping_over_both_families(&lab);

    // An IPv6 route deleted out of band is put back.
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let peer6 = lab
        .subnet_env(2)
        .expect("env")
        .ipv6_subnet
        .expect("v6")
        .trunc();
    let out = Command::new("ip")
        .args(["-n", &ns1, "-6", "route", "del", &peer6.to_string()])
        .output()
        .expect("ip route del");
    assert!(out.status.success(), "{out:?}");
    wait_until(CONVERGE, || hostgw_routes6_ok(&lab, 1)).expect("IPv6 route repaired");
    assert!(lab.ping6(1, 2, 3, Duration::from_secs(5)).expect("ping6"));

    // `weft status` lists both subnets of each lease and finds the IPv6 routes in sync.
    let endpoint = lab.etcd_endpoint().expect("endpoint");
    let subnet_file = format!(
        "--subnet-file={}",
        lab.subnet_file(2).expect("path").display()
    );
    let out = weft(
        &lab,
        2,
        &[
            "status",
            &format!("--etcd-endpoints={endpoint}"),
            &subnet_file,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("status:  in sync"),
        "weft status: {out:?}"
    );
    assert!(
        text.contains(&format!("{peer6}")) && text.contains("fd00:198:18::1"),
        "weft status does not show node 1's IPv6 side:\n{text}"
    );

    // `weft cleanup --network --ipv6-network` on a stopped node leaves no IPv6 route of this
    // network behind, and another flannel network's IPv6 route on the host alone.
    lab.stop_node(3, Signal::SIGTERM).expect("stop node 3");
    let ns3 = lab.node_ns(3).expect("ns").to_owned();
    let out = Command::new("ip")
        .args([
            "-n",
            &ns3,
            "-6",
            "route",
            "add",
            "fd00:99::/64",
            "via",
            "fd00:198:18::2",
        ])
        .args(["dev", "eth0", "proto", "87", "metric", "1024"])
        .output()
        .expect("ip route add");
    assert!(out.status.success(), "{out:?}");
    let out = weft_cleanup(
        &lab,
        3,
        &[
            "--network=10.244.0.0/16",
            &format!("--ipv6-network={V6_NETWORK}"),
        ],
    );
    assert!(out.status.success(), "weft cleanup: {out:?}");
    let left: Vec<String> = routes6_in(&ns3)
        .expect("routes")
        .into_iter()
        .filter(|r| route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
        .map(|r| r["dst"].as_str().unwrap_or("-").to_owned())
        .collect();
    assert_eq!(
        left,
        ["fd00:99::/64"],
        "cleanup left this network's IPv6 routes or took another network's"
    );
}

/// A node programmed as flanneld does for a dual-stack host-gw network (its lease written with
/// flanneld's key and value, its routes by hand) and weft nodes reach each other over both
/// families.
#[test]
fn dual_stack_host_gw_beside_a_flanneld_node() {
    if !common::need::root("dual_stack_host_gw_beside_a_flanneld_node") {
        return;
    }
    let mut lab = Lab::build(spec(3)).expect("build lab");
    // Node 3 is "flanneld": its lease as flanneld writes it.
    let (v4, v6) = ("10.244.200.0/24", "fd00:10:244:c8::/64");
    dual::flanneld_node3_and_two_weft_nodes(
        &mut lab,
        r#"{"PublicIP":"198.18.0.3","PublicIPv6":"fd00:198:18::3","BackendType":"host-gw"}"#,
        1500,
    );
    // flanneld's routes on node 3 to the weft nodes, as its host-gw backend adds them.
    let ns3 = lab.node_ns(3).expect("ns").to_owned();
    for k in 1..=2 {
        let env = lab.subnet_env(k).expect("env");
        let sub = env.subnet.expect("v4").trunc().to_string();
        let sub6 = env.ipv6_subnet.expect("v6").trunc().to_string();
        for args in [
            vec![
                "route",
                "add",
                &sub,
                "via",
                &format!("198.18.0.{k}"),
                "dev",
                "eth0",
            ],
            vec![
                "-6",
                "route",
                "add",
                &sub6,
                "via",
                &format!("fd00:198:18::{k}"),
                "dev",
                "eth0",
            ],
        ] {
            let out = Command::new("ip")
                .args(["-n", &ns3])
                .args(&args)
                .output()
                .expect("ip");
            assert!(out.status.success(), "ip {}: {out:?}", args.join(" "));
        }
    }
    // The weft nodes route node 3's subnets through its addresses.
    for k in 1..=2 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("IPv4 routes");
        wait_until(CONVERGE, || hostgw_routes6_ok(&lab, k)).expect("IPv6 routes");
    }
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    assert!(
        routes6_in(&ns1)
            .expect("routes")
            .iter()
            .any(|r| r["dst"] == v6 && r["gateway"] == "fd00:198:18::3"),
        "node 1 has no route to {v6} via node 3"
    );
    let _ = v4;
    lab.add_pods().expect("pods");
    assert_pods_ping_over_both_families(&lab);
}

/// Kube mode: Nodes with an IPv4 and an IPv6 podCIDR; each agent publishes `public-ipv6`, the
/// others route both families to it. Node 3 starts once the others are settled, so its first
/// list of the Nodes (made before its own lease) is all it hears of them: their IPv6 side must
/// be in it.
#[test]
fn dual_stack_kube_mode_routes_both_pod_cidrs() {
    if !common::need::root("dual_stack_kube_mode_routes_both_pod_cidrs") {
        return;
    }
    let mut lab = Lab::build(spec(3).kube()).expect("build lab");
    lab.start_node(1).expect("start node 1");
    lab.start_node(2).expect("start node 2");
    for k in [1, 2] {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    // Settled: each has the other's IPv6 route, so both Nodes carry their IPv6 annotations.
    for (k, j) in [(1, 2), (2, 1)] {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        wait_until(CONVERGE, || {
            let routes = routes6_in(&ns)?;
            routes
                .iter()
                .any(|r| r["dst"] == format!("fd00:10:244:{j}::/64"))
                .then_some(())
                .ok_or(format!("node {k}: no IPv6 route to node {j}: {routes:?}"))
        })
        .expect("nodes 1 and 2 settled");
    }
    lab.start_node(3).expect("start node 3");
    converge(&mut lab, &[1, 2, 3]);
    for k in 1..=3 {
        let env = lab.subnet_env(k).expect("env");
        assert_eq!(
            env.ipv6_subnet.expect("v6").trunc().to_string(),
            format!("fd00:10:244:{k}::/64"),
            "node {k}: the Node's IPv6 podCIDR"
        );
        let node = lab
            .kube()
            .expect("kube")
            .node(&Lab::node_name(k))
            .expect("node");
        assert_eq!(
            node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ipv6"],
            format!("fd00:198:18::{k}"),
            "node {k}'s annotations: {}",
            node["metadata"]["annotations"]
        );
    }
    lab.add_pods().expect("pods");
    assert_pods_ping_over_both_families(&lab);
}

/// `--ip-masq` on a dual-stack network: flanneld's IPv6 nat chain beside the IPv4 one; a pod
/// reaches an IPv6 host outside the cluster (which has no route to the pods) only masqueraded
/// to its node's address; a deleted IPv6 rule is written back.
#[test]
fn dual_stack_ip_masq_masquerades_ipv6_too() {
    if !common::need::root("dual_stack_ip_masq_masquerades_ipv6_too") {
        return;
    }
    let mut spec = spec(2);
    spec.extra_flags = vec!["--ip-masq".to_owned()];
    spec.agent_env = vec![("WEFT_FIREWALL_AUDIT_SECS".to_owned(), "1".to_owned())];
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    converge(&mut lab, &[1, 2]);
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let sub6 = lab
        .subnet_env(1)
        .expect("env")
        .ipv6_subnet
        .expect("v6")
        .trunc()
        .to_string();
    wait_until(CONVERGE, || {
        let got = nat6_rules(&ns1)?;
        (got == golden_nat6(&sub6))
            .then_some(())
            .ok_or(format!("ip6tables nat: {got:#?}"))
    })
    .expect("flanneld's IPv6 nat chain");
    let v4_nat = exec_in(&ns1, "iptables-save", &["-t", "nat"]).expect("iptables-save");
    assert!(
        v4_nat.contains("-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4"),
        "{v4_nat}"
    );

    lab.add_pods().expect("pods");
    let x = lab.add_external().expect("external host");
    let out = Command::new("ip")
        .args([
            "-n",
            &x,
            "addr",
            "add",
            "fd00:198:18::fa/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .output()
        .expect("ip addr add");
    assert!(out.status.success(), "{out:?}");
    let pod1 = lab.pod_ns(1).expect("pod").to_owned();
    assert!(
        common::ping_replies(&pod1, "fd00:198:18::fa", 3) > 0,
        "pod 1 cannot reach the IPv6 host outside the cluster (not masqueraded?)"
    );

    // A rule deleted out of band comes back.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns1,
            "ip6tables",
            "-t",
            "nat",
            "-F",
            "FLANNEL-POSTRTG",
        ])
        .output()
        .expect("ip6tables -F");
    assert!(out.status.success(), "{out:?}");
    wait_until(CONVERGE, || {
        let got = nat6_rules(&ns1)?;
        (got == golden_nat6(&sub6))
            .then_some(())
            .ok_or(format!("ip6tables nat: {got:#?}"))
    })
    .expect("the IPv6 nat chain written back");
}

/// An IPv4 flannel network in a dual-stack Kubernetes cluster (Nodes with an IPv6 podCIDR too):
/// the Nodes' leases are IPv4 ones, the node never mistakes its own Node for a peer, and no
/// IPv6 route is written.
#[test]
fn ipv4_network_in_a_dual_stack_kube_cluster_ignores_the_ipv6_pod_cidrs() {
    if !common::need::root("ipv4_network_in_a_dual_stack_kube_cluster_ignores_the_ipv6_pod_cidrs") {
        return;
    }
    let mut spec = spec(3).kube();
    spec.config = Some(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#.to_owned());
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=3 {
        let env = lab.wait_subnet_env(k, READY).expect("subnet.env");
        assert_eq!(
            env.ipv6_subnet, None,
            "node {k}: an IPv6 subnet on an IPv4 network"
        );
    }
    for k in 1..=3 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("IPv4 host-gw routes");
        let ns = lab.node_ns(k).expect("ns").to_owned();
        let v6: Vec<_> = routes6_in(&ns)
            .expect("routes")
            .into_iter()
            .filter(|r| route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
            .collect();
        assert!(
            v6.is_empty(),
            "node {k}: IPv6 routes on an IPv4 network: {v6:?}"
        );
        let log = lab.log(k).expect("log");
        assert!(
            !log.contains("own address"),
            "node {k} took its own Node for a peer:\n{}",
            lab.log_tail(k, 30)
        );
    }
    lab.add_pods().expect("pods");
    let matrix = lab.ping_matrix().expect("ping matrix");
    assert!(matrix.iter().all(|&(_, _, ok)| ok), "{matrix:?}");
}
