//! Kernel tests of the reconciler's writes: applying, deltas, nexthop objects, onlink routes,
//! purging stale routes and upgrading between the two route shapes. Each runs in a fresh network
//! namespace on its own thread, with a current-thread tokio runtime built after
//! `unshare(CLONE_NEWNET)`, and checks the kernel with `ip -j` (child processes inherit the
//! thread's namespace). The namespace, and everything in it, disappears when the thread ends, also
//! when the test fails. Skipped (with a message) when not root. The reconciler's tests run twice,
//! with plain routes and with routes on nexthop objects ([`Mode`]), and check the shape of what is
//! written each time ([`assert_written`]).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use backends::nl::{self, Hop, KernelEvent, Netlink};
use backends::reconcile::Reconciler;
use backends::{KernelState, Route};
use futures::StreamExt;

use common::routes::{desired, peer, r, reconciler, routes, weft_routes};
use common::{
    Mode, assert_written, in_netns, in_netns_each_mode, ip, ip_json, nexthops, underlay,
    weft_nexthop_ids, weft_route_list,
};

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
