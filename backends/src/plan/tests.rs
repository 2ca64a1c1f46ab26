//! Tests of the plan module.
use super::*;

fn route(dst: &str, gw: &str, oif: u32) -> Route {
    Route {
        dst: dst.parse().expect("dst"),
        gateway: gw.parse().expect("gw"),
        oif,
        onlink: false,
    }
}

fn state<const N: usize>(routes: [Route; N]) -> KernelState {
    KernelState::from_routes(routes)
}

#[test]
fn diff_table() {
    let a = route("10.244.1.0/24", "198.18.0.1", 2);
    let b = route("10.244.2.0/24", "198.18.0.2", 2);
    let c = route("10.244.3.0/24", "198.18.0.3", 2);
    let b_moved = route("10.244.2.0/24", "198.18.0.22", 2);
    let b_other_dev = route("10.244.2.0/24", "198.18.0.2", 5);
    let b_onlink = Route {
        onlink: true,
        ..b.clone()
    };
    use KernelOp::{RouteDel as Del, RouteReplace as Rep};
    let cases: Vec<(&str, KernelState, KernelState, Vec<KernelOp>)> = vec![
        ("both empty", state([]), state([]), vec![]),
        (
            "equal",
            state([a.clone(), b.clone()]),
            state([b.clone(), a.clone()]),
            vec![],
        ),
        (
            "missing",
            state([a.clone(), b.clone()]),
            state([a.clone()]),
            vec![Rep(b.clone())],
        ),
        (
            "extra",
            state([a.clone()]),
            state([a.clone(), c.clone()]),
            vec![Del(c.clone())],
        ),
        (
            "everything gone",
            state([]),
            state([a.clone(), b.clone()]),
            vec![Del(a.clone()), Del(b.clone())],
        ),
        (
            "new gateway",
            state([b_moved.clone()]),
            state([b.clone()]),
            vec![Rep(b_moved.clone())],
        ),
        (
            "new device",
            state([b_other_dev.clone()]),
            state([b.clone()]),
            vec![Rep(b_other_dev.clone())],
        ),
        (
            "onlink differs",
            state([b_onlink.clone()]),
            state([b.clone()]),
            vec![Rep(b_onlink.clone())],
        ),
        (
            "deletes before replaces, each by dst",
            state([c.clone(), a.clone()]),
            state([b.clone()]),
            vec![Del(b.clone()), Rep(a.clone()), Rep(c.clone())],
        ),
    ];
    for (name, desired, current, want) in cases {
        assert_eq!(diff(&desired, &current), want, "case {name}");
    }
}

#[test]
fn diff_orders_kinds_for_onlink_routes() {
    let mac = [2, 0, 0, 0, 0, 2];
    let old_mac = [2, 0, 0, 0, 0, 9];
    let n = Neigh {
        ifindex: 7,
        ip: Ipv4Addr::new(10, 244, 2, 0).into(),
        mac,
    };
    let e = Fdb {
        ifindex: 7,
        mac,
        dst: Ipv4Addr::new(198, 18, 0, 2).into(),
    };
    let old_e = Fdb {
        mac: old_mac,
        ..e.clone()
    };
    let rt = Route {
        onlink: true,
        ..route("10.244.2.0/24", "10.244.2.0", 7)
    };
    let gone = route("10.244.3.0/24", "10.244.3.0", 7);
    let gone_n = Neigh {
        ip: Ipv4Addr::new(10, 244, 3, 0).into(),
        ..n.clone()
    };
    let mut desired = KernelState::from_routes([rt.clone()]);
    desired.add_neigh(n.clone());
    desired.add_fdb(e.clone());
    let mut current = KernelState::from_routes([gone.clone()]);
    current.add_neigh(gone_n.clone());
    current.add_fdb(old_e.clone());
    let ops = diff(&desired, &current);
    assert_eq!(
        ops,
        vec![
            KernelOp::RouteDel(gone),
            KernelOp::NeighReplace(n.clone()),
            KernelOp::FdbReplace(e.clone()),
            KernelOp::RouteReplace(rt),
            KernelOp::FdbDel(old_e),
            KernelOp::NeighDel(gone_n),
        ]
    );
    for op in &ops {
        current.record(op);
    }
    assert_eq!(current, desired);
    assert_eq!(
        KernelOp::NeighReplace(n).command(|_| Some("flannel.1".into())),
        "ip neigh replace 10.244.2.0 lladdr 02:00:00:00:00:02 dev flannel.1 nud permanent"
    );
    assert_eq!(
        KernelOp::FdbReplace(e).to_string(),
        "bridge fdb replace 02:00:00:00:00:02 dev 7 dst 198.18.0.2 self permanent"
    );
}

#[test]
fn applying_the_diff_reaches_desired() {
    let desired = state([
        route("10.244.1.0/24", "198.18.0.1", 2),
        route("10.244.2.0/24", "198.18.0.9", 2),
    ]);
    let mut current = state([
        route("10.244.2.0/24", "198.18.0.2", 2),
        route("10.244.7.0/24", "198.18.0.7", 2),
    ]);
    for op in diff(&desired, &current) {
        current.record(&op);
    }
    assert_eq!(current, desired);
    assert!(diff(&desired, &current).is_empty());
}

#[test]
fn diff_at_is_diff_restricted_to_the_touched_keys() {
    let a = route("10.244.1.0/24", "198.18.0.1", 2);
    let b = route("10.244.2.0/24", "198.18.0.2", 2);
    let b_moved = route("10.244.2.0/24", "198.18.0.22", 2);
    let c = route("10.244.3.0/24", "198.18.0.3", 2);
    let d = route("10.244.4.0/24", "198.18.0.4", 2);
    // b moved, c left, d is new; a is untouched and in sync.
    let desired = state([a.clone(), b_moved.clone(), d.clone()]);
    let current = state([a.clone(), b.clone(), c.clone()]);
    let touched = state([b_moved.clone(), c.clone(), d.clone()]);
    assert_eq!(
        diff_at(&desired, &current, &touched),
        diff(&desired, &current)
    );
    // Only the touched keys: the out-of-sync c is left to a full diff.
    let only_d = state([d.clone()]);
    assert_eq!(
        diff_at(&desired, &current, &only_d),
        vec![KernelOp::RouteReplace(d)]
    );
    assert!(diff_at(&desired, &current, &state([a])).is_empty());
}

#[test]
fn remove_keys_and_collides_go_by_key() {
    let a = route("10.244.1.0/24", "198.18.0.1", 2);
    let a_other = route("10.244.1.0/24", "198.18.0.9", 2);
    let b = route("10.244.2.0/24", "198.18.0.2", 2);
    let mut s = state([a.clone(), b.clone()]);
    let want = state([a_other.clone()]);
    assert!(want.collides(&s, &KernelState::default()));
    assert!(!want.collides(&s, &state([a.clone()])), "a is being freed");
    assert!(
        !state([route("10.244.3.0/24", "198.18.0.3", 2)]).collides(&s, &KernelState::default())
    );
    s.remove_keys(&want);
    assert_eq!(s, state([b]));
}

/// One slot per key: absent, or one of a few values (so equal and different values occur).
fn slots_state(slots: &[(Option<u8>, bool)], pick: impl Fn(usize) -> Option<u8>) -> KernelState {
    let mut s = KernelState::default();
    for (i, _) in slots.iter().enumerate() {
        let Some(v) = pick(i) else { continue };
        let i = u8::try_from(i).expect("few keys");
        s.add_route(route(
            &format!("10.244.{i}.0/24"),
            &format!("198.18.0.{v}"),
            2,
        ));
        s.add_neigh(Neigh {
            ifindex: 7,
            ip: Ipv4Addr::new(10, 244, i, 0).into(),
            mac: [2, 0, 0, 0, i, v],
        });
        s.add_fdb(Fdb {
            ifindex: 7,
            mac: [2, 0, 0, 0, 0, i],
            dst: Ipv4Addr::new(198, 18, 0, v).into(),
        });
    }
    s
}

proptest::proptest! {
    /// Wherever the kernel agrees with the desired state outside the touched keys, the
    /// incremental diff makes exactly the full diff's writes, in its order.
    #[test]
    fn diff_at_equals_diff_when_the_rest_agrees(
        slots in proptest::collection::vec(
            (proptest::option::of(0u8..3), proptest::bool::ANY), 0..24),
        current_at_touched in proptest::collection::vec(proptest::option::of(0u8..3), 24),
    ) {
        let desired = slots_state(&slots, |i| slots[i].0);
        let current = slots_state(&slots, |i| {
            if slots[i].1 { current_at_touched[i] } else { slots[i].0 }
        });
        let touched = slots_state(&slots, |i| slots[i].1.then_some(0));
        proptest::prop_assert_eq!(diff_at(&desired, &current, &touched), diff(&desired, &current));
    }
}

#[test]
fn display_reads_like_ip() {
    let r = Route {
        onlink: true,
        ..route("10.244.2.0/24", "198.18.0.2", 3)
    };
    assert_eq!(r.to_string(), "10.244.2.0/24 via 198.18.0.2 dev 3 onlink");
    assert_eq!(
        KernelOp::RouteReplace(route("10.244.2.0/24", "198.18.0.2", 3)).to_string(),
        "ip route replace 10.244.2.0/24 via 198.18.0.2 dev 3 proto 87"
    );
    assert_eq!(
        KernelOp::RouteDel(route("10.244.2.0/24", "198.18.0.2", 3))
            .command(|i| (i == 3).then(|| "eth0".to_string())),
        "ip route del 10.244.2.0/24 via 198.18.0.2 dev eth0 proto 87"
    );
    assert_eq!(
        route("10.244.2.0/24", "0.0.0.0", 0).to_string(),
        "10.244.2.0/24"
    );
}

fn vxlan_dev(index: u32) -> Device {
    crate::device::test_vxlan("flannel.1", index)
}

fn addr(dev: &str, a: &str) -> Addr {
    Addr {
        dev: dev.into(),
        addr: a.parse().expect("addr"),
    }
}

/// A vxlan peer's entries on device `index`.
fn peer_on(index: u32, i: u8) -> (Neigh, Fdb, Route) {
    let mac = [2, 0, 0, 0, 0, i];
    (
        Neigh {
            ifindex: index,
            ip: Ipv4Addr::new(10, 244, i, 0).into(),
            mac,
        },
        Fdb {
            ifindex: index,
            mac,
            dst: Ipv4Addr::new(198, 18, 0, i).into(),
        },
        Route {
            onlink: true,
            ..route(&format!("10.244.{i}.0/24"), &format!("10.244.{i}.0"), index)
        },
    )
}

fn with_peer(mut s: KernelState, index: u32, i: u8) -> KernelState {
    let (n, e, r) = peer_on(index, i);
    s.add_neigh(n);
    s.add_fdb(e);
    s.add_route(r);
    s
}

#[test]
fn diff_devices_table() {
    use KernelOp::*;
    let dev = vxlan_dev(7);
    let a = addr("flannel.1", "10.244.1.0/32");
    let mut want = KernelState::default();
    want.add_device(dev.clone());
    want.add_addr(a.clone());
    let want = with_peer(want, 7, 2);
    let (n2, e2, r2) = peer_on(7, 2);
    let hostgw = route("10.244.5.0/24", "198.18.0.5", 2);
    let with = |f: &dyn Fn(&mut KernelState)| {
        let mut s = want.clone();
        f(&mut s);
        s
    };
    let other_vni = Device {
        kind: DeviceKind::Vxlan(VxlanParams {
            vni: 2,
            ..match &dev.kind {
                DeviceKind::Vxlan(v) => v.clone(),
                _ => unreachable!(),
            }
        }),
        ..dev.clone()
    };
    let set = |d: Device| LinkSet(d);
    let cases: Vec<(&str, KernelState, KernelState, Vec<KernelOp>)> = vec![
        ("in sync", want.clone(), want.clone(), vec![]),
        (
            "device missing: made first, its address, then the entries on it",
            want.clone(),
            KernelState::default(),
            vec![
                LinkAdd(dev.clone()),
                AddrAdd(a.clone()),
                NeighReplace(n2.clone()),
                FdbReplace(e2.clone()),
                RouteReplace(r2.clone()),
            ],
        ),
        (
            "set down",
            want.clone(),
            with(&|s| s.devices.get_mut("flannel.1").expect("dev").up = false),
            vec![set(dev.clone())],
        ),
        (
            "mtu and mac changed",
            want.clone(),
            with(&|s| {
                let d = s.devices.get_mut("flannel.1").expect("dev");
                d.mtu = 1400;
                d.mac = Some([2, 0, 0, 0, 0, 9]);
            }),
            vec![set(dev.clone())],
        ),
        (
            "address removed",
            want.clone(),
            with(&|s| {
                s.addrs.clear();
            }),
            vec![AddrAdd(a.clone())],
        ),
        (
            "address of an old subnet: deleted before the new one is added",
            want.clone(),
            with(&|s| {
                s.addrs.clear();
                s.add_addr(addr("flannel.1", "10.244.9.0/32"));
            }),
            vec![
                AddrDel(addr("flannel.1", "10.244.9.0/32")),
                AddrAdd(a.clone()),
            ],
        ),
        (
            "fixed attribute differs: replaced, everything on it written again",
            want.clone(),
            with(&|s| {
                s.add_device(other_vni.clone());
            }),
            vec![
                LinkDel(other_vni.clone()),
                LinkAdd(dev.clone()),
                AddrAdd(a.clone()),
                NeighReplace(n2.clone()),
                FdbReplace(e2.clone()),
                RouteReplace(r2.clone()),
            ],
        ),
        (
            "empty desired state (cleanup): entries elsewhere, then the device with its own",
            KernelState::default(),
            with(&|s| s.add_route(hostgw.clone())),
            vec![RouteDel(hostgw.clone()), LinkDel(dev.clone())],
        ),
    ];
    for (name, desired, current, ops) in cases {
        assert_eq!(diff(&desired, &current), ops, "case {name}");
        let mut after = current.clone();
        for op in &ops {
            after.record(op);
        }
        assert_eq!(
            after, desired,
            "case {name}: the ops reach the desired state"
        );
    }
    assert_eq!(
        LinkSet(dev.clone()).command(|_| None),
        "ip link set flannel.1 mtu 1450 address 02:00:00:00:00:01 up"
    );
    assert_eq!(
        LinkAdd(dev.clone()).command(|i| (i == 2).then(|| "eth0".into())),
        "ip link add flannel.1 type vxlan id 1 dev eth0 local 198.18.0.1 dstport 8472 \
         nolearning mtu 1450 address 02:00:00:00:00:01 && ip link set flannel.1 up"
    );
    assert_eq!(
        AddrAdd(a).to_string(),
        "ip addr add 10.244.1.0/32 dev flannel.1"
    );
    assert_eq!(LinkDel(dev).to_string(), "ip link del flannel.1");
}

#[test]
fn move_entries_rebinds_a_device() {
    let planned = with_peer(
        KernelState::from_routes([route("10.244.5.0/24", "198.18.0.5", 2)]),
        0,
        3,
    );
    let mut moved = planned.clone();
    moved.move_entries(0, 12);
    assert_eq!(
        moved,
        with_peer(
            KernelState::from_routes([route("10.244.5.0/24", "198.18.0.5", 2)]),
            12,
            3
        )
    );
}

/// A state from generated slots: the vxlan device (index 7) absent or in one of a few
/// variants, its address, and per slot a peer on it and a host-gw route (index 2).
fn device_state(
    dev: Option<u8>,
    addr_v: Option<u8>,
    peers: &[bool],
    routes: &[Option<u8>],
) -> KernelState {
    let mut s = KernelState::default();
    if let Some(v) = dev {
        let mut d = vxlan_dev(7);
        match v {
            0 => {}
            1 => d.up = false,
            2 => d.mtu = 1400,
            _ => {
                if let DeviceKind::Vxlan(p) = &mut d.kind {
                    p.port = 4789;
                }
            }
        }
        s.add_device(d);
        if let Some(a) = addr_v {
            s.add_addr(addr("flannel.1", &format!("10.244.{a}.0/32")));
        }
        for (i, on) in peers.iter().enumerate() {
            if *on {
                s = with_peer(s, 7, u8::try_from(i).expect("few") + 10);
            }
        }
    }
    for (i, v) in routes.iter().enumerate() {
        if let Some(v) = v {
            let i = u8::try_from(i).expect("few") + 100;
            s.add_route(route(
                &format!("10.244.{i}.0/24"),
                &format!("198.18.0.{v}"),
                2,
            ));
        }
    }
    s
}

proptest::proptest! {
    /// Whatever the kernel holds, the diff's writes reach the desired state, a device is
    /// made (or replaced) before any entry on it is written, and a device is deleted only
    /// after every entry write elsewhere (and none on it).
    #[test]
    fn device_ops_come_in_order_and_reach_desired(
        want_dev in proptest::option::of(0u8..1),
        want_addr in proptest::option::of(0u8..2),
        want_peers in proptest::collection::vec(proptest::bool::ANY, 4),
        want_routes in proptest::collection::vec(proptest::option::of(0u8..2), 3),
        have_dev in proptest::option::of(0u8..4),
        have_addr in proptest::option::of(0u8..3),
        have_peers in proptest::collection::vec(proptest::bool::ANY, 4),
        have_routes in proptest::collection::vec(proptest::option::of(0u8..2), 3),
    ) {
        let desired = device_state(want_dev, want_addr, &want_peers, &want_routes);
        let current = device_state(have_dev, have_addr, &have_peers, &have_routes);
        let ops = diff(&desired, &current);
        let mut after = current.clone();
        for op in &ops {
            after.record(op);
        }
        proptest::prop_assert_eq!(&after, &desired);
        proptest::prop_assert!(diff(&desired, &after).is_empty());
        let on_dev = |op: &KernelOp| match op {
            KernelOp::NeighReplace(n) | KernelOp::NeighDel(n) => n.ifindex == 7,
            KernelOp::FdbReplace(e) | KernelOp::FdbDel(e) => e.ifindex == 7,
            KernelOp::RouteReplace(r) | KernelOp::RouteDel(r) => r.oif == 7,
            _ => false,
        };
        let is_entry = |op: &KernelOp| !matches!(
            op,
            KernelOp::LinkAdd(_) | KernelOp::LinkSet(_) | KernelOp::LinkDel(_)
                | KernelOp::AddrAdd(_) | KernelOp::AddrDel(_)
        );
        let first_entry_on_dev = ops.iter().position(on_dev);
        if let Some(add) = ops.iter().position(|op| matches!(op, KernelOp::LinkAdd(_))) {
            proptest::prop_assert!(first_entry_on_dev.is_none_or(|e| e > add));
        }
        if want_dev.is_none() {
            if let Some(del) = ops.iter().position(|op| matches!(op, KernelOp::LinkDel(_))) {
                proptest::prop_assert_eq!(del, ops.len() - 1, "{:?}", ops);
                proptest::prop_assert!(ops.iter().all(|op| !on_dev(op)), "{:?}", ops);
                proptest::prop_assert!(ops[..del].iter().all(is_entry));
            }
        }
    }
}

#[test]
fn blackholes_are_added_removed_and_recorded() {
    let own: IpNet = "10.244.1.0/24".parse().expect("net");
    let old: IpNet = "10.244.7.0/24".parse().expect("net");
    let a = route("10.244.2.0/24", "198.18.0.2", 2);
    let mut desired = state([a.clone()]);
    desired.blackholes.insert(own);
    let mut current = state([a]);
    current.blackholes.insert(old);
    let ops = diff(&desired, &current);
    assert_eq!(
        ops,
        [KernelOp::BlackholeDel(old), KernelOp::BlackholeReplace(own)],
        "the subnet moved: the old blackhole goes, the new one comes"
    );
    assert_eq!(
        ops[1].to_string(),
        "ip route replace blackhole 10.244.1.0/24 proto 87 metric 4096"
    );
    for op in &ops {
        current.record(op);
    }
    assert_eq!(current, desired);
    assert!(diff(&desired, &current).is_empty());
    assert!(!current.clone().entries_only().blackholes.contains(&own));
    let mut merged = KernelState::default();
    merged.merge(state([]));
    merged.merge(current);
    assert!(merged.blackholes.contains(&own));
}

#[test]
fn ipv6_routes_beside_ipv4() {
    let v4 = route("10.244.2.0/24", "198.18.0.2", 2);
    let v6 = route("fd00:244:2::/64", "fd00:18::2", 2);
    assert_eq!(v6.to_string(), "fd00:244:2::/64 via fd00:18::2 dev 2");
    assert_eq!(route_metric(&v4.dst), 0);
    assert_eq!(route_metric(&v6.dst), V6_METRIC);
    assert_eq!(
        KernelOp::RouteReplace(v6.clone()).to_string(),
        "ip -6 route replace fd00:244:2::/64 via fd00:18::2 dev 2 proto 87 metric 1024"
    );
    assert_eq!(
        KernelOp::RouteReplace(v4.clone()).to_string(),
        "ip route replace 10.244.2.0/24 via 198.18.0.2 dev 2 proto 87"
    );
    // One state holds both families; IPv4 keys sort first.
    let want = state([v6.clone(), v4.clone()]);
    assert_eq!(
        want.routes
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.244.2.0/24", "fd00:244:2::/64"]
    );
    assert_eq!(
        diff(&want, &state([v4.clone()])),
        vec![KernelOp::RouteReplace(v6.clone())]
    );
    assert_eq!(
        diff(&state([v4.clone()]), &want),
        vec![KernelOp::RouteDel(v6)]
    );
    assert!(diff(&want, &want.clone()).is_empty());
    assert_eq!(
        unspecified_for(&"fd00::/8".parse().expect("net")).to_string(),
        "::"
    );
}
