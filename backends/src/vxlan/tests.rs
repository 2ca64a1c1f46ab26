//! Unit tests of the vxlan backend's IPv4 side (IPv6: `tests_v6.rs`).
use std::net::Ipv4Addr;

use net_conf::SubnetKey;

use super::data::{parse_canonical, random_mac};
use super::*;

const MAC2: Mac = [0x02, 0, 0, 0, 0, 0x02];
const MAC3: Mac = [0x02, 0, 0, 0, 0, 0x03];

fn ext() -> ExternalInterface {
    ExternalInterface {
        name: "eth0".into(),
        index: 3,
        iface_addr: Ipv4Addr::new(198, 18, 0, 1),
        ext_addr: Ipv4Addr::new(198, 18, 0, 1),
        mtu: 1500,
        prefixes: vec!["198.18.0.0/24".parse().expect("prefix")],
        v6: None,
    }
}

fn dev() -> Device {
    Device {
        index: 9,
        ..Vxlan::new(VxlanConf::default())
            .spec(&ext(), Some([0x02, 0, 0, 0, 0, 0x01]))
            .expect("spec")
    }
}

fn peer(subnet: &str, ip: &str, backend: &str, data: Option<&str>) -> Peer {
    Peer {
        key: SubnetKey::new(subnet.parse().expect("subnet")),
        attrs: LeaseAttrs {
            public_ip: ip.parse().expect("ip"),
            public_ipv6: None,
            backend_type: backend.into(),
            backend_data: data.map(str::to_string),
            backend_v6_data: None,
        },
    }
}

fn vx(direct_routing: bool) -> Vxlan {
    Vxlan::new(VxlanConf {
        direct_routing,
        ..VxlanConf::default()
    })
    .with_device(dev())
}

#[test]
fn backend_data_round_trip_and_go_spellings() {
    let text = backend_data(1, &MAC2);
    assert_eq!(text, r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#);
    assert_eq!(parse_backend_data(&text), Ok((1, MAC2)));
    assert_eq!(
        parse_backend_data(r#"{"vni":7,"vtepMAC":"02-00-00-00-00-03"}"#),
        Ok((7, MAC3))
    );
    let err = parse_backend_data(r#"{"VNI":1,"VtepMAC":"zz"}"#).expect_err("bad mac");
    assert!(err.contains("BackendData.VtepMAC \"zz\""), "{err}");
    let err = parse_backend_data(r#"{"VtepMAC":"02:00:00:00:00:02"}"#).expect_err("no vni");
    assert!(err.contains("BackendData.VNI"), "{err}");
    assert!(parse_backend_data("nope").is_err());
    // The canonical fast path agrees with the JSON path and leaves odd spellings to it.
    assert_eq!(
        parse_canonical(&backend_data(4096, &MAC2)),
        Some((4096, MAC2))
    );
    for odd in [
        r#"{"VNI":01,"VtepMAC":"02:00:00:00:00:02"}"#,
        r#"{"VNI":+1,"VtepMAC":"02:00:00:00:00:02"}"#,
        r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02:03"}"#,
        r#"{"VNI":1,"VtepMAC":"\u00302:00:00:00:00:02"}"#,
        r#"{"VNI":1, "VtepMAC":"02:00:00:00:00:02"}"#,
    ] {
        assert_eq!(parse_canonical(odd), None, "{odd}");
    }
    assert_eq!(
        parse_backend_data(r#"{"VNI":1, "VtepMAC":"02:00:00:00:00:02"}"#),
        Ok((1, MAC2))
    );
    assert!(parse_backend_data(r#"{"VNI":01,"VtepMAC":"02:00:00:00:00:02"}"#).is_err());
    assert!(parse_backend_data(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02:03"}"#).is_err());
}

#[test]
fn per_peer_neigh_fdb_and_onlink_route() {
    let d = vx(false).desired(
        &ext(),
        &[
            peer(
                "10.244.2.0/24",
                "198.18.0.2",
                "vxlan",
                Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#),
            ),
            // Not adjacent: vxlan doesn't care.
            peer(
                "10.244.3.0/24",
                "203.0.113.3",
                "vxlan",
                Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}"#),
            ),
        ],
    );
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(d.state.devices["flannel.1"], dev());
    assert!(d.state.addrs.is_empty(), "no own subnet yet");
    let gw2 = Ipv4Addr::new(10, 244, 2, 0);
    assert_eq!(
        d.state.neighs.values().cloned().collect::<Vec<_>>(),
        vec![
            Neigh {
                ifindex: 9,
                ip: gw2.into(),
                mac: MAC2
            },
            Neigh {
                ifindex: 9,
                ip: Ipv4Addr::new(10, 244, 3, 0).into(),
                mac: MAC3
            },
        ]
    );
    assert_eq!(
        d.state.fdb.get(&(9, MAC3)),
        Some(&Fdb {
            ifindex: 9,
            mac: MAC3,
            dst: Ipv4Addr::new(203, 0, 113, 3).into()
        })
    );
    let r2 = &d.state.routes[&"10.244.2.0/24".parse().expect("net")];
    assert_eq!(r2.to_string(), "10.244.2.0/24 via 10.244.2.0 dev 9 onlink");
    assert_eq!(d.state.routes.len(), 2);
}

#[test]
fn direct_routing_for_adjacent_peers_only() {
    let data2 = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#;
    let data3 = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}"#;
    let d = vx(true).desired(
        &ext(),
        &[
            peer("10.244.2.0/24", "198.18.0.2", "vxlan", Some(data2)),
            peer("10.244.3.0/24", "203.0.113.3", "vxlan", Some(data3)),
        ],
    );
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    let r2 = &d.state.routes[&"10.244.2.0/24".parse().expect("net")];
    assert_eq!(r2.to_string(), "10.244.2.0/24 via 198.18.0.2 dev 3");
    assert_eq!(d.state.neighs.len(), 1, "only the tunnelled peer");
    assert_eq!(d.state.fdb.len(), 1);
}

#[test]
fn skips_with_reasons() {
    let good = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#;
    let peers = [
        peer("10.244.2.0/24", "198.18.0.2", "host-gw", None),
        peer("10.244.3.0/24", "198.18.0.3", "vxlan", None),
        peer(
            "10.244.4.0/24",
            "198.18.0.4",
            "vxlan",
            Some(r#"{"VNI":1,"VtepMAC":"bad"}"#),
        ),
        peer(
            "10.244.5.0/24",
            "198.18.0.5",
            "vxlan",
            Some(r#"{"VNI":2,"VtepMAC":"02:00:00:00:00:05"}"#),
        ),
        peer("10.244.6.0/24", "198.18.0.1", "vxlan", Some(good)),
        peer("10.244.7.0/24", "198.18.0.7", "vxlan", Some(good)),
        peer("10.244.8.0/24", "198.18.0.8", "vxlan", Some(good)),
    ];
    let d = vx(false).desired(&ext(), &peers);
    let reasons: Vec<(String, String)> = d
        .skipped
        .iter()
        .map(|(k, r)| (k.first().to_string(), r.clone()))
        .collect();
    let want = [
        ("10.244.2.0/24", "\"host-gw\""),
        ("10.244.3.0/24", "no BackendData"),
        ("10.244.4.0/24", "BackendData.VtepMAC \"bad\""),
        ("10.244.5.0/24", "uses VNI 2, this node uses 1"),
        ("10.244.6.0/24", "own address"),
        ("10.244.8.0/24", "already used by the peer at 198.18.0.7"),
    ];
    assert_eq!(reasons.len(), want.len(), "{reasons:?}");
    for ((subnet, reason), (want_subnet, want_part)) in reasons.iter().zip(want) {
        assert_eq!(subnet, want_subnet);
        assert!(reason.contains(want_part), "{subnet}: {reason}");
    }
    assert_eq!(d.state.routes.len(), 1);
}

#[test]
fn unprepared_backend_programs_nothing() {
    let d = Vxlan::new(VxlanConf::default()).desired(
        &ext(),
        &[peer("10.244.2.0/24", "198.18.0.2", "vxlan", None)],
    );
    assert!(d.state.is_empty());
    assert_eq!(d.skipped.len(), 1);
}

/// The device as the kernel reports it (what weft makes, at index 9).
fn link(kind: &str) -> Device {
    let mut d = dev();
    d.mac = Some(MAC2);
    if kind != "vxlan" {
        d.kind = DeviceKind::Other(kind.into());
    }
    d
}

#[test]
fn device_compared_field_by_field() {
    let want = vx(false).spec(&ext(), Some(MAC2)).expect("spec");
    assert_eq!(want.mtu, 1450);
    assert_eq!(want.name, "flannel.1");
    assert!(want.up);
    assert!(want.differences(&link("vxlan")).is_empty());
    assert_eq!(
        want.differences(&link("veth")).fixed,
        vec!["type veth (want vxlan)"]
    );
    let mut l = link("vxlan");
    if let DeviceKind::Vxlan(v) = &mut l.kind {
        v.vni = 2;
        v.port = 4789;
        v.local = Ipv4Addr::new(198, 18, 0, 9).into();
        v.learning = true;
    }
    l.mtu = 1400; // fixed in place
    let d = want.differences(&l);
    assert_eq!(
        d.fixed,
        vec![
            "id 2 (want 1)",
            "local 198.18.0.9 (want 198.18.0.1)",
            "dstport 4789 (want 8472)",
            "learning true (want false)",
        ]
    );
    assert_eq!(d.settable, vec!["mtu 1400 (want 1450)"]);
    let mut small = ext();
    small.mtu = 100;
    assert!(vx(false).spec(&small, Some(MAC2)).is_err());
    let mut conf_mtu = Vxlan::new(VxlanConf {
        mtu: Some(9000),
        ..VxlanConf::default()
    });
    conf_mtu.dev = None;
    assert_eq!(conf_mtu.spec(&ext(), Some(MAC2)).expect("spec").mtu, 8950);
}

#[test]
fn desired_holds_the_device_and_its_slash32() {
    let d = vx(false)
        .with_own("10.244.1.0/24".parse().expect("own"))
        .desired(&ext(), &[]);
    assert_eq!(d.state.devices.len(), 1);
    let flannel = &d.state.devices["flannel.1"];
    assert_eq!(flannel.index, 9);
    assert_eq!(flannel.mac, Some([0x02, 0, 0, 0, 0, 0x01]));
    assert_eq!(
        d.state
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["10.244.1.0/32 dev flannel.1"]
    );
    // Bound to the index the reconciler made the device under: entries follow.
    let mut b = vx(false);
    b.bind(&|name| (name == "flannel.1").then_some(12));
    let d = b.desired(
        &ext(),
        &[peer(
            "10.244.2.0/24",
            "198.18.0.2",
            "vxlan",
            Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#),
        )],
    );
    assert_eq!(d.state.devices["flannel.1"].index, 12);
    assert!(d.state.neighs.keys().all(|(i, _)| *i == 12));
    assert!(d.state.routes.values().all(|r| r.oif == 12));
}

#[test]
fn random_macs_are_local_unicast() {
    for _ in 0..100 {
        let m = random_mac();
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
    }
}
