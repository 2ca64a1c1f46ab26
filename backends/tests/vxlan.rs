//! vxlan kernel tests, each in its own network namespace (see `common`): the device is created or
//! verified field by field, configured, and the per-peer ARP/FDB/route entries are applied,
//! purged and repaired through the shared reconciler. Skipped (with a message) when not root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use backends::nl::{self, Netlink};
use backends::reconcile::Reconciler;
use backends::vxlan::{Vxlan, parse_backend_data};
use backends::{Backend, KernelState};
use futures::StreamExt;
use net_conf::{LeaseAttrs, VxlanConf};
use serde_json::Value;

use common::{
    assert_written, ext, in_netns, in_netns_each_mode, ip, ip_json, run, tool_json, underlay,
    vxlan_peer, weft_route_list,
};

fn link(name: &str) -> Value {
    ip_json(&format!("-d link show dev {name}"))
        .into_iter()
        .next()
        .unwrap()
}

/// (ip, lladdr, state) of the neighbours on `dev`.
fn neighs(dev: &str) -> BTreeSet<(String, String, String)> {
    ip_json(&format!("neigh show dev {dev}"))
        .iter()
        .map(|n| {
            (
                n["dst"].as_str().unwrap().to_string(),
                n["lladdr"].as_str().unwrap_or("").to_string(),
                n["state"][0].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// (mac, dst) of the `self permanent` FDB entries with a dst on `dev`.
fn fdb(dev: &str) -> BTreeSet<(String, String)> {
    tool_json("bridge", &format!("fdb show dev {dev}"))
        .iter()
        .filter(|e| e["state"] == "permanent" && !e["dst"].is_null())
        .map(|e| {
            (
                e["mac"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// (dst, gateway, dev, onlink) of table main's protocol-87 routes (read from the nexthop for a
/// route on one).
fn weft_routes() -> BTreeSet<(String, String, String, bool)> {
    weft_route_list()
        .into_iter()
        .map(|r| (r.dst, r.gateway, r.dev, r.onlink))
        .collect()
}

fn s3<A: Into<String>, B: Into<String>, C: Into<String>>(
    a: A,
    b: B,
    c: C,
) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

/// The wanted device with its address, for `own`, planned by `prepare` and `configure`.
async fn planned(nl: &Netlink, eth0: u32, own: &str) -> (Vxlan, LeaseAttrs) {
    let mut vx = Vxlan::new(VxlanConf::default());
    let attrs = vx.prepare(nl, &ext(eth0)).await.unwrap();
    vx.configure(&ext(eth0), &net_conf::SubnetKey::new(own.parse().unwrap()))
        .unwrap();
    (vx, attrs)
}

/// (address, prefix length) of the IPv4 addresses of `dev`.
fn v4_addrs(dev: &str) -> Vec<(String, u64)> {
    ip_json(&format!("addr show dev {dev}"))[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| {
            (
                a["local"].as_str().unwrap().to_string(),
                a["prefixlen"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn is_up(dev: &str) -> bool {
    link(dev)["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP")
}

#[test]
fn device_created_reused_and_recreated() {
    in_netns("device_created_reused_and_recreated", || async {
        let eth0 = underlay();
        let nl = Netlink::connect().unwrap();
        let (mut vx, attrs) = planned(&nl, eth0, "10.244.1.0/24").await;
        assert!(
            nl.device_by_name("flannel.1").await.unwrap().is_none(),
            "prepare only plans the device"
        );
        let mut rec = Reconciler::new(nl.clone());
        let report = rec.apply(&vx.desired(&ext(eth0), &[]).state).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 2, "ip link add (up), ip addr add");
        let index = rec.device_index("flannel.1").unwrap();
        vx.bind(&|name| rec.device_index(name));
        let dev = vx.device().unwrap().clone();
        let l = link("flannel.1");
        let data = &l["linkinfo"]["info_data"];
        assert_eq!(l["linkinfo"]["info_kind"], "vxlan");
        assert_eq!(data["id"], 1);
        assert_eq!(data["local"], "198.18.0.1");
        assert_eq!(data["link"], "eth0");
        assert_eq!(data["port"], 8472);
        assert_eq!(data["learning"], false);
        assert_eq!(l["mtu"], 1450);
        assert_eq!(l["ifindex"], index);
        assert_eq!(dev.index, index);
        assert!(is_up("flannel.1"));
        assert_eq!(v4_addrs("flannel.1"), vec![("10.244.1.0".to_string(), 32)]);
        let mac = l["address"].as_str().unwrap().to_string();
        assert_eq!(attrs.backend_type, "vxlan");
        assert_eq!(attrs.public_ip, Ipv4Addr::new(198, 18, 0, 1));
        let (vni, published) = parse_backend_data(attrs.backend_data.as_deref().unwrap()).unwrap();
        assert_eq!(vni, 1);
        assert_eq!(Some(published), dev.mac);
        assert_eq!(backends::plan::fmt_mac(&published), mac);
        assert_eq!(
            rec.apply(&vx.desired(&ext(eth0), &[]).state).await.writes,
            0
        );

        // Compatible: a new agent reuses it as is (same index, same MAC), its MTU corrected in
        // place, a stale address replaced by the /32.
        ip("link set flannel.1 mtu 1400");
        ip("addr add 10.244.77.0/24 dev flannel.1");
        let (again, attrs2) = planned(&nl, eth0, "10.244.1.0/24").await;
        assert_eq!(attrs2, attrs, "the MAC of the existing device is published");
        assert_eq!(again.device().unwrap().index, index);
        let mut rec = Reconciler::new(nl.clone());
        let report = rec.apply(&again.desired(&ext(eth0), &[]).state).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.writes, 2, "ip link set mtu, ip addr del");
        assert_eq!(link("flannel.1")["mtu"], 1450);
        assert_eq!(link("flannel.1")["ifindex"], index);
        assert_eq!(v4_addrs("flannel.1"), vec![("10.244.1.0".to_string(), 32)]);

        // Incompatible (other port and learning on): deleted and recreated, with the MAC of
        // the previous lease.
        ip("link del flannel.1");
        ip("link add flannel.1 type vxlan id 1 local 198.18.0.1 dev eth0 dstport 4789 learning");
        let old_index = link("flannel.1")["ifindex"].as_u64().unwrap();
        let mut fresh = Vxlan::new(VxlanConf::default());
        fresh.adopt_previous(&attrs);
        assert_eq!(fresh.prepare(&nl, &ext(eth0)).await.unwrap(), attrs);
        fresh
            .configure(
                &ext(eth0),
                &net_conf::SubnetKey::new("10.244.1.0/24".parse().unwrap()),
            )
            .unwrap();
        let mut rec = Reconciler::new(nl.clone());
        let report = rec.apply(&fresh.desired(&ext(eth0), &[]).state).await;
        assert!(report.is_ok(), "{report:?}");
        let l = link("flannel.1");
        assert_ne!(l["ifindex"].as_u64().unwrap(), old_index);
        assert_eq!(l["linkinfo"]["info_data"]["port"], 8472);
        assert_eq!(l["linkinfo"]["info_data"]["learning"], false);
        assert_eq!(l["address"].as_str().unwrap(), mac);

        // Not a vxlan device at all: replaced too.
        ip("link del flannel.1");
        ip("link add flannel.1 type veth peer name flpeer");
        let mut fresh = Vxlan::new(VxlanConf::default());
        fresh.prepare(&nl, &ext(eth0)).await.unwrap();
        let mut rec = Reconciler::new(nl.clone());
        let report = rec.apply(&fresh.desired(&ext(eth0), &[]).state).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(link("flannel.1")["linkinfo"]["info_kind"], "vxlan");

        // No one wants it any more (a backend switch, `weft cleanup`): deleted.
        let report = rec.apply(&KernelState::default()).await;
        assert!(report.is_ok(), "{report:?}");
        assert!(nl.device_by_name("flannel.1").await.unwrap().is_none());
    });
}

/// Drift on the device itself is repaired from notifications by the same diff as a deleted
/// route: deleted (re-created with every entry on it, same MAC), set down, its address removed,
/// its MTU changed. A pass with nothing changed makes no write.
#[test]
fn device_drift_repaired_from_notifications() {
    in_netns_each_mode(
        "device_drift_repaired_from_notifications",
        |mode| async move {
            let eth0 = underlay();
            let nl = Netlink::connect().unwrap();
            let mut events = nl::subscribe().unwrap();
            let (mut vx, _) = planned(&nl, eth0, "10.244.1.0/24").await;
            let peers = [
                vxlan_peer("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"),
                vxlan_peer("10.244.3.0/24", "198.18.5.3", "02:00:00:00:00:03"),
            ];
            let mut rec = Reconciler::new(nl.clone()).with_route_nexthops(mode.nexthops());
            let want = vx.desired(&ext(eth0), &peers).state;
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 2 + 6, "device, address, 3 per peer");
            vx.bind(&|name| rec.device_index(name));
            let want = vx.desired(&ext(eth0), &peers).state;
            assert_eq!(rec.apply(&want).await.writes, 0, "no change, no write");
            let mac = link("flannel.1")["address"].as_str().unwrap().to_string();
            let all_there = || {
                is_up("flannel.1")
                    && v4_addrs("flannel.1") == vec![("10.244.1.0".to_string(), 32)]
                    && link("flannel.1")["mtu"] == 1450
                    && link("flannel.1")["address"] == mac.as_str()
                    && neighs("flannel.1").len() == 2
                    && fdb("flannel.1").len() == 2
                    && weft_routes().len() == 2
            };
            assert!(all_there());

            ip("link set flannel.1 down");
            drive_until(&mut rec, &mut events, &want, "set up again", all_there).await;

            ip("addr del 10.244.1.0/32 dev flannel.1");
            drive_until(&mut rec, &mut events, &want, "address re-added", all_there).await;

            ip("link set flannel.1 mtu 1300");
            drive_until(&mut rec, &mut events, &want, "MTU restored", all_there).await;

            ip("addr add 10.244.99.0/24 dev flannel.1");
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "foreign address removed",
                || v4_addrs("flannel.1") == vec![("10.244.1.0".to_string(), 32)],
            )
            .await;

            let old = rec.device_index("flannel.1").unwrap();
            ip("link del flannel.1");
            // `want` still names the old index: the reconciler moves its entries to the new one.
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "re-created with its entries",
                || nl_has("flannel.1") && all_there(),
            )
            .await;
            let new = rec.device_index("flannel.1").unwrap();
            assert_ne!(new, old);
            assert_written(mode);
            vx.bind(&|name| rec.device_index(name));
            assert_eq!(vx.device().unwrap().index, new);
            let want = vx.desired(&ext(eth0), &peers).state;
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 0, "a pass after the repair writes nothing");
            let mut fresh = Reconciler::new(nl.clone()).with_route_nexthops(mode.nexthops());
            fresh.refresh().await.unwrap();
            assert_eq!(
                fresh.current(),
                &want,
                "a dump reads back the desired state"
            );
        },
    );
}

/// Whether a link named `dev` exists.
fn nl_has(dev: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", dev])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn peers_applied_updated_removed_and_repaired() {
    in_netns_each_mode(
        "peers_applied_updated_removed_and_repaired",
        |mode| async move {
            let eth0 = underlay();
            let nl = Netlink::connect().unwrap();
            let mut events = nl::subscribe().unwrap();
            let (mut vx, _) = planned(&nl, eth0, "10.244.1.0/24").await;
            let mut rec = Reconciler::new(nl.clone()).with_route_nexthops(mode.nexthops());
            let report = rec.apply(&vx.desired(&ext(eth0), &[]).state).await;
            assert!(report.is_ok(), "{report:?}");
            vx.bind(&|name| rec.device_index(name));
            // Left over from an earlier run: an ARP and an FDB entry on weft's device.
            ip("neigh replace 10.244.9.0 lladdr 02:00:00:00:00:09 dev flannel.1 nud permanent");
            run(
                "bridge",
                "fdb replace 02:00:00:00:00:09 dev flannel.1 dst 198.18.0.9 self permanent",
            );

            rec.refresh().await.unwrap();
            let peers = [
                vxlan_peer("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"),
                vxlan_peer("10.244.3.0/24", "198.18.5.3", "02:00:00:00:00:03"),
            ];
            let want = vx.desired(&ext(eth0), &peers);
            assert!(want.skipped.is_empty(), "{:?}", want.skipped);
            let report = rec.apply(&want.state).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(
                report.writes,
                2 + 6,
                "purge 2 stale entries, add 3 per peer"
            );
            let both_neighs = BTreeSet::from([
                s3("10.244.2.0", "02:00:00:00:00:02", "PERMANENT"),
                s3("10.244.3.0", "02:00:00:00:00:03", "PERMANENT"),
            ]);
            assert_eq!(neighs("flannel.1"), both_neighs);
            assert_eq!(
                fdb("flannel.1"),
                BTreeSet::from([
                    ("02:00:00:00:00:02".to_string(), "198.18.0.2".to_string()),
                    ("02:00:00:00:00:03".to_string(), "198.18.5.3".to_string()),
                ])
            );
            let both_routes = BTreeSet::from([
                (
                    "10.244.2.0/24".to_string(),
                    "10.244.2.0".to_string(),
                    "flannel.1".to_string(),
                    true,
                ),
                (
                    "10.244.3.0/24".to_string(),
                    "10.244.3.0".to_string(),
                    "flannel.1".to_string(),
                    true,
                ),
            ]);
            assert_eq!(weft_routes(), both_routes);
            // `10.244.2.0/24 nhid N via 10.244.2.0 dev flannel.1 onlink` with N `id N via 10.244.2.0
            // dev flannel.1 onlink proto 87`, or the same route plain.
            assert_written(mode);
            assert_eq!(report.nexthop_writes, if mode.nexthops() { 2 } else { 0 });

            // Nothing changed: nothing written; a dump reads back what was written.
            assert_eq!(rec.apply(&want.state).await.writes, 0);
            let mut fresh = Reconciler::new(nl.clone()).with_route_nexthops(mode.nexthops());
            fresh.refresh().await.unwrap();
            assert_eq!(fresh.current(), &want.state);

            // Out-of-band deletes of the ARP entry and the FDB entry are repaired from notifications.
            let wanted = want.state.clone();
            ip("neigh del 10.244.2.0 dev flannel.1");
            run(
                "bridge",
                "fdb del 02:00:00:00:00:03 dev flannel.1 dst 198.18.5.3 self",
            );
            drive_until(
                &mut rec,
                &mut events,
                &wanted,
                "ARP and FDB repaired",
                || neighs("flannel.1") == both_neighs && fdb("flannel.1").len() == 2,
            )
            .await;

            // Peer 3 rebooted with a new MAC: ARP replaced, old FDB entry removed, new one added.
            let peers = [
                vxlan_peer("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"),
                vxlan_peer("10.244.3.0/24", "198.18.5.3", "02:00:00:00:00:33"),
            ];
            let want = vx.desired(&ext(eth0), &peers);
            let report = rec.apply(&want.state).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 3, "fdb del, neigh replace, fdb replace");
            assert_eq!(
                fdb("flannel.1"),
                BTreeSet::from([
                    ("02:00:00:00:00:02".to_string(), "198.18.0.2".to_string()),
                    ("02:00:00:00:00:33".to_string(), "198.18.5.3".to_string()),
                ])
            );

            // Peer 3 gone: its route, FDB and ARP entries go; peer 2 stays.
            let want = vx.desired(&ext(eth0), &peers[..1]);
            let report = rec.apply(&want.state).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 3);
            assert_eq!(
                neighs("flannel.1"),
                BTreeSet::from([s3("10.244.2.0", "02:00:00:00:00:02", "PERMANENT")])
            );
            assert_eq!(fdb("flannel.1").len(), 1);
            assert_eq!(weft_routes().len(), 1);
            assert_written(mode);

            // No peer: the entries go, the device and its address stay.
            let report = rec.apply(&vx.desired(&ext(eth0), &[]).state).await;
            assert!(report.is_ok(), "{report:?}");
            assert!(neighs("flannel.1").is_empty());
            assert!(fdb("flannel.1").is_empty());
            assert!(weft_routes().is_empty());
            assert_written(mode);

            // Everything gone (what `weft cleanup` does): the device with the rest.
            let report = rec.apply(&KernelState::default()).await;
            assert!(report.is_ok(), "{report:?}");
            assert!(!nl_has("flannel.1"));
            assert!(weft_routes().is_empty());
            assert_written(mode);
        },
    );
}

/// Feeds notifications to the reconciler and re-applies when `observe` says so (and retries
/// failures every 100 ms) until `done` holds or 10 s pass.
async fn drive_until(
    rec: &mut Reconciler,
    events: &mut (impl futures::Stream<Item = nl::KernelEvent> + Unpin),
    want: &KernelState,
    what: &str,
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut retry = false;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        let changed = match tokio::time::timeout(Duration::from_millis(100), events.next()).await {
            Ok(Some(ev)) => rec.observe(&ev),
            Ok(None) => panic!("notification stream ended"),
            Err(_) => false,
        };
        if changed || retry {
            retry = !rec.apply(want).await.failures.is_empty();
        }
    }
}
