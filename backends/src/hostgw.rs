//! host-gw (docs/flannel-compat.md §5.3): no device; one route per peer, `<peer subnet> via <peer
//! PublicIP> dev <ext iface>`, which only works when every node is on one L2 segment.
//!
//! Unlike flannel, a peer whose PublicIP is not on a directly connected subnet of the external
//! interface is skipped up front with a reason, instead of failing in the kernel ("network is
//! unreachable") and being retried forever.
//!
//! Dual stack: on a node whose external interface has an IPv6 side ([`ExternalInterface::v6`]),
//! a peer with an IPv6 subnet and a PublicIPv6 also gets `<peer IPv6 subnet> via <peer
//! PublicIPv6> dev <ext iface>` (metric 1024: [`crate::plan::V6_METRIC`]), under the same
//! checks against the interface's IPv6 prefixes. A peer without IPv6 parts gets its IPv4 route
//! only. On an IPv6-only network (kube mode; the interface has no IPv4 side) only the IPv6 routes
//! exist.
use net_conf::{LeaseAttrs, SubnetKey};

use crate::nl::Netlink;
use crate::{Backend, BackendError, Desired, ExternalInterface, ExternalV6, Peer, Route};

/// The lease `BackendType` of host-gw.
pub const HOST_GW: &str = "host-gw";

/// The host-gw backend. Stateless: everything it needs comes with each call.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostGw;

impl HostGw {
    pub fn new() -> Self {
        HostGw
    }
}

impl Backend for HostGw {
    fn type_name(&self) -> &'static str {
        HOST_GW
    }

    /// Refuses NAT (the published address must be the interface's own, for IPv6 too) and returns
    /// the lease attributes `{"PublicIP": <ext_addr>, "BackendType": "host-gw"}`, with
    /// `"PublicIPv6": <v6 ext_addr>` on a dual-stack interface.
    async fn prepare(
        &mut self,
        _nl: &Netlink,
        ext: &ExternalInterface,
    ) -> Result<LeaseAttrs, BackendError> {
        if ext.ext_addr != ext.iface_addr {
            return Err(BackendError::Unsupported(
                "your PublicIP differs from interface IP, meaning that probably you're on a NAT, \
                 which is not supported by host-gw backend"
                    .to_string(),
            ));
        }
        if let Some(v6) = &ext.v6 {
            if v6.ext_addr != v6.iface_addr {
                return Err(BackendError::Unsupported(
                    "your PublicIPv6 differs from interface IPv6, meaning that probably you're on \
                     a NAT, which is not supported by host-gw backend"
                        .to_string(),
                ));
            }
        }
        Ok(LeaseAttrs {
            public_ip: ext.ext_addr,
            public_ipv6: ext.v6.as_ref().map(|v6| v6.ext_addr),
            backend_type: HOST_GW.to_string(),
            backend_data: None,
            backend_v6_data: None,
        })
    }

    /// No device to configure; the pod MTU is the external interface's.
    fn configure(
        &mut self,
        ext: &ExternalInterface,
        _own: &SubnetKey,
    ) -> Result<u32, BackendError> {
        Ok(ext.mtu)
    }

    fn desired(&self, ext: &ExternalInterface, peers: &[Peer]) -> Desired {
        let mut out = Desired::default();
        for peer in peers {
            // On a node with IPv4 every check of the IPv4 route comes first: a peer failing
            // them gets no IPv6 route either. An IPv6-only node checks the backend type only.
            let checked = if ext.has_v4() {
                crate::usable_peer(ext, peer, HOST_GW).map(|_| ())
            } else {
                crate::same_backend(peer, HOST_GW)
            };
            if let Err(reason) = checked {
                out.skipped.push((peer.key, reason));
                continue;
            }
            let v4 = ext.has_v4().then(|| route_for(ext, peer));
            let v6 = ext.v6.as_ref().and_then(|v6| route_v6_for(ext, v6, peer));
            for route in [v4, v6].into_iter().flatten() {
                match route {
                    Ok(route) => {
                        out.state.routes.insert(route.dst, route);
                    }
                    Err(reason) => out.skipped.push((peer.key, reason)),
                }
            }
        }
        out
    }
}

/// The IPv6 route to a peer that passed the checks of [`HostGw::desired`], on this node's IPv6
/// side `v6`:
/// None when the peer has no IPv6 subnet (an IPv4-only peer), else the route or why there is
/// none.
fn route_v6_for(
    ext: &ExternalInterface,
    v6: &ExternalV6,
    peer: &Peer,
) -> Option<Result<Route, String>> {
    let subnet = peer.key.v6?.trunc();
    let Some(ip) = peer.attrs.public_ipv6 else {
        return Some(Err(format!(
            "peer {subnet} has an IPv6 subnet but no PublicIPv6"
        )));
    };
    if ip.is_unspecified() {
        return Some(Err(format!("peer {subnet} has no PublicIPv6 (::)")));
    }
    if ip == v6.ext_addr || ip == v6.iface_addr {
        return Some(Err(format!(
            "peer {subnet} has this node's own address {ip} as PublicIPv6"
        )));
    }
    if !v6.prefixes.iter().any(|p| p.contains(&ip)) {
        let prefixes = v6
            .prefixes
            .iter()
            .map(|p| p.trunc().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Some(Err(format!(
            "peer {subnet} via {ip}: {ip} is not on a directly connected IPv6 subnet of {} \
             ({prefixes}): host-gw needs the nodes on one L2 segment",
            ext.name
        )));
    }
    Some(Ok(Route {
        dst: subnet.into(),
        gateway: ip.into(),
        oif: ext.index,
        onlink: false,
    }))
}

/// The route to one peer, or why there is none.
fn route_for(ext: &ExternalInterface, peer: &Peer) -> Result<Route, String> {
    let (subnet, ip) = crate::usable_peer(ext, peer, HOST_GW)?;
    crate::direct_route(ext, subnet, ip).ok_or_else(|| {
        let prefixes = ext
            .prefixes
            .iter()
            .map(|p| p.trunc().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "peer {subnet} via {ip}: {ip} is not on a directly connected subnet of {} ({prefixes}): \
             host-gw needs the nodes on one L2 segment",
            ext.name
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use net_conf::SubnetKey;

    use super::*;

    fn ext() -> ExternalInterface {
        ExternalInterface {
            name: "eth0".into(),
            index: 3,
            iface_addr: Ipv4Addr::new(198, 18, 0, 1),
            ext_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1500,
            prefixes: vec!["198.18.0.1/24".parse().expect("prefix")],
            v6: None,
        }
    }

    fn peer(subnet: &str, ip: &str, backend: &str) -> Peer {
        Peer {
            key: SubnetKey::new(subnet.parse().expect("subnet")),
            attrs: LeaseAttrs {
                public_ip: ip.parse().expect("ip"),
                public_ipv6: None,
                backend_type: backend.into(),
                backend_data: None,
                backend_v6_data: None,
            },
        }
    }

    fn route(dst: &str, gw: &str) -> Route {
        Route {
            dst: dst.parse().expect("dst"),
            gateway: gw.parse().expect("gw"),
            oif: 3,
            onlink: false,
        }
    }

    #[test]
    fn routes_adjacent_peers() {
        let d = HostGw::new().desired(
            &ext(),
            &[
                peer("10.244.2.0/24", "198.18.0.2", "host-gw"),
                peer("10.244.3.0/24", "198.18.0.3", "host-gw"),
            ],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let routes: Vec<_> = d.state.routes.values().cloned().collect();
        assert_eq!(
            routes,
            vec![
                route("10.244.2.0/24", "198.18.0.2"),
                route("10.244.3.0/24", "198.18.0.3")
            ]
        );
        assert_eq!(routes[0].to_string(), "10.244.2.0/24 via 198.18.0.2 dev 3");
    }

    #[test]
    fn skips_with_reasons() {
        let peers = [
            peer("10.244.2.0/24", "198.18.5.2", "host-gw"),
            peer("10.244.3.0/24", "198.18.0.3", "vxlan"),
            peer("10.244.4.0/24", "0.0.0.0", "host-gw"),
            peer("10.244.5.0/24", "198.18.0.1", "host-gw"),
            peer("10.244.6.0/24", "198.18.0.6", ""),
            peer("10.244.7.0/24", "198.18.0.7", "host-gw"),
        ];
        let d = HostGw::new().desired(&ext(), &peers);
        assert_eq!(
            d.state.routes.values().cloned().collect::<Vec<_>>(),
            vec![route("10.244.7.0/24", "198.18.0.7")]
        );
        let reasons: Vec<(String, &str)> = d
            .skipped
            .iter()
            .map(|(k, r)| (k.first().to_string(), r.as_str()))
            .collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert_eq!(reasons[0].0, "10.244.2.0/24");
        assert_eq!(
            reasons[0].1,
            "peer 10.244.2.0/24 via 198.18.5.2: 198.18.5.2 is not on a directly connected subnet \
             of eth0 (198.18.0.0/24): host-gw needs the nodes on one L2 segment"
        );
        assert_eq!(reasons[1].0, "10.244.3.0/24");
        assert!(reasons[1].1.contains("\"vxlan\""), "{}", reasons[1].1);
        assert_eq!(reasons[2].0, "10.244.4.0/24");
        assert!(reasons[2].1.contains("no PublicIP"), "{}", reasons[2].1);
        assert_eq!(reasons[3].0, "10.244.5.0/24");
        assert!(reasons[3].1.contains("own address"), "{}", reasons[3].1);
        assert_eq!(reasons[4].0, "10.244.6.0/24");
        assert!(reasons[4].1.contains("\"\""), "{}", reasons[4].1);
    }

    #[test]
    fn second_prefix_counts_as_adjacent() {
        let mut e = ext();
        e.prefixes.push("198.19.0.1/16".parse().expect("prefix"));
        let d = HostGw::new().desired(&e, &[peer("10.244.2.0/24", "198.19.4.2", "host-gw")]);
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(d.state.routes.len(), 1);
    }

    fn ext_dual() -> ExternalInterface {
        ExternalInterface {
            v6: Some(ExternalV6 {
                iface_addr: "fd00:18::1".parse().expect("ip"),
                ext_addr: "fd00:18::1".parse().expect("ip"),
                prefixes: vec!["fd00:18::1/64".parse().expect("prefix")],
            }),
            ..ext()
        }
    }

    fn dual_peer(subnet: &str, ip: &str, subnet6: &str, ip6: Option<&str>) -> Peer {
        let mut p = peer(subnet, ip, "host-gw");
        p.key.v6 = Some(subnet6.parse().expect("subnet6"));
        p.attrs.public_ipv6 = ip6.map(|i| i.parse().expect("ip6"));
        p
    }

    #[test]
    fn routes_dual_stack_peers_in_both_families() {
        let peers = [
            dual_peer(
                "10.244.2.0/24",
                "198.18.0.2",
                "fd00:244:0:2::/64",
                Some("fd00:18::2"),
            ),
            // IPv4 only: its IPv4 route, nothing else.
            peer("10.244.3.0/24", "198.18.0.3", "host-gw"),
        ];
        let d = HostGw::new().desired(&ext_dual(), &peers);
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let routes: Vec<String> = d.state.routes.values().map(ToString::to_string).collect();
        assert_eq!(
            routes,
            [
                "10.244.2.0/24 via 198.18.0.2 dev 3",
                "10.244.3.0/24 via 198.18.0.3 dev 3",
                "fd00:244:0:2::/64 via fd00:18::2 dev 3",
            ]
        );
        // An IPv4-only node routes the same peers over IPv4 only, without complaint.
        let d = HostGw::new().desired(&ext(), &peers);
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(d.state.routes.len(), 2);
        assert!(
            d.state
                .routes
                .keys()
                .all(|k| matches!(k, ipnet::IpNet::V4(_)))
        );
    }

    #[test]
    fn ipv6_skips_with_reasons_keep_the_ipv4_route() {
        let peers = [
            dual_peer("10.244.2.0/24", "198.18.0.2", "fd00:244:0:2::/64", None),
            dual_peer(
                "10.244.3.0/24",
                "198.18.0.3",
                "fd00:244:0:3::/64",
                Some("fd00:99::3"),
            ),
            dual_peer(
                "10.244.4.0/24",
                "198.18.0.4",
                "fd00:244:0:4::/64",
                Some("fd00:18::1"),
            ),
            dual_peer(
                "10.244.5.0/24",
                "198.18.0.5",
                "fd00:244:0:5::/64",
                Some("::"),
            ),
        ];
        let d = HostGw::new().desired(&ext_dual(), &peers);
        assert_eq!(d.state.routes.len(), 4, "every IPv4 route stays");
        assert!(
            d.state
                .routes
                .keys()
                .all(|k| matches!(k, ipnet::IpNet::V4(_)))
        );
        let reasons: Vec<(String, &str)> = d
            .skipped
            .iter()
            .map(|(k, r)| (k.first().to_string(), r.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert_eq!(
            reasons[0].1,
            "peer fd00:244:0:2::/64 has an IPv6 subnet but no PublicIPv6"
        );
        assert_eq!(
            reasons[1].1,
            "peer fd00:244:0:3::/64 via fd00:99::3: fd00:99::3 is not on a directly connected \
             IPv6 subnet of eth0 (fd00:18::/64): host-gw needs the nodes on one L2 segment"
        );
        assert!(reasons[2].1.contains("own address"), "{}", reasons[2].1);
        assert!(reasons[3].1.contains("no PublicIPv6"), "{}", reasons[3].1);
        // A peer refused over IPv4 (another backend) gets no IPv6 route either, one reason.
        let mut vx = dual_peer(
            "10.244.6.0/24",
            "198.18.0.6",
            "fd00:244:0:6::/64",
            Some("fd00:18::6"),
        );
        vx.attrs.backend_type = "vxlan".into();
        let d = HostGw::new().desired(&ext_dual(), &[vx]);
        assert!(d.state.routes.is_empty());
        assert_eq!(d.skipped.len(), 1);
    }

    #[test]
    fn an_ipv6_only_node_routes_ipv6_only_peers() {
        let ext = ExternalInterface {
            iface_addr: Ipv4Addr::UNSPECIFIED,
            ext_addr: Ipv4Addr::UNSPECIFIED,
            prefixes: vec![],
            ..ext_dual()
        };
        let v6_only = |n: u8, backend: &str| {
            let mut p = peer("10.244.0.0/24", "0.0.0.0", backend);
            p.key = SubnetKey::v6_only(format!("fd00:244:0:{n}::/64").parse().expect("net"));
            p.attrs.public_ipv6 = Some(format!("fd00:18::{n}").parse().expect("ip6"));
            p
        };
        let d = HostGw::new().desired(&ext, &[v6_only(2, "host-gw"), v6_only(3, "vxlan")]);
        let routes: Vec<String> = d.state.routes.values().map(ToString::to_string).collect();
        assert_eq!(routes, ["fd00:244:0:2::/64 via fd00:18::2 dev 3"]);
        assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
        assert!(d.skipped[0].1.contains("\"vxlan\""), "{:?}", d.skipped);
    }

    #[test]
    fn no_peers_no_routes() {
        let d = HostGw::new().desired(&ext(), &[]);
        assert_eq!(d, Desired::default());
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn prepare_refuses_nat_and_publishes_host_gw() {
        block_on(async {
            // An rtnetlink socket needs no privilege; prepare doesn't use it anyway.
            let nl = Netlink::connect().expect("netlink socket");
            let mut nat = ext();
            nat.ext_addr = Ipv4Addr::new(203, 0, 113, 7);
            let err = HostGw::new()
                .prepare(&nl, &nat)
                .await
                .expect_err("NAT must be refused");
            assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
            assert_eq!(
                err.to_string(),
                "your PublicIP differs from interface IP, meaning that probably you're on a NAT, \
                 which is not supported by host-gw backend"
            );
            let attrs = HostGw::new().prepare(&nl, &ext()).await.expect("prepare");
            assert_eq!(attrs.public_ip, Ipv4Addr::new(198, 18, 0, 1));
            assert_eq!(attrs.public_ipv6, None);
            let attrs = HostGw::new()
                .prepare(&nl, &ext_dual())
                .await
                .expect("prepare dual stack");
            assert_eq!(attrs.public_ipv6, Some("fd00:18::1".parse().expect("ip6")));
            let mut nat6 = ext_dual();
            if let Some(v6) = nat6.v6.as_mut() {
                v6.ext_addr = "2001:db8::7".parse().expect("ip6");
            }
            let err = HostGw::new()
                .prepare(&nl, &nat6)
                .await
                .expect_err("IPv6 NAT must be refused");
            assert!(err.to_string().contains("PublicIPv6 differs"), "{err}");
            assert_eq!(attrs.backend_type, "host-gw");
            assert_eq!(attrs.backend_data, None);
            let mtu = HostGw::new()
                .configure(
                    &ext(),
                    &net_conf::SubnetKey::new("10.244.1.0/24".parse().expect("own")),
                )
                .expect("configure");
            assert_eq!(mtu, 1500);
        });
    }
}
