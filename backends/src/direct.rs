//! DirectRouting (vxlan and ipip) decided as flanneld decides it: a peer is routed directly,
//! `<subnet> via <PublicIP> dev <dev>`, when the kernel's route to its PublicIP (`ip route get`)
//! has no gateway, whatever the interface's own prefixes are (a peer behind an on-link route
//! `192.0.2.0/24 dev eth0` is direct; one behind a router is tunnelled). Both ends of a flow
//! then take the same path in a cluster that mixes weft and flanneld nodes.
//!
//! [`DirectPaths`] holds the answers, looked up by the agent ([`look_up`], I/O) when a peer
//! appears or changes and on every audit; the backends read them while planning (pure). A peer
//! not looked up yet falls back to the interface's connected prefixes, which give the same answer
//! in the common case (used by `weft status` and the unit tests, which do no lookups).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tracing::{debug, warn};

use crate::nl::Netlink;
use crate::{ExternalInterface, Route};

/// How the kernel reaches each peer's PublicIP: `Some(oif)` by a gateway-less route through
/// `oif`, `None` through a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectPaths {
    by_ip: BTreeMap<Ipv4Addr, Option<u32>>,
}

impl DirectPaths {
    /// The answer for `ip`, if it was looked up.
    pub fn get(&self, ip: Ipv4Addr) -> Option<Option<u32>> {
        self.by_ip.get(&ip).copied()
    }

    /// Records an answer; true when it differs from the one held.
    pub fn set(&mut self, ip: Ipv4Addr, oif: Option<u32>) -> bool {
        self.by_ip.insert(ip, oif) != Some(oif)
    }

    /// Keeps only the answers for `ips` (peers that left need none).
    pub fn retain(&mut self, keep: impl Fn(&Ipv4Addr) -> bool) {
        self.by_ip.retain(|ip, _| keep(ip));
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.by_ip.contains_key(&ip)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
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

/// `ip route get <ip>` for each of `ips`, recorded in `paths`; true when an answer changed. A
/// failed lookup (no route at all) is recorded as "through a gateway": the peer is tunnelled,
/// and the next audit asks again.
pub async fn look_up(
    nl: &Netlink,
    paths: &mut DirectPaths,
    ips: impl IntoIterator<Item = Ipv4Addr>,
) -> bool {
    let mut changed = false;
    for ip in ips {
        let answer = match nl.route_get(ip).await {
            Ok(r) if r.gateway.is_none() && r.oif != 0 => Some(r.oif),
            Ok(r) => {
                debug!(peer = %ip, gateway = ?r.gateway, "DirectRouting: reached through a gateway; tunnelled");
                None
            }
            Err(e) => {
                warn!("DirectRouting: ip route get {ip}: {e}; tunnelled");
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
}
