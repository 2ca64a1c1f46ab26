//! vxlan DirectRouting decided by the kernel's route to each peer (`ip route get`), as flanneld
//! decides it, in a network namespace: a peer on the interface's subnet and one behind an on-link
//! route are routed directly, one behind a router goes through the tunnel. Skipped (with a
//! message) when not root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use backends::reconcile::Reconciler;
use backends::vxlan::Vxlan;
use backends::{AnyBackend, Backend, Netlink};
use net_conf::{BackendConf, VxlanConf};

use common::{ext, in_netns, ip, underlay, vxlan_peer, weft_route_list};

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
