//! Kernel tests of the netlink reads: links, the default route, `route get`, and routes read back
//! without the nexthop compat mode. Each runs in a fresh network namespace on its own thread, with
//! a current-thread tokio runtime built after `unshare(CLONE_NEWNET)`, and checks the kernel with
//! `ip -j` (child processes inherit the thread's namespace). The namespace, and everything in it,
//! disappears when the thread ends, also when the test fails. Skipped (with a message) when not
//! root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use backends::nl::{self, Netlink};
use serde_json::Value;

use common::routes::{desired, peer, reconciler};
use common::{
    Mode, assert_written, drive_until, in_netns, ip, ip_json, own_writes_are_quiet, underlay,
    weft_route_list,
};

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
