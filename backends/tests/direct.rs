//! vxlan DirectRouting decided by the kernel's route to each peer (`ip route get`), as flanneld
//! decides it, in a network namespace: a peer on the interface's subnet and one behind an on-link
//! route are routed directly, one behind a router goes through the tunnel; the same for IPv6
//! peers on `flannel-v6.<VNI>` (`ip -6 route get`). Skipped (with a message) when not root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use backends::reconcile::Reconciler;
use backends::vxlan::Vxlan;
use backends::{AnyBackend, Backend, Netlink};
use net_conf::{BackendConf, VxlanConf};

use common::{
    ext, ext_dual, in_netns, ip, ip_json, underlay, underlay_dual, vxlan_peer, weft_route_list,
};

#[test]
fn direct_routing_follows_the_kernels_route_to_each_peer() {
    in_netns(
        "direct_routing_follows_the_kernels_route_to_each_peer",
        || async {
            let eth0 = underlay();
            // A peer network on the same wire without an address of ours (on-link), and one
            // behind a router.
            ip("route add 192.0.2.0/24 dev eth0");
            ip("route add 203.0.113.0/24 via 198.18.0.254 dev eth0");
            let ext = ext(eth0);
            let nl = Netlink::connect().unwrap();
            let conf = VxlanConf {
                direct_routing: true,
                ..VxlanConf::default()
            };
            let mut vx = AnyBackend::from_conf(&BackendConf::Vxlan(conf)).unwrap();
            vx.prepare(&nl, &ext).await.unwrap();
            vx.configure(
                &ext,
                &net_conf::SubnetKey::new("10.244.1.0/24".parse().unwrap()),
            )
            .unwrap();
            let peers = [
                vxlan_peer("10.244.2.0/24", "198.18.0.2", "0a:00:00:00:00:02"),
                vxlan_peer("10.244.3.0/24", "192.0.2.7", "0a:00:00:00:00:03"),
                vxlan_peer("10.244.4.0/24", "203.0.113.5", "0a:00:00:00:00:04"),
            ];
            let paths = vx.direct_paths_mut().expect("DirectRouting is on");
            let changed =
                backends::direct::look_up(&nl, paths, peers.iter().map(|p| p.attrs.public_ip))
                    .await;
            assert!(changed);
            let mut rec = Reconciler::new(nl.clone());
            let want = vx.desired(&ext, &peers);
            assert!(want.skipped.is_empty(), "{:?}", want.skipped);
            let report = rec.apply(&want.state).await;
            assert!(report.is_ok(), "{report:?}");
            let routes: BTreeSet<(String, String, String)> = weft_route_list()
                .into_iter()
                .map(|r| (r.dst, r.gateway, r.dev))
                .collect();
            assert_eq!(
                routes,
                BTreeSet::from([
                    ("10.244.2.0/24".into(), "198.18.0.2".into(), "eth0".into()),
                    ("10.244.3.0/24".into(), "192.0.2.7".into(), "eth0".into()),
                    (
                        "10.244.4.0/24".into(),
                        "10.244.4.0".into(),
                        "flannel.1".into()
                    ),
                ]),
                "direct for the two gateway-less paths, tunnelled behind the router"
            );
            // Only the tunnelled peer has ARP/FDB entries.
            assert_eq!(want.state.neighs.len(), 1);
            assert_eq!(want.state.fdb.len(), 1);

            // Without a lookup the interface's prefixes decide (the on-link peer is tunnelled):
            // what a plan without the agent's lookups, such as `weft status`'s, gives.
            let mut plain = Vxlan::new(VxlanConf {
                direct_routing: true,
                ..VxlanConf::default()
            });
            plain.prepare(&nl, &ext).await.unwrap();
            plain
                .configure(
                    &ext,
                    &net_conf::SubnetKey::new("10.244.1.0/24".parse().unwrap()),
                )
                .unwrap();
            let guess = plain.desired(&ext, &peers);
            let dst: ipnet::IpNet = "10.244.3.0/24".parse().unwrap();
            assert_eq!(
                guess.state.routes[&dst].gateway,
                std::net::IpAddr::from(Ipv4Addr::new(10, 244, 3, 0))
            );
        },
    );
}

/// A dual-stack vxlan peer: IPv4 subnet 10.244.n.0/24 at `v4`, IPv6 subnet fd00:244:0:n::/64 at
/// `v6`, VTEP MACs 0a:00:00:00:00:0n and 0a:00:00:00:16:0n.
fn dual_peer(n: u8, v4: &str, v6: &str) -> backends::Peer {
    let mut p = vxlan_peer(
        &format!("10.244.{n}.0/24"),
        v4,
        &format!("0a:00:00:00:00:{n:02x}"),
    );
    p.key.v6 = Some(format!("fd00:244:0:{n}::/64").parse().unwrap());
    p.attrs.public_ipv6 = Some(v6.parse().unwrap());
    p.attrs.backend_v6_data = Some(format!(r#"{{"VNI":1,"VtepMAC":"0a:00:00:00:16:{n:02x}"}}"#));
    p
}

/// (dst, gateway, dev, metric) of the IPv6 routes of protocol 87.
fn routes6() -> BTreeSet<(String, String, String, u64)> {
    ip_json("-6 route show table main proto 87")
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_string(),
                r["gateway"].as_str().unwrap_or("-").to_string(),
                r["dev"].as_str().unwrap_or("-").to_string(),
                r["metric"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn ipv6_direct_routing_follows_the_kernels_route_to_each_peer() {
    in_netns(
        "ipv6_direct_routing_follows_the_kernels_route_to_each_peer",
        || async {
            let eth0 = underlay_dual();
            // As for IPv4: a peer network on the wire without an address of ours (on-link), and
            // one behind a router.
            ip("-6 route add fd00:19::/64 dev eth0");
            ip("-6 route add fd00:20::/64 via fd00:18::fe dev eth0");
            let ext = ext_dual(eth0);
            let nl = Netlink::connect().unwrap();
            let mut vx = AnyBackend::from_conf(&BackendConf::Vxlan(VxlanConf {
                direct_routing: true,
                ..VxlanConf::default()
            }))
            .unwrap();
            vx.prepare(&nl, &ext).await.unwrap();
            let own = net_conf::SubnetKey::dual(
                "10.244.1.0/24".parse().unwrap(),
                "fd00:244:0:1::/64".parse().unwrap(),
            );
            vx.configure(&ext, &own).unwrap();
            let peers = [
                dual_peer(2, "198.18.0.2", "fd00:18::2"),
                dual_peer(3, "198.18.0.3", "fd00:19::7"),
                dual_peer(4, "198.18.0.4", "fd00:20::5"),
            ];
            let paths = vx.direct_paths_mut().expect("DirectRouting is on");
            let ips: Vec<std::net::IpAddr> = peers
                .iter()
                .flat_map(|p| paths.peer_ips(&p.attrs))
                .collect();
            assert_eq!(ips.len(), 6, "both families of each peer: {ips:?}");
            assert!(backends::direct::look_up(&nl, paths, ips).await);
            let mut rec = Reconciler::new(nl.clone());
            let want = vx.desired(&ext, &peers);
            assert!(want.skipped.is_empty(), "{:?}", want.skipped);
            let report = rec.apply(&want.state).await;
            assert!(report.is_ok(), "{report:?}");
            let route = |dst: &str, gw: &str, dev: &str| {
                (dst.to_string(), gw.to_string(), dev.to_string(), 1024)
            };
            assert_eq!(
                routes6(),
                BTreeSet::from([
                    route("fd00:244:0:2::/64", "fd00:18::2", "eth0"),
                    route("fd00:244:0:3::/64", "fd00:19::7", "eth0"),
                    route("fd00:244:0:4::/64", "fd00:244:0:4::", "flannel-v6.1"),
                ]),
                "direct for the two gateway-less paths, tunnelled behind the router"
            );
            // Only the tunnelled peer has NDP/FDB entries on flannel-v6.1 (the IPv4 sides are
            // all direct).
            assert_eq!(want.state.neighs.len(), 1);
            assert_eq!(want.state.fdb.len(), 1);
            assert_eq!(
                ip_json("-6 neigh show dev flannel-v6.1 nud permanent").len(),
                1
            );
            // A second apply writes nothing.
            let report = rec.apply(&want.state).await;
            assert!(report.is_ok() && report.writes == 0, "{report:?}");
        },
    );
}
