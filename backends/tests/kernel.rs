//! Kernel tests: each runs in a fresh network namespace on its own thread, with a current-thread
//! tokio runtime built after `unshare(CLONE_NEWNET)`, and checks the kernel with `ip -j` (child
//! processes inherit the thread's namespace). The namespace, and everything in it, disappears
//! when the thread ends, also when the test fails. Skipped (with a message) when not root.
//! The reconciler's tests run twice, with plain routes and with routes on nexthop objects
//! ([`Mode`]), and check the shape of what is written each time ([`assert_written`]).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use backends::hostgw::HostGw;
use backends::nl::{self, Hop, KernelEvent, Netlink};
use backends::reconcile::Reconciler;
use backends::{Backend, KernelOp, KernelState, Peer, Route};
use futures::StreamExt;
use net_conf::{LeaseAttrs, SubnetKey};
use serde_json::Value;

use common::{
    Mode, WeftRoute, assert_written, drive_until, ext, in_netns, in_netns_each_mode, ip, ip_json,
    nexthops, own_writes_are_quiet, underlay, weft_nexthop_ids, weft_route_list,
};

/// (dst, gateway, dev, protocol) of each route `ip -j route show <filter>` lists (other
/// owners' routes, which are plain).
fn routes(filter: &str) -> BTreeSet<(String, String, String, String)> {
    ip_json(&format!("route show {filter}"))
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("dst"), s("gateway"), s("dev"), s("protocol"))
        })
        .collect()
}

/// Table main's routes with protocol 87 as (dst, gateway, dev, "87"), gateway and device read
/// from the nexthop for a route on one (the protocol shows as `87 on <proto>` for a route on
/// someone else's nexthop).
fn weft_routes() -> BTreeSet<(String, String, String, String)> {
    weft_route_list()
        .into_iter()
        .map(|r| {
            let proto = match r.nh_protocol.as_deref() {
                None | Some("87") => "87".to_string(),
                Some(other) => format!("87 on {other}"),
            };
            (r.dst, r.gateway, r.dev, proto)
        })
        .collect()
}

fn r(dst: &str, gw: &str, dev: &str, proto: &str) -> (String, String, String, String) {
    (dst.into(), gw.into(), dev.into(), proto.into())
}

fn peer(subnet: &str, ip: &str) -> Peer {
    Peer {
        key: SubnetKey::new(subnet.parse().unwrap()),
        attrs: LeaseAttrs {
            public_ip: ip.parse().unwrap(),
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
            backend_v6_data: None,
        },
    }
}

fn desired(index: u32, peers: &[Peer]) -> KernelState {
    let d = HostGw::new().desired(&ext(index), peers);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    d.state
}

/// A reconciler writing routes the `mode` way.
fn reconciler(mode: Mode) -> Reconciler {
    Reconciler::new(Netlink::connect().unwrap()).with_route_nexthops(mode.nexthops())
}

#[test]
fn links_default_route_and_route_get_match_ip() {
    in_netns("links_default_route_and_route_get_match_ip", || async {
        let eth0 = underlay();
        let nl = Netlink::connect().unwrap();

        assert_eq!(nl.default_route_ifindex().await.unwrap(), None);
        ip("route add default via 198.18.0.254 dev eth0");
        assert_eq!(nl.default_route_ifindex().await.unwrap(), Some(eth0));

        let links = nl.links().await.unwrap();
        let shown = ip_json("addr show");
        assert_eq!(links.len(), shown.len());
        for (link, j) in links.iter().zip(&shown) {
            assert_eq!(u64::from(link.index), j["ifindex"].as_u64().unwrap());
            assert_eq!(link.name, j["ifname"].as_str().unwrap());
            assert_eq!(u64::from(link.mtu), j["mtu"].as_u64().unwrap());
            let up = j["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str() == Some("UP"));
            assert_eq!(link.up, up, "{}", link.name);
            let carrier = j["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str() == Some("LOWER_UP"));
            assert_eq!(link.carrier, carrier, "carrier of {}", link.name);
            let ours: BTreeSet<(IpAddr, u8, bool)> = link
                .addrs
                .iter()
                .map(|a| (a.addr, a.prefix_len, a.scope_global))
                .collect();
            let theirs: BTreeSet<(IpAddr, u8, bool)> = j["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["local"].as_str().unwrap().parse().unwrap(),
                        a["prefixlen"].as_u64().unwrap() as u8,
                        a["scope"].as_str() == Some("global"),
                    )
                })
                .collect();
            assert_eq!(ours, theirs, "addresses of {}", link.name);
        }
        let e = links.iter().find(|l| l.name == "eth0").unwrap();
        assert!(e.up);
        let v4 = e.addrs.iter().find(|a| a.addr.is_ipv4()).unwrap();
        assert!(v4.permanent && v4.scope_global && !v4.deprecated && !v4.temporary);
        assert_eq!(v4.v4_net(), Some("198.18.0.0/24".parse().unwrap()));

        assert_eq!(nl.link_by_name("eth0").await.unwrap().as_ref(), Some(e));
        assert_eq!(nl.link_by_name("nosuchlink0").await.unwrap(), None);

        let direct = nl.route_get(Ipv4Addr::new(198, 18, 0, 2)).await.unwrap();
        let j = &ip_json("route get 198.18.0.2")[0];
        assert_eq!(j["gateway"], Value::Null);
        assert_eq!(direct.oif, eth0);
        assert_eq!(direct.gateway, None);
        assert_eq!(direct.prefsrc, Some(Ipv4Addr::new(198, 18, 0, 1)));

        let far = nl.route_get(Ipv4Addr::new(203, 0, 113, 9)).await.unwrap();
        let j = &ip_json("route get 203.0.113.9")[0];
        assert_eq!(
            far.gateway.unwrap().to_string(),
            j["gateway"].as_str().unwrap()
        );
        assert_eq!(far.gateway, Some(Ipv4Addr::new(198, 18, 0, 254)));
        assert_eq!(far.oif, eth0);

        ip("route del default");
        let err = nl
            .route_get(Ipv4Addr::new(203, 0, 113, 9))
            .await
            .expect_err("no route");
        let text = err.to_string();
        assert!(text.starts_with("ip route get 203.0.113.9: "), "{text}");
        assert!(
            matches!(
                err,
                backends::BackendError::Netlink {
                    errno: Some(101),
                    ..
                }
            ),
            "{err:?}"
        );
    });
}

#[test]
fn apply_writes_once_then_nothing() {
    in_netns_each_mode("apply_writes_once_then_nothing", |mode| async move {
        let eth0 = underlay();
        let nl = Netlink::connect().unwrap();
        let want = desired(
            eth0,
            &[
                peer("10.244.2.0/24", "198.18.0.2"),
                peer("10.244.3.0/24", "198.18.0.3"),
            ],
        );
        let mut rec = reconciler(mode);
        let first = rec.apply(&want).await;
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(rec.uses_nexthops(), mode.nexthops());
        assert_eq!(first.writes, 2);
        // One nexthop per distinct gateway.
        let nh_adds = if mode.nexthops() { 2 } else { 0 };
        assert_eq!(first.nexthop_writes, nh_adds);
        assert_eq!(
            weft_routes(),
            BTreeSet::from([
                r("10.244.2.0/24", "198.18.0.2", "eth0", "87"),
                r("10.244.3.0/24", "198.18.0.3", "eth0", "87"),
            ])
        );
        assert_written(mode);
        let second = rec.apply(&want).await;
        assert!(second.is_ok(), "{second:?}");
        assert_eq!((second.writes, second.nexthop_writes), (0, 0));
        assert_eq!(rec.current(), &want);

        // What a dump reads back equals what was written, and a restarted weft keeps it as it
        // is (same nexthop ids: no write at all).
        let ids = weft_nexthop_ids();
        let mut fresh = reconciler(mode);
        fresh.refresh().await.unwrap();
        assert_eq!(fresh.current(), &want);
        let again = fresh.apply(&want).await;
        assert_eq!((again.writes, again.nexthop_writes), (0, 0));
        assert_eq!(weft_nexthop_ids(), ids);

        // A peer that moved: one replace, nothing else (on nexthops: a new nexthop for the new
        // gateway, and the old one, unused now, deleted).
        let moved = desired(
            eth0,
            &[
                peer("10.244.2.0/24", "198.18.0.22"),
                peer("10.244.3.0/24", "198.18.0.3"),
            ],
        );
        let report = rec.apply(&moved).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 1);
        assert_eq!(report.nexthop_writes, nh_adds);
        assert_eq!(
            weft_routes(),
            BTreeSet::from([
                r("10.244.2.0/24", "198.18.0.22", "eth0", "87"),
                r("10.244.3.0/24", "198.18.0.3", "eth0", "87"),
            ])
        );
        assert_written(mode);

        // Desired = nothing removes every weft route, and weft's nexthops with them.
        let report = rec.apply(&KernelState::default()).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 2);
        assert_eq!(report.nexthop_writes, nh_adds);
        assert!(weft_routes().is_empty());
        assert!(weft_nexthop_ids().is_empty());

        // Deleting what is already gone is fine.
        let dst = "10.244.2.0/24".parse().unwrap();
        nl.route_del(&Route {
            dst,
            gateway: Ipv4Addr::new(198, 18, 0, 2).into(),
            oif: eth0,
            onlink: false,
        })
        .await
        .unwrap();
        assert!(!nl.route_del_nhid(dst, 77).await.unwrap());
        nl.nexthop_del(77).await.unwrap();
    });
}

#[test]
fn routes_share_a_nexthop_per_hop() {
    in_netns("routes_share_a_nexthop_per_hop", || async {
        let eth0 = underlay();
        let gw = Ipv4Addr::new(198, 18, 0, 2);
        let route = |dst: &str| Route {
            dst: dst.parse().unwrap(),
            gateway: gw.into(),
            oif: eth0,
            onlink: false,
        };
        let two = KernelState::from_routes([route("10.244.2.0/24"), route("10.245.2.0/24")]);
        let mut rec = reconciler(Mode::Nexthop);
        let report = rec.apply(&two).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!((report.writes, report.nexthop_writes), (2, 1));
        let list = weft_route_list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].nhid, list[1].nhid, "{list:?}");
        assert_written(Mode::Nexthop);
        // One route goes: the nexthop stays for the other; the last one takes it along.
        let one = KernelState::from_routes([route("10.244.2.0/24")]);
        let report = rec.apply(&one).await;
        assert_eq!((report.writes, report.nexthop_writes), (1, 0));
        assert_eq!(weft_nexthop_ids().len(), 1);
        let report = rec.apply(&KernelState::default()).await;
        assert_eq!((report.writes, report.nexthop_writes), (1, 1));
        assert!(weft_nexthop_ids().is_empty());
    });
}

#[test]
fn an_id_taken_meanwhile_is_skipped() {
    in_netns("an_id_taken_meanwhile_is_skipped", || async {
        let eth0 = underlay();
        let mut rec = reconciler(Mode::Nexthop);
        rec.refresh().await.unwrap();
        // Someone takes id 1 after weft's dump (weft hears of it only through the kernel's
        // EEXIST): the nexthop add and the route are sent together, so the route lands on
        // their nexthop for a moment and is moved onto weft's own at once.
        ip("nexthop add id 1 via 198.18.0.9 dev eth0 proto static");
        let want = desired(eth0, &[peer("10.244.2.0/24", "198.18.0.2")]);
        let report = rec.apply(&want).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!((report.writes, report.nexthop_writes), (1, 1));
        assert_eq!(
            weft_routes(),
            BTreeSet::from([r("10.244.2.0/24", "198.18.0.2", "eth0", "87")])
        );
        assert_written(Mode::Nexthop);
        let theirs = &nexthops()[&1];
        assert_eq!(
            (theirs["gateway"].as_str(), theirs["protocol"].as_str()),
            (Some("198.18.0.9"), Some("static")),
            "someone else's nexthop untouched"
        );
        assert_ne!(weft_route_list()[0].nhid, Some(1));
    });
}

#[test]
fn apply_delta_writes_only_the_changed_peers() {
    in_netns("apply_delta_writes_only_the_changed_peers", || async {
        let eth0 = underlay();
        let nl = Netlink::connect().unwrap();
        let a = peer("10.244.2.0/24", "198.18.0.2");
        let b = peer("10.244.3.0/24", "198.18.0.3");
        let b_moved = peer("10.244.3.0/24", "198.18.0.33");
        let c = peer("10.244.4.0/24", "198.18.0.4");
        let mut rec = Reconciler::new(nl.clone());
        assert_eq!(
            rec.apply(&desired(eth0, &[a.clone(), b.clone()]))
                .await
                .writes,
            2
        );

        // b moved and c joined: two writes, a untouched.
        let report = rec
            .apply_delta(
                &desired(eth0, std::slice::from_ref(&b)),
                desired(eth0, &[b_moved.clone(), c.clone()]),
            )
            .await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 2);
        let want = desired(eth0, &[a.clone(), b_moved.clone(), c.clone()]);
        assert_eq!(rec.desired(), &want);
        assert_eq!(
            weft_routes(),
            BTreeSet::from([
                r("10.244.2.0/24", "198.18.0.2", "eth0", "87"),
                r("10.244.3.0/24", "198.18.0.33", "eth0", "87"),
                r("10.244.4.0/24", "198.18.0.4", "eth0", "87"),
            ])
        );
        // The delta path and a full apply agree: nothing left to write.
        assert_eq!(rec.apply(&want).await.writes, 0);

        // a left: one delete.
        let report = rec
            .apply_delta(
                &desired(eth0, std::slice::from_ref(&a)),
                KernelState::default(),
            )
            .await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 1);
        assert!(!weft_routes().contains(&r("10.244.2.0/24", "198.18.0.2", "eth0", "87")));

        // With the cache in doubt (a link event), the delta dumps and diffs everything: a stale
        // weft route written behind its back goes too.
        ip("route add 10.244.9.0/24 via 198.18.0.9 dev eth0 proto 87");
        rec.observe(&KernelEvent::Overrun);
        let report = rec
            .apply_delta(&KernelState::default(), KernelState::default())
            .await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(
            weft_routes(),
            BTreeSet::from([
                r("10.244.3.0/24", "198.18.0.33", "eth0", "87"),
                r("10.244.4.0/24", "198.18.0.4", "eth0", "87"),
            ])
        );
    });
}

#[test]
fn onlink_route_is_written_and_read_back() {
    in_netns("onlink_route_is_written_and_read_back", || async {
        let eth0 = underlay();
        let nl = Netlink::connect().unwrap();
        // A gateway outside every connected subnet is accepted only with onlink.
        let route = Route {
            dst: "10.244.5.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, 5, 0).into(),
            oif: eth0,
            onlink: true,
        };
        nl.route_replace(&route).await.unwrap();
        let j = ip_json("route show table main proto 87");
        assert_eq!(j.len(), 1);
        assert_eq!(j[0]["gateway"], "10.244.5.0");
        assert!(
            j[0]["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "onlink"),
            "{j:?}"
        );
        let dumped = nl.dump_owned_routes().await.unwrap();
        assert_eq!(dumped.len(), 1);
        assert_eq!((&dumped[0].route, dumped[0].nhid), (&route, None));

        // The same on a nexthop object: `ip nexthop add id 9 via 10.244.6.0 dev eth0 onlink
        // proto 87`, `ip route replace 10.244.6.0/24 nhid 9 proto 87`.
        let hop = Hop {
            gateway: Ipv4Addr::new(10, 244, 6, 0).into(),
            oif: eth0,
            onlink: true,
        };
        nl.nexthop_add(9, &hop).await.unwrap();
        let dst = "10.244.6.0/24".parse().unwrap();
        nl.route_replace_nhid(dst, 9).await.unwrap();
        let shown = &nexthops()[&9];
        assert_eq!(shown["gateway"], "10.244.6.0");
        assert_eq!(shown["dev"], "eth0");
        assert_eq!(shown["protocol"], "87");
        assert!(
            shown["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "onlink")
        );
        let read = nl.dump_nexthops().await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(
            (read[0].id, read[0].hop(), read[0].is_weft()),
            (9, Some(hop), true)
        );
        assert_eq!(nl.nexthop_get(9).await.unwrap().as_ref(), Some(&read[0]));
        assert_eq!(nl.nexthop_get(10).await.unwrap(), None);
        let on_nh = nl
            .dump_owned_routes()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.route.dst == dst)
            .unwrap();
        assert_eq!(on_nh.nhid, Some(9));
        // A taken id is refused, never replaced.
        let other = Hop {
            gateway: Ipv4Addr::new(198, 18, 0, 7).into(),
            oif: eth0,
            onlink: false,
        };
        let err = nl.nexthop_add(9, &other).await.unwrap_err();
        assert!(
            matches!(
                err,
                backends::BackendError::Netlink {
                    errno: Some(nl::EEXIST),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(nl.nexthop_get(9).await.unwrap().unwrap().hop(), Some(hop));
        // Deleting the nexthop takes its route along.
        nl.nexthop_del(9).await.unwrap();
        assert!(nl.nexthop_get(9).await.unwrap().is_none());
        assert!(weft_route_list().iter().all(|r| r.dst != "10.244.6.0/24"));
    });
}

#[test]
fn stale_weft_routes_purged_foreign_routes_untouched() {
    in_netns_each_mode(
        "stale_weft_routes_purged_foreign_routes_untouched",
        |mode| async move {
            let eth0 = underlay();
            // Left over from an earlier run (a plain route, a route on a nexthop of weft's, an
            // unused nexthop of weft's), and someone else's routes and nexthops: a nexthop
            // with an id weft might pick, and a route of theirs on a nexthop of weft's.
            ip("route add 10.244.9.0/24 via 198.18.0.9 dev eth0 proto 87");
            ip("nexthop add id 1 via 198.18.0.10 dev eth0 proto 87");
            ip("route add 10.244.10.0/24 nhid 1 proto 87");
            ip("nexthop add id 2 via 198.18.0.11 dev eth0 proto 87");
            ip("nexthop add id 3 via 198.18.0.12 dev eth0 proto 87");
            ip("route add 10.250.0.0/24 nhid 3 proto static");
            ip("nexthop add id 4 via 198.18.0.2 dev eth0 proto static");
            ip("route add 10.244.8.0/24 via 198.18.0.8 dev eth0 proto static");
            ip("route add 10.244.7.0/24 via 198.18.0.7 dev eth0 proto 87 table 100");
            ip("route add 10.244.6.0/24 via 198.18.0.6 dev eth0 proto 87 metric 50");
            let want = desired(eth0, &[peer("10.244.2.0/24", "198.18.0.2")]);
            let mut rec = reconciler(mode);
            rec.refresh().await.unwrap();
            assert_eq!(rec.current().routes.len(), 3, "{:?}", rec.current());
            assert_eq!(
                rec.current().routes[&"10.244.10.0/24".parse().unwrap()].gateway,
                Ipv4Addr::new(198, 18, 0, 10),
                "a route on a nexthop is read through the nexthop"
            );
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 4, "three deletes and one replace");
            assert_eq!(
                weft_routes(),
                BTreeSet::from([r("10.244.2.0/24", "198.18.0.2", "eth0", "87")])
            );
            // weft's stale nexthops 1 and 2 are gone; 3 stays for the static route on it;
            // someone else's 4 (same gateway as weft's peer) is neither used nor touched.
            let nhs = nexthops();
            assert!(!nhs.contains_key(&1) && !nhs.contains_key(&2), "{nhs:?}");
            assert_eq!(nhs[&3]["protocol"], "87");
            assert_eq!(nhs[&4]["protocol"], "static");
            let ours = weft_route_list();
            match mode {
                Mode::Nexthop => {
                    let id = ours[0].nhid.unwrap();
                    assert!(id > 4, "weft took a free id: {id}");
                    assert_eq!(weft_nexthop_ids(), BTreeSet::from([3, id]));
                }
                Mode::Plain => {
                    assert_eq!(ours[0].nhid, None);
                    assert_eq!(weft_nexthop_ids(), BTreeSet::from([3]));
                }
            }
            assert!(routes("table main").contains(&r(
                "10.244.8.0/24",
                "198.18.0.8",
                "eth0",
                "static"
            )));
            assert!(
                routes("table main")
                    .iter()
                    .any(|(dst, ..)| dst == "10.250.0.0/24")
            );
            assert!(routes("table 100").contains(&r("10.244.7.0/24", "198.18.0.7", "eth0", "87")));
        },
    );
}

#[test]
fn first_apply_without_refresh_purges_too() {
    in_netns_each_mode(
        "first_apply_without_refresh_purges_too",
        |mode| async move {
            let eth0 = underlay();
            ip("route add 10.244.9.0/24 via 198.18.0.9 dev eth0 proto 87");
            let mut rec = reconciler(mode);
            assert!(rec.needs_refresh());
            let want = desired(eth0, &[peer("10.244.2.0/24", "198.18.0.2")]);
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert!(!rec.needs_refresh());
            assert_eq!(
                weft_routes(),
                BTreeSet::from([r("10.244.2.0/24", "198.18.0.2", "eth0", "87")])
            );
            assert_written(mode);
        },
    );
}

#[test]
fn upgrade_rewrites_routes_the_other_way_in_place() {
    in_netns("upgrade_rewrites_routes_the_other_way_in_place", || async {
        let eth0 = underlay();
        let want = desired(
            eth0,
            &[
                peer("10.244.2.0/24", "198.18.0.2"),
                peer("10.244.3.0/24", "198.18.0.3"),
            ],
        );
        let both = BTreeSet::from([
            r("10.244.2.0/24", "198.18.0.2", "eth0", "87"),
            r("10.244.3.0/24", "198.18.0.3", "eth0", "87"),
        ]);
        // The previous weft wrote plain routes.
        let report = reconciler(Mode::Plain).apply(&want).await;
        assert!(report.is_ok(), "{report:?}");
        assert_written(Mode::Plain);
        // The new one moves each onto a nexthop, one replace per route (no delete: the route
        // never leaves the kernel).
        let mut events = nl::subscribe().unwrap();
        let mut rec = reconciler(Mode::Nexthop);
        let report = rec.apply(&want).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!((report.writes, report.nexthop_writes), (2, 2));
        assert_eq!(weft_routes(), both);
        assert_written(Mode::Nexthop);
        let mut deleted = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline.into(), events.next()).await {
            if let KernelEvent::RouteDeleted(e) = &ev {
                deleted.push(e.clone());
            }
            assert!(!rec.observe(&ev), "own write reported as drift: {ev:?}");
        }
        assert!(deleted.is_empty(), "routes left the kernel: {deleted:?}");
        assert_eq!(rec.apply(&want).await.writes, 0);
        // And back (`--route-nexthops=false`): plain again, weft's nexthops removed.
        let mut plain = reconciler(Mode::Plain);
        let report = plain.apply(&want).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!((report.writes, report.nexthop_writes), (2, 2));
        assert_eq!(weft_routes(), both);
        assert_written(Mode::Plain);
    });
}

#[test]
fn routes_read_without_nexthop_compat_mode() {
    in_netns("routes_read_without_nexthop_compat_mode", || async {
        let eth0 = underlay();
        // Route messages carry only `nhid`, no gateway or device.
        common::run("sysctl", "-qw net.ipv4.nexthop_compat_mode=0");
        let j = ip_json("route show table main");
        assert!(j.iter().all(|r| r["protocol"] != "87"));
        let mut events = nl::subscribe().unwrap();
        let want = desired(
            eth0,
            &[
                peer("10.244.2.0/24", "198.18.0.2"),
                peer("10.244.3.0/24", "198.18.0.3"),
            ],
        );
        let mut rec = reconciler(Mode::Nexthop);
        assert!(rec.apply(&want).await.is_ok());
        let shown = ip_json("route show table main");
        let weft: Vec<&Value> = shown.iter().filter(|r| r["protocol"] == "87").collect();
        assert_eq!(weft.len(), 2);
        assert!(
            weft.iter()
                .all(|r| r["nhid"].is_u64() && r["gateway"].is_null()),
            "{weft:?}"
        );
        own_writes_are_quiet(&mut rec, &mut events).await;
        let mut fresh = reconciler(Mode::Nexthop);
        fresh.refresh().await.unwrap();
        assert_eq!(fresh.current(), &want);
        assert_eq!(fresh.apply(&want).await.writes, 0);
        // Drift without compat mode: a route deleted out of band is seen and re-added.
        ip("route del 10.244.2.0/24");
        drive_until(&mut rec, &mut events, &want, "route re-added", |_| {
            weft_route_list().len() == 2
        })
        .await;
        assert_written(Mode::Nexthop);
    });
}

#[test]
fn drift_is_repaired_from_notifications() {
    in_netns_each_mode("drift_is_repaired_from_notifications", |mode| async move {
        let eth0 = underlay();
        let mut events = nl::subscribe().unwrap();
        let want = desired(
            eth0,
            &[
                peer("10.244.2.0/24", "198.18.0.2"),
                peer("10.244.3.0/24", "198.18.0.3"),
            ],
        );
        let both = BTreeSet::from([
            r("10.244.2.0/24", "198.18.0.2", "eth0", "87"),
            r("10.244.3.0/24", "198.18.0.3", "eth0", "87"),
        ]);
        let mut rec = reconciler(mode);
        assert!(rec.apply(&want).await.is_ok());
        assert_eq!(weft_routes(), both);

        // The notifications of weft's own writes change nothing.
        own_writes_are_quiet(&mut rec, &mut events).await;

        // Deleted out of band.
        ip("route del 10.244.2.0/24");
        drive_until(
            &mut rec,
            &mut events,
            &want,
            "deleted route re-added",
            |_| weft_routes() == both,
        )
        .await;
        assert_written(mode);

        // Replaced out of band by a route of another protocol (ip's default, boot).
        ip("route replace 10.244.3.0/24 via 198.18.0.33 dev eth0");
        assert_eq!(weft_routes().len(), 1);
        drive_until(
            &mut rec,
            &mut events,
            &want,
            "replaced route restored",
            |_| weft_routes() == both,
        )
        .await;
        assert!(
            routes("table main")
                .iter()
                .all(|(_, gw, _, _)| gw != "198.18.0.33")
        );
        assert_written(mode);

        if mode == Mode::Nexthop {
            // One of weft's nexthops deleted out of band: the kernel removes the route on it
            // and announces only the nexthop (RTM_DELNEXTHOP, no RTM_DELROUTE).
            let victim: WeftRoute = weft_route_list()
                .into_iter()
                .find(|r| r.dst == "10.244.2.0/24")
                .unwrap();
            ip(&format!("nexthop del id {}", victim.nhid.unwrap()));
            assert_eq!(weft_routes().len(), 1, "the route went with its nexthop");
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "route back after its nexthop was deleted",
                |_| weft_routes() == both,
            )
            .await;
            assert_written(mode);

            // One replaced out of band (someone else's now): weft moves its route off it.
            let victim = weft_route_list()
                .into_iter()
                .find(|r| r.dst == "10.244.3.0/24")
                .unwrap();
            let id = victim.nhid.unwrap();
            ip(&format!(
                "nexthop replace id {id} via 198.18.0.44 dev eth0 proto static"
            ));
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "route moved off a replaced nexthop",
                |_| weft_routes() == both,
            )
            .await;
            assert_ne!(weft_route_list()[1].nhid, Some(id));
            assert_eq!(
                nexthops()[&id]["protocol"],
                "static",
                "theirs now, left alone"
            );
            ip(&format!("nexthop del id {id}"));
        }

        // Carrier lost (the veth peer goes down): the kernel drops nexthops on eth0 and their
        // routes without a word; plain routes stay (`linkdown`). Either way the routes are
        // there during the outage (plain meanwhile) and written `mode`'s way after it.
        ip("link set peer0 down");
        drive_until(
            &mut rec,
            &mut events,
            &want,
            "routes kept while the link has no carrier",
            |rec| weft_routes() == both && rec.current() == &want,
        )
        .await;
        assert!(weft_route_list().iter().all(|r| r.nhid.is_none()));
        ip("link set peer0 up");
        drive_until(
            &mut rec,
            &mut events,
            &want,
            "routes written on nexthops again with the carrier back",
            |_| {
                weft_routes() == both
                    && weft_route_list()
                        .iter()
                        .all(|r| r.nhid.is_some() == mode.nexthops())
            },
        )
        .await;
        assert_written(mode);

        // Link down: the kernel flushes the routes without RTM_DELROUTE; link up: they return.
        ip("link set eth0 down");
        assert!(weft_routes().is_empty(), "the kernel flushed the routes");
        // Only the link event tells: the cache must forget the routes (applies fail meanwhile).
        drive_until(
            &mut rec,
            &mut events,
            &want,
            "cache forgets flushed routes",
            |rec| rec.current().is_empty(),
        )
        .await;
        ip("link set eth0 up");
        drive_until(
            &mut rec,
            &mut events,
            &want,
            "routes back after link up",
            |_| {
                weft_routes() == both
                    && weft_route_list()
                        .iter()
                        .all(|r| r.nhid.is_some() == mode.nexthops())
            },
        )
        .await;
        assert_eq!(rec.current(), &want);
        assert_written(mode);
    });
}

#[test]
fn failed_op_is_reported_and_retried() {
    in_netns_each_mode("failed_op_is_reported_and_retried", |mode| async move {
        let eth0 = underlay();
        let mut rec = reconciler(mode);
        // 198.18.7.2 is not on a connected subnet (yet): the kernel refuses the route (or, on
        // nexthops, the nexthop).
        let want = KernelState::from_routes([
            Route {
                dst: "10.244.2.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(198, 18, 0, 2).into(),
                oif: eth0,
                onlink: false,
            },
            Route {
                dst: "10.244.7.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(198, 18, 7, 2).into(),
                oif: eth0,
                onlink: false,
            },
        ]);
        let report = rec.apply(&want).await;
        assert_eq!(report.writes, 1);
        assert_eq!(report.failures.len(), 1, "{report:?}");
        let (op, err) = &report.failures[0];
        assert!(
            matches!(op, KernelOp::RouteReplace(r) if r.gateway == Ipv4Addr::new(198, 18, 7, 2))
        );
        let text = err.to_string();
        let prefix = match mode {
            Mode::Plain => {
                format!("ip route replace 10.244.7.0/24 via 198.18.7.2 dev {eth0} proto 87: ")
            }
            Mode::Nexthop => "ip nexthop add id ".to_string(),
        };
        assert!(text.starts_with(&prefix), "{text}");
        assert!(
            text.contains(&format!("via 198.18.7.2 dev {eth0}")),
            "{text}"
        );
        assert!(
            matches!(
                err,
                backends::BackendError::Netlink {
                    errno: Some(101),
                    ..
                }
            ),
            "ENETUNREACH expected: {err:?}"
        );
        assert_eq!(rec.current().routes.len(), 1, "failed route not recorded");

        // Still failing: retried, still reported.
        let again = rec.apply(&want).await;
        assert_eq!((again.writes, again.failures.len()), (0, 1));

        // Once the gateway is reachable the next apply succeeds.
        ip("addr add 198.18.7.1/24 dev eth0");
        let report = rec.apply(&want).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 1);
        assert_eq!(rec.current(), &want);
        assert_eq!(weft_routes().len(), 2);
        assert_written(mode);
    });
}
