//! End to end on a dual-stack underlay (issue 13): the real weft binary on three nodes whose
//! `eth0` has 198.18.0.k and fd00:198:18::k, a network with `EnableIPv6`, pods with an address of
//! each family behind `cni0`; checked by flannel's lease keys and values in etcd, subnet.env,
//! the kernel's IPv4 and IPv6 routes, and ping / ping -6 between every pair of pods.
#[path = "common/lab.rs"]
mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{hostgw_routes_ok, hostgw_routes6_ok, route_protocol_is, routes6_in, wait_until};
use weft_testkit::lab::{Lab, LabSpec, Signal};

/// Agents are debug builds on a shared 2-core machine: generous, still bounded.
const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);
const V6_NETWORK: &str = "fd00:10:244::/56";

fn spec(nodes: usize) -> LabSpec {
    let mut spec = LabSpec::new(nodes, common::weft_bin());
    spec.ipv6_network = Some(V6_NETWORK.to_owned());
    spec
}

/// Every node's subnet.env and host-gw routes of both families in place.
fn converge(lab: &mut Lab, nodes: &[usize]) {
    for &k in nodes {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for &k in nodes {
        wait_until(CONVERGE, || hostgw_routes_ok(lab, k)).expect("IPv4 host-gw routes");
        wait_until(CONVERGE, || hostgw_routes6_ok(lab, k)).expect("IPv6 host-gw routes");
    }
}

fn assert_pods_ping_over_both_families(lab: &Lab) {
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

fn weft(lab: &Lab, k: usize, args: &[&str]) -> Output {
    let ns = lab.node_ns(k).expect("ns");
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(common::weft_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run weft")
}

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
    let out = weft(
        &lab,
        3,
        &[
            "cleanup",
            "--network=10.244.0.0/16",
            &format!("--ipv6-network={V6_NETWORK}"),
            &format!("--etcd-endpoints={endpoint}"),
            &format!(
                "--subnet-file={}",
                lab.subnet_file(3).expect("path").display()
            ),
            &format!(
                "--peer-cache-file={}",
                lab.peer_cache_file(3).expect("path").display()
            ),
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
    // Node 3 is "flanneld": its lease as flanneld writes it (beyond the 100 candidates a weft
    // node picks from, so no weft node can take it first).
    let (v4, v6) = ("10.244.200.0/24", "fd00:10:244:c8::/64");
    lab.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.200.0-24&fd00:10:244:c8::-64",
        r#"{"PublicIP":"198.18.0.3","PublicIPv6":"fd00:198:18::3","BackendType":"host-gw"}"#,
    ])
    .expect("put node 3's lease");
    std::fs::write(
        lab.subnet_file(3).expect("path"),
        format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.200.1/24\n\
             FLANNEL_IPV6_NETWORK={V6_NETWORK}\nFLANNEL_IPV6_SUBNET=fd00:10:244:c8::1/64\n\
             FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
        ),
    )
    .expect("node 3's subnet.env");
    lab.start_node(1).expect("start node 1");
    lab.start_node(2).expect("start node 2");
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
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
/// others route both families to it.
#[test]
fn dual_stack_kube_mode_routes_both_pod_cidrs() {
    if !common::need::root("dual_stack_kube_mode_routes_both_pod_cidrs") {
        return;
    }
    let mut lab = Lab::build(spec(3).kube()).expect("build lab");
    lab.start_all().expect("start agents");
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

/// flanneld's nat chain for IPv6 (flannel-reference §6.1: IPv4's with `ff00::/8`), as
/// `ip6tables-save -t nat` prints it.
fn golden_nat6(subnet: &str) -> Vec<String> {
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

/// `ip netns exec <ns> <prog> <args>`: stdout, or an error with stderr.
fn exec_in(ns: &str, prog: &str, args: &[&str]) -> Result<String, String> {
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

fn nat6_rules(ns: &str) -> Result<Vec<String>, String> {
    Ok(exec_in(ns, "ip6tables-save", &["-t", "nat"])?
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect())
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
    let endpoint = lab.etcd_endpoint().expect("endpoint");
    let out = weft(
        &lab,
        3,
        &[
            "cleanup",
            &format!("--etcd-endpoints={endpoint}"),
            &format!(
                "--subnet-file={}",
                lab.subnet_file(3).expect("path").display()
            ),
            &format!(
                "--peer-cache-file={}",
                lab.peer_cache_file(3).expect("path").display()
            ),
        ],
    );
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
    lab.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.200.0-24&fd00:10:244:c8::-64",
        &format!(
            r#"{{"PublicIP":"198.18.0.3","PublicIPv6":"fd00:198:18::3","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac4}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
        ),
    ])
    .expect("put node 3's lease");
    std::fs::write(
        lab.subnet_file(3).expect("path"),
        format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.200.1/24\n\
             FLANNEL_IPV6_NETWORK={V6_NETWORK}\nFLANNEL_IPV6_SUBNET=fd00:10:244:c8::1/64\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        ),
    )
    .expect("node 3's subnet.env");
    lab.start_node(1).expect("start node 1");
    lab.start_node(2).expect("start node 2");
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
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
