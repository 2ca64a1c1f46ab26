//! End to end: `weft cleanup` on a vxlan lab node whose agent was stopped with SIGTERM (which
//! leaves the device, routes, lease and subnet.env in place) removes weft's kernel state, is
//! idempotent, and with `--release-lease --remove-subnet-env` also removes the etcd key, the
//! etcd lease and the file — and nothing of the other node's. Masquerade/forward rules of both
//! firewall modes go too.
#[path = "common/lab.rs"]
mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{WEFT_ROUTE_PROTOCOL, route_protocol_is, routes_in, wait_until};
use weft_testkit::lab::{Lab, LabSpec, Signal};

const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);

/// `ip netns exec <node k> weft cleanup <args> --etcd-endpoints=<endpoint> --subnet-file=…
/// --peer-cache-file=…`.
fn cleanup(lab: &Lab, k: usize, endpoint: &str, args: &[&str]) -> Output {
    let ns = lab.node_ns(k).expect("ns");
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(common::weft_bin())
        .arg("cleanup")
        .args(args)
        .arg(format!("--etcd-endpoints={endpoint}"))
        .arg(format!(
            "--subnet-file={}",
            lab.subnet_file(k).expect("path").display()
        ))
        .arg(format!(
            "--peer-cache-file={}",
            lab.peer_cache_file(k).expect("path").display()
        ))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run weft cleanup")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn flannel_links(lab: &Lab, k: usize) -> Vec<String> {
    lab.ip_json(k, &["link", "show"])
        .expect("ip link")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with("flannel"))
        .collect()
}

fn weft_routes(lab: &Lab, k: usize) -> Vec<String> {
    routes_in(lab.node_ns(k).expect("ns"))
        .expect("routes")
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL))
        .map(|r| r.to_string())
        .collect()
}

/// Runs a command line (split on spaces) in namespace `ns`; stdout.
fn in_ns(ns: &str, cmdline: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmdline.split(' '))
        .output()
        .map_err(|e| format!("{cmdline}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmdline}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-save` (nat and filter) and `nft list tables` of a namespace.
fn firewall_state(ns: &str) -> String {
    let mut s = String::new();
    for cmd in [
        "iptables-save -t nat",
        "iptables-save -t filter",
        "nft list tables",
    ] {
        s.push_str(&in_ns(ns, cmd).unwrap_or_else(|e| e));
    }
    s
}

fn lease_key(lab: &Lab, k: usize) -> String {
    let net = lab.subnet(k).expect("subnet");
    format!(
        "/coreos.com/network/subnets/{}-{}",
        net.addr(),
        net.prefix_len()
    )
}

/// The etcd lease id (decimal, as `etcdctl -w json` prints it) attached to `key`, 0 for none.
fn etcd_lease_of(lab: &Lab, key: &str) -> Option<i64> {
    let out = lab
        .etcdctl(&["get", key, "-w", "json"])
        .expect("etcdctl get");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    v["kvs"]
        .as_array()
        .and_then(|kvs| kvs.first())
        .map(|kv| kv["lease"].as_i64().unwrap_or(0))
}

fn etcd_lease_ids(lab: &Lab) -> Vec<i64> {
    let out = lab
        .etcdctl(&["lease", "list", "-w", "json"])
        .expect("lease list");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    v["leases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["id"].as_i64())
        .collect()
}

#[test]
fn cleanup_removes_weft_state_idempotently_and_releases_the_lease() {
    if !common::need::root("cleanup_removes_weft_state_idempotently_and_releases_the_lease") {
        return;
    }
    let mut spec = LabSpec::new(2, common::weft_bin());
    spec.backend = "vxlan".to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    wait_until(CONVERGE, || {
        let r = weft_routes(&lab, 1);
        if r.len() == 1 {
            Ok(())
        } else {
            Err(format!("node 1 weft routes: {r:?}"))
        }
    })
    .expect("node 1 has its vxlan route");
    let endpoint = lab.etcd_endpoint().expect("endpoint");

    let st = lab
        .stop_node(1, Signal::SIGTERM)
        .expect("stop")
        .expect("was running");
    assert!(st.success(), "{st}");
    // SIGTERM leaves everything in place; add a stray weft route on eth0 too (host-gw style).
    assert_eq!(flannel_links(&lab, 1), ["flannel.1"]);
    lab.ip(
        1,
        &[
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            "198.18.0.2",
            "dev",
            "eth0",
            "proto",
            "87",
        ],
    )
    .expect("route add");
    // And a stray weft route on a nexthop object of weft's, next to someone else's nexthop and
    // route (which stay).
    for args in [
        "nexthop add id 900 via 198.18.0.2 dev eth0 proto 87",
        "route add 10.98.0.0/24 nhid 900 proto 87",
        "nexthop add id 901 via 198.18.0.2 dev eth0 proto static",
        "route add 10.97.0.0/24 nhid 901 proto static",
    ] {
        lab.ip(1, &args.split(' ').collect::<Vec<_>>()).expect(args);
    }
    assert_eq!(weft_routes(&lab, 1).len(), 3);
    // A host-gw peer route as flanneld writes it (no protocol of weft's: `proto boot`), to a
    // subnet neither node holds (they are allocated at random), and an operator's static route
    // outside the network, which must stay.
    let held = [
        lab.subnet(1).expect("subnet"),
        lab.subnet(2).expect("subnet"),
    ];
    let flanneld_dst = ["10.244.250.0/24", "10.244.251.0/24", "10.244.252.0/24"]
        .into_iter()
        .find(|d| held.iter().all(|h| h.to_string() != *d))
        .expect("a free subnet");
    for args in [
        format!("route add {flanneld_dst} via 198.18.0.2 dev eth0"),
        "route add 10.96.0.0/24 via 198.18.0.2 dev eth0".to_string(),
    ] {
        lab.ip(1, &args.split(' ').collect::<Vec<_>>())
            .expect(&args);
    }
    // flanneld-style masquerade/forward rules (iptables) and an nftables-mode table. The agent
    // may have made FLANNEL-FWD itself (forward rules are on by default).
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let mut rules = vec![
        "iptables -t nat -N FLANNEL-POSTRTG",
        "iptables -t nat -A POSTROUTING -m comment --comment flanneld-masq -j FLANNEL-POSTRTG",
        "iptables -t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld-masq -j MASQUERADE",
        "nft add table ip flannel-ipv4",
    ];
    if !firewall_state(&ns1).contains("FLANNEL-FWD") {
        rules.extend([
            "iptables -t filter -N FLANNEL-FWD",
            "iptables -t filter -A FORWARD -m comment --comment flanneld-forward -j FLANNEL-FWD",
            "iptables -t filter -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment flanneld-forward -j ACCEPT",
        ]);
    }
    for args in rules {
        in_ns(&ns1, args).expect("add rule");
    }
    let fw = firewall_state(&ns1);
    assert!(
        fw.contains("FLANNEL-FWD") && fw.contains("flannel-ipv4"),
        "{fw}"
    );
    assert!(firewall_state(&ns1).contains("FLANNEL-POSTRTG"));
    let key1 = lease_key(&lab, 1);
    let key2 = lease_key(&lab, 2);
    let lease1 = etcd_lease_of(&lab, &key1).expect("node 1's key exists");
    assert_ne!(lease1, 0);

    // First run: the device and the stray route go; the lease and the file stay.
    let out = cleanup(&lab, 1, &endpoint, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ip link del flannel.1"), "{}", text(&out));
    assert!(
        stderr.contains("ip route del 10.99.0.0/24 via 198.18.0.2 dev eth0 proto 87"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("ip route del 10.98.0.0/24 nhid 900 proto 87  # via 198.18.0.2 dev eth0"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("ip nexthop del id 900  # via 198.18.0.2 dev eth0"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!(
            "ip route del {flanneld_dst} via 198.18.0.2 dev eth0 (flanneld's)"
        )),
        "{}",
        text(&out)
    );
    let left = routes_in(lab.node_ns(1).expect("ns")).expect("routes");
    assert!(
        left.iter().all(|r| r["dst"] != flanneld_dst),
        "flanneld's route stayed: {left:?}"
    );
    assert!(
        left.iter().any(|r| r["dst"] == "10.96.0.0/24"),
        "the operator's route outside the network went: {left:?}"
    );
    // flannel.1, the two routes, nexthop 900 (weft's nexthop on flannel.1 went with the
    // device), flanneld's route.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 5 object(s), 0 failure(s)"),
        "{}",
        text(&out)
    );
    let nexthops = lab.ip_json(1, &["nexthop", "show"]).expect("ip nexthop");
    let ids: Vec<u64> = nexthops
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert_eq!(
        ids,
        [901],
        "only someone else's nexthop is left: {nexthops}"
    );
    assert!(
        routes_in(lab.node_ns(1).expect("ns"))
            .expect("routes")
            .iter()
            .any(|r| r["dst"] == "10.97.0.0/24"),
        "someone else's route on a nexthop stays"
    );
    assert!(flannel_links(&lab, 1).is_empty());
    assert!(
        weft_routes(&lab, 1).is_empty(),
        "{:?}",
        weft_routes(&lab, 1)
    );
    let fw = firewall_state(&ns1);
    assert!(
        !fw.contains("FLANNEL") && !fw.contains("flannel-ipv4"),
        "firewall rules left: {fw}\n{}",
        text(&out)
    );
    assert!(
        etcd_lease_of(&lab, &key1).is_some(),
        "lease kept without --release-lease"
    );
    assert!(lab.subnet_file(1).expect("path").exists());

    // Second run: nothing to do.
    let out = cleanup(&lab, 1, &endpoint, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to do"),
        "{}",
        text(&out)
    );

    // Releasing with etcd unreachable: that step fails and is reported (exit 1), the others
    // still run (the file goes).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let subnet_file = lab.subnet_file(1).expect("path");
    let saved = std::fs::read(&subnet_file).expect("read subnet.env");
    let out = cleanup(
        &lab,
        1,
        &format!("http://127.0.0.1:{port}"),
        &["--release-lease", "--remove-subnet-env"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed: release the lease"),
        "{}",
        text(&out)
    );
    assert!(!subnet_file.exists());
    assert!(
        lab.peer_cache_file(1).expect("path").exists(),
        "the peer cache went although the lease was not released"
    );
    assert!(etcd_lease_of(&lab, &key1).is_some());
    std::fs::write(&subnet_file, saved).expect("restore subnet.env");

    // --release-lease --remove-subnet-env: node 1's key, etcd lease and file go.
    let out = cleanup(
        &lab,
        1,
        &endpoint,
        &["--release-lease", "--remove-subnet-env"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("etcdctl del {key1}")),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!("etcdctl lease revoke {lease1:x}")),
        "{}",
        text(&out)
    );
    assert!(
        etcd_lease_of(&lab, &key1).is_none(),
        "key {key1} still there"
    );
    assert!(
        !etcd_lease_ids(&lab).contains(&lease1),
        "etcd lease still there"
    );
    assert!(!subnet_file.exists());
    assert!(
        !lab.peer_cache_file(1).expect("path").exists(),
        "the released node's peer cache is still there"
    );
    // Node 2 is untouched.
    assert!(etcd_lease_of(&lab, &key2).is_some(), "node 2's key is gone");
    assert!(
        lab.node_running(2).expect("status"),
        "node 2's agent exited"
    );

    // And once more: nothing to do.
    let out = cleanup(
        &lab,
        1,
        &endpoint,
        &["--release-lease", "--remove-subnet-env"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to do"),
        "{}",
        text(&out)
    );
    lab.teardown().expect("teardown");
}
