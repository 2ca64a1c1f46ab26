//! Route helpers of the reconciler's kernel tests (`kernel_*.rs`): host-gw peers and their
//! desired state, a reconciler in either [`Mode`], and the routes `ip` lists.
use std::collections::BTreeSet;

use backends::hostgw::HostGw;
use backends::nl::Netlink;
use backends::reconcile::Reconciler;
use backends::{Backend, KernelState, Peer};
use net_conf::{LeaseAttrs, SubnetKey};

use super::{Mode, ext, ip_json, weft_route_list};

/// (dst, gateway, dev, protocol) of each route `ip -j route show <filter>` lists (other
/// owners' routes, which are plain).
pub fn routes(filter: &str) -> BTreeSet<(String, String, String, String)> {
    ip_json(&format!("route show {filter}"))
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("dst"), s("gateway"), s("dev"), s("protocol"))
        })
        .collect()
}

/// Table main's routes with protocol 87 as (dst, gateway, dev, "87"), gateway and device read
/// from the nexthop for a route on one (the protocol shows as `87 on <proto>` for a route on
/// someone else's nexthop).
pub fn weft_routes() -> BTreeSet<(String, String, String, String)> {
    weft_route_list()
        .into_iter()
        .map(|r| {
            let proto = match r.nh_protocol.as_deref() {
                None | Some("87") => "87".to_string(),
                Some(other) => format!("87 on {other}"),
            };
            (r.dst, r.gateway, r.dev, proto)
        })
        .collect()
}

pub fn r(dst: &str, gw: &str, dev: &str, proto: &str) -> (String, String, String, String) {
    (dst.into(), gw.into(), dev.into(), proto.into())
}

pub fn peer(subnet: &str, ip: &str) -> Peer {
    Peer {
        key: SubnetKey::new(subnet.parse().unwrap()),
        attrs: LeaseAttrs {
            public_ip: ip.parse().unwrap(),
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
            backend_v6_data: None,
        },
    }
}

pub fn desired(index: u32, peers: &[Peer]) -> KernelState {
    let d = HostGw::new().desired(&ext(index), peers);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    d.state
}

/// A reconciler writing routes the `mode` way.
pub fn reconciler(mode: Mode) -> Reconciler {
    Reconciler::new(Netlink::connect().unwrap()).with_route_nexthops(mode.nexthops())
}
