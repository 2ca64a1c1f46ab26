//! Kernel tests: each runs in a fresh network namespace on its own thread, with a current-thread
//! tokio runtime built after `unshare(CLONE_NEWNET)`, and checks the kernel with `ip -j` (child
//! processes inherit the thread's namespace). The namespace, and everything in it, disappears
//! when the thread ends, also when the test fails. Skipped (with a message) when not root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use backends::hostgw::HostGw;
use backends::nl::{self, KernelEvent, Netlink};
use backends::reconcile::Reconciler;
use backends::{Backend, ExternalInterface, KernelOp, KernelState, Peer, Route};
use futures::StreamExt;
use net_conf::{LeaseAttrs, SubnetKey};
use serde_json::Value;

use common::{in_netns, ip, ip_json};

/// (dst, gateway, dev, protocol) of each route `ip -j route show <filter>` lists.
fn routes(filter: &str) -> BTreeSet<(String, String, String, String)> {
    ip_json(&format!("route show {filter}"))
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("dst"), s("gateway"), s("dev"), s("protocol"))
        })
        .collect()
}

/// Table main's routes with protocol 87 (filtered here: `ip route show proto 87` omits the
/// protocol from its output, and the test should see it).
fn weft_routes() -> BTreeSet<(String, String, String, String)> {
    routes("table main")
        .into_iter()
        .filter(|(_, _, _, proto)| proto == "87")
        .collect()
}

fn r(dst: &str, gw: &str, dev: &str, proto: &str) -> (String, String, String, String) {
    (dst.into(), gw.into(), dev.into(), proto.into())
}

/// `eth0` (198.18.0.1/24, up) with its veth peer `peer0` (up) as the underlay; returns eth0's
/// index.
fn underlay() -> u32 {
    ip("link add eth0 type veth peer name peer0");
    ip("addr add 198.18.0.1/24 dev eth0");
    ip("link set eth0 up");
    ip("link set peer0 up");
    ip_json("link show dev eth0")[0]["ifindex"]
        .as_u64()
        .unwrap() as u32
}

fn ext(index: u32) -> ExternalInterface {
    ExternalInterface {
        name: "eth0".into(),
        index,
        iface_addr: Ipv4Addr::new(198, 18, 0, 1),
        ext_addr: Ipv4Addr::new(198, 18, 0, 1),
        mtu: 1500,
        prefixes: vec!["198.18.0.0/24".parse().unwrap()],
    }
}

fn peer(subnet: &str, ip: &str) -> Peer {
    Peer {
        key: SubnetKey {
            v4: subnet.parse().unwrap(),
            v6: None,
        },
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

/// Feeds kernel events to the reconciler and re-applies like the daemon does (re-apply when
/// `observe` says so; retry failed operations on the next event or after 100 ms) until `done`
/// holds or the deadline passes.
async fn drive_until(
    rec: &mut Reconciler,
    events: &mut (impl futures::Stream<Item = KernelEvent> + Unpin),
    want: &KernelState,
    what: &str,
    done: impl Fn(&Reconciler) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut retry = false;
    while !done(rec) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        let ev = tokio::time::timeout(Duration::from_millis(100), events.next()).await;
        let changed = match ev {
            Ok(Some(ev)) => rec.observe(&ev),
            Ok(None) => panic!("notification stream ended"),
            Err(_) => false,
        };
        if changed || retry {
            let report = rec.apply(want).await;
            retry = !report.failures.is_empty();
        }
    }
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
    in_netns("apply_writes_once_then_nothing", || async {
        let eth0 = underlay();
        let nl = Netlink::connect().unwrap();
        let want = desired(
            eth0,
            &[
                peer("10.244.2.0/24", "198.18.0.2"),
                peer("10.244.3.0/24", "198.18.0.3"),
            ],
        );
        let mut rec = Reconciler::new(nl.clone());
        let first = rec.apply(&want).await;
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(first.writes, 2);
        assert_eq!(
            weft_routes(),
            BTreeSet::from([
                r("10.244.2.0/24", "198.18.0.2", "eth0", "87"),
                r("10.244.3.0/24", "198.18.0.3", "eth0", "87"),
            ])
        );
        let second = rec.apply(&want).await;
        assert!(second.is_ok(), "{second:?}");
        assert_eq!(second.writes, 0);
        assert_eq!(rec.current(), &want);

        // What a dump reads back equals what was written.
        let mut fresh = Reconciler::new(nl.clone());
        fresh.refresh().await.unwrap();
        assert_eq!(fresh.current(), &want);
        assert_eq!(fresh.apply(&want).await.writes, 0);

        // A peer that moved: one replace, nothing else.
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
        assert_eq!(
            weft_routes(),
            BTreeSet::from([
                r("10.244.2.0/24", "198.18.0.22", "eth0", "87"),
                r("10.244.3.0/24", "198.18.0.3", "eth0", "87"),
            ])
        );

        // Desired = nothing removes every weft route (what `weft cleanup` does).
        let report = rec.apply(&KernelState::default()).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 2);
        assert!(weft_routes().is_empty());

        // Deleting what is already gone is fine.
        nl.route_del(&Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(198, 18, 0, 2),
            oif: eth0,
            onlink: false,
        })
        .await
        .unwrap();
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
            gateway: Ipv4Addr::new(10, 244, 5, 0),
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
        assert_eq!(nl.dump_owned_routes().await.unwrap(), vec![route]);
    });
}

#[test]
fn stale_weft_routes_purged_foreign_routes_untouched() {
    in_netns(
        "stale_weft_routes_purged_foreign_routes_untouched",
        || async {
            let eth0 = underlay();
            // Left over from an earlier run, and someone else's routes.
            ip("route add 10.244.9.0/24 via 198.18.0.9 dev eth0 proto 87");
            ip("route add 10.244.8.0/24 via 198.18.0.8 dev eth0 proto static");
            ip("route add 10.244.7.0/24 via 198.18.0.7 dev eth0 proto 87 table 100");
            ip("route add 10.244.6.0/24 via 198.18.0.6 dev eth0 proto 87 metric 50");
            let nl = Netlink::connect().unwrap();
            let want = desired(eth0, &[peer("10.244.2.0/24", "198.18.0.2")]);
            let mut rec = Reconciler::new(nl);
            rec.refresh().await.unwrap();
            assert_eq!(rec.current().routes.len(), 2, "{:?}", rec.current());
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 3, "two deletes and one replace");
            assert_eq!(
                weft_routes(),
                BTreeSet::from([r("10.244.2.0/24", "198.18.0.2", "eth0", "87")])
            );
            assert!(routes("table main").contains(&r(
                "10.244.8.0/24",
                "198.18.0.8",
                "eth0",
                "static"
            )));
            assert!(routes("table 100").contains(&r("10.244.7.0/24", "198.18.0.7", "eth0", "87")));
        },
    );
}

#[test]
fn first_apply_without_refresh_purges_too() {
    in_netns("first_apply_without_refresh_purges_too", || async {
        let eth0 = underlay();
        ip("route add 10.244.9.0/24 via 198.18.0.9 dev eth0 proto 87");
        let mut rec = Reconciler::new(Netlink::connect().unwrap());
        assert!(rec.needs_refresh());
        let want = desired(eth0, &[peer("10.244.2.0/24", "198.18.0.2")]);
        let report = rec.apply(&want).await;
        assert!(report.is_ok(), "{report:?}");
        assert!(!rec.needs_refresh());
        assert_eq!(
            weft_routes(),
            BTreeSet::from([r("10.244.2.0/24", "198.18.0.2", "eth0", "87")])
        );
    });
}

#[test]
fn drift_is_repaired_from_notifications() {
    in_netns("drift_is_repaired_from_notifications", || async {
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
        let mut rec = Reconciler::new(Netlink::connect().unwrap());
        assert!(rec.apply(&want).await.is_ok());
        assert_eq!(weft_routes(), both);

        // The notifications of weft's own writes change nothing.
        let deadline = Instant::now() + Duration::from_millis(300);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline.into(), events.next()).await {
            assert!(!rec.observe(&ev), "own write reported as drift: {ev:?}");
        }

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
            |_| weft_routes() == both,
        )
        .await;
        assert_eq!(rec.current(), &want);
    });
}

#[test]
fn failed_op_is_reported_and_retried() {
    in_netns("failed_op_is_reported_and_retried", || async {
        let eth0 = underlay();
        let mut rec = Reconciler::new(Netlink::connect().unwrap());
        // 198.18.7.2 is not on a connected subnet (yet): the kernel refuses the route.
        let want = KernelState::from_routes([
            Route {
                dst: "10.244.2.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(198, 18, 0, 2),
                oif: eth0,
                onlink: false,
            },
            Route {
                dst: "10.244.7.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(198, 18, 7, 2),
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
        assert!(
            text.starts_with(&format!(
                "ip route replace 10.244.7.0/24 via 198.18.7.2 dev {eth0} proto 87: "
            )),
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
    });
}
