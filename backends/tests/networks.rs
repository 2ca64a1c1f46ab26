//! Two flannel networks on one host (flannel's "multiple networks"), each with its own
//! reconciler scoped to its network ([`Ownership::network`]), in one network namespace, beside a
//! third network's device and a fourth network programmed as flanneld does it: neither removes,
//! rewrites or adopts another network's device, routes, ARP entries or nexthops, at start, on a
//! restart or when it cleans up; each purges its own leftovers. Skipped (with a message) when not root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use backends::hostgw::HostGw;
use backends::reconcile::Reconciler;
use backends::vxlan::Vxlan;
use backends::{Backend, KernelState, Netlink, Ownership, Peer};
use net_conf::{LeaseAttrs, SubnetKey, VxlanConf};

use common::{Mode, ext, in_netns_each_mode, ip, ip_json, nexthops, underlay, weft_route_list};

const NET_A: &str = "10.244.0.0/16";
const NET_B: &str = "10.245.0.0/16";

fn peer(subnet: &str, backend: &str, data: Option<&str>) -> Peer {
    Peer {
        key: SubnetKey::new(subnet.parse().unwrap()),
        attrs: LeaseAttrs {
            public_ip: "198.18.0.2".parse().unwrap(),
            public_ipv6: None,
            backend_type: backend.into(),
            backend_data: data.map(str::to_string),
            backend_v6_data: None,
        },
    }
}

fn reconciler(mode: Mode, network: &str) -> Reconciler {
    Reconciler::new(Netlink::connect().unwrap())
        .with_route_nexthops(mode.nexthops())
        .with_ownership(Ownership::network(network.parse().unwrap()))
}

/// Network A: vxlan VNI 1 (`flannel.1` with 10.244.1.0/32), one peer.
async fn desired_a(nl: &Netlink, eth0: u32) -> KernelState {
    let mut vx = Vxlan::new(VxlanConf::default());
    vx.prepare(nl, &ext(eth0)).await.unwrap();
    vx.configure(
        &ext(eth0),
        &net_conf::SubnetKey::new("10.244.1.0/24".parse().unwrap()),
    )
    .unwrap();
    let p = peer(
        "10.244.2.0/24",
        "vxlan",
        Some(r#"{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}"#),
    );
    let d = vx.desired(&ext(eth0), &[p]);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    d.state
}

/// Network B: host-gw, one peer on the same node as A's peer.
fn desired_b(eth0: u32) -> KernelState {
    let d = HostGw::new().desired(&ext(eth0), &[peer("10.245.2.0/24", "host-gw", None)]);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    d.state
}

/// Table main's protocol-87 routes as (dst, dev).
fn weft_routes() -> BTreeSet<(String, String)> {
    weft_route_list()
        .into_iter()
        .map(|r| (r.dst, r.dev))
        .collect()
}

fn both() -> BTreeSet<(String, String)> {
    BTreeSet::from([
        ("10.244.2.0/24".into(), "flannel.1".into()),
        ("10.245.2.0/24".into(), "eth0".into()),
    ])
}

fn link_exists(name: &str) -> bool {
    ip_json("link show")
        .iter()
        .any(|l| l["ifname"].as_str() == Some(name))
}

#[test]
fn two_networks_on_one_host_keep_to_their_own_objects() {
    in_netns_each_mode(
        "two_networks_on_one_host_keep_to_their_own_objects",
        |mode| async move {
            let eth0 = underlay();
            let nl = Netlink::connect().unwrap();
            // Leftovers: network A's stale route, and a route of A's on a nexthop an older weft
            // made (id 5, below every network's range); a vxlan device of a third network that
            // has no address yet.
            ip("route add 10.244.9.0/24 via 198.18.0.9 dev eth0 proto 87");
            ip("nexthop add id 5 via 198.18.0.5 dev eth0 proto 87");
            ip("route add 10.244.5.0/24 nhid 5 proto 87");
            ip("link add flannel.3 type vxlan id 3 dstport 8472 dev eth0 nolearning");
            // flanneld running a fourth network beside: its device with its address, its plain
            // route (no protocol of weft's) and ARP entry.
            ip("link add flannel.4 type vxlan id 4 dstport 8472 dev eth0 nolearning");
            ip("addr add 10.246.1.0/32 dev flannel.4");
            ip("link set flannel.4 up");
            ip("neigh add 10.246.2.0 lladdr 0a:00:00:00:04:02 dev flannel.4 nud permanent");
            ip("route add 10.246.2.0/24 via 10.246.2.0 dev flannel.4 onlink");
            let flanneld = || {
                let routes = ip("route show 10.246.2.0/24");
                let neigh = ip("neigh show dev flannel.4");
                (routes, neigh)
            };
            let flanneld_before = flanneld();
            assert!(
                flanneld_before.0.contains("flannel.4"),
                "{flanneld_before:?}"
            );

            let want_a = desired_a(&nl, eth0).await;
            let want_b = desired_b(eth0);
            let mut a = reconciler(mode, NET_A);
            let report = a.apply(&want_a).await;
            assert!(report.is_ok(), "{report:?}");
            let mut b = reconciler(mode, NET_B);
            let report = b.apply(&want_b).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 1, "B wrote its one route and nothing else");
            assert_eq!(weft_routes(), both(), "A purged its leftovers, B kept A's");
            assert!(
                !nexthops().contains_key(&5),
                "A adopted the old nexthop and removed it"
            );
            assert!(link_exists("flannel.1") && link_exists("flannel.3"));

            if mode.nexthops() {
                let ids_a = Ownership::network(NET_A.parse().unwrap())
                    .nexthop_ids()
                    .unwrap();
                let ids_b = Ownership::network(NET_B.parse().unwrap())
                    .nexthop_ids()
                    .unwrap();
                for r in weft_route_list() {
                    let id = r.nhid.expect("a route on a nexthop") as u32;
                    let range = if r.dst.starts_with("10.244.") {
                        &ids_a
                    } else {
                        &ids_b
                    };
                    assert!(
                        range.contains(&id),
                        "{} on nexthop {id}, outside {range:?}",
                        r.dst
                    );
                }
            }

            // Either daemon restarted (a new reconciler, a dump first) changes nothing.
            for (net, want) in [(NET_A, &want_a), (NET_B, &want_b)] {
                let mut again = reconciler(mode, net);
                let report = again.apply(want).await;
                assert!(report.is_ok(), "{report:?}");
                assert_eq!(report.writes, 0, "{net} restarted: {report:?}");
                assert_eq!(weft_routes(), both());
            }

            // B cleans up (the empty state): only B's route and nexthop go.
            let before: BTreeSet<u64> = nexthops().into_keys().collect();
            let report = b.apply(&KernelState::default()).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(
                weft_routes(),
                BTreeSet::from([("10.244.2.0/24".into(), "flannel.1".into())])
            );
            let after: BTreeSet<u64> = nexthops().into_keys().collect();
            assert!(after.is_subset(&before));
            assert_eq!(
                before.len() - after.len(),
                usize::from(mode.nexthops()),
                "B's one nexthop went, A's stayed: {before:?} → {after:?}"
            );
            // A cleans up: its device goes, the third network's device stays.
            let report = a.apply(&KernelState::default()).await;
            assert!(report.is_ok(), "{report:?}");
            assert!(weft_routes().is_empty());
            assert!(!link_exists("flannel.1") && link_exists("flannel.3"));
            // flanneld's network went through all of it untouched.
            assert!(link_exists("flannel.4"));
            assert_eq!(flanneld(), flanneld_before);
        },
    );
}

#[test]
fn a_wanted_device_without_an_address_is_adopted_after_an_early_dump() {
    in_netns_each_mode(
        "a_wanted_device_without_an_address_is_adopted_after_an_early_dump",
        |mode| async move {
            let eth0 = underlay();
            let nl = Netlink::connect().unwrap();
            // Left by a run that stopped between `ip link add` and `ip addr add`: our device,
            // with no address of the network yet and another MTU.
            ip(
                "link add flannel.1 mtu 1400 type vxlan id 1 local 198.18.0.1 dev eth0 dstport 8472 nolearning",
            );
            let index = ip_json("link show dev flannel.1")[0]["ifindex"]
                .as_u64()
                .unwrap();
            let want = desired_a(&nl, eth0).await;
            let mut a = reconciler(mode, NET_A);
            // The agent dumps once at start, before it knows which devices it wants.
            a.refresh().await.unwrap();
            let report = a.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            let link = &ip_json("-d link show dev flannel.1")[0];
            assert_eq!(
                link["ifindex"].as_u64().unwrap(),
                index,
                "adopted, not made again"
            );
            assert_eq!(link["mtu"], 1450, "its MTU fixed in place");
            assert!(ip("addr show dev flannel.1").contains("10.244.1.0/32"));
        },
    );
}
