//! Kernel tests of IPv6 routes beside IPv4 ones, in fresh network namespaces (see `kernel.rs`):
//! the netlink calls for IPv6 routes and nexthops, and the reconciler applying host-gw's
//! desired state for dual-stack peers, with plain routes and on nexthop objects.
#![allow(clippy::unwrap_used)]

mod common;

use backends::nl::{Hop, Netlink};
use backends::plan::V6_METRIC;
use backends::{RTPROT_WEFT, Route};
use serde_json::Value;

use common::{in_netns, ip, ip_json, underlay_dual};

/// `ip -6 -j route show table main` entries with protocol 87.
fn weft_v6_routes() -> Vec<Value> {
    ip_json("-6 route show table main")
        .into_iter()
        .filter(|r| r["protocol"] == "87")
        .collect()
}

#[test]
fn ipv6_routes_and_nexthops_through_netlink() {
    in_netns("ipv6_routes_and_nexthops_through_netlink", || async {
        let eth0 = underlay_dual();
        let nl = Netlink::connect().unwrap();
        let route = Route {
            dst: "fd00:244:2::/64".parse().unwrap(),
            gateway: "fd00:18::2".parse().unwrap(),
            oif: eth0,
            onlink: false,
        };
        nl.route_replace(&route).await.unwrap();
        let listed = weft_v6_routes();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["dst"], "fd00:244:2::/64");
        assert_eq!(listed[0]["gateway"], "fd00:18::2");
        assert_eq!(listed[0]["dev"], "eth0");
        assert_eq!(listed[0]["metric"], u64::from(V6_METRIC));

        // The dump reads it back as weft's, equal to what was written.
        let dumped = nl.dump_owned_routes().await.unwrap();
        let v6: Vec<_> = dumped
            .iter()
            .filter(|e| e.route.dst.addr().is_ipv6())
            .collect();
        assert_eq!(v6.len(), 1, "{dumped:?}");
        assert!(v6[0].is_weft(), "{:?}", v6[0]);
        assert_eq!(v6[0].route, route);
        assert_eq!(v6[0].priority, V6_METRIC);

        // Replace is idempotent: still one route.
        nl.route_replace(&route).await.unwrap();
        assert_eq!(weft_v6_routes().len(), 1);

        // On an IPv6 nexthop object.
        let hop = Hop::of(&route);
        let (added, routed) = nl.nexthop_add_with_route(7, &hop, route.dst).await;
        added.unwrap();
        routed.unwrap();
        let listed = weft_v6_routes();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["nhid"], 7);
        assert_eq!(listed[0]["metric"], u64::from(V6_METRIC));
        let nh = nl.nexthop_get(7).await.unwrap().expect("nexthop 7");
        assert_eq!(nh.hop(), Some(hop));
        assert_eq!(nh.family, 10);
        let nh_json = ip_json("nexthop show id 7");
        assert_eq!(nh_json[0]["gateway"], "fd00:18::2");
        assert_eq!(nh_json[0]["protocol"], RTPROT_WEFT.to_string());
        assert!(nl.route_del_nhid(route.dst, 7).await.unwrap());
        assert!(weft_v6_routes().is_empty());
        nl.nexthop_del(7).await.unwrap();

        // Plain again, then deleted.
        nl.route_replace(&route).await.unwrap();
        nl.route_del(&route).await.unwrap();
        assert!(weft_v6_routes().is_empty());
        nl.route_del(&route).await.unwrap(); // already gone: success

        // A blackhole of weft's, IPv6.
        let own: ipnet::IpNet = "fd00:244:1::/64".parse().unwrap();
        nl.blackhole_replace(own).await.unwrap();
        let dumped = nl.dump_owned_routes().await.unwrap();
        assert!(
            dumped
                .iter()
                .any(|e| e.route.dst == own && e.is_weft_blackhole()),
            "{dumped:?}"
        );
        nl.blackhole_del(own).await.unwrap();
        assert!(ip(&format!("-6 route show {own}")).trim().is_empty());
    });
}
