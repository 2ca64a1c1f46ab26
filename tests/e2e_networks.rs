//! Two flannel networks on one host (flannel's "multiple networks": one daemon per etcd prefix,
//! each with its own subnet file and VNI), end to end: two nodes, each running two weft daemons
//! against one etcd — network A (vxlan VNI 1 on 10.244.0.0/16, the lab's own agents) and
//! network B (vxlan VNI 2 on 10.245.0.0/16, under `/weft-net-b`) — with a pod of each network
//! on each node. Pods of both networks ping across; restarting either daemon leaves the other
//! network's device, routes and pings untouched; `weft cleanup --network` removes one network
//! only.
#[path = "common/lab.rs"]
mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_until;
use ipnet::Ipv4Net;
use weft_testkit::lab::{Lab, LabSpec, Signal, SubnetEnv};

const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);
const NET_B: &str = "10.245.0.0/16";
const PREFIX_B: &str = "/weft-net-b";
const CONFIG_B: &str = r#"{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan","VNI":2}}"#;

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(ns: &str, args: &str) -> String {
    let mut a = vec!["-n", ns];
    a.extend(args.split_whitespace());
    sh("ip", &a)
}

/// Network B's daemons and pods, stopped and removed on drop (the lab's own teardown purges
/// the node namespaces, which kills a daemon still running there).
struct NetworkB {
    lab_name: String,
    dir: PathBuf,
    daemons: Vec<Option<Child>>,
    pods: Vec<String>,
}

impl Drop for NetworkB {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", p]).status();
        }
    }
}

impl NetworkB {
    fn subnet_file(&self, k: usize) -> PathBuf {
        self.dir.join(format!("net-b-{k}.env"))
    }

    fn log(&self, k: usize) -> PathBuf {
        self.dir.join(format!("net-b-{k}.log"))
    }

    fn start(&mut self, lab: &Lab, k: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(k))
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", lab.node_ns(k).expect("ns")])
            .arg(common::weft_bin())
            .arg(format!(
                "--etcd-endpoints={}",
                lab.etcd_endpoint().expect("endpoint")
            ))
            .arg(format!("--etcd-prefix={PREFIX_B}"))
            .arg(format!("--subnet-file={}", self.subnet_file(k).display()))
            .arg(format!(
                "--peer-cache-file={}",
                self.dir.join(format!("net-b-{k}.json")).display()
            ))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start network B's weft");
        self.daemons[k - 1] = Some(child);
    }

    fn stop(&mut self, k: usize) {
        let mut c = self.daemons[k - 1].take().expect("running");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("SIGTERM");
        wait_until(READY, || match c.try_wait() {
            Ok(Some(_)) => Ok(()),
            _ => Err("still running".to_string()),
        })
        .expect("network B's daemon stops");
    }

    fn env(&self, k: usize) -> Result<SubnetEnv, String> {
        let text = std::fs::read_to_string(self.subnet_file(k)).map_err(|e| e.to_string())?;
        SubnetEnv::parse(&text).map_err(|e| format!("{e:?}"))
    }

    /// Pod k of network B: bridge `cni1` in the node with the subnet's .1, namespace
    /// `<lab>-q<k>` with `eth0` on .2, as the bridge CNI plugin builds it.
    fn add_pod(&mut self, lab: &Lab, k: usize) -> Ipv4Addr {
        let env = self.env(k).expect("subnet file");
        let subnet = env.subnet.expect("FLANNEL_SUBNET");
        let base = u32::from(subnet.network());
        let gw = Ipv4Addr::from(base + 1);
        let pod = Ipv4Addr::from(base + 2);
        let len = subnet.prefix_len();
        let n = lab.node_ns(k).expect("ns");
        let p = format!("{}-q{k}", self.lab_name);
        sh("ip", &["netns", "add", &p]);
        self.pods.push(p.clone());
        let mtu = env.mtu.to_string();
        ip(n, "link add cni1 type bridge");
        ip(n, &format!("addr add {gw}/{len} dev cni1"));
        ip(n, &format!("link set cni1 mtu {mtu} up"));
        ip(&p, "link set lo up");
        ip(
            &p,
            &format!("link add eth0 mtu {mtu} type veth peer name vq netns {n}"),
        );
        ip(n, "link set vq master cni1 up");
        ip(&p, &format!("addr add {pod}/{len} dev eth0"));
        ip(&p, "link set eth0 up");
        ip(&p, &format!("route add default via {gw} dev eth0"));
        pod
    }
}

fn pings_until_ok(ns: &str, to: Ipv4Addr) {
    wait_until(CONVERGE, || {
        (common::ping_replies(ns, to, 1) == 1)
            .then_some(())
            .ok_or(format!("{ns} → {to}"))
    })
    .expect("pod reaches pod");
}

/// What one network's overlay is on node `ns`: its device's ifindex and its routes (dst, dev,
/// gateway) inside `net`.
fn overlay(ns: &str, dev: &str, net: Ipv4Net) -> (u64, BTreeSet<String>) {
    let link: serde_json::Value =
        serde_json::from_str(&ip(ns, &format!("-j link show dev {dev}"))).expect("json");
    let index = link[0]["ifindex"].as_u64().expect("ifindex");
    let routes = common::routes_in(ns)
        .expect("routes")
        .into_iter()
        .filter(|r| {
            r["dst"]
                .as_str()
                .and_then(|d| d.parse::<Ipv4Net>().ok())
                .is_some_and(|d| net.contains(&d) && common::route_protocol_is(r, 87))
        })
        .map(|r| format!("{} via {} dev {}", r["dst"], r["gateway"], r["dev"]))
        .collect();
    (index, routes)
}

/// Restarts a daemon of one network while the other network's pods ping each other 10 times a
/// second: none of those pings may be lost, and the other network's device and routes stay.
fn restart_keeps_the_other_network(
    what: &str,
    ping_from: &str,
    ping_to: Ipv4Addr,
    other: (&str, &str, Ipv4Net),
    restart: impl FnOnce(),
) {
    let before = overlay(other.0, other.1, other.2);
    let (from, to) = (ping_from.to_string(), ping_to);
    let pinger = std::thread::spawn(move || common::ping_replies(&from, to, 60));
    restart();
    let replies = pinger.join().expect("pinger");
    assert_eq!(replies, 60, "{what}: pings of the other network lost");
    assert_eq!(
        overlay(other.0, other.1, other.2),
        before,
        "{what}: the other network's device or routes changed"
    );
}

#[test]
fn two_networks_on_two_nodes_ping_and_restart_independently() {
    if !common::need::root("two_networks_on_two_nodes_ping_and_restart_independently") {
        return;
    }
    let mut spec = LabSpec::new(2, common::weft_bin());
    spec.backend = "vxlan".to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    lab.etcdctl(&["put", &format!("{PREFIX_B}/config"), CONFIG_B])
        .expect("network B's config");
    let mut b = NetworkB {
        lab_name: lab.name().to_owned(),
        dir: lab.dir().to_owned(),
        daemons: vec![None, None],
        pods: Vec::new(),
    };
    lab.start_all().expect("start network A");
    for k in 1..=2 {
        b.start(&lab, k);
    }
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY)
            .expect("network A's subnet.env");
        wait_until(READY, || b.env(k).map(|_| ())).expect("network B's subnet file");
    }
    lab.add_pods().expect("network A's pods");
    let pod_b: Vec<Ipv4Addr> = (1..=2).map(|k| b.add_pod(&lab, k)).collect();
    let net_a: Ipv4Net = "10.244.0.0/16".parse().expect("test data");
    let net_b: Ipv4Net = NET_B.parse().expect("test data");
    for k in 1..=2 {
        let env = b.env(k).expect("test data");
        assert_eq!(env.network, Some(net_b), "node {k}: {env:?}");
        assert!(net_a.contains(&lab.subnet(k).expect("test data")));
    }

    // Both overlays work, each on its own device.
    let (pa1, pa2) = (
        lab.pod_ns(1).expect("test data").to_owned(),
        lab.pod_ip(2).expect("test data"),
    );
    let pb1 = format!("{}-q1", lab.name());
    pings_until_ok(&pa1, pa2);
    pings_until_ok(&pb1, pod_b[1]);
    pings_until_ok(&format!("{}-q2", lab.name()), pod_b[0]);
    let n1 = lab.node_ns(1).expect("test data").to_owned();
    for (dev, vni) in [("flannel.1", 1), ("flannel.2", 2)] {
        let link: serde_json::Value =
            serde_json::from_str(&ip(&n1, &format!("-d -j link show dev {dev}")))
                .expect("test data");
        assert_eq!(link[0]["linkinfo"]["info_data"]["id"], vni, "{link}");
    }
    assert_eq!(overlay(&n1, "flannel.1", net_a).1.len(), 1);
    assert_eq!(overlay(&n1, "flannel.2", net_b).1.len(), 1);

    // Network B's daemon on node 1 restarts: network A is untouched.
    restart_keeps_the_other_network(
        "network B restarted",
        &pa1,
        pa2,
        (&n1, "flannel.1", net_a),
        || {
            b.stop(1);
            b.start(&lab, 1);
            wait_until(READY, || {
                (common::ping_replies(&pb1, pod_b[1], 1) == 1)
                    .then_some(())
                    .ok_or(format!(
                        "network B not back; its log:\n{}",
                        std::fs::read_to_string(b.log(1)).unwrap_or_default()
                    ))
            })
            .expect("network B back");
        },
    );
    // Network A's daemon on node 1 restarts: network B is untouched.
    restart_keeps_the_other_network(
        "network A restarted",
        &pb1,
        pod_b[1],
        (&n1, "flannel.2", net_b),
        || {
            lab.restart_node(1).expect("restart network A's daemon");
            lab.wait_subnet_env(1, READY).expect("network A back");
            pings_until_ok(&pa1, pa2);
        },
    );

    // Network B leaves node 2: `weft cleanup --network` removes its device and routes only.
    b.stop(2);
    let n2 = lab.node_ns(2).expect("test data").to_owned();
    let a_before = overlay(&n2, "flannel.1", net_a);
    let out = Command::new("ip")
        .args(["netns", "exec", &n2])
        .arg(common::weft_bin())
        .args(["cleanup", "--network", NET_B])
        .arg(format!("--subnet-file={}", b.subnet_file(2).display()))
        .output()
        .expect("weft cleanup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "weft cleanup --network: {text}");
    assert!(text.contains("ip link del flannel.2"), "{text}");
    let links = ip(&n2, "-j link show");
    assert!(!links.contains("\"flannel.2\""), "{links}");
    assert_eq!(overlay(&n2, "flannel.1", net_a), a_before, "{text}");
    assert!(
        common::routes_in(&n2)
            .expect("test data")
            .iter()
            .all(
                |r| r["dst"].as_str().is_none_or(|d| !d.starts_with("10.245."))
                    || !common::route_protocol_is(r, 87)
            ),
        "network B's routes are gone"
    );
    pings_until_ok(&pa1, pa2);
    // One read, right after the cleanup: network A's lines are in place and B's gone. (The
    // cleanup and A's daemon both rewrite the shared chains; neither may drop the other's
    // lines, not even for the moment until A's daemon would repair them.)
    let rules = sh("ip", &["netns", "exec", &n2, "iptables-save"]);
    assert!(
        !rules.contains("10.245.0.0/16") && rules.contains("10.244.0.0/16"),
        "{rules}\ncleanup: {text}\nnetwork A's daemon on node 2:\n{}\nnetwork B's:\n{}",
        lab.log_tail(2, 40),
        std::fs::read_to_string(b.log(2)).unwrap_or_default()
    );
}
