//! End to end with vxlan: the real weft binary on network-namespace nodes with a real etcd,
//! checked against the kernel state flanneld programs (`ip -j -d link`, `ip -j neigh`,
//! `bridge -j fdb`, `ip -j route`), the lease bytes in etcd and pod-to-pod pings over UDP 8472.
//! A node programmed by hand the way flanneld does it shows wire compatibility; out-of-band
//! deletes, restarts and a peer's MAC change show the self-healing.
#[path = "common/lab.rs"]
mod common;

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    VXLAN_DEV, VxlanPeer, Watch, json_in, loadavg, ping_once, run_in, vxlan_entries_exact,
    vxlan_link, vxlan_mac, vxlan_peer_present, wait_until,
};
use ipnet::Ipv4Net;
use weft_testkit::lab::{Lab, LabSpec, Signal};

/// Agents are debug builds on a shared 2-core machine: generous, still bounded.
const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);
/// How fast an out-of-band delete must be repaired, pods pinging again included.
const REPAIR: Duration = Duration::from_secs(1);
const VXLAN_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const PREFIX: &str = "/coreos.com/network";

fn spec(nodes: usize) -> LabSpec {
    let mut s = LabSpec::new(nodes, common::weft_bin());
    s.backend = "vxlan".to_owned();
    s.config = Some(VXLAN_CONFIG.to_owned());
    s
}

fn lease_key(net: Ipv4Net) -> String {
    format!("{PREFIX}/subnets/{}-{}", net.network(), net.prefix_len())
}

/// The lease value exactly as flanneld writes it for a vxlan node.
fn flannel_lease(ip: Ipv4Addr, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

/// The lease value stored under `key` (etcdctl's trailing newline removed).
fn lease_value(lab: &Lab, key: &str) -> String {
    let out = lab
        .etcdctl(&["get", key, "--print-value-only"])
        .expect("etcdctl get");
    out.strip_suffix('\n').unwrap_or(&out).to_owned()
}

/// The etcd lease ID attached to `key` (0 = none), from `etcdctl get -w json`.
fn etcd_lease_id(lab: &Lab, key: &str) -> i64 {
    let out = lab
        .etcdctl(&["get", key, "-w", "json"])
        .expect("get -w json");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("etcdctl JSON");
    v["kvs"][0]["lease"]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} has no kv or lease: {v}"))
}

/// `etcdctl lease timetolive` in seconds for an etcd lease ID.
fn lease_ttl(lab: &Lab, id: i64) -> i64 {
    let out = lab
        .etcdctl(&["lease", "timetolive", &format!("{id:x}"), "-w", "json"])
        .expect("timetolive");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("timetolive JSON");
    v["ttl"].as_i64().unwrap_or(-1)
}

/// What every other node must have for node `j`: its subnet, PublicIP and device MAC.
fn peer_of(lab: &Lab, j: usize) -> Result<VxlanPeer, String> {
    Ok(VxlanPeer {
        subnet: lab.subnet(j).map_err(|e| format!("{e:#}"))?,
        ip: lab.node_ip(j).map_err(|e| e.to_string())?,
        mac: vxlan_mac(lab.node_ns(j).map_err(|e| e.to_string())?)?,
    })
}

/// Node k's entries are exactly those of every node in `nodes` but itself.
fn converged(lab: &Lab, k: usize, nodes: &[usize]) -> Result<(), String> {
    let peers = nodes
        .iter()
        .filter(|&&j| j != k)
        .map(|&j| peer_of(lab, j))
        .collect::<Result<Vec<_>, _>>()?;
    vxlan_entries_exact(lab.node_ns(k).map_err(|e| e.to_string())?, &peers)
}

/// Builds a vxlan lab, starts every agent at the same moment and waits until each wrote
/// subnet.env and programmed every peer.
fn converged_lab(nodes: usize) -> Lab {
    let mut lab = Lab::build(spec(nodes)).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=nodes {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    let all: Vec<usize> = (1..=nodes).collect();
    for k in 1..=nodes {
        wait_until(CONVERGE, || converged(&lab, k, &all))
            .unwrap_or_else(|e| panic!("node {k}: {e}; log:\n{}", lab.log_tail(k, 40)));
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

/// Every agent in `nodes` runs.
fn assert_agents_alive(lab: &mut Lab, nodes: &[usize]) {
    for &k in nodes {
        assert!(
            lab.node_running(k).expect("status"),
            "node {k}'s agent exited ({:?}); log:\n{}",
            lab.node_exit_status(k),
            lab.log_tail(k, 40)
        );
    }
}

/// flannel.1 packet counters (tx, rx) from `ip -j -s link`.
fn vxlan_counters(ns: &str) -> (u64, u64) {
    let links = json_in(ns, "ip", &["-s", "link", "show", VXLAN_DEV]).expect("ip -s link");
    let stats = &links[0]["stats64"];
    (
        stats["tx"]["packets"].as_u64().expect("tx packets"),
        stats["rx"]["packets"].as_u64().expect("rx packets"),
    )
}

/// `tcpdump -i eth0 udp port 8472` in a node namespace, running until `packets` were seen.
struct Capture {
    child: Child,
    out: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &str, out: std::path::PathBuf, packets: u32) -> Capture {
        let file = std::fs::File::create(&out).expect("capture file");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-nn", "-l", "-i", "eth0"])
            .args(["-c", &packets.to_string(), "udp", "port", "8472"])
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        // tcpdump says "listening on eth0 …" once the capture runs (or exits with an error).
        let stderr = child.stderr.take().expect("tcpdump stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(line)) => said.push(line),
                _ => panic!("tcpdump did not start: {said:?}"),
            }
        }
        Capture { child, out }
    }

    /// Waits (bounded) for tcpdump to have its packets; returns what it printed.
    fn finish(mut self, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        while self.child.try_wait().expect("tcpdump status").is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.out).expect("read capture")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_nodes_program_flannels_vxlan_state_and_pods_ping_over_udp_8472() {
    if !common::need::root("three_nodes_program_flannels_vxlan_state_and_pods_ping_over_udp_8472") {
        return;
    }
    let mut lab = converged_lab(3);

    for k in 1..=3 {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        let net = lab.subnet(k).expect("subnet");
        let ip = lab.node_ip(k).expect("ip");

        // The device, as `ip -d link` shows flanneld's.
        let link = vxlan_link(&ns).expect("flannel.1");
        let data = &link["linkinfo"]["info_data"];
        assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "node {k}: {link}");
        assert_eq!(data["id"], 1, "node {k}: vxlan id: {link}");
        assert_eq!(data["local"], ip.to_string(), "node {k}: local: {link}");
        // iproute2 prints IFLA_VXLAN_LINK (the index) as the name of that interface.
        assert_eq!(data["link"], "eth0", "node {k}: dev: {link}");
        assert_eq!(data["port"], 8472, "node {k}: dstport: {link}");
        assert_eq!(data["learning"], false, "node {k}: learning: {link}");
        assert_eq!(link["mtu"], 1500 - 50, "node {k}: mtu: {link}");
        let flags = link["flags"].as_array().expect("flags");
        assert!(flags.iter().any(|f| f == "UP"), "node {k}: not up: {link}");
        let mac = link["address"].as_str().expect("address").to_owned();

        // Exactly one IPv4 address: the subnet's network address /32.
        let addrs = json_in(&ns, "ip", &["addr", "show", "dev", VXLAN_DEV]).expect("ip addr");
        let v4: Vec<(String, u64)> = addrs[0]["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            .filter(|a| a["family"] == "inet")
            .map(|a| {
                (
                    a["local"].as_str().unwrap_or("-").to_owned(),
                    a["prefixlen"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(v4, vec![(net.network().to_string(), 32)], "node {k}");

        // The lease, byte for byte flannel's, with the device's MAC.
        assert_eq!(
            lease_value(&lab, &lease_key(net)),
            flannel_lease(ip, &mac),
            "node {k}'s lease"
        );
        let id = etcd_lease_id(&lab, &lease_key(net));
        let ttl = lease_ttl(&lab, id);
        assert!(
            (86_000..=86_400).contains(&ttl),
            "node {k}: etcd lease {id:x} TTL {ttl}"
        );

        // subnet.env with the vxlan MTU.
        let first = Ipv4Addr::from(u32::from(net.network()) + 1);
        assert_eq!(
            lab.subnet_env_text(k).expect("subnet.env"),
            format!(
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={first}/24\n\
                 FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
            ),
            "node {k}"
        );
    }

    // Per-peer entries, one by one (converged_lab already checked the exact sets).
    for k in 1..=3 {
        for j in (1..=3).filter(|&j| j != k) {
            let peer = peer_of(&lab, j).expect("peer");
            vxlan_peer_present(lab.node_ns(k).expect("ns"), &peer).expect("peer entries");
        }
    }

    // Pod traffic crosses flannel.1 and leaves eth0 as UDP 8472.
    lab.add_pods().expect("pods");
    let n1 = lab.node_ns(1).expect("ns").to_owned();
    let before = vxlan_counters(&n1);
    // Node 1's pod pings two pods and answers two: 8 VXLAN packets cross node 1's eth0.
    let capture = Capture::start(&n1, lab.dir().join("n1-8472.txt"), 8);
    assert_all_pods_reach_each_other(&lab);
    let after = vxlan_counters(&n1);
    let seen = capture.finish(Duration::from_secs(5));
    assert!(
        after.0 >= before.0 + 4 && after.1 >= before.1 + 4,
        "flannel.1 counters (tx, rx) {before:?} -> {after:?}"
    );
    // tcpdump names UDP 8472 "OTV" and prints the VNI as "instance", then the inner packet:
    // `IP 198.18.0.1.54570 > 198.18.0.2.8472: OTV, flags [I] (0x08), overlay 0, instance 1`
    // `IP 10.244.101.2 > 10.244.97.2: ICMP echo request, …`
    let outer =
        regex::Regex::new(r"IP 198\.18\.0\.(\d+)\.\d+ > 198\.18\.0\.(\d+)\.8472: .*instance 1$")
            .expect("regex");
    let pod1 = lab.pod_ip(1).expect("pod ip").to_string();
    let lines: Vec<&str> = seen.lines().collect();
    let (mut out, mut inn) = (0, 0);
    for pair in lines.windows(2) {
        let Some(c) = outer.captures(pair[0]) else {
            continue;
        };
        if !(pair[1].contains("ICMP echo") && pair[1].contains(&pod1)) {
            continue;
        }
        match (&c[1], &c[2]) {
            ("1", "2" | "3") => out += 1,
            ("2" | "3", "1") => inn += 1,
            _ => {}
        }
    }
    assert!(
        out >= 4 && inn >= 4,
        "expected 4 VXLAN (VNI 1) ICMP packets each way on node 1's eth0, got {out} out and \
         {inn} in; tcpdump -i eth0 udp port 8472 saw:\n{seen}"
    );

    assert_agents_alive(&mut lab, &[1, 2, 3]);
    lab.teardown().expect("teardown");
}

/// A lease as flanneld reads it: Go's `LeaseAttrs` fields, no others, this order.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct FlannelLease {
    #[serde(rename = "PublicIP")]
    public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6")]
    public_ipv6: Option<String>,
    #[serde(rename = "BackendType")]
    backend_type: String,
    #[serde(rename = "BackendData")]
    backend_data: FlannelVxlanData,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct FlannelVxlanData {
    #[serde(rename = "VNI")]
    vni: u32,
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

#[test]
fn a_hand_made_flanneld_node_and_weft_nodes_interoperate() {
    if !common::need::root("a_hand_made_flanneld_node_and_weft_nodes_interoperate") {
        return;
    }
    // Node 4 runs no weft: it is programmed as flanneld does it (docs/flannel-compat.md §5.1), with
    // its lease written as flanneld writes it, before the weft nodes start.
    let mut lab = Lab::build(spec(4)).expect("build lab");
    let n4 = lab.node_ns(4).expect("ns").to_owned();
    let ip4 = lab.node_ip(4).expect("ip");
    let net4: Ipv4Net = "10.244.250.0/24".parse().expect("net");
    let mac4 = "0e:2a:fa:00:00:04";
    common::make_device_as_flanneld(&n4, mac4, ip4, net4).expect("node 4's flannel.1");
    let granted = lab
        .etcdctl(&["lease", "grant", "86400"])
        .expect("lease grant");
    // "lease 694d7c1f3c0a1b05 granted with TTL(86400s)"
    let lease_id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_owned();
    let fixture = r#"{"PublicIP":"198.18.0.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:2a:fa:00:00:04"}}"#;
    lab.etcdctl(&[
        "put",
        &format!("--lease={lease_id}"),
        &lease_key(net4),
        fixture,
    ])
    .expect("put node 4's lease");
    std::fs::write(
        lab.subnet_file(4).expect("path"),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.250.1/24\n\
         FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
    .expect("node 4's subnet.env");

    for k in 1..=3 {
        lab.start_node(k).expect("start");
    }
    for k in 1..=3 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    let node4 = VxlanPeer {
        subnet: net4,
        ip: ip4,
        mac: mac4.to_owned(),
    };
    for k in 1..=3 {
        wait_until(CONVERGE, || {
            let mut peers = (1..=3)
                .filter(|&j| j != k)
                .map(|j| peer_of(&lab, j))
                .collect::<Result<Vec<_>, _>>()?;
            peers.push(node4.clone());
            vxlan_entries_exact(lab.node_ns(k).map_err(|e| e.to_string())?, &peers)
        })
        .unwrap_or_else(|e| panic!("node {k}: {e}; log:\n{}", lab.log_tail(k, 40)));
    }

    // weft's device is the one flanneld makes (same vxlan attributes but `local`, same MTU).
    let hand = vxlan_link(&n4).expect("node 4's flannel.1");
    for k in 1..=3 {
        let link = vxlan_link(lab.node_ns(k).expect("ns")).expect("flannel.1");
        let mut data = link["linkinfo"]["info_data"].clone();
        let mut want = hand["linkinfo"]["info_data"].clone();
        data["local"] = serde_json::Value::Null;
        want["local"] = serde_json::Value::Null;
        assert_eq!(data, want, "node {k}'s vxlan attributes vs flanneld's");
        assert_eq!(link["mtu"], hand["mtu"], "node {k}'s MTU vs flanneld's");
    }

    // Node 4 ("flanneld") reads the weft nodes' leases strictly and programs them by hand.
    for k in 1..=3 {
        let net = lab.subnet(k).expect("subnet");
        let raw = lease_value(&lab, &lease_key(net));
        let lease: FlannelLease = serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("node {k}'s lease {raw:?} is not flannel's form: {e}"));
        assert_eq!(
            serde_json::to_string(&lease).expect("json"),
            raw,
            "node {k}'s lease keys/order differ from flannel's"
        );
        assert_eq!(lease.public_ip, lab.node_ip(k).expect("ip"));
        assert_eq!(lease.public_ipv6, None);
        assert_eq!(lease.backend_type, "vxlan");
        assert_eq!(lease.backend_data.vni, 1);
        let mac = lease.backend_data.vtep_mac;
        assert_eq!(mac, vxlan_mac(lab.node_ns(k).expect("ns")).expect("mac"));
        let peer = VxlanPeer {
            subnet: net,
            ip: lease.public_ip,
            mac,
        };
        common::program_peer_as_flanneld(&n4, &peer).expect("program the weft node by hand");
    }

    // Pods everywhere (node 4's from its hand-written subnet.env); all ping each other.
    lab.add_pods().expect("pods");
    assert_all_pods_reach_each_other(&lab);
    // The weft nodes' view of node 4 did not change meanwhile, and node 4's lease is untouched.
    for k in 1..=3 {
        vxlan_peer_present(lab.node_ns(k).expect("ns"), &node4).expect("node 4 entries");
    }
    assert_eq!(lease_value(&lab, &lease_key(net4)), fixture);
    assert_agents_alive(&mut lab, &[1, 2, 3]);
    lab.teardown().expect("teardown");
}

/// How long an out-of-band delete took to be repaired: the kernel entries back, then every
/// pod pair pinging.
#[derive(Debug)]
struct Repair {
    entries: Duration,
    pings: Duration,
}

/// Polls, from `since` (the moment of the delete), until `check` holds and then until every
/// `(from, to)` pod pair got a ping reply (pairs pinged in parallel, each until its first
/// reply); fails unless both happened within [`REPAIR`]. The checks are cheap (a few `ip`
/// runs, expectations computed beforehand) so the measurement is mostly weft's own time.
fn repaired_within(
    lab: &Lab,
    what: &str,
    since: Instant,
    pairs: &[(usize, usize)],
    check: impl Fn() -> Result<(), String>,
) -> Repair {
    let deadline = since + REPAIR;
    let late = |stage: &str, detail: &str| -> ! {
        panic!(
            "{what}: {stage} not within {REPAIR:?} of the delete (loadavg {}; a loaded machine \
             can miss this timing): {detail}",
            loadavg()
        )
    };
    let entries = loop {
        match check() {
            Ok(()) => break since.elapsed(),
            Err(e) if Instant::now() > deadline => late("entries back", &e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    if entries > REPAIR {
        late("entries back", &format!("took {entries:?}"));
    }
    let targets: Vec<(usize, usize, String, Ipv4Addr)> = pairs
        .iter()
        .map(|&(from, to)| {
            (
                from,
                to,
                lab.pod_ns(from).expect("pod ns").to_owned(),
                lab.pod_ip(to).expect("pod ip"),
            )
        })
        .collect();
    let replied: Vec<Option<Duration>> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(_, _, ns, ip)| {
                s.spawn(move || {
                    loop {
                        if ping_once(ns, *ip, Duration::from_millis(200)) {
                            return Some(since.elapsed());
                        }
                        if Instant::now() > deadline {
                            return None;
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ping thread"))
            .collect()
    });
    let mut pings = Duration::ZERO;
    for ((from, to, _, _), r) in targets.iter().zip(&replied) {
        match r {
            Some(t) if *t <= REPAIR => pings = pings.max(*t),
            Some(t) => late(
                "pods ping",
                &format!("pod {from} -> pod {to} replied after {t:?}"),
            ),
            None => late(
                "pods ping",
                &format!(
                    "pod {from} -> pod {to} got no reply (entries were back after {entries:?})"
                ),
            ),
        }
    }
    Repair { entries, pings }
}

#[test]
fn out_of_band_deletes_are_repaired_within_a_second() {
    if !common::need::root("out_of_band_deletes_are_repaired_within_a_second") {
        return;
    }
    let mut lab = converged_lab(3);
    lab.add_pods().expect("pods");
    assert_all_pods_reach_each_other(&lab);
    let n1 = lab.node_ns(1).expect("ns").to_owned();
    let peer2 = peer_of(&lab, 2).expect("peer");
    let gw2 = peer2.gateway();
    let ip2 = peer2.ip.to_string();
    let both_ways = [(1, 2), (2, 1)];
    let peers1 = [peer2.clone(), peer_of(&lab, 3).expect("peer")];
    let exact = || vxlan_entries_exact(&n1, &peers1);

    let t = Instant::now();
    run_in(&n1, "ip", &["route", "del", &peer2.subnet.to_string()]).expect("route del");
    let took = repaired_within(&lab, "ip route del", t, &both_ways, exact);
    eprintln!(
        "ip route del: entries back after {:?}, pods ping after {:?}",
        took.entries, took.pings
    );

    let t = Instant::now();
    run_in(&n1, "ip", &["neigh", "del", &gw2, "dev", VXLAN_DEV]).expect("neigh del");
    let took = repaired_within(&lab, "ip neigh del", t, &both_ways, exact);
    eprintln!(
        "ip neigh del: entries back after {:?}, pods ping after {:?}",
        took.entries, took.pings
    );

    let t = Instant::now();
    run_in(
        &n1,
        "bridge",
        &[
            "fdb", "del", &peer2.mac, "dev", VXLAN_DEV, "dst", &ip2, "self",
        ],
    )
    .expect("fdb del");
    let took = repaired_within(&lab, "bridge fdb del", t, &both_ways, exact);
    eprintln!(
        "bridge fdb del: entries back after {:?}, pods ping after {:?}",
        took.entries, took.pings
    );

    // The whole device: back with the same MAC, address and every peer's entries.
    let link_before = vxlan_link(&n1).expect("link");
    let net1 = lab.subnet(1).expect("subnet");
    let t = Instant::now();
    run_in(&n1, "ip", &["link", "del", VXLAN_DEV]).expect("link del");
    let took = repaired_within(
        &lab,
        "ip link del",
        t,
        &[(1, 2), (2, 1), (1, 3), (3, 1)],
        || {
            let link = vxlan_link(&n1)?;
            if link["ifindex"] == link_before["ifindex"] {
                return Err("still the old device".into());
            }
            for field in ["address", "mtu", "linkinfo"] {
                if link[field] != link_before[field] {
                    return Err(format!(
                        "re-created {VXLAN_DEV} differs in {field}: {} (before {})",
                        link[field], link_before[field]
                    ));
                }
            }
            if !link["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "UP"))
            {
                return Err(format!("re-created {VXLAN_DEV} is not up: {link}"));
            }
            let addrs = json_in(&n1, "ip", &["-4", "addr", "show", "dev", VXLAN_DEV])?;
            let want = net1.network().to_string();
            if !addrs[0]["addr_info"].as_array().is_some_and(|a| {
                a.len() == 1 && a[0]["local"] == want.as_str() && a[0]["prefixlen"] == 32
            }) {
                return Err(format!("re-created {VXLAN_DEV} lacks {want}/32: {addrs:?}"));
            }
            exact()
        },
    );
    eprintln!(
        "ip link del: entries back after {:?}, pods ping after {:?}",
        took.entries, took.pings
    );
    // The lease still carries the (unchanged) MAC.
    assert_eq!(
        lease_value(&lab, &lease_key(net1)),
        flannel_lease(
            lab.node_ip(1).expect("ip"),
            link_before["address"].as_str().expect("mac")
        )
    );

    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab, &[1, 2, 3]);
    lab.teardown().expect("teardown");
}

/// Stops node 2 with `how`, keeps it down while `while_down` runs, starts it again and checks
/// it comes back with the same subnet and VTEP MAC (device and lease) and full entries.
fn bounce_node2(lab: &mut Lab, how: Signal, while_down: impl FnOnce(&Lab)) {
    let net = lab.subnet(2).expect("subnet");
    let ns = lab.node_ns(2).expect("ns").to_owned();
    let mac = vxlan_mac(&ns).expect("mac");
    let written = lab.subnet_env_mtime(2).expect("mtime");
    let status = lab
        .stop_node(2, how)
        .expect("stop node 2")
        .expect("node 2 was running");
    if how == Signal::SIGTERM {
        assert!(
            status.success(),
            "SIGTERM must be a clean exit, got {status}; log:\n{}",
            lab.log_tail(2, 30)
        );
    }
    while_down(lab);
    // Down for a while: the peers keep their entries (the lease outlives the process).
    let down_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < down_until {
        assert_agents_alive(lab, &[1, 3]);
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.start_node(2).expect("start node 2 again");
    let after = lab
        .wait_subnet_env_since(2, written, READY)
        .expect("subnet.env rewritten after restart")
        .subnet
        .expect("FLANNEL_SUBNET");
    assert_eq!(after, net, "node 2 keeps its subnet after {how}");
    assert_eq!(
        vxlan_mac(&ns).expect("mac"),
        mac,
        "node 2's device keeps its MAC after {how}"
    );
    assert_eq!(
        lease_value(lab, &lease_key(net)),
        flannel_lease(lab.node_ip(2).expect("ip"), &mac),
        "node 2's lease keeps its MAC after {how}"
    );
    for k in 1..=3 {
        wait_until(CONVERGE, || converged(lab, k, &[1, 2, 3]))
            .unwrap_or_else(|e| panic!("after {how}: node {k}: {e}"));
    }
}

#[test]
fn restarts_keep_subnet_and_vtep_mac_and_peers_never_lose_the_entries() {
    if !common::need::root("restarts_keep_subnet_and_vtep_mac_and_peers_never_lose_the_entries") {
        return;
    }
    let mut lab = converged_lab(3);
    lab.add_pods().expect("pods");
    let peer2 = peer_of(&lab, 2).expect("peer");
    let watched: Vec<String> = [1, 3]
        .iter()
        .map(|&k| lab.node_ns(k).expect("ns").to_owned())
        .collect();
    let p = peer2.clone();
    let watch = Watch::start(move || {
        for ns in &watched {
            vxlan_peer_present(ns, &p)?;
        }
        Ok(())
    });

    // While its agent is down or starting, node 2 itself keeps its entries for the others too
    // (shutdown leaves the kernel as it is; the start-up sync purges nothing that is wanted).
    let n2 = lab.node_ns(2).expect("ns").to_owned();
    let others = [
        peer_of(&lab, 1).expect("peer"),
        peer_of(&lab, 3).expect("peer"),
    ];
    let own_watch = Watch::start(move || {
        for p in &others {
            vxlan_peer_present(&n2, p)?;
        }
        Ok(())
    });
    bounce_node2(&mut lab, Signal::SIGTERM, |_| {});
    bounce_node2(&mut lab, Signal::SIGKILL, |_| {});
    let (polls, failures) = own_watch.stop();
    assert!(polls > 10, "the own-entry watch barely ran ({polls} polls)");
    assert!(
        failures.is_empty(),
        "node 2 lost its own entries across restarts:\n{}",
        failures.join("\n")
    );
    // As after a reboot: the device is gone too; the MAC comes back from the lease in etcd.
    bounce_node2(&mut lab, Signal::SIGTERM, |lab| {
        run_in(
            lab.node_ns(2).expect("ns"),
            "ip",
            &["link", "del", VXLAN_DEV],
        )
        .expect("link del");
    });

    let (polls, failures) = watch.stop();
    assert!(polls > 10, "the entry watch barely ran ({polls} polls)");
    assert!(
        failures.is_empty(),
        "peers lost node 2's entries:\n{}",
        failures.join("\n")
    );
    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab, &[1, 2, 3]);
    lab.teardown().expect("teardown");
}

#[test]
fn a_peer_changing_its_mac_replaces_fdb_and_arp_entries() {
    if !common::need::root("a_peer_changing_its_mac_replaces_fdb_and_arp_entries") {
        return;
    }
    let mut lab = converged_lab(3);
    lab.add_pods().expect("pods");
    let old = peer_of(&lab, 3).expect("peer");
    let key = lease_key(old.subnet);
    let id = etcd_lease_id(&lab, &key);
    assert_ne!(id, 0, "node 3's lease has an etcd lease");

    // Node 3 comes back with a new VTEP MAC, as a flanneld node does after a reboot: its agent
    // is stopped, the device gets the new MAC, and the lease value is rewritten on the same
    // etcd lease.
    lab.stop_node(3, Signal::SIGTERM).expect("stop node 3");
    let new_mac = "0e:2a:33:00:00:03";
    let n3 = lab.node_ns(3).expect("ns").to_owned();
    run_in(&n3, "ip", &["link", "set", VXLAN_DEV, "address", new_mac]).expect("set address");
    lab.etcdctl(&[
        "put",
        &format!("--lease={id:x}"),
        &key,
        &flannel_lease(old.ip, new_mac),
    ])
    .expect("put new lease value");
    assert_eq!(etcd_lease_id(&lab, &key), id, "same etcd lease");

    // Nodes 1 and 2: the new ARP and FDB entries, and no FDB entry for the old MAC.
    let new = VxlanPeer {
        mac: new_mac.to_owned(),
        ..old.clone()
    };
    for k in 1..=2 {
        wait_until(CONVERGE, || {
            let mut peers = vec![new.clone()];
            peers.push(peer_of(&lab, 3 - k)?);
            vxlan_entries_exact(lab.node_ns(k).map_err(|e| e.to_string())?, &peers)
        })
        .unwrap_or_else(|e| panic!("node {k}: {e}; log:\n{}", lab.log_tail(k, 40)));
        let fdb = json_in(
            lab.node_ns(k).expect("ns"),
            "bridge",
            &["fdb", "show", "dev", VXLAN_DEV],
        )
        .expect("fdb");
        assert!(
            !fdb.iter().any(|f| f["mac"] == old.mac.as_str()),
            "node {k}: stale fdb entry for {}: {fdb:?}",
            old.mac
        );
    }
    // Node 3's agent starts again and keeps the new MAC (device and lease). (Changing a
    // device's MAC makes the kernel flush its neighbours, so node 3 itself needs its agent
    // back before its pod can answer.)
    lab.start_node(3).expect("start node 3");
    let all = [1, 2, 3];
    for k in 1..=3 {
        wait_until(CONVERGE, || converged(&lab, k, &all))
            .unwrap_or_else(|e| panic!("node {k}: {e}; log:\n{}", lab.log_tail(k, 40)));
    }
    wait_until(CONVERGE, || {
        let v = lease_value(&lab, &key);
        if v == flannel_lease(old.ip, new_mac) {
            Ok(())
        } else {
            Err(format!("node 3's lease is {v}"))
        }
    })
    .expect("node 3's lease keeps the new MAC");
    assert_eq!(vxlan_mac(&n3).expect("mac"), new_mac);
    assert_all_pods_reach_each_other(&lab);
    assert_agents_alive(&mut lab, &[1, 2, 3]);
    lab.teardown().expect("teardown");
}

#[test]
fn a_device_set_down_or_stripped_of_its_address_is_restored() {
    if !common::need::root("a_device_set_down_or_stripped_of_its_address_is_restored") {
        return;
    }
    let mut lab = converged_lab(2);
    lab.add_pods().expect("pods");
    assert_all_pods_reach_each_other(&lab);
    let n1 = lab.node_ns(1).expect("ns").to_owned();
    let peers1 = [peer_of(&lab, 2).expect("peer")];
    let own = lab.subnet(1).expect("subnet");
    let own_addr = format!("{}/32", own.network());
    let mac = vxlan_mac(&n1).expect("mac");
    let device_ok = || -> Result<(), String> {
        let link = vxlan_link(&n1)?;
        let flags = link["flags"].as_array().cloned().unwrap_or_default();
        if !flags.iter().any(|f| f == "UP") {
            return Err(format!("flannel.1 is not up: {flags:?}"));
        }
        if link["address"] != mac.as_str() {
            return Err(format!("flannel.1 MAC is {}", link["address"]));
        }
        let addrs = json_in(&n1, "ip", &["-4", "addr", "show", "dev", VXLAN_DEV])?;
        let has = addrs.iter().any(|l| {
            l["addr_info"].as_array().into_iter().flatten().any(|a| {
                format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]) == own_addr
            })
        });
        if !has {
            return Err(format!("flannel.1 lacks {own_addr}: {addrs:?}"));
        }
        vxlan_entries_exact(&n1, &peers1)
    };

    let since = Instant::now();
    run_in(&n1, "ip", &["link", "set", VXLAN_DEV, "down"]).expect("set down");
    let r = repaired_within(
        &lab,
        "ip link set flannel.1 down",
        since,
        &[(1, 2), (2, 1)],
        device_ok,
    );
    eprintln!(
        "link down: entries back after {:?}, pings after {:?}",
        r.entries, r.pings
    );

    let since = Instant::now();
    run_in(&n1, "ip", &["addr", "del", &own_addr, "dev", VXLAN_DEV]).expect("addr del");
    let r = repaired_within(&lab, "ip addr del", since, &[(1, 2), (2, 1)], device_ok);
    eprintln!(
        "addr del: entries back after {:?}, pings after {:?}",
        r.entries, r.pings
    );
    assert_agents_alive(&mut lab, &[1, 2]);
}

/// Two leases advertising one VTEP MAC (a node re-leased while its old lease lives on): one FDB
/// entry can serve only one of them. The lower subnet is programmed, the other is skipped with a
/// warning; when the first leaves, the second is programmed. Lease changes take the agent's
/// incremental path, which must hand such a collision to the full plan.
#[test]
fn two_leases_with_one_vtep_mac_program_one_then_the_other() {
    if !common::need::root("two_leases_with_one_vtep_mac_program_one_then_the_other") {
        return;
    }
    let mut lab = converged_lab(2);
    let mac = "0e:2a:33:00:00:c8";
    let first = VxlanPeer {
        subnet: "10.244.200.0/24".parse().expect("subnet"),
        ip: Ipv4Addr::new(198, 18, 0, 200),
        mac: mac.to_owned(),
    };
    let second = VxlanPeer {
        subnet: "10.244.201.0/24".parse().expect("subnet"),
        ip: Ipv4Addr::new(198, 18, 0, 201),
        mac: mac.to_owned(),
    };
    let node2 = peer_of(&lab, 2).expect("node 2");
    let expect_on_node1 = |lab: &Lab, fake: &VxlanPeer| {
        wait_until(CONVERGE, || {
            vxlan_entries_exact(
                lab.node_ns(1).map_err(|e| e.to_string())?,
                &[node2.clone(), fake.clone()],
            )
        })
        .unwrap_or_else(|e| panic!("node 1: {e}; log:\n{}", lab.log_tail(1, 40)));
    };
    // Each put is a plain peer change; a plain change must still be programmed.
    lab.etcdctl(&[
        "put",
        &lease_key(first.subnet),
        &flannel_lease(first.ip, mac),
    ])
    .expect("put first");
    expect_on_node1(&lab, &first);
    lab.etcdctl(&[
        "put",
        &lease_key(second.subnet),
        &flannel_lease(second.ip, mac),
    ])
    .expect("put second");
    wait_until(CONVERGE, || {
        let log = lab.log_tail(1, 200);
        if log.contains("peer 10.244.201.0-24 not programmed") && log.contains("already used") {
            Ok(())
        } else {
            Err("no warning about the second lease yet".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("node 1: {e}; log:\n{}", lab.log_tail(1, 40)));
    // Still exactly the first (the second must not take over the FDB entry).
    expect_on_node1(&lab, &first);

    lab.etcdctl(&["del", &lease_key(first.subnet)])
        .expect("delete first");
    expect_on_node1(&lab, &second);
    assert_agents_alive(&mut lab, &[1, 2]);
    lab.teardown().expect("teardown");
}
