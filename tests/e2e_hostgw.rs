//! End to end with host-gw: the real weft binary on three nodes (network namespaces) with a
//! real etcd, pods behind cni0, checked by the kernel's routing tables and by ping.
#[path = "common/lab.rs"]
mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{RouteWatch, hostgw_routes_ok, wait_until, weft_route_forms};
use ipnet::Ipv4Net;
use weft_testkit::lab::{Lab, LabSpec, Signal};

/// Agents are debug builds on a shared 2-core machine: generous, still bounded.
const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);

fn spec(nodes: usize) -> LabSpec {
    LabSpec::new(nodes, common::weft_bin())
}

/// Builds a lab, starts every agent at the same moment and waits until each wrote
/// subnet.env and programmed the host-gw routes to every peer.
fn converged_lab(nodes: usize) -> Lab {
    let mut lab = Lab::build(spec(nodes)).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=nodes {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for k in 1..=nodes {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("host-gw routes");
    }
    lab
}

fn assert_all_pods_reach_each_other(lab: &Lab) {
    let matrix = lab.ping_matrix().expect("ping matrix");
    let n = lab.nodes();
    assert_eq!(matrix.len(), n * (n - 1));
    let failed: Vec<_> = matrix.iter().filter(|&&(_, _, ok)| !ok).collect();
    assert!(failed.is_empty(), "pod pairs without replies: {failed:?}");
}

/// Every agent runs, except those in `down`.
fn assert_agents_alive(lab: &mut Lab, down: &[usize]) {
    for k in (1..=lab.nodes()).filter(|k| !down.contains(k)) {
        assert!(
            lab.node_running(k).expect("status"),
            "node {k}'s agent exited ({:?}); log:\n{}",
            lab.node_exit_status(k),
            lab.log_tail(k, 40)
        );
    }
}

#[test]
fn three_nodes_started_together_get_host_gw_routes_and_pods_ping() {
    if !common::need::root("three_nodes_started_together_get_host_gw_routes_and_pods_ping") {
        return;
    }
    let mut lab = converged_lab(3);

    // Three distinct /24s inside the network (never its first /24, flannel's SubnetMin
    // default), each subnet.env byte for byte what flanneld writes for host-gw.
    let network: Ipv4Net = "10.244.0.0/16".parse().expect("net");
    let mut subnets = BTreeSet::new();
    for k in 1..=3 {
        let net = lab.subnet(k).expect("subnet");
        assert_eq!(net.prefix_len(), 24, "node {k}: {net}");
        assert!(network.contains(&net), "node {k}: {net} outside {network}");
        assert_ne!(
            net.network(),
            network.network(),
            "node {k} got the first subnet"
        );
        let first = Ipv4Addr::from(u32::from(net.network()) + 1);
        assert_eq!(
            lab.subnet_env_text(k).expect("subnet.env"),
            format!(
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={first}/24\n\
                 FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
            ),
            "node {k}: host-gw keeps eth0's MTU (1500)"
        );
        subnets.insert(net);
    }
    assert_eq!(subnets.len(), 3, "subnets must differ: {subnets:?}");

    // The leases in etcd are flannel's: key <prefix>/subnets/10.244.X.0-24, host-gw attrs.
    for k in 1..=3 {
        let net = lab.subnet(k).expect("subnet");
        let key = format!(
            "/coreos.com/network/subnets/{}-{}",
            net.addr(),
            net.prefix_len()
        );
        let value = lab
            .etcdctl(&["get", &key, "--print-value-only"])
            .expect("etcdctl get");
        let attrs: serde_json::Value = serde_json::from_str(value.trim())
            .unwrap_or_else(|e| panic!("lease {key} is not JSON ({e}): {value:?}"));
        assert_eq!(attrs["PublicIP"], format!("198.18.0.{k}"), "{key}: {attrs}");
        assert_eq!(attrs["BackendType"], "host-gw", "{key}: {attrs}");
    }

    // Written on nexthop objects (the default where the kernel has them): `<subnet> nhid N
    // proto 87` with nexthop N `via <peer> dev eth0 proto 87` (hostgw_routes_ok read the
    // gateway and device from the nexthop).
    for k in 1..=3 {
        let ns = lab.node_ns(k).expect("ns");
        assert_eq!(weft_route_forms(ns), Ok((0, 2)), "node {k}");
    }

    lab.add_pods().expect("pods");
    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

#[test]
fn plain_routes_with_route_nexthops_false_moved_onto_nexthops_in_place() {
    if !common::need::root("plain_routes_with_route_nexthops_false_moved_onto_nexthops_in_place") {
        return;
    }
    let mut spec = spec(2);
    spec.extra_flags = vec!["--route-nexthops=false".to_owned()];
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for k in 1..=2 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("host-gw routes");
        let ns = lab.node_ns(k).expect("ns");
        assert_eq!(weft_route_forms(ns), Ok((1, 0)), "node {k}: plain routes");
        assert!(
            lab.ip_json(k, &["nexthop", "show", "proto", "87"])
                .expect("ip nexthop")
                .as_array()
                .is_some_and(Vec::is_empty),
            "node {k}: no nexthop of weft's in plain mode"
        );
    }
    lab.add_pods().expect("pods");
    assert_all_pods_reach_each_other(&lab);

    // Node 1 restarts with nexthops (an upgrade from plain routes): its route to node 2 moves
    // onto a nexthop by a replace in place, never missing meanwhile.
    let node2 = lab.subnet(2).expect("subnet").to_string();
    let watch = RouteWatch::start(vec![lab.node_ns(1).expect("ns").to_owned()], node2.clone());
    lab.stop_node(1, Signal::SIGTERM)
        .expect("stop")
        .expect("was running");
    lab.set_extra_flags(Vec::new());
    lab.start_node(1).expect("start node 1");
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    wait_until(CONVERGE, || match weft_route_forms(&ns1) {
        Ok((0, 1)) => hostgw_routes_ok(&lab, 1),
        other => Err(format!("node 1 route forms {other:?}")),
    })
    .expect("node 1's route on a nexthop");
    // The move is quick (one replace): the watch covers it with a few polls; the log shows it
    // was a replace and no delete.
    let (polls, missing) = watch.stop();
    assert!(polls >= 2, "the route watch barely ran ({polls} polls)");
    assert!(
        missing.is_empty(),
        "the route went missing:\n{}",
        missing.join("\n")
    );
    let log = lab.log(1).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("ip route replace {node2} nhid "))),
        "{}",
        lab.log_tail(1, 30)
    );
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("ip route del {node2}")))
    );
    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

#[test]
fn restart_keeps_the_subnet_and_peers_never_lose_the_route() {
    if !common::need::root("restart_keeps_the_subnet_and_peers_never_lose_the_route") {
        return;
    }
    let mut lab = converged_lab(3);
    lab.add_pods().expect("pods");
    let before = lab.subnet(2).expect("subnet");
    let written = lab.subnet_env_mtime(2).expect("mtime");

    let peers = vec![
        lab.node_ns(1).expect("ns").to_owned(),
        lab.node_ns(3).expect("ns").to_owned(),
    ];
    let watch = RouteWatch::start(peers, before.to_string());

    let status = lab
        .stop_node(2, Signal::SIGTERM)
        .expect("stop node 2")
        .expect("node 2 was running");
    assert!(
        status.success(),
        "SIGTERM must be a clean exit, got {status}; log:\n{}",
        lab.log_tail(2, 30)
    );
    // Down for a while: the peers' routes to node 2's subnet must stay (the lease outlives
    // the process, as with flanneld).
    let down_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < down_until {
        assert_agents_alive(&mut lab, &[2]);
        std::thread::sleep(Duration::from_millis(100));
    }

    lab.start_node(2).expect("start node 2 again");
    let after = lab
        .wait_subnet_env_since(2, written, READY)
        .expect("subnet.env rewritten after restart")
        .subnet
        .expect("FLANNEL_SUBNET");
    assert_eq!(after, before, "a restarted node keeps its subnet");
    for k in 1..=3 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("routes after restart");
    }
    let (polls, missing) = watch.stop();
    assert!(polls > 10, "the route watch barely ran ({polls} polls)");
    assert!(
        missing.is_empty(),
        "peers lost the route to node 2:\n{}",
        missing.join("\n")
    );

    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

#[test]
fn malformed_leases_are_skipped_and_nothing_breaks() {
    if !common::need::root("malformed_leases_are_skipped_and_nothing_breaks") {
        return;
    }
    // One bad lease is there before the agents start (seen by the initial list)…
    let mut lab = Lab::build(spec(3)).expect("build lab");
    lab.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.99.0-24",
        "not json",
    ])
    .expect("put");
    lab.start_all().expect("start");
    for k in 1..=3 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for k in 1..=3 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("host-gw routes");
    }
    lab.add_pods().expect("pods");
    assert_all_pods_reach_each_other(&lab);

    // …and more arrive while they run (seen by the watch): a bad value under a good key, a
    // key that is no subnet at all, and a lease whose JSON is valid but whose IP is not.
    lab.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.98.0-24",
        "not json",
    ])
    .expect("put");
    lab.etcdctl(&["put", "/coreos.com/network/subnets/garbage", "not json"])
        .expect("put");
    lab.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.97.0-24",
        r#"{"PublicIP":"not-an-ip","PublicIPv6":null,"BackendType":"host-gw"}"#,
    ])
    .expect("put");

    // Each agent says which key it skipped.
    for k in 1..=3 {
        wait_until(Duration::from_secs(10), || {
            let log = lab.log(k).map_err(|e| e.to_string())?;
            for key in ["10.244.99.0-24", "10.244.98.0-24", "garbage"] {
                if !log.contains(key) {
                    return Err(format!("node {k}'s log does not mention {key}"));
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(k, 40)));
    }
    // For a while after: agents alive, routes exactly the three nodes' (no route for the
    // malformed entries, none of the good ones removed).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_agents_alive(&mut lab, &[]);
        for k in 1..=3 {
            if let Err(e) = hostgw_routes_ok(&lab, k) {
                panic!("{e}");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

/// Starts one agent on a bad config and expects exit status 1 with a message naming the field
/// and the offending value.
fn assert_rejected(config: &str, field: &str, value: &str) {
    let mut s = spec(1);
    s.config = Some(config.to_owned());
    let mut lab = Lab::build(s).expect("build lab");
    lab.start_node(1).expect("start");
    let status = lab
        .wait_node_exit(1, READY)
        .expect("weft must exit on a bad config");
    let log = lab.log(1).expect("log");
    assert_eq!(status.code(), Some(1), "exit status {status}; log:\n{log}");
    let named = log.lines().any(|l| l.contains(field) && l.contains(value));
    assert!(named, "no log line names {field} and {value}; log:\n{log}");
    assert!(
        !lab.subnet_file(1).expect("path").exists(),
        "no subnet.env on a bad config"
    );
    lab.teardown().expect("teardown");
}

#[test]
fn bad_config_exits_1_naming_the_field_and_value() {
    if !common::need::root("bad_config_exits_1_naming_the_field_and_value") {
        return;
    }
    assert_rejected(
        r#"{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"host-gw"}}"#,
        "SubnetLen",
        "31",
    );
    assert_rejected(
        r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.128","Backend":{"Type":"host-gw"}}"#,
        "SubnetMin",
        "10.244.1.128",
    );
}

/// A node moved from kube-flannel kept `10.244.0.0/24` in subnet.env, below flannel's default
/// SubnetMin: it gets another subnet (its pods must restart), and the log says why in one line
/// and how to keep the old one.
#[test]
fn a_refused_previous_subnet_is_explained_with_how_to_keep_it() {
    if !common::need::root("a_refused_previous_subnet_is_explained_with_how_to_keep_it") {
        return;
    }
    let mut lab = Lab::build(spec(1)).expect("lab");
    std::fs::write(
        lab.subnet_file(1).expect("path"),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
    .expect("old subnet.env");
    lab.start_node(1).expect("start");
    wait_until(READY, || {
        let s = lab.subnet(1).map_err(|e| e.to_string())?;
        if s.to_string() != "10.244.0.0/24" {
            Ok(())
        } else {
            Err("still the old subnet".into())
        }
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(1, 20)));
    let log = lab.log(1).expect("log");
    let line = log
        .lines()
        .find(|l| l.contains("previous subnet 10.244.0.0/24"))
        .unwrap_or_else(|| panic!("no explanation:\n{log}"));
    assert!(line.contains("below SubnetMin 10.244.1.0"), "{line}");
    assert!(line.contains(r#""SubnetMin": "10.244.0.0""#), "{line}");
}

/// `ip route show table main type blackhole` in node k's namespace: (dst, protocol, metric).
fn blackholes(lab: &Lab, k: usize) -> Result<Vec<(String, String, u64)>, String> {
    let v = lab
        .ip_json(k, &["route", "show", "table", "main", "type", "blackhole"])
        .map_err(|e| format!("{e:#}"))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["dst"].as_str().unwrap_or("").to_owned(),
                        r["protocol"].as_str().unwrap_or("").to_owned(),
                        r["metric"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

#[test]
fn ip_blackhole_route_adds_repairs_and_removes_the_own_subnet_blackhole() {
    if !common::need::root("ip_blackhole_route_adds_repairs_and_removes_the_own_subnet_blackhole") {
        return;
    }
    let mut s = spec(2);
    s.extra_flags = vec!["--ip-blackhole-route".into()];
    let mut lab = Lab::build(s).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    let own = |lab: &Lab, k: usize| {
        (
            lab.subnet(k).expect("subnet").to_string(),
            "87".to_owned(),
            4096,
        )
    };
    for k in 1..=2 {
        wait_until(CONVERGE, || match blackholes(&lab, k)? {
            b if b == [own(&lab, k)] => Ok(()),
            b => Err(format!("node {k}: blackholes {b:?}")),
        })
        .expect("the node's blackhole");
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("host-gw routes");
    }
    // The pods' bridge route (metric 0) wins over the blackhole: pods reach each other.
    lab.add_pods().expect("pods");
    assert_all_pods_reach_each_other(&lab);

    // Deleted out of band: repaired from the notification.
    let dst = own(&lab, 1).0;
    lab.ip(
        1,
        &[
            "route",
            "del",
            "blackhole",
            &dst,
            "proto",
            "87",
            "metric",
            "4096",
        ],
    )
    .expect("delete the blackhole");
    wait_until(CONVERGE, || match blackholes(&lab, 1)? {
        b if b == [own(&lab, 1)] => Ok(()),
        b => Err(format!("node 1: blackholes {b:?}")),
    })
    .expect("the blackhole restored");
    assert!(
        lab.log(1).expect("log").contains(&format!(
            "ip route replace blackhole {dst} proto 87 metric 4096"
        )),
        "{}",
        lab.log_tail(1, 20)
    );

    // Node 1 restarts without the flag: its blackhole goes; node 2's stays.
    lab.stop_node(1, Signal::SIGTERM)
        .expect("stop")
        .expect("was running");
    lab.set_extra_flags(Vec::new());
    lab.start_node(1).expect("start node 1");
    wait_until(CONVERGE, || match blackholes(&lab, 1)? {
        b if b.is_empty() => Ok(()),
        b => Err(format!("node 1: blackholes {b:?}")),
    })
    .expect("the blackhole removed");
    assert_eq!(blackholes(&lab, 2).expect("node 2"), [own(&lab, 2)]);
    assert_all_pods_reach_each_other(&lab);
}
