//! Kernel tests of IPv6 routes beside IPv4 ones, in fresh network namespaces (see
//! `kernel_apply.rs`): the netlink calls for IPv6 routes and nexthops, and the reconciler applying
//! host-gw's desired state for dual-stack peers, with plain routes and on nexthop objects.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use backends::hostgw::HostGw;
use backends::nl::{self, Hop, Netlink};
use backends::plan::V6_METRIC;
use backends::reconcile::Reconciler;
use backends::{Backend, KernelState, Ownership, Peer, RTPROT_WEFT, Route};
use net_conf::{LeaseAttrs, SubnetKey};
use serde_json::Value;

use common::{
    Mode, drive_until, ext_dual, in_netns, in_netns_each_mode, ip, ip_json, nexthops,
    own_writes_are_quiet, underlay_dual, weft_route_list,
};

/// `ip -6 -j route show table main` entries with protocol 87.
fn weft_v6_routes() -> Vec<Value> {
    ip_json("-6 route show table main")
        .into_iter()
        .filter(|r| r["protocol"] == "87")
        .collect()
}

/// weft's IPv6 routes (protocol 87, table main) as `dst via gateway dev eth0 metric M`, the
/// gateway and device read from the nexthop for a route on one, with `nhid` when on one.
/// Panics on a route on a missing nexthop.
fn v6_routes() -> BTreeSet<String> {
    let nhs = nexthops();
    weft_v6_routes()
        .iter()
        .map(|r| {
            let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
            let (gw, dev, nh) = match r["nhid"].as_u64() {
                Some(id) => {
                    let n = nhs
                        .get(&id)
                        .unwrap_or_else(|| panic!("route {r} on a missing nexthop"));
                    assert_eq!(n["protocol"], "87", "{n}");
                    // `ip -j nexthop` has no family field: an IPv6 gateway tells.
                    assert!(s(n, "gateway").contains(':'), "{n}");
                    (s(n, "gateway"), s(n, "dev"), " nhid")
                }
                None => (s(r, "gateway"), s(r, "dev"), ""),
            };
            format!(
                "{} via {gw} dev {dev} metric {}{nh}",
                s(r, "dst"),
                r["metric"]
            )
        })
        .collect()
}

fn v6(dst: &str, gw: &str, mode: Mode) -> String {
    let nh = if mode.nexthops() { " nhid" } else { "" };
    format!("{dst} via {gw} dev eth0 metric {V6_METRIC}{nh}")
}

/// A dual-stack host-gw peer: `10.244.<n>.0/24` via `198.18.0.<n>` and `fd00:244:0:<n>::/64`
/// via `fd00:18::<n>`.
fn dual_peer(n: u8) -> Peer {
    Peer {
        key: SubnetKey {
            v4: Some(format!("10.244.{n}.0/24").parse().unwrap()),
            v6: Some(format!("fd00:244:0:{n}::/64").parse().unwrap()),
        },
        attrs: LeaseAttrs {
            public_ip: format!("198.18.0.{n}").parse().unwrap(),
            public_ipv6: Some(format!("fd00:18::{n}").parse().unwrap()),
            backend_type: "host-gw".into(),
            backend_data: None,
            backend_v6_data: None,
        },
    }
}

fn desired(index: u32, peers: &[Peer]) -> KernelState {
    let d = HostGw::new().desired(&ext_dual(index), peers);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    d.state
}

/// The IPv4 routes weft wrote, as `dst via gateway` (their shape is `kernel_apply.rs`'s business).
fn v4_routes() -> BTreeSet<String> {
    weft_route_list()
        .into_iter()
        .map(|r| format!("{} via {}", r.dst, r.gateway))
        .collect()
}

fn reconciler(mode: Mode) -> Reconciler {
    Reconciler::new(Netlink::connect().unwrap()).with_route_nexthops(mode.nexthops())
}

/// weft's nexthops (protocol 87) with an IPv6 gateway.
fn v6_nexthop_count() -> usize {
    nexthops()
        .values()
        .filter(|n| n["protocol"] == "87" && n["gateway"].as_str().is_some_and(|g| g.contains(':')))
        .count()
}

#[test]
fn host_gw_dual_stack_routes_written_once_then_nothing() {
    in_netns_each_mode(
        "host_gw_dual_stack_routes_written_once_then_nothing",
        |mode| async move {
            let eth0 = underlay_dual();
            let want = desired(eth0, &[dual_peer(2), dual_peer(3)]);
            let mut rec = reconciler(mode);
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            // Two IPv4 and two IPv6 routes.
            assert_eq!(report.writes, 4, "{report:?}");
            assert_eq!(
                v6_routes(),
                BTreeSet::from([
                    v6("fd00:244:0:2::/64", "fd00:18::2", mode),
                    v6("fd00:244:0:3::/64", "fd00:18::3", mode),
                ])
            );
            assert_eq!(
                v4_routes(),
                BTreeSet::from([
                    "10.244.2.0/24 via 198.18.0.2".to_string(),
                    "10.244.3.0/24 via 198.18.0.3".to_string(),
                ])
            );
            let expect_nh = if mode.nexthops() { 2 } else { 0 };
            assert_eq!(v6_nexthop_count(), expect_nh);

            // Nothing to do a second time, nor after a dump (the dump reads the IPv6 routes at
            // metric 1024 back as what was written), nor for a new reconciler.
            let again = rec.apply(&want).await;
            assert_eq!((again.writes, again.nexthop_writes), (0, 0), "{again:?}");
            rec.refresh().await.unwrap();
            let again = rec.apply(&want).await;
            assert_eq!((again.writes, again.nexthop_writes), (0, 0), "{again:?}");
            let mut fresh = reconciler(mode);
            let again = fresh.apply(&want).await;
            assert_eq!((again.writes, again.nexthop_writes), (0, 0), "{again:?}");

            // The other way of writing: moved in place, IPv6 routes too.
            let other = match mode {
                Mode::Plain => Mode::Nexthop,
                Mode::Nexthop => Mode::Plain,
            };
            let mut switched = reconciler(other);
            let moved = switched.apply(&want).await;
            assert!(moved.is_ok(), "{moved:?}");
            assert_eq!(
                v6_routes(),
                BTreeSet::from([
                    v6("fd00:244:0:2::/64", "fd00:18::2", other),
                    v6("fd00:244:0:3::/64", "fd00:18::3", other),
                ])
            );
            assert_eq!(v6_nexthop_count(), if other.nexthops() { 2 } else { 0 });
            let again = switched.apply(&want).await;
            assert_eq!((again.writes, again.nexthop_writes), (0, 0), "{again:?}");
        },
    );
}

#[test]
fn host_gw_dual_stack_drift_repaired_and_peer_removed() {
    in_netns_each_mode(
        "host_gw_dual_stack_drift_repaired_and_peer_removed",
        |mode| async move {
            let eth0 = underlay_dual();
            let mut events = nl::subscribe().unwrap();
            let want = desired(eth0, &[dual_peer(2), dual_peer(3)]);
            let both = BTreeSet::from([
                v6("fd00:244:0:2::/64", "fd00:18::2", mode),
                v6("fd00:244:0:3::/64", "fd00:18::3", mode),
            ]);
            let mut rec = reconciler(mode);
            assert!(rec.apply(&want).await.is_ok());
            assert_eq!(v6_routes(), both);
            own_writes_are_quiet(&mut rec, &mut events).await;

            // Deleted out of band: the IPv6 route notification brings it back.
            ip("-6 route del fd00:244:0:2::/64");
            assert_eq!(v6_routes().len(), 1);
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "deleted IPv6 route re-added",
                |_| v6_routes() == both,
            )
            .await;
            assert!(!rec.needs_refresh(), "repaired from the notification alone");

            // Replaced out of band by a route of another protocol at weft's metric.
            ip("-6 route replace fd00:244:0:3::/64 via fd00:18::33 dev eth0 metric 1024");
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "replaced IPv6 route restored",
                |_| v6_routes() == both,
            )
            .await;
            assert!(
                !ip("-6 route show table main").contains("fd00:18::33"),
                "the foreign replacement is gone"
            );

            // A peer removed: its IPv6 route (and its nexthop) go, the other peer's stay.
            let fewer = desired(eth0, &[dual_peer(3)]);
            let report = rec.apply(&fewer).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(
                v6_routes(),
                BTreeSet::from([v6("fd00:244:0:3::/64", "fd00:18::3", mode)])
            );
            assert_eq!(
                v4_routes(),
                BTreeSet::from(["10.244.3.0/24 via 198.18.0.3".to_string()])
            );
            assert_eq!(v6_nexthop_count(), usize::from(mode.nexthops()));
            own_writes_are_quiet(&mut rec, &mut events).await;
        },
    );
}

#[test]
fn stale_ipv6_weft_routes_purged_at_start() {
    in_netns_each_mode(
        "stale_ipv6_weft_routes_purged_at_start",
        |mode| async move {
            let eth0 = underlay_dual();
            // Left over from an earlier run: a protocol-87 route of a peer gone (at the metric weft
            // writes, and one at another metric), and another network's; someone else's route.
            ip("-6 route add fd00:244:0:9::/64 via fd00:18::9 dev eth0 proto 87 metric 1024");
            ip("-6 route add fd00:244:0:8::/64 via fd00:18::8 dev eth0 proto 87 metric 5");
            ip("-6 route add fd00:300:0:1::/64 via fd00:18::7 dev eth0 proto 87 metric 1024");
            ip("-6 route add fd00:99::/64 via fd00:18::5 dev eth0 proto static");
            let want = desired(eth0, &[dual_peer(2)]);
            let owner = Ownership::network("10.244.0.0/16".parse().unwrap())
                .with_ipv6_network("fd00:244::/56".parse().unwrap());
            let mut rec = reconciler(mode).with_ownership(owner);
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            let dsts: BTreeSet<String> = weft_v6_routes()
                .iter()
                .map(|r| r["dst"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                dsts,
                BTreeSet::from([
                    "fd00:244:0:2::/64".to_string(),
                    // Another network's: not this daemon's to purge.
                    "fd00:300:0:1::/64".to_string(),
                ])
            );
            assert!(
                ip("-6 route show table main").contains("fd00:99::/64 via fd00:18::5"),
                "someone else's route stays"
            );
            let again = rec.apply(&want).await;
            assert_eq!((again.writes, again.nexthop_writes), (0, 0), "{again:?}");

            // Owning everything (`weft cleanup` without --network), the other network's goes too.
            let mut all = reconciler(mode);
            assert!(all.apply(&want).await.is_ok());
            let dsts: Vec<String> = weft_v6_routes()
                .iter()
                .map(|r| r["dst"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(dsts, ["fd00:244:0:2::/64"]);
        },
    );
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
