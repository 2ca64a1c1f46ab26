//! What one weft daemon owns on a host it may share with other flannel networks (flannel's
//! "multiple networks": one daemon per etcd prefix, each with its own `Network`, subnet file and
//! VNI). Pure, no I/O.
//!
//! A daemon scoped to its network ([`Ownership::network`]) owns:
//! - **routes** with weft's protocol 87 in table main whose destination lies inside its
//!   `Network`, or (IPv6 routes) inside its `IPv6Network` when it has one
//!   ([`Ownership::with_ipv6_network`]; without one it owns no IPv6 route) — networks on one
//!   host are disjoint, so no two daemons claim one route;
//! - **devices** with a weft device name that its backends want now, or that carry an address
//!   inside its `Network` or `IPv6Network` (the device of its previous backend or VNI, or
//!   flanneld's device of the same network); another network's `flannel.2` is left alone;
//! - **nexthop objects** with protocol 87 whose id lies in the network's id range
//!   ([`Ownership::nexthop_ids`]: 2^20 ids chosen by a hash of the network), plus protocol-87
//!   nexthops outside every range that only its own routes use (those an older weft made).
//!   The range comes from the IPv4 `Network` alone: IPv6 nexthops share it. An IPv6-only
//!   network ([`Ownership::ipv6_only`], kube mode) owns no IPv4 route, and its range comes from
//!   its `IPv6Network`.
//!
//! [`Ownership::everything`] owns every route, device and nexthop of weft's protocol and names,
//! whatever network: `weft cleanup` without `--network`, and `weft status`.
use std::net::IpAddr;
use std::ops::Range;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Ids per network: 2^20 (a million distinct hops, far more than nodes in any cluster).
const RANGE_BITS: u32 = 20;
/// Ranges 1..=4094 (range 0, ids below 2^20, is where weft allocated before ownership by network).
const RANGES: u32 = (u32::MAX >> RANGE_BITS) - 1;

/// See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ownership {
    network: Option<Ipv4Net>,
    /// The IPv6 network owned beside `network`, or alone on an IPv6-only network. Neither
    /// set: everything.
    network_v6: Option<Ipv6Net>,
}

impl Ownership {
    /// Owns only the objects of `network` (the agent; `weft cleanup --network`).
    pub fn network(network: Ipv4Net) -> Self {
        Ownership {
            network: Some(network.trunc()),
            network_v6: None,
        }
    }

    /// Also owns the IPv6 objects of `network` (a dual-stack config's `IPv6Network`): its
    /// protocol-87 IPv6 routes and devices with an IPv6 address inside it. No change to
    /// [`everything`](Self::everything), which owns every IPv6 route already.
    pub fn with_ipv6_network(self, network: Ipv6Net) -> Self {
        if self.network.is_none() {
            return self;
        }
        Ownership {
            network_v6: Some(network.trunc()),
            ..self
        }
    }

    /// Owns only the objects of an IPv6-only network (`EnableIPv4: false`): its protocol-87
    /// IPv6 routes inside `network`, devices with an IPv6 address in it, no IPv4 route.
    pub fn ipv6_only(network: Ipv6Net) -> Self {
        Ownership {
            network: None,
            network_v6: Some(network.trunc()),
        }
    }

    /// Whether this owns every object ([`everything`](Self::everything)).
    pub fn is_everything(&self) -> bool {
        self.network.is_none() && self.network_v6.is_none()
    }

    /// Owns every object of weft's protocol and names.
    pub fn everything() -> Self {
        Ownership {
            network: None,
            network_v6: None,
        }
    }

    /// [`network`](Self::network) when there is one (a config's IPv4 `Network`, `weft cleanup
    /// --network`), else [`everything`](Self::everything).
    pub fn of(network: Option<Ipv4Net>) -> Self {
        network.map_or_else(Ownership::everything, Ownership::network)
    }

    /// The IPv4 network owned: None for everything or an IPv6-only network.
    pub fn scope(&self) -> Option<Ipv4Net> {
        self.network
    }

    /// The IPv6 network owned beside [`scope`](Self::scope), if any.
    pub fn scope_v6(&self) -> Option<Ipv6Net> {
        self.network_v6
    }

    /// A protocol-87 route to `dst` in table main is this daemon's: inside its network of the
    /// family of `dst` (a daemon scoped to a network without an IPv6 network owns no IPv6
    /// route), or any when it owns everything.
    pub fn owns_dst(&self, dst: &IpNet) -> bool {
        if self.is_everything() {
            return true;
        }
        match dst {
            IpNet::V4(d) => self.network.is_some_and(|n| n.contains(d)),
            IpNet::V6(d) => self.network_v6.is_some_and(|n| n.contains(d)),
        }
    }

    /// A link with a weft device name is this daemon's: `wanted` by its backends, or carrying
    /// an address inside the network (IPv4) or the IPv6 network.
    pub fn owns_device<'a>(
        &self,
        wanted: bool,
        addrs: impl IntoIterator<Item = &'a IpAddr>,
    ) -> bool {
        if self.is_everything() {
            return true;
        }
        wanted
            || addrs.into_iter().any(|a| match a {
                IpAddr::V4(v4) => self.network.is_some_and(|n| n.contains(v4)),
                IpAddr::V6(v6) => self.network_v6.is_some_and(|n| n.contains(v6)),
            })
    }

    /// The nexthop ids this daemon allocates and owns; None: every id (owns every protocol-87
    /// nexthop).
    pub fn nexthop_ids(&self) -> Option<Range<u32>> {
        // The IPv4 network's bytes, else (IPv6-only) the IPv6 network's.
        let bytes: Vec<u8> = match (self.network, self.network_v6) {
            (Some(net), _) => u32::from(net.network())
                .to_be_bytes()
                .into_iter()
                .chain([net.prefix_len()])
                .collect(),
            (None, Some(net)) => u128::from(net.network())
                .to_be_bytes()
                .into_iter()
                .chain([net.prefix_len()])
                .collect(),
            (None, None) => return None,
        };
        // FNV-1a over the network address and prefix length: stable across releases and hosts.
        let mut h: u32 = 0x811c_9dc5;
        for b in bytes {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let tag = 1 + h % RANGES;
        let start = tag << RANGE_BITS;
        Some(start..start + (1 << RANGE_BITS))
    }

    /// Nexthop `id` lies in this daemon's id range.
    pub fn owns_nexthop_id(&self, id: u32) -> bool {
        self.nexthop_ids().is_none_or(|r| r.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    fn dst(s: &str) -> IpNet {
        s.parse().expect("dst")
    }

    #[test]
    fn routes_inside_the_network_only() {
        let o = Ownership::network(net("10.244.0.0/16"));
        assert!(o.owns_dst(&dst("10.244.3.0/24")));
        assert!(!o.owns_dst(&dst("10.245.3.0/24")));
        assert!(
            !o.owns_dst(&dst("10.0.0.0/8")),
            "a wider route is not inside"
        );
        assert!(Ownership::everything().owns_dst(&dst("192.0.2.0/24")));
    }

    #[test]
    fn ipv6_routes_inside_the_ipv6_network_only() {
        let v4_only = Ownership::network(net("10.244.0.0/16"));
        assert!(
            !v4_only.owns_dst(&dst("fd00:244:0:1::/64")),
            "no IPv6 network: no IPv6 route"
        );
        let dual = v4_only.with_ipv6_network("fd00:244::/56".parse().expect("net"));
        assert_eq!(dual.scope(), v4_only.scope());
        assert_eq!(dual.scope_v6(), Some("fd00:244::/56".parse().expect("net")));
        assert!(dual.owns_dst(&dst("fd00:244:0:1::/64")));
        assert!(!dual.owns_dst(&dst("fd00:245:0:1::/64")));
        assert!(
            !dual.owns_dst(&dst("fd00::/8")),
            "a wider route is not inside"
        );
        // IPv4 ownership and the nexthop ids are unchanged by the IPv6 network.
        assert!(dual.owns_dst(&dst("10.244.3.0/24")));
        assert!(!dual.owns_dst(&dst("10.245.3.0/24")));
        assert_eq!(dual.nexthop_ids(), v4_only.nexthop_ids());
        // Everything owns every IPv6 route, and stays everything.
        let all = Ownership::everything();
        assert!(all.owns_dst(&dst("2001:db8::/64")));
        let all = all.with_ipv6_network("fd00:244::/56".parse().expect("net"));
        assert_eq!(all, Ownership::everything());
        assert!(all.owns_dst(&dst("2001:db8::/64")));
        // A device with an address of the IPv6 network is this daemon's.
        let ours: IpAddr = "fd00:244:0:1::".parse().expect("ip");
        let theirs: IpAddr = "fd00:245:0:1::".parse().expect("ip");
        assert!(dual.owns_device(false, [&ours]));
        assert!(!dual.owns_device(false, [&theirs]));
        assert!(!v4_only.owns_device(false, [&ours]));
    }

    #[test]
    fn an_ipv6_only_network_owns_its_ipv6_objects_only() {
        let o = Ownership::ipv6_only("fd00:244::/56".parse().expect("net"));
        assert!(!o.is_everything());
        assert_eq!(o.scope(), None);
        assert!(o.owns_dst(&dst("fd00:244:0:1::/64")));
        assert!(!o.owns_dst(&dst("fd00:245:0:1::/64")));
        assert!(!o.owns_dst(&dst("10.244.3.0/24")), "no IPv4 route");
        let ours: IpAddr = "fd00:244:0:1::".parse().expect("ip");
        let theirs: IpAddr = "fd00:245:0:1::".parse().expect("ip");
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0));
        assert!(o.owns_device(false, [&ours]));
        assert!(!o.owns_device(false, [&theirs, &v4]));
        assert!(o.owns_device(true, [&theirs]));
        // Its own nexthop id range, not everything's and not an IPv4 network's.
        let ids = o.nexthop_ids().expect("a range");
        assert_eq!(ids.len(), 1 << RANGE_BITS);
        assert!(ids.start >= 1 << RANGE_BITS);
        assert_ne!(
            Some(ids),
            Ownership::network(net("10.244.0.0/16")).nexthop_ids()
        );
        assert!(!o.owns_nexthop_id(5));
    }

    #[test]
    fn devices_wanted_or_with_an_address_of_the_network() {
        let o = Ownership::network(net("10.244.0.0/16"));
        let ours = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0));
        let theirs = IpAddr::V4(Ipv4Addr::new(10, 245, 1, 0));
        assert!(o.owns_device(true, []));
        assert!(o.owns_device(false, [&theirs, &ours]));
        assert!(!o.owns_device(false, [&theirs]));
        assert!(
            !o.owns_device(false, []),
            "no address, not wanted: someone else's"
        );
        assert!(Ownership::everything().owns_device(false, []));
    }

    #[test]
    fn nexthop_ranges_are_disjoint_stable_and_above_the_old_ids() {
        let a = Ownership::network(net("10.244.0.0/16"))
            .nexthop_ids()
            .expect("range");
        let b = Ownership::network(net("10.245.0.0/16"))
            .nexthop_ids()
            .expect("range");
        assert_eq!(a.end - a.start, 1 << 20);
        assert!(
            a.start >= 1 << 20,
            "range 0 is the ids of older weft releases"
        );
        assert!(a.end <= b.start || b.end <= a.start, "{a:?} {b:?}");
        // The same network (also written with host bits) always gets the same range.
        assert_eq!(
            Ownership::network(net("10.244.1.0/16")).nexthop_ids(),
            Some(a.clone())
        );
        let o = Ownership::network(net("10.244.0.0/16"));
        assert!(o.owns_nexthop_id(a.start) && !o.owns_nexthop_id(a.end) && !o.owns_nexthop_id(7));
        assert!(Ownership::everything().owns_nexthop_id(7));
    }
}
