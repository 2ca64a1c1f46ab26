//! Tests of the reconcile module.
use std::net::Ipv4Addr;

use super::*;
use crate::RTPROT_WEFT;
use crate::nl::{KernelEvent, RouteEvent};
use crate::owner::Ownership;

fn route(dst: &str, gw: [u8; 4], oif: u32) -> Route {
    Route {
        dst: dst.parse().expect("dst"),
        gateway: Ipv4Addr::from(gw).into(),
        oif,
        onlink: false,
    }
}

fn ev(route: Route, protocol: u8, table: u32, priority: u32) -> RouteEvent {
    RouteEvent {
        route,
        nhid: None,
        protocol,
        table,
        priority,
        blackhole: false,
    }
}

/// A reconciler whose cache holds `routes` (observe never touches the socket; creating an
/// rtnetlink socket needs no privilege).
fn with_cache(routes: &[Route]) -> (tokio::runtime::Runtime, Reconciler) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let nl = rt.block_on(async { Netlink::connect() }).expect("netlink");
    let mut rec = Reconciler::new(nl);
    rec.cache = KernelState::from_routes(routes.iter().cloned());
    rec.last_desired = rec.cache.clone();
    rec.needs_refresh = false;
    (rt, rec)
}

#[test]
fn observe_route_events() {
    let a = route("10.244.2.0/24", [198, 18, 0, 2], 3);
    let (_rt, mut rec) = with_cache(std::slice::from_ref(&a));
    let main = 254;

    // Echo of weft's own write, and routes elsewhere: nothing to do.
    assert!(!rec.observe(&KernelEvent::RouteAdded(ev(
        a.clone(),
        RTPROT_WEFT,
        main,
        0
    ))));
    let other_table = ev(route("10.244.2.0/24", [198, 18, 0, 9], 3), 4, 100, 0);
    assert!(!rec.observe(&KernelEvent::RouteAdded(other_table)));
    let other_metric = ev(route("10.244.2.0/24", [198, 18, 0, 9], 3), 4, main, 10);
    assert!(!rec.observe(&KernelEvent::RouteAdded(other_metric)));
    let unrelated = ev(route("10.1.0.0/16", [198, 18, 0, 1], 3), 4, main, 0);
    assert!(!rec.observe(&KernelEvent::RouteAdded(unrelated.clone())));
    assert!(!rec.observe(&KernelEvent::RouteDeleted(unrelated)));
    // A delete of a route that differs from weft's (someone else's at that dst) is not ours.
    let not_ours = ev(
        route("10.244.2.0/24", [198, 18, 0, 9], 3),
        RTPROT_WEFT,
        main,
        0,
    );
    assert!(!rec.observe(&KernelEvent::RouteDeleted(not_ours)));
    assert_eq!(rec.current().routes.len(), 1);

    // `ip route replace` by someone else: weft's route is gone.
    let foreign = ev(route("10.244.2.0/24", [198, 18, 0, 33], 3), 3, main, 0);
    assert!(rec.observe(&KernelEvent::RouteAdded(foreign)));
    assert!(rec.current().is_empty());

    // A weft-protocol route weft did not write enters the cache (to be deleted if unwanted).
    let stray = route("10.244.9.0/24", [198, 18, 0, 9], 3);
    assert!(rec.observe(&KernelEvent::RouteAdded(ev(
        stray.clone(),
        RTPROT_WEFT,
        main,
        0
    ))));
    assert_eq!(rec.current().routes.get(&stray.dst), Some(&stray));

    // Deleted out of band.
    assert!(rec.observe(&KernelEvent::RouteDeleted(ev(stray, RTPROT_WEFT, main, 0))));
    assert!(rec.current().is_empty());
    assert!(!rec.needs_refresh());
}

#[test]
fn observe_link_events() {
    let a = route("10.244.2.0/24", [198, 18, 0, 2], 3);
    let b = route("10.244.3.0/24", [198, 18, 1, 3], 4);
    let (_rt, mut rec) = with_cache(&[a.clone(), b.clone()]);

    // A link without weft routes: nothing.
    let down = |index| KernelEvent::LinkChanged {
        index,
        name: format!("if{index}"),
        up: false,
        carrier: false,
        device: None,
    };
    let up = |index| KernelEvent::LinkChanged {
        index,
        name: format!("if{index}"),
        up: true,
        carrier: true,
        device: None,
    };
    assert!(!rec.observe(&down(7)));
    assert!(
        !rec.observe(&up(3)),
        "link up with every desired route present"
    );
    assert!(!rec.needs_refresh());

    // Link 3 down: its routes were flushed silently.
    assert!(rec.observe(&down(3)));
    assert!(rec.needs_refresh());
    assert_eq!(rec.current(), &KernelState::from_routes([b.clone()]));
    // Coming back up: a desired route on it is missing, so re-apply.
    assert!(rec.observe(&up(3)));

    // Link 4 deleted, then an address deletion and an overrun.
    assert!(rec.observe(&KernelEvent::LinkDeleted {
        index: 4,
        name: "if4".into()
    }));
    assert!(rec.current().is_empty());
    rec.cache = KernelState::from_routes([a.clone()]);
    assert!(rec.observe(&KernelEvent::AddressDeleted {
        index: 3,
        addr: Ipv4Addr::new(198, 18, 0, 1),
        prefix_len: 24
    }));
    assert!(rec.current().is_empty());
    rec.needs_refresh = false;
    assert!(rec.observe(&KernelEvent::Overrun));
    assert!(rec.needs_refresh());
}

#[test]
fn observe_device_events() {
    let dev = crate::device::test_vxlan("flannel.1", 7);
    let addr = Addr {
        dev: "flannel.1".into(),
        addr: "10.244.1.0/32".parse().expect("addr"),
    };
    let onlink = Route {
        onlink: true,
        ..route("10.244.2.0/24", [10, 244, 2, 0], 7)
    };
    let (_rt, mut rec) = with_cache(std::slice::from_ref(&onlink));
    rec.cache.add_device(dev.clone());
    rec.cache.add_addr(addr.clone());
    rec.last_desired = rec.cache.clone();
    let changed = |d: &crate::device::Device| KernelEvent::LinkChanged {
        index: d.index,
        name: d.name.clone(),
        up: d.up,
        carrier: d.up,
        device: Some(d.clone()),
    };

    // The echo of weft's own write: nothing to do.
    assert!(!rec.observe(&changed(&dev)));
    // MTU changed out of band: the device is re-read before the next diff (a notification
    // may be a late echo), which then sets it back.
    let small = crate::device::Device {
        mtu: 1400,
        ..dev.clone()
    };
    assert!(rec.observe(&changed(&small)));
    assert!(rec.stale_devices.contains("flannel.1"));
    rec.stale_devices.clear();
    rec.cache.add_device(small.clone()); // what the re-read finds
    assert_eq!(
        plan::diff(&rec.last_desired, &rec.cache),
        vec![KernelOp::LinkSet(dev.clone())]
    );
    rec.cache.add_device(dev.clone());
    assert!(!rec.observe(&changed(&dev)), "as cached: nothing to do");
    assert!(rec.stale_devices.is_empty());

    // Its address removed, then added back; an address no one wants appears.
    let del = KernelEvent::AddressDeleted {
        index: 7,
        addr: Ipv4Addr::new(10, 244, 1, 0),
        prefix_len: 32,
    };
    assert!(rec.observe(&del));
    assert!(rec.current().addrs.is_empty());
    let add = |a: [u8; 4], p| KernelEvent::AddressAdded {
        index: 7,
        addr: Ipv4Addr::from(a),
        prefix_len: p,
    };
    assert!(
        !rec.observe(&add([10, 244, 1, 0], 32)),
        "the wanted address is back"
    );
    assert!(rec.observe(&add([10, 244, 9, 0], 24)));
    // Addresses on links that are not weft's do not matter.
    assert!(!rec.observe(&KernelEvent::AddressAdded {
        index: 3,
        addr: Ipv4Addr::new(198, 18, 0, 1),
        prefix_len: 24
    }));

    // Set down: the routes through it went with it (no notification).
    let down = crate::device::Device {
        up: false,
        ..dev.clone()
    };
    assert!(rec.observe(&changed(&down)));
    assert!(rec.current().routes.is_empty());
    assert!(
        rec.observe(&changed(&dev)),
        "up again with a wanted route missing"
    );
    rec.stale_devices.clear();

    // Deleted: the device and everything on it leave the cache; the diff makes it again.
    rec.cache.add_route(onlink.clone());
    assert!(rec.observe(&KernelEvent::LinkDeleted {
        index: 7,
        name: "flannel.1".into()
    }));
    assert!(rec.current().devices.is_empty());
    assert!(rec.current().addrs.is_empty());
    assert!(rec.current().routes.is_empty());
    let ops = plan::diff(&rec.last_desired, &rec.cache);
    assert_eq!(ops[0], KernelOp::LinkAdd(dev.clone()));
    assert_eq!(ops[1], KernelOp::AddrAdd(addr.clone()));
    assert_eq!(ops[2], KernelOp::RouteReplace(onlink.clone()));

    // A weft-named link no one wants (a previous backend's): to be deleted.
    let ipip = crate::device::Device {
        name: "flannel.ipip".into(),
        index: 8,
        kind: crate::device::DeviceKind::IpIp {
            local: Ipv4Addr::new(198, 18, 0, 1),
            remote: None,
        },
        mtu: 1480,
        mac: None,
        up: true,
    };
    assert!(rec.observe(&changed(&ipip)));
    assert!(rec.stale_devices.contains("flannel.ipip"));
    rec.cache.add_device(ipip.clone()); // what the re-read finds
    assert!(plan::diff(&rec.last_desired, &rec.cache).contains(&KernelOp::LinkDel(ipip)));
}

#[test]
fn observe_blackhole_events() {
    let (_rt, mut rec) = with_cache(&[]);
    rec.owner = Ownership::network("10.244.0.0/16".parse().expect("net"));
    let own: ipnet::IpNet = "10.244.1.0/24".parse().expect("net");
    rec.last_desired.blackholes.insert(own);
    let hole = |dst: &str, protocol: u8, metric: u32| RouteEvent {
        blackhole: true,
        ..ev(route(dst, [0, 0, 0, 0], 0), protocol, 254, metric)
    };
    let mine = hole("10.244.1.0/24", RTPROT_WEFT, plan::BLACKHOLE_METRIC);
    // Our own write echoed: cached, nothing to do.
    assert!(!rec.observe(&KernelEvent::RouteAdded(mine.clone())));
    assert!(rec.current().blackholes.contains(&own));
    // Deleted by someone else: to be restored.
    assert!(rec.observe(&KernelEvent::RouteDeleted(mine.clone())));
    assert!(rec.current().blackholes.is_empty());
    // An unwanted one of weft's kind appears: to be removed.
    let stale = hole("10.244.9.0/24", RTPROT_WEFT, plan::BLACKHOLE_METRIC);
    assert!(rec.observe(&KernelEvent::RouteAdded(stale)));
    // Others' blackholes (another protocol, metric or network) are not weft's business.
    for other in [
        hole("10.244.1.0/24", 3, 0),
        hole("10.244.1.0/24", RTPROT_WEFT, 0),
        hole("10.245.1.0/24", RTPROT_WEFT, plan::BLACKHOLE_METRIC),
    ] {
        assert!(!rec.observe(&KernelEvent::RouteAdded(other.clone())));
        assert!(!rec.observe(&KernelEvent::RouteDeleted(other)));
    }
    assert_eq!(rec.current().blackholes.len(), 1);
}
