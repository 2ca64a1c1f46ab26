//! vxlan over IPv6 (`flannel-v6.<VNI>`) kernel tests, each in its own network namespace with a
//! dual-stack underlay (see `common`): the IPv6 device is created with flannel's attributes and
//! its /128, a second apply writes nothing, the per-peer NDP/FDB/route entries are applied,
//! repaired from notifications after an out-of-band delete, and removed with the peer; the
//! device gets `accept_ra = 0` as flanneld sets it, when made, adopted or made again. Skipped
//! (with a message) when not root.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use backends::nl::{self, Netlink};
use backends::reconcile::Reconciler;
use backends::vxlan::Vxlan;
use backends::{Backend, Peer};
use net_conf::{SubnetKey, VxlanConf};
use serde_json::Value;

use common::{drive_until, ext_dual, in_netns, ip, ip_json, tool_json, underlay_dual, vxlan_peer};

/// A dual-stack vxlan peer `n`: 10.244.n.0/24 at 198.18.0.n, fd00:244:0:n::/64 at fd00:18::n,
/// IPv4 VTEP MAC 02:00:00:00:00:0n, IPv6 VTEP MAC 02:00:00:00:16:0n.
fn dual_peer(n: u8) -> Peer {
    let mut p = vxlan_peer(
        &format!("10.244.{n}.0/24"),
        &format!("198.18.0.{n}"),
        &format!("02:00:00:00:00:{n:02x}"),
    );
    p.key.v6 = Some(format!("fd00:244:0:{n}::/64").parse().unwrap());
    p.attrs.public_ipv6 = Some(format!("fd00:18::{n}").parse().unwrap());
    p.attrs.backend_v6_data = Some(format!(r#"{{"VNI":1,"VtepMAC":"02:00:00:00:16:{n:02x}"}}"#));
    p
}

/// (dst, lladdr, state) of the IPv6 neighbours on `dev`.
fn neighs6(dev: &str) -> BTreeSet<(String, String, String)> {
    ip_json(&format!("-6 neigh show dev {dev}"))
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

/// `<dst> via <gw> dev <dev> [onlink] metric <m>` of the IPv6 routes of protocol 87.
fn routes6() -> BTreeSet<String> {
    ip_json("-6 route show table main proto 87")
        .iter()
        .map(|r| {
            let onlink = r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "onlink"));
            format!(
                "{} via {} dev {}{} metric {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap_or("-"),
                if onlink { " onlink" } else { "" },
                r["metric"]
            )
        })
        .collect()
}

fn n6(n: u8) -> (String, String, String) {
    (
        format!("fd00:244:0:{n}::"),
        format!("02:00:00:00:16:{n:02x}"),
        "PERMANENT".to_string(),
    )
}

fn f6(n: u8) -> (String, String) {
    (format!("02:00:00:00:16:{n:02x}"), format!("fd00:18::{n}"))
}

fn r6(n: u8) -> String {
    format!("fd00:244:0:{n}::/64 via fd00:244:0:{n}:: dev flannel-v6.1 onlink metric 1024")
}

#[test]
fn v6_device_entries_written_once_repaired_and_removed() {
    in_netns(
        "v6_device_entries_written_once_repaired_and_removed",
        || async {
            let eth0 = underlay_dual();
            let ext = ext_dual(eth0);
            let nl = Netlink::connect().unwrap();
            let mut events = nl::subscribe().unwrap();
            let mut vx = Vxlan::new(VxlanConf::default());
            let attrs = vx.prepare(&nl, &ext).await.unwrap();
            assert_eq!(attrs.public_ipv6, Some("fd00:18::1".parse().unwrap()));
            let own = SubnetKey::dual(
                "10.244.1.0/24".parse().unwrap(),
                "fd00:244:0:1::/64".parse().unwrap(),
            );
            assert_eq!(vx.configure(&ext, &own).unwrap(), 1450);
            let mut rec = Reconciler::new(nl.clone());
            let peers = [dual_peer(2), dual_peer(3)];
            let report = rec.apply(&vx.desired(&ext, &peers).state).await;
            assert!(report.is_ok(), "{report:?}");
            vx.bind(&|name| rec.device_index(name));
            let want = vx.desired(&ext, &peers).state;
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");

            // The device, as flannel makes it (MTU: 70 bytes of IPv6 overhead).
            let l: Value = ip_json("-d link show dev flannel-v6.1").remove(0);
            let data = &l["linkinfo"]["info_data"];
            assert_eq!(l["linkinfo"]["info_kind"], "vxlan");
            assert_eq!(data["id"], 1);
            assert_eq!(data["local6"], "fd00:18::1", "{data}");
            assert_eq!(data["link"], "eth0");
            assert_eq!(data["port"], 8472);
            assert_eq!(data["learning"], false);
            assert_eq!(l["mtu"], 1430);
            let (_, mac6) =
                backends::vxlan::parse_backend_data(attrs.backend_v6_data.as_deref().unwrap())
                    .unwrap();
            assert_eq!(
                l["address"].as_str().unwrap(),
                backends::plan::fmt_mac(&mac6)
            );
            let shown = ip_json("-6 addr show dev flannel-v6.1");
            let addrs: Vec<String> = shown[0]["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["scope"] == "global")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
                .collect();
            assert_eq!(addrs, vec!["fd00:244:0:1::/128"], "{shown:?}");

            // Per peer: NDP, FDB and the onlink route at metric 1024.
            assert_eq!(neighs6("flannel-v6.1"), BTreeSet::from([n6(2), n6(3)]));
            assert_eq!(fdb("flannel-v6.1"), BTreeSet::from([f6(2), f6(3)]));
            assert_eq!(routes6(), BTreeSet::from([r6(2), r6(3)]));
            assert_eq!(fdb("flannel.1").len(), 2, "the IPv4 entries too");

            // A second apply, and a re-read of the kernel, write nothing.
            let report = rec.apply(&want).await;
            assert!(report.is_ok() && report.writes == 0, "{report:?}");
            rec.refresh().await.unwrap();
            let report = rec.apply(&want).await;
            assert!(
                report.is_ok() && report.writes == 0,
                "after a dump: {report:?}"
            );
            // The echoes of weft's own writes (the new devices announced down, then up) lead to a
            // re-read at most, never to a write.
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
            while let Ok(Some(ev)) =
                tokio::time::timeout_at(deadline.into(), futures::StreamExt::next(&mut events))
                    .await
            {
                if rec.observe(&ev) {
                    let report = rec.apply(&want).await;
                    assert!(report.is_ok() && report.writes == 0, "{ev:?}: {report:?}");
                }
            }

            // Out-of-band deletes are repaired from the notifications alone.
            ip("-6 neigh del fd00:244:0:2:: dev flannel-v6.1");
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "IPv6 neighbour re-added",
                |_| neighs6("flannel-v6.1").contains(&n6(2)),
            )
            .await;
            crate::common::run(
                "bridge",
                "fdb del 02:00:00:00:16:03 dev flannel-v6.1 dst fd00:18::3 self",
            );
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "IPv6 FDB entry re-added",
                |_| fdb("flannel-v6.1").contains(&f6(3)),
            )
            .await;
            ip("-6 addr del fd00:244:0:1::/128 dev flannel-v6.1");
            drive_until(&mut rec, &mut events, &want, "IPv6 /128 re-added", |_| {
                !ip("-6 addr show dev flannel-v6.1 scope global").is_empty()
            })
            .await;
            assert!(
                !rec.needs_refresh(),
                "repaired from the notifications alone"
            );

            // A peer removed: its IPv6 entries go, the other peer's stay.
            let fewer = vx.desired(&ext, &[dual_peer(3)]).state;
            let report = rec.apply(&fewer).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(neighs6("flannel-v6.1"), BTreeSet::from([n6(3)]));
            assert_eq!(fdb("flannel-v6.1"), BTreeSet::from([f6(3)]));
            assert_eq!(routes6(), BTreeSet::from([r6(3)]));
        },
    );
}

/// `net.ipv6.conf.<dev>.accept_ra` in this thread's network namespace (None: no such device).
fn accept_ra(dev: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev}/accept_ra"))
        .ok()
        .map(|v| v.trim().to_string())
}

#[test]
fn v6_device_gets_accept_ra_0_when_made_adopted_or_made_again() {
    in_netns(
        "v6_device_gets_accept_ra_0_when_made_adopted_or_made_again",
        || async {
            let eth0 = underlay_dual();
            let ext = ext_dual(eth0);
            let nl = Netlink::connect().unwrap();
            let mut events = nl::subscribe().unwrap();
            let mut vx = Vxlan::new(VxlanConf::default());
            vx.prepare(&nl, &ext).await.unwrap();
            let own = SubnetKey::dual(
                "10.244.1.0/24".parse().unwrap(),
                "fd00:244:0:1::/64".parse().unwrap(),
            );
            vx.configure(&ext, &own).unwrap();
            let peers = [dual_peer(2)];
            let want = vx.desired(&ext, &peers).state;
            // Made by the reconciler: 0 (the namespace's default for a new link is 1).
            assert_eq!(accept_ra("default").as_deref(), Some("1"));
            let mut rec = Reconciler::new(nl.clone());
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(accept_ra("flannel-v6.1").as_deref(), Some("0"));
            assert_eq!(
                accept_ra("flannel.1").as_deref(),
                Some("0"),
                "the IPv4 device too, as flanneld sets it on each vxlan device"
            );

            // Adopted: a restarted agent finds the device with router advertisements on.
            ip("link set flannel-v6.1 down");
            std::fs::write("/proc/sys/net/ipv6/conf/flannel-v6.1/accept_ra", "1").unwrap();
            ip("link set flannel-v6.1 up");
            let mut vx = Vxlan::new(VxlanConf::default());
            vx.prepare(&nl, &ext).await.unwrap();
            vx.configure(&ext, &own).unwrap();
            let want = vx.desired(&ext, &peers).state;
            let mut rec = Reconciler::new(nl.clone());
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(accept_ra("flannel-v6.1").as_deref(), Some("0"));
            vx.bind(&|name| rec.device_index(name));
            let want = vx.desired(&ext, &peers).state;
            let report = rec.apply(&want).await;
            assert!(report.is_ok() && report.writes == 0, "{report:?}");

            // Made again after an out-of-band delete: the new link gets 0 too.
            ip("link del flannel-v6.1");
            drive_until(
                &mut rec,
                &mut events,
                &want,
                "flannel-v6.1 made again with accept_ra 0",
                |_| accept_ra("flannel-v6.1").as_deref() == Some("0"),
            )
            .await;
        },
    );
}
