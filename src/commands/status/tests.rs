//! Tests of `weft status`'s pure parts.

use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use backends::Route;
use backends::plan::{Fdb, Neigh};

use super::own::find_own;
use super::report::human_duration;
use super::*;
use crate::lease::etcd::registry::Snapshot;

fn route(dst: &str, gw: &str, oif: u32, onlink: bool) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        gateway: gw.parse().unwrap(),
        oif,
        onlink,
    }
}

const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];
const M3: [u8; 6] = [2, 0, 0, 0, 0, 3];

fn names(i: u32) -> String {
    match i {
        2 => "eth0".into(),
        7 => "flannel.1".into(),
        other => other.to_string(),
    }
}

#[test]
fn classify_sorts_missing_extra_different() {
    let mut want = KernelState::default();
    want.add_route(route("10.244.2.0/24", "10.244.2.0", 7, true));
    want.add_route(route("10.244.3.0/24", "10.244.3.0", 7, true));
    want.add_neigh(Neigh {
        ifindex: 7,
        ip: "10.244.2.0".parse().unwrap(),
        mac: M2,
    });
    want.add_fdb(Fdb {
        ifindex: 7,
        mac: M2,
        dst: "198.18.0.2".parse().unwrap(),
    });
    let mut have = want.clone();
    // Missing: the route to .3; extra: a stray proto-87 route; different: FDB dst.
    have.routes.remove(&"10.244.3.0/24".parse().unwrap());
    have.add_route(route("10.99.0.0/24", "198.18.0.9", 2, false));
    have.add_fdb(Fdb {
        ifindex: 7,
        mac: M2,
        dst: "198.18.0.22".parse().unwrap(),
    });
    have.add_neigh(Neigh {
        ifindex: 7,
        ip: "10.244.9.0".parse().unwrap(),
        mac: M3,
    });
    let d = classify(&want, &have, &|_| None, &names);
    let texts = |v: &[Entry]| v.iter().map(|e| e.text.clone()).collect::<Vec<_>>();
    assert_eq!(
        texts(&d.missing),
        ["10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink"]
    );
    assert_eq!(
        texts(&d.extra),
        [
            "10.99.0.0/24 via 198.18.0.9 dev eth0",
            "10.244.9.0 lladdr 02:00:00:00:00:03 dev flannel.1 PERMANENT"
        ]
    );
    assert_eq!(d.different.len(), 1);
    assert_eq!(
        d.different[0].want.text,
        "02:00:00:00:00:02 dev flannel.1 dst 198.18.0.2 self permanent"
    );
    assert_eq!(d.different[0].have.dst.as_deref(), Some("198.18.0.22"));
    assert_eq!(d.missing[0].dst.as_deref(), Some("10.244.3.0/24"));
    assert_eq!(d.missing[0].onlink, Some(true));
    assert!(classify(&want, &want, &|_| None, &names).is_empty());

    // Kernel routes on nexthop objects read like `ip route` shows them; the required
    // route (always plain in meaning) does not.
    have.routes.remove(&"10.244.2.0/24".parse().unwrap());
    have.add_route(route("10.244.2.0/24", "10.244.2.9", 7, true));
    let on_nh = |dst: &ipnet::IpNet| (dst.to_string() != "10.244.3.0/24").then_some(5);
    let d = classify(&want, &have, &on_nh, &names);
    assert_eq!(
        texts(&d.extra)[0],
        "10.99.0.0/24 nhid 5 via 198.18.0.9 dev eth0"
    );
    assert_eq!(d.extra[0].nhid, Some(5));
    let routes: Vec<&Changed> = d
        .different
        .iter()
        .filter(|c| c.want.kind == "route")
        .collect();
    assert_eq!(
        routes[0].have.text,
        "10.244.2.0/24 nhid 5 via 10.244.2.9 dev flannel.1 onlink"
    );
    assert_eq!(
        routes[0].want.text,
        "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
    );
    assert_eq!(routes[0].want.nhid, None);
}

fn vxlan_device(index: u32) -> Device {
    let ext = ExternalInterface {
        name: "eth0".into(),
        index: 2,
        iface_addr: Ipv4Addr::new(198, 18, 0, 1),
        ext_addr: Ipv4Addr::new(198, 18, 0, 1),
        mtu: 1500,
        prefixes: vec![],
        v6: None,
    };
    Device {
        index,
        ..Vxlan::new(net_conf::VxlanConf::default())
            .spec(&ext, Some([2, 0, 0, 0, 0, 1]))
            .expect("spec")
    }
}

#[test]
fn device_problems_come_from_the_diff() {
    let want = vxlan_device(7);
    let addr = backends::plan::Addr {
        dev: "flannel.1".into(),
        addr: "10.244.1.0/32".parse().expect("addr"),
    };
    let mut desired = KernelState::default();
    desired.add_device(want.clone());
    desired.add_addr(addr.clone());
    let info = |current: &KernelState| device_info(&want, &desired, current);
    assert!(info(&desired).problems.is_empty());
    assert_eq!(
        info(&KernelState::default()).problems,
        vec!["flannel.1 does not exist"]
    );
    let mut sick = desired.clone();
    let dev = sick.devices.get_mut("flannel.1").expect("dev");
    dev.up = false;
    dev.mtu = 1400;
    sick.addrs.clear();
    sick.add_addr(backends::plan::Addr {
        dev: "flannel.1".into(),
        addr: "10.244.9.0/24".parse().expect("addr"),
    });
    let i = info(&sick);
    assert!(i.present && !i.up);
    assert_eq!(
        i.problems,
        vec![
            "mtu 1400 (want 1450)",
            "link is down",
            "addresses [10.244.9.0/24] (want exactly 10.244.1.0/32)"
        ]
    );
    // A device of another backend is extra drift; the wanted one's changes are not.
    let ipip = Device {
        name: "flannel.ipip".into(),
        index: 8,
        kind: backends::plan::DeviceKind::IpIp {
            local: Ipv4Addr::new(198, 18, 0, 1),
            remote: None,
        },
        mtu: 1480,
        mac: None,
        up: true,
    };
    sick.add_device(ipip);
    let d = classify(&desired, &sick, &|_| None, &names);
    assert!(d.missing.is_empty() && d.different.is_empty(), "{d:?}");
    assert_eq!(
        d.extra
            .iter()
            .map(|e| (e.kind, e.text.as_str()))
            .collect::<Vec<_>>(),
        vec![(
            "device",
            "flannel.ipip type ipip local 198.18.0.1 remote any mtu 1480"
        )]
    );
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_795_517_294), "2026-11-24T10:48:14Z");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    assert_eq!(human_duration(86_399), "23h59m");
    assert_eq!(human_duration(303), "5m3s");
    assert_eq!(human_duration(12), "12s");
}

fn entry(subnet: &str, ip: &str, lease_id: i64, data: Option<&str>) -> LeaseEntry {
    LeaseEntry {
        key: net_conf::SubnetKey::from(subnet.parse::<ipnet::Ipv4Net>().unwrap()),
        attrs: net_conf::LeaseAttrs {
            public_ip: ip.parse().unwrap(),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: data.map(String::from),
            backend_v6_data: None,
        },
        lease_id,
        mod_revision: 5,
    }
}

#[test]
fn lease_info_fields() {
    let now = UNIX_EPOCH + Duration::from_secs(1_795_517_294);
    let e = entry(
        "10.244.2.0/24",
        "198.18.0.2",
        0x694d,
        Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#),
    );
    let l = lease_info(&e, "/coreos.com/network", Some(100), now);
    assert_eq!(l.subnet, "10.244.2.0/24");
    assert_eq!(l.key, "/coreos.com/network/subnets/10.244.2.0-24");
    assert_eq!(l.vni, Some(1));
    assert_eq!(l.vtep_mac.as_deref(), Some("02:00:00:00:00:02"));
    assert_eq!(l.lease_id.as_deref(), Some("694d"));
    assert!(!l.reservation);
    assert_eq!(l.expires_at_unix, Some(1_795_517_394));
    assert_eq!(l.expires_at.as_deref(), Some("2026-11-24T10:49:54Z"));
    let r = lease_info(
        &entry("10.244.3.0/24", "198.18.0.3", 0, None),
        "/p",
        Some(5),
        now,
    );
    assert!(r.reservation);
    assert_eq!(
        (r.lease_id.clone(), r.ttl_seconds, r.expires_at.clone()),
        (None, None, None)
    );
    let v = serde_json::to_value(&r).unwrap();
    for field in [
        "subnet",
        "key",
        "public_ip",
        "backend",
        "vni",
        "vtep_mac",
        "lease_id",
        "reservation",
        "ttl_seconds",
        "expires_at",
        "expires_at_unix",
    ] {
        assert!(v.get(field).is_some(), "{field} missing in {v}");
    }
}

#[test]
fn own_lease_by_public_ip_prefers_subnet_env() {
    let snap = Snapshot {
        revision: 9,
        leases: vec![
            entry("10.244.2.0/24", "198.18.0.1", 1, None),
            entry("10.244.3.0/24", "198.18.0.2", 2, None),
            entry("10.244.4.0/24", "198.18.0.1", 3, None),
        ],
        malformed: vec![],
    };
    let me = ext_at("198.18.0.1");
    assert_eq!(find_own(&snap, &me, None).unwrap().lease_id, 1);
    let prev = Some("10.244.4.0/24".parse().unwrap());
    assert_eq!(find_own(&snap, &me, prev).unwrap().lease_id, 3);
    assert!(find_own(&snap, &ext_at("198.18.0.9"), None).is_none());
}

fn ext_at(ip: &str) -> ExternalInterface {
    ExternalInterface {
        name: "eth0".into(),
        index: 2,
        iface_addr: ip.parse().unwrap(),
        ext_addr: ip.parse().unwrap(),
        mtu: 1500,
        prefixes: vec![],
        v6: None,
    }
}

#[test]
fn an_ipv6_only_nodes_own_lease_is_found_by_its_public_ipv6() {
    let v6_only = |subnet: &str, ip6: &str, id: i64| {
        let mut e = entry("10.0.0.0/8", "0.0.0.0", id, None);
        e.key = net_conf::SubnetKey::v6_only(subnet.parse().unwrap());
        e.attrs.public_ipv6 = Some(ip6.parse().unwrap());
        e
    };
    let snap = Snapshot {
        revision: 9,
        leases: vec![
            v6_only("fd00:244:0:2::/64", "fd00:18::2", 1),
            v6_only("fd00:244:0:1::/64", "fd00:18::1", 2),
        ],
        malformed: vec![],
    };
    let mut me = ext_at("0.0.0.0");
    me.v6 = Some(backends::ExternalV6 {
        iface_addr: "fd00:18::1".parse().unwrap(),
        ext_addr: "fd00:18::1".parse().unwrap(),
        prefixes: vec![],
    });
    assert!(!me.has_v4());
    assert_eq!(find_own(&snap, &me, None).unwrap().lease_id, 2);
    let info = node_lease_info(&snap.leases[1]);
    assert_eq!(info.subnet, "fd00:244:0:1::/64");
    assert_eq!(info.subnet6, None);
    assert_eq!(info.key, "Node with podCIDR fd00:244:0:1::/64");
}

#[test]
fn own_lease_without_flags_from_the_subnet_file_then_the_addresses() {
    let leases = vec![
        entry("10.244.2.0/24", "198.18.0.1", 1, None),
        entry("10.244.3.0/24", "198.18.0.2", 2, None),
        entry("10.244.4.0/24", "198.18.0.1", 3, None),
    ];
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let net = |s: &str| Some(s.parse::<ipnet::Ipv4Net>().unwrap());
    let mine = [ip("127.0.0.1"), ip("198.18.0.1")];
    let chosen =
        |prev| own_lease_without_flags(&leases, &mine, prev).map(|(e, by)| (e.lease_id, by));
    // The subnet file names one of this node's leases: that one.
    assert_eq!(chosen(net("10.244.4.0/24")), Some((3, FoundBy::SubnetFile)));
    // subnet.env holds x.y.z.1/24: the subnet x.y.z.0/24.
    assert_eq!(chosen(net("10.244.4.1/24")), Some((3, FoundBy::SubnetFile)));
    // No subnet file: the first lease whose PublicIP is an address of this node.
    assert_eq!(chosen(None), Some((1, FoundBy::Address)));
    // The file's subnet is leased to another node now: not ours, so by address.
    assert_eq!(chosen(net("10.244.3.0/24")), Some((1, FoundBy::Address)));
    // A subnet no lease holds: by address.
    assert_eq!(chosen(net("10.244.9.0/24")), Some((1, FoundBy::Address)));
    // No lease carries an address of this node: none, whatever the file says.
    let other = [ip("198.18.0.9")];
    assert!(own_lease_without_flags(&leases, &other, net("10.244.2.0/24")).is_none());
    assert!(own_lease_without_flags(&[], &mine, None).is_none());
}

#[test]
fn build_reports_in_sync_only_without_drift_and_device_problems() {
    let ext = ExternalInterface {
        name: "eth0".into(),
        index: 2,
        iface_addr: "198.18.0.1".parse().unwrap(),
        ext_addr: "198.18.0.1".parse().unwrap(),
        mtu: 1500,
        prefixes: vec!["198.18.0.0/24".parse().unwrap()],
        v6: None,
    };
    let conf = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
        .unwrap()
        .conf;
    let peers = [backends::Peer {
        key: net_conf::SubnetKey::from("10.244.2.0/24".parse::<ipnet::Ipv4Net>().unwrap()),
        attrs: net_conf::LeaseAttrs::host_gw("198.18.0.2".parse().unwrap()),
    }];
    let desired = backends::HostGw::new().desired(&ext, &peers);
    let snapshot = Snapshot::default();
    let on_nexthops = BTreeMap::from([("10.244.2.0/24".parse().unwrap(), 3)]);
    let input = |current: &KernelState, device: Option<DeviceInfo>| {
        build(
            BuildInput {
                ext: &ext,
                found_by: FoundBy::SubnetFile,
                source: "etcd /coreos.com/network/config".into(),
                conf: &conf,
                options: serde_json::json!({"Type": "host-gw"}),
                own: None,
                peers: vec![],
                snapshot: &snapshot,
                desired: &desired,
                current,
                route_nexthops: &on_nexthops,
                device,
            },
            &names,
        )
    };
    let r = input(&desired.state, None);
    assert!(r.in_sync);
    assert_eq!(r.exit_code(), EXIT_IN_SYNC);
    assert_eq!(
        r.required,
        Counts {
            routes: 1,
            neighs: 0,
            fdb: 0,
            routes_on_nexthops: None,
        }
    );
    assert_eq!(r.kernel.routes_on_nexthops, Some(1));
    assert!(r.render().contains("status:  in sync"));
    assert!(
        r.render()
            .contains("found:   own lease from the subnet file (FLANNEL_SUBNET)"),
        "{}",
        r.render()
    );
    assert_eq!(
        serde_json::to_value(&r).unwrap()["node"]["found_by"],
        "subnet_file"
    );
    assert!(
        r.render()
            .contains("weft holds 1 routes (1 on nexthop objects), 0 neigh, 0 fdb"),
        "{}",
        r.render()
    );
    let r = input(&KernelState::default(), None);
    assert!(!r.in_sync);
    assert_eq!(r.exit_code(), EXIT_DRIFT);
    let text = r.render();
    assert!(
        text.contains("  missing   route 10.244.2.0/24 via 198.18.0.2 dev eth0\n"),
        "{text}"
    );
    let sick = DeviceInfo {
        name: "flannel.1".into(),
        present: true,
        ifindex: Some(7),
        up: false,
        mtu: Some(1450),
        mac: None,
        problems: vec!["link is down".into()],
    };
    let r = input(&desired.state, Some(sick));
    assert!(!r.in_sync, "a device problem is drift too");
    assert!(r.render().contains("problem: link is down"));
    let json = serde_json::to_value(&r).unwrap();
    for field in [
        "schema",
        "in_sync",
        "node",
        "config",
        "own_lease",
        "peers",
        "malformed",
        "skipped",
        "device",
        "required",
        "kernel",
        "drift",
    ] {
        assert!(json.get(field).is_some(), "{field} missing");
    }
}

#[test]
fn backend_options_are_the_backend_object() {
    assert_eq!(
        backend_options(r#"{"Network":"10.244.0.0/16","backend":{"Type":"vxlan","VNI":4}}"#),
        serde_json::json!({"Type":"vxlan","VNI":4})
    );
    assert_eq!(backend_options("not json"), Value::Null);
}
