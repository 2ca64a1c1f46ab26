//! Kernel tests of the reconciler's repairs: drift seen in the kernel's notifications, and a failed
//! operation reported and retried. Each runs in a fresh network namespace on its own thread, with a
//! current-thread tokio runtime built after `unshare(CLONE_NEWNET)`, and checks the kernel with `ip
//! -j` (child processes inherit the thread's namespace). The namespace, and everything in it,
//! disappears when the thread ends, also when the test fails. Skipped (with a message) when not
//! root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use backends::nl;
use backends::{KernelOp, KernelState, Route};

use common::routes::{desired, peer, r, reconciler, routes, weft_routes};
use common::{
    Mode, WeftRoute, assert_written, drive_until, in_netns_each_mode, ip, nexthops,
    own_writes_are_quiet, underlay, weft_route_list,
};

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
