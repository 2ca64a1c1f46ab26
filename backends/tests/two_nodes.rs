//! Data-path tests: two "nodes" (named network namespaces joined by a veth pair), each running a
//! backend on its own thread with its own current-thread runtime, exchanging their lease
//! attributes like etcd would, then pinging pod addresses across. Namespaces are removed by a
//! Drop guard, also when the test fails. Skipped (with a message) when not root.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use backends::hostgw::HostGw;
use backends::nl::Netlink;
use backends::reconcile::Reconciler;
use backends::vxlan::Vxlan;
use backends::{Backend, ExternalInterface, Peer};
use ipnet::Ipv4Net;
use net_conf::{SubnetKey, VxlanConf};
use tokio::sync::oneshot;

use common::ip;

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("weft-t{}-{tag}", std::process::id());
        ip(&format!("netns add {name}"));
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip_in(ns: &Netns, args: &str) {
    ip(&format!("-n {} {args}", ns.0));
}

/// Two nodes: `a` with eth0 198.18.0.1/24, `b` with eth0 198.18.0.2/24, joined by a veth pair.
fn two_nodes(tag: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}-a"));
    let b = Netns::new(&format!("{tag}-b"));
    ip(&format!(
        "link add eth0 netns {} type veth peer name eth0 netns {}",
        a.0, b.0
    ));
    for (ns, addr) in [(&a, "198.18.0.1/24"), (&b, "198.18.0.2/24")] {
        ip_in(ns, &format!("addr add {addr} dev eth0"));
        ip_in(ns, "link set eth0 up");
        ip_in(ns, "link set lo up");
    }
    (a, b)
}

fn ext_of(index: u32, addr: Ipv4Addr) -> ExternalInterface {
    ExternalInterface {
        name: "eth0".into(),
        index,
        iface_addr: addr,
        ext_addr: addr,
        mtu: 1500,
        prefixes: vec!["198.18.0.0/24".parse().unwrap()],
        v6: None,
    }
}

/// One node's agent, in `ns` on its own thread: prepare, configure, publish its lease, take the
/// other node's, apply. Returns after the first apply, with its number of writes.
fn spawn_node<B: Backend + Send + 'static>(
    ns: &Netns,
    mut backend: B,
    addr: Ipv4Addr,
    own: Ipv4Net,
    publish: oneshot::Sender<Peer>,
    learn: oneshot::Receiver<Peer>,
) -> std::thread::JoinHandle<usize> {
    let path = format!("/var/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let nl = Netlink::connect().unwrap();
            let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap();
            let ext = ext_of(eth0.index, addr);
            let attrs = backend.prepare(&nl, &ext).await.unwrap();
            backend
                .configure(&ext, &net_conf::SubnetKey::new(own))
                .unwrap();
            publish
                .send(Peer {
                    key: SubnetKey::new(own),
                    attrs,
                })
                .unwrap();
            let other = learn.await.unwrap();
            let desired = backend.desired(&ext, &[other]);
            assert!(desired.skipped.is_empty(), "{:?}", desired.skipped);
            let mut rec = Reconciler::new(nl);
            let report = rec.apply(&desired.state).await;
            assert!(report.is_ok(), "{report:?}");
            report.writes
        })
    })
}

/// Pings `dst` from `src` inside `ns` until one reply arrives or 10 s pass.
fn ping(ns: &Netns, src: &str, dst: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns.0, "ping", "-n", "-c1", "-W1", "-I", src, dst,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no reply from {dst} (source {src}) in {}: {}",
            ns.0,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn run_pair<B: Backend + Send + 'static>(
    tag: &str,
    make: impl Fn() -> B,
    after_setup: impl Fn(&Netns, &Netns),
) -> (Netns, Netns) {
    let (a, b) = two_nodes(tag);
    after_setup(&a, &b);
    let (a_tx, a_rx) = oneshot::channel();
    let (b_tx, b_rx) = oneshot::channel();
    let ta = spawn_node(
        &a,
        make(),
        Ipv4Addr::new(198, 18, 0, 1),
        "10.244.1.0/24".parse().unwrap(),
        a_tx,
        b_rx,
    );
    let tb = spawn_node(
        &b,
        make(),
        Ipv4Addr::new(198, 18, 0, 2),
        "10.244.2.0/24".parse().unwrap(),
        b_tx,
        a_rx,
    );
    let wa = ta.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    let wb = tb.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert!(wa > 0 && wb > 0, "both nodes programmed their peer");
    (a, b)
}

#[test]
fn host_gw_pods_reach_each_other() {
    if !common::need::root("host_gw_pods_reach_each_other") {
        return;
    }
    let (a, b) = run_pair("hostgw", HostGw::new, |a, b| {
        // "Pods": an address of each node's subnet on its loopback.
        ip_in(a, "addr add 10.244.1.1/32 dev lo");
        ip_in(b, "addr add 10.244.2.1/32 dev lo");
    });
    ping(&a, "10.244.1.1", "10.244.2.1");
    ping(&b, "10.244.2.1", "10.244.1.1");
}

#[test]
fn vxlan_pods_reach_each_other() {
    if !common::need::root("vxlan_pods_reach_each_other") {
        return;
    }
    let (a, b) = run_pair("vxlan", || Vxlan::new(VxlanConf::default()), |_, _| {});
    // The apply put <subnet>.0/32 on flannel.1 (the desired state of configure): the node's own
    // overlay address.
    ping(&a, "10.244.1.0", "10.244.2.0");
    ping(&b, "10.244.2.0", "10.244.1.0");
    // The traffic really went through the tunnel: flannel.1 counted packets both ways.
    let out = Command::new("ip")
        .args(["-n", &a.0, "-j", "-s", "link", "show", "dev", "flannel.1"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stats = &j[0]["stats64"];
    assert!(stats["tx"]["packets"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["rx"]["packets"].as_u64().unwrap() > 0, "{stats}");
}
