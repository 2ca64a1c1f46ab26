//! DirectRouting (vxlan and ipip) decided as flanneld decides it: a peer is routed directly,
//! `<subnet> via <PublicIP> dev <dev>`, when the kernel's route to its PublicIP (`ip route get`)
//! has no gateway, whatever the interface's own prefixes are (a peer behind an on-link route
//! `192.0.2.0/24 dev eth0` is direct; one behind a router is tunnelled). Both ends of a flow
//! then take the same path in a cluster that mixes weft and flanneld nodes.
//!
//! IPv6 the same way, for vxlan's `flannel-v6.<VNI>` (flanneld decides each family on its own):
//! a peer whose PublicIPv6 `ip -6 route get` reaches without a gateway gets `ip -6 route replace
//! <IPv6 subnet> via <PublicIPv6> dev <dev>` (metric 1024, [`crate::plan::V6_METRIC`]). The
//! answers of both families are held in one [`DirectPaths`], keyed by address; a backend asks for
//! the IPv6 ones with [`DirectPaths::set_v6`] (ipip is IPv4-only).
//!
//! [`DirectPaths`] holds the answers, looked up by the agent ([`look_up`], I/O) when a peer
//! appears or changes and on every audit; the backends read them while planning (pure). A peer
//! not looked up yet falls back to the interface's connected prefixes (of the address's family),
//! which give the same answer in the common case (used by `weft status` and the unit tests,
//! which do no lookups).
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use net_conf::LeaseAttrs;
use tracing::{debug, warn};

use crate::nl::Netlink;
use crate::{ExternalInterface, ExternalV6, Route};

/// How the kernel reaches each peer's PublicIP (and PublicIPv6): `Some(oif)` by a gateway-less
/// route through `oif`, `None` through a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectPaths {
    by_ip: BTreeMap<IpAddr, Option<u32>>,
    /// Whether the peers' PublicIPv6 are decided too ([`DirectPaths::peer_ips`]).
    v6: bool,
}

impl DirectPaths {
    /// The answer for `ip`, if it was looked up.
    pub fn get(&self, ip: impl Into<IpAddr>) -> Option<Option<u32>> {
        self.by_ip.get(&ip.into()).copied()
    }

    /// Records an answer; true when it differs from the one held.
    pub fn set(&mut self, ip: impl Into<IpAddr>, oif: Option<u32>) -> bool {
        self.by_ip.insert(ip.into(), oif) != Some(oif)
    }

    /// Keeps only the answers for `ips` (peers that left need none).
    pub fn retain(&mut self, keep: impl Fn(&IpAddr) -> bool) {
        self.by_ip.retain(|ip, _| keep(ip));
    }

    pub fn contains(&self, ip: impl Into<IpAddr>) -> bool {
        self.by_ip.contains_key(&ip.into())
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Decide the peers' PublicIPv6 too (vxlan with `flannel-v6.<VNI>`), or not; turning it off
    /// forgets the IPv6 answers.
    pub fn set_v6(&mut self, on: bool) {
        self.v6 = on;
        if !on {
            self.by_ip.retain(|ip, _| ip.is_ipv4());
        }
    }

    /// The addresses of a peer with lease attributes `attrs` to look up: its PublicIP, and its
    /// PublicIPv6 when [`set_v6`](Self::set_v6) asked for them (an unset or unspecified address
    /// is no peer's: an IPv6-only peer's PublicIP is `0.0.0.0`).
    pub fn peer_ips(&self, attrs: &LeaseAttrs) -> impl Iterator<Item = IpAddr> + use<> {
        let v4 = Some(IpAddr::V4(attrs.public_ip));
        let v6 = attrs.public_ipv6.filter(|_| self.v6).map(IpAddr::V6);
        [v4, v6]
            .into_iter()
            .flatten()
            .filter(|ip| !ip.is_unspecified())
    }
}

/// The direct route to `subnet` through the peer at `ip`, or None when the peer is to be reached
/// through the tunnel: by the looked-up answer, else by the external interface's connected
/// prefixes.
pub(crate) fn direct_route(
    ext: &ExternalInterface,
    paths: &DirectPaths,
    subnet: Ipv4Net,
    ip: Ipv4Addr,
) -> Option<Route> {
    let oif = match paths.get(ip) {
        Some(answer) => answer?,
        None => crate::direct_route(ext, subnet, ip)?.oif,
    };
    Some(Route {
        dst: subnet.into(),
        gateway: ip.into(),
        oif,
        onlink: false,
    })
}

/// [`direct_route`] for IPv6: the route to `subnet` through the peer at PublicIPv6 `ip`, or None
/// for the tunnel: by the looked-up answer, else by the IPv6 prefixes of the external interface
/// (`ext`, whose IPv6 side is `v6`).
pub(crate) fn direct_route6(
    ext: &ExternalInterface,
    v6: &ExternalV6,
    paths: &DirectPaths,
    subnet: Ipv6Net,
    ip: Ipv6Addr,
) -> Option<Route> {
    let oif = match paths.get(ip) {
        Some(answer) => answer?,
        None => v6
            .prefixes
            .iter()
            .any(|p| p.contains(&ip))
            .then_some(ext.index)?,
    };
    Some(Route {
        dst: subnet.into(),
        gateway: ip.into(),
        oif,
        onlink: false,
    })
}

/// `ip route get <ip>` (`ip -6 route get` for an IPv6 address) for each of `ips`, recorded in
/// `paths`; true when an answer changed. A failed lookup (no route at all) is recorded as
/// "through a gateway": the peer is tunnelled, and the next audit asks again.
pub async fn look_up<I>(nl: &Netlink, paths: &mut DirectPaths, ips: I) -> bool
where
    I: IntoIterator,
    I::Item: Into<IpAddr>,
{
    let mut changed = false;
    for ip in ips {
        let ip: IpAddr = ip.into();
        let (got, cmd) = match ip {
            IpAddr::V4(v4) => (
                nl.route_get(v4)
                    .await
                    .map(|r| (r.oif, r.gateway.map(IpAddr::V4))),
                "ip route get",
            ),
            IpAddr::V6(v6) => (
                nl.route_get6(v6)
                    .await
                    .map(|r| (r.oif, r.gateway.map(IpAddr::V6))),
                "ip -6 route get",
            ),
        };
        let answer = match got {
            Ok((oif, None)) if oif != 0 => Some(oif),
            Ok((_, gateway)) => {
                debug!(peer = %ip, gateway = ?gateway, "DirectRouting: reached through a gateway; tunnelled");
                None
            }
            Err(e) => {
                warn!("DirectRouting: {cmd} {ip}: {e}; tunnelled");
                None
            }
        };
        changed |= paths.set(ip, answer);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext() -> ExternalInterface {
        ExternalInterface {
            name: "eth0".into(),
            index: 2,
            iface_addr: Ipv4Addr::new(198, 18, 0, 1),
            ext_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1500,
            prefixes: vec!["198.18.0.0/24".parse().expect("prefix")],
            v6: None,
        }
    }

    #[test]
    fn the_lookup_decides_and_the_prefixes_stand_in_for_a_missing_one() {
        let subnet: Ipv4Net = "10.244.2.0/24".parse().expect("net");
        let adjacent = Ipv4Addr::new(198, 18, 0, 2);
        let on_link = Ipv4Addr::new(192, 0, 2, 7);
        let routed = Ipv4Addr::new(203, 0, 113, 5);
        let mut paths = DirectPaths::default();
        // Not looked up: the connected prefixes answer.
        assert_eq!(
            direct_route(&ext(), &paths, subnet, adjacent).map(|r| r.oif),
            Some(2)
        );
        assert_eq!(direct_route(&ext(), &paths, subnet, on_link), None);
        // Looked up: the kernel's answer wins, with its device.
        assert!(paths.set(on_link, Some(5)));
        assert!(paths.set(adjacent, None));
        assert!(paths.set(routed, None));
        assert!(!paths.set(routed, None), "the same answer is no change");
        let r = direct_route(&ext(), &paths, subnet, on_link).expect("direct");
        assert_eq!((r.gateway, r.oif, r.onlink), (on_link.into(), 5, false));
        assert_eq!(direct_route(&ext(), &paths, subnet, adjacent), None);
        assert_eq!(direct_route(&ext(), &paths, subnet, routed), None);
        paths.retain(|ip| *ip == on_link);
        assert_eq!(paths.len(), 1);
    }

    #[test]
    fn ipv6_answers_stand_beside_the_ipv4_ones() {
        let v6 = ExternalV6 {
            iface_addr: "fd00:18::1".parse().expect("ip"),
            ext_addr: "fd00:18::1".parse().expect("ip"),
            prefixes: vec!["fd00:18::/64".parse().expect("prefix")],
        };
        let subnet: Ipv6Net = "fd00:244:0:2::/64".parse().expect("net");
        let adjacent: Ipv6Addr = "fd00:18::2".parse().expect("ip");
        let routed: Ipv6Addr = "2001:db8::5".parse().expect("ip");
        let mut paths = DirectPaths::default();
        // Not looked up: eth0's IPv6 prefixes answer.
        let r = direct_route6(&ext(), &v6, &paths, subnet, adjacent).expect("direct");
        assert_eq!(r.to_string(), "fd00:244:0:2::/64 via fd00:18::2 dev 2");
        assert_eq!(direct_route6(&ext(), &v6, &paths, subnet, routed), None);
        // Looked up: the kernel decides.
        assert!(paths.set(routed, Some(4)));
        assert!(paths.set(adjacent, None));
        assert!(paths.set(Ipv4Addr::new(198, 18, 0, 2), Some(2)));
        let r = direct_route6(&ext(), &v6, &paths, subnet, routed).expect("direct");
        assert_eq!((r.gateway, r.oif, r.onlink), (routed.into(), 4, false));
        assert_eq!(direct_route6(&ext(), &v6, &paths, subnet, adjacent), None);
        // An IPv6 answer is no IPv4 one's business: the table holds both families.
        assert_eq!(paths.len(), 3);
        paths.set_v6(false);
        assert_eq!(paths.len(), 1, "turning IPv6 off forgets its answers");
    }

    #[test]
    fn the_addresses_to_look_up() {
        let mut attrs = LeaseAttrs {
            public_ip: Ipv4Addr::new(198, 18, 0, 2),
            public_ipv6: Some("fd00:18::2".parse().expect("ip")),
            backend_type: "vxlan".into(),
            backend_data: None,
            backend_v6_data: None,
        };
        let mut paths = DirectPaths::default();
        let ips = |p: &DirectPaths, a: &LeaseAttrs| p.peer_ips(a).collect::<Vec<_>>();
        assert_eq!(ips(&paths, &attrs), vec![IpAddr::from(attrs.public_ip)]);
        paths.set_v6(true);
        assert_eq!(
            ips(&paths, &attrs),
            vec![
                IpAddr::from(attrs.public_ip),
                IpAddr::from("fd00:18::2".parse::<Ipv6Addr>().expect("ip"))
            ]
        );
        // An IPv6-only peer (PublicIP 0.0.0.0) and an unspecified PublicIPv6: nothing there.
        attrs.public_ip = Ipv4Addr::UNSPECIFIED;
        attrs.public_ipv6 = Some(Ipv6Addr::UNSPECIFIED);
        assert!(ips(&paths, &attrs).is_empty());
    }
}
