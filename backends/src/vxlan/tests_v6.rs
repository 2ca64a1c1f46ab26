//! Unit tests of the vxlan backend's IPv6 side (`flannel-v6.<VNI>`).
use std::net::{Ipv4Addr, Ipv6Addr};

use net_conf::SubnetKey;

use super::*;
use crate::{ExternalV6, KernelOp};

const MAC1: Mac = [0x02, 0, 0, 0, 0, 0x01];
const MAC16: Mac = [0x02, 0, 0, 0, 0x16, 0x01];
const DATA2: &str = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#;
const DATA2_6: &str = r#"{"VNI":1,"VtepMAC":"02:00:00:00:16:02"}"#;

fn ext() -> ExternalInterface {
    ExternalInterface {
        name: "eth0".into(),
        index: 3,
        iface_addr: Ipv4Addr::new(198, 18, 0, 1),
        ext_addr: Ipv4Addr::new(198, 18, 0, 1),
        mtu: 1500,
        prefixes: vec!["198.18.0.0/24".parse().expect("prefix")],
        v6: Some(ExternalV6 {
            iface_addr: "fd00:18::1".parse().expect("ip"),
            ext_addr: "fd00:18::1".parse().expect("ip"),
            prefixes: vec!["fd00:18::/64".parse().expect("prefix")],
        }),
    }
}

fn vx() -> Vxlan {
    vx_with(VxlanConf::default())
}

fn vx_with(conf: VxlanConf) -> Vxlan {
    let e = ext();
    let b = Vxlan::new(conf);
    let dev = Device {
        index: 9,
        ..b.spec(&e, Some(MAC1)).expect("spec")
    };
    let dev6 = Device {
        index: 10,
        ..b.spec_v6(&e, e.v6.as_ref().expect("v6"), Some(MAC16))
            .expect("spec")
    };
    b.with_device(dev)
        .with_device_v6(dev6)
        .with_own("10.244.1.0/24".parse().expect("own"))
        .with_own_v6("fd00:244:0:1::/64".parse().expect("own"))
}

fn peer(n: u8, v6: Option<(&str, Option<&str>)>) -> Peer {
    Peer {
        key: SubnetKey {
            v4: Some(format!("10.244.{n}.0/24").parse().expect("subnet")),
            v6: v6.map(|_| format!("fd00:244:0:{n}::/64").parse().expect("subnet6")),
        },
        attrs: LeaseAttrs {
            public_ip: Ipv4Addr::new(198, 18, 0, n),
            public_ipv6: v6
                .map(|(ip, _)| ip.parse().expect("ip6"))
                .filter(|ip: &Ipv6Addr| !ip.is_loopback()),
            backend_type: VXLAN.into(),
            backend_data: Some(DATA2.replace(":02\"", &format!(":{n:02}\""))),
            backend_v6_data: v6.and_then(|(_, d)| d.map(str::to_string)),
        },
    }
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    items.into_iter().map(|i| i.to_string()).collect()
}

#[test]
fn v6_device_spec() {
    let e = ext();
    let b = Vxlan::new(VxlanConf {
        gbp: true,
        port: 4789,
        ..VxlanConf::default()
    });
    let d = b
        .spec_v6(&e, e.v6.as_ref().expect("v6"), Some(MAC16))
        .expect("spec");
    assert_eq!(d.name, "flannel-v6.1");
    assert_eq!(d.mtu, 1430, "the underlay's MTU minus 70");
    assert_eq!(d.index, V6_PLANNED_INDEX);
    assert_eq!(
        d.spec_with(&|i| (i == 3).then(|| "eth0".into())),
        "flannel-v6.1 type vxlan id 1 dev eth0 local fd00:18::1 dstport 4789 nolearning gbp \
         mtu 1430 address 02:00:00:00:16:01"
    );
    // An IPv4 local address is a fixed difference (the device is made anew).
    let mut have = d.clone();
    if let DeviceKind::Vxlan(v) = &mut have.kind {
        v.local = Ipv4Addr::new(198, 18, 0, 1).into();
    }
    assert_eq!(
        d.differences(&have).fixed,
        vec!["local 198.18.0.1 (want fd00:18::1)"]
    );
    let mut small = e.clone();
    small.mtu = 1340;
    assert!(
        b.spec_v6(&small, e.v6.as_ref().expect("v6"), None).is_err(),
        "below IPv6's 1280"
    );
}

#[test]
fn dual_stack_peer_gets_ndp_fdb_and_onlink_route_on_the_v6_device() {
    let d = vx().desired(&ext(), &[peer(2, Some(("fd00:18::2", Some(DATA2_6))))]);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(
        d.state.devices.keys().collect::<Vec<_>>(),
        vec!["flannel-v6.1", "flannel.1"]
    );
    assert_eq!(
        strings(&d.state.addrs),
        vec![
            "fd00:244:0:1::/128 dev flannel-v6.1",
            "10.244.1.0/32 dev flannel.1"
        ],
        "by device name"
    );
    assert_eq!(
        strings(d.state.neighs.values()),
        vec![
            "10.244.2.0 lladdr 02:00:00:00:00:02 dev 9",
            "fd00:244:0:2:: lladdr 02:00:00:00:16:02 dev 10",
        ]
    );
    assert_eq!(
        strings(d.state.fdb.values()),
        vec![
            "02:00:00:00:00:02 dev 9 dst 198.18.0.2",
            "02:00:00:00:16:02 dev 10 dst fd00:18::2",
        ]
    );
    assert_eq!(
        strings(d.state.routes.values()),
        vec![
            "10.244.2.0/24 via 10.244.2.0 dev 9 onlink",
            "fd00:244:0:2::/64 via fd00:244:0:2:: dev 10 onlink",
        ]
    );
    // The commands, as `weft status` and the logs show them.
    let n6 = d.state.neighs.values().nth(1).expect("neigh").clone();
    let names = |i: u32| (i == 10).then(|| "flannel-v6.1".to_string());
    assert_eq!(
        KernelOp::NeighReplace(n6.clone()).command(names),
        "ip -6 neigh replace fd00:244:0:2:: lladdr 02:00:00:00:16:02 dev flannel-v6.1 nud permanent"
    );
    assert_eq!(
        KernelOp::NeighDel(n6).command(names),
        "ip -6 neigh del fd00:244:0:2:: dev flannel-v6.1"
    );
    let e6 = d.state.fdb.values().nth(1).expect("fdb").clone();
    assert_eq!(
        KernelOp::FdbReplace(e6).command(names),
        "bridge fdb replace 02:00:00:00:16:02 dev flannel-v6.1 dst fd00:18::2 self permanent"
    );
    let r6 = d.state.routes.values().nth(1).expect("route").clone();
    assert_eq!(
        KernelOp::RouteReplace(r6).command(names),
        "ip -6 route replace fd00:244:0:2::/64 via fd00:244:0:2:: dev flannel-v6.1 onlink \
         proto 87 metric 1024"
    );
    // IPv4 text is unchanged.
    let n4 = d.state.neighs.values().next().expect("neigh").clone();
    assert_eq!(
        KernelOp::NeighDel(n4).to_string(),
        "ip neigh del 10.244.2.0 dev 9"
    );
}

#[test]
fn peers_without_a_usable_v6_part_keep_their_v4_entries() {
    let bad_vni = r#"{"VNI":2,"VtepMAC":"02:00:00:00:16:05"}"#;
    let peers = [
        peer(2, None),                                      // IPv4-only peer: no reason
        peer(3, Some(("::1", Some(DATA2_6)))),              // no PublicIPv6
        peer(4, Some(("fd00:18::4", None))),                // no BackendV6Data
        peer(5, Some(("fd00:18::5", Some(bad_vni)))),       // other VNI
        peer(6, Some(("fd00:18::1", Some(DATA2_6)))),       // our own address
        peer(7, Some(("fd00:18::7", Some("{\"VNI\":1}")))), // no MAC
    ];
    let d = vx().desired(&ext(), &peers);
    let reasons: Vec<(String, String)> = d
        .skipped
        .iter()
        .map(|(k, r)| (k.first().to_string(), r.clone()))
        .collect();
    let want = [
        ("10.244.3.0/24", "no PublicIPv6"),
        ("10.244.4.0/24", "no BackendV6Data"),
        ("10.244.5.0/24", "uses VNI 2 for IPv6"),
        ("10.244.6.0/24", "own address fd00:18::1"),
        ("10.244.7.0/24", "BackendV6Data: BackendData.VtepMAC"),
    ];
    assert_eq!(reasons.len(), want.len(), "{reasons:?}");
    for ((subnet, reason), (want_subnet, part)) in reasons.iter().zip(want) {
        assert_eq!(subnet, want_subnet);
        assert!(reason.contains(part), "{subnet}: {reason}");
    }
    // Every peer has its IPv4 entries; none has IPv6 ones.
    assert_eq!(d.state.routes.len(), 6);
    assert!(d.state.routes.keys().all(|dst| matches!(dst, IpNet::V4(_))));
    assert!(d.state.fdb.keys().all(|(i, _)| *i == 9));
}

#[test]
fn v4_only_node_ignores_v6_parts() {
    let mut e = ext();
    e.v6 = None;
    let b = Vxlan::new(VxlanConf::default()).with_device(
        Vxlan::new(VxlanConf::default())
            .spec(&e, Some(MAC1))
            .expect("spec"),
    );
    let d = b.desired(&e, &[peer(2, Some(("fd00:18::2", Some(DATA2_6))))]);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(d.state.devices.len(), 1);
    assert_eq!(d.state.routes.len(), 1);
}

#[test]
fn bind_moves_both_devices() {
    let mut b = vx();
    b.bind(&|name| match name {
        "flannel.1" => Some(20),
        "flannel-v6.1" => Some(21),
        _ => None,
    });
    let d = b.desired(&ext(), &[peer(2, Some(("fd00:18::2", Some(DATA2_6))))]);
    assert_eq!(d.state.devices["flannel-v6.1"].index, 21);
    let v6_routes: Vec<u32> = d
        .state
        .routes
        .values()
        .filter(|r| r.dst.addr().is_ipv6())
        .map(|r| r.oif)
        .collect();
    assert_eq!(v6_routes, vec![21]);
}

#[test]
fn previous_lease_lends_the_v6_mac() {
    let mut b = Vxlan::new(VxlanConf::default());
    let prev = LeaseAttrs {
        public_ip: Ipv4Addr::new(198, 18, 0, 1),
        public_ipv6: Some("fd00:18::1".parse().expect("ip")),
        backend_type: VXLAN.into(),
        backend_data: Some(DATA2.into()),
        backend_v6_data: Some(DATA2_6.into()),
    };
    b.adopt_previous(&prev);
    assert_eq!(b.mac, Some([2, 0, 0, 0, 0, 2]));
    assert_eq!(b.v6.mac, Some([2, 0, 0, 0, 0x16, 2]));
    // Another VNI's MAC is not taken.
    let mut other = Vxlan::new(VxlanConf {
        vni: 7,
        ..VxlanConf::default()
    });
    other.adopt_previous(&prev);
    assert_eq!(other.v6.mac, None);
}

/// prepare against a network namespace without the devices (needs root: skipped otherwise).
#[test]
fn prepare_publishes_backend_v6_data_and_public_ipv6() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Ok(nl) = rt.block_on(async { Netlink::connect() }) else {
        return;
    };
    let mut b = Vxlan::new(VxlanConf {
        vni: 4242,
        ..VxlanConf::default()
    });
    let mut prev = LeaseAttrs::ipip(Ipv4Addr::new(198, 18, 0, 1));
    prev.backend_type = VXLAN.into();
    prev.backend_v6_data = Some(r#"{"VNI":4242,"VtepMAC":"02:00:00:00:16:02"}"#.into());
    b.adopt_previous(&prev);
    // A link index no device uses: device_by_name finds no flannel-v6.4242 in this namespace.
    let mut e = ext();
    e.index = 1;
    let attrs = match rt.block_on(b.prepare(&nl, &e)) {
        Ok(a) => a,
        Err(err) => panic!("prepare: {err}"),
    };
    assert_eq!(attrs.backend_type, VXLAN);
    assert_eq!(attrs.public_ip, Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(attrs.public_ipv6, Some("fd00:18::1".parse().expect("ip")));
    assert_eq!(
        attrs.backend_v6_data.as_deref(),
        Some(r#"{"VNI":4242,"VtepMAC":"02:00:00:00:16:02"}"#),
        "the previous lease's IPv6 MAC"
    );
    let (vni, mac) =
        parse_backend_data(attrs.backend_data.as_deref().expect("data")).expect("BackendData");
    assert_eq!(vni, 4242);
    assert_eq!(b.device().and_then(|d| d.mac), Some(mac));
    assert_eq!(
        b.device_v6().and_then(|d| d.mac),
        Some([2, 0, 0, 0, 0x16, 2])
    );
    assert_eq!(
        b.configure(&e, &SubnetKey::new("10.244.1.0/24".parse().expect("own")))
            .expect("configure"),
        1450,
        "FLANNEL_MTU stays the IPv4 device's"
    );
    // An IPv4-only interface: no IPv6 attributes, no IPv6 device.
    e.v6 = None;
    let attrs = rt.block_on(b.prepare(&nl, &e)).expect("prepare");
    assert_eq!(attrs.public_ipv6, None);
    assert_eq!(attrs.backend_v6_data, None);
    assert!(b.device_v6().is_none());
}

/// An IPv6-only node: the interface has no IPv4 side.
fn ext_v6_only() -> ExternalInterface {
    ExternalInterface {
        iface_addr: Ipv4Addr::UNSPECIFIED,
        ext_addr: Ipv4Addr::UNSPECIFIED,
        prefixes: vec![],
        ..ext()
    }
}

/// An IPv6-only peer `fd00:244:0:<n>::/64` at `fd00:18::<n>` with `BackendV6Data` `data6`.
fn v6_only_peer(n: u8, data6: &str) -> Peer {
    let mut p = peer(n, Some(("fd00:18::2", Some(data6))));
    p.key = SubnetKey::v6_only(format!("fd00:244:0:{n}::/64").parse().expect("subnet6"));
    p.attrs.public_ip = Ipv4Addr::UNSPECIFIED;
    p.attrs.public_ipv6 = Some(format!("fd00:18::{n}").parse().expect("ip6"));
    p.attrs.backend_data = None;
    p
}

#[test]
fn an_ipv6_only_node_has_the_v6_device_and_entries_only() {
    let e = ext_v6_only();
    assert!(!e.has_v4());
    let b = Vxlan::new(VxlanConf::default());
    let dev6 = Device {
        index: 10,
        ..b.spec_v6(&e, e.v6.as_ref().expect("v6"), Some(MAC16))
            .expect("spec")
    };
    let mut b = b.with_device_v6(dev6);
    let mtu = b
        .configure(
            &e,
            &SubnetKey::v6_only("fd00:244:0:1::/64".parse().expect("own")),
        )
        .expect("configure");
    assert_eq!(mtu, 1430, "the pod MTU is the IPv6 device's");
    let d = b.desired(
        &e,
        &[
            v6_only_peer(2, DATA2_6),
            // Another backend's peer is skipped, as on an IPv4 node.
            Peer {
                attrs: LeaseAttrs {
                    backend_type: "host-gw".into(),
                    ..v6_only_peer(3, DATA2_6).attrs
                },
                ..v6_only_peer(3, DATA2_6)
            },
        ],
    );
    assert_eq!(
        d.state.devices.keys().collect::<Vec<_>>(),
        vec!["flannel-v6.1"]
    );
    assert_eq!(
        strings(&d.state.addrs),
        vec!["fd00:244:0:1::/128 dev flannel-v6.1"]
    );
    assert_eq!(
        strings(d.state.routes.values()),
        vec!["fd00:244:0:2::/64 via fd00:244:0:2:: dev 10 onlink"]
    );
    assert_eq!(d.state.neighs.len(), 1);
    assert_eq!(d.state.fdb.len(), 1);
    assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
    assert!(
        d.skipped[0].1.contains("backend type \"host-gw\""),
        "{:?}",
        d.skipped
    );
}

/// `BackendV6Data` of peer `n`: VNI 1, IPv6 VTEP MAC `02:00:00:00:16:<n>`.
fn data6(n: u8) -> String {
    format!(r#"{{"VNI":1,"VtepMAC":"02:00:00:00:16:{n:02}"}}"#)
}

fn direct_vx() -> Vxlan {
    vx_with(VxlanConf {
        direct_routing: true,
        ..VxlanConf::default()
    })
}

#[test]
fn direct_routing_for_adjacent_v6_peers_only() {
    let (d2, d3) = (data6(2), data6(3));
    let peers = [
        peer(2, Some(("fd00:18::2", Some(&d2)))), // on eth0's IPv6 prefix
        peer(3, Some(("2001:db8::3", Some(&d3)))), // elsewhere
    ];
    let d = direct_vx().desired(&ext(), &peers);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(
        strings(d.state.routes.values()),
        vec![
            "10.244.2.0/24 via 198.18.0.2 dev 3",
            "10.244.3.0/24 via 198.18.0.3 dev 3",
            "fd00:244:0:2::/64 via fd00:18::2 dev 3",
            "fd00:244:0:3::/64 via fd00:244:0:3:: dev 10 onlink",
        ],
        "without lookups the interface's prefixes decide, each family on its own"
    );
    assert_eq!(
        strings(d.state.neighs.values()),
        vec!["fd00:244:0:3:: lladdr 02:00:00:00:16:03 dev 10"],
        "only the tunnelled IPv6 peer has NDP and FDB entries"
    );
    assert_eq!(
        strings(d.state.fdb.values()),
        vec!["02:00:00:00:16:03 dev 10 dst 2001:db8::3"]
    );
    // The command, as the logs show it: metric 1024 like every IPv6 route of weft's.
    let r6 = d.state.routes.values().nth(2).expect("route").clone();
    let names = |i: u32| (i == 3).then(|| "eth0".to_string());
    assert_eq!(
        KernelOp::RouteReplace(r6).command(names),
        "ip -6 route replace fd00:244:0:2::/64 via fd00:18::2 dev eth0 proto 87 metric 1024"
    );
    // Without DirectRouting both families tunnel.
    let d = vx().desired(&ext(), &peers);
    assert_eq!(d.state.neighs.len(), 4);
    assert!(d.state.routes.values().all(|r| r.onlink));
}

#[test]
fn the_kernels_answers_decide_v6_peers_each_family_on_its_own() {
    let (d2, d3) = (data6(2), data6(3));
    let peers = [
        peer(2, Some(("fd00:18::2", Some(&d2)))),
        peer(3, Some(("2001:db8::3", Some(&d3)))),
    ];
    let mut b = direct_vx();
    let paths = b.direct_paths_mut().expect("DirectRouting is on");
    // The agent looks up both families' addresses of a dual-stack peer.
    assert_eq!(
        strings(paths.peer_ips(&peers[0].attrs)),
        vec!["198.18.0.2", "fd00:18::2"]
    );
    // fd00:18::2 behind a router after all; 2001:db8::3 on-link through device 7; the IPv4
    // answer of peer 2 (a gateway) does not touch its IPv6 one.
    paths.set("fd00:18::2".parse::<Ipv6Addr>().expect("ip"), None);
    paths.set("2001:db8::3".parse::<Ipv6Addr>().expect("ip"), Some(7));
    paths.set(Ipv4Addr::new(198, 18, 0, 2), None);
    let d = b.desired(&ext(), &peers);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(
        strings(d.state.routes.values()),
        vec![
            "10.244.2.0/24 via 10.244.2.0 dev 9 onlink",
            "10.244.3.0/24 via 198.18.0.3 dev 3",
            "fd00:244:0:2::/64 via fd00:244:0:2:: dev 10 onlink",
            "fd00:244:0:3::/64 via 2001:db8::3 dev 7",
        ]
    );
    assert_eq!(
        strings(d.state.fdb.values()),
        vec![
            "02:00:00:00:00:02 dev 9 dst 198.18.0.2",
            "02:00:00:00:16:02 dev 10 dst fd00:18::2",
        ]
    );
}

#[test]
fn direct_routing_on_an_ipv6_only_node() {
    let e = ext_v6_only();
    let b = Vxlan::new(VxlanConf {
        direct_routing: true,
        ..VxlanConf::default()
    });
    let dev6 = Device {
        index: 10,
        ..b.spec_v6(&e, e.v6.as_ref().expect("v6"), Some(MAC16))
            .expect("spec")
    };
    let mut b = b
        .with_device_v6(dev6)
        .with_own_v6("fd00:244:0:1::/64".parse().expect("own"));
    let peers = [v6_only_peer(2, &data6(2)), v6_only_peer(3, &data6(3))];
    let paths = b.direct_paths_mut().expect("DirectRouting is on");
    // An IPv6-only peer's PublicIP is 0.0.0.0: nothing to look up there.
    assert_eq!(strings(paths.peer_ips(&peers[0].attrs)), vec!["fd00:18::2"]);
    paths.set("fd00:18::3".parse::<Ipv6Addr>().expect("ip"), None);
    let d = b.desired(&e, &peers);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(
        strings(d.state.routes.values()),
        vec![
            "fd00:244:0:2::/64 via fd00:18::2 dev 3",
            "fd00:244:0:3::/64 via fd00:244:0:3:: dev 10 onlink",
        ]
    );
}

#[test]
fn an_ipv4_only_node_looks_up_no_ipv6_address() {
    let b = Vxlan::new(VxlanConf {
        direct_routing: true,
        ..VxlanConf::default()
    });
    let mut b = b.with_device(Device {
        index: 9,
        ..Vxlan::new(VxlanConf::default())
            .spec(&ext(), Some(MAC1))
            .expect("spec")
    });
    let p = peer(2, Some(("fd00:18::2", Some(DATA2_6))));
    let paths = b.direct_paths_mut().expect("DirectRouting is on");
    assert_eq!(strings(paths.peer_ips(&p.attrs)), vec!["198.18.0.2"]);
}
